/* cpu_ops.c — the fast CPU ops: BLAS sgemm (MKL or OpenBLAS: blas.h) for every matrix
 * product (linear, LoRA, attention), OpenMP over rows for the rest. Same signatures and
 * semantics as the reference in nn/ops.h; tests/unit/test_nn_ops.c holds them to it op by op.
 *
 * Products are expressed as cblas_sgemm with leading dimensions and transposes chosen so
 * that no operand is copied: a head of q (B,T,H,D) is a (T,D) matrix with leading
 * dimension H·D.
 *
 * One thread pool: OpenMP. OpenBLAS (Debian's pthreads build) has its own workers, which
 * busy-wait after each call; interleaving them with OpenMP regions on the same cores
 * made attention 6× slower than either alone. So when OpenMP is present, the BLAS runs
 * single-threaded (MKL's sequential layer; OpenBLAS set once, process-wide) and large
 * products are split into row or column blocks across OpenMP threads, each block one sgemm;
 * attention runs one (batch, kv-head) group per thread. Without OpenMP, OpenBLAS keeps its
 * own threads (and MKL's sequential layer runs on one).
 *
 * Weight gradients that reduce over rows (norm weights, biases) are computed in a second
 * pass parallel over columns, so no two threads write the same element. */
#include "backend/cpu/cpu_ops.h"
#include "backend/cpu/cpu_vec.h"

#include "backend/cpu/blas.h"

#include <assert.h>
#include <math.h>
#include <pthread.h>
#include <string.h>
#ifdef _OPENMP
#include <omp.h>
#endif

/* Below this many elements a parallel region costs more than it saves. */
#define PAR_MIN 4096

/* Elementwise work in chunks of VCHUNK elements (whole cache lines), one chunk per call of a
 * cpu_vec.h kernel: FOR_CHUNKS(n) { kernel(p + off, …, len); } */
#define VCHUNK ((size_t)1 << 14)
#define FOR_CHUNKS(n)                                                                  \
    _Pragma("omp parallel for if ((n) > PAR_MIN)")                                     \
    for (size_t c_ = 0; c_ < ((n) + VCHUNK - 1) / VCHUNK; c_++)                        \
        for (size_t off = c_ * VCHUNK, len = (n) - off < VCHUNK ? (n) - off : VCHUNK; len; \
             len = 0)

static pthread_once_t blas_once = PTHREAD_ONCE_INIT;
static void blas_single_thread(void) {
#ifdef _OPENMP
    blas_one_thread();
#endif
}

void cpu_init(void) { pthread_once(&blas_once, blas_single_thread); }

/* ---- matmul ----------------------------------------------------------------------- */

/* c (M,N, leading dim ldc) = alpha·op(a)·op(b) + beta·c, row-major, split across threads:
 * by rows of c when M is large enough, else by columns (weight gradients like dA are
 * (r, in): few rows, many columns). Blocks of c are disjoint, so no synchronisation. */
static void gemm(int ta, int tb, int M, int N, int K, float alpha, const float *a, int lda,
                 const float *b, int ldb, float beta, float *c, int ldc) {
    if (M == 0 || N == 0) return;
    if (K == 0) {   // OpenBLAS rejects some empty shapes; the product is empty: c = beta·c
        for (int m = 0; m < M; m++)
            for (int n = 0; n < N; n++) {
                float *x = c + (size_t)m * ldc + n;
                *x = beta != 0.0f ? beta * *x : 0.0f;
            }
        return;
    }
    cpu_init();
    CBLAS_TRANSPOSE TA = ta ? CblasTrans : CblasNoTrans, TB = tb ? CblasTrans : CblasNoTrans;
    int nt = 1;
#ifdef _OPENMP
    if (!omp_in_parallel() && (double)M * N * K > 1e6) nt = omp_get_max_threads();
#endif
    if (nt <= 1) {
        cblas_sgemm(CblasRowMajor, TA, TB, M, N, K, alpha, a, lda, b, ldb, beta, c, ldc);
        return;
    }
    int by_rows = M >= 16 * nt || M >= N;
    int len = by_rows ? M : N, blk = (len + nt - 1) / nt;
    if (by_rows) blk = (blk + 7) & ~7;   // whole register tiles per block
#pragma omp parallel for num_threads(nt)
    for (int i0 = 0; i0 < len; i0 += blk) {
        int n_ = len - i0 < blk ? len - i0 : blk;
        if (by_rows)   // rows i0.. of op(a): row offset in a, or column offset if transposed
            cblas_sgemm(CblasRowMajor, TA, TB, n_, N, K, alpha,
                        a + (ta ? (size_t)i0 : (size_t)i0 * lda), lda, b, ldb, beta,
                        c + (size_t)i0 * ldc, ldc);
        else           // columns i0.. of op(b)
            cblas_sgemm(CblasRowMajor, TA, TB, M, n_, K, alpha, a, lda,
                        b + (tb ? (size_t)i0 * ldb : (size_t)i0), ldb, beta, c + i0, ldc);
    }
}

void cpu_matmul(float *c, const float *a, const float *b, int M, int N, int K, int trans_a,
                int trans_b, float alpha, float beta) {
    gemm(trans_a, trans_b, M, N, K, alpha, a, trans_a ? M : K, b, trans_b ? K : N, beta, c, N);
}

/* ---- embeddings ------------------------------------------------------------------- */

int cpu_embedding_forward(float *out, const int *ids, const float *table, int N, int V,
                          int C) {
    for (int n = 0; n < N; n++)   // validate first: a failed op leaves out untouched
        if (ids[n] < 0 || ids[n] >= V) return nn_embedding_forward(out, ids, table, N, V, C);
#pragma omp parallel for if ((size_t)N * C > PAR_MIN)
    for (int n = 0; n < N; n++)
        memcpy(out + (size_t)n * C, table + (size_t)ids[n] * C, (size_t)C * sizeof(float));
    return 0;
}

int cpu_embedding_add_forward(float *out, const int *ids, const float *table, int N, int V,
                              int C) {
    for (int n = 0; n < N; n++)
        if (ids[n] < 0 || ids[n] >= V)
            return nn_embedding_add_forward(out, ids, table, N, V, C);
#pragma omp parallel for if ((size_t)N * C > PAR_MIN)
    for (int n = 0; n < N; n++) {
        float *o = out + (size_t)n * C;
        const float *row = table + (size_t)ids[n] * C;
        for (int c = 0; c < C; c++) o[c] += row[c];
    }
    return 0;
}

void cpu_embedding_backward(float *dtable, const float *dout, const int *ids, int N, int C) {
    if (!dtable) return;
    // Two rows may share an id, so split the channels, not the rows, across threads.
#pragma omp parallel for if ((size_t)N * C > PAR_MIN)
    for (int c0 = 0; c0 < C; c0 += 64) {
        int c1 = c0 + 64 < C ? c0 + 64 : C;
        for (int n = 0; n < N; n++) {
            float *d = dtable + (size_t)ids[n] * C;
            const float *g = dout + (size_t)n * C;
            for (int c = c0; c < c1; c++) d[c] += g[c];
        }
    }
}

/* ---- linear ----------------------------------------------------------------------- */

static void fill_bias(float *out, const float *bias, int N, int OUT) {
#pragma omp parallel for if ((size_t)N * OUT > PAR_MIN)
    for (int n = 0; n < N; n++) memcpy(out + (size_t)n * OUT, bias, (size_t)OUT * sizeof(float));
}

static void bias_grad(float *dbias, const float *dout, int N, int OUT) {
#pragma omp parallel for if ((size_t)N * OUT > PAR_MIN)
    for (int o = 0; o < OUT; o++) {
        double acc = 0;
        for (int n = 0; n < N; n++) acc += dout[(size_t)n * OUT + o];
        dbias[o] += (float)acc;
    }
}

void cpu_linear_forward(float *out, const float *inp, const float *weight, const float *bias,
                        int N, int IN, int OUT) {
    if (bias) fill_bias(out, bias, N, OUT);
    // out (N,OUT) = inp (N,IN) · weightᵀ, weight stored (OUT,IN)
    cpu_matmul(out, inp, weight, N, OUT, IN, 0, 1, 1.0f, bias ? 1.0f : 0.0f);
}

void cpu_linear_backward(float *dinp, float *dweight, float *dbias, const float *dout,
                         const float *inp, const float *weight, int N, int IN, int OUT) {
    if (dinp) cpu_matmul(dinp, dout, weight, N, IN, OUT, 0, 0, 1.0f, 1.0f);      // dout·W
    if (dweight) cpu_matmul(dweight, dout, inp, OUT, IN, N, 1, 0, 1.0f, 1.0f);   // doutᵀ·x
    if (dbias) bias_grad(dbias, dout, N, OUT);
}

void cpu_conv1d_forward(float *out, const float *inp, const float *weight, const float *bias,
                        int N, int IN, int OUT) {
    if (bias) fill_bias(out, bias, N, OUT);
    cpu_matmul(out, inp, weight, N, OUT, IN, 0, 0, 1.0f, bias ? 1.0f : 0.0f);   // x·W
}

void cpu_conv1d_backward(float *dinp, float *dweight, float *dbias, const float *dout,
                         const float *inp, const float *weight, int N, int IN, int OUT) {
    if (dinp) cpu_matmul(dinp, dout, weight, N, IN, OUT, 0, 1, 1.0f, 1.0f);      // dout·Wᵀ
    if (dweight) cpu_matmul(dweight, inp, dout, IN, OUT, N, 1, 0, 1.0f, 1.0f);   // xᵀ·dout
    if (dbias) bias_grad(dbias, dout, N, OUT);
}

/* ---- LoRA -------------------------------------------------------------------------
 * The products have one side of r ≪ in, out: each is cheap and bound by reading x or dout,
 * and splitting every one of them across threads costs more in fork/join than it saves.
 * Without dropout a LoRA op is one parallel region: each thread takes a block of rows (or,
 * for dA and dB, which sum over rows, a block of their columns) and runs one-thread sgemms
 * on it. */

/* This thread's share [*lo, *hi) of n items, in whole multiples of `align`. */
static void share(int n, int align, int *lo, int *hi) {
    int t = 0, nt = 1;
#ifdef _OPENMP
    t = omp_get_thread_num();
    nt = omp_get_num_threads();
#endif
    int blk = ((n + nt - 1) / nt + align - 1) / align * align;
    *lo = t * blk < n ? t * blk : n;
    *hi = *lo + blk < n ? *lo + blk : n;
}

static void sgemm1(int ta, int tb, int M, int N, int K, float alpha, const float *a, size_t lda,
                   const float *b, size_t ldb, float beta, float *c, size_t ldc);

void cpu_lora_forward(float *out, float *h, const float *inp, const float *mask,
                      const float *A, const float *B, float scale, int N, int IN, int OUT,
                      int R) {
    if (!mask) {
        cpu_init();
#pragma omp parallel if ((double)N * IN * R > 1e6)
        {
            int n0, n1;
            share(N, 8, &n0, &n1);
            if (n1 > n0) {   // h = x·Aᵀ, out += scale·h·Bᵀ for rows n0..n1
                sgemm1(0, 1, n1 - n0, R, IN, 1.0f, inp + (size_t)n0 * IN, IN, A, IN, 0.0f,
                       h + (size_t)n0 * R, R);
                sgemm1(0, 1, n1 - n0, OUT, R, scale, h + (size_t)n0 * R, R, B, R, 1.0f,
                       out + (size_t)n0 * OUT, OUT);
            }
        }
        return;
    } else {
        // dropout(x) is not stored; with r ≪ in, a row-wise product costs little
#pragma omp parallel for if ((size_t)N * IN * R > PAR_MIN)
        for (int n = 0; n < N; n++) {
            const float *x = inp + (size_t)n * IN, *m = mask + (size_t)n * IN;
            for (int r = 0; r < R; r++) {
                const float *a = A + (size_t)r * IN;
                float acc = 0;
                for (int i = 0; i < IN; i++) acc += a[i] * (x[i] * m[i]);
                h[(size_t)n * R + r] = acc;
            }
        }
    }
    cpu_matmul(out, h, B, N, OUT, R, 0, 1, scale, 1.0f);   // out += scale·h·Bᵀ
}

void cpu_lora_backward(float *dinp, float *dA, float *dB, float *dh, const float *dout,
                       const float *h, const float *inp, const float *mask, const float *A,
                       const float *B, float scale, int N, int IN, int OUT, int R) {
    if (!mask) {
        cpu_init();
#pragma omp parallel if ((double)N * (IN + OUT) * R > 1e6)
        {
            int n0, n1, c0, c1;
            share(N, 8, &n0, &n1);
            if (n1 > n0) {   // dh = scale·dout·B, dx += dh·A for rows n0..n1
                sgemm1(0, 0, n1 - n0, R, OUT, scale, dout + (size_t)n0 * OUT, OUT, B, R, 0.0f,
                       dh + (size_t)n0 * R, R);
                if (dinp)
                    sgemm1(0, 0, n1 - n0, IN, R, 1.0f, dh + (size_t)n0 * R, R, A, IN, 1.0f,
                           dinp + (size_t)n0 * IN, IN);
            }
            share(OUT, 16, &c0, &c1);
            if (dB && c1 > c0)   // dB += scale·doutᵀ·h, rows c0..c1 of dB
                sgemm1(1, 0, c1 - c0, R, N, scale, dout + c0, OUT, h, R, 1.0f,
                       dB + (size_t)c0 * R, R);
#pragma omp barrier
            share(IN, 16, &c0, &c1);
            if (dA && c1 > c0)   // dA += dhᵀ·x, columns c0..c1 (every row of dh is done)
                sgemm1(1, 0, R, c1 - c0, N, 1.0f, dh, R, inp + c0, IN, 1.0f, dA + c0, IN);
        }
        return;
    }
    cpu_matmul(dh, dout, B, N, R, OUT, 0, 0, scale, 0.0f);              // dh = scale·dout·B
    if (dB) cpu_matmul(dB, dout, h, OUT, R, N, 1, 0, scale, 1.0f);      // dB += scale·doutᵀ·h
    if (dA)
#pragma omp parallel for if ((size_t)N * IN * R > PAR_MIN)
        for (int r = 0; r < R; r++) {
            float *da = dA + (size_t)r * IN;
            for (int n = 0; n < N; n++) {
                float g = dh[(size_t)n * R + r];
                const float *x = inp + (size_t)n * IN, *m = mask + (size_t)n * IN;
                for (int i = 0; i < IN; i++) da[i] += g * (x[i] * m[i]);
            }
        }
    if (dinp)
#pragma omp parallel for if ((size_t)N * IN * R > PAR_MIN)
        for (int n = 0; n < N; n++) {
            float *dx = dinp + (size_t)n * IN;
            const float *m = mask + (size_t)n * IN;
            for (int i = 0; i < IN; i++) {
                float acc = 0;
                for (int r = 0; r < R; r++) acc += dh[(size_t)n * R + r] * A[(size_t)r * IN + i];
                dx[i] += acc * m[i];
            }
        }
}

/* ---- DoRA: the reference's sums (double), rows or column blocks over the threads ---------- */

void cpu_row_norm(float *norm, const float *w, int rows, int cols, int trans) {
    if (!trans) {
#pragma omp parallel for if ((size_t)rows * cols > PAR_MIN)
        for (int r = 0; r < rows; r++) {
            const float *x = w + (size_t)r * cols;
            double acc = 0;
            for (int c = 0; c < cols; c++) acc += (double)x[c] * x[c];
            norm[r] = (float)sqrt(acc);
        }
        return;
    }
#pragma omp parallel for if ((size_t)rows * cols > PAR_MIN)
    for (int c0 = 0; c0 < cols; c0 += 64) {
        int c1 = c0 + 64 < cols ? c0 + 64 : cols;
        double acc[64] = {0};
        for (int r = 0; r < rows; r++) {
            const float *x = w + (size_t)r * cols;
            for (int c = c0; c < c1; c++) acc[c - c0] += (double)x[c] * x[c];
        }
        for (int c = c0; c < c1; c++) norm[c] = (float)sqrt(acc[c - c0]);
    }
}

void cpu_dora_forward(float *out, float *v, float *g, const float *y, const float *su,
                      const float *bias, const float *m, const float *norm, int N, int OUT) {
    for (int j = 0; j < OUT; j++) {
        g[j] = m[j] / norm[j];
        g[OUT + j] = g[j] - 1.0f;
    }
    const float *g1 = g + OUT;
#pragma omp parallel for if ((size_t)N * OUT > PAR_MIN)
    for (int n = 0; n < N; n++) {
        size_t o = (size_t)n * OUT;
        for (int j = 0; j < OUT; j++) {
            float yy = y ? y[o + j] : out[o + j] - (bias ? bias[j] : 0.0f);
            v[o + j] = (yy + su[o + j]) / norm[j];
            out[o + j] += g1[j] * yy + g[j] * su[o + j];
        }
    }
}

/* ---- per-channel scale ------------------------------------------------------------ */

void cpu_channel_scale_forward(float *out, const float *inp, const float *l, int N, int C) {
#pragma omp parallel for if ((size_t)N * C > PAR_MIN)
    for (int n = 0; n < N; n++) {
        const float *x = inp + (size_t)n * C;
        float *y = out + (size_t)n * C;
        for (int c = 0; c < C; c++) y[c] = x[c] * l[c];
    }
}

void cpu_channel_scale_backward(float *dinp, float *dl, const float *dout, const float *inp,
                                const float *l, int N, int C) {
    if (dinp)
#pragma omp parallel for if ((size_t)N * C > PAR_MIN)
        for (int n = 0; n < N; n++) {
            const float *g = dout + (size_t)n * C;
            float *dx = dinp + (size_t)n * C;
            for (int c = 0; c < C; c++) dx[c] += g[c] * l[c];
        }
    if (dl)
#pragma omp parallel for if ((size_t)N * C > PAR_MIN)
        for (int c0 = 0; c0 < C; c0 += 64) {
            int c1 = c0 + 64 < C ? c0 + 64 : C;
            double acc[64] = {0};
            for (int n = 0; n < N; n++) {
                const float *g = dout + (size_t)n * C, *x = inp + (size_t)n * C;
                for (int c = c0; c < c1; c++) acc[c - c0] += g[c] * x[c];
            }
            for (int c = c0; c < c1; c++) dl[c] += (float)acc[c - c0];
        }
}

/* ---- normalisation ---------------------------------------------------------------- */

void cpu_rmsnorm_forward(float *out, float *rstd, const float *inp, const float *weight,
                         float eps, int add_one, int N, int C) {
#pragma omp parallel for if ((size_t)N * C > PAR_MIN)
    for (int n = 0; n < N; n++) {
        rstd[n] = cv_rmsnorm_row(out + (size_t)n * C, inp + (size_t)n * C, weight,
                                 add_one ? 1.0f : 0.0f, eps, C);
    }
}

void cpu_rmsnorm_backward(float *dinp, float *dweight, const float *dout, const float *rstd,
                          const float *inp, const float *weight, int add_one, int N, int C) {
    float one = add_one ? 1.0f : 0.0f;
    if (dinp)
#pragma omp parallel for if ((size_t)N * C > PAR_MIN)
        for (int n = 0; n < N; n++)
            cv_rmsnorm_bwd_row(dinp + (size_t)n * C, dout + (size_t)n * C, inp + (size_t)n * C,
                               weight, one, rstd[n], C);
    if (dweight)
#pragma omp parallel for if ((size_t)N * C > PAR_MIN)
        for (int c0 = 0; c0 < C; c0 += 64) {
            int c1 = c0 + 64 < C ? c0 + 64 : C;
            double acc[64] = {0};
            for (int n = 0; n < N; n++) {
                const float *x = inp + (size_t)n * C, *dy = dout + (size_t)n * C;
                for (int c = c0; c < c1; c++) acc[c - c0] += dy[c] * x[c] * rstd[n];
            }
            for (int c = c0; c < c1; c++) dweight[c] += (float)acc[c - c0];
        }
}

void cpu_layernorm_forward(float *out, float *mean, float *rstd, const float *inp,
                           const float *weight, const float *bias, float eps, int N, int C) {
#pragma omp parallel for if ((size_t)N * C > PAR_MIN)
    for (int n = 0; n < N; n++) {
        const float *x = inp + (size_t)n * C;
        float *y = out + (size_t)n * C;
        double m = 0, v = 0;
        for (int c = 0; c < C; c++) m += x[c];
        m /= C;
        for (int c = 0; c < C; c++) v += (x[c] - m) * (x[c] - m);
        float fm = (float)m, r = (float)(1.0 / sqrt(v / C + eps));
        mean[n] = fm;
        rstd[n] = r;
        for (int c = 0; c < C; c++)
            y[c] = (x[c] - fm) * r * weight[c] + (bias ? bias[c] : 0.0f);
    }
}

void cpu_layernorm_backward(float *dinp, float *dweight, float *dbias, const float *dout,
                            const float *mean, const float *rstd, const float *inp,
                            const float *weight, int N, int C) {
    if (dinp)
#pragma omp parallel for if ((size_t)N * C > PAR_MIN)
        for (int n = 0; n < N; n++) {
            const float *x = inp + (size_t)n * C, *dy = dout + (size_t)n * C;
            float *dx = dinp + (size_t)n * C;
            float m = mean[n], r = rstd[n];
            double gm = 0, gxm = 0;
            for (int c = 0; c < C; c++) {
                float g = dy[c] * weight[c];
                gm += g;
                gxm += g * ((x[c] - m) * r);
            }
            float fgm = (float)(gm / C), fgxm = (float)(gxm / C);
            for (int c = 0; c < C; c++)
                dx[c] += r * (dy[c] * weight[c] - fgm - (x[c] - m) * r * fgxm);
        }
    if (dweight || dbias)
#pragma omp parallel for if ((size_t)N * C > PAR_MIN)
        for (int c0 = 0; c0 < C; c0 += 64) {
            int c1 = c0 + 64 < C ? c0 + 64 : C;
            double aw[64] = {0}, ab[64] = {0};
            for (int n = 0; n < N; n++) {
                const float *x = inp + (size_t)n * C, *dy = dout + (size_t)n * C;
                for (int c = c0; c < c1; c++) {
                    aw[c - c0] += dy[c] * ((x[c] - mean[n]) * rstd[n]);
                    ab[c - c0] += dy[c];
                }
            }
            for (int c = c0; c < c1; c++) {
                if (dweight) dweight[c] += (float)aw[c - c0];
                if (dbias) dbias[c] += (float)ab[c - c0];
            }
        }
}

/* ---- rotary embeddings ------------------------------------------------------------ */

void cpu_rope_forward(float *out, const float *inp, const float *cos_t, const float *sin_t,
                      int N, int H, int D) {
    int half = D / 2;
#pragma omp parallel for if ((size_t)N * H * D > PAR_MIN)
    for (int n = 0; n < N; n++)
        cv_rope_row(out + (size_t)n * H * D, inp + (size_t)n * H * D, cos_t + (size_t)n * half,
                    sin_t + (size_t)n * half, H, D);
}

void cpu_rope_backward(float *dinp, const float *dout, const float *cos_t, const float *sin_t,
                       int N, int H, int D) {
    int half = D / 2;
#pragma omp parallel for if ((size_t)N * H * D > PAR_MIN)
    for (int n = 0; n < N; n++)
        cv_rope_bwd_row(dinp + (size_t)n * H * D, dout + (size_t)n * H * D,
                        cos_t + (size_t)n * half, sin_t + (size_t)n * half, H, D);
}

/* ---- attention -------------------------------------------------------------------- */

static inline int att_visible(const int *am, const nn_attn_params *p, int i, int j) {
    return (!am || am[j]) && (!p->causal || j <= i) && (p->window <= 0 || i - j < p->window);
}

/* Single-threaded sgemm on strided head views (called inside the parallel loops). */
static void sgemm1(int ta, int tb, int M, int N, int K, float alpha, const float *a, size_t lda,
                   const float *b, size_t ldb, float beta, float *c, size_t ldc) {
    cblas_sgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans,
                M, N, K, alpha, a, (int)lda, b, (int)ldb, beta, c, (int)ldc);
}

/* Query rows go in blocks of ATT_BQ: under a causal mask a block's keys end at its last row,
 * so the score and output products skip the hidden upper triangle (with T = 256, 62% of the
 * full products). Rows with a fully visible stretch of keys (no padding in the batch row)
 * run the softmax over that stretch with the vector kernels; padded rows go key by key. */
#define ATT_BQ 64

/* Visible keys of query position ia lie in [lo, hi) (the padding mask aside). */
static inline void att_range(const nn_attn_params *p, int ia, int Tk, int *lo, int *hi) {
    *hi = p->causal ? (ia + 1 < Tk ? ia + 1 : Tk) : Tk;
    *lo = p->window > 0 && ia - p->window + 1 > 0 ? ia - p->window + 1 : 0;
    if (*lo > *hi) *lo = *hi;
}

/* Scores → probabilities in place for one row of Tk keys (query position ia). */
static void att_softmax_row(float *row, const int *am, int pad, const nn_attn_params *p, int ia,
                            int Tk) {
    int lo, hi;
    att_range(p, ia, Tk, &lo, &hi);
    if (p->softcap > 0)
        for (int j = lo; j < hi; j++) row[j] = p->softcap * tanhf(row[j] / p->softcap);
    float sum = 0;
    if (!pad) {
        if (hi > lo) sum = cv_exp_sub(row + lo, row + lo, cv_max(row + lo, hi - lo), hi - lo);
    } else {
        float mx = -INFINITY;
        for (int j = lo; j < hi; j++)
            if (am[j]) mx = row[j] > mx ? row[j] : mx;
        double s = 0;
        for (int j = lo; j < hi; j++) {
            row[j] = am[j] ? expf(row[j] - mx) : 0.0f;
            s += row[j];
        }
        sum = (float)s;
    }
    memset(row, 0, sizeof(float) * (size_t)lo);
    memset(row + hi, 0, sizeof(float) * (size_t)(Tk - hi));
    if (sum > 0) cv_scale(row + lo, 1.0f / sum, hi - lo);   // no visible key: zeros (ops.h)
    else memset(row + lo, 0, sizeof(float) * (size_t)(hi - lo));
}

/* 1 when amask hides some of the Tk keys of this batch row. */
static int att_padded(const int *am, int Tk) {
    if (!am) return 0;
    for (int j = 0; j < Tk; j++)
        if (!am[j]) return 1;
    return 0;
}

void cpu_attention_kv_forward(float *out, float *probs, const float *q, const float *k,
                              const float *v, const int *amask, const nn_attn_params *p, int B,
                              int Tq, int Tk, int q_off, int H, int KVH, int D) {
    assert(KVH > 0 && H % KVH == 0 && q_off >= 0);
    if (B == 0 || Tq == 0 || Tk == 0 || H == 0) return;
    cpu_init();
    int rep = H / KVH;
    size_t qs = (size_t)H * D, ks = (size_t)KVH * D;   // row strides of q and k/v
#pragma omp parallel for schedule(dynamic) if ((size_t)B * H * Tq * Tk * (D + 1) > PAR_MIN)
    for (int bh = 0; bh < B * H; bh++) {
        int b = bh / H, h = bh % H;
        const float *qb = q + (size_t)b * Tq * qs + (size_t)h * D;
        const float *kb = k + (size_t)b * Tk * ks + (size_t)(h / rep) * D;
        const float *vb = v + (size_t)b * Tk * ks + (size_t)(h / rep) * D;
        const int *am = amask ? amask + (size_t)b * Tk : NULL;
        int pad = att_padded(am, Tk);
        float *P = probs + (size_t)bh * Tq * Tk;
        float *ob = out && D > 0 ? out + (size_t)b * Tq * qs + (size_t)h * D : NULL;
        for (int i0 = 0; i0 < Tq; i0 += ATT_BQ) {
            int bq = Tq - i0 < ATT_BQ ? Tq - i0 : ATT_BQ;
            // keys past the block's last query are hidden under a causal mask
            int kend = p->causal && q_off + i0 + bq < Tk ? q_off + i0 + bq : Tk;
            float *Pb = P + (size_t)i0 * Tk;
            // S = scale · Q·Kᵀ straight into the probability rows, then softmax in place
            if (D > 0) sgemm1(0, 1, bq, kend, D, p->scale, qb + (size_t)i0 * qs, qs, kb, ks, 0.0f, Pb, Tk);
            else
                for (int i = 0; i < bq; i++) memset(Pb + (size_t)i * Tk, 0, sizeof(float) * kend);
            for (int i = 0; i < bq; i++) att_softmax_row(Pb + (size_t)i * Tk, am, pad, p, q_off + i0 + i, Tk);
            if (!ob) continue;
            float *o = ob + (size_t)i0 * qs;
            if (!p->dropout) {   // O = P·V, written into the (B,T,H·D) layout o_proj reads
                sgemm1(0, 0, bq, D, kend, 1.0f, Pb, Tk, vb, ks, 0.0f, o, qs);
                continue;
            }
            // O = (P∘M)·V row by row: P must survive for the backward and there is no
            // scratch here; training-time dropout runs on encoder-sized T
            const float *M = p->dropout + (size_t)bh * Tq * Tk + (size_t)i0 * Tk;
            for (int i = 0; i < bq; i++, o += qs) {
                memset(o, 0, (size_t)D * sizeof(float));
                for (int j = 0; j < kend; j++) {
                    float w = Pb[(size_t)i * Tk + j] * M[(size_t)i * Tk + j];
                    if (w != 0.0f) cv_axpy(o, w, vb + (size_t)j * ks, D);
                }
            }
        }
    }
}

void cpu_attention_forward(float *out, float *probs, const float *q, const float *k,
                           const float *v, const int *amask, const nn_attn_params *p, int B,
                           int T, int H, int KVH, int D) {
    cpu_attention_kv_forward(out, probs, q, k, v, amask, p, B, T, T, 0, H, KVH, D);
}

void cpu_attention_backward(float *dq, float *dk, float *dv, float *dscores,
                            const float *dout, const float *probs, const float *q,
                            const float *k, const float *v, const int *amask,
                            const nn_attn_params *p, int B, int T, int H, int KVH, int D) {
    if (B == 0 || T == 0 || H == 0 || D == 0) return;
    cpu_init();
    int rep = H / KVH;
    size_t qs = (size_t)H * D, ks = (size_t)KVH * D;
    // One task per (batch, kv head): the query heads sharing a kv head add into the same
    // dK and dV rows, so they run one after another inside the task. Query rows go in the
    // forward's blocks; a block's probabilities are zero past kend (causal), so every
    // product stops there. The gradients are written, not added to (ops.h): each dQ block
    // is one product; the task's first block writes its dK and dV rows (beta 0) and clears
    // the rows past its keys, and the later blocks add (the sums run in the same order as
    // when the rows started at zero).
#pragma omp parallel for schedule(dynamic) if ((size_t)B * H * T * T * D > PAR_MIN)
    for (int bg = 0; bg < B * KVH; bg++) {
        int b = bg / KVH, g = bg % KVH;
        const float *kb = k + (size_t)b * T * ks + (size_t)g * D;
        const float *vb = v + (size_t)b * T * ks + (size_t)g * D;
        float *dkb = dk ? dk + (size_t)b * T * ks + (size_t)g * D : NULL;
        float *dvb = dv ? dv + (size_t)b * T * ks + (size_t)g * D : NULL;
        for (int h = g * rep; h < (g + 1) * rep; h++)
            for (int i0 = 0; i0 < T; i0 += ATT_BQ) {
                int bq = T - i0 < ATT_BQ ? T - i0 : ATT_BQ;
                int kend = p->causal && i0 + bq < T ? i0 + bq : T;
                float bkv = h == g * rep && i0 == 0 ? 0.0f : 1.0f;
                if (bkv == 0.0f)   // the rows this first block does not reach
                    for (int j = kend; j < T; j++) {
                        if (dkb) memset(dkb + (size_t)j * ks, 0, (size_t)D * sizeof(float));
                        if (dvb) memset(dvb + (size_t)j * ks, 0, (size_t)D * sizeof(float));
                    }
                size_t at = ((size_t)b * H + h) * T * T + (size_t)i0 * T;
                const float *qb = q + ((size_t)b * T + i0) * qs + (size_t)h * D;
                const float *gb = dout + ((size_t)b * T + i0) * qs + (size_t)h * D;
                const float *P = probs + at;
                float *dS = dscores + at;
                const float *M = p->dropout ? p->dropout + at : NULL;
                if (M && dvb) {   // dV += (P∘M)ᵀ·dO, with dS as the scratch for P∘M
                    for (int i = 0; i < bq; i++)
                        for (int j = 0; j < kend; j++)
                            dS[(size_t)i * T + j] = P[(size_t)i * T + j] * M[(size_t)i * T + j];
                    sgemm1(1, 0, kend, D, bq, 1.0f, dS, T, gb, qs, bkv, dvb, ks);
                }
                // dP = dO·Vᵀ (∘M), then dS = P∘(dP − rowsum(P∘dP)) in place
                sgemm1(0, 1, bq, kend, D, 1.0f, gb, qs, vb, ks, 0.0f, dS, T);
                for (int i = 0; i < bq; i++) {
                    const float *pr = P + (size_t)i * T;
                    float *ds = dS + (size_t)i * T;
                    if (M)
                        for (int j = 0; j < kend; j++) ds[j] *= M[(size_t)i * T + j];
                    cv_softmax_bwd_row(ds, pr, cv_dot(pr, ds, kend), kend);
                    if (p->softcap > 0)   // recompute the raw score: cheaper than storing it
                        for (int j = 0; j < kend; j++) {
                            if (ds[j] == 0.0f) continue;
                            const float *qi = qb + (size_t)i * qs, *kj = kb + (size_t)j * ks;
                            float t = tanhf(p->scale * cv_dot(qi, kj, D) / p->softcap);
                            ds[j] *= 1.0f - t * t;
                        }
                }
                if (dq)   // dQ = scale·dS·K
                    sgemm1(0, 0, bq, D, kend, p->scale, dS, T, kb, ks, 0.0f,
                           dq + ((size_t)b * T + i0) * qs + (size_t)h * D, qs);
                if (dkb)   // dK += scale·dSᵀ·Q
                    sgemm1(1, 0, kend, D, bq, p->scale, dS, T, qb, qs, bkv, dkb, ks);
                if (dvb && !M)   // dV += Pᵀ·dO
                    sgemm1(1, 0, kend, D, bq, 1.0f, P, T, gb, qs, bkv, dvb, ks);
            }
    }
}

/* ---- activations ------------------------------------------------------------------ */

#define GELU_K 0.7978845608028654f
#define GELU_C 0.044715f

static inline float act_f(nn_act act, float x) {
    switch (act) {
    case NN_ACT_SILU: return x / (1.0f + expf(-x));
    case NN_ACT_GELU: return 0.5f * x * (1.0f + erff(x * (float)M_SQRT1_2));
    case NN_ACT_GELU_TANH: return 0.5f * x * (1.0f + tanhf(GELU_K * (x + GELU_C * x * x * x)));
    case NN_ACT_TANH: return tanhf(x);
    case NN_ACT_RELU: return x > 0 ? x : 0;
    }
    return 0;
}

static inline float act_df(nn_act act, float x) {
    switch (act) {
    case NN_ACT_SILU: {
        float s = 1.0f / (1.0f + expf(-x));
        return s * (1.0f + x * (1.0f - s));
    }
    case NN_ACT_GELU:
        return 0.5f * (1.0f + erff(x * (float)M_SQRT1_2)) +
               x * expf(-0.5f * x * x) * 0.3989422804014327f;
    case NN_ACT_GELU_TANH: {
        float t = tanhf(GELU_K * (x + GELU_C * x * x * x));
        return 0.5f * (1.0f + t) + 0.5f * x * (1.0f - t * t) * GELU_K * (1.0f + 3.0f * GELU_C * x * x);
    }
    case NN_ACT_TANH: {
        float t = tanhf(x);
        return 1.0f - t * t;
    }
    case NN_ACT_RELU: return x > 0 ? 1.0f : 0.0f;
    }
    return 0;
}

void cpu_act_forward(float *out, const float *inp, nn_act act, size_t n) {
    if (act == NN_ACT_SILU) {
        FOR_CHUNKS(n) cv_silu_fwd(out + off, inp + off, len);
        return;
    }
#pragma omp parallel for if (n > PAR_MIN)
    for (size_t i = 0; i < n; i++) out[i] = act_f(act, inp[i]);
}

void cpu_act_backward(float *dinp, const float *dout, const float *inp, nn_act act, size_t n) {
    if (act == NN_ACT_SILU) {
        FOR_CHUNKS(n) cv_silu_bwd(dinp + off, dout + off, inp + off, len);
        return;
    }
#pragma omp parallel for if (n > PAR_MIN)
    for (size_t i = 0; i < n; i++) dinp[i] += dout[i] * act_df(act, inp[i]);
}

void cpu_gated_forward(float *out, const float *gate, const float *up, nn_act act, size_t n) {
    if (act == NN_ACT_SILU) {
        FOR_CHUNKS(n) cv_silu_gated_fwd(out + off, gate + off, up + off, len);
        return;
    }
#pragma omp parallel for if (n > PAR_MIN)
    for (size_t i = 0; i < n; i++) out[i] = act_f(act, gate[i]) * up[i];
}

void cpu_gated_backward(float *dgate, float *dup, const float *dout, const float *gate,
                        const float *up, nn_act act, size_t n) {
    if (act == NN_ACT_SILU) {
        FOR_CHUNKS(n) cv_silu_gated_bwd(dgate ? dgate + off : NULL, dup ? dup + off : NULL,
                                        dout + off, gate + off, up + off, len);
        return;
    }
#pragma omp parallel for if (n > PAR_MIN)
    for (size_t i = 0; i < n; i++) {
        if (dgate) dgate[i] = dout[i] * up[i] * act_df(act, gate[i]);
        if (dup) dup[i] = dout[i] * act_f(act, gate[i]);
    }
}

/* ---- softmax, losses, soft-cap ---------------------------------------------------- */

void cpu_softmax_forward(float *out, const float *inp, int N, int C) {
#pragma omp parallel for if ((size_t)N * C > PAR_MIN)
    for (int n = 0; n < N; n++) {
        const float *x = inp + (size_t)n * C;
        float *y = out + (size_t)n * C;
        float mx = -INFINITY;
        for (int c = 0; c < C; c++) mx = x[c] > mx ? x[c] : mx;
        double sum = 0;
        for (int c = 0; c < C; c++) {
            y[c] = expf(x[c] - mx);
            sum += y[c];
        }
        float inv = (float)(1.0 / sum);
        for (int c = 0; c < C; c++) y[c] *= inv;
    }
}

void cpu_softmax_backward(float *dinp, const float *dout, const float *out, int N, int C) {
#pragma omp parallel for if ((size_t)N * C > PAR_MIN)
    for (int n = 0; n < N; n++) {
        const float *dy = dout + (size_t)n * C, *y = out + (size_t)n * C;
        float *dx = dinp + (size_t)n * C;
        double dot = 0;
        for (int c = 0; c < C; c++) dot += dy[c] * y[c];
        float fd = (float)dot;
        for (int c = 0; c < C; c++) dx[c] += y[c] * (dy[c] - fd);
    }
}

int cpu_cross_entropy_forward(float *loss, float *lse, int *count, const float *logits,
                              const int *targets, int N, int V) {
    for (int n = 0; n < N; n++)
        if (targets[n] != -100 && (targets[n] < 0 || targets[n] >= V))
            return nn_cross_entropy_forward(loss, lse, count, logits, targets, N, V);
    double total = 0;
    int cnt = 0;
#pragma omp parallel for reduction(+ : total, cnt) if ((size_t)N * V > PAR_MIN)
    for (int n = 0; n < N; n++) {
        const float *l = logits + (size_t)n * V;
        float mx = cv_max(l, V);
        double s = mx + log(cv_sum_exp(l, mx, V));
        lse[n] = (float)s;
        if (targets[n] != -100) {
            total += s - l[targets[n]];
            cnt++;
        }
    }
    *loss = cnt ? (float)(total / cnt) : 0.0f;
    *count = cnt;
    return 0;
}

void cpu_cross_entropy_rows(float *rowloss, float *lse, const float *logits, const int *targets,
                            int N, int V) {
#pragma omp parallel for if ((size_t)N * V > PAR_MIN)
    for (int n = 0; n < N; n++) {
        const float *l = logits + (size_t)n * V;
        float mx = cv_max(l, V);
        double s = mx + log(cv_sum_exp(l, mx, V));
        lse[n] = (float)s;
        rowloss[n] = targets[n] == -100 ? 0.0f : (float)(s - l[targets[n]]);
    }
}

void cpu_cross_entropy_backward(float *dlogits, float dloss, const float *lse,
                                const float *logits, const int *targets, int count, int N,
                                int V) {
    float g = count ? dloss / (float)count : 0.0f;
#pragma omp parallel for if ((size_t)N * V > PAR_MIN)
    for (int n = 0; n < N; n++) {
        float *d = dlogits + (size_t)n * V;
        if (targets[n] == -100 || count == 0) {
            memset(d, 0, (size_t)V * sizeof(float));
            continue;
        }
        cv_exp_scale(d, g, logits + (size_t)n * V, lse[n], V);
        d[targets[n]] -= g;
    }
}

void cpu_softcap_forward(float *out, const float *inp, float cap, size_t n) {
#pragma omp parallel for if (n > PAR_MIN)
    for (size_t i = 0; i < n; i++) out[i] = cap * tanhf(inp[i] / cap);
}

void cpu_softcap_backward(float *dinp, const float *dout, const float *out, float cap,
                          size_t n) {
#pragma omp parallel for if (n > PAR_MIN)
    for (size_t i = 0; i < n; i++) {
        float t = out[i] / cap;
        dinp[i] += dout[i] * (1.0f - t * t);
    }
}

/* ---- column slices ---------------------------------------------------------------- */

void cpu_slice_forward(float *out, const float *inp, int N, int CI, int off, int W) {
    assert(off >= 0 && off + W <= CI);
#pragma omp parallel for if ((size_t)N * W > PAR_MIN)
    for (int n = 0; n < N; n++)
        memcpy(out + (size_t)n * W, inp + (size_t)n * CI + off, (size_t)W * sizeof(float));
}

void cpu_slice_backward(float *dinp, const float *dout, int N, int CI, int off, int W) {
#pragma omp parallel for if ((size_t)N * W > PAR_MIN)
    for (int n = 0; n < N; n++) {
        float *d = dinp + (size_t)n * CI + off;
        const float *g = dout + (size_t)n * W;
        for (int c = 0; c < W; c++) d[c] += g[c];
    }
}

/* ---- elementwise ------------------------------------------------------------------ */

void cpu_add_forward(float *out, const float *a, const float *b, size_t n) {
    FOR_CHUNKS(n) cv_add(out + off, a + off, b + off, len);
}

void cpu_add_backward(float *da, float *db, const float *dout, size_t n) {
#pragma omp parallel for if (n > PAR_MIN)
    for (size_t i = 0; i < n; i++) {
        if (da) da[i] += dout[i];
        if (db) db[i] += dout[i];
    }
}

void cpu_mul_forward(float *out, const float *a, const float *b, size_t n) {
#pragma omp parallel for if (n > PAR_MIN)
    for (size_t i = 0; i < n; i++) out[i] = a[i] * b[i];
}

void cpu_mul_backward(float *da, float *db, const float *dout, const float *a, const float *b,
                      size_t n) {
#pragma omp parallel for if (n > PAR_MIN)
    for (size_t i = 0; i < n; i++) {
        if (da) da[i] += dout[i] * b[i];
        if (db) db[i] += dout[i] * a[i];
    }
}

void cpu_scale_forward(float *out, const float *inp, float s, size_t n) {
#pragma omp parallel for if (n > PAR_MIN)
    for (size_t i = 0; i < n; i++) out[i] = s * inp[i];
}

void cpu_scale_backward(float *dinp, const float *dout, float s, size_t n) {
#pragma omp parallel for if (n > PAR_MIN)
    for (size_t i = 0; i < n; i++) dinp[i] += s * dout[i];
}

/* 4-bit → f32 a block at a time (the reference's arithmetic), blocks across threads. */
void cpu_q4_dequant(float *out, const uint8_t *codes, const float *absmax, size_t n,
                    int blocksize, int type) {
    if (type == NN_Q8) {   /* one int8 a value, a scale a row: as the reference */
        size_t bs = (size_t)blocksize, nb = (n + bs - 1) / bs;
#pragma omp parallel for if (n > PAR_MIN)
        for (size_t b = 0; b < nb; b++) {
            size_t i0 = b * bs, i1 = i0 + bs < n ? i0 + bs : n;
            float k = absmax[b] * (1.0f / 127.0f);
            for (size_t i = i0; i < i1; i++) out[i] = (float)(int8_t)codes[i] * k;
        }
        return;
    }
    const float *code = nn_q4_code(type);
    size_t bs = (size_t)blocksize, nb = (n + bs - 1) / bs;
#pragma omp parallel for if (n > PAR_MIN)
    for (size_t b = 0; b < nb; b++) {
        size_t i0 = b * bs, i1 = i0 + bs < n ? i0 + bs : n;
        float am = absmax[b];
        for (size_t i = i0; i < i1; i++) {
            uint8_t c = codes[i / 2];
            out[i] = code[i % 2 ? c & 15 : c >> 4] * am;
        }
    }
}

void cpu_dq_dequant(float *absmax, const uint8_t *q, const float *absmax2, const float *code,
                    float offset, size_t nb) {
    nn_dq_dequant(absmax, q, absmax2, code, offset, nb);   /* n / 64 values: small */
}

/* ---- optimisers: the reference's per-element arithmetic, split across threads ------ */

#define CHUNK ((size_t)1 << 16)

void cpu_adamw_step(float *param, float *m, float *v, const float *grad, size_t n, double lr,
                    double beta1, double beta2, double eps, double weight_decay, int t) {
    size_t chunks = (n + CHUNK - 1) / CHUNK;
#pragma omp parallel for if (chunks > 1)
    for (size_t c = 0; c < chunks; c++) {
        size_t off = c * CHUNK, len = n - off < CHUNK ? n - off : CHUNK;
        nn_adamw_step(param + off, m + off, v + off, grad + off, len, lr, beta1, beta2, eps,
                      weight_decay, t);
    }
}

void cpu_sgd_step(float *param, float *buf, const float *grad, size_t n, double lr,
                  double momentum, double weight_decay, int t) {
    size_t chunks = (n + CHUNK - 1) / CHUNK;
#pragma omp parallel for if (chunks > 1)
    for (size_t c = 0; c < chunks; c++) {
        size_t off = c * CHUNK, len = n - off < CHUNK ? n - off : CHUNK;
        nn_sgd_step(param + off, buf ? buf + off : NULL, grad + off, len, lr, momentum,
                    weight_decay, t);
    }
}

double cpu_clip_grad_norm(float *const *grads, const size_t *sizes, int count,
                          double max_norm) {
    double total = 0;
    for (int k = 0; k < count; k++) {
        const float *g = grads[k];
        size_t n = sizes[k];
        double s = 0;
#pragma omp parallel for reduction(+ : s) if (n > PAR_MIN)
        for (size_t i = 0; i < n; i++) s += (double)g[i] * g[i];
        total += s;
    }
    total = sqrt(total);
    if (max_norm > 0) {
        double coef = max_norm / (total + 1e-6);
        if (coef < 1.0)
            for (int k = 0; k < count; k++) {
                float *g = grads[k], f = (float)coef;
                size_t n = sizes[k];
#pragma omp parallel for if (n > PAR_MIN)
                for (size_t i = 0; i < n; i++) g[i] *= f;
            }
    }
    return total;
}

void cpu_dropout_mask(float *mask, uint64_t seed, uint64_t offset, float p, size_t n) {
    size_t chunks = (n + CHUNK - 1) / CHUNK;   // counter-based, so any split draws the same
#pragma omp parallel for if (chunks > 1)
    for (size_t c = 0; c < chunks; c++) {
        size_t off = c * CHUNK, len = n - off < CHUNK ? n - off : CHUNK;
        nn_dropout_mask(mask + off, seed, offset + off, p, len);
    }
}

/* ---- LLM.int8's product (nn_q8_linear_forward) --------------------------------------------
 * The input rounded to f16 once (into ca), the outlier columns from it, then each row's codes;
 * the weight's codes widened to f32 and one SGEMM per 1024 input features: each partial sum of
 * products of int8 values is below 2^24 and exact in f32, and the partials add up in double,
 * so the sum is the reference's integer. The outlier columns are listed once, their inputs
 * and dequantized weights gathered, and multiplied by one more SGEMM added to the output (as
 * bitsandbytes' addmm; the reference adds them one by one: the sums' order differs). */
void cpu_q8_linear_forward(float *out, const float *inp, const int8_t *cb, const float *scb,
                           const float *bias, int N, int IN, int OUT, float threshold,
                           float *work) {
    float *ca = work, *rs = ca + (size_t)N * IN, *ocol = rs + N, *cbf = ocol + IN;
    float *part = cbf + (size_t)OUT * IN;
    double *acc = (double *)(((uintptr_t)(part + (size_t)N * OUT) + 7) & ~(uintptr_t)7);
#pragma omp parallel for if ((size_t)N * IN > PAR_MIN)
    for (size_t i = 0; i < (size_t)N * IN; i++) ca[i] = nn_half_round(inp[i]);
    nn_q8_outliers(ocol, ca, N, IN, threshold);
#pragma omp parallel for if ((size_t)N * IN > PAR_MIN)
    for (int n = 0; n < N; n++)
        rs[n] = nn_q8_code_row(ca + (size_t)n * IN, N > 1 ? ocol : NULL, IN, threshold);
#pragma omp parallel for if ((size_t)OUT * IN > PAR_MIN)
    for (size_t i = 0; i < (size_t)OUT * IN; i++) cbf[i] = (float)cb[i];
    int one = IN <= 1024;   /* one SGEMM: its sums are exact already, into out */
    if (one)
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, N, OUT, IN, 1.0f, ca, IN, cbf, IN,
                    0.0f, out, OUT);
    else
        memset(acc, 0, sizeof(double) * (size_t)N * OUT);
    for (int c0 = 0; !one && c0 < IN; c0 += 1024) {
        int k = IN - c0 < 1024 ? IN - c0 : 1024;
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, N, OUT, k, 1.0f, ca + c0, IN,
                    cbf + c0, IN, 0.0f, part, OUT);
#pragma omp parallel for if ((size_t)N * OUT > PAR_MIN)
        for (size_t i = 0; i < (size_t)N * OUT; i++) acc[i] += part[i];
    }
    /* the outlier columns: their indices; their inputs (N, nout) in part and dequantized
       weights (OUT, nout) in cbf, multiplied by SGEMM after the int8 part is scaled */
    int nout = 0;
    for (int c = 0; c < IN; c++)
        if (ocol[c] != 0.0f) ((int *)ocol)[nout++] = c;   /* the flags read before written */
    const int *list = (const int *)ocol;
#pragma omp parallel for if ((size_t)OUT * nout > PAR_MIN)
    for (int o = 0; o < OUT; o++)
        for (int j = 0; j < nout; j++)
            cbf[(size_t)o * nout + j] =
                (float)cb[(size_t)o * IN + list[j]] * scb[o] * 7.874015718698502e-3f;
#pragma omp parallel for if ((size_t)N * OUT > PAR_MIN)
    for (int n = 0; n < N; n++) {
        for (int o = 0; o < OUT; o++) {
            size_t i = (size_t)n * OUT + o;
            float v = (one ? out[i] : (float)(int32_t)acc[i]) * (rs[n] * scb[o]) * 6.200124e-05f;
            out[i] = bias ? v + bias[o] : v;
        }
    }
    if (!nout) return;
    float *sub = ca;   /* the codes are no longer needed: the outlier inputs (N, nout) */
    for (int n = 0; n < N; n++)
        for (int j = 0; j < nout; j++) sub[(size_t)n * nout + j] = inp[(size_t)n * IN + list[j]];
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, N, OUT, nout, 1.0f, sub, nout, cbf,
                nout, 1.0f, out, OUT);
}
