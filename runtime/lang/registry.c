/* registry.c — finding commands, "did you mean", help texts, declaration checks.
 * Argument binding lives in eval.c, next to the evaluator that feeds it. */
#include "lang/registry.h"
#include "lang/interp.h"
#include "util/mem.h"
#include "util/sbuf.h"
#include <string.h>

const lp_command *reg_find(const char *name, size_t n) {
    for (const lp_command *const *c = lp_all_commands; *c; c++)
        if (strlen((*c)->name) == n && !memcmp((*c)->name, name, n)) return *c;
    return NULL;
}

/* Levenshtein distance, capped: the names compared are short. */
static size_t lev(const char *a, const char *b) {
    size_t la = strlen(a), lb = strlen(b);
    if (la > 63 || lb > 63) return 99;
    size_t row[64];
    for (size_t j = 0; j <= lb; j++) row[j] = j;
    for (size_t i = 1; i <= la; i++) {
        size_t prev = row[0];
        row[0] = i;
        for (size_t j = 1; j <= lb; j++) {
            size_t cur = row[j];
            size_t best = prev + (a[i - 1] != b[j - 1]);
            if (row[j] + 1 < best) best = row[j] + 1;
            if (row[j - 1] + 1 < best) best = row[j - 1] + 1;
            row[j] = best;
            prev = cur;
        }
    }
    return row[lb];
}

const char *reg_suggest(const char *word, const char *const *names, size_t n) {
    const char *best = NULL;
    size_t bestd = 99, wl = strlen(word);
    /* a typo costs at most 2 edits (1 for very short words) */
    size_t limit = wl <= 3 ? 1 : 2;
    for (size_t i = 0; i < n; i++) {
        size_t d = lev(word, names[i]);
        if (d < bestd) { bestd = d; best = names[i]; }
    }
    if (best && bestd <= limit && bestd < wl) return best;
    /* `lr_rate` → `lr`: one is a prefix of the other at a `_` boundary */
    for (size_t i = 0; i < n; i++) {
        size_t nl = strlen(names[i]);
        if (nl >= 2 && nl < wl && !strncmp(word, names[i], nl) && word[nl] == '_') return names[i];
        if (wl >= 2 && wl < nl && !strncmp(word, names[i], wl) && names[i][wl] == '_') return names[i];
    }
    return NULL;
}

const char *reg_type_word(const lp_param *p) {
    switch (p->type) {
    case LP_T_ANY: return "any";
    case LP_T_INT: return "int";
    case LP_T_FLOAT: return "float";
    case LP_T_STRING: return "string";
    case LP_T_BOOL: return "bool";
    case LP_T_LIST: return "list";
    case LP_T_DICT: return "dict";
    case LP_T_VALUE: return p->vtype ? p->vtype->name : "object";
    case LP_T_NAME: return "name";
    }
    return "?";
}

static void upper(sbuf *b, const char *s) {
    for (; *s; s++) sb_putc(b, (*s >= 'a' && *s <= 'z') ? (char)(*s - 32) : *s);
}

char *reg_usage(const lp_command *cmd) {
    sbuf b;
    sb_init(&b);
    sb_puts(&b, cmd->name);
    if (cmd->flags & LP_CMD_STATEMENT) sb_puts(&b, " STATEMENT");
    for (const lp_param *p = cmd->params; p && p->name; p++) {
        sb_putc(&b, ' ');
        if (p->def) sb_putc(&b, '[');
        upper(&b, p->name);
        if (p->flags & LP_P_VARIADIC) sb_puts(&b, "...");
        if (p->def) sb_putc(&b, ']');
    }
    for (const lp_param *p = cmd->options; p && p->name; p++) sb_printf(&b, " [%s=%s]", p->name, p->def ? p->def : "…");
    if (b.oom) { sb_free(&b); return NULL; }
    return sb_take(&b);
}

/* One parameter's help line: "  name=  type, default d — help (Hugging Face: a, b)", the
 * type starting at column w + 4 */
static void param_line(sbuf *b, const lp_param *p, int opts, size_t w) {
    sb_puts(b, "  ");
    sb_puts(b, p->name);
    if (opts) sb_putc(b, '=');
    for (size_t k = strlen(p->name) + (opts ? 1 : 0); k < w + 2; k++) sb_putc(b, ' ');
    sb_printf(b, "%s", reg_type_word(p));
    if (p->flags & LP_P_VARIADIC) sb_puts(b, "...");
    if (p->def) sb_printf(b, ", default %s", p->def);
    if (p->help) sb_printf(b, " — %s", p->help);
    if (p->hf) {   /* "a b" → " (Hugging Face: a, b)" */
        sb_puts(b, " (Hugging Face: ");
        for (const char *h = p->hf; *h; h++)
            if (*h == ' ') sb_puts(b, ", ");
            else sb_putc(b, *h);
        sb_putc(b, ')');
    }
    sb_putc(b, '\n');
}

static void param_lines(sbuf *b, const char *title, const lp_param *ps, int opts) {
    if (!ps || !ps->name) return;
    sb_printf(b, "\n%s:\n", title);
    size_t w = 0;
    for (const lp_param *p = ps; p->name; p++) {
        size_t l = strlen(p->name) + (opts ? 1 : 0);
        if (l > w) w = l;
    }
    for (const lp_param *p = ps; p->name; p++) param_line(b, p, opts, w);
}

int reg_has_word(const char *list, const char *word) {
    size_t len = strlen(word);
    for (const char *h = list; h && *h;) {
        size_t n = strcspn(h, " ");
        if (n == len && !memcmp(h, word, n)) return 1;
        h += n + (h[n] == ' ');
    }
    return 0;
}

/* 1 when option p is `word`, by its name or (hf) by Hugging Face's */
static int option_is(const lp_param *p, const char *word, int hf) {
    return hf ? reg_has_word(p->hf, word) : !strcmp(p->name, word);
}

const char *reg_hf_option(const lp_param *options, const char *word) {
    for (const lp_param *p = options; p && p->name; p++)
        if (option_is(p, word, 1)) return p->name;
    return NULL;
}

char *reg_option_help(const char *word) {
    sbuf b;
    sb_init(&b);
    for (int hf = 0; hf < 2; hf++) {
        size_t at = b.len;
        for (const lp_command *const *c = lp_all_commands; *c; c++)
            for (const lp_param *p = (*c)->options; p && p->name; p++)
                if (option_is(p, word, hf)) {
                    if (b.len == at)
                        sb_printf(&b, "%s%s `%s` (`help COMMAND` has the rest):\n", at ? "\n" : "",
                                  hf ? "Options Hugging Face calls" : "Options named", word);
                    sb_printf(&b, "  %s", (*c)->name);
                    param_line(&b, p, 1, strlen(p->name) + 1);
                }
    }
    if (!b.len || b.oom) {
        sb_free(&b);
        return NULL;
    }
    return sb_take(&b);
}

char *reg_help_text(const lp_command *cmd) {
    char *usage = reg_usage(cmd);
    if (!usage) return NULL;
    sbuf b;
    sb_init(&b);
    sb_printf(&b, "%s\n\n%s\n", usage, cmd->summary ? cmd->summary : "");
    lp_free(usage);
    param_lines(&b, "Arguments", cmd->params, 0);
    param_lines(&b, "Options", cmd->options, 1);
    if (cmd->help && *cmd->help) sb_printf(&b, "\n%s\n", cmd->help);
    if (b.oom) { sb_free(&b); return NULL; }
    return sb_take(&b);
}

json_t *reg_help_bundle(const lp_command *cmd) {
    char *text = reg_help_text(cmd);
    if (!text) return NULL;
    size_t tl = strlen(text);
    while (tl && text[tl - 1] == '\n') text[--tl] = 0;   /* front ends add their own */
    json_t *b = json_object();
    sbuf h;
    sb_init(&h);
    sb_puts(&h, "<pre>");
    sb_html_escape(&h, text);
    sb_puts(&h, "</pre>");
    json_object_set_new(b, "text/plain", json_string(text));
    if (!h.oom) json_object_set_new(b, "text/html", json_string(sb_str(&h)));
    sb_free(&h);
    lp_free(text);
    return b;
}

static int check_list(const lp_command *cmd, const lp_param *ps, const char *what, lp_interp *it) {
    for (const lp_param *p = ps; p && p->name; p++) {
        for (const lp_param *q = ps; q != p; q++)
            if (!strcmp(p->name, q->name)) return lp_seterr("`%s`: %s `%s` declared twice", cmd->name, what, p->name);
        if ((p->flags & LP_P_VARIADIC) && (p + 1)->name)
            return lp_seterr("`%s`: only the last parameter can be variadic", cmd->name);
        for (const lp_param *q = ps; q->name; q++)   /* a Hugging Face name is never ours */
            if (option_is(p, q->name, 1))
                return lp_seterr("`%s`: `%s` is an option's name and Hugging Face's name of `%s`",
                                 cmd->name, q->name, p->name);
        if (p->def && !(p->flags & LP_P_VARIADIC)) {
            lv_value *v = ev_default(it, p->def);
            if (!v) return lp_seterr("`%s`: default of `%s` (%s) is not a literal: %s", cmd->name, p->name, p->def,
                                     lp_geterr());
            lv_decref(v);
        }
    }
    return 0;
}

int reg_validate(const lp_command *cmd) {
    if (!cmd->name || !*cmd->name || !cmd->run || !cmd->summary)
        return lp_seterr("command `%s` needs a name, a run function and a summary", cmd->name ? cmd->name : "?");
    lp_interp *it = lp_interp_new();
    if (!it) return lp_seterr("out of memory");
    int rc = check_list(cmd, cmd->params, "parameter", it);
    if (!rc) rc = check_list(cmd, cmd->options, "option", it);
    lp_interp_free(it);
    return rc;
}

static const struct { const char *word, *text; } keyword_help[] = {
    { "repeat", "repeat N { STATEMENTS }\n\nRun the block N times (N an int, 0 or more).\n\n"
                "Example:\n    repeat 3 { print \"hi\" }" },
    { "for", "for NAME in LIST { STATEMENTS }\n\nRun the block once per item of a list (or key of a "
             "dict, character of a string), with NAME set to it.\n\nExample:\n    for x in [1, 2, 3] { print x * 2 }" },
    { "if", "if CONDITION { STATEMENTS } else { STATEMENTS }\n\nRun the first block when CONDITION is "
            "true (not none, false, 0, \"\", [] or {}), the else block otherwise.\n\n"
            "Example:\n    if x > 1 { print \"big\" } else { print \"small\" }" },
};

const char *reg_keyword_help(const char *word) {
    for (size_t i = 0; i < sizeof keyword_help / sizeof *keyword_help; i++)
        if (!strcmp(keyword_help[i].word, word)) return keyword_help[i].text;
    return NULL;
}
