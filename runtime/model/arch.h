/* arch.h — architectures as tables: which tensors a checkpoint of each architecture holds,
 * their shapes in terms of config.json, and which module (type, transformers class) each
 * path is. Adding a model is adding a table (arch.c); compute reads the flags here instead of
 * testing architecture names.
 *
 * Tensor and module names are patterns relative to the base model (`model.` for Llama,
 * `transformer.` for GPT-2, `bert.` for BertFor*), or full names for rows flagged AT_HEAD
 * (`lm_head.weight`, `classifier.bias`). `#` stands for a layer index. */
#ifndef LOUPE_ARCH_H
#define LOUPE_ARCH_H
#include <stddef.h>
#include <stdint.h>
#include "model/model.h"

/* A dimension of an expected shape, read from mdl_config. */
typedef enum {
    AD_HIDDEN = 1, AD_INTER, AD_VOCAB, AD_QDIM /* heads·head_dim */, AD_KVDIM /* kv·head_dim */,
    AD_POS /* max_position_embeddings / n_positions */, AD_TYPES /* type_vocab_size */,
    AD_LABELS /* num_labels */, AD_3HIDDEN /* GPT-2 fused q,k,v */, AD_HEADDIM /* head_dim */,
    AD_QKVDIM /* (heads + 2·kv)·head_dim: Phi-3's fused q,k,v */, AD_2INTER /* 2·intermediate */
} arch_dim;

enum {
    AT_HEAD      = 1 << 0,  /* name is full, outside the base model prefix */
    AT_OPTIONAL  = 1 << 1,  /* may be absent (then not counted) */
    AT_TIED      = 1 << 2,  /* absent → shares the token embedding (lm_head) */
    AT_BUFFER    = 1 << 3,  /* a buffer, not a parameter: dropped at load */
    AT_QKV_BIAS  = 1 << 4,  /* exists iff config.attention_bias or AF_QKV_BIAS */
    AT_O_BIAS    = 1 << 5,  /* exists iff config.attention_bias (and not AF_QKV_BIAS) */
    AT_MLP_BIAS  = 1 << 6,  /* exists iff config.mlp_bias */
    AT_POSTNORM  = 1 << 7,  /* exists iff AF_POST_NORMS (Gemma 2's extra norms) */
    AT_QK_NORM   = 1 << 8,  /* exists iff AF_QK_NORM (Qwen3's per-head q / k norms) */
};

typedef struct arch_tensor {
    const char *name;      /* "layers.#.self_attn.q_proj.weight" */
    uint8_t     ndim;
    uint8_t     dim[2];    /* arch_dim each */
    uint16_t    flags;     /* AT_* */
} arch_tensor;

typedef struct arch_module {
    const char *name;      /* "layers.#.self_attn"; "" = the base model itself */
    mdl_mtype   type;
    const char *cls;       /* "%sAttention": %s = arch_desc.cls_prefix; NULL = embed_cls */
    uint16_t    flags;     /* AT_HEAD, AT_POSTNORM */
} arch_module;

typedef enum { NORM_RMS, NORM_RMS_PLUS_ONE /* x·(1+w), Gemma */, NORM_LAYER } arch_norm;

enum {
    AF_QKV_BIAS   = 1 << 0,  /* Qwen2: bias on q, k, v (not o) */
    AF_POST_NORMS = 1 << 1,  /* Gemma 2: pre/post feed-forward norms around the MLP */
    AF_EMB_SCALE  = 1 << 2,  /* Gemma: embeddings × sqrt(hidden) */
    AF_SOFTCAP    = 1 << 3,  /* Gemma 2: attention and final logit soft-caps */
    AF_SLIDING_ALT = 1 << 4, /* Gemma 2: sliding window on even layers */
    AF_CONV1D     = 1 << 5,  /* GPT-2: Conv1D weights [in, out], fused c_attn */
    AF_POST_LN    = 1 << 6,  /* BERT: LayerNorm after each residual add */
    AF_GAMMA_BETA = 1 << 7,  /* old files spell LayerNorm weight/bias gamma/beta */
    AF_TIE_DEFAULT = 1 << 8, /* tie_word_embeddings defaults to true */
    AF_ENCODER    = 1 << 9,  /* bidirectional encoder (BERT), no causal mask */
    AF_LEARNED_POS = 1 << 10,/* learned absolute positions instead of RoPE */
    AF_QK_NORM    = 1 << 11, /* Qwen3: RMSNorm over each head's q and k (head_dim), before RoPE */
    AF_DUAL_ROPE  = 1 << 12, /* Gemma 3: sliding layers have their own RoPE base; the layer
                                pattern is every sliding_window_pattern-th full */
    AF_NOPE       = 1 << 13, /* SmolLM3: layers without RoPE (no_rope_layers, else every
                                no_rope_layer_interval-th) */
    AF_FUSED_MLP  = 1 << 14, /* Phi-3: gate_up_proj, one Linear of 2·intermediate (gate, then
                                up); q, k, v from one Linear qkv_proj */
};

struct arch_desc {
    const char *name;        /* "LlamaForCausalLM" */
    const char *cls_prefix;  /* "Llama", for class names */
    const char *prefix;      /* base model attribute: "model", "transformer", "bert", "" */
    const char *alt_prefix;  /* another prefix files may carry ("bert" for BertModel) or NULL */
    const char *embed_cls;   /* class of the token embedding module */
    const char *layers;      /* the layer list, relative to the base ("layers", "h") */
    const char *embed;       /* token embedding weight, relative to the base */
    arch_norm   norm;
    const char *act;         /* default activation */
    double      eps;         /* default norm epsilon */
    unsigned    flags;       /* AF_* */
    const arch_tensor *tensors; size_t ntensors;
    const arch_module *modules; size_t nmodules;
    const char *base_cls;    /* the base model's class when not cls_prefix + "Model"
                                (Gemma3ForCausalLM's Gemma3TextModel), else NULL */
};

/* The table for architectures[0] of config.json; NULL when loupe does not know it. */
const arch_desc *arch_lookup(const char *architecture);
/* Every known architecture, for `help` and errors. */
const arch_desc *arch_at(size_t i);   /* NULL past the end */

/* Does row `flags` exist for this config? (conditional rows: AT_QKV_BIAS ...) */
int arch_row_exists(const arch_desc *a, const mdl_config *c, uint16_t flags);
/* The value of a dimension for this config. */
int64_t arch_dim_value(const mdl_config *c, arch_dim d);

/* Match `name` against `pat`, where `#` matches a decimal layer index (stored in *layer, else
 * -1). Returns 1 on a full match. */
int arch_match(const char *pat, const char *name, int *layer);

#endif
