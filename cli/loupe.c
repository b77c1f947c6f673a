/* loupe.c — the `loupe` command.
 *
 *   loupe run FILE.loupe   run the file as one cell; output as text on stdout; exit 1 on error
 *   loupe check FILE       syntax only; exit 1 and the error on stdout when it is invalid
 *   loupe                  a line-editing REPL
 *
 * `run` prints exactly what tests/lang goldens hold: stream text as it is; every display,
 * display update, page and the result as its text/plain followed by "\n"; on error the
 * traceback lines, each followed by "\n". Everything goes to stdout so that the order is
 * exact. `input` reads stdin (the prompt is shown only when stdin is a terminal). */
#include "loupe.h"
#include "lang/interp.h"
#include "util/mem.h"
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#ifdef LOUPE_HAVE_READLINE
#include <readline/history.h>
#include <readline/readline.h>
#endif

static lp_interp *g_interp;
static int g_repl;

static void on_sigint(int sig) {
    (void)sig;
    if (g_interp) lp_interrupt(g_interp);
}

static void put_bundle(json_t *data) {
    const char *t = json_string_value(json_object_get(data, "text/plain"));
    if (!t) t = "";
    fputs(t, stdout);
    fputc('\n', stdout);
    fflush(stdout);
}

static void s_stream(void *ctx, int fd, const char *text, size_t n) {
    FILE *f = (g_repl && fd == 2) ? stderr : stdout;
    fwrite(text, 1, n, f);
    fflush(f);
}
static void s_display(void *ctx, json_t *data, json_t *md, const char *id, int update) { put_bundle(data); }
static void s_page(void *ctx, json_t *data) { put_bundle(data); }

static char *s_input(void *ctx, const char *prompt, int password) {
    if (isatty(0)) {
        fputs(prompt, stdout);
        fflush(stdout);
    }
    char *line = NULL;
    size_t cap = 0;
    ssize_t n = getline(&line, &cap, stdin);
    if (n < 0) {
        free(line);
        lp_seterr("end of input: stdin has no more lines");
        return NULL;
    }
    char *r = lp_strndup(line, (size_t)n);
    free(line);
    if (!r) lp_seterr("out of memory");
    return r;
}

static lp_sink sink = { NULL, s_stream, s_display, NULL, s_input, s_page };

static void print_error(const lp_outcome *o, FILE *f) {
    size_t i;
    json_t *line;
    json_array_foreach(o->traceback, i, line) {
        fputs(json_string_value(line), f);
        fputc('\n', f);
    }
    fflush(f);
}

static char *read_file(const char *path, size_t *len) {
    FILE *f = strcmp(path, "-") ? fopen(path, "rb") : stdin;
    if (!f) return NULL;
    size_t cap = 1 << 16, n = 0;
    char *buf = malloc(cap);
    while (buf) {
        size_t k = fread(buf + n, 1, cap - n, f);
        n += k;
        if (n < cap) break;
        char *nb = realloc(buf, cap * 2);
        if (!nb) { free(buf); buf = NULL; break; }
        buf = nb;
        cap *= 2;
    }
    if (f != stdin) fclose(f);
    *len = n;
    return buf;
}

static int cmd_run(const char *path, int check_only) {
    size_t len;
    char *code = read_file(path, &len);
    if (!code) {
        fprintf(stderr, "loupe: cannot read %s\n", path);
        return 2;
    }
    g_interp = lp_interp_new();
    if (!g_interp) { free(code); fprintf(stderr, "loupe: out of memory\n"); return 2; }
    lp_outcome o;
    int rc = check_only ? lp_check(g_interp, code, len, &o) : lp_execute(g_interp, code, len, &sink, &o);
    if (rc == 0 && o.result) put_bundle(o.result);
    if (rc != 0) print_error(&o, stdout);
    lp_outcome_free(&o);
    lp_interp_free(g_interp);
    g_interp = NULL;
    free(code);
    return rc ? 1 : 0;
}

#ifdef LOUPE_HAVE_READLINE
/* Tab completion from lp_complete: the matches replace the text readline hands us, which
 * is the word before the cursor (readline's word breaks match loupe's well enough). */
static json_t *g_matches;
static size_t g_match_i;

static char *complete_gen(const char *text, int state) {
    if (!g_matches) return NULL;
    while (g_match_i < json_array_size(g_matches)) {
        const char *m = json_string_value(json_object_get(json_array_get(g_matches, g_match_i++), "text"));
        if (m) return strdup(m);
    }
    return NULL;
}

static char **complete_line(const char *text, int start, int end) {
    rl_attempted_completion_over = 1;   /* no file-name fallback */
    json_decref(g_matches);
    size_t s, e;
    g_matches = lp_complete(g_interp, rl_line_buffer, strlen(rl_line_buffer), (size_t)end, &s, &e);
    g_match_i = 0;
    /* readline replaces [start, end); loupe's range may start earlier (paths in strings) */
    if ((size_t)start != s) {
        json_t *trimmed = json_array();
        size_t i;
        json_t *x;
        json_array_foreach(g_matches, i, x) {
            const char *m = json_string_value(json_object_get(x, "text"));
            size_t skip = (size_t)start > s ? (size_t)start - s : 0;
            if (m && strlen(m) >= skip) {
                json_t *o = json_object();
                json_object_set_new(o, "text", json_string(m + skip));
                json_array_append_new(trimmed, o);
            }
        }
        json_decref(g_matches);
        g_matches = trimmed;
    }
    return rl_completion_matches(text, complete_gen);
}
#endif

static char *read_line(const char *prompt) {
#ifdef LOUPE_HAVE_READLINE
    if (isatty(0)) {
        char *l = readline(prompt);
        if (l && *l) add_history(l);
        return l;
    }
#endif
    if (isatty(0)) { fputs(prompt, stdout); fflush(stdout); }
    char *line = NULL;
    size_t cap = 0;
    ssize_t n = getline(&line, &cap, stdin);
    if (n < 0) { free(line); return NULL; }
    if (n && line[n - 1] == '\n') line[n - 1] = 0;
    return line;
}

static int cmd_repl(void) {
    g_repl = 1;
    g_interp = lp_interp_new();
    if (!g_interp) return 2;
    if (isatty(0)) printf("%s\n", lp_banner());
#ifdef LOUPE_HAVE_READLINE
    rl_attempted_completion_function = complete_line;
    rl_basic_word_break_characters = " \t\n\"'([{=,.;?";
#endif
    char *cell = NULL;
    size_t len = 0;
    for (;;) {
        char *line = read_line(cell ? "...... " : "loupe> ");
        if (!line && cell) {
            /* end of input inside an open statement: run it to show the error */
            lp_outcome o;
            if (lp_execute(g_interp, cell, len, &sink, &o) != 0) print_error(&o, stdout);
            lp_outcome_free(&o);
        }
        if (!line) break;
        size_t ll = strlen(line);
        char *nc = realloc(cell, len + ll + 2);
        if (!nc) { free(line); break; }
        cell = nc;
        memcpy(cell + len, line, ll);
        len += ll;
        cell[len++] = '\n';
        cell[len] = 0;
        free(line);
        char indent[64];
        if (lp_is_complete(g_interp, cell, len, indent, sizeof indent) == LP_INCOMPLETE) continue;
        lp_outcome o;
        if (lp_execute(g_interp, cell, len, &sink, &o) == 0) {
            if (o.result) put_bundle(o.result);
        } else {
            print_error(&o, stdout);
        }
        lp_outcome_free(&o);
        free(cell);
        cell = NULL;
        len = 0;
    }
    free(cell);
#ifdef LOUPE_HAVE_READLINE
    json_decref(g_matches);
    g_matches = NULL;
#endif
    lp_interp_free(g_interp);
    g_interp = NULL;
    if (isatty(0)) putchar('\n');
    return 0;
}

static int usage(void) {
    fprintf(stderr, "usage: loupe run FILE.loupe | loupe check FILE.loupe | loupe\n");
    return 2;
}

int main(int argc, char **argv) {
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_sigint;
    sigaction(SIGINT, &sa, NULL);
    if (argc == 1) return cmd_repl();
    if (argc == 3 && !strcmp(argv[1], "run")) return cmd_run(argv[2], 0);
    if (argc == 3 && !strcmp(argv[1], "check")) return cmd_run(argv[2], 1);
    if (argc == 2 && (!strcmp(argv[1], "--version") || !strcmp(argv[1], "version"))) {
        printf("loupe %s\n", lp_version());
        return 0;
    }
    return usage();
}
