/* test_train_loop.c — loupe's training loop against peft + torch, step by step.
 *
 * tests/fixtures/train/loss_curve_{lora,partial}.json (tools/make_optim_fixtures.py): 20 steps
 * of torch.optim.AdamW (lr 1e-2, weight_decay 0.01, clip_grad_norm_ 1.0, transformers'
 * linear schedule with 2 warmup steps) on tests/fixtures/models/llama, with the batches of
 * every step and the loss each step's forward gave. LoRA: peft r=4, alpha=8, q_proj + v_proj,
 * dropout 0, starting from the adapter peft saved before training (lora_init/: torch's
 * random A cannot be redrawn). Partial: only model.layers.1.* trainable. IA3:
 * tests/fixtures/ia3/loss_curve_ia3.json (tools/make_ia3_fixtures.py), the same loop with
 * peft IA3 (k_proj, v_proj, down_proj feed-forward; vectors start at ones). DoRA:
 * tests/fixtures/dora/loss_curve_dora.json (tools/make_dora_fixtures.py), LoRA r=4 on q_proj,
 * v_proj with use_dora, from the adapter peft saved before training (dora_init/).
 *
 * Here: the same loop as `train` — zero grads, fw_forward(FW_KEEP | FW_TRAIN), bw_backward,
 * to_step — and every step's loss within 1e-4 relative of torch's, also the grad norms (what
 * clipping used) and the lr of every step. The loss of step k depends on every update before
 * it, so this checks backward, clipping, AdamW and the schedule together. */
#include "t.h"
#include "t_device.h"
#include "t_json.h"

#include <jansson.h>
#include <stdlib.h>

#include "model/model.h"
#include "nn/backward.h"
#include "nn/forward.h"
#include "train/lora.h"
#include "train/optim.h"
#include "train/params.h"
#include "util/err.h"

enum { CURVE_PARTIAL, CURVE_LORA, CURVE_IA3, CURVE_DORA };

static void curve(const char *fixture, int kind) {
    json_error_t err;
    json_t *fx = json_load_file(fixture, 0, &err);
    T_CHECK(fx != NULL, "%s: %s", fixture, err.text);
    if (!fx) return;
    mdl_model *m = mdl_load(json_string_value(json_object_get(fx, "model")));
    T_CHECK(m != NULL, "%s", lp_geterr());
    if (!m) return;
    fw_model *fm = fw_new(m, t_device());
    T_OK(fm != NULL);
    if (kind == CURVE_LORA) {
        T_CHECK(tr_adapter_load(fm, "tests/fixtures/train/lora_init", NULL) == 0, "%s", lp_geterr());
    } else if (kind == CURVE_DORA) {   /* peft's DoRA init, as saved before training */
        T_CHECK(tr_adapter_load(fm, "tests/fixtures/dora/dora_init", NULL) == 0, "%s", lp_geterr());
    } else if (kind == CURVE_IA3) {   /* the `ia3` command's defaults for Llama: vectors of ones */
        static const char *const t[] = {"k_proj", "v_proj", "down_proj"}, *const ff = "down_proj";
        tr_ia3_config c = {.targets = t, .ntargets = 3, .ff = &ff, .nff = 1};
        T_CHECK(tr_ia3_add(fm, &c) == 0, "%s", lp_geterr());
    } else {
        size_t n = 0;
        T_CHECK(tr_freeze(fm, "model.layers.1.*", 1, &n) == 0, "%s", lp_geterr());
        T_OK(n > 0);
    }
    to_config cfg;
    t_json_adamw(fx, &cfg);
    to_optim *o = to_new(fm, &cfg);
    json_t *batches = json_object_get(fx, "batches"), *loss = json_object_get(fx, "loss");
    json_t *norms = json_object_get(fx, "grad_norm"), *lrs = json_object_get(fx, "lr_used");
    double worst = 0, worst_norm = 0, first = 0, last = 0;
    for (size_t s = 0; s < json_array_size(batches); s++) {
        json_t *bt = json_array_get(batches, s);
        int B, T;
        int32_t *ids = t_json_ints(json_object_get(bt, "ids"), &B, &T);
        int32_t *mask = t_json_ints(json_object_get(bt, "mask"), &B, &T);
        int32_t *labels = t_json_ints(json_object_get(bt, "labels"), &B, &T);
        to_zero_grad(o);
        fw_batch in = {.B = B, .T = T, .ids = ids, .mask = mask, .labels = labels,
                       .flags = FW_KEEP | FW_TRAIN};
        fw_out out;
        T_CHECK(fw_forward(fm, &in, &out) == 0, "%s", lp_geterr());
        T_CHECK(bw_backward(fm, 1.0f) == 0, "%s", lp_geterr());
        to_info info;
        T_CHECK(to_step(o, &info) == 0, "%s", lp_geterr());
        double want = json_number_value(json_array_get(loss, s));
        if (s == 0) first = out.loss;
        last = out.loss;
        T_NEAR(out.loss, want, 1e-4);
        T_NEAR(info.grad_norm, json_number_value(json_array_get(norms, s)), 1e-3);
        T_NEAR(info.lr, json_number_value(json_array_get(lrs, s)), 1e-12);
        double rel = fabs(out.loss - want) / fabs(want);
        if (rel > worst) worst = rel;
        double nw = json_number_value(json_array_get(norms, s));
        if (fabs(info.grad_norm - nw) / nw > worst_norm) worst_norm = fabs(info.grad_norm - nw) / nw;
        free(ids), free(mask), free(labels);
    }
    printf("%s: %zu steps, loss %.5f → %.5f (torch %.5f → %.5f), worst loss rel diff %.2e, "
           "worst grad-norm rel diff %.2e\n", fixture, json_array_size(batches),
           first, last, json_number_value(json_array_get(loss, 0)), json_number_value(json_array_get(loss, json_array_size(loss) - 1)),
           worst, worst_norm);
    to_free(o);
    fw_free(fm);
    mdl_free(m);
    json_decref(fx);
}

static void test_lora_curve(void) { curve("tests/fixtures/train/loss_curve_lora.json", CURVE_LORA); }
static void test_partial_curve(void) {
    curve("tests/fixtures/train/loss_curve_partial.json", CURVE_PARTIAL);
}
static void test_ia3_curve(void) { curve("tests/fixtures/ia3/loss_curve_ia3.json", CURVE_IA3); }
static void test_dora_curve(void) { curve("tests/fixtures/dora/loss_curve_dora.json", CURVE_DORA); }

int main(void) {
    printf("device %s\n", t_device()->name);
    T_RUN(test_lora_curve);
    T_RUN(test_partial_curve);
    T_RUN(test_ia3_curve);
    T_RUN(test_dora_curve);
    return t_done();
}
