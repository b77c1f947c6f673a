/* tokenize.c — `tokenize` and `detokenize`: text to token ids and back with the tokenizer.json
 * of a model (or a path), and a `tokens` value that shows them as a table.
 *
 *   t = tokenize model "日本の首都は東京です"     # table: position, id, piece, text
 *   t.ids                                         # [ ... ]
 *   detokenize model t.ids                        # "日本の首都は東京です" */
#include <libgen.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#include "commands/model.h"
#include "lang/registry.h"
#include "lang/table.h"
#include "model/tok.h"
#include "util/mem.h"
#include "util/sbuf.h"

/* ---- tokenizers, loaded once per directory ------------------------------------------------ */

enum { TOK_CACHE = 4 };
static struct { char *dir; tok_tokenizer *t; unsigned long used; } tcache[TOK_CACHE];
static unsigned long tclock;

/* The directory (or tokenizer.json) a source names: a model value's checkpoint, or a path. */
static char *source_dir(lp_call *c, lv_value *src) {
    const char *path = NULL;
    mdl_model *m = mv_model_of(src);
    if (m) path = m->tokenizer ? m->tokenizer : m->path;   /* a created model's tokenizer= */
    else if (src->kind == LV_STR) path = src->u.str.s;
    if (m && m->owned_buf && !m->tokenizer) {
        lp_fail(c, "ValueError", "this model was made by `create` without a tokenizer; give "
                "create tokenizer=\"path/tokenizer.json\", or use token ids");
        return NULL;
    }
    if (!path) {
        lp_fail(c, "TypeError", "expected a model or the path of a tokenizer, got %s", lv_type_name(src));
        return NULL;
    }
    struct stat st;
    if (stat(path, &st) == 0 && S_ISREG(st.st_mode) && strstr(path, ".safetensors")) {
        char *copy = lp_strdup(path);   /* a bare weights file: look beside it */
        if (!copy) return NULL;
        char *d = lp_strdup(dirname(copy));
        lp_free(copy);
        return d;
    }
    return lp_strdup(path);
}

static tok_tokenizer *tokenizer_for(lp_call *c, lv_value *src) {
    char *dir = source_dir(c, src);
    if (!dir) return NULL;
    int lru = 0;
    for (int i = 0; i < TOK_CACHE; i++) {
        if (tcache[i].dir && !strcmp(tcache[i].dir, dir)) {
            tcache[i].used = ++tclock;
            lp_free(dir);
            return tcache[i].t;
        }
        if (tcache[i].used < tcache[lru].used) lru = i;
    }
    tok_tokenizer *t = tok_load(dir);
    if (!t) {
        lp_fail(c, "IOError", "%s", lp_geterr());
        lp_free(dir);
        return NULL;
    }
    lp_free(tcache[lru].dir);
    tok_free(tcache[lru].t);
    tcache[lru].dir = dir;
    tcache[lru].t = t;
    tcache[lru].used = ++tclock;
    return t;
}

/* ---- the tokens value ---------------------------------------------------------------------- */

typedef struct {
    size_t n;
    int32_t *ids;
    char **pieces;   /* as in the vocabulary ("Ġthe", "▁the", "##ing") */
    char **texts;    /* each token decoded alone */
    uint8_t *special;
} tokens;

static void tokens_free(void *p) {
    tokens *t = p;
    for (size_t i = 0; i < t->n; i++) {
        if (t->pieces) lp_free(t->pieces[i]);
        if (t->texts) lp_free(t->texts[i]);
    }
    lp_free(t->ids); lp_free(t->pieces); lp_free(t->texts); lp_free(t->special);
    lp_free(t);
}

/* Show whitespace and control characters so a token's text is visible in a table cell. */
static void visible(sbuf *b, const char *s) {
    for (; *s; s++) {
        if (*s == ' ') sb_puts(b, "␣");
        else if (*s == '\n') sb_puts(b, "\\n");
        else if (*s == '\t') sb_puts(b, "\\t");
        else if (*s == '\r') sb_puts(b, "\\r");
        else sb_putc(b, *s);
    }
}

static lp_table *tokens_table(const tokens *t) {
    const char *hdr[] = {"#", "id", "piece", "text"};
    lp_table *tab = lp_table_new(4, hdr);
    if (!tab) return NULL;
    for (size_t i = 0; i < t->n; i++) {
        char pos[24], id[24];
        snprintf(pos, sizeof pos, "%zu", i);
        snprintf(id, sizeof id, "%d", (int)t->ids[i]);
        sbuf txt;
        sb_init(&txt);
        visible(&txt, t->texts[i]);
        if (t->special[i]) sb_puts(&txt, " (special)");
        const char *row[] = {pos, id, t->pieces[i], sb_str(&txt)};
        int rc = lp_table_row(tab, row);
        sb_free(&txt);
        if (rc) { lp_table_free(tab); return NULL; }
    }
    char foot[64];
    snprintf(foot, sizeof foot, "%zu token%s", t->n, t->n == 1 ? "" : "s");
    lp_table_set_footer(tab, foot);
    return tab;
}

static char *tokens_text(void *p) {
    lp_table *tab = tokens_table(p);
    char *s = tab ? lp_table_text(tab) : NULL;
    lp_table_free(tab);
    return s;
}

static json_t *tokens_bundle(void *p) {
    lp_table *tab = tokens_table(p);
    json_t *b = tab ? lp_table_bundle(tab) : NULL;
    lp_table_free(tab);
    return b;
}

static lv_value *str_list(char **items, size_t n) {
    lv_value *l = lv_list_new(n);
    for (size_t i = 0; l && i < n; i++)
        if (lv_list_push(l, lv_str(items[i]))) { lv_decref(l); return NULL; }
    return l;
}

static lv_value *tokens_item(void *p, size_t i) { return lv_int(((tokens *)p)->ids[i]); }
static size_t tokens_len(void *p) { return ((tokens *)p)->n; }

static lv_value *tokens_attr(void *p, const char *name) {
    tokens *t = p;
    if (!strcmp(name, "ids")) {
        lv_value *l = lv_list_new(t->n);
        for (size_t i = 0; l && i < t->n; i++)
            if (lv_list_push(l, lv_int(t->ids[i]))) { lv_decref(l); return NULL; }
        return l;
    }
    if (!strcmp(name, "pieces")) return str_list(t->pieces, t->n);
    if (!strcmp(name, "texts")) return str_list(t->texts, t->n);
    if (!strcmp(name, "count")) return lv_int((int64_t)t->n);
    return NULL;
}

static int tokens_attrs(void *p, lv_attr_fn add, void *actx) {
    (void)p;
    add(actx, "ids"); add(actx, "pieces"); add(actx, "texts"); add(actx, "count");
    return 0;
}

static lv_value *tokens_index(void *p, lv_value *key) {
    tokens *t = p;
    if (key->kind != LV_INT) return lv_seterr_kind("TypeError", "tokens are indexed by an int"), NULL;
    int64_t i = key->u.i < 0 ? key->u.i + (int64_t)t->n : key->u.i;
    if (i < 0 || i >= (int64_t)t->n)
        return lv_seterr_kind("IndexError", "token %lld out of range for %zu tokens", (long long)key->u.i, t->n), NULL;
    return lv_int(t->ids[i]);
}

const lv_type lv_tokens_type = {
    .name = "tokens", .free = tokens_free, .text = tokens_text, .bundle = tokens_bundle,
    .getattr = tokens_attr, .getindex = tokens_index, .attrs = tokens_attrs,
    .len = tokens_len, .item = tokens_item,
};

/* ---- tokenize ------------------------------------------------------------------------------ */

static int run_tokenize(lp_call *c, lv_value **result) {
    tok_tokenizer *tk = tokenizer_for(c, lp_arg(c, "source"));
    if (!tk) return -1;
    lv_value *text = lp_arg(c, "text"), *pair = lp_arg(c, "pair");
    int special = lp_arg_bool(c, "special");
    tok_ids out;
    tok_ids_init(&out);
    int rc = pair->kind == LV_STR
                 ? tok_encode_pair(tk, text->u.str.s, text->u.str.n, pair->u.str.s, pair->u.str.n, special, &out)
                 : tok_encode(tk, text->u.str.s, text->u.str.n, special, &out);
    if (rc) { tok_ids_free(&out); return lp_fail(c, "ValueError", "%s", lp_geterr()); }
    tokens *t = lp_calloc(1, sizeof *t);
    if (t) {
        t->ids = lp_malloc((out.n + 1) * sizeof *t->ids);
        t->pieces = lp_calloc(out.n + 1, sizeof *t->pieces);
        t->texts = lp_calloc(out.n + 1, sizeof *t->texts);
        t->special = lp_malloc(out.n + 1);
    }
    int oom = !t || !t->ids || !t->pieces || !t->texts || !t->special;
    for (size_t i = 0; !oom && i < out.n; i++, t->n++) {
        t->ids[i] = out.ids[i];
        t->special[i] = out.special[i];
        t->pieces[i] = lp_strdup(out.pieces[i] ? out.pieces[i] : "");
        t->texts[i] = tok_decode(tk, &out.ids[i], 1, 0);
        if (!t->texts[i]) t->texts[i] = lp_strdup("");
        oom = !t->pieces[i] || !t->texts[i];
        if (oom) t->n++;   /* free what this row got */
    }
    tok_ids_free(&out);
    if (oom) {
        if (t) tokens_free(t);
        return lp_fail(c, "MemoryError", "out of memory");
    }
    *result = lv_new_opaque(&lv_tokens_type, t);
    return *result ? 0 : lp_fail(c, "MemoryError", "out of memory");
}

static const lp_param tokenize_params[] = {
    { "source", LP_T_ANY, .help = "a model (its tokenizer.json) or the path of a tokenizer" },
    { "text", LP_T_STRING, .help = "the text to split into tokens" }, { 0 } };
static const lp_param tokenize_opts[] = {
    { "special", LP_T_BOOL, .def = "true", .help = "add the special tokens the model expects ([CLS] … [SEP], <s>)" },
    { "pair", LP_T_STRING, .def = "none", .help = "a second text, encoded as a pair (type ids 0 then 1)" },
    { 0 } };

const lp_command lp_cmd_tokenize = {
    "tokenize", tokenize_params, tokenize_opts, run_tokenize,
    .summary = "Split text into tokens: ids, vocabulary pieces and their text",
    .help = "The ids are those Hugging Face's tokenizers library gives for the same tokenizer.json.\n"
            "Example:\n    model = load \"models/default\"\n    t = tokenize model \"日本の首都は東京です\"\n"
            "    t.ids\n    tokenize model \"Hello world\" special=false",
};

/* ---- detokenize ---------------------------------------------------------------------------- */

static int run_detokenize(lp_call *c, lv_value **result) {
    tok_tokenizer *tk = tokenizer_for(c, lp_arg(c, "source"));
    if (!tk) return -1;
    lv_value *ids = lp_arg(c, "ids");
    tokens *tv = lv_opaque_ptr(ids, &lv_tokens_type);
    size_t n = tv ? tv->n : ids->kind == LV_LIST ? ids->u.list.n : 0;
    if (!tv && ids->kind != LV_LIST)
        return lp_fail(c, "TypeError", "expected a list of token ids or a tokens value, got %s", lv_type_name(ids));
    int32_t *buf = lp_malloc((n + 1) * sizeof *buf);
    if (!buf) return lp_fail(c, "MemoryError", "out of memory");
    for (size_t i = 0; i < n; i++) {
        if (tv) { buf[i] = tv->ids[i]; continue; }
        lv_value *x = ids->u.list.items[i];
        if (x->kind != LV_INT) {
            lp_free(buf);
            return lp_fail(c, "TypeError", "item %zu of the ids is %s, not an int", i, lv_type_name(x));
        }
        if (x->u.i < 0 || x->u.i >= (int64_t)tok_vocab_size(tk)) {
            lp_free(buf);
            return lp_fail(c, "ValueError", "id %lld is outside the vocabulary (0 … %zu)", (long long)x->u.i,
                           tok_vocab_size(tk) - 1);
        }
        buf[i] = (int32_t)x->u.i;
    }
    char *s = tok_decode(tk, buf, n, lp_arg_bool(c, "skip_special"));
    lp_free(buf);
    if (!s) return lp_fail(c, "ValueError", "%s", lp_geterr());
    *result = lv_str_take(s, strlen(s));
    return *result ? 0 : lp_fail(c, "MemoryError", "out of memory");
}

static const lp_param detokenize_params[] = {
    { "source", LP_T_ANY, .help = "a model (its tokenizer.json) or the path of a tokenizer" },
    { "ids", LP_T_ANY, .help = "a list of token ids, or what `tokenize` returned" }, { 0 } };
static const lp_param detokenize_opts[] = {
    { "skip_special", LP_T_BOOL, .def = "false", .help = "leave special tokens out of the text" }, { 0 } };

const lp_command lp_cmd_detokenize = {
    "detokenize", detokenize_params, detokenize_opts, run_detokenize,
    .summary = "Turn token ids back into text",
    .help = "Example:\n    t = tokenize model \"Hello world\"\n    detokenize model t.ids skip_special=true",
};
