/* forward.c — the model forward (see forward.h): weights, arena, embeddings, layers, head.
 *
 * The only per-family data is the naming table below (which HF module holds which role);
 * everything numeric is read from the arch flags and config.json. */
#include "nn/forward.h"
#include "nn/forward_int.h"

#include <assert.h>
#include <math.h>
#include <stdio.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "model/arch.h"
#include "nn/ops_bf16.h"
#include "util/err.h"
#include "util/mem.h"

static const fw_names llama_names = {
    "embed_tokens", NULL, NULL, NULL,
    "input_layernorm", "self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", NULL,
    "self_attn.o_proj", NULL, NULL, "post_attention_layernorm", "mlp.gate_proj", "mlp.up_proj",
    "mlp.down_proj", NULL, NULL,
    "norm", "lm_head", NULL, NULL, NULL, NULL, NULL, NULL};
/* Gemma 2: post_attention_layernorm normalises the attention output; the MLP has its own
 * pre- and post-norms. */
static const fw_names gemma2_names = {
    "embed_tokens", NULL, NULL, NULL,
    "input_layernorm", "self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", NULL,
    "self_attn.o_proj", "post_attention_layernorm", NULL, "pre_feedforward_layernorm",
    "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj", "post_feedforward_layernorm", NULL,
    "norm", "lm_head", NULL, NULL, NULL, NULL, NULL, NULL};
/* Phi-3: q, k, v from one Linear (qkv_proj), gate and up from another (gate_up_proj: its
 * weight in the gate slot, AF_FUSED_MLP). */
static const fw_names phi3_names = {
    "embed_tokens", NULL, NULL, NULL,
    "input_layernorm", NULL, NULL, NULL, "self_attn.qkv_proj",
    "self_attn.o_proj", NULL, NULL, "post_attention_layernorm", "mlp.gate_up_proj", NULL,
    "mlp.down_proj", NULL, NULL,
    "norm", "lm_head", NULL, NULL, NULL, NULL, NULL, NULL};
static const fw_names gpt2_names = {
    "wte", "wpe", NULL, NULL,
    "ln_1", NULL, NULL, NULL, "attn.c_attn", "attn.c_proj", NULL, NULL, "ln_2", "mlp.c_fc",
    NULL, "mlp.c_proj", NULL, NULL,
    "ln_f", "lm_head", NULL, NULL, NULL, NULL, NULL, NULL};
static const fw_names bert_names = {
    "embeddings.word_embeddings", "embeddings.position_embeddings",
    "embeddings.token_type_embeddings", "embeddings.LayerNorm",
    NULL, "attention.self.query", "attention.self.key", "attention.self.value", NULL,
    "attention.output.dense", NULL, "attention.output.LayerNorm", NULL, "intermediate.dense",
    NULL, "output.dense", NULL, "output.LayerNorm",
    NULL, NULL, "pooler.dense", "classifier",
    "cls.predictions.transform.dense", "cls.predictions.transform.LayerNorm",
    "cls.predictions.decoder", "cls.predictions"};

static const fw_names *names_for(const arch_desc *a) {
    if (a->flags & AF_ENCODER) return &bert_names;
    if (a->flags & AF_CONV1D) return &gpt2_names;
    if (a->flags & AF_POST_NORMS) return &gemma2_names;
    if (a->flags & AF_FUSED_MLP) return &phi3_names;
    return &llama_names;
}

const fw_info *fw_model_info(const fw_model *fm) { return &fm->info; }
const be_backend *fw_backend(const fw_model *fm) { return fm->be; }
const mdl_model *fw_mdl(const fw_model *fm) { return fm->m; }
const fw_acts *fw_last_acts(const fw_model *fm) { return fm->have_acts ? &fm->acts : NULL; }

/* partial_rotary_factor: in rope_parameters (transformers 5) or at the top (4); 1 when absent. */
static double partial_rotary(const mdl_config *c) {
    json_t *f = json_object_get(json_object_get(c->raw, "rope_parameters"), "partial_rotary_factor");
    if (!json_is_number(f)) f = json_object_get(c->raw, "partial_rotary_factor");
    return json_is_number(f) ? json_number_value(f) : 1.0;
}

/* LongRoPE (Phi-3-mini-128k, Phi-3.5): short_factor and long_factor (D/2 each) from the
 * rope parameters; the short inv_freq in fm->inv_freq, the long one (a forward reaching past
 * original_max_position_embeddings) in fm->inv_freq_long; attention_factor, else
 * √(1 + ln(factor)/ln(original)) with factor = max / original positions (transformers'
 * _compute_longrope_parameters). */
static int longrope_from_config(fw_model *fm, const mdl_config *c) {
    int half = fm->RD / 2;
    const char *keys[2] = {"short_factor", "long_factor"};
    for (int k = 0; k < 2; k++) {
        json_t *a = json_object_get(c->rope_scaling, keys[k]);
        if (!json_is_array(a) || (int)json_array_size(a) != half)
            return lp_seterr("%s: longrope's %s must hold %d numbers (half the rotary dimensions)",
                             fm->m->path, keys[k], half);
        float *v = lp_malloc(sizeof(float) * (size_t)half);
        if (!v) return lp_seterr("out of memory");
        if (k) fm->rope_long = v;
        else fm->rope_short = v;
        for (int i = 0; i < half; i++) {
            json_t *x = json_array_get(a, (size_t)i);
            if (!json_is_number(x))
                return lp_seterr("%s: longrope's %s holds a non-number", fm->m->path, keys[k]);
            v[i] = (float)json_number_value(x);
        }
    }
    fm->rope.short_factor = fm->rope_short, fm->rope.long_factor = fm->rope_long;
    int orig = fm->rope.original_max_position;
    json_t *f = json_object_get(c->rope_scaling, "factor");
    double factor = json_is_number(f) ? json_number_value(f)
                                      : (double)fm->rope.max_position / (orig > 0 ? orig : 1);
    json_t *af = json_object_get(c->rope_scaling, "attention_factor");
    fm->rope.attention_factor = json_is_number(af) ? json_number_value(af)
                                : factor <= 1.0 ? 1.0 : sqrt(1 + log(factor) / log((double)orig));
    fm->inv_freq_long = lp_malloc(sizeof(float) * (size_t)half);
    if (!fm->inv_freq_long) return lp_seterr("out of memory");
    nn_rope_inv_freq(fm->inv_freq, &fm->rope, fm->RD, orig);
    nn_rope_inv_freq(fm->inv_freq_long, &fm->rope, fm->RD, orig + 1);
    return 0;
}

static int rope_from_config(fw_model *fm, const mdl_config *c) {
    memset(&fm->rope, 0, sizeof fm->rope);
    fm->rope.theta = c->rope_theta > 0 ? c->rope_theta : 10000.0;
    fm->rope.max_position = (int)c->max_position_embeddings;
    const char *type = NULL;
    if (json_is_object(c->rope_scaling)) {
        json_t *t = json_object_get(c->rope_scaling, "rope_type");
        if (!json_is_string(t)) t = json_object_get(c->rope_scaling, "type");
        type = json_string_value(t);
        json_t *f = json_object_get(c->rope_scaling, "factor");
        fm->rope.factor = json_is_number(f) ? json_number_value(f) : 1.0;
        f = json_object_get(c->rope_scaling, "low_freq_factor");
        fm->rope.low_freq_factor = json_is_number(f) ? json_number_value(f) : 1.0;
        f = json_object_get(c->rope_scaling, "high_freq_factor");
        fm->rope.high_freq_factor = json_is_number(f) ? json_number_value(f) : 4.0;
        f = json_object_get(c->rope_scaling, "original_max_position_embeddings");
        if (!json_is_integer(f)) f = json_object_get(c->raw, "original_max_position_embeddings");
        fm->rope.original_max_position = json_is_integer(f) ? (int)json_integer_value(f)
                                                            : fm->rope.max_position;
    }
    if (nn_rope_type_from_name(&fm->rope.type, type) < 0) return -1;
    fm->inv_freq = lp_malloc(sizeof(float) * (size_t)(fm->RD / 2 ? fm->RD / 2 : 1));
    if (!fm->inv_freq) return lp_seterr("out of memory");
    if (fm->rope.type == NN_ROPE_LONGROPE) return longrope_from_config(fm, c);
    nn_rope_inv_freq(fm->inv_freq, &fm->rope, fm->RD, fm->rope.max_position);
    if (fm->a->flags & AF_DUAL_ROPE) {   /* Gemma 3: the sliding layers' default RoPE */
        nn_rope_config loc = {.type = NN_ROPE_DEFAULT, .max_position = fm->rope.max_position,
                              .theta = c->rope_local_theta > 0 ? c->rope_local_theta : 10000.0};
        fm->inv_freq_local = lp_malloc(sizeof(float) * (size_t)(fm->RD / 2 ? fm->RD / 2 : 1));
        if (!fm->inv_freq_local) return lp_seterr("out of memory");
        nn_rope_inv_freq(fm->inv_freq_local, &loc, fm->RD, loc.max_position);
    }
    return 0;
}

void fw_rope_apply(fw_model *fm, float *out, const float *x, float *scratch, const float *cs,
                   const float *sn, int N, int heads, int backward) {
    const be_backend *be = fm->be;
    int D = fm->D, RD = fm->RD, R = N * heads;
    if (RD == D) {
        (backward ? be->rope_backward : be->rope_forward)(out, x, cs, sn, N, heads, D);
        return;
    }
    float *rot = scratch, *pass = scratch + (size_t)R * RD;   /* (R, RD) (R, D − RD) */
    be->slice_forward(rot, x, R, D, 0, RD);
    be->slice_forward(pass, x, R, D, RD, D - RD);
    (backward ? be->rope_backward : be->rope_forward)(rot, rot, cs, sn, N, heads, RD);
    be->zero(out, (size_t)R * D * sizeof(float));
    be->slice_backward(out, rot, R, D, 0, RD);
    be->slice_backward(out, pass, R, D, RD, D - RD);
}

int fw_rope_switch(const fw_model *fm) {
    return fm->inv_freq_long ? fm->rope.original_max_position : 0;
}

/* The RoPE tables of layer l (Gemma 3's sliding layers: their own); 0 where the layer has no
 * RoPE (learned positions, SmolLM3's NoPE layers). */
int fw_rope_tables(const fw_model *fm, int l, const float **cos_t, const float **sin_t) {
    const mdl_config *c = fm->m->config;
    if (!fm->inv_freq || (c->nope_layers && c->nope_layers[l])) return 0;
    int local = fm->inv_freq_local && c->sliding_layers && c->sliding_layers[l];
    *cos_t = local ? fm->acts.rope_cos_l : fm->acts.rope_cos;
    *sin_t = local ? fm->acts.rope_sin_l : fm->acts.rope_sin;
    return 1;
}

static const mdl_module *find_module(const mdl_model *m, const char *name);
static void free_storage(fw_model *fm);

/* A dropout probability from config.json (absent, null or outside [0, 1): none). */
static float drop_p(json_t *raw, const char *key) {
    json_t *v = key ? json_object_get(raw, key) : NULL;
    double p = json_is_number(v) ? json_number_value(v) : 0.0;
    return p > 0 && p < 1 ? (float)p : 0.0f;
}

fw_model *fw_new(const mdl_model *m, const be_backend *be) {
    if (!m->arch || !m->config) {
        lp_seterr("%s: no compute for an unknown architecture; inspection only (loupe computes "
                  "Llama, Mistral, Qwen2, Gemma, Gemma 2, GPT-2 and BERT)",
                  m->config && m->config->architecture ? m->config->architecture : m->path);
        return NULL;
    }
    fw_model *fm = lp_calloc(1, sizeof *fm);
    if (!fm) return lp_seterr("out of memory"), NULL;
    const mdl_config *c = m->config;
    const arch_desc *a = m->arch;
    fm->m = m;
    fm->a = a;
    fm->nm = names_for(a);
    fm->be = be;
    fm->q8_threshold = 6.0f;   /* BitsAndBytesConfig's llm_int8_threshold */
    fm->C = (int)c->hidden_size;
    fm->H = (int)c->num_attention_heads;
    fm->KVH = (int)c->num_key_value_heads;
    fm->D = (int)c->head_dim;
    fm->Q = fm->H * fm->D;
    fm->KV = fm->KVH * fm->D;
    fm->I = (int)c->intermediate_size;
    fm->V = (int)c->vocab_size;
    fm->L = (int)c->num_hidden_layers;
    if (fm->H <= 0 || fm->KVH <= 0 || fm->H % fm->KVH || fm->D <= 0 || fm->L <= 0) {
        lp_seterr("%s: config.json has %d heads, %d kv heads, head_dim %d, %d layers: no compute "
                  "for that", m->path, fm->H, fm->KVH, fm->D, fm->L);
        goto fail;
    }
    if (nn_act_from_name(&fm->act, c->hidden_act ? c->hidden_act : a->act) < 0) goto fail;
    fm->add_one = a->norm == NORM_RMS_PLUS_ONE;
    double eps = a->norm == NORM_LAYER ? c->layer_norm_eps : c->rms_norm_eps;
    fm->eps = (float)(eps > 0 ? eps : a->eps);
    fm->attn_scale = (float)(c->query_pre_attn_scalar > 0 ? 1.0 / sqrt(c->query_pre_attn_scalar)
                                                         : 1.0 / sqrt((double)fm->D));
    json_t *inv = json_object_get(c->raw, "scale_attn_by_inverse_layer_idx");
    if (json_is_true(inv)) {
        lp_seterr("%s: scale_attn_by_inverse_layer_idx is not supported", m->path);
        goto fail;
    }
    if (!(a->flags & AF_ENCODER) && json_is_true(json_object_get(c->raw, "use_bidirectional_attention"))) {
        lp_seterr("%s: use_bidirectional_attention (an encoder such as EmbeddingGemma) is not "
                  "supported; loupe computes this architecture causally", m->path);
        goto fail;
    }
    if (a->flags & AF_SOFTCAP) {
        fm->attn_softcap = (float)c->attn_logit_softcapping;
        fm->final_softcap = (float)c->final_logit_softcapping;
    }
    fm->emb_scale = (a->flags & AF_EMB_SCALE) ? (float)sqrt((double)fm->C) : 0.0f;
    fm->window = (int)c->sliding_window;
    /* dropout in training mode, under each family's config names */
    if (a->flags & AF_CONV1D) {
        fm->p_emb = drop_p(c->raw, "embd_pdrop");
        fm->p_attn = drop_p(c->raw, "attn_pdrop");
        fm->p_resid = drop_p(c->raw, "resid_pdrop");
    } else if (a->flags & AF_ENCODER) {
        fm->p_emb = fm->p_resid = drop_p(c->raw, "hidden_dropout_prob");
        fm->p_attn = drop_p(c->raw, "attention_probs_dropout_prob");
        json_t *cd = json_object_get(c->raw, "classifier_dropout");
        fm->p_cls = json_is_number(cd) ? drop_p(c->raw, "classifier_dropout") : fm->p_resid;
    } else {
        fm->p_attn = drop_p(c->raw, "attention_dropout");
        /* Phi-3: resid_pdrop on the attention and MLP outputs, as GPT-2's (no embd_pdrop in
           its model code) */
        if (a->flags & AF_FUSED_MLP) fm->p_resid = drop_p(c->raw, "resid_pdrop");
    }
    fm->RD = (int)(fm->D * partial_rotary(c));   /* int(head_dim · factor), as transformers */
    if (fm->RD < 2 || fm->RD > fm->D || fm->RD % 2) {
        lp_seterr("%s: partial_rotary_factor %g gives %d rotary dimensions of a %d-dimension "
                  "head; it needs an even number from 2 to %d", m->path, partial_rotary(c),
                  fm->RD, fm->D, fm->D);
        goto fail;
    }
    if (!(a->flags & AF_LEARNED_POS) && rope_from_config(fm, c) < 0) goto fail;
    fm->lw = lp_calloc((size_t)fm->L, sizeof *fm->lw);
    if (!fm->lw) { lp_seterr("out of memory"); goto fail; }
    /* the head: what the checkpoint's architecture put on top of the base model */
    int out = FW_OUT_LM, mlm = 0;
    if (a->flags & AF_ENCODER) {
        mlm = fm->nm->mlm_bias && find_module(m, fm->nm->mlm_bias) != NULL;
        out = mlm ? FW_OUT_LM
                  : fm->nm->classifier && find_module(m, fm->nm->classifier) ? FW_OUT_CLASSES
                                                                            : FW_OUT_HIDDEN;
    }
    fm->info = (fw_info){fm->L, fm->C, fm->H, fm->KVH, fm->D, fm->I, fm->V,
                         (int)arch_dim_value(c, AD_POS), !(a->flags & AF_ENCODER), mlm, out,
                         (int)c->num_labels};
    if (fm->info.out_kind == FW_OUT_CLASSES && fm->info.num_labels < 2) {
        lp_seterr("%s: num_labels is %d; loupe computes single-label classification (2 or more "
                  "labels) only", m->path, fm->info.num_labels);
        goto fail;
    }
    return fm;
fail:
    fw_free(fm);
    return NULL;
}

void fw_free(fw_model *fm) {
    if (!fm) return;
    if (fm->train_free) fm->train_free(fm, fm->train);
    for (size_t i = 0; i < fm->nlora; i++) {   /* whatever the train module left attached */
        fw_lora_scratch_free(fm->be, fm->loras[i]);
    }
    lp_free(fm->loras);
    for (size_t i = 0; fm->weights && i < fm->nweights; i++) {
        lp_free((char *)fm->weights[i].name);
        fm->be->free(fm->weights[i].grad);   /* set by the train module through be->alloc */
    }
    lp_free(fm->weights);
    if (fm->be) {
        free_storage(fm);
        fm->be->free(fm->arena);
        fm->be->free(fm->iarena);
        fm->be->free(fm->bw_arena);
    }
    lp_free(fm->acts.layers);
    lp_free(fm->host);
    lp_free(fm->ihost);
    if (fm->be) fm->be->free(fm->dec_probs);
    lp_free(fm->inv_freq);
    lp_free(fm->inv_freq_local);
    lp_free(fm->inv_freq_long);
    lp_free(fm->rope_short);
    lp_free(fm->rope_long);
    lp_free(fm->lw);
    lp_free(fm->reqs);
    lp_free(fm);
}

/* ---- weights -------------------------------------------------------------------------------- */

/* Lookups by canonical name without allocating (mdl_find_* normalise paths in new memory,
 * and their NULL would then not tell a missing tensor from an allocation failure): `name`
 * with the base model's prefix, then as given (heads sit at the root). */
static int name_is(const char *canon, const char *prefix, const char *name) {
    size_t pl = strlen(prefix);
    if (pl && (strncmp(canon, prefix, pl) || canon[pl] != '.')) return 0;
    return strcmp(canon + (pl ? pl + 1 : 0), name) == 0;
}

static const mdl_tensor *find_tensor(const mdl_model *m, const char *name) {
    for (int pass = 0; pass < 2; pass++)
        for (size_t i = 0; i < m->ntensors; i++)
            if (name_is(m->tensors[i].name, pass ? "" : m->arch->prefix, name)) return &m->tensors[i];
    return NULL;
}

static const mdl_module *find_module(const mdl_model *m, const char *name) {
    for (int pass = 0; pass < 2; pass++)
        for (size_t i = 0; i < m->nmodules; i++)
            if (name_is(m->modules[i]->path, pass ? "" : m->arch->prefix, name)) return m->modules[i];
    return NULL;
}

/* Ask for `<module>.<param>` (module relative to the base model, or to layer `layer` when
 * layer >= 0). A required tensor that is missing is an error; an optional one leaves *slot
 * NULL. Tied lm_head resolves to the token embedding. */
static int want(fw_model *fm, const char *module, int layer, const char *param, int required,
                float **slot) {
    *slot = NULL;
    if (!module) return 0;
    char name[512];
    if (layer >= 0)
        snprintf(name, sizeof name, "%s.%d.%s.%s", fm->a->layers, layer, module, param);
    else
        snprintf(name, sizeof name, "%s.%s", module, param);
    const mdl_tensor *t = find_tensor(fm->m, name);
    if (!t && layer < 0) {
        const mdl_module *mod = find_module(fm->m, module);
        if (mod && mod->tied && !strcmp(param, "weight")) t = mod->tied;
    }
    if (!t) {
        if (!required) return 0;
        return lp_seterr("%s: weight `%s` is missing from the checkpoint", fm->m->path, name);
    }
    if (fm->nreq == fm->capreq) {
        size_t cap = fm->capreq ? 2 * fm->capreq : 64;
        wreq *r = lp_realloc(fm->reqs, cap * sizeof *r);
        if (!r) return lp_seterr("out of memory");
        fm->reqs = r;
        fm->capreq = cap;
    }
    fm->reqs[fm->nreq++] = (wreq){t, slot};
    return 0;
}

static int want_all(fw_model *fm) {
    const fw_names *n = fm->nm;
    int rc = 0;
    /* the embeddings of the base model; heads are at the root */
    rc |= want(fm, n->embed, -1, "weight", 1, &fm->embed_w);
    rc |= want(fm, n->pos_embed, -1, "weight", 1, &fm->pos_w);
    rc |= want(fm, n->type_embed, -1, "weight", 1, &fm->type_w);
    rc |= want(fm, n->emb_norm, -1, "weight", 1, &fm->embn_w);
    rc |= want(fm, n->emb_norm, -1, "bias", 1, &fm->embn_b);
    int ln = fm->a->norm == NORM_LAYER;
    for (int l = 0; l < fm->L && !rc; l++) {
        fw_lw *w = &fm->lw[l];
        rc |= want(fm, n->n1, l, "weight", 1, &w->n1_w);
        if (ln) rc |= want(fm, n->n1, l, "bias", 1, &w->n1_b);
        rc |= want(fm, n->q, l, "weight", 1, &w->q_w);
        rc |= want(fm, n->q, l, "bias", 0, &w->q_b);
        rc |= want(fm, n->k, l, "weight", 1, &w->k_w);
        rc |= want(fm, n->k, l, "bias", 0, &w->k_b);
        rc |= want(fm, n->v, l, "weight", 1, &w->v_w);
        rc |= want(fm, n->v, l, "bias", 0, &w->v_b);
        rc |= want(fm, n->qkv, l, "weight", 1, &w->qkv_w);
        rc |= want(fm, n->qkv, l, "bias", 0, &w->qkv_b);
        rc |= want(fm, n->o, l, "weight", 1, &w->o_w);
        rc |= want(fm, n->o, l, "bias", 0, &w->o_b);
        if (fm->a->flags & AF_QK_NORM) {   /* Qwen3, Gemma 3: the heads' norms */
            rc |= want(fm, "self_attn.q_norm", l, "weight", 1, &w->qn_w);
            rc |= want(fm, "self_attn.k_norm", l, "weight", 1, &w->kn_w);
        }
        rc |= want(fm, n->on, l, "weight", 1, &w->on_w);
        rc |= want(fm, n->r1, l, "weight", 1, &w->r1_w);
        rc |= want(fm, n->r1, l, "bias", 1, &w->r1_b);
        rc |= want(fm, n->n2, l, "weight", 1, &w->n2_w);
        if (ln) rc |= want(fm, n->n2, l, "bias", 1, &w->n2_b);
        rc |= want(fm, n->gate, l, "weight", 1, &w->gate_w);
        rc |= want(fm, n->gate, l, "bias", 0, &w->gate_b);
        rc |= want(fm, n->up, l, "weight", 1, &w->up_w);
        rc |= want(fm, n->up, l, "bias", 0, &w->up_b);
        rc |= want(fm, n->down, l, "weight", 1, &w->down_w);
        rc |= want(fm, n->down, l, "bias", 0, &w->down_b);
        rc |= want(fm, n->mn, l, "weight", 1, &w->mn_w);
        rc |= want(fm, n->r2, l, "weight", 1, &w->r2_w);
        rc |= want(fm, n->r2, l, "bias", 1, &w->r2_b);
    }
    if (rc) return -1;
    rc |= want(fm, n->final_norm, -1, "weight", 1, &fm->fin_w);
    if (ln) rc |= want(fm, n->final_norm, -1, "bias", 1, &fm->fin_b);
    if (fm->info.mlm) {   /* BertLMPredictionHead: dense, gelu, LayerNorm, tied decoder + bias */
        rc |= want(fm, n->mlm_dense, -1, "weight", 1, &fm->mlm_w);
        rc |= want(fm, n->mlm_dense, -1, "bias", 1, &fm->mlm_b);
        rc |= want(fm, n->mlm_norm, -1, "weight", 1, &fm->fin_w);
        rc |= want(fm, n->mlm_norm, -1, "bias", 1, &fm->fin_b);
        rc |= want(fm, n->mlm_decoder, -1, "weight", 1, &fm->head_w);
        rc |= want(fm, n->mlm_bias, -1, "bias", 1, &fm->mlm_bias);
    } else if (fm->info.out_kind == FW_OUT_LM) {
        rc |= want(fm, n->lm_head, -1, "weight", 1, &fm->head_w);
    }
    if (fm->info.out_kind == FW_OUT_CLASSES) {
        rc |= want(fm, n->pooler, -1, "weight", 1, &fm->pool_w);
        rc |= want(fm, n->pooler, -1, "bias", 1, &fm->pool_b);
        rc |= want(fm, n->classifier, -1, "weight", 1, &fm->cls_w);
        rc |= want(fm, n->classifier, -1, "bias", 1, &fm->cls_b);
    }
    return rc ? -1 : 0;
}

/* The weight list from the load requests (each tensor once, in request = model order). */
static int build_weights(fw_model *fm) {
    fm->weights = lp_calloc(fm->nreq ? fm->nreq : 1, sizeof *fm->weights);
    if (!fm->weights) return lp_seterr("out of memory");
    fm->nweights = 0;
    for (size_t i = 0; i < fm->nreq; i++) {
        const mdl_tensor *t = fm->reqs[i].t;
        int dup = 0;
        for (size_t j = 0; j < i && !dup; j++) dup = fm->reqs[j].t == t;
        if (dup) continue;
        fw_weight *w = &fm->weights[fm->nweights];
        w->name = lp_strdup(t->name);
        if (!w->name) return lp_seterr("out of memory");
        fm->nweights++;
        w->data = *fm->reqs[i].slot;
        w->numel = (size_t)t->st->nelem;
        w->rows = t->st->ndim >= 1 ? (int)t->st->shape[0] : 1;
        w->cols = t->st->ndim >= 2 ? (int)(w->numel / (size_t)w->rows) : 1;
        size_t len = strlen(t->name);
        if (len > 7 && !strcmp(t->name + len - 7, ".weight")) {
            char mod[512];
            snprintf(mod, sizeof mod, "%.*s", (int)(len - 7), t->name);
            const mdl_module *md = NULL;
            for (size_t k = 0; k < fm->m->nmodules && !md; k++)
                if (!strcmp(fm->m->modules[k]->path, mod)) md = fm->m->modules[k];
            if (md && (md->type == MT_LINEAR || md->type == MT_CONV1D) && w->rows > 0 &&
                t->st->ndim == 2) {
                w->kind = md->type == MT_LINEAR ? FW_W_LINEAR : FW_W_CONV1D;
                w->in = w->kind == FW_W_LINEAR ? w->cols : w->rows;
                w->out = w->kind == FW_W_LINEAR ? w->rows : w->cols;
            }
        }
        float **slot = fm->reqs[i].slot;
        w->is_head = slot == &fm->head_w || slot == &fm->cls_w;
        w->adaptable = w->kind != FW_W_OTHER && slot != &fm->head_w;
    }
    return 0;
}

int fw_weights(fw_model *fm, fw_weight **w, size_t *n) {
    if (fw_load_weights(fm) < 0) return -1;
    *w = fm->weights;
    *n = fm->nweights;
    return 0;
}

size_t fw_loaded_weights(const fw_model *fm, const fw_weight **w) {
    *w = fm->loaded ? fm->weights : NULL;
    return fm->loaded ? fm->nweights : 0;
}

float *fw_grad_of(const fw_model *fm, const float *data) {
    if (!data) return NULL;
    for (size_t i = 0; i < fm->nweights; i++)
        if (fm->weights[i].data == data) return fm->weights[i].grad;
    return NULL;
}

int fw_lora_attach(fw_model *fm, fw_lora *lo) {
    if (fm->nlora == fm->caplora) {
        size_t cap = fm->caplora ? 2 * fm->caplora : 16;
        fw_lora **l = lp_realloc(fm->loras, cap * sizeof *l);
        if (!l) return lp_seterr("out of memory");
        fm->loras = l;
        fm->caplora = cap;
    }
    fm->loras[fm->nlora++] = lo;
    fm->lora_epoch++;
    return 0;
}

void fw_lora_touch(fw_model *fm) { fm->lora_epoch++; }

void fw_lora_detach(fw_model *fm, fw_lora *lo) {
    fm->lora_epoch++;
    for (size_t i = 0; i < fm->nlora; i++)
        if (fm->loras[i] == lo) {
            memmove(fm->loras + i, fm->loras + i + 1, (fm->nlora - i - 1) * sizeof *fm->loras);
            fm->nlora--;
            break;
        }
    fw_lora_scratch_free(fm->be, lo);
}

int fw_loras_of(const fw_model *fm, const float *base, fw_lora **out, int cap) {
    int n = 0;
    for (size_t i = 0; i < fm->nlora; i++)
        if (fm->loras[i]->base == base && fm->loras[i]->enabled) {
            if (n < cap) out[n] = fm->loras[i];
            n++;
        }
    return n;
}

void **fw_train_slot(fw_model *fm, void (**free_fn)(fw_model *, void *)) {
    if (free_fn) *free_fn = fm->train_free;
    return &fm->train;
}

void fw_set_train_free(fw_model *fm, void (*free_fn)(fw_model *, void *)) {
    fm->train_free = free_fn;
}

void fw_set_train_hooks(fw_model *fm, double (*extra_loss)(fw_model *),
                        int (*after_backward)(fw_model *, float dloss)) {
    fm->extra_loss = extra_loss;
    fm->after_backward = after_backward;
}

int fw_last_flags(const fw_model *fm) { return fm->last_flags; }

uint64_t fw_train_draws(const fw_model *fm) { return fm->train_draws; }
void fw_set_train_draws(fw_model *fm, uint64_t n) { fm->train_draws = n; }

void fw_mark_weights_changed(fw_model *fm) { fm->weights_changed = 1; }

int fw_has_training(const fw_model *fm) {
    if (fm->nlora || fm->weights_changed) return 1;
    for (size_t i = 0; i < fm->nweights; i++)
        if (fm->weights[i].grad) return 1;
    return 0;
}

/* May weight k (first asked for through `slot`) be stored as bf16? Linear / Conv1D weights
 * (their products are be_bf16_ops), the LM head and the token embedding (often one tensor). */
static int can_half(const fw_model *fm, const fw_weight *w, float **slot) {
    return w->kind != FW_W_OTHER || slot == &fm->embed_w || slot == &fm->head_w;
}

static void free_storage(fw_model *fm) {
    for (size_t i = 0; fm->wown && i < fm->nweights; i++) fm->be->free(fm->wown[i]);
    lp_free(fm->wown);
    lp_free(fm->can16);
    fm->be->free(fm->wbuf);
    fm->be->free(fm->wbuf16);
    fw_q4_free(fm);
    fm->wown = NULL;
    fm->can16 = NULL;
    fm->wbuf = NULL;
    fm->wbuf16 = NULL;
    fm->n16 = 0;
}

/* One tensor of the checkpoint into device storage: f32, or rounded to bf16. */
static int upload(fw_model *fm, const mdl_tensor *t, void *dst, int half, float *stage,
                  be_bf16 *stage16, size_t chunk) {
    for (uint64_t at = 0; at < t->st->nelem; at += chunk) {
        size_t k = t->st->nelem - at < chunk ? (size_t)(t->st->nelem - at) : chunk;
        if (mdl_tensor_to_f32(t, at, k, stage) < 0) return -1;
        if (half) {
            nn_bf16_round(stage16, stage, k);
            fm->be->to_device((be_bf16 *)dst + at, stage16, k * sizeof(be_bf16));
        } else {
            fm->be->to_device((float *)dst + at, stage, k * sizeof(float));
        }
    }
    return 0;
}

/* Storage for the weight list (build_weights ran): which are bf16, the two allocations, the
 * values. Each tensor is stored once; every request for it points there. */
static int load_storage(fw_model *fm) {
    const be_backend *be = fm->be;
    size_t n32 = 0, n16 = 0, k = 0;
    fm->can16 = lp_calloc(fm->nweights ? fm->nweights : 1, 1);
    fm->wown = lp_calloc(fm->nweights ? fm->nweights : 1, sizeof *fm->wown);
    if (!fm->can16 || !fm->wown) return lp_seterr("out of memory");
    for (size_t i = 0; i < fm->nreq; i++) {
        int dup = 0;
        for (size_t j = 0; j < i && !dup; j++) dup = fm->reqs[j].t == fm->reqs[i].t;
        if (dup) continue;
        fw_weight *w = &fm->weights[k];
        fm->can16[k++] = (unsigned char)can_half(fm, w, fm->reqs[i].slot);
        w->q4 = fw_q4_eligible(fm, w, fm->reqs[i].t);
        w->half = !w->q4 && be->bf16 && fm->can16[k - 1];
        if (w->half) n16 += fw_pad16(w->numel);
        else if (!w->q4) n32 += w->numel;
    }
    fm->wbuf = n32 ? be->alloc(n32 * sizeof(float)) : NULL;
    fm->wbuf16 = n16 ? be->alloc(n16 * sizeof(be_bf16)) : NULL;
    fm->n16 = n16;
    if ((n32 && !fm->wbuf) || (n16 && !fm->wbuf16))
        return lp_preferr("%s: the weights (%.1f MB)", fm->m->path,
                          (n32 * 4.0 + n16 * 2.0) / 1e6);
    if (fw_q4_alloc(fm) < 0) return -1;
    enum { CHUNK = 1 << 16 };
    float *stage = lp_malloc(CHUNK * sizeof(float));
    be_bf16 *stage16 = lp_malloc(CHUNK * sizeof(be_bf16));
    int rc = stage && stage16 ? 0 : lp_seterr("out of memory");
    size_t o32 = 0, o16 = 0;
    k = 0;
    for (size_t i = 0; i < fm->nreq && !rc; i++) {
        float *dst = NULL;
        for (size_t j = 0; j < i && !dst; j++)
            if (fm->reqs[j].t == fm->reqs[i].t) dst = *fm->reqs[j].slot;
        if (!dst) {
            fw_weight *w = &fm->weights[k++];
            if (w->q4) {   /* its place is fw_q4_alloc's */
                dst = w->data;
                rc = fw_q4_upload(fm, fm->reqs[i].t, w, stage, CHUNK);
                *fm->reqs[i].slot = dst;
                continue;
            }
            dst = w->half ? (float *)(fm->wbuf16 + o16) : fm->wbuf + o32;
            if (w->half) o16 += fw_pad16(w->numel);
            else o32 += w->numel;
            w->data = dst;
            rc = upload(fm, fm->reqs[i].t, dst, w->half, stage, stage16, CHUNK);
        }
        *fm->reqs[i].slot = dst;
    }
    lp_free(stage);
    lp_free(stage16);
    return rc;
}

int fw_load_weights(fw_model *fm) {
    if (fm->loaded) return 0;
    fm->nreq = 0;
    if (want_all(fm) < 0) return -1;
    if (build_weights(fm) < 0 || load_storage(fm) < 0) {   /* the partial list and storage
                                                              go (a retry builds new ones) */
        for (size_t i = 0; i < fm->nweights; i++) lp_free((char *)fm->weights[i].name);
        free_storage(fm);
        lp_free(fm->weights);
        fm->weights = NULL;
        fm->nweights = 0;
        return -1;
    }
    lp_free(fm->reqs);
    fm->reqs = NULL;
    fm->nreq = fm->capreq = 0;
    fm->loaded = 1;
    return 0;
}

/* ---- live weights: reading, master copies, in-place updates -------------------------------- */

int fw_weight_read(const fw_model *fm, const fw_weight *w, size_t at, size_t n, float *host) {
    if (w->q4) return fw_q4_read(fm, w, at, n, host);
    if (!w->half) {
        fm->be->to_host(host, w->data + at, n * sizeof(float));
        return 0;
    }
    be_bf16 *h = lp_malloc((n ? n : 1) * sizeof *h);
    if (!h) return lp_seterr("out of memory");
    fm->be->to_host(h, (const be_bf16 *)w->data + at, n * sizeof *h);
    nn_bf16_widen(host, h, n);
    lp_free(h);
    return 0;
}

/* A 4-bit weight cannot train or change (QLoRA trains adapters beside it). */
static int nf4_frozen(const fw_model *fm, const fw_weight *w) {
    int t = fm->q4;
    return lp_seterr("%s is quantized to %s: it cannot train or change; %s trains adapters "
                     "beside it (load without quantize= to change the weights)", w->name,
                     t == NN_Q8 ? "8 bits (int8)" : t == NN_Q4_FP4 ? "4 bits (FP4)" : "4 bits (NF4)",
                     t == NN_Q8 ? "LLM.int8's recipe" : "QLoRA");
}

void fw_repoint(fw_model *fm, const float *from, float *to) {
    float **model[] = {&fm->embed_w, &fm->pos_w, &fm->type_w, &fm->embn_w, &fm->embn_b,
                       &fm->fin_w, &fm->fin_b, &fm->head_w, &fm->pool_w, &fm->pool_b,
                       &fm->cls_w, &fm->cls_b, &fm->mlm_w, &fm->mlm_b, &fm->mlmn_w,
                       &fm->mlmn_b, &fm->mlm_bias};
    for (size_t i = 0; i < sizeof model / sizeof *model; i++)
        if (*model[i] == from) *model[i] = to;
    for (int l = 0; l < fm->L; l++) {   /* fw_lw holds float pointers only (migrate.c) */
        float **p = (float **)&fm->lw[l];
        for (size_t k = 0; k < sizeof(fw_lw) / sizeof(float *); k++)
            if (p[k] == from) p[k] = to;
    }
    for (size_t i = 0; i < fm->nlora; i++)
        if (fm->loras[i]->base == from) fm->loras[i]->base = to;
    for (size_t i = 0; i < fm->nweights; i++)
        if (fm->weights[i].data == from) fm->weights[i].data = to;
}

int fw_weight_f32(fw_model *fm, fw_weight *w) {
    if (w->q4) return nf4_frozen(fm, w);
    if (!w->half) return 0;
    size_t i = (size_t)(w - fm->weights);
    float *f = fm->be->alloc(w->numel * sizeof(float));
    if (!f) return lp_preferr("an f32 copy of %s (bf16 on %s)", w->name, fm->be->name);
    fm->be->bf16->widen(f, (const be_bf16 *)w->data, w->numel);
    fw_repoint(fm, w->data, f);
    w->half = 0;
    fm->wown[i] = f;
    return 0;
}

int fw_weight_addmm(fw_model *fm, fw_weight *w, const float *a, const float *b, int M, int N,
                    int K, int trans_a, int trans_b, float alpha) {
    const be_backend *be = fm->be;
    if (w->q4) return fw_q4_addmm(fm, w, a, b, M, N, K, trans_a, trans_b, alpha);
    if (!w->half) {
        be->matmul(w->data, a, b, M, N, K, trans_a, trans_b, alpha, 1.0f);
        return 0;
    }
    float *f = be->alloc(w->numel * sizeof(float));
    if (!f) return lp_preferr("f32 scratch for %s (bf16 on %s)", w->name, be->name);
    be->bf16->widen(f, (const be_bf16 *)w->data, w->numel);
    be->matmul(f, a, b, M, N, K, trans_a, trans_b, alpha, 1.0f);
    be->bf16->round((be_bf16 *)w->data, f, w->numel);
    be->free(f);
    return 0;
}

int fw_weight_scale(fw_model *fm, fw_weight *w, const float *l, size_t len, int by_row,
                    int divide) {
    const be_backend *be = fm->be;
    if (w->q4) return nf4_frozen(fm, w);
    float *h = lp_malloc(w->numel * sizeof(float)), *hl = lp_malloc(len * sizeof(float));
    float *f = w->half ? be->alloc(w->numel * sizeof(float)) : w->data;
    if (!h || !hl || !f) {
        lp_free(h);
        lp_free(hl);
        if (w->half && f) be->free(f);
        return lp_preferr("scratch for %s", w->name);
    }
    if (w->half) be->bf16->widen(f, (const be_bf16 *)w->data, w->numel);
    be->to_host(h, f, w->numel * sizeof(float));
    be->to_host(hl, l, len * sizeof(float));
    size_t per = w->numel / len;
    for (size_t i = 0; i < w->numel; i++) {
        float s = hl[by_row ? i / per : i % len];
        h[i] = divide ? h[i] / (s + 1e-8f) : h[i] * s;
    }
    be->to_device(f, h, w->numel * sizeof(float));
    if (w->half) {
        be->bf16->round((be_bf16 *)w->data, f, w->numel);
        be->free(f);
    }
    lp_free(h);
    lp_free(hl);
    return 0;
}

size_t fw_weight_bytes(const fw_model *fm) {
    size_t n = 0;
    for (size_t i = 0; i < fm->nweights; i++)
        n += fm->weights[i].q4 ? fw_q4_bytes(fm, &fm->weights[i])
             : fm->weights[i].numel * (fm->weights[i].half ? sizeof(be_bf16) : sizeof(float));
    return n;
}

/* ---- the arena -------------------------------------------------------------------------------
 * plan() lays every activation out at offsets from `base`; run once with base NULL to size it,
 * then with the allocation. Slots start at multiples of 16 floats (64 bytes). */

typedef struct plan { float *base; size_t off; } plan;

static float *take(plan *p, size_t n) {
    float *r = p->base ? p->base + p->off : NULL;
    p->off += (n + 15) & ~(size_t)15;
    return r;
}

/* Fused attention (backend.h) keeps lse (B,H,T) instead of the probabilities (B,H,T,T);
 * not for a caller that wants the probabilities (FW_PROBS) nor with attention dropout drawn
 * (the fused ops have none). */
static int use_fused(const fw_model *fm, int flags) {
    return fm->be->fused_attention >= fm->D && !(flags & FW_PROBS) &&
           !((flags & FW_TRAIN) && fm->p_attn > 0);
}

const char *fw_attention_kind(const fw_model *fm) {
    if (!use_fused(fm, FW_KEEP)) return "materialised";
    const be_bf16_ops *tc = fw_tc_attention(fm);
    if (!tc) return "fused";
    return tc->attention_bf16_dmax && fm->D <= tc->attention_bf16_dmax() ? "fused-bf16"
                                                                          : "fused-tf32";
}

/* Phi-3's gate_up_proj: one product into a->gu, gate and up sliced out (gate_w holds it). */
static int fused_mlp(const fw_model *fm) { return (fm->a->flags & AF_FUSED_MLP) != 0; }

/* One layer's slots. tmp: the lean FW_KEEP layout, where n1, qkv, o, n2, act and m are the
 * buffers of *tmp (one set all layers share: the backward does not read them, or makes them
 * again); NULL: the layer's own. */
static void plan_layer(const fw_model *fm, plan *p, fw_layer_acts *a, int B, int T,
                       int fused, const fw_layer_acts *tmp) {
    size_t N = (size_t)B * T, C = (size_t)fm->C, I = (size_t)fm->I;
    const fw_lw *w = &fm->lw[0];
    int post_ln = (fm->a->flags & AF_POST_LN) != 0;
    memset(a, 0, sizeof *a);
#define TAKE_TMP(field, n) (a->field = tmp ? tmp->field : take(p, (n)))
    if (!post_ln) {
        TAKE_TMP(n1, N * C);
        a->n1_rstd = take(p, N);
        if (fm->a->norm == NORM_LAYER) a->n1_mean = take(p, N);
    }
    if (w->qkv_w) TAKE_TMP(qkv, N * (size_t)(fm->Q + 2 * fm->KV));
    a->q = take(p, N * fm->Q);
    a->k = take(p, N * fm->KV);
    a->v = take(p, N * fm->KV);
    if (w->qn_w) {   /* Qwen3: the projections before their per-head norms */
        a->q_raw = take(p, N * fm->Q);
        a->k_raw = take(p, N * fm->KV);
        a->qn_rstd = take(p, N * fm->H);
        a->kn_rstd = take(p, N * fm->KVH);
    }
    if (fused) a->lse = take(p, (size_t)B * fm->H * T);
    else a->probs = take(p, (size_t)B * fm->H * T * T);
    a->att = take(p, N * fm->Q);
    TAKE_TMP(o, N * C);
    if (w->on_w) {
        a->o_raw = take(p, N * C);
        a->o_rstd = take(p, N);
    }
    if (post_ln) {
        a->r1 = take(p, N * C);
        a->r1_mean = take(p, N);
        a->r1_rstd = take(p, N);
    } else {
        TAKE_TMP(n2, N * C);
        a->n2_rstd = take(p, N);
        if (fm->a->norm == NORM_LAYER) a->n2_mean = take(p, N);
    }
    a->h = take(p, N * C);
    a->gate = take(p, N * I);
    if (w->up_w || fused_mlp(fm)) a->up = take(p, N * I);
    if (fused_mlp(fm)) TAKE_TMP(gu, 2 * N * I);
    TAKE_TMP(act, N * I);
    TAKE_TMP(m, N * C);
    if (w->mn_w) {
        a->m_raw = take(p, N * C);
        a->m_rstd = take(p, N);
    }
    if (post_ln) {
        a->r2 = take(p, N * C);
        a->r2_mean = take(p, N);
        a->r2_rstd = take(p, N);
    }
#undef TAKE_TMP
}

/* The transient set of the lean layout: the slots plan_layer shares. */
static void plan_shared(const fw_model *fm, plan *p, fw_layer_acts *t, size_t N) {
    size_t C = (size_t)fm->C;
    int post_ln = (fm->a->flags & AF_POST_LN) != 0;
    memset(t, 0, sizeof *t);
    if (!post_ln) t->n1 = take(p, N * C);
    if (fm->lw[0].qkv_w) t->qkv = take(p, N * (size_t)(fm->Q + 2 * fm->KV));
    if (fused_mlp(fm)) t->gu = take(p, 2 * N * (size_t)fm->I);
    t->o = take(p, N * C);
    if (!post_ln) t->n2 = take(p, N * C);
    t->act = take(p, N * (size_t)fm->I);
    t->m = take(p, N * C);
}

int fw_head_rows(const fw_model *fm, int N) {
    const char *e = getenv("LOUPE_HEAD_CHUNK_ROWS");
    long r = e && *e ? strtol(e, NULL, 10) : 0;
    if (fm->info.out_kind == FW_OUT_CLASSES) return N;   /* (B, labels): small */
    if (r <= 0) r = (long)(FW_HEAD_CHUNK_BYTES / ((size_t)fm->V * sizeof(float)));
    return r < 1 ? 1 : r < N ? (int)r : N;
}

/* Lay out everything for (B, T, flags); returns the float count. */
static size_t plan_all(fw_model *fm, float *base, int B, int T, int flags) {
    plan p = {base, 0};
    fw_acts *A = &fm->acts;
    size_t N = (size_t)B * T, C = (size_t)fm->C;
    int keep = (flags & FW_KEEP) != 0;
    int nl = keep ? fm->L : 1;
    size_t R = (flags & FW_LAST) ? (size_t)B : N;
    int post_ln = (fm->a->flags & AF_POST_LN) != 0;
    int loss = (flags & FW_LOSS) != 0;   /* forward() cleared it where it does not apply */
    size_t RV = loss ? (size_t)fw_head_rows(fm, (int)N) : R;   /* rows of logits kept */
    fw_layer_acts tmp, one;
    A->ckpt = keep && fm->ckpt && !(flags & (FW_ALL | FW_PROBS));
    A->lean = keep && !(flags & FW_ALL) && !A->ckpt;
    A->held = -1;
    if (A->lean) plan_shared(fm, &p, &tmp, N);
    if (A->ckpt) plan_layer(fm, &p, &one, B, T, use_fused(fm, flags), NULL);
    A->emb = take(&p, N * C);
    A->emb_sum = A->emb_mean = A->emb_rstd = NULL;
    if (post_ln) {
        A->emb_sum = take(&p, N * C);
        A->emb_mean = take(&p, N);
        A->emb_rstd = take(&p, N);
    }
    for (int l = 0; l < nl; l++)
        if (A->ckpt) A->layers[l] = one;   /* x, y and the masks are each layer's (below) */
        else plan_layer(fm, &p, &A->layers[l], B, T, use_fused(fm, flags), A->lean ? &tmp : NULL);
    /* y of each layer: its own buffer when kept, else two buffers used in turn */
    fm->ybuf[0] = fm->ybuf[1] = NULL;
    if (!keep) { fm->ybuf[0] = take(&p, N * C); fm->ybuf[1] = take(&p, N * C); }
    for (int l = 0; l < nl; l++) A->layers[l].y = keep ? take(&p, N * C) : NULL;
    fm->last_rows = take(&p, (size_t)B * C);
    A->fin = A->fin_mean = A->fin_rstd = NULL;
    A->pooled_in = A->pooled_pre = A->pooled = NULL;
    A->logits_raw = A->logits = A->lse = A->dfin = A->dlogits = A->rowloss = NULL;
    A->head_pre = A->head_act = NULL;
    if (fm->info.mlm) {
        A->head_pre = take(&p, R * C);
        A->head_act = take(&p, R * C);
    }
    if (fm->info.out_kind == FW_OUT_LM) {
        A->fin = take(&p, R * C);
        A->fin_rstd = take(&p, R);
        if (fm->a->norm == NORM_LAYER) A->fin_mean = take(&p, R);
        /* the fused bf16 head (fw_fused_head) reads only the raw logits and writes a bf16
           gradient: no capped copy, half the gradient's bytes */
        int fused = loss && fw_fused_head(fm);
        A->logits = take(&p, RV * fm->V);
        A->logits_raw = fm->final_softcap > 0 && !fused ? take(&p, RV * fm->V) : A->logits;
        A->lse = take(&p, R);
        if (loss) {
            A->dlogits = take(&p, fused ? (RV * fm->V + 1) / 2 : RV * fm->V);
            A->dfin = take(&p, R * C);
            A->rowloss = take(&p, R);
        }
    } else if (fm->info.out_kind == FW_OUT_CLASSES) {
        A->pooled_in = take(&p, (size_t)B * C);
        A->pooled_pre = take(&p, (size_t)B * C);
        A->pooled = take(&p, (size_t)B * C);
        A->logits = A->logits_raw = take(&p, (size_t)B * fm->info.num_labels);
        A->lse = take(&p, B);
    }
    size_t wide = C > (size_t)fm->I ? C : (size_t)fm->I;   /* (N,C) or (N,I) bf16 */
    A->in16 = fw_rounding(fm) ? take(&p, (N * wide + 1) / 2) : NULL;
    size_t half = fm->D / 2;
    A->rope_cos = fm->inv_freq ? take(&p, N * half) : NULL;
    A->rope_sin = fm->inv_freq ? take(&p, N * half) : NULL;
    A->rope_cos_l = fm->inv_freq_local ? take(&p, N * half) : NULL;
    A->rope_sin_l = fm->inv_freq_local ? take(&p, N * half) : NULL;
    /* dropout masks: training mode only (forward() draws them) */
    int train = (flags & FW_TRAIN) != 0;
    A->emb_drop = train && fm->p_emb > 0 ? take(&p, N * C) : NULL;
    A->pool_drop = train && fm->p_cls > 0 && fm->info.out_kind == FW_OUT_CLASSES
                       ? take(&p, (size_t)B * C) : NULL;
    for (int l = 0; l < nl; l++) {
        fw_layer_acts *a = &A->layers[l];
        a->attn_drop = train && fm->p_attn > 0 ? take(&p, (size_t)B * fm->H * T * T) : NULL;
        a->o_drop = train && fm->p_resid > 0 ? take(&p, N * C) : NULL;
        a->m_drop = train && fm->p_resid > 0 ? take(&p, N * C) : NULL;
    }
    return p.off;
}

static int ensure_arena(fw_model *fm, int B, int T, int flags) {
    fw_acts *A = &fm->acts;
    int keep = (flags & FW_KEEP) != 0;
    fw_layer_acts *layers = lp_realloc(A->layers, sizeof *layers * (size_t)fm->L);
    if (!layers) return lp_seterr("out of memory");
    A->layers = layers;
    memset(layers, 0, sizeof *layers * (size_t)fm->L);
    size_t need = plan_all(fm, NULL, B, T, flags);
    if (need > fm->arena_cap) {   /* grows only: a smaller shape reuses the memory */
        fm->be->free(fm->arena);
        fm->arena = NULL;
        fm->arena_cap = 0;
        fm->have_acts = 0;
        fm->arena = fm->be->alloc(need * sizeof(float));
        if (!fm->arena)
            return lp_preferr("activations for batch %d × %d tokens (%.1f MB)", B, T,
                              need * 4.0 / 1e6);
        fm->arena_cap = need;
    }
    plan_all(fm, fm->arena, B, T, flags);
    size_t N = (size_t)B * T;
    size_t ineed = 5 * N + 16;
    if (ineed > fm->iarena_cap) {
        fm->be->free(fm->iarena);
        fm->iarena = fm->be->alloc(ineed * sizeof(int));
        fm->iarena_cap = fm->iarena ? ineed : 0;
        if (!fm->iarena) return -1;
    }
    A->ids = fm->iarena;
    A->mask = A->ids + N;
    A->pos = A->mask + N;
    A->types = A->pos + N;
    A->targets = A->types + N;
    size_t hneed = N * (size_t)(fm->D / 2) * 2 + 1;
    if (hneed > fm->host_cap) {
        lp_free(fm->host);
        fm->host = lp_malloc(hneed * sizeof(float));
        fm->host_cap = fm->host ? hneed : 0;
        if (!fm->host) return lp_seterr("out of memory");
    }
    if (5 * N + 1 > fm->ihost_cap) {
        lp_free(fm->ihost);
        fm->ihost = lp_malloc((5 * N + 1) * sizeof(int));
        fm->ihost_cap = fm->ihost ? 5 * N + 1 : 0;
        if (!fm->ihost) return lp_seterr("out of memory");
    }
    A->B = B;
    A->T = T;
    A->N = (int)N;
    A->keep = keep;
    return 0;
}

/* ---- building blocks --------------------------------------------------------------------- */

static void norm_fwd(const fw_model *fm, float *out, float *mean, float *rstd, const float *inp,
                     const float *w, const float *b, int N) {
    if (fm->a->norm == NORM_LAYER)
        fm->be->layernorm_forward(out, mean, rstd, inp, w, b, fm->eps, N, fm->C);
    else
        fm->be->rmsnorm_forward(out, rstd, inp, w, fm->eps, fm->add_one, N, fm->C);
}

/* Base layer, then each enabled adapter on it adds scale·B(A(dropout(x))). An adapter that
 * cannot get its buffers is skipped with the error kept for the caller (fm->lora_err). */
void fw_lin_fwd(fw_model *fm, float *out, const float *inp, const float *w, const float *b,
                int N, int IN, int OUT) {
    fw_lin_fwd_r(fm, out, inp, NULL, w, b, N, IN, OUT);
}

/* lo's buffers for N rows: 1, or 0 when they cannot be had (fm->lora_oom set, lo skipped) */
static int lora_ready(fw_model *fm, fw_lora *lo, int N, int IN) {
    if ((size_t)N <= lo->cap_n) return 1;
    fw_lora_scratch_free(fm->be, lo);
    lo->h = fm->be->alloc(sizeof(float) * (size_t)N * fw_lora_hw(lo));
    lo->mask = lo->dropout > 0 ? fm->be->alloc(sizeof(float) * (size_t)N * IN) : NULL;
    lo->v = lo->dora ? fm->be->alloc(sizeof(float) * (size_t)N * lo->out) : NULL;
    lo->g = lo->dora ? fm->be->alloc(sizeof(float) * 3 * (size_t)lo->out) : NULL;
    lo->cap_n = (size_t)N;
    if (lo->h && (lo->dropout <= 0 || lo->mask) && (!lo->dora || (lo->v && lo->g))) return 1;
    fm->lora_oom = 1;
    lo->cap_n = 0;
    return 0;
}

/* The adapter that goes first on a bf16 base weight without a bias (be_backend
 * lora_forward_first): it writes out, the base product then adds to it in its GEMM, which
 * reads out as its epilogue runs, rather than an adapter's add reading and writing all of
 * out once more after it. The input rounded to bf16 in *r (fw_acts.in16 when it was not, and
 * is free: the shared roundings have been used when an unrounded input comes). -1: the
 * usual order (no such adapter, backend or buffer). */
static long lora_lead(fw_model *fm, const float *inp, const be_bf16 **r, const float *w,
                      const float *b, int N, int IN) {
    const be_bf16_ops *o = fw_rounding(fm);
    if (b || !o || !fm->be->lora_forward_first || !fw_is_half(fm, w) || fw_has_dora(fm, w))
        return -1;
    long lead = -1;
    for (size_t i = 0; i < fm->nlora && lead < 0; i++) {
        fw_lora *lo = fm->loras[i];
        if (lo->base == w && lo->enabled && lo->kind == FW_AD_LORA && lora_ready(fm, lo, N, IN))
            lead = (long)i;
    }
    if (lead < 0 || *r) return lead;
    size_t wide = (size_t)(fm->C > fm->I ? fm->C : fm->I);
    if (!fm->acts.in16 || (size_t)IN > wide || N > fm->acts.N) return -1;
    o->round(fm->acts.in16, inp, (size_t)N * IN);
    *r = fm->acts.in16;
    return lead;
}

/* IA3 on weight w: the feed-forward kind scales the input first (each adapter's h is its
 * output, the next one's input); returns what the base product reads (inp when none). */
static const float *ia3_inputs(fw_model *fm, const float *inp, const float *w, int N, int IN) {
    for (size_t i = 0; i < fm->nlora; i++) {
        fw_lora *lo = fm->loras[i];
        if (lo->base != w || !lo->enabled || lo->kind != FW_AD_IA3_FF) continue;
        if (!lora_ready(fm, lo, N, IN)) continue;
        fm->be->channel_scale_forward(lo->h, inp, lo->A, N, IN);
        inp = lo->h;
    }
    return inp;
}

/* IA3 scaling w's output, in attach order: h keeps what it scaled (the backward's input). */
static void ia3_outputs(fw_model *fm, float *out, const float *w, int N, int IN, int OUT) {
    for (size_t i = 0; i < fm->nlora; i++) {
        fw_lora *lo = fm->loras[i];
        if (lo->base != w || !lo->enabled || lo->kind != FW_AD_IA3) continue;
        if (!lora_ready(fm, lo, N, IN)) continue;
        fm->be->copy(lo->h, out, sizeof(float) * (size_t)N * OUT);
        fm->be->channel_scale_forward(out, out, lo->A, N, OUT);
    }
}

/* LLM.int8's product (bitsandbytes' MatMul8bitLt) with its scratch from the backend; none:
 * lora_oom, the output unwritten */
static void q8_product(fw_model *fm, float *out, const float *x, const float *w,
                       const float *b, int N, int IN, int OUT) {
    const fw_weight *q = fw_q4_weight(fm, w);
    float *work = fm->be->alloc(nn_q8_work(N, IN, OUT) * sizeof(float));
    if (!work || !q) {
        fm->lora_oom = 1;
        fm->oom_what = "the 8-bit products' scratch";
        return;
    }
    fm->be->q8_linear_forward(out, x, (const int8_t *)q->data, q->absmax, b, N, IN, OUT,
                              fm->q8_threshold, work);
    fm->be->free(work);
}

/* out = x·Wᵀ (+ b) for weight slot w whatever its storage (x16: x rounded to bf16, or NULL) */
static void base_product(fw_model *fm, float *out, const float *x, const be_bf16 *inp16,
                         const float *w, const float *b, int N, int IN, int OUT) {
    int conv = (fm->a->flags & AF_CONV1D) != 0;
    if (fw_is_q4(fm, w) && fm->q4 == NN_Q8)   /* int8: its own product (backward: dequantized) */
        q8_product(fm, out, x, w, b, N, IN, OUT);
    else if (fw_is_half(fm, w) && inp16)
        fm->be->bf16->linear_forward_rounded(out, inp16, (const be_bf16 *)w, b, N, IN, OUT,
                                             conv, 0.0f);
    else if (fw_is_half(fm, w))
        fm->be->bf16->linear_forward(out, x, (const be_bf16 *)w, b, N, IN, OUT, conv);
    else if (fw_is_q4(fm, w) && fm->be->bf16 && inp16)   /* bf16 products, as bf16 weights */
        fm->be->bf16->linear_forward_rounded(out, inp16, fw_product_weight16(fm, w), b, N, IN,
                                             OUT, 0, 0.0f);
    else if (fw_is_q4(fm, w) && fm->be->bf16)
        fm->be->bf16->linear_forward(out, x, fw_product_weight16(fm, w), b, N, IN, OUT, 0);
    else if (conv && !fw_is_q4(fm, w)) fm->be->conv1d_forward(out, x, w, b, N, IN, OUT);
    else   /* a 4-bit Conv1D weight dequantizes to [out, in]: a Linear one (q4_weights.c) */
        fm->be->linear_forward(out, x, fw_product_weight(fm, w), b, N, IN, OUT);
}

int fw_has_dora(const fw_model *fm, const float *w) {
    for (size_t i = 0; i < fm->nlora; i++)
        if (fm->loras[i]->base == w && fm->loras[i]->enabled && fm->loras[i]->dora) return 1;
    return 0;
}

int fw_dora_norm(fw_model *fm, const fw_lora *lo, float *norm) {
    const be_backend *be = fm->be;
    int IN = lo->in, OUT = lo->out, R = lo->r;
    int conv = (fm->a->flags & AF_CONV1D) && !fw_is_q4(fm, lo->base);   /* stored [in, out] */
    size_t n = (size_t)IN * OUT;
    float *v = be->alloc(n * sizeof(float));
    if (!v) return -1;
    if (fw_is_half(fm, lo->base)) be->bf16->widen(v, (const be_bf16 *)lo->base, n);
    else be->copy(v, fw_product_weight(fm, lo->base), n * sizeof(float));
    if (conv) be->matmul(v, lo->A, lo->B, IN, OUT, R, 1, 1, lo->scale, 1.0f);
    else be->matmul(v, lo->B, lo->A, OUT, IN, R, 0, 0, lo->scale, 1.0f);
    be->row_norm(norm, v, conv ? IN : OUT, conv ? OUT : IN, conv);
    be->free(v);
    return 0;
}

/* DoRA adapters on w (after the base product, before plain LoRA terms: without dropout the
 * base output less its bias is their y, as PEFT's base_result). The norms go to lo->g's third
 * part; a generation's one-token steps reuse the prompt's (nothing can change the weights
 * within one generation: PEFT's DoRA caching in eval mode, without its memory). */
static void dora_terms(fw_model *fm, float *out, const float *inp, const float *w,
                       const float *b, int N, int IN, int OUT) {
    const be_backend *be = fm->be;
    for (size_t i = 0; i < fm->nlora; i++) {
        fw_lora *lo = fm->loras[i];
        if (lo->base != w || !lo->enabled || !lo->dora) continue;
        if (!lora_ready(fm, lo, N, IN)) continue;
        lo->mask_on = lo->dropout > 0 && (fm->last_flags & FW_TRAIN);
        size_t no = (size_t)N * OUT, ni = lo->mask_on ? (size_t)N * IN : 0;
        float *norm = lo->g + 2 * (size_t)OUT;
        float *su = be->alloc(sizeof(float) * (no + ni + (ni ? no : 0)));
        int step = fm->kv && fm->kv->len > 0;   /* the prompt's norms hold */
        if (!su || (!step && fw_dora_norm(fm, lo, norm) < 0)) {
            be->free(su);
            fm->lora_oom = 1;
            continue;
        }
        float *xd = su + no, *y = NULL;
        if (lo->mask_on) {
            be->dropout_mask(lo->mask, 0x6c6f757065ULL + fm->train_draws, (uint64_t)i << 40,
                             lo->dropout, (size_t)N * IN);
            be->mul_forward(xd, inp, lo->mask, ni);
            y = xd + ni;
            base_product(fm, y, xd, NULL, w, NULL, N, IN, OUT);
        }
        be->zero(su, no * sizeof(float));
        be->lora_forward(su, lo->h, inp, lo->mask_on ? lo->mask : NULL, lo->A, lo->B, lo->scale,
                         N, IN, OUT, lo->r);
        be->dora_forward(out, lo->v, lo->g, y, su, y ? NULL : b, lo->mag, norm, N, OUT);
        be->free(su);
    }
}

void fw_lin_fwd_r(fw_model *fm, float *out, const float *inp, const be_bf16 *inp16,
                  const float *w, const float *b, int N, int IN, int OUT) {
    int conv = (fm->a->flags & AF_CONV1D) != 0;
    const float *x = ia3_inputs(fm, inp, w, N, IN);
    if (x != inp) inp16 = NULL;   /* the base product reads the scaled input */
    long lead = lora_lead(fm, x, &inp16, w, b, N, IN);
    if (lead < 0) base_product(fm, out, x, inp16, w, b, N, IN, OUT);
    dora_terms(fm, out, inp, w, b, N, IN, OUT);
    for (size_t i = 0; i < fm->nlora; i++) {
        fw_lora *lo = fm->loras[i];
        if (lo->base != w || !lo->enabled || lo->kind != FW_AD_LORA || lo->dora) continue;
        assert(lo->in == IN && lo->out == OUT);
        if (!lora_ready(fm, lo, N, IN)) continue;
        lo->mask_on = lo->dropout > 0 && (fm->last_flags & FW_TRAIN);
        if (lo->mask_on)   /* one seed per forward, offsets per adapter: distinct masks */
            fm->be->dropout_mask(lo->mask, 0x6c6f757065ULL + fm->train_draws,
                                 (uint64_t)i << 40, lo->dropout, (size_t)N * IN);
        (i == (size_t)lead ? fm->be->lora_forward_first : fm->be->lora_forward)(
            out, lo->h, inp, lo->mask_on ? lo->mask : NULL, lo->A, lo->B, lo->scale, N, IN,
            OUT, lo->r);
    }
    if (lead >= 0)
        fm->be->bf16->linear_forward_rounded(out, inp16, (const be_bf16 *)w, NULL, N, IN, OUT,
                                             conv, 1.0f);
    ia3_outputs(fm, out, w, N, IN, OUT);
}

#define lin_fwd(fm, out, inp, w, b, N, IN, OUT) fw_lin_fwd((fm), (out), (inp), (w), (b), (N), (IN), (OUT))

static void attention(fw_model *fm, fw_layer_acts *a, int l, int B, int T, const int *mask) {
    const mdl_config *c = fm->m->config;
    nn_attn_params p = {.scale = fm->attn_scale, .softcap = fm->attn_softcap,
                        .causal = fm->info.causal,
                        .window = c->sliding_layers && c->sliding_layers[l] ? fm->window : 0,
                        .dropout = a->attn_drop};
    if (fm->kv && fm->kv->len > 0) {   /* one new token (B = T = 1) against the cache */
        fw_kv *kv = fm->kv;
        fm->be->copy(kv->k[l] + (size_t)kv->len * fm->KV, a->k, sizeof(float) * fm->KV);
        fm->be->copy(kv->v[l] + (size_t)kv->len * fm->KV, a->v, sizeof(float) * fm->KV);
        fm->be->attention_kv_forward(a->att, fm->dec_probs, a->q, kv->k[l], kv->v[l], NULL, &p,
                                     1, 1, kv->len + 1, kv->len, fm->H, fm->KVH, fm->D);
        return;
    }
    if (fm->kv) {   /* prefill: keep this layer's keys and values (B = 1) */
        fm->be->copy(fm->kv->k[l], a->k, sizeof(float) * (size_t)T * fm->KV);
        fm->be->copy(fm->kv->v[l], a->v, sizeof(float) * (size_t)T * fm->KV);
    }
    const be_bf16_ops *tc = fw_tc_attention(fm);
    if (a->lse)
        (tc ? tc->attention_fused_forward : fm->be->attention_fused_forward)(
            a->att, a->lse, a->q, a->k, a->v, mask, &p, B, T, fm->H, fm->KVH, fm->D);
    else
        fm->be->attention_forward(a->att, a->probs, a->q, a->k, a->v, mask, &p, B, T, fm->H,
                                  fm->KVH, fm->D);
}

/* `in` (N,C) rounded to bf16 once (fw_acts.in16) when the products of weights w1 and w2
 * both take it rounded (bf16 weights), else NULL: each product rounds what it reads. */
static const be_bf16 *round_shared(fw_model *fm, const float *in, int N, const float *w1,
                                   const float *w2) {
    const be_bf16_ops *o = fw_rounding(fm);
    be_bf16 *h = fm->acts.in16;
    if (!o || !h || !fw_is_half(fm, w1) || !fw_is_half(fm, w2)) return NULL;
    o->round(h, in, (size_t)N * fm->C);
    return h;
}

/* q, k, v of layer l from `in` (N,C), RoPE applied. */
static void qkv_fwd(fw_model *fm, int l, fw_layer_acts *a, const fw_lw *w, const float *in,
                    int N) {
    const be_backend *be = fm->be;
    int C = fm->C;
    if (w->qkv_w) {   /* GPT-2's Conv1D, Phi-3's Linear: then the three column blocks */
        int Q = fm->Q, KV = fm->KV, W = Q + 2 * KV;
        lin_fwd(fm, a->qkv, in, w->qkv_w, w->qkv_b, N, C, W);
        be->slice_forward(a->q, a->qkv, N, W, 0, Q);
        be->slice_forward(a->k, a->qkv, N, W, Q, KV);
        be->slice_forward(a->v, a->qkv, N, W, Q + KV, KV);
    } else {
        const be_bf16 *r = round_shared(fm, in, N, w->q_w, w->k_w);
        fw_lin_fwd_r(fm, w->qn_w ? a->q_raw : a->q, in, r, w->q_w, w->q_b, N, C, fm->Q);
        fw_lin_fwd_r(fm, w->kn_w ? a->k_raw : a->k, in, r, w->k_w, w->k_b, N, C, fm->KV);
        fw_lin_fwd_r(fm, a->v, in, r, w->v_w, w->v_b, N, C, fm->KV);
    }
    if (w->qn_w) {   /* Qwen3: RMSNorm over each head's D values, before RoPE */
        be->rmsnorm_forward(a->q, a->qn_rstd, a->q_raw, w->qn_w, fm->eps, fm->add_one,
                            N * fm->H, fm->D);
        be->rmsnorm_forward(a->k, a->kn_rstd, a->k_raw, w->kn_w, fm->eps, fm->add_one,
                            N * fm->KVH, fm->D);
    }
    const float *cs, *sn;
    if (fw_rope_tables(fm, l, &cs, &sn)) {   /* a->att is free until the attention */
        fw_rope_apply(fm, a->q, a->q, a->att, cs, sn, N, fm->H, 0);
        fw_rope_apply(fm, a->k, a->k, a->att, cs, sn, N, fm->KVH, 0);
    }
}

/* gate/up (or fc) → activation → down, from `in` (N,C) into a->m_raw or a->m. */
static void mlp_fwd(fw_model *fm, fw_layer_acts *a, const fw_lw *w, const float *in, int N) {
    const be_backend *be = fm->be;
    size_t NI = (size_t)N * fm->I;
    const be_bf16 *r = w->up_w ? round_shared(fm, in, N, w->gate_w, w->up_w) : NULL;
    const be_bf16 *act16 = NULL;   /* act rounded for a bf16 down product, made with it */
    if (fused_mlp(fm)) {   /* Phi-3: [gate | up] from one product, act(gate)·up */
        fw_lin_fwd_r(fm, a->gu, in, NULL, w->gate_w, w->gate_b, N, fm->C, 2 * fm->I);
        be->slice_forward(a->gate, a->gu, N, 2 * fm->I, 0, fm->I);
        be->slice_forward(a->up, a->gu, N, 2 * fm->I, fm->I, fm->I);
        be->gated_forward(a->act, a->gate, a->up, fm->act, NI);
    } else if (w->up_w) {
        fw_lin_fwd_r(fm, a->gate, in, r, w->gate_w, w->gate_b, N, fm->C, fm->I);
        fw_lin_fwd_r(fm, a->up, in, r, w->up_w, w->up_b, N, fm->C, fm->I);
        const be_bf16_ops *o = fw_rounding(fm);
        if (o && fm->acts.in16 && fw_is_half(fm, w->down_w)) {   /* the gate/up input is done */
            o->gated_forward_rounded(a->act, fm->acts.in16, a->gate, a->up, fm->act, NI);
            act16 = fm->acts.in16;
        } else {
            be->gated_forward(a->act, a->gate, a->up, fm->act, NI);
        }
    } else {
        fw_lin_fwd_r(fm, a->gate, in, r, w->gate_w, w->gate_b, N, fm->C, fm->I);
        be->act_forward(a->act, a->gate, fm->act, NI);
    }
    float *dst = w->mn_w ? a->m_raw : a->m;
    fw_lin_fwd_r(fm, dst, a->act, act16, w->down_w, w->down_b, N, fm->I, fm->C);
    if (w->mn_w) norm_fwd(fm, a->m, NULL, a->m_rstd, a->m_raw, w->mn_w, NULL, N);
}

/* Pre-norm decoder layer (Llama, Mistral, Qwen2, Gemma, Gemma 2, GPT-2). */
static void decoder_layer(fw_model *fm, int l, fw_layer_acts *a, int B, int T, const int *mask) {
    const be_backend *be = fm->be;
    const fw_lw *w = &fm->lw[l];
    int N = B * T;
    size_t NC = (size_t)N * fm->C;
    norm_fwd(fm, a->n1, a->n1_mean, a->n1_rstd, a->x, w->n1_w, w->n1_b, N);
    qkv_fwd(fm, l, a, w, a->n1, N);
    attention(fm, a, l, B, T, mask);
    float *dst = w->on_w ? a->o_raw : a->o;
    lin_fwd(fm, dst, a->att, w->o_w, w->o_b, N, fm->Q, fm->C);
    if (w->on_w) norm_fwd(fm, a->o, NULL, a->o_rstd, a->o_raw, w->on_w, NULL, N);
    if (a->o_drop) be->mul_forward(a->o, a->o, a->o_drop, NC);   /* GPT-2 resid_dropout */
    be->add_forward(a->h, a->x, a->o, NC);
    norm_fwd(fm, a->n2, a->n2_mean, a->n2_rstd, a->h, w->n2_w, w->n2_b, N);
    mlp_fwd(fm, a, w, a->n2, N);
    if (a->m_drop) be->mul_forward(a->m, a->m, a->m_drop, NC);   /* GPT2MLP's dropout */
    be->add_forward(a->y, a->h, a->m, NC);
}

void fw_remake_attn_in(fw_model *fm, int l) {
    fw_layer_acts *a = &fm->acts.layers[l];
    const fw_lw *w = &fm->lw[l];
    if (fm->acts.lean && a->n1)
        norm_fwd(fm, a->n1, a->n1_mean, a->n1_rstd, a->x, w->n1_w, w->n1_b, fm->acts.N);
}

void fw_remake_mlp_in(fw_model *fm, int l) {
    fw_layer_acts *a = &fm->acts.layers[l];
    const fw_lw *w = &fm->lw[l];
    size_t NI = (size_t)fm->acts.N * fm->I;
    if (!fm->acts.lean) return;
    if (a->n2) norm_fwd(fm, a->n2, a->n2_mean, a->n2_rstd, a->h, w->n2_w, w->n2_b, fm->acts.N);
    if (w->up_w || fused_mlp(fm)) fm->be->gated_forward(a->act, a->gate, a->up, fm->act, NI);
    else fm->be->act_forward(a->act, a->gate, fm->act, NI);
}

/* Post-norm encoder layer (BERT). */
static void encoder_layer(fw_model *fm, int l, fw_layer_acts *a, int B, int T, const int *mask) {
    const be_backend *be = fm->be;
    const fw_lw *w = &fm->lw[l];
    int N = B * T, C = fm->C;
    size_t NC = (size_t)N * C;
    qkv_fwd(fm, l, a, w, a->x, N);
    attention(fm, a, l, B, T, mask);
    lin_fwd(fm, a->o, a->att, w->o_w, w->o_b, N, fm->Q, C);
    if (a->o_drop) be->mul_forward(a->o, a->o, a->o_drop, NC);   /* BertSelfOutput.dropout */
    be->add_forward(a->r1, a->x, a->o, NC);
    be->layernorm_forward(a->h, a->r1_mean, a->r1_rstd, a->r1, w->r1_w, w->r1_b, fm->eps, N, C);
    mlp_fwd(fm, a, w, a->h, N);
    if (a->m_drop) be->mul_forward(a->m, a->m, a->m_drop, NC);   /* BertOutput.dropout */
    be->add_forward(a->r2, a->h, a->m, NC);
    be->layernorm_forward(a->y, a->r2_mean, a->r2_rstd, a->r2, w->r2_w, w->r2_b, fm->eps, N, C);
}

int fw_remake_layer(fw_model *fm, int l) {
    fw_acts *A = &fm->acts;
    if (!A->ckpt || A->held == l) return 0;
    fw_layer_acts *a = &A->layers[l];
    fm->lora_oom = 0;
    fm->oom_what = NULL;
    if (fm->a->flags & AF_POST_LN) encoder_layer(fm, l, a, A->B, A->T, A->mask);
    else decoder_layer(fm, l, a, A->B, A->T, A->mask);
    A->held = fm->lora_oom ? -1 : l;
    return fm->lora_oom ? lp_seterr("out of memory for %s",
                                    fm->oom_what ? fm->oom_what : "the adapters' activations")
                        : 0;
}

void fw_set_checkpointing(fw_model *fm, int on) { fm->ckpt = on != 0; }
int fw_checkpointing(const fw_model *fm) { return fm->ckpt; }

/* ---- the forward ------------------------------------------------------------------------- */

static int check_batch(const fw_model *fm, const fw_batch *in) {
    if (!in || in->B <= 0 || in->T <= 0 || !in->ids)
        return lp_seterr("empty input: nothing to run the model on");
    if (in->T > fm->info.max_pos && fm->info.max_pos > 0 && !in->pos)
        return lp_seterr("%d tokens is longer than this model's %d positions "
                         "(max_position_embeddings)", in->T, fm->info.max_pos);
    size_t N = (size_t)in->B * in->T;
    /* the ops index with int: logits (N,V), probabilities (B,H,T,T), MLP (N,I) must fit */
    size_t wide = (size_t)fm->V > (size_t)fm->I ? (size_t)fm->V : (size_t)fm->I;
    if (N > INT32_MAX / wide || (size_t)in->B * fm->H * in->T > INT32_MAX / (size_t)in->T)
        return lp_seterr("batch %d × %d tokens is too large for one forward; use smaller batches",
                         in->B, in->T);
    for (size_t i = 0; i < N; i++) {
        if (in->ids[i] < 0 || in->ids[i] >= fm->V)
            return lp_seterr("token id %d (row %zu, position %zu) is outside the vocabulary "
                             "[0, %d)", in->ids[i], i / in->T, i % in->T, fm->V);
        if (in->pos && (in->pos[i] < 0 || (fm->info.max_pos > 0 && in->pos[i] >= fm->info.max_pos)))
            return lp_seterr("position id %d is outside this model's %d positions", in->pos[i],
                             fm->info.max_pos);
        if (in->types && fm->nm->type_embed &&   /* ignored by models without token types */
            (in->types[i] < 0 || in->types[i] >= (int)fm->m->config->type_vocab_size))
            return lp_seterr("token type %d is outside [0, %lld)", in->types[i],
                             (long long)fm->m->config->type_vocab_size);
    }
    return 0;
}

/* Rows of an f32 table into out (add: +=); ids, checked on the host by check_batch, in
 * [0, V). The backend's unchecked op where it has one (a device then does not wait to read
 * the ids back), else its checked one. */
static int embed_rows(fw_model *fm, float *out, const int *ids, const float *table, int V,
                      int add) {
    const be_backend *be = fm->be;
    int N = fm->acts.N, C = fm->C;
    if (be->embedding_rows) {
        be->embedding_rows(out, ids, table, N, C, add);
        return 0;
    }
    return (add ? be->embedding_add_forward : be->embedding_forward)(out, ids, table, N, V, C);
}

static int embed(fw_model *fm) {
    const be_backend *be = fm->be;
    fw_acts *A = &fm->acts;
    int N = A->N, C = fm->C;
    float *dst = A->emb_sum ? A->emb_sum : A->emb;
    int rc = 0;
    if (!fw_is_half(fm, fm->embed_w))
        rc = embed_rows(fm, dst, A->ids, fm->embed_w, fm->V, 0);
    else if (be->bf16->embedding_rows)
        be->bf16->embedding_rows(dst, A->ids, (const be_bf16 *)fm->embed_w, N, C);
    else
        rc = be->bf16->embedding_forward(dst, A->ids, (const be_bf16 *)fm->embed_w, N, fm->V, C);
    if (rc < 0) return -1;
    if (fm->pos_w && embed_rows(fm, dst, A->pos, fm->pos_w, fm->info.max_pos, 1) < 0) return -1;
    if (fm->type_w &&
        embed_rows(fm, dst, A->types, fm->type_w, (int)fm->m->config->type_vocab_size, 1) < 0)
        return -1;
    if (fm->emb_scale > 0) be->scale_forward(A->emb, A->emb, fm->emb_scale, (size_t)N * C);
    if (A->emb_sum)
        be->layernorm_forward(A->emb, A->emb_mean, A->emb_rstd, A->emb_sum, fm->embn_w, fm->embn_b,
                              fm->eps, N, C);
    return 0;
}

static void upload_inputs(fw_model *fm, const fw_batch *in) {
    fw_acts *A = &fm->acts;
    size_t N = (size_t)A->N;
    int *h = fm->ihost;
    const be_backend *be = fm->be;
    be->to_device(A->ids, in->ids, N * sizeof(int));
    for (size_t i = 0; i < N; i++) h[i] = in->mask ? (in->mask[i] != 0) : 1;
    be->to_device(A->mask, h, N * sizeof(int));
    for (size_t i = 0; i < N; i++) h[i] = in->pos ? in->pos[i] : (int)(i % (size_t)in->T);
    be->to_device(A->pos, h, N * sizeof(int));
    if (fm->inv_freq) {
        size_t half = (size_t)fm->RD / 2;
        float *cs = fm->host, *sn = fm->host + N * half;
        const float *inv = fm->inv_freq;
        if (fm->inv_freq_long) {   /* LongRoPE: the long factors once a position passes the
                                      original length (transformers' max(position_ids) + 1) */
            int top = 0;
            for (size_t i = 0; i < N; i++) top = h[i] > top ? h[i] : top;
            if (top + 1 > fm->rope.original_max_position) inv = fm->inv_freq_long;
        }
        nn_rope_table(cs, sn, inv, h, (int)N, fm->RD);
        if (fm->rope.type == NN_ROPE_LONGROPE && fm->rope.attention_factor != 1.0) {
            float s = (float)fm->rope.attention_factor;   /* cos() · attention_scaling */
            for (size_t i = 0; i < N * half; i++) cs[i] *= s, sn[i] *= s;
        }
        be->to_device(A->rope_cos, cs, N * half * sizeof(float));
        be->to_device(A->rope_sin, sn, N * half * sizeof(float));
        if (fm->inv_freq_local) {
            nn_rope_table(cs, sn, fm->inv_freq_local, h, (int)N, fm->RD);
            be->to_device(A->rope_cos_l, cs, N * half * sizeof(float));
            be->to_device(A->rope_sin_l, sn, N * half * sizeof(float));
        }
    }
    for (size_t i = 0; i < N; i++) h[i] = in->types ? in->types[i] : 0;
    be->to_device(A->types, h, N * sizeof(int));
}

/* The targets of the LM loss (host copy in fm->ihost, device A->targets): transformers'
 * ForCausalLMLoss shift (row t predicts labels[t+1]); masked LM: none. Returns how many are
 * not ignored. */
static int upload_targets(fw_model *fm, const fw_batch *in) {
    int *t = fm->ihost, B = in->B, T = in->T, shift = !fm->info.mlm, count = 0;
    for (int b = 0; b < B; b++)
        for (int i = 0; i < T; i++) {
            t[b * T + i] = i + shift < T ? in->labels[b * T + i + shift] : -100;
            count += t[b * T + i] != -100;
        }
    fm->be->to_device(fm->acts.targets, t, sizeof(int) * (size_t)fm->acts.N);
    return count;
}

/* n rows of logits from the head's input fin: raw = lm_head(fin) (a Linear (V,C), even on
 * GPT-2), then Gemma 2's final soft-cap into logits (raw == logits without one). */
static void head_logits(fw_model *fm, float *raw, float *logits, const float *fin, int n) {
    const be_backend *be = fm->be;
    if (fw_is_half(fm, fm->head_w))
        be->bf16->linear_forward(raw, fin, (const be_bf16 *)fm->head_w, fm->mlm_bias, n, fm->C,
                                 fm->V, 0);
    else
        be->linear_forward(raw, fin, fm->head_w, fm->mlm_bias, n, fm->C, fm->V);
    if (fm->final_softcap > 0)
        be->softcap_forward(logits, raw, fm->final_softcap, (size_t)n * fm->V);
}

void fw_head_chunk_grad(fw_model *fm, float *dfin, float *dlogits, float *dlraw,
                        const float *logits, const float *lse, const int *targets, float dloss,
                        int count, int n) {
    const be_backend *be = fm->be;
    int C = fm->C, V = fm->V;
    size_t nv = (size_t)n * V;
    be->cross_entropy_backward(dlogits, dloss, lse, logits, targets, count, n, V);
    if (fm->final_softcap > 0) {
        be->zero(dlraw, nv * sizeof(float));
        be->softcap_backward(dlraw, dlogits, logits, fm->final_softcap, nv);
    }
    if (fw_is_half(fm, fm->head_w))
        be->bf16->linear_backward(dfin, dlraw, (const be_bf16 *)fm->head_w, n, C, V, 0, 0.0f);
    else
        be->matmul(dfin, dlraw, fm->head_w, n, C, V, 0, 0, 1.0f, 0.0f);
}

/* FW_LOSS: lm_head (and Gemma 2's soft-cap) over chunks of rows of A->fin; each chunk's
 * cross-entropy gives its rows' losses and, with the whole batch's target count known
 * beforehand, its logits' gradient for dloss = 1, taken back through the head into A->dfin
 * at once. The same ops as head() + head_bwd() on the same rows, so the same numbers but for
 * the loss's sum (each row's loss rounded to f32, then summed in double). The targets are
 * checked here, on the host, so the device is read once (the rows' losses, at the end),
 * not once per chunk. */
static int head_loss(fw_model *fm, const fw_batch *in, fw_out *out) {
    const be_backend *be = fm->be;
    fw_acts *A = &fm->acts;
    int N = A->N, C = fm->C, V = fm->V, rows = fw_head_rows(fm, N);
    int count = upload_targets(fm, in);
    for (int n = 0; n < N; n++) {   /* upload_targets left them in fm->ihost */
        int t = fm->ihost[n];
        if (t != -100 && (t < 0 || t >= V))
            return lp_seterr("labels: label %d at position %d is outside [0, %d) and is not -100",
                             t, n, V);
    }
    const be_bf16_ops *fused = fw_fused_head(fm);
    for (int r0 = 0; r0 < N; r0 += rows) {
        int n = N - r0 < rows ? N - r0 : rows;
        const float *fin = A->fin + (size_t)r0 * C;
        if (fused) {   /* raw logits → loss rows and the bf16 gradient → dfin */
            be_bf16 *dl = (be_bf16 *)A->dlogits;
            fused->linear_forward(A->logits_raw, fin, (const be_bf16 *)fm->head_w, fm->mlm_bias,
                                  n, C, V, 0);
            fused->head_loss_rows(A->rowloss + r0, A->lse + r0, dl, A->logits_raw,
                                  A->targets + r0, n, V, fm->final_softcap, 1.0f, count);
            fused->linear_backward_rounded(A->dfin + (size_t)r0 * C, dl,
                                           (const be_bf16 *)fm->head_w, n, C, V, 0, 0.0f);
            continue;
        }
        head_logits(fm, A->logits_raw, A->logits, fin, n);
        be->cross_entropy_rows(A->rowloss + r0, A->lse + r0, A->logits, A->targets + r0, n, V);
        fw_head_chunk_grad(fm, A->dfin + (size_t)r0 * C, A->dlogits,
                           fm->final_softcap > 0 ? A->logits_raw : A->dlogits, A->logits,
                           A->lse + r0, A->targets + r0, 1.0f, count, n);
    }
    float *rl = lp_malloc((size_t)(N ? N : 1) * sizeof(float));
    if (!rl) return lp_seterr("out of memory");
    be->to_host(rl, A->rowloss, (size_t)N * sizeof(float));   /* waits for the head */
    double sum = 0;
    for (int n = 0; n < N; n++) sum += rl[n];   /* an ignored row's is 0 */
    lp_free(rl);
    out->logits = NULL;
    out->R = N;
    out->V = V;
    out->has_loss = 1;
    out->count = count;
    out->loss = count ? (float)(sum / count) : 0.0f;
    return 0;
}

/* Final norm, lm_head, soft-cap and causal loss; or pooler + classifier + class loss. */
static int head(fw_model *fm, const fw_batch *in, const float *hidden, fw_out *out) {
    const be_backend *be = fm->be;
    fw_acts *A = &fm->acts;
    int B = A->B, T = A->T, C = fm->C;
    int last = (in->flags & FW_LAST) != 0;
    memset(out, 0, sizeof *out);
    out->kind = fm->info.out_kind;
    if (fm->info.out_kind == FW_OUT_HIDDEN) {
        out->logits = hidden;
        out->R = A->N;
        out->V = C;
        return 0;
    }
    if (fm->info.out_kind == FW_OUT_CLASSES) {
        int L = fm->info.num_labels;
        for (int b = 0; b < B; b++)   /* BertPooler: the first token of each row */
            be->copy(A->pooled_in + (size_t)b * C, hidden + (size_t)b * T * C, sizeof(float) * C);
        lin_fwd(fm, A->pooled_pre, A->pooled_in, fm->pool_w, fm->pool_b, B, C, C);
        be->act_forward(A->pooled, A->pooled_pre, NN_ACT_TANH, (size_t)B * C);
        if (A->pool_drop) be->mul_forward(A->pooled, A->pooled, A->pool_drop, (size_t)B * C);
        lin_fwd(fm, A->logits, A->pooled, fm->cls_w, fm->cls_b, B, C, L);
        out->logits = A->logits;
        out->R = B;
        out->V = L;
        if (in->labels) {
            be->to_device(A->targets, in->labels, sizeof(int) * B);
            if (be->cross_entropy_forward(&out->loss, A->lse, &out->count, A->logits, A->targets,
                                          B, L) < 0)
                return lp_preferr("labels");
            out->has_loss = 1;
        }
        return 0;
    }
    int R = last ? B : A->N;
    const float *src = hidden;
    if (last) {
        for (int b = 0; b < B; b++)
            be->copy(fm->last_rows + (size_t)b * C, hidden + ((size_t)b * T + T - 1) * C,
                     sizeof(float) * C);
        src = fm->last_rows;
    }
    if (fm->info.mlm) {   /* transform: dense → activation → LayerNorm, then the decoder */
        lin_fwd(fm, A->head_pre, src, fm->mlm_w, fm->mlm_b, R, C, C);
        be->act_forward(A->head_act, A->head_pre, fm->act, (size_t)R * C);
        src = A->head_act;
    }
    norm_fwd(fm, A->fin, A->fin_mean, A->fin_rstd, src, fm->fin_w, fm->fin_b, R);
    if (A->dfin) return head_loss(fm, in, out);
    head_logits(fm, A->logits_raw, A->logits, A->fin, R);
    out->logits = A->logits;
    out->R = R;
    out->V = fm->V;
    if (in->labels && !last) {
        upload_targets(fm, in);
        if (be->cross_entropy_forward(&out->loss, A->lse, &out->count, A->logits, A->targets,
                                      A->N, fm->V) < 0)
            return lp_preferr("labels");
        out->has_loss = 1;
    }
    return 0;
}

/* The training-mode dropout masks planned for this forward: one seed per forward (the draw
 * counter), a counter range per mask, so masks differ between masks, layers and forwards. */
static void draw_masks(fw_model *fm, fw_acts *A) {
    uint64_t seed = 0x64726f70ULL + fm->train_draws;   /* "drop" */
    size_t N = (size_t)A->N, C = (size_t)fm->C;
    if (A->emb_drop) fm->be->dropout_mask(A->emb_drop, seed, 1ull << 40, fm->p_emb, N * C);
    if (A->pool_drop)
        fm->be->dropout_mask(A->pool_drop, seed, 2ull << 40, fm->p_cls, (size_t)A->B * C);
    for (int l = 0; l < (A->keep ? fm->L : 1); l++) {
        fw_layer_acts *a = &A->layers[l];
        uint64_t k = 3 + 3 * (uint64_t)l;
        if (a->attn_drop)
            fm->be->dropout_mask(a->attn_drop, seed, k << 40, fm->p_attn,
                                 (size_t)A->B * fm->H * A->T * A->T);
        if (a->o_drop) fm->be->dropout_mask(a->o_drop, seed, (k + 1) << 40, fm->p_resid, N * C);
        if (a->m_drop) fm->be->dropout_mask(a->m_drop, seed, (k + 2) << 40, fm->p_resid, N * C);
    }
}

/* in->flags less FW_LOSS where it does not apply: no labels, not kept, the last rows only,
 * not a language-model head, a head that trains (its gradient needs the logits' gradient
 * in the backward), generation. */
static int effective_flags(const fw_model *fm, const fw_batch *in) {
    int f = in->flags;
    if ((f & FW_LOSS) &&
        (!in->labels || !(f & FW_KEEP) || (f & FW_LAST) || fm->kv ||
         fm->info.out_kind != FW_OUT_LM || fw_grad_of(fm, fm->head_w) ||
         (fm->mlm_bias && fw_grad_of(fm, fm->mlm_bias))))
        f &= ~FW_LOSS;
    return f;
}

static int forward(fw_model *fm, const fw_batch *in_, fw_out *out) {
    if (check_batch(fm, in_) < 0) return -1;
    if (fw_load_weights(fm) < 0) return -1;
    fw_batch eff = *in_;
    const fw_batch *in = &eff;
    eff.flags = effective_flags(fm, in_);
    if (ensure_arena(fm, in->B, in->T, in->flags) < 0) return -1;
    fm->last_flags = in->flags;
    fm->lora_oom = 0;
    fm->oom_what = NULL;
    fm->fwd_epoch = fm->lora_epoch;
    if (in->flags & FW_TRAIN) fm->train_draws++;
    fm->have_acts = 1;
    fw_acts *A = &fm->acts;
    upload_inputs(fm, in);
    if (embed(fm) < 0) return -1;
    draw_masks(fm, A);
    if (A->emb_drop) fm->be->mul_forward(A->emb, A->emb, A->emb_drop, (size_t)A->N * fm->C);
    int keep = A->keep, B = in->B, T = in->T;
    const float *x = A->emb;
    for (int l = 0; l < fm->L; l++) {
        fw_layer_acts *a = &A->layers[keep ? l : 0];
        a->x = (float *)x;
        if (!keep) a->y = fm->ybuf[l % 2];
        if (fm->a->flags & AF_POST_LN) encoder_layer(fm, l, a, B, T, A->mask);
        else decoder_layer(fm, l, a, B, T, A->mask);
        x = a->y;
    }
    A->held = fm->L - 1;
    int rc = head(fm, in, x, out);
    /* No wait for the device here: the loss, when there is one, has been read; outputs on a
     * GPU are read through to_host, which waits. An op that could not get device scratch did
     * nothing: its message replaces whatever error followed from it (head's "labels: …" when
     * cross-entropy was the one). */
    if (fm->be->op_failed && fm->be->op_failed()) rc = -1;
    if (!rc && fm->lora_oom)
        rc = lp_seterr("out of memory for %s",
                       fm->oom_what ? fm->oom_what : "the adapters' activations");
    if (!rc && out->has_loss && fm->extra_loss) out->loss += (float)fm->extra_loss(fm);
    if (!rc && fm->be->op_failed && fm->be->op_failed()) rc = -1;
    fm->runs++;
    if (!rc) {
        fm->last_out = *out;
        return 0;
    }
    fm->have_acts = 0;
    if (in->flags & FW_TRAIN) fm->train_draws--;   /* the next forward draws these masks again */
    return -1;
}

int fw_forward(fw_model *fm, const fw_batch *in, fw_out *out) {
    fm->kv = NULL;
    return forward(fm, in, out);
}

/* ---- one sequence with a KV cache (generate.c) ------------------------------------------- */

fw_kv *fw_kv_new(fw_model *fm, int cap) {
    fw_kv *kv = lp_calloc(1, sizeof *kv);
    if (!kv) return lp_seterr("out of memory"), NULL;
    kv->cap = cap;
    kv->k = lp_calloc((size_t)fm->L, sizeof *kv->k);
    kv->v = lp_calloc((size_t)fm->L, sizeof *kv->v);
    if (!kv->k || !kv->v) { fw_kv_free(fm, kv); return lp_seterr("out of memory"), NULL; }
    for (int l = 0; l < fm->L; l++) {
        kv->k[l] = fm->be->alloc(sizeof(float) * (size_t)cap * fm->KV);
        kv->v[l] = fm->be->alloc(sizeof(float) * (size_t)cap * fm->KV);
        if (!kv->k[l] || !kv->v[l]) { fw_kv_free(fm, kv); return NULL; }
    }
    return kv;
}

void fw_kv_free(fw_model *fm, fw_kv *kv) {
    if (!kv) return;
    for (int l = 0; l < fm->L; l++) {
        if (kv->k) fm->be->free(kv->k[l]);
        if (kv->v) fm->be->free(kv->v[l]);
    }
    lp_free(kv->k);
    lp_free(kv->v);
    lp_free(kv);
}

int fw_step(fw_model *fm, fw_kv *kv, const int32_t *ids, int n, float *logits_host) {
    if (!fm->info.causal || fm->info.out_kind != FW_OUT_LM)
        return lp_seterr("%s is not a causal language model: nothing to generate",
                         fm->m->config->architecture);
    if (n <= 0) return lp_seterr("empty input: nothing to run the model on");
    if (kv->len > 0 && n != 1) return lp_seterr("fw_step: one token at a time after the prompt");
    if (kv->len + n > kv->cap || (fm->info.max_pos > 0 && kv->len + n > fm->info.max_pos))
        return lp_seterr("%d tokens is longer than this model's %d positions "
                         "(max_position_embeddings)", kv->len + n,
                         fm->info.max_pos < kv->cap ? fm->info.max_pos : kv->cap);
    if ((size_t)kv->cap > fm->dec_cap) {
        fm->be->free(fm->dec_probs);
        fm->dec_probs = fm->be->alloc(sizeof(float) * (size_t)kv->cap * fm->H);
        fm->dec_cap = fm->dec_probs ? (size_t)kv->cap : 0;
        if (!fm->dec_probs) return -1;
    }
    int32_t pos[n];
    for (int i = 0; i < n; i++) pos[i] = kv->len + i;
    fw_batch in = {.B = 1, .T = n, .ids = ids, .pos = pos, .flags = FW_LAST};
    fw_out out;
    fm->kv = kv;
    int rc = forward(fm, &in, &out);
    fm->kv = NULL;
    if (rc < 0) return -1;
    fm->be->to_host(logits_host, out.logits, sizeof(float) * (size_t)fm->V);
    kv->len += n;
    return 0;
}
