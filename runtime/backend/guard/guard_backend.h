/* guard_backend.h — a test device whose memory the host cannot touch.
 *
 * be_guard() wraps be_cpu(): the same ops and numbers, but every "device" allocation lives in
 * one reserved address range that is kept PROT_NONE except while a backend function runs.
 * Host code that reads or writes device memory directly (logits, ids, adapter weights,
 * optimizer state …) — code that works by accident on the CPU and crashes on a GPU — gets
 * SIGSEGV, reported with the allocation it touched and a backtrace. The wrappers also check
 * what a GPU would refuse: an op's pointer that is not device memory, to_device from or
 * to_host into device memory, copy/zero/free of something that is not device memory.
 *
 * Reached as be_get("guard") and, for tests, as `load … device="guard"`. Environment:
 *   LOUPE_CUDA_BF16=1         bf16 weight storage, as the CUDA backend's (be_guard_bf16)
 *   LOUPE_GUARD_LIMIT=bytes   device capacity (default 4 GiB of address space): allocations
 *                             past it fail like a full GPU, "out of GPU memory allocating …"
 *
 * Single-threaded use, like a fw_model; the SIGSEGV handler is installed on the first call. */
#ifndef LOUPE_BACKEND_GUARD_H
#define LOUPE_BACKEND_GUARD_H
#include <stddef.h>

#include "backend/backend.h"

const be_backend *be_guard(void);   /* NULL + lp_seterr when the range cannot be reserved */

/* The same device storing frozen weights as bf16 (backend.h, be_bf16_ops): the CUDA
 * backend's LOUPE_CUDA_BF16=1 mode emulated on the CPU (weights rounded to bf16, activations
 * rounded before each product, f32 accumulation). be_guard() is this table when
 * LOUPE_CUDA_BF16=1, else be_guard_f32(); tests name the one they want. Both share the one
 * device memory. */
const be_backend *be_guard_bf16(void);
const be_backend *be_guard_f32(void);

/* Bytes in use now (tests: memory is given back). */
size_t be_guard_in_use(void);
/* Tests: a smaller capacity from now on, to run out of device memory (0: back to the whole
 * range). Ops that take scratch memory on CUDA (LoRA with dropout, attention, cross-entropy,
 * clip_grad_norm, bf16 products) fail too when their scratch would not fit: they do nothing,
 * and op_failed (backend.h) reports the first. */
void be_guard_set_limit(size_t bytes);
/* Tests: the n-th op from now that takes scratch on CUDA fails so (n = 1: the next one);
 * 0: none. */
void be_guard_fail_scratch(int n);

#endif
