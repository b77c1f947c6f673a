/* adalora.c — AdaLoRA as PEFT's (peft 0.21, tuners/adalora; lora.h: tr_adalora_add): the SVD
 * form on LoRA's forward (train_int.h, tr_ada), the orthogonal regulariser, and the rank
 * allocator that runs after every optimizer step (RankAllocator.update_and_allocate).
 *
 * The regulariser and the A' ↔ (A, E) bookkeeping run on the device with the backend's ops;
 * the allocator reads every A, B, E value and gradient to the host once a step and keeps its
 * two moving averages there (PEFT's exp_avg_ipt / exp_avg_unc), in float as torch does. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "nn/ops.h"
#include "train/lora.h"
#include "train/train_int.h"
#include "util/err.h"
#include "util/mem.h"

/* The active adapter when it is AdaLoRA (trainable when its sites have dA'), else NULL. */
static tr_adapter *active_ada(fw_model *fm) {
    tr_state *s = tr_state_of(fm);
    if (!s || s->active < 0 || !s->ad[s->active]->ada) return NULL;
    return s->ad[s->active];
}

float tr_ada_scale(const tr_adapter *a) {
    double alpha = a->alpha > 0 ? a->alpha : (double)a->ada->init_r;
    return (float)alpha / ((float)a->ada->init_r + 1e-5f);
}

/* ---- buffers ---------------------------------------------------------------------------- */

void tr_ada_free(fw_model *fm, tr_adapter *a) {
    tr_ada *d = a->ada;
    if (!d) return;
    const be_backend *be = fw_backend(fm);
    if (d->buf) be->free(d->buf);
    if (d->scratch) be->free(d->scratch);
    for (size_t k = 0; d->s && k < a->nsites; k++) lp_free(d->s[k].keep);
    lp_free(d->s);
    lp_free(d->ipt);
    lp_free(d->unc);
    free(d->pattern);   /* json_dumps' */
    for (size_t k = 0; k < d->nempty; k++) lp_free(d->empty[k]);
    lp_free(d->empty);
    lp_free(d->empty_in);
    lp_free(d->empty_out);
    lp_free(d);
    a->ada = NULL;
}

static size_t site_floats(const fw_lora *lo) { return 2 * ((size_t)lo->r * lo->in + lo->r); }

int tr_ada_alloc(fw_model *fm, tr_adapter *a, const char *init, uint64_t seed) {
    tr_ada *d = a->ada;
    const be_backend *be = fw_backend(fm);
    size_t total = 0, big = 1, ones = 1;
    d->s = lp_calloc(a->nsites ? a->nsites : 1, sizeof *d->s);
    if (!d->s) return lp_seterr("out of memory");
    for (size_t k = 0; k < a->nsites; k++) {
        const fw_lora *lo = &a->sites[k].lo;
        size_t wide = (size_t)(lo->in > lo->r ? lo->in : lo->r);
        total += site_floats(lo);
        if ((size_t)lo->r * wide > big) big = (size_t)lo->r * wide;
        if ((size_t)lo->in > ones) ones = (size_t)lo->in;
        d->s[k].keep = lp_malloc((size_t)d->init_r > (size_t)lo->r ? (size_t)d->init_r : (size_t)lo->r);
        if (!d->s[k].keep) return lp_seterr("out of memory");
        memset(d->s[k].keep, 1, (size_t)lo->r);
    }
    d->buf = be->alloc(total * sizeof(float));
    d->big = big;
    d->nones = ones;
    d->scratch = be->alloc((2 * big + ones) * sizeof(float));
    if (!d->buf || !d->scratch)
        return lp_preferr("AdaLoRA tensors (%.1f MB)", (total + 2 * big + ones) * 4.0 / 1e6);
    be->zero(d->buf, total * sizeof(float));
    size_t hostn = big > ones ? big : ones;
    for (size_t k = 0; k < a->nsites; k++) {
        const fw_lora *lo = &a->sites[k].lo;
        if ((size_t)lo->out * lo->r > hostn) hostn = (size_t)lo->out * lo->r;
    }
    float *host = lp_malloc(hostn * sizeof(float));
    if (!host) return lp_seterr("out of memory");
    for (size_t i = 0; i < ones; i++) host[i] = 1.0f;
    be->to_device(d->scratch + 2 * big, host, ones * sizeof(float));
    float *p = d->buf;
    uint64_t off = 0;
    for (size_t k = 0; k < a->nsites; k++) {
        const fw_lora *lo = &a->sites[k].lo;
        tr_ada_site *s = &d->s[k];
        size_t na = (size_t)lo->r * lo->in, nb = (size_t)lo->out * lo->r;
        s->A = p, p += na;
        s->dA = p, p += na;
        s->E = p, p += lo->r;
        s->dE = p, p += lo->r;
        if (!init) continue;
        /* PEFT's reset_lora_parameters: A, B ~ N(0, 0.02), E = 0; init_lora_weights=False
           keeps update_layer's torch.randn for all three */
        float sd = strcmp(init, "false") ? 0.02f : 1.0f;
        nn_rand_normal(host, seed, off, 0.0f, sd, na), off += na;
        be->to_device(s->A, host, na * sizeof(float));
        nn_rand_normal(host, seed, off, 0.0f, sd, nb), off += nb;
        be->to_device(lo->B, host, nb * sizeof(float));
        if (!strcmp(init, "false")) {
            nn_rand_normal(host, seed, off, 0.0f, 1.0f, (size_t)lo->r), off += (uint64_t)lo->r;
            be->to_device(s->E, host, (size_t)lo->r * sizeof(float));
        }
    }
    lp_free(host);
    return tr_ada_sync(fm, a);
}

int tr_ada_move(fw_move *mv, tr_adapter *a, int commit) {
    tr_ada *d = a->ada;
    if (!commit) {
        size_t total = 0;
        for (size_t k = 0; k < a->nsites; k++) total += site_floats(&a->sites[k].lo);
        if (fw_move_buf(mv, d->buf, total * sizeof(float)) < 0 ||
            fw_move_buf(mv, d->scratch, (2 * d->big + d->nones) * sizeof(float)) < 0)
            return -1;
        return 0;
    }
    for (size_t k = 0; k < a->nsites; k++) {
        tr_ada_site *s = &d->s[k];
        s->A = fw_move_at(mv, s->A);
        s->dA = fw_move_at(mv, s->dA);
        s->E = fw_move_at(mv, s->E);
        s->dE = fw_move_at(mv, s->dE);
    }
    d->buf = fw_move_at(mv, d->buf);
    d->scratch = fw_move_at(mv, d->scratch);
    return 0;
}

/* ---- A' = A ⊙ E and the gradients through it -------------------------------------------- */

/* Scratch: ebig (r, in) = E broadcast along rows, prod (r, in), ones (max in). */
static float *sc_ebig(const tr_ada *d) { return d->scratch; }
static float *sc_prod(const tr_ada *d) { return d->scratch + d->big; }
static float *sc_ones(const tr_ada *d) { return d->scratch + 2 * d->big; }

/* ebig = E·1ᵀ: each row j of an (r, in) matrix holds E[j] (exact: products with 1). */
static void broadcast_e(const be_backend *be, const tr_ada *d, const tr_adapter *a, size_t k) {
    const fw_lora *lo = &a->sites[k].lo;
    be->matmul(sc_ebig(d), d->s[k].E, sc_ones(d), lo->r, lo->in, 1, 0, 0, 1.0f, 0.0f);
}

int tr_ada_sync(fw_model *fm, tr_adapter *a) {
    const be_backend *be = fw_backend(fm);
    for (size_t k = 0; k < a->nsites; k++) {
        fw_lora *lo = &a->sites[k].lo;
        if (!lo->r) continue;
        broadcast_e(be, a->ada, a, k);
        be->mul_forward(lo->A, a->ada->s[k].A, sc_ebig(a->ada), (size_t)lo->r * lo->in);
    }
    return be->op_failed && be->op_failed() ? -1 : 0;
}

/* ---- the orthogonal regulariser --------------------------------------------------------- */

/* orth · mean over every A and B of ‖PPᵀ − I‖_F (A Aᵀ, Bᵀ B: r × r); with gscale ≠ 0 its
 * gradient times gscale is added to dA and dB (d‖X‖/dP = (X + Xᵀ)·P / ‖X‖ for A, P·(X + Xᵀ)
 * / ‖X‖ for B; 0 where ‖X‖ is 0, as torch). */
static double regulariser(fw_model *fm, tr_adapter *a, float gscale, int *err) {
    const be_backend *be = fw_backend(fm);
    tr_ada *d = a->ada;
    size_t np = 0, rmax = 1;
    for (size_t k = 0; k < a->nsites; k++) {
        np += a->sites[k].lo.r ? 2 : 0;
        if ((size_t)a->sites[k].lo.r > rmax) rmax = (size_t)a->sites[k].lo.r;
    }
    if (!np || d->orth == 0) return 0;
    float *M = lp_malloc(2 * rmax * rmax * sizeof(float));
    if (!M) return *err = lp_seterr("out of memory"), 0;
    float *H = M + rmax * rmax;
    double sum = 0;
    for (size_t k = 0; k < a->nsites; k++) {
        fw_lora *lo = &a->sites[k].lo;
        int r = lo->r;
        if (!r) continue;
        for (int which = 0; which < 2; which++) {   /* A, then B */
            if (which == 0)
                be->matmul(sc_prod(d), d->s[k].A, d->s[k].A, r, r, lo->in, 0, 1, 1.0f, 0.0f);
            else
                be->matmul(sc_prod(d), lo->B, lo->B, r, r, lo->out, 1, 0, 1.0f, 0.0f);
            be->to_host(M, sc_prod(d), (size_t)r * r * sizeof(float));
            double ss = 0;
            for (int i = 0; i < r; i++)
                for (int j = 0; j < r; j++) {
                    float x = M[i * r + j] - (i == j ? 1.0f : 0.0f);
                    M[i * r + j] = x;
                    ss += (double)x * x;
                }
            double n = sqrt(ss);
            sum += n;
            if (gscale == 0 || n == 0) continue;
            float c = (float)(gscale * d->orth / (double)np / n);
            for (int i = 0; i < r; i++)
                for (int j = 0; j < r; j++) H[i * r + j] = c * (M[i * r + j] + M[j * r + i]);
            be->to_device(sc_ebig(d), H, (size_t)r * r * sizeof(float));
            if (which == 0 && d->s[k].dA)
                be->matmul(d->s[k].dA, sc_ebig(d), d->s[k].A, r, lo->in, r, 0, 0, 1.0f, 1.0f);
            else if (which == 1 && lo->dB)
                be->matmul(lo->dB, lo->B, sc_ebig(d), lo->out, r, r, 0, 0, 1.0f, 1.0f);
        }
    }
    lp_free(M);
    return d->orth * sum / (double)np;
}

/* The loss term is the model's AdaLoRA adapter's whatever its state (active, disabled, merged),
 * as PEFT adds its trainable adapter's on every forward given labels; a model has at most one
 * (and no other type beside it), so it is the first. */
static double extra_loss(fw_model *fm) {
    tr_state *s = tr_state_of(fm);
    int err = 0;
    return s && s->nad && s->ad[0]->ada ? regulariser(fm, s->ad[0], 0.0f, &err) : 0;
}

/* After a backward: dA' (the LoRA term's gradient) becomes dA += dA' ⊙ E and dE += Σ_in
 * dA' ⊙ A, dA' is cleared; the regulariser's gradient (times the loss weight) is added. */
static int after_backward(fw_model *fm, float dloss) {
    tr_adapter *a = active_ada(fm);
    if (!a || !a->nsites || !a->sites[0].lo.dA) return 0;
    const be_backend *be = fw_backend(fm);
    tr_ada *d = a->ada;
    for (size_t k = 0; k < a->nsites; k++) {
        fw_lora *lo = &a->sites[k].lo;
        size_t na = (size_t)lo->r * lo->in;
        if (!na) continue;
        broadcast_e(be, d, a, k);
        be->mul_backward(d->s[k].dA, NULL, lo->dA, d->s[k].A, sc_ebig(d), na);
        be->mul_forward(sc_prod(d), lo->dA, d->s[k].A, na);
        be->matmul(d->s[k].dE, sc_prod(d), sc_ones(d), lo->r, 1, lo->in, 0, 0, 1.0f, 1.0f);
        be->zero(lo->dA, na * sizeof(float));
    }
    int err = 0;
    regulariser(fm, a, dloss, &err);
    if (err) return -1;
    return be->op_failed && be->op_failed() ? -1 : 0;
}

void tr_ada_hooks(fw_model *fm) { fw_set_train_hooks(fm, extra_loss, after_backward); }

void tr_ada_zero_grad(fw_model *fm) {
    tr_adapter *a = active_ada(fm);
    for (size_t k = 0; a && k < a->nsites; k++) {
        fw_lora *lo = &a->sites[k].lo;
        if (lo->dA) fw_backend(fm)->zero(lo->dA, (size_t)lo->r * lo->in * sizeof(float));
    }
}
