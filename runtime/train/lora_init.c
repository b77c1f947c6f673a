/* lora_init.c — PEFT's init_lora_weights="pissa" and "olora": the adapter made from the base
 * weight W [out, in] (GPT-2's Conv1D weight transposed first), and W replaced by the residual
 * W − scale·B·A, so the model computes as before (peft's LoraLayer.pissa_init, olora_init).
 *
 *  - PiSSA: W = V·S·Uᴴ (LAPACK sgesdd, as torch.linalg.svd on a CPU); S_r = S[:r] / scale;
 *    A = diag(√S_r)·Uᴴ[:r] [r, in], B = V[:, :r]·diag(√S_r) [out, r]. Each singular pair is
 *    defined up to a sign; B·A, the residual and the model are not.
 *  - OLoRA: W = Q·R (Householder: sgeqrf, sorgqr, as torch.linalg.qr); A = R[:r], B = Q[:, :r].
 *    A 4-bit or 8-bit W is read dequantized, and the residual quantized again (fw_weight_addmm,
 *    as a merge), as peft's olora_init does.
 *
 * With DoRA, each magnitude is then ‖W_res + scale·B·A‖, as peft's dora_init after them.
 *
 * Every A and B is made on the host first; only then are the weights changed (the product
 * through fw_weight_addmm, as a merge), so a refusal or a failed factorisation changes
 * nothing. */
#include <math.h>
#include <string.h>

#include "train/train_int.h"
#include "util/err.h"
#include "util/mem.h"

/* LAPACK (OpenBLAS and MKL carry it), Fortran calling convention, column-major. */
void sgesdd_(const char *jobz, const int *m, const int *n, float *a, const int *lda, float *s,
             float *u, const int *ldu, float *vt, const int *ldvt, float *work, const int *lwork,
             int *iwork, int *info);
void sgeqrf_(const int *m, const int *n, float *a, const int *lda, float *tau, float *work,
             const int *lwork, int *info);
void sorgqr_(const int *m, const int *n, const int *k, float *a, const int *lda,
             const float *tau, float *work, const int *lwork, int *info);

int tr_init_residual(const char *init) {
    return init && (!strcmp(init, "pissa") || !strcmp(init, "olora"));
}

/* W [out, in] (row-major) = V·S·Uᴴ: the row-major W is the column-major Wᵀ [in, out], whose
 * sgesdd gives U' = Uᴴ laid out row-major [k, in] and VT' = V row-major [out, k]. */
static int pissa(const float *W, int out, int in, int r, float scale, float *A, float *B) {
    int k = out < in ? out : in, info = 0, lwork = -1;
    float *a = lp_malloc((size_t)out * in * sizeof(float)), *s = lp_malloc((size_t)k * sizeof(float));
    float *u = lp_malloc((size_t)in * k * sizeof(float)), *vt = lp_malloc((size_t)k * out * sizeof(float));
    int *iwork = lp_malloc(8 * (size_t)k * sizeof(int));
    float q = 0, *work = NULL;
    int rc = a && s && u && vt && iwork ? 0 : lp_seterr("out of memory");
    if (!rc) {
        memcpy(a, W, (size_t)out * in * sizeof(float));
        sgesdd_("S", &in, &out, a, &in, s, u, &in, vt, &k, &q, &lwork, iwork, &info);
        lwork = info == 0 ? (int)q + 1 : 0;
        work = lwork ? lp_malloc((size_t)lwork * sizeof(float)) : NULL;
        if (!work) rc = lp_seterr(info ? "the SVD failed (LAPACK info %d)" : "out of memory", info);
    }
    if (!rc) {
        sgesdd_("S", &in, &out, a, &in, s, u, &in, vt, &k, work, &lwork, iwork, &info);
        if (info) rc = lp_seterr("the SVD did not converge (LAPACK info %d)", info);
    }
    for (int i = 0; !rc && i < r; i++) {
        float sq = sqrtf(s[i] / scale);
        for (int c = 0; c < in; c++) A[(size_t)i * in + c] = sq * u[(size_t)i * in + c];
        for (int o = 0; o < out; o++) B[(size_t)o * r + i] = vt[(size_t)o * k + i] * sq;
    }
    lp_free(a), lp_free(s), lp_free(u), lp_free(vt), lp_free(iwork), lp_free(work);
    return rc;
}

/* W [out, in] = Q·R, reduced (Q [out, k], R [k, in]); A = R[:r], B = Q[:, :r]. */
static int olora(const float *W, int out, int in, int r, float *A, float *B) {
    int k = out < in ? out : in, info = 0, lwork = -1;
    float *x = lp_malloc((size_t)out * in * sizeof(float)), *tau = lp_malloc((size_t)k * sizeof(float));
    float q = 0, q2 = 0, *work = NULL;
    int rc = x && tau ? 0 : lp_seterr("out of memory");
    if (!rc) {   /* column-major [out, in] */
        for (int o = 0; o < out; o++)
            for (int c = 0; c < in; c++) x[(size_t)c * out + o] = W[(size_t)o * in + c];
        sgeqrf_(&out, &in, x, &out, tau, &q, &lwork, &info);
        if (!info) sorgqr_(&out, &k, &k, x, &out, tau, &q2, &lwork, &info);
        lwork = info == 0 ? (int)(q > q2 ? q : q2) + 1 : 0;
        work = lwork ? lp_malloc((size_t)lwork * sizeof(float)) : NULL;
        if (!work) rc = lp_seterr(info ? "the QR failed (LAPACK info %d)" : "out of memory", info);
    }
    if (!rc) {
        sgeqrf_(&out, &in, x, &out, tau, work, &lwork, &info);
        if (info) rc = lp_seterr("the QR failed (LAPACK info %d)", info);
    }
    for (int i = 0; !rc && i < r; i++)   /* R's rows: the upper triangle */
        for (int c = 0; c < in; c++) A[(size_t)i * in + c] = c >= i ? x[(size_t)c * out + i] : 0.0f;
    if (!rc) {
        sorgqr_(&out, &k, &k, x, &out, tau, work, &lwork, &info);
        if (info) rc = lp_seterr("the QR failed (LAPACK info %d)", info);
    }
    for (int o = 0; !rc && o < out; o++)
        for (int j = 0; j < r; j++) B[(size_t)o * r + j] = x[(size_t)j * out + o];
    lp_free(x), lp_free(tau), lp_free(work);
    return rc;
}

static fw_weight *base_of(fw_weight *w, size_t nw, const fw_lora *lo) {
    for (size_t i = 0; i < nw; i++)
        if (w[i].data == lo->base) return &w[i];
    return NULL;
}

/* The site's A and B (host, r·in then out·r) from its base weight. */
static int site_init(fw_model *fm, const tr_adapter *a, const tr_site *st, const fw_weight *W,
                     float *ab) {
    const fw_lora *lo = &st->lo;
    int pis = !strcmp(a->init, "pissa"), conv = W->kind == FW_W_CONV1D;
    int k = lo->out < lo->in ? lo->out : lo->in;
    if (lo->r > k)
        return lp_seterr("%s: r=%d is more than the %d singular values of its [%d, %d] weight",
                         st->module, lo->r, k, lo->out, lo->in);
    if (pis && W->q4)
        return lp_seterr("%s: PiSSA starts from the full-precision weight (peft refuses a "
                         "quantized one); load the model without quantize=", st->module);
    if (!pis && conv)
        return lp_seterr("%s: OLoRA on GPT-2's Conv1D weights is not supported (peft's "
                         "olora_init does not transpose them); use init=\"pissa\"", st->module);
    size_t n = (size_t)lo->out * lo->in;
    float *w = lp_malloc(n * sizeof(float)), *t = conv ? lp_malloc(n * sizeof(float)) : NULL;
    int rc = w && (t || !conv) ? 0 : lp_seterr("out of memory");
    if (!rc) rc = fw_weight_read(fm, W, 0, n, conv ? t : w);
    if (!rc && conv)   /* [in, out] → [out, in] */
        for (int i = 0; i < lo->in; i++)
            for (int o = 0; o < lo->out; o++) w[(size_t)o * lo->in + i] = t[(size_t)i * lo->out + o];
    float *A = ab, *B = ab + (size_t)lo->r * lo->in;
    if (!rc && (pis ? pissa(w, lo->out, lo->in, lo->r, lo->scale, A, B)
                    : olora(w, lo->out, lo->in, lo->r, A, B)) < 0)
        rc = lp_preferr("%s", st->module);
    lp_free(w), lp_free(t);
    return rc;
}

int tr_lora_residual(fw_model *fm, tr_adapter *a) {
    if (!tr_init_residual(a->init)) return 0;
    fw_weight *w;
    size_t nw;
    if (fw_weights(fm, &w, &nw) < 0) return -1;
    float **ab = lp_calloc(a->nsites ? a->nsites : 1, sizeof *ab);
    int rc = ab ? 0 : lp_seterr("out of memory");
    for (size_t k = 0; !rc && k < a->nsites; k++) {
        const fw_lora *lo = &a->sites[k].lo;
        fw_weight *W = base_of(w, nw, lo);
        ab[k] = lp_malloc(((size_t)lo->r * lo->in + (size_t)lo->out * lo->r) * sizeof(float));
        if (!W) rc = lp_seterr("%s: its base weight is not found", a->sites[k].module);
        else if (!ab[k]) rc = lp_seterr("out of memory");
        else rc = site_init(fm, a, &a->sites[k], W, ab[k]);
    }
    const be_backend *be = fw_backend(fm);
    for (size_t k = 0; !rc && k < a->nsites; k++) {   /* now the weights change */
        fw_lora *lo = &a->sites[k].lo;
        fw_weight *W = base_of(w, nw, lo);
        be->to_device(lo->A, ab[k], (size_t)lo->r * lo->in * sizeof(float));
        be->to_device(lo->B, ab[k] + (size_t)lo->r * lo->in, (size_t)lo->out * lo->r * sizeof(float));
        rc = W->kind == FW_W_CONV1D   /* W [in, out] −= s · Aᵀ Bᵀ; else W [out, in] −= s · B A */
                 ? fw_weight_addmm(fm, W, lo->A, lo->B, lo->in, lo->out, lo->r, 1, 1, -lo->scale)
                 : fw_weight_addmm(fm, W, lo->B, lo->A, lo->out, lo->in, lo->r, 0, 0, -lo->scale);
        /* DoRA's magnitude: ‖W_res + scale·B·A‖ (= ‖W‖ up to rounding), as peft's dora_init
           after pissa_init / olora_init; a loaded adapter then reads its own */
        if (!rc && lo->dora && fw_dora_norm(fm, lo, lo->mag) < 0)
            rc = lp_preferr("DoRA weight norms of %s", a->sites[k].module);
        if (rc < 0 && k) lp_preferr("the residual weights are made for %zu of %zu modules only",
                                    k, a->nsites);
        if (!rc || k) fw_mark_weights_changed(fm);
    }
    for (size_t k = 0; ab && k < a->nsites; k++) lp_free(ab[k]);
    lp_free(ab);
    return rc;
}
