/* ops_bf16.c — the reference of the bf16-weight ops (ops_bf16.h). */
#include "nn/ops_bf16.h"

#include "util/err.h"

void nn_bf16_round(uint16_t *dst, const float *src, size_t n) {
    for (size_t i = 0; i < n; i++) dst[i] = nn_bf16_from_f32(src[i]);
}

void nn_bf16_widen(float *dst, const uint16_t *src, size_t n) {
    for (size_t i = 0; i < n; i++) dst[i] = nn_bf16_to_f32(src[i]);
}

/* Element (o, i) of the weight: o*IN + i for Linear [out, in], i*OUT + o for Conv1D. */
static float w_at(const uint16_t *w, int o, int i, int IN, int OUT, int conv1d) {
    size_t k = conv1d ? (size_t)i * OUT + o : (size_t)o * IN + i;
    return nn_bf16_to_f32(w[k]);
}

void nn_linear_bf16_forward(float *out, const float *inp, const uint16_t *weight,
                            const float *bias, int N, int IN, int OUT, int conv1d) {
    for (int n = 0; n < N; n++) {
        const float *x = inp + (size_t)n * IN;
        for (int o = 0; o < OUT; o++) {
            double acc = 0;
            for (int i = 0; i < IN; i++)
                acc += (double)nn_bf16_rounded(x[i]) * w_at(weight, o, i, IN, OUT, conv1d);
            out[(size_t)n * OUT + o] = (float)acc + (bias ? bias[o] : 0.0f);
        }
    }
}

void nn_linear_bf16_backward(float *dinp, const float *dout, const uint16_t *weight, int N,
                             int IN, int OUT, int conv1d, float beta) {
    for (int n = 0; n < N; n++) {
        const float *d = dout + (size_t)n * OUT;
        for (int i = 0; i < IN; i++) {
            double acc = 0;
            for (int o = 0; o < OUT; o++)
                acc += (double)nn_bf16_rounded(d[o]) * w_at(weight, o, i, IN, OUT, conv1d);
            float *di = dinp + (size_t)n * IN + i;
            *di = (float)acc + (beta != 0.0f ? beta * *di : 0.0f);
        }
    }
}

int nn_embedding_bf16_forward(float *out, const int *ids, const uint16_t *table, int N, int V,
                              int C) {
    for (int n = 0; n < N; n++)
        if (ids[n] < 0 || ids[n] >= V)
            return lp_seterr("token id %d at position %d is outside the vocabulary [0, %d)",
                             ids[n], n, V);
    for (int n = 0; n < N; n++)
        nn_bf16_widen(out + (size_t)n * C, table + (size_t)ids[n] * C, (size_t)C);
    return 0;
}
