/* emu_selftest.cc — the emulator itself (run.sh): what a kernel sees (2-D indices, per-block
 * static shared memory starting as NaN, barriers, shuffles, atomics), a launch it must refuse,
 * cuBLAS against the column-major definition, and, each in a child process, the faults it must
 * stop at (a deadlocked shuffle, a read past a cudaMalloc'd block, overlapping GEMM operands). */
#include <sys/wait.h>

#include "emu.h"

static int fails;
#define CHECK(c, ...) do { if (!(c)) { fails++; printf("FAIL " __VA_ARGS__); printf("\n"); } } while (0)

__global__ void index_kernel(int *out, float *flag) {
    static emu_site s_sh;
    float(&sh)[64] = emu_shared<float[64]>(s_sh);
    unsigned t = threadIdx.y * blockDim.x + threadIdx.x;
    if (t == 0 && !isnan(sh[5])) atomicAdd(flag, 1.0f);   // fresh (NaN) in every block
    __syncthreads();
    sh[t] = (float)(blockIdx.y * gridDim.x + blockIdx.x);
    __syncthreads();
    unsigned b = blockIdx.y * gridDim.x + blockIdx.x;
    out[b * 64 + t] = (int)sh[63 - t] * 1000 + (int)threadIdx.y * 100 + (int)threadIdx.x;
    float v = __shfl_xor_sync(0xffffffffu, (float)t, 1);
    if (v != (float)(t ^ 1)) atomicAdd(flag, 1.0f);
    if (cu_warp_sum(1.0f) != 32.0f) atomicAdd(flag, 1.0f);
}

__global__ void deadlock_kernel() {
    if (threadIdx.x < 16) __shfl_sync(0xffffffffu, 1.0f, 0);   // half a warp
}

__global__ void past_end_kernel(float *p, int n) { p[n + threadIdx.x] = 1.0f; }

static bool dies(void (*f)()) {   // f aborts or faults in a child
    fflush(stdout);
    pid_t pid = fork();
    if (pid == 0) {
        freopen("/dev/null", "w", stderr);
        f();
        _exit(0);
    }
    int st = 0;
    waitpid(pid, &st, 0);
    return WIFSIGNALED(st);
}

int main() {
    int *out;
    float *flag;
    cudaMalloc(&out, 6 * 64 * sizeof(int));
    cudaMalloc(&flag, sizeof(float));
    cudaMemset(flag, 0, sizeof(float));
    dim3 grid(3, 2), block(16, 4);
    emu_launch(emu_kernel_id(&index_kernel), grid, block, 0, 0, [&]() { index_kernel(out, flag); });
    CHECK(cudaGetLastError() == cudaSuccess, "launch");
    int h[6 * 64];
    float hf;
    cudaMemcpy(h, out, sizeof h, cudaMemcpyDeviceToHost);
    cudaMemcpy(&hf, flag, 4, cudaMemcpyDeviceToHost);
    CHECK(hf == 0, "shared memory not NaN at a block's start, or a shuffle / warp sum wrong");
    for (int b = 0; b < 6; b++)
        for (int t = 0; t < 64; t++)
            CHECK(h[b * 64 + t] == b * 1000 + (t / 16) * 100 + t % 16, "index b=%d t=%d: %d", b, t,
                  h[b * 64 + t]);
    // refused launches: 1025 threads, grid.y over 65535, 49 KB of dynamic shared memory
    emu_launch(emu_kernel_id(&deadlock_kernel), 1, 1025, 0, 0, []() {});
    CHECK(cudaGetLastError() == cudaErrorInvalidConfiguration, "1025 threads launched");
    emu_launch(emu_kernel_id(&deadlock_kernel), dim3(1, 65536), 32, 0, 0, []() {});
    CHECK(cudaGetLastError() == cudaErrorInvalidConfiguration, "grid.y 65536 launched");
    emu_launch(emu_kernel_id(&deadlock_kernel), 1, 32, 49 << 10, 0, []() {});
    CHECK(cudaGetLastError() == cudaErrorInvalidValue, "49 KB without the attribute launched");
    // cuBLAS: every transpose, odd leading dimensions, beta 0 (C NaN) and 0.5
    cublasHandle_t hb;
    cublasCreate(&hb);
    const int m = 5, n = 4, k = 3, lda = 7, ldb = 6, ldc = 8;
    float A[7 * 5], B[6 * 4], C[8 * 4], R[8 * 4];
    for (int i = 0; i < 35; i++) A[i] = (float)((i * 7) % 11) - 5;
    for (int i = 0; i < 24; i++) B[i] = (float)((i * 5) % 9) - 4;
    for (int ta = 0; ta < 2; ta++)
        for (int tb = 0; tb < 2; tb++)
            for (float beta : {0.0f, 0.5f}) {
                for (int i = 0; i < 32; i++) C[i] = R[i] = beta ? (float)i : NAN;
                for (int j = 0; j < n; j++)
                    for (int i = 0; i < m; i++) {
                        double s = 0;
                        for (int l = 0; l < k; l++)
                            s += (double)(ta ? A[l + i * lda] : A[i + l * lda]) *
                                 (tb ? B[j + l * ldb] : B[l + j * ldb]);
                        R[i + j * ldc] = (float)(2.0 * s + (beta ? beta * R[i + j * ldc] : 0));
                    }
                float al = 2.0f;
                cublasStatus_t st = cublasSgemm(hb, ta ? CUBLAS_OP_T : CUBLAS_OP_N,
                                                tb ? CUBLAS_OP_T : CUBLAS_OP_N, m, n, k, &al, A,
                                                lda, B, ldb, &beta, C, ldc);
                CHECK(st == CUBLAS_STATUS_SUCCESS, "sgemm status");
                for (int j = 0; j < n; j++)
                    for (int i = 0; i < m; i++)
                        CHECK(C[i + j * ldc] == R[i + j * ldc], "sgemm ta=%d tb=%d beta=%g (%d,%d)",
                              ta, tb, beta, i, j);
            }
    float one = 1.0f;
    CHECK(cublasSgemm(hb, CUBLAS_OP_T, CUBLAS_OP_N, m, n, k, &one, A, 2, B, ldb, &one, C, ldc) ==
              CUBLAS_STATUS_INVALID_VALUE, "lda < k accepted");
    // faults
    CHECK(dies([]() {
        emu_launch(emu_kernel_id(&deadlock_kernel), 1, 32, 0, 0, []() { deadlock_kernel(); });
    }), "a shuffle half the warp reaches did not stop the program");
    CHECK(dies([]() {
        float *p;
        cudaMalloc(&p, 256 * sizeof(float));
        emu_launch(emu_kernel_id(&past_end_kernel), 1, 32, 0, 0, [&]() { past_end_kernel(p, 256); });
    }), "a write past a cudaMalloc'd block did not fault");
    CHECK(dies([]() {
        cublasHandle_t h2;
        cublasCreate(&h2);
        float X[64], a = 1, b = 0;
        cublasSgemm(h2, CUBLAS_OP_N, CUBLAS_OP_N, 4, 4, 4, &a, X, 4, X + 16, 4, &b, X + 8, 4);
    }), "a GEMM whose C overlaps A was not stopped");
    printf("%s (%d failures)\n", fails ? "FAILED" : "emulator self-test: all checks passed", fails);
    return fails != 0;
}
