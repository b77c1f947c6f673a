/* ops_bf16.h — the plain-C reference of the bf16-weight ops (backend.h, be_bf16_ops), and
 * the f32 ↔ bf16 conversions every side shares.
 *
 * Semantics (what cuBLAS does with bf16 A/B, f32 C and CUBLAS_COMPUTE_32F): the f32
 * activation is rounded to bf16 (nearest even) before the product, the bf16 weight is used
 * as it is, each product of two bf16 numbers is exact in f32 and the sum is accumulated
 * (here in double: the reference is the most accurate party, as in ops_ref.c). Conventions
 * as in ops.h: outputs first, shapes next to each pointer. */
#ifndef LOUPE_NN_OPS_BF16_H
#define LOUPE_NN_OPS_BF16_H
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "nn/ops.h"

/* f32 → bf16, round to nearest even; a NaN stays a (quiet) NaN. */
static inline uint16_t nn_bf16_from_f32(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((u >> 16) | 0x40);
    u += 0x7fffu + ((u >> 16) & 1u);
    return (uint16_t)(u >> 16);
}

/* bf16 → f32, exact. */
static inline float nn_bf16_to_f32(uint16_t h) {
    uint32_t u = (uint32_t)h << 16;
    float f;
    memcpy(&f, &u, 4);
    return f;
}

/* f32 rounded to the nearest bf16, as an f32. */
static inline float nn_bf16_rounded(float f) { return nn_bf16_to_f32(nn_bf16_from_f32(f)); }

void nn_bf16_round(uint16_t *dst, const float *src, size_t n);
// dst is (n) bf16, src is (n)
void nn_bf16_widen(float *dst, const uint16_t *src, size_t n);
// dst is (n), src is (n) bf16

void nn_linear_bf16_forward(float *out, const float *inp, const uint16_t *weight,
                            const float *bias, int N, int IN, int OUT, int conv1d);
// out is (N,OUT), inp is (N,IN) (rounded to bf16), weight is (OUT,IN) bf16 or, conv1d,
// (IN,OUT); bias is (OUT) or NULL
void nn_linear_bf16_forward_rounded(float *out, const uint16_t *inp, const uint16_t *weight,
                                    const float *bias, int N, int IN, int OUT, int conv1d,
                                    float beta);
// the same with inp (N,IN) already bf16; beta 1: added to out (0: written)
void nn_gated_forward_rounded(float *out, uint16_t *hout, const float *gate, const float *up,
                              nn_act act, size_t n);
// nn_gated_forward (ops.h), then hout (n) bf16 = bf16(out)
void nn_gated_backward_rounded(float *dgate, float *dup, uint16_t *hgate, uint16_t *hup,
                               const float *dout, const float *gate, const float *up,
                               nn_act act, size_t n);
// nn_gated_backward (ops.h), then hgate, hup (n) bf16 = bf16(dgate), bf16(dup)
void nn_linear_bf16_backward(float *dinp, const float *dout, const uint16_t *weight, int N,
                             int IN, int OUT, int conv1d, float beta);
// dinp is (N,IN) = bf16(dout)·W + beta·dinp (beta 0: not read), dout is (N,OUT)
void nn_linear_bf16_backward_rounded(float *dinp, const uint16_t *dout, const uint16_t *weight,
                                     int N, int IN, int OUT, int conv1d, float beta);
// the same with dout (N,OUT) already bf16
void nn_head_loss_rows_bf16(float *rowloss, float *lse, uint16_t *dlraw, const float *raw,
                            const int *targets, int N, int V, float cap, float dloss,
                            int count);
// The LM head's loss rows and logits gradient from the raw logits (N,V), as the f32 ops make
// them one after the other: logits = softcap_forward(raw) (cap > 0; else raw);
// cross_entropy_rows → lse (N), rowloss (N); d = cross_entropy_backward(dloss, count);
// dlraw (N,V) bf16 = bf16(softcap_backward(d)) (cap > 0; else bf16(d)): the rounded
// gradient that linear_bf16_backward_rounded takes back through the head. Targets are -100
// or in [0,V) (checked by the caller).
int  nn_embedding_bf16_forward(float *out, const int *ids, const uint16_t *table, int N, int V,
                               int C);
// out is (N,C), ids is (N), table is (V,C) bf16. Returns -1 if an id is outside [0,V).

#endif
