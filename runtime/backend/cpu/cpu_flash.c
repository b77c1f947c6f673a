/* cpu_flash.c — fused attention on the CPU: the plain-C reference (nn/ops_ref_attn.c) run on
 * one batch row per OpenMP thread. Batch rows share nothing (their q, k, v, mask, lse and
 * gradients are disjoint slices), so the split needs no synchronisation. be_cpu() does not
 * use these ops in the model unless LOUPE_FUSED_ATTENTION=1 (backend.h, fused_attention):
 * they exist so every table is complete and the model's fused path can be tested on the CPU. */
#include "backend/cpu/cpu_ops.h"

void cpu_attention_fused_forward(float *out, float *lse, const float *q, const float *k,
                                 const float *v, const int *amask, const nn_attn_params *p,
                                 int B, int T, int H, int KVH, int D) {
    size_t qs = (size_t)T * H * D, ks = (size_t)T * KVH * D;
#pragma omp parallel for schedule(dynamic, 1)
    for (int b = 0; b < B; b++)
        nn_attention_fused_forward(out + b * qs, lse + (size_t)b * H * T, q + b * qs,
                                   k + b * ks, v + b * ks, amask ? amask + (size_t)b * T : NULL,
                                   p, 1, T, H, KVH, D);
}

void cpu_attention_fused_backward(float *dq, float *dk, float *dv, const float *dout,
                                  const float *out, const float *lse, const float *q,
                                  const float *k, const float *v, const int *amask,
                                  const nn_attn_params *p, int B, int T, int H, int KVH, int D) {
    size_t qs = (size_t)T * H * D, ks = (size_t)T * KVH * D;
#pragma omp parallel for schedule(dynamic, 1)
    for (int b = 0; b < B; b++)
        nn_attention_fused_backward(dq ? dq + b * qs : NULL, dk ? dk + b * ks : NULL,
                                    dv ? dv + b * ks : NULL, dout + b * qs, out + b * qs,
                                    lse + (size_t)b * H * T, q + b * qs, k + b * ks, v + b * ks,
                                    amask ? amask + (size_t)b * T : NULL, p, 1, T, H, KVH, D);
}
