/* model.h — Hugging Face checkpoints as loupe sees them: config, architecture, module tree.
 *
 *   mdl_model *m = mdl_load("models/gemma-2-2b");     // a directory or one .safetensors file
 *   if (!m) show(lp_geterr());                        // "…/model.safetensors: tensor `x`: …"
 *   const mdl_module *q = mdl_find(m, "layers[0].self_attn.q_proj");   // prefix optional
 *   q->type == MT_LINEAR, q->in == 2304, q->out == 2048, q->nparams == 4718592
 *   const mdl_tensor *w = mdl_param(q, "weight");     // view into the mapped file
 *   float row[2304]; mdl_tensor_to_f32(w, 0, 2304, row);   // widen elements [0, 2304)
 *   mdl_free(m);
 *
 * Loading reads config.json, model.safetensors.index.json and the safetensors headers; the
 * files are mapped, and weights are read only when a caller touches them.
 *
 * Names: the module tree uses the names transformers gives the parameters of the architecture
 * in config.json (`model.layers.0.self_attn.q_proj.weight` for LlamaForCausalLM,
 * `transformer.h.0.attn.c_attn` for GPT2LMHeadModel, `embeddings.word_embeddings` for
 * BertModel). Files that spell them differently — GPT-2 files without `transformer.`, BERT
 * files with or without `bert.`, old LayerNorm `gamma`/`beta` — are mapped onto those names;
 * mdl_tensor.file_name keeps the stored name. Buffers that transformers does not count as
 * parameters (`rotary_emb.inv_freq`, GPT-2 `attn.bias`, BERT `position_ids`) are left out.
 *
 * Known architectures (arch.c tables): LlamaForCausalLM, MistralForCausalLM, Qwen2ForCausalLM,
 * GemmaForCausalLM, Gemma2ForCausalLM, GPT2LMHeadModel, BertModel, BertForMaskedLM,
 * BertForSequenceClassification. For those, every expected tensor must be present with the
 * shape config.json implies (a clear error otherwise), and lm_head may be absent when the
 * embeddings are tied. Anything else — an unknown architecture, no config.json, a bare file —
 * loads for inspection: the tree comes from the tensor names, module types are guessed from
 * names and shapes, and m->arch is NULL (no compute).
 *
 * Paths accepted by mdl_find / mdl_find_tensor / mdl_glob: `layers.0` or `layers[0]`, with or
 * without the leading `model.` / `transformer.` / `bert.`; "" is the root. */
#ifndef LOUPE_MODEL_H
#define LOUPE_MODEL_H
#include <stddef.h>
#include <stdint.h>
#include <jansson.h>
#include "model/st.h"

/* ---- config.json -------------------------------------------------------------------------- */

/* What later compute needs, with transformers' defaults filled in where config.json is silent
 * (GPT-2 spellings n_embd/n_layer/... are read into the same fields). 0 / NULL: absent. */
typedef struct mdl_config {
    char   *architecture;       /* architectures[0], e.g. "LlamaForCausalLM" (NULL: none) */
    char   *model_type;         /* "llama" */
    int64_t hidden_size, intermediate_size, num_hidden_layers, num_attention_heads;
    int64_t num_key_value_heads;          /* = num_attention_heads when absent */
    int64_t head_dim;                     /* = hidden_size / num_attention_heads when absent */
    int64_t vocab_size, max_position_embeddings, type_vocab_size, n_positions;
    int64_t sliding_window;               /* 0: none */
    int64_t num_labels;                   /* len(id2label) or num_labels; 0 if neither */
    char  **id2label;                     /* [num_labels] or NULL */
    double  rms_norm_eps, layer_norm_eps; /* whichever the architecture uses */
    double  rope_theta;
    double  query_pre_attn_scalar;        /* Gemma 2; 0 when absent */
    double  attn_logit_softcapping, final_logit_softcapping;   /* 0: no cap */
    char   *hidden_act;                   /* hidden_act / hidden_activation / activation_function */
    int     tie_word_embeddings;          /* 1 when lm_head shares the token embeddings */
    int     attention_bias, mlp_bias;     /* Llama family flags (Qwen2 q/k/v bias is fixed) */
    json_t *rope_scaling;                 /* rope_scaling or rope_parameters object, or NULL (Gemma 3:
                                             its full-attention layers') */
    double  rope_local_theta;             /* Gemma 3: the sliding layers' own RoPE base
                                             (rope_local_base_freq, rope_parameters.
                                             sliding_attention); 0: every layer the same */
    unsigned char *sliding_layers;        /* [num_hidden_layers]: 1 = sliding-window layer */
    unsigned char *nope_layers;           /* [num_hidden_layers]: 1 = no RoPE there (SmolLM3's
                                             no_rope_layers 0 entries), or NULL */
    json_t *raw;                          /* the whole config.json (owned) */
} mdl_config;

/* Parse config.json text (len bytes). `name` is used in messages. NULL after lp_seterr(). */
mdl_config *mdl_config_parse(const char *text, size_t len, const char *name);
mdl_config *mdl_config_load(const char *path);
void        mdl_config_free(mdl_config *c);

/* ---- the loaded model ------------------------------------------------------------------------ */

typedef enum {
    MT_MODEL,        /* the root (e.g. LlamaForCausalLM) */
    MT_MODULE,       /* a container with no better name (LlamaModel, BertEncoder, ...) */
    MT_LIST,         /* ModuleList: children named 0, 1, ... */
    MT_EMBEDDING,    /* weight [num, dim] */
    MT_LINEAR,       /* weight [out, in], optional bias [out] */
    MT_CONV1D,       /* GPT-2: weight [in, out], bias [out]; y = x·W + b */
    MT_RMSNORM,      /* weight [dim] */
    MT_LAYERNORM,    /* weight [dim], bias [dim] */
    MT_ATTENTION,    /* q/k/v/o projections (or GPT-2 c_attn/c_proj, BERT self+output) */
    MT_MLP,          /* feed-forward block */
    MT_LAYER,        /* one decoder / encoder layer */
    MT_EMBEDDINGS,   /* BERT's embeddings block (word + position + type + LayerNorm) */
    MT_NTYPES
} mdl_mtype;

const char *mdl_mtype_name(mdl_mtype t);   /* "Linear", "RMSNorm", ... */

/* A bitsandbytes 4-bit weight as transformers saves it (load_in_4bit, then save_pretrained;
 * mdl_bnb.c): `W.weight` holds the packed codes (two a byte, first high), `W.weight.absmax`
 * the scales (f32, or with double quantization 8-bit indices with `nested_absmax` /
 * `nested_quant_map`), `W.weight.quant_map` the 16 codes, and
 * `W.weight.quant_state.bitsandbytes__nf4` (or __fp4) a JSON of the rest. The scales are
 * copied (aligned, small); the codes stay in the file's mapping. An 8-bit weight (load_in_8bit)
 * shares the record: its int8 codes, one f32 scale a row (W.SCB), type 3. */
typedef struct mdl_q4 {
    int            type;         /* 1 nf4, 2 fp4, 3 int8 (nn/ops.h's NN_Q4_NF4, NN_Q4_FP4, NN_Q8) */
    const uint8_t *codes;        /* (nelem + 1) / 2 bytes (int8: nelem), in the mapping */
    float         *absmax;       /* [nelem / 64 rounded up] f32 scales (int8: [out], each row's
                                    absmax), or NULL when nested: */
    uint8_t       *qabsmax;      /* their 8-bit indices into code8 */
    float         *absmax2;      /* one f32 per 256 of them */
    float         *code8;        /* [256] the dynamic map */
    float          offset;       /* added back (quant_state's nested_offset) */
    float          code[16];     /* quant_map */
    int            transposed;   /* a Conv1D weight: the codes hold [out, in] (transformers
                                    quantizes its transpose), the tensor reads as [in, out] */
} mdl_q4;

typedef struct mdl_tensor {
    char            *name;       /* canonical HF parameter name */
    const char      *file_name;  /* the name stored in the file (owned by the st_file) */
    const st_tensor *st;         /* dtype, ndim, shape, nelem, data (in the mapping); for a
                                    4-bit weight its logical shape, dtype U8, data the codes */
    const st_file   *file;       /* the shard that holds it */
    int              layer;      /* layer index, -1 outside the repeated layers */
    const mdl_q4    *q4;         /* a pre-quantized bitsandbytes 4-bit weight, else NULL */
} mdl_tensor;

typedef struct mdl_module mdl_module;
struct mdl_module {
    char        *path;        /* canonical path, "" for the root */
    const char  *local;       /* last component ("q_proj", "0"); points into path */
    mdl_mtype    type;
    const char  *cls;         /* transformers class name when known ("LlamaAttention"),
                                 else the type name */
    char        *cls_owned;   /* cls when it had to be formatted (freed with the model) */
    mdl_module  *parent;      /* NULL for the root */
    mdl_module **children;    /* [nchildren], in transformers' definition order */
    size_t       nchildren;
    mdl_tensor **params;      /* [nparams_local]: this module's own parameters */
    size_t       nparams_local;
    const mdl_tensor *tied;   /* lm_head absent from the file: the embedding it shares */
    uint64_t     nparams;     /* elements in the subtree, each tensor counted once */
    int64_t      in, out;     /* Linear/Conv1D/Embedding (num, dim)/norms (dim, dim); else 0 */
    int          layer;       /* layer index for the layer subtree, else -1 */
};

typedef struct arch_desc arch_desc;

typedef struct mdl_summary {
    const char *architecture;   /* config's architecture, or "unknown" */
    int64_t layers, hidden, heads, kv_heads, head_dim, intermediate, vocab;   /* 0: unknown */
    uint64_t params;            /* every parameter once (tied counted once), like
                                   transformers' num_parameters() */
    st_dtype dtype;             /* the dtype holding most parameters */
    int      mixed_dtypes;      /* 1 when parameters have more than one dtype */
    uint64_t file_bytes;        /* all safetensors files together */
    int      nfiles;
    int      ignored_buffers;   /* tensors in the files that are not parameters of this
                                   architecture (buffers, another task's head), left out */
    int      q4;                /* a pre-quantized bitsandbytes checkpoint: 1 nf4, 2 fp4,
                                   3 int8 (its weights count as their type, not U8 / I8) */
    int      q4_double;         /* …with double quantization */
} mdl_summary;

typedef struct mdl_model {
    char        *path;        /* as given to mdl_load */
    mdl_config  *config;      /* NULL when there is no config.json */
    const arch_desc *arch;    /* NULL: unknown architecture, inspection only */
    st_file    **files;       /* [nfiles] */
    size_t       nfiles;
    mdl_tensor  *tensors;     /* [ntensors], the parameters, in definition order */
    size_t       ntensors;
    mdl_module  *root;
    mdl_module **modules;     /* [nmodules], every module in pre-order (root first) */
    size_t       nmodules;
    mdl_summary  summary;
    int          files_borrowed;   /* 1: files belong to the caller (mdl_from_files) */
    void        *owned_buf;   /* memory behind an in-memory file (a created model), freed
                                 by mdl_free after the files */
    char        *tokenizer;   /* tokenizer.json to use (a created model's tokenizer=), or
                                 NULL: the one beside the checkpoint */
    mdl_q4      *q4s;         /* [nq4] pre-quantized weights' records (mdl_bnb.c) */
    st_tensor   *q4_st;       /* [nq4] their logical tensors */
    size_t       nq4;
} mdl_model;

/* Load a checkpoint directory (config.json + model.safetensors, or shards listed in
 * model.safetensors.index.json, or any *.safetensors), one .safetensors file (config.json
 * beside it is used when present), or an index .json. NULL after lp_seterr(). */
mdl_model *mdl_load(const char *path);

/* Hugging Face Hub ids (hub.c): nothing is downloaded, but a model transformers fetched before
 * is in huggingface_hub's cache. mdl_is_hub_id: 1 when s looks like "org/name" or "name";
 * mdl_hub_cache: the cache directory ($HF_HUB_CACHE, $HF_HOME/hub, …) into out;
 * mdl_hub_snapshot: the snapshot directory of id at refs/main (or its only snapshot) into
 * out, 0, or -1 when the cache has none. */
int         mdl_is_hub_id(const char *s);
const char *mdl_hub_cache(char *out, size_t cap);
int         mdl_hub_snapshot(const char *id, char *out, size_t cap);
void       mdl_free(mdl_model *m);

/* A model over files the caller opened (and keeps: mdl_free does not close them); takes
 * `config` (may be NULL). For fuzzing, tests and adapters held in memory. */
mdl_model *mdl_from_files(st_file *const *files, size_t nfiles, mdl_config *config,
                          const char *name);

/* Lookup (path forms above). NULL when absent (no lp_seterr: callers word the error). */
const mdl_module *mdl_find(const mdl_model *m, const char *path);
const mdl_tensor *mdl_find_tensor(const mdl_model *m, const char *path);
const mdl_tensor *mdl_param(const mdl_module *mod, const char *local);   /* "weight" */

/* Modules whose path matches a glob (`*` any run, `?` one char, `[0]` = `.0`), in tree order,
 * tried with and without the model prefix. Returns the count; out[cap] gets the first cap. */
size_t mdl_glob(const mdl_model *m, const char *pattern, const mdl_module **out, size_t cap);

/* Normalise a user path: `layers[0]` → `layers.0`. Returns a new string (lp_free). */
char *mdl_path_norm(const char *path);

/* Widen elements [first, first+n) of t to f32 into out[n]. -1 after lp_seterr() when the
 * range is outside the tensor or the dtype has no f32 meaning. */
int mdl_tensor_to_f32(const mdl_tensor *t, uint64_t first, size_t n, float *out);
/* A 4-bit weight's f32 scale of block b (bitsandbytes' dequantization: with double
 * quantization code8[q]·absmax2, rounded, + offset, rounded). */
float mdl_q4_scale(const mdl_q4 *q, size_t b);

#endif
