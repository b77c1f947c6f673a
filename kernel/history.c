#include "history.h"
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#define HIST_MAX_INPUT (1 << 20)   /* cells above 1 MB are run but not kept in history */

typedef struct { int session, line; char *input, *output; } entry;

struct kn_history {
    char path[4096];
    int session;        /* 0 until known */
    entry *e; size_t n, cap;
    int loaded;
};

static int next_session(kn_history *h);

static void default_path(char *out, size_t cap) {
    const char *d = getenv("JUPYTER_DATA_DIR");
    if (d && *d) { snprintf(out, cap, "%s/loupe/history.jsonl", d); return; }
    d = getenv("XDG_DATA_HOME");
    if (d && *d) { snprintf(out, cap, "%s/jupyter/loupe/history.jsonl", d); return; }
    const char *home = getenv("HOME");
    snprintf(out, cap, "%s/.local/share/jupyter/loupe/history.jsonl", home ? home : ".");
}

static void mkdirs(const char *path) {
    char tmp[4096];
    snprintf(tmp, sizeof tmp, "%s", path);
    for (char *p = tmp + 1; *p; p++) {
        if (*p != '/') continue;
        *p = 0;
        mkdir(tmp, 0700);
        *p = '/';
    }
}

kn_history *kn_hist_open(const char *path) {
    kn_history *h = calloc(1, sizeof *h);
    if (!h) return NULL;
    if (path) snprintf(h->path, sizeof h->path, "%s", path);
    else default_path(h->path, sizeof h->path);
    return h;
}

static void push(kn_history *h, int session, int line, const char *in, const char *out) {
    if (h->n == h->cap) {
        size_t cap = h->cap ? h->cap * 2 : 256;
        entry *e = realloc(h->e, cap * sizeof *e);
        if (!e) return;
        h->e = e; h->cap = cap;
    }
    h->e[h->n++] = (entry){session, line, strdup(in), out ? strdup(out) : NULL};
}

/* Read the file once; the entries of this session are appended to memory as they run. */
static void load(kn_history *h) {
    if (h->loaded) return;
    h->loaded = 1;
    FILE *f = fopen(h->path, "r");
    if (f) {
        char *line = NULL; size_t cap = 0; ssize_t len;
        entry *mine = h->e; size_t nmine = h->n;   /* this session's, added before loading */
        h->e = NULL; h->n = h->cap = 0;
        while ((len = getline(&line, &cap, f)) > 0) {
            json_t *j = json_loadb(line, (size_t)len, 0, NULL);
            int s = (int)json_integer_value(json_object_get(j, "session"));
            int l = (int)json_integer_value(json_object_get(j, "line"));
            const char *in = json_string_value(json_object_get(j, "input"));
            const char *out = json_string_value(json_object_get(j, "output"));
            if (in && s > 0 && (h->session == 0 || s != h->session)) push(h, s, l, in, out);
            json_decref(j);
        }
        free(line);
        fclose(f);
        for (size_t i = 0; i < nmine; i++) {
            push(h, mine[i].session, mine[i].line, mine[i].input, mine[i].output);
            free(mine[i].input); free(mine[i].output);
        }
        free(mine);
    }
    if (h->session == 0) h->session = next_session(h);
}

/* The session number comes from a small counter file beside the history, so a kernel
 * that only appends never has to read the whole history. */
static int next_session(kn_history *h) {
    char path[4200];
    snprintf(path, sizeof path, "%s.session", h->path);
    mkdirs(path);
    int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    if (fd < 0) return 1;
    flock(fd, LOCK_EX);
    char buf[32] = {0};
    ssize_t n = read(fd, buf, sizeof buf - 1);
    int s = (n > 0 ? atoi(buf) : 0) + 1;
    int len = snprintf(buf, sizeof buf, "%d\n", s);
    if (ftruncate(fd, 0) != 0 || pwrite(fd, buf, (size_t)len, 0) != len)
        fprintf(stderr, "loupe: history: cannot update %s\n", path);
    flock(fd, LOCK_UN);
    close(fd);
    return s;
}

int kn_hist_session(kn_history *h) {
    if (!h->session) h->session = next_session(h);
    return h->session;
}

const char *kn_hist_path(const kn_history *h) { return h->path; }

void kn_hist_add(kn_history *h, int line, const char *input, const char *output) {
    if (strlen(input) > HIST_MAX_INPUT) {
        fprintf(stderr, "loupe: history: cell %d is over 1 MB and is not kept in history\n", line);
        return;
    }
    int s = kn_hist_session(h);
    push(h, s, line, input, output);
    mkdirs(h->path);
    int fd = open(h->path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
    if (fd < 0) { fprintf(stderr, "loupe: history: cannot write %s: %s\n", h->path, strerror(errno)); return; }
    fchmod(fd, 0600);
    json_t *j = json_pack("{s:i, s:i, s:s, s:s?}", "session", s, "line", line, "input", input, "output", output);
    char *txt = j ? json_dumps(j, JSON_COMPACT) : NULL;
    if (txt) {
        /* One write per line, so concurrent kernels never interleave inside a line. */
        size_t n = strlen(txt);
        char *buf = malloc(n + 1);
        if (buf) {
            memcpy(buf, txt, n);
            buf[n] = '\n';
            if (write(fd, buf, n + 1) < 0) fprintf(stderr, "loupe: history: write failed: %s\n", strerror(errno));
            free(buf);
        }
    }
    free(txt);
    json_decref(j);
    close(fd);
}

int kn_glob(const char *p, const char *s) {
    const char *star = NULL, *ss = NULL;
    while (*s) {
        if (*p == '?' || *p == *s) { p++; s++; }
        else if (*p == '*') { star = p++; ss = s; }
        else if (star) { p = star + 1; s = ++ss; }
        else return 0;
    }
    while (*p == '*') p++;
    return *p == 0;
}

static json_t *item(const entry *e, int output) {
    if (output)
        return json_pack("[i, i, [s, s?]]", e->session, e->line, e->input, e->output);
    return json_pack("[i, i, s]", e->session, e->line, e->input);
}

json_t *kn_hist_query(kn_history *h, json_t *req) {
    load(h);
    json_t *out = json_array();
    const char *type = json_string_value(json_object_get(req, "hist_access_type"));
    int output = json_is_true(json_object_get(req, "output"));
    json_int_t n = json_integer_value(json_object_get(req, "n"));
    if (!type) return out;
    if (!strcmp(type, "tail")) {
        size_t k = n > 0 && (size_t)n < h->n ? (size_t)n : h->n;
        if (!json_is_integer(json_object_get(req, "n"))) k = h->n < 1000 ? h->n : 1000;
        for (size_t i = h->n - k; i < h->n; i++) json_array_append_new(out, item(&h->e[i], output));
    } else if (!strcmp(type, "range")) {
        json_int_t session = json_integer_value(json_object_get(req, "session"));
        json_int_t start = json_integer_value(json_object_get(req, "start"));
        json_t *jstop = json_object_get(req, "stop");
        json_int_t stop = json_is_integer(jstop) ? json_integer_value(jstop) : -1;
        if (session <= 0) session += h->session;   /* 0: this one; -1: the one before */
        for (size_t i = 0; i < h->n; i++) {
            const entry *e = &h->e[i];
            if (e->session == session && e->line >= start && (stop < 0 || e->line < stop))
                json_array_append_new(out, item(e, output));
        }
    } else if (!strcmp(type, "search")) {
        const char *pat = json_string_value(json_object_get(req, "pattern"));
        int unique = json_is_true(json_object_get(req, "unique"));
        if (!pat) pat = "*";
        /* Newest matches win; the reply lists them oldest first, as IPython does. */
        size_t cap = n > 0 ? (size_t)n : h->n;
        const entry **hits = calloc(h->n + 1, sizeof *hits);
        size_t nh = 0;
        for (size_t i = h->n; i-- > 0 && nh < cap;) {
            if (!kn_glob(pat, h->e[i].input)) continue;
            int dup = 0;
            for (size_t k = 0; unique && k < nh && !dup; k++) dup = !strcmp(hits[k]->input, h->e[i].input);
            if (!dup) hits[nh++] = &h->e[i];
        }
        while (nh-- > 0) json_array_append_new(out, item(hits[nh], output));
        free(hits);
    }
    return out;
}

void kn_hist_close(kn_history *h) {
    if (!h) return;
    for (size_t i = 0; i < h->n; i++) { free(h->e[i].input); free(h->e[i].output); }
    free(h->e);
    free(h);
}
