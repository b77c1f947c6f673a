/* adalora.c (commands) — `adalora`: PEFT's AdaLoRA on a loaded model (runtime/train/lora.h,
 * tr_adalora_add). The optimizer runs its rank allocator after each step; save_adapter,
 * load_adapter, adapter and merge take AdaLoRA adapters as they take LoRA ones. */
#include <stdio.h>
#include <string.h>

#include "commands/compute.h"
#include "commands/model.h"
#include "lang/registry.h"
#include "train/lora.h"
#include "util/err.h"
#include "util/mem.h"

/* PEFT's TRANSFORMERS_MODELS_TO_ADALORA_TARGET_MODULES_MAPPING (peft 0.21) for the model types
 * loupe runs; Mistral is not in it (PEFT asks for target_modules). */
static int default_targets(fw_model *fm, const char *const **out, size_t *n) {
    static const char *const qv[] = {"q_proj", "v_proj"}, *const gpt2[] = {"c_attn"},
                             *const bert[] = {"query", "value"};
    const mdl_config *mc = fw_mdl(fm)->config;
    const char *mt = mc && mc->model_type ? mc->model_type : "";
    if (!strcmp(mt, "gpt2")) return *out = gpt2, *n = 1, 0;
    if (!strcmp(mt, "bert")) return *out = bert, *n = 2, 0;
    if (!strcmp(mt, "llama") || !strcmp(mt, "qwen2") || !strcmp(mt, "qwen3") ||
        !strcmp(mt, "gemma") || !strcmp(mt, "gemma2") || !strcmp(mt, "gemma3_text"))
        return *out = qv, *n = 2, 0;
    return -1;
}

static int run_adalora(lp_call *c, lv_value **result) {
    (void)result;
    fw_model *fm = cmd_compute(c, "model", 0);
    if (!fm) return -1;
    tr_adalora_config cfg = {0};
    cfg.name = lp_arg_str(c, "name");
    int64_t ir = lp_arg_int(c, "init_r"), tr = lp_arg_int(c, "target_r");
    int64_t ts = lp_arg_int(c, "total_step"), ti = lp_arg_int(c, "tinit"), tf = lp_arg_int(c, "tfinal");
    int64_t dt = lp_arg_int(c, "deltaT");
    const int64_t big = 1 << 30;
    if (ir > 1 << 16 || tr > 1 << 16 || ts > big || ti > big || tf > big || dt > big ||
        ir < -big || tr < -big || ts < -big || ti < -big || tf < -big || dt < -big)
        return lp_fail(c, "ValueError", "init_r, target_r and the step counts must be sensible "
                                        "integers (ranks up to 65536)");
    cfg.init_r = (int)ir, cfg.target_r = (int)tr, cfg.total_step = (int)ts;
    cfg.tinit = (int)ti, cfg.tfinal = (int)tf, cfg.delta_t = (int)dt;
    cfg.alpha = lp_arg_float(c, "alpha");
    cfg.dropout = lp_arg_float(c, "dropout");
    cfg.beta1 = lp_arg_float(c, "beta1");
    cfg.beta2 = lp_arg_float(c, "beta2");
    cfg.orth = lp_arg_float(c, "orth_reg_weight");
    cfg.random_init = !lp_arg_bool(c, "init");
    cfg.seed = (uint64_t)lp_arg_int(c, "seed");
    const char **names = NULL, **mts = NULL;
    int is_str = 0, ms_str;
    if (cmd_names(c, "target", &names, &cfg.ntargets, &is_str) < 0 ||
        cmd_names(c, "modules_to_save", &mts, &cfg.nmts, &ms_str) < 0) {
        lp_free(names);
        return -1;
    }
    int rc = 0;
    if (!names && default_targets(fm, &cfg.targets, &cfg.ntargets) < 0) {
        rc = lp_fail(c, "ValueError", "PEFT has no default AdaLoRA targets for this model type: "
                                      "give target=[\"q_proj\", \"v_proj\"]");
    } else if (names && is_str && !strcmp(names[0], "all-linear")) {
        cfg.all_linear = 1;
        cfg.ntargets = 0;
    } else if (names) {
        cfg.targets = names;
        cfg.target_regex = is_str;
    }
    cfg.modules_to_save = mts;
    if (!rc && cmd_filter(c, &cfg.filter) < 0) rc = -1;
    if (!rc && tr_adalora_add(fm, &cfg) < 0) rc = lp_fail(c, "ValueError", "%s", lp_geterr());
    cmd_filter_free(&cfg.filter);
    lp_free(names);
    lp_free(mts);
    if (rc < 0) return -1;
    char buf[320];
    tr_report(fm, buf, sizeof buf, NULL, NULL);
    lp_out_text(c, 1, buf, strlen(buf));
    int ranks[1];
    size_t n = tr_adalora_status(fm, NULL, NULL, ranks, NULL, 0);
    int end = cfg.total_step - cfg.tfinal;
    int len = snprintf(buf, sizeof buf,
                       "\nrank budget: %zu modules × %d = %zu, falling to %zu × %d = %zu between "
                       "steps %d and %d (every %d step%s), then kept\n",
                       n, cfg.init_r, n * (size_t)cfg.init_r, n, cfg.target_r,
                       n * (size_t)cfg.target_r, cfg.tinit, end, cfg.delta_t,
                       cfg.delta_t == 1 ? "" : "s");
    lp_out_text(c, 1, buf, (size_t)len);
    return 0;
}

static const lp_param model_param[] = {
    {"model", LP_T_VALUE, .vtype = &lv_model_type, .help = "a loaded model"}, {0}};

static const lp_param adalora_opts[] = {
    {"total_step", LP_T_INT, .def = "0",
     .help = "the optimizer steps the run will take (required, as PEFT's)"},
    {"init_r", LP_T_INT, .def = "12", .help = "every module's rank at the start"},
    {"target_r", LP_T_INT, .def = "8", .help = "the average rank left at the end"},
    {"alpha", LP_T_FLOAT, .def = "8",
     .help = "the update is scaled by alpha/init_r (PEFT: lora_alpha / ranknum)", .hf = "lora_alpha"},
    {"dropout", LP_T_FLOAT, .def = "0", .help = "dropout on the adapter's input while training",
     .hf = "lora_dropout"},
    {"target", LP_T_ANY, .def = "none",
     .help = "module names (a name matches itself or a .suffix), a regex string (full match), or "
             "\"all-linear\"; default as PEFT: q_proj, v_proj (c_attn for GPT-2, query, value for "
             "BERT)", .hf = "target_modules"},
    CMD_FILTER_OPTS,
    {"tinit", LP_T_INT, .def = "0", .help = "steps at the full rank before any is removed"},
    {"tfinal", LP_T_INT, .def = "0", .help = "steps at the end with the ranks fixed"},
    {"deltaT", LP_T_INT, .def = "1", .help = "reallocate every deltaT steps"},
    {"beta1", LP_T_FLOAT, .def = "0.85", .help = "EMA factor of the sensitivity |w·grad|"},
    {"beta2", LP_T_FLOAT, .def = "0.85", .help = "EMA factor of its uncertainty"},
    {"orth_reg_weight", LP_T_FLOAT, .def = "0.5",
     .help = "weight of the penalty keeping A's rows and B's columns orthonormal"},
    {"init", LP_T_BOOL, .def = "true",
     .help = "true: A, B ~ N(0, 0.02), E = 0 (the model is unchanged at first); false: all N(0, 1)",
     .hf = "init_lora_weights"},
    {"name", LP_T_STRING, .def = "\"default\"", .help = "adapter name", .hf = "adapter_name"},
    {"seed", LP_T_INT, .def = "0", .help = "seed of the initialisation"},
    {"modules_to_save", LP_T_ANY, .def = "none",
     .help = "modules trained whole and saved with the adapter (PEFT's; e.g. [\"classifier\"])"},
    {0}};

const lp_command lp_cmd_adalora = {
    "adalora", model_param, adalora_opts, run_adalora,
    .summary = "Attach an AdaLoRA adapter (as PEFT): LoRA whose rank moves to where it helps",
    .help = "AdaLoRA (Zhang et al. 2023) writes each update as B·diag(E)·A, E a column of init_r\n"
            "learned singular values. After every optimizer step it scores each (A row, E value,\n"
            "B column) by how much the loss depends on it and, between steps tinit and\n"
            "total_step - tfinal, sets the lowest-scoring E values to zero until the ranks left\n"
            "average target_r. The loss gets orth_reg_weight times a penalty that keeps A and B\n"
            "orthogonal. Prints PEFT's trainable line and the rank budget. `trainable model`\n"
            "shows the ranks each module keeps.\n"
            "Example:\n"
            "    adalora model init_r=12 target_r=4 total_step=100 tinit=10 tfinal=20\n"
            "    train model data steps=100 lr=1e-3\n"
            "    trainable model     # the ranks each module kept",
};
