/* emu_rt.cc — the host side of the emulator (emu.h): the CUDA runtime calls and the cuBLAS
 * products the backend makes, on the CPU, every call synchronous.
 *
 * Device memory is host memory: cudaMalloc maps a block 256-byte aligned that ends right
 * before a PROT_NONE page (reading or writing past it faults) and fills it with 0xff bytes
 * (NaN as floats, -1 as ints: what a fresh cudaMalloc holds is unspecified, and code that
 * reads it before writing shows up). Every live block is recorded, so the copies check
 * their direction and extent: a "device" pointer of a copy or a memset must lie inside a
 * live block, a "host" one outside all, as a GPU would fail them (or fault). The device has
 * LOUPE_EMU_MEM_MB of memory (default 16384); past that cudaMalloc fails as a full GPU.
 *
 * cuBLAS: Sgemm, SgemmBatched, GemmEx (bf16 or f32 A and B, f32 C, f32 or TF32 compute) and
 * GemmBatchedEx (f32 matrices, f32 or TF32 compute) with
 * cuBLAS's column-major semantics: op(A) (m,k), op(B) (k,n), C (m,n), leading dimensions
 * checked as cuBLAS checks them (CUBLAS_STATUS_INVALID_VALUE), C = alpha·op(A)·op(B) +
 * beta·C with the sums in double and C not read when beta is 0. CUBLAS_TF32_TENSOR_OP_MATH
 * rounds f32 operands to TF32 (10-bit mantissa) first, as the tensor cores would. A C that
 * overlaps an operand, or another C of a batch, stops the program (undefined on a GPU). */
#include "emu.h"

#include <pthread.h>
#include <time.h>
#include <sys/mman.h>
#include <algorithm>
#include <map>
#include <string>
#include <vector>

/* ---- errors ------------------------------------------------------------------------------ */

static cudaError_t last_error = cudaSuccess;
void emu_set_error(cudaError_t e) {
    if (e != cudaSuccess) last_error = e;
}
cudaError_t cudaGetLastError() {
    cudaError_t e = last_error;
    last_error = cudaSuccess;
    return e;
}
cudaError_t cudaPeekAtLastError() { return last_error; }
static cudaError_t fail(cudaError_t e) {
    emu_set_error(e);
    return e;
}

const char *cudaGetErrorString(cudaError_t e) {
    switch (e) {
    case cudaSuccess: return "no error";
    case cudaErrorInvalidValue: return "invalid argument";
    case cudaErrorMemoryAllocation: return "out of memory";
    case cudaErrorInvalidConfiguration: return "invalid configuration argument";
    case cudaErrorInvalidDevicePointer: return "invalid device pointer";
    case cudaErrorInvalidMemcpyDirection: return "invalid copy direction for memcpy";
    }
    return "unknown error";
}

/* ---- device memory ------------------------------------------------------------------------ */

static pthread_mutex_t mem_lock = PTHREAD_MUTEX_INITIALIZER;
static std::map<uintptr_t, size_t> blocks;   // start → bytes (rounded to 256)

/* device blocks made elsewhere (emu_alloc.cc): the copies check against them too */
void emu_block_add(void *p, size_t n) {
    pthread_mutex_lock(&mem_lock);
    blocks[(uintptr_t)p] = n;
    pthread_mutex_unlock(&mem_lock);
}
size_t emu_block_remove(void *p) {   // its size, 0 when p is no block
    pthread_mutex_lock(&mem_lock);
    auto it = blocks.find((uintptr_t)p);
    size_t n = it == blocks.end() ? 0 : it->second;
    if (n) blocks.erase(it);
    pthread_mutex_unlock(&mem_lock);
    return n;
}
static size_t used;

static size_t total_mem() {
    static size_t t;
    if (!t) {
        const char *e = getenv("LOUPE_EMU_MEM_MB");
        t = (size_t)(e && atol(e) > 0 ? atol(e) : 16384) << 20;
    }
    return t;
}

bool emu_memory_only() {
    static int on = -1;
    if (on < 0) {
        const char *e = getenv("LOUPE_EMU_MEMORY_ONLY");
        on = e && *e == '1';
    }
    return on;
}

cudaError_t cudaMalloc(void **p, size_t bytes) {
    if (!p) return fail(cudaErrorInvalidValue);
    *p = NULL;
    if (!bytes) return cudaSuccess;
    size_t n = (bytes + 255) & ~(size_t)255;
    pthread_mutex_lock(&mem_lock);
    if (n > total_mem() - used) {
        pthread_mutex_unlock(&mem_lock);
        return fail(cudaErrorMemoryAllocation);
    }
    void *m = guarded(n);   // page end − n: 256-byte aligned
    if (!emu_memory_only()) memset(m, 0xff, n);
    blocks[(uintptr_t)m] = n;
    used += n;
    pthread_mutex_unlock(&mem_lock);
    *p = m;
    return cudaSuccess;
}

cudaError_t cudaFree(void *p) {
    if (!p) return cudaSuccess;
    pthread_mutex_lock(&mem_lock);
    auto it = blocks.find((uintptr_t)p);
    if (it == blocks.end()) {
        pthread_mutex_unlock(&mem_lock);
        return fail(cudaErrorInvalidDevicePointer);
    }
    size_t n = it->second, pg = 4096, body = (n + pg - 1) / pg * pg;
    blocks.erase(it);
    used -= n;
    pthread_mutex_unlock(&mem_lock);
    munmap((char *)p + n - body, body + pg);
    return cudaSuccess;
}

/* 1: [p, p+n) lies inside a live block; 0: p is outside every block (host memory);
 * -1: p is in a block but the range runs past its end */
static int where(const void *p, size_t n) {
    uintptr_t a = (uintptr_t)p;
    pthread_mutex_lock(&mem_lock);
    auto it = blocks.upper_bound(a);
    int r = 0;
    if (it != blocks.begin()) {
        --it;
        if (a < it->first + it->second) r = a + n <= it->first + it->second ? 1 : -1;
    }
    pthread_mutex_unlock(&mem_lock);
    return r;
}

bool emu_device_checks = true;
std::string emu_kernel_name(const void *k);   // emu.cc
void emu_need_device(const void *kernel, int arg, const void *p) {
    if (where(p, 0) == 1 || where((const char *)p - 1, 1) == 1) return;   // in, or just past
    fprintf(stderr, "emu: %s: argument %d (%p) is not device memory\n",
            emu_kernel_name(kernel).c_str(), arg, p);
    abort();
}

static cudaError_t check_copy(void *dst, const void *src, size_t n, cudaMemcpyKind kind) {
    if (!n) return cudaSuccess;
    if (!dst || !src) return cudaErrorInvalidValue;
    int d = where(dst, n), s = where(src, n);
    if (d < 0 || s < 0) return cudaErrorInvalidValue;   // past the end of a device block
    bool ok;
    switch (kind) {
    case cudaMemcpyHostToDevice: ok = d == 1 && s == 0; break;
    case cudaMemcpyDeviceToHost: ok = d == 0 && s == 1; break;
    case cudaMemcpyDeviceToDevice: ok = d == 1 && s == 1; break;
    case cudaMemcpyHostToHost: ok = d == 0 && s == 0; break;
    default: ok = true;
    }
    if (!ok) return cudaErrorInvalidMemcpyDirection;
    const char *a = (const char *)dst, *b = (const char *)src;
    if (a < b + n && b < a + n) return cudaErrorInvalidValue;   // overlapping copy
    return cudaSuccess;
}

cudaError_t cudaMemcpy(void *dst, const void *src, size_t n, cudaMemcpyKind kind) {
    cudaError_t e = check_copy(dst, src, n, kind);
    if (e != cudaSuccess) return fail(e);
    if (n) memcpy(dst, src, n);
    return cudaSuccess;
}
cudaError_t cudaMemcpyAsync(void *dst, const void *src, size_t n, cudaMemcpyKind kind,
                            cudaStream_t) {
    return cudaMemcpy(dst, src, n, kind);
}
cudaError_t cudaMemset(void *p, int v, size_t n) {
    if (!n) return cudaSuccess;
    if (where(p, n) != 1) return fail(cudaErrorInvalidValue);
    if (!emu_memory_only()) memset(p, v, n);
    return cudaSuccess;
}
cudaError_t cudaMemsetAsync(void *p, int v, size_t n, cudaStream_t) { return cudaMemset(p, v, n); }

cudaError_t cudaMemGetInfo(size_t *free_, size_t *total) {
    pthread_mutex_lock(&mem_lock);
    *free_ = total_mem() - used, *total = total_mem();
    pthread_mutex_unlock(&mem_lock);
    return cudaSuccess;
}

/* ---- device and streams ------------------------------------------------------------------------ */

struct emu_stream { int flags; };
static emu_stream streams[64];
static int nstreams;

cudaError_t cudaStreamCreateWithFlags(cudaStream_t *s, unsigned flags) {
    if (!s || nstreams == 64) return fail(cudaErrorInvalidValue);
    streams[nstreams].flags = (int)flags;
    *s = &streams[nstreams++];
    return cudaSuccess;
}
cudaError_t cudaStreamSynchronize(cudaStream_t) { return cudaSuccess; }   // all work is done

struct emu_event { double ms; bool recorded; };
cudaError_t cudaEventCreate(cudaEvent_t *e) {
    if (!e) return fail(cudaErrorInvalidValue);
    *e = new emu_event{0, false};
    return cudaSuccess;
}
cudaError_t cudaEventDestroy(cudaEvent_t e) {
    delete e;
    return cudaSuccess;
}
cudaError_t cudaEventRecord(cudaEvent_t e, cudaStream_t) {
    if (!e) return fail(cudaErrorInvalidValue);
    timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    e->ms = ts.tv_sec * 1e3 + ts.tv_nsec / 1e6, e->recorded = true;
    return cudaSuccess;
}
cudaError_t cudaEventElapsedTime(float *ms, cudaEvent_t a, cudaEvent_t b) {
    if (!ms || !a || !b || !a->recorded || !b->recorded) return fail(cudaErrorInvalidValue);
    *ms = (float)(b->ms - a->ms);
    return cudaSuccess;
}
cudaError_t cudaDeviceSynchronize() { return cudaSuccess; }
cudaError_t cudaGetDeviceCount(int *n) {
    *n = 1;
    return cudaSuccess;
}
cudaError_t cudaGetDevice(int *dev) {
    *dev = 0;
    return cudaSuccess;
}
cudaError_t cudaGetDeviceProperties(cudaDeviceProp *p, int dev) {
    if (!p || dev != 0) return fail(cudaErrorInvalidValue);
    memset(p, 0, sizeof *p);
    snprintf(p->name, sizeof p->name, "loupe CUDA emulator (CPU)");
    p->totalGlobalMem = total_mem();
    p->sharedMemPerBlock = 48 << 10, p->sharedMemPerBlockOptin = 227 << 10;
    p->major = 9, p->minor = 0;   // as an H100
    p->multiProcessorCount = 1, p->warpSize = 32, p->maxThreadsPerBlock = 1024;
    return cudaSuccess;
}

/* ---- cuBLAS --------------------------------------------------------------------------------- */

struct emu_blas { cudaStream_t stream; cublasMath_t mode; };

cublasStatus_t cublasCreate(cublasHandle_t *h) {
    *h = new emu_blas{NULL, CUBLAS_DEFAULT_MATH};
    return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasSetStream(cublasHandle_t h, cudaStream_t s) {
    if (!h) return CUBLAS_STATUS_NOT_INITIALIZED;
    h->stream = s;
    return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasSetMathMode(cublasHandle_t h, cublasMath_t mode) {
    if (!h) return CUBLAS_STATUS_NOT_INITIALIZED;
    if (mode != CUBLAS_DEFAULT_MATH && mode != CUBLAS_TF32_TENSOR_OP_MATH)
        return CUBLAS_STATUS_INVALID_VALUE;
    h->mode = mode;
    return CUBLAS_STATUS_SUCCESS;
}
const char *cublasGetStatusString(cublasStatus_t s) {
    switch (s) {
    case CUBLAS_STATUS_SUCCESS: return "CUBLAS_STATUS_SUCCESS";
    case CUBLAS_STATUS_NOT_INITIALIZED: return "CUBLAS_STATUS_NOT_INITIALIZED";
    case CUBLAS_STATUS_INVALID_VALUE: return "CUBLAS_STATUS_INVALID_VALUE";
    case CUBLAS_STATUS_NOT_SUPPORTED: return "CUBLAS_STATUS_NOT_SUPPORTED";
    }
    return "CUBLAS_STATUS_UNKNOWN";
}

/* an operand element as the product sees it: f32, bf16 widened, or f32 rounded to TF32 */
static inline double elem(const float *p, size_t i, bool tf32) {
    float f = p[i];
    if (tf32 && std::isfinite(f)) {
        unsigned u = __float_as_uint(f);
        u = (u + 0x1000u) & 0xffffe000u;   // nearest, 10 mantissa bits
        f = __uint_as_float(u);
    }
    return f;
}
static inline double elem(const uint16_t *p, size_t i, bool) {
    return __uint_as_float((unsigned)p[i] << 16);
}

static bool bad_dims(cublasOperation_t ta, cublasOperation_t tb, int m, int n, int k, int lda,
                     int ldb, int ldc) {
    auto mx1 = [](int v) { return v > 1 ? v : 1; };
    if ((unsigned)ta > CUBLAS_OP_C || (unsigned)tb > CUBLAS_OP_C) return true;
    if (m < 0 || n < 0 || k < 0) return true;
    bool bad = lda < mx1(ta == CUBLAS_OP_N ? m : k) || ldb < mx1(tb == CUBLAS_OP_N ? k : n) ||
               ldc < mx1(m);
    if (bad)   // what cuBLAS would refuse, said before the caller aborts on the status
        fprintf(stderr, "emu cuBLAS: invalid dims: op %d,%d m=%d n=%d k=%d lda=%d ldb=%d ldc=%d\n",
                (int)ta, (int)tb, m, n, k, lda, ldb, ldc);
    return bad;
}

/* C (m,n) = alpha·op(A)·op(B) + beta·C, column-major; op(A)(i,l) is A[i + l·lda] (N) or
 * A[l + i·lda] (T); op(B)(l,j) is B[l + j·ldb] (N) or B[j + l·ldb] (T). */
template <typename TA, typename TB>
static void gemm(cublasOperation_t ta, cublasOperation_t tb, int m, int n, int k, float alpha,
                 const TA *A, int lda, const TB *B, int ldb, float beta, float *C, int ldc,
                 bool tf32) {
    if (emu_memory_only()) return;
    std::vector<double> acc((size_t)m);
    for (int j = 0; j < n; j++) {
        auto b = [&](int l) {
            return elem(B, tb == CUBLAS_OP_N ? l + (size_t)j * ldb : j + (size_t)l * ldb, tf32);
        };
        if (ta == CUBLAS_OP_N) {   // columns of A are contiguous: axpy by column
            for (int i = 0; i < m; i++) acc[i] = 0;
            for (int l = 0; l < k; l++) {
                double bl = b(l);
                const TA *col = A + (size_t)l * lda;
                for (int i = 0; i < m; i++) acc[i] += elem(col, i, tf32) * bl;
            }
        } else {                   // rows of op(A) are contiguous: dot products
            std::vector<double> bj((size_t)k);
            for (int l = 0; l < k; l++) bj[l] = b(l);
            for (int i = 0; i < m; i++) {
                const TA *row = A + (size_t)i * lda;
                double s = 0;
                for (int l = 0; l < k; l++) s += elem(row, l, tf32) * bj[l];
                acc[i] = s;
            }
        }
        float *c = C + (size_t)j * ldc;
        for (int i = 0; i < m; i++)
            c[i] = beta == 0.0f ? (float)(alpha * acc[i])   // C not read: it may be garbage
                                : (float)(alpha * acc[i] + (double)beta * c[i]);
    }
}

/* ---- overlapping operands ---------------------------------------------------------------------
 * cuBLAS may compute C in any order and in parallel, so a C that shares an element with an A
 * or B of the same call, or (batched) with another matrix's C, gives undefined results on a
 * GPU; here it would give the loop's. Checked per call and reported (emu: … overlap), exact
 * to the element (matrices of interleaved heads share extents, not elements). */
struct mat { uintptr_t p; size_t rows, cols, ld, es; };   // column-major, es bytes an element
static uintptr_t mat_end(const mat &a) { return a.p + ((a.cols - 1) * a.ld + a.rows) * a.es; }
static void mat_elems(const mat &a, std::vector<uintptr_t> &out) {
    for (size_t j = 0; j < a.cols; j++)
        for (size_t i = 0; i < a.rows; i++) out.push_back(a.p + (j * a.ld + i) * a.es);
}
/* every matrix of the call lies wholly inside one live device block (and a batch's pointer
 * arrays too): on a GPU a host pointer, or a leading dimension that runs past the tensor, is
 * an illegal address or another tensor's data; here the pool's rounding would hide it */
static void need_device(const char *fn, const char *what, const void *p, size_t bytes) {
    if (!emu_device_checks || where(p, bytes) == 1) return;
    fprintf(stderr, "emu: %s: %s (%p, %zu bytes) is not inside one device block\n", fn, what, p,
            bytes);
    abort();
}
static void check_overlap(const char *fn, const std::vector<mat> &cs, const std::vector<mat> &ins) {
    for (const mat &m : cs) need_device(fn, "a C matrix", (const void *)m.p, mat_end(m) - m.p);
    for (const mat &m : ins) need_device(fn, "an A or B matrix", (const void *)m.p, mat_end(m) - m.p);
    auto meets = [](const mat &a, const mat &b) { return a.p < mat_end(b) && b.p < mat_end(a); };
    bool maybe = false;   // extents first: disjoint extents are disjoint elements
    for (size_t i = 0; i < cs.size() && !maybe; i++) {
        for (size_t j = i + 1; j < cs.size() && !maybe; j++) maybe = meets(cs[i], cs[j]);
        for (size_t j = 0; j < ins.size() && !maybe; j++) maybe = meets(cs[i], ins[j]);
    }
    if (!maybe) return;
    std::vector<uintptr_t> c, in;
    for (const mat &m : cs) mat_elems(m, c);
    std::sort(c.begin(), c.end());
    const char *what = NULL;
    if (std::adjacent_find(c.begin(), c.end()) != c.end()) what = "two C matrices share an element";
    for (size_t j = 0; j < ins.size() && !what; j++) {
        in.clear();
        mat_elems(ins[j], in);
        for (uintptr_t a : in)
            if (std::binary_search(c.begin(), c.end(), a)) {
                what = "C shares an element with an A or B";
                break;
            }
    }
    if (what) {
        fprintf(stderr, "emu: %s: %s (undefined on a GPU)\n", fn, what);
        abort();
    }
}
static mat op_mat(const void *p, cublasOperation_t t, int rows, int cols, int ld, size_t es) {
    return t == CUBLAS_OP_N ? mat{(uintptr_t)p, (size_t)rows, (size_t)cols, (size_t)ld, es}
                            : mat{(uintptr_t)p, (size_t)cols, (size_t)rows, (size_t)ld, es};
}

cublasStatus_t cublasSgemm(cublasHandle_t h, cublasOperation_t ta, cublasOperation_t tb, int m,
                           int n, int k, const float *alpha, const float *A, int lda,
                           const float *B, int ldb, const float *beta, float *C, int ldc) {
    if (!h) return CUBLAS_STATUS_NOT_INITIALIZED;
    if (bad_dims(ta, tb, m, n, k, lda, ldb, ldc) || !alpha || !beta)
        return CUBLAS_STATUS_INVALID_VALUE;
    if (!m || !n) return CUBLAS_STATUS_SUCCESS;
    std::vector<mat> ins;
    if (k) ins = {op_mat(A, ta, m, k, lda, 4), op_mat(B, tb, k, n, ldb, 4)};
    check_overlap("cublasSgemm", {mat{(uintptr_t)C, (size_t)m, (size_t)n, (size_t)ldc, 4}}, ins);
    gemm(ta, tb, m, n, k, *alpha, A, lda, B, ldb, *beta, C, ldc,
         h->mode == CUBLAS_TF32_TENSOR_OP_MATH);
    return CUBLAS_STATUS_SUCCESS;
}

/* The pointer arrays live in device memory (on a GPU too): read here directly. f32 matrices,
 * operands rounded to TF32 when tf32. */
static cublasStatus_t batched(const char *fn, cublasHandle_t h, cublasOperation_t ta,
                              cublasOperation_t tb, int m, int n, int k, const float *alpha,
                              const float *const A[], int lda, const float *const B[], int ldb,
                              const float *beta, float *const C[], int ldc, int count, bool tf32) {
    if (!h) return CUBLAS_STATUS_NOT_INITIALIZED;
    if (bad_dims(ta, tb, m, n, k, lda, ldb, ldc) || count < 0 || !alpha || !beta)
        return CUBLAS_STATUS_INVALID_VALUE;
    if (!m || !n || !count) return CUBLAS_STATUS_SUCCESS;
    if (emu_memory_only()) return CUBLAS_STATUS_SUCCESS;   // the arrays were never filled
    need_device(fn, "the array of A pointers", A, count * sizeof(float *));
    need_device(fn, "the array of B pointers", B, count * sizeof(float *));
    need_device(fn, "the array of C pointers", C, count * sizeof(float *));
    std::vector<mat> cs, ins;
    for (int z = 0; z < count; z++) {
        cs.push_back(mat{(uintptr_t)C[z], (size_t)m, (size_t)n, (size_t)ldc, 4});
        if (k) ins.push_back(op_mat(A[z], ta, m, k, lda, 4)), ins.push_back(op_mat(B[z], tb, k, n, ldb, 4));
    }
    check_overlap(fn, cs, ins);
    for (int z = 0; z < count; z++)
        gemm(ta, tb, m, n, k, *alpha, A[z], lda, B[z], ldb, *beta, C[z], ldc, tf32);
    return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasSgemmBatched(cublasHandle_t h, cublasOperation_t ta, cublasOperation_t tb,
                                  int m, int n, int k, const float *alpha,
                                  const float *const A[], int lda, const float *const B[],
                                  int ldb, const float *beta, float *const C[], int ldc,
                                  int count) {
    return batched("cublasSgemmBatched", h, ta, tb, m, n, k, alpha, A, lda, B, ldb, beta, C, ldc,
                   count, h && h->mode == CUBLAS_TF32_TENSOR_OP_MATH);
}

/* f32 A, B and C only (what the backend uses), f32 or TF32 compute */
cublasStatus_t cublasGemmBatchedEx(cublasHandle_t h, cublasOperation_t ta, cublasOperation_t tb,
                                   int m, int n, int k, const void *alpha,
                                   const void *const A[], cudaDataType at, int lda,
                                   const void *const B[], cudaDataType bt, int ldb,
                                   const void *beta, void *const C[], cudaDataType ct, int ldc,
                                   int count, cublasComputeType_t cp, cublasGemmAlgo_t) {
    if (at != CUDA_R_32F || bt != CUDA_R_32F || ct != CUDA_R_32F ||
        (cp != CUBLAS_COMPUTE_32F && cp != CUBLAS_COMPUTE_32F_FAST_TF32))
        return CUBLAS_STATUS_NOT_SUPPORTED;
    return batched("cublasGemmBatchedEx", h, ta, tb, m, n, k, (const float *)alpha,
                   (const float *const *)A, lda, (const float *const *)B, ldb,
                   (const float *)beta, (float *const *)C, ldc, count,
                   cp == CUBLAS_COMPUTE_32F_FAST_TF32 ||
                       (h && h->mode == CUBLAS_TF32_TENSOR_OP_MATH));
}

cublasStatus_t cublasGemmEx(cublasHandle_t h, cublasOperation_t ta, cublasOperation_t tb, int m,
                            int n, int k, const void *alpha, const void *A, cudaDataType at,
                            int lda, const void *B, cudaDataType bt, int ldb, const void *beta,
                            void *C, cudaDataType ct, int ldc, cublasComputeType_t cp,
                            cublasGemmAlgo_t) {
    if (!h) return CUBLAS_STATUS_NOT_INITIALIZED;
    if (at != bt || ct != CUDA_R_32F || (at != CUDA_R_32F && at != CUDA_R_16BF) ||
        (cp != CUBLAS_COMPUTE_32F && cp != CUBLAS_COMPUTE_32F_FAST_TF32))
        return CUBLAS_STATUS_NOT_SUPPORTED;
    if (bad_dims(ta, tb, m, n, k, lda, ldb, ldc) || !alpha || !beta)
        return CUBLAS_STATUS_INVALID_VALUE;
    if (!m || !n) return CUBLAS_STATUS_SUCCESS;
    size_t es = at == CUDA_R_16BF ? 2 : 4;
    std::vector<mat> ins;
    if (k) ins = {op_mat(A, ta, m, k, lda, es), op_mat(B, tb, k, n, ldb, es)};
    check_overlap("cublasGemmEx", {mat{(uintptr_t)C, (size_t)m, (size_t)n, (size_t)ldc, 4}}, ins);
    float al = *(const float *)alpha, be = *(const float *)beta;
    if (at == CUDA_R_16BF)
        gemm(ta, tb, m, n, k, al, (const uint16_t *)A, lda, (const uint16_t *)B, ldb, be,
             (float *)C, ldc, false);
    else
        gemm(ta, tb, m, n, k, al, (const float *)A, lda, (const float *)B, ldb, be, (float *)C,
             ldc, cp == CUBLAS_COMPUTE_32F_FAST_TF32 || h->mode == CUBLAS_TF32_TENSOR_OP_MATH);
    return CUBLAS_STATUS_SUCCESS;
}

