/* forward_int.h — the compute state's layout, shared by forward.c, backward.c and migrate.c
 * only. */
#ifndef LOUPE_NN_FORWARD_INT_H
#define LOUPE_NN_FORWARD_INT_H
#include "model/arch.h"
#include "nn/forward.h"
#include "nn/migrate.h"

/* ---- roles → module names ------------------------------------------------------------------
 * Layer rows are relative to the layer ("self_attn.q_proj"); model rows to the base model or,
 * for heads, to the root. NULL: the family has no such module. */
typedef struct fw_names {
    const char *embed, *pos_embed, *type_embed, *emb_norm;
    const char *n1, *q, *k, *v, *qkv, *o, *on, *r1, *n2, *gate, *up, *down, *mn, *r2;
    const char *final_norm, *lm_head, *pooler, *classifier;
    const char *mlm_dense, *mlm_norm, *mlm_decoder, *mlm_bias;   /* BERT MLM head */
} fw_names;

/* ---- the compute state ------------------------------------------------------------------ */

typedef struct fw_lw {   /* one layer's weights, device f32; NULL when absent */
    float *n1_w, *n1_b;                  /* (C) */
    float *q_w, *q_b, *k_w, *k_b, *v_w, *v_b;   /* (Q,C) (Q) / (KV,C) (KV) */
    float *qkv_w, *qkv_b;                /* GPT-2 Conv1D (C,3C), (3C) */
    float *o_w, *o_b;                    /* (C,Q) or Conv1D (C,C) */
    float *on_w;                         /* (C) Gemma 2 post-attention norm */
    float *r1_w, *r1_b;                  /* (C) BERT attention LayerNorm */
    float *n2_w, *n2_b;                  /* (C) */
    float *gate_w, *gate_b, *up_w, *up_b;   /* (I,C) (I); Conv1D c_fc (C,I) */
    float *down_w, *down_b;              /* (C,I) (C); Conv1D (I,C) */
    float *mn_w;                         /* (C) Gemma 2 post-feedforward norm */
    float *r2_w, *r2_b;                  /* (C) BERT output LayerNorm */
    float *qn_w, *kn_w;                  /* (D) Qwen3 q_norm / k_norm (each head, before RoPE) */
} fw_lw;

/* The RoPE tables (device, in fm->acts) layer l rotates by: Gemma 3's sliding layers have
 * their own; 0 when the layer has none (learned positions, SmolLM3's NoPE layers). */
struct fw_model;
int fw_rope_tables(const struct fw_model *fm, int l, const float **cos_t, const float **sin_t);
/* RoPE (backward: its inverse) on x (N, heads·D) into out (may be x): the whole head, or with a
 * partial rotary factor its first RD values, the rest passed through; scratch holds N·heads·D
 * floats (partial only). */
void fw_rope_apply(struct fw_model *fm, float *out, const float *x, float *scratch,
                   const float *cos_t, const float *sin_t, int N, int heads, int backward);

typedef struct wreq { const mdl_tensor *t; float **slot; } wreq;

struct fw_model {
    const mdl_model *m;
    const arch_desc *a;
    const fw_names *nm;
    const be_backend *be;
    fw_info info;
    int C, H, KVH, D, Q, KV, I, V, L;
    nn_act act;
    float eps;
    int add_one;              /* Gemma (1+w) RMSNorm */
    float attn_scale, attn_softcap, final_softcap, emb_scale;
    int window;               /* sliding window of the layers config marks */
    nn_rope_config rope;
    float *inv_freq;          /* (D/2) host */
    float *inv_freq_local;    /* (D/2) host: Gemma 3's sliding layers' own RoPE, or NULL */
    float *inv_freq_long;     /* (D/2) host: LongRoPE past original_max_position, or NULL */
    int RD;                   /* rotary dims of a head: D, or D·partial_rotary_factor (Phi-4-mini);
                                 inv_freq and the tables then have RD/2 values */
    float *rope_short, *rope_long;   /* (D/2) LongRoPE's factors (fm->rope points at them) */
    /* weights */
    int loaded;
    int weights_changed;      /* the live weights were written (fw_mark_weights_changed) */
    float *wbuf;              /* one device allocation for every f32 weight */
    be_bf16 *wbuf16;          /* one for the weights stored as bf16 (be->bf16), or NULL */
    size_t n16;               /* values in wbuf16 */
    unsigned char *can16;     /* [nweights] 1: may be stored as bf16 when frozen (a Linear /
                                 Conv1D weight, the LM head, the token embedding) */
    int ckpt;                 /* gradient checkpointing (fw_set_checkpointing) */
    int q4;                   /* quantize Linear weights to 4 bits at load (fw_set_q4) */
    int dq;                   /* and their scales again (double quantization) */
    unsigned char *wbuf4;     /* one device allocation: every 4-bit weight's codes, then
                                 their scales (q4_weights.c) */
    size_t n4;                /* bytes of wbuf4's codes (the scales follow) */
    size_t b4;                /* bytes of wbuf4 */
    float *code8;             /* double quantization's dynamic map (256, in wbuf4) */
    float map8[256];          /* the same on the host: nn_dynamic_map, or a pre-quantized
                                 checkpoint's nested_quant_map */
    float *deq;               /* device f32 scratch: one dequantized 4-bit weight, then (from
                                 deq_am) its dequantized scales */
    size_t deq_cap;           /* values deq holds */
    size_t deq_am;            /* where the scales start in deq */
    size_t deq16;             /* where a bf16 copy of the weight starts in deq (in floats:
                                 the products of a device with bf16 ops, q4_weights.c) */
    float **wown;             /* [nweights] f32 copies fw_weight_f32 made of bf16 weights
                                 (allocations of their own; the bf16 values stay unused in
                                 wbuf16 until a move re-packs), else NULL */
    float *embed_w, *pos_w, *type_w, *embn_w, *embn_b;   /* (V,C) (P,C) (TV,C) (C) (C) */
    float *fin_w, *fin_b, *head_w;       /* (C) (C) (V,C) */
    float *pool_w, *pool_b, *cls_w, *cls_b;   /* (C,C) (C) (L,C) (L) */
    float *mlm_w, *mlm_b, *mlmn_w, *mlmn_b, *mlm_bias;   /* (C,C) (C) (C) (C) (V) */
    fw_lw *lw;                /* [L] */
    wreq *reqs;               /* [nreq] while loading */
    size_t nreq, capreq;
    /* activations */
    fw_acts acts;
    int have_acts;
    float *arena;             /* device, arena_cap floats */
    size_t arena_cap;
    int *iarena;              /* device ints, iarena_cap */
    size_t iarena_cap;
    float *host;              /* host scratch: rope tables (2·N·D/2) */
    size_t host_cap;
    int *ihost;               /* host int scratch (targets, positions) */
    size_t ihost_cap;
    float *last_rows;         /* (B,C) FW_LAST gather, inside the arena */
    float *ybuf[2];           /* (N,C) each: layer outputs in turn when layers share a slot */
    fw_kv *kv;                /* set while fw_step prefills or decodes */
    float *dec_probs;         /* device (H, dec_cap): probabilities of the decoded token */
    size_t dec_cap;
    /* training hooks */
    fw_weight *weights;       /* [nweights], built by fw_load_weights */
    size_t nweights;
    fw_lora **loras;          /* [nlora] attached adapters */
    size_t nlora, caplora;
    int last_flags;           /* flags of the last forward */
    int lora_oom;             /* an adapter's buffers could not be allocated */
    int dora_oom;             /* the backward's DoRA scratch could not be allocated */
    const char *oom_what;     /* with lora_oom: what had no memory (NULL: adapters' buffers) */
    float q8_threshold;       /* LLM.int8's outlier threshold (llm_int8_threshold, 6) */
    unsigned long lora_epoch; /* bumped when adapters are attached, detached, switched */
    unsigned long fwd_epoch;  /* lora_epoch at the last forward */
    fw_out last_out;          /* result of the last forward (loss, count) */
    unsigned long runs;       /* forwards so far (the backward checks it ran after one) */
    float *bw_arena;          /* backward scratch (device), bw_cap floats, grown only */
    size_t bw_cap;
    uint64_t train_draws;     /* FW_TRAIN forwards so far: the dropout seed's counter */
    float p_emb, p_attn, p_resid, p_cls;   /* the config's dropout probabilities (FW_TRAIN) */
    void *train;              /* the train module's state */
    void (*train_free)(fw_model *, void *);
    fw_train_move_fn train_move;   /* moves the train module's state (migrate.h) */
    double (*extra_loss)(fw_model *);               /* fw_set_train_hooks */
    int (*after_backward)(fw_model *, float dloss);
};

/* bf16 weights start at multiples of 8 values (16 bytes) in wbuf16, as tensor-core GEMMs
 * like their operands aligned: a weight of n values takes fw_pad16(n). */
static inline size_t fw_pad16(size_t n) { return (n + 7) & ~(size_t)7; }

/* 1 when p (a weight slot's pointer) is a bf16 weight in wbuf16. */
static inline int fw_is_half(const fw_model *fm, const void *p) {
    const char *c = p, *b = (const char *)fm->wbuf16;
    return c && b && c >= b && c < b + fm->n16 * sizeof(be_bf16);
}

/* The fused attention ops' tensor-core variant (backend.h, be_bf16_ops) for a model whose
 * frozen weights are bf16 on a backend that has it, else NULL: the backend's f32 ops. */
static inline const be_bf16_ops *fw_tc_attention(const fw_model *fm) {
    const be_bf16_ops *o = fm->be->bf16;
    return fm->wbuf16 && o && o->attention_fused_forward ? o : NULL;
}

/* The bf16 ops that take the FW_LOSS head's loss and gradient in one pass
 * (be_bf16_ops.head_loss_rows) when the LM head is a bf16 weight, else NULL. */
static inline const be_bf16_ops *fw_fused_head(const fw_model *fm) {
    const be_bf16_ops *o = fm->be->bf16;
    return o && o->head_loss_rows && o->linear_backward_rounded && fw_is_half(fm, fm->head_w)
               ? o : NULL;
}

/* The bf16 ops that take inputs and output gradients already rounded (be_bf16_ops
 * linear_forward_rounded, gated_forward_rounded, gated_backward_rounded,
 * linear_backward_rounded) for a model with bf16 weights, else NULL: products that share an
 * input (q, k, v; gate, up) round it once, the gated MLP writes its output (the down
 * product's input) and its backward its two gradients rounded as well. */
static inline const be_bf16_ops *fw_rounding(const fw_model *fm) {
    const be_bf16_ops *o = fm->be->bf16;
    return fm->wbuf16 && o && o->linear_forward_rounded && o->gated_forward_rounded &&
                   o->gated_backward_rounded && o->linear_backward_rounded
               ? o : NULL;
}

/* 1 when p (a weight slot's pointer) is a 4-bit weight's codes in wbuf4. */
static inline int fw_is_q4(const fw_model *fm, const void *p) {
    const unsigned char *c = p, *b = fm->wbuf4;
    return c && b && c >= b && c < b + fm->n4;
}

/* q4_weights.c: storage for the 4-bit weights (load_storage calls these) and their use. */
/* stored in 4 bits: when fm->q4, the weights a transformers 4-bit model quantizes, or in a
 * pre-quantized checkpoint the ones it holds in 4 bits (t->q4) */
int  fw_q4_eligible(const fw_model *fm, const fw_weight *w, const mdl_tensor *t);
size_t fw_q4_bytes(const fw_model *fm, const fw_weight *w);   /* its codes and scales */
int  fw_q4_alloc(fw_model *fm);          /* wbuf4 for the weights marked q4, and deq */
int  fw_q4_upload(fw_model *fm, const mdl_tensor *t, fw_weight *w, float *stage,
                   size_t chunk);          /* quantize t into w's codes and absmax */
void fw_q4_free(fw_model *fm);
/* fw_weight_read of a 4-bit weight: values at..at+n dequantized on the host from the blocks
 * that hold them (stats and show read a weight in many small pieces). */
int  fw_q4_read(const fw_model *fm, const fw_weight *w, size_t at, size_t n, float *host);
/* fw_weight_addmm on a 4-bit weight, as PEFT merges into bitsandbytes' 4-bit layers:
 * dequantized, added to in f32, quantized again (nn_q4_quantize). */
int  fw_q4_addmm(fw_model *fm, fw_weight *w, const float *a, const float *b, int M, int N,
                  int K, int trans_a, int trans_b, float alpha);
/* On a device with bf16 ops (be_bf16_ops): the 4-bit weight w dequantized, then rounded to
 * bf16 (bitsandbytes with compute dtype bfloat16: its dequantization writes the f32 value
 * rounded), for the bf16 products — tensor-core GEMMs with f32 sums, as any bf16 weight. */
const be_bf16 *fw_product_weight16(fw_model *fm, const float *w);
/* The f32 values a product reads for weight slot w: w itself, or for a 4-bit weight its
 * dequantization in fm->deq (valid until the next call). */
const float *fw_product_weight(fw_model *fm, const float *w);

/* Every pointer to weight `from` (the forward's slots, adapters' bases) → `to`. */
void fw_repoint(fw_model *fm, const float *from, float *to);

/* The LM head goes over its rows in chunks where a full (N,V) buffer would be too much: the
 * FW_LOSS forward and the backward, so the logits' gradient is never a full copy (8192
 * tokens of Qwen2's 151,936-word vocabulary are 5 GB of f32). A chunk is at most
 * FW_HEAD_CHUNK_BYTES (a SmolLM2 batch of 1024 × 49152 fits in one);
 * LOUPE_HEAD_CHUNK_ROWS=n sets the rows per chunk (the tests use a few). */
#define FW_HEAD_CHUNK_BYTES ((size_t)256 << 20)
int fw_head_rows(const fw_model *fm, int N);

/* One chunk of n rows of the LM head's backward: the logits' gradient for the loss's dloss
 * into dlogits, through Gemma 2's final soft-cap into dlraw (zeroed first; dlraw ==
 * dlogits without one), then dfin = dlraw·W (written). The FW_LOSS forward and the backward
 * both go through it. */
void fw_head_chunk_grad(fw_model *fm, float *dfin, float *dlogits, float *dlraw,
                        const float *logits, const float *lse, const int *targets, float dloss,
                        int count, int n);

/* The lean FW_KEEP layout did not keep layer l's n1 (pre-norm models), n2 and act: they are
 * made again from x, h, gate and up by the same ops (the same bits), into the shared buffers,
 * before the backward reads them. No-ops when the forward kept everything (FW_ALL). */
void fw_remake_attn_in(fw_model *fm, int l);   /* n1 */
/* Gradient checkpointing (fw_acts.ckpt): layer l's forward again from its kept input, into
 * the shared set, unless the set holds it already; -1 + lp_seterr when an adapter could not
 * get its activations' memory. */
int fw_remake_layer(fw_model *fm, int l);
void fw_remake_mlp_in(fw_model *fm, int l);    /* n2, act */

/* Free what the forward keeps in an adapter (h, mask, DoRA's v and g), through be. */
static inline void fw_lora_scratch_free(const be_backend *be, fw_lora *lo) {
    be->free(lo->h);
    be->free(lo->mask);
    be->free(lo->v);
    be->free(lo->g);
    lo->h = lo->mask = lo->v = lo->g = NULL;
    lo->cap_n = 0;
}

/* 1 when an enabled DoRA adapter (fw_lora.dora) is on weight slot w. */
int fw_has_dora(const fw_model *fm, const float *w);

/* The 4-bit or 8-bit weight whose codes weight slot w points at, or NULL (q4_weights.c). */
const fw_weight *fw_q4_weight(const fw_model *fm, const float *w);

/* Linear / Conv1D forward of a module with its adapters (forward.c). */
void fw_lin_fwd(fw_model *fm, float *out, const float *inp, const float *w, const float *b,
                int N, int IN, int OUT);
/* The same with inp also given rounded to bf16 (inp16, or NULL), which a bf16 weight's
 * product then takes; the adapters take inp. */
void fw_lin_fwd_r(fw_model *fm, float *out, const float *inp, const be_bf16 *inp16,
                  const float *w, const float *b, int N, int IN, int OUT);

#endif
