/* forward.h — a model's forward pass: token ids → logits (and loss), for every architecture
 * in the arch tables, through a compute backend.
 *
 *   fw_model *fm = fw_new(m, be_cpu());        // NULL + lp_seterr for an unknown architecture
 *   int32_t ids[2*5] = {...}, mask[2*5] = {...}, labels[2*5] = {...};
 *   fw_batch in = { .B = 2, .T = 5, .ids = ids, .mask = mask, .labels = labels };
 *   fw_out out;
 *   if (fw_forward(fm, &in, &out) < 0) show(lp_geterr());
 *   out.logits (device pointer, (B,T,V)), out.loss, out.count
 *   fw_free(fm);
 *
 * One readable function per layer kind (decoder layer with pre-norms, BERT's post-norm encoder
 * layer), and flags from the arch table (arch.h) choose the norm, biases, activation, gating,
 * soft-caps, sliding windows, embedding scale, learned positions. Nothing here tests an
 * architecture's name.
 *
 * Numbers follow transformers (f32 eager path):
 *  - Position ids are 0..T-1 for every row, also with left padding: that is what transformers'
 *    forward does when called without position_ids (LlamaModel / GPT2Model / BertEmbeddings).
 *    generate() in transformers uses cumsum(mask)-1 instead; fw_batch.pos lets a caller pass
 *    its own ids (generate.c does for its cache).
 *  - The attention mask hides padded keys; a padded query under a causal mask sees nothing and
 *    gets zeros (docs/compute.md, "Padding queries"): its logits are not transformers'.
 *  - Causal LM loss: mean cross-entropy of logits row t against labels[t+1] (−100 ignored),
 *    transformers' ForCausalLMLoss. Masked LM (BertForMaskedLM): row t against labels[t], no
 *    shift. Sequence classification (BERT): labels (B), loss over num_labels classes.
 *
 * Weights are widened to f32 once, on the first forward, into one backend allocation kept by
 * the fw_model; on a backend with bf16 weight storage (backend.h, be_bf16_ops: CUDA with
 * LOUPE_CUDA_BF16=1) the Linear / Conv1D weights, the LM head and the token embedding go into
 * a second, bf16 one instead (rounded to nearest even; exact for bf16 checkpoints), and the
 * products with them are the backend's bf16 ops. Trainable weights are always f32. Activations live in an arena
 * sized for (B, T) and reused while the shape does not grow. What the forward keeps for the
 * backward is fw_layer_acts below (docs/compute.md, "Model forward: what is kept").
 *
 * Threads: a fw_model is used by one thread at a time. */
#ifndef LOUPE_NN_FORWARD_H
#define LOUPE_NN_FORWARD_H
#include <stddef.h>
#include <stdint.h>

#include "backend/backend.h"
#include "model/model.h"

/* What one layer's forward keeps, every pointer a device pointer into the arena; N = B·T,
 * C hidden, Q = heads·head_dim, KV = kv_heads·head_dim, I intermediate. A slot the layer
 * kind does not use is NULL. Pre-norm decoder layer (Llama, Gemma, GPT-2):
 *
 *   n1 = norm1(x)                q, k, v = proj(n1), RoPE on q, k       att = attention(q,k,v)
 *   o = o_proj(att)              [Gemma 2: o = post_attention_norm(o)]  h = x + o
 *   n2 = norm2(h)                gate, up = proj(n2); act = act(gate)·up   (GPT-2: act = act(fc))
 *   m = down(act)                [Gemma 2: m = post_feedforward_norm(m)]   y = h + m
 *
 * BERT (post-norm): q, k, v = proj(x); o = dense(att); r1 = x + o; h = LN(r1);
 * gate = intermediate(h); act = gelu(gate); m = dense(act); r2 = h + m; y = LN(r2). */
typedef struct fw_layer_acts {
    float *x;                  /* (N,C) layer input (owned by the previous layer: its y) */
    float *n1;                 /* (N,C) input of q/k/v (pre-norm models) */
    float *n1_mean, *n1_rstd;  /* (N) norm statistics (mean: LayerNorm only) */
    float *qkv;                /* (N,3C) GPT-2's fused c_attn output (q, k, v sliced out) */
    float *q;                  /* (N,Q) after RoPE */
    float *k, *v;              /* (N,KV) k after RoPE */
    float *q_raw, *k_raw;      /* (N,Q) (N,KV) Qwen3: q_proj / k_proj output, before q_norm /
                                  k_norm (each head's D values one row) */
    float *qn_rstd, *kn_rstd;  /* (N·H) (N·KVH) those norms' rstd */
    float *probs;              /* (B,H,T,T) attention probabilities, or NULL when the
                                  backend's fused attention ran (backend.h) */
    float *lse;                /* (B,H,T) the fused attention's log-sum-exp, or NULL */
    float *att;                /* (N,Q) attention output = input of o_proj */
    float *o_raw;              /* (N,C) o_proj output before Gemma 2's post-attention norm */
    float *o_rstd;             /* (N) that norm's rstd */
    float *o;                  /* (N,C) what is added to the residual */
    float *r1;                 /* (N,C) BERT: x + o, input of the attention LayerNorm */
    float *r1_mean, *r1_rstd;  /* (N) */
    float *h;                  /* (N,C) residual stream after the attention block */
    float *n2;                 /* (N,C) MLP input (pre-norm models) */
    float *n2_mean, *n2_rstd;  /* (N) */
    float *gate;               /* (N,I) gate_proj / c_fc / intermediate.dense output
                                  (pre-activation) */
    float *up;                 /* (N,I) up_proj output (gated MLPs) */
    float *gu;                 /* (N,2I) Phi-3's gate_up_proj output (gate, then up) */
    float *act;                /* (N,I) input of down_proj / c_proj / output.dense */
    float *m_raw;              /* (N,C) down output before Gemma 2's post-feedforward norm */
    float *m_rstd;             /* (N) */
    float *m;                  /* (N,C) what is added to the residual */
    float *r2;                 /* (N,C) BERT: h + m, input of the output LayerNorm */
    float *r2_mean, *r2_rstd;  /* (N) */
    float *y;                  /* (N,C) layer output = next layer's x */
    /* training-mode dropout masks (values 0 or 1/(1-p)), NULL when not drawn: o and m are
       stored after their mask (GPT-2's resid_pdrop, BERT's hidden_dropout_prob); probs is
       before its mask (attn_pdrop, attention_probs_dropout_prob, Llama's attention_dropout) */
    float *attn_drop;          /* (B,H,T,T) */
    float *o_drop, *m_drop;    /* (N,C) */
} fw_layer_acts;

/* The whole forward's state (valid until the next fw_forward on the same model). */
typedef struct fw_acts {
    int B, T, N;               /* N = B·T */
    int keep;                  /* 1: one fw_layer_acts per layer; 0: layers share one set */
    float *emb;                /* (N,C) embeddings (after Gemma's scale, BERT's LayerNorm) */
    float *emb_sum;            /* (N,C) BERT: word + position + type, input of its LayerNorm */
    float *emb_mean, *emb_rstd;/* (N) BERT embedding LayerNorm */
    fw_layer_acts *layers;     /* [num_layers] (keep) or [1] */
    float *head_pre, *head_act;/* (R,C) BERT MLM transform: dense output, gelu output */
    float *fin;                /* (R,C) final norm output = lm_head input (decoders; BERT
                                  MLM: the transform's LayerNorm output) */
    float *fin_mean, *fin_rstd;/* (N) */
    float *pooled_in;          /* (B,C) BERT: hidden state of token 0 of each row */
    float *pooled_pre;         /* (B,C) pooler dense output before tanh */
    float *pooled;             /* (B,C) tanh output = classifier input */
    float *logits_raw;         /* (R,V) lm_head output before Gemma 2's final soft-cap */
    float *logits;             /* (R,V) logits; R = N, or B with FW_LAST; classifier (B,L) */
    float *lse;                /* (R) log-sum-exp kept by the loss */
    float *dfin;               /* FW_LOSS: (N,C) d(loss)/d(fin) for dloss = 1, else NULL;
                                  logits, logits_raw are then one chunk of rows (scratch) */
    float *dlogits;            /* FW_LOSS: one chunk's logit gradient (scratch) */
    float *rowloss;            /* FW_LOSS: (N) each row's loss, read back once a batch */
    void *in16;                /* (N, max(C,I)) bf16: a norm output rounded once for the
                                  bf16 products that share it (round_shared), then the MLP's
                                  act rounded for the down product; or NULL */
    int lean;                  /* FW_KEEP without FW_ALL: n1, n2, act, o, m, qkv shared */
    int ckpt;                  /* gradient checkpointing (fw_set_checkpointing) in a FW_KEEP
                                  forward without FW_ALL / FW_PROBS: every layer's state but
                                  its x, y and dropout masks in one set all layers share,
                                  made again by the backward (fw_remake_layer) */
    int held;                  /* ckpt: the layer whose state the shared set holds */
    int   *targets;            /* (R) shifted labels the loss used (device ints) */
    int   *ids, *mask, *pos, *types;   /* (N) device copies of the inputs */
    float *rope_cos, *rope_sin;/* (N, D/2) */
    float *rope_cos_l, *rope_sin_l;   /* (N, D/2) Gemma 3's sliding layers' own, or NULL */
    float *emb_drop;           /* (N,C) dropout mask on emb (embd_pdrop, BERT hidden) or NULL */
    float *pool_drop;          /* (B,C) BERT classifier dropout on pooled, or NULL */
} fw_acts;

enum {
    FW_KEEP = 1 << 0,   /* keep every layer's state (backward, `activations`, `attention`) */
    FW_LAST = 1 << 1,   /* logits only for the last position of each row (generation) */
    FW_TRAIN = 1 << 2,  /* training mode (model.train()): LoRA dropout and the model's own
                           (GPT-2: embd/attn/resid_pdrop; BERT: hidden_dropout_prob,
                           attention_probs_dropout_prob, classifier_dropout; Llama family:
                           attention_dropout) are drawn, fresh masks each forward, kept for
                           the backward */
    FW_PROBS = 1 << 3,  /* keep the attention probabilities (`attention`'s heat map): the
                           materialised attention even where the backend has a fused one */
    FW_ALL = 1 << 4,    /* with FW_KEEP: every tensor of every layer (`activations`). Without
                           it FW_KEEP keeps what the backward reads: the norm outputs n1, n2,
                           the MLP hidden act, the block outputs o, m and GPT-2's qkv are one
                           set of buffers all layers share (the backward makes n1, n2 and act
                           again, bit for bit, from the kept x, h, gate, up) */
    FW_LOSS = 1 << 5,   /* with FW_KEEP and labels on a causal / masked LM whose head does not
                           train: only the loss is wanted (`train`). The head runs over chunks
                           of rows, each chunk's logits giving its loss terms and, at once,
                           d(loss)/d(head input) (fw_acts.dfin), so no (N,V) logits are kept:
                           out.logits is NULL. Ignored where it does not apply */
};

typedef struct fw_batch {
    int B, T;
    const int32_t *ids;       /* (B,T) host */
    const int32_t *mask;      /* (B,T) 1 = token, 0 = padding; NULL: all tokens */
    const int32_t *types;     /* (B,T) token types (BERT); NULL: zeros */
    const int32_t *pos;       /* (B,T) position ids; NULL: 0..T-1 in every row */
    const int32_t *labels;    /* causal LM: (B,T), −100 ignored; classifier: (B); or NULL */
    int flags;                /* FW_KEEP, FW_LAST, FW_TRAIN, FW_PROBS, FW_ALL, FW_LOSS */
} fw_batch;

typedef enum { FW_OUT_LM, FW_OUT_CLASSES, FW_OUT_HIDDEN } fw_out_kind;

typedef struct fw_out {
    fw_out_kind kind;   /* LM: logits over the vocabulary; CLASSES: BERT classifier;
                           HIDDEN: BertModel's last hidden state */
    const float *logits;   /* device (R,V): R = B·T (LM), B (CLASSES, FW_LAST), B·T (HIDDEN) */
    int R, V;
    int has_loss;       /* labels were given */
    float loss;         /* mean cross-entropy over `count` targets (0 when count is 0) */
    int count;
} fw_out;

typedef struct fw_model fw_model;

/* Compute state for m (borrowed: it must outlive the fw_model). NULL + lp_seterr when m has no
 * known architecture ("no compute for an unknown architecture; inspection only") or its
 * config has no compute meaning (an activation or rope type loupe lacks). Weights are not read
 * yet. */
fw_model *fw_new(const mdl_model *m, const be_backend *be);
void      fw_free(fw_model *fm);

/* Load every weight the forward uses onto the device, widened to f32 or, where the backend
 * stores bf16, as bf16 (done by the first fw_forward otherwise). -1 + lp_seterr when a tensor
 * is missing or has no f32 meaning, or device memory runs out. */
int fw_load_weights(fw_model *fm);

/* Run the model. 0, or -1 + lp_seterr for: an empty batch, T over max_position_embeddings,
 * an id outside the vocabulary, a label outside it, a missing weight, out of memory (also an
 * op that could not get device scratch: be_backend.op_failed; the forward's outputs are then
 * not kept, and nothing the model owns besides them changed). */
int fw_forward(fw_model *fm, const fw_batch *in, fw_out *out);

/* The state of the last forward (NULL before one). */
const fw_acts *fw_last_acts(const fw_model *fm);

/* Model facts used by callers (generate, commands). */
typedef struct fw_info {
    int layers, hidden, heads, kv_heads, head_dim, inter, vocab, max_pos;
    int causal;          /* 0 for encoders */
    int mlm;             /* BertForMaskedLM: logits over the vocabulary, loss without shift */
    int out_kind;        /* fw_out_kind of a forward */
    int num_labels;
} fw_info;
const fw_info *fw_model_info(const fw_model *fm);
const be_backend *fw_backend(const fw_model *fm);
const mdl_model *fw_mdl(const fw_model *fm);

/* ---- training hooks (runtime/train, nn/backward.c) ------------------------------------------
 * Every weight the forward reads, once (a tied lm_head is the embedding's entry), in model
 * order, with a gradient slot: NULL = frozen (no dW is computed), else a device (numel)
 * buffer the backward adds into. The train module (train/params.c) sets `grad`. */
typedef enum { FW_W_OTHER = 0, FW_W_LINEAR, FW_W_CONV1D } fw_wkind;

typedef struct fw_weight {
    const char *name;     /* canonical HF name ("model.layers.0.self_attn.q_proj.weight") */
    float *data;          /* device f32 (numel), the live weight; when `half`, it points at
                             numel be_bf16 instead (the weight's identity for adapters and
                             gradient lookups all the same): read it with fw_weight_read */
    float *grad;          /* device f32 (numel) or NULL (frozen); from be->alloc, freed by
                             fw_free (or by whoever clears the slot) */
    size_t numel;
    int rows, cols;       /* 2-D shape as stored (vectors: numel × 1) */
    fw_wkind kind;        /* the module's kind, for `.weight` of Linear / Conv1D */
    int in, out;          /* Linear / Conv1D features */
    int is_head;          /* the output layer (lm_head, classifier, MLM decoder): PEFT's
                             "all-linear" leaves it out */
    int adaptable;        /* a LoRA hook runs after it (every Linear / Conv1D but lm_head and
                             BERT's MLM decoder) */
    int half;             /* stored as bf16 (frozen; see the top of this file) */
    int q4;               /* stored in 4 bits (fw_set_q4): data points at its packed codes */
    const float *absmax;  /* its block scales (device); with double quantization NULL, and: */
    const uint8_t *qabsmax;   /* the scales' 8-bit indices into the dynamic map (device) */
    const float *absmax2;     /* one scale per 256 of them (device) */
    float offset;             /* their mean, added back */
} fw_weight;

/* QLoRA's storage: type NN_Q4_NF4 or NN_Q4_FP4 (nn/ops.h; 0 = none) before the weights load
 * quantizes every Linear and Conv1D weight but the output layer's to 4 bits (blocks of 64,
 * bitsandbytes' layout and rounding), as transformers' BitsAndBytesConfig(load_in_4bit=True,
 * bnb_4bit_quant_type=…) does; double_quant quantizes the block scales again
 * (bnb_4bit_use_double_quant). The products dequantize a weight at a time into one f32
 * scratch (bitsandbytes with compute dtype float32). Such weights are frozen: they cannot be
 * unfrozen or saved (merging re-quantizes). A Conv1D weight is stored transposed, as
 * transformers does (q4_weights.c). -1 + lp_seterr once the weights are loaded with another
 * setting. */
#define FW_Q4_BLOCK 64
/* NN_Q8 is LLM.int8 (load_in_8bit, bitsandbytes' Linear8bitLt): one int8 code a weight and an
 * f32 scale a row, the same weights; its forward product is MatMul8bitLt's (nn_q8_linear_forward,
 * with fw_set_q8_threshold's outlier threshold), its backward multiplies the dequantized
 * weight, as bitsandbytes'. No double quantization. */
int fw_set_q4(fw_model *fm, int type, int double_quant);

/* Gradient checkpointing (transformers' gradient_checkpointing_enable, TrainingArguments
 * gradient_checkpointing=True): a training forward keeps only each layer's input and output
 * (and its dropout masks); the backward runs each layer's forward again, from its input,
 * just before that layer's backward. The same ops on the same inputs: the same gradients,
 * for one more forward's time and a layer's activations instead of all of them. Takes effect
 * at the next forward. */
void fw_set_checkpointing(fw_model *fm, int on);
int fw_checkpointing(const fw_model *fm);
int fw_q4_type(const fw_model *fm);     /* 0, NN_Q4_NF4, NN_Q4_FP4, NN_Q8 */
/* LLM.int8's outlier threshold (llm_int8_threshold; 6 by default, 0: none), -1 + lp_seterr
 * for a negative one. */
int   fw_set_q8_threshold(fw_model *fm, float threshold);
float fw_q8_threshold(const fw_model *fm);
int fw_q4_double(const fw_model *fm);

/* The weights (loaded first if needed). -1 + lp_seterr when loading fails. The array is owned
 * by fm and stable until fw_free. */
int fw_weights(fw_model *fm, fw_weight **w, size_t *n);

/* The weights if they are loaded already (else 0 and NULL): loads nothing. */
size_t fw_loaded_weights(const fw_model *fm, const fw_weight **w);

/* n values of w from element `at`, as f32, into host memory (widened when w is bf16). -1 +
 * lp_seterr when host memory runs out. */
int fw_weight_read(const fw_model *fm, const fw_weight *w, size_t at, size_t n, float *host);

/* Make a bf16 weight f32 (a master copy, widened exactly, in an allocation of its own) before
 * it gets a gradient or is written in place: w->data and every slot pointing at it change.
 * 0 (nothing to do for an f32 weight), or -1 + lp_seterr (out of device memory). */
int fw_weight_f32(fw_model *fm, fw_weight *w);

/* W += alpha·op(a)·op(b) (matmul's conventions, W (M,N) f32 device) on a live weight, whatever
 * its storage: a bf16 weight is widened, added to in f32 and rounded back to bf16 once, as
 * PEFT merges into a bf16 model (so an unmerge does not give back the exact bits). -1 +
 * lp_seterr when the f32 scratch cannot be had. */
int fw_weight_addmm(fw_model *fm, fw_weight *w, const float *a, const float *b, int M, int N,
                    int K, int trans_a, int trans_b, float alpha);

/* W ⊙ l for a vector l (device, len values) on a live weight, whatever its storage, as PEFT
 * merges IA3: by_row: element i × l[i / (numel/len)] (row-wise), else × l[i % len]
 * (column-wise); divide: W / (l + 1e-8), PEFT's unmerge. -1 + lp_seterr on OOM. */
int fw_weight_scale(fw_model *fm, fw_weight *w, const float *l, size_t len, int by_row,
                    int divide);

/* Bytes of device memory the weights take (f32 and bf16 storage, fw_weight_f32 copies). */
size_t fw_weight_bytes(const fw_model *fm);

/* The gradient slot of a weight (its data pointer), or NULL when frozen / unknown. */
float *fw_grad_of(const fw_model *fm, const float *data);

/* An adapter on one Linear / Conv1D. The train module owns the struct and A, B, dA, dB; the
 * forward owns nothing in it but fills h and mask, which it (re)allocates through the backend
 * when N grows (freed by fw_lora_detach / fw_free). Three kinds:
 *  - FW_AD_LORA: out += scale·B(A(dropout(x))); h = A(dropout(x)) (N,r).
 *  - FW_AD_IA3 (PEFT's IA3 on a target): out = base(x)·l, l = A (out) (its ia3_l (out,1)),
 *    bias included as PEFT; h = base(x) before the scaling (N,out).
 *  - FW_AD_IA3_FF (IA3 on a feed-forward target): out = base(x·l), l = A (in) (ia3_l (1,in));
 *    h = x·l (N,in), the base product's input.
 *  An IA3 adapter has no B, dB, r, scale or dropout. Several on one module apply in attach
 *  order (PEFT multiplies the active vectors: the same up to rounding).
 *  A LoRA adapter with `dora` set is PEFT's DoRA (nn_dora_forward): its magnitude m (out)
 *  rescales the module's output by m/‖W + scale·B·A‖ per output channel (the norms
 *  recomputed each forward, no gradient through them); the forward keeps v (N,out), what m
 *  multiplies, and g (2·out). DoRA terms go before plain LoRA ones on a module. */
enum { FW_AD_LORA = 0, FW_AD_IA3 = 1, FW_AD_IA3_FF = 2 };

typedef struct fw_lora {
    const float *base;     /* fw_weight.data of the adapted module */
    float *A, *B;          /* device (r,in), (out,r); IA3: A the vector l, B NULL */
    float *dA, *dB;        /* device grads, or NULL (adapter frozen) */
    int kind;              /* FW_AD_* */
    int r, in, out;
    float scale;           /* alpha/r, or alpha/√r (rsLoRA) */
    float dropout;         /* p; drawn only in FW_TRAIN forwards */
    int enabled;           /* 0: skipped by forward and backward */
    int dora;              /* FW_AD_LORA: PEFT's use_dora */
    float *mag, *dmag;     /* DoRA: device (out), the magnitude and its gradient (or NULL) */
    /* forward state */
    float *h;              /* (N, fw_lora_hw) kept by the last forward (see the kinds) */
    float *mask;           /* (N,in) dropout mask of the last FW_TRAIN forward, or NULL */
    int mask_on;           /* mask was used by the last forward */
    float *v, *g;          /* DoRA: (N,out) and (3·out) of the last forward: v, and g, g − 1
                              (nn_dora_forward), then the norms ‖W + scale·B·A‖ */
    size_t cap_n;          /* rows h / mask hold */
} fw_lora;

/* Values in A (the IA3 vector) and in B (0 for IA3); the width of h. */
static inline size_t fw_lora_na(const fw_lora *lo) {
    return lo->kind == FW_AD_LORA ? (size_t)lo->r * lo->in
                                  : (size_t)(lo->kind == FW_AD_IA3 ? lo->out : lo->in);
}
static inline size_t fw_lora_nb(const fw_lora *lo) {
    return lo->kind == FW_AD_LORA ? (size_t)lo->out * lo->r : 0;
}
/* Values in the DoRA magnitude (0 without). */
static inline size_t fw_lora_nm(const fw_lora *lo) {
    return lo->kind == FW_AD_LORA && lo->dora ? (size_t)lo->out : 0;
}
static inline int fw_lora_hw(const fw_lora *lo) {
    return lo->kind == FW_AD_LORA ? lo->r : lo->kind == FW_AD_IA3 ? lo->out : lo->in;
}

/* DoRA: the norms ‖W + scale·B·A‖ per output channel of lo's module (whatever the weight's
 * storage) into norm (out, device); -1 + lp_seterr without scratch. */
int fw_dora_norm(fw_model *fm, const fw_lora *lo, float *norm);

/* Attach / detach an adapter (kept in attach order: several on one module add up). */
int  fw_lora_attach(fw_model *fm, fw_lora *lo);
void fw_lora_detach(fw_model *fm, fw_lora *lo);

/* Tell the forward an adapter was switched on or off (a backward then needs a new forward). */
void fw_lora_touch(fw_model *fm);

/* The adapters on one weight, in attach order: fills out[cap], returns the count. */
int fw_loras_of(const fw_model *fm, const float *base, fw_lora **out, int cap);

/* A slot for the train module's state (tr_params and adapters), freed by fw_free through
 * `free_fn` before the compute state itself. */
void **fw_train_slot(fw_model *fm, void (**free_fn)(fw_model *, void *));
void   fw_set_train_free(fw_model *fm, void (*free_fn)(fw_model *, void *));

/* The train module's hooks (AdaLoRA, train/lora.h): extra_loss is added to the loss of every
 * forward given labels, as PEFT's AdaLoraModel.forward adds its orthogonal regulariser to
 * outputs.loss; after_backward runs once a backward added its gradients (dloss the loss
 * weight it was given): -1 + lp_seterr fails that backward. NULL: none. */
void fw_set_train_hooks(fw_model *fm, double (*extra_loss)(fw_model *),
                        int (*after_backward)(fw_model *, float dloss));

/* 1 when adapters are attached, base weights have gradient slots, or the live weights are no
 * longer the checkpoint's (state a cache must not drop silently). */
int fw_has_training(const fw_model *fm);
/* The live weights were written (an optimizer step on a base weight, a merge): they are no
 * longer what the checkpoint would give, from now on. */
void fw_mark_weights_changed(fw_model *fm);

/* The dropout draw counter (FW_TRAIN forwards so far): a test sets it back to redraw a mask. */
uint64_t fw_train_draws(const fw_model *fm);
void     fw_set_train_draws(fw_model *fm, uint64_t n);

/* The flags of the last forward (backward needs FW_KEEP, and not FW_LAST). */
int fw_last_flags(const fw_model *fm);
/* How a training forward (FW_KEEP, no attention dropout) computes attention on this model's
 * device: "materialised" (the (B,H,T,T) probabilities kept), "fused" (f32 products, only the
 * log-sum-exp kept), "fused-bf16" or "fused-tf32" (the same with the products on tensor
 * cores, bf16 or TF32 operands: bf16 weights on a backend whose bf16 ops have the fused
 * attention, backend.h; known once the weights are on the device, after fw_load_weights or
 * the first forward). */
const char *fw_attention_kind(const fw_model *fm);

/* ---- the pieces generate.c uses (one token at a time with a KV cache) -------------------- */

/* Keys and values of every layer for one sequence, after RoPE: k[l], v[l] are (cap, KV). */
typedef struct fw_kv {
    int cap, len;
    float **k, **v;      /* [layers] device pointers */
} fw_kv;

fw_kv *fw_kv_new(fw_model *fm, int cap);
void   fw_kv_free(fw_model *fm, fw_kv *kv);

/* Append n tokens (n = the prompt for the first call, then 1) to the cache and write the
 * logits of the last one into logits_host (V floats). -1 + lp_seterr on bad ids, a full
 * cache, a position past max_position_embeddings or out of device memory (the cache keeps
 * its length: the step may be retried). */
int fw_step(fw_model *fm, fw_kv *kv, const int32_t *ids, int n, float *logits_host);

/* LongRoPE's switch point (original_max_position_embeddings), 0 for other RoPE: the keys a
 * cache holds from below it were rotated with the short factors, so a generation that grows
 * past it makes the cache again from the whole sequence, as transformers' Phi-3 does. */
int fw_rope_switch(const fw_model *fm);

#endif
