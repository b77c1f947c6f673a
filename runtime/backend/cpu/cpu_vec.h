/* cpu_vec.h — the vectorised inner loops of the CPU ops: one row or one chunk per call, no
 * threads (cpu_ops.c splits the work and calls these inside its OpenMP loops).
 *
 * Why a separate file: the library is built for plain x86-64 (SSE2), where the compiler
 * cannot use AVX-512 and calls libm's scalar expf once per element. Each function here is
 * compiled three times (target_clones: AVX-512, AVX2, baseline) and the loader picks the
 * best the CPU has. exp is cv_exp below (a polynomial, within 2 ulp of expf), so SiLU,
 * softmax and cross-entropy vectorise. Sums run in float lanes instead of one double: the
 * ops stay within test_nn_ops.c's 1e-5 of the reference. */
#ifndef LOUPE_CPU_VEC_H
#define LOUPE_CPU_VEC_H
#include <stddef.h>

float cv_max(const float *x, int n);
/* y = exp(x − sub) (y may be x); returns Σ y */
float cv_exp_sub(float *y, const float *x, float sub, int n);
/* Σ exp(x − sub), nothing stored: float lanes over blocks of 1024, blocks added in double
 * (a 49152-entry vocabulary row summed in float alone drifts by ~1e-5) */
double cv_sum_exp(const float *x, float sub, int n);
void  cv_scale(float *y, float s, int n);                          /* y *= s */
float cv_dot(const float *a, const float *b, int n);
void  cv_axpy(float *y, float a, const float *x, int n);           /* y += a·x */
/* d = g·exp(l − s) (cross-entropy backward of one row) */
void  cv_exp_scale(float *d, float g, const float *l, float s, int n);
/* attention backward of one row: ds = p == 0 ? 0 : p·(ds − rd) */
void  cv_softmax_bwd_row(float *ds, const float *p, float rd, int n);

void cv_silu_gated_fwd(float *out, const float *gate, const float *up, size_t n);
void cv_silu_gated_bwd(float *dgate, float *dup, const float *dout, const float *gate,
                       const float *up, size_t n);
void cv_silu_fwd(float *out, const float *inp, size_t n);
void cv_silu_bwd(float *dinp, const float *dout, const float *inp, size_t n);

void cv_add(float *out, const float *a, const float *b, size_t n);
void cv_acc(float *y, const float *x, size_t n);                   /* y += x */

/* RMSNorm of one row: returns rstd; y = x·rstd·(one + w) */
float cv_rmsnorm_row(float *y, const float *x, const float *w, float one, float eps, int C);
/* its backward: dx += r·((one + w)·dy − x·k), k = r²/C · Σ dy·(one + w)·x */
void  cv_rmsnorm_bwd_row(float *dx, const float *dy, const float *x, const float *w, float one,
                         float r, int C);

/* RoPE of one token's heads (H·D floats): out may be inp; the backward writes dinp */
void cv_rope_row(float *out, const float *inp, const float *c, const float *s, int H, int D);
void cv_rope_bwd_row(float *dinp, const float *dout, const float *c, const float *s, int H,
                     int D);

#endif
