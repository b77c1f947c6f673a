/* backward.h — a model's backward pass: the gradients of the last forward's loss with respect
 * to every trainable tensor (LoRA A/B of enabled adapters, base weights the user unfroze).
 *
 *   fw_batch in = {..., .labels = labels, .flags = FW_KEEP | FW_TRAIN};
 *   fw_out out;
 *   fw_forward(fm, &in, &out);               // keeps every layer's state (FW_KEEP)
 *   tr_params_zero_grad(P, be);              // grads ACCUMULATE: zero once per optimizer step
 *   bw_backward(fm, 1.0f);                   // d(loss)/d(param) added into every grad slot
 *   // micro-batches: forward + bw_backward(fm, count_i / total_count) for each, then step
 *
 * What receives gradients: every fw_weight whose `grad` slot is set (train/params.c sets it
 * for unfrozen base weights) and every enabled fw_lora whose dA/dB are set. Frozen weights cost
 * no weight-gradient product (dW = NULL), and layers below the lowest trainable tensor are not
 * visited at all. The backward mirrors forward.c layer by layer using the FW_KEEP state
 * (docs/compute.md, "Model backward") and never recomputes a forward op.
 *
 * Errors (-1 + lp_seterr): no forward yet; the forward was not kept (FW_KEEP) or ran with
 * FW_LAST; it had no labels (no loss); out of memory for the scratch buffers (grads untouched),
 * or an op that could not get device scratch (be_backend.op_failed: the grads are then
 * partly added, and the caller zeroes them: the `backward` command and `train` do). A forward
 * whose every target was ignored (count 0) gives zero gradients and returns 0.
 *
 * Threads: like fw_forward, one thread per fw_model. */
#ifndef LOUPE_NN_BACKWARD_H
#define LOUPE_NN_BACKWARD_H
#include "nn/forward.h"

/* Backpropagate dloss · d(last loss). 0, or -1 + lp_seterr. */
int bw_backward(fw_model *fm, float dloss);

/* The loss and target count of the last forward (what bw_backward differentiates); -1 + lp_seterr
 * when there is none to differentiate. */
int bw_last_loss(const fw_model *fm, float *loss, int *count);

#endif
