/* nf4_weights.c — QLoRA's 4-bit weights (forward.h, fw_set_nf4): which weights, their one
 * device allocation (every weight's packed codes, 16-byte aligned, then every absmax), the
 * quantization at load (nn_nf4_quantize on the host, a chunk at a time) and the dequantized
 * copy a product reads (be->nf4_dequant into fm->deq). */
#include <string.h>

#include "nn/forward_int.h"
#include "util/err.h"
#include "util/mem.h"

static size_t code_bytes(size_t n) { return ((n + 1) / 2 + 15) & ~(size_t)15; }
static size_t blocks(size_t n) { return (n + FW_NF4_BLOCK - 1) / FW_NF4_BLOCK; }

int fw_set_nf4(fw_model *fm, int on) {
    if (fm->loaded && (fm->nf4 != 0) != (on != 0))
        return lp_seterr("the weights are loaded already: quantize when loading "
                         "(load PATH quantize=\"nf4\")");
    if (on && (fm->a->flags & AF_CONV1D))
        return lp_seterr("%s: loupe quantizes Linear layers; this model's are Conv1D (GPT-2), "
                         "which it does not quantize yet", fm->m->path);
    fm->nf4 = on != 0;
    return 0;
}

int fw_is_nf4_model(const fw_model *fm) { return fm->nf4; }

/* Every Linear weight but the output layer's (transformers keeps lm_head in full precision;
 * loupe keeps every output layer: the LM head, the classifier, BERT's MLM decoder). */
int fw_nf4_eligible(const fw_model *fm, const fw_weight *w) {
    return fm->nf4 && w->kind == FW_W_LINEAR && !w->is_head;
}

int fw_nf4_alloc(fw_model *fm) {
    size_t codes = 0, scales = 0, most = 0;
    for (size_t i = 0; i < fm->nweights; i++) {
        const fw_weight *w = &fm->weights[i];
        if (!w->nf4) continue;
        codes += code_bytes(w->numel);
        scales += blocks(w->numel);
        if (w->numel > most) most = w->numel;
    }
    if (!codes) return 0;
    fm->n4 = codes;
    fm->b4 = codes + scales * sizeof(float);
    fm->wbuf4 = fm->be->alloc(fm->b4);
    fm->deq = fm->be->alloc(most * sizeof(float));
    fm->deq_cap = most;
    if (!fm->wbuf4 || !fm->deq)
        return lp_preferr("%s: the 4-bit weights (%.1f MB) and a dequantized one (%.1f MB)",
                          fm->m->path, (codes + scales * 4.0) / 1e6, most * 4.0 / 1e6);
    size_t oc = 0, os = 0;
    float *scale = (float *)(fm->wbuf4 + codes);
    for (size_t i = 0; i < fm->nweights; i++) {
        fw_weight *w = &fm->weights[i];
        if (!w->nf4) continue;
        w->data = (float *)(fm->wbuf4 + oc);
        w->absmax = scale + os;
        oc += code_bytes(w->numel);
        os += blocks(w->numel);
    }
    return 0;
}

int fw_nf4_upload(fw_model *fm, const mdl_tensor *t, fw_weight *w, float *stage, size_t chunk) {
    /* chunk is a multiple of the block (and even): blocks and byte pairs never straddle two */
    uint8_t *codes = lp_malloc(chunk / 2);
    float *am = lp_malloc(blocks(chunk) * sizeof(float));
    int rc = codes && am ? 0 : lp_seterr("out of memory");
    for (uint64_t at = 0; !rc && at < t->st->nelem; at += chunk) {
        size_t k = t->st->nelem - at < chunk ? (size_t)(t->st->nelem - at) : chunk;
        if (mdl_tensor_to_f32(t, at, k, stage) < 0) {
            rc = -1;
            break;
        }
        nn_nf4_quantize(codes, am, stage, k, FW_NF4_BLOCK);
        fm->be->to_device((uint8_t *)w->data + at / 2, codes, (k + 1) / 2);
        fm->be->to_device((float *)w->absmax + at / FW_NF4_BLOCK, am, blocks(k) * sizeof(float));
    }
    lp_free(codes);
    lp_free(am);
    return rc;
}

void fw_nf4_free(fw_model *fm) {
    fm->be->free(fm->wbuf4);
    fm->be->free(fm->deq);
    fm->wbuf4 = NULL;
    fm->deq = NULL;
    fm->n4 = fm->b4 = fm->deq_cap = 0;
}

int fw_nf4_read(const fw_model *fm, const fw_weight *w, size_t at, size_t n, float *host) {
    size_t a0 = at - at % FW_NF4_BLOCK, len = at + n - a0;   /* whole blocks from a0: the
                                                               codes start on a byte */
    uint8_t *c = lp_malloc((len + 1) / 2);
    float *am = lp_malloc(blocks(len) * sizeof(float)), *v = lp_malloc(len * sizeof(float));
    int rc = c && am && v ? 0 : lp_seterr("out of memory");
    if (!rc) {
        fm->be->to_host(c, (const uint8_t *)w->data + a0 / 2, (len + 1) / 2);
        fm->be->to_host(am, w->absmax + a0 / FW_NF4_BLOCK, blocks(len) * sizeof(float));
        nn_nf4_dequant(v, c, am, len, FW_NF4_BLOCK);
        memcpy(host, v + (at - a0), n * sizeof(float));
    }
    lp_free(c);
    lp_free(am);
    lp_free(v);
    return rc;
}

int fw_nf4_addmm(fw_model *fm, fw_weight *w, const float *a, const float *b, int M, int N,
                 int K, int trans_a, int trans_b, float alpha) {
    const be_backend *be = fm->be;
    size_t n = w->numel, nb = blocks(n);
    float *f = be->alloc(n * sizeof(float)), *h = lp_malloc(n * sizeof(float));
    float *am = lp_malloc(nb * sizeof(float));
    uint8_t *codes = lp_malloc((n + 1) / 2);
    int rc = f && h && am && codes ? 0 : lp_preferr("scratch for %s (4-bit)", w->name);
    if (!rc) {
        be->nf4_dequant(f, (const uint8_t *)w->data, w->absmax, n, FW_NF4_BLOCK);
        be->matmul(f, a, b, M, N, K, trans_a, trans_b, alpha, 1.0f);
        be->to_host(h, f, n * sizeof(float));
        nn_nf4_quantize(codes, am, h, n, FW_NF4_BLOCK);
        be->to_device(w->data, codes, (n + 1) / 2);
        be->to_device((float *)w->absmax, am, nb * sizeof(float));
    }
    be->free(f);
    lp_free(h);
    lp_free(am);
    lp_free(codes);
    return rc;
}

const float *fw_product_weight(fw_model *fm, const float *w) {
    if (!fw_is_nf4(fm, w)) return w;
    for (size_t i = 0; i < fm->nweights; i++) {
        const fw_weight *x = &fm->weights[i];
        if (x->data != w) continue;
        fm->be->nf4_dequant(fm->deq, (const uint8_t *)x->data, x->absmax, x->numel,
                            FW_NF4_BLOCK);
        return fm->deq;
    }
    return w;
}
