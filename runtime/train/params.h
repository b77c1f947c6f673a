/* params.h — the trainable parameters of a model: what an optimizer updates.
 *
 * How an optimizer uses it (commands/train.c, train/optim.c):
 *   tr_params *P = tr_params_of(fm);          // owned by the model's compute state (fw_model)
 *   for each optimizer step:
 *       for each micro-batch i:
 *           fw_forward(fm, &(fw_batch){..., .flags = FW_KEEP | FW_TRAIN}, &out);
 *           bw_backward(fm, weight_i);        // nn/backward.h: ADDS d(weight_i·loss) into
 *                                             // every p->grad (weight 1 for one batch)
 *       double norm = tr_params_grad_norm(P, be);   // or nn_clip_grad_norm over (grad, numel)
 *       for (size_t i = 0; i < P->n; i++)     // update in place: data and grad are DEVICE f32
 *           be->adamw_step(P->p[i].data, m[i], v[i], P->p[i].grad, P->p[i].numel, ...);
 *       tr_params_zero_grad(P, be);           // grads accumulate until zeroed
 * `data` points at the live weight the forward reads (an adapter's lora_A / lora_B, or a base
 * weight the user unfroze, inside the model's f32 weight buffer), so an update is seen by the
 * next forward with nothing to copy. Optimizer state (m, v) is the optimizer's own, indexed
 * like P->p; the list changes only through `lora`, `freeze`, `unfreeze`, `load_adapter` and
 * `adapter` (set / delete / merge) — P->version increments each time, so an optimizer made
 * earlier notices (compare the version it saw) and rebuilds its state rather than update stale
 * pointers. Names are PEFT/HF names without the "base_model.model." prefix and without the
 * adapter name: "model.layers.0.self_attn.q_proj.lora_A.weight",
 * "model.layers.1.mlp.up_proj.weight". Order: model order, each module's adapter tensors right
 * after its own (unfrozen) weight. New gradient buffers start at zero. */
#ifndef LOUPE_TRAIN_PARAMS_H
#define LOUPE_TRAIN_PARAMS_H
#include <stddef.h>

#include "nn/forward.h"

typedef struct tr_param {
    char *name;          /* PEFT/HF name (see above), owned */
    float *data, *grad;  /* device f32 (numel), grad accumulated by the backward */
    size_t numel;
    int rows, cols;      /* 2-D shape as stored (vectors: rows = numel, cols = 1) */
    int is_adapter;      /* 1: lora_A / lora_B (f32, saved by save_adapter); 0: a base weight */
} tr_param;

typedef struct tr_params {
    tr_param *p;         /* [n] */
    size_t n;
    unsigned long version;   /* bumped whenever the list is rebuilt */
} tr_params;

/* The list of fm's trainable parameters (never NULL once fm exists: an empty list before any
 * `lora` / `unfreeze`). Rebuilt by the train module as adapters and freezes change. */
tr_params *tr_params_of(fw_model *fm);

/* Set every grad to zero (before each optimizer step's first backward). */
void tr_params_zero_grad(tr_params *P, const be_backend *be);

/* Global 2-norm over all grads (torch's clip_grad_norm_ total), computed on the host. */
double tr_params_grad_norm(const tr_params *P, const be_backend *be);

/* Number of trainable floats (PEFT's "trainable params"). */
size_t tr_params_count(const tr_params *P);

#endif
