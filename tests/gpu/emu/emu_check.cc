/* emu_check.cc — for the kernel checks (flash_check.cc, bf16_check.cc), what the backend's
 * cuda_mem.cu gives the other .cu files in the library: the stream and cuBLAS handle,
 * cu_fatal, and cu_scratch as the pool's, with a test knob: emu_scratch_fail = n makes the
 * n-th request from now return NULL, naming its op in emu_scratch_failed_op. Scratch is
 * emulated device memory (cudaMalloc: NaN-filled, guarded). */
#include "emu.h"

cudaStream_t cu_stream;
cublasHandle_t cu_blas = [] {
    cublasHandle_t h;
    cublasCreate(&h);
    return h;
}();
static bool host_buffers = (emu_device_checks = false);   // the checks pass host buffers
int emu_scratch_fail;
const char *emu_scratch_failed_op;

void cu_fatal(const char *what, const char *file, int line) {
    fprintf(stderr, "cu_fatal %s %s:%d\n", what, file, line);
    abort();
}
void *cu_scratch(const char *op, size_t bytes) {
    if (emu_scratch_fail > 0 && --emu_scratch_fail == 0) {
        emu_scratch_failed_op = op;
        return NULL;
    }
    void *p = NULL;
    return cudaMalloc(&p, bytes) == cudaSuccess ? p : NULL;
}
void cu_scratch_free(void *p) { cudaFree(p); }
