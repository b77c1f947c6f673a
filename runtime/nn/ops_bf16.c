/* ops_bf16.c — the reference of the bf16-weight ops (ops_bf16.h). */
#include "nn/ops_bf16.h"

#include "nn/ops.h"

#include <math.h>

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

/* out = bf16(inp)·op(W) + bias (+ out, add), inp given as f32 (rounded here) or as bf16 (xh).
 * Added, the product and the bias are summed first, then the old out (cuBLAS's order). */
static void forward(float *out, const float *xf, const uint16_t *xh, const uint16_t *weight,
                    const float *bias, int N, int IN, int OUT, int conv1d, int add) {
    for (int n = 0; n < N; n++) {
        size_t row = (size_t)n * IN;
        for (int o = 0; o < OUT; o++) {
            double acc = 0;
            for (int i = 0; i < IN; i++) {
                float x = xf ? nn_bf16_rounded(xf[row + i]) : nn_bf16_to_f32(xh[row + i]);
                acc += (double)x * w_at(weight, o, i, IN, OUT, conv1d);
            }
            float y = (float)acc + (bias ? bias[o] : 0.0f);
            out[(size_t)n * OUT + o] = add ? out[(size_t)n * OUT + o] + y : y;
        }
    }
}

void nn_linear_bf16_forward(float *out, const float *inp, const uint16_t *weight,
                            const float *bias, int N, int IN, int OUT, int conv1d) {
    forward(out, inp, NULL, weight, bias, N, IN, OUT, conv1d, 0);
}

void nn_linear_bf16_forward_rounded(float *out, const uint16_t *inp, const uint16_t *weight,
                                    const float *bias, int N, int IN, int OUT, int conv1d,
                                    float beta) {
    forward(out, NULL, inp, weight, bias, N, IN, OUT, conv1d, beta != 0.0f);
}

void nn_gated_forward_rounded(float *out, uint16_t *hout, const float *gate, const float *up,
                              nn_act act, size_t n) {
    nn_gated_forward(out, gate, up, act, n);
    nn_bf16_round(hout, out, n);
}

void nn_gated_backward_rounded(float *dgate, float *dup, uint16_t *hgate, uint16_t *hup,
                               const float *dout, const float *gate, const float *up,
                               nn_act act, size_t n) {
    nn_gated_backward(dgate, dup, dout, gate, up, act, n);
    nn_bf16_round(hgate, dgate, n);
    nn_bf16_round(hup, dup, n);
}

/* dinp = bf16(dout)·W + beta·dinp, dout given as f32 (rounded here) or as bf16 (dh). */
static void backward(float *dinp, const float *df, const uint16_t *dh, const uint16_t *weight,
                     int N, int IN, int OUT, int conv1d, float beta) {
    for (int n = 0; n < N; n++) {
        size_t row = (size_t)n * OUT;
        for (int i = 0; i < IN; i++) {
            double acc = 0;
            for (int o = 0; o < OUT; o++) {
                float d = df ? nn_bf16_rounded(df[row + o]) : nn_bf16_to_f32(dh[row + o]);
                acc += (double)d * w_at(weight, o, i, IN, OUT, conv1d);
            }
            float *di = dinp + (size_t)n * IN + i;
            *di = (float)acc + (beta != 0.0f ? beta * *di : 0.0f);
        }
    }
}

void nn_linear_bf16_backward(float *dinp, const float *dout, const uint16_t *weight, int N,
                             int IN, int OUT, int conv1d, float beta) {
    backward(dinp, dout, NULL, weight, N, IN, OUT, conv1d, beta);
}

void nn_linear_bf16_backward_rounded(float *dinp, const uint16_t *dout, const uint16_t *weight,
                                     int N, int IN, int OUT, int conv1d, float beta) {
    backward(dinp, NULL, dout, weight, N, IN, OUT, conv1d, beta);
}

/* Row by row, element by element, with the f32 ops' roundings (ops_ref.c): softcap_forward's
 * float logits, row_lse's double sums, cross_entropy_backward's float gradient from the
 * float lse, softcap_backward's float addend into zero, then the product's bf16 rounding. No
 * buffer: the logits are made again for the gradient. */
static float capped(float x, float cap) {
    return cap > 0 ? (float)(cap * tanh((double)x / cap)) : x;
}

void nn_head_loss_rows_bf16(float *rowloss, float *lse, uint16_t *dlraw, const float *raw,
                            const int *targets, int N, int V, float cap, float dloss,
                            int count) {
    double g = count ? (double)dloss / count : 0.0;
    for (int n = 0; n < N; n++) {
        const float *r = raw + (size_t)n * V;
        uint16_t *d = dlraw + (size_t)n * V;
        int t = targets[n];
        double mx = -INFINITY, sum = 0;
        for (int v = 0; v < V; v++) mx = fmax(mx, capped(r[v], cap));
        for (int v = 0; v < V; v++) sum += exp(capped(r[v], cap) - mx);
        double z = mx + log(sum);
        lse[n] = (float)z;
        rowloss[n] = t == -100 ? 0.0f : (float)(z - capped(r[t], cap));
        for (int v = 0; v < V; v++) {
            float l = capped(r[v], cap), dl = 0.0f;
            if (t != -100 && count)
                dl = (float)(g * (exp((double)l - lse[n]) - (v == t)));
            if (cap > 0) {
                double u = (double)l / cap;
                float dr = 0.0f;
                dr += (float)(dl * (1.0 - u * u));
                dl = dr;
            }
            d[v] = nn_bf16_from_f32(dl);
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
