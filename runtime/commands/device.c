/* device.c (commands) — `to MODEL DEVICE`: move a loaded model to the CPU or a GPU, as
 * PyTorch's model.to("cuda").
 *
 * The model value keeps its device (commands/model.h, mv_device); the compute state behind it
 * (f32 weights, adapters, gradients, activations: commands/compute.h) lives on that device.
 * Moving copies the live state — the weights as they are now (merged, trained), every adapter,
 * the gradient slots of unfrozen weights, and the state of every optimizer and `train` run over
 * the model — to the new device, then frees the old (nn/migrate.h). Everything is allocated on
 * the new device before anything is freed, so running out of memory there leaves the model as
 * it was. Activations are not moved: a forward made before the move is no longer current. */
#include <stdio.h>
#include <string.h>

#include "commands/compute.h"
#include "commands/model.h"
#include "lang/registry.h"
#include "nn/migrate.h"
#include "train/lora.h"
#include "util/err.h"
#include "util/sbuf.h"

/* What the model's own state holds, for the message: ", weights, adapter default, …". */
static void describe_model(fw_model *fm, sbuf *b) {
    const fw_weight *w;
    size_t nw = fw_loaded_weights(fm, &w), unfrozen = 0;
    sb_puts(b, ", weights");
    for (size_t i = 0; i < nw; i++) unfrozen += w[i].grad != NULL;
    const char *names[64];
    size_t n = nw ? tr_adapter_names(fm, names, 64, NULL) : 0;
    for (size_t i = 0; i < n && i < 64; i++)
        sb_printf(b, "%s%s", i ? ", " : n > 1 ? ", adapters " : ", adapter ", names[i]);
    if (n > 64) sb_printf(b, " and %zu more", n - 64);
    if (unfrozen) sb_printf(b, ", %zu trainable weight%s", unfrozen, unfrozen > 1 ? "s" : "");
}

/* The error without the allocator's hint, which is about activations ("try a smaller batch or
 * sequence") where a move needs room for the whole state. */
static const char *without_hint(char *buf, size_t cap) {
    const char *e = lp_geterr(), *hint = strstr(e, "; try a smaller batch");
    snprintf(buf, cap, "%.*s", hint ? (int)(hint - e) : (int)strlen(e), e);
    return buf;
}

/* Move fm (the compute state of v) to `to`; 0 with what moved in `what`, or -1 after lp_fail
 * with nothing changed. */
static int move_compute(lp_call *c, lv_value *v, fw_model *fm, const be_backend *to,
                        const char *from, sbuf *what) {
    fw_move *mv = fw_move_new(fm, to);
    if (!mv) return lp_fail(c, "MemoryError", "%s", lp_geterr());
    const fw_weight *w;
    if (fw_loaded_weights(fm, &w)) describe_model(fm, what);
    if (fw_move_prepare(mv) < 0 || cmd_train_move_copy(c, mv, what) < 0) {
        char why[LP_ERR_MAX];
        without_hint(why, sizeof why);
        fw_move_abort(mv);
        return lp_fail(c, "MemoryError", "moving to %s: %s; the model stays on %s", to->name, why,
                       from);
    }
    size_t bytes = fw_move_bytes(mv);
    cmd_train_move_commit(mv);
    fw_move_commit(mv);
    cmd_compute_moved(v);
    if (bytes) {
        sb_puts(what, " (");
        sb_bytes(what, bytes);
        sb_putc(what, ')');
    }
    return 0;
}

static int run_to(lp_call *c, lv_value **result) {
    (void)result;
    lv_value *v = lp_arg(c, "model");
    char why[600];
    const char *dev = mv_check_device(lp_arg_str(c, "device"), why, sizeof why);
    if (!dev) return lp_fail(c, "ValueError", "%s", why);
    const char *from = mv_device(v);
    sbuf msg;
    sb_init(&msg);
    if (!strcmp(from, dev)) {
        sb_printf(&msg, "already on %s\n", dev);
    } else {
        fw_model *fm = cmd_compute_peek(v);
        sbuf what;
        sb_init(&what);
        if (fm && move_compute(c, v, fm, be_get_dtype(dev, mv_dtype(v)), from, &what) < 0) {
            sb_free(&what);
            sb_free(&msg);
            return -1;
        }
        mv_set_device(v, dev);
        const fw_weight *w;
        if (!fm || !fw_loaded_weights(fm, &w))   /* nothing computed yet */
            sb_printf(&msg, "moved to %s (weights are copied there by the next forward)", dev);
        else
            sb_printf(&msg, "moved to %s", dev);
        /* what.s is ", item, item (N MB)" */
        sb_printf(&msg, "%s%s\n", what.len ? ": " : "", what.len ? sb_str(&what) + 2 : "");
        sb_free(&what);
        size_t nw = fm ? fw_loaded_weights(fm, &w) : 0, half = 0;
        for (size_t i = 0; i < nw; i++) half += w[i].half != 0;
        if (half)   /* the device stores bf16 (CUDA with dtype="bf16" or LOUPE_CUDA_BF16=1) */
            sb_printf(&msg, "%zu frozen weight%s stored as bf16 there; unfreeze makes one f32\n",
                      half, half > 1 ? "s" : "");
    }
    if (msg.oom) {   /* the move is done: say so without the details rather than fail */
        char line[64];
        int n = snprintf(line, sizeof line, "%s %s\n", strcmp(from, dev) ? "moved to" : "already on",
                         dev);
        lp_out_text(c, 1, line, (size_t)n);
    } else {
        lp_out_text(c, 1, sb_str(&msg), msg.len);
    }
    sb_free(&msg);
    return 0;
}

static const lp_param to_params[] = {
    {"model", LP_T_VALUE, .vtype = &lv_model_type, .help = "a model"},
    {"device", LP_T_STRING, .help = "\"cpu\" or \"cuda\" (\"cuda:0\" too)"},
    {0}};
const lp_command lp_cmd_to = {
    "to", to_params, NULL, run_to,
    .summary = "Move a model to another device (model.to(\"cuda\"))",
    .help = "Moves what the model holds now: its weights as they are (merged adapters and\n"
            "trained weights included), every adapter (active, enabled or not, merged or not),\n"
            "unfrozen weights with their gradients, and the state of the optimizers and the\n"
            "`train` run over it, so training goes on there with the same numbers. The output\n"
            "says what moved. A model that has not computed yet is copied by the next command\n"
            "that does. A device this build or machine lacks, or too little memory there, is\n"
            "an error and the model stays where it was. Outputs of earlier forwards are not\n"
            "moved: run forward again before backward.\n"
            "Example:\n"
            "    m = load \"models/gemma-2-2b\"\n"
            "    lora m r=8 target=[\"q_proj\", \"v_proj\"]\n"
            "    to m \"cuda\"\n"
            "    m.device",
};
