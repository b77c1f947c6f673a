/* train_int.h — the train module's state hung off a compute state (fw_train_slot), shared by
 * params.c and lora.c. */
#ifndef LOUPE_TRAIN_INT_H
#define LOUPE_TRAIN_INT_H
#include <stdint.h>

#include "nn/forward.h"
#include "train/params.h"

typedef struct tr_site {       /* one adapted module */
    fw_lora lo;                /* A, B, dA, dB point into the adapter's buffer */
    char *module;              /* canonical module name ("model.layers.0.self_attn.q_proj") */
} tr_site;

typedef struct tr_mts {        /* one weight of a PEFT modules_to_save module (classifier) */
    size_t w;                  /* index into fw_weights */
    float *orig, *mine;        /* host (numel): the checkpoint's values, the adapter's */
    int own_grad;              /* the gradient slot was made for it (freed on delete) */
} tr_mts;

typedef struct tr_adapter {    /* one named adapter (PEFT's adapter_name): LoRA or IA3 */
    char *name;                /* "default" */
    int ia3;                   /* 1: IA3 (sites FW_AD_IA3 / FW_AD_IA3_FF), 0: LoRA */
    char **ff;                 /* IA3's feedforward_modules as given (names or one regex) */
    size_t nff;
    int ff_regex;              /* ff[0] is a regex */
    int r;
    double alpha, dropout;
    int rslora;
    char *init;                /* "true" (kaiming-uniform A) or "gaussian"; IA3: "true"
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
int  tr_adapter_install(fw_model *fm, tr_adapter *a, const char *init, uint64_t seed);
void tr_adapter_free(fw_model *fm, tr_adapter *a);
/* PEFT keeps one adapter type per model: -1 + lp_seterr when fm has an adapter whose type is
 * not `ia3` (1 IA3, 0 LoRA). */
int  tr_same_type(fw_model *fm, int ia3);
/* modules_to_save: take copies of the weights of modules matching names (name equals or ends
 * with "." + it), make them trainable; -1 + lp_seterr when none matches or on OOM. */
int  tr_mts_attach(fw_model *fm, tr_adapter *a, const char *const *names, size_t n);
/* Put the adapter's copies in (on) or the checkpoint's values back (off). */
void tr_mts_swap(fw_model *fm, tr_adapter *a, int on);

#endif
