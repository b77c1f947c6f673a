/* cuda_bf16.cu — bf16 weights (backend.h, be_bf16_ops; on with LOUPE_CUDA_BF16=1): the
 * f32 ↔ bf16 conversions, the token embedding from a bf16 table, and the Linear / Conv1D
 * products with bf16 tensor-core GEMMs.
 *
 * A product rounds its f32 activation to bf16 in pool scratch (one elementwise kernel per
 * block of rows, at most cu_bf16_chunk values; freed once the GEMMs are queued) and calls
 * cublasGemmEx with bf16 A and B, an f32 C
 * and CUBLAS_COMPUTE_32F: tensor cores, exact bf16 products, f32 accumulation, as the
 * reference nn/ops_bf16.c (which sums in double). Row-major ↔ column-major as in
 * cuda_blas.cu: c = op(a)·op(b) is cᵀ = op(b)ᵀ·op(a)ᵀ, operands swapped.
 *
 * The kernels use no cuda_bf16.h intrinsics (a bf16 is the top half of an f32; rounding is
 * integer arithmetic, the reference's to the bit), so tests/gpu/emu runs this file on the
 * CPU with a plain-loop cublasGemmEx. */
#include "backend/cuda/cuda_int.cuh"

/* ---- conversions -------------------------------------------------------------------------- */

__global__ void bf16_round_kernel(uint16_t *dst, const float *src, size_t n) {
    CU_GRID_STRIDE(i, n) dst[i] = cu_bf16_from(src[i]);
}

__global__ void bf16_widen_kernel(float *dst, const uint16_t *src, size_t n) {
    CU_GRID_STRIDE(i, n) dst[i] = cu_bf16_to(src[i]);
}

void cu_bf16_round(uint16_t *dst, const float *src, size_t n) {
    if (!n) return;
    bf16_round_kernel<<<cu_blocks(n), 256, 0, cu_stream>>>(dst, src, n);
    CU_LAUNCHED();
}

void cu_bf16_widen(float *dst, const uint16_t *src, size_t n) {
    if (!n) return;
    bf16_widen_kernel<<<cu_blocks(n), 256, 0, cu_stream>>>(dst, src, n);
    CU_LAUNCHED();
}

/* ---- the token embedding ------------------------------------------------------------------- */

__global__ void bf16_embed_kernel(float *out, const int *ids, const uint16_t *table, size_t n,
                                  int C) {
    CU_GRID_STRIDE(i, n) out[i] = cu_bf16_to(table[(size_t)ids[i / C] * C + i % C]);
}

void cu_bf16_embedding_rows(float *out, const int *ids, const uint16_t *table, int N, int C) {
    size_t n = (size_t)N * C;
    if (n) {
        bf16_embed_kernel<<<cu_blocks(n), 256, 0, cu_stream>>>(out, ids, table, n, C);
        CU_LAUNCHED();
    }
}

int cu_bf16_embedding_forward(float *out, const int *ids, const uint16_t *table, int N, int V,
                              int C) {
    if (cu_check_ids(ids, N, V) < 0) return -1;
    cu_bf16_embedding_rows(out, ids, table, N, C);
    return 0;
}

/* ---- products ------------------------------------------------------------------------------ */

/* Row-major c (M,N) = alpha·op(a)·op(b) + beta·c, a and b bf16, c f32. */
static void gemm_bf16(int ta, int tb, int M, int N, int K, float alpha, const uint16_t *a,
                      int lda, const uint16_t *b, int ldb, float beta, float *c, int ldc) {
    CUBLAS_CHECK(cublasGemmEx(cu_blas, tb ? CUBLAS_OP_T : CUBLAS_OP_N,
                              ta ? CUBLAS_OP_T : CUBLAS_OP_N, N, M, K, &alpha, b, CUDA_R_16BF,
                              ldb, a, CUDA_R_16BF, lda, &beta, c, CUDA_R_32F, ldc,
                              CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
}

/* The rounded activation is made in row blocks of at most this many values (128 MB of bf16),
 * so the scratch stays small where K is the vocabulary: the LM head's input gradient rounds
 * dlogits (8 × 1024 × 256000 for gemma-2-2b: 4 GB as bf16 in one piece). A variable so the
 * emulator's check can make it small. */
size_t cu_bf16_chunk = (size_t)1 << 26;

/* c (N,M) = bf16(a) (N,K) · op(w) + beta·c, row block by row block; w (M,K) when trans_w,
 * else (K,M), row stride ldw. `op` names the caller in an out-of-scratch error (the product
 * is then skipped). */
static void product(const char *op, float *c, const float *a, const uint16_t *w, int ldw,
                    int trans_w, int N, int M, int K, float beta) {
    size_t rows = cu_bf16_chunk / (size_t)(K ? K : 1);
    if (rows < 1) rows = 1;
    if (rows > (size_t)N) rows = (size_t)N;
    uint16_t *r = (uint16_t *)cu_scratch(op, rows * K * sizeof(uint16_t) + 16);
    if (!r) return;
    for (size_t n0 = 0; n0 < (size_t)N; n0 += rows) {
        int nb = (int)((size_t)N - n0 < rows ? (size_t)N - n0 : rows);
        cu_bf16_round(r, a + n0 * K, (size_t)nb * K);   // after the previous block's GEMM
        gemm_bf16(0, trans_w, nb, M, K, 1.0f, r, K, w, ldw, beta, c + n0 * M, M);
    }
    cu_scratch_free(r);
}

void cu_bf16_linear_forward(float *out, const float *inp, const uint16_t *weight,
                            const float *bias, int N, int IN, int OUT, int conv1d) {
    if (!N || !OUT) return;
    float beta = cu_bias_fill(out, bias, N, OUT);
    // Linear: x·Wᵀ, W (OUT,IN); Conv1D: x·W, W (IN,OUT)
    product("linear_forward (bf16)", out, inp, weight, conv1d ? OUT : IN, !conv1d, N, OUT, IN,
            beta);
}

void cu_bf16_linear_forward_rounded(float *out, const uint16_t *inp, const uint16_t *weight,
                                    const float *bias, int N, int IN, int OUT, int conv1d,
                                    float beta) {
    if (!N || !OUT) return;
    float b = cu_bias_fill_add(out, bias, N, OUT, beta != 0.0f);
    gemm_bf16(0, !conv1d, N, OUT, IN, 1.0f, inp, IN, weight, conv1d ? OUT : IN, b, out, OUT);
}

void cu_bf16_linear_backward_rounded(float *dinp, const uint16_t *dout, const uint16_t *weight,
                                     int N, int IN, int OUT, int conv1d, float beta) {
    if (!N || !IN) return;
    gemm_bf16(0, conv1d, N, IN, OUT, 1.0f, dout, OUT, weight, conv1d ? OUT : IN, beta, dinp, IN);
}

void cu_bf16_linear_backward(float *dinp, const float *dout, const uint16_t *weight, int N,
                             int IN, int OUT, int conv1d, float beta) {
    if (!N || !IN) return;
    // Linear: dout·W, W (OUT,IN); Conv1D: dout·Wᵀ, W (IN,OUT)
    product("linear_backward (bf16)", dinp, dout, weight, conv1d ? OUT : IN, conv1d, N, IN,
            OUT, beta);
}

/* ---- the LM head's loss and gradient (backend.h head_loss_rows) ---------------------------
 * One block per row reads the raw logits twice: the soft-capped values' log-sum-exp (as
 * cross_entropy_rows' kernel), then the gradient, rounded to bf16 as it is written. The f32
 * ops take the same steps with the same float arithmetic (softcap_forward's cap·tanhf(x/cap),
 * cross_entropy_backward's g·(expf(l − z) − onehot), softcap_backward's ·(1 − t²)), writing
 * and reading N·V floats between them: for gemma-2-2b at 8 × 1024 (V = 256000) thirteen
 * passes over 8.4 GB become four (this kernel's two reads and bf16 write, and the GEMMs'). */

#define HEAD_THREADS 512

__device__ __forceinline__ float head_capped(float x, float cap) {
    return cap > 0.0f ? cap * tanhf(x / cap) : x;
}

__global__ void head_loss_kernel(float *rowloss, float *lse, uint16_t *dlraw, const float *raw,
                                 const int *targets, int V, float cap, float g) {
    __shared__ float shm[32], shs[32];
    size_t row = blockIdx.x;
    const float *r = raw + row * V;
    float m = -INFINITY, s = 0.0f;
    for (int v = threadIdx.x; v < V; v += blockDim.x) cu_lse_add(m, s, head_capped(r[v], cap));
    float z = cu_block_lse(m, s, shm, shs);
    int t = targets[row];
    if (threadIdx.x == 0) {
        lse[row] = z;
        rowloss[row] = t == -100 ? 0.0f : z - head_capped(r[t], cap);
    }
    uint16_t *d = dlraw + row * V;
    for (int v = threadIdx.x; v < V; v += blockDim.x) {
        float l = head_capped(r[v], cap);
        float gd = t == -100 ? 0.0f : g * (expf(l - z) - (v == t ? 1.0f : 0.0f));
        if (cap > 0.0f) {
            float u = l / cap;
            gd = 0.0f + gd * (1.0f - u * u);   // softcap_backward adds into zeros
        }
        d[v] = cu_bf16_from(gd);
    }
}

void cu_bf16_head_loss_rows(float *rowloss, float *lse, uint16_t *dlraw, const float *raw,
                            const int *targets, int N, int V, float cap, float dloss, int count) {
    if (N <= 0 || V <= 0) return;
    float g = count ? (float)((double)dloss / count) : 0.0f;   // as cross_entropy_backward
    head_loss_kernel<<<N, HEAD_THREADS, 0, cu_stream>>>(rowloss, lse, dlraw, raw, targets, V,
                                                        cap, g);
    CU_LAUNCHED();
}
