/* emu.h — just enough of CUDA to run a .cu file's kernels on the CPU, for checking kernels
 * on a machine without a GPU (tests/gpu/emu/run.sh). Every CUDA thread of a block is a
 * ucontext fiber; __syncthreads and the warp shuffles are real barriers (a shuffle that not all
 * 32 lanes reach deadlocks instead of passing), shared memory starts as NaN and ends at a
 * PROT_NONE page, as do the buffers the check allocates, so reading unwritten shared memory
 * shows up in the results and reading past any buffer faults. Stands in for cuda_int.cuh. */
#pragma once
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <cstdint>
#include <functional>
#include <vector>
#include <ucontext.h>
#include <sys/mman.h>
#include <unistd.h>
extern "C" {
#include "nn/ops.h"
}
#define __global__
#define __device__
#define __host__
struct alignas(16) float4 { float x, y, z, w; };
#define __forceinline__ inline
#define __launch_bounds__(x)
struct emu_dim { unsigned x; };
struct emu_fiber { ucontext_t ctx; char *stack; emu_dim tid; bool done; };
extern emu_fiber *emu_cur;
extern emu_dim emu_bid, emu_bdim, emu_gdim;
#define threadIdx (emu_cur->tid)
#define blockIdx emu_bid
#define blockDim emu_bdim
#define gridDim emu_gdim
void __syncthreads();
float __shfl_sync(unsigned mask, float v, int src);
float __shfl_xor_sync(unsigned mask, float v, int m);
float *emu_smem();
using std::isinf;
template <typename T> static inline T min(T a, T b) { return a < b ? a : b; }
template <typename T> static inline T max(T a, T b) { return a > b ? a : b; }
template <typename T> inline T cu_warp_sum(T v) {
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}
template <typename T> inline T cu_warp_max(T v) {
    for (int o = 16; o > 0; o >>= 1) v = max(v, __shfl_xor_sync(0xffffffffu, v, o));
    return v;
}
typedef int cudaStream_t;
extern cudaStream_t cu_stream;
typedef int cudaError_t;
#define cudaSuccess 0
#define cudaFuncAttributeMaxDynamicSharedMemorySize 0
template <typename K> int cudaFuncSetAttribute(K, int, int v) {
    if (v > 227 * 1024) { fprintf(stderr, "smem %d over 227 KB\n", v); abort(); }
    return 0;
}
static inline int cudaGetLastError() { return 0; }
static inline const char *cudaGetErrorString(int) { return "?"; }
[[noreturn]] void cu_fatal(const char *what, const char *file, int line);
#define CU_CHECK(x) do { if ((x) != cudaSuccess) cu_fatal("cuda", __FILE__, __LINE__); } while (0)
#define CU_LAUNCHED() CU_CHECK(cudaGetLastError())
/* cu_scratch as the pool's (cuda_int.cuh), with a test knob: emu_scratch_fail = n makes the
 * n-th request from now return NULL, naming its op in emu_scratch_failed_op. */
void *cu_scratch(const char *op, size_t bytes);
void cu_scratch_free(void *p);
extern int emu_scratch_fail;
extern const char *emu_scratch_failed_op;
void emu_launch(unsigned grid, unsigned block, size_t smem, std::function<void()> fn);
/* ---- for cuda_bf16.cu: grid-stride loops, bit casts, and cuBLAS's cublasGemmEx as far as it
 * calls it (bf16_check.cc: a column-major loop, bf16 A and B widened, f32 sums) ---- */
#define CU_GRID_STRIDE(i, n) \
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < (n); \
         i += (size_t)gridDim.x * blockDim.x)
static inline unsigned cu_blocks(size_t n) {
    size_t b = (n + 255) / 256;
    if (b < 1) b = 1;
    return (unsigned)(b > 65535u * 4 ? 65535u * 4 : b);
}
static inline unsigned __float_as_uint(float f) { unsigned u; memcpy(&u, &f, 4); return u; }
static inline float __uint_as_float(unsigned u) { float f; memcpy(&f, &u, 4); return f; }
typedef int cublasHandle_t;
extern cublasHandle_t cu_blas;
typedef int cublasStatus_t;
#define CUBLAS_STATUS_SUCCESS 0
enum cublasOperation_t { CUBLAS_OP_N, CUBLAS_OP_T };
enum cudaDataType { CUDA_R_16BF, CUDA_R_32F };
enum cublasComputeType_t { CUBLAS_COMPUTE_32F };
enum cublasGemmAlgo_t { CUBLAS_GEMM_DEFAULT };
cublasStatus_t cublasGemmEx(cublasHandle_t h, cublasOperation_t ta, cublasOperation_t tb, int m,
                            int n, int k, const void *alpha, const void *A, cudaDataType at,
                            int lda, const void *B, cudaDataType bt, int ldb, const void *beta,
                            void *C, cudaDataType ct, int ldc, cublasComputeType_t cp,
                            cublasGemmAlgo_t algo);
#define CUBLAS_CHECK(x) do { if ((x) != CUBLAS_STATUS_SUCCESS) cu_fatal("cublas", __FILE__, __LINE__); } while (0)
int cu_check_ids(const int *ids, int N, int V);
