/* lora.h — LoRA and IA3 adapters as PEFT makes them, partial fine-tuning, and PEFT's adapter files.
 *
 *   tr_lora_config c = {.name = "default", .r = 8, .alpha = 16, .dropout = 0.05,
 *                       .targets = (const char *[]){"q_proj", "v_proj"}, .ntargets = 2};
 *   tr_lora_add(fm, &c);          // made active and trainable; tr_params_of(fm) lists A and B
 *   tr_freeze(fm, "model.layers.1.*", 0, &n);   // unfreeze: base weights get gradient slots
 *   tr_report(fm, buf, sizeof buf);   // "trainable params: 896 || all params: 35,872 || ..."
 *   tr_adapter_save(fm, NULL, "out/adapter");   // adapter_config.json + adapter_model.safetensors
 *   tr_adapter_load(fm, "out/adapter", "default");
 *
 * PEFT semantics (peft 0.21, src/peft/tuners/lora, tuners_utils.py):
 *  - Targets: a list matches a module whose name equals an entry or ends with "." + entry; a
 *    string is a regex that must match the whole name (Python syntax; `\d` and `(?:` are
 *    translated to POSIX ERE); "all-linear" is every Linear / Conv1D but the output layer
 *    (lm_head, BERT's MLM decoder; the classifier, as PEFT with task_type SEQ_CLS). The BERT
 *    pooler, classifier and layer projections can be targeted; lm_head cannot (error).
 *  - A [r, in], B [out, r]; scale alpha/r, rsLoRA alpha/√r. init "true": A ~ U(±1/√in)
 *    (kaiming_uniform with a = √5: gain √(2/(1+5)) · √(3/in) = 1/√in), B = 0; "gaussian":
 *    A ~ N(0, 1/r), B = 0. loupe's generator, not torch's: same distributions, other draws.
 *  - DoRA (use_dora, peft's tuners/lora/dora.py): a magnitude m (out) per target, at init
 *    ‖W‖ per output channel; the output is rescaled by m/‖W + scale·B·A‖ (fw_lora.dora).
 *  - rank_pattern / alpha_pattern: per-module r and lora_alpha, a key matching a module as
 *    PEFT's get_pattern_key (re.match of (.*\.)?(key)$, the first key in order that does).
 *  - bias: "none", "all" or "lora_only": those base biases train in place (they stay as
 *    trained when the adapter is disabled, as PEFT's; deleting it freezes them again) and
 *    are saved with it ("<module>.base_layer.bias" on an adapted module, else the name). modules_to_save: the
 *    module's weights are trained in place, the checkpoint's kept on the host and put back
 *    when the adapter is disabled or deleted; "all params" counts both copies, as PEFT.
 *  - Several named adapters: one is active (trainable, counted in tr_params); others may be
 *    enabled (their term still added, frozen) or disabled.
 *  - Saved names: "base_model.model." + module + ".lora_A.weight" / ".lora_B.weight",
 *    metadata {"format": "pt"}; adapter_config.json with every key peft 0.21.2 writes. */
#ifndef LOUPE_TRAIN_LORA_H
#define LOUPE_TRAIN_LORA_H
#include <stddef.h>
#include <stdint.h>

#include "nn/forward.h"

/* PEFT's exclude_modules, layers_to_transform and layers_pattern (LoraConfig, IA3Config and
 * AdaLoraConfig alike; tuners_utils.check_target_module_exists): a module matching exclude
 * (a name, equal or a "." suffix, or one regex matching the whole name) is never adapted; with
 * layers, a module matched through a target's suffix (or "all-linear") is adapted only in those
 * layers. A module's layer is its first numbered segment (`model.layers.3.…` → 3), after a
 * segment matching one of layers_pattern when given ("layers", "h"); a module named in full in
 * the targets, or matched by a target regex, ignores layers, as PEFT. */
typedef struct tr_filter {
    const char *const *exclude;  /* [nexclude] names, or one regex (exclude_regex) */
    size_t nexclude;
    int exclude_regex;
    const int *layers;           /* [nlayers] layer indices (none: every layer) */
    size_t nlayers;
    const char *const *layers_pattern;   /* [npattern] regexes of the layer list's name */
    size_t npattern;
} tr_filter;

typedef struct tr_lora_config {
    const char *name;            /* adapter name; NULL = "default" */
    int r;                       /* > 0 */
    double alpha;                /* lora_alpha; PEFT's default is 8 */
    double dropout;              /* [0, 1) */
    int rslora;
    int dora;                    /* use_dora: PEFT's DoRA (a magnitude per output channel) */
    const char *bias;            /* PEFT's bias: NULL / "none", "all" (every base bias trains,
                                    in place, saved with the adapter), "lora_only" (the adapted
                                    modules' biases) */
    const char *const *rank_keys;   /* rank_pattern: [nrank] keys (Python regexes, matched as */
    const int *rank_vals;           /*  PEFT's get_pattern_key) and each one's r */
    size_t nrank;
    const char *const *alpha_keys;  /* alpha_pattern: [nalpha] keys and each one's lora_alpha */
    const double *alpha_vals;
    size_t nalpha;
    const char *init;            /* NULL / "true" / "gaussian" */
    const char *const *targets;  /* [ntargets] names, or one regex (target_regex) */
    size_t ntargets;
    int target_regex;            /* targets[0] is a regex (PEFT: target_modules given as str) */
    int all_linear;              /* target_modules = "all-linear" */
    uint64_t seed;               /* initialiser seed */
    tr_filter filter;            /* exclude_modules, layers_to_transform, layers_pattern */
    const char *const *modules_to_save;   /* [nmts] PEFT's modules_to_save (e.g. "classifier"):
                                             trained whole, saved with the adapter, the
                                             checkpoint's values back when it is off */
    size_t nmts;
} tr_lora_config;

/* Add an adapter (error when the name exists, nothing matches, or a target cannot be adapted);
 * it becomes the active one. */
int tr_lora_add(fw_model *fm, const tr_lora_config *cfg);

/* IA3 as PEFT's (peft 0.21, src/peft/tuners/ia3): one trainable vector ia3_l per target,
 * ones at init; a target's output is scaled (ia3_l (out, 1); the bias too), a feed-forward
 * target's input instead (ia3_l (1, in)). Targets match as LoRA's; feed-forward modules by a
 * plain suffix (PEFT's key.endswith, no dot needed) or a full regex, and, as lists, must be
 * among the targets. One adapter type per model (LoRA or IA3), as PEFT. */
typedef struct tr_ia3_config {
    const char *name;            /* NULL = "default" */
    const char *const *targets;  /* as tr_lora_config */
    size_t ntargets;
    int target_regex, all_linear;
    const char *const *ff;       /* feedforward_modules: [nff] names, or one regex */
    size_t nff;
    int ff_regex;
    int random_init;             /* PEFT's init_ia3_weights=False: N(0, 1) instead of ones */
    tr_filter filter;
    uint64_t seed;
    const char *const *modules_to_save;
    size_t nmts;
} tr_ia3_config;
int tr_ia3_add(fw_model *fm, const tr_ia3_config *cfg);

/* AdaLoRA as PEFT's (peft 0.21, src/peft/tuners/adalora): on each target ΔW = B·(A ⊙ E)·alpha /
 * (init_r + 1e-5), A (r, in), B (out, r), E (r, 1) the singular values; A, B ~ N(0, 0.02) and
 * E = 0 at init (init false: all N(0, 1)); alpha = lora_alpha, or r when it is 0. Every
 * forward given labels adds orth · mean over A and B of ‖PPᵀ − I‖_F to the loss (and its
 * gradient to the backward). After each optimizer step the rank allocator runs as PEFT's
 * update_and_allocate(step) (step counted from 0): EMAs of |p·grad| and of its deviation
 * score each triplet (A row, E value, B column); from tinit to total_step − tfinal the budget
 * falls cubically from init_r to target_r per module (on steps divisible by deltaT), the
 * lowest-scoring E values are set to 0; afterwards that pattern stays. One trainable AdaLoRA
 * adapter per model, and no other adapter type beside it (PEFT). */
typedef struct tr_adalora_config {
    const char *name;            /* NULL = "default" */
    int init_r, target_r;        /* PEFT: 12, 8 */
    double alpha, dropout;       /* lora_alpha (8), lora_dropout (0) */
    int tinit, tfinal, delta_t, total_step;   /* total_step > 0 required, as PEFT */
    double beta1, beta2, orth;   /* 0.85, 0.85, orth_reg_weight 0.5 */
    int random_init;             /* init_lora_weights=False */
    const char *const *targets;  /* as tr_lora_config */
    size_t ntargets;
    int target_regex, all_linear;
    tr_filter filter;
    uint64_t seed;
    const char *const *modules_to_save;
    size_t nmts;
} tr_adalora_config;
int tr_adalora_add(fw_model *fm, const tr_adalora_config *cfg);

/* What the active AdaLoRA adapter's allocator has done: steps so far, the last budget (-1:
 * none yet), the ranks each module keeps now and its name (borrowed; into ranks[cap],
 * modules[cap] when not NULL), the count of modules returned (0 when the active adapter is not
 * AdaLoRA). */
size_t tr_adalora_status(fw_model *fm, long *step, int *budget, int *ranks,
                         const char **modules, size_t cap);
/* One line on it for the end of a `train` run ("AdaLoRA ranks 96 of 288"; while the
 * schedule still cuts, which step of total_step it is at); its length, 0 when the active
 * adapter is not AdaLoRA. */
int tr_adalora_summary(fw_model *fm, char *buf, size_t len);

/* Adapter management: set_active makes `name` the trainable one (and enables it); enable /
 * disable switch its term in the forward; delete removes it. -1 + lp_seterr for an unknown
 * name. */
int tr_adapter_set_active(fw_model *fm, const char *name);
int tr_adapter_enable(fw_model *fm, const char *name, int on);
int tr_adapter_delete(fw_model *fm, const char *name);
/* Merge (merge = 1: W += scale·B·A into the f32 base weights the forward reads, the adapter then
 * disabled and frozen) or unmerge (subtract again, re-enable). The checkpoint file is untouched.
 * As PEFT's merge_adapter / unmerge_adapter; f32 rounding makes an unmerge exact only to ~1e-7. */
int tr_adapter_merge(fw_model *fm, const char *name, int merge);

/* 1 when the model's adapters are IA3 (one type per model), 0 for LoRA, AdaLoRA or none. */
int tr_adapters_ia3(fw_model *fm);
/* "LoRA", "IA3" or "AdaLoRA": the type of the model's adapters (NULL: none). */
const char *tr_adapters_kind(fw_model *fm);

/* 1 when adapter `name` is a DoRA one (LoRA with use_dora). */
int tr_adapter_is_dora(fw_model *fm, const char *name);

/* Names of the adapters (borrowed), count returned; the active one's index in *active (-1). */
size_t tr_adapter_names(fw_model *fm, const char **out, size_t cap, int *active);

/* Unfreeze (unfreeze = 1) or freeze base weights matching a glob: `*` any run, `?` one char,
 * `[0]` = `.0`; against the parameter name with or without the model prefix; a pattern that
 * names a module covers its parameters. *matched gets the count of weights changed or matching.
 * -1 + lp_seterr when nothing matches or on OOM. */
int tr_freeze(fw_model *fm, const char *pattern, int unfreeze, size_t *matched);

/* PEFT's print_trainable_parameters line into buf; also the counts. */
void tr_report(fw_model *fm, char *buf, size_t len, uint64_t *trainable, uint64_t *all);

/* Save adapter `name` (NULL: the active one) as PEFT does, into directory `dir` (made when
 * missing); files appear atomically. */
int tr_adapter_save(fw_model *fm, const char *name, const char *dir);

/* Load a PEFT adapter directory (or its adapter_model.safetensors path) as adapter `name`
 * (NULL: "default"), active and trainable. */
int tr_adapter_load(fw_model *fm, const char *dir, const char *name);

#endif
