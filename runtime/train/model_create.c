/* model_create.c — `create`: a config as transformers writes it, and a model with seeded
 * random weights held in memory (model_io.h). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "model/arch.h"
#include "model/st.h"
#include "nn/ops.h"
#include "train/model_io.h"
#include "util/err.h"
#include "util/mem.h"
#include "util/sbuf.h"

/* The config.json transformers 5.24 saves for each class's defaults (to_json_string with
 * use_diff, less transformers_version and layer_types, which depend on the layer count). */
static const struct { const char *type, *arch, *json; } defaults[] = {
    {"llama", "LlamaForCausalLM",
     "{\"attention_bias\":false,\"attention_dropout\":0.0,\"bos_token_id\":1,\"eos_token_id\":2,\"head_dim\":128,\"hidden_act\":\"silu\",\"hidden_size\":4096,\"initializer_range\":0.02,\"intermediate_size\":11008,\"max_position_embeddings\":2048,\"mlp_bias\":false,\"model_type\":\"llama\",\"num_attention_heads\":32,\"num_hidden_layers\":32,\"num_key_value_heads\":32,\"pad_token_id\":null,\"pretraining_tp\":1,\"rms_norm_eps\":1e-06,\"rope_parameters\":{\"rope_theta\":10000.0,\"rope_type\":\"default\"},\"tie_word_embeddings\":false,\"use_cache\":true,\"vocab_size\":32000}"},
    {"mistral", "MistralForCausalLM",
     "{\"attention_dropout\":0.0,\"bos_token_id\":1,\"eos_token_id\":2,\"head_dim\":128,\"hidden_act\":\"silu\",\"hidden_size\":4096,\"initializer_range\":0.02,\"intermediate_size\":14336,\"max_position_embeddings\":131072,\"model_type\":\"mistral\",\"num_attention_heads\":32,\"num_hidden_layers\":32,\"num_key_value_heads\":8,\"pad_token_id\":null,\"rms_norm_eps\":1e-06,\"rope_parameters\":{\"rope_theta\":10000.0,\"rope_type\":\"default\"},\"sliding_window\":4096,\"tie_word_embeddings\":false,\"use_cache\":true,\"vocab_size\":32000}"},
    {"qwen2", "Qwen2ForCausalLM",
     "{\"attention_dropout\":0.0,\"bos_token_id\":null,\"eos_token_id\":null,\"hidden_act\":\"silu\",\"hidden_size\":4096,\"initializer_range\":0.02,\"intermediate_size\":22016,\"max_position_embeddings\":32768,\"max_window_layers\":28,\"model_type\":\"qwen2\",\"num_attention_heads\":32,\"num_hidden_layers\":32,\"num_key_value_heads\":32,\"pad_token_id\":null,\"rms_norm_eps\":1e-06,\"rope_parameters\":{\"rope_theta\":10000.0,\"rope_type\":\"default\"},\"sliding_window\":null,\"tie_word_embeddings\":false,\"use_cache\":true,\"use_sliding_window\":false,\"vocab_size\":151936}"},
    {"qwen3", "Qwen3ForCausalLM",
     "{\"attention_bias\":false,\"attention_dropout\":0.0,\"bos_token_id\":null,\"eos_token_id\":null,\"head_dim\":128,\"hidden_act\":\"silu\",\"hidden_size\":4096,\"initializer_range\":0.02,\"intermediate_size\":22016,\"max_position_embeddings\":32768,\"max_window_layers\":28,\"model_type\":\"qwen3\",\"num_attention_heads\":32,\"num_hidden_layers\":32,\"num_key_value_heads\":32,\"pad_token_id\":null,\"rms_norm_eps\":1e-06,\"rope_parameters\":{\"rope_theta\":10000.0,\"rope_type\":\"default\"},\"sliding_window\":null,\"tie_word_embeddings\":false,\"use_cache\":true,\"use_sliding_window\":false,\"vocab_size\":151936}"},
    {"gemma", "GemmaForCausalLM",
     "{\"attention_bias\":false,\"attention_dropout\":0.0,\"bos_token_id\":2,\"eos_token_id\":1,\"head_dim\":256,\"hidden_act\":\"gelu_pytorch_tanh\",\"hidden_size\":3072,\"initializer_range\":0.02,\"intermediate_size\":24576,\"max_position_embeddings\":8192,\"model_type\":\"gemma\",\"num_attention_heads\":16,\"num_hidden_layers\":28,\"num_key_value_heads\":16,\"pad_token_id\":0,\"rms_norm_eps\":1e-06,\"rope_parameters\":{\"rope_theta\":10000.0,\"rope_type\":\"default\"},\"tie_word_embeddings\":true,\"use_bidirectional_attention\":null,\"use_cache\":true,\"vocab_size\":256000}"},
    {"gemma2", "Gemma2ForCausalLM",
     "{\"attention_bias\":false,\"attention_dropout\":0.0,\"attn_logit_softcapping\":50.0,\"bos_token_id\":2,\"eos_token_id\":1,\"final_logit_softcapping\":30.0,\"head_dim\":256,\"hidden_activation\":\"gelu_pytorch_tanh\",\"hidden_size\":2304,\"initializer_range\":0.02,\"intermediate_size\":9216,\"max_position_embeddings\":8192,\"model_type\":\"gemma2\",\"num_attention_heads\":8,\"num_hidden_layers\":26,\"num_key_value_heads\":4,\"pad_token_id\":0,\"query_pre_attn_scalar\":256,\"rms_norm_eps\":1e-06,\"rope_parameters\":{\"rope_theta\":10000.0,\"rope_type\":\"default\"},\"sliding_window\":4096,\"tie_word_embeddings\":true,\"use_bidirectional_attention\":null,\"use_cache\":true,\"vocab_size\":256000}"},
    {"gemma3", "Gemma3ForCausalLM",
     "{\"_sliding_window_pattern\":6,\"attention_bias\":false,\"attention_dropout\":0.0,\"attn_logit_softcapping\":null,\"bos_token_id\":2,\"eos_token_id\":1,\"final_logit_softcapping\":null,\"head_dim\":256,\"hidden_activation\":\"gelu_pytorch_tanh\",\"hidden_size\":2304,\"initializer_range\":0.02,\"intermediate_size\":9216,\"max_position_embeddings\":131072,\"model_type\":\"gemma3_text\",\"num_attention_heads\":8,\"num_hidden_layers\":26,\"num_key_value_heads\":4,\"pad_token_id\":0,\"query_pre_attn_scalar\":256,\"rms_norm_eps\":1e-06,\"rope_parameters\":{\"full_attention\":{\"rope_theta\":1000000.0,\"rope_type\":\"default\"},\"sliding_attention\":{\"rope_theta\":10000.0,\"rope_type\":\"default\"}},\"sliding_window\":4096,\"tie_word_embeddings\":true,\"use_bidirectional_attention\":false,\"use_cache\":true,\"vocab_size\":262208}"},
    {"gpt2", "GPT2LMHeadModel",
     "{\"activation_function\":\"gelu_new\",\"add_cross_attention\":false,\"attn_pdrop\":0.1,\"bos_token_id\":50256,\"embd_pdrop\":0.1,\"eos_token_id\":50256,\"initializer_range\":0.02,\"layer_norm_epsilon\":1e-05,\"model_type\":\"gpt2\",\"n_embd\":768,\"n_head\":12,\"n_inner\":null,\"n_layer\":12,\"n_positions\":1024,\"pad_token_id\":null,\"reorder_and_upcast_attn\":false,\"resid_pdrop\":0.1,\"scale_attn_by_inverse_layer_idx\":false,\"scale_attn_weights\":true,\"summary_activation\":null,\"summary_first_dropout\":0.1,\"summary_proj_to_labels\":true,\"summary_type\":\"cls_index\",\"summary_use_proj\":true,\"tie_word_embeddings\":true,\"use_cache\":true,\"vocab_size\":50257}"},
    {"bert", "BertForMaskedLM",
     "{\"add_cross_attention\":false,\"attention_probs_dropout_prob\":0.1,\"bos_token_id\":null,\"classifier_dropout\":null,\"eos_token_id\":null,\"hidden_act\":\"gelu\",\"hidden_dropout_prob\":0.1,\"hidden_size\":768,\"initializer_range\":0.02,\"intermediate_size\":3072,\"is_decoder\":false,\"layer_norm_eps\":1e-12,\"max_position_embeddings\":512,\"model_type\":\"bert\",\"num_attention_heads\":12,\"num_hidden_layers\":12,\"pad_token_id\":0,\"tie_word_embeddings\":true,\"type_vocab_size\":2,\"use_cache\":true,\"vocab_size\":30522}"},
};

/* Other class names `create` takes, onto the defaults of a model type. */
static const struct { const char *arch, *type; } classes[] = {
    {"BertForSequenceClassification", "bert"},
    {"BertModel", "bert"},
};

const char *tr_create_names(void) {
    return "llama, mistral, qwen2, qwen3, gemma, gemma2, gemma3, gpt2, bert (or a class name such as "
           "\"BertForSequenceClassification\")";
}

json_t *tr_create_defaults(const char *arch) {
    const char *type = NULL, *cls = NULL;
    for (size_t i = 0; i < sizeof defaults / sizeof defaults[0] && !type; i++)
        if (!strcmp(arch, defaults[i].type) || !strcmp(arch, defaults[i].arch)) {
            type = defaults[i].type;
            cls = defaults[i].arch;
        }
    for (size_t i = 0; i < sizeof classes / sizeof classes[0] && !type; i++)
        if (!strcmp(arch, classes[i].arch)) {
            type = classes[i].type;
            cls = classes[i].arch;
        }
    if (!type) return lp_seterr("unknown architecture `%s`; create knows %s", arch, tr_create_names()), NULL;
    for (size_t i = 0; i < sizeof defaults / sizeof defaults[0]; i++) {
        if (strcmp(type, defaults[i].type)) continue;
        json_t *o = json_loads(defaults[i].json, 0, NULL);
        if (!o) return lp_seterr("out of memory"), NULL;
        json_t *a = json_array();
        json_array_append_new(a, json_string(cls));
        json_object_set_new(o, "architectures", a);
        return o;
    }
    return NULL;
}

/* ---- weights --------------------------------------------------------------------------- */

typedef enum { INIT_NORMAL, INIT_ZERO, INIT_ONE } init_kind;

typedef struct cr_tensor {
    char *name;
    int ndim;
    uint64_t shape[2];
    uint64_t nelem;
    init_kind init;
    float std;
    int64_t pad_row;     /* embedding row zeroed (padding_idx), or -1 */
} cr_tensor;

static int ends_with(const char *s, const char *suf) {
    size_t a = strlen(s), b = strlen(suf);
    return a >= b && !strcmp(s + a - b, suf);
}

static void free_list(cr_tensor *t, size_t n) {
    for (size_t i = 0; i < n; i++) lp_free(t[i].name);
    lp_free(t);
}

/* Every tensor the config implies, in table order (the order transformers defines them). */
static int list_tensors(const arch_desc *a, const mdl_config *c, json_t *raw, cr_tensor **out,
                        size_t *nout) {
    double range = 0.02;
    json_t *ir = json_object_get(raw, "initializer_range");
    if (json_is_number(ir)) range = json_number_value(ir);
    json_t *pj = json_object_get(raw, "pad_token_id");
    int64_t pad = json_is_integer(pj) ? (int64_t)json_integer_value(pj) : -1;
    size_t cap = 0, n = 0;
    cr_tensor *ts = NULL;
    for (size_t r = 0; r < a->ntensors; r++) {
        const arch_tensor *t = &a->tensors[r];
        if (!arch_row_exists(a, c, t->flags) || (t->flags & AT_BUFFER) ||
            ((t->flags & AT_TIED) && c->tie_word_embeddings))
            continue;
        int64_t nl = strchr(t->name, '#') ? c->num_hidden_layers : 1;
        for (int64_t L = 0; L < nl; L++) {
            if (n == cap) {
                cr_tensor *nt = lp_realloc(ts, sizeof *nt * (cap = cap * 2 + 64));
                if (!nt) { free_list(ts, n); return lp_seterr("out of memory"); }
                ts = nt;
            }
            cr_tensor *x = &ts[n];
            memset(x, 0, sizeof *x);
            sbuf b;
            sb_init(&b);
            if (!(t->flags & AT_HEAD) && a->prefix[0]) sb_printf(&b, "%s.", a->prefix);
            for (const char *p = t->name; *p; p++) {
                if (*p == '#') sb_printf(&b, "%lld", (long long)L);
                else sb_putc(&b, *p);
            }
            if (b.oom) { sb_free(&b); free_list(ts, n); return lp_seterr("out of memory"); }
            x->name = sb_take(&b);
            n++;
            x->ndim = t->ndim;
            x->nelem = 1;
            for (int d = 0; d < t->ndim; d++) {
                int64_t v = arch_dim_value(c, (arch_dim)t->dim[d]);
                if (v <= 0) {
                    free_list(ts, n);
                    return lp_seterr("%s: a size of tensor `%s` is 0; check the config", a->name, t->name);
                }
                x->shape[d] = (uint64_t)v;
                x->nelem *= (uint64_t)v;
            }
            x->pad_row = -1;
            x->std = (float)range;
            if (ends_with(x->name, ".bias")) x->init = INIT_ZERO;
            else if (t->ndim == 1)   /* the tables' only 1-D weights are norms */
                x->init = a->norm == NORM_RMS_PLUS_ONE ? INIT_ZERO : INIT_ONE;
            else x->init = INIT_NORMAL;
            if ((a->flags & AF_CONV1D) && ends_with(x->name, ".c_proj.weight"))
                x->std = (float)(range / sqrt(2.0 * (double)c->num_hidden_layers));
            /* the token embedding is nn.Embedding(vocab, hidden, padding_idx=pad_token_id)
               for the Llama family and BERT; GPT-2's has none */
            if (!strcmp(t->name, a->embed) && pad >= 0 && pad < c->vocab_size &&
                !(a->flags & AF_CONV1D))
                x->pad_row = pad;
        }
    }
    *out = ts;
    *nout = n;
    return 0;
}

static void fill(const cr_tensor *t, float *dst, uint64_t seed, uint64_t counter) {
    if (t->init == INIT_ZERO) { memset(dst, 0, sizeof(float) * t->nelem); return; }
    if (t->init == INIT_ONE) { for (uint64_t i = 0; i < t->nelem; i++) dst[i] = 1.0f; return; }
    nn_rand_normal(dst, seed, counter, 0.0f, t->std, (size_t)t->nelem);
    if (t->pad_row >= 0) memset(dst + (uint64_t)t->pad_row * t->shape[1], 0, sizeof(float) * t->shape[1]);
}

mdl_model *tr_create(json_t *config, uint64_t seed, st_dtype dtype, const char *name) {
    char *text = json_dumps(config, JSON_COMPACT);
    if (!text) return lp_seterr("out of memory"), NULL;
    mdl_config *c = mdl_config_parse(text, strlen(text), "config");
    free(text);
    if (!c) return NULL;
    const arch_desc *a = arch_lookup(c->architecture);
    if (!a) {
        lp_seterr("config: architecture `%s` is not one loupe computes with; create knows %s",
                  c->architecture ? c->architecture : "(none)", tr_create_names());
        mdl_config_free(c);
        return NULL;
    }
    cr_tensor *ts = NULL;
    size_t n = 0;
    if (list_tensors(a, c, c->raw, &ts, &n) < 0) { mdl_config_free(c); return NULL; }
    int bytes = st_dtype_bits(dtype) / 8;
    uint64_t total = 0, maxn = 0;
    for (size_t i = 0; i < n; i++) {
        total += ts[i].nelem;
        if (ts[i].nelem > maxn) maxn = ts[i].nelem;
    }
    /* the weights here, and their f32 copy for compute: refuse what this machine cannot hold
       (an allocation that large could succeed and be killed later, on first touch) */
    long pages = sysconf(_SC_PHYS_PAGES), psz = sysconf(_SC_PAGESIZE);
    double need = (double)total * (bytes + 4), have = pages > 0 && psz > 0 ? (double)pages * psz : 0;
    if (total > (1ull << 40) || (have > 0 && need > 0.8 * have)) {
        lp_seterr("%s with these sizes has %.3g parameters (%.1f GB with their f32 copy for "
                  "compute): more than this machine's memory; make it smaller", a->name,
                  (double)total, need / 1e9);
        free_list(ts, n);
        mdl_config_free(c);
        return NULL;
    }
    /* one in-memory safetensors file: header, then the tensors in table order */
    json_t *hdr = json_object(), *meta = json_object();
    json_object_set_new(meta, "format", json_string("pt"));
    json_object_set_new(hdr, "__metadata__", meta);
    uint64_t off = 0;
    for (size_t i = 0; i < n; i++) {
        json_t *shape = json_array();
        for (int d = 0; d < ts[i].ndim; d++) json_array_append_new(shape, json_integer((json_int_t)ts[i].shape[d]));
        json_t *e = json_pack("{s:s, s:o, s:[I,I]}", "dtype", st_dtype_name(dtype), "shape", shape,
                              "data_offsets", (json_int_t)off, (json_int_t)(off + ts[i].nelem * bytes));
        if (!e || json_object_set_new(hdr, ts[i].name, e) < 0) break;
        off += ts[i].nelem * bytes;
    }
    char *h = json_dumps(hdr, JSON_COMPACT);
    json_decref(hdr);
    size_t hl = h ? strlen(h) : 0, padded = (hl + 7) / 8 * 8;
    unsigned char *buf = h ? lp_malloc(8 + padded + (size_t)off) : NULL;
    float *tmp = buf ? lp_malloc(sizeof(float) * (maxn ? maxn : 1)) : NULL;
    if (!h || !buf || !tmp) {
        free(h);
        lp_free(buf);
        lp_free(tmp);
        free_list(ts, n);
        mdl_config_free(c);
        return lp_seterr("out of memory"), NULL;
    }
    for (int i = 0; i < 8; i++) buf[i] = (unsigned char)((uint64_t)padded >> (8 * i));
    memcpy(buf + 8, h, hl);
    memset(buf + 8 + hl, ' ', padded - hl);
    free(h);
    unsigned char *data = buf + 8 + padded;
    uint64_t counter = 0;
    for (size_t i = 0; i < n; i++) {
        fill(&ts[i], tmp, seed, counter);   /* f32, then stored in the file's dtype */
        if (dtype == ST_F32) {
            memcpy(data, tmp, sizeof(float) * ts[i].nelem);
        } else {
            for (uint64_t k = 0; k < ts[i].nelem; k++) {
                uint16_t h = dtype == ST_BF16 ? st_f32_to_bf16(tmp[k]) : st_f32_to_f16(tmp[k]);
                memcpy(data + 2 * k, &h, 2);
            }
        }
        counter += 2 * ts[i].nelem;   /* nn_rand_normal uses two counters per value */
        data += ts[i].nelem * bytes;
    }
    lp_free(tmp);
    free_list(ts, n);
    st_file *f = st_open_mem(buf, 8 + padded + (size_t)off, name);
    if (!f) { lp_free(buf); mdl_config_free(c); return NULL; }
    mdl_model *m = mdl_from_files(&f, 1, c, name);   /* takes c */
    if (!m) { st_close(f); lp_free(buf); return NULL; }
    m->files_borrowed = 0;   /* the model closes the file and frees the buffer */
    m->owned_buf = buf;
    return m;
}
