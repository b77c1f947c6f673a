/* ops_ref.c — plain-C reference ops (embedding, linear, LoRA, norms, activations,
 * softmax/losses, elementwise, optimisers). Rotary embeddings and attention live in
 * ops_ref_attn.c. See ops.h for shapes and conventions.
 *
 * Reductions accumulate in double: this file is the oracle the fast paths and the
 * PyTorch fixtures are compared against, so it should be the most accurate party. */
#include "nn/ops.h"

#include <assert.h>
#include <math.h>
#include <string.h>

#include "util/err.h"

/* ---- embeddings ------------------------------------------------------------------- */

static int check_ids(const int *ids, int N, int V) {
    for (int n = 0; n < N; n++)
        if (ids[n] < 0 || ids[n] >= V)
            return lp_seterr("token id %d at position %d is outside the vocabulary [0, %d)",
                             ids[n], n, V);
    return 0;
}

int nn_embedding_forward(float *out, const int *ids, const float *table, int N, int V, int C) {
    if (check_ids(ids, N, V) < 0) return -1;
    for (int n = 0; n < N; n++)
        memcpy(out + (size_t)n * C, table + (size_t)ids[n] * C, (size_t)C * sizeof(float));
    return 0;
}

int nn_embedding_add_forward(float *out, const int *ids, const float *table, int N, int V,
                             int C) {
    if (check_ids(ids, N, V) < 0) return -1;
    for (int n = 0; n < N; n++) {
        float *o = out + (size_t)n * C;
        const float *row = table + (size_t)ids[n] * C;
        for (int c = 0; c < C; c++) o[c] += row[c];
    }
    return 0;
}

void nn_embedding_backward(float *dtable, const float *dout, const int *ids, int N, int C) {
    if (!dtable) return;
    for (int n = 0; n < N; n++) {
        float *d = dtable + (size_t)ids[n] * C;
        const float *g = dout + (size_t)n * C;
        for (int c = 0; c < C; c++) d[c] += g[c];
    }
}

/* ---- matmul ----------------------------------------------------------------------- */

void nn_matmul(float *c, const float *a, const float *b, int M, int N, int K, int trans_a,
               int trans_b, float alpha, float beta) {
    for (int m = 0; m < M; m++)
        for (int n = 0; n < N; n++) {
            double acc = 0;
            for (int k = 0; k < K; k++) {
                float x = trans_a ? a[(size_t)k * M + m] : a[(size_t)m * K + k];
                float y = trans_b ? b[(size_t)n * K + k] : b[(size_t)k * N + n];
                acc += (double)x * y;
            }
            float *cm = c + (size_t)m * N + n;
            // beta = 0 must not read c: it may hold garbage (or NaN) from a fresh buffer
            *cm = (float)(alpha * acc + (beta != 0.0f ? (double)beta * *cm : 0.0));
        }
}

/* ---- linear ----------------------------------------------------------------------- */

/* One routine serves nn.Linear and Conv1D: element (o, i) of the weight lives at
 * o*ws_o + i*ws_i, i.e. strides (IN, 1) for [out, in] and (1, OUT) for [in, out]. */
static void linear_fwd(float *out, const float *inp, const float *weight, const float *bias,
                       int N, int IN, int OUT, size_t ws_o, size_t ws_i) {
    for (int n = 0; n < N; n++) {
        const float *x = inp + (size_t)n * IN;
        for (int o = 0; o < OUT; o++) {
            double acc = bias ? bias[o] : 0.0;
            for (int i = 0; i < IN; i++) acc += (double)x[i] * weight[o * ws_o + i * ws_i];
            out[(size_t)n * OUT + o] = (float)acc;
        }
    }
}

static void linear_bwd(float *dinp, float *dweight, float *dbias, const float *dout,
                       const float *inp, const float *weight, int N, int IN, int OUT,
                       size_t ws_o, size_t ws_i) {
    if (dinp)
        for (int n = 0; n < N; n++)
            for (int i = 0; i < IN; i++) {
                double acc = 0;
                for (int o = 0; o < OUT; o++)
                    acc += (double)dout[(size_t)n * OUT + o] * weight[o * ws_o + i * ws_i];
                dinp[(size_t)n * IN + i] += (float)acc;
            }
    if (dweight)
        for (int o = 0; o < OUT; o++)
            for (int i = 0; i < IN; i++) {
                double acc = 0;
                for (int n = 0; n < N; n++)
                    acc += (double)dout[(size_t)n * OUT + o] * inp[(size_t)n * IN + i];
                dweight[o * ws_o + i * ws_i] += (float)acc;
            }
    if (dbias)
        for (int o = 0; o < OUT; o++) {
            double acc = 0;
            for (int n = 0; n < N; n++) acc += dout[(size_t)n * OUT + o];
            dbias[o] += (float)acc;
        }
}

void nn_linear_forward(float *out, const float *inp, const float *weight, const float *bias,
                       int N, int IN, int OUT) {
    linear_fwd(out, inp, weight, bias, N, IN, OUT, (size_t)IN, 1);
}

void nn_linear_backward(float *dinp, float *dweight, float *dbias, const float *dout,
                        const float *inp, const float *weight, int N, int IN, int OUT) {
    linear_bwd(dinp, dweight, dbias, dout, inp, weight, N, IN, OUT, (size_t)IN, 1);
}

void nn_conv1d_forward(float *out, const float *inp, const float *weight, const float *bias,
                       int N, int IN, int OUT) {
    linear_fwd(out, inp, weight, bias, N, IN, OUT, 1, (size_t)OUT);
}

void nn_conv1d_backward(float *dinp, float *dweight, float *dbias, const float *dout,
                        const float *inp, const float *weight, int N, int IN, int OUT) {
    linear_bwd(dinp, dweight, dbias, dout, inp, weight, N, IN, OUT, 1, (size_t)OUT);
}

/* ---- LoRA ------------------------------------------------------------------------- */

void nn_lora_forward(float *out, float *h, const float *inp, const float *mask,
                     const float *A, const float *B, float scale, int N, int IN, int OUT,
                     int R) {
    for (int n = 0; n < N; n++) {
        const float *x = inp + (size_t)n * IN;
        const float *m = mask ? mask + (size_t)n * IN : NULL;
        float *hn = h + (size_t)n * R;
        for (int r = 0; r < R; r++) {
            double acc = 0;
            for (int i = 0; i < IN; i++)
                acc += (double)A[(size_t)r * IN + i] * (m ? x[i] * m[i] : x[i]);
            hn[r] = (float)acc;
        }
        for (int o = 0; o < OUT; o++) {
            double acc = 0;
            for (int r = 0; r < R; r++) acc += (double)B[(size_t)o * R + r] * hn[r];
            out[(size_t)n * OUT + o] += (float)(scale * acc);
        }
    }
}

void nn_lora_backward(float *dinp, float *dA, float *dB, float *dh, const float *dout,
                      const float *h, const float *inp, const float *mask, const float *A,
                      const float *B, float scale, int N, int IN, int OUT, int R) {
    // dh = scale · dout · B: the gradient flowing into the low-rank bottleneck
    for (int n = 0; n < N; n++)
        for (int r = 0; r < R; r++) {
            double acc = 0;
            for (int o = 0; o < OUT; o++)
                acc += (double)dout[(size_t)n * OUT + o] * B[(size_t)o * R + r];
            dh[(size_t)n * R + r] = (float)(scale * acc);
        }
    if (dB)
        for (int o = 0; o < OUT; o++)
            for (int r = 0; r < R; r++) {
                double acc = 0;
                for (int n = 0; n < N; n++)
                    acc += (double)dout[(size_t)n * OUT + o] * h[(size_t)n * R + r];
                dB[(size_t)o * R + r] += (float)(scale * acc);
            }
    if (dA)
        for (int r = 0; r < R; r++)
            for (int i = 0; i < IN; i++) {
                double acc = 0;
                for (int n = 0; n < N; n++) {
                    size_t ni = (size_t)n * IN + i;
                    acc += (double)dh[(size_t)n * R + r] * (mask ? inp[ni] * mask[ni] : inp[ni]);
                }
                dA[(size_t)r * IN + i] += (float)acc;
            }
    if (dinp)
        for (int n = 0; n < N; n++)
            for (int i = 0; i < IN; i++) {
                double acc = 0;
                for (int r = 0; r < R; r++)
                    acc += (double)dh[(size_t)n * R + r] * A[(size_t)r * IN + i];
                size_t ni = (size_t)n * IN + i;
                dinp[ni] += (float)(mask ? acc * mask[ni] : acc);
            }
}

/* splitmix64's finaliser: a good 64-bit mix, so hashing consecutive counters gives
 * independent-looking values. That is what makes the mask split-invariant. */
static uint64_t mix64(uint64_t z) {
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

/* 24 random bits of counter i → uniform in [0, 1), exactly representable in f32. */
static float counter_uniform(uint64_t seed, uint64_t i) {
    uint64_t s = mix64(seed + 0x9E3779B97F4A7C15ull);
    return (float)(mix64(s ^ (i * 0x9E3779B97F4A7C15ull)) >> 40) * (1.0f / 16777216.0f);
}

void nn_dropout_mask(float *mask, uint64_t seed, uint64_t offset, float p, size_t n) {
    assert(p >= 0.0f && p < 1.0f);
    float keep = 1.0f / (1.0f - p);
    for (size_t i = 0; i < n; i++) mask[i] = counter_uniform(seed, offset + i) < p ? 0.0f : keep;
}

/* ---- DoRA ------------------------------------------------------------------------------ */

void nn_row_norm(float *norm, const float *w, int rows, int cols, int trans) {
    int n = trans ? cols : rows, len = trans ? rows : cols;
    for (int j = 0; j < n; j++) {
        double acc = 0;
        for (int i = 0; i < len; i++) {
            double x = trans ? w[(size_t)i * cols + j] : w[(size_t)j * cols + i];
            acc += x * x;
        }
        norm[j] = (float)sqrt(acc);
    }
}

void nn_dora_forward(float *out, float *v, float *g, const float *y, const float *su,
                     const float *bias, const float *m, const float *norm, int N, int OUT) {
    for (int j = 0; j < OUT; j++) {
        g[j] = m[j] / norm[j];
        g[OUT + j] = g[j] - 1.0f;
    }
    for (int n = 0; n < N; n++)
        for (int j = 0; j < OUT; j++) {
            size_t i = (size_t)n * OUT + j;
            float yy = y ? y[i] : out[i] - (bias ? bias[j] : 0.0f);
            v[i] = (yy + su[i]) / norm[j];
            out[i] += g[OUT + j] * yy + g[j] * su[i];
        }
}

/* ---- per-channel scale ------------------------------------------------------------ */

void nn_channel_scale_forward(float *out, const float *inp, const float *l, int N, int C) {
    for (int n = 0; n < N; n++)
        for (int c = 0; c < C; c++) out[(size_t)n * C + c] = inp[(size_t)n * C + c] * l[c];
}

void nn_channel_scale_backward(float *dinp, float *dl, const float *dout, const float *inp,
                               const float *l, int N, int C) {
    for (int c = 0; c < C; c++) {
        double acc = 0;
        for (int n = 0; n < N; n++) {
            size_t i = (size_t)n * C + c;
            if (dinp) dinp[i] += dout[i] * l[c];
            acc += (double)dout[i] * inp[i];
        }
        if (dl) dl[c] += (float)acc;
    }
}

void nn_rand_uniform(float *out, uint64_t seed, uint64_t offset, float lo, float hi, size_t n) {
    for (size_t i = 0; i < n; i++) out[i] = lo + (hi - lo) * counter_uniform(seed, offset + i);
}

void nn_rand_normal(float *out, uint64_t seed, uint64_t offset, float mean, float std,
                    size_t n) {
    // Box–Muller on two draws per element (counters 2i, 2i+1), so element i stays a
    // function of i alone
    for (size_t i = 0; i < n; i++) {
        uint64_t c = 2 * (offset + i);
        double u1 = 1.0 - counter_uniform(seed, c), u2 = counter_uniform(seed, c + 1);
        out[i] = (float)(mean + std * sqrt(-2.0 * log(u1)) * cos(2 * M_PI * u2));
    }
}

/* ---- normalisation ---------------------------------------------------------------- */

void nn_rmsnorm_forward(float *out, float *rstd, const float *inp, const float *weight,
                        float eps, int add_one, int N, int C) {
    for (int n = 0; n < N; n++) {
        const float *x = inp + (size_t)n * C;
        double ss = 0;
        for (int c = 0; c < C; c++) ss += (double)x[c] * x[c];
        float r = (float)(1.0 / sqrt(ss / C + eps));
        rstd[n] = r;
        for (int c = 0; c < C; c++) {
            float w = add_one ? 1.0f + weight[c] : weight[c];
            out[(size_t)n * C + c] = x[c] * r * w;
        }
    }
}

void nn_rmsnorm_backward(float *dinp, float *dweight, const float *dout, const float *rstd,
                         const float *inp, const float *weight, int add_one, int N, int C) {
    for (int n = 0; n < N; n++) {
        const float *x = inp + (size_t)n * C, *dy = dout + (size_t)n * C;
        double r = rstd[n];
        // y_c = x_c·r·w_c with r = (Σx²/C + eps)^-1/2, so ∂r/∂x_j = -r³·x_j/C
        double dot = 0;
        for (int c = 0; c < C; c++) {
            double w = add_one ? 1.0 + weight[c] : weight[c];
            dot += (double)dy[c] * w * x[c];
        }
        for (int c = 0; c < C; c++) {
            double w = add_one ? 1.0 + weight[c] : weight[c];
            if (dinp) dinp[(size_t)n * C + c] += (float)(r * (w * dy[c] - x[c] * r * r * dot / C));
            if (dweight) dweight[c] += (float)(dy[c] * x[c] * r);
        }
    }
}

void nn_layernorm_forward(float *out, float *mean, float *rstd, const float *inp,
                          const float *weight, const float *bias, float eps, int N, int C) {
    for (int n = 0; n < N; n++) {
        const float *x = inp + (size_t)n * C;
        double m = 0, v = 0;
        for (int c = 0; c < C; c++) m += x[c];
        m /= C;
        for (int c = 0; c < C; c++) v += (x[c] - m) * (x[c] - m);
        v /= C;   // biased, as torch.nn.LayerNorm
        double r = 1.0 / sqrt(v + eps);
        mean[n] = (float)m;
        rstd[n] = (float)r;
        for (int c = 0; c < C; c++)
            out[(size_t)n * C + c] =
                (float)((x[c] - m) * r * weight[c] + (bias ? bias[c] : 0.0f));
    }
}

void nn_layernorm_backward(float *dinp, float *dweight, float *dbias, const float *dout,
                           const float *mean, const float *rstd, const float *inp,
                           const float *weight, int N, int C) {
    for (int n = 0; n < N; n++) {
        const float *x = inp + (size_t)n * C, *dy = dout + (size_t)n * C;
        double m = mean[n], r = rstd[n];
        // dx = r·(g - mean(g) - x̂·mean(g·x̂)) with g = dy·w, x̂ = (x-m)·r
        double gm = 0, gxm = 0;
        for (int c = 0; c < C; c++) {
            double xh = (x[c] - m) * r, g = (double)dy[c] * weight[c];
            gm += g;
            gxm += g * xh;
        }
        gm /= C;
        gxm /= C;
        for (int c = 0; c < C; c++) {
            double xh = (x[c] - m) * r, g = (double)dy[c] * weight[c];
            if (dinp) dinp[(size_t)n * C + c] += (float)(r * (g - gm - xh * gxm));
            if (dweight) dweight[c] += (float)(dy[c] * xh);
            if (dbias) dbias[c] += dy[c];
        }
    }
}

/* ---- activations ------------------------------------------------------------------ */

int nn_act_from_name(nn_act *out, const char *name) {
    static const struct { const char *name; nn_act act; } names[] = {
        {"silu", NN_ACT_SILU},           {"swish", NN_ACT_SILU},
        {"gelu", NN_ACT_GELU},           {"gelu_new", NN_ACT_GELU_TANH},
        {"gelu_pytorch_tanh", NN_ACT_GELU_TANH}, {"gelu_fast", NN_ACT_GELU_TANH},
        {"tanh", NN_ACT_TANH},           {"relu", NN_ACT_RELU},
    };
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
        if (name && strcmp(name, names[i].name) == 0) {
            *out = names[i].act;
            return 0;
        }
    return lp_seterr("unsupported activation `%s` (known: silu, gelu, gelu_new, "
                     "gelu_pytorch_tanh, tanh, relu)", name ? name : "(none)");
}

#define GELU_K 0.7978845608028654   /* sqrt(2/pi) */
#define GELU_C 0.044715

static double act_f(nn_act act, double x) {
    switch (act) {
    case NN_ACT_SILU: return x / (1.0 + exp(-x));
    case NN_ACT_GELU: return 0.5 * x * (1.0 + erf(x * M_SQRT1_2));
    case NN_ACT_GELU_TANH: return 0.5 * x * (1.0 + tanh(GELU_K * (x + GELU_C * x * x * x)));
    case NN_ACT_TANH: return tanh(x);
    case NN_ACT_RELU: return x > 0 ? x : 0;
    }
    assert(0 && "bad activation");
    return 0;
}

static double act_df(nn_act act, double x) {
    switch (act) {
    case NN_ACT_SILU: {
        double s = 1.0 / (1.0 + exp(-x));
        return s * (1.0 + x * (1.0 - s));
    }
    case NN_ACT_GELU:   // Φ(x) + x·φ(x)
        return 0.5 * (1.0 + erf(x * M_SQRT1_2)) + x * exp(-0.5 * x * x) * 0.3989422804014327;
    case NN_ACT_GELU_TANH: {
        double t = tanh(GELU_K * (x + GELU_C * x * x * x));
        return 0.5 * (1.0 + t) + 0.5 * x * (1.0 - t * t) * GELU_K * (1.0 + 3.0 * GELU_C * x * x);
    }
    case NN_ACT_TANH: {
        double t = tanh(x);
        return 1.0 - t * t;
    }
    case NN_ACT_RELU: return x > 0 ? 1.0 : 0.0;
    }
    assert(0 && "bad activation");
    return 0;
}

void nn_act_forward(float *out, const float *inp, nn_act act, size_t n) {
    for (size_t i = 0; i < n; i++) out[i] = (float)act_f(act, inp[i]);
}

void nn_act_backward(float *dinp, const float *dout, const float *inp, nn_act act, size_t n) {
    for (size_t i = 0; i < n; i++) dinp[i] += (float)(dout[i] * act_df(act, inp[i]));
}

void nn_gated_forward(float *out, const float *gate, const float *up, nn_act act, size_t n) {
    for (size_t i = 0; i < n; i++) out[i] = (float)(act_f(act, gate[i]) * up[i]);
}

void nn_gated_backward(float *dgate, float *dup, const float *dout, const float *gate,
                       const float *up, nn_act act, size_t n) {
    for (size_t i = 0; i < n; i++) {
        if (dgate) dgate[i] = (float)(dout[i] * up[i] * act_df(act, gate[i]));
        if (dup) dup[i] = (float)(dout[i] * act_f(act, gate[i]));
    }
}

/* ---- softmax, losses, soft-cap ---------------------------------------------------- */

void nn_softmax_forward(float *out, const float *inp, int N, int C) {
    for (int n = 0; n < N; n++) {
        const float *x = inp + (size_t)n * C;
        float *y = out + (size_t)n * C;
        double mx = -INFINITY, sum = 0;
        for (int c = 0; c < C; c++) mx = x[c] > mx ? x[c] : mx;
        for (int c = 0; c < C; c++) sum += exp(x[c] - mx);
        for (int c = 0; c < C; c++) y[c] = (float)(exp(x[c] - mx) / sum);
    }
}

void nn_softmax_backward(float *dinp, const float *dout, const float *out, int N, int C) {
    for (int n = 0; n < N; n++) {
        const float *dy = dout + (size_t)n * C, *y = out + (size_t)n * C;
        double dot = 0;
        for (int c = 0; c < C; c++) dot += (double)dy[c] * y[c];
        for (int c = 0; c < C; c++) dinp[(size_t)n * C + c] += (float)(y[c] * (dy[c] - dot));
    }
}

/* log Σ exp over a row of V logits, in double */
static double row_lse(const float *l, int V) {
    double mx = -INFINITY, sum = 0;
    for (int v = 0; v < V; v++) mx = l[v] > mx ? l[v] : mx;
    for (int v = 0; v < V; v++) sum += exp(l[v] - mx);
    return mx + log(sum);
}

int nn_cross_entropy_forward(float *loss, float *lse, int *count, const float *logits,
                             const int *targets, int N, int V) {
    double total = 0;
    int cnt = 0;
    for (int n = 0; n < N; n++)
        if (targets[n] != -100 && (targets[n] < 0 || targets[n] >= V))
            return lp_seterr("label %d at position %d is outside [0, %d) and is not -100",
                             targets[n], n, V);
    for (int n = 0; n < N; n++) {
        const float *l = logits + (size_t)n * V;
        double s = row_lse(l, V);
        lse[n] = (float)s;
        if (targets[n] == -100) continue;
        total += s - l[targets[n]];
        cnt++;
    }
    *loss = cnt ? (float)(total / cnt) : 0.0f;
    *count = cnt;
    return 0;
}

void nn_cross_entropy_rows(float *rowloss, float *lse, const float *logits, const int *targets,
                           int N, int V) {
    for (int n = 0; n < N; n++) {
        const float *l = logits + (size_t)n * V;
        double s = row_lse(l, V);
        lse[n] = (float)s;
        rowloss[n] = targets[n] == -100 ? 0.0f : (float)(s - l[targets[n]]);
    }
}

void nn_cross_entropy_backward(float *dlogits, float dloss, const float *lse,
                               const float *logits, const int *targets, int count, int N,
                               int V) {
    double g = count ? (double)dloss / count : 0.0;
    for (int n = 0; n < N; n++) {
        float *d = dlogits + (size_t)n * V;
        if (targets[n] == -100 || count == 0) {
            memset(d, 0, (size_t)V * sizeof(float));
            continue;
        }
        const float *l = logits + (size_t)n * V;
        for (int v = 0; v < V; v++) {
            double p = exp((double)l[v] - lse[n]);
            d[v] = (float)(g * (p - (v == targets[n])));
        }
    }
}

void nn_softcap_forward(float *out, const float *inp, float cap, size_t n) {
    for (size_t i = 0; i < n; i++) out[i] = (float)(cap * tanh((double)inp[i] / cap));
}

void nn_softcap_backward(float *dinp, const float *dout, const float *out, float cap,
                         size_t n) {
    for (size_t i = 0; i < n; i++) {
        double t = (double)out[i] / cap;
        dinp[i] += (float)(dout[i] * (1.0 - t * t));
    }
}

/* ---- column slices ---------------------------------------------------------------- */

void nn_slice_forward(float *out, const float *inp, int N, int CI, int off, int W) {
    assert(off >= 0 && off + W <= CI);
    for (int n = 0; n < N; n++)
        memcpy(out + (size_t)n * W, inp + (size_t)n * CI + off, (size_t)W * sizeof(float));
}

void nn_slice_backward(float *dinp, const float *dout, int N, int CI, int off, int W) {
    for (int n = 0; n < N; n++)
        for (int c = 0; c < W; c++) dinp[(size_t)n * CI + off + c] += dout[(size_t)n * W + c];
}

/* ---- elementwise ------------------------------------------------------------------ */

void nn_add_forward(float *out, const float *a, const float *b, size_t n) {
    for (size_t i = 0; i < n; i++) out[i] = a[i] + b[i];
}

void nn_add_backward(float *da, float *db, const float *dout, size_t n) {
    for (size_t i = 0; i < n; i++) {
        if (da) da[i] += dout[i];
        if (db) db[i] += dout[i];
    }
}

void nn_mul_forward(float *out, const float *a, const float *b, size_t n) {
    for (size_t i = 0; i < n; i++) out[i] = a[i] * b[i];
}

void nn_mul_backward(float *da, float *db, const float *dout, const float *a, const float *b,
                     size_t n) {
    for (size_t i = 0; i < n; i++) {
        if (da) da[i] += dout[i] * b[i];
        if (db) db[i] += dout[i] * a[i];
    }
}

void nn_scale_forward(float *out, const float *inp, float s, size_t n) {
    for (size_t i = 0; i < n; i++) out[i] = s * inp[i];
}

void nn_scale_backward(float *dinp, const float *dout, float s, size_t n) {
    for (size_t i = 0; i < n; i++) dinp[i] += s * dout[i];
}

/* ---- optimisers --------------------------------------------------------------------
 * These mirror torch's f32 arithmetic step by step (scalars in double, cast to f32 where
 * torch's CPU kernels cast them), so three AdamW steps match torch to the last bits. */

void nn_adamw_step(float *param, float *m, float *v, const float *grad, size_t n, double lr,
                   double beta1, double beta2, double eps, double weight_decay, int t) {
    assert(t >= 1);
    float decay = (float)(1.0 - lr * weight_decay);
    float w1 = (float)(1.0 - beta1), b2 = (float)beta2, w2 = (float)(1.0 - beta2);
    double bc1 = 1.0 - pow(beta1, t), bc2 = 1.0 - pow(beta2, t);
    float step_size = (float)(lr / bc1), bc2_sqrt = (float)sqrt(bc2), e = (float)eps;
    for (size_t i = 0; i < n; i++) {
        float g = grad[i], p = param[i];
        if (weight_decay != 0) p *= decay;
        m[i] = m[i] + w1 * (g - m[i]);   // torch.lerp with weight < 0.5
        v[i] = v[i] * b2 + w2 * g * g;
        float denom = sqrtf(v[i]) / bc2_sqrt + e;
        param[i] = p + (-step_size) * m[i] / denom;
    }
}

void nn_sgd_step(float *param, float *buf, const float *grad, size_t n, double lr,
                 double momentum, double weight_decay, int t) {
    float wd = (float)weight_decay, mu = (float)momentum, nlr = (float)-lr;
    for (size_t i = 0; i < n; i++) {
        float d = grad[i];
        if (weight_decay != 0) d = d + wd * param[i];
        if (momentum != 0) {
            buf[i] = t <= 1 ? d : buf[i] * mu + d;
            d = buf[i];
        }
        param[i] = param[i] + nlr * d;
    }
}

double nn_clip_grad_norm(float *const *grads, const size_t *sizes, int count,
                         double max_norm) {
    double total = 0;
    for (int k = 0; k < count; k++) {
        double s = 0;
        for (size_t i = 0; i < sizes[k]; i++) s += (double)grads[k][i] * grads[k][i];
        total += s;
    }
    total = sqrt(total);
    if (max_norm > 0) {
        double coef = max_norm / (total + 1e-6);
        if (coef < 1.0)
            for (int k = 0; k < count; k++)
                for (size_t i = 0; i < sizes[k]; i++) grads[k][i] *= (float)coef;
    }
    return total;
}
