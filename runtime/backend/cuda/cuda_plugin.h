/* cuda_plugin.h — how the runtime loads the CUDA backend.
 *
 * The CUDA backend is a shared library of its own (libloupe_cuda.so, built from the
 * .cu files of backend/cuda and plugin/shim.cu) that the runtime dlopen()s the first time
 * be_cuda() is called (backend/cuda_loader.c). So nothing of CUDA is mapped when a program
 * starts: the kernel starts in ~10 ms whether or not the build has CUDA, libcublasLt alone
 * being hundreds of MB to map and relocate.
 *
 * The library uses a few helpers of the runtime (errors, allocation); the loader hands it
 * the runtime's own functions in an lp_cuda_host, so an error set inside the library is the
 * runtime's error and lp_mem_fail_after() reaches device allocations too. */
#ifndef LOUPE_CUDA_PLUGIN_H
#define LOUPE_CUDA_PLUGIN_H
#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

#include "backend/backend.h"

/* The library and the runtime must agree on lp_cuda_host and on the tables the library
 * fills (backend.h): a slot added to be_backend or be_bf16_ops changes their sizes, so a
 * library built before it is refused ("does not match this build") instead of calling one op
 * for another. */
#define LP_CUDA_PLUGIN_ABI \
    ((int)(2u << 24 | (unsigned)sizeof(be_backend) << 12 | (unsigned)sizeof(be_bf16_ops)))

typedef struct lp_cuda_host {
    void *(*malloc)(size_t n);
    void (*free)(void *p);
    int (*seterr)(const char *fmt, ...);
    const char *(*geterr)(void);
    void (*mem_fail_after)(long n);
} lp_cuda_host;

/* Exported by the library: 0, or -1 when abi is not LP_CUDA_PLUGIN_ABI. */
int loupe_cuda_plugin_init(const lp_cuda_host *host, int abi);

#ifdef __cplusplus
}
#endif
#endif
