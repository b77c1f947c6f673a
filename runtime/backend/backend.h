/* backend.h — the compute backend interface: a table of function pointers that a model's
 * forward and backward call through, so the same model code runs on the CPU or a GPU.
 *
 * Every op has exactly the signature of its reference in nn/ops.h (same argument order,
 * shapes and conventions: outputs first, backward accumulates, NULL gradient = skip), so
 * the reference table be_ref() and any backend can be compared op by op
 * (tests/unit/test_nn_ops.c). Float pointers passed to ops are device pointers obtained
 * from alloc(); host data goes in and out through to_device / to_host. On the CPU these
 * are ordinary pointers and the copies are memcpy.
 *
 * Small arrays of ids, labels and masks (int *) are device pointers too. Ops that validate
 * user data (embedding ids, labels) return int like their reference; a GPU backend may
 * validate on the host copy before uploading instead, and still return -1 + lp_seterr.
 *
 * Adding a backend (CUDA, later): fill a be_backend with its functions (an op that is not
 * written yet may not be left NULL — the table is complete or the backend is not offered),
 * expose `const be_backend *be_cuda(void)` returning NULL when no device is usable, and
 * add it to test_nn_ops.c's list so every op is checked against be_ref(). */
#ifndef LOUPE_BACKEND_H
#define LOUPE_BACKEND_H
#include <stddef.h>
#include <stdint.h>

#include "nn/ops.h"

/* ---- bf16 weight storage (a capability: be_backend.bf16) ----------------------------------
 * A backend that offers it stores frozen Linear / Conv1D weights, the LM head and the token
 * embedding as bf16 (half the memory) and multiplies with bf16 operands: the f32 activation
 * is rounded to bf16 (nearest even) just before the product, products accumulate in f32, the
 * result is f32. Everything else (activations, biases, norms, LoRA A/B, trainable weights,
 * gradients, optimizer state) stays f32. The model (nn/forward.c) calls these ops only for
 * weights it stored as bf16, and only when `bf16` is not NULL. The plain-C reference is
 * nn/ops_bf16.h; tests/unit/test_nn_ops.c checks every backend's ops against it. */
typedef uint16_t be_bf16;   /* a bf16 value: the top 16 bits of an f32 */

typedef struct be_bf16_ops {
    /* dst = round_bf16(src) (nearest even, NaN stays NaN); dst = widen(src) (exact) */
    void (*round)(be_bf16 *dst, const float *src, size_t n);
    void (*widen)(float *dst, const be_bf16 *src, size_t n);
    /* out (N,OUT) = bf16(inp) (N,IN) · Wᵀ + bias; W is (OUT,IN), or (IN,OUT) with conv1d
       (GPT-2's Conv1D: out = inp·W); bias (OUT) f32 or NULL */
    void (*linear_forward)(float *out, const float *inp, const be_bf16 *weight,
                           const float *bias, int N, int IN, int OUT, int conv1d);
    /* the input gradient only (a bf16 weight is frozen): dinp (N,IN) = bf16(dout) (N,OUT) ·
       W (Conv1D: · Wᵀ) + beta·dinp, beta 0 (dinp is not read) or 1 */
    void (*linear_backward)(float *dinp, const float *dout, const be_bf16 *weight, int N,
                            int IN, int OUT, int conv1d, float beta);
    /* out (N,C) = rows of the (V,C) bf16 table, widened; ids checked like
       embedding_forward (-1 + lp_seterr, out untouched) */
    int (*embedding_forward)(float *out, const int *ids, const be_bf16 *table, int N, int V,
                             int C);
    /* the same for ids the caller has checked on the host (embedding_rows below) */
    void (*embedding_rows)(float *out, const int *ids, const be_bf16 *table, int N, int C);
    /* linear_forward for an input (N,IN) already bf16: the model rounds an input once for
       the products that share it (q, k, v; gate, up). beta 1: out += the product (+ bias),
       after an adapter wrote its term (lora_forward_first); 0: written */
    void (*linear_forward_rounded)(float *out, const be_bf16 *inp, const be_bf16 *weight,
                                   const float *bias, int N, int IN, int OUT, int conv1d,
                                   float beta);
    /* gated_forward that also writes out rounded to bf16 (hout: the down product's input) */
    void (*gated_forward_rounded)(float *out, be_bf16 *hout, const float *gate,
                                  const float *up, nn_act act, size_t n);
    /* gated_backward that also writes dgate and dup rounded to bf16 (hgate, hup: the gate
       and up products' backward inputs), so nothing reads them again to round them */
    void (*gated_backward_rounded)(float *dgate, float *dup, be_bf16 *hgate, be_bf16 *hup,
                                   const float *dout, const float *gate, const float *up,
                                   nn_act act, size_t n);
    /* linear_backward for a dout (N,OUT) already bf16 (head_loss_rows' gradient) */
    void (*linear_backward_rounded)(float *dinp, const be_bf16 *dout, const be_bf16 *weight,
                                    int N, int IN, int OUT, int conv1d, float beta);
    /* The LM head's loss rows and logits gradient for N rows of raw logits (N,V), in one
       pass where the f32 ops take five (the FW_LOSS head of a bf16 model, nn/forward.c):
       logits = cap·tanh(raw/cap) (cap 0: raw), lse and rowloss as cross_entropy_rows, and
       dlraw (N,V) = bf16(d·(1 − (logits/cap)²)) (cap 0: bf16(d)), d = cross_entropy_backward's
       gradient for dloss over count targets: what softcap_forward, cross_entropy_rows,
       cross_entropy_backward, softcap_backward and the head product's rounding make, without
       the f32 logits and gradients in between (nn_head_loss_rows_bf16 is the reference).
       Targets checked by the caller; nothing read back. NULL: the model uses those ops. */
    void (*head_loss_rows)(float *rowloss, float *lse, be_bf16 *dlraw, const float *raw,
                           const int *targets, int N, int V, float cap, float dloss,
                           int count);
    /* attention_fused_forward / _backward (below) with their products on tensor cores, f32
       accumulation: bf16 operands (q, k, v, dout, P, dS rounded; about 1e-2 relative to the
       reference) for heads of up to attention_bf16_dmax() values, TF32 operands (10 mantissa
       bits, about 1e-3) for larger ones. A model whose frozen weights are bf16 uses them
       when the fused attention is on (its activations already carry bf16 rounding); NULL:
       it uses the f32 ones. CUDA: cuda_attn_tc.cu (bf16, heads up to 256 on an H100, 128 on
       an A100: its shared memory) and the blocked
       ops of cuda_attn_blk.cu (TF32); with LOUPE_CUDA_ATTENTION=blocked the blocked ones for
       every head; NULL with LOUPE_CUDA_ATTENTION=flash. */
    void (*attention_fused_forward)(float *out, float *lse, const float *q, const float *k,
                                    const float *v, const int *amask,
                                    const nn_attn_params *p, int B, int T, int H,
                                    int KVH, int D);
    void (*attention_fused_backward)(float *dq, float *dk, float *dv, const float *dout,
                                     const float *out, const float *lse, const float *q,
                                     const float *k, const float *v, const int *amask,
                                     const nn_attn_params *p, int B, int T, int H,
                                     int KVH, int D);
    int (*attention_bf16_dmax)(void);   /* 0: TF32 for every head size */
} be_bf16_ops;

typedef struct be_backend {
    const char *name;   /* "ref", "cpu", "cuda" */

    /* memory: alloc returns NULL with lp_seterr on failure; free(NULL) is a no-op */
    void *(*alloc)(size_t bytes);
    void (*free)(void *p);
    void (*to_device)(void *dst, const void *src, size_t bytes);
    void (*to_host)(void *dst, const void *src, size_t bytes);
    void (*copy)(void *dst, const void *src, size_t bytes);   /* device → device */
    void (*zero)(void *p, size_t bytes);
    void (*sync)(void);   /* wait for queued work (no-op on the CPU) */

    void (*matmul)(float *c, const float *a, const float *b, int M, int N, int K,
                   int trans_a, int trans_b, float alpha, float beta);

    int (*embedding_forward)(float *out, const int *ids, const float *table, int N, int V,
                             int C);
    int (*embedding_add_forward)(float *out, const int *ids, const float *table, int N,
                                 int V, int C);
    void (*embedding_backward)(float *dtable, const float *dout, const int *ids, int N, int C);
    /* embedding_forward (add 0) or embedding_add_forward (add 1) for ids the caller has
       checked on the host (the model does: nn/forward.c check_batch). Without the check a
       device never waits for the ids to be read back, so a training step waits only where
       a value is read (the loss, the gradient norm). NULL: the caller uses the checked ops
       (on the CPU their check costs nothing). */
    void (*embedding_rows)(float *out, const int *ids, const float *table, int N, int C,
                           int add);

    void (*linear_forward)(float *out, const float *inp, const float *weight,
                           const float *bias, int N, int IN, int OUT);
    void (*linear_backward)(float *dinp, float *dweight, float *dbias, const float *dout,
                            const float *inp, const float *weight, int N, int IN, int OUT);
    void (*conv1d_forward)(float *out, const float *inp, const float *weight,
                           const float *bias, int N, int IN, int OUT);
    void (*conv1d_backward)(float *dinp, float *dweight, float *dbias, const float *dout,
                            const float *inp, const float *weight, int N, int IN, int OUT);

    void (*lora_forward)(float *out, float *h, const float *inp, const float *mask,
                         const float *A, const float *B, float scale, int N, int IN, int OUT,
                         int R);
    void (*lora_backward)(float *dinp, float *dA, float *dB, float *dh, const float *dout,
                          const float *h, const float *inp, const float *mask, const float *A,
                          const float *B, float scale, int N, int IN, int OUT, int R);
    /* Optional (NULL: not offered). lora_forward that writes out (= s·B(A(x∘m))) rather than
       adding to it: the model then adds a bf16 base product after it (linear_forward_rounded,
       beta 1), whose GEMM reads out as its epilogue runs, where lora_forward's add would have
       been a pass of its own over out (N·OUT floats read and written). */
    void (*lora_forward_first)(float *out, float *h, const float *inp, const float *mask,
                               const float *A, const float *B, float scale, int N, int IN,
                               int OUT, int R);
    /* Optional, the backward's counterpart: lora_backward that writes dinp (= (dh·A)∘m)
       rather than adding to it, for an input gradient the base product then adds to
       (linear_backward_rounded / bf16 linear_backward with beta 1); dA, dB still add. */
    void (*lora_backward_first)(float *dinp, float *dA, float *dB, float *dh,
                                const float *dout, const float *h, const float *inp,
                                const float *mask, const float *A, const float *B, float scale,
                                int N, int IN, int OUT, int R);
    void (*dropout_mask)(float *mask, uint64_t seed, uint64_t offset, float p, size_t n);
    /* DoRA (nn_row_norm, nn_dora_forward) */
    void (*row_norm)(float *norm, const float *w, int rows, int cols, int trans);
    void (*dora_forward)(float *out, float *v, float *g, const float *y, const float *su,
                         const float *bias, const float *m, const float *norm, int N, int OUT);

    void (*channel_scale_forward)(float *out, const float *inp, const float *l, int N, int C);
    void (*channel_scale_backward)(float *dinp, float *dl, const float *dout, const float *inp,
                                   const float *l, int N, int C);

    void (*rmsnorm_forward)(float *out, float *rstd, const float *inp, const float *weight,
                            float eps, int add_one, int N, int C);
    void (*rmsnorm_backward)(float *dinp, float *dweight, const float *dout,
                             const float *rstd, const float *inp, const float *weight,
                             int add_one, int N, int C);
    void (*layernorm_forward)(float *out, float *mean, float *rstd, const float *inp,
                              const float *weight, const float *bias, float eps, int N, int C);
    void (*layernorm_backward)(float *dinp, float *dweight, float *dbias, const float *dout,
                               const float *mean, const float *rstd, const float *inp,
                               const float *weight, int N, int C);

    /* The tables (nn_rope_inv_freq, nn_rope_table) are built on the host once per shape;
     * a backend uploads them. Only the application is a backend op. */
    void (*rope_forward)(float *out, const float *inp, const float *cos, const float *sin,
                         int N, int H, int D);
    void (*rope_backward)(float *dinp, const float *dout, const float *cos, const float *sin,
                          int N, int H, int D);

    void (*attention_forward)(float *out, float *probs, const float *q, const float *k,
                              const float *v, const int *amask, const nn_attn_params *p,
                              int B, int T, int H, int KVH, int D);
    void (*attention_kv_forward)(float *out, float *probs, const float *q, const float *k,
                                 const float *v, const int *amask, const nn_attn_params *p,
                                 int B, int Tq, int Tk, int q_off, int H, int KVH, int D);
    void (*attention_backward)(float *dq, float *dk, float *dv, float *dscores,
                               const float *dout, const float *probs, const float *q,
                               const float *k, const float *v, const int *amask,
                               const nn_attn_params *p, int B, int T, int H, int KVH, int D);
    /* Fused (flash-style) attention: probabilities are never stored; the forward keeps the
     * per-row log-sum-exp (B,H,T) and the backward recomputes them from it. No dropout. */
    void (*attention_fused_forward)(float *out, float *lse, const float *q, const float *k,
                                    const float *v, const int *amask, const nn_attn_params *p,
                                    int B, int T, int H, int KVH, int D);
    void (*attention_fused_backward)(float *dq, float *dk, float *dv, const float *dout,
                                     const float *out, const float *lse, const float *q,
                                     const float *k, const float *v, const int *amask,
                                     const nn_attn_params *p, int B, int T, int H, int KVH,
                                     int D);

    void (*act_forward)(float *out, const float *inp, nn_act act, size_t n);
    void (*act_backward)(float *dinp, const float *dout, const float *inp, nn_act act,
                         size_t n);
    void (*gated_forward)(float *out, const float *gate, const float *up, nn_act act,
                          size_t n);
    void (*gated_backward)(float *dgate, float *dup, const float *dout, const float *gate,
                           const float *up, nn_act act, size_t n);

    void (*softmax_forward)(float *out, const float *inp, int N, int C);
    void (*softmax_backward)(float *dinp, const float *dout, const float *out, int N, int C);
    int (*cross_entropy_forward)(float *loss, float *lse, int *count, const float *logits,
                                 const int *targets, int N, int V);
    void (*cross_entropy_backward)(float *dlogits, float dloss, const float *lse,
                                   const float *logits, const int *targets, int count, int N,
                                   int V);
    /* cross_entropy_forward's rows, for a caller that reads the losses later (the FW_LOSS
       head: once a batch, not once per chunk of rows): lse (N) and rowloss (N) = lse −
       logits[n, target] (0 where the target is -100), nothing read back or synchronised.
       The targets must be checked already (-100 or in [0, V)). */
    void (*cross_entropy_rows)(float *rowloss, float *lse, const float *logits,
                               const int *targets, int N, int V);
    void (*softcap_forward)(float *out, const float *inp, float cap, size_t n);
    void (*softcap_backward)(float *dinp, const float *dout, const float *out, float cap,
                             size_t n);

    void (*slice_forward)(float *out, const float *inp, int N, int CI, int off, int W);
    void (*slice_backward)(float *dinp, const float *dout, int N, int CI, int off, int W);

    void (*add_forward)(float *out, const float *a, const float *b, size_t n);
    void (*add_backward)(float *da, float *db, const float *dout, size_t n);
    void (*mul_forward)(float *out, const float *a, const float *b, size_t n);
    void (*mul_backward)(float *da, float *db, const float *dout, const float *a,
                         const float *b, size_t n);
    void (*scale_forward)(float *out, const float *inp, float s, size_t n);
    void (*scale_backward)(float *dinp, const float *dout, float s, size_t n);
    void (*q4_dequant)(float *out, const uint8_t *codes, const float *absmax, size_t n,
                       int blocksize, int type);   /* nn_q4_dequant; codes, absmax on the
                                                      device */
    void (*q8_linear_forward)(float *out, const float *inp, const int8_t *cb,
                              const float *scb, const float *bias, int N, int IN, int OUT,
                              float threshold, float *work);   /* nn_q8_linear_forward; work
                                                                  nn_q8_work(N, IN, OUT) */
    void (*dq_dequant)(float *absmax, const uint8_t *q, const float *absmax2,
                       const float *code, float offset, size_t nb);   /* nn_dq_dequant; all
                                                                         on the device */

    void (*adamw_step)(float *param, float *m, float *v, const float *grad, size_t n,
                       double lr, double beta1, double beta2, double eps,
                       double weight_decay, int t);
    void (*sgd_step)(float *param, float *buf, const float *grad, size_t n, double lr,
                     double momentum, double weight_decay, int t);
    double (*clip_grad_norm)(float *const *grads, const size_t *sizes, int count,
                             double max_norm);

    /* Capabilities. fused_attention: the model uses attention_fused_* instead of the
     * materialised attention for head sizes up to this (0: never; the fused ops exist in
     * every table and are tested everywhere). CUDA: 0 unless LOUPE_FUSED_ATTENTION=1, then
     * any size (cuBLAS over blocks of queries), or 256 with LOUPE_CUDA_ATTENTION=flash
     * (opt-in until the fused ops have passed on a GPU). CPU and ref: 0, so CPU numbers and speed stay the materialised path's
     * (LOUPE_FUSED_ATTENTION=1 turns it on for be_cpu, for tests). */
    int fused_attention;
    /* bf16 weight storage (above), or NULL: every weight f32. CUDA: NULL unless
     * LOUPE_CUDA_BF16=1 (opt-in until tests/gpu/run.sh has passed with it, docs/cuda.md);
     * the guard device: the same switch, with the reference's emulation (be_guard_bf16());
     * CPU and ref: NULL, so their numbers never change. */
    const be_bf16_ops *bf16;

    /* Ops that need temporary device memory (CUDA's pool scratch: LoRA with dropout,
     * attention, cross-entropy, clip_grad_norm, bf16 products) cannot always have it. Such an
     * op does none of its work (cross_entropy_forward also returns -1, clip_grad_norm NaN),
     * records the first failure and returns; the model asks here where a user-facing operation
     * ends (forward, backward, the optimizer's clip). op_failed: 0 when every op since the
     * last call ran; else 1 with the first failure's message in lp_seterr ("attention_backward:
     * out of GPU memory for … MB of scratch (… MB free); try a smaller batch or sequence
     * length"), and the record is cleared. NULL where no op can fail (CPU, ref). */
    int (*op_failed)(void);
} be_backend;

const be_backend *be_ref(void);   /* the plain-C reference (nn/ops_ref*.c): slow, exact */
const be_backend *be_cpu(void);   /* BLAS (MKL or OpenBLAS) + OpenMP; what models use on the CPU */

/* The backend called `name` ("cpu", "ref"; "cuda" once it exists), or NULL with lp_seterr. */
const be_backend *be_get(const char *name);
/* The backend for a model loaded with dtype= (`load`): "bf16" on "cuda" (and the test device
 * "guard") stores the frozen weights as bf16 and multiplies on bf16 tensor cores, "f32" keeps
 * them f32, whatever LOUPE_CUDA_BF16 says; anything else (and the CPU, which computes in f32)
 * is be_get(name). */
const be_backend *be_get_dtype(const char *name, const char *dtype);

/* Wait for the queued work of every device started so far (a GPU's ops return before their
 * work is done): the `time` command, before it reads the clock. Nothing on the CPU. */
void be_sync_all(void);

#endif
