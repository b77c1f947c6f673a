/* cuda_int.cuh — shared by the CUDA backend's .cu files (not part of the public API).
 *
 * One stream and one cuBLAS handle for the whole process: every op enqueues on cu_stream,
 * so ops run in the order they are called and a buffer freed into the pool may be handed
 * out again at once (later work on the same stream cannot overtake earlier work). No op
 * waits for the device except those that must return a value to the host (the checked
 * embeddings and cross_entropy_forward, which validate ids and labels; clip_grad_norm;
 * to_host); `sync` is cudaStreamSynchronize. All of them wait through cu_wait, counted.
 *
 * Failures of the CUDA API inside an op are broken invariants (a kernel on a bad address,
 * a lost device): they print where and why and abort, as assert() would. Out of memory is
 * the user's business and goes through alloc's NULL + lp_seterr instead, or, inside an op,
 * through cu_scratch's NULL and the table's op_failed. */
#ifndef LOUPE_CUDA_INT_CUH
#define LOUPE_CUDA_INT_CUH
#include <cublas_v2.h>
#include <cuda_runtime.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

extern "C" {
#include "backend/backend.h"
#include "util/err.h"
#include "util/mem.h"
}

extern cudaStream_t cu_stream;
extern cublasHandle_t cu_blas;

[[noreturn]] void cu_fatal(const char *what, const char *file, int line);

#define CU_CHECK(x) do { cudaError_t _e = (x); \
    if (_e != cudaSuccess) cu_fatal(cudaGetErrorString(_e), __FILE__, __LINE__); } while (0)
#define CUBLAS_CHECK(x) do { cublasStatus_t _s = (x); \
    if (_s != CUBLAS_STATUS_SUCCESS) cu_fatal(cublasGetStatusString(_s), __FILE__, __LINE__); } while (0)
/* After a kernel launch: catches bad launch configurations at once (asynchronous faults
 * surface at the next synchronising call). */
#define CU_LAUNCHED() CU_CHECK(cudaGetLastError())

/* Grid for n elementwise items at 256 threads, capped: the kernels loop grid-stride. */
static inline unsigned cu_blocks(size_t n) {
    size_t b = (n + 255) / 256;
    if (b < 1) b = 1;
    return (unsigned)(b > 65535u * 4 ? 65535u * 4 : b);
}
#define CU_GRID_STRIDE(i, n) \
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < (n); \
         i += (size_t)gridDim.x * blockDim.x)

/* Pool scratch for an op's temporaries: freed right after the launches that use it are
 * enqueued (stream order makes the reuse safe). When the pool cannot give it, cu_scratch
 * returns NULL, sets lp_seterr ("OP: out of GPU memory for N MB of scratch (M MB free); try
 * a smaller batch or sequence length") and records the first such failure for cu_op_failed
 * (the table's op_failed, backend.h); the op then launches nothing more, frees what it took
 * and returns. `op` names the table's op. */
void *cu_scratch(const char *op, size_t bytes);
/* The host waits for the stream (cudaStreamSynchronize); every such wait of the backend goes
 * through here and is counted (be_cuda_waits, cuda_backend.h). */
void cu_wait(void);
void cu_scratch_free(void *p);
int cu_op_failed(void);

/* out (N,OUT) = bias broadcast over the rows; returns the beta (1) for the product that
 * then adds into it, or 0 without a bias (nothing written) */
float cu_bias_fill(float *out, const float *bias, int N, int OUT);
float cu_bias_fill_add(float *out, const float *bias, int N, int OUT, int add);

/* Row-major GEMM with explicit leading dimensions (row strides):
 * c = alpha·op(a)·op(b) + beta·c, op(a) is (M,K), op(b) is (K,N), c is (M,N). */
void cu_gemm(int ta, int tb, int M, int N, int K, float alpha, const float *a, int lda,
             const float *b, int ldb, float beta, float *c, int ldc);
/* The same over `count` matrices given by device arrays of pointers. */
void cu_gemm_batched(int ta, int tb, int M, int N, int K, float alpha, const float *const *a,
                     int lda, const float *const *b, int ldb, float beta, float *const *c,
                     int ldc, int count);
/* The same with TF32 tensor cores (f32 accumulation) whatever the handle's math mode. */
void cu_gemm_batched_tf32(int ta, int tb, int M, int N, int K, float alpha,
                          const float *const *a, int lda, const float *const *b, int ldb,
                          float beta, float *const *c, int ldc, int count);

/* Attention's batched GEMMs over (batch, head) pairs (cuda_attn.cu, cuda_attn_blk.cu): the
 * pointer of matrix z, with g = z / (B·HN) (a GQA group member), b = (z % (B·HN)) / HN and
 * hh = z % HN, is base + b·sb + ((hh / div)·mul + g·gadd)·sh; cu_fill_ptrs writes `count`
 * of them into a device array, on the stream. */
typedef struct {
    const float *base;
    size_t sb, sh;
    int div, mul, gadd;
} cu_ptr_spec;
void cu_fill_ptrs(const float **out, cu_ptr_spec s, int B, int HN, int count);
static inline cu_ptr_spec cu_spec(const float *base, size_t sb, size_t sh, int div, int mul,
                                  int gadd) {
    cu_ptr_spec s = {base, sb, sh, div, mul, gadd};
    return s;
}
/* Threads for one row kernel block over n columns: a multiple of 32, 32..256. */
static inline int cu_row_threads(int n) {
    int t = (n + 31) / 32 * 32;
    return t < 32 ? 32 : t > 256 ? 256 : t;
}
/* bf16 as the top 16 bits of an f32, rounded to nearest even (NaN stays NaN), and back: the
 * reference's rounding (nn/ops_bf16.c) to the bit, in integer arithmetic (cuda_bf16.cu,
 * cuda_attn_tc.cu). */
static __device__ __forceinline__ uint16_t cu_bf16_from(float f) {
    unsigned u = __float_as_uint(f);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((u >> 16) | 0x40);
    u += 0x7fffu + ((u >> 16) & 1u);
    return (uint16_t)(u >> 16);
}
static __device__ __forceinline__ float cu_bf16_to(uint16_t h) {
    return __uint_as_float((unsigned)h << 16);
}

/* The keys queries [i0, i1) (i1 ≤ T) can see: [*kb, *ke) (causal: up to the last query;
 * sliding window: from the first query − window + 1). The fused attentions' tiling. */
static __host__ __device__ __forceinline__ void cu_att_keys(int causal, int window, int T,
                                                            int i0, int i1, int *kb, int *ke) {
    *ke = causal ? i1 : T;
    *kb = window > 0 && i0 - window + 1 > 0 ? i0 - window + 1 : 0;
}

/* Key j visible to query i of batch b (padding mask over Tk keys, causal, sliding window). */
static __device__ __forceinline__ bool cu_att_visible(const int *amask, int causal, int window,
                                                      int b, int Tk, int i, int j) {
    if (amask && !amask[(size_t)b * Tk + j]) return false;
    if (causal && j > i) return false;
    if (window > 0 && i - j >= window) return false;
    return true;
}

/* D_i = dout_i·out_i for each of the `rows` (b, t, h) rows of D values, in that order
 * (cuda_attn_blk.cu, cuda_attn_tc.cu); with half, of the operands rounded to bf16 (as the
 * products of cuda_attn_tc.cu see dout, so dP − D_i is 0 where it should be). */
void cu_att_rowdot(float *rowdot, const float *dout, const float *out, int D, size_t rows,
                   int half);

/* Soft-cap, masks and softmax in place over the rows of attention scores S (n·rows, Tk):
 * row r of matrix z = b·H + h is query i0 + r against keys kb..kb+Tk−1; amask has rows of
 * T; lse (or NULL), rows of T, gets each row's log-sum-exp (cuda_attn.cu). */
void cu_att_softmax(float *S, float *lse, const int *amask, const nn_attn_params *p, int n,
                    int rows, int Tk, int i0, int kb, int T, int H);

/* Cases 1 … 7 of a switch that picks a kernel's size template argument (cuda_flash.cu,
 * cuda_attn_tc.cu add their larger sizes): CALL(n) launches the instance for n. */
#define CU_CASES_1_7(CALL)                                                                   \
    case 1: CALL(1); break;                                                                  \
    case 2: CALL(2); break;                                                                  \
    case 3: CALL(3); break;                                                                  \
    case 4: CALL(4); break;                                                                  \
    case 5: CALL(5); break;                                                                  \
    case 6: CALL(6); break;                                                                  \
    case 7: CALL(7); break;

/* Warp and block sums (blockDim.x a multiple of 32, at most 1024). */
template <typename T> __device__ __forceinline__ T cu_warp_sum(T v) {
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}
template <typename T> __device__ __forceinline__ T cu_warp_max(T v) {
    for (int o = 16; o > 0; o >>= 1) v = max(v, __shfl_xor_sync(0xffffffffu, v, o));
    return v;
}
/* Every thread of the block gets the total. `sh` holds 32 T. */
template <typename T> __device__ __forceinline__ T cu_block_sum(T v, T *sh) {
    int lane = threadIdx.x & 31, w = threadIdx.x >> 5, nw = (blockDim.x + 31) >> 5;
    v = cu_warp_sum(v);
    __syncthreads();   // sh may still be read by a previous call
    if (lane == 0) sh[w] = v;
    __syncthreads();
    v = lane < nw ? sh[lane] : (T)0;
    return cu_warp_sum(v);
}
template <typename T> __device__ __forceinline__ T cu_block_max(T v, T *sh) {
    int lane = threadIdx.x & 31, w = threadIdx.x >> 5, nw = (blockDim.x + 31) >> 5;
    v = cu_warp_max(v);
    __syncthreads();
    if (lane == 0) sh[w] = v;
    __syncthreads();
    v = lane < nw ? sh[lane] : (T)-INFINITY;
    return cu_warp_max(v);
}

/* A log-sum-exp in parts: each thread keeps a running (max m, sum s of exp(x − m)) pair,
 * rescaling s when the max grows (online softmax); cu_block_lse merges the block's pairs
 * and gives every thread log Σ exp. `shm`, `shs` hold 32 floats each. */
__device__ __forceinline__ void cu_lse_add(float &m, float &s, float x) {
    if (x > m) {
        s = s * expf(m - x) + 1.0f;
        m = x;
    } else if (x != -INFINITY) {
        s += expf(x - m);
    }
}
__device__ __forceinline__ void cu_lse_merge(float &m, float &s, float m2, float s2) {
    float mx = fmaxf(m, m2);
    if (mx == -INFINITY) return;   // both empty
    s = s * expf(m - mx) + s2 * expf(m2 - mx);
    m = mx;
}
__device__ __forceinline__ float cu_block_lse(float m, float s, float *shm, float *shs) {
    for (int o = 16; o > 0; o >>= 1) {
        float m2 = __shfl_xor_sync(0xffffffffu, m, o), s2 = __shfl_xor_sync(0xffffffffu, s, o);
        cu_lse_merge(m, s, m2, s2);
    }
    int lane = threadIdx.x & 31, w = threadIdx.x >> 5, nw = blockDim.x >> 5;
    __syncthreads();   // shm, shs may still be read by a previous call
    if (lane == 0) shm[w] = m, shs[w] = s;
    __syncthreads();
    m = lane < nw ? shm[lane] : -INFINITY;
    s = lane < nw ? shs[lane] : 0.0f;
    for (int o = 16; o > 0; o >>= 1) {
        float m2 = __shfl_xor_sync(0xffffffffu, m, o), s2 = __shfl_xor_sync(0xffffffffu, s, o);
        cu_lse_merge(m, s, m2, s2);
    }
    return __shfl_sync(0xffffffffu, m + logf(s), 0);   // lane 0's: one value for the block
}

/* Column reduction: out[c] += Σ_n a[n,c]·f(n,c) with f = 1 when b is NULL, else
 * (b[n,c] − mean[n])·rs[n] (mean, rs optional). Bias, IA3 and norm weight gradients. */
void cu_col_sum(float *out, const float *a, const float *b, const float *mean, const float *rs,
                int N, int C);

/* ---- ops (each as its reference in nn/ops.h) ---- */
void cu_matmul(float *c, const float *a, const float *b, int M, int N, int K, int trans_a,
               int trans_b, float alpha, float beta);
void cu_linear_forward(float *out, const float *inp, const float *weight, const float *bias,
                       int N, int IN, int OUT);
void cu_linear_backward(float *dinp, float *dweight, float *dbias, const float *dout,
                        const float *inp, const float *weight, int N, int IN, int OUT);
void cu_conv1d_forward(float *out, const float *inp, const float *weight, const float *bias,
                       int N, int IN, int OUT);
void cu_conv1d_backward(float *dinp, float *dweight, float *dbias, const float *dout,
                        const float *inp, const float *weight, int N, int IN, int OUT);
void cu_lora_forward(float *out, float *h, const float *inp, const float *mask, const float *A,
                     const float *B, float scale, int N, int IN, int OUT, int R);
void cu_lora_forward_first(float *out, float *h, const float *inp, const float *mask,
                           const float *A, const float *B, float scale, int N, int IN, int OUT,
                           int R);
void cu_lora_backward(float *dinp, float *dA, float *dB, float *dh, const float *dout,
                      const float *h, const float *inp, const float *mask, const float *A,
                      const float *B, float scale, int N, int IN, int OUT, int R);
void cu_lora_backward_first(float *dinp, float *dA, float *dB, float *dh, const float *dout,
                            const float *h, const float *inp, const float *mask,
                            const float *A, const float *B, float scale, int N, int IN,
                            int OUT, int R);

int cu_embedding_forward(float *out, const int *ids, const float *table, int N, int V, int C);
void cu_embedding_rows(float *out, const int *ids, const float *table, int N, int C, int add);
int cu_embedding_add_forward(float *out, const int *ids, const float *table, int N, int V,
                             int C);
void cu_embedding_backward(float *dtable, const float *dout, const int *ids, int N, int C);
void cu_dropout_mask(float *mask, uint64_t seed, uint64_t offset, float p, size_t n);
void cu_q8_linear_forward(float *out, const float *inp, const int8_t *cb, const float *scb,
                          const float *bias, int N, int IN, int OUT, float threshold,
                          float *work);
void cu_row_norm(float *norm, const float *w, int rows, int cols, int trans);
void cu_dora_forward(float *out, float *v, float *g, const float *y, const float *su,
                     const float *bias, const float *m, const float *norm, int N, int OUT);
void cu_channel_scale_forward(float *out, const float *inp, const float *l, int N, int C);
void cu_channel_scale_backward(float *dinp, float *dl, const float *dout, const float *inp,
                               const float *l, int N, int C);
void cu_rmsnorm_forward(float *out, float *rstd, const float *inp, const float *weight,
                        float eps, int add_one, int N, int C);
void cu_rmsnorm_backward(float *dinp, float *dweight, const float *dout, const float *rstd,
                         const float *inp, const float *weight, int add_one, int N, int C);
void cu_layernorm_forward(float *out, float *mean, float *rstd, const float *inp,
                          const float *weight, const float *bias, float eps, int N, int C);
void cu_layernorm_backward(float *dinp, float *dweight, float *dbias, const float *dout,
                           const float *mean, const float *rstd, const float *inp,
                           const float *weight, int N, int C);
void cu_rope_forward(float *out, const float *inp, const float *cos, const float *sin, int N,
                     int H, int D);
void cu_rope_backward(float *dinp, const float *dout, const float *cos, const float *sin, int N,
                      int H, int D);

void cu_attention_forward(float *out, float *probs, const float *q, const float *k,
                          const float *v, const int *amask, const nn_attn_params *p, int B,
                          int T, int H, int KVH, int D);
void cu_attention_kv_forward(float *out, float *probs, const float *q, const float *k,
                             const float *v, const int *amask, const nn_attn_params *p, int B,
                             int Tq, int Tk, int q_off, int H, int KVH, int D);
void cu_attention_backward(float *dq, float *dk, float *dv, float *dscores, const float *dout,
                           const float *probs, const float *q, const float *k, const float *v,
                           const int *amask, const nn_attn_params *p, int B, int T, int H,
                           int KVH, int D);
void cu_attention_fused_forward(float *out, float *lse, const float *q, const float *k,
                                const float *v, const int *amask, const nn_attn_params *p,
                                int B, int T, int H, int KVH, int D);
void cu_attention_fused_backward(float *dq, float *dk, float *dv, const float *dout,
                                 const float *out, const float *lse, const float *q,
                                 const float *k, const float *v, const int *amask,
                                 const nn_attn_params *p, int B, int T, int H, int KVH, int D);
void cu_attention_blk_forward(float *out, float *lse, const float *q, const float *k,
                              const float *v, const int *amask, const nn_attn_params *p,
                              int B, int T, int H, int KVH, int D);
void cu_attention_blk_backward(float *dq, float *dk, float *dv, const float *dout,
                               const float *out, const float *lse, const float *q,
                               const float *k, const float *v, const int *amask,
                               const nn_attn_params *p, int B, int T, int H, int KVH, int D);
/* The same with bf16 tensor-core products and the scores in shared memory (cuda_attn_tc.cu;
 * the bf16 table's): heads up to cu_attention_tc_dmax() values, larger ones go to the _tc
 * blocked ops below. */
void cu_attention_tc_forward(float *out, float *lse, const float *q, const float *k,
                             const float *v, const int *amask, const nn_attn_params *p, int B,
                             int T, int H, int KVH, int D);
void cu_attention_tc_backward(float *dq, float *dk, float *dv, const float *dout,
                              const float *out, const float *lse, const float *q,
                              const float *k, const float *v, const int *amask,
                              const nn_attn_params *p, int B, int T, int H, int KVH, int D);
int cu_attention_tc_dmax(void);
/* Dynamic shared memory a block may have on this device (cudaFuncSetAttribute's limit). */
size_t cu_smem_optin(void);
/* the same with the products on TF32 tensor cores (the bf16 table's, be_bf16_ops) */
void cu_attention_blk_tc_forward(float *out, float *lse, const float *q, const float *k,
                                 const float *v, const int *amask, const nn_attn_params *p,
                                 int B, int T, int H, int KVH, int D);
void cu_attention_blk_tc_backward(float *dq, float *dk, float *dv, const float *dout,
                                  const float *out, const float *lse, const float *q,
                                  const float *k, const float *v, const int *amask,
                                  const nn_attn_params *p, int B, int T, int H, int KVH, int D);

void cu_act_forward(float *out, const float *inp, nn_act act, size_t n);
void cu_act_backward(float *dinp, const float *dout, const float *inp, nn_act act, size_t n);
void cu_gated_forward(float *out, const float *gate, const float *up, nn_act act, size_t n);
void cu_gated_backward(float *dgate, float *dup, const float *dout, const float *gate,
                       const float *up, nn_act act, size_t n);
void cu_softmax_forward(float *out, const float *inp, int N, int C);
void cu_softmax_backward(float *dinp, const float *dout, const float *out, int N, int C);
int cu_cross_entropy_forward(float *loss, float *lse, int *count, const float *logits,
                             const int *targets, int N, int V);
void cu_cross_entropy_rows(float *rowloss, float *lse, const float *logits, const int *targets,
                           int N, int V);
void cu_cross_entropy_backward(float *dlogits, float dloss, const float *lse,
                               const float *logits, const int *targets, int count, int N, int V);
void cu_softcap_forward(float *out, const float *inp, float cap, size_t n);
void cu_softcap_backward(float *dinp, const float *dout, const float *out, float cap, size_t n);
void cu_slice_forward(float *out, const float *inp, int N, int CI, int off, int W);
void cu_slice_backward(float *dinp, const float *dout, int N, int CI, int off, int W);
void cu_add_forward(float *out, const float *a, const float *b, size_t n);
void cu_add_backward(float *da, float *db, const float *dout, size_t n);
void cu_mul_forward(float *out, const float *a, const float *b, size_t n);
void cu_mul_backward(float *da, float *db, const float *dout, const float *a, const float *b,
                     size_t n);
void cu_scale_forward(float *out, const float *inp, float s, size_t n);
void cu_scale_backward(float *dinp, const float *dout, float s, size_t n);
void cu_q4_dequant(float *out, const uint8_t *codes, const float *absmax, size_t n,
                   int blocksize, int type);
void cu_dq_dequant(float *absmax, const uint8_t *q, const float *absmax2, const float *code,
                   float offset, size_t nb);

/* bf16 weights (cuda_bf16.cu; backend.h, be_bf16_ops): uint16_t is be_bf16 */
void cu_bf16_round(uint16_t *dst, const float *src, size_t n);
void cu_bf16_widen(float *dst, const uint16_t *src, size_t n);
void cu_bf16_linear_forward_rounded(float *out, const uint16_t *inp, const uint16_t *weight,
                                    const float *bias, int N, int IN, int OUT, int conv1d,
                                    float beta);
void cu_bf16_gated_forward_rounded(float *out, uint16_t *hout, const float *gate,
                                   const float *up, nn_act act, size_t n);
void cu_bf16_gated_backward_rounded(float *dgate, float *dup, uint16_t *hgate, uint16_t *hup,
                                    const float *dout, const float *gate, const float *up,
                                    nn_act act, size_t n);
void cu_bf16_linear_backward_rounded(float *dinp, const uint16_t *dout, const uint16_t *weight,
                                     int N, int IN, int OUT, int conv1d, float beta);
void cu_bf16_head_loss_rows(float *rowloss, float *lse, uint16_t *dlraw, const float *raw,
                            const int *targets, int N, int V, float cap, float dloss, int count);
void cu_bf16_embedding_rows(float *out, const int *ids, const uint16_t *table, int N, int C);
int cu_bf16_embedding_forward(float *out, const int *ids, const uint16_t *table, int N, int V,
                              int C);
void cu_bf16_linear_forward(float *out, const float *inp, const uint16_t *weight,
                            const float *bias, int N, int IN, int OUT, int conv1d);
void cu_bf16_linear_backward(float *dinp, const float *dout, const uint16_t *weight, int N,
                             int IN, int OUT, int conv1d, float beta);
/* Token ids on the device checked on the host (one synchronising copy): 0, or -1 +
 * lp_seterr as the reference's check (cuda_ops.cu). */
int cu_check_ids(const int *ids, int N, int V);

void cu_adamw_step(float *param, float *m, float *v, const float *grad, size_t n, double lr,
                   double beta1, double beta2, double eps, double weight_decay, int t);
void cu_sgd_step(float *param, float *buf, const float *grad, size_t n, double lr,
                 double momentum, double weight_decay, int t);
double cu_clip_grad_norm(float *const *grads, const size_t *sizes, int count, double max_norm);

#endif
