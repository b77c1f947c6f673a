/* cpu_backend.c — the backend tables for the host: be_ref() (the plain-C reference ops)
 * and be_cpu() (BLAS + OpenMP), plus be_get() to pick one by name. On the host a
 * device buffer is an ordinary lp_malloc'd buffer, so the memory functions are shared. */
#include <stdlib.h>
#include <string.h>

#include "backend/backend.h"
#include "backend/cpu/cpu_ops.h"
#include "backend/guard/guard_backend.h"
#ifdef LOUPE_HAVE_CUDA
#include "backend/cuda/cuda_backend.h"
#endif
#include "util/err.h"
#include "util/mem.h"

/* Buffers of 4 MB and more (weights, activation arenas, gradients) go on huge pages: the
 * training step's products ran ~10% faster (bench/train/README.md). */
#define HOST_HUGE_MIN ((size_t)4 << 20)

static void *host_alloc(size_t bytes) {
    // 64-byte rounding keeps rows that start at buffer offsets friendly to SIMD loads
    void *p = bytes >= HOST_HUGE_MIN ? lp_malloc_huge(bytes)
                                     : lp_malloc(bytes ? (bytes + 63) & ~(size_t)63 : 64);
    if (!p) lp_seterr("out of memory allocating %zu bytes", bytes);
    return p;
}
static void host_free(void *p) { lp_free(p); }
static void host_copy(void *dst, const void *src, size_t bytes) {
    if (bytes) memmove(dst, src, bytes);
}
/* Large buffers (the backward's logits gradient is B·T·V floats) are cleared by all threads:
 * one core's memset does not saturate the memory bus. */
static void host_zero(void *p, size_t bytes) {
    enum { PART = 1 << 20 };
    if (bytes <= 2 * PART) {
        if (bytes) memset(p, 0, bytes);
        return;
    }
    size_t parts = (bytes + PART - 1) / PART;
#pragma omp parallel for
    for (size_t i = 0; i < parts; i++) {
        size_t off = i * PART;
        memset((char *)p + off, 0, bytes - off < PART ? bytes - off : PART);
    }
}
static void host_sync(void) {}

#define HOST_MEMORY                                                                    \
    .alloc = host_alloc, .free = host_free, .to_device = host_copy, .to_host = host_copy, \
    .copy = host_copy, .zero = host_zero, .sync = host_sync

/* P(nn) fills every op slot from functions named nn_<op>, P(cpu) from cpu_<op>. */
#define OPS(P)                                                                         \
    .matmul = P##_matmul, .embedding_forward = P##_embedding_forward,                  \
    .embedding_add_forward = P##_embedding_add_forward,                                \
    .embedding_backward = P##_embedding_backward, .linear_forward = P##_linear_forward, \
    .linear_backward = P##_linear_backward, .conv1d_forward = P##_conv1d_forward,      \
    .conv1d_backward = P##_conv1d_backward, .lora_forward = P##_lora_forward,          \
    .lora_backward = P##_lora_backward, .dropout_mask = P##_dropout_mask,              \
    .row_norm = P##_row_norm, .dora_forward = P##_dora_forward,                        \
    .channel_scale_forward = P##_channel_scale_forward,                                \
    .channel_scale_backward = P##_channel_scale_backward,                              \
    .rmsnorm_forward = P##_rmsnorm_forward, .rmsnorm_backward = P##_rmsnorm_backward,  \
    .layernorm_forward = P##_layernorm_forward,                                        \
    .layernorm_backward = P##_layernorm_backward, .rope_forward = P##_rope_forward,    \
    .rope_backward = P##_rope_backward, .attention_forward = P##_attention_forward,    \
    .attention_kv_forward = P##_attention_kv_forward,                                  \
    .attention_backward = P##_attention_backward,                                      \
    .attention_fused_forward = P##_attention_fused_forward,                            \
    .attention_fused_backward = P##_attention_fused_backward,                          \
    .act_forward = P##_act_forward,                                                    \
    .act_backward = P##_act_backward, .gated_forward = P##_gated_forward,              \
    .gated_backward = P##_gated_backward, .softmax_forward = P##_softmax_forward,      \
    .softmax_backward = P##_softmax_backward,                                          \
    .cross_entropy_forward = P##_cross_entropy_forward,                                \
    .cross_entropy_backward = P##_cross_entropy_backward,                              \
    .cross_entropy_rows = P##_cross_entropy_rows,                                      \
    .softcap_forward = P##_softcap_forward, .softcap_backward = P##_softcap_backward,  \
    .slice_forward = P##_slice_forward, .slice_backward = P##_slice_backward,          \
    .add_forward = P##_add_forward, .add_backward = P##_add_backward,                  \
    .mul_forward = P##_mul_forward, .mul_backward = P##_mul_backward,                  \
    .scale_forward = P##_scale_forward, .scale_backward = P##_scale_backward,          \
    .q4_dequant = P##_q4_dequant, .dq_dequant = P##_dq_dequant,                        \
    .q8_linear_forward = P##_q8_linear_forward,                                        \
    .adamw_step = P##_adamw_step, .sgd_step = P##_sgd_step,                            \
    .clip_grad_norm = P##_clip_grad_norm

static const be_backend ref_backend = {.name = "ref", HOST_MEMORY, OPS(nn)};
static const be_backend cpu_backend = {.name = "cpu", HOST_MEMORY, OPS(cpu)};
/* The same with the model's fused-attention path on (LOUPE_FUSED_ATTENTION=1): how the CPU
 * tests cover the path the CUDA backend takes (ctest *_fused). */
static const be_backend cpu_fused_backend = {.name = "cpu", HOST_MEMORY, OPS(cpu),
                                             .fused_attention = 1 << 30};

const be_backend *be_ref(void) { return &ref_backend; }
const be_backend *be_cpu(void) {
    static int fused = -1;
    cpu_init();
    if (fused < 0) {
        const char *e = getenv("LOUPE_FUSED_ATTENTION");
        fused = e && strcmp(e, "1") == 0;
    }
    return fused ? &cpu_fused_backend : &cpu_backend;
}

const be_backend *be_get(const char *name) {
    if (!name || strcmp(name, "cpu") == 0) return be_cpu();
    if (strcmp(name, "ref") == 0) return be_ref();
    if (strcmp(name, "guard") == 0) return be_guard();   // test device: memory the host cannot touch
    if (strcmp(name, "cuda") == 0) {
#ifdef LOUPE_HAVE_CUDA
        return be_cuda();   // NULL with "no CUDA device: …" on a machine without a GPU
#else
        return lp_seterr("this build has no CUDA backend (nvcc was not found at build time)"),
               NULL;
#endif
    }
    return lp_seterr("unknown device \"%s\" (known: cpu, cuda)", name), NULL;
}

const be_backend *be_get_dtype(const char *name, const char *dtype) {
    int bf16 = !dtype ? -1 : !strcmp(dtype, "bf16") ? 1 : !strcmp(dtype, "f32") ? 0 : -1;
    if (bf16 >= 0 && name && strcmp(name, "guard") == 0) return bf16 ? be_guard_bf16() : be_guard_f32();
#ifdef LOUPE_HAVE_CUDA
    if (bf16 >= 0 && name && strcmp(name, "cuda") == 0) return be_cuda_as(bf16);
#endif
    return be_get(name);
}

void be_sync_all(void) {
#ifdef LOUPE_HAVE_CUDA
    if (be_cuda_started()) be_cuda()->sync();
#endif
}
