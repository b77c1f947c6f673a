/* cuda_backend.h — the CUDA backend's public face (C, callable from the C runtime).
 *
 * be_cuda() returns the backend table (backend.h) or NULL with lp_seterr("no CUDA device:
 * …") when the CUDA runtime finds no usable device; it never crashes on a machine without
 * a GPU or a driver, and a failed probe is remembered (later calls return NULL at once with
 * the same message). Only builds with LOUPE_HAVE_CUDA have this file's functions.
 *
 * Memory comes from one caching pool on the device (cuda_mem.cu): cudaMalloc'd blocks are
 * kept for reuse after free, never managed memory. The statistics below are what the
 * benchmark compares with torch.cuda.max_memory_allocated (bytes handed out, rounded to the
 * pool's block sizes) and torch.cuda.max_memory_reserved (bytes cudaMalloc'd). */
#ifndef LOUPE_CUDA_BACKEND_H
#define LOUPE_CUDA_BACKEND_H
#include <stddef.h>

#include "backend/backend.h"

#ifdef __cplusplus
extern "C" {
#endif

const be_backend *be_cuda(void);
/* The table with bf16 weights (bf16 = 1) or f32 ones (0) whatever LOUPE_CUDA_BF16 says: what a
 * model loaded with dtype="bf16" / "f32" computes with (be_get_dtype). */
const be_backend *be_cuda_as(int bf16);
int be_cuda_started(void);   /* be_cuda() has returned the table (nothing is loaded to ask) */

typedef struct {
    size_t in_use;          /* bytes handed out by alloc and not freed */
    size_t peak_in_use;     /* high-water mark of in_use since start or the last reset */
    size_t reserved;        /* bytes held from cudaMalloc (in use + cached) */
    size_t peak_reserved;   /* high-water mark of reserved */
} be_cuda_mem_stats;

void be_cuda_memory(be_cuda_mem_stats *out);   /* zeros when the backend is not started */
void be_cuda_reset_peak(void);                 /* peaks := current values */
size_t be_cuda_peak_bytes(void);               /* = peak_in_use */
void be_cuda_trim(void);                       /* cudaFree every cached (unused) block */
const char *be_cuda_device_name(void);         /* "NVIDIA H100 80GB HBM3", or "" */

/* How many times the host has waited for the device (stream synchronisations: to_host,
 * sync, and the ops that return a value: the checked embeddings, cross_entropy_forward,
 * clip_grad_norm) since the backend started. A LoRA training step waits twice: the loss and
 * the gradient norm (bench_gpu reports it). */
long be_cuda_waits(void);

/* LOUPE_CUDA_PROFILE=1 (set before the backend loads; cuda_prof.cuh): GPU time per op of the
 * table since the start or the last reset. Fills up to cap entries, returns how many ops
 * have one (0 without the variable); reset clears the sums after reading them. */
typedef struct {
    const char *op;   /* the table's slot: "linear_forward", "bf16.linear_forward", … */
    long calls;
    double ms;        /* the GPU's timeline from the op's first work to its last */
} be_cuda_op_time;
size_t be_cuda_profile(be_cuda_op_time *out, size_t cap, int reset);

#ifdef __cplusplus
}
#endif
#endif
