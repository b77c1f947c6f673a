/* params.c — the trainable-parameter list (params.h) and the train state's life cycle. */
#include "train/params.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

#include "nn/migrate.h"
#include "train/train_int.h"
#include "util/err.h"
#include "util/mem.h"

static void params_clear(tr_params *P) {
    for (size_t i = 0; i < P->n; i++) lp_free(P->p[i].name);
    lp_free(P->p);
    P->p = NULL;
    P->n = 0;
}

void tr_adapter_free(fw_model *fm, tr_adapter *a);   /* lora.c */

static void state_free(fw_model *fm, void *p) {
    tr_state *s = p;
    if (!s) return;
    while (s->nad) tr_adapter_free(fm, s->ad[--s->nad]);   /* the rest stay listed, live */
    lp_free(s->ad);
    params_clear(&s->params);   /* base weights' gradient slots are freed by fw_free */
    lp_free(s);
}

/* Moving the model to another device (nn/migrate.h): each adapter's one buffer (A, B, dA, dB of
 * every site) is copied, then the sites and the parameter list point into the copies. Base
 * weights and their gradient slots are the model's own: migrate.c copies them, this only
 * re-points the list. Nothing else changes, so an optimizer's state (matched to the list by
 * its version) stays valid. */
static size_t adapter_bytes(const tr_adapter *a) {
    size_t n = 0;
    for (size_t k = 0; k < a->nsites; k++) {
        const fw_lora *lo = &a->sites[k].lo;
        n += 2 * (fw_lora_na(lo) + fw_lora_nb(lo) + fw_lora_nm(lo));
    }
    return n * sizeof(float);
}

static int state_move(fw_move *mv, fw_model *fm, void *p, int commit) {
    (void)fm;
    tr_state *s = p;
    for (size_t i = 0; i < s->nad; i++) {
        tr_adapter *a = s->ad[i];
        if (a->ada && tr_ada_move(mv, a, commit) < 0)
            return lp_preferr("the weights of adapter `%s`", a->name);
        if (!commit) {
            if (fw_move_buf(mv, a->buf, adapter_bytes(a)) < 0)
                return lp_preferr("the weights of adapter `%s`", a->name);
            continue;
        }
        a->buf = fw_move_at(mv, a->buf);
        for (size_t k = 0; k < a->nsites; k++) {
            fw_lora *lo = &a->sites[k].lo;
            lo->base = fw_move_at(mv, lo->base);
            lo->A = fw_move_at(mv, lo->A);
            lo->B = fw_move_at(mv, lo->B);
            lo->dA = fw_move_at(mv, lo->dA);
            lo->dB = fw_move_at(mv, lo->dB);
            lo->mag = fw_move_at(mv, lo->mag);
            lo->dmag = fw_move_at(mv, lo->dmag);
        }
    }
    for (size_t i = 0; commit && i < s->params.n; i++) {
        s->params.p[i].data = fw_move_at(mv, s->params.p[i].data);
        s->params.p[i].grad = fw_move_at(mv, s->params.p[i].grad);
    }
    return 0;
}

tr_state *tr_state_of(fw_model *fm) {
    void **slot = fw_train_slot(fm, NULL);
    if (!*slot) {
        tr_state *s = lp_calloc(1, sizeof *s);
        if (!s) return lp_seterr("out of memory"), NULL;
        s->active = -1;
        *slot = s;
        fw_set_train_free(fm, state_free);
        tr_ada_hooks(fm);
        fw_set_train_move(fm, state_move);
    }
    return *slot;
}

tr_params *tr_params_of(fw_model *fm) {
    tr_state *s = tr_state_of(fm);
    return s ? &s->params : NULL;
}

static int push(tr_params *P, size_t *cap, const char *name, const char *suffix, float *data,
                float *grad, int rows, int cols, int is_adapter) {
    if (P->n == *cap) {
        size_t c = *cap ? 2 * *cap : 32;
        tr_param *p = lp_realloc(P->p, c * sizeof *p);
        if (!p) return lp_seterr("out of memory");
        P->p = p;
        *cap = c;
    }
    size_t len = strlen(name) + strlen(suffix) + 1;
    char *nm = lp_malloc(len);
    if (!nm) return lp_seterr("out of memory");
    snprintf(nm, len, "%s%s", name, suffix);
    P->p[P->n++] = (tr_param){nm, data, grad, (size_t)rows * cols, rows, cols, is_adapter};
    return 0;
}

int tr_params_rebuild(fw_model *fm) {
    tr_state *s = tr_state_of(fm);
    if (!s) return -1;
    fw_weight *w;
    size_t nw;
    if (fw_weights(fm, &w, &nw) < 0) return -1;
    params_clear(&s->params);
    s->params.version++;
    size_t cap = 0;
    tr_adapter *act = s->active >= 0 ? s->ad[s->active] : NULL;
    for (size_t i = 0; i < nw; i++) {
        if (w[i].grad && push(&s->params, &cap, w[i].name, "", w[i].data, w[i].grad, w[i].rows,
                              w[i].cols, 0) < 0)
            return -1;
        for (size_t k = 0; act && k < act->nsites; k++) {
            tr_site *st = &act->sites[k];
            if (st->lo.base != w[i].data || !st->lo.dA) continue;
            if (st->lo.kind != FW_AD_LORA) {   /* PEFT's ia3_l: (out, 1) or (1, in) */
                int ff = st->lo.kind == FW_AD_IA3_FF;
                if (push(&s->params, &cap, st->module, ".ia3_l", st->lo.A, st->lo.dA,
                         ff ? 1 : st->lo.out, ff ? st->lo.in : 1, 1) < 0)
                    return -1;
                continue;
            }
            if (act->ada) {   /* PEFT's lora_A, lora_B, lora_E (ParameterDicts: no .weight) */
                const tr_ada_site *as = &act->ada->s[k];
                if (push(&s->params, &cap, st->module, ".lora_A", as->A, as->dA, st->lo.r,
                         st->lo.in, 1) < 0 ||
                    push(&s->params, &cap, st->module, ".lora_B", st->lo.B, st->lo.dB,
                         st->lo.out, st->lo.r, 1) < 0 ||
                    push(&s->params, &cap, st->module, ".lora_E", as->E, as->dE, st->lo.r, 1,
                         1) < 0)
                    return -1;
                continue;
            }
            if (push(&s->params, &cap, st->module, ".lora_A.weight", st->lo.A, st->lo.dA,
                     st->lo.r, st->lo.in, 1) < 0 ||
                push(&s->params, &cap, st->module, ".lora_B.weight", st->lo.B, st->lo.dB,
                     st->lo.out, st->lo.r, 1) < 0)
                return -1;
            if (st->lo.dora && push(&s->params, &cap, st->module, ".lora_magnitude_vector",
                                    st->lo.mag, st->lo.dmag, st->lo.out, 1, 1) < 0)
                return -1;
        }
    }
    return 0;
}

void tr_params_zero_grad(tr_params *P, const be_backend *be) {
    for (size_t i = 0; i < P->n; i++) be->zero(P->p[i].grad, P->p[i].numel * sizeof(float));
}

double tr_params_grad_norm(const tr_params *P, const be_backend *be) {
    enum { CHUNK = 4096 };
    float buf[CHUNK];
    double total = 0;
    for (size_t i = 0; i < P->n; i++)
        for (size_t at = 0; at < P->p[i].numel; at += CHUNK) {
            size_t k = P->p[i].numel - at < CHUNK ? P->p[i].numel - at : CHUNK;
            be->to_host(buf, P->p[i].grad + at, k * sizeof(float));
            for (size_t j = 0; j < k; j++) total += (double)buf[j] * buf[j];
        }
    return sqrt(total);
}

size_t tr_params_count(const tr_params *P) {
    size_t n = 0;
    for (size_t i = 0; i < P->n; i++) n += P->p[i].numel;
    return n;
}
