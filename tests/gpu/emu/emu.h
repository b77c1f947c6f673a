/* emu.h — just enough of CUDA to run the backend's .cu files on the CPU (tests/gpu/emu):
 * convert.py turns a .cu file into C++ that includes this header instead of cuda_int.cuh.
 *
 * Device side (emu.cc): every CUDA thread of a block is a fiber; __syncthreads and the warp
 * shuffles are real barriers (a shuffle that not all lanes of a warp reach deadlocks, and
 * the emulator stops with the kernel's name instead of passing), blocks run one after the
 * other. Shared memory, dynamic and static, starts as NaN (0xff bytes) in every block and
 * ends at a PROT_NONE page, so reading unwritten shared memory shows up in the results and
 * reading past it faults. 1-, 2- and 3-D grids and blocks (dim3), atomicAdd, the _rn
 * intrinsics (compile with -ffp-contract=off: no FMA contraction), bit casts.
 *
 * Host side (emu_rt.cc): the CUDA runtime calls and the cuBLAS products the backend makes,
 * on host memory (cudaMalloc: NaN-filled, guarded by a PROT_NONE page), everything
 * synchronous on the CPU.
 *
 * At its end this header includes the real cuda_int.cuh (cu_block_sum, cu_blocks, CU_CHECK,
 * …), whose <cuda_runtime.h> and <cublas_v2.h> are the stubs in tests/gpu/emu/cuda_stub. */
#pragma once
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <type_traits>
extern "C" {
#include "nn/ops.h"
}

/* ---- qualifiers ------------------------------------------------------------------------ */
#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __launch_bounds__(...)
/* __shared__ is left undefined on purpose: convert.py rewrites every static __shared__
   array to emu_shared() (one copy per block); one it missed fails to compile. */

/* ---- thread and block indices ---------------------------------------------------------- */
struct uint3 { unsigned x, y, z; };
struct dim3 {
    unsigned x, y, z;
    constexpr dim3(unsigned x_ = 1, unsigned y_ = 1, unsigned z_ = 1) : x(x_), y(y_), z(z_) {}
};
struct alignas(16) float4 { float x, y, z, w; };
struct alignas(16) uint4 { unsigned x, y, z, w; };
static inline uint4 make_uint4(unsigned x, unsigned y, unsigned z, unsigned w) {
    return uint4{x, y, z, w};
}
struct emu_fiber;
struct emu_thread { uint3 tid; unsigned lin; };   // lin: threadIdx linearised (x fastest)
extern emu_thread *emu_cur;
extern uint3 emu_bid;
extern dim3 emu_bdim, emu_gdim;
#define threadIdx (emu_cur->tid)
#define blockIdx emu_bid
#define blockDim emu_bdim
#define gridDim emu_gdim

/* ---- barriers, shuffles, shared memory -------------------------------------------------- */
void __syncthreads();
/* A warp exchange: every lane of the warp publishes v and waits for the others; the last
 * to arrive runs `all` (when not NULL) over the 32 slots first. The slots returned stay
 * valid until the lane's next exchange. */
uint64_t *emu_warp_exchange(uint64_t v, void (*all)(uint64_t *slots) = NULL);
template <typename T> static inline T emu_shfl(T v, unsigned (*pick)(unsigned, int), int arg) {
    static_assert(sizeof(T) <= 8, "shuffle of a value over 8 bytes");
    uint64_t u = 0;
    memcpy(&u, &v, sizeof v);
    unsigned lane = emu_cur->lin & 31;
    uint64_t r = emu_warp_exchange(u)[pick(lane, arg) & 31];
    T out;
    memcpy(&out, &r, sizeof out);
    return out;
}
static inline unsigned emu_lane_src(unsigned, int src) { return (unsigned)src; }
static inline unsigned emu_lane_xor(unsigned lane, int m) { return lane ^ (unsigned)m; }
template <typename T> static inline T __shfl_sync(unsigned, T v, int src) {
    return emu_shfl(v, emu_lane_src, src);
}
template <typename T> static inline T __shfl_xor_sync(unsigned, T v, int m) {
    return emu_shfl(v, emu_lane_xor, m);
}
/* __syncwarp: a barrier of the warp's 32 lanes (every lane must reach it) */
static inline void __syncwarp(unsigned = 0xffffffffu) { emu_warp_exchange(0); }

/* ---- bf16 and warp matrix products (cuda_bf16.h, mma.h; stubs in cuda_stub) --------------
 * __nv_bfloat16 is its 16 bits. A wmma fragment here holds its whole matrix (widened to
 * float), and only lane 0's copy is used: CUDA leaves the mapping of elements to lanes
 * unspecified, so code that touches fragments only through fill / load / mma / store cannot
 * tell. load_matrix_sync, mma_sync and store_matrix_sync are warp barriers (a lane that does
 * not reach one deadlocks, as on a GPU) after which lane 0 does the work — once the other
 * lanes have been let go, so shared memory a lane writes before a load must be fenced by a
 * __syncwarp/__syncthreads before it, and shared memory a store writes is safe to read only
 * after one: a kernel missing either reads stale values here (lane 31 runs on first). The
 * products sum in float, in k order. */
struct __nv_bfloat16 { uint16_t x; };
/* a wmma pointer must be 32-byte aligned (shared memory: from the dynamic region's start,
   which a GPU aligns) and ldm a multiple of 16 bytes: else the emulator stops */
void emu_wmma_check(const char *fn, const void *p, unsigned ldm, size_t esize);
namespace nvcuda {
namespace wmma {
struct row_major {};
struct col_major {};
struct matrix_a {};
struct matrix_b {};
struct accumulator {};
enum layout_t { mem_row_major, mem_col_major };
template <typename Use, int M, int N, int K, typename T, typename L = void> struct fragment {
    static constexpr int R = std::is_same<Use, matrix_b>::value ? K : M;
    static constexpr int C = std::is_same<Use, matrix_a>::value ? K : N;
    float v[R * C];   /* (r, c) at v[r·C + c] */
};
static inline float emu_elem(const __nv_bfloat16 *p, size_t i) {
    unsigned u = (unsigned)p[i].x << 16;
    float f;
    memcpy(&f, &u, 4);
    return f;
}
static inline float emu_elem(const float *p, size_t i) { return p[i]; }
static inline bool emu_lane0() {
    emu_warp_exchange(0);
    return (emu_cur->lin & 31) == 0;
}
template <typename U, int M, int N, int K, typename T, typename L, typename V>
static inline void fill_fragment(fragment<U, M, N, K, T, L> &f, V x) {
    for (float &e : f.v) e = (float)x;
}
/* matrix_a / matrix_b: the layout is the fragment's */
template <typename U, int M, int N, int K, typename T, typename L, typename P>
static inline void load_matrix_sync(fragment<U, M, N, K, T, L> &f, const P *p, unsigned ldm) {
    typedef fragment<U, M, N, K, T, L> F;
    emu_wmma_check("load_matrix_sync", p, ldm, sizeof(P));
    if (!emu_lane0()) return;
    for (int r = 0; r < F::R; r++)
        for (int c = 0; c < F::C; c++)
            f.v[r * F::C + c] = emu_elem(p, std::is_same<L, col_major>::value
                                                ? (size_t)r + (size_t)c * ldm
                                                : (size_t)r * ldm + c);
}
/* the accumulator: the layout is given */
template <int M, int N, int K>
static inline void load_matrix_sync(fragment<accumulator, M, N, K, float> &f, const float *p,
                                    unsigned ldm, layout_t l) {
    emu_wmma_check("load_matrix_sync", p, ldm, 4);
    if (!emu_lane0()) return;
    for (int r = 0; r < M; r++)
        for (int c = 0; c < N; c++)
            f.v[r * N + c] = p[l == mem_col_major ? r + (size_t)c * ldm : (size_t)r * ldm + c];
}
template <int M, int N, int K>
static inline void store_matrix_sync(float *p, const fragment<accumulator, M, N, K, float> &f,
                                     unsigned ldm, layout_t l) {
    emu_wmma_check("store_matrix_sync", p, ldm, 4);
    if (!emu_lane0()) return;
    for (int r = 0; r < M; r++)
        for (int c = 0; c < N; c++)
            p[l == mem_col_major ? r + (size_t)c * ldm : (size_t)r * ldm + c] = f.v[r * N + c];
}
template <int M, int N, int K, typename T, typename LA, typename LB>
static inline void mma_sync(fragment<accumulator, M, N, K, float> &d,
                            const fragment<matrix_a, M, N, K, T, LA> &a,
                            const fragment<matrix_b, M, N, K, T, LB> &b,
                            const fragment<accumulator, M, N, K, float> &c) {
    if (!emu_lane0()) return;
    float out[M * N];
    for (int r = 0; r < M; r++)
        for (int n = 0; n < N; n++) {
            float s = c.v[r * N + n];
            for (int k = 0; k < K; k++) s += a.v[r * K + k] * b.v[k * N + n];
            out[r * N + n] = s;
        }
    memcpy(d.v, out, sizeof out);
}
}  // namespace wmma
}  // namespace nvcuda

/* The block's dynamic shared memory (extern __shared__ T x[]; → T *x = emu_smem();). */
float *emu_smem();
/* Static __shared__ arrays: convert.py gives each declaration a static emu_site; the first
 * thread of a block to reach it gets the storage filled with NaN, the others the same. */
struct emu_site { void *p; size_t n; uint64_t block; };
void *emu_shared_at(emu_site &s, size_t n);
template <typename T> static inline T &emu_shared(emu_site &s) {
    return *(T *)emu_shared_at(s, sizeof(T));
}

/* ---- atomics and intrinsics --------------------------------------------------------------
 * Threads run one at a time and switch only at barriers, so a read-modify-write is atomic.
 * (The order of the adds is fixed here; on a GPU it is not: sums may differ in the last
 * bits from run to run, which the emulator cannot show.) */
template <typename T> static inline T atomicAdd(T *p, T v) {
    T old = *p;
    *p = old + v;
    return old;
}
static inline float __fmul_rn(float a, float b) { return a * b; }
static inline float __fadd_rn(float a, float b) { return a + b; }
static inline float __fsub_rn(float a, float b) { return a - b; }
static inline float __fdiv_rn(float a, float b) { return a / b; }
static inline float __fsqrt_rn(float a) { return sqrtf(a); }
static inline unsigned __float_as_uint(float f) { unsigned u; memcpy(&u, &f, 4); return u; }
static inline float __uint_as_float(unsigned u) { float f; memcpy(&f, &u, 4); return f; }
using std::isinf;
using std::isnan;
/* CUDA's min/max: fminf/fmaxf for floating point (a NaN operand gives the other one) */
template <typename T> static inline T min(T a, T b) { return a < b ? a : b; }
template <typename T> static inline T max(T a, T b) { return a > b ? a : b; }
static inline float min(float a, float b) { return fminf(a, b); }
static inline float max(float a, float b) { return fmaxf(a, b); }
static inline double min(double a, double b) { return fmin(a, b); }
static inline double max(double a, double b) { return fmax(a, b); }

/* ---- launches ------------------------------------------------------------------------------
 * kernel<<<grid, block, smem, stream>>>(args) becomes emu_launch(&kernel, grid, block, smem,
 * stream, [&] { kernel(args); }): checked like a real launch (block ≤ 1024 threads, grid.y/z
 * ≤ 65535, dynamic shared memory ≤ 48 KB unless cudaFuncSetAttribute raised the kernel's
 * limit; a bad one sets cudaGetLastError's error and runs nothing), then every block runs
 * before it returns. */
typedef struct emu_stream *cudaStream_t;
void emu_launch(const void *kernel, dim3 grid, dim3 block, size_t smem, cudaStream_t stream,
                const std::function<void()> &fn);
template <typename K> static inline const void *emu_kernel_id(K *k) { return (const void *)k; }
/* Before each launch (convert.py): every pointer argument must be NULL or point into (or
 * just past) a live cudaMalloc'd block; a host pointer handed to a kernel is an illegal
 * address on a GPU but readable here. Pointers inside struct arguments are not seen. Off in
 * the kernel checks, which hand kernels host buffers (emu_check.cc). */
extern bool emu_device_checks;
/* LOUPE_EMU_MEMORY_ONLY=1: no kernel runs and no product is computed, cudaMalloc'd memory
 * is neither filled nor touched by memsets, copies still copy: what a program allocates, and
 * when, without the arithmetic — the pool's peak for shapes far too large to compute here
 * (bench/gpu/memory.sh). Every value read back from the device is 0. */
bool emu_memory_only();
void emu_need_device(const void *kernel, int arg, const void *p);
template <typename T> static inline void emu_arg(const void *k, int i, T *p) {
    if (emu_device_checks && p) emu_need_device(k, i, (const void *)p);
}
template <typename T> static inline void emu_arg(const void *, int, const T &) {}
template <typename... A> static inline void emu_check_args(const void *k, const A &...a) {
    int i = 0;
    (emu_arg(k, ++i, a), ...);
}

/* ---- the CUDA runtime (emu_rt.cc) ------------------------------------------------------- */
enum cudaError_t {
    cudaSuccess = 0, cudaErrorInvalidValue = 1, cudaErrorMemoryAllocation = 2,
    cudaErrorInvalidConfiguration = 9, cudaErrorInvalidDevicePointer = 17,
    cudaErrorInvalidMemcpyDirection = 21,
};
enum cudaMemcpyKind {
    cudaMemcpyHostToHost = 0, cudaMemcpyHostToDevice = 1, cudaMemcpyDeviceToHost = 2,
    cudaMemcpyDeviceToDevice = 3, cudaMemcpyDefault = 4,
};
enum cudaFuncAttribute { cudaFuncAttributeMaxDynamicSharedMemorySize = 8 };
#define cudaStreamNonBlocking 0x01
struct cudaDeviceProp {
    char name[256];
    size_t totalGlobalMem, sharedMemPerBlock, sharedMemPerBlockOptin;
    int major, minor, multiProcessorCount, warpSize, maxThreadsPerBlock;
};
cudaError_t cudaMalloc(void **p, size_t bytes);
template <typename T> static inline cudaError_t cudaMalloc(T **p, size_t bytes) {
    return cudaMalloc((void **)p, bytes);
}
cudaError_t cudaFree(void *p);
cudaError_t cudaMemcpy(void *dst, const void *src, size_t n, cudaMemcpyKind kind);
cudaError_t cudaMemcpyAsync(void *dst, const void *src, size_t n, cudaMemcpyKind kind,
                            cudaStream_t s = 0);
cudaError_t cudaMemset(void *p, int v, size_t n);
cudaError_t cudaMemsetAsync(void *p, int v, size_t n, cudaStream_t s = 0);
cudaError_t cudaStreamSynchronize(cudaStream_t s);
cudaError_t cudaDeviceSynchronize();
cudaError_t cudaStreamCreateWithFlags(cudaStream_t *s, unsigned flags);
/* events: the host's clock when recorded (all work is done by then) */
typedef struct emu_event *cudaEvent_t;
cudaError_t cudaEventCreate(cudaEvent_t *e);
cudaError_t cudaEventDestroy(cudaEvent_t e);
cudaError_t cudaEventRecord(cudaEvent_t e, cudaStream_t s = 0);
cudaError_t cudaEventElapsedTime(float *ms, cudaEvent_t a, cudaEvent_t b);
cudaError_t cudaGetDeviceCount(int *n);
cudaError_t cudaGetDevice(int *dev);
cudaError_t cudaGetDeviceProperties(cudaDeviceProp *prop, int dev);
cudaError_t cudaMemGetInfo(size_t *free_, size_t *total);
cudaError_t emu_func_set_attribute(const void *kernel, cudaFuncAttribute attr, int value);
template <typename K> static inline cudaError_t cudaFuncSetAttribute(K *k, cudaFuncAttribute a,
                                                                     int v) {
    return emu_func_set_attribute((const void *)k, a, v);
}
cudaError_t cudaGetLastError();
cudaError_t cudaPeekAtLastError();
const char *cudaGetErrorString(cudaError_t e);
void emu_set_error(cudaError_t e);   // sticky until cudaGetLastError, as the runtime's

/* ---- cuBLAS (emu_rt.cc): column-major, sums in double ----------------------------------- */
typedef struct emu_blas *cublasHandle_t;
enum cublasStatus_t {
    CUBLAS_STATUS_SUCCESS = 0, CUBLAS_STATUS_NOT_INITIALIZED = 1,
    CUBLAS_STATUS_INVALID_VALUE = 7, CUBLAS_STATUS_NOT_SUPPORTED = 15,
};
enum cublasOperation_t { CUBLAS_OP_N = 0, CUBLAS_OP_T = 1, CUBLAS_OP_C = 2 };
enum cublasMath_t { CUBLAS_DEFAULT_MATH = 0, CUBLAS_TF32_TENSOR_OP_MATH = 3 };
enum cudaDataType { CUDA_R_32F = 0, CUDA_R_16BF = 14 };
enum cublasComputeType_t { CUBLAS_COMPUTE_32F = 68, CUBLAS_COMPUTE_32F_FAST_TF32 = 77 };
enum cublasGemmAlgo_t { CUBLAS_GEMM_DEFAULT = -1 };
cublasStatus_t cublasCreate(cublasHandle_t *h);
cublasStatus_t cublasSetStream(cublasHandle_t h, cudaStream_t s);
cublasStatus_t cublasSetMathMode(cublasHandle_t h, cublasMath_t mode);
const char *cublasGetStatusString(cublasStatus_t s);
cublasStatus_t cublasSgemm(cublasHandle_t h, cublasOperation_t ta, cublasOperation_t tb, int m,
                           int n, int k, const float *alpha, const float *A, int lda,
                           const float *B, int ldb, const float *beta, float *C, int ldc);
cublasStatus_t cublasSgemmBatched(cublasHandle_t h, cublasOperation_t ta, cublasOperation_t tb,
                                  int m, int n, int k, const float *alpha,
                                  const float *const A[], int lda, const float *const B[],
                                  int ldb, const float *beta, float *const C[], int ldc,
                                  int count);
cublasStatus_t cublasGemmEx(cublasHandle_t h, cublasOperation_t ta, cublasOperation_t tb, int m,
                            int n, int k, const void *alpha, const void *A, cudaDataType at,
                            int lda, const void *B, cudaDataType bt, int ldb, const void *beta,
                            void *C, cudaDataType ct, int ldc, cublasComputeType_t cp,
                            cublasGemmAlgo_t algo);
cublasStatus_t cublasGemmBatchedEx(cublasHandle_t h, cublasOperation_t ta, cublasOperation_t tb,
                                   int m, int n, int k, const void *alpha,
                                   const void *const A[], cudaDataType at, int lda,
                                   const void *const B[], cudaDataType bt, int ldb,
                                   const void *beta, void *const C[], cudaDataType ct, int ldc,
                                   int count, cublasComputeType_t cp, cublasGemmAlgo_t algo);

/* ---- for the kernel checks (flash_check.cc, bf16_check.cc; emu_check.cc) ----------------- */
void *guarded(size_t n);                 // n bytes ending right before a PROT_NONE page
extern int emu_scratch_fail;             // the n-th cu_scratch from now returns NULL …
extern const char *emu_scratch_failed_op;   // … naming its op here

#include "backend/cuda/cuda_int.cuh"

/* cuda_int.cuh's warp reductions (the xor butterfly: 5 shuffles, round o: v = op(v, v of
 * lane ^ o)) as one exchange: the last lane to arrive runs the same 5 rounds, in the same
 * order, for all 32 lanes, so every lane gets the bits the shuffles would give. A third of
 * the barriers of a block reduction (cu_block_sum: 12 → 4), which the row kernels (norms,
 * softmax) are made of; the kernels' own shuffles stay shuffles. */
template <typename T, int MAX> static void emu_butterfly(uint64_t *slots) {
    T v[32], n[32];
    for (int l = 0; l < 32; l++) memcpy(&v[l], &slots[l], sizeof(T));
    for (int o = 16; o > 0; o >>= 1) {
        for (int l = 0; l < 32; l++) n[l] = MAX ? max(v[l], v[l ^ o]) : v[l] + v[l ^ o];
        memcpy(v, n, sizeof v);
    }
    for (int l = 0; l < 32; l++) memcpy(&slots[l], &v[l], sizeof(T));
}
template <typename T, int MAX> static inline T emu_warp_reduce(T v) {
    uint64_t u = 0;
    memcpy(&u, &v, sizeof v);
    u = emu_warp_exchange(u, emu_butterfly<T, MAX>)[emu_cur->lin & 31];
    memcpy(&v, &u, sizeof v);
    return v;
}
template <> inline float cu_warp_sum<float>(float v) { return emu_warp_reduce<float, 0>(v); }
template <> inline double cu_warp_sum<double>(double v) { return emu_warp_reduce<double, 0>(v); }
template <> inline float cu_warp_max<float>(float v) { return emu_warp_reduce<float, 1>(v); }
