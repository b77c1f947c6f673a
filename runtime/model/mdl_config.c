/* mdl_config.c — config.json into mdl_config: the fields compute needs, under one spelling,
 * with transformers' defaults where the file is silent. */
#include "model/arch.h"
#include "model/model.h"
#include "util/err.h"
#include "util/mem.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_DIM (1LL << 31)   /* keeps every product of two dims inside int64 */

/* The first of `keys` (NULL-terminated) present and not null in o, or NULL. */
static json_t *get_any(json_t *o, const char *const *keys, const char **which) {
    for (; *keys; keys++) {
        json_t *v = json_object_get(o, *keys);
        if (v && !json_is_null(v)) { *which = *keys; return v; }
    }
    return NULL;
}

/* An integer field under any of its spellings: 0 when absent, -1 after lp_seterr(). */
static int get_int(json_t *o, const char *name, const char *const *keys, int64_t *out) {
    const char *k = NULL;
    json_t *v = get_any(o, keys, &k);
    if (!v) return 0;
    if (!json_is_integer(v))
        return lp_seterr("%s: `%s` must be an integer", name, k);
    json_int_t x = json_integer_value(v);
    if (x < 0 || x > MAX_DIM)
        return lp_seterr("%s: `%s` is %lld, outside 0 .. 2^31", name, k, (long long)x);
    *out = x;
    return 0;
}

static int get_num(json_t *o, const char *name, const char *const *keys, double *out) {
    const char *k = NULL;
    json_t *v = get_any(o, keys, &k);
    if (!v) return 0;
    if (!json_is_number(v)) return lp_seterr("%s: `%s` must be a number", name, k);
    *out = json_number_value(v);
    return 0;
}

static int get_bool(json_t *o, const char *name, const char *key, int *out) {
    json_t *v = json_object_get(o, key);
    if (!v || json_is_null(v)) return 0;
    if (!json_is_boolean(v)) return lp_seterr("%s: `%s` must be true or false", name, key);
    *out = json_is_true(v);
    return 0;
}

static int get_str(json_t *o, const char *name, const char *const *keys, char **out) {
    const char *k = NULL;
    json_t *v = get_any(o, keys, &k);
    if (!v) return 0;
    if (!json_is_string(v)) return lp_seterr("%s: `%s` must be a string", name, k);
    if (!(*out = lp_strdup(json_string_value(v)))) return lp_seterr("out of memory");
    return 0;
}

#define KEYS(...) ((const char *const[]){__VA_ARGS__, NULL})

void mdl_config_free(mdl_config *c) {
    if (!c) return;
    lp_free(c->architecture);
    lp_free(c->model_type);
    lp_free(c->hidden_act);
    if (c->id2label)
        for (int64_t i = 0; i < c->num_labels; i++) lp_free(c->id2label[i]);
    lp_free(c->id2label);
    lp_free(c->sliding_layers);
    lp_free(c->nope_layers);
    json_decref(c->rope_scaling);
    json_decref(c->raw);
    lp_free(c);
}

static int parse_labels(mdl_config *c, json_t *o, const char *name) {
    json_t *m = json_object_get(o, "id2label");
    if (m && !json_is_null(m)) {
        if (!json_is_object(m)) return lp_seterr("%s: `id2label` must be an object", name);
        c->num_labels = (int64_t)json_object_size(m);
    }
    if (c->num_labels > (1 << 20))
        return lp_seterr("%s: %lld labels is too many", name, (long long)c->num_labels);
    if (!c->num_labels) return 0;
    c->id2label = lp_calloc((size_t)c->num_labels, sizeof *c->id2label);
    if (!c->id2label) return lp_seterr("out of memory");
    const char *k; json_t *v;
    if (m && json_is_object(m)) {
        json_object_foreach(m, k, v) {
            char *end;
            long i = strtol(k, &end, 10);
            if (*k == 0 || *end || i < 0 || i >= c->num_labels || c->id2label[i])
                return lp_seterr("%s: `id2label` key `%s` is not a label index 0 .. %lld", name,
                                 k, (long long)c->num_labels - 1);
            if (!json_is_string(v))
                return lp_seterr("%s: `id2label` value for %s must be a string", name, k);
            if (!(c->id2label[i] = lp_strdup(json_string_value(v)))) return lp_seterr("out of memory");
        }
    }
    for (int64_t i = 0; i < c->num_labels; i++) {   /* transformers' default names */
        if (c->id2label[i]) continue;
        char buf[32];
        snprintf(buf, sizeof buf, "LABEL_%lld", (long long)i);
        if (!(c->id2label[i] = lp_strdup(buf))) return lp_seterr("out of memory");
    }
    return 0;
}

/* Which layers use a sliding window: layer_types when given (transformers ≥ 4.53), else the
 * architecture's rule. */
static int parse_sliding(mdl_config *c, json_t *o, const arch_desc *a, const char *name) {
    int64_t n = c->num_hidden_layers;
    if (n > 100000) return lp_seterr("%s: %lld layers is too many", name, (long long)n);
    c->sliding_layers = lp_calloc(n ? (size_t)n : 1, 1);
    if (!c->sliding_layers) return lp_seterr("out of memory");
    json_t *lt = json_object_get(o, "layer_types");
    if (json_is_array(lt)) {
        for (size_t i = 0; i < json_array_size(lt) && i < (size_t)n; i++) {
            const char *s = json_string_value(json_array_get(lt, i));
            c->sliding_layers[i] = s && strcmp(s, "sliding_attention") == 0;
        }
        return 0;
    }
    if (!c->sliding_window) return 0;   /* (use_sliding_window: false zeroed it) */
    if (a && (a->flags & AF_DUAL_ROPE)) {   /* Gemma 3: every sliding_window_pattern-th is full */
        int64_t every = 6;   /* Gemma3TextConfig's default */
        if (get_int(o, name, KEYS("sliding_window_pattern", "_sliding_window_pattern"), &every) < 0)
            return -1;
        for (int64_t i = 0; i < n; i++) c->sliding_layers[i] = every <= 0 || (i + 1) % every != 0;
        return 0;
    }
    int64_t from = 0;
    if (a && (a->flags & (AF_QKV_BIAS | AF_QK_NORM))) {   /* Qwen2, Qwen3: from max_window_layers */
        if (get_int(o, name, KEYS("max_window_layers"), &from) < 0) return -1;
    }
    for (int64_t i = from; i < n; i++)
        c->sliding_layers[i] = (a && (a->flags & AF_SLIDING_ALT)) ? (i % 2 == 0) : 1;
    return 0;
}

/* SmolLM3's layers without RoPE: no_rope_layers (1: RoPE, 0: none) when given, else a NoPE
 * layer every no_rope_layer_interval (4), as SmolLM3Config makes it. */
static int parse_nope(mdl_config *c, json_t *o, const arch_desc *a, const char *name) {
    if (!a || !(a->flags & AF_NOPE)) return 0;
    int64_t n = c->num_hidden_layers, every = 4;
    c->nope_layers = lp_calloc(n ? (size_t)n : 1, 1);
    if (!c->nope_layers) return lp_seterr("out of memory");
    json_t *nr = json_object_get(o, "no_rope_layers");
    if (json_is_array(nr)) {
        if ((int64_t)json_array_size(nr) != n)
            return lp_seterr("%s: no_rope_layers has %zu entries for %lld layers", name,
                             json_array_size(nr), (long long)n);
        for (int64_t i = 0; i < n; i++) {
            json_t *v = json_array_get(nr, (size_t)i);
            if (!json_is_integer(v) && !json_is_boolean(v))
                return lp_seterr("%s: no_rope_layers holds a value that is not 0 or 1", name);
            c->nope_layers[i] = json_is_integer(v) ? json_integer_value(v) == 0 : json_is_false(v);
        }
        return 0;
    }
    if (get_int(o, name, KEYS("no_rope_layer_interval"), &every) < 0) return -1;
    for (int64_t i = 0; i < n; i++) c->nope_layers[i] = every > 0 && (i + 1) % every == 0;
    return 0;
}

mdl_config *mdl_config_parse(const char *text, size_t len, const char *name) {
    json_error_t je;
    json_t *o = json_loadb(text, len, 0, &je);
    if (!o) {
        lp_seterr("%s: not valid JSON: %s (line %d, column %d)", name, je.text, je.line, je.column);
        return NULL;
    }
    mdl_config *c = lp_calloc(1, sizeof *c);
    if (!c) { json_decref(o); lp_seterr("out of memory"); return NULL; }
    c->raw = o;
    if (!json_is_object(o)) { lp_seterr("%s: not a JSON object", name); goto fail; }

    json_t *archs = json_object_get(o, "architectures");
    if (archs && !json_is_null(archs)) {
        if (!json_is_array(archs) || (json_array_size(archs) &&
                                      !json_is_string(json_array_get(archs, 0)))) {
            lp_seterr("%s: `architectures` must be a list of names", name);
            goto fail;
        }
        if (json_array_size(archs) &&
            !(c->architecture = lp_strdup(json_string_value(json_array_get(archs, 0))))) {
            lp_seterr("out of memory");
            goto fail;
        }
    }
    const arch_desc *a = arch_lookup(c->architecture);
    if (get_str(o, name, KEYS("model_type"), &c->model_type) < 0 ||
        get_int(o, name, KEYS("hidden_size", "n_embd", "d_model"), &c->hidden_size) < 0 ||
        get_int(o, name, KEYS("intermediate_size", "n_inner", "ffn_dim"), &c->intermediate_size) < 0 ||
        get_int(o, name, KEYS("num_hidden_layers", "n_layer"), &c->num_hidden_layers) < 0 ||
        get_int(o, name, KEYS("num_attention_heads", "n_head"), &c->num_attention_heads) < 0 ||
        get_int(o, name, KEYS("num_key_value_heads"), &c->num_key_value_heads) < 0 ||
        get_int(o, name, KEYS("head_dim"), &c->head_dim) < 0 ||
        get_int(o, name, KEYS("vocab_size"), &c->vocab_size) < 0 ||
        get_int(o, name, KEYS("max_position_embeddings", "n_positions"),
                &c->max_position_embeddings) < 0 ||
        get_int(o, name, KEYS("n_positions"), &c->n_positions) < 0 ||
        get_int(o, name, KEYS("type_vocab_size"), &c->type_vocab_size) < 0 ||
        get_int(o, name, KEYS("sliding_window"), &c->sliding_window) < 0 ||
        get_int(o, name, KEYS("num_labels"), &c->num_labels) < 0 ||
        get_num(o, name, KEYS("rms_norm_eps"), &c->rms_norm_eps) < 0 ||
        get_num(o, name, KEYS("layer_norm_eps", "layer_norm_epsilon"), &c->layer_norm_eps) < 0 ||
        get_num(o, name, KEYS("query_pre_attn_scalar"), &c->query_pre_attn_scalar) < 0 ||
        get_num(o, name, KEYS("attn_logit_softcapping"), &c->attn_logit_softcapping) < 0 ||
        get_num(o, name, KEYS("final_logit_softcapping"), &c->final_logit_softcapping) < 0 ||
        get_str(o, name, KEYS("hidden_act", "hidden_activation", "activation_function"),
                &c->hidden_act) < 0 ||
        get_bool(o, name, "attention_bias", &c->attention_bias) < 0 ||
        get_bool(o, name, "mlp_bias", &c->mlp_bias) < 0)
        goto fail;

    /* RoPE: transformers 5 nests theta and scaling in rope_parameters; 4 has them at the top.
       Gemma 3 has one set per layer type: rope_parameters.{full,sliding}_attention (5), or
       rope_theta / rope_scaling and rope_local_base_freq (4). */
    c->rope_theta = 10000.0;
    json_t *rp = json_object_get(o, "rope_parameters");
    if (get_num(o, name, KEYS("rope_theta"), &c->rope_theta) < 0) goto fail;
    if (get_num(o, name, KEYS("rope_local_base_freq"), &c->rope_local_theta) < 0) goto fail;
    json_t *rp_local = json_is_object(rp) ? json_object_get(rp, "sliding_attention") : NULL;
    if (json_is_object(rp) && json_is_object(json_object_get(rp, "full_attention")))
        rp = json_object_get(rp, "full_attention");
    if (json_is_object(rp) && get_num(rp, name, KEYS("rope_theta"), &c->rope_theta) < 0) goto fail;
    if (json_is_object(rp_local)) {
        const char *t = json_string_value(json_object_get(rp_local, "rope_type"));
        if (t && strcmp(t, "default")) {
            lp_seterr("%s: rope_parameters.sliding_attention has rope_type \"%s\"; loupe reads "
                      "the default one there", name, t);
            goto fail;
        }
        if (get_num(rp_local, name, KEYS("rope_theta"), &c->rope_local_theta) < 0) goto fail;
    }
    json_t *rs = json_object_get(o, "rope_scaling");
    if (!json_is_object(rs)) rs = json_is_object(rp) ? rp : NULL;
    if (rs) c->rope_scaling = json_incref(rs);

    c->tie_word_embeddings = a && (a->flags & AF_TIE_DEFAULT);
    if (get_bool(o, name, "tie_word_embeddings", &c->tie_word_embeddings) < 0) goto fail;
    int use_sw = 1;
    if (get_bool(o, name, "use_sliding_window", &use_sw) < 0) goto fail;
    if (!use_sw) c->sliding_window = 0;

    if (a) {   /* a known architecture needs its dimensions */
        static const struct { size_t off; const char *key; } need[] = {
            {offsetof(mdl_config, hidden_size), "hidden_size"},
            {offsetof(mdl_config, num_hidden_layers), "num_hidden_layers"},
            {offsetof(mdl_config, num_attention_heads), "num_attention_heads"},
            {offsetof(mdl_config, vocab_size), "vocab_size"},
        };
        for (size_t i = 0; i < sizeof need / sizeof need[0]; i++)
            if (*(int64_t *)((char *)c + need[i].off) == 0) {
                lp_seterr("%s: `%s` is missing or 0 (%s needs it)", name, need[i].key, a->name);
                goto fail;
            }
        if (!c->intermediate_size && (a->flags & AF_CONV1D)) c->intermediate_size = 4 * c->hidden_size;
        if (!c->intermediate_size) {
            lp_seterr("%s: `intermediate_size` is missing or 0 (%s needs it)", name, a->name);
            goto fail;
        }
        if (!c->hidden_act && !(c->hidden_act = lp_strdup(a->act))) { lp_seterr("out of memory"); goto fail; }
        if (a->norm == NORM_LAYER && c->layer_norm_eps == 0) c->layer_norm_eps = a->eps;
        if (a->norm != NORM_LAYER && c->rms_norm_eps == 0) c->rms_norm_eps = a->eps;
        if (!c->type_vocab_size && (a->flags & AF_ENCODER)) c->type_vocab_size = 2;
        if (!c->max_position_embeddings && (a->flags & AF_LEARNED_POS)) {
            lp_seterr("%s: `max_position_embeddings` is missing (%s needs it)", name, a->name);
            goto fail;
        }
    }
    if (!c->num_key_value_heads) c->num_key_value_heads = c->num_attention_heads;
    if (!c->head_dim && c->num_attention_heads) c->head_dim = c->hidden_size / c->num_attention_heads;
    if (a && c->num_attention_heads % c->num_key_value_heads) {
        lp_seterr("%s: %lld attention heads cannot be shared by %lld key/value heads", name,
                  (long long)c->num_attention_heads, (long long)c->num_key_value_heads);
        goto fail;
    }
    if (a && (a->flags & AF_ENCODER) && !json_object_get(o, "id2label") && !c->num_labels &&
        a->prefix[0])
        c->num_labels = 2;   /* BertForSequenceClassification's default */
    if (parse_labels(c, o, name) < 0 || parse_sliding(c, o, a, name) < 0 ||
        parse_nope(c, o, a, name) < 0)
        goto fail;
    return c;
fail:
    mdl_config_free(c);
    return NULL;
}

mdl_config *mdl_config_load(const char *path) {
    FILE *fp = fopen(path, "rb");
    if (!fp) { lp_seterr("%s: cannot open: %m", path); return NULL; }
    char *buf = NULL;
    size_t len = 0, cap = 0;
    for (;;) {
        if (len + 65536 > cap) {
            if (cap > (64u << 20)) { fclose(fp); lp_free(buf); lp_seterr("%s: too large", path); return NULL; }
            char *nb = lp_realloc(buf, cap = cap * 2 + 65536);
            if (!nb) { fclose(fp); lp_free(buf); lp_seterr("out of memory"); return NULL; }
            buf = nb;
        }
        size_t k = fread(buf + len, 1, cap - len, fp);
        len += k;
        if (k == 0) break;
    }
    fclose(fp);
    mdl_config *c = mdl_config_parse(buf, len, path);
    lp_free(buf);
    return c;
}
