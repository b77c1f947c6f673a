/* ops.h — the compute reference: one plain-C function per op and direction.
 *
 * These functions are the oracle. The fast CPU backend (runtime/backend/cpu) and the
 * CUDA backend are checked against them op by op (tests/unit/test_nn_ops.c); they and the
 * backends are checked against PyTorch / transformers / peft fixtures
 * (tests/unit/test_nn_parity.c) and their backwards against finite differences
 * (tests/unit/test_nn_grad.c).
 * Speed is not a goal here; clarity and exact Hugging Face semantics are.
 *
 * Conventions (docs/compute.md has the long form):
 *  - f32 everywhere; row-major; shapes are given in a comment next to every pointer.
 *    N is a number of rows (usually B·T), C a channel count.
 *  - Argument order, llm.c style: outputs first, then values cached by the forward for
 *    the backward, then inputs, weights and sizes.
 *  - Every backward ACCUMULATES (+=) into its gradient outputs, so that a tensor used
 *    twice (residual stream, tied embeddings) or over micro-batches sums naturally.
 *    Callers zero gradient buffers once per step. Any gradient output may be NULL:
 *    that gradient is skipped (frozen weights pass dweight = NULL).
 *    Except: rope, attention (both), gated and cross-entropy backwards WRITE (=) their
 *    gradient outputs. Those are gradients of intermediate activations used once, so
 *    there is nothing to sum, and writing spares the model a zeroing pass (docs/compute.md).
 *  - Forward outputs are overwritten, except where the name says "add" and in LoRA,
 *    whose forward adds the adapter term into the base layer's output.
 *  - Sizes are int (our tensors stay below 2^31 elements per op); index arithmetic is
 *    done in size_t.
 *  - Functions that can be handed bad data by a user (token ids, labels) return int:
 *    0 on success, -1 after lp_seterr(). Everything else returns void and asserts. */
#ifndef LOUPE_NN_OPS_H
#define LOUPE_NN_OPS_H
#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

/* ---- embeddings --------------------------------------------------------------------
 * Token, learned position (GPT-2 wpe, BERT position_embeddings) and token-type (BERT)
 * embeddings are all the same lookup; the caller builds the id arrays (position ids are
 * usually 0..T-1 per row). Forward "add" variants add into out, so BERT's
 * word + position + token_type is one forward and two adds. */
int  nn_embedding_forward(float *out, const int *ids, const float *table, int N, int V, int C);
// out is (N,C), ids is (N), table is (V,C). Returns -1 if an id is outside [0,V).
int  nn_embedding_add_forward(float *out, const int *ids, const float *table, int N, int V, int C);
// out is (N,C) and gets table[ids] added.
void nn_embedding_backward(float *dtable, const float *dout, const int *ids, int N, int C);
// dtable is (V,C) (scatter-add), dout is (N,C), ids is (N); ids already validated.

/* ---- matmul ---------------------------------------------------------------------------
 * c = alpha·op(a)·op(b) + beta·c, row-major, op(x) = xᵀ when trans_x. op(a) is (M,K),
 * op(b) is (K,N), c is (M,N); a is stored (M,K) or (K,M), b (K,N) or (N,K). For the
 * model code's odd jobs (logit lens, merges); the ops below call their own products. */
void nn_matmul(float *c, const float *a, const float *b, int M, int N, int K, int trans_a,
               int trans_b, float alpha, float beta);

/* ---- linear -------------------------------------------------------------------------
 * HF nn.Linear: W is [out, in], y = x·Wᵀ + b. GPT-2's Conv1D: W is [in, out], y = x·W + b. */
void nn_linear_forward(float *out, const float *inp, const float *weight, const float *bias,
                       int N, int IN, int OUT);
// out is (N,OUT), inp is (N,IN), weight is (OUT,IN), bias is (OUT) or NULL
void nn_linear_backward(float *dinp, float *dweight, float *dbias, const float *dout,
                        const float *inp, const float *weight, int N, int IN, int OUT);
// dinp is (N,IN), dweight is (OUT,IN), dbias is (OUT), dout is (N,OUT); each d* may be NULL
void nn_conv1d_forward(float *out, const float *inp, const float *weight, const float *bias,
                       int N, int IN, int OUT);
// out is (N,OUT), inp is (N,IN), weight is (IN,OUT), bias is (OUT) or NULL
void nn_conv1d_backward(float *dinp, float *dweight, float *dbias, const float *dout,
                        const float *inp, const float *weight, int N, int IN, int OUT);
// dinp is (N,IN), dweight is (IN,OUT), dbias is (OUT), dout is (N,OUT)

/* ---- LoRA ---------------------------------------------------------------------------
 * PEFT: y = base(x) + scale · B(A(dropout(x))), A is [r, in], B is [out, r],
 * scale = alpha/r (rsLoRA: alpha/√r). The forward ADDS into out (which already holds
 * base(x)). Dropout is a mask made by nn_dropout_mask (values 0 or 1/(1-p)), or NULL for
 * no dropout; the caller keeps it for the backward. h = A(dropout(x)) is cached. */
void nn_lora_forward(float *out, float *h, const float *inp, const float *mask,
                     const float *A, const float *B, float scale, int N, int IN, int OUT, int R);
// out is (N,OUT) (added to), h is (N,R) (cached), inp is (N,IN), mask is (N,IN) or NULL,
// A is (R,IN), B is (OUT,R)
void nn_lora_backward(float *dinp, float *dA, float *dB, float *dh, const float *dout,
                      const float *h, const float *inp, const float *mask, const float *A,
                      const float *B, float scale, int N, int IN, int OUT, int R);
// dinp is (N,IN), dA is (R,IN), dB is (OUT,R), dh is (N,R) scratch (overwritten),
// dout is (N,OUT)

/* ---- DoRA ---------------------------------------------------------------------------
 * PEFT's use_dora (peft 0.21, tuners/lora/dora.py): with V = W + s·B·A and its row norms
 * ‖V‖ (detached: no gradient flows through them), a DoRA module adds
 *   (m/‖V‖ − 1)·y + (m/‖V‖)·s·B(A(x'))
 * to its base output, y = x'·Wᵀ without the bias, x' the dropped-out input (without
 * dropout: x, and y is the base output less its bias). nn_row_norm gives ‖V‖; the model
 * builds V with a product and the terms with the base product and nn_lora_forward. */
void nn_row_norm(float *norm, const float *w, int rows, int cols, int trans);
// trans 0: norm[r] = ‖w[r,:]‖ (w (rows,cols), norm (rows)); trans 1: norm[c] = ‖w[:,c]‖
// (norm (cols): a Conv1D weight stored [in, out] has its output channels as columns)
void nn_dora_forward(float *out, float *v, float *g, const float *y, const float *su,
                     const float *bias, const float *m, const float *norm, int N, int OUT);
// out (N,OUT) += (g−1)·y + g·su with g = m/norm (OUT); y (N,OUT), or NULL: y = out − bias
// (bias (OUT) or NULL); su (N,OUT) = s·B(A(x')); v (N,OUT) = (y + su)/norm, what the
// magnitude multiplies (its gradient is Σ_n dout·v); g (2·OUT): m/norm, then m/norm − 1

/* Dropout mask from a counter-based generator: element i depends only on (seed, offset+i),
 * so any backend (and any thread split) draws the same mask. mask[i] is 0 with
 * probability p, else 1/(1-p) (torch's inverted dropout). p = 0 gives all ones. */
void nn_dropout_mask(float *mask, uint64_t seed, uint64_t offset, float p, size_t n);
// mask is (n)

/* ---- per-channel scale --------------------------------------------------------------
 * out[n,c] = inp[n,c]·l[c]. PEFT's IA3 is exactly this, on a target's output (k_proj,
 * v_proj: ia3_l (out,1)) or, for feed-forward targets, on its input (down_proj: (1,in));
 * AdaLoRA's singular values E scale the r channels between A and B the same way. */
void nn_channel_scale_forward(float *out, const float *inp, const float *l, int N, int C);
// out is (N,C), inp is (N,C), l is (C); out may alias inp
void nn_channel_scale_backward(float *dinp, float *dl, const float *dout, const float *inp,
                               const float *l, int N, int C);
// dinp is (N,C), dl is (C), dout is (N,C), inp is the forward's input

/* Initialisers from the same counter-based generator (host-side, run once per adapter):
 * PEFT's LoRA A is kaiming_uniform(a=√5) = U(−1/√in, 1/√in); "gaussian" init and AdaLoRA
 * use normals. Element i depends only on (seed, offset+i). torch's generator is not
 * reproduced: the distributions match, the draws do not. */
void nn_rand_uniform(float *out, uint64_t seed, uint64_t offset, float lo, float hi, size_t n);
// out is (n), values in [lo, hi)
void nn_rand_normal(float *out, uint64_t seed, uint64_t offset, float mean, float std, size_t n);
// out is (n)

/* ---- normalisation ------------------------------------------------------------------
 * RMSNorm (Llama): y = x·rsqrt(mean(x²)+eps)·w. Gemma: ·(1+w) (add_one = 1).
 * LayerNorm: y = (x-mean)·rsqrt(var+eps)·w + b, biased variance, as torch. */
void nn_rmsnorm_forward(float *out, float *rstd, const float *inp, const float *weight,
                        float eps, int add_one, int N, int C);
// out is (N,C), rstd is (N) (cached), inp is (N,C), weight is (C)
void nn_rmsnorm_backward(float *dinp, float *dweight, const float *dout, const float *rstd,
                         const float *inp, const float *weight, int add_one, int N, int C);
// dinp is (N,C), dweight is (C), dout is (N,C)
void nn_layernorm_forward(float *out, float *mean, float *rstd, const float *inp,
                          const float *weight, const float *bias, float eps, int N, int C);
// out is (N,C), mean and rstd are (N) (cached), weight and bias are (C); bias may be NULL
void nn_layernorm_backward(float *dinp, float *dweight, float *dbias, const float *dout,
                           const float *mean, const float *rstd, const float *inp,
                           const float *weight, int N, int C);
// dinp is (N,C), dweight and dbias are (C), dout is (N,C)

/* ---- rotary embeddings --------------------------------------------------------------
 * transformers' rotate-half convention: with x = (x1, x2) split in halves of D/2,
 * y = x·cos + rotate_half(x)·sin, rotate_half(x) = (-x2, x1), and the cos/sin of the
 * first and second half are the same frequency (emb = cat(freqs, freqs)). */
typedef enum {
    NN_ROPE_DEFAULT = 0,
    NN_ROPE_LINEAR,     /* inv_freq / factor */
    NN_ROPE_DYNAMIC,    /* NTK: base grows when seq_len > max_position_embeddings */
    NN_ROPE_LLAMA3,     /* Llama 3.1 piecewise blend */
    NN_ROPE_LONGROPE,   /* Phi-3: per-frequency factors, short or long by the sequence length,
                           and cos / sin scaled by attention_factor */
} nn_rope_type;

typedef struct {
    nn_rope_type type;
    double theta;                  /* rope_theta */
    double factor;                 /* linear, dynamic, llama3 */
    double low_freq_factor;        /* llama3 */
    double high_freq_factor;       /* llama3 */
    int original_max_position;     /* llama3, longrope: original_max_position_embeddings */
    int max_position;              /* dynamic: config max_position_embeddings */
    const float *short_factor;     /* longrope: (D/2) factors up to original_max_position, */
    const float *long_factor;      /*   (D/2) past it */
    double attention_factor;       /* longrope: cos and sin are multiplied by it */
} nn_rope_config;

int  nn_rope_type_from_name(nn_rope_type *out, const char *name);
// "default" (or NULL), "linear", "dynamic", "llama3", "longrope"; -1 with lp_seterr otherwise
void nn_rope_inv_freq(float *inv_freq, const nn_rope_config *cfg, int D, int seq_len);
// inv_freq is (D/2). seq_len (max position id + 1) only matters for "dynamic" and "longrope"
// (past original_max_position: the long factors).
void nn_rope_table(float *cos, float *sin, const float *inv_freq, const int *pos, int N, int D);
// cos and sin are (N, D/2), inv_freq is (D/2), pos is (N): position id of each row
void nn_rope_forward(float *out, const float *inp, const float *cos, const float *sin,
                     int N, int H, int D);
// out is (N,H,D), inp is (N,H,D), cos and sin are (N,D/2). out may equal inp.
void nn_rope_backward(float *dinp, const float *dout, const float *cos, const float *sin,
                      int N, int H, int D);
// dinp is (N,H,D) (written, rotation by -θ), dout is (N,H,D)

/* ---- attention ----------------------------------------------------------------------
 * q (B,T,H,D) as it comes out of q_proj; k, v (B,T,KVH,D); head h reads kv head
 * h / (H/KVH) (transformers' repeat_kv). Scores s = scale·q·k; soft-cap
 * s = cap·tanh(s/cap) before masking (Gemma 2); then masking: key j is visible from
 * query i iff amask[b][j] != 0, and if causal j <= i, and if window > 0 i - j < window
 * (transformers' sliding_window_overlay: kv_idx > q_idx - window). A query with no
 * visible key (a left-padding position under a causal mask) gets all-zero probabilities
 * and a zero output, where eager transformers would spread attention uniformly and sdpa
 * may return NaN; those positions are padding and loss/tests ignore them. */
typedef struct {
    float scale;      /* 1/sqrt(D), or query_pre_attn_scalar^-0.5 */
    float softcap;    /* > 0: attn_logit_softcapping; 0: off */
    int causal;       /* 1: decoder; 0: bidirectional (BERT, padding mask only) */
    int window;       /* > 0: sliding window size; 0: off */
    /* Training-time dropout on the probabilities (BERT's attention_probs_dropout_prob):
     * (B,H,Tq,Tk) values 0 or 1/(1-p) from nn_dropout_mask, or NULL. out = (P∘M)·V; probs
     * keeps P itself (the heat map and the backward want the softmax), the backward
     * needs the same mask. */
    const float *dropout;
} nn_attn_params;

void nn_attention_forward(float *out, float *probs, const float *q, const float *k,
                          const float *v, const int *amask, const nn_attn_params *p,
                          int B, int T, int H, int KVH, int D);
// out is (B,T,H*D) or NULL (then only probs: the heat-map entry), probs is (B,H,T,T)
// (cached), q is (B,T,H,D), k and v are (B,T,KVH,D), amask is (B,T) of 0/1 or NULL
void nn_attention_kv_forward(float *out, float *probs, const float *q, const float *k,
                             const float *v, const int *amask, const nn_attn_params *p, int B,
                             int Tq, int Tk, int q_off, int H, int KVH, int D);
// Generation with a KV cache: Tq new queries at positions q_off..q_off+Tq-1 against Tk keys
// (the cache, new ones included; causal means j <= q_off + i). out is (B,Tq,H*D) or NULL,
// probs is (B,H,Tq,Tk), q is (B,Tq,H,D), k and v are (B,Tk,KVH,D), amask is (B,Tk) or NULL.
// nn_attention_forward is the case Tq = Tk = T, q_off = 0. Forward only.
void nn_attention_backward(float *dq, float *dk, float *dv, float *dscores,
                           const float *dout, const float *probs, const float *q,
                           const float *k, const float *v, const int *amask,
                           const nn_attn_params *p, int B, int T, int H, int KVH, int D);
// dq is (B,T,H,D), dk and dv are (B,T,KVH,D) (all written, each may be NULL), dscores is
// (B,H,T,T) scratch (overwritten), dout is (B,T,H*D)

/* Fused attention (flash-attention style): the same q, k, v, masks, soft-cap and scale as
 * nn_attention_forward, and the same out, but instead of the (B,H,T,T) probabilities it
 * keeps lse, the log-sum-exp of each row's visible scores (after soft-cap): P_ij =
 * exp(s_ij - lse_i). A query with no visible key gets out = 0 and lse = +INFINITY, so that
 * every recomputed probability exp(s - lse) of that row is 0. Attention dropout is not
 * supported (p->dropout must be NULL): the model keeps the materialised path then. */
void nn_attention_fused_forward(float *out, float *lse, const float *q, const float *k,
                                const float *v, const int *amask, const nn_attn_params *p,
                                int B, int T, int H, int KVH, int D);
// out is (B,T,H*D), lse is (B,H,T) (cached), q is (B,T,H,D), k and v are (B,T,KVH,D),
// amask is (B,T) of 0/1 or NULL
void nn_attention_fused_backward(float *dq, float *dk, float *dv, const float *dout,
                                 const float *out, const float *lse, const float *q,
                                 const float *k, const float *v, const int *amask,
                                 const nn_attn_params *p, int B, int T, int H, int KVH, int D);
// dq is (B,T,H,D), dk and dv are (B,T,KVH,D) (written, each may be NULL), dout is (B,T,H*D),
// out and lse are the fused forward's. With D_i = Σ_d dout_i·out_i (= Σ_j P_ij dP_ij):
// dP_ij = dout_i·v_j, dS_ij = P_ij (dP_ij - D_i) (· tanh' under soft-cap), dv_j += P_ij
// dout_i, dq_i += scale·dS_ij k_j, dk_j += scale·dS_ij q_i: attention_backward's gradients.

/* ---- activations --------------------------------------------------------------------- */
typedef enum {
    NN_ACT_SILU = 0,
    NN_ACT_GELU,        /* erf form: "gelu" */
    NN_ACT_GELU_TANH,   /* tanh form: "gelu_new", "gelu_pytorch_tanh" */
    NN_ACT_TANH,
    NN_ACT_RELU,
} nn_act;

int  nn_act_from_name(nn_act *out, const char *hf_name);
// HF hidden_act / hidden_activation names; -1 with lp_seterr for unknown ones
void nn_act_forward(float *out, const float *inp, nn_act act, size_t n);
// out and inp are (n)
void nn_act_backward(float *dinp, const float *dout, const float *inp, nn_act act, size_t n);
// dinp, dout, inp are (n)
void nn_gated_forward(float *out, const float *gate, const float *up, nn_act act, size_t n);
// out = act(gate)·up; all (n) (Llama silu, Gemma gelu-tanh MLPs)
void nn_gated_backward(float *dgate, float *dup, const float *dout, const float *gate,
                       const float *up, nn_act act, size_t n);
// all (n); dgate and dup are written (each may be NULL)

/* ---- softmax, losses, soft-cap --------------------------------------------------------
 * Cross entropy follows torch's F.cross_entropy(reduction="mean", ignore_index=-100):
 * mean over targets != -100. The causal-LM shift is the CALLER's job: logits row t
 * predicts targets[t] = labels[t+1] (the last row gets -100), as transformers'
 * ForCausalLMLoss does. With every target ignored torch returns NaN; we return loss 0
 * and count 0 so a fully padded micro-batch does not poison a run. The same function is
 * the sequence-classification loss (BERT classifier: N = B, V = num_labels). */
void nn_softmax_forward(float *out, const float *inp, int N, int C);
// out and inp are (N,C), softmax over each row
void nn_softmax_backward(float *dinp, const float *dout, const float *out, int N, int C);
// dinp, dout, out are (N,C)
int  nn_cross_entropy_forward(float *loss, float *lse, int *count, const float *logits,
                              const int *targets, int N, int V);
// loss is a scalar, lse is (N) (cached log-sum-exp), count the number of non-ignored
// targets, logits is (N,V), targets is (N). -1 if a target is outside [0,V) and not -100.
void nn_cross_entropy_backward(float *dlogits, float dloss, const float *lse,
                               const float *logits, const int *targets, int count,
                               int N, int V);
void nn_cross_entropy_rows(float *rowloss, float *lse, const float *logits, const int *targets,
                           int N, int V);
// rowloss and lse are (N): per row lse and lse − logit[target] (0 where ignored), the
// targets checked by the caller; forward's loss is the mean of the kept rows
// dlogits is (N,V) (written: 0 on ignored rows), dloss a scalar (1 for loss.backward())
void nn_softcap_forward(float *out, const float *inp, float cap, size_t n);
// out = cap·tanh(inp/cap), (n) (Gemma 2 final logits, cap 30)
void nn_softcap_backward(float *dinp, const float *dout, const float *out, float cap, size_t n);
// dinp, dout, out (cached forward output) are (n)

/* ---- column slices ----------------------------------------------------------------------
 * GPT-2's c_attn produces q, k and v side by side in one (N, 3C) output; the slice copies
 * columns [off, off+W) of an (N, CI) tensor into a dense (N, W) one, and its backward adds
 * the gradient back into those columns. */
void nn_slice_forward(float *out, const float *inp, int N, int CI, int off, int W);
// out is (N,W), inp is (N,CI), 0 <= off, off + W <= CI
void nn_slice_backward(float *dinp, const float *dout, int N, int CI, int off, int W);
// dinp is (N,CI) (+= into columns off..off+W-1), dout is (N,W)

/* ---- elementwise ---------------------------------------------------------------------- */
void nn_add_forward(float *out, const float *a, const float *b, size_t n);
// out = a + b, all (n); out may alias a or b
void nn_add_backward(float *da, float *db, const float *dout, size_t n);
// da += dout, db += dout
void nn_mul_forward(float *out, const float *a, const float *b, size_t n);
// out = a·b elementwise, all (n): hidden-state dropout is mul by an nn_dropout_mask
void nn_mul_backward(float *da, float *db, const float *dout, const float *a, const float *b,
                     size_t n);
// da += dout·b, db += dout·a (a mask's gradient is not wanted: pass db = NULL)
void nn_scale_forward(float *out, const float *inp, float s, size_t n);
// out = s·inp; out may alias inp. Gemma's embedding scale is (float)sqrt((double)hidden),
// rounded to f32 first as transformers does (exactly 48 for gemma-2-2b).
void nn_scale_backward(float *dinp, const float *dout, float s, size_t n);

/* ---- 4-bit weights: QLoRA's NF4 and FP4 (bitsandbytes' blockwise layout; ops_quant.c) ---
 * A tensor of n values (flattened) in blocks of `blocksize` (the last may be short): absmax
 * of each block (f32), each value scaled by it and replaced by the index of the nearest of
 * 16 codes; two indices a byte, the first in the high nibble (an odd n pads with the index
 * of 0.0). Quantisation is bitsandbytes' own (backends/default quantize_4bit): x times
 * 1/absmax (x / absmax in the short block), clamped to [-1, 1], bucketed against the f32
 * midpoints of the sorted codes (a value on a midpoint takes the lower code). */
enum { NN_Q4_NF4 = 1, NN_Q4_FP4 = 2, NN_Q8 = 3 };
/* NN_Q8 is bitsandbytes' LLM.int8 (load_in_8bit, Linear8bitLt): in the same calls, one block
 * a row (blocksize = the row's length), one int8 a value (codes n bytes): the row rounded to
 * f16, its absmax (the f16's), code = round(w16 · (127/absmax)) (nearest even; 0 where the
 * absmax is 0); dequantized (float)code · (absmax · (1/127)), Linear8bitLt's backward. */
extern const float nn_nf4_code[16];
extern const float nn_fp4_code[16];   // by bit pattern: bit 3 the sign (bitsandbytes' order)
const float *nn_q4_code(int type);
void nn_q4_quantize(uint8_t *codes, float *absmax, const float *x, size_t n, int blocksize,
                    int type);
// codes is ((n+1)/2) bytes (NN_Q8: n), absmax ((n + blocksize - 1) / blocksize); host only
void nn_q4_dequant(float *out, const uint8_t *codes, const float *absmax, size_t n,
                   int blocksize, int type);
// out[i] = code[index i] · absmax[i / blocksize], in f32 (bitsandbytes' dequantize)

/* x rounded to f16 (nearest even; past 65504 infinity) and back: what x.to(torch.float16)
 * keeps. Inline: the int8 products round every input value. */
static inline float nn_half_round(float x) {
    uint32_t u, s;
    memcpy(&u, &x, 4);
    s = u & 0x80000000u;
    u &= 0x7fffffffu;
    if (u >= 0x7f800000u) return x;                  /* inf, NaN */
    if (u < 0x38800000u) {                           /* below f16's least normal: steps 2^-24 */
        float r = rintf(fabsf(x) * 16777216.0f) / 16777216.0f;
        return s ? -r : r;
    }
    u = (u + 0x0fffu + ((u >> 13) & 1u)) & ~0x1fffu;   /* 10 bits kept, nearest even */
    if (u >= 0x47800000u) u = 0x7f800000u;           /* past 65504: infinity */
    u |= s;
    memcpy(&x, &u, 4);
    return x;
}

/* LLM.int8's product (bitsandbytes' MatMul8bitLt forward, Linear8bitLt): out (N,OUT) =
 * inp (N,IN) · Wᵀ + bias for W's int8 codes cb (OUT,IN) and row absmax scb (OUT). The input
 * rounded to f16; columns where some |x16| ≥ threshold (> 0) are outliers: their values are
 * left out of the row's absmax, their int8 codes are 0, and they are multiplied apart, in f32,
 * with the dequantized weight columns (cb · scb · (1/127)). Each row's codes are
 * round(x16 · (127/absmax)); the int8 products summed exactly; out = (float)sum ·
 * (absmax_row · scb) · 6.200124e-05 + bias, then the outlier columns' products added.
 * work: nn_q8_work(N, IN, OUT) floats of scratch. */
size_t nn_q8_work(int N, int IN, int OUT);
/* Its input side, shared by the backends on the host: ocol[c] = 1 where some row of the
 * f16-rounded input h (N,IN) has |h| ≥ threshold (> 0), else 0; one row of h replaced by its
 * codes (the outliers left out of the absmax and coded 0; columns flagged in ocol coded 0,
 * ocol NULL for none: bitsandbytes zeroes them only when there are several rows), its absmax
 * returned. */
void  nn_q8_outliers(float *ocol, const float *h, int N, int IN, float threshold);
float nn_q8_code_row(float *h, const float *ocol, int IN, float threshold);
void nn_q8_linear_forward(float *out, const float *inp, const int8_t *cb, const float *scb,
                          const float *bias, int N, int IN, int OUT, float threshold,
                          float *work);

/* Double quantization (bnb_4bit_use_double_quant): a weight's absmax values less their
 * mean (the offset) quantized again, in blocks of 256, to 8-bit indices into bitsandbytes'
 * signed dynamic map, with one f32 absmax2 per block. */
#define NN_DQ_BLOCK 256
void nn_dynamic_map(float code[256]);   // create_dynamic_map(signed=True), ascending
float nn_dq_offset(const float *absmax, size_t nb);
// the mean of the nb values, summed in double and rounded once (torch's f32 mean may
// differ in the last bit: its order of summation depends on the machine)
void nn_dq_quantize(uint8_t *q, float *absmax2, float *work, const float *absmax, size_t nb,
                    float offset, const float code[256]);
// q[nb], absmax2[(nb + 255) / 256], work[nb] scratch; the rounding of nn_q4_quantize
void nn_dq_dequant(float *absmax, const uint8_t *q, const float *absmax2, const float *code,
                   float offset, size_t nb);
// absmax[i] = (code[q[i]] · absmax2[i / 256]) + offset, two f32 roundings (bitsandbytes'
// dequantize_blockwise, then the offset added); a backend op (code on the device)

/* ---- optimisers (in place; state buffers start zeroed, t counts steps from 1) ----------
 * AdamW exactly as torch.optim.AdamW(foreach=False): p *= 1 - lr·wd; m = lerp(m, g, 1-β1);
 * v = β2·v + (1-β2)·g²; p -= lr/(1-β1^t) · m / (sqrt(v)/sqrt(1-β2^t) + eps).
 * SGD as torch.optim.SGD (dampening 0, nesterov off): g += wd·p; buf = g at t = 1,
 * else buf = momentum·buf + g; p -= lr·buf. */
void nn_adamw_step(float *param, float *m, float *v, const float *grad, size_t n, double lr,
                   double beta1, double beta2, double eps, double weight_decay, int t);
// param, m, v, grad are (n)
void nn_sgd_step(float *param, float *buf, const float *grad, size_t n, double lr,
                 double momentum, double weight_decay, int t);
// param, buf (momentum buffer, unused if momentum == 0), grad are (n)
/* torch.nn.utils.clip_grad_norm_: total = ||(||g_0||, ||g_1||, …)||₂; if max_norm > 0
 * every grad is scaled by min(1, max_norm/(total+1e-6)). Returns total (before clipping).
 * A NaN or infinite total leaves the grads as they are (torch would multiply them by NaN):
 * the caller sees the total and should skip the step. */
double nn_clip_grad_norm(float *const *grads, const size_t *sizes, int count, double max_norm);

#endif
