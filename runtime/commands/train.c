/* train.c (commands) — optimizers and the training loop: `adamw`, `sgd`, `step`, `zero_grad`,
 * `train`, `evaluate`.
 *
 * The native loop, one cell per line, is the same code the Trainer-like `train` runs:
 *   b = next data size=4;  out = forward m b;  backward out;  step opt;  zero_grad opt
 * forward keeps the activations (FW_KEEP), backward (train-a's nn/backward.h) adds the
 * gradients into every trainable parameter (train/params.h), step applies the optimizer
 * (train/optim.h) with its schedule and clipping.
 *
 * `train` keeps one run per model: its optimizer (state and step count) and its loss curve,
 * so a second `train` — after an interrupt, or to go on — continues both. While it runs it
 * shows ONE loss plot and ONE progress line, each a display redrawn in place
 * (update_display_data) at most 4 times a second, the final state always. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "commands/compute.h"
#include "commands/data.h"
#include "commands/model.h"
#include "display/lossplot.h"
#include "lang/interp.h"
#include "nn/backward.h"
#include "train/lora.h"
#include "train/optim.h"
#include "train/params.h"
#include "util/mem.h"
#include "util/sbuf.h"

/* A learning rate as people write it: 0.001, 1.8e-4 (not 0.00018 or 1.80e-04). */
static const char *fmt_lr(char *buf, size_t cap, double x) {
    if (x == 0 || fabs(x) >= 1e-3) {
        snprintf(buf, cap, "%.3g", x);
        return buf;
    }
    char m[32];
    int e = 0;
    snprintf(m, sizeof m, "%.2e", x);
    char *ep = strchr(m, 'e');
    if (ep) { e = atoi(ep + 1); *ep = 0; }
    size_t n = strlen(m);   /* trim the mantissa's trailing zeros: 1.80 → 1.8, 2.00 → 2 */
    while (n > 1 && m[n - 1] == '0') m[--n] = 0;
    if (n > 1 && m[n - 1] == '.') m[--n] = 0;
    snprintf(buf, cap, "%se%d", m, e);
    return buf;
}

/* ---- optimizer values --------------------------------------------------------------------- */

typedef struct op_value {
    to_optim *o;
    lv_value *model;   /* keeps the model (and its compute state) alive */
    struct op_value *next;   /* in live_opts */
} op_value;

/* Every optimizer value alive, newest first: `to` moves the state of those over its model. */
static op_value *live_opts;

static void op_free(void *p) {
    op_value *v = p;
    for (op_value **l = &live_opts; *l; l = &(*l)->next)
        if (*l == v) { *l = v->next; break; }
    to_free(v->o);
    lv_decref(v->model);
    lp_free(v);
}

static char *op_text(void *p) {
    op_value *v = p;
    const to_config *c = to_cfg(v->o);
    sbuf b;
    sb_init(&b);
    char lr0[32];
    fmt_lr(lr0, sizeof lr0, c->lr);
    if (c->kind == TO_ADAMW)
        sb_printf(&b, "AdamW · lr %s · betas (%g, %g) · eps %g · weight_decay %g", lr0, c->beta1,
                  c->beta2, c->eps, c->weight_decay);
    else
        sb_printf(&b, "SGD · lr %s · momentum %g · weight_decay %g", lr0, c->momentum, c->weight_decay);
    sb_printf(&b, "\nschedule %s", to_sched_name(c->sched.kind));
    if (c->sched.warmup) sb_printf(&b, " · warmup %d", c->sched.warmup);
    if (c->sched.kind != TO_SCHED_CONSTANT) sb_printf(&b, " · %d steps", c->sched.total);
    if (c->clip > 0) sb_printf(&b, " · clip %g", c->clip);
    tr_params *P = tr_params_of(to_model(v->o));
    char lr[32];
    sb_printf(&b, "\n%ld steps done · next lr %s · %zu trainable tensors (%zu params)",
              to_steps(v->o), fmt_lr(lr, sizeof lr, to_next_lr(v->o)), P ? P->n : 0, P ? tr_params_count(P) : 0);
    return b.oom ? (sb_free(&b), NULL) : sb_take(&b);
}

static lv_value *op_attr(void *p, const char *name) {
    op_value *v = p;
    if (!strcmp(name, "lr")) return lv_float(to_next_lr(v->o));
    if (!strcmp(name, "steps")) return lv_int(to_steps(v->o));
    return NULL;
}

static int op_attrs(void *p, lv_attr_fn add, void *actx) {
    (void)p;
    add(actx, "lr");
    add(actx, "steps");
    return 0;
}

static const lv_type lv_optimizer_type = {
    .name = "optimizer", .free = op_free, .text = op_text, .getattr = op_attr, .attrs = op_attrs,
};

/* Schedule options shared by adamw, sgd and train into cfg; 0 or -1 after lp_fail. */
static int read_schedule(lp_call *c, to_config *cfg, int64_t steps) {
    const char *s = lp_arg_str(c, "schedule");
    int k = to_sched_parse(s);
    if (k < 0) return lp_fail(c, "ValueError", "schedule is \"constant\", \"linear\" or \"cosine\", got \"%s\"", s);
    int64_t w = lp_arg_int(c, "warmup");
    if (w < 0 || w > INT32_MAX) return lp_fail(c, "ValueError", "warmup must be 0 or more, got %lld", (long long)w);
    if (k != TO_SCHED_CONSTANT && steps < 1)
        return lp_fail(c, "ValueError", "a %s schedule needs the run's length: steps=N", s);
    if (steps > INT32_MAX) return lp_fail(c, "ValueError", "steps is too large");
    cfg->sched.kind = (to_sched_kind)k;
    cfg->sched.warmup = (int)w;
    cfg->sched.total = (int)(steps > 0 ? steps : 0);
    cfg->sched.cycles = 0.5;
    double clip = lp_arg_float(c, "clip");
    if (clip < 0 || !isfinite(clip)) return lp_fail(c, "ValueError", "clip must be 0 (off) or a positive norm");
    cfg->clip = clip;
    return 0;
}

static int read_lr_wd(lp_call *c, to_config *cfg) {
    cfg->lr = lp_arg_float(c, "lr");
    if (!(cfg->lr > 0) || !isfinite(cfg->lr)) return lp_fail(c, "ValueError", "lr must be positive, got %g", cfg->lr);
    cfg->weight_decay = lp_arg_float(c, "weight_decay");
    if (cfg->weight_decay < 0 || !isfinite(cfg->weight_decay))
        return lp_fail(c, "ValueError", "weight_decay must be 0 or more, got %g", cfg->weight_decay);
    return 0;
}

static int make_optimizer(lp_call *c, to_config *cfg, lv_value **result) {
    fw_model *fm = cmd_compute(c, "model", 0);
    if (!fm) return -1;
    op_value *v = lp_calloc(1, sizeof *v);
    if (!v || !(v->o = to_new(fm, cfg))) { lp_free(v); return lp_fail(c, "MemoryError", "out of memory"); }
    v->model = lv_incref(lp_arg(c, "model"));
    v->next = live_opts;
    live_opts = v;
    *result = lv_new_opaque(&lv_optimizer_type, v);   /* frees v (op_free) on failure */
    return *result ? 0 : lp_fail(c, "MemoryError", "out of memory");
}

static int run_adamw(lp_call *c, lv_value **result) {
    to_config cfg;
    to_config_default(&cfg, TO_ADAMW);
    if (read_lr_wd(c, &cfg) < 0) return -1;
    lv_value *betas = lp_arg(c, "betas");
    if (betas->u.list.n != 2 || !lv_is_number(betas->u.list.items[0]) || !lv_is_number(betas->u.list.items[1]))
        return lp_fail(c, "ValueError", "betas is a list of two numbers, like [0.9, 0.999]");
    cfg.beta1 = lv_as_double(betas->u.list.items[0]);
    cfg.beta2 = lv_as_double(betas->u.list.items[1]);
    if (cfg.beta1 < 0 || cfg.beta1 >= 1 || cfg.beta2 < 0 || cfg.beta2 >= 1)
        return lp_fail(c, "ValueError", "betas must be in [0, 1), got [%g, %g]", cfg.beta1, cfg.beta2);
    cfg.eps = lp_arg_float(c, "eps");
    if (!(cfg.eps >= 0)) return lp_fail(c, "ValueError", "eps must be 0 or more");
    if (read_schedule(c, &cfg, lp_arg_int(c, "steps")) < 0) return -1;
    return make_optimizer(c, &cfg, result);
}

static int run_sgd(lp_call *c, lv_value **result) {
    to_config cfg;
    to_config_default(&cfg, TO_SGD);
    if (read_lr_wd(c, &cfg) < 0) return -1;
    cfg.momentum = lp_arg_float(c, "momentum");
    if (cfg.momentum < 0 || cfg.momentum >= 1) return lp_fail(c, "ValueError", "momentum must be in [0, 1)");
    if (read_schedule(c, &cfg, lp_arg_int(c, "steps")) < 0) return -1;
    return make_optimizer(c, &cfg, result);
}

#define SCHEDULE_OPTS                                                                                         \
    {"schedule", LP_T_STRING, .def = "\"constant\"", .help = "\"constant\", \"linear\" or \"cosine\" (transformers' schedules)", .hf = "lr_scheduler_type"}, \
    {"warmup", LP_T_INT, .def = "0", .help = "linear warmup steps from lr 0", .hf = "num_warmup_steps warmup_steps"},                                \
    {"steps", LP_T_INT, .def = "0", .help = "the run's length (linear and cosine decay to 0 at steps)", .hf = "num_training_steps max_steps"},     \
    {"clip", LP_T_FLOAT, .def = "0", .help = "clip the global gradient norm to this (0: off)", .hf = "max_grad_norm"}

static const lp_param opt_params[] = {
    {"model", LP_T_VALUE, .vtype = &lv_model_type, .help = "the model whose trainable weights it updates"},
    {0}};
static const lp_param adamw_opts[] = {
    {"lr", LP_T_FLOAT, .def = "2e-4", .help = "learning rate", .hf = "learning_rate"},
    {"weight_decay", LP_T_FLOAT, .def = "0.01", .help = "decoupled weight decay (torch's default)"},
    {"betas", LP_T_LIST, .def = "[0.9, 0.999]", .help = "Adam's beta1, beta2"},
    {"eps", LP_T_FLOAT, .def = "1e-8", .help = "added to the denominator", .hf = "adam_epsilon"},
    SCHEDULE_OPTS,
    {0}};
const lp_command lp_cmd_adamw = {
    "adamw", opt_params, adamw_opts, run_adamw,
    .summary = "An AdamW optimizer (torch.optim.AdamW) for the model's trainable weights",
    .help = "Updates what `lora` or `unfreeze` made trainable, as torch.optim.AdamW does, with\n"
            "transformers' lr schedules (the first step of a warmup runs at lr 0, as the Trainer's).\n"
            "Example:\n    opt = adamw m lr=1e-3 schedule=\"linear\" warmup=2 steps=20\n    step opt",
};
static const lp_param sgd_opts[] = {
    {"lr", LP_T_FLOAT, .def = "1e-2", .help = "learning rate", .hf = "learning_rate"},
    {"momentum", LP_T_FLOAT, .def = "0.9", .help = "momentum (0: plain SGD)"},
    {"weight_decay", LP_T_FLOAT, .def = "0", .help = "L2 penalty added to the gradient"},
    SCHEDULE_OPTS,
    {0}};
const lp_command lp_cmd_sgd = {
    "sgd", opt_params, sgd_opts, run_sgd,
    .summary = "An SGD optimizer with momentum (torch.optim.SGD)",
    .help = "Example:\n    opt = sgd m lr=0.01 momentum=0.9\n    step opt",
};

/* The optimizer of the `opt` argument, with its model's compute state still the same. */
static op_value *opt_arg(lp_call *c) {
    op_value *v = lp_arg_ptr(c, "opt", &lv_optimizer_type);
    fw_model *fm = cmd_compute_of_value(c, v->model, 0);
    if (!fm) return NULL;
    if (fm != to_model(v->o)) {
        lp_fail(c, "ValueError", "this optimizer's model lost its compute state (more than two models "
                                 "were used since); make a new optimizer");
        return NULL;
    }
    return v;
}

static int run_step(lp_call *c, lv_value **result) {
    (void)result;
    op_value *v = opt_arg(c);
    if (!v) return -1;
    to_info info;
    if (to_step(v->o, &info) < 0) return lp_fail(c, "ValueError", "%s", lp_geterr());
    char line[160], lr[32];
    int n = snprintf(line, sizeof line, "step %ld · lr %s · grad norm %.4g\n", info.step,
                     fmt_lr(lr, sizeof lr, info.lr), info.grad_norm);
    lp_out_text(c, 1, line, (size_t)n);
    return 0;
}

static int run_zero_grad(lp_call *c, lv_value **result) {
    (void)result;
    op_value *v = opt_arg(c);
    if (!v) return -1;
    to_zero_grad(v->o);
    return 0;
}

static const lp_param step_params[] = {
    {"opt", LP_T_VALUE, .vtype = &lv_optimizer_type, .help = "an optimizer (adamw, sgd)"},
    {0}};
const lp_command lp_cmd_step = {
    "step", step_params, NULL, run_step,
    .summary = "Apply the optimizer: clip, update every trainable weight, advance the schedule",
    .help = "Uses the gradients the `backward`s since the last `zero_grad` added up.\n"
            "Example:\n    backward out\n    step opt\n    zero_grad opt",
};
const lp_command lp_cmd_zero_grad = {
    "zero_grad", step_params, NULL, run_zero_grad,
    .summary = "Set every trainable weight's gradient to zero (before the next backward)",
    .help = "Gradients add up over backwards (that is how accumulation works), so clear them\n"
            "after each step.\nExample:\n    step opt\n    zero_grad opt",
};

/* ---- evaluation ------------------------------------------------------------------------------ */

typedef struct ev_result {
    double loss;          /* mean over every counted target (token or row) */
    long targets;
    long correct, rows;   /* classification */
    int classify;
} ev_result;

/* The loss over the whole of d in file order, batches of bs, no dropout, nothing kept. */
static int eval_data(fw_model *fm, td_dataset *d, int bs, ev_result *r) {
    memset(r, 0, sizeof *r);
    double sum = 0;
    const be_backend *be = fw_backend(fm);
    for (size_t from = 0; from < td_len(d); from += (size_t)bs) {
        td_batch b;
        if (td_slice(d, from, bs, &b) < 0) return -1;
        fw_batch in = {.B = b.B, .T = b.T, .ids = b.ids, .mask = b.mask, .labels = b.labels};
        fw_out out;
        int rc = fw_forward(fm, &in, &out);
        if (rc == 0 && b.classify && out.kind == FW_OUT_CLASSES) {
            r->classify = 1;
            float *h = lp_malloc(sizeof(float) * (size_t)out.R * out.V);
            if (!h) { lp_seterr("out of memory"); rc = -1; }
            else {
                be->to_host(h, out.logits, sizeof(float) * (size_t)out.R * out.V);
                for (int i = 0; i < out.R; i++) {
                    int best = 0;
                    for (int k = 1; k < out.V; k++) if (h[(size_t)i * out.V + k] > h[(size_t)i * out.V + best]) best = k;
                    r->correct += best == b.labels[i];
                    r->rows++;
                }
                lp_free(h);
            }
        }
        td_batch_free(&b);
        if (rc < 0) return -1;
        sum += (double)out.loss * out.count;
        r->targets += out.count;
    }
    r->loss = r->targets ? sum / (double)r->targets : 0;
    return 0;
}

static int run_evaluate(lp_call *c, lv_value **result) {
    fw_model *fm = cmd_compute(c, "model", 1);
    if (!fm) return -1;
    td_dataset *d = cmd_dataset_ready(c, lp_arg(c, "data"), lp_arg(c, "model"));
    if (!d) return -1;
    int64_t bs = lp_arg_int(c, "batch");
    if (bs < 1 || bs > 65536) return lp_fail(c, "ValueError", "batch must be 1 or more");
    ev_result r;
    if (eval_data(fm, d, (int)bs, &r) < 0) return lp_fail(c, "ValueError", "%s", lp_geterr());
    lv_value *res = lv_dict_new();
    if (!res) return lp_fail(c, "MemoryError", "out of memory");
    lv_dict_set(res, "loss", 4, lv_float(r.loss));
    lv_dict_set(res, "perplexity", 10, lv_float(exp(r.loss)));
    if (r.classify) lv_dict_set(res, "accuracy", 8, lv_float(r.rows ? (double)r.correct / (double)r.rows : 0));
    lv_dict_set(res, "targets", 7, lv_int(r.targets));
    *result = res;
    return 0;
}

static const lp_param evaluate_params[] = {
    {"model", LP_T_VALUE, .vtype = &lv_model_type, .help = "a loaded model"},
    {"data", LP_T_VALUE, .vtype = &lv_dataset_type, .help = "a dataset (or data.eval)"},
    {0}};
static const lp_param evaluate_opts[] = {
    {"batch", LP_T_INT, .def = "8", .help = "examples per forward"},
    {0}};
const lp_command lp_cmd_evaluate = {
    "evaluate", evaluate_params, evaluate_opts, run_evaluate,
    .summary = "Loss and perplexity of a model on a dataset (accuracy for classifiers)",
    .help = "The mean cross-entropy over every target of the dataset (in file order, no dropout),\n"
            "perplexity = exp(loss); classifiers also get accuracy.\n"
            "Example:\n    evaluate m data.eval",
};

/* ---- train ----------------------------------------------------------------------------------- */

typedef struct curve { double *step, *loss; size_t n, cap; } curve;

static int curve_add(curve *c, double step, double loss) {
    if (c->n == c->cap) {
        size_t cap = c->cap ? c->cap * 2 : 256;
        double *s = lp_realloc(c->step, cap * sizeof *s);
        if (!s) return -1;
        c->step = s;
        double *l = lp_realloc(c->loss, cap * sizeof *l);
        if (!l) return -1;
        c->loss = l;
        c->cap = cap;
    }
    c->step[c->n] = step, c->loss[c->n] = loss, c->n++;
    return 0;
}

/* One run per model: its optimizer and curves, continued by the next `train`. */
typedef struct tr_run {
    lv_value *model;     /* a reference; NULL: free slot */
    to_optim *o;
    curve tr, ev;
} tr_run;

enum { RUNS_MAX = 4 };
static tr_run runs[RUNS_MAX];

static void run_drop(tr_run *r) {
    to_free(r->o);
    lv_decref(r->model);
    lp_free(r->tr.step), lp_free(r->tr.loss), lp_free(r->ev.step), lp_free(r->ev.loss);
    memset(r, 0, sizeof *r);
}

/* A model that only a run and the compute cache hold is gone for the user: let it go, so the
 * cache can drop it (it keeps at most two models with adapters). Called by the cache before
 * it looks for a slot (commands/compute.h). */
void cmd_train_release(const lv_value *keep) {
    for (int i = 0; i < RUNS_MAX; i++)
        if (runs[i].model && runs[i].model != keep && runs[i].model->refs <= 2) run_drop(&runs[i]);
}

/* The run of this model (continuing it when the compute state is the same), else a new one. */
static tr_run *run_of(lv_value *model, fw_model *fm, int restart) {
    tr_run *slot = NULL, *free_slot = NULL;
    cmd_train_release(model);
    for (int i = 0; i < RUNS_MAX; i++) {
        if (runs[i].model == model) slot = &runs[i];
        if (!runs[i].model && !free_slot) free_slot = &runs[i];
    }
    if (slot && (restart || to_model(slot->o) != fm)) run_drop(slot), free_slot = slot, slot = NULL;
    if (slot) return slot;
    if (!free_slot) run_drop(&runs[0]), free_slot = &runs[0];
    return free_slot;
}

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

typedef struct live {
    lp_call *c;
    char plot_id[32], prog_id[32];
    int shown;
    double last;
} live;

static void fmt_time(char *buf, size_t cap, double s) {
    if (s < 60) snprintf(buf, cap, "%.1f s", s);
    else if (s < 3600) snprintf(buf, cap, "%dm %02ds", (int)s / 60, (int)s % 60);
    else snprintf(buf, cap, "%dh %02dm", (int)s / 3600, (int)s % 3600 / 60);
}

/* Redraw the plot and the progress line (at most 4 times a second unless `force`). */
static void draw(live *lv, tr_run *r, const char *progress, int force) {
    double t = now_s();
    if (!force && lv->shown && t - lv->last < 0.25) return;
    lv->last = t;
    dp_curve tr = {r->tr.step, r->tr.loss, r->tr.n}, ev = {r->ev.step, r->ev.loss, r->ev.n};
    json_t *plot = dp_loss_plot(&tr, &ev, "loss");
    json_t *prog = json_pack("{s:s}", "text/plain", progress);
    if (plot) lp_out_display(lv->c, plot, lv->plot_id, lv->shown);
    if (prog) lp_out_display(lv->c, prog, lv->prog_id, lv->shown);
    json_decref(plot);
    json_decref(prog);
    lv->shown = 1;
}

static int run_train(lp_call *c, lv_value **result) {
    (void)result;
    lv_value *mv = lp_arg(c, "model");
    /* as the Trainer's gradient_checkpointing=True: switched on for the model, and kept */
    if (lp_arg_bool(c, "gradient_checkpointing")) mv_set_checkpointing(mv, 1);
    fw_model *fm = cmd_compute(c, "model", 1);
    if (!fm) return -1;
    td_dataset *d = cmd_dataset_ready(c, lp_arg(c, "data"), mv);
    if (!d) return -1;
    td_dataset *ed = NULL;
    lv_value *evv = lp_arg(c, "eval");
    if (evv->kind != LV_NONE && !(ed = cmd_dataset_ready(c, evv, mv))) return -1;
    int64_t bs = lp_arg_int(c, "batch"), acc = lp_arg_int(c, "accumulate"), steps = lp_arg_int(c, "steps");
    int64_t eval_every = lp_arg_int(c, "eval_every"), log_every = lp_arg_int(c, "log_every");
    int64_t save_every = lp_arg_int(c, "save_every");
    double epochs = lp_arg_float(c, "epochs");
    if (bs < 1 || bs > 65536) return lp_fail(c, "ValueError", "batch must be between 1 and 65536");
    if (acc < 1 || acc > 65536) return lp_fail(c, "ValueError", "accumulate must be 1 or more");
    if (eval_every < 0 || log_every < 0 || save_every < 0)
        return lp_fail(c, "ValueError", "eval_every, log_every and save_every are 0 (off) or more");
    if (lp_arg_given(c, "steps") == lp_arg_given(c, "epochs"))
        return lp_fail(c, "ValueError", "give the run's length as steps=N or epochs=N (one of them)");
    if (lp_arg_given(c, "epochs")) {
        if (!(epochs > 0) || epochs > 1e6) return lp_fail(c, "ValueError", "epochs must be positive");
        steps = (int64_t)ceil(epochs * (double)td_len(d) / (double)(bs * acc));
        if (steps < 1) steps = 1;
    }
    if (steps < 1 || steps > 100000000) return lp_fail(c, "ValueError", "steps must be 1 or more, got %lld", (long long)steps);
    const char *outdir = lp_arg_str(c, "out");
    const char *names[8];
    int active = -1;
    tr_adapter_names(fm, names, 8, &active);
    if ((outdir || save_every) && active < 0)
        return lp_fail(c, "ValueError", "out= and save_every= save the trainable adapter, and this model has none (add one with `lora`)");
    if (save_every && !outdir) return lp_fail(c, "ValueError", "save_every= needs out=\"dir\"");
    tr_params *P = tr_params_of(fm);
    if (!P || !P->n)
        return lp_fail(c, "ValueError", "nothing to train: the model has no trainable weights (add an "
                                        "adapter with `lora`, or `unfreeze` some weights)");
    to_config cfg;
    const char *optname = lp_arg_str(c, "optimizer");
    if (strcmp(optname, "adamw") && strcmp(optname, "sgd"))
        return lp_fail(c, "ValueError", "optimizer is \"adamw\" or \"sgd\", got \"%s\"", optname);
    to_config_default(&cfg, !strcmp(optname, "sgd") ? TO_SGD : TO_ADAMW);
    if (read_lr_wd(c, &cfg) < 0) return -1;
    tr_run *r = run_of(mv, fm, lp_arg_bool(c, "restart"));
    long done = r->o ? to_steps(r->o) : 0;
    if (read_schedule(c, &cfg, done + steps) < 0) return -1;
    if (r->o && to_cfg(r->o)->kind != cfg.kind) run_drop(r), done = 0, cfg.sched.total = (int)steps;
    if (!r->o) {
        if (!(r->o = to_new(fm, &cfg))) return lp_fail(c, "MemoryError", "out of memory");
        r->model = lv_incref(mv);
    } else {
        /* continuing: keep the moments and the step count, take this call's settings; the
         * schedule now ends at the new total */
        to_config *oc = to_cfg_mut(r->o);
        oc->lr = cfg.lr, oc->weight_decay = cfg.weight_decay, oc->clip = cfg.clip, oc->sched = cfg.sched;
    }
    live lv = {.c = c};
    lp_new_display_id(c, lv.plot_id, sizeof lv.plot_id);
    lp_new_display_id(c, lv.prog_id, sizeof lv.prog_id);
    td_batch *mb = lp_calloc((size_t)acc, sizeof *mb);
    if (!mb) return lp_fail(c, "MemoryError", "out of memory");
    double t0 = now_s(), tokens = 0, first_loss = NAN, last_loss = NAN;
    long target = done + steps, evaluated_at = -1;
    int rc = 0, stopped = 0;
    char line[384], left[32], el[32], lrs[32];
    for (long s = 0; s < steps; s++) {
        if (lp_check_interrupt(c) < 0) { stopped = 1; rc = -1; break; }
        long total = 0;
        for (int a = 0; a < acc; a++) {
            if (td_next(d, (int)bs, &mb[a], NULL) < 0) { rc = lp_fail(c, "ValueError", "%s", lp_geterr()); break; }
            total += mb[a].targets;
        }
        if (rc) break;
        to_zero_grad(r->o);
        double sum = 0;
        long step_no = to_steps(r->o) + 1;
        for (int a = 0; a < acc && !rc; a++) {
            fw_batch in = {.B = mb[a].B, .T = mb[a].T, .ids = mb[a].ids, .mask = mb[a].mask,
                           .labels = mb[a].labels, .flags = FW_KEEP | FW_TRAIN | FW_LOSS};
            fw_out out;
            if (fw_forward(fm, &in, &out) < 0) { rc = lp_fail(c, "ValueError", "%s", lp_geterr()); break; }
            if (!isfinite(out.loss)) {
                rc = lp_fail(c, "FloatingPointError", "the loss became %s at step %ld: training stopped "
                             "before that step's update (lower lr=, set clip=1.0, or check the data)",
                             isnan(out.loss) ? "NaN" : "infinite", step_no);
                break;
            }
            /* every counted target weighs the same across micro-batches (transformers'
             * num_items_in_batch), so the step's gradient is that of one big batch */
            if (out.count && bw_backward(fm, total ? (float)out.count / (float)total : 0.f) < 0) {
                to_zero_grad(r->o);   /* possibly half added (backward.h): no step may use them */
                rc = lp_fail(c, "ValueError", "%s", lp_geterr());
                break;
            }
            sum += (double)out.loss * out.count;
            for (int i = 0; i < mb[a].B * mb[a].T; i++) tokens += mb[a].mask[i];
        }
        for (int a = 0; a < acc; a++) td_batch_free(&mb[a]);
        if (rc) break;
        to_info info;
        if (to_step(r->o, &info) < 0) {   /* a non-finite norm, or the device's memory */
            rc = lp_fail(c, strstr(lp_geterr(), "out of GPU memory") ? "ValueError"
                                                                     : "FloatingPointError",
                         "%s", lp_geterr());
            break;
        }
        double loss = total ? sum / (double)total : 0;
        if (isnan(first_loss)) first_loss = loss;
        last_loss = loss;
        if (curve_add(&r->tr, (double)info.step, loss) < 0) { rc = lp_fail(c, "MemoryError", "out of memory"); break; }
        if (ed && eval_every && info.step % eval_every == 0) {
            ev_result er;
            if (eval_data(fm, ed, (int)bs, &er) < 0) { rc = lp_fail(c, "ValueError", "%s", lp_geterr()); break; }
            curve_add(&r->ev, (double)info.step, er.loss);
            evaluated_at = info.step;
        }
        if (save_every && info.step % save_every == 0) {
            char dir[4096];
            snprintf(dir, sizeof dir, "%s/checkpoint-%ld", outdir, info.step);
            if (tr_adapter_save(fm, NULL, dir) < 0) { rc = lp_fail(c, "IOError", "%s", lp_geterr()); break; }
        }
        double el_s = now_s() - t0;
        fmt_time(el, sizeof el, el_s);
        fmt_time(left, sizeof left, el_s / (double)(s + 1) * (double)(steps - s - 1));
        snprintf(line, sizeof line, "step %ld/%ld · loss %.4f · lr %s · grad norm %.3g · %.0f tokens/s · %s elapsed · %s left",
                 info.step, target, loss, fmt_lr(lrs, sizeof lrs, info.lr), info.grad_norm, tokens / (el_s > 0 ? el_s : 1e-9), el, left);
        if (log_every && info.step % log_every == 0) {
            char l2[200];
            int n = snprintf(l2, sizeof l2, "step %ld · loss %.4f · lr %s · grad norm %.3g\n", info.step,
                             loss, fmt_lr(lrs, sizeof lrs, info.lr), info.grad_norm);
            lp_out_text(c, 1, l2, (size_t)n);
        }
        draw(&lv, r, line, 0);
    }
    lp_free(mb);
    /* the end of the run: a last evaluation, the adapter saved, the final state drawn */
    long at = to_steps(r->o);
    if (!rc && ed && evaluated_at != at) {
        ev_result er;
        if (eval_data(fm, ed, (int)bs, &er) < 0) rc = lp_fail(c, "ValueError", "%s", lp_geterr());
        else curve_add(&r->ev, (double)at, er.loss);
    }
    if (!rc && outdir && tr_adapter_save(fm, NULL, outdir) < 0) rc = lp_fail(c, "IOError", "%s", lp_geterr());
    double el_s = now_s() - t0;
    fmt_time(el, sizeof el, el_s);
    int n = snprintf(line, sizeof line, "%s %ld/%ld steps", stopped ? "interrupted after" : rc ? "stopped at" : "trained", at, target);
    if (!isnan(first_loss))
        n += snprintf(line + n, sizeof line - (size_t)n, " · loss %.4f → %.4f", first_loss, last_loss);
    if (r->ev.n) n += snprintf(line + n, sizeof line - (size_t)n, " · eval loss %.4f", r->ev.loss[r->ev.n - 1]);
    n += snprintf(line + n, sizeof line - (size_t)n, " · %.0f tokens/s · %s", tokens / (el_s > 0 ? el_s : 1e-9), el);
    char ada[160];
    if (tr_adalora_summary(fm, ada, sizeof ada) > 0)
        snprintf(line + n, sizeof line - (size_t)n, " · %s", ada);
    if (r->tr.n || lv.shown) draw(&lv, r, line, 1);
    return rc;
}

static const lp_param train_params[] = {
    {"model", LP_T_VALUE, .vtype = &lv_model_type, .help = "the model (its adapter or unfrozen weights train)"},
    {"data", LP_T_VALUE, .vtype = &lv_dataset_type, .help = "a dataset"},
    {0}};
static const lp_param train_opts[] = {
    {"steps", LP_T_INT, .def = "0", .help = "optimizer steps to run (or epochs=)", .hf = "max_steps"},
    {"epochs", LP_T_FLOAT, .def = "0", .help = "passes over the data (or steps=)", .hf = "num_train_epochs"},
    {"batch", LP_T_INT, .def = "8", .help = "examples per forward", .hf = "per_device_train_batch_size"},
    {"accumulate", LP_T_INT, .def = "1", .help = "forwards per optimizer step (gradient accumulation)", .hf = "gradient_accumulation_steps"},
    {"optimizer", LP_T_STRING, .def = "\"adamw\"", .help = "\"adamw\" or \"sgd\"", .hf = "optim"},
    {"lr", LP_T_FLOAT, .def = "2e-4", .help = "peak learning rate", .hf = "learning_rate"},
    {"weight_decay", LP_T_FLOAT, .def = "0.01", .help = "AdamW's decoupled weight decay"},
    {"schedule", LP_T_STRING, .def = "\"linear\"", .help = "\"constant\", \"linear\" or \"cosine\" (the Trainer's default: linear)", .hf = "lr_scheduler_type"},
    {"warmup", LP_T_INT, .def = "0", .help = "linear warmup steps", .hf = "warmup_steps"},
    {"clip", LP_T_FLOAT, .def = "1.0", .help = "max gradient norm (0: off)", .hf = "max_grad_norm"},
    {"eval", LP_T_VALUE, .def = "none", .vtype = &lv_dataset_type, .help = "a dataset to evaluate on (data.eval)", .hf = "eval_dataset"},
    {"eval_every", LP_T_INT, .def = "0", .help = "evaluate every N steps (and at the end)", .hf = "eval_steps"},
    {"log_every", LP_T_INT, .def = "0", .help = "also print a line every N steps", .hf = "logging_steps"},
    {"save_every", LP_T_INT, .def = "0", .help = "save the adapter to out/checkpoint-N every N steps", .hf = "save_steps"},
    {"out", LP_T_STRING, .def = "none", .help = "save the adapter here at the end (PEFT layout)", .hf = "output_dir"},
    {"restart", LP_T_BOOL, .def = "false", .help = "forget the previous run's optimizer state and curve"},
    {"gradient_checkpointing", LP_T_BOOL, .def = "false", .help = "switch the model's gradient checkpointing on (see `gradient_checkpointing`): less memory, one more forward a step"},
    {0}};
const lp_command lp_cmd_train = {
    "train", train_params, train_opts, run_train,
    .summary = "Train the model's adapter (or unfrozen weights) on a dataset, with a live loss plot",
    .help = "The native loop (next → forward → backward → step) for many steps, like the Trainer:\n"
            "AdamW, a linear schedule, clipping at 1.0. One loss plot and one progress line redraw in\n"
            "place. Interrupting stops at the next step boundary and keeps the finished steps; a\n"
            "second `train` on the same model continues the curve and the optimizer.\n"
            "Example:\n    lora m r=8 alpha=16 target=[\"q_proj\", \"v_proj\"]\n"
            "    train m data steps=30 batch=8 lr=1e-3 eval=data.eval eval_every=10",
};

/* ---- moving with the model (`to`, commands/device.c) --------------------------------------- */

/* An optimizer whose state is the moving model's (one made for a compute state the cache has
 * dropped since points at another, and is left alone: opt_arg refuses it anyway). */
static int moves_with(const to_optim *o, const fw_move *mv) {
    return o && to_model(o) == fw_move_model(mv) && to_backend(o) == fw_move_from(mv);
}

/* The user's names for optimizer value v (variables holding it), into b; 0 when none. */
static int opt_names(lp_call *c, const op_value *v, sbuf *b) {
    lv_value *vars = lp_call_interp(c)->vars;
    int n = 0;
    for (size_t i = 0; vars && i < vars->u.dict.n; i++) {
        lv_value *x = vars->u.dict.e[i].val;
        if (x && lv_opaque_ptr(x, &lv_optimizer_type) == v)
            sb_printf(b, "%s%s", n++ ? "/" : "", vars->u.dict.e[i].key);
    }
    return n;
}

int cmd_train_move_copy(lp_call *c, fw_move *mv, sbuf *what) {
    int unnamed = 0;
    for (op_value *v = live_opts; v; v = v->next) {
        if (!moves_with(v->o, mv)) continue;
        if (to_move_copy(v->o, mv) < 0) return -1;
        sbuf nm;
        sb_init(&nm);
        if (opt_names(c, v, &nm)) sb_printf(what, ", optimizer %s", sb_str(&nm));
        else unnamed++;
        sb_free(&nm);
    }
    if (unnamed) sb_printf(what, ", %d unnamed optimizer%s", unnamed, unnamed > 1 ? "s" : "");
    for (int i = 0; i < RUNS_MAX; i++) {
        if (!runs[i].model || !moves_with(runs[i].o, mv)) continue;
        if (to_move_copy(runs[i].o, mv) < 0) return -1;
        sb_printf(what, ", the `train` run (step %ld)", to_steps(runs[i].o));
    }
    return 0;
}

void cmd_train_move_commit(const fw_move *mv) {
    for (op_value *v = live_opts; v; v = v->next)
        if (moves_with(v->o, mv)) to_move_commit(v->o, mv);
    for (int i = 0; i < RUNS_MAX; i++)
        if (runs[i].model && moves_with(runs[i].o, mv)) to_move_commit(runs[i].o, mv);
}
