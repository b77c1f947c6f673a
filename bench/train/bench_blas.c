/* bench_blas.c — the training step's matrix products alone, on the BLAS this build chose
 * (runtime/backend/cpu/blas.h: MKL or OpenBLAS), split by rows across OpenMP threads as
 * cpu_ops.c splits them. For comparing BLAS libraries: build it in two build trees (e.g.
 * -DLOUPE_BLAS=openblas and the default) and run them alternately.
 *
 *     cmake --build build --target bench_blas && OMP_NUM_THREADS=2 build/bench/bench_blas
 *
 * Shapes: SmolLM2-135M, batch 4 × 256 tokens (M = 1024), LoRA on q/k/v/o (the products
 * of the frozen weights: forward x·Wᵀ, backward dy·W, and the 49152-word head), with the
 * number of calls a step makes. Best of 5 per shape; prints GFLOP/s and ms per step. */
#include "backend/cpu/blas.h"

#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

typedef struct {
    int tb, M, N, K, calls;   /* tb: B transposed (x·Wᵀ) */
} shape;

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec * 1e-9;
}

int main(void) {
    static const shape S[] = {
        {1, 1024, 1536, 576, 60}, {1, 1024, 576, 1536, 30}, {1, 1024, 576, 576, 60},
        {1, 1024, 192, 576, 60},  {0, 1024, 576, 1536, 60}, {0, 1024, 1536, 576, 30},
        {0, 1024, 576, 576, 59},  {0, 1024, 576, 192, 58},  {1, 1024, 49152, 576, 1},
        {0, 1024, 576, 49152, 1},
    };
    blas_one_thread();
    size_t big = (size_t)1024 * 49152;
    float *A = malloc(big * sizeof(float)), *B = malloc((size_t)49152 * 1536 * sizeof(float));
    float *C = malloc(big * sizeof(float));
    if (!A || !B || !C) return 1;
    for (size_t i = 0; i < big; i++) A[i] = (float)(i % 13) * 0.01f, C[i] = 0;
    for (size_t i = 0; i < (size_t)49152 * 1536; i++) B[i] = (float)(i % 7) * 0.01f;
    int nt = omp_get_max_threads();
    double total = 0;
    printf("%s, %d threads\n", LOUPE_BLAS_NAME, nt);
    for (size_t s = 0; s < sizeof S / sizeof *S; s++) {
        int M = S[s].M, N = S[s].N, K = S[s].K, tb = S[s].tb;
        double best = 1e30;
        for (int r = 0; r < 5; r++) {
            double t0 = now();
#pragma omp parallel
            {
                int t = omp_get_thread_num(), m0 = t * M / nt, m1 = (t + 1) * M / nt;
                cblas_sgemm(CblasRowMajor, CblasNoTrans, tb ? CblasTrans : CblasNoTrans, m1 - m0,
                            N, K, 1.0f, A + (size_t)m0 * K, K, B, tb ? K : N, 0.0f,
                            C + (size_t)m0 * N, N);
            }
            double t = now() - t0;
            best = t < best ? t : best;
        }
        printf("%s %4d x %5d x %5d  %6.1f GFLOP/s  %6.1f ms a step\n", tb ? "x·Wᵀ" : "dy·W", M, N,
               K, 2.0 * M * N * K / best / 1e9, best * 1e3 * S[s].calls);
        total += best * S[s].calls;
    }
    printf("products per step: %.0f ms\n", total * 1e3);
    free(A), free(B), free(C);
    return 0;
}
