/* cuda_blas.cu — the ops that are matrix products: matmul, linear, Conv1D, LoRA, all
 * through cuBLAS, plus the column reduction that bias and weight gradients share.
 *
 * cuBLAS is column-major; our tensors are row-major. A row-major (M,N) matrix with row
 * stride ld is, read column-major, its transpose (N,M) with the same ld. So
 * c = op(a)·op(b) (row-major) is cᵀ = op(b)ᵀ·op(a)ᵀ (column-major): call cuBLAS with the
 * operands swapped, m = N, n = M, and each operand's own transpose flag. */
#include "backend/cuda/cuda_int.cuh"

void cu_gemm(int ta, int tb, int M, int N, int K, float alpha, const float *a, int lda,
             const float *b, int ldb, float beta, float *c, int ldc) {
    CUBLAS_CHECK(cublasSgemm(cu_blas, tb ? CUBLAS_OP_T : CUBLAS_OP_N, ta ? CUBLAS_OP_T : CUBLAS_OP_N,
                             N, M, K, &alpha, b, ldb, a, lda, &beta, c, ldc));
}

void cu_gemm_batched(int ta, int tb, int M, int N, int K, float alpha, const float *const *a,
                     int lda, const float *const *b, int ldb, float beta, float *const *c,
                     int ldc, int count) {
    CUBLAS_CHECK(cublasSgemmBatched(cu_blas, tb ? CUBLAS_OP_T : CUBLAS_OP_N,
                                    ta ? CUBLAS_OP_T : CUBLAS_OP_N, N, M, K, &alpha, b, ldb, a,
                                    lda, &beta, c, ldc, count));
}

/* The same on tensor cores whatever the handle's math mode: TF32 operands (10 mantissa bits,
 * rounded by the hardware), f32 accumulation. The bf16 table's attention (cuda_attn_blk.cu). */
void cu_gemm_batched_tf32(int ta, int tb, int M, int N, int K, float alpha,
                          const float *const *a, int lda, const float *const *b, int ldb,
                          float beta, float *const *c, int ldc, int count) {
    CUBLAS_CHECK(cublasGemmBatchedEx(cu_blas, tb ? CUBLAS_OP_T : CUBLAS_OP_N,
                                     ta ? CUBLAS_OP_T : CUBLAS_OP_N, N, M, K, &alpha,
                                     (const void *const *)b, CUDA_R_32F, ldb,
                                     (const void *const *)a, CUDA_R_32F, lda, &beta,
                                     (void *const *)c, CUDA_R_32F, ldc, count,
                                     CUBLAS_COMPUTE_32F_FAST_TF32, CUBLAS_GEMM_DEFAULT));
}

/* a stored (M,K) or, transposed, (K,M): its row stride */
static int ld_of(int trans, int rows, int cols) { return trans ? rows : cols; }

void cu_matmul(float *c, const float *a, const float *b, int M, int N, int K, int trans_a,
               int trans_b, float alpha, float beta) {
    // cuBLAS reads c only when beta != 0, as the reference (c may hold NaN garbage)
    cu_gemm(trans_a, trans_b, M, N, K, alpha, a, ld_of(trans_a, M, K), b, ld_of(trans_b, K, N),
            beta, c, N);
}

/* ---- column reduction -------------------------------------------------------------------
 * A block is 32 columns × 8 row lanes and covers ROWS rows; the 8 partial sums of a column
 * are added in shared memory and the block's total goes into out with one atomicAdd, so a
 * column gets N/ROWS atomics (64 for 8192 rows) rather than N. */
#define COL_ROWS 128

__global__ void col_sum_kernel(float *out, const float *a, const float *b, const float *mean,
                               const float *rs, int N, int C) {
    __shared__ float part[8][33];
    int c = blockIdx.x * 32 + threadIdx.x;
    float acc = 0.0f;
    // a block covers chunks blockIdx.y, + gridDim.y, … (gridDim.y is capped at 65535)
    for (int r0 = blockIdx.y * COL_ROWS; c < C && r0 < N; r0 += gridDim.y * COL_ROWS) {
        int r1 = min(r0 + COL_ROWS, N);
        for (int n = r0 + threadIdx.y; n < r1; n += 8) {
            size_t i = (size_t)n * C + c;
            float f = 1.0f;
            if (b) f = (b[i] - (mean ? mean[n] : 0.0f)) * (rs ? rs[n] : 1.0f);
            acc += a[i] * f;
        }
    }
    part[threadIdx.y][threadIdx.x] = acc;
    __syncthreads();
    if (threadIdx.y == 0 && c < C) {
        float s = 0.0f;
        for (int y = 0; y < 8; y++) s += part[y][threadIdx.x];
        atomicAdd(out + c, s);
    }
}

void cu_col_sum(float *out, const float *a, const float *b, const float *mean, const float *rs,
                int N, int C) {
    if (N <= 0 || C <= 0) return;
    int chunks = (N + COL_ROWS - 1) / COL_ROWS;
    dim3 grid((C + 31) / 32, chunks > 65535 ? 65535 : chunks), block(32, 8);
    col_sum_kernel<<<grid, block, 0, cu_stream>>>(out, a, b, mean, rs, N, C);
    CU_LAUNCHED();
}

/* ---- linear and Conv1D ------------------------------------------------------------------ */

__global__ void bias_rows_kernel(float *out, const float *bias, size_t n, int OUT, int add) {
    CU_GRID_STRIDE(i, n) out[i] = add ? out[i] + bias[i % OUT] : bias[i % OUT];
}

/* out = bias broadcast (or nothing; add: out += bias), then the product adds into it with
 * the beta returned */
float cu_bias_fill_add(float *out, const float *bias, int N, int OUT, int add) {
    if (!bias) return add ? 1.0f : 0.0f;
    size_t n = (size_t)N * OUT;
    bias_rows_kernel<<<cu_blocks(n), 256, 0, cu_stream>>>(out, bias, n, OUT, add);
    CU_LAUNCHED();
    return 1.0f;
}

float cu_bias_fill(float *out, const float *bias, int N, int OUT) {
    return cu_bias_fill_add(out, bias, N, OUT, 0);
}

void cu_linear_forward(float *out, const float *inp, const float *weight, const float *bias,
                       int N, int IN, int OUT) {
    float beta = cu_bias_fill(out, bias, N, OUT);
    cu_gemm(0, 1, N, OUT, IN, 1.0f, inp, IN, weight, IN, beta, out, OUT);   // x·Wᵀ
}

void cu_linear_backward(float *dinp, float *dweight, float *dbias, const float *dout,
                        const float *inp, const float *weight, int N, int IN, int OUT) {
    if (dinp) cu_gemm(0, 0, N, IN, OUT, 1.0f, dout, OUT, weight, IN, 1.0f, dinp, IN);
    if (dweight) cu_gemm(1, 0, OUT, IN, N, 1.0f, dout, OUT, inp, IN, 1.0f, dweight, IN);
    if (dbias) cu_col_sum(dbias, dout, NULL, NULL, NULL, N, OUT);
}

void cu_conv1d_forward(float *out, const float *inp, const float *weight, const float *bias,
                       int N, int IN, int OUT) {
    float beta = cu_bias_fill(out, bias, N, OUT);
    cu_gemm(0, 0, N, OUT, IN, 1.0f, inp, IN, weight, OUT, beta, out, OUT);   // x·W
}

void cu_conv1d_backward(float *dinp, float *dweight, float *dbias, const float *dout,
                        const float *inp, const float *weight, int N, int IN, int OUT) {
    if (dinp) cu_gemm(0, 1, N, IN, OUT, 1.0f, dout, OUT, weight, OUT, 1.0f, dinp, IN);
    if (dweight) cu_gemm(1, 0, IN, OUT, N, 1.0f, inp, IN, dout, OUT, 1.0f, dweight, OUT);
    if (dbias) cu_col_sum(dbias, dout, NULL, NULL, NULL, N, OUT);
}

/* ---- LoRA ----------------------------------------------------------------------------
 * With dropout the masked input x∘m is formed in pool scratch (N·IN floats) for the
 * products that read it; without, x is used as it is. The scratch is taken before the first
 * launch: when it cannot be had the op does nothing (cu_scratch recorded why). */

__global__ void mul_kernel(float *out, const float *a, const float *b, size_t n) {
    CU_GRID_STRIDE(i, n) out[i] = a[i] * b[i];
}

__global__ void add_mul_kernel(float *out, const float *a, const float *b, size_t n) {
    CU_GRID_STRIDE(i, n) out[i] += a[i] * b[i];
}

/* xm = x∘m */
static void masked(float *xm, const float *inp, const float *mask, size_t n) {
    mul_kernel<<<cu_blocks(n), 256, 0, cu_stream>>>(xm, inp, mask, n);
    CU_LAUNCHED();
}

static void lora_fwd(float *out, float *h, const float *inp, const float *mask, const float *A,
                     const float *B, float scale, int N, int IN, int OUT, int R, float beta) {
    size_t n = (size_t)N * IN;
    const float *x = inp;
    if (mask) {
        float *xm = (float *)cu_scratch("lora_forward", n * sizeof(float));
        if (!xm) return;
        masked(xm, inp, mask, n);
        x = xm;
    }
    cu_gemm(0, 1, N, R, IN, 1.0f, x, IN, A, IN, 0.0f, h, R);          // h = x·Aᵀ
    cu_gemm(0, 1, N, OUT, R, scale, h, R, B, R, beta, out, OUT);     // out (+)= s·h·Bᵀ
    if (x != inp) cu_scratch_free((void *)x);
}

void cu_lora_forward(float *out, float *h, const float *inp, const float *mask, const float *A,
                     const float *B, float scale, int N, int IN, int OUT, int R) {
    lora_fwd(out, h, inp, mask, A, B, scale, N, IN, OUT, R, 1.0f);
}

void cu_lora_forward_first(float *out, float *h, const float *inp, const float *mask,
                           const float *A, const float *B, float scale, int N, int IN, int OUT,
                           int R) {
    lora_fwd(out, h, inp, mask, A, B, scale, N, IN, OUT, R, 0.0f);
}

static void lora_bwd(float *dinp, float *dA, float *dB, float *dh, const float *dout,
                     const float *h, const float *inp, const float *mask, const float *A,
                     const float *B, float scale, int N, int IN, int OUT, int R, float beta) {
    size_t n = (size_t)N * IN;
    // one block of scratch serves x∘m for dA, then dh·A for dinp (stream order)
    float *s = NULL;
    if (mask && (dA || dinp)) {
        s = (float *)cu_scratch("lora_backward", n * sizeof(float));
        if (!s) return;
    }
    cu_gemm(0, 0, N, R, OUT, scale, dout, OUT, B, R, 0.0f, dh, R);       // dh = s·dout·B
    if (dB) cu_gemm(1, 0, OUT, R, N, scale, dout, OUT, h, R, 1.0f, dB, R);   // += s·doutᵀ·h
    if (dA) {
        const float *x = inp;
        if (mask) masked(s, inp, mask, n), x = s;
        cu_gemm(1, 0, R, IN, N, 1.0f, dh, R, x, IN, 1.0f, dA, IN);      // += dhᵀ·(x∘m)
    }
    if (dinp) {
        if (!mask) {
            cu_gemm(0, 0, N, IN, R, 1.0f, dh, R, A, IN, beta, dinp, IN);  // (+)= dh·A
        } else {   // (+)= (dh·A)∘m
            cu_gemm(0, 0, N, IN, R, 1.0f, dh, R, A, IN, 0.0f, s, IN);
            if (beta != 0.0f)
                add_mul_kernel<<<cu_blocks(n), 256, 0, cu_stream>>>(dinp, s, mask, n);
            else
                mul_kernel<<<cu_blocks(n), 256, 0, cu_stream>>>(dinp, s, mask, n);
            CU_LAUNCHED();
        }
    }
    cu_scratch_free(s);
}

void cu_lora_backward(float *dinp, float *dA, float *dB, float *dh, const float *dout,
                      const float *h, const float *inp, const float *mask, const float *A,
                      const float *B, float scale, int N, int IN, int OUT, int R) {
    lora_bwd(dinp, dA, dB, dh, dout, h, inp, mask, A, B, scale, N, IN, OUT, R, 1.0f);
}

void cu_lora_backward_first(float *dinp, float *dA, float *dB, float *dh, const float *dout,
                            const float *h, const float *inp, const float *mask,
                            const float *A, const float *B, float scale, int N, int IN,
                            int OUT, int R) {
    lora_bwd(dinp, dA, dB, dh, dout, h, inp, mask, A, B, scale, N, IN, OUT, R, 0.0f);
}
