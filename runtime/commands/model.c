/* model.c (commands) — `load`, `layers`, `stats`, `show`, `explain`, and the model, module
 * and tensor values they work on. The C side is runtime/model/model.h; this file only turns
 * it into values, tables and words. */
#include "commands/compute.h"
#include "commands/list_tensor.h"
#include "commands/model.h"
#include "lang/interp.h"
#include "lang/registry.h"
#include "lang/table.h"
#include "backend/backend.h"
#include "model/arch.h"
#include "util/err.h"
#include "util/mem.h"
#include "util/sbuf.h"
#include <ctype.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

/* ---- shared ownership of a loaded model ------------------------------------------------- */

const char *mv_device_override;

/* one per `load`; dtype: the compute dtype asked for with `load dtype=` ("auto", "f32",
 * "bf16", "f16"), kept for the compute that uses it (a static string) */
typedef struct lm_ref {
    int refs;
    mdl_model *m;
    const char *dtype;
    const char *device;   /* "cpu", "cuda", "guard" (a static string): the backend of its compute */
    int q4;         /* `load quantize="nf4"|"fp4"`: its compute stores Linear weights in 4
                       bits (NN_Q4_NF4, NN_Q4_FP4; 0 = no) */
    int dq;         /* `double_quant=true`: and their scales in 8 bits */
    float q8_threshold;   /* quantize="int8": LLM.int8's outlier threshold */
    int training;   /* PyTorch's module.training: 0 after `load` (from_pretrained calls eval()),
                       1 after `create` (from_config); train_mode / eval_mode switch it */
    int ckpt;       /* `gradient_checkpointing`: its compute remakes activations in the
                       backward (fw_set_checkpointing) */
} lm_ref;

static lm_ref *ref_new(mdl_model *m) {
    lm_ref *r = lp_malloc(sizeof *r);
    if (!r) { mdl_free(m); return NULL; }
    r->refs = 1;
    r->m = m;
    r->dtype = "auto";
    r->device = mv_device_override ? mv_device_override : "cpu";
    r->training = 0;
    r->q4 = r->dq = r->ckpt = 0;
    r->q8_threshold = 6.0f;
    return r;
}
static void ref_drop(lm_ref *r) {
    if (r && --r->refs == 0) { mdl_free(r->m); lp_free(r); }
}

/* A module or tensor value: a pointer into the model plus a reference that keeps it alive. */
/* A tensor seen as a matrix (last dimension across, the others flattened into rows); a
 * slice `w[0:4, 2:8]` narrows it to rows [r0, r1) and columns [c0, c1). */
typedef struct lm_view {
    lm_ref *ref;
    const mdl_module *mod;
    const mdl_tensor *t;
    int sliced;
    uint64_t r0, r1, c0, c1;
} lm_view;

static uint64_t mat_cols(const mdl_tensor *t) { return t->st->ndim ? t->st->shape[t->st->ndim - 1] : 1; }
static uint64_t mat_rows(const mdl_tensor *t) { uint64_t c = mat_cols(t); return c ? t->st->nelem / c : 0; }

static lv_value *new_view(const lv_type *type, lm_ref *ref, const mdl_module *mod,
                          const mdl_tensor *t) {
    lm_view *v = lp_malloc(sizeof *v);
    if (!v) return NULL;
    v->ref = ref;
    ref->refs++;
    v->mod = mod;
    v->t = t;
    v->sliced = 0;
    v->r0 = v->c0 = 0;
    v->r1 = t ? mat_rows(t) : 0;
    v->c1 = t ? mat_cols(t) : 0;
    return lv_new_opaque(type, v);   /* frees v (and drops the ref) on failure */
}

/* ---- formatting --------------------------------------------------------------------------- */

static void put_count(sbuf *b, uint64_t n) {   /* 2,614,341,888 */
    char digits[32];
    int len = snprintf(digits, sizeof digits, "%llu", (unsigned long long)n);
    for (int i = 0; i < len; i++) {
        if (i && (len - i) % 3 == 0) sb_putc(b, ',');
        sb_putc(b, digits[i]);
    }
}

/* What dtype= changes where the model computes (be_get_dtype): bf16 weights on cuda (and the
 * test device), f32 on the CPU; no device computes in f16. */
static const char *dtype_note(const void *p) {
    const lm_ref *r = p;
    if (!strcmp(r->dtype, "f16")) return " (computed in f32: bf16 is loupe's 16-bit mode)";
    if (!strcmp(r->dtype, "bf16") && !strcmp(r->device, "cpu")) return " (the CPU computes in f32)";
    return "";
}

static void put_dtype(sbuf *b, st_dtype d) {   /* "bf16", "f32", "f8_e4m3" */
    for (const char *p = st_dtype_name(d); *p; p++) sb_putc(b, (char)tolower((unsigned char)*p));
}

static const char *q4_name(int type) {
    return type == NN_Q4_FP4 ? "fp4" : type == NN_Q8 ? "int8" : "nf4";
}

/* A tensor's stored dtype: a bitsandbytes 4-bit weight's type rather than its U8 bytes. */
static void put_tdtype(sbuf *b, const mdl_tensor *t) {
    if (t->q4) sb_puts(b, q4_name(t->q4->type));
    else put_dtype(b, t->st->dtype);
}

static void put_shape(sbuf *b, const mdl_tensor *t) {
    sb_putc(b, '[');
    for (int d = 0; d < t->st->ndim; d++)
        sb_printf(b, "%s%llu", d ? ", " : "", (unsigned long long)t->st->shape[d]);
    sb_putc(b, ']');
}

/* The name that `explain` knows a module by ("q_proj"); for list items, the list's name. */
static const char *role_of(const mdl_module *mod) { return mod->local; }


static void module_line(sbuf *b, const mdl_module *mod) {
    const mdl_tensor *w = mdl_param(mod, "weight");
    sb_puts(b, mod->cls);
    if (mod->type == MT_LINEAR || mod->type == MT_CONV1D)
        sb_printf(b, " %lld → %lld", (long long)mod->in, (long long)mod->out);
    else if (mod->type == MT_EMBEDDING)
        sb_printf(b, " %lld × %lld", (long long)mod->in, (long long)mod->out);
    else if (mod->type == MT_RMSNORM || mod->type == MT_LAYERNORM)
        sb_printf(b, " %lld", (long long)mod->in);
    sb_printf(b, " · %s", mod->path[0] ? mod->path : "(root)");
    if (w) {
        sb_puts(b, " · weight ");
        put_shape(b, w);
        sb_putc(b, ' ');
        put_tdtype(b, w);
    }
    if (mod->tied) sb_printf(b, " · tied to %s", mod->tied->name);
    sb_puts(b, " · ");
    put_count(b, mod->nparams);
    sb_puts(b, " params");
}

/* ---- the model value ---------------------------------------------------------------------- */

static void model_free(void *p) { ref_drop(p); }


/* `quantize`'s line: "nf4 (…)" */
static const char *q4_line(char *buf, size_t cap, const lm_ref *r) {
    char thr[64] = "";
    if (r->q4 == NN_Q8) snprintf(thr, sizeof thr, ", outlier threshold %g", r->q8_threshold);
    snprintf(buf, cap, "%s (Linear weights in %s%s, frozen; %s%s)", q4_name(r->q4),
             r->q4 == NN_Q8 ? "8 bits" : "4 bits",
             r->dq ? ", their scales in 8 (double quantization)" : "",
             r->q4 == NN_Q8 ? "LLM.int8" : "QLoRA", thr);
    return buf;
}

static char *model_text(void *p) {
    const mdl_model *m = ((lm_ref *)p)->m;
    const char *cdt = ((lm_ref *)p)->dtype;
    const mdl_summary *s = &m->summary;
    sbuf b;
    sb_init(&b);
    sb_printf(&b, "%s — %s\n", s->architecture, m->path);
    if (!m->arch) sb_puts(&b, "(not an architecture loupe computes with: inspection only)\n");
    if (s->layers) sb_printf(&b, "layers %lld", (long long)s->layers);
    if (s->hidden) sb_printf(&b, " · hidden %lld", (long long)s->hidden);
    if (s->heads) sb_printf(&b, " · heads %lld (kv %lld, head_dim %lld)", (long long)s->heads,
                            (long long)s->kv_heads, (long long)s->head_dim);
    if (s->intermediate) sb_printf(&b, " · intermediate %lld", (long long)s->intermediate);
    if (s->vocab) sb_printf(&b, " · vocab %lld", (long long)s->vocab);
    if (s->layers || s->hidden) sb_putc(&b, '\n');
    sb_puts(&b, "parameters ");
    put_count(&b, s->params);
    sb_puts(&b, " · ");
    put_dtype(&b, s->dtype);
    if (s->mixed_dtypes) sb_puts(&b, " (mixed)");
    if (m->owned_buf) sb_puts(&b, " · in memory, ");   /* `create`: no file yet */
    else sb_printf(&b, " · %d file%s, ", s->nfiles, s->nfiles == 1 ? "" : "s");
    sb_bytes(&b, s->file_bytes);
    if (strcmp(cdt, "auto")) sb_printf(&b, "\ncompute dtype %s%s", cdt, dtype_note(p));
    if (strcmp(((lm_ref *)p)->device, "cpu")) sb_printf(&b, "\ndevice %s", ((lm_ref *)p)->device);
    char q4b[160];
    if (((lm_ref *)p)->q4) sb_printf(&b, "\nquantize %s", q4_line(q4b, sizeof q4b, p));
    if (m->arch)
        sb_printf(&b, "\nmode %s", ((lm_ref *)p)->training ? "train (dropout on in `forward`)" : "eval");
    if (((lm_ref *)p)->ckpt)
        sb_puts(&b, "\ngradient checkpointing on (the backward remakes each layer's activations)");
    return b.oom ? (sb_free(&b), NULL) : sb_take(&b);
}

static json_t *model_bundle(void *p) {
    const mdl_model *m = ((lm_ref *)p)->m;
    const mdl_summary *s = &m->summary;
    const char *hdr[] = {"", ""};
    lp_table *t = lp_table_new(2, hdr);
    if (!t) return NULL;
    char buf[160];
    sbuf b;
    sb_init(&b);
#define ROW(k, ...) do { snprintf(buf, sizeof buf, __VA_ARGS__); \
        const char *r_[] = {k, buf}; lp_table_row(t, r_); } while (0)
    ROW("architecture", "%s", s->architecture);
    if (s->layers) ROW("layers", "%lld", (long long)s->layers);
    if (s->hidden) ROW("hidden", "%lld", (long long)s->hidden);
    if (s->heads) ROW("heads", "%lld (kv %lld)", (long long)s->heads, (long long)s->kv_heads);
    if (s->head_dim) ROW("head_dim", "%lld", (long long)s->head_dim);
    if (s->intermediate) ROW("intermediate", "%lld", (long long)s->intermediate);
    if (s->vocab) ROW("vocab", "%lld", (long long)s->vocab);
    put_count(&b, s->params);
    ROW("parameters", "%s", sb_str(&b));
    sb_free(&b);
    put_dtype(&b, s->dtype);
    ROW("dtype", "%s%s", sb_str(&b), s->mixed_dtypes ? " (mixed)" : "");
    sb_free(&b);
    sb_bytes(&b, s->file_bytes);
    if (m->owned_buf) ROW("files", "none (in memory), %s", sb_str(&b));
    else ROW("files", "%d, %s", s->nfiles, sb_str(&b));
    sb_free(&b);
    if (strcmp(((lm_ref *)p)->dtype, "auto"))
        ROW("compute dtype", "%s%s", ((lm_ref *)p)->dtype, dtype_note(p));
    if (strcmp(((lm_ref *)p)->device, "cpu")) ROW("device", "%s", ((lm_ref *)p)->device);
    char q4b[160];
    if (((lm_ref *)p)->q4) ROW("quantize", "%s", q4_line(q4b, sizeof q4b, p));
    if (m->arch) ROW("mode", "%s", ((lm_ref *)p)->training ? "train" : "eval");
    if (((lm_ref *)p)->ckpt) ROW("gradient checkpointing", "%s", "on");
#undef ROW
    lp_table_set_title(t, m->path);
    json_t *bundle = lp_table_bundle(t);
    lp_table_free(t);
    char *text = model_text(p);
    if (bundle && text) json_object_set_new(bundle, "text/plain", json_string(text));
    lp_free(text);
    return bundle;
}

static lv_value *module_child(lm_ref *ref, const mdl_module *mod, const char *name);

/* config.json's value j as a loupe value (objects in their order); NULL after an error */
static lv_value *json_value(const json_t *j, int depth) {
    if (depth > 64) return lv_seterr_kind("ValueError", "config.json nests deeper than 64"), NULL;
    switch (json_typeof(j)) {
    case JSON_OBJECT: {
        lv_value *d = lv_dict_new();
        const char *k;
        json_t *x;
        json_object_foreach((json_t *)j, k, x) {
            lv_value *v = d ? json_value(x, depth + 1) : NULL;
            if (!v || lv_dict_set(d, k, strlen(k), v) < 0) {
                lv_decref(d);
                return NULL;
            }
        }
        return d;
    }
    case JSON_ARRAY: {
        lv_value *l = lv_list_new(json_array_size(j));
        size_t i;
        json_t *x;
        json_array_foreach(j, i, x) {
            lv_value *v = l ? json_value(x, depth + 1) : NULL;
            if (!v || lv_list_push(l, v) < 0) {
                lv_decref(l);
                return NULL;
            }
        }
        return l;
    }
    case JSON_STRING: return lv_strn(json_string_value(j), json_string_length(j));
    case JSON_INTEGER: return lv_int(json_integer_value(j));
    case JSON_REAL: return lv_float(json_real_value(j));
    case JSON_TRUE: return lv_bool(1);
    case JSON_FALSE: return lv_bool(0);
    default: return lv_none();
    }
}

/* What a model's method in transformers / PEFT is in loupe: a command, mostly */
static const char *const hf_methods[][2] = {
    {"print_trainable_parameters", "the command `trainable MODEL`"},
    {"get_nb_trainable_parameters", "the command `trainable MODEL`"},
    {"generate", "the command `generate MODEL \"text\"`"},
    {"forward", "the command `forward MODEL \"text\"`"},
    {"save_pretrained", "the command `save_adapter MODEL \"dir\"` (an adapter) or `save MODEL \"dir\"`"},
    {"from_pretrained", "the command `load \"dir\"`"},
    {"load_adapter", "the command `load_adapter MODEL \"dir\"`"},
    {"add_adapter", "the command `lora MODEL name=\"…\"`"},
    {"set_adapter", "the command `adapter MODEL \"name\"`"},
    {"disable_adapter", "the command `adapter MODEL \"name\" action=\"disable\"`"},
    {"delete_adapter", "the command `adapter MODEL \"name\" action=\"delete\"`"},
    {"merge_adapter", "the command `adapter MODEL \"name\" action=\"merge\"`"},
    {"merge_and_unload", "the command `adapter MODEL \"name\" action=\"merge\"`"},
    {"unmerge_adapter", "the command `adapter MODEL \"name\" action=\"unmerge\"`"},
    {"to", "the command `to MODEL \"cuda\"`"},
    {"cuda", "the command `to MODEL \"cuda\"`"},
    {"cpu", "the command `to MODEL \"cpu\"`"},
    {"train", "the command `train_mode MODEL`"},
    {"eval", "the command `eval_mode MODEL`"},
    {"gradient_checkpointing_enable", "the command `gradient_checkpointing MODEL`"},
    {"gradient_checkpointing_disable", "the command `gradient_checkpointing MODEL on=false`"},
    {"named_parameters", "the command `layers MODEL` (or `trainable MODEL`)"},
    {"parameters", "the command `layers MODEL` (or `trainable MODEL`)"},
    {"state_dict", "the command `layers MODEL`"},
    {"num_parameters", "`MODEL.num_params`"},
    {"get_input_embeddings", "`MODEL.embed_tokens` (Llama-style; `MODEL.wte` for GPT-2)"},
    {"get_output_embeddings", "`MODEL.lm_head`"},
};

/* For a name a model does not have: an AttributeError naming loupe's way when transformers
 * or PEFT have a method of that name; NULL either way */
static lv_value *hf_method_hint(const char *name) {
    for (size_t i = 0; i < sizeof hf_methods / sizeof *hf_methods; i++)
        if (!strcmp(name, hf_methods[i][0]))
            return lv_seterr_kind("AttributeError", "model has no attribute `%s`: in loupe that is %s",
                                  name, hf_methods[i][1]), NULL;
    return NULL;
}

static lv_value *model_attr(void *p, const char *name) {
    lm_ref *r = p;
    const mdl_summary *s = &r->m->summary;
    lv_value *v = module_child(r, r->m->root, name);
    if (v) return v;
    /* `m.layers` is the module list, so the summary numbers have their own names */
    if (!strcmp(name, "architecture")) return lv_str(s->architecture);
    if (!strcmp(name, "path")) return lv_str(r->m->path);
    if (!strcmp(name, "num_layers")) return lv_int(s->layers);
    if (!strcmp(name, "hidden_size")) return lv_int(s->hidden);
    if (!strcmp(name, "num_heads")) return lv_int(s->heads);
    if (!strcmp(name, "num_kv_heads")) return lv_int(s->kv_heads);
    if (!strcmp(name, "head_dim")) return lv_int(s->head_dim);
    if (!strcmp(name, "intermediate_size")) return lv_int(s->intermediate);
    if (!strcmp(name, "vocab_size")) return lv_int(s->vocab);
    if (!strcmp(name, "num_params")) return lv_int((int64_t)s->params);
    if (!strcmp(name, "file_bytes")) return lv_int((int64_t)s->file_bytes);
    if (!strcmp(name, "compute_dtype")) return lv_str(r->dtype);
    if (!strcmp(name, "device")) return lv_str(r->device);
    if (!strcmp(name, "training")) return lv_bool(r->training);
    if (!strcmp(name, "is_gradient_checkpointing")) return lv_bool(r->ckpt);
    if (!strcmp(name, "quantize"))   /* "nf4", "fp4", "int8" or none, as `load` took or the file says */
        return r->q4 ? lv_str(q4_name(r->q4)) : lv_none();
    if (!strcmp(name, "int8_threshold"))   /* LLM.int8's, as `load` took or config.json says */
        return r->q4 == NN_Q8 ? lv_float(r->q8_threshold) : lv_none();
    if (!strcmp(name, "config"))   /* config.json as a dict (none without one) */
        return r->m->config && r->m->config->raw ? json_value(r->m->config->raw, 0) : lv_none();
    if (!strcmp(name, "dtype")) {
        sbuf b;
        sb_init(&b);
        put_dtype(&b, s->dtype);
        size_t n = b.len;   /* sb_take resets b; the order of argument evaluation is unspecified */
        return lv_str_take(sb_take(&b), n);
    }
    return hf_method_hint(name);
}

static const char *const model_fields[] = {"architecture", "path", "num_layers", "hidden_size",
    "num_heads", "num_kv_heads", "head_dim", "intermediate_size", "vocab_size", "num_params",
    "file_bytes", "dtype", "compute_dtype", "device", "training", "is_gradient_checkpointing",
    "quantize", "int8_threshold", "config", NULL};

static void add_children(const mdl_module *mod, lv_attr_fn add, void *actx) {
    for (size_t i = 0; i < mod->nchildren; i++) add(actx, mod->children[i]->local);
    for (size_t i = 0; i < mod->nparams_local; i++) {
        const char *n = strrchr(mod->params[i]->name, '.');
        add(actx, n ? n + 1 : mod->params[i]->name);
    }
    if (mod->tied) add(actx, "weight");
}

static int model_attrs(void *p, lv_attr_fn add, void *actx) {
    lm_ref *r = p;
    add_children(r->m->root, add, actx);
    /* the base model's children too: `m.layers` works without `m.model.layers` */
    const mdl_module *base = r->m->arch && r->m->arch->prefix[0] ? mdl_find(r->m, r->m->arch->prefix) : NULL;
    if (base && base != r->m->root) add_children(base, add, actx);
    for (const char *const *f = model_fields; *f; f++) add(actx, *f);
    return 0;
}

static lv_value *model_index(void *p, lv_value *key) {
    lm_ref *r = p;
    if (key->kind != LV_STR) {
        lv_seterr_kind("TypeError", "a model is indexed by a module path, like m[\"layers.0\"]");
        return NULL;
    }
    lv_value *v = module_child(r, r->m->root, key->u.str.s);
    if (!v) lv_seterr_kind("KeyError", "no module or parameter `%s` in %s", key->u.str.s, r->m->path);
    return v;
}

/* Completion shows submodules as "module", weights and numbers as "attribute". */
static const char *child_type(const mdl_module *mod, const char *name) {
    for (size_t i = 0; i < mod->nchildren; i++)
        if (!strcmp(mod->children[i]->local, name)) return "module";
    return NULL;
}

static const char *model_attr_type(void *p, const char *name) {
    const mdl_model *m = ((lm_ref *)p)->m;
    const char *t = child_type(m->root, name);
    const mdl_module *base = m->arch && m->arch->prefix[0] ? mdl_find(m, m->arch->prefix) : NULL;
    return t ? t : base ? child_type(base, name) : NULL;
}

const lv_type lv_model_type = {
    .name = "model", .free = model_free, .text = model_text, .bundle = model_bundle,
    .getattr = model_attr, .getindex = model_index, .attrs = model_attrs,
    .attr_type = model_attr_type,
};

/* ---- module and tensor values ------------------------------------------------------------- */

static void view_free(void *p) {
    lm_view *v = p;
    ref_drop(v->ref);
    lp_free(v);
}

/* `name` below `mod`: a child module, a parameter, or a deeper path ("layers.0"). */
static lv_value *module_child(lm_ref *ref, const mdl_module *mod, const char *name) {
    for (size_t i = 0; i < mod->nchildren; i++)
        if (!strcmp(mod->children[i]->local, name))
            return new_view(&lv_module_type, ref, mod->children[i], NULL);
    const mdl_tensor *t = mdl_param(mod, name);
    if (t) return new_view(&lv_tensor_type, ref, NULL, t);
    /* a path relative to this module, with the model prefix optional at the root */
    sbuf b;
    sb_init(&b);
    sb_printf(&b, "%s%s%s", mod->path, mod->path[0] ? "." : "", name);
    const mdl_module *found = b.oom ? NULL : mdl_find(ref->m, sb_str(&b));
    const mdl_tensor *ft = found || b.oom ? NULL : mdl_find_tensor(ref->m, sb_str(&b));
    sb_free(&b);
    if (found) return new_view(&lv_module_type, ref, found, NULL);
    if (ft) return new_view(&lv_tensor_type, ref, NULL, ft);
    return NULL;
}

static char *module_text(void *p) {
    const lm_view *v = p;
    sbuf b;
    sb_init(&b);
    module_line(&b, v->mod);
    if (v->mod->nchildren) {
        sb_printf(&b, "\n%zu children:", v->mod->nchildren);
        for (size_t i = 0; i < v->mod->nchildren && i < 16; i++)
            sb_printf(&b, " %s", v->mod->children[i]->local);
        if (v->mod->nchildren > 16) sb_puts(&b, " …");
    }
    sbuf e;
    sb_init(&e);
    mv_explain(&e, role_of(v->mod), v->ref->m);
    if (e.len) {
        const char *nl = strchr(sb_str(&e), '\n');   /* the first sentence is enough here */
        sb_putc(&b, '\n');
        sb_putn(&b, sb_str(&e), nl ? (size_t)(nl - sb_str(&e)) : e.len);
    }
    sb_free(&e);
    return b.oom ? (sb_free(&b), NULL) : sb_take(&b);
}

static lv_value *module_attr(void *p, const char *name) {
    const lm_view *v = p;
    lv_value *c = module_child(v->ref, v->mod, name);
    if (c) return c;
    if (!strcmp(name, "path")) return lv_str(v->mod->path);
    if (!strcmp(name, "type")) return lv_str(v->mod->cls);
    if (!strcmp(name, "num_params")) return lv_int((int64_t)v->mod->nparams);
    if (!strcmp(name, "in_features")) return lv_int(v->mod->in);
    if (!strcmp(name, "out_features")) return lv_int(v->mod->out);
    return NULL;
}

static lv_value *module_index(void *p, lv_value *key) {
    const lm_view *v = p;
    char buf[64];
    const char *name = buf;
    if (key->kind == LV_INT) {
        int64_t i = key->u.i;
        if (i < 0) i += (int64_t)v->mod->nchildren;   /* layers[-1]: the last layer */
        snprintf(buf, sizeof buf, "%lld", (long long)i);
    } else if (key->kind == LV_STR) {
        name = key->u.str.s;
    } else {
        lv_seterr_kind("TypeError", "index a module with a number or a name");
        return NULL;
    }
    lv_value *c = module_child(v->ref, v->mod, name);
    if (!c)
        lv_seterr_kind("IndexError", "%s has no `%s` (%zu children)",
                       v->mod->path[0] ? v->mod->path : "the model", name, v->mod->nchildren);
    return c;
}

static int module_attrs(void *p, lv_attr_fn add, void *actx) {
    const lm_view *v = p;
    add_children(v->mod, add, actx);
    static const char *const f[] = {"path", "type", "num_params", "in_features", "out_features", NULL};
    for (const char *const *k = f; *k; k++) add(actx, *k);
    return 0;
}

static size_t module_len(void *p) { return ((lm_view *)p)->mod->nchildren; }
static lv_value *module_item(void *p, size_t i) {
    lm_view *v = p;
    return i < v->mod->nchildren ? new_view(&lv_module_type, v->ref, v->mod->children[i], NULL) : NULL;
}

static const char *module_attr_type(void *p, const char *name) {
    return child_type(((lm_view *)p)->mod, name);
}

const lv_type lv_module_type = {
    .name = "module", .free = view_free, .text = module_text, .getattr = module_attr,
    .getindex = module_index, .attrs = module_attrs, .len = module_len, .item = module_item,
    .attr_type = module_attr_type,
};

static char *tensor_text(void *p) {
    const mdl_tensor *t = ((lm_view *)p)->t;
    sbuf b;
    sb_init(&b);
    sb_printf(&b, "Tensor %s ", t->name);
    put_shape(&b, t);
    sb_putc(&b, ' ');
    put_tdtype(&b, t);
    sb_puts(&b, " · ");
    put_count(&b, t->st->nelem);
    sb_puts(&b, " values");
    if (strcmp(t->name, t->file_name)) sb_printf(&b, " · stored as `%s`", t->file_name);
    const lm_view *w = p;
    if (w->sliced)
        sb_printf(&b, " · slice [%llu:%llu, %llu:%llu] (`show` prints it)", (unsigned long long)w->r0,
                  (unsigned long long)w->r1, (unsigned long long)w->c0, (unsigned long long)w->c1);
    return b.oom ? (sb_free(&b), NULL) : sb_take(&b);
}

/* One index item against [lo, hi): an int picks one row/column, a slice a range of them. */
static int narrow(lv_value *k, uint64_t *lo, uint64_t *hi, const char *what) {
    size_t n = (size_t)(*hi - *lo), from, to;
    if (k->kind == LV_INT) {
        int64_t i = k->u.i < 0 ? k->u.i + (int64_t)n : k->u.i;
        if (i < 0 || i >= (int64_t)n)
            return lv_seterr_kind("IndexError", "%s %lld out of range (0 … %zu)", what, (long long)k->u.i,
                                  n ? n - 1 : 0);
        *lo += (uint64_t)i;
        *hi = *lo + 1;
        return 0;
    }
    if (lv_slice_bounds(k, n, &from, &to) == 0) {
        *hi = *lo + to;
        *lo += from;
        return 0;
    }
    return lv_seterr_kind("TypeError", "a tensor is indexed by ints and slices (w[0:4, 2:8]), not %s",
                          lv_type_name(k));
}

static lv_value *tensor_index(void *p, lv_value *key) {
    const lm_view *w = p;
    lv_value *row = key, *col = NULL;
    if (key->kind == LV_LIST) {
        if (key->u.list.n != 2)
            return lv_seterr_kind("IndexError", "a tensor is shown as rows × columns: give 1 or 2 indices, not %zu",
                                  key->u.list.n), NULL;
        row = key->u.list.items[0];
        col = key->u.list.items[1];
    }
    uint64_t r0 = w->r0, r1 = w->r1, c0 = w->c0, c1 = w->c1;
    if (narrow(row, &r0, &r1, "row") || (col && narrow(col, &c0, &c1, "column"))) return NULL;
    lv_value *v = new_view(&lv_tensor_type, w->ref, w->mod, w->t);
    lm_view *nv = v ? lv_opaque_ptr(v, &lv_tensor_type) : NULL;
    if (nv) {
        nv->sliced = 1;
        nv->r0 = r0; nv->r1 = r1; nv->c0 = c0; nv->c1 = c1;
    }
    return v;
}

static lv_value *tensor_attr(void *p, const char *name) {
    const mdl_tensor *t = ((lm_view *)p)->t;
    if (!strcmp(name, "name")) return lv_str(t->name);
    if (!strcmp(name, "numel")) return lv_int((int64_t)t->st->nelem);
    if (!strcmp(name, "dtype")) {
        sbuf b;
        sb_init(&b);
        put_tdtype(&b, t);
        size_t n = b.len;
        return lv_str_take(sb_take(&b), n);
    }
    if (!strcmp(name, "shape")) {
        lv_value *l = lv_list_new((size_t)t->st->ndim);
        for (int d = 0; l && d < t->st->ndim; d++)
            if (lv_list_push(l, lv_int((int64_t)t->st->shape[d]))) { lv_decref(l); return NULL; }
        return l;
    }
    return NULL;
}

static int tensor_attrs(void *p, lv_attr_fn add, void *actx) {
    static const char *const f[] = {"name", "shape", "dtype", "numel", NULL};
    for (const char *const *k = f; *k; k++) add(actx, *k);
    return 0;
}

const lv_type lv_tensor_type = {
    .name = "tensor", .free = view_free, .text = tensor_text, .getattr = tensor_attr,
    .getindex = tensor_index,
    .attrs = tensor_attrs,
};

lv_value *mv_new_model(mdl_model *m, int training) {
    lm_ref *r = ref_new(m);
    if (!r) return NULL;
    r->training = training;
    return lv_new_opaque(&lv_model_type, r);
}

const char *mv_device(lv_value *v) {
    lm_ref *r = lv_opaque_ptr(v, &lv_model_type);
    return r ? r->device : "cpu";
}

int mv_q4(lv_value *v) {
    lm_ref *r = lv_opaque_ptr(v, &lv_model_type);
    return r ? r->q4 : 0;
}

float mv_q8_threshold(lv_value *v) {
    lm_ref *r = lv_opaque_ptr(v, &lv_model_type);
    return r ? r->q8_threshold : 6.0f;
}

int mv_q4_double(lv_value *v) {
    lm_ref *r = lv_opaque_ptr(v, &lv_model_type);
    return r ? r->dq : 0;
}

const char *mv_dtype(lv_value *v) {
    lm_ref *r = lv_opaque_ptr(v, &lv_model_type);
    return r ? r->dtype : "auto";
}

void mv_set_device(lv_value *v, const char *device) {
    lm_ref *r = lv_opaque_ptr(v, &lv_model_type);
    if (r) r->device = device;
}

const char *mv_check_device(const char *device, char *why, size_t cap) {
    static const char *const known[] = {"cpu", "cuda", "guard", NULL};
    const char *dev = NULL;
    for (const char *const *d = known; *d; d++)
        if (!strcmp(device, *d)) dev = *d;
    if (!strcmp(device, "cuda:0")) dev = "cuda";   /* torch's name of the first GPU */
    if (!dev && !strncmp(device, "cuda:", 5) && device[5] >= '1' && device[5] <= '9' &&
        device[5 + strspn(device + 5, "0123456789")] == '\0') {
        snprintf(why, cap, "device=\"%s\": loupe computes on one GPU, \"cuda\" (cuda:0)", device);
        return NULL;
    }
    if (!dev) {
        snprintf(why, cap, "device=\"%s\": expected \"cpu\" or \"cuda\"", device);
        return NULL;
    }
    if (!be_get(dev)) {   /* no GPU, a build without CUDA: say so before anything is loaded */
        snprintf(why, cap, "device=\"%s\": %s", dev, lp_geterr());
        return NULL;
    }
    return dev;
}

int mv_training(lv_value *v) {
    lm_ref *r = lv_opaque_ptr(v, &lv_model_type);
    return r ? r->training : 0;
}

void mv_set_training(lv_value *v, int on) {
    lm_ref *r = lv_opaque_ptr(v, &lv_model_type);
    if (r) r->training = on != 0;
}

int mv_checkpointing(lv_value *v) {
    lm_ref *r = lv_opaque_ptr(v, &lv_model_type);
    return r ? r->ckpt : 0;
}

void mv_set_checkpointing(lv_value *v, int on) {
    lm_ref *r = lv_opaque_ptr(v, &lv_model_type);
    if (r) r->ckpt = on != 0;
}

mdl_model *mv_model_of(lv_value *v) {
    lm_ref *r = lv_opaque_ptr(v, &lv_model_type);
    if (r) return r->m;
    lm_view *w = lv_opaque_ptr(v, &lv_module_type);
    if (!w) w = lv_opaque_ptr(v, &lv_tensor_type);
    return w ? w->ref->m : NULL;
}

const mdl_module *mv_module_of(lv_value *v) {
    lm_ref *r = lv_opaque_ptr(v, &lv_model_type);
    if (r) return r->m->root;
    lm_view *w = lv_opaque_ptr(v, &lv_module_type);
    return w ? w->mod : NULL;
}

const mdl_tensor *mv_tensor_of(lv_value *v) {
    lm_view *w = lv_opaque_ptr(v, &lv_tensor_type);
    if (w) return w->t;
    const mdl_module *mod = mv_module_of(v);
    return mod ? mdl_param(mod, "weight") : NULL;
}

/* ---- load ------------------------------------------------------------------------------------ */

int mv_parse_dtype(const char *s, st_dtype *out) {
    static const struct { const char *ours, *torch; st_dtype dt; } names[] = {
        {"f32", "float32", ST_F32}, {"bf16", "bfloat16", ST_BF16}, {"f16", "float16", ST_F16}};
    for (size_t i = 0; i < sizeof names / sizeof *names; i++)
        if (!strcmp(s, names[i].ours) || !strcmp(s, names[i].torch)) {
            *out = names[i].dt;
            return 0;
        }
    return -1;
}

/* An 8-bit checkpoint's outlier threshold: config.json's quantization_config.
 * llm_int8_threshold, as transformers reads it (6, its default, when absent). */
static double saved_threshold(const mdl_model *m) {
    json_t *q = m->config && m->config->raw ? json_object_get(m->config->raw,
                                                              "quantization_config") : NULL;
    json_t *t = q ? json_object_get(q, "llm_int8_threshold") : NULL;
    double v = json_is_number(t) ? json_number_value(t) : 6.0;
    return v >= 0 && !isinf(v) ? v : 6.0;
}

static int run_load(lp_call *c, lv_value **result) {
    /* the options first: a bad one loads nothing */
    const char *dtype = lp_arg_str(c, "dtype"), *device = lp_arg_str(c, "device");
    st_dtype dt;
    const char *cdt = !strcmp(dtype, "auto")              ? "auto"   /* a static name, kept */
                      : mv_parse_dtype(dtype, &dt) < 0    ? NULL
                      : dt == ST_F32 ? "f32" : dt == ST_BF16 ? "bf16" : "f16";
    if (!cdt)
        return lp_fail(c, "ValueError", "dtype=\"%s\": expected one of \"auto\", \"f32\", \"bf16\", \"f16\"", dtype);
    const char *quant = lp_arg_str(c, "quantize");
    int q4 = !strcmp(quant, "nf4") ? NN_Q4_NF4 : !strcmp(quant, "fp4") ? NN_Q4_FP4
             : !strcmp(quant, "int8") ? NN_Q8 : 0;
    if (!q4 && strcmp(quant, "none"))
        return lp_fail(c, "ValueError", "quantize=\"%s\": expected \"nf4\" (QLoRA's 4-bit "
                       "NormalFloat), \"fp4\" (4-bit float), \"int8\" (LLM.int8) or \"none\"",
                       quant);
    int dq = lp_arg_bool(c, "double_quant");
    if (dq && (!q4 || q4 == NN_Q8))
        return lp_fail(c, "ValueError", "double_quant=true quantizes the scales of 4-bit weights: "
                       "it goes with quantize=\"nf4\" or \"fp4\"");
    double thr = lp_arg_float(c, "int8_threshold");
    if (!(thr >= 0) || isinf(thr))
        return lp_fail(c, "ValueError", "int8_threshold must be 0 or more, got %g", thr);
    /* tests run every `load` of a script on another device (mv_device_override) */
    if (mv_device_override && !strcmp(device, "cpu")) device = mv_device_override;
    char why[600];
    const char *dev = mv_check_device(device, why, sizeof why);
    if (!dev) return lp_fail(c, "ValueError", "%s", why);
    const char *path = lp_arg_str(c, "path");
    char snap[2048];
    struct stat st;
    if (stat(path, &st) < 0 && mdl_is_hub_id(path)) {   /* a Hub id: the copy in HF's cache */
        if (mdl_hub_snapshot(path, snap, sizeof snap) < 0) {
            char cache[1024];
            return lp_fail(c, "IOError", "%s: no such file or directory, and not in the Hugging Face "
                           "cache (%s); loupe never downloads: fetch it with `hf download %s` "
                           "(or from_pretrained in Python), then load it again", path,
                           mdl_hub_cache(cache, sizeof cache), path);
        }
        path = snap;
    }
    mdl_model *m = mdl_load(path);
    if (!m) return lp_fail(c, "IOError", "%s", lp_geterr());
    lm_ref *r = ref_new(m);
    if (r) r->dtype = cdt;
    if (r) r->device = dev;
    if (r && m->summary.q4) {   /* a bitsandbytes checkpoint: it computes as stored */
        const mdl_summary *s = &m->summary;
        if ((q4 && q4 != s->q4) || (lp_arg_given(c, "double_quant") && dq != s->q4_double)) {
            const char *how = s->q4_double ? " with double quantization" : "";
            lp_fail(c, "ValueError", "%s holds bitsandbytes %s weights already (%s%s, as "
                    "transformers saved them): leave quantize= and double_quant= out%s", path,
                    s->q4 == NN_Q8 ? "8-bit" : "4-bit", q4_name(s->q4), how,
                    s->q4 == NN_Q8 ? " (int8_threshold= may change the outlier threshold)" : "");
            ref_drop(r);   /* the model goes with it: s is read before */
            return -1;
        }
        if (s->q4 == NN_Q8 && !lp_arg_given(c, "int8_threshold")) thr = saved_threshold(m);
        q4 = s->q4, dq = s->q4_double;
    }
    if (r && lp_arg_given(c, "int8_threshold") && q4 != NN_Q8) {
        lp_fail(c, "ValueError", "int8_threshold is LLM.int8's outlier threshold: it goes with "
                "quantize=\"int8\" (or a checkpoint saved in 8 bits)");
        ref_drop(r);
        return -1;
    }
    if (r) r->q4 = q4, r->dq = dq, r->q8_threshold = (float)thr;
    if (!r || !(*result = lv_new_opaque(&lv_model_type, r)))
        return lp_fail(c, "MemoryError", "out of memory");
    return 0;
}
static const lp_param load_params[] = {
    {"path", LP_T_STRING, .help = "checkpoint directory (config.json + *.safetensors), one .safetensors file, or a Hub id already in the Hugging Face cache"},
    {0}};
static const lp_param load_opts[] = {
    {"dtype", LP_T_STRING, .def = "\"auto\"", .help = "compute dtype: \"auto\" (the weights' own), \"f32\", \"bf16\", \"f16\" (or torch's \"float32\", …)", .hf = "torch_dtype"},
    {"device", LP_T_STRING, .def = "\"cpu\"", .help = "where to compute: \"cpu\" or \"cuda\" (an NVIDIA GPU; \"cuda:0\" too)", .hf = "device_map"},
    {"quantize", LP_T_STRING, .def = "\"none\"", .help = "\"nf4\" or \"fp4\": Linear weights stored in 4 bits as QLoRA's (bitsandbytes' NF4 or FP4, blocks of 64), dequantized for each product; \"int8\": in 8 bits as LLM.int8's (load_in_8bit: a scale a row, int8 products with f32 outliers); they stay frozen", .hf = "load_in_4bit, bnb_4bit_quant_type, load_in_8bit"},
    {"int8_threshold", LP_T_FLOAT, .def = "6",
     .help = "with quantize=\"int8\": inputs at least this large are outliers, multiplied apart in f32 (0: none)",
     .hf = "llm_int8_threshold"},
    {"double_quant", LP_T_BOOL, .def = "false", .help = "with quantize=: the 4-bit weights' scales stored in 8 bits too (blocks of 256; 0.127 instead of 0.5 bit a weight)", .hf = "bnb_4bit_use_double_quant"},
    {0}};
const lp_command lp_cmd_load = {
    "load", load_params, load_opts, run_load,
    .summary = "Load a Hugging Face checkpoint (headers only; weights are read when needed)",
    .help = "Reads config.json, model.safetensors or the shards named in\n"
            "model.safetensors.index.json, and maps the files. A Hub id (\"Qwen/Qwen2-0.5B\") that is\n"
            "not a path opens the copy in huggingface_hub's cache ($HF_HUB_CACHE, $HF_HOME/hub,\n"
            "~/.cache/huggingface/hub) at refs/main; loupe never downloads. Known architectures: Llama, Mistral,\n"
            "Qwen2, Qwen3, SmolLM3, Phi-3, Gemma, Gemma 2, Gemma 3 (text), GPT-2, BERT; any other\n"
            "safetensors file"
            " loads for inspection.\n"
            "dtype= is the compute dtype: \"bf16\" stores the frozen weights as bf16 on cuda and\n"
            "multiplies on bf16 tensor cores (f32 sums); the CPU computes in f32 whatever it says.\n"
            "device= is where forward, generate and training run: \"cpu\", or \"cuda\" for an NVIDIA\n"
            "GPU (an error if this build or machine has none); `to m \"cuda\"` moves a loaded model.\n"
            "quantize=\"nf4\" is QLoRA's storage (BitsAndBytesConfig(load_in_4bit=True,\n"
            "bnb_4bit_quant_type=\"nf4\")): every Linear weight but the output layer in 4 bits,\n"
            "a fraction of the memory; adapters (`lora`) then train beside them. \"fp4\" is\n"
            "bitsandbytes' 4-bit float; double_quant=true (bnb_4bit_use_double_quant) stores\n"
            "the scales in 8 bits as well. \"int8\" is LLM.int8 (load_in_8bit=True). A checkpoint\n"
            "transformers saved from its 4-bit or 8-bit model (the Hub's \"-bnb-4bit\" models)\n"
            "loads as stored, without quantize= (an 8-bit one with its llm_int8_threshold).\n"
            "`m.config` is config.json as a dict (`m.config.num_attention_heads`); `m.hidden_size`,\n"
            "`m.num_heads`, `m.vocab_size`, … are what loupe read from it, defaults filled in.\n"
            "Example:\n    m = load \"models/gemma-2-2b\"\n    m\n    m.layers[0].self_attn.q_proj\n"
            "    m = load \"models/gemma-2-2b\" dtype=\"bf16\"",
};

/* ---- layers ---------------------------------------------------------------------------------- */

static int run_layers(lp_call *c, lv_value **result) {
    lv_value *arg = lp_arg(c, "model");
    mdl_model *m = mv_model_of(arg);
    const mdl_module *top = mv_module_of(arg);
    if (!m || !top) return lp_fail(c, "TypeError", "expected a model or a module, got %s", lv_type_name(arg));
    const char *pattern = lp_arg_str(c, "pattern");
    /* depth: path components below `top` (1: its direct children); none: all */
    lv_value *dv = lp_arg(c, "depth");
    int64_t depth = dv && dv->kind != LV_NONE ? lp_arg_int(c, "depth") : 0;
    if (dv && dv->kind != LV_NONE && depth < 1)
        return lp_fail(c, "ValueError", "depth must be 1 or more (1: direct children only), got %lld",
                       (long long)depth);
    const char *hdr[] = {"name", "type", "shape", "dtype", "params"};
    lp_table *t = lp_table_new(5, hdr);
    if (!t) return lp_fail(c, "MemoryError", "out of memory");
    /* the subtree of `top`, pre-order; a pattern is relative to it */
    size_t plen = strlen(top->path), shown = 0;
    const mdl_module **hits = NULL;
    size_t nhits = 0;
    if (pattern) {
        sbuf p;
        sb_init(&p);
        sb_printf(&p, "%s%s%s", top->path, plen ? "." : "", pattern);
        nhits = mdl_glob(m, sb_str(&p), NULL, 0);
        hits = lp_malloc(sizeof *hits * (nhits ? nhits : 1));
        if (hits) mdl_glob(m, sb_str(&p), hits, nhits);
        sb_free(&p);
        if (!hits) { lp_table_free(t); return lp_fail(c, "MemoryError", "out of memory"); }
    }
    size_t n = pattern ? nhits : m->nmodules;
    for (size_t i = 0; i < n; i++) {
        const mdl_module *mod = pattern ? hits[i] : m->modules[i];
        if (!pattern && (mod == top || (plen && (strncmp(mod->path, top->path, plen) ||
                                                  mod->path[plen] != '.'))))
            continue;
        if (!pattern && !plen && mod == m->root) continue;
        if (depth && mod != top) {
            const char *rel = mod->path + (plen && !strncmp(mod->path, top->path, plen) &&
                                           mod->path[plen] == '.' ? plen + 1 : 0);
            /* at the root a pattern may leave out the `model.` prefix; its depth does too */
            const char *pre = m->arch ? m->arch->prefix : "";
            size_t prl = strlen(pre);
            if (pattern && !plen && prl && strncmp(pattern, pre, prl) && !strncmp(rel, pre, prl) &&
                rel[prl] == '.')
                rel += prl + 1;
            int64_t comps = 1;
            for (const char *q = rel; *q; q++) comps += *q == '.';
            if (comps > depth) continue;
        }
        const mdl_tensor *w = mdl_param(mod, "weight");
        sbuf shape, dt, cnt;
        sb_init(&shape); sb_init(&dt); sb_init(&cnt);
        if (w) { put_shape(&shape, w); put_tdtype(&dt, w); }
        if (mod->tied) sb_puts(&dt, " (tied)");
        put_count(&cnt, mod->nparams);
        const char *row[] = {mod->path, mod->cls, sb_str(&shape), sb_str(&dt), sb_str(&cnt)};
        int rc = lp_table_row(t, row);
        sb_free(&shape); sb_free(&dt); sb_free(&cnt);
        if (rc) { lp_free(hits); lp_table_free(t); return lp_fail(c, "MemoryError", "out of memory"); }
        shown++;
    }
    lp_free(hits);
    if (pattern && !shown) {
        lp_table_free(t);
        if (depth)
            return lp_fail(c, "ValueError", "no module matches `%s` within depth=%lld of %s", pattern,
                           (long long)depth, top->path[0] ? top->path : "the model");
        return lp_fail(c, "ValueError", "no module matches `%s` (try \"layers.0.*\" or \"*q_proj\")", pattern);
    }
    sbuf f;
    sb_init(&f);
    sb_printf(&f, "%zu module%s · ", shown, shown == 1 ? "" : "s");
    put_count(&f, top->nparams);
    sb_printf(&f, " parameters in %s", top->path[0] ? top->path : m->summary.architecture);
    lp_table_set_footer(t, sb_str(&f));
    sb_free(&f);
    *result = lp_table_value(t);
    return *result ? 0 : lp_fail(c, "MemoryError", "out of memory");
}
static const lp_param layers_params[] = {
    {"model", LP_T_ANY, .help = "a model, or a module inside one"},
    {"pattern", LP_T_STRING, .def = "none", .help = "glob over module paths: \"layers.0.*\", \"*q_proj\""},
    {0}};
static const lp_param layers_opts[] = {
    {"depth", LP_T_INT, .def = "none", .help = "levels below the module to list (1: direct children; a pattern without `model.` counts below it); none: all"},
    {0}};
const lp_command lp_cmd_layers = {
    "layers", layers_params, layers_opts, run_layers,
    .summary = "Table of modules: name, type, weight shape, dtype, parameters",
    .help = "Paths use Hugging Face names; `layers[0]` and `layers.0` are the same, and the\n"
            "`model.` prefix is optional.\nExample:\n    layers m \"layers.0.*\"\n"
            "    layers m.layers[0].mlp\n    layers m depth=2",
};

/* ---- stats and show --------------------------------------------------------------------------- */

/* A list argument (what forward, attention, activations return) as a tensor: an f32 st_tensor
 * over the list's numbers, kept until the next call (commands run one at a time). */
typedef struct { lt_tensor lt; st_tensor st; mdl_tensor t; } list_as_tensor;
static list_as_tensor *last_list;

/* stats and show read the live weight when the model computes with one (after training,
 * unfreeze, merge: what `save MODEL` would write), else the stored tensor. tensor_arg sets it. */
static struct { const fw_weight *w; const fw_model *fm; int q4, stored; } live;

static void find_live(lv_value *v, const mdl_tensor *t) {
    live.w = NULL, live.fm = NULL;
    const lm_view *w = lv_opaque_ptr(v, &lv_tensor_type);
    if (!w) w = lv_opaque_ptr(v, &lv_module_type);
    live.q4 = w && w->ref->q4;
    live.stored = t->q4 ? t->q4->type : 0;
    fw_model *fm = w ? cmd_compute_peek_model(w->ref->m) : NULL;
    const fw_weight *ws = NULL;
    size_t n = fm ? fw_loaded_weights(fm, &ws) : 0;   /* not loaded: nothing trained yet */
    for (size_t k = 0; k < n; k++)
        if (!strcmp(ws[k].name, t->name) && ws[k].numel == t->st->nelem) {
            live.w = &ws[k], live.fm = fm;
            return;
        }
}

/* After a title's dtype: what a 4-bit model's weight shows (quantize="nf4"). */
static void put_live_note(sbuf *b) {
    if (live.stored && !(live.w && live.w->q4))
        sb_printf(b, " (%s in the checkpoint, shown dequantized)",
                  live.stored == NN_Q8 ? "8 bits" : "4 bits");
    else if (live.w && live.w->q4)
        sb_printf(b, " (%s in memory, shown dequantized)",
                  q4_name(fw_q4_type(live.fm)));
    else if (live.q4 && !live.w)
        sb_puts(b, " (as stored: a 4-bit (quantize=) model rounds its Linear weights to 4 bits "
                   "when it first computes)");
}

/* k values of t from element `at`, as f32. */
static int tensor_read(const mdl_tensor *t, uint64_t at, size_t k, float *buf) {
    if (!live.w) return mdl_tensor_to_f32(t, at, k, buf);
    return fw_weight_read(live.fm, live.w, (size_t)at, k, buf);   /* bf16 on CUDA: widened */
}

static const mdl_tensor *tensor_arg(lp_call *c, const char *name) {
    lv_value *v = lp_arg(c, name);
    const mdl_tensor *t = mv_tensor_of(v);
    live.w = NULL, live.fm = NULL;
    if (t) {
        find_live(v, t);
        return t;
    }
    if (v->kind == LV_LIST) {
        if (last_list) { lt_free(&last_list->lt); lp_free(last_list); }
        last_list = lp_calloc(1, sizeof *last_list);
        if (!last_list) { lp_fail(c, "MemoryError", "out of memory"); return NULL; }
        if (lt_from_value(v, "list", &last_list->lt)) {
            lp_fail(c, "ValueError", "%s", lp_geterr());
            return NULL;
        }
        list_as_tensor *l = last_list;
        l->st = (st_tensor){"list", ST_F32, l->lt.ndim, l->lt.shape, l->lt.nelem, l->lt.nelem * 4, 0, l->lt.data};
        l->t = (mdl_tensor){"list", "list", &l->st, NULL, -1, NULL};
        return &l->t;
    }
    lp_fail(c, "TypeError", "expected a tensor, a module with a weight, or a list of numbers, got %s",
            lv_type_name(v));
    return NULL;
}

/* The value `stats` returns: its table (text/plain and text/html, rows, indexing — all the
 * table's own) plus the histogram as an SVG bar chart (image/svg+xml). */
typedef struct lm_stats { lp_table *t; char *svg; } lm_stats;

static void stats_free(void *p) {
    lm_stats *s = p;
    lp_table_free(s->t);
    lp_free(s->svg);
    lp_free(s);
}
static char *stats_text(void *p) { return lv_table_type.text(((lm_stats *)p)->t); }
static json_t *stats_bundle(void *p) {
    lm_stats *s = p;
    json_t *b = lv_table_type.bundle(s->t);
    if (b && s->svg) json_object_set_new(b, "image/svg+xml", json_string(s->svg));
    return b;
}
static lv_value *stats_attr(void *p, const char *name) { return lv_table_type.getattr(((lm_stats *)p)->t, name); }
static lv_value *stats_index(void *p, lv_value *key) { return lv_table_type.getindex(((lm_stats *)p)->t, key); }
static int stats_attrs(void *p, lv_attr_fn add, void *actx) { return lv_table_type.attrs(((lm_stats *)p)->t, add, actx); }
static char *stats_summary(void *p) { return lv_table_type.summary(((lm_stats *)p)->t); }
static size_t stats_len(void *p) { return lv_table_type.len(((lm_stats *)p)->t); }
static lv_value *stats_item(void *p, size_t i) { return lv_table_type.item(((lm_stats *)p)->t, i); }

static const lv_type lv_stats_type = {
    .name = "table", .free = stats_free, .text = stats_text, .bundle = stats_bundle,
    .getattr = stats_attr, .getindex = stats_index, .attrs = stats_attrs, .summary = stats_summary,
    .len = stats_len, .item = stats_item,
};

static void put_xml(sbuf *b, const char *s) {
    for (; *s; s++) {
        if (*s == '<') sb_puts(b, "&lt;");
        else if (*s == '>') sb_puts(b, "&gt;");
        else if (*s == '&') sb_puts(b, "&amp;");
        else if (*s == '"') sb_puts(b, "&quot;");
        else sb_putc(b, *s);
    }
}

/* The histogram as a standalone SVG: one <rect> per bin (empty bins too, at height 0),
 * the range's ends under the first and last bar. NULL on OOM. */
static char *hist_svg(const char *name, const uint64_t *hist, int64_t bins, double mn, double mx) {
    enum { W = 480, H = 200, PAD = 10, AXIS = 20 };
    uint64_t top = 1;
    for (int64_t i = 0; i < bins; i++) if (hist[i] > top) top = hist[i];
    double plot_w = W - 2 * PAD, plot_h = H - 2 * PAD - AXIS, bw = plot_w / (double)bins;
    sbuf b;
    sb_init(&b);
    sb_printf(&b, "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%d\" height=\"%d\" "
              "viewBox=\"0 0 %d %d\" font-family=\"sans-serif\" font-size=\"11\">", W, H, W, H);
    sb_puts(&b, "<title>histogram of ");
    put_xml(&b, name);
    sb_puts(&b, "</title>");
    for (int64_t i = 0; i < bins; i++) {
        double h = (double)hist[i] / (double)top * plot_h;
        sb_printf(&b, "<rect x=\"%.2f\" y=\"%.2f\" width=\"%.2f\" height=\"%.2f\" fill=\"#4c78a8\">"
                  "<title>%llu</title></rect>", PAD + i * bw + (bw > 2 ? 0.5 : 0), PAD + plot_h - h,
                  bw > 2 ? bw - 1 : bw, h, (unsigned long long)hist[i]);
    }
    sb_printf(&b, "<line x1=\"%d\" y1=\"%.2f\" x2=\"%d\" y2=\"%.2f\" stroke=\"#333\"/>", PAD,
              PAD + plot_h, W - PAD, PAD + plot_h);
    sb_printf(&b, "<text x=\"%d\" y=\"%d\" text-anchor=\"start\">min %.4g</text>", PAD, H - PAD, mn);
    sb_printf(&b, "<text x=\"%d\" y=\"%d\" text-anchor=\"end\">max %.4g</text>", W - PAD, H - PAD, mx);
    sb_puts(&b, "</svg>");
    return b.oom ? (sb_free(&b), NULL) : sb_take(&b);
}

static int run_stats(lp_call *c, lv_value **result) {
    const mdl_tensor *t = tensor_arg(c, "tensor");
    if (!t) return -1;
    int64_t bins = lp_arg_int(c, "bins");
    if (bins < 1 || bins > 200) return lp_fail(c, "ValueError", "bins must be 1 .. 200, got %lld", (long long)bins);
    enum { CHUNK = 1 << 16 };
    float *buf = lp_malloc(sizeof *buf * CHUNK);
    if (!buf) return lp_fail(c, "MemoryError", "out of memory");
    uint64_t n = t->st->nelem, finite = 0, zeros = 0, nans = 0, infs = 0;
    double sum = 0, sumsq = 0, mn = INFINITY, mx = -INFINITY;
    /* two passes: moments and range, then the histogram over [min, max] */
    for (int pass = 0; pass < 2; pass++) {
        uint64_t *hist = NULL;
        if (pass == 1) {
            if (!finite) break;
            hist = lp_calloc((size_t)bins, sizeof *hist);
            if (!hist) { lp_free(buf); return lp_fail(c, "MemoryError", "out of memory"); }
        }
        for (uint64_t at = 0; at < n; at += CHUNK) {
            size_t k = n - at < CHUNK ? (size_t)(n - at) : CHUNK;
            if (lp_check_interrupt(c) || tensor_read(t, at, k, buf) < 0) {
                lp_free(hist); lp_free(buf);
                return lv_errkind() ? -1 : lp_fail(c, "TypeError", "%s", lp_geterr());
            }
            for (size_t i = 0; i < k; i++) {
                double x = buf[i];
                if (pass == 0) {
                    if (isnan(x)) { nans++; continue; }
                    if (isinf(x)) { infs++; continue; }
                    finite++;
                    zeros += x == 0;
                    sum += x;
                    sumsq += x * x;
                    if (x < mn) mn = x;
                    if (x > mx) mx = x;
                } else if (isfinite(x)) {
                    int64_t bi = mx > mn ? (int64_t)((x - mn) / (mx - mn) * (double)bins) : 0;
                    hist[bi >= bins ? bins - 1 : bi]++;
                }
            }
        }
        if (pass == 1) {
            uint64_t top = 1;
            for (int64_t i = 0; i < bins; i++) if (hist[i] > top) top = hist[i];
            static const char *const bars[] = {" ", "▁", "▂", "▃", "▄", "▅", "▆", "▇", "█"};
            sbuf h;
            sb_init(&h);
            sb_printf(&h, "histogram %.4g … %.4g: ", mn, mx);
            for (int64_t i = 0; i < bins; i++)
                sb_puts(&h, bars[hist[i] ? 1 + (int)((hist[i] * 7) / top) : 0]);
            char *svg = hist_svg(t->name, hist, bins, mn, mx);
            lp_free(hist);
            double mean = sum / (double)finite, var = sumsq / (double)finite - mean * mean;
            const char *hdr[] = {"stat", "value"};
            lp_table *tab = lp_table_new(2, hdr);
            char v[64];
            sbuf title;
            sb_init(&title);
            sb_printf(&title, "%s ", t->name);
            put_shape(&title, t);
            sb_putc(&title, ' ');
            put_tdtype(&title, t);
            put_live_note(&title);
#define ST(k, ...) do { snprintf(v, sizeof v, __VA_ARGS__); const char *r_[] = {k, v}; \
                        if (tab) lp_table_row(tab, r_); } while (0)
            ST("count", "%llu", (unsigned long long)n);
            ST("min", "%.6g", mn);
            ST("max", "%.6g", mx);
            ST("mean", "%.6g", mean);
            ST("std", "%.6g", sqrt(var > 0 ? var * (double)finite / (double)(finite > 1 ? finite - 1 : 1) : 0));
            ST("zeros", "%llu", (unsigned long long)zeros);
            if (nans) ST("nan", "%llu", (unsigned long long)nans);
            if (infs) ST("inf", "%llu", (unsigned long long)infs);
#undef ST
            if (tab) { lp_table_set_title(tab, sb_str(&title)); lp_table_set_footer(tab, sb_str(&h)); }
            sb_free(&title);
            sb_free(&h);
            lp_free(buf);
            lm_stats *sv = tab && svg ? lp_malloc(sizeof *sv) : NULL;
            if (!sv) {
                lp_table_free(tab);
                lp_free(svg);
                return lp_fail(c, "MemoryError", "out of memory");
            }
            sv->t = tab;
            sv->svg = svg;
            *result = lv_new_opaque(&lv_stats_type, sv);   /* frees sv on failure */
            return *result ? 0 : lp_fail(c, "MemoryError", "out of memory");
        }
    }
    lp_free(buf);
    return lp_fail(c, "ValueError", "%s has no finite values (%llu NaN, %llu inf)", t->name,
                   (unsigned long long)nans, (unsigned long long)infs);
}
static const lp_param stats_params[] = {
    {"tensor", LP_T_ANY, .help = "a tensor (m.layers[0].mlp.up_proj.weight), a module (its weight), or a list "
                                 "of numbers (attention weights, activations)"},
    {0}};
static const lp_param stats_opts[] = {{"bins", LP_T_INT, .def = "24", .help = "histogram bins"}, {0}};
const lp_command lp_cmd_stats = {
    "stats", stats_params, stats_opts, run_stats,
    .summary = "Min, max, mean, std, zeros and a histogram of a weight",
    .help = "Reads the weight from the mapped file, widened to f32 (bf16, f16, f8 included);\n"
            "after training, unfreeze or merge, the values the model computes with (what\n"
            "`save MODEL` writes). `show` reads the same.\n"
            "In a notebook the histogram is also drawn as an SVG bar chart (one bar per bin).\n"
            "Example:\n    stats m.layers[0].self_attn.q_proj.weight\n    stats m.model.norm bins=10",
};

static int run_show(lp_call *c, lv_value **result) {
    const mdl_tensor *t = tensor_arg(c, "tensor");
    if (!t) return -1;
    const lm_view *w = lv_opaque_ptr(lp_arg(c, "tensor"), &lv_tensor_type);
    int sliced = w && w->sliced;
    /* a slice is shown whole (up to the caps); a whole tensor by its top-left corner */
    int64_t rows = lp_arg_given(c, "rows") || !sliced ? lp_arg_int(c, "rows") : 1000;
    int64_t cols = lp_arg_given(c, "cols") || !sliced ? lp_arg_int(c, "cols") : 100;
    if (rows < 1 || cols < 1 || rows > 1000 || cols > 100)
        return lp_fail(c, "ValueError", "rows must be 1 .. 1000 and cols 1 .. 100");
    /* a matrix view: the last dimension across, everything before it down */
    uint64_t full_cols = mat_cols(t);
    uint64_t r0 = sliced ? w->r0 : 0, c0 = sliced ? w->c0 : 0;
    uint64_t nrows = sliced ? w->r1 - w->r0 : mat_rows(t), ncols = sliced ? w->c1 - w->c0 : full_cols;
    size_t sc = ncols < (uint64_t)cols ? (size_t)ncols : (size_t)cols;
    size_t sr = nrows < (uint64_t)rows ? (size_t)nrows : (size_t)rows;
    const char **hdr = lp_calloc(sc + 2, sizeof *hdr);
    char (*names)[24] = lp_calloc(sc + 2, sizeof *names);
    float *vals = lp_malloc(sizeof *vals * (sc ? sc : 1));
    lp_table *tab = NULL;
    int rc = -1;
    if (!hdr || !names || !vals) { lp_fail(c, "MemoryError", "out of memory"); goto out; }
    hdr[0] = "";
    for (size_t j = 0; j < sc; j++) { snprintf(names[j], 24, "%llu", (unsigned long long)(c0 + j)); hdr[j + 1] = names[j]; }
    size_t nh = sc + 1;
    if (sc < ncols) hdr[nh++] = "…";
    tab = lp_table_new(nh, hdr);
    if (!tab) { lp_fail(c, "MemoryError", "out of memory"); goto out; }
    char (*cells)[24] = (char (*)[24])lp_calloc(nh, 24);
    const char **row = lp_calloc(nh, sizeof *row);
    if (!cells || !row) { lp_free(cells); lp_free(row); lp_fail(c, "MemoryError", "out of memory"); goto out; }
    for (size_t i = 0; i < sr; i++) {
        if (tensor_read(t, (r0 + i) * full_cols + c0, sc, vals) < 0) {
            lp_free(cells); lp_free(row);
            lp_fail(c, "TypeError", "%s", lp_geterr());
            goto out;
        }
        snprintf(cells[0], 24, "%llu", (unsigned long long)(r0 + i));
        row[0] = cells[0];
        for (size_t j = 0; j < sc; j++) { snprintf(cells[j + 1], 24, "%.5g", vals[j]); row[j + 1] = cells[j + 1]; }
        if (sc < ncols) row[nh - 1] = "…";
        lp_table_row(tab, row);
    }
    lp_free(cells);
    lp_free(row);
    sbuf title;
    sb_init(&title);
    sb_printf(&title, "%s ", t->name);
    put_shape(&title, t);
    sb_putc(&title, ' ');
    put_tdtype(&title, t);
    put_live_note(&title);
    if (sliced)
        sb_printf(&title, " [%llu:%llu, %llu:%llu]", (unsigned long long)w->r0, (unsigned long long)w->r1,
                  (unsigned long long)w->c0, (unsigned long long)w->c1);
    if (sr < nrows || sc < ncols)
        sb_printf(&title, " (first %zu × %zu of %llu × %llu)", sr, sc, (unsigned long long)nrows,
                  (unsigned long long)ncols);
    lp_table_set_title(tab, sb_str(&title));
    sb_free(&title);
    *result = lp_table_value(tab);
    tab = NULL;
    rc = *result ? 0 : lp_fail(c, "MemoryError", "out of memory");
out:
    lp_table_free(tab);
    lp_free(hdr);
    lp_free(names);
    lp_free(vals);
    return rc;
}
static const lp_param show_params[] = {
    {"tensor", LP_T_ANY, .help = "a tensor, a module (its weight), or a list of numbers"}, {0}};
static const lp_param show_opts[] = {
    {"rows", LP_T_INT, .def = "6", .help = "rows to show"},
    {"cols", LP_T_INT, .def = "8", .help = "columns to show"}, {0}};
const lp_command lp_cmd_show = {
    "show", show_params, show_opts, run_show,
    .summary = "The values of a weight (or a slice of it) as a table",
    .help = "The last dimension goes across; all others are flattened into rows. A whole weight\n"
            "shows its top-left corner; a slice w[rows, cols] is shown whole (up to 1000 × 100).\n"
            "Example:\n    show m.layers[0].self_attn.q_proj.weight rows=4 cols=6\n"
            "    show m.layers[0].self_attn.q_proj.weight[0:4, 10:16]",
};
