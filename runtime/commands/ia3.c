/* ia3.c (commands) — `ia3`: PEFT's IA3 on a loaded model (runtime/train/lora.h, tr_ia3_add).
 * The other adapter commands (save_adapter, load_adapter, adapter, merge) take IA3 adapters
 * as they take LoRA ones. */
#include <string.h>

#include "commands/compute.h"
#include "commands/model.h"
#include "lang/registry.h"
#include "train/lora.h"
#include "util/err.h"
#include "util/mem.h"

/* PEFT's TRANSFORMERS_MODELS_TO_IA3_TARGET_MODULES_MAPPING and its feed-forward twin
 * (peft 0.21, utils/constants.py), for the model types loupe runs. */
typedef struct ia3_default {
    const char *model_type;
    const char *targets[3];
    const char *ff;
} ia3_default;

static const ia3_default defaults[] = {
    {"llama", {"k_proj", "v_proj", "down_proj"}, "down_proj"},
    {"mistral", {"k_proj", "v_proj", "down_proj"}, "down_proj"},
    {"qwen2", {"q_proj", "v_proj", "down_proj"}, "down_proj"},
    {"qwen3", {"q_proj", "v_proj", "down_proj"}, "down_proj"},
    {"gemma", {"q_proj", "v_proj", "down_proj"}, "down_proj"},
    {"gemma2", {"q_proj", "v_proj", "down_proj"}, "down_proj"},
    {"gemma3_text", {"q_proj", "v_proj", "down_proj"}, "down_proj"},
    {"gpt2", {"c_attn", "mlp.c_proj"}, "mlp.c_proj"},
    {"bert", {"key", "value", "output.dense"}, "output.dense"},
};

static const ia3_default *default_for(fw_model *fm) {
    const mdl_config *mc = fw_mdl(fm)->config;
    const char *mt = mc && mc->model_type ? mc->model_type : "";
    for (size_t i = 0; i < sizeof defaults / sizeof defaults[0]; i++)
        if (!strcmp(defaults[i].model_type, mt)) return &defaults[i];
    return NULL;
}

static int run_ia3(lp_call *c, lv_value **result) {
    (void)result;
    fw_model *fm = cmd_compute(c, "model", 0);
    if (!fm) return -1;
    tr_ia3_config cfg = {0};
    cfg.name = lp_arg_str(c, "name");
    cfg.seed = (uint64_t)lp_arg_int(c, "seed");
    cfg.random_init = !lp_arg_bool(c, "init");
    const char **names = NULL, **ff = NULL, **mts = NULL;
    int t_str = 0, ff_str = 0, ms_str = 0;
    if (cmd_names(c, "target", &names, &cfg.ntargets, &t_str) < 0) return -1;
    if (cmd_names(c, "feedforward", &ff, &cfg.nff, &ff_str) < 0 ||
        cmd_names(c, "modules_to_save", &mts, &cfg.nmts, &ms_str) < 0) {
        lp_free(names);
        lp_free(ff);
        return -1;
    }
    const ia3_default *d = default_for(fm);
    static const char *const none[] = {NULL};
    int rc = 0;
    if (!names && !d) {
        rc = lp_fail(c, "ValueError", "PEFT has no default IA3 targets for this model type: "
                     "give target=[...] and feedforward=[...]");
    } else if (!names) {
        cfg.targets = d->targets;
        cfg.ntargets = d->targets[2] ? 3 : 2;
    } else if (t_str && !strcmp(names[0], "all-linear")) {
        cfg.all_linear = 1;
        cfg.ntargets = 0;
    } else {
        cfg.targets = names;
        cfg.target_regex = t_str;
    }
    if (!rc && ff) {
        cfg.ff = ff;
        cfg.ff_regex = ff_str;
    } else if (!rc && !names) {
        cfg.ff = &d->ff;
        cfg.nff = 1;
    } else if (!rc && d) {   /* PEFT: the model type's feed-forward modules, when targeted */
        cfg.ff = &d->ff;
        cfg.nff = 1;
        int targeted = cfg.all_linear || cfg.target_regex;
        for (size_t i = 0; i < cfg.ntargets && !targeted; i++) targeted = !strcmp(names[i], d->ff);
        if (!targeted) cfg.ff = none, cfg.nff = 0;
    } else if (!rc) {
        rc = lp_fail(c, "ValueError", "PEFT has no default feed-forward modules for this model "
                     "type: give feedforward=[...] (or [] for none)");
    }
    cfg.modules_to_save = mts;
    if (!rc && cmd_filter(c, &cfg.filter) < 0) rc = -1;
    if (!rc && tr_ia3_add(fm, &cfg) < 0) rc = lp_fail(c, "ValueError", "%s", lp_geterr());
    cmd_filter_free(&cfg.filter);
    lp_free(names);
    lp_free(ff);
    lp_free(mts);
    if (rc < 0) return -1;
    char buf[256];
    tr_report(fm, buf, sizeof buf, NULL, NULL);
    lp_out_text(c, 1, buf, strlen(buf));
    lp_out_text(c, 1, "\n", 1);
    return 0;
}

static const lp_param model_param[] = {
    {"model", LP_T_VALUE, .vtype = &lv_model_type, .help = "a loaded model"}, {0}};

static const lp_param ia3_opts[] = {
    {"target", LP_T_ANY, .def = "none",
     .help = "module names (a name matches itself or a .suffix), a regex string (full match), or "
             "\"all-linear\"; default as PEFT: k_proj, v_proj, down_proj (Llama, Mistral), "
             "q_proj, v_proj, down_proj (Qwen2, Qwen3, Gemma 1–3), c_attn, mlp.c_proj (GPT-2), key, value, "
             "output.dense (BERT)", .hf = "target_modules"},
    {"feedforward", LP_T_ANY, .def = "none",
     .help = "targets whose input is scaled instead of their output (a name matches any module "
             "ending with it, as PEFT), or a regex; default: the model type's (down_proj, "
             "mlp.c_proj, output.dense) when targeted", .hf = "feedforward_modules"},
    CMD_FILTER_OPTS,
    {"init", LP_T_BOOL, .def = "true",
     .help = "true: vectors of ones (the model is unchanged until it trains); false: N(0, 1)",
     .hf = "init_ia3_weights"},
    {"name", LP_T_STRING, .def = "\"default\"", .help = "adapter name (several may coexist)",
     .hf = "adapter_name"},
    {"seed", LP_T_INT, .def = "0", .help = "seed of init=false's draws"},
    {"modules_to_save", LP_T_ANY, .def = "none",
     .help = "modules trained whole and saved with the adapter (PEFT's; e.g. [\"classifier\"])"},
    {0}};

const lp_command lp_cmd_ia3 = {
    "ia3", model_param, ia3_opts, run_ia3,
    .summary = "Attach an IA3 adapter (as PEFT): one learned vector rescales each target",
    .help = "IA3 (Liu et al. 2022, \"(IA)^3\") learns one vector l per targeted Linear: the\n"
            "output becomes (W·x + b)·l, or for a feed-forward target W·(x·l) + b. The vectors\n"
            "start at ones, so the model is unchanged until it trains; far fewer parameters\n"
            "train than with LoRA. Prints PEFT's trainable line. One adapter type per model.\n"
            "Example:\n"
            "    ia3 model\n"
            "    # trainable params: 192 || all params: 35,168 || trainable%: 0.5460\n"
            "    ia3 model target=[\"k_proj\", \"v_proj\", \"down_proj\"] feedforward=[\"down_proj\"]",
};
