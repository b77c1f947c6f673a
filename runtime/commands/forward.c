/* forward.c (commands) — `forward`, `generate`, `attention`, `activations`: the model run on
 * text or token ids. The compute is runtime/nn/forward.h and generate.h; this file turns
 * values into batches and results into values, tables and pictures.
 *
 * Compute state (f32 weights, arena) is made on the first command that needs it and kept per
 * loaded model in a small cache that holds a reference to the model value. A model that only
 * the cache still holds (the user deleted it) is dropped at the next command; at most
 * CACHE_MAX models keep their f32 weights at a time. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "commands/compute.h"
#include "commands/data.h"
#include "commands/model.h"
#include "lang/interp.h"
#include "lang/registry.h"
#include "lang/table.h"
#include "model/tok.h"
#include "nn/forward.h"
#include "nn/generate.h"
#include "util/mem.h"
#include "util/sbuf.h"

/* ---- the compute cache -------------------------------------------------------------------- */

enum { CACHE_MAX = 2 };

typedef struct fc_entry {
    lv_value *mv;            /* the model value (a reference we hold); NULL: free slot */
    fw_model *fm;
    tok_tokenizer *tok;      /* tokenizer.json beside the checkpoint, or NULL */
    int tok_tried;
    unsigned long used;      /* for least-recently-used eviction */
    unsigned long runs;      /* id of the last run on this model's arena (from run_ids):
                                outputs remember theirs to know if they are still current */
} fc_entry;

static fc_entry cache[CACHE_MAX];
static unsigned long clock_, run_ids;   /* run ids are never reused, even across evictions */

static void entry_drop(fc_entry *e) {
    fw_free(e->fm);
    tok_free(e->tok);
    lv_decref(e->mv);
    memset(e, 0, sizeof *e);
}

/* The compute state of a model value; NULL after lp_fail. */
static fc_entry *compute_of_value(lp_call *c, lv_value *v) {
    if (!lv_opaque_ptr(v, &lv_model_type)) {
        lp_fail(c, "TypeError", "expected a model (m = load \"path\"), got %s", lv_type_name(v));
        return NULL;
    }
    fc_entry *slot = NULL;
    cmd_train_release(v);   /* a `train` run's reference must not keep a deleted model here */
    for (int i = 0; i < CACHE_MAX; i++) {
        if (cache[i].mv && cache[i].mv != v && cache[i].mv->refs == 1) entry_drop(&cache[i]);
        if (cache[i].mv == v) slot = &cache[i];
    }
    if (!slot) {
        mdl_model *m = mv_model_of(v);
        const be_backend *be = be_get_dtype(mv_device(v), mv_dtype(v));
        if (!be) {
            lp_fail(c, "ValueError", "device=\"%s\": %s", mv_device(v), lp_geterr());
            return NULL;
        }
        fw_model *fm = fw_new(m, be);
        if (!fm) { lp_fail(c, "ValueError", "%s", lp_geterr()); return NULL; }
        if (fw_set_q4(fm, mv_q4(v), mv_q4_double(v)) < 0 ||
            fw_set_q8_threshold(fm, mv_q8_threshold(v)) < 0) {
            lp_fail(c, "ValueError", "%s", lp_geterr());
            fw_free(fm);
            return NULL;
        }
        /* the least recently used slot, but never one holding adapters, unfrozen weights or
         * weights changed by training or a merge: dropping it would lose them without a word */
        slot = NULL;
        for (int i = 0; i < CACHE_MAX; i++) {
            if (!cache[i].mv) { slot = &cache[i]; break; }
            if (fw_has_training(cache[i].fm)) continue;
            if (!slot || cache[i].used < slot->used) slot = &cache[i];
        }
        if (!slot) {
            fw_free(fm);
            lp_fail(c, "ValueError", "%d models already hold adapters, trainable weights or "
                    "trained weights (loupe keeps compute state for %d at a time); save an "
                    "adapter or the model (save m \"dir\") and delete one model (del name) "
                    "first", CACHE_MAX, CACHE_MAX);
            return NULL;
        }
        if (slot->mv) entry_drop(slot);
        slot->mv = lv_incref(v);
        slot->fm = fm;
    }
    slot->used = ++clock_;
    fw_set_checkpointing(slot->fm, mv_checkpointing(v));
    return slot;
}

/* The compute state of the argument `arg`; NULL after lp_fail. */
static fc_entry *compute_of(lp_call *c, const char *arg) { return compute_of_value(c, lp_arg(c, arg)); }

static tok_tokenizer *tokenizer_of(fc_entry *e) {
    if (!e->tok_tried) {
        e->tok_tried = 1;
        const char *p = fw_mdl(e->fm)->path;
        char dir[4096];
        size_t len = strlen(p);
        if (len > 12 && !strcmp(p + len - 12, ".safetensors")) {   /* a file: its directory */
            const char *slash = strrchr(p, '/');
            len = slash ? (size_t)(slash - p) : 0;
        }
        snprintf(dir, sizeof dir, "%.*s%stokenizer.json", (int)len, p, len ? "/" : "");
        if (fw_mdl(e->fm)->tokenizer)   /* a created model's tokenizer= */
            snprintf(dir, sizeof dir, "%s", fw_mdl(e->fm)->tokenizer);
        FILE *f = fopen(dir, "rb");
        if (f) {
            fclose(f);
            e->tok = tok_load(dir);   /* a broken tokenizer.json: ids still work */
            /* out of memory is not a broken file: try again next time */
            if (!e->tok && strstr(lp_geterr(), "out of memory")) e->tok_tried = 0;
        }
    }
    return e->tok;
}

/* ---- commands/compute.h: the same for commands in other files ----------------------------- */

fw_model *cmd_compute_of_value(lp_call *c, lv_value *v, int runs) {
    fc_entry *e = compute_of_value(c, v);
    if (!e) return NULL;
    if (runs) e->runs = ++run_ids;   /* earlier forward outputs read an arena about to change */
    return e->fm;
}

fw_model *cmd_compute_peek(lv_value *v) {
    for (int i = 0; i < CACHE_MAX; i++)
        if (cache[i].mv == v) return cache[i].fm;
    return NULL;
}

fw_model *cmd_compute_peek_model(const mdl_model *m) {
    for (int i = 0; i < CACHE_MAX; i++)
        if (cache[i].mv && mv_model_of(cache[i].mv) == m) return cache[i].fm;
    return NULL;
}

void cmd_compute_moved(lv_value *v) {
    for (int i = 0; i < CACHE_MAX; i++)
        if (cache[i].mv == v) cache[i].runs = ++run_ids;
}

fw_model *cmd_compute(lp_call *c, const char *arg, int runs) {
    return cmd_compute_of_value(c, lp_arg(c, arg), runs);
}

tok_tokenizer *cmd_tokenizer_of_value(lp_call *c, lv_value *v) {
    fc_entry *e = compute_of_value(c, v);
    return e ? tokenizer_of(e) : NULL;
}

tok_tokenizer *cmd_tokenizer(lp_call *c, const char *arg) { return cmd_tokenizer_of_value(c, lp_arg(c, arg)); }

/* ---- values → a batch ---------------------------------------------------------------------- */

typedef struct hbatch {
    int B, T;
    int32_t *ids, *mask, *types, *labels;   /* (B,T) host; labels (B,T) or (B) or NULL */
    char **pieces;                          /* [T] token strings of row 0 (display) */
} hbatch;

static void hb_free(hbatch *b) {
    lp_free(b->ids);
    lp_free(b->mask);
    lp_free(b->types);
    lp_free(b->labels);
    if (b->pieces)
        for (int i = 0; i < b->T; i++) lp_free(b->pieces[i]);
    lp_free(b->pieces);
    memset(b, 0, sizeof *b);
}

/* One row of ids from a string (tokenized), or a list of ints. */
static int row_ids(lp_call *c, fc_entry *e, lv_value *v, tok_ids *tk, int32_t **out, int *n,
                   int32_t **types) {
    *types = NULL;
    if (v->kind == LV_STR) {
        if (!v->u.str.n) return lp_fail(c, "ValueError", "empty input: give some text or token ids");
        tok_tokenizer *t = tokenizer_of(e);
        if (!t)
            return lp_fail(c, "ValueError", "%s has no tokenizer.json: pass token ids, like [1, 2, 3]",
                           fw_mdl(e->fm)->path);
        if (tok_encode(t, v->u.str.s, v->u.str.n, 1, tk) < 0)
            return lp_fail(c, "ValueError", "%s", lp_geterr());
        *n = (int)tk->n;
        *out = lp_malloc(sizeof(int32_t) * (tk->n ? tk->n : 1));
        *types = lp_malloc(sizeof(int32_t) * (tk->n ? tk->n : 1));
        if (!*out || !*types) return lp_fail(c, "MemoryError", "out of memory");
        memcpy(*out, tk->ids, sizeof(int32_t) * tk->n);
        memcpy(*types, tk->type_ids, sizeof(int32_t) * tk->n);
        return 0;
    }
    if (v->kind != LV_LIST)
        return lp_fail(c, "TypeError", "expected text or a list of token ids, got %s", lv_type_name(v));
    *n = (int)v->u.list.n;
    *out = lp_malloc(sizeof(int32_t) * (v->u.list.n ? v->u.list.n : 1));
    if (!*out) return lp_fail(c, "MemoryError", "out of memory");
    for (size_t i = 0; i < v->u.list.n; i++) {
        lv_value *x = v->u.list.items[i];
        if (x->kind != LV_INT || x->u.i < INT32_MIN || x->u.i > INT32_MAX)
            return lp_fail(c, "TypeError", "token ids are ints; item %zu is %s", i, lv_type_name(x));
        (*out)[i] = (int32_t)x->u.i;
    }
    return 0;
}

/* An int list of B·T (one row) or B lists of up to T ints into out (B,T), padded with pad. */
static int int_rows(lp_call *c, lv_value *v, const char *what, int B, int T, int32_t pad,
                    int32_t *out) {
    for (int i = 0; i < B * T; i++) out[i] = pad;
    int nested = v->kind == LV_LIST && v->u.list.n && v->u.list.items[0]->kind == LV_LIST;
    if (v->kind != LV_LIST || (nested ? (int)v->u.list.n != B : B != 1 || (int)v->u.list.n != T))
        return lp_fail(c, "ValueError", "`%s` must have the shape of the input ids (%d × %d)", what, B, T);
    for (int b = 0; b < B; b++) {
        lv_value *row = nested ? v->u.list.items[b] : v;
        if (row->kind != LV_LIST || (int)row->u.list.n > T)
            return lp_fail(c, "ValueError", "`%s` row %d does not match the input ids", what, b);
        for (size_t t = 0; t < row->u.list.n; t++) {
            lv_value *x = row->u.list.items[t];
            if (x->kind != LV_INT) return lp_fail(c, "TypeError", "`%s` holds ints", what);
            out[b * T + (int)t] = (int32_t)x->u.i;
        }
    }
    return 0;
}

/* The input of forward / attention / activations: text, ids, a list of texts or id lists
 * (right-padded), or a dict with input_ids [, attention_mask, token_type_ids, labels]. */
static int make_batch(lp_call *c, fc_entry *e, lv_value *v, hbatch *hb) {
    memset(hb, 0, sizeof *hb);
    const td_batch *tb = cmd_batch_of(v);
    if (tb) {   /* a batch from `next DATA`: ids, mask and labels as they are */
        int per_row = fw_model_info(e->fm)->out_kind == FW_OUT_CLASSES;
        if (tb->classify != per_row)
            return lp_fail(c, "ValueError", "this batch has %s but the model %s",
                           tb->classify ? "one class label per row" : "token labels",
                           per_row ? "classifies sequences" : "predicts tokens");
        size_t N = (size_t)tb->B * tb->T, NL = tb->classify ? (size_t)tb->B : N;
        hb->ids = lp_malloc(sizeof(int32_t) * N);
        hb->mask = lp_malloc(sizeof(int32_t) * N);
        hb->types = lp_calloc(N, sizeof(int32_t));
        hb->labels = lp_malloc(sizeof(int32_t) * NL);
        if (!hb->ids || !hb->mask || !hb->types || !hb->labels) {
            hb_free(hb);
            return lp_fail(c, "MemoryError", "out of memory");
        }
        memcpy(hb->ids, tb->ids, sizeof(int32_t) * N);
        memcpy(hb->mask, tb->mask, sizeof(int32_t) * N);
        memcpy(hb->labels, tb->labels, sizeof(int32_t) * NL);
        hb->B = tb->B;
        hb->T = tb->T;
        return 0;
    }
    lv_value *dict = v->kind == LV_DICT ? v : NULL;
    if (dict) {
        v = lv_dict_get(dict, "input_ids", 9);
        if (!v) return lp_fail(c, "ValueError", "a batch dict needs `input_ids`");
    }
    int rows = v->kind == LV_LIST && v->u.list.n &&
               (v->u.list.items[0]->kind == LV_LIST || v->u.list.items[0]->kind == LV_STR);
    int B = rows ? (int)v->u.list.n : 1;
    if (v->kind == LV_LIST && !v->u.list.n) return lp_fail(c, "ValueError", "empty input: no token ids");
    int32_t **r = lp_calloc((size_t)B, sizeof *r), **ty = lp_calloc((size_t)B, sizeof *ty);
    int *n = lp_calloc((size_t)B, sizeof *n);
    tok_ids tk;
    tok_ids_init(&tk);
    int rc = -1, T = 0;
    if (!r || !n || !ty) { lp_fail(c, "MemoryError", "out of memory"); goto out; }
    for (int b = 0; b < B; b++) {
        if (row_ids(c, e, rows ? v->u.list.items[b] : v, &tk, &r[b], &n[b], &ty[b]) < 0) goto out;
        if (b == 0 && !rows) {   /* pieces of a single row, for display */
            hb->pieces = lp_calloc((size_t)n[0] ? (size_t)n[0] : 1, sizeof *hb->pieces);
            if (!hb->pieces) { lp_fail(c, "MemoryError", "out of memory"); goto out; }
            for (int i = 0; i < n[0]; i++) {
                const char *p = tk.n == (size_t)n[0] ? tk.pieces[i] : NULL;
                char buf[24];
                if (!p) { snprintf(buf, sizeof buf, "%d", r[0][i]); p = buf; }
                hb->pieces[i] = lp_strdup(p);
            }
        }
        if (!n[b]) { lp_fail(c, "ValueError", "empty input: row %d has no tokens", b); goto out; }
        if (n[b] > T) T = n[b];
    }
    hb->B = B;
    hb->T = T;
    size_t N = (size_t)B * T;
    hb->ids = lp_calloc(N, sizeof(int32_t));
    hb->mask = lp_calloc(N, sizeof(int32_t));
    hb->types = lp_calloc(N, sizeof(int32_t));
    if (!hb->ids || !hb->mask || !hb->types) { lp_fail(c, "MemoryError", "out of memory"); goto out; }
    json_t *padj = json_object_get(fw_mdl(e->fm)->config->raw, "pad_token_id");
    int32_t pad = json_is_integer(padj) ? (int32_t)json_integer_value(padj) : 0;
    for (int b = 0; b < B; b++)
        for (int t = 0; t < T; t++) {   /* right padding, as a tokenizer's padding_side="right" */
            hb->ids[b * T + t] = t < n[b] ? r[b][t] : pad;
            hb->mask[b * T + t] = t < n[b];
            hb->types[b * T + t] = t < n[b] && ty[b] ? ty[b][t] : 0;
        }
    if (dict) {
        lv_value *x;
        if ((x = lv_dict_get(dict, "attention_mask", 14)) && int_rows(c, x, "attention_mask", B, T, 0, hb->mask) < 0)
            goto out;
        if ((x = lv_dict_get(dict, "token_type_ids", 14)) && int_rows(c, x, "token_type_ids", B, T, 0, hb->types) < 0)
            goto out;
        if ((x = lv_dict_get(dict, "labels", 6)) && x->kind != LV_NONE) {
            const fw_info *info = fw_model_info(e->fm);
            int per_row = info->out_kind == FW_OUT_CLASSES;
            hb->labels = lp_malloc(sizeof(int32_t) * (per_row ? (size_t)B : N));
            if (!hb->labels) { lp_fail(c, "MemoryError", "out of memory"); goto out; }
            if (per_row ? int_rows(c, x, "labels", 1, B, -100, hb->labels) < 0
                        : int_rows(c, x, "labels", B, T, -100, hb->labels) < 0)
                goto out;
        }
    }
    rc = 0;
out:
    for (int b = 0; b < B && r; b++) lp_free(r[b]);
    for (int b = 0; b < B && ty; b++) lp_free(ty[b]);
    lp_free(r);
    lp_free(ty);
    lp_free(n);
    tok_ids_free(&tk);
    if (rc) hb_free(hb);
    return rc;
}

/* Run the forward on hb; 0 or -1 after lp_fail. */
static int run_model(lp_call *c, fc_entry *e, hbatch *hb, int flags, fw_out *out) {
    fw_batch in = {.B = hb->B, .T = hb->T, .ids = hb->ids, .mask = hb->mask, .types = hb->types,
                   .labels = hb->labels, .flags = flags};
    e->runs = ++run_ids;
    if (fw_forward(e->fm, &in, out) < 0) return lp_fail(c, "ValueError", "%s", lp_geterr());
    return 0;
}

/* floats (n) → a list value; NULL on OOM */
static lv_value *float_list(const float *x, size_t n) {
    lv_value *l = lv_list_new(n);
    for (size_t i = 0; l && i < n; i++)
        if (lv_list_push(l, lv_float(x[i]))) { lv_decref(l); return NULL; }
    return l;
}

/* (rows, cols) host floats → list of lists */
static lv_value *float_matrix(const float *x, size_t rows, size_t cols) {
    lv_value *l = lv_list_new(rows);
    for (size_t r = 0; l && r < rows; r++)
        if (lv_list_push(l, float_list(x + r * cols, cols))) { lv_decref(l); return NULL; }
    return l;
}

/* ---- forward --------------------------------------------------------------------------------
 * The output value: loss and the shape, logits read from the model's arena while they are
 * still the latest (a later forward on the same model reuses that memory). */

typedef struct fo_value {
    fc_entry *e;            /* valid while mv is held */
    lv_value *mv;           /* a reference keeping the model (and cache slot) alive */
    unsigned long run;      /* e->runs when made */
    fw_out out;
    int B, T;
    char *arch;
} fo_value;

static void fo_free(void *p) {
    fo_value *f = p;
    lv_decref(f->mv);
    lp_free(f->arch);
    lp_free(f);
}

static int fo_current(const fo_value *f) {
    for (int i = 0; i < CACHE_MAX; i++)
        if (&cache[i] == f->e && cache[i].mv == f->mv && cache[i].runs == f->run) return 1;
    return 0;
}

static char *fo_text(void *p) {
    fo_value *f = p;
    sbuf b;
    sb_init(&b);
    const char *what = f->out.kind == FW_OUT_LM ? "logits" : f->out.kind == FW_OUT_CLASSES ? "class logits" : "hidden states";
    sb_printf(&b, "forward · %s · batch %d × %d tokens · %s [%d, %d]", f->arch, f->B, f->T, what,
              f->out.R, f->out.V);
    if (f->out.has_loss) sb_printf(&b, "\nloss %.4f over %d targets", f->out.loss, f->out.count);
    return b.oom ? (sb_free(&b), NULL) : sb_take(&b);
}

static lv_value *fo_attr(void *p, const char *name) {
    fo_value *f = p;
    if (!strcmp(name, "loss")) return f->out.has_loss ? lv_float(f->out.loss) : lv_none();
    if (!strcmp(name, "count")) return lv_int(f->out.count);
    if (!strcmp(name, "shape")) {
        lv_value *l = lv_list_new(3);
        if (f->out.kind == FW_OUT_CLASSES) {
            lv_list_push(l, lv_int(f->out.R));
        } else {
            lv_list_push(l, lv_int(f->B));
            lv_list_push(l, lv_int(f->T));
        }
        lv_list_push(l, lv_int(f->out.V));
        return l;
    }
    if (!strcmp(name, "logits") || !strcmp(name, "predictions")) {
        if (!fo_current(f)) {
            lv_seterr_kind("ValueError", "these logits were replaced by a later forward on the same "
                           "model (or it was moved with `to`); run forward again");
            return NULL;
        }
        size_t R = (size_t)f->out.R, V = (size_t)f->out.V;
        float *h = lp_malloc(sizeof(float) * R * V);
        if (!h) { lv_seterr_kind("MemoryError", "out of memory"); return NULL; }
        fw_backend(f->e->fm)->to_host(h, f->out.logits, sizeof(float) * R * V);
        lv_value *res;
        if (!strcmp(name, "predictions")) {   /* argmax per row */
            res = lv_list_new(R);
            for (size_t r = 0; res && r < R; r++) {
                size_t best = 0;
                for (size_t v = 1; v < V; v++) if (h[r * V + v] > h[r * V + best]) best = v;
                if (lv_list_push(res, lv_int((int64_t)best))) { lv_decref(res); res = NULL; }
            }
        } else if (f->out.kind == FW_OUT_CLASSES) {
            res = float_matrix(h, R, V);
        } else {   /* [B][T][V] */
            res = lv_list_new((size_t)f->B);
            for (int b = 0; res && b < f->B; b++)
                if (lv_list_push(res, float_matrix(h + (size_t)b * f->T * V, (size_t)f->T, V))) {
                    lv_decref(res);
                    res = NULL;
                }
        }
        lp_free(h);
        if (!res) lv_seterr_kind("MemoryError", "out of memory");
        return res;
    }
    return NULL;
}

static int fo_attrs(void *p, lv_attr_fn add, void *actx) {
    static const char *const f[] = {"loss", "count", "shape", "logits", "predictions", NULL};
    for (const char *const *k = f; *k; k++) add(actx, *k);
    return 0;
}

const lv_type lv_forward_output_type = {
    .name = "forward_output", .free = fo_free, .text = fo_text, .getattr = fo_attr, .attrs = fo_attrs,
};

/* For `backward` (commands/adapter.c): the compute state whose last forward made `out`. */
fw_model *cmd_forward_output_model(lp_call *c, lv_value *out) {
    fo_value *f = lv_opaque_ptr(out, &lv_forward_output_type);
    if (!f) {
        lp_fail(c, "TypeError", "expected the output of `forward` (out = forward model batch), "
                "got %s", lv_type_name(out));
        return NULL;
    }
    if (!fo_current(f)) {
        lp_fail(c, "ValueError", "a later forward, generate or attention on this model, or "
                "moving it with `to`, replaced this output's activations; run forward again, "
                "then backward");
        return NULL;
    }
    return f->e->fm;
}

static int run_forward(lp_call *c, lv_value **result) {
    fc_entry *e = compute_of(c, "model");
    if (!e) return -1;
    hbatch hb;
    if (make_batch(c, e, lp_arg(c, "batch"), &hb) < 0) return -1;
    const fw_info *info = fw_model_info(e->fm);
    lv_value *lab = lp_arg(c, "labels");
    int rc = -1;
    if (lab->kind != LV_NONE) {
        int per_row = info->out_kind == FW_OUT_CLASSES;
        lp_free(hb.labels);
        hb.labels = lp_malloc(sizeof(int32_t) * (per_row ? (size_t)hb.B : (size_t)hb.B * hb.T));
        if (!hb.labels) { lp_fail(c, "MemoryError", "out of memory"); goto out; }
        if (per_row ? int_rows(c, lab, "labels", 1, hb.B, -100, hb.labels) < 0
                    : int_rows(c, lab, "labels", hb.B, hb.T, -100, hb.labels) < 0)
            goto out;
    } else if (!hb.labels && info->out_kind == FW_OUT_LM) {
        /* a language model learns its input: labels = ids, padding ignored (the shift is
         * inside, as in transformers) */
        hb.labels = lp_malloc(sizeof(int32_t) * (size_t)hb.B * hb.T);
        if (!hb.labels) { lp_fail(c, "MemoryError", "out of memory"); goto out; }
        for (int i = 0; i < hb.B * hb.T; i++) hb.labels[i] = hb.mask[i] ? hb.ids[i] : -100;
    }
    fo_value *f = lp_calloc(1, sizeof *f);
    if (!f) { lp_fail(c, "MemoryError", "out of memory"); goto out; }
    /* the model's mode (train_mode / eval_mode): in train mode dropout is drawn (and kept for
       `backward`), as a PyTorch module after model.train() */
    if (run_model(c, e, &hb, FW_KEEP | (mv_training(e->mv) ? FW_TRAIN : 0), &f->out) < 0) {
        lp_free(f);
        goto out;
    }
    f->e = e;
    f->mv = lv_incref(e->mv);
    f->run = e->runs;
    f->B = hb.B;
    f->T = hb.T;
    f->arch = lp_strdup(fw_mdl(e->fm)->summary.architecture);
    *result = lv_new_opaque(&lv_forward_output_type, f);
    rc = *result ? 0 : lp_fail(c, "MemoryError", "out of memory");
out:
    hb_free(&hb);
    return rc;
}

static const lp_param forward_params[] = {
    {"model", LP_T_VALUE, .vtype = &lv_model_type, .help = "a loaded model"},
    {"batch", LP_T_ANY, .help = "text, token ids, a list of either (right-padded), a dict with input_ids, or a batch from `next`"},
    {0}};
static const lp_param forward_opts[] = {
    {"labels", LP_T_ANY, .def = "none",
     .help = "targets (-100 ignored); default for a language model: the ids themselves"},
    {0}};
const lp_command lp_cmd_forward = {
    "forward", forward_params, forward_opts, run_forward,
    .summary = "Run the model: logits and the loss (kept for `backward`)",
    .help = "For a language model the loss is the next-token cross-entropy of the input (the\n"
            "labels shifted by one inside, as in transformers); BERT classifiers take labels=[...]\n"
            "with one class per row. Every layer's activations are kept for the backward.\n"
            "Dropout is drawn only when the model is in train mode (`train_mode m`; `load` gives\n"
            "eval mode, `create` train mode, as from_pretrained and from_config do).\n"
            "Example:\n    out = forward m \"The cat sat on the mat\"\n    out.loss\n"
            "    out = forward m [[1, 2, 3], [4, 5]]      # two rows, right-padded",
};

/* ---- generate -------------------------------------------------------------------------------- */

typedef struct gen_ctx {
    lp_call *c;
    tok_tokenizer *tok;
    int32_t *ids;           /* [n] generated so far */
    int n, cap;
    size_t shown;           /* bytes of the decoded text already streamed */
    char *text;             /* the decoded text so far (tokenizer) */
    lv_value *stops;        /* list of stop strings or NULL */
} gen_ctx;

static int on_token(void *ctx, int32_t id) {
    gen_ctx *g = ctx;
    if (g->n < g->cap) g->ids[g->n++] = id;
    if (!g->tok) {
        char buf[24];
        int len = snprintf(buf, sizeof buf, "%s%d", g->n > 1 ? " " : "", id);
        lp_out_text(g->c, 1, buf, (size_t)len);
    } else {
        char *t = tok_decode(g->tok, g->ids, (size_t)g->n, 1);
        if (t) {
            size_t len = strlen(t);
            /* hold back an unfinished UTF-8 character (byte-level tokens split them) */
            int partial = len >= 3 && !memcmp(t + len - 3, "\xEF\xBF\xBD", 3);
            if (!partial && len > g->shown) {
                lp_out_text(g->c, 1, t + g->shown, len - g->shown);
                g->shown = len;
            }
            lp_free(g->text);
            g->text = t;
            if (g->stops)
                for (size_t i = 0; i < g->stops->u.list.n; i++) {
                    lv_value *s = g->stops->u.list.items[i];
                    if (s->u.str.n && strstr(t, s->u.str.s)) return 1;
                }
        }
    }
    return lp_check_interrupt(g->c);
}

static int run_generate(lp_call *c, lv_value **result) {
    fc_entry *e = compute_of(c, "model");
    if (!e) return -1;
    lv_value *pv = lp_arg(c, "prompt");
    if (pv->kind == LV_STR && !pv->u.str.n) return lp_fail(c, "ValueError", "empty prompt: give some text");
    if (pv->kind == LV_LIST && !pv->u.list.n) return lp_fail(c, "ValueError", "empty prompt: give some token ids");
    tok_ids tk;
    tok_ids_init(&tk);
    int32_t *prompt = NULL, *types = NULL, stop_ids[16];
    int n = 0, rc = -1;
    gen_ctx g = {.c = c};
    if (row_ids(c, e, pv, &tk, &prompt, &n, &types) < 0) goto out;
    g.tok = pv->kind == LV_STR ? tokenizer_of(e) : NULL;
    gn_params p;
    gn_params_default(&p);
    int64_t mt = lp_arg_int(c, "max_tokens"), tk_ = lp_arg_int(c, "top_k");
    if (mt < 1 || mt > 1000000) { lp_fail(c, "ValueError", "max_tokens must be 1 or more, got %lld", (long long)mt); goto out; }
    if (tk_ < 0 || tk_ > INT32_MAX) { lp_fail(c, "ValueError", "top_k must be 0 (off) or more, got %lld", (long long)tk_); goto out; }
    p.max_tokens = (int)mt;
    p.temperature = lp_arg_float(c, "temperature");
    p.top_k = (int)tk_;
    p.top_p = lp_arg_float(c, "top_p");
    p.seed = (uint64_t)lp_arg_int(c, "seed");
    p.nstop = gn_eos_from_model(fw_mdl(e->fm), stop_ids, 16);
    if (!p.nstop && g.tok && tok_specials(g.tok)->eos >= 0) stop_ids[p.nstop++] = tok_specials(g.tok)->eos;
    lv_value *st = lp_arg(c, "stop");
    lv_value *stops = NULL;
    if (st->kind == LV_STR) {
        stops = lv_list_new(1);
        if (!stops || lv_list_push(stops, lv_incref(st))) { lv_decref(stops); lp_fail(c, "MemoryError", "out of memory"); goto out; }
    } else if (st->kind == LV_LIST) {
        for (size_t i = 0; i < st->u.list.n; i++) {
            lv_value *x = st->u.list.items[i];
            if (x->kind == LV_INT && p.nstop < 16) stop_ids[p.nstop++] = (int32_t)x->u.i;
            else if (x->kind != LV_STR) { lp_fail(c, "TypeError", "stop holds strings or token ids"); goto out; }
        }
        stops = lv_incref(st);
    } else if (st->kind == LV_INT) {
        stop_ids[p.nstop < 16 ? p.nstop++ : 15] = (int32_t)st->u.i;
    } else if (st->kind != LV_NONE) {
        lp_fail(c, "TypeError", "stop is a string, a token id or a list of them");
        goto out;
    }
    if (stops && !g.tok) {   /* strings need text: keep only id stops */
        for (size_t i = 0; i < stops->u.list.n; i++)
            if (stops->u.list.items[i]->kind == LV_STR) {
                lv_decref(stops);
                lp_fail(c, "ValueError", "stop strings need text: give the prompt as text (the model needs a tokenizer.json)");
                goto out;
            }
    }
    if (stops) {   /* keep only the strings for the callback */
        lv_value *only = lv_list_new(stops->u.list.n);
        for (size_t i = 0; only && i < stops->u.list.n; i++)
            if (stops->u.list.items[i]->kind == LV_STR) lv_list_push(only, lv_incref(stops->u.list.items[i]));
        lv_decref(stops);
        stops = only;
    }
    g.stops = stops;
    p.stop_ids = stop_ids;
    g.cap = p.max_tokens;
    g.ids = lp_malloc(sizeof(int32_t) * (size_t)g.cap);
    if (!g.ids) { lp_fail(c, "MemoryError", "out of memory"); goto out; }
    p.on_token = on_token;
    p.ctx = &g;
    gn_result r;
    e->runs = ++run_ids;   /* the arena is reused: earlier forward outputs are no longer current */
    int grc = gn_generate(e->fm, prompt, n, &p, &r);
    gn_result_free(&r);
    if (g.tok && g.text && strlen(g.text) > g.shown)   /* what was held back */
        lp_out_text(c, 1, g.text + g.shown, strlen(g.text) - g.shown);
    if (g.n) lp_out_text(c, 1, "\n", 1);
    if (grc < 0) {
        if (!lv_errkind()) lp_fail(c, "ValueError", "%s", lp_geterr());
        goto out;
    }
    if (!c->top) {   /* assigned: the value; at the top it was streamed */
        if (g.tok) {
            *result = lv_str(g.text ? g.text : "");
        } else {
            *result = lv_list_new((size_t)g.n);
            for (int i = 0; *result && i < g.n; i++) lv_list_push(*result, lv_int(g.ids[i]));
        }
        if (!*result) { lp_fail(c, "MemoryError", "out of memory"); goto out; }
    }
    rc = 0;
out:
    lv_decref(g.stops);
    lp_free(g.ids);
    lp_free(g.text);
    lp_free(prompt);
    lp_free(types);
    tok_ids_free(&tk);
    return rc;
}

static const lp_param generate_params[] = {
    {"model", LP_T_VALUE, .vtype = &lv_model_type, .help = "a loaded causal language model"},
    {"prompt", LP_T_ANY, .help = "text (needs tokenizer.json) or a list of token ids"},
    {0}};
static const lp_param generate_opts[] = {
    {"max_tokens", LP_T_INT, .def = "32", .help = "new tokens at most", .hf = "max_new_tokens"},
    {"temperature", LP_T_FLOAT, .def = "0", .help = "0: greedy; above 0: sample from softmax(logits / t)"},
    {"top_k", LP_T_INT, .def = "0", .help = "sample among the k most likely tokens (0: all)"},
    {"top_p", LP_T_FLOAT, .def = "1.0", .help = "sample among the most likely tokens whose probability reaches p"},
    {"seed", LP_T_INT, .def = "0", .help = "random seed: the same seed gives the same text"},
    {"stop", LP_T_ANY, .def = "none", .help = "a string, a token id, or a list of them; eos always stops", .hf = "stop_strings"},
    {0}};
const lp_command lp_cmd_generate = {
    "generate", generate_params, generate_opts, run_generate,
    .summary = "Continue a prompt token by token, streaming the text (a KV cache keeps past keys)",
    .help = "Stops at eos (config.json / generation_config.json), a stop string, max_tokens or the\n"
            "model's last position; the stop button stops it between tokens. Assigned, it gives\n"
            "the new text (or ids); at the top of a cell the streamed text is the output.\n"
            "Example:\n    generate m \"The capital of Japan is\" max_tokens=16\n"
            "    s = generate m \"Once upon a time\" temperature=0.8 top_p=0.9 seed=1",
};

/* ---- attention ------------------------------------------------------------------------------ */

typedef struct at_value {
    int T, layer, head, H;
    float *probs;       /* (T,T) host */
    char **tokens;      /* [T] */
    char *arch;
} at_value;

static void at_free(void *p) {
    at_value *a = p;
    for (int i = 0; a->tokens && i < a->T; i++) lp_free(a->tokens[i]);
    lp_free(a->tokens);
    lp_free(a->probs);
    lp_free(a->arch);
    lp_free(a);
}

static char *at_text(void *p) {
    at_value *a = p;
    sbuf b;
    sb_init(&b);
    sb_printf(&b, "attention · %s · layer %d · head %d of %d · %d tokens (rows: queries, columns: keys)\n",
              a->arch, a->layer, a->head, a->H, a->T);
    if (a->T <= 16) {
        int w = 6;
        for (int i = 0; i < a->T; i++) { int l = (int)lv_utf8_len(a->tokens[i], strlen(a->tokens[i])); if (l > w) w = l > 12 ? 12 : l; }
        for (int i = 0; i < a->T; i++) {
            int l = (int)lv_utf8_len(a->tokens[i], strlen(a->tokens[i]));
            sb_puts(&b, a->tokens[i]);
            for (int k = l; k < w; k++) sb_putc(&b, ' ');
            for (int j = 0; j < a->T; j++) sb_printf(&b, " %.2f", a->probs[(size_t)i * a->T + j]);
            sb_putc(&b, '\n');
        }
        b.len--;   /* no trailing newline */
        b.s[b.len] = 0;
    } else {
        sb_puts(&b, "the heat map is image/svg+xml; the numbers are .probs");
    }
    return b.oom ? (sb_free(&b), NULL) : sb_take(&b);
}

static void svg_text(sbuf *b, const char *s) {
    char buf[64];
    snprintf(buf, sizeof buf, "%s", s);   /* long pieces are cut for the axis */
    if (strlen(s) > 20) strcpy(buf + 17, "...");
    sb_html_escape(b, buf);
}

static json_t *at_bundle(void *p) {
    at_value *a = p;
    int T = a->T;
    int cell = T <= 20 ? 24 : T <= 64 ? 12 : T <= 160 ? 5 : 3;
    int left = 110, top = 110, W = left + cell * T + 20, Hh = top + cell * T + 20;
    sbuf b;
    sb_init(&b);
    sb_printf(&b, "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%d\" height=\"%d\" "
                  "font-family=\"sans-serif\" font-size=\"11\">\n", W, Hh);
    sb_printf(&b, "<text x=\"4\" y=\"14\" font-size=\"12\">%s · layer %d · head %d</text>\n",
              a->arch, a->layer, a->head);
    for (int i = 0; i < T; i++)
        for (int j = 0; j < T; j++) {
            float v = a->probs[(size_t)i * T + j];
            int shade = (int)lrintf(255 * (1 - (v < 0 ? 0 : v > 1 ? 1 : v)));
            sb_printf(&b, "<rect x=\"%d\" y=\"%d\" width=\"%d\" height=\"%d\" fill=\"rgb(%d,%d,255)\">",
                      left + j * cell, top + i * cell, cell, cell, shade, shade);
            if (T <= 64) sb_printf(&b, "<title>%.4f</title>", v);
            sb_puts(&b, "</rect>\n");
        }
    if (T <= 64) {
        for (int i = 0; i < T; i++) {   /* queries down the left, keys across the top */
            sb_printf(&b, "<text x=\"%d\" y=\"%d\" text-anchor=\"end\">", left - 4, top + i * cell + cell / 2 + 4);
            svg_text(&b, a->tokens[i]);
            sb_puts(&b, "</text>\n");
            int x = left + i * cell + cell / 2 + 4, y = top - 4;
            sb_printf(&b, "<text x=\"%d\" y=\"%d\" transform=\"rotate(-60 %d %d)\">", x, y, x, y);
            svg_text(&b, a->tokens[i]);
            sb_puts(&b, "</text>\n");
        }
    }
    sb_puts(&b, "</svg>\n");
    char *text = at_text(p);
    json_t *bundle = json_object();
    if (bundle && !b.oom && text) {
        json_object_set_new(bundle, "image/svg+xml", json_string(sb_str(&b)));
        json_object_set_new(bundle, "text/plain", json_string(text));
    }
    sb_free(&b);
    lp_free(text);
    return bundle;
}

static lv_value *at_attr(void *p, const char *name) {
    at_value *a = p;
    if (!strcmp(name, "probs")) return float_matrix(a->probs, (size_t)a->T, (size_t)a->T);
    if (!strcmp(name, "layer")) return lv_int(a->layer);
    if (!strcmp(name, "head")) return lv_int(a->head);
    if (!strcmp(name, "tokens")) {
        lv_value *l = lv_list_new((size_t)a->T);
        for (int i = 0; l && i < a->T; i++)
            if (lv_list_push(l, lv_str(a->tokens[i]))) { lv_decref(l); return NULL; }
        return l;
    }
    return NULL;
}

static int at_attrs(void *p, lv_attr_fn add, void *actx) {
    static const char *const f[] = {"probs", "tokens", "layer", "head", NULL};
    for (const char *const *k = f; *k; k++) add(actx, *k);
    return 0;
}

const lv_type lv_attention_type = {
    .name = "attention", .free = at_free, .text = at_text, .bundle = at_bundle,
    .getattr = at_attr, .attrs = at_attrs,
};

/* A single-row input for attention / activations (text or ids). */
static int single_row(lp_call *c, fc_entry *e, hbatch *hb) {
    lv_value *v = lp_arg(c, "text");
    if (v->kind != LV_STR && v->kind != LV_LIST)
        return lp_fail(c, "TypeError", "expected text or a list of token ids, got %s", lv_type_name(v));
    if (v->kind == LV_LIST && v->u.list.n && v->u.list.items[0]->kind != LV_INT)
        return lp_fail(c, "TypeError", "one text or one list of token ids");
    return make_batch(c, e, v, hb);
}

static int run_attention(lp_call *c, lv_value **result) {
    fc_entry *e = compute_of(c, "model");
    if (!e) return -1;
    const fw_info *info = fw_model_info(e->fm);
    int64_t layer = lp_arg_int(c, "layer"), head = lp_arg_int(c, "head");
    if (layer < 0) layer += info->layers;
    if (layer < 0 || layer >= info->layers)
        return lp_fail(c, "ValueError", "layer must be 0 .. %d, got %lld", info->layers - 1, (long long)lp_arg_int(c, "layer"));
    if (head < 0 || head >= info->heads)
        return lp_fail(c, "ValueError", "head must be 0 .. %d, got %lld", info->heads - 1, (long long)head);
    hbatch hb;
    if (single_row(c, e, &hb) < 0) return -1;
    fw_out out;
    int rc = -1;
    at_value *a = NULL;
    if (run_model(c, e, &hb, FW_KEEP | FW_PROBS, &out) < 0) goto out;
    const fw_acts *A = fw_last_acts(e->fm);
    int T = hb.T;
    a = lp_calloc(1, sizeof *a);
    if (!a) { lp_fail(c, "MemoryError", "out of memory"); goto out; }
    a->T = T;
    a->layer = (int)layer;
    a->head = (int)head;
    a->H = info->heads;
    a->probs = lp_malloc(sizeof(float) * (size_t)T * T);
    a->tokens = hb.pieces;
    hb.pieces = NULL;
    a->arch = lp_strdup(fw_mdl(e->fm)->summary.architecture);
    if (!a->probs || !a->tokens || !a->arch) { lp_fail(c, "MemoryError", "out of memory"); goto out; }
    fw_backend(e->fm)->to_host(a->probs, A->layers[layer].probs + (size_t)head * T * T,
                               sizeof(float) * (size_t)T * T);
    *result = lv_new_opaque(&lv_attention_type, a);
    a = NULL;
    rc = *result ? 0 : lp_fail(c, "MemoryError", "out of memory");
out:
    if (a) at_free(a);
    hb_free(&hb);
    return rc;
}

static const lp_param attention_params[] = {
    {"model", LP_T_VALUE, .vtype = &lv_model_type, .help = "a loaded model"},
    {"text", LP_T_ANY, .help = "text (needs tokenizer.json) or a list of token ids"},
    {0}};
static const lp_param attention_opts[] = {
    {"layer", LP_T_INT, .def = "0", .help = "layer index (-1: the last)"},
    {"head", LP_T_INT, .def = "0", .help = "attention head"},
    {0}};
const lp_command lp_cmd_attention = {
    "attention", attention_params, attention_opts, run_attention,
    .summary = "Heat map of one head's attention: which earlier tokens each token looks at",
    .help = "Row i is the query at token i; its cells are the softmax weights over the keys (each\n"
            "row sums to 1; a causal model sees only earlier tokens). The numbers are `.probs`.\n"
            "Example:\n    attention m \"The cat sat on the mat\" layer=0 head=2\n"
            "    a = attention m [1, 5, 9] layer=-1\n    a.probs",
};

/* ---- activations ---------------------------------------------------------------------------- */

typedef struct ac_entry { char *name; int rows, cols; float *data; } ac_entry;   /* data (rows,cols) */
typedef struct ac_value { ac_entry *e; size_t n; char *arch; int T; } ac_value;

static void ac_free(void *p) {
    ac_value *a = p;
    for (size_t i = 0; i < a->n; i++) { lp_free(a->e[i].name); lp_free(a->e[i].data); }
    lp_free(a->e);
    lp_free(a->arch);
    lp_free(a);
}

static lp_table *ac_table(const ac_value *a) {
    const char *hdr[] = {"name", "shape", "mean", "std", "min", "max"};
    lp_table *t = lp_table_new(6, hdr);
    for (size_t i = 0; t && i < a->n; i++) {
        const ac_entry *e = &a->e[i];
        size_t n = (size_t)e->rows * e->cols;
        double s = 0, s2 = 0, mn = INFINITY, mx = -INFINITY;
        for (size_t k = 0; k < n; k++) {
            double x = e->data[k];
            s += x; s2 += x * x;
            if (x < mn) mn = x;
            if (x > mx) mx = x;
        }
        double mean = n ? s / n : 0, var = n ? s2 / n - mean * mean : 0;
        char shape[48], c1[32], c2[32], c3[32], c4[32];
        snprintf(shape, sizeof shape, "[%d, %d]", e->rows, e->cols);
        snprintf(c1, sizeof c1, "%.4g", mean);
        snprintf(c2, sizeof c2, "%.4g", sqrt(var > 0 ? var : 0));
        snprintf(c3, sizeof c3, "%.4g", mn);
        snprintf(c4, sizeof c4, "%.4g", mx);
        const char *row[] = {e->name, shape, c1, c2, c3, c4};
        lp_table_row(t, row);
    }
    if (t) {
        char title[160];
        snprintf(title, sizeof title, "activations · %s · %d tokens (one row per token; a[\"NAME\"] gives the numbers)",
                 a->arch, a->T);
        lp_table_set_title(t, title);
    }
    return t;
}

static char *ac_text(void *p) {
    lp_table *t = ac_table(p);
    char *s = t ? lp_table_text(t) : NULL;
    lp_table_free(t);
    return s;
}
static json_t *ac_bundle(void *p) {
    lp_table *t = ac_table(p);
    json_t *b = t ? lp_table_bundle(t) : NULL;
    lp_table_free(t);
    return b;
}

static lv_value *ac_index(void *p, lv_value *key) {
    ac_value *a = p;
    if (key->kind != LV_STR) { lv_seterr_kind("TypeError", "index activations by name, like a[\"layers.0.q\"]"); return NULL; }
    for (size_t i = 0; i < a->n; i++)
        if (!strcmp(a->e[i].name, key->u.str.s))
            return float_matrix(a->e[i].data, (size_t)a->e[i].rows, (size_t)a->e[i].cols);
    lv_seterr_kind("KeyError", "no activation `%s` (the table lists them)", key->u.str.s);
    return NULL;
}

static lv_value *ac_attr(void *p, const char *name) {
    ac_value *a = p;
    if (!strcmp(name, "names")) {
        lv_value *l = lv_list_new(a->n);
        for (size_t i = 0; l && i < a->n; i++)
            if (lv_list_push(l, lv_str(a->e[i].name))) { lv_decref(l); return NULL; }
        return l;
    }
    return NULL;
}

static size_t ac_len(void *p) { return ((ac_value *)p)->n; }
static lv_value *ac_item(void *p, size_t i) {
    ac_value *a = p;
    return i < a->n ? lv_str(a->e[i].name) : NULL;
}

const lv_type lv_activations_type = {
    .name = "activations", .free = ac_free, .text = ac_text, .bundle = ac_bundle,
    .getindex = ac_index, .getattr = ac_attr, .len = ac_len, .item = ac_item,
};

static int ac_add(ac_value *a, const be_backend *be, const char *name, const float *dev, int rows, int cols) {
    if (!dev) return 0;
    ac_entry *e = &a->e[a->n];
    e->name = lp_strdup(name);
    e->data = lp_malloc(sizeof(float) * (size_t)rows * cols);
    if (!e->name || !e->data) { lp_free(e->name); lp_free(e->data); return -1; }
    be->to_host(e->data, dev, sizeof(float) * (size_t)rows * cols);
    e->rows = rows;
    e->cols = cols;
    a->n++;
    return 0;
}

static int run_activations(lp_call *c, lv_value **result) {
    fc_entry *e = compute_of(c, "model");
    if (!e) return -1;
    const fw_info *info = fw_model_info(e->fm);
    int64_t only = lp_arg_int(c, "layer");
    if (only < -1 || only >= info->layers)
        return lp_fail(c, "ValueError", "layer must be -1 (all) or 0 .. %d", info->layers - 1);
    hbatch hb;
    if (single_row(c, e, &hb) < 0) return -1;
    fw_out out;
    int rc = -1;
    ac_value *a = lp_calloc(1, sizeof *a);
    if (!a) { hb_free(&hb); return lp_fail(c, "MemoryError", "out of memory"); }
    if (run_model(c, e, &hb, FW_KEEP | FW_ALL, &out) < 0) goto out;
    const fw_acts *A = fw_last_acts(e->fm);
    const be_backend *be = fw_backend(e->fm);
    int T = hb.T, C = info->hidden, Q = info->heads * info->head_dim, KV = info->kv_heads * info->head_dim;
    int I = info->inter;
    a->T = T;
    a->arch = lp_strdup(fw_mdl(e->fm)->summary.architecture);
    a->e = lp_calloc((size_t)info->layers * 20 + 4, sizeof *a->e);
    if (!a->e || !a->arch) { lp_fail(c, "MemoryError", "out of memory"); goto out; }
    int err = 0;
    if (only < 0) err |= ac_add(a, be, "embeddings", A->emb, T, C);
    for (int l = 0; l < info->layers; l++) {
        if (only >= 0 && l != only) continue;
        const fw_layer_acts *L = &A->layers[l];
        char nm[64];
#define ADD(field, cols) do { snprintf(nm, sizeof nm, "layers.%d." #field, l); \
        err |= ac_add(a, be, nm, L->field, T, cols); } while (0)
        ADD(n1, C); ADD(q, Q); ADD(k, KV); ADD(v, KV); ADD(att, Q); ADD(o, C); ADD(h, C);
        ADD(n2, C); ADD(gate, I); ADD(up, I); ADD(act, I); ADD(m, C); ADD(y, C);
#undef ADD
    }
    if (only < 0 && A->fin) err |= ac_add(a, be, "final_norm", A->fin, T, C);
    if (only < 0 && out.kind == FW_OUT_LM) err |= ac_add(a, be, "logits", out.logits, T, out.V);
    if (err) { lp_fail(c, "MemoryError", "out of memory"); goto out; }
    *result = lv_new_opaque(&lv_activations_type, a);
    a = NULL;
    rc = *result ? 0 : lp_fail(c, "MemoryError", "out of memory");
out:
    if (a) ac_free(a);
    hb_free(&hb);
    return rc;
}

static const lp_param activations_params[] = {
    {"model", LP_T_VALUE, .vtype = &lv_model_type, .help = "a loaded model"},
    {"text", LP_T_ANY, .help = "text (needs tokenizer.json) or a list of token ids"},
    {0}};
static const lp_param activations_opts[] = {
    {"layer", LP_T_INT, .def = "-1", .help = "only this layer (-1: every layer, embeddings and logits)"},
    {0}};
const lp_command lp_cmd_activations = {
    "activations", activations_params, activations_opts, run_activations,
    .summary = "The intermediate tensors of every layer for one input, with their statistics",
    .help = "Names per layer: n1 (attention input, after the norm), q, k (after RoPE), v, att\n"
            "(attention output), o (attention block output), h (residual after attention), n2\n"
            "(MLP input), gate, up, act (MLP hidden), m (MLP output), y (layer output).\n"
            "Example:\n    a = activations m \"The cat sat\"\n    a[\"layers.0.q\"]",
};
