/* ops_quant.c — QLoRA's 4-bit weights and bitsandbytes' double quantization, on the host
 * (load time, merges) and as the reference backend's dequantization. See ops.h.
 *
 * The rounding is bitsandbytes' own (its backends/default quantize_4bit and
 * quantize_blockwise, the ones its CUDA kernels mirror): a value is scaled by its block's
 * absmax — x·(1/absmax) in a full block, x / absmax in a short last one, absmax at least
 * 1e-38 — clamped to [-1, 1] and bucketed against the f32 midpoints of the sorted codes (a
 * value on a midpoint takes the lower code). */
#include "nn/ops.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

const float nn_nf4_code[16] = {
    -1.0f, -0.6961928009986877f, -0.5250730514526367f, -0.39491748809814453f,
    -0.28444138169288635f, -0.18477343022823334f, -0.09105003625154495f, 0.0f,
    0.07958029955625534f, 0.16093020141124725f, 0.24611230194568634f, 0.33791524171829224f,
    0.44070982933044434f, 0.5626170039176941f, 0.7229568362236023f, 1.0f};

/* bitsandbytes' get_4bit_type("fp4"): 1 sign bit (bit 3), 2 exponent bits, 1 mantissa bit,
 * by bit pattern, {0, 0.0625, 8, 12, 4, 6, 2, 3} / 12 and their negatives (its "-0" is +0) */
const float nn_fp4_code[16] = {
    0.0f, 0.0052083334885537624f, 0.6666666865348816f, 1.0f, 0.3333333432674408f, 0.5f,
    0.1666666716337204f, 0.25f, 0.0f, -0.0052083334885537624f, -0.6666666865348816f, -1.0f,
    -0.3333333432674408f, -0.5f, -0.1666666716337204f, -0.25f};

/* FP4's codes in ascending order, as the indices torch.argsort gives bitsandbytes (of the two
 * zeros pattern 0 first, so a value in (0, 0.0026] takes pattern 8, as there) */
static const uint8_t fp4_order[16] = {11, 10, 13, 12, 15, 14, 9, 0, 8, 1, 6, 7, 4, 5, 2, 3};

const float *nn_q4_code(int type) { return type == NN_Q4_FP4 ? nn_fp4_code : nn_nf4_code; }

/* The number of midpoints below v (torch.bucketize, right=False): mid ascending. */
static int bucket(const float *mid, int nmid, float v) {
    int lo = 0, hi = nmid;
    while (lo < hi) {
        int m = (lo + hi) / 2;
        if (mid[m] < v) lo = m + 1;
        else hi = m;
    }
    return lo;
}

typedef struct {
    float mid[255];
    int nmid;
    const uint8_t *order;   /* bucket → stored index (NULL: the same) */
} q_table;

static void table_of(q_table *t, const float *sorted, int ncode, const uint8_t *order) {
    t->nmid = ncode - 1;
    for (int i = 0; i < t->nmid; i++) t->mid[i] = (sorted[i] + sorted[i + 1]) / 2.0f;
    t->order = order;
}

static void table_4bit(q_table *t, int type) {
    float s[16];
    for (int i = 0; i < 16; i++) s[i] = type == NN_Q4_FP4 ? nn_fp4_code[fp4_order[i]] : nn_nf4_code[i];
    table_of(t, s, 16, type == NN_Q4_FP4 ? fp4_order : NULL);
}

static int index_of(const q_table *t, float v) {
    int q = bucket(t->mid, t->nmid, v);
    return t->order ? t->order[q] : q;
}

/* Blockwise quantization: absmax per block, each value's index through t (one a byte, or
 * two a byte first high when four_bit; an odd n pads with the index of 0). */
static void blockwise(uint8_t *out, float *absmax, const float *x, size_t n, int blocksize,
                      const q_table *t, int four_bit) {
    size_t bs = (size_t)blocksize, full = n - n % bs;
    for (size_t b0 = 0, blk = 0; b0 < n; b0 += bs, blk++) {
        size_t b1 = b0 + bs < n ? b0 + bs : n;
        float am = 0;
        for (size_t i = b0; i < b1; i++) am = fmaxf(am, fabsf(x[i]));
        float div = fmaxf(am, 1e-38f), inv = 1.0f / div;
        absmax[blk] = b0 < full ? am : div;   /* a full block keeps its 0, as bitsandbytes */
        for (size_t i = b0; i < b1; i++) {
            float v = b0 < full ? x[i] * inv : x[i] / div;
            int q = index_of(t, fminf(fmaxf(v, -1.0f), 1.0f));
            if (!four_bit) out[i] = (uint8_t)q;
            else if (i % 2 == 0) out[i / 2] = (uint8_t)(q << 4);
            else out[i / 2] |= (uint8_t)q;
        }
    }
    if (four_bit && n % 2) out[n / 2] |= (uint8_t)index_of(t, 0.0f);
}


/* LLM.int8's rows: f16, absmax, round(x16 · k) (Int8Params._quantize), where k is torch's
 * 127.0 / absmax: a scalar over a tensor is reciprocal(absmax) · 127, two roundings (one
 * division differs on a few values lying on a code's edge: 63.5 for torch's 63.499996). */
static float q8_step(float m) { return (1.0f / m) * 127.0f; }

static void q8_quantize(uint8_t *codes, float *absmax, const float *x, size_t n, int rowlen) {
    for (size_t r0 = 0; r0 < n; r0 += (size_t)rowlen) {
        size_t len = n - r0 < (size_t)rowlen ? n - r0 : (size_t)rowlen;
        float m = 0.0f;
        for (size_t i = 0; i < len; i++) m = fmaxf(m, fabsf(nn_half_round(x[r0 + i])));
        float k = q8_step(m);
        for (size_t i = 0; i < len; i++) {
            float q = m > 0.0f ? rintf(nn_half_round(x[r0 + i]) * k) : 0.0f;
            if (!(fabsf(q) <= 127.0f)) q = 0.0f;   /* a weight past f16's range */
            codes[r0 + i] = (uint8_t)(int8_t)q;
        }
        absmax[r0 / (size_t)rowlen] = m;
    }
}

void nn_q4_quantize(uint8_t *codes, float *absmax, const float *x, size_t n, int blocksize,
                    int type) {
    if (type == NN_Q8) {
        q8_quantize(codes, absmax, x, n, blocksize);
        return;
    }
    q_table t;
    table_4bit(&t, type);
    blockwise(codes, absmax, x, n, blocksize, &t, 1);
}

void nn_q4_dequant(float *out, const uint8_t *codes, const float *absmax, size_t n,
                   int blocksize, int type) {
    if (type == NN_Q8) {   /* CB.float() · (SCB · (1/127)): the order of Linear8bitLt's backward */
        for (size_t i = 0; i < n; i++)
            out[i] = (float)(int8_t)codes[i] * (absmax[i / (size_t)blocksize] * (1.0f / 127.0f));
        return;
    }
    const float *code = nn_q4_code(type);
    for (size_t i = 0; i < n; i++) {
        uint8_t c = codes[i / 2];
        out[i] = code[i % 2 ? c & 15 : c >> 4] * absmax[i / (size_t)blocksize];
    }
}

/* ---- double quantization ------------------------------------------------------------ */

static int cmp_float(const void *a, const void *b) {
    float x = *(const float *)a, y = *(const float *)b;
    return (x > y) - (x < y);
}

void nn_dynamic_map(float code[256]) {
    /* bitsandbytes' create_dynamic_map(signed=True): for i in 0..6, the means of neighbouring
     * points of torch.linspace(0.1, 1, 2^i + 1) in f32 (start + step·k below the halfway
     * point, end − step·(steps − 1 − k) from it, each one rounding: torch's CPU kernels are
     * built with FMA contraction), times ±10^(i − 6); then 0 and 1; sorted */
    int n = 0;
    for (int i = 0; i < 7; i++) {
        int steps = (1 << i) + 1, half = steps / 2;
        float start = 0.1f, end = 1.0f, step = (end - start) / (float)(steps - 1), b[65];
        for (int k = 0; k < steps; k++)
            b[k] = k < half ? fmaf(step, (float)k, start) : fmaf(-step, (float)(steps - 1 - k), end);
        float scale = (float)pow(10.0, i - 6);
        for (int k = 0; k + 1 < steps; k++) {
            float mean = (b[k] + b[k + 1]) / 2.0f;
            code[n++] = scale * mean;
            code[n++] = -scale * mean;
        }
    }
    code[n++] = 0.0f;
    code[n++] = 1.0f;
    qsort(code, 256, sizeof(float), cmp_float);
}

float nn_dq_offset(const float *absmax, size_t nb) {
    double s = 0;
    for (size_t i = 0; i < nb; i++) s += absmax[i];
    return nb ? (float)(s / (double)nb) : 0.0f;
}

void nn_dq_quantize(uint8_t *q, float *absmax2, float *work, const float *absmax, size_t nb,
                    float offset, const float code[256]) {
    q_table t;
    table_of(&t, code, 256, NULL);
    for (size_t i = 0; i < nb; i++) work[i] = absmax[i] - offset;
    blockwise(q, absmax2, work, nb, NN_DQ_BLOCK, &t, 0);
}

void nn_dq_dequant(float *absmax, const uint8_t *q, const float *absmax2, const float *code,
                   float offset, size_t nb) {
    for (size_t i = 0; i < nb; i++) {
        float v = code[q[i]] * absmax2[i / NN_DQ_BLOCK];   /* dequantize_blockwise, */
        absmax[i] = v + offset;                            /* then + offset: two roundings */
    }
}

/* ---- LLM.int8's product ------------------------------------------------------------------ */

void nn_q8_outliers(float *ocol, const float *h, int N, int IN, float threshold) {
    memset(ocol, 0, sizeof(float) * (size_t)IN);
    for (size_t i = 0; threshold > 0.0f && i < (size_t)N * IN; i++)
        if (fabsf(h[i]) >= threshold) ocol[i % (size_t)IN] = 1.0f;
}

float nn_q8_code_row(float *h, const float *ocol, int IN, float threshold) {
    int thr = threshold > 0.0f;   /* int8_vectorwise_quant: the outliers left out first */
    float m = 0.0f;
    for (int c = 0; c < IN; c++)
        if (!(thr && fabsf(h[c]) >= threshold)) m = fmaxf(m, fabsf(h[c]));
    float k = q8_step(m);
    for (int c = 0; c < IN; c++) {
        int outlier = thr && fabsf(h[c]) >= threshold;
        float q = m > 0.0f && !outlier ? rintf(h[c] * k) : 0.0f;
        if (!(fabsf(q) <= 127.0f)) q = 0.0f;   /* an f16 infinity in the row: NaN codes */
        h[c] = ocol && ocol[c] != 0.0f ? 0.0f : q;
    }
    return m;
}

size_t nn_q8_work(int N, int IN, int OUT) {
    return (size_t)N * IN + (size_t)N + (size_t)IN + (size_t)OUT * IN + 3 * (size_t)N * OUT + 2;
}

void nn_q8_linear_forward(float *out, const float *inp, const int8_t *cb, const float *scb,
                          const float *bias, int N, int IN, int OUT, float threshold,
                          float *work) {
    float *ca = work, *rs = ca + (size_t)N * IN, *ocol = rs + N;
    for (size_t i = 0; i < (size_t)N * IN; i++) ca[i] = nn_half_round(inp[i]);
    nn_q8_outliers(ocol, ca, N, IN, threshold);
    for (int n = 0; n < N; n++)
        rs[n] = nn_q8_code_row(ca + (size_t)n * IN, N > 1 ? ocol : NULL, IN, threshold);
    for (int n = 0; n < N; n++)
        for (int o = 0; o < OUT; o++) {
            long long acc = 0;   /* int8 · int8 summed exactly (int32 in bitsandbytes) */
            for (int c = 0; c < IN; c++)
                acc += (long long)ca[(size_t)n * IN + c] * cb[(size_t)o * IN + c];
            float v = (float)(int32_t)acc * (rs[n] * scb[o]) * 6.200124e-05f;
            if (bias) v += bias[o];
            float sub = 0.0f;   /* the outlier columns, f32: x · (cb · scb · (1/127)) */
            for (int c = 0; c < IN; c++)
                if (ocol[c])
                    sub += inp[(size_t)n * IN + c] *
                           ((float)cb[(size_t)o * IN + c] * scb[o] * 7.874015718698502e-3f);
            out[(size_t)n * OUT + o] = v + sub;
        }
}
