/* optim.c — AdamW / SGD over tr_params, transformers' schedules, clipping (optim.h). */
#include "train/optim.h"

#include <assert.h>
#include <math.h>
#include <string.h>

#include "nn/migrate.h"
#include "train/params.h"
#include "train/train_int.h"
#include "util/err.h"
#include "util/mem.h"

/* One parameter's state. m and v are device buffers (v unused by SGD). `t` is per parameter
 * because torch creates state lazily: a parameter added later starts its own count at 0. */
typedef struct to_pstate {
    char *name;
    size_t numel;
    float *m, *v;
    int t;
} to_pstate;

struct to_optim {
    to_config cfg;
    fw_model *fm;
    const be_backend *be;
    to_pstate *st;            /* [n], indexed like the params list */
    size_t n;
    unsigned long version;    /* of the params list st was built for */
    int built;
    long steps;               /* optimizer steps done (the schedule's k) */
    float **grads;            /* [n] scratch for clipping */
    size_t *sizes;            /* [n] */
};

/* ---- schedules -------------------------------------------------------------------------- */

double to_lr_factor(const to_schedule *s, long k) {
    /* transformers/optimization.py: warmup is float(k) / float(max(1, warmup)) for k < warmup */
    if (k < s->warmup) return (double)k / (double)(s->warmup > 1 ? s->warmup : 1);
    long span = (long)s->total - s->warmup;
    if (span < 1) span = 1;
    switch (s->kind) {
    case TO_SCHED_CONSTANT:
        return 1.0;
    case TO_SCHED_LINEAR: {
        double f = (double)((long)s->total - k) / (double)span;
        return f > 0 ? f : 0.0;
    }
    case TO_SCHED_COSINE: {
        double progress = (double)(k - s->warmup) / (double)span;
        double f = 0.5 * (1.0 + cos(3.14159265358979323846 * s->cycles * 2.0 * progress));
        return f > 0 ? f : 0.0;
    }
    }
    return 1.0;
}

int to_sched_parse(const char *name) {
    if (!strcmp(name, "constant")) return TO_SCHED_CONSTANT;
    if (!strcmp(name, "linear")) return TO_SCHED_LINEAR;
    if (!strcmp(name, "cosine")) return TO_SCHED_COSINE;
    return -1;
}

const char *to_sched_name(to_sched_kind k) {
    return k == TO_SCHED_LINEAR ? "linear" : k == TO_SCHED_COSINE ? "cosine" : "constant";
}

void to_config_default(to_config *c, to_kind kind) {
    memset(c, 0, sizeof *c);
    c->kind = kind;
    c->lr = kind == TO_ADAMW ? 2e-4 : 1e-2;
    c->beta1 = 0.9;
    c->beta2 = 0.999;
    c->eps = 1e-8;
    c->momentum = kind == TO_SGD ? 0.9 : 0.0;
    c->weight_decay = kind == TO_ADAMW ? 0.01 : 0.0;   /* torch's AdamW / SGD defaults */
    c->clip = 0;
    c->sched.kind = TO_SCHED_CONSTANT;
    c->sched.cycles = 0.5;
}

/* ---- state ------------------------------------------------------------------------------ */

static void state_free(const be_backend *be, to_pstate *st, size_t n) {
    for (size_t i = 0; i < n; i++) {
        lp_free(st[i].name);
        be->free(st[i].m);
        be->free(st[i].v);
    }
    lp_free(st);
}

to_optim *to_new(fw_model *fm, const to_config *cfg) {
    to_optim *o = lp_calloc(1, sizeof *o);
    if (!o) { lp_seterr("out of memory"); return NULL; }
    o->cfg = *cfg;
    o->fm = fm;
    o->be = fw_backend(fm);
    return o;
}

void to_free(to_optim *o) {
    if (!o) return;
    state_free(o->be, o->st, o->n);
    lp_free(o->grads);
    lp_free(o->sizes);
    lp_free(o);
}

/* Make the state match the current params list, keeping what can be kept (by name and size). */
static int sync_state(to_optim *o, tr_params *P) {
    if (o->built && o->version == P->version && o->n == P->n) return 0;
    to_pstate *st = lp_calloc(P->n ? P->n : 1, sizeof *st);
    float **grads = lp_calloc(P->n ? P->n : 1, sizeof *grads);
    size_t *sizes = lp_calloc(P->n ? P->n : 1, sizeof *sizes);
    int dev_oom = 0;   /* a device allocation failed: keep its message ("out of GPU memory …") */
    if (!st || !grads || !sizes) goto oom;
    for (size_t i = 0; i < P->n; i++) {
        tr_param *p = &P->p[i];
        st[i].name = lp_strdup(p->name);
        if (!st[i].name) goto oom;
        st[i].numel = p->numel;
        for (size_t j = 0; j < o->n; j++)
            if (o->st[j].m && o->st[j].numel == p->numel && !strcmp(o->st[j].name, p->name)) {
                st[i].m = o->st[j].m, st[i].v = o->st[j].v, st[i].t = o->st[j].t;
                o->st[j].m = o->st[j].v = NULL;   /* moved */
                break;
            }
        if (!st[i].m) {
            size_t bytes = sizeof(float) * (p->numel ? p->numel : 1);
            st[i].m = o->be->alloc(bytes);
            if (!st[i].m) { dev_oom = 1; goto oom; }
            o->be->zero(st[i].m, bytes);
            if (o->cfg.kind == TO_ADAMW) {
                st[i].v = o->be->alloc(bytes);
                if (!st[i].v) { dev_oom = 1; goto oom; }
                o->be->zero(st[i].v, bytes);
            }
        }
    }
    state_free(o->be, o->st, o->n);
    lp_free(o->grads);
    lp_free(o->sizes);
    o->st = st, o->grads = grads, o->sizes = sizes;
    o->n = P->n;
    o->version = P->version;
    o->built = 1;
    return 0;
oom:
    /* the old state may have lent buffers to st: give them back before dropping st */
    if (st)
        for (size_t i = 0; i < P->n; i++)
            for (size_t j = 0; j < o->n; j++)
                if (!o->st[j].m && st[i].name && !strcmp(o->st[j].name, st[i].name) && st[i].m) {
                    o->st[j].m = st[i].m, o->st[j].v = st[i].v;
                    st[i].m = st[i].v = NULL;
                }
    if (st) state_free(o->be, st, P->n);
    lp_free(grads);
    lp_free(sizes);
    if (dev_oom) lp_preferr("the optimizer state");
    else lp_seterr("out of memory for the optimizer state");
    return -1;
}

void to_zero_grad(to_optim *o) {
    tr_params_zero_grad(tr_params_of(o->fm), o->be);
    tr_ada_zero_grad(o->fm);
}

double to_next_lr(const to_optim *o) { return o->cfg.lr * to_lr_factor(&o->cfg.sched, o->steps); }

int to_step(to_optim *o, to_info *info) {
    tr_params *P = tr_params_of(o->fm);
    if (!P || !P->n) {
        lp_seterr("nothing to train: the model has no trainable weights (add an adapter with "
                  "`lora`, or `unfreeze` some weights)");
        return -1;
    }
    if (sync_state(o, P) < 0) return -1;
    for (size_t i = 0; i < P->n; i++) o->grads[i] = P->p[i].grad, o->sizes[i] = P->p[i].numel;
    double norm = o->be->clip_grad_norm(o->grads, o->sizes, (int)P->n, o->cfg.clip);
    if (o->be->op_failed && o->be->op_failed())   /* no device scratch: nothing clipped */
        return lp_preferr("step %ld: nothing was updated", o->steps + 1);
    if (!isfinite(norm)) {
        lp_seterr("the gradient norm is %s at step %ld: nothing was updated (lower the lr, "
                  "clip the gradients with clip=1.0, or look at the data)",
                  isnan(norm) ? "NaN" : "infinite", o->steps + 1);
        return -1;
    }
    double lr = to_next_lr(o);
    for (size_t i = 0; i < P->n; i++) {
        tr_param *p = &P->p[i];
        to_pstate *s = &o->st[i];
        if (!p->is_adapter) fw_mark_weights_changed(o->fm);
        s->t++;
        if (o->cfg.kind == TO_ADAMW)
            o->be->adamw_step(p->data, s->m, s->v, p->grad, p->numel, lr, o->cfg.beta1,
                              o->cfg.beta2, o->cfg.eps, o->cfg.weight_decay, s->t);
        else
            o->be->sgd_step(p->data, s->m, p->grad, p->numel, lr, o->cfg.momentum,
                            o->cfg.weight_decay, s->t);
    }
    o->steps++;
    if (info) info->step = o->steps, info->lr = lr, info->grad_norm = norm;
    /* AdaLoRA's update_and_allocate, as PEFT's loop calls it after optimizer.step() */
    return tr_ada_after_step(o->fm) < 0 ? lp_preferr("step %ld: AdaLoRA's rank allocation", o->steps) : 0;
}

int to_move_copy(to_optim *o, fw_move *mv) {
    assert(o->fm == fw_move_model(mv) && o->be == fw_move_from(mv));
    for (size_t i = 0; i < o->n; i++) {
        size_t bytes = sizeof(float) * (o->st[i].numel ? o->st[i].numel : 1);
        if (fw_move_buf(mv, o->st[i].m, bytes) < 0 || fw_move_buf(mv, o->st[i].v, bytes) < 0)
            return lp_preferr("the optimizer state");
    }
    return 0;
}

void to_move_commit(to_optim *o, const fw_move *mv) {
    for (size_t i = 0; i < o->n; i++) {
        o->st[i].m = fw_move_at(mv, o->st[i].m);
        o->st[i].v = fw_move_at(mv, o->st[i].v);
    }
    o->be = fw_move_to(mv);
}

long to_steps(const to_optim *o) { return o->steps; }
const to_config *to_cfg(const to_optim *o) { return &o->cfg; }
to_config *to_cfg_mut(to_optim *o) { return &o->cfg; }
fw_model *to_model(const to_optim *o) { return o->fm; }
const be_backend *to_backend(const to_optim *o) { return o->be; }
