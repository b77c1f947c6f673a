/* q4_weights.c — QLoRA's 4-bit weights (forward.h, fw_set_q4): which weights, their one
 * device allocation, the quantization at load (nn_q4_quantize on the host, a chunk at a
 * time), double quantization of the scales, and the dequantized copy a product reads
 * (be->q4_dequant into fm->deq).
 *
 * A Conv1D weight (GPT-2: [in, out] in the checkpoint) is quantized transposed, [out, in], as
 * transformers quantizes it (its bitsandbytes integration replaces Conv1D by Linear4bit and
 * transposes the weight first), so its dequantized copy is a Linear weight: the products
 * (fw_lin_fwd_r, backward) multiply it as one, a merge adds the transposed update, and a read
 * (stats, show) gathers values back into the checkpoint's order.
 *
 * wbuf4: every weight's packed codes (each 16-byte aligned; fm->n4 bytes), then either every
 * weight's f32 absmax, or with double quantization every weight's absmax2 (one f32 per 256
 * scales), the 256-value dynamic map, and every weight's 8-bit scale indices. fm->deq holds
 * one weight's f32 values, from fm->deq_am its dequantized scales, and from fm->deq16 its
 * bf16 copy (the products of a device with bf16 ops). */
#include <math.h>
#include <string.h>

#include "nn/forward_int.h"
#include "util/err.h"
#include "util/mem.h"

static int is_q8(const fw_model *fm) { return fm->q4 == NN_Q8; }
/* bytes of n codes: two a byte (4-bit), one (int8) */
static size_t qbytes(const fw_model *fm, size_t n) { return is_q8(fm) ? n : (n + 1) / 2; }
static size_t code_bytes(const fw_model *fm, size_t n) {
    return (qbytes(fm, n) + 15) & ~(size_t)15;
}
/* the values one scale covers: a block of 64 (4-bit), a row of the stored [out, in] (int8) */
static size_t blen(const fw_model *fm, const fw_weight *w) {
    return is_q8(fm) ? (size_t)w->in : FW_Q4_BLOCK;
}
static size_t nblk(const fw_model *fm, const fw_weight *w, size_t n) {
    return (n + blen(fm, w) - 1) / blen(fm, w);
}
static size_t blocks2(size_t nb) { return (nb + NN_DQ_BLOCK - 1) / NN_DQ_BLOCK; }

int fw_set_q4(fw_model *fm, int type, int double_quant) {
    if (type == NN_Q8 && double_quant)
        return lp_seterr("double quantization is for the 4-bit kinds; 8-bit weights keep one f32 "
                         "scale a row");
    if (fm->loaded && (fm->q4 != type || fm->dq != (double_quant != 0)))
        return lp_seterr("the weights are loaded already: quantize when loading "
                         "(load PATH quantize=\"nf4\")");
    const mdl_summary *s = &fm->m->summary;
    if (s->q4 && type && (type != s->q4 || (double_quant != 0) != s->q4_double))
        return lp_seterr("%s is a bitsandbytes %s checkpoint already (%s%s): it computes "
                         "as stored", fm->m->path, s->q4 == NN_Q8 ? "8-bit" : "4-bit",
                         s->q4 == NN_Q8 ? "int8" : s->q4 == NN_Q4_FP4 ? "fp4" : "nf4",
                         s->q4_double ? ", double quantization" : "");
    fm->q4 = type;
    fm->dq = type && double_quant;
    return 0;
}

/* Stored transposed: a Conv1D weight (every 4-bit weight of a Conv1D model). */
static int transposed(const fw_weight *w) { return w->kind == FW_W_CONV1D; }

int fw_q4_type(const fw_model *fm) { return fm->q4; }

int fw_set_q8_threshold(fw_model *fm, float threshold) {
    if (!(threshold >= 0.0f) || isinf(threshold))
        return lp_seterr("int8_threshold must be 0 or more, got %g", threshold);
    fm->q8_threshold = threshold;
    return 0;
}
float fw_q8_threshold(const fw_model *fm) { return fm->q8_threshold; }
int fw_q4_double(const fw_model *fm) { return fm->dq; }

/* Every Linear and Conv1D weight but the output layer's (transformers keeps lm_head in full
 * precision; loupe keeps every output layer: the LM head, the classifier, BERT's MLM
 * decoder); in a pre-quantized checkpoint, the weights it holds quantized. */
int fw_q4_eligible(const fw_model *fm, const fw_weight *w, const mdl_tensor *t) {
    if (!fm->q4) return 0;   /* (a pre-quantized checkpoint then computes dequantized, f32) */
    if (fm->m->summary.q4) return t && t->q4;
    return (w->kind == FW_W_LINEAR || w->kind == FW_W_CONV1D) && !w->is_head;
}

size_t fw_q4_bytes(const fw_model *fm, const fw_weight *w) {
    size_t nb = nblk(fm, w, w->numel);
    return qbytes(fm, w->numel) + (fm->dq ? nb + blocks2(nb) * sizeof(float) : nb * sizeof(float));
}

int fw_q4_alloc(fw_model *fm) {
    size_t codes = 0, scales = 0, scales2 = 0, most = 0, most_nb = 0;
    for (size_t i = 0; i < fm->nweights; i++) {
        const fw_weight *w = &fm->weights[i];
        if (!w->q4) continue;
        codes += code_bytes(fm, w->numel);
        scales += nblk(fm, w, w->numel);
        scales2 += blocks2(nblk(fm, w, w->numel));
        if (w->numel > most) most = w->numel;
        if (nblk(fm, w, w->numel) > most_nb) most_nb = nblk(fm, w, w->numel);
    }
    if (!codes) return 0;
    fm->n4 = codes;
    fm->b4 = codes + (fm->dq ? (scales2 + 256) * sizeof(float) + scales : scales * sizeof(float));
    fm->deq_am = (most + 15) & ~(size_t)15;
    fm->deq16 = (fm->deq_am + (fm->dq ? most_nb : 0) + 15) & ~(size_t)15;
    fm->deq_cap = fm->deq16 + (most + 1) / 2;   /* always: the model may move to bf16 ops */
    fm->wbuf4 = fm->be->alloc(fm->b4);
    fm->deq = fm->be->alloc(fm->deq_cap * sizeof(float));
    if (!fm->wbuf4 || !fm->deq)
        return lp_preferr("%s: the %s weights (%.1f MB) and a dequantized one (%.1f MB)",
                          fm->m->path, is_q8(fm) ? "8-bit" : "4-bit", fm->b4 / 1e6,
                          fm->deq_cap * 4.0 / 1e6);
    size_t oc = 0, os = 0, os2 = 0;
    float *scale = (float *)(fm->wbuf4 + codes);   /* absmax, or absmax2 then the map */
    uint8_t *qscale = (uint8_t *)(scale + scales2 + 256);
    if (fm->dq) {
        nn_dynamic_map(fm->map8);
        fm->code8 = scale + scales2;
        fm->be->to_device(fm->code8, fm->map8, sizeof fm->map8);
    }
    for (size_t i = 0; i < fm->nweights; i++) {
        fw_weight *w = &fm->weights[i];
        if (!w->q4) continue;
        w->data = (float *)(fm->wbuf4 + oc);
        oc += code_bytes(fm, w->numel);
        if (fm->dq) {
            w->qabsmax = qscale + os;
            w->absmax2 = scale + os2;
            os2 += blocks2(nblk(fm, w, w->numel));
        } else {
            w->absmax = scale + os;
        }
        os += nblk(fm, w, w->numel);
    }
    return 0;
}

/* A weight's scales from the host (nb values, all of them): as they are, or quantized
 * again (the offset their mean). */
static int put_scales(fw_model *fm, fw_weight *w, const float *am, size_t nb) {
    if (!fm->dq) {
        fm->be->to_device((float *)w->absmax, am, nb * sizeof(float));
        return 0;
    }
    size_t nb2 = blocks2(nb);
    uint8_t *q = lp_malloc(nb);
    float *a2 = lp_malloc(nb2 * sizeof(float)), *work = lp_malloc(nb * sizeof(float));
    int rc = q && a2 && work ? 0 : lp_seterr("out of memory");
    if (!rc) {
        w->offset = nn_dq_offset(am, nb);
        nn_dq_quantize(q, a2, work, am, nb, w->offset, fm->map8);
        fm->be->to_device((uint8_t *)w->qabsmax, q, nb);
        fm->be->to_device((float *)w->absmax2, a2, nb2 * sizeof(float));
    }
    lp_free(q);
    lp_free(a2);
    lp_free(work);
    return rc;
}

/* Scales b0 .. b0+k-1 of a weight on the host (dequantized with double quantization). */
static int get_scales(const fw_model *fm, const fw_weight *w, size_t b0, size_t k, float *am) {
    if (!fm->dq) {
        fm->be->to_host(am, w->absmax + b0, k * sizeof(float));
        return 0;
    }
    size_t c0 = b0 / NN_DQ_BLOCK, c1 = (b0 + k - 1) / NN_DQ_BLOCK + 1;
    uint8_t *q = lp_malloc(k);
    float *a2 = lp_malloc((c1 - c0) * sizeof(float));
    const float *map = fm->map8;
    int rc = q && a2 ? 0 : lp_seterr("out of memory");
    if (!rc) {
        fm->be->to_host(q, w->qabsmax + b0, k);
        fm->be->to_host(a2, w->absmax2 + c0, (c1 - c0) * sizeof(float));
        for (size_t i = 0; i < k; i++) {   /* nn_dq_dequant's two roundings */
            float v = map[q[i]] * a2[(b0 + i) / NN_DQ_BLOCK - c0];
            am[i] = v + w->offset;
        }
    }
    lp_free(q);
    lp_free(a2);
    return rc;
}

/* A weight's f32 scales on the device: its absmax, or dequantized into fm->deq's tail. */
static const float *dev_scales(fw_model *fm, const fw_weight *w) {
    if (!fm->dq) return w->absmax;
    float *am = fm->deq + fm->deq_am;
    fm->be->dq_dequant(am, w->qabsmax, w->absmax2, fm->code8, w->offset, nblk(fm, w, w->numel));
    return am;
}

/* A Conv1D weight: read whole, transposed to [out, in], quantized. */
static int upload_transposed(fw_model *fm, const mdl_tensor *t, fw_weight *w) {
    size_t n = w->numel, nb = nblk(fm, w, n), in = (size_t)w->in, out = (size_t)w->out;
    float *x = lp_malloc(n * sizeof(float)), *xt = lp_malloc(n * sizeof(float));
    float *am = lp_malloc(nb * sizeof(float));
    uint8_t *codes = lp_malloc(qbytes(fm, n));
    int rc = x && xt && am && codes ? 0 : lp_seterr("out of memory");
    if (!rc && in * out != n) rc = lp_seterr("%s: %zu values, not %zu × %zu", w->name, n, in, out);
    if (!rc) rc = mdl_tensor_to_f32(t, 0, n, x) < 0 ? -1 : 0;
    if (!rc) {
        for (size_t i = 0; i < in; i++)
            for (size_t o = 0; o < out; o++) xt[o * in + i] = x[i * out + o];
        nn_q4_quantize(codes, am, xt, n, (int)blen(fm, w), fm->q4);
        fm->be->to_device(w->data, codes, qbytes(fm, n));
        rc = put_scales(fm, w, am, nb);
    }
    lp_free(x);
    lp_free(xt);
    lp_free(am);
    lp_free(codes);
    return rc;
}

/* A pre-quantized weight (mdl_bnb.c): its bytes as they are, and the checkpoint's map (4-bit). */
static int upload_stored(fw_model *fm, const mdl_tensor *t, fw_weight *w) {
    const mdl_q4 *q = t->q4;
    size_t n = w->numel, nb = nblk(fm, w, n);
    if (is_q8(fm)) {   /* int8 codes [out, in] and SCB, as loupe stores them */
        fm->be->to_device(w->data, q->codes, n);
        fm->be->to_device((float *)w->absmax, q->absmax, nb * sizeof(float));
        return 0;
    }
    if (memcmp(q->code, nn_q4_code(fm->q4), sizeof q->code))
        return lp_seterr("%s: its quant_map is not bitsandbytes' %s codes", t->name,
                         fm->q4 == NN_Q4_FP4 ? "fp4" : "nf4");
    fm->be->to_device(w->data, q->codes, (n + 1) / 2);
    if (!fm->dq) {
        fm->be->to_device((float *)w->absmax, q->absmax, nb * sizeof(float));
        return 0;
    }
    fm->be->to_device((uint8_t *)w->qabsmax, q->qabsmax, nb);
    fm->be->to_device((float *)w->absmax2, q->absmax2, blocks2(nb) * sizeof(float));
    memcpy(fm->map8, q->code8, sizeof fm->map8);   /* one map for the model (mdl_bnb.c) */
    fm->be->to_device(fm->code8, fm->map8, sizeof fm->map8);
    w->offset = q->offset;
    return 0;
}

int fw_q4_upload(fw_model *fm, const mdl_tensor *t, fw_weight *w, float *stage, size_t chunk) {
    if (t->q4) return upload_stored(fm, t, w);
    if (transposed(w)) return upload_transposed(fm, t, w);
    /* chunk is a multiple of the block (and even), for 8-bit of the row: blocks and byte
       pairs never straddle two */
    size_t nb = nblk(fm, w, w->numel), b = blen(fm, w);
    if (is_q8(fm)) chunk -= chunk % b;
    if (!chunk) return lp_seterr("%s: rows of %zu values are too long for 8 bits", w->name, b);
    uint8_t *codes = lp_malloc(qbytes(fm, chunk));
    float *am = lp_malloc((fm->dq ? nb : nblk(fm, w, chunk)) * sizeof(float));
    int rc = codes && am ? 0 : lp_seterr("out of memory");
    for (uint64_t at = 0; !rc && at < t->st->nelem; at += chunk) {
        size_t k = t->st->nelem - at < chunk ? (size_t)(t->st->nelem - at) : chunk;
        if (mdl_tensor_to_f32(t, at, k, stage) < 0) {
            rc = -1;
            break;
        }
        float *a = fm->dq ? am + at / b : am;   /* every scale kept for the mean */
        nn_q4_quantize(codes, a, stage, k, (int)b, fm->q4);
        fm->be->to_device((uint8_t *)w->data + qbytes(fm, at), codes, qbytes(fm, k));
        if (!fm->dq)
            fm->be->to_device((float *)w->absmax + at / b, a, nblk(fm, w, k) * sizeof(float));
    }
    if (!rc && fm->dq) rc = put_scales(fm, w, am, nb);
    lp_free(codes);
    lp_free(am);
    return rc;
}

void fw_q4_free(fw_model *fm) {
    fm->be->free(fm->wbuf4);
    fm->be->free(fm->deq);
    fm->wbuf4 = NULL;
    fm->deq = NULL;
    fm->code8 = NULL;
    fm->n4 = fm->b4 = fm->deq_cap = fm->deq_am = fm->deq16 = 0;
}

/* Values at..at+n of a transposed weight in the checkpoint's [in, out] order: the whole
 * weight dequantized on the host, then gathered. */
static int read_transposed(const fw_model *fm, const fw_weight *w, size_t at, size_t n,
                           float *host) {
    size_t len = w->numel, in = (size_t)w->in, out = (size_t)w->out;
    uint8_t *c = lp_malloc(qbytes(fm, len));
    float *am = lp_malloc(nblk(fm, w, len) * sizeof(float)), *v = lp_malloc(len * sizeof(float));
    int rc = c && am && v ? 0 : lp_seterr("out of memory");
    if (!rc) rc = get_scales(fm, w, 0, nblk(fm, w, len), am);
    if (!rc) {
        fm->be->to_host(c, (const uint8_t *)w->data, qbytes(fm, len));
        nn_q4_dequant(v, c, am, len, (int)blen(fm, w), fm->q4);
        for (size_t k = 0; k < n; k++) {
            size_t e = at + k, i = e / out, o = e % out;
            host[k] = v[o * in + i];
        }
    }
    lp_free(c);
    lp_free(am);
    lp_free(v);
    return rc;
}

int fw_q4_read(const fw_model *fm, const fw_weight *w, size_t at, size_t n, float *host) {
    if (transposed(w)) return read_transposed(fm, w, at, n, host);
    size_t b = blen(fm, w), a0 = at - at % b, len = at + n - a0;   /* whole blocks from a0:
                                                                      the codes start on a byte */
    uint8_t *c = lp_malloc(qbytes(fm, len));
    float *am = lp_malloc(nblk(fm, w, len) * sizeof(float)), *v = lp_malloc(len * sizeof(float));
    int rc = c && am && v ? 0 : lp_seterr("out of memory");
    if (!rc) rc = get_scales(fm, w, a0 / b, nblk(fm, w, len), am);
    if (!rc) {
        fm->be->to_host(c, (const uint8_t *)w->data + qbytes(fm, a0), qbytes(fm, len));
        nn_q4_dequant(v, c, am, len, (int)b, fm->q4);
        memcpy(host, v + (at - a0), n * sizeof(float));
    }
    lp_free(c);
    lp_free(am);
    lp_free(v);
    return rc;
}

int fw_q4_addmm(fw_model *fm, fw_weight *w, const float *a, const float *b, int M, int N,
                int K, int trans_a, int trans_b, float alpha) {
    const be_backend *be = fm->be;
    size_t n = w->numel, nb = nblk(fm, w, n);
    float *f = be->alloc(n * sizeof(float)), *h = lp_malloc(n * sizeof(float));
    float *am = lp_malloc(nb * sizeof(float));
    uint8_t *codes = lp_malloc(qbytes(fm, n));
    int rc = f && h && am && codes ? 0 : lp_preferr("scratch for %s (%s)", w->name,
                                                    is_q8(fm) ? "8-bit" : "4-bit");
    if (!rc) {
        be->q4_dequant(f, (const uint8_t *)w->data, dev_scales(fm, w), n, (int)blen(fm, w), fm->q4);
        if (transposed(w))   /* stored [out, in]: the update's transpose, (a·b)ᵀ = bᵀ·aᵀ */
            be->matmul(f, b, a, N, M, K, !trans_b, !trans_a, alpha, 1.0f);
        else
            be->matmul(f, a, b, M, N, K, trans_a, trans_b, alpha, 1.0f);
        be->to_host(h, f, n * sizeof(float));
        nn_q4_quantize(codes, am, h, n, (int)blen(fm, w), fm->q4);
        be->to_device(w->data, codes, qbytes(fm, n));
        rc = put_scales(fm, w, am, nb);
    }
    be->free(f);
    lp_free(h);
    lp_free(am);
    lp_free(codes);
    return rc;
}

const fw_weight *fw_q4_weight(const fw_model *fm, const float *w) {
    if (!fw_is_q4(fm, w)) return NULL;
    for (size_t i = 0; i < fm->nweights; i++)
        if (fm->weights[i].data == w) return &fm->weights[i];
    return NULL;
}

static void dequant(fw_model *fm, const fw_weight *x) {
    fm->be->q4_dequant(fm->deq, (const uint8_t *)x->data, dev_scales(fm, x), x->numel,
                       (int)blen(fm, x), fm->q4);
}

const float *fw_product_weight(fw_model *fm, const float *w) {
    const fw_weight *x = fw_q4_weight(fm, w);
    if (!x) return w;
    dequant(fm, x);
    return fm->deq;
}

const be_bf16 *fw_product_weight16(fw_model *fm, const float *w) {
    const fw_weight *x = fw_q4_weight(fm, w);
    if (!x) return NULL;
    be_bf16 *h = (be_bf16 *)(fm->deq + fm->deq16);
    dequant(fm, x);
    fm->be->bf16->round(h, fm->deq, x->numel);
    return h;
}
