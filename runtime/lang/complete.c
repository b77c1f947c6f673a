/* complete.c — kernel services from the language's own lexer and parser: is_complete,
 * completion and inspection. Nothing here runs a command: values under the cursor are
 * evaluated with side effects off (names, attributes, indexing, literals only). */
#include "lang/interp.h"
#include "lang/lexer.h"
#include "util/mem.h"
#include "util/sbuf.h"
#include <dirent.h>
#include <stdlib.h>
#include <string.h>

/* bytes of a name: ASCII name characters and any non-ASCII byte (Unicode names) */
static int word_byte(char c) { return lx_is_ident_char((unsigned char)c) || (unsigned char)c >= 0x80; }

/* ---- is_complete --------------------------------------------------------------------- */

int lp_is_complete(lp_interp *it, const char *code, size_t len, char *indent, size_t cap) {
    if (indent && cap) indent[0] = 0;
    size_t bad;
    char msg[256];
    if (lx_check_bytes(code, len, &bad, msg, sizeof msg)) return LP_INVALID;
    /* a trailing backslash continues the line */
    size_t e = len;
    while (e && (code[e - 1] == ' ' || code[e - 1] == '\t')) e--;
    if (e && code[e - 1] == '\\') return LP_INCOMPLETE;
    ps_tree t;
    ps_error err;
    int rc = ps_parse(&t, code, len, ev_find_cb, it, &err);
    int open = t.open_depth;
    ps_free(&t);
    if (rc == 0) return LP_COMPLETE;
    if (!err.incomplete) return LP_INVALID;
    if (indent && cap) {
        size_t n = (size_t)(open > 0 ? open : 0) * 4;
        if (n >= cap) n = cap - 1;
        memset(indent, ' ', n);
        indent[n] = 0;
    }
    return LP_INCOMPLETE;
}

/* ---- tokens of a prefix ---------------------------------------------------------------- */

typedef struct { lx_token *v; size_t n, cap; } tokvec;

static void *tmp_alloc(void *actx, size_t n) {
    /* decoded strings are not needed here; keep them in a list freed at the end */
    void **list = actx;
    void **blk = lp_malloc(sizeof(void *) + n + 1);
    if (!blk) return NULL;
    blk[0] = *list;
    *list = blk;
    return blk + 1;
}
static void tmp_free(void *list) {
    void **b = list;
    while (b) { void **n = b[0]; lp_free(b); b = n; }
}

/* Lex src[0..len). Returns 0; *str_start set (content offset) when it ends inside a string. */
static int lex_prefix(const char *src, size_t len, tokvec *tv, size_t *str_start, int *in_str, void **strs) {
    lx_lexer lx;
    lx_init(&lx, src, len, tmp_alloc, strs);
    *in_str = 0;
    for (;;) {
        lx_token t = lx_next(&lx);
        if (t.kind == T_EOF) break;
        if (t.kind == T_ERROR) {
            if (lx.incomplete && (src[lx.err_pos] == '"' || src[lx.err_pos] == '\'')) {
                *in_str = 1;
                *str_start = lx.err_pos + 1;
            }
            break;
        }
        if (tv->n == tv->cap) {
            size_t cap = tv->cap ? tv->cap * 2 : 64;
            lx_token *v = lp_realloc(tv->v, cap * sizeof *v);
            if (!v) return -1;
            tv->v = v;
            tv->cap = cap;
        }
        tv->v[tv->n++] = t;
    }
    return 0;
}

/* Is `cursor` inside a comment? (a `#` after the last token, with no newline after it) */
static int in_comment(const char *src, const tokvec *tv, size_t cursor) {
    size_t from = tv->n ? tv->v[tv->n - 1].end : 0;
    if (from > cursor) return 0;
    const char *h = memchr(src + from, '#', cursor - from);
    return h && !memchr(h, '\n', (size_t)(src + cursor - h));
}

/* Index of the first token of the chain (a.b[0].c) that ends with token `last`, or -1. */
static long chain_start(const tokvec *tv, long last) {
    long j = last;
    while (j >= 0) {
        lx_token *t = &tv->v[j];
        if (t->kind == T_RBRACK) {
            int d = 0;
            long k = j;
            for (; k >= 0; k--) {
                if (tv->v[k].kind == T_RBRACK) d++;
                else if (tv->v[k].kind == T_LBRACK && --d == 0) break;
            }
            if (k <= 0) return -1;
            j = k - 1;
            continue;
        }
        if (t->kind == T_IDENT || (t->kind == T_INT && j > 0 && tv->v[j - 1].kind == T_DOT)) {
            if (j >= 2 && tv->v[j - 1].kind == T_DOT) { j -= 2; continue; }
            return t->kind == T_IDENT ? j : -1;
        }
        return -1;
    }
    return -1;
}

/* Evaluate src[a..b) as an expression without side effects. */
static lv_value *eval_text(lp_interp *it, const char *src, size_t a, size_t b) {
    ps_tree t;
    ps_error e;
    lv_value *v = NULL;
    if (!ps_parse_expr(&t, src + a, b - a, ev_find_cb, it, &e)) {
        const char *ssrc = it->src;
        size_t slen = it->srclen;
        it->has_loc = 0;
        v = ev_eval_pure(it, t.root);
        it->src = ssrc;
        it->srclen = slen;
    }
    ps_free(&t);
    lv_clear_errkind();
    return v;
}

/* ---- completion --------------------------------------------------------------------- */

typedef struct {
    json_t *arr;
    const char *prefix;
    size_t plen;
    const char *type;
    const char *suffix;
} matcher;

static void add_match(void *ctx, const char *name) {
    matcher *m = ctx;
    if (strncmp(name, m->prefix, m->plen) != 0) return;
    char buf[512];
    snprintf(buf, sizeof buf, "%s%s", name, m->suffix ? m->suffix : "");
    size_t i;
    json_t *x;
    json_array_foreach(m->arr, i, x)
        if (!strcmp(json_string_value(json_object_get(x, "text")), buf)) return;
    json_t *s = json_string(buf);
    if (!s) return;   /* not UTF-8: skip it */
    json_t *o = json_object();
    json_object_set_new(o, "text", s);
    json_object_set_new(o, "type", json_string(m->type));
    json_array_append_new(m->arr, o);
}

static void add_commands(lp_interp *it, matcher *m) {
    m->type = "command";
    m->suffix = NULL;
    for (const lp_command *const *c = lp_all_commands; *c; c++) add_match(m, (*c)->name);
    for (size_t i = 0; i < it->nextra; i++) add_match(m, it->extra[i]->name);
}
static void add_vars(lp_interp *it, matcher *m) {
    m->type = "variable";
    m->suffix = NULL;
    for (size_t i = 0; i < it->vars->u.dict.n; i++) add_match(m, it->vars->u.dict.e[i].key);
}
static void add_keywords(matcher *m, const char *const *kws) {
    m->type = "keyword";
    m->suffix = NULL;
    for (; *kws; kws++) add_match(m, *kws);
}

static int cmp_str(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

static void complete_path(json_t *arr, const char *src, size_t cstart, size_t cursor) {
    char path[4096];
    size_t n = cursor - cstart;
    if (n >= sizeof path) return;
    memcpy(path, src + cstart, n);
    path[n] = 0;
    char *slash = strrchr(path, '/');
    char dir[4096];
    const char *base;
    if (slash) {
        size_t dl = (size_t)(slash - path) + 1;
        memcpy(dir, path, dl);
        dir[dl] = 0;
        base = slash + 1;
    } else {
        dir[0] = 0;
        base = path;
    }
    DIR *d = opendir(dir[0] ? dir : ".");
    if (!d) return;
    char **names = NULL;
    size_t nn = 0, cap = 0;
    struct dirent *de;
    size_t bl = strlen(base);
    while ((de = readdir(d)) && nn < 1000) {
        if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, "..")) continue;
        if (de->d_name[0] == '.' && base[0] != '.') continue;
        if (strncmp(de->d_name, base, bl)) continue;
        char full[8192];
        snprintf(full, sizeof full, "%s%s", dir, de->d_name);
        int is_dir = de->d_type == DT_DIR;
        if (de->d_type == DT_UNKNOWN || de->d_type == DT_LNK) {
            DIR *sub = opendir(full[0] ? full : ".");
            if (sub) { is_dir = 1; closedir(sub); }
        }
        if (is_dir) strncat(full, "/", sizeof full - strlen(full) - 1);
        if (nn == cap) {
            cap = cap ? cap * 2 : 32;
            char **v = lp_realloc(names, cap * sizeof *v);
            if (!v) break;
            names = v;
        }
        if (!(names[nn] = lp_strdup(full))) break;
        nn++;
    }
    closedir(d);
    if (nn) qsort(names, nn, sizeof *names, cmp_str);
    for (size_t i = 0; i < nn; i++) {
        json_t *s = json_string(names[i]);
        if (s) {
            json_t *o = json_object();
            json_object_set_new(o, "text", s);
            json_object_set_new(o, "type", json_string("path"));
            json_array_append_new(arr, o);
        }
        lp_free(names[i]);
    }
    lp_free(names);
}

/* The token index where the statement around the end of tv starts (inside parentheses:
 * just after the `(`, so `(cmd ...` is a command context of its own). */
static size_t stmt_start(const tokvec *tv, size_t end) {
    size_t stack_ss[PS_MAX_NESTING + 1];
    lx_kind stack_k[PS_MAX_NESTING + 1];
    int sp = 0;
    size_t ss = 0;
    for (size_t i = 0; i < end; i++) {
        lx_kind k = tv->v[i].kind;
        switch (k) {
        case T_LPAREN: case T_LBRACK: case T_LBRACE:
            if (sp <= PS_MAX_NESTING) { stack_ss[sp] = ss; stack_k[sp] = k; sp++; }
            if (k != T_LBRACK) ss = i + 1;
            break;
        case T_RPAREN: case T_RBRACK:
            if (sp) ss = stack_ss[--sp];
            break;
        case T_RBRACE:
            if (sp) sp--;
            ss = i + 1;
            break;
        case T_NEWLINE: case T_SEMI:
            if (!sp || stack_k[sp - 1] == T_LBRACE) ss = i + 1;
            break;
        default:
            break;
        }
    }
    return ss;
}

json_t *lp_complete(lp_interp *it, const char *code, size_t len, size_t cursor, size_t *start, size_t *end) {
    json_t *arr = json_array();
    if (!arr) return NULL;
    if (cursor > len) cursor = len;
    *start = *end = cursor;
    size_t bad;
    char msg[256];
    if (lx_check_bytes(code, cursor, &bad, msg, sizeof msg)) return arr;
    tokvec tv = { 0 };
    void *strs = NULL;
    size_t sstart = 0;
    int in_str = 0;
    if (lex_prefix(code, cursor, &tv, &sstart, &in_str, &strs)) goto done;
    if (in_str) {
        *start = sstart;
        complete_path(arr, code, sstart, cursor);
        goto done;
    }
    if (in_comment(code, &tv, cursor)) goto done;
    /* the word being typed */
    size_t ws = cursor;
    while (ws > 0 && word_byte(code[ws - 1])) ws--;
    size_t we = cursor;
    while (we < len && word_byte(code[we])) we++;
    *start = ws;
    *end = we;
    char word[256];
    snprintf(word, sizeof word, "%.*s", (int)(cursor - ws < 255 ? cursor - ws : 255), code + ws);
    matcher m = { .arr = arr, .prefix = word, .plen = strlen(word) };
    size_t ntok = tv.n;
    while (ntok && tv.v[ntok - 1].start >= ws) ntok--;   /* drop the word itself */
    if (ntok && tv.v[ntok - 1].kind == T_DOT && tv.v[ntok - 1].end == ws) {
        long cs = chain_start(&tv, (long)ntok - 2);
        if (cs >= 0) {
            lv_value *v = eval_text(it, code, tv.v[cs].start, tv.v[ntok - 1].start);
            if (v) {
                m.type = "attribute";
                lv_attrs(v, add_match, &m);
                if (v->kind == LV_OPAQUE && v->u.op.type->attr_type) {
                    /* e.g. submodules as "module", weights as "attribute" */
                    size_t i;
                    json_t *x;
                    json_array_foreach(arr, i, x) {
                        const char *t = v->u.op.type->attr_type(v->u.op.ptr,
                                                                json_string_value(json_object_get(x, "text")));
                        if (t) json_object_set_new(x, "type", json_string(t));
                    }
                }
                lv_decref(v);
            }
        }
        goto done;
    }
    static const char *const stmt_kw[] = { "repeat", "for", "if", "else", "true", "false", "none", "not", NULL };
    static const char *const expr_kw[] = { "true", "false", "none", "not", "and", "or", "in", NULL };
    size_t ss = stmt_start(&tv, ntok);
    size_t nst = ntok - ss;
    lx_token *st = tv.v + ss;
    if (nst == 0) {
        add_commands(it, &m);
        add_vars(it, &m);
        add_keywords(&m, stmt_kw);
        goto done;
    }
    const lp_command *cmd = NULL;
    size_t cmd_at = 0;
    if (st[0].kind == T_IDENT) {
        cmd = ev_find_cmd(it, code + st[0].start, st[0].end - st[0].start);
        if (!cmd && nst >= 2 && st[1].kind == T_ASSIGN) {
            if (nst == 2) {
                add_commands(it, &m);
                add_vars(it, &m);
                add_keywords(&m, expr_kw);
                goto done;
            }
            if (st[2].kind == T_IDENT) {
                cmd = ev_find_cmd(it, code + st[2].start, st[2].end - st[2].start);
                cmd_at = 2;
            }
        }
    } else if (st[0].kind == T_QUESTION && nst == 1) {
        add_commands(it, &m);
        add_vars(it, &m);
        goto done;
    }
    if (cmd && !(cmd->flags & LP_CMD_STATEMENT)) {
        int after_eq = tv.v[ntok - 1].kind == T_ASSIGN;
        if (!after_eq) {
            m.type = "option";
            m.suffix = "=";
            for (const lp_param *p = cmd->options; p && p->name; p++) {
                /* skip options already written in this statement */
                int used = 0;
                for (size_t i = cmd_at + 1; i + 1 < nst; i++)
                    if (st[i].kind == T_IDENT && st[i + 1].kind == T_ASSIGN &&
                        st[i].end - st[i].start == strlen(p->name) && !memcmp(code + st[i].start, p->name, strlen(p->name)))
                        used = 1;
                if (!used) add_match(&m, p->name);
            }
        }
        add_vars(it, &m);
        add_keywords(&m, expr_kw);
        goto done;
    }
    if (cmd && (cmd->flags & LP_CMD_STATEMENT) && nst == cmd_at + 1) {
        add_commands(it, &m);
        add_vars(it, &m);
        goto done;
    }
    add_vars(it, &m);
    add_keywords(&m, expr_kw);
done:
    lp_free(tv.v);
    tmp_free(strs);
    return arr;
}

/* ---- inspection --------------------------------------------------------------------- */

static json_t *text_bundle(const char *text) {
    json_t *s = json_string(text);
    if (!s) return NULL;
    json_t *b = json_object();
    json_object_set_new(b, "text/plain", s);
    return b;
}

json_t *lp_inspect(lp_interp *it, const char *code, size_t len, size_t cursor, int detail) {
    if (cursor > len) cursor = len;
    size_t bad;
    char msg[256];
    if (lx_check_bytes(code, len, &bad, msg, sizeof msg)) return NULL;
    /* the whole word under (or just before) the cursor */
    size_t we = cursor;
    while (we < len && word_byte(code[we])) we++;
    tokvec tv = { 0 };
    void *strs = NULL;
    size_t sstart;
    int in_str;
    json_t *res = NULL;
    if (lex_prefix(code, we, &tv, &sstart, &in_str, &strs) || in_str || in_comment(code, &tv, cursor)) goto done;
    size_t ntok = tv.n;
    /* the cursor sits on or right after the last token */
    if (ntok && tv.v[ntok - 1].end == we &&
        (tv.v[ntok - 1].kind == T_IDENT || tv.v[ntok - 1].kind == T_INT || tv.v[ntok - 1].kind == T_RBRACK ||
         (tv.v[ntok - 1].kind >= T_AND && tv.v[ntok - 1].kind <= T_NONE))) {
        lx_token *last = &tv.v[ntok - 1];
        if (last->kind != T_IDENT && last->kind != T_INT && last->kind != T_RBRACK) {
            char kw[16];
            snprintf(kw, sizeof kw, "%.*s", (int)(last->end - last->start), code + last->start);
            const char *h = reg_keyword_help(kw);
            if (h) { res = text_bundle(h); goto done; }
        } else {
            long cs = chain_start(&tv, (long)ntok - 1);
            if (cs == (long)ntok - 1 && last->kind == T_IDENT) {
                const lp_command *cmd = ev_find_cmd(it, code + last->start, last->end - last->start);
                if (cmd) { res = reg_help_bundle(cmd); goto done; }
            }
            if (cs >= 0) {
                lv_value *v = eval_text(it, code, tv.v[cs].start, last->end);
                if (v) {
                    char *sum = lv_summary(v);
                    if (sum && detail > 0) {
                        /* detail: the full rendering after the summary */
                        char *r = lv_repr(v);
                        if (r && strcmp(r, sum) && !strstr(sum, r)) {
                            sbuf b;
                            sb_init(&b);
                            sb_printf(&b, "%s\n\n%s", sum, r);
                            lp_free(sum);
                            sum = sb_take(&b);
                        }
                        lp_free(r);
                    }
                    lv_decref(v);
                    if (sum) res = text_bundle(sum);
                    lp_free(sum);
                    if (res) goto done;
                }
            }
        }
    }
    /* otherwise: the help of the command of the statement under the cursor */
    {
        size_t ss = stmt_start(&tv, ntok);
        size_t k = ss;
        if (k + 2 < ntok && tv.v[k].kind == T_IDENT && tv.v[k + 1].kind == T_ASSIGN) k += 2;
        if (k < ntok && tv.v[k].kind == T_IDENT) {
            const lp_command *cmd = ev_find_cmd(it, code + tv.v[k].start, tv.v[k].end - tv.v[k].start);
            if (cmd) res = reg_help_bundle(cmd);
        }
    }
done:
    lp_free(tv.v);
    tmp_free(strs);
    return res;
}
