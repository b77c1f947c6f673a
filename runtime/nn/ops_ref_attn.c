/* ops_ref_attn.c — plain-C reference for rotary embeddings and attention. See ops.h.
 *
 * The RoPE table builder follows transformers' modeling_rope_utils.py step by step in
 * f32 (inv_freq, angles = f32(pos)·inv_freq), because that is where HF's numbers come
 * from: at position 4000 an angle computed in double differs from torch's f32 angle by
 * ~1e-4 rad, far above our 1e-5 parity tolerance. */
#include "nn/ops.h"

#include <assert.h>
#include <math.h>
#include <string.h>

#include "util/err.h"

/* ---- rotary embeddings ------------------------------------------------------------ */

int nn_rope_type_from_name(nn_rope_type *out, const char *name) {
    if (!name || strcmp(name, "default") == 0) *out = NN_ROPE_DEFAULT;
    else if (strcmp(name, "linear") == 0) *out = NN_ROPE_LINEAR;
    else if (strcmp(name, "dynamic") == 0) *out = NN_ROPE_DYNAMIC;
    else if (strcmp(name, "llama3") == 0) *out = NN_ROPE_LLAMA3;
    else if (strcmp(name, "longrope") == 0 || strcmp(name, "su") == 0) *out = NN_ROPE_LONGROPE;
    else
        return lp_seterr("unsupported rope_scaling type `%s` (known: default, linear, "
                         "dynamic, llama3, longrope)", name);
    return 0;
}

/* inv_freq[i] = 1 / base^(2i/D), evaluated as torch does: f32 exponent, f32 result. */
static void default_inv_freq(float *inv_freq, double base, int D) {
    for (int i = 0; i < D / 2; i++) {
        float e = (float)(2 * i) / (float)D;
        inv_freq[i] = 1.0f / (float)pow(base, (double)e);
    }
}

void nn_rope_inv_freq(float *inv_freq, const nn_rope_config *cfg, int D, int seq_len) {
    assert(D % 2 == 0);
    double base = cfg->theta;
    if (cfg->type == NN_ROPE_DYNAMIC) {
        // NTK-aware: for sequences past the trained length, raise the base so the lowest
        // frequency still fits; identical to default up to max_position.
        int L = seq_len > cfg->max_position ? seq_len : cfg->max_position;
        double f = cfg->factor;
        base = base * pow(f * L / cfg->max_position - (f - 1), (double)D / (D - 2));
    }
    if (cfg->type == NN_ROPE_LONGROPE) {   /* 1 / (ext_i · base^(2i/D)), f32 as torch */
        const float *ext = seq_len > cfg->original_max_position ? cfg->long_factor
                                                                 : cfg->short_factor;
        for (int i = 0; i < D / 2; i++) {
            float e = (float)(2 * i) / (float)D;
            inv_freq[i] = 1.0f / (ext[i] * (float)pow(base, (double)e));
        }
        return;
    }
    default_inv_freq(inv_freq, base, D);
    if (cfg->type == NN_ROPE_LINEAR) {
        for (int i = 0; i < D / 2; i++) inv_freq[i] = (float)(inv_freq[i] / cfg->factor);
    } else if (cfg->type == NN_ROPE_LLAMA3) {
        // Llama 3.1: wavelengths shorter than old_len/high_freq_factor are kept, longer than
        // old_len/low_freq_factor are divided by factor, and the band between is blended.
        float factor = (float)cfg->factor, lo = (float)cfg->low_freq_factor;
        float hi = (float)cfg->high_freq_factor, old_len = (float)cfg->original_max_position;
        float lo_wavelen = old_len / lo, hi_wavelen = old_len / hi;
        for (int i = 0; i < D / 2; i++) {
            float f = inv_freq[i];
            float wavelen = (float)(2 * M_PI) / f;
            float g = wavelen > lo_wavelen ? f / factor : f;
            if (!(wavelen < hi_wavelen) && !(wavelen > lo_wavelen)) {
                float smooth = (old_len / wavelen - lo) / (hi - lo);
                g = (1 - smooth) * g / factor + smooth * g;
            }
            inv_freq[i] = g;
        }
    }
}

void nn_rope_table(float *cos_t, float *sin_t, const float *inv_freq, const int *pos, int N,
                   int D) {
    int half = D / 2;
    for (int n = 0; n < N; n++)
        for (int i = 0; i < half; i++) {
            float ang = (float)pos[n] * inv_freq[i];   // f32 product, as torch's matmul
            cos_t[(size_t)n * half + i] = (float)cos((double)ang);
            sin_t[(size_t)n * half + i] = (float)sin((double)ang);
        }
}

void nn_rope_forward(float *out, const float *inp, const float *cos_t, const float *sin_t,
                     int N, int H, int D) {
    int half = D / 2;
    for (int n = 0; n < N; n++)
        for (int h = 0; h < H; h++) {
            const float *x = inp + ((size_t)n * H + h) * D;
            float *y = out + ((size_t)n * H + h) * D;
            const float *c = cos_t + (size_t)n * half, *s = sin_t + (size_t)n * half;
            for (int i = 0; i < half; i++) {
                float x1 = x[i], x2 = x[i + half];   // read both before writing (in place)
                y[i] = x1 * c[i] - x2 * s[i];
                y[i + half] = x2 * c[i] + x1 * s[i];
            }
        }
}

void nn_rope_backward(float *dinp, const float *dout, const float *cos_t, const float *sin_t,
                      int N, int H, int D) {
    int half = D / 2;
    for (int n = 0; n < N; n++)
        for (int h = 0; h < H; h++) {
            const float *dy = dout + ((size_t)n * H + h) * D;
            float *dx = dinp + ((size_t)n * H + h) * D;
            const float *c = cos_t + (size_t)n * half, *s = sin_t + (size_t)n * half;
            for (int i = 0; i < half; i++) {   // the transpose of a rotation is rotation by -θ
                dx[i] = dy[i] * c[i] + dy[i + half] * s[i];
                dx[i + half] = dy[i + half] * c[i] - dy[i] * s[i];
            }
        }
}

/* ---- attention -------------------------------------------------------------------- */

static int visible(const int *amask, const nn_attn_params *p, int b, int T, int i, int j) {
    if (amask && !amask[(size_t)b * T + j]) return 0;
    if (p->causal && j > i) return 0;
    if (p->window > 0 && i - j >= p->window) return 0;
    return 1;
}

static double dot(const float *a, const float *b, int D) {
    double s = 0;
    for (int d = 0; d < D; d++) s += (double)a[d] * b[d];
    return s;
}

void nn_attention_kv_forward(float *out, float *probs, const float *q, const float *k,
                             const float *v, const int *amask, const nn_attn_params *p, int B,
                             int Tq, int Tk, int q_off, int H, int KVH, int D) {
    assert(KVH > 0 && H % KVH == 0 && q_off >= 0);
    int rep = H / KVH;
    double s[Tk > 0 ? Tk : 1];
    for (int b = 0; b < B; b++)
        for (int h = 0; h < H; h++) {
            int kh = h / rep;
            for (int i = 0; i < Tq; i++) {
                int qi_abs = q_off + i;   // the query's position among the keys
                const float *qi = q + (((size_t)b * Tq + i) * H + h) * D;
                float *pr = probs + (((size_t)b * H + h) * Tq + i) * Tk;
                double mx = -INFINITY;
                for (int j = 0; j < Tk; j++) {
                    if (!visible(amask, p, b, Tk, qi_abs, j)) continue;
                    double x = p->scale * dot(qi, k + (((size_t)b * Tk + j) * KVH + kh) * D, D);
                    if (p->softcap > 0) x = p->softcap * tanh(x / p->softcap);
                    s[j] = x;
                    mx = x > mx ? x : mx;
                }
                double sum = 0;
                for (int j = 0; j < Tk; j++)
                    if (visible(amask, p, b, Tk, qi_abs, j)) sum += exp(s[j] - mx);
                for (int j = 0; j < Tk; j++)   // no visible key: sum is 0, the row stays 0
                    pr[j] = visible(amask, p, b, Tk, qi_abs, j) ? (float)(exp(s[j] - mx) / sum)
                                                               : 0.0f;
                if (!out) continue;
                const float *m = p->dropout ? p->dropout + (((size_t)b * H + h) * Tq + i) * Tk : NULL;
                float *o = out + (((size_t)b * Tq + i) * H + h) * D;
                for (int d = 0; d < D; d++) {
                    double acc = 0;
                    for (int j = 0; j < Tk; j++)
                        acc += (double)pr[j] * (m ? m[j] : 1.0f) *
                               v[(((size_t)b * Tk + j) * KVH + kh) * D + d];
                    o[d] = (float)acc;
                }
            }
        }
}

void nn_attention_forward(float *out, float *probs, const float *q, const float *k,
                          const float *v, const int *amask, const nn_attn_params *p,
                          int B, int T, int H, int KVH, int D) {
    nn_attention_kv_forward(out, probs, q, k, v, amask, p, B, T, T, 0, H, KVH, D);
}

/* The attention backwards write their gradients: clear them, then sum into them. */
static void attn_grads_clear(float *dq, float *dk, float *dv, int B, int T, int H, int KVH,
                             int D) {
    size_t nq = (size_t)B * T * H * D, nk = (size_t)B * T * KVH * D;
    if (dq) memset(dq, 0, nq * sizeof(float));
    if (dk) memset(dk, 0, nk * sizeof(float));
    if (dv) memset(dv, 0, nk * sizeof(float));
}

void nn_attention_backward(float *dq, float *dk, float *dv, float *dscores,
                           const float *dout, const float *probs, const float *q,
                           const float *k, const float *v, const int *amask,
                           const nn_attn_params *p, int B, int T, int H, int KVH, int D) {
    int rep = H / KVH;
    double dqacc[D > 0 ? D : 1];
    attn_grads_clear(dq, dk, dv, B, T, H, KVH, D);
    for (int b = 0; b < B; b++)
        for (int h = 0; h < H; h++) {
            int kh = h / rep;
            for (int i = 0; i < T; i++) {
                const float *pr = probs + (((size_t)b * H + h) * T + i) * T;
                const float *qi = q + (((size_t)b * T + i) * H + h) * D;
                const float *go = dout + (((size_t)b * T + i) * H + h) * D;
                float *ds = dscores + (((size_t)b * H + h) * T + i) * T;
                const float *m = p->dropout ? p->dropout + (((size_t)b * H + h) * T + i) * T : NULL;
                // dP_ij = (dout_i · v_j)·M_ij; softmax backward dS_ij = P_ij (dP_ij - Σ_k P_ik dP_ik)
                double rowdot = 0;
                for (int j = 0; j < T; j++) {
                    const float *vj = v + (((size_t)b * T + j) * KVH + kh) * D;
                    float mj = m ? m[j] : 1.0f;
                    double dp = pr[j] != 0.0f ? dot(go, vj, D) * mj : 0.0;
                    ds[j] = (float)dp;
                    rowdot += dp * pr[j];
                    if (dv && pr[j] != 0.0f)
                        for (int d = 0; d < D; d++)
                            dv[(((size_t)b * T + j) * KVH + kh) * D + d] += pr[j] * mj * go[d];
                }
                for (int j = 0; j < T; j++) {
                    double g = pr[j] * (ds[j] - rowdot);
                    if (p->softcap > 0 && pr[j] != 0.0f) {   // d(cap·tanh(x/cap))/dx = 1 - tanh²
                        const float *kj = k + (((size_t)b * T + j) * KVH + kh) * D;
                        double t = tanh(p->scale * dot(qi, kj, D) / p->softcap);
                        g *= 1.0 - t * t;
                    }
                    ds[j] = (float)g;
                }
                for (int d = 0; d < D; d++) dqacc[d] = 0;
                for (int j = 0; j < T; j++) {
                    if (ds[j] == 0.0f) continue;
                    double g = p->scale * ds[j];
                    const float *kj = k + (((size_t)b * T + j) * KVH + kh) * D;
                    for (int d = 0; d < D; d++) dqacc[d] += g * kj[d];
                    if (dk) {
                        float *dkj = dk + (((size_t)b * T + j) * KVH + kh) * D;
                        for (int d = 0; d < D; d++) dkj[d] += (float)(g * qi[d]);
                    }
                }
                if (dq) {
                    float *dqi = dq + (((size_t)b * T + i) * H + h) * D;
                    for (int d = 0; d < D; d++) dqi[d] += (float)dqacc[d];
                }
            }
        }
}

/* ---- fused attention ---------------------------------------------------------------
 * The same scores as nn_attention_kv_forward (double, soft-cap, masks); lse instead of the
 * probabilities, and a backward that recomputes them as exp(s - lse). */

static double score(const float *qi, const float *kj, const nn_attn_params *p, int D) {
    double x = p->scale * dot(qi, kj, D);
    return p->softcap > 0 ? p->softcap * tanh(x / p->softcap) : x;
}

void nn_attention_fused_forward(float *out, float *lse, const float *q, const float *k,
                                const float *v, const int *amask, const nn_attn_params *p,
                                int B, int T, int H, int KVH, int D) {
    assert(KVH > 0 && H % KVH == 0 && !p->dropout);
    int rep = H / KVH;
    double s[T > 0 ? T : 1], acc[D > 0 ? D : 1];
    for (int b = 0; b < B; b++)
        for (int h = 0; h < H; h++) {
            int kh = h / rep;
            for (int i = 0; i < T; i++) {
                const float *qi = q + (((size_t)b * T + i) * H + h) * D;
                float *o = out + (((size_t)b * T + i) * H + h) * D;
                double mx = -INFINITY, sum = 0;
                for (int j = 0; j < T; j++) {
                    if (!visible(amask, p, b, T, i, j)) continue;
                    s[j] = score(qi, k + (((size_t)b * T + j) * KVH + kh) * D, p, D);
                    mx = s[j] > mx ? s[j] : mx;
                }
                for (int d = 0; d < D; d++) acc[d] = 0;
                for (int j = 0; j < T; j++) {
                    if (!visible(amask, p, b, T, i, j)) continue;
                    double e = exp(s[j] - mx);
                    const float *vj = v + (((size_t)b * T + j) * KVH + kh) * D;
                    sum += e;
                    for (int d = 0; d < D; d++) acc[d] += e * vj[d];
                }
                // no visible key: sum is 0, out 0, lse +inf (every exp(s - lse) is then 0)
                for (int d = 0; d < D; d++) o[d] = sum > 0 ? (float)(acc[d] / sum) : 0.0f;
                lse[((size_t)b * H + h) * T + i] = sum > 0 ? (float)(mx + log(sum)) : INFINITY;
            }
        }
}

void nn_attention_fused_backward(float *dq, float *dk, float *dv, const float *dout,
                                 const float *out, const float *lse, const float *q,
                                 const float *k, const float *v, const int *amask,
                                 const nn_attn_params *p, int B, int T, int H, int KVH, int D) {
    assert(KVH > 0 && H % KVH == 0 && !p->dropout);
    int rep = H / KVH;
    double dqacc[D > 0 ? D : 1];
    attn_grads_clear(dq, dk, dv, B, T, H, KVH, D);
    for (int b = 0; b < B; b++)
        for (int h = 0; h < H; h++) {
            int kh = h / rep;
            for (int i = 0; i < T; i++) {
                size_t row = ((size_t)b * T + i) * H + h;
                const float *qi = q + row * D, *go = dout + row * D, *oi = out + row * D;
                double L = lse[((size_t)b * H + h) * T + i];
                if (isinf(L)) continue;   // no visible key: every P is 0, so every gradient
                double Di = dot(go, oi, D);
                for (int d = 0; d < D; d++) dqacc[d] = 0;
                for (int j = 0; j < T; j++) {
                    if (!visible(amask, p, b, T, i, j)) continue;
                    size_t kr = (((size_t)b * T + j) * KVH + kh) * D;
                    const float *kj = k + kr, *vj = v + kr;
                    double x = p->scale * dot(qi, kj, D), sc = x;
                    if (p->softcap > 0) sc = p->softcap * tanh(x / p->softcap);
                    double P = exp(sc - L);
                    double g = P * (dot(go, vj, D) - Di);
                    if (p->softcap > 0) {   // d(cap·tanh(x/cap))/dx = 1 - tanh²
                        double t = tanh(x / p->softcap);
                        g *= 1.0 - t * t;
                    }
                    g *= p->scale;
                    if (dv)
                        for (int d = 0; d < D; d++) dv[kr + d] += (float)(P * go[d]);
                    if (dk)
                        for (int d = 0; d < D; d++) dk[kr + d] += (float)(g * qi[d]);
                    for (int d = 0; d < D; d++) dqacc[d] += g * kj[d];
                }
                if (dq)
                    for (int d = 0; d < D; d++) dq[row * D + d] += (float)dqacc[d];
            }
        }
}
