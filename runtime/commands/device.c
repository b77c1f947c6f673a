/* device.c (commands) — `to MODEL DEVICE`: move a loaded model to the CPU or a GPU, as
 * PyTorch's model.to("cuda").
 *
 * The model value keeps its device (commands/model.h, mv_device); the compute state behind it
 * (f32 weights, activations: commands/compute.h) is made on that device by the next command
 * that computes. Moving therefore drops the compute state, which is only allowed while it
 * holds nothing that cannot be made again from the checkpoint: adapters and unfrozen weights
 * (and the optimizer state that goes with them) are refused with what to do instead. */
#include <stdio.h>
#include <string.h>

#include "commands/compute.h"
#include "commands/model.h"
#include "lang/registry.h"

static int run_to(lp_call *c, lv_value **result) {
    (void)result;
    lv_value *v = lp_arg(c, "model");
    char why[600];
    const char *dev = mv_check_device(lp_arg_str(c, "device"), why, sizeof why);
    if (!dev) return lp_fail(c, "ValueError", "%s", why);
    const char *from = mv_device(v);
    char msg[200];
    if (!strcmp(from, dev)) {
        int n = snprintf(msg, sizeof msg, "already on %s\n", dev);
        lp_out_text(c, 1, msg, (size_t)n);
        return 0;
    }
    if (cmd_compute_drop(v) < 0)
        return lp_fail(c, "ValueError",
                       "this model holds adapters or trainable weights on \"%s\"; moving them is "
                       "not supported: call `to` before `lora`/`unfreeze`, or save_adapter, load "
                       "the checkpoint again with device=\"%s\" and load_adapter", from, dev);
    mv_set_device(v, dev);
    int n = snprintf(msg, sizeof msg, "moved to %s (weights are copied there by the next forward)\n",
                     dev);
    lp_out_text(c, 1, msg, (size_t)n);
    return 0;
}

static const lp_param to_params[] = {
    {"model", LP_T_VALUE, .vtype = &lv_model_type, .help = "a model"},
    {"device", LP_T_STRING, .help = "\"cpu\" or \"cuda\""},
    {0}};
const lp_command lp_cmd_to = {
    "to", to_params, NULL, run_to,
    .summary = "Move a model to another device (model.to(\"cuda\"))",
    .help = "Later forward, generate, attention and training run there; the weights are copied\n"
            "by the next command that computes. A device this build or machine lacks is an\n"
            "error and the model stays where it was. A model that already holds adapters or\n"
            "unfrozen weights is not moved: call `to` first, or save the adapter, load the\n"
            "checkpoint with device= and load the adapter there.\n"
            "Example:\n"
            "    m = load \"models/gemma-2-2b\"\n"
            "    to m \"cuda\"\n"
            "    m.device",
};
