/* adalora_alloc.c — making an AdaLoRA adapter (tr_adalora_add) and its rank allocator, PEFT's
 * RankAllocator (peft 0.21, tuners/adalora/layer.py) and AdaLoraModel.update_and_allocate,
 * which loupe runs after every optimizer step (optim.c). Values are float as torch's; the
 * per-row and per-column means of the scores are summed in double. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "train/lora.h"
#include "train/train_int.h"
#include "util/err.h"
#include "util/mem.h"

int tr_adalora_add(fw_model *fm, const tr_adalora_config *c) {
    if (c->init_r <= 0) return lp_seterr("init_r must be a positive integer, got %d", c->init_r);
    if (c->target_r < 0 || c->target_r >= c->init_r)
        return lp_seterr("target_r must be from 0 to init_r - 1 (%d), got %d: the allocator "
                         "removes init_r - target_r ranks per module", c->init_r - 1, c->target_r);
    if (c->total_step <= 0)
        return lp_seterr("AdaLoRA needs total_step=, the number of optimizer steps the run will "
                         "take (PEFT's AdaLoraConfig requires it too)");
    if (c->tinit < 0 || c->tfinal < 0)
        return lp_seterr("tinit and tfinal count steps: they cannot be negative");
    if (c->tinit >= c->total_step - c->tfinal)
        return lp_seterr("tinit=%d and tfinal=%d leave no steps to reduce the ranks in a run of "
                         "total_step=%d: lower tinit / tfinal or raise total_step", c->tinit,
                         c->tfinal, c->total_step);
    if (c->delta_t <= 0) return lp_seterr("deltaT must be at least 1, got %d", c->delta_t);
    if (!(c->beta1 > 0 && c->beta1 < 1) || !(c->beta2 > 0 && c->beta2 < 1))
        return lp_seterr("beta1 and beta2 must be between 0 and 1 (exclusive)");
    if (!(c->orth >= 0)) return lp_seterr("orth_reg_weight must be 0 or more, got %g", c->orth);
    if (!(c->dropout >= 0 && c->dropout < 1))
        return lp_seterr("dropout must be in [0, 1), got %g", c->dropout);
    if (tr_same_type(fm, TR_ADALORA) < 0) return -1;
    tr_state *s = tr_state_of(fm);
    if (s->nad)   /* AdaLoraModel "supports only 1 trainable adapter" */
        return lp_seterr("this model has AdaLoRA adapter `%s` already; PEFT trains one AdaLoRA "
                         "adapter per model: delete it first", s->ad[0]->name);
    const char *init = c->random_init ? "false" : "true";
    tr_adapter *a = tr_adapter_new(fm, c->name ? c->name : "default", init, c->targets,
                                   c->ntargets, c->target_regex, c->all_linear);
    if (!a) return -1;
    if (tr_set_filter(a, &c->filter) < 0) {
        tr_adapter_free(fm, a);
        return -1;
    }
    a->r = c->init_r;
    a->alpha = c->alpha;
    a->dropout = c->dropout;
    a->ada = lp_calloc(1, sizeof *a->ada);
    if (!a->ada) {
        tr_adapter_free(fm, a);
        return lp_seterr("out of memory");
    }
    tr_ada *d = a->ada;
    d->init_r = c->init_r, d->target_r = c->target_r;
    d->tinit = c->tinit, d->tfinal = c->tfinal, d->delta_t = c->delta_t;
    d->total_step = c->total_step;
    d->beta1 = c->beta1, d->beta2 = c->beta2, d->orth = c->orth;
    d->allocate = 1;
    d->budget = -1;
    return tr_adapter_finish(fm, a, init, c->seed, c->modules_to_save, c->nmts);
}

/* ---- the allocator ---------------------------------------------------------------------- */

static int init_budget(const tr_adapter *a) {
    int n = 0;
    for (size_t k = 0; k < a->nsites; k++) n += a->sites[k].lo.r;
    return n;
}

/* RankAllocator.budget_schedule: the budget at `step` and whether to mask then. */
static int budget_at(const tr_adapter *a, long step, int *mask) {
    const tr_ada *d = a->ada;
    int init = init_budget(a), target = d->target_r * (int)a->nsites;
    if (step <= d->tinit) return *mask = 0, init;
    if (step > d->total_step - d->tfinal) return *mask = 1, target;
    double mul = 1.0 - (double)(step - d->tinit) / (double)(d->total_step - d->tfinal - d->tinit);
    *mask = step % d->delta_t == 0;
    return (int)((double)(init - target) * (mul * mul * mul) + (double)target);
}

/* One device tensor of n floats to the host (into buf). */
static void fetch(const be_backend *be, float *buf, const float *dev, size_t n) {
    be->to_host(buf, dev, n * sizeof(float));
}

/* update_ipt: ipt = |p·grad|, exp_avg_ipt = β1·avg + (1 − β1)·ipt, exp_avg_unc = β2·unc +
 * (1 − β2)·|ipt − exp_avg_ipt|, over A, B, E of every site in that order. */
static int update_ipt(fw_model *fm, tr_adapter *a, float *p, float *g) {
    const be_backend *be = fw_backend(fm);
    tr_ada *d = a->ada;
    if (!d->ipt) {
        d->nval = 0;
        for (size_t k = 0; k < a->nsites; k++) {
            const fw_lora *lo = &a->sites[k].lo;
            d->nval += (size_t)lo->r * lo->in + (size_t)lo->out * lo->r + lo->r;
        }
        d->ipt = lp_calloc(d->nval ? d->nval : 1, sizeof(float));
        d->unc = lp_calloc(d->nval ? d->nval : 1, sizeof(float));
        if (!d->ipt || !d->unc) return lp_seterr("out of memory for AdaLoRA's importance scores");
    }
    const float b1 = (float)d->beta1, c1 = (float)(1.0 - d->beta1);
    const float b2 = (float)d->beta2, c2 = (float)(1.0 - d->beta2);
    size_t at = 0;
    for (size_t k = 0; k < a->nsites; k++) {
        const fw_lora *lo = &a->sites[k].lo;
        const tr_ada_site *s = &d->s[k];
        const float *pv[3] = {s->A, lo->B, s->E}, *gv[3] = {s->dA, lo->dB, s->dE};
        size_t nv[3] = {(size_t)lo->r * lo->in, (size_t)lo->out * lo->r, (size_t)lo->r};
        for (int t = 0; t < 3; t++) {
            fetch(be, p, pv[t], nv[t]);
            fetch(be, g, gv[t], nv[t]);
            float *e = d->ipt + at, *u = d->unc + at;
            for (size_t i = 0; i < nv[t]; i++) {
                float ipt = fabsf(p[i] * g[i]);
                e[i] = b1 * e[i] + c1 * ipt;
                u[i] = b2 * u[i] + c2 * fabsf(ipt - e[i]);
            }
            at += nv[t];
        }
    }
    return 0;
}

static int cmp_float(const void *x, const void *y) {
    float a = *(const float *)x, b = *(const float *)y;
    return (a > b) - (a < b);
}

/* Write keep into each site's E (zeros where a triplet is dropped). */
static void apply_keep(fw_model *fm, tr_adapter *a, float *buf) {
    const be_backend *be = fw_backend(fm);
    for (size_t k = 0; k < a->nsites; k++) {
        const fw_lora *lo = &a->sites[k].lo;
        fetch(be, buf, a->ada->s[k].E, (size_t)lo->r);
        for (int j = 0; j < lo->r; j++)
            if (!a->ada->s[k].keep[j]) buf[j] = 0.0f;
        be->to_device(a->ada->s[k].E, buf, (size_t)lo->r * sizeof(float));
    }
}

/* mask_to_budget: each triplet's score is E's (exp_avg_ipt · exp_avg_unc) plus the mean
 * score of its A row and of its B column; all at or below the (init − budget)-th smallest
 * are dropped. */
static int mask_to_budget(fw_model *fm, tr_adapter *a, int budget, float *buf) {
    tr_ada *d = a->ada;
    int n = init_budget(a), kth = n - budget;
    if (kth <= 0) return 0;
    float *score = lp_malloc(2 * (size_t)n * sizeof(float));
    if (!score) return lp_seterr("out of memory");
    float *sorted = score + n;
    size_t at = 0;
    int t = 0;
    for (size_t k = 0; k < a->nsites; k++) {
        const fw_lora *lo = &a->sites[k].lo;
        const float *e = d->ipt + at, *u = d->unc + at;
        size_t na = (size_t)lo->r * lo->in, nb = (size_t)lo->out * lo->r;
        for (int j = 0; j < lo->r; j++) {
            double sa = 0, sb = 0;
            for (int i = 0; i < lo->in; i++) {
                size_t x = (size_t)j * lo->in + i;
                sa += (double)(e[x] * u[x]);
            }
            for (int o = 0; o < lo->out; o++) {
                size_t x = na + (size_t)o * lo->r + j;
                sb += (double)(e[x] * u[x]);
            }
            size_t x = na + nb + j;
            float ab = (float)(sa / lo->in) + (float)(sb / lo->out);
            score[t++] = e[x] * u[x] + ab;
        }
        at += na + nb + lo->r;
    }
    memcpy(sorted, score, (size_t)n * sizeof(float));
    qsort(sorted, (size_t)n, sizeof(float), cmp_float);
    float thr = sorted[kth - 1];
    t = 0;
    for (size_t k = 0; k < a->nsites; k++)
        for (int j = 0; j < a->sites[k].lo.r; j++, t++) d->s[k].keep[j] = !(score[t] <= thr);
    lp_free(score);
    apply_keep(fm, a, buf);
    d->budget = budget;
    d->have_pattern = 1;
    return 0;
}

/* AdaLoraModel.update_and_allocate(step) for the step just taken, then A' = A ⊙ E again. */
int tr_ada_after_step(fw_model *fm) {
    tr_state *st = tr_state_of(fm);
    if (!st || st->active < 0 || !st->ad[st->active]->ada) return 0;
    tr_adapter *a = st->ad[st->active];
    tr_ada *d = a->ada;
    int rc = 0;
    if (d->allocate) {
        size_t big = 1;
        for (size_t k = 0; k < a->nsites; k++) {
            const fw_lora *lo = &a->sites[k].lo;
            size_t m = (size_t)lo->r * (lo->in > lo->out ? lo->in : lo->out);
            if (m > big) big = m;
        }
        float *p = lp_malloc(2 * big * sizeof(float));
        if (!p) return lp_seterr("out of memory");
        long t = d->t, last = d->total_step - d->tfinal;
        int mask;
        if (t < last) {
            rc = update_ipt(fm, a, p, p + big);
            int budget = budget_at(a, t, &mask);
            if (!rc && mask) rc = mask_to_budget(fm, a, budget, p);
        } else if (t == last) {   /* the final allocation, on the scores so far; then reset */
            if (!d->ipt) rc = update_ipt(fm, a, p, p + big);   /* (never without one) */
            if (!rc) rc = mask_to_budget(fm, a, budget_at(a, t, &mask), p);
            lp_free(d->ipt), lp_free(d->unc);
            d->ipt = d->unc = NULL;
        } else if (d->have_pattern) {
            apply_keep(fm, a, p);
        }
        lp_free(p);
        d->t++;
    }
    if (tr_ada_sync(fm, a) < 0 && !rc) rc = -1;
    return rc;
}

/* The ranks site k keeps now (its E values the allocator has not dropped). */
static int site_kept(const tr_adapter *a, size_t k) {
    int n = 0;
    for (int j = 0; j < a->sites[k].lo.r; j++) n += a->ada->s[k].keep[j] != 0;
    return n;
}

size_t tr_adalora_status(fw_model *fm, long *step, int *budget, int *ranks,
                         const char **modules, size_t cap) {
    tr_state *st = tr_state_of(fm);
    if (!st || st->active < 0 || !st->ad[st->active]->ada) return 0;
    tr_adapter *a = st->ad[st->active];
    if (step) *step = a->ada->t;
    if (budget) *budget = a->ada->budget;
    for (size_t k = 0; k < a->nsites && k < cap; k++) {
        ranks[k] = site_kept(a, k);
        if (modules) modules[k] = a->sites[k].module;
    }
    return a->nsites;
}

int tr_adalora_summary(fw_model *fm, char *buf, size_t len) {
    tr_state *st = tr_state_of(fm);
    if (!st || st->active < 0 || !st->ad[st->active]->ada || !len) return 0;
    tr_adapter *a = st->ad[st->active];
    const tr_ada *d = a->ada;
    int kept = 0;
    for (size_t k = 0; k < a->nsites; k++) kept += site_kept(a, k);
    long end = d->total_step - d->tfinal;
    if (!d->allocate) return snprintf(buf, len, "AdaLoRA ranks %d (as loaded)", kept);
    if (d->t <= end)
        return snprintf(buf, len, "AdaLoRA ranks %d of %d, still being cut (step %ld of "
                        "total_step %d)", kept, init_budget(a), d->t, d->total_step);
    return snprintf(buf, len, "AdaLoRA ranks %d of %d", kept, init_budget(a));
}
