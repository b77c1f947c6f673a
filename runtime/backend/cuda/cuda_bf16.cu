/* cuda_bf16.cu — bf16 weights (backend.h, be_bf16_ops; on with LOUPE_CUDA_BF16=1): the
 * f32 ↔ bf16 conversions, the token embedding from a bf16 table, and the Linear / Conv1D
 * products with bf16 tensor-core GEMMs.
 *
 * A product rounds its f32 activation to bf16 in pool scratch (one elementwise kernel, N·IN
 * halves, freed once the GEMM is queued) and calls cublasGemmEx with bf16 A and B, an f32 C
 * and CUBLAS_COMPUTE_32F: tensor cores, exact bf16 products, f32 accumulation, as the
 * reference nn/ops_bf16.c (which sums in double). Row-major ↔ column-major as in
 * cuda_blas.cu: c = op(a)·op(b) is cᵀ = op(b)ᵀ·op(a)ᵀ, operands swapped.
 *
 * The kernels use no cuda_bf16.h intrinsics (a bf16 is the top half of an f32; rounding is
 * integer arithmetic, the reference's to the bit), so tests/gpu/emu runs this file on the
 * CPU with a plain-loop cublasGemmEx. */
#include "backend/cuda/cuda_int.cuh"

/* ---- conversions -------------------------------------------------------------------------- */

__device__ __forceinline__ uint16_t bf16_from(float f) {
    unsigned u = __float_as_uint(f);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((u >> 16) | 0x40);   // NaN stays NaN
    u += 0x7fffu + ((u >> 16) & 1u);   // round to nearest even
    return (uint16_t)(u >> 16);
}

__device__ __forceinline__ float bf16_to(uint16_t h) { return __uint_as_float((unsigned)h << 16); }

__global__ void bf16_round_kernel(uint16_t *dst, const float *src, size_t n) {
    CU_GRID_STRIDE(i, n) dst[i] = bf16_from(src[i]);
}

__global__ void bf16_widen_kernel(float *dst, const uint16_t *src, size_t n) {
    CU_GRID_STRIDE(i, n) dst[i] = bf16_to(src[i]);
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
    CU_GRID_STRIDE(i, n) out[i] = bf16_to(table[(size_t)ids[i / C] * C + i % C]);
}

int cu_bf16_embedding_forward(float *out, const int *ids, const uint16_t *table, int N, int V,
                              int C) {
    if (cu_check_ids(ids, N, V) < 0) return -1;
    size_t n = (size_t)N * C;
    if (n) {
        bf16_embed_kernel<<<cu_blocks(n), 256, 0, cu_stream>>>(out, ids, table, n, C);
        CU_LAUNCHED();
    }
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

/* x rounded to bf16 in pool scratch (free it with cu_scratch_free once the product is queued). */
static uint16_t *rounded(const float *x, size_t n) {
    uint16_t *r = (uint16_t *)cu_scratch((n ? n : 1) * sizeof(uint16_t));
    cu_bf16_round(r, x, n);
    return r;
}

__global__ void bf16_bias_kernel(float *out, const float *bias, size_t n, int OUT) {
    CU_GRID_STRIDE(i, n) out[i] = bias[i % OUT];
}

void cu_bf16_linear_forward(float *out, const float *inp, const uint16_t *weight,
                            const float *bias, int N, int IN, int OUT, int conv1d) {
    size_t n = (size_t)N * OUT;
    if (!n) return;
    float beta = 0.0f;
    if (bias) {   // out = bias, then the product adds into it
        bf16_bias_kernel<<<cu_blocks(n), 256, 0, cu_stream>>>(out, bias, n, OUT);
        CU_LAUNCHED();
        beta = 1.0f;
    }
    uint16_t *x = rounded(inp, (size_t)N * IN);
    // Linear: x·Wᵀ, W (OUT,IN); Conv1D: x·W, W (IN,OUT)
    gemm_bf16(0, !conv1d, N, OUT, IN, 1.0f, x, IN, weight, conv1d ? OUT : IN, beta, out, OUT);
    cu_scratch_free(x);
}

void cu_bf16_linear_backward(float *dinp, const float *dout, const uint16_t *weight, int N,
                             int IN, int OUT, int conv1d, float beta) {
    if (!N || !IN) return;
    uint16_t *d = rounded(dout, (size_t)N * OUT);
    // Linear: dout·W, W (OUT,IN); Conv1D: dout·Wᵀ, W (IN,OUT)
    gemm_bf16(0, conv1d, N, IN, OUT, 1.0f, d, OUT, weight, conv1d ? OUT : IN, beta, dinp, IN);
    cu_scratch_free(d);
}
