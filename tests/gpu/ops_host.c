/* ops_host.c — the host side of a stand-alone build of tests/unit/test_nn_ops.c, for a GPU
 * machine that has the CUDA toolkit but not the kernel's libraries (ZeroMQ, jansson, pcre2,
 * utf8proc, OpenBLAS): be_ref() and be_get() as in backend/cpu/cpu_backend.c, with "cpu"
 * served by the plain-C reference (the CUDA ops are what is under test there).
 * tests/gpu/run.sh builds it with build_ops.sh when the full CMake build is not possible. */
#include <string.h>

#include "backend/backend.h"
#include "backend/cuda/cuda_backend.h"
#include "util/err.h"
#include "util/mem.h"

static void *host_alloc(size_t bytes) {
    void *p = lp_malloc(bytes ? (bytes + 63) & ~(size_t)63 : 64);
    if (!p) lp_seterr("out of memory allocating %zu bytes", bytes);
    return p;
}
static void host_free(void *p) { lp_free(p); }
static void host_copy(void *dst, const void *src, size_t bytes) {
    if (bytes) memmove(dst, src, bytes);
}
static void host_zero(void *p, size_t bytes) {
    if (bytes) memset(p, 0, bytes);
}
static void host_sync(void) {}

#define T(op) .op = nn_##op
static const be_backend ref_backend = {
    .name = "ref", .alloc = host_alloc, .free = host_free, .to_device = host_copy,
    .to_host = host_copy, .copy = host_copy, .zero = host_zero, .sync = host_sync,
    T(matmul), T(embedding_forward), T(embedding_add_forward), T(embedding_backward),
    T(linear_forward), T(linear_backward), T(conv1d_forward), T(conv1d_backward),
    T(lora_forward), T(lora_backward), T(dropout_mask), T(channel_scale_forward),
    T(channel_scale_backward), T(rmsnorm_forward), T(rmsnorm_backward), T(layernorm_forward),
    T(layernorm_backward), T(rope_forward), T(rope_backward), T(attention_forward),
    T(attention_kv_forward), T(attention_backward), T(attention_fused_forward),
    T(attention_fused_backward), T(act_forward), T(act_backward),
    T(gated_forward), T(gated_backward), T(softmax_forward), T(softmax_backward),
    T(cross_entropy_forward), T(cross_entropy_backward), T(softcap_forward),
    T(softcap_backward), T(slice_forward), T(slice_backward), T(add_forward), T(add_backward),
    T(mul_forward), T(mul_backward), T(scale_forward), T(scale_backward), T(adamw_step),
    T(sgd_step), T(clip_grad_norm),
};

const be_backend *be_ref(void) { return &ref_backend; }
const be_backend *be_cpu(void) { return &ref_backend; }

const be_backend *be_get(const char *name) {
    if (!name || strcmp(name, "cpu") == 0) return be_cpu();
    if (strcmp(name, "ref") == 0) return be_ref();
    if (strcmp(name, "cuda") == 0) return be_cuda();
    return lp_seterr("unknown device \"%s\" (known: cpu, cuda)", name), NULL;
}
