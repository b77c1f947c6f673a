/* cuda_mem.cu — start-up (device probe, stream, cuBLAS handle) and the device memory pool.
 *
 * The pool is a caching allocator over cudaMalloc (never managed memory): a freed block is
 * kept on a free list and handed out again to a request of about its size, so a training
 * step that allocates and frees the same buffers every step costs no cudaMalloc/cudaFree
 * after the first (cudaFree synchronises the whole device). Blocks are not split. When
 * cudaMalloc fails, the cached blocks are released and the request is tried once more;
 * if that fails too, alloc returns NULL with an "out of GPU memory" error the user can act
 * on. The bookkeeping record of every live block is an lp_malloc'd node, so the test hook
 * lp_mem_fail_after() makes device allocation fail like host allocation.
 *
 * Because every op runs on the one stream (cuda_int.cuh), a block freed on the host while
 * kernels that use it are still queued may be reused at once: its next user is queued
 * behind them. */
#include <pthread.h>
#include <string.h>

#include "backend/cuda/cuda_backend.h"
#include "backend/cuda/cuda_int.cuh"

cudaStream_t cu_stream;
cublasHandle_t cu_blas;

static pthread_mutex_t pool_lock = PTHREAD_MUTEX_INITIALIZER;

void cu_fatal(const char *what, const char *file, int line) {
    fprintf(stderr, "loupe: CUDA error: %s (%s:%d)\n", what, file, line);
    abort();
}

/* ---- the pool ------------------------------------------------------------------------- */

typedef struct blk {
    void *p;
    size_t size;        /* rounded size, what cudaMalloc got */
    struct blk *next;   /* hash chain (live) or free list (cached, ascending size) */
} blk;

#define NBUCKETS 16384
static blk *live[NBUCKETS];
static blk *cached;   /* free blocks, smallest first */
static be_cuda_mem_stats st;

static size_t bucket(const void *p) { return ((uintptr_t)p >> 8) * 0x9E3779B97F4A7C15ull >> 50; }

static size_t round_size(size_t bytes) {
    if (bytes == 0) bytes = 1;   // a zero-byte buffer is still a pointer to free
    if (bytes < ((size_t)1 << 20)) return (bytes + 511) & ~(size_t)511;
    return (bytes + ((size_t)1 << 20) - 1) & ~(((size_t)1 << 20) - 1);
}

/* Release every cached block (the caller holds the lock). Queued work may still use a
 * cached block, so the stream is drained first. */
static void trim_locked(void) {
    if (cached) CU_CHECK(cudaStreamSynchronize(cu_stream));
    while (cached) {
        blk *b = cached;
        cached = b->next;
        CU_CHECK(cudaFree(b->p));
        st.reserved -= b->size;
        lp_free(b);
    }
}

static void *pool_alloc(size_t bytes) {
    size_t need = round_size(bytes);
    // a fresh record for every request, even one served from the cache, so that the test
    // hook fails device allocations deterministically
    blk *b = (blk *)lp_malloc(sizeof *b);
    pthread_mutex_lock(&pool_lock);
    // best fit among the cached blocks, wasting at most a quarter of the block
    blk **pp = &cached, *hit = NULL;
    for (; b && *pp; pp = &(*pp)->next)
        if ((*pp)->size >= need && (*pp)->size - need <= (*pp)->size / 4) {
            hit = *pp;
            *pp = hit->next;
            break;
        } else if ((*pp)->size > need + need / 3) {
            break;   // ascending: nothing further fits tightly enough
        }
    if (hit) {
        b->p = hit->p;
        b->size = hit->size;
        lp_free(hit);
    } else {
        void *p = NULL;
        cudaError_t e = b ? cudaMalloc(&p, need) : cudaErrorMemoryAllocation;
        if (b && e == cudaErrorMemoryAllocation) {
            (void)cudaGetLastError();   // not sticky: clear it, free the cache, try again
            trim_locked();
            e = cudaMalloc(&p, need);
        }
        if (!b || e != cudaSuccess) {
            (void)cudaGetLastError();
            int odd = b && e != cudaErrorMemoryAllocation;   // not plain exhaustion
            lp_free(b);
            pthread_mutex_unlock(&pool_lock);
            if (odd)
                lp_seterr("out of GPU memory allocating %zu bytes (%s); try a smaller batch "
                          "or sequence", bytes, cudaGetErrorString(e));
            else
                lp_seterr("out of GPU memory allocating %zu bytes; try a smaller batch or "
                          "sequence", bytes);
            return NULL;
        }
        b->p = p;
        b->size = need;
        st.reserved += need;
        if (st.reserved > st.peak_reserved) st.peak_reserved = st.reserved;
    }
    size_t h = bucket(b->p);
    b->next = live[h];
    live[h] = b;
    st.in_use += b->size;
    if (st.in_use > st.peak_in_use) st.peak_in_use = st.in_use;
    pthread_mutex_unlock(&pool_lock);
    return b->p;
}

static void pool_free(void *p) {
    if (!p) return;
    pthread_mutex_lock(&pool_lock);
    blk **pp = &live[bucket(p)];
    while (*pp && (*pp)->p != p) pp = &(*pp)->next;
    if (!*pp) cu_fatal("free of a pointer the pool did not hand out", __FILE__, __LINE__);
    blk *b = *pp;
    *pp = b->next;
    st.in_use -= b->size;
    blk **q = &cached;
    while (*q && (*q)->size < b->size) q = &(*q)->next;
    b->next = *q;
    *q = b;
    pthread_mutex_unlock(&pool_lock);
}

static void fmt_size(char *buf, size_t cap, size_t bytes) {   /* 10³ units, as sb_bytes */
    if (bytes < 1000) snprintf(buf, cap, "%zu bytes", bytes);
    else if (bytes < 100000) snprintf(buf, cap, "%.1f KB", (double)bytes / 1e3);
    else snprintf(buf, cap, "%.1f MB", (double)bytes / 1e6);
}

/* The first op that could not get its scratch since cu_op_failed last asked. Ops run on the
 * model's one thread (a fw_model is single-threaded), so no lock. */
static char op_err[LP_ERR_MAX];
static int op_err_set;

void *cu_scratch(const char *op, size_t bytes) {
    void *p = pool_alloc(bytes);
    if (p) return p;
    // free: the device's (the pool has just released its cache) plus what the cache holds
    // when the allocation failed before reaching cudaMalloc (lp_mem_fail_after)
    size_t dev_free = 0, total = 0;
    if (cudaMemGetInfo(&dev_free, &total) != cudaSuccess) {
        (void)cudaGetLastError();
        dev_free = 0;
    }
    be_cuda_mem_stats s;
    be_cuda_memory(&s);
    char need[32], have[32];
    fmt_size(need, sizeof need, bytes);
    fmt_size(have, sizeof have, dev_free + (s.reserved - s.in_use));
    lp_seterr("%s: out of GPU memory for %s of scratch (%s free); try a smaller batch or "
              "sequence length", op, need, have);
    if (!op_err_set) {
        snprintf(op_err, sizeof op_err, "%s", lp_geterr());
        op_err_set = 1;
    }
    return NULL;
}

int cu_op_failed(void) {
    if (!op_err_set) return 0;
    op_err_set = 0;
    lp_seterr("%s", op_err);
    return 1;
}

void cu_scratch_free(void *p) { pool_free(p); }

extern "C" void be_cuda_memory(be_cuda_mem_stats *out) {
    pthread_mutex_lock(&pool_lock);
    *out = st;
    pthread_mutex_unlock(&pool_lock);
}

extern "C" void be_cuda_reset_peak(void) {
    pthread_mutex_lock(&pool_lock);
    st.peak_in_use = st.in_use;
    st.peak_reserved = st.reserved;
    pthread_mutex_unlock(&pool_lock);
}

extern "C" size_t be_cuda_peak_bytes(void) {
    be_cuda_mem_stats s;
    be_cuda_memory(&s);
    return s.peak_in_use;
}

extern "C" void be_cuda_trim(void) {
    pthread_mutex_lock(&pool_lock);
    trim_locked();
    pthread_mutex_unlock(&pool_lock);
}

/* ---- the memory functions of the table ------------------------------------------------ */

void *cu_alloc(size_t bytes) { return pool_alloc(bytes); }
void cu_free(void *p) { pool_free(p); }

/* From pageable host memory cudaMemcpyAsync returns once the source has been staged, so
 * the caller may reuse its buffer at once; on the stream, the copy is ordered with ops. */
void cu_to_device(void *dst, const void *src, size_t bytes) {
    if (bytes) CU_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyHostToDevice, cu_stream));
}

void cu_to_host(void *dst, const void *src, size_t bytes) {
    if (!bytes) return;
    CU_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToHost, cu_stream));
    cu_wait();
}

void cu_copy(void *dst, const void *src, size_t bytes) {
    if (bytes && dst != src)
        CU_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToDevice, cu_stream));
}

void cu_zero(void *p, size_t bytes) {
    if (bytes) CU_CHECK(cudaMemsetAsync(p, 0, bytes, cu_stream));
}

/* Every wait of the host for the stream goes through here, counted (be_cuda_waits). */
static long waits;

void cu_wait(void) {
    waits++;
    CU_CHECK(cudaStreamSynchronize(cu_stream));
}

extern "C" long be_cuda_waits(void) { return waits; }

void cu_sync(void) { cu_wait(); }

/* ---- start-up --------------------------------------------------------------------------- */

static pthread_mutex_t init_lock = PTHREAD_MUTEX_INITIALIZER;
static int init_state;   // 0 not tried, 1 ready, -1 no usable device (why says why)
static char why[512];
static char devname[256];
static size_t smem_optin = 48 << 10;

size_t cu_smem_optin(void) { return smem_optin; }

/* The probe: any failure leaves a message in `why` and returns -1; nothing here may crash
 * on a machine without a driver (cudaGetDeviceCount reports that as an error code). */
static int cu_start(void) {
    int n = 0;
    cudaError_t e = cudaGetDeviceCount(&n);
    if (e != cudaSuccess) {
        snprintf(why, sizeof why, "no CUDA device: %s", cudaGetErrorString(e));
        (void)cudaGetLastError();
        return -1;
    }
    if (n == 0) {
        snprintf(why, sizeof why, "no CUDA device: the CUDA runtime found no GPU");
        return -1;
    }
    int dev = 0;
    cudaDeviceProp prop;
    if ((e = cudaGetDevice(&dev)) != cudaSuccess ||
        (e = cudaGetDeviceProperties(&prop, dev)) != cudaSuccess) {
        snprintf(why, sizeof why, "no CUDA device: %s", cudaGetErrorString(e));
        return -1;
    }
    if (prop.major < 8) {
        snprintf(why, sizeof why, "no CUDA device: %s has compute capability %d.%d; this "
                 "build has kernels for 8.0 (Ampere) and newer", prop.name, prop.major,
                 prop.minor);
        return -1;
    }
    if ((e = cudaStreamCreateWithFlags(&cu_stream, cudaStreamNonBlocking)) != cudaSuccess) {
        snprintf(why, sizeof why, "no CUDA device: creating a stream: %s", cudaGetErrorString(e));
        return -1;
    }
    cublasStatus_t s = cublasCreate(&cu_blas);
    if (s != CUBLAS_STATUS_SUCCESS) {
        snprintf(why, sizeof why, "no CUDA device: cuBLAS did not start: %s",
                 cublasGetStatusString(s));
        return -1;
    }
    CUBLAS_CHECK(cublasSetStream(cu_blas, cu_stream));
    // Plain FP32 GEMMs by default: the op tests compare with the double-accumulating
    // reference at 1e-5. LOUPE_CUDA_TF32=1 trades that for TF32 tensor-core speed.
    const char *tf32 = getenv("LOUPE_CUDA_TF32");
    CUBLAS_CHECK(cublasSetMathMode(cu_blas, tf32 && strcmp(tf32, "1") == 0
                                                ? CUBLAS_TF32_TENSOR_OP_MATH
                                                : CUBLAS_DEFAULT_MATH));
    snprintf(devname, sizeof devname, "%s", prop.name);
    if (prop.sharedMemPerBlockOptin > smem_optin) smem_optin = prop.sharedMemPerBlockOptin;
    return 0;
}

extern "C" const char *be_cuda_device_name(void) { return devname; }

const be_backend *cu_table(void);            // cuda_backend.cu
const be_backend *cu_table_of(int bf16);     // cuda_backend.cu

/* The table: the default one (LOUPE_CUDA_BF16), or with bf16 weights (1) or f32 ones (0) as a
 * model's dtype= asks (be_cuda_as). NULL with lp_seterr when there is no usable device. */
extern "C" const be_backend *be_cuda_table(int bf16) {
    pthread_mutex_lock(&init_lock);
    if (init_state == 0) init_state = cu_start() == 0 ? 1 : -1;
    int ok = init_state == 1;
    pthread_mutex_unlock(&init_lock);
    if (!ok) {
        lp_seterr("%s", why);
        return NULL;
    }
    return bf16 < 0 ? cu_table() : cu_table_of(bf16);
}

extern "C" const be_backend *be_cuda(void) { return be_cuda_table(-1); }
