/* optim.h — optimizers (AdamW, SGD with momentum), learning-rate schedules, gradient clipping
 * and accumulation over a model's trainable parameters (train/params.h).
 *
 *   to_config cfg;
 *   to_config_default(&cfg, TO_ADAMW);          // lr 2e-4, betas (0.9, 0.999), eps 1e-8, wd 0.01
 *   cfg.sched = (to_schedule){TO_SCHED_LINEAR, .warmup = 10, .total = 200};
 *   to_optim *o = to_new(fm, &cfg);
 *   to_zero_grad(o);  fw_forward(…FW_KEEP…);  backward;  to_step(o, &info);
 *   info.step, info.lr, info.grad_norm
 *
 * Semantics, each checked against the library a Hugging Face user would call:
 *  - AdamW = torch.optim.AdamW(foreach=False) with torch's defaults except lr (loupe: 2e-4, the
 *    PEFT tutorials' value); SGD = torch.optim.SGD(momentum, dampening 0, no nesterov).
 *    The per-tensor update is the backend's adamw_step / sgd_step (nn/ops.h).
 *  - Schedules are transformers' get_{constant,linear,cosine}_schedule_with_warmup: a factor
 *    λ(k) of the base lr for the k-th optimizer step counted from 0 (LambdaLR's last_epoch),
 *    so with warmup > 0 the FIRST step runs at lr 0, exactly as the Trainer does.
 *  - Clipping: torch.nn.utils.clip_grad_norm_ over all trainable grads (max_norm ≤ 0: off,
 *    the norm is still measured and reported).
 *  - Accumulation is the caller's: grads add up over micro-batches (backward accumulates), the
 *    caller scales each micro-batch's loss gradient, and calls to_step once.
 * A non-finite gradient norm stops the step before any parameter changes (-1, lp_seterr); so
 * does a clip the device had no scratch memory for (backend.h, op_failed).
 *
 * The optimizer keeps one m/v (or momentum) buffer per parameter, indexed like the model's
 * tr_params. When that list changes (a `lora`, `unfreeze`, … after the optimizer was made) the
 * state is rebuilt at the next step: buffers of parameters with the same name and size are
 * kept, new parameters start at zero (and at their own step count 0, as torch's lazily made
 * state does). */
#ifndef LOUPE_TRAIN_OPTIM_H
#define LOUPE_TRAIN_OPTIM_H
#include <stddef.h>

#include "nn/forward.h"
#include "nn/migrate.h"

typedef enum { TO_SCHED_CONSTANT, TO_SCHED_LINEAR, TO_SCHED_COSINE } to_sched_kind;

typedef struct to_schedule {
    to_sched_kind kind;
    int warmup;          /* steps of linear warmup from 0 */
    int total;           /* num_training_steps (linear, cosine) */
    double cycles;       /* cosine: num_cycles (transformers' default 0.5) */
} to_schedule;

/* transformers' lr_lambda(current_step): the factor for the optimizer step `k` (0-based). */
double to_lr_factor(const to_schedule *s, long k);
/* "constant", "linear", "cosine" → kind; -1 for anything else. */
int to_sched_parse(const char *name);
const char *to_sched_name(to_sched_kind k);

typedef enum { TO_ADAMW, TO_SGD } to_kind;

typedef struct to_config {
    to_kind kind;
    double lr;
    double beta1, beta2, eps;      /* AdamW */
    double momentum;               /* SGD */
    double weight_decay;
    double clip;                   /* max grad norm; <= 0: no clipping */
    to_schedule sched;
} to_config;

void to_config_default(to_config *c, to_kind kind);

typedef struct to_optim to_optim;

typedef struct to_info {
    long step;           /* steps done, this one included (1 after the first) */
    double lr;           /* the lr this step used */
    double grad_norm;    /* global 2-norm before clipping */
} to_info;

/* An optimizer over fm's trainable parameters (fm borrowed: it must outlive the optimizer).
 * NULL + lp_seterr on OOM. */
to_optim *to_new(fw_model *fm, const to_config *cfg);
void      to_free(to_optim *o);

/* Zero every trainable grad (before the first micro-batch of a step). */
void to_zero_grad(to_optim *o);
/* Clip, update every parameter with the scheduled lr, count the step. -1 + lp_seterr when there
 * is nothing to train, the grads are not finite (nothing changed), or on OOM. */
int  to_step(to_optim *o, to_info *info);
/* The lr the next step will use. */
double to_next_lr(const to_optim *o);
long   to_steps(const to_optim *o);
const to_config *to_cfg(const to_optim *o);
to_config *to_cfg_mut(to_optim *o);    /* `train` sets the schedule length of its run */
fw_model *to_model(const to_optim *o);
const be_backend *to_backend(const to_optim *o);   /* where its state lives */

/* Moving the model to another device (nn/migrate.h): copy the state (m, v) of an optimizer over
 * fw_move_model(mv) to the new device (-1 + lp_seterr on OOM: abort the move), then, once
 * every copy is made, point the optimizer at the copies and the new backend (before
 * fw_move_commit). Step counts, the schedule's position and the settings are unchanged, so
 * the next step is the one the optimizer would have made on the old device. */
int  to_move_copy(to_optim *o, fw_move *mv);
void to_move_commit(to_optim *o, const fw_move *mv);

#endif
