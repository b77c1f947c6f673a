/* cpu_vec.c — vectorised inner loops of the CPU ops (see cpu_vec.h). Plain C loops the
 * compiler vectorises (`omp simd` lets it reorder the float sums), each function cloned per
 * instruction set. */
#include "backend/cpu/cpu_vec.h"

#include <math.h>
#include <stdint.h>
#include <string.h>

#if defined(__GNUC__) && (defined(__x86_64__) || defined(__i386__)) && !defined(__SANITIZE_ADDRESS__)
#define CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define CLONES
#endif

/* exp(x) = 2ⁿ·eʳ with n = round(x/ln 2), |r| ≤ ln2/2, eʳ by its degree-7 Taylor polynomial
 * (error below 2 ulp of expf on [−87, 88]); exp(x) = 0 below −87 (expf gives denormals there),
 * x above 88 is clamped (no logit or score here reaches it). Branch-free, so loops over it
 * vectorise. */
static inline float cv_exp(float x) {
    /* NaN takes the -87 branch here (no out-of-range conversion below) and is passed
     * through at the end */
    float xc = x > -87.0f ? (x < 88.0f ? x : 88.0f) : -87.0f;
    float n = (xc * 1.44269504088896341f + 12582912.0f) - 12582912.0f;   /* round to nearest */
    float r = xc - n * 0.693145751953125f;
    r = r - n * 1.42860682030941723212e-6f;
    float p = 1.0f / 5040.0f;
    p = p * r + 1.0f / 720.0f;
    p = p * r + 1.0f / 120.0f;
    p = p * r + 1.0f / 24.0f;
    p = p * r + 1.0f / 6.0f;
    p = p * r + 0.5f;
    p = p * r + 1.0f;
    p = p * r + 1.0f;
    uint32_t e = (uint32_t)((int32_t)n + 127) << 23;   /* n in [-125, 127] */
    float s;
    memcpy(&s, &e, sizeof s);
    return x != x ? x : x < -87.0f ? 0.0f : p * s;
}

CLONES float cv_max(const float *x, int n) {
    float m = -INFINITY;
#ifndef __clang__   /* clang 14 does not vectorise a max reduction and warns that it did not */
#pragma omp simd reduction(max : m)
#endif
    for (int i = 0; i < n; i++) m = x[i] > m ? x[i] : m;
    return m;
}

CLONES float cv_exp_sub(float *y, const float *x, float sub, int n) {
    float s = 0;
#pragma omp simd reduction(+ : s)
    for (int i = 0; i < n; i++) {
        float e = cv_exp(x[i] - sub);
        y[i] = e;
        s += e;
    }
    return s;
}

CLONES double cv_sum_exp(const float *x, float sub, int n) {
    double total = 0;   // float lanes within a block of 1024, blocks summed in double
    for (int i0 = 0; i0 < n; i0 += 1024) {
        int end = n - i0 < 1024 ? n : i0 + 1024;
        float s = 0;
#pragma omp simd reduction(+ : s)
        for (int i = i0; i < end; i++) s += cv_exp(x[i] - sub);
        total += s;
    }
    return total;
}

CLONES void cv_scale(float *y, float s, int n) {
#pragma omp simd
    for (int i = 0; i < n; i++) y[i] *= s;
}

CLONES float cv_dot(const float *a, const float *b, int n) {
    float s = 0;
#pragma omp simd reduction(+ : s)
    for (int i = 0; i < n; i++) s += a[i] * b[i];
    return s;
}

CLONES void cv_axpy(float *y, float a, const float *x, int n) {
#pragma omp simd
    for (int i = 0; i < n; i++) y[i] += a * x[i];
}

CLONES void cv_exp_scale(float *d, float g, const float *l, float s, int n) {
#pragma omp simd
    for (int i = 0; i < n; i++) d[i] = g * cv_exp(l[i] - s);
}

CLONES void cv_softmax_bwd_row(float *ds, const float *p, float rd, int n) {
#pragma omp simd
    for (int i = 0; i < n; i++) ds[i] = p[i] == 0.0f ? 0.0f : p[i] * (ds[i] - rd);
}

/* SiLU: x·σ(x); σ(x) = 1/(1 + e^(−x)) */
CLONES void cv_silu_gated_fwd(float *out, const float *gate, const float *up, size_t n) {
#pragma omp simd
    for (size_t i = 0; i < n; i++) {
        float g = gate[i];
        out[i] = g / (1.0f + cv_exp(-g)) * up[i];
    }
}

CLONES void cv_silu_gated_bwd(float *dgate, float *dup, const float *dout, const float *gate,
                              const float *up, size_t n) {
    if (dgate && dup) {
#pragma omp simd
        for (size_t i = 0; i < n; i++) {
            float g = gate[i], s = 1.0f / (1.0f + cv_exp(-g));
            dgate[i] = dout[i] * up[i] * (s * (1.0f + g * (1.0f - s)));
            dup[i] = dout[i] * (g * s);
        }
    } else if (dgate) {
#pragma omp simd
        for (size_t i = 0; i < n; i++) {
            float g = gate[i], s = 1.0f / (1.0f + cv_exp(-g));
            dgate[i] = dout[i] * up[i] * (s * (1.0f + g * (1.0f - s)));
        }
    } else if (dup) {
#pragma omp simd
        for (size_t i = 0; i < n; i++) {
            float g = gate[i];
            dup[i] = dout[i] * (g / (1.0f + cv_exp(-g)));
        }
    }
}

CLONES void cv_silu_fwd(float *out, const float *inp, size_t n) {
#pragma omp simd
    for (size_t i = 0; i < n; i++) out[i] = inp[i] / (1.0f + cv_exp(-inp[i]));
}

CLONES void cv_silu_bwd(float *dinp, const float *dout, const float *inp, size_t n) {
#pragma omp simd
    for (size_t i = 0; i < n; i++) {
        float g = inp[i], s = 1.0f / (1.0f + cv_exp(-g));
        dinp[i] += dout[i] * (s * (1.0f + g * (1.0f - s)));
    }
}

CLONES void cv_add(float *out, const float *a, const float *b, size_t n) {
#pragma omp simd
    for (size_t i = 0; i < n; i++) out[i] = a[i] + b[i];
}

CLONES void cv_acc(float *y, const float *x, size_t n) {
#pragma omp simd
    for (size_t i = 0; i < n; i++) y[i] += x[i];
}

CLONES float cv_rmsnorm_row(float *y, const float *x, const float *w, float one, float eps,
                            int C) {
    float ss = 0;
#pragma omp simd reduction(+ : ss)
    for (int c = 0; c < C; c++) ss += x[c] * x[c];
    float r = (float)(1.0 / sqrt((double)ss / C + eps));
#pragma omp simd
    for (int c = 0; c < C; c++) y[c] = x[c] * r * (one + w[c]);
    return r;
}

CLONES void cv_rmsnorm_bwd_row(float *dx, const float *dy, const float *x, const float *w,
                               float one, float r, int C) {
    float dot = 0;
#pragma omp simd reduction(+ : dot)
    for (int c = 0; c < C; c++) dot += dy[c] * (one + w[c]) * x[c];
    float k = (float)((double)dot * r * r / C);
#pragma omp simd
    for (int c = 0; c < C; c++) dx[c] += r * ((one + w[c]) * dy[c] - x[c] * k);
}

/* The first and second halves of each head rotate together; a head is read whole before it
 * is written, so out may be inp. */
CLONES void cv_rope_row(float *out, const float *inp, const float *c, const float *s, int H,
                        int D) {
    int half = D / 2;
    for (int h = 0; h < H; h++) {
        const float *x = inp + (size_t)h * D;
        float *y = out + (size_t)h * D;
        float t[D];
#pragma omp simd
        for (int i = 0; i < half; i++) {
            t[i] = x[i] * c[i] - x[i + half] * s[i];
            t[i + half] = x[i + half] * c[i] + x[i] * s[i];
        }
        memcpy(y, t, sizeof(float) * (size_t)2 * half);
    }
}

CLONES void cv_rope_bwd_row(float *dinp, const float *dout, const float *c, const float *s,
                            int H, int D) {
    int half = D / 2;
    for (int h = 0; h < H; h++) {
        const float *dy = dout + (size_t)h * D;
        float *dx = dinp + (size_t)h * D;
#pragma omp simd
        for (int i = 0; i < half; i++) {
            float a = dy[i], b = dy[i + half];
            dx[i] = a * c[i] + b * s[i];
            dx[i + half] = b * c[i] - a * s[i];
        }
    }
}
