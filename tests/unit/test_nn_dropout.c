/* test_nn_dropout.c — GPT-2's and BERT's own dropout in training mode (FW_TRAIN).
 *
 * torch's random numbers cannot be reproduced, so this checks what can be: (a) without
 * FW_TRAIN, or with every probability 0, the forward is the eval forward the parity tests
 * compare with transformers; (b) the backward is the gradient of the forward under the same
 * masks: central finite differences of the loss, with the masks redrawn identically (the draw
 * counter reset), match the backward's gradients of unfrozen base weights; (c) each mask drops
 * about a fraction p of its elements and scales the rest by exactly 1/(1-p), and what the
 * layer adds to the residual stream is zero where its mask is. */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "backend/backend.h"
#include "model/model.h"
#include "nn/backward.h"
#include "nn/forward.h"
#include "t.h"
#include "train/lora.h"
#include "train/params.h"
#include "util/err.h"

enum { B = 2, T = 12 };

static void batch(int32_t *ids, int32_t *labels, int vocab) {
    for (int i = 0; i < B * T; i++) {
        ids[i] = (int32_t)((i * 37 + 11) % vocab);
        labels[i] = ids[i];
    }
}

/* Fraction of zeros of mask[n]; every other value must be exactly 1/(1-p). */
static double zero_fraction(const float *mask, size_t n, float p, const char *what) {
    float keep = 1.0f / (1.0f - p);
    size_t zeros = 0, bad = 0;
    for (size_t i = 0; i < n; i++) {
        if (mask[i] == 0.0f) zeros++;
        else if (mask[i] != keep) bad++;
    }
    T_CHECK(bad == 0, "%s: %zu values neither 0 nor 1/(1-p)", what, bad);
    return (double)zeros / (double)n;
}

/* (c): the masks of one training forward. */
static void check_masks(fw_model *fm, float p_resid, float p_attn, int classifier) {
    const fw_acts *A = fw_last_acts(fm);
    const fw_info *info = fw_model_info(fm);
    size_t NC = (size_t)A->N * info->hidden;
    size_t zeros = 0, total = 0;
    T_OK(A->emb_drop != NULL);
    if (A->emb_drop) {
        zeros += (size_t)(zero_fraction(A->emb_drop, NC, p_resid, "emb") * NC + 0.5);
        total += NC;
        for (size_t i = 0; i < NC; i++)
            if (A->emb_drop[i] == 0 && A->emb[i] != 0) { T_CHECK(0, "emb[%zu] kept where dropped", i); break; }
    }
    size_t attn_zeros = 0, attn_total = 0;
    for (int l = 0; l < info->layers; l++) {
        const fw_layer_acts *a = &A->layers[l];
        T_OK(a->o_drop && a->m_drop && a->attn_drop);
        if (!a->o_drop || !a->m_drop || !a->attn_drop) return;
        zeros += (size_t)(zero_fraction(a->o_drop, NC, p_resid, "o") * NC + 0.5);
        zeros += (size_t)(zero_fraction(a->m_drop, NC, p_resid, "m") * NC + 0.5);
        total += 2 * NC;
        for (size_t i = 0; i < NC; i++)
            if ((a->o_drop[i] == 0 && a->o[i] != 0) || (a->m_drop[i] == 0 && a->m[i] != 0)) {
                T_CHECK(0, "layer %d: a dropped element reaches the residual stream", l);
                break;
            }
        size_t na = (size_t)A->B * info->heads * A->T * A->T;
        attn_zeros += (size_t)(zero_fraction(a->attn_drop, na, p_attn, "attn") * na + 0.5);
        attn_total += na;
        /* the masks differ between layers and between kinds */
        T_OK(memcmp(a->o_drop, a->m_drop, NC * sizeof(float)) != 0);
    }
    double f = (double)zeros / total, fa = (double)attn_zeros / attn_total;
    double sd = sqrt(p_resid * (1 - p_resid) / total), sda = sqrt(p_attn * (1 - p_attn) / attn_total);
    T_CHECK(fabs(f - p_resid) < 5 * sd, "hidden dropout drops %.4f, p = %.2f (n %zu)", f, p_resid, total);
    T_CHECK(fabs(fa - p_attn) < 5 * sda, "attention dropout drops %.4f, p = %.2f (n %zu)", fa, p_attn,
            attn_total);
    if (classifier) {
        T_OK(A->pool_drop != NULL);
        if (A->pool_drop) zero_fraction(A->pool_drop, (size_t)A->B * info->hidden, p_resid, "pool");
    } else {
        T_OK(A->pool_drop == NULL);
    }
}

/* (b): gradients of a few entries of every kind of weight against central differences, the
 * masks redrawn the same way for each loss. */
static void check_grads(fw_model *fm, const fw_batch *in) {
    size_t n;
    T_CHECK(tr_freeze(fm, "*", 1, &n) == 0, "%s", lp_geterr());
    tr_params *P = tr_params_of(fm);
    const be_backend *be = fw_backend(fm);
    uint64_t draws = fw_train_draws(fm);
    fw_out out;
    T_OK(fw_forward(fm, in, &out) == 0);
    tr_params_zero_grad(P, be);
    T_CHECK(bw_backward(fm, 1.0f) == 0, "%s", lp_geterr());
    int checked = 0;
    for (size_t pi = 0; pi < P->n; pi++) {
        tr_param *p = &P->p[pi];
        float *g = malloc(p->numel * sizeof(float)), *w = malloc(p->numel * sizeof(float));
        be->to_host(g, p->grad, p->numel * sizeof(float));
        be->to_host(w, p->data, p->numel * sizeof(float));
        size_t at = 0;
        for (size_t i = 1; i < p->numel; i++) if (fabs(g[i]) > fabs(g[at])) at = i;
        if (fabs(g[at]) < 1e-3) { free(g); free(w); continue; }
        double h = 1e-2 * fmax(1.0, fabs(w[at])), l[2];
        for (int s = 0; s < 2; s++) {
            float v = w[at] + (float)(s ? -h : h);
            be->to_device(p->data + at, &v, sizeof v);
            fw_set_train_draws(fm, draws);   /* the same masks again */
            T_OK(fw_forward(fm, in, &out) == 0);
            l[s] = out.loss;
        }
        be->to_device(p->data + at, &w[at], sizeof(float));
        double fd = (l[0] - l[1]) / (2 * h);
        T_CHECK(fabs(fd - g[at]) <= 3e-2 * fmax(fabs(g[at]), 1e-2),
                "%s[%zu]: finite difference %.6g, backward %.6g", p->name, at, fd, (double)g[at]);
        checked++;
        free(g);
        free(w);
    }
    T_CHECK(checked >= 8, "only %d weights had a gradient to check", checked);
}

static void run_case(const char *path, float p_resid, float p_attn, int classifier) {
    mdl_model *m = mdl_load(path);
    T_CHECK(m != NULL, "%s", lp_geterr());
    if (!m) return;
    fw_model *fm = fw_new(m, be_cpu());
    T_CHECK(fm != NULL, "%s", lp_geterr());
    if (!fm) { mdl_free(m); return; }
    int32_t ids[B * T], labels[B * T], cls[B] = {1, 0};
    batch(ids, labels, fw_model_info(fm)->vocab);
    fw_batch tr = {.B = B, .T = T, .ids = ids, .labels = classifier ? cls : labels,
                   .flags = FW_KEEP | FW_TRAIN | FW_ALL};
    fw_batch ev = tr;
    ev.flags = FW_KEEP;
    fw_out o1, o2, o3;
    /* (a) and the masks changing between forwards */
    T_OK(fw_forward(fm, &ev, &o3) == 0);
    T_OK(fw_forward(fm, &tr, &o1) == 0);
    check_masks(fm, p_resid, p_attn, classifier);
    T_OK(fw_forward(fm, &tr, &o2) == 0);
    T_CHECK(o1.loss != o2.loss && o1.loss != o3.loss, "%s: training forwards drew no new masks", path);
    T_OK(fw_forward(fm, &ev, &o2) == 0);
    T_CHECK(o2.loss == o3.loss, "%s: eval forward changed after training forwards", path);
    tr.flags = FW_KEEP | FW_TRAIN | FW_LOSS;   /* what `train` runs: the lean layout */
    check_grads(fm, &tr);
    fw_free(fm);
    mdl_free(m);
}

static void test_gpt2(void) { run_case("tests/fixtures/models/gpt2", 0.1f, 0.1f, 0); }
static void test_bert_classifier(void) { run_case("tests/fixtures/models/bert", 0.1f, 0.1f, 1); }

/* Probabilities 0 (and the Llama family's attention_dropout 0): FW_TRAIN is the eval forward. */
static void test_p0_is_eval(void) {
    const char *paths[] = {"tests/fixtures/forward/gpt2-bytes-nodrop", "tests/fixtures/models/llama"};
    for (int k = 0; k < 2; k++) {
        mdl_model *m = mdl_load(paths[k]);
        fw_model *fm = m ? fw_new(m, be_cpu()) : NULL;
        T_CHECK(fm != NULL, "%s", lp_geterr());
        if (!fm) { mdl_free(m); continue; }
        int32_t ids[B * T], labels[B * T];
        batch(ids, labels, fw_model_info(fm)->vocab);
        fw_batch tr = {.B = B, .T = T, .ids = ids, .labels = labels, .flags = FW_KEEP | FW_TRAIN | FW_ALL};
        fw_batch ev = tr;
        ev.flags = FW_KEEP;
        fw_out a, b;
        T_OK(fw_forward(fm, &tr, &a) == 0);
        const fw_acts *A = fw_last_acts(fm);
        T_OK(A->emb_drop == NULL && A->layers[0].o_drop == NULL && A->layers[0].attn_drop == NULL);
        T_OK(fw_forward(fm, &ev, &b) == 0);
        T_CHECK(a.loss == b.loss, "%s: %g vs %g", paths[k], a.loss, b.loss);
        fw_free(fm);
        mdl_free(m);
    }
}

int main(void) {
    T_RUN(test_gpt2);
    T_RUN(test_bert_classifier);
    T_RUN(test_p0_is_eval);
    return t_done();
}
