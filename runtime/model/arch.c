/* arch.c — the architecture tables (see arch.h). Order of rows = transformers' definition
 * order, which becomes the order of the module tree and of `layers`. */
#include "model/arch.h"
#include <string.h>

#define H  AD_HIDDEN
#define I  AD_INTER
#define V  AD_VOCAB
#define Q  AD_QDIM
#define KV AD_KVDIM

/* ---- Llama family: Llama, Mistral, Qwen2, Qwen3, SmolLM3, Gemma, Gemma 2, Gemma 3 --------- */

static const arch_tensor llama_tensors[] = {
    {"embed_tokens.weight", 2, {V, H}, 0},
    {"layers.#.self_attn.q_proj.weight", 2, {Q, H}, 0},
    {"layers.#.self_attn.q_proj.bias", 1, {Q}, AT_QKV_BIAS},
    {"layers.#.self_attn.k_proj.weight", 2, {KV, H}, 0},
    {"layers.#.self_attn.k_proj.bias", 1, {KV}, AT_QKV_BIAS},
    {"layers.#.self_attn.v_proj.weight", 2, {KV, H}, 0},
    {"layers.#.self_attn.v_proj.bias", 1, {KV}, AT_QKV_BIAS},
    {"layers.#.self_attn.o_proj.weight", 2, {H, Q}, 0},
    {"layers.#.self_attn.o_proj.bias", 1, {H}, AT_O_BIAS},
    {"layers.#.self_attn.q_norm.weight", 1, {AD_HEADDIM}, AT_QK_NORM},
    {"layers.#.self_attn.k_norm.weight", 1, {AD_HEADDIM}, AT_QK_NORM},
    {"layers.#.mlp.gate_proj.weight", 2, {I, H}, 0},
    {"layers.#.mlp.gate_proj.bias", 1, {I}, AT_MLP_BIAS},
    {"layers.#.mlp.up_proj.weight", 2, {I, H}, 0},
    {"layers.#.mlp.up_proj.bias", 1, {I}, AT_MLP_BIAS},
    {"layers.#.mlp.down_proj.weight", 2, {H, I}, 0},
    {"layers.#.mlp.down_proj.bias", 1, {H}, AT_MLP_BIAS},
    {"layers.#.input_layernorm.weight", 1, {H}, 0},
    {"layers.#.post_attention_layernorm.weight", 1, {H}, 0},
    {"layers.#.pre_feedforward_layernorm.weight", 1, {H}, AT_POSTNORM},
    {"layers.#.post_feedforward_layernorm.weight", 1, {H}, AT_POSTNORM},
    {"layers.#.self_attn.rotary_emb.inv_freq", 1, {0}, AT_BUFFER},
    {"norm.weight", 1, {H}, 0},
    {"lm_head.weight", 2, {V, H}, AT_HEAD | AT_TIED},
};

static const arch_module llama_modules[] = {
    {"", MT_MODULE, "%sModel", 0},
    {"embed_tokens", MT_EMBEDDING, NULL, 0},
    {"layers", MT_LIST, "ModuleList", 0},
    {"layers.#", MT_LAYER, "%sDecoderLayer", 0},
    {"layers.#.self_attn", MT_ATTENTION, "%sAttention", 0},
    {"layers.#.self_attn.q_proj", MT_LINEAR, "Linear", 0},
    {"layers.#.self_attn.k_proj", MT_LINEAR, "Linear", 0},
    {"layers.#.self_attn.v_proj", MT_LINEAR, "Linear", 0},
    {"layers.#.self_attn.o_proj", MT_LINEAR, "Linear", 0},
    {"layers.#.self_attn.q_norm", MT_RMSNORM, "%sRMSNorm", AT_QK_NORM},
    {"layers.#.self_attn.k_norm", MT_RMSNORM, "%sRMSNorm", AT_QK_NORM},
    {"layers.#.mlp", MT_MLP, "%sMLP", 0},
    {"layers.#.mlp.gate_proj", MT_LINEAR, "Linear", 0},
    {"layers.#.mlp.up_proj", MT_LINEAR, "Linear", 0},
    {"layers.#.mlp.down_proj", MT_LINEAR, "Linear", 0},
    {"layers.#.input_layernorm", MT_RMSNORM, "%sRMSNorm", 0},
    {"layers.#.post_attention_layernorm", MT_RMSNORM, "%sRMSNorm", 0},
    {"layers.#.pre_feedforward_layernorm", MT_RMSNORM, "%sRMSNorm", AT_POSTNORM},
    {"layers.#.post_feedforward_layernorm", MT_RMSNORM, "%sRMSNorm", AT_POSTNORM},
    {"norm", MT_RMSNORM, "%sRMSNorm", 0},
    {"lm_head", MT_LINEAR, "Linear", AT_HEAD},
};

/* ---- Phi-3: Llama with fused qkv_proj and gate_up_proj ------------------------------------ */

static const arch_tensor phi3_tensors[] = {
    {"embed_tokens.weight", 2, {V, H}, 0},
    {"layers.#.self_attn.o_proj.weight", 2, {H, Q}, 0},
    {"layers.#.self_attn.qkv_proj.weight", 2, {AD_QKVDIM, H}, 0},
    {"layers.#.mlp.gate_up_proj.weight", 2, {AD_2INTER, H}, 0},
    {"layers.#.mlp.down_proj.weight", 2, {H, I}, 0},
    {"layers.#.input_layernorm.weight", 1, {H}, 0},
    {"layers.#.post_attention_layernorm.weight", 1, {H}, 0},
    {"norm.weight", 1, {H}, 0},
    {"lm_head.weight", 2, {V, H}, AT_HEAD | AT_TIED},
};

static const arch_module phi3_modules[] = {
    {"", MT_MODULE, "%sModel", 0},
    {"embed_tokens", MT_EMBEDDING, NULL, 0},
    {"layers", MT_LIST, "ModuleList", 0},
    {"layers.#", MT_LAYER, "%sDecoderLayer", 0},
    {"layers.#.self_attn", MT_ATTENTION, "%sAttention", 0},
    {"layers.#.self_attn.o_proj", MT_LINEAR, "Linear", 0},
    {"layers.#.self_attn.qkv_proj", MT_LINEAR, "Linear", 0},
    {"layers.#.mlp", MT_MLP, "%sMLP", 0},
    {"layers.#.mlp.gate_up_proj", MT_LINEAR, "Linear", 0},
    {"layers.#.mlp.down_proj", MT_LINEAR, "Linear", 0},
    {"layers.#.input_layernorm", MT_RMSNORM, "%sRMSNorm", 0},
    {"layers.#.post_attention_layernorm", MT_RMSNORM, "%sRMSNorm", 0},
    {"norm", MT_RMSNORM, "%sRMSNorm", 0},
    {"lm_head", MT_LINEAR, "Linear", AT_HEAD},
};

/* ---- GPT-2 --------------------------------------------------------------------------------- */

static const arch_tensor gpt2_tensors[] = {
    {"wte.weight", 2, {V, H}, 0},
    {"wpe.weight", 2, {AD_POS, H}, 0},
    {"h.#.ln_1.weight", 1, {H}, 0},
    {"h.#.ln_1.bias", 1, {H}, 0},
    {"h.#.attn.c_attn.weight", 2, {H, AD_3HIDDEN}, 0},   /* Conv1D: [in, out] */
    {"h.#.attn.c_attn.bias", 1, {AD_3HIDDEN}, 0},
    {"h.#.attn.c_proj.weight", 2, {H, H}, 0},
    {"h.#.attn.c_proj.bias", 1, {H}, 0},
    {"h.#.attn.bias", 0, {0}, AT_BUFFER},         /* causal mask, old files */
    {"h.#.attn.masked_bias", 0, {0}, AT_BUFFER},
    {"h.#.ln_2.weight", 1, {H}, 0},
    {"h.#.ln_2.bias", 1, {H}, 0},
    {"h.#.mlp.c_fc.weight", 2, {H, I}, 0},
    {"h.#.mlp.c_fc.bias", 1, {I}, 0},
    {"h.#.mlp.c_proj.weight", 2, {I, H}, 0},
    {"h.#.mlp.c_proj.bias", 1, {H}, 0},
    {"ln_f.weight", 1, {H}, 0},
    {"ln_f.bias", 1, {H}, 0},
    {"lm_head.weight", 2, {V, H}, AT_HEAD | AT_TIED},
};

static const arch_module gpt2_modules[] = {
    {"", MT_MODULE, "GPT2Model", 0},
    {"wte", MT_EMBEDDING, "Embedding", 0},
    {"wpe", MT_EMBEDDING, "Embedding", 0},
    {"h", MT_LIST, "ModuleList", 0},
    {"h.#", MT_LAYER, "GPT2Block", 0},
    {"h.#.ln_1", MT_LAYERNORM, "LayerNorm", 0},
    {"h.#.attn", MT_ATTENTION, "GPT2Attention", 0},
    {"h.#.attn.c_attn", MT_CONV1D, "Conv1D", 0},
    {"h.#.attn.c_proj", MT_CONV1D, "Conv1D", 0},
    {"h.#.ln_2", MT_LAYERNORM, "LayerNorm", 0},
    {"h.#.mlp", MT_MLP, "GPT2MLP", 0},
    {"h.#.mlp.c_fc", MT_CONV1D, "Conv1D", 0},
    {"h.#.mlp.c_proj", MT_CONV1D, "Conv1D", 0},
    {"ln_f", MT_LAYERNORM, "LayerNorm", 0},
    {"lm_head", MT_LINEAR, "Linear", AT_HEAD},
};

/* ---- BERT ---------------------------------------------------------------------------------- */

#define BERT_LINEAR(p, o, i) {p ".weight", 2, {o, i}, 0}, {p ".bias", 1, {o}, 0}
#define BERT_LN(p) {p ".weight", 1, {H}, 0}, {p ".bias", 1, {H}, 0}
/* Embeddings and encoder: every BERT head has them under `bert.`. */
#define BERT_BASE_TENSORS \
    {"embeddings.word_embeddings.weight", 2, {V, H}, 0}, \
    {"embeddings.position_embeddings.weight", 2, {AD_POS, H}, 0}, \
    {"embeddings.token_type_embeddings.weight", 2, {AD_TYPES, H}, 0}, \
    BERT_LN("embeddings.LayerNorm"), \
    {"embeddings.position_ids", 0, {0}, AT_BUFFER}, \
    {"embeddings.token_type_ids", 0, {0}, AT_BUFFER}, \
    BERT_LINEAR("encoder.layer.#.attention.self.query", H, H), \
    BERT_LINEAR("encoder.layer.#.attention.self.key", H, H), \
    BERT_LINEAR("encoder.layer.#.attention.self.value", H, H), \
    BERT_LINEAR("encoder.layer.#.attention.output.dense", H, H), \
    BERT_LN("encoder.layer.#.attention.output.LayerNorm"), \
    BERT_LINEAR("encoder.layer.#.intermediate.dense", I, H), \
    BERT_LINEAR("encoder.layer.#.output.dense", H, I), \
    BERT_LN("encoder.layer.#.output.LayerNorm")

static const arch_tensor bert_tensors[] = {
    BERT_BASE_TENSORS,
    {"pooler.dense.weight", 2, {H, H}, AT_OPTIONAL},
    {"pooler.dense.bias", 1, {H}, AT_OPTIONAL},
    {"classifier.weight", 2, {AD_LABELS, H}, AT_HEAD},
    {"classifier.bias", 1, {AD_LABELS}, AT_HEAD},
};

/* BertForMaskedLM (bert-base-cased and friends): no pooler; the pre-training checkpoints
 * still carry it and the next-sentence head, which transformers drops, and so does loupe. */
static const arch_tensor bert_mlm_tensors[] = {
    BERT_BASE_TENSORS,
    {"pooler.dense.weight", 0, {0}, AT_BUFFER},
    {"pooler.dense.bias", 0, {0}, AT_BUFFER},
    {"cls.predictions.bias", 1, {V}, AT_HEAD},
    {"cls.predictions.transform.dense.weight", 2, {H, H}, AT_HEAD},
    {"cls.predictions.transform.dense.bias", 1, {H}, AT_HEAD},
    {"cls.predictions.transform.LayerNorm.weight", 1, {H}, AT_HEAD},
    {"cls.predictions.transform.LayerNorm.bias", 1, {H}, AT_HEAD},
    {"cls.predictions.decoder.weight", 2, {V, H}, AT_HEAD | AT_TIED},
    {"cls.predictions.decoder.bias", 0, {0}, AT_HEAD | AT_BUFFER},   /* = cls.predictions.bias */
    {"cls.seq_relationship.weight", 0, {0}, AT_HEAD | AT_BUFFER},
    {"cls.seq_relationship.bias", 0, {0}, AT_HEAD | AT_BUFFER},
};

static const arch_module bert_modules[] = {
    {"", MT_MODULE, "BertModel", 0},
    {"embeddings", MT_EMBEDDINGS, "BertEmbeddings", 0},
    {"embeddings.word_embeddings", MT_EMBEDDING, "Embedding", 0},
    {"embeddings.position_embeddings", MT_EMBEDDING, "Embedding", 0},
    {"embeddings.token_type_embeddings", MT_EMBEDDING, "Embedding", 0},
    {"embeddings.LayerNorm", MT_LAYERNORM, "LayerNorm", 0},
    {"encoder", MT_MODULE, "BertEncoder", 0},
    {"encoder.layer", MT_LIST, "ModuleList", 0},
    {"encoder.layer.#", MT_LAYER, "BertLayer", 0},
    {"encoder.layer.#.attention", MT_ATTENTION, "BertAttention", 0},
    {"encoder.layer.#.attention.self", MT_ATTENTION, "BertSelfAttention", 0},
    {"encoder.layer.#.attention.self.query", MT_LINEAR, "Linear", 0},
    {"encoder.layer.#.attention.self.key", MT_LINEAR, "Linear", 0},
    {"encoder.layer.#.attention.self.value", MT_LINEAR, "Linear", 0},
    {"encoder.layer.#.attention.output", MT_MODULE, "BertSelfOutput", 0},
    {"encoder.layer.#.attention.output.dense", MT_LINEAR, "Linear", 0},
    {"encoder.layer.#.attention.output.LayerNorm", MT_LAYERNORM, "LayerNorm", 0},
    {"encoder.layer.#.intermediate", MT_MLP, "BertIntermediate", 0},
    {"encoder.layer.#.intermediate.dense", MT_LINEAR, "Linear", 0},
    {"encoder.layer.#.output", MT_MODULE, "BertOutput", 0},
    {"encoder.layer.#.output.dense", MT_LINEAR, "Linear", 0},
    {"encoder.layer.#.output.LayerNorm", MT_LAYERNORM, "LayerNorm", 0},
    {"pooler", MT_MODULE, "BertPooler", 0},
    {"pooler.dense", MT_LINEAR, "Linear", 0},
    {"classifier", MT_LINEAR, "Linear", AT_HEAD},
    {"cls", MT_MODULE, "BertOnlyMLMHead", AT_HEAD},
    {"cls.predictions", MT_MODULE, "BertLMPredictionHead", AT_HEAD},
    {"cls.predictions.transform", MT_MODULE, "BertPredictionHeadTransform", AT_HEAD},
    {"cls.predictions.transform.dense", MT_LINEAR, "Linear", AT_HEAD},
    {"cls.predictions.transform.LayerNorm", MT_LAYERNORM, "LayerNorm", AT_HEAD},
    {"cls.predictions.decoder", MT_LINEAR, "Linear", AT_HEAD},
};

#define TABLES(t, m) t, sizeof t / sizeof t[0], m, sizeof m / sizeof m[0], NULL
#define TABLES_BASE(t, m, base) t, sizeof t / sizeof t[0], m, sizeof m / sizeof m[0], base

static const arch_desc archs[] = {
    {"LlamaForCausalLM", "Llama", "model", NULL, "Embedding", "layers", "embed_tokens.weight",
     NORM_RMS, "silu", 1e-6, 0, TABLES(llama_tensors, llama_modules)},
    {"MistralForCausalLM", "Mistral", "model", NULL, "Embedding", "layers", "embed_tokens.weight",
     NORM_RMS, "silu", 1e-6, 0, TABLES(llama_tensors, llama_modules)},
    {"Qwen2ForCausalLM", "Qwen2", "model", NULL, "Embedding", "layers", "embed_tokens.weight",
     NORM_RMS, "silu", 1e-6, AF_QKV_BIAS, TABLES(llama_tensors, llama_modules)},
    {"Qwen3ForCausalLM", "Qwen3", "model", NULL, "Embedding", "layers", "embed_tokens.weight",
     NORM_RMS, "silu", 1e-6, AF_QK_NORM, TABLES(llama_tensors, llama_modules)},
    {"SmolLM3ForCausalLM", "SmolLM3", "model", NULL, "Embedding", "layers", "embed_tokens.weight",
     NORM_RMS, "silu", 1e-6, AF_TIE_DEFAULT | AF_NOPE, TABLES(llama_tensors, llama_modules)},
    {"Phi3ForCausalLM", "Phi3", "model", NULL, "Embedding", "layers", "embed_tokens.weight",
     NORM_RMS, "silu", 1e-5, AF_FUSED_MLP, TABLES(phi3_tensors, phi3_modules)},
    {"GemmaForCausalLM", "Gemma", "model", NULL, "GemmaTextScaledWordEmbedding", "layers",
     "embed_tokens.weight", NORM_RMS_PLUS_ONE, "gelu_pytorch_tanh", 1e-6,
     AF_EMB_SCALE | AF_TIE_DEFAULT, TABLES(llama_tensors, llama_modules)},
    {"Gemma2ForCausalLM", "Gemma2", "model", NULL, "Gemma2TextScaledWordEmbedding", "layers",
     "embed_tokens.weight", NORM_RMS_PLUS_ONE, "gelu_pytorch_tanh", 1e-6,
     AF_EMB_SCALE | AF_TIE_DEFAULT | AF_POST_NORMS | AF_SOFTCAP | AF_SLIDING_ALT,
     TABLES(llama_tensors, llama_modules)},
    {"Gemma3ForCausalLM", "Gemma3", "model", NULL, "Gemma3TextScaledWordEmbedding", "layers",
     "embed_tokens.weight", NORM_RMS_PLUS_ONE, "gelu_pytorch_tanh", 1e-6,
     AF_EMB_SCALE | AF_TIE_DEFAULT | AF_POST_NORMS | AF_SOFTCAP | AF_QK_NORM | AF_DUAL_ROPE,
     TABLES_BASE(llama_tensors, llama_modules, "Gemma3TextModel")},
    {"GPT2LMHeadModel", "GPT2", "transformer", NULL, "Embedding", "h", "wte.weight", NORM_LAYER,
     "gelu_new", 1e-5, AF_CONV1D | AF_TIE_DEFAULT | AF_LEARNED_POS,
     TABLES(gpt2_tensors, gpt2_modules)},
    {"BertForSequenceClassification", "Bert", "bert", NULL, "Embedding", "encoder.layer",
     "embeddings.word_embeddings.weight", NORM_LAYER, "gelu", 1e-12,
     AF_POST_LN | AF_GAMMA_BETA | AF_ENCODER | AF_LEARNED_POS, TABLES(bert_tensors, bert_modules)},
    {"BertForMaskedLM", "Bert", "bert", NULL, "Embedding", "encoder.layer",
     "embeddings.word_embeddings.weight", NORM_LAYER, "gelu", 1e-12,
     AF_POST_LN | AF_GAMMA_BETA | AF_ENCODER | AF_LEARNED_POS | AF_TIE_DEFAULT,
     TABLES(bert_mlm_tensors, bert_modules)},
    /* BertModel: the base model is the root; files saved from BertFor* carry `bert.`. */
    {"BertModel", "Bert", "", "bert", "Embedding", "encoder.layer",
     "embeddings.word_embeddings.weight", NORM_LAYER, "gelu", 1e-12,
     AF_POST_LN | AF_GAMMA_BETA | AF_ENCODER | AF_LEARNED_POS, TABLES(bert_tensors, bert_modules)},
};

const arch_desc *arch_lookup(const char *architecture) {
    if (!architecture) return NULL;
    for (size_t i = 0; i < sizeof archs / sizeof archs[0]; i++)
        if (strcmp(archs[i].name, architecture) == 0) return &archs[i];
    return NULL;
}

const arch_desc *arch_at(size_t i) {
    return i < sizeof archs / sizeof archs[0] ? &archs[i] : NULL;
}

int arch_row_exists(const arch_desc *a, const mdl_config *c, uint16_t flags) {
    if ((flags & AT_HEAD) && a->prefix[0] == 0 && (flags & ~AT_HEAD) == 0)
        return 0;   /* BertModel has no head: its rows flagged only AT_HEAD do not exist */
    if (flags & AT_QKV_BIAS) return c->attention_bias || (a->flags & AF_QKV_BIAS);
    if (flags & AT_O_BIAS) return c->attention_bias && !(a->flags & AF_QKV_BIAS);
    if (flags & AT_MLP_BIAS) return c->mlp_bias;
    if (flags & AT_POSTNORM) return (a->flags & AF_POST_NORMS) != 0;
    if (flags & AT_QK_NORM) return (a->flags & AF_QK_NORM) != 0;
    return 1;
}

int64_t arch_dim_value(const mdl_config *c, arch_dim d) {
    switch (d) {
    case AD_HIDDEN: return c->hidden_size;
    case AD_INTER: return c->intermediate_size;
    case AD_VOCAB: return c->vocab_size;
    case AD_QDIM: return c->num_attention_heads * c->head_dim;
    case AD_KVDIM: return c->num_key_value_heads * c->head_dim;
    case AD_POS: return c->n_positions ? c->n_positions : c->max_position_embeddings;
    case AD_TYPES: return c->type_vocab_size;
    case AD_LABELS: return c->num_labels;
    case AD_3HIDDEN: return 3 * c->hidden_size;
    case AD_HEADDIM: return c->head_dim;
    case AD_QKVDIM: return (c->num_attention_heads + 2 * c->num_key_value_heads) * c->head_dim;
    case AD_2INTER: return 2 * c->intermediate_size;
    }
    return 0;
}

int arch_match(const char *pat, const char *name, int *layer) {
    *layer = -1;
    while (*pat) {
        if (*pat == '#') {
            if (*name < '0' || *name > '9') return 0;
            long v = 0;
            while (*name >= '0' && *name <= '9') {
                v = v * 10 + (*name++ - '0');
                if (v > 1000000) return 0;
            }
            *layer = (int)v;
            pat++;
        } else if (*pat++ != *name++) {
            return 0;
        }
    }
    return *name == 0;
}
