/* data.c (commands) — `dataset` and `next`: files of examples → batches a user can look at and
 * hand to `forward` or `train`. The reading, splitting, tokenizing and batching is
 * runtime/train/data.h; this file makes values of it. */
#include "commands/data.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "commands/compute.h"
#include "commands/model.h"
#include "lang/table.h"
#include "util/mem.h"
#include "util/sbuf.h"

/* ---- dataset values ------------------------------------------------------------------------ */

typedef struct ds_value {
    td_dataset *d;
    lv_value *eval;          /* the held-out split (a dataset value) or NULL */
    lv_value *model;         /* the model whose tokenizer made the ids, or NULL (not yet) */
} ds_value;

static void ds_free(void *p) {
    ds_value *v = p;
    td_free(v->d);
    lv_decref(v->eval);
    lv_decref(v->model);
    lp_free(v);
}

static const char *base_name(const char *p) {
    const char *s = strrchr(p, '/');
    return s ? s + 1 : p;
}

static char *ds_text(void *p) {
    ds_value *v = p;
    td_info in;
    td_get_info(v->d, &in);
    sbuf b;
    sb_init(&b);
    sb_printf(&b, "dataset %s · %s split · %zu records", base_name(in.path), in.split, in.records);
    if (td_tokenized(v->d)) {
        sb_printf(&b, "\n%zu %s · %zu tokens · %zu %s · max_len %d", in.examples,
                  in.pack ? "packed blocks" : "examples", in.tokens, in.targets,
                  in.classify ? "labels" : "targets", in.max_len);
        sb_printf(&b, "\npadding right with id %d · epoch %ld, %zu of %zu examples seen", in.pad,
                  in.epoch, in.cursor, in.examples);
    } else {
        sb_printf(&b, "\nnot tokenized yet: `train` / `evaluate` tokenize it with their model, or "
                      "give model=m to `dataset`");
    }
    if (v->eval) {
        ds_value *e = lv_opaque_ptr(v->eval, &lv_dataset_type);
        td_info ei;
        td_get_info(e->d, &ei);
        sb_printf(&b, "\neval split: %zu records (.eval)", ei.records);
    }
    return b.oom ? (sb_free(&b), NULL) : sb_take(&b);
}

static lv_value *ex_dict(const td_example *e, const char *text) {
    lv_value *d = lv_dict_new(), *ids = lv_list_new((size_t)e->n);
    lv_value *lab = e->labels ? lv_list_new((size_t)e->n) : lv_int(e->cls);
    for (int i = 0; ids && i < e->n; i++) lv_list_push(ids, lv_int(e->ids[i]));
    for (int i = 0; e->labels && lab && i < e->n; i++) lv_list_push(lab, lv_int(e->labels[i]));
    if (!d || !ids || !lab) { lv_decref(d); lv_decref(ids); lv_decref(lab); return NULL; }
    lv_dict_set(d, "ids", 3, ids);
    lv_dict_set(d, "labels", 6, lab);
    if (text) lv_dict_set(d, "text", 4, lv_str(text));
    return d;
}

static lv_value *ds_index(void *p, lv_value *key) {
    ds_value *v = p;
    if (key->kind != LV_INT) { lv_seterr_kind("TypeError", "a dataset is indexed by an int"); return NULL; }
    size_t n = td_tokenized(v->d) ? td_len(v->d) : 0;
    int64_t i = key->u.i < 0 ? key->u.i + (int64_t)n : key->u.i;
    if (!n) { lv_seterr_kind("ValueError", "the dataset is not tokenized yet (give model=m to `dataset`)"); return NULL; }
    if (i < 0 || (size_t)i >= n) { lv_seterr_kind("IndexError", "example %lld is outside [0, %zu)", (long long)key->u.i, n); return NULL; }
    td_info in;
    td_get_info(v->d, &in);
    /* records and examples are the same rows unless packed */
    lv_value *r = ex_dict(td_example_at(v->d, (size_t)i), in.pack ? NULL : td_record_text(v->d, (size_t)i));
    if (!r) lv_seterr_kind("MemoryError", "out of memory");
    return r;
}

static lv_value *ds_attr(void *p, const char *name) {
    ds_value *v = p;
    td_info in;
    td_get_info(v->d, &in);
    if (!strcmp(name, "eval")) return v->eval ? lv_incref(v->eval) : lv_none();
    if (!strcmp(name, "length")) return lv_int((int64_t)(td_tokenized(v->d) ? in.examples : in.records));
    if (!strcmp(name, "tokens")) return lv_int((int64_t)in.tokens);
    if (!strcmp(name, "targets")) return lv_int((int64_t)in.targets);
    if (!strcmp(name, "epoch")) return lv_int(in.epoch);
    if (!strcmp(name, "path")) return lv_str(in.path);
    return NULL;
}

static int ds_attrs(void *p, lv_attr_fn add, void *actx) {
    (void)p;
    static const char *const f[] = {"eval", "length", "tokens", "targets", "epoch", "path", NULL};
    for (const char *const *k = f; *k; k++) add(actx, *k);
    return 0;
}

const lv_type lv_dataset_type = {
    .name = "dataset", .free = ds_free, .text = ds_text, .getattr = ds_attr, .attrs = ds_attrs,
    .getindex = ds_index,
};

/* Tokenize both splits with the model's tokenizer, once. */
static int ds_tokenize(lp_call *c, ds_value *v, lv_value *model) {
    if (td_tokenized(v->d)) return 0;
    lp_clearerr();
    tok_tokenizer *tok = cmd_tokenizer_of_value(c, model);
    if (!tok) {
        if (strstr(lp_geterr(), "out of memory")) return lp_fail(c, "MemoryError", "out of memory");
        if (!lv_opaque_ptr(model, &lv_model_type)) return -1;
        return lp_fail(c, "ValueError", "%s has no tokenizer.json: a dataset needs one to make token ids",
                       mv_model_of(model) ? mv_model_of(model)->path : "the model");
    }
    if (td_tokenize(v->d, tok) < 0) return lp_fail(c, "ValueError", "%s", lp_geterr());
    if (v->eval) {
        ds_value *e = lv_opaque_ptr(v->eval, &lv_dataset_type);
        if (ds_tokenize(c, e, model) < 0) return -1;
    }
    lv_decref(v->model);
    v->model = lv_incref(model);
    return 0;
}

td_dataset *cmd_dataset_ready(lp_call *c, lv_value *data, lv_value *model) {
    ds_value *v = lv_opaque_ptr(data, &lv_dataset_type);
    if (!v) { lp_fail(c, "TypeError", "expected a dataset (data = dataset \"file.jsonl\"), got %s", lv_type_name(data)); return NULL; }
    if (!td_tokenized(v->d)) {
        if (!model) { lp_fail(c, "ValueError", "this dataset is not tokenized: give model=m to `dataset`"); return NULL; }
        if (ds_tokenize(c, v, model) < 0) return NULL;
    }
    return v->d;
}

static int run_dataset(lp_call *c, lv_value **result) {
    td_config cfg;
    td_config_default(&cfg);
    cfg.field = lp_arg_str(c, "field");
    cfg.prompt = lp_arg_str(c, "prompt");
    cfg.response = lp_arg_str(c, "response");
    cfg.template_ = lp_arg_str(c, "template");
    cfg.label = lp_arg_str(c, "label");
    if (cfg.prompt && !cfg.response) return lp_fail(c, "ValueError", "prompt= needs response= (the part the model learns)");
    int64_t ml = lp_arg_int(c, "max_len");
    if (ml < 1 || ml > 1 << 20) return lp_fail(c, "ValueError", "max_len must be between 1 and 1048576, got %lld", (long long)ml);
    cfg.max_len = (int)ml;
    cfg.pack = lp_arg_bool(c, "pack");
    const char *by = lp_arg_str(c, "by");
    if (strcmp(by, "line") && strcmp(by, "document"))
        return lp_fail(c, "ValueError", "by is \"line\" or \"document\", got \"%s\"", by);
    cfg.by_line = !strcmp(by, "line");
    lv_value *eos = lp_arg(c, "eos");
    cfg.eos = eos->kind == LV_NONE ? cfg.response != NULL : lv_truthy(eos);
    cfg.eval = lp_arg_float(c, "eval");
    cfg.shuffle = lp_arg_bool(c, "shuffle");
    cfg.seed = (uint64_t)lp_arg_int(c, "seed");
    td_dataset *tr, *ev;
    if (td_open(lp_arg_str(c, "path"), &cfg, &tr, &ev) < 0) return lp_fail(c, "ValueError", "%s", lp_geterr());
    ds_value *v = lp_calloc(1, sizeof *v), *e = ev ? lp_calloc(1, sizeof *e) : NULL;
    if (!v || (ev && !e)) {
        lp_free(v), lp_free(e), td_free(tr), td_free(ev);
        return lp_fail(c, "MemoryError", "out of memory");
    }
    v->d = tr;
    if (e) {
        e->d = ev;
        v->eval = lv_new_opaque(&lv_dataset_type, e);
    }
    lv_value *res = lv_new_opaque(&lv_dataset_type, v);
    if (!res || (ev && !v->eval)) { lv_decref(res); return lp_fail(c, "MemoryError", "out of memory"); }
    lv_value *model = lp_arg(c, "model");
    if (model->kind != LV_NONE && ds_tokenize(c, v, model) < 0) { lv_decref(res); return -1; }
    *result = res;
    return 0;
}

static const lp_param dataset_params[] = {
    {"path", LP_T_STRING, .help = "a .jsonl, .txt or .csv file"},
    {0}};
static const lp_param dataset_opts[] = {
    {"model", LP_T_VALUE, .def = "none", .vtype = &lv_model_type, .help = "tokenize with this model's tokenizer now (else `train` does)"},
    {"field", LP_T_STRING, .def = "\"text\"", .help = "the text field (.jsonl) or column (.csv)", .hf = "dataset_text_field"},
    {"prompt", LP_T_STRING, .def = "none", .help = "prompt field: its tokens are masked out of the loss (-100)"},
    {"response", LP_T_STRING, .def = "none", .help = "response field: what the model learns"},
    {"template", LP_T_STRING, .def = "\"{prompt}{response}\"", .help = "how prompt and response are joined"},
    {"label", LP_T_STRING, .def = "none", .help = "an int class label field / column (sequence classification)"},
    {"max_len", LP_T_INT, .def = "256", .help = "truncate (or pack) to this many tokens", .hf = "max_length"},
    {"pack", LP_T_BOOL, .def = "false", .help = "concatenate everything and cut max_len blocks (run_clm's group_texts)", .hf = "packing"},
    {"by", LP_T_STRING, .def = "\"line\"", .help = ".txt: one example per \"line\", or the whole \"document\""},
    {"eos", LP_T_BOOL, .def = "none", .help = "append eos to every example (default: with prompt/response)"},
    {"eval", LP_T_FLOAT, .def = "0", .help = "hold out a fraction (0.1) or a count (20) as data.eval"},
    {"shuffle", LP_T_BOOL, .def = "true", .help = "a new seeded order every epoch"},
    {"seed", LP_T_INT, .def = "42", .help = "seed of the split and the shuffles"},
    {0}};
const lp_command lp_cmd_dataset = {
    "dataset", dataset_params, dataset_opts, run_dataset,
    .summary = "Read training examples from a .jsonl, .txt or .csv file",
    .help = "Examples are tokenized with the model's tokenizer, truncated to max_len and padded\n"
            "on the right per batch (mask 0, label -100), or packed into max_len blocks.\n"
            "With prompt= and response= only the response is learned.\n"
            "Example:\n    data = dataset \"data/corpus/finetune/sea_qa_train.jsonl\" model=m max_len=64 eval=0.1\n"
            "    held = data.eval\n    b = next data size=4",
};

/* ---- batch values ------------------------------------------------------------------------- */

typedef struct bt_value {
    td_batch b;
    char **pieces;           /* [B·T] token strings, or NULL (no tokenizer) */
    long epoch;
} bt_value;

static void bt_free(void *p) {
    bt_value *v = p;
    if (v->pieces)
        for (int i = 0; i < v->b.B * v->b.T; i++) lp_free(v->pieces[i]);
    lp_free(v->pieces);
    td_batch_free(&v->b);
    lp_free(v);
}

const td_batch *cmd_batch_of(lv_value *v) {
    bt_value *b = lv_opaque_ptr(v, &lv_batch_type);
    return b ? &b->b : NULL;
}

/* Run-length form of an int row ("1×37 0×3") when it repeats, else the values (cut at cap). */
static void row_cell(sbuf *s, const int32_t *x, int n, int rle) {
    if (rle) {
        for (int i = 0; i < n;) {
            int j = i;
            while (j < n && x[j] == x[i]) j++;
            sb_printf(s, "%s%d×%d", i ? " " : "", x[i], j - i);
            i = j;
        }
        return;
    }
    int cap = n < 12 ? n : 12;
    for (int i = 0; i < cap; i++) sb_printf(s, "%s%d", i ? " " : "", x[i]);
    if (n > cap) sb_printf(s, " … (%d)", n);
}

static lp_table *bt_table(const bt_value *v) {
    static const char *const hdr[] = {"row", "ids", "pieces", "mask", "labels"};
    static const char *const hdr_cls[] = {"row", "ids", "pieces", "mask", "label"};
    const td_batch *b = &v->b;
    lp_table *t = lp_table_new(5, b->classify ? hdr_cls : hdr);
    if (!t) return NULL;
    for (int r = 0; r < b->B; r++) {
        const int32_t *ids = b->ids + (size_t)r * b->T, *mask = b->mask + (size_t)r * b->T;
        sbuf c[5];
        for (int k = 0; k < 5; k++) sb_init(&c[k]);
        sb_printf(&c[0], "%d", r);
        row_cell(&c[1], ids, b->T, 0);
        if (v->pieces) {
            int shown = 0;
            for (int i = 0; i < b->T && mask[i] && shown < 64; i++) {
                const char *pc = v->pieces[(size_t)r * b->T + i];
                sb_printf(&c[2], "%s%s", i ? "|" : "", pc);
                shown += (int)strlen(pc) + 1;
                if (shown >= 64 && i + 1 < b->T && mask[i + 1]) sb_puts(&c[2], "|…");
            }
        } else {
            sb_puts(&c[2], "-");
        }
        row_cell(&c[3], mask, b->T, 1);
        if (b->classify) {
            sb_printf(&c[4], "%d", b->labels[r]);
        } else {
            /* labels: −100 runs are what matter (prompt and padding), so run-length them */
            const int32_t *lab = b->labels + (size_t)r * b->T;
            int i = 0;
            while (i < b->T) {
                if (lab[i] == -100) {
                    int j = i;
                    while (j < b->T && lab[j] == -100) j++;
                    sb_printf(&c[4], "%s-100×%d", i ? " " : "", j - i);
                    i = j;
                } else {
                    int j = i;
                    while (j < b->T && lab[j] != -100) j++;
                    sb_printf(&c[4], "%s%d tokens", i ? " " : "", j - i);
                    i = j;
                }
            }
        }
        const char *cells[5] = {sb_str(&c[0]), sb_str(&c[1]), sb_str(&c[2]), sb_str(&c[3]), sb_str(&c[4])};
        int rc = lp_table_row(t, cells);
        for (int k = 0; k < 5; k++) sb_free(&c[k]);
        if (rc < 0) { lp_table_free(t); return NULL; }
    }
    char title[160];
    snprintf(title, sizeof title, "batch %d × %d tokens · %ld %s · epoch %ld", b->B, b->T, b->targets,
             b->classify ? "labels" : "targets", v->epoch);
    lp_table_set_title(t, title);
    return t;
}

static char *bt_text(void *p) {
    lp_table *t = bt_table(p);
    char *s = t ? lp_table_text(t) : NULL;
    lp_table_free(t);
    return s;
}

static json_t *bt_bundle(void *p) {
    lp_table *t = bt_table(p);
    json_t *j = t ? lp_table_bundle(t) : NULL;
    lp_table_free(t);
    return j;
}

static lv_value *int_rows(const int32_t *x, int B, int T) {
    lv_value *l = lv_list_new((size_t)B);
    for (int b = 0; l && b < B; b++) {
        lv_value *r = lv_list_new((size_t)T);
        for (int t = 0; r && t < T; t++)
            if (lv_list_push(r, lv_int(x[(size_t)b * T + t]))) { lv_decref(r); r = NULL; }
        if (!r || lv_list_push(l, r)) { lv_decref(l); l = NULL; }
    }
    return l;
}

static lv_value *bt_attr(void *p, const char *name) {
    bt_value *v = p;
    const td_batch *b = &v->b;
    lv_value *r = NULL;
    if (!strcmp(name, "ids")) r = int_rows(b->ids, b->B, b->T);
    else if (!strcmp(name, "mask")) r = int_rows(b->mask, b->B, b->T);
    else if (!strcmp(name, "labels")) r = b->classify ? int_rows(b->labels, 1, b->B) : int_rows(b->labels, b->B, b->T);
    else if (!strcmp(name, "shape")) {
        r = lv_list_new(2);
        if (r) lv_list_push(r, lv_int(b->B)), lv_list_push(r, lv_int(b->T));
    } else if (!strcmp(name, "targets")) return lv_int(b->targets);
    else return NULL;
    if (r && b->classify && !strcmp(name, "labels")) {   /* one flat list of classes */
        lv_value *flat = lv_incref(r->u.list.items[0]);
        lv_decref(r);
        r = flat;
    }
    if (!r) lv_seterr_kind("MemoryError", "out of memory");
    return r;
}

static int bt_attrs(void *p, lv_attr_fn add, void *actx) {
    (void)p;
    static const char *const f[] = {"ids", "mask", "labels", "shape", "targets", NULL};
    for (const char *const *k = f; *k; k++) add(actx, *k);
    return 0;
}

const lv_type lv_batch_type = {
    .name = "batch", .free = bt_free, .text = bt_text, .bundle = bt_bundle, .getattr = bt_attr,
    .attrs = bt_attrs,
};

static int run_next(lp_call *c, lv_value **result) {
    lv_value *dv = lp_arg(c, "data");
    ds_value *v = lv_opaque_ptr(dv, &lv_dataset_type);
    int64_t size = lp_arg_int(c, "size");
    if (size < 1 || size > 65536) return lp_fail(c, "ValueError", "size must be between 1 and 65536, got %lld", (long long)size);
    if (!td_tokenized(v->d))
        return lp_fail(c, "ValueError", "this dataset is not tokenized yet: make it with model=m "
                                        "(data = dataset \"...\" model=m)");
    bt_value *b = lp_calloc(1, sizeof *b);
    if (!b) return lp_fail(c, "MemoryError", "out of memory");
    td_info in;
    td_get_info(v->d, &in);
    b->epoch = in.epoch;
    if (td_next(v->d, (int)size, &b->b, NULL) < 0) { lp_free(b); return lp_fail(c, "ValueError", "%s", lp_geterr()); }
    tok_tokenizer *tok = v->model ? cmd_tokenizer_of_value(c, v->model) : NULL;
    if (tok) {
        size_t N = (size_t)b->b.B * b->b.T;
        b->pieces = lp_calloc(N, sizeof *b->pieces);
        int oom = !b->pieces;
        for (size_t i = 0; !oom && i < N; i++) {
            const char *pc = tok_id_to_token(tok, b->b.ids[i]);
            char buf[24];
            if (!pc) { snprintf(buf, sizeof buf, "%d", b->b.ids[i]); pc = buf; }
            oom = !(b->pieces[i] = lp_strdup(pc));
        }
        if (oom) {   /* the batch was taken: put the cursor back? no — it is a read; just fail */
            bt_free(b);
            return lp_fail(c, "MemoryError", "out of memory");
        }
    }
    *result = lv_new_opaque(&lv_batch_type, b);
    return *result ? 0 : lp_fail(c, "MemoryError", "out of memory");
}

static const lp_param next_params[] = {
    {"data", LP_T_VALUE, .vtype = &lv_dataset_type, .help = "a dataset"},
    {0}};
static const lp_param next_opts[] = {
    {"size", LP_T_INT, .def = "4", .help = "examples in the batch"},
    {0}};
const lp_command lp_cmd_next = {
    "next", next_params, next_opts, run_next,
    .summary = "The next batch of a dataset (ids, mask, labels), for `forward`",
    .help = "Takes the next `size` examples in the dataset's (shuffled) order, wrapping into a new\n"
            "epoch, and pads them on the right to the longest. Labels are the ids with -100 on\n"
            "padding and prompt tokens; the shift by one happens inside the model's loss.\n"
            "Example:\n    b = next data size=4\n    b.ids\n    out = forward m b",
};
