/* train_int.h — the train module's state hung off a compute state (fw_train_slot), shared by
 * params.c and lora.c. */
#ifndef LOUPE_TRAIN_INT_H
#define LOUPE_TRAIN_INT_H
#include <stdint.h>

#include "nn/forward.h"
#include "nn/migrate.h"
#include "train/params.h"

typedef struct tr_site {       /* one adapted module */
    fw_lora lo;                /* A, B, dA, dB point into the adapter's buffer */
    char *module;              /* canonical module name ("model.layers.0.self_attn.q_proj") */
    float *dora_g;             /* DoRA merged: host (out), m/‖W + s·B·A‖ of the unmerged W */
} tr_site;

typedef struct tr_mts {        /* one weight of a PEFT modules_to_save module (classifier) */
    size_t w;                  /* index into fw_weights */
    float *orig, *mine;        /* host (numel): the checkpoint's values, the adapter's */
    int own_grad;              /* the gradient slot was made for it (freed on delete) */
} tr_mts;

/* AdaLoRA (adalora.c) as PEFT's SVDLinear: ΔW = B·(A ⊙ E)·alpha/(init_r + 1e-5), E a column
 * of r singular values. Each site's fw_lora is a plain LoRA term whose A is A' = A ⊙ E (every
 * row of A times its value), so the forward and backward are LoRA's; tr_ada_sync keeps A' in
 * step after A or E change, and the backward's dA' is turned into dA and dE (tr_ada_hooks). */
typedef struct tr_ada_site {
    float *A, *dA, *E, *dE;    /* device, in tr_ada.buf: (r, in), (r, in), (r), (r) */
    unsigned char *keep;       /* host (init_r): triplets the last allocation kept (PEFT's
                                  rank_pattern); a loaded site holds its kept ones only */
} tr_ada_site;

typedef struct tr_ada {
    int init_r, target_r, tinit, tfinal, delta_t, total_step;
    double beta1, beta2, orth;   /* EMA factors, orth_reg_weight */
    int allocate;              /* 1: the rank allocator runs (made by `adalora`, or loaded with
                                  its ranks never cut); 0: loaded cut, the saved ranks stay */
    long t;                    /* optimizer steps so far: the next update_and_allocate's step */
    int budget;                /* the last allocation's budget (ranks kept in all), -1 none */
    int have_pattern;          /* an allocation happened (or the file had a rank_pattern) */
    tr_ada_site *s;            /* [nsites], as the adapter's sites */
    float *buf;                /* device: every site's A, dA, E, dE */
    float *scratch;            /* device: ebig and prod (big floats each: max r·max(in, r)),
                                  then nones ones (max in) */
    size_t big, nones;
    float *ipt, *unc;          /* host EMA of |p·grad| and of its deviation, every A, B, E
                                  value of every site in that order; NULL until the first */
    size_t nval;
    char *pattern;             /* loaded: the file's rank_pattern (JSON text), saved again */
    char **empty;              /* loaded: modules whose rank_pattern keeps nothing (no site; */
    int *empty_in, *empty_out; /*  their zero-size tensors are saved again) */
    size_t nempty;
} tr_ada;

typedef struct tr_adapter {    /* one named adapter (PEFT's adapter_name): LoRA, IA3, AdaLoRA */
    char *name;                /* "default" */
    int ia3;                   /* 1: IA3 (sites FW_AD_IA3 / FW_AD_IA3_FF), 0: LoRA */
    tr_ada *ada;               /* AdaLoRA's state (sites FW_AD_LORA reading A ⊙ E), or NULL */
    char **ff;                 /* IA3's feedforward_modules as given (names or one regex) */
    size_t nff;
    int ff_regex;              /* ff[0] is a regex */
    int r;
    double alpha, dropout;
    int rslora;
    int dora;                  /* LoRA with use_dora (sites' fw_lora.dora) */
    char **rank_keys;          /* rank_pattern / alpha_pattern: keys (Python regexes matched */
    int *rank_vals;            /*  as PEFT's get_pattern_key: (.*\.)?(key)$ over the module */
    size_t nrank;              /*  name, the first matching key wins) and each one's r or */
    char **alpha_keys;         /*  lora_alpha */
    double *alpha_vals;
    size_t nalpha;
    char **exclude;            /* exclude_modules as given (names or one regex) */
    size_t nexclude;
    int exclude_regex;
    int *layers;               /* layers_to_transform, NULL for every layer */
    size_t nlayers;
    char **lpat;               /* layers_pattern */
    size_t nlpat;
    int bias;                  /* PEFT's bias: TR_BIAS_NONE, _ALL (every base bias trains),
                                  _LORA ("lora_only": the adapted modules' biases) */
    size_t *bias_w;            /* [nbias_w] the bias weights it trains (fw_weights indices) */
    unsigned char *bias_own;   /* [nbias_w] their gradient slot was made for it */
    size_t nbias_w;
    char *init;                /* "true" (kaiming-uniform A), "gaussian", "pissa" or "olora"
                                  (lora_init.c); IA3: "true"
                                  (ones) or "false" (N(0, 1), PEFT's torch.randn) */
    char **targets;            /* as given (names or one regex); NULL with all_linear */
    size_t ntargets;
    int target_regex;          /* targets[0] is a regex (given as a string) */
    int all_linear;
    tr_site *sites;            /* [nsites] */
    size_t nsites;
    float *buf;                /* device: every A, B, dA, dB */
    int enabled;               /* adds its term in the forward */
    int merged;                /* scale·B·A is added into the base weights (then not enabled) */
    char **mts_names;          /* modules_to_save as given */
    size_t nmts_names;
    tr_mts *mts;               /* [nmts] trained copies of those modules' weights */
    size_t nmts;
    int mts_live;              /* 1: the adapter's copies are in the weights */
} tr_adapter;

typedef struct tr_state {
    tr_params params;
    tr_adapter **ad;           /* [nad] */
    size_t nad;
    int active;                /* index of the trainable adapter, -1 none */
} tr_state;

/* The state (made on first use; NULL + lp_seterr on OOM). */
tr_state *tr_state_of(fw_model *fm);
/* Rebuild the parameter list after adapters or freezes changed; -1 + lp_seterr on OOM. */
int tr_params_rebuild(fw_model *fm);

/* lora.c, for adapter_io.c: fill site a->sites[a->nsites] (array sized by the caller) on
 * weight w; install an adapter whose sites are filled (init NULL: A, B left zero). */
int  tr_site_init(tr_adapter *a, const fw_weight *w, const char *mod, int kind);
/* A LoRA site's r and lora_alpha on module mod: its rank_pattern / alpha_pattern entry, else
 * the adapter's. */
int    tr_site_r(const tr_adapter *a, const char *mod);
double tr_site_alpha(const tr_adapter *a, const char *mod);
enum { TR_BIAS_NONE = 0, TR_BIAS_ALL = 1, TR_BIAS_LORA = 2 };
/* Make the base biases a->bias names trainable (a's sites exist); -1 + lp_seterr. */
int tr_bias_attach(fw_model *fm, tr_adapter *a);
/* The name PEFT saves bias weight `wname` under: "base_model.model.<module>.base_layer.bias"
 * on a module a adapts, else "base_model.model.<wname>". */
void tr_bias_key(const tr_adapter *a, const char *wname, char *buf, size_t len);
/* Check and take copies of a tr_filter (lora.h) into a; -1 + lp_seterr. */
struct tr_filter;
int tr_set_filter(tr_adapter *a, const struct tr_filter *f);
/* Check and take copies of rank / alpha patterns (keys compile, ranks > 0); -1 + lp_seterr. */
int tr_set_patterns(tr_adapter *a, const char *const *rk, const int *rv, size_t nr,
                    const char *const *ak, const double *av, size_t na);
int  tr_adapter_install(fw_model *fm, tr_adapter *a, const char *init, uint64_t seed);
/* lora_init.c: init "pissa" / "olora" (tr_init_residual) make A and B from each site's base
 * weight and leave the residual in it (PEFT's pissa_init, olora_init); 0 for other inits.
 * Refused (nothing changed): PiSSA on a quantized weight, OLoRA on Conv1D, r above the
 * weight's rank. */
int tr_init_residual(const char *init);
int tr_lora_residual(fw_model *fm, tr_adapter *a);
void tr_adapter_free(fw_model *fm, tr_adapter *a);
/* PEFT keeps one adapter type per model: -1 + lp_seterr when fm has an adapter whose type is
 * not `type` (TR_LORA, TR_IA3, TR_ADALORA). */
enum { TR_LORA = 0, TR_IA3 = 1, TR_ADALORA = 2 };
static inline int tr_type(const tr_adapter *a) {
    return a->ia3 ? TR_IA3 : a->ada ? TR_ADALORA : TR_LORA;
}
int  tr_same_type(fw_model *fm, int type);
/* lora.c: a new adapter's name, init and targets (NULL + lp_seterr); its sites, weights and
 * modules_to_save (it is freed on failure). */
tr_adapter *tr_adapter_new(fw_model *fm, const char *name, const char *init,
                           const char *const *targets, size_t ntargets, int target_regex,
                           int all_linear);
int tr_adapter_finish(fw_model *fm, tr_adapter *a, const char *init, uint64_t seed,
                      const char *const *mts, size_t nmts);

/* adalora.c. tr_ada_alloc: the SVD tensors of an adapter whose fw_lora sites are allocated
 * (init NULL: zeros, the loader fills them; "true": A, B ~ N(0, 0.02), E = 0; "false": all
 * N(0, 1)), A' made. tr_ada_sync: A' = A ⊙ E on every site. tr_ada_free: its state. */
int  tr_ada_alloc(fw_model *fm, tr_adapter *a, const char *init, uint64_t seed);
int  tr_ada_sync(fw_model *fm, tr_adapter *a);
void tr_ada_free(fw_model *fm, tr_adapter *a);
/* The site's scale: lora_alpha (or r when alpha is 0) / (init_r + 1e-5), PEFT's ranknum. */
float tr_ada_scale(const tr_adapter *a);
/* Hooks the forward, backward and optimizer call (installed by tr_state_of). */
void tr_ada_hooks(fw_model *fm);
/* After each optimizer step (optim.c): the active AdaLoRA adapter's rank allocation for the
 * step just taken (adalora_alloc.c), then A' again. -1 + lp_seterr on OOM. */
int  tr_ada_after_step(fw_model *fm);
/* With the optimizer's zero_grad: clears the active AdaLoRA adapter's dA' (normally already
 * zero: a backward that failed half-way may have left some). */
void tr_ada_zero_grad(fw_model *fm);
/* adalora_io.c, for adapter_io.c. tr_ada_config: AdaLoraConfig.to_dict() of peft 0.21.2 (am,
 * targets, mts: the common values, taken). tr_ada_ntensors: tensors (3 per module) and floats
 * a save writes. tr_ada_tensors: them (rows and columns of dropped ranks left out when a
 * rank pattern exists, as PEFT), from t[0], shapes[0], names[0], values at *p (advanced).
 * tr_ada_load: the sites, values and modules_to_save of a file whose config is ADALORA into
 * the new adapter a (installed: on failure the caller deletes it when installed). */
struct json_t;
struct st_file;
struct st_wtensor;
struct json_t *tr_ada_config(fw_model *fm, const tr_adapter *a, struct json_t *am,
                             struct json_t *targets, struct json_t *mts);
size_t tr_ada_ntensors(const tr_adapter *a, size_t *floats);
int tr_ada_tensors(fw_model *fm, const tr_adapter *a, struct st_wtensor *t, uint64_t *shapes,
                   char **names, float **p);
int tr_ada_load(fw_model *fm, tr_adapter *a, struct json_t *cfg, const struct st_file *f,
                const char *file);
/* adapter_io.c: is pname a weight of a modules_to_save module of cfg; load those modules. */
int tr_mts_tensor(struct json_t *cfg, const fw_weight *w, size_t nw, const char *pname);
int tr_load_mts(fw_model *fm, tr_adapter *a, struct json_t *cfg, const struct st_file *f,
                const char *file);
/* The device buffers of every AdaLoRA adapter, for a move (params.c's state_move). */
int  tr_ada_move(fw_move *mv, tr_adapter *a, int commit);
/* modules_to_save: take copies of the weights of modules matching names (name equals or ends
 * with "." + it), make them trainable; -1 + lp_seterr when none matches or on OOM. */
int  tr_mts_attach(fw_model *fm, tr_adapter *a, const char *const *names, size_t n);
/* Put the adapter's copies in (on) or the checkpoint's values back (off). */
void tr_mts_swap(fw_model *fm, tr_adapter *a, int on);

#endif
