/* create.c — `create ARCH`: a new model from a config with seeded random weights, and the
 * `train_mode` / `eval_mode` switches of a model's mode. The model is made by
 * runtime/train/model_create.c; `save MODEL DIR` writes it (save_model.c).
 *
 *   m = create "llama" hidden=64 layers=2 heads=4 kv_heads=2 intermediate=128 vocab=1000 seed=0
 *   m = create config="models/default/config.json" seed=1      # its sizes, fresh weights
 *   save m "out/tiny-llama"                                      # transformers loads it */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "commands/model.h"
#include "lang/registry.h"
#include "model/tok.h"
#include "train/model_io.h"
#include "util/mem.h"

/* A friendly option and the config keys it sets (Llama family / GPT-2 spelling). */
typedef struct { const char *opt, *key, *gpt2_key; } size_opt;
static const size_opt size_opts[] = {
    {"hidden", "hidden_size", "n_embd"},
    {"layers", "num_hidden_layers", "n_layer"},
    {"heads", "num_attention_heads", "n_head"},
    {"kv_heads", "num_key_value_heads", NULL},
    {"head_dim", "head_dim", NULL},
    {"intermediate", "intermediate_size", "n_inner"},
    {"vocab", "vocab_size", "vocab_size"},
    {"max_pos", "max_position_embeddings", "n_positions"},
};

static json_t *read_json_file(lp_call *c, const char *path) {
    struct stat st;
    char buf[4200];
    if (stat(path, &st) == 0 && S_ISDIR(st.st_mode)) {   /* a checkpoint directory: its config */
        snprintf(buf, sizeof buf, "%s/config.json", path);
        path = buf;
    }
    json_error_t je;
    json_t *o = json_load_file(path, 0, &je);
    if (!o) { lp_fail(c, "IOError", "%s: %s", path, je.text); return NULL; }
    if (!json_is_object(o)) {
        json_decref(o);
        lp_fail(c, "ValueError", "%s: a config is a JSON object", path);
        return NULL;
    }
    return o;
}

/* A literal value as JSON (config={...}); NULL + lp_seterr for a model or other opaque. */
static json_t *to_json(lv_value *v) {
    switch (v->kind) {
    case LV_NONE: return json_null();
    case LV_BOOL: return json_boolean(v->u.b);
    case LV_INT: return json_integer(v->u.i);
    case LV_FLOAT: return json_real(v->u.f);
    case LV_STR: return json_stringn(v->u.str.s, v->u.str.n);
    case LV_LIST: {
        json_t *a = json_array();
        for (size_t i = 0; a && i < v->u.list.n; i++) {
            json_t *x = to_json(v->u.list.items[i]);
            if (!x) { json_decref(a); return NULL; }
            json_array_append_new(a, x);
        }
        return a;
    }
    case LV_DICT: {
        json_t *o = json_object();
        for (size_t i = 0; o && i < v->u.dict.n; i++) {
            json_t *x = to_json(v->u.dict.e[i].val);
            if (!x) { json_decref(o); return NULL; }
            json_object_set_new(o, v->u.dict.e[i].key, x);
        }
        return o;
    }
    default: return lp_seterr("a %s cannot go into a config", lv_type_name(v)), NULL;
    }
}

static int64_t geti(json_t *o, const char *k, int64_t def) {
    json_t *v = json_object_get(o, k);
    return json_is_integer(v) ? (int64_t)json_integer_value(v) : def;
}

/* config.json for the call; NULL after lp_fail. */
static json_t *build_config(lp_call *c, size_t *vocab_from_tok, tok_tokenizer *tok) {
    const char *arch = lp_arg_str(c, "arch");
    lv_value *cv = lp_arg(c, "config");
    json_t *cfg = NULL, *extra = NULL;
    int from_file = cv->kind == LV_STR;
    if (cv->kind != LV_NONE && cv->kind != LV_STR && cv->kind != LV_DICT) {
        lp_fail(c, "TypeError", "config= is a config.json path or a dict of config keys, not %s",
                lv_type_name(cv));
        return NULL;
    }
    if (from_file) {
        if (!(cfg = read_json_file(c, cv->u.str.s))) return NULL;
        json_t *archs = json_object_get(cfg, "architectures");
        const char *fa = json_string_value(json_array_get(archs, 0));
        if (arch) {   /* the file's architecture, unless ARCH names another class */
            json_t *d = tr_create_defaults(arch);
            if (!d) { json_decref(cfg); lp_fail(c, "ValueError", "%s", lp_geterr()); return NULL; }
            json_object_set(cfg, "architectures", json_object_get(d, "architectures"));
            if (!json_object_get(cfg, "model_type"))
                json_object_set(cfg, "model_type", json_object_get(d, "model_type"));
            json_decref(d);
        } else if (!fa) {
            json_decref(cfg);
            lp_fail(c, "ValueError", "%s has no `architectures`; name one: create \"llama\" config=...",
                    cv->u.str.s);
            return NULL;
        }
    } else {
        if (!arch) {
            lp_fail(c, "ArgumentError", "name an architecture (%s) or give config=\"path/config.json\"",
                    tr_create_names());
            return NULL;
        }
        if (!(cfg = tr_create_defaults(arch))) { lp_fail(c, "ValueError", "%s", lp_geterr()); return NULL; }
        if (cv->kind == LV_DICT) extra = to_json(cv);
        if (cv->kind == LV_DICT && !extra) {
            json_decref(cfg);
            lp_fail(c, "ValueError", "config=: %s", lp_geterr());
            return NULL;
        }
    }
    const char *type = json_string_value(json_object_get(cfg, "model_type"));
    int gpt2 = type && !strcmp(type, "gpt2");
    int has_head_dim = json_object_get(cfg, "head_dim") != NULL;
    int has_kv = json_object_get(cfg, "num_key_value_heads") != NULL || (type && !strcmp(type, "qwen2"));
    /* loupe's small defaults where a file does not give the sizes */
    if (!from_file) {
        json_object_set_new(cfg, gpt2 ? "n_embd" : "hidden_size", json_integer(64));
        json_object_set_new(cfg, gpt2 ? "n_layer" : "num_hidden_layers", json_integer(2));
        json_object_set_new(cfg, gpt2 ? "n_head" : "num_attention_heads", json_integer(4));
        json_object_set_new(cfg, "vocab_size", json_integer(tok ? (json_int_t)*vocab_from_tok : 1000));
    }
    if (extra) {   /* config={...}: any key, then the named options on top */
        json_t *rt = json_object_get(extra, "rope_theta");
        json_t *rp = json_object_get(cfg, "rope_parameters");
        if (json_is_object(rp) && json_is_object(json_object_get(rp, "full_attention")))
            rp = json_object_get(rp, "full_attention");   /* Gemma 3: the full layers' */
        if (rt && json_is_object(rp)) json_object_set(rp, "rope_theta", rt);
        json_object_update(cfg, extra);
    }
    for (size_t i = 0; i < sizeof size_opts / sizeof size_opts[0]; i++) {
        const size_opt *o = &size_opts[i];
        if (!lp_arg_given(c, o->opt)) continue;
        int64_t v = lp_arg_int(c, o->opt);
        const char *key = gpt2 ? o->gpt2_key : o->key;
        if (!key || (!strcmp(o->opt, "kv_heads") && !has_kv) || (!strcmp(o->opt, "head_dim") && !has_head_dim)) {
            lp_fail(c, "ValueError", "%s has no %s= (its config has no `%s`)", type ? type : "this model",
                    o->opt, o->key);
            json_decref(cfg);
            json_decref(extra);
            return NULL;
        }
        if (v < 1 || v > (1 << 24)) {
            lp_fail(c, "ValueError", "%s= must be between 1 and 16777216, got %lld", o->opt, (long long)v);
            json_decref(cfg);
            json_decref(extra);
            return NULL;
        }
        json_object_set_new(cfg, key, json_integer(v));
    }
    if (tok && (int64_t)*vocab_from_tok > geti(cfg, "vocab_size", 0)) {
        lp_fail(c, "ValueError", "the tokenizer has %zu tokens but vocab_size is %lld: the model "
                "needs a row for every token id", *vocab_from_tok, (long long)geti(cfg, "vocab_size", 0));
        json_decref(cfg);
        json_decref(extra);
        return NULL;
    }
    /* what follows from the sizes, as transformers' config classes compute it */
    int64_t hidden = geti(cfg, gpt2 ? "n_embd" : "hidden_size", 0);
    int64_t heads = geti(cfg, gpt2 ? "n_head" : "num_attention_heads", 0);
    int64_t layers = geti(cfg, gpt2 ? "n_layer" : "num_hidden_layers", 0);
    if (!from_file) {
        if (heads && hidden % heads && !(has_head_dim && (lp_arg_given(c, "head_dim") ||
                                                           (extra && json_object_get(extra, "head_dim"))))) {
            lp_fail(c, "ValueError", "hidden=%lld is not a multiple of heads=%lld (each head gets "
                    "hidden/heads dimensions)", (long long)hidden, (long long)heads);
            json_decref(cfg);
            json_decref(extra);
            return NULL;
        }
        /* a key config={...} gives is kept; the rest follows from the sizes */
#define FREE_KEY(k) (!extra || !json_object_get(extra, (k)))
        if (has_head_dim && !lp_arg_given(c, "head_dim") && FREE_KEY("head_dim"))
            json_object_set_new(cfg, "head_dim", json_integer(heads ? hidden / heads : 0));
        if (has_kv && !lp_arg_given(c, "kv_heads") && FREE_KEY("num_key_value_heads"))
            json_object_set_new(cfg, "num_key_value_heads", json_integer(heads));
        if (!gpt2 && !lp_arg_given(c, "intermediate") && FREE_KEY("intermediate_size"))
            json_object_set_new(cfg, "intermediate_size", json_integer(4 * hidden));
        if (json_object_get(cfg, "query_pre_attn_scalar") && FREE_KEY("query_pre_attn_scalar"))
            json_object_set_new(cfg, "query_pre_attn_scalar", json_integer(geti(cfg, "head_dim", 0)));
        int qwen = type && (!strcmp(type, "qwen2") || !strcmp(type, "qwen3"));
        if (qwen && FREE_KEY("max_window_layers"))
            json_object_set_new(cfg, "max_window_layers", json_integer(layers));
        int g3 = type && !strcmp(type, "gemma3_text");
        if (type && (qwen || g3 || !strcmp(type, "gemma2")) && FREE_KEY("layer_types")) {
            json_t *lt = json_array();   /* Gemma 2: every other; Gemma 3: all but every 6th */
            for (int64_t i = 0; i < layers && i < 100000; i++)
                json_array_append_new(lt, json_string((!strcmp(type, "gemma2") && i % 2 == 0) ||
                                                              (g3 && (i + 1) % 6 != 0)
                                                          ? "sliding_attention" : "full_attention"));
            json_object_set_new(cfg, "layer_types", lt);
        }
#undef FREE_KEY
    }
    json_decref(extra);
    extra = NULL;
    if (lp_arg_given(c, "labels")) {
        int64_t n = lp_arg_int(c, "labels");
        const char *a0 = json_string_value(json_array_get(json_object_get(cfg, "architectures"), 0));
        if (!a0 || strcmp(a0, "BertForSequenceClassification")) {
            lp_fail(c, "ValueError", "labels= is for a classifier: create \"BertForSequenceClassification\" labels=%lld",
                    (long long)n);
            json_decref(cfg);
            return NULL;
        }
        if (n < 1 || n > 100000) {
            lp_fail(c, "ValueError", "labels= must be between 1 and 100000, got %lld", (long long)n);
            json_decref(cfg);
            return NULL;
        }
        json_t *i2l = json_object(), *l2i = json_object();
        for (int64_t i = 0; i < n; i++) {
            char k[32], v[32];
            snprintf(k, sizeof k, "%lld", (long long)i);
            snprintf(v, sizeof v, "LABEL_%lld", (long long)i);
            json_object_set_new(i2l, k, json_string(v));
            json_object_set_new(l2i, v, json_integer(i));
        }
        json_object_set_new(cfg, "id2label", i2l);
        json_object_set_new(cfg, "label2id", l2i);
    }
    if (lp_arg_given(c, "tie")) json_object_set_new(cfg, "tie_word_embeddings", json_boolean(lp_arg_bool(c, "tie")));
    return cfg;
}

static int run_create(lp_call *c, lv_value **result) {
    st_dtype dt = ST_F32;
    const char *dts = lp_arg_str(c, "dtype");
    if (mv_parse_dtype(dts, &dt) < 0)
        return lp_fail(c, "ValueError", "dtype=\"%s\": expected \"f32\", \"bf16\" or \"f16\"", dts);
    int64_t seed = lp_arg_int(c, "seed");
    if (seed < 0) return lp_fail(c, "ValueError", "seed must be 0 or more, got %lld", (long long)seed);
    const char *tpath = lp_arg_str(c, "tokenizer");
    char *tjson = NULL;
    tok_tokenizer *tok = NULL;
    size_t tvocab = 0;
    if (tpath) {
        struct stat st;
        size_t l = strlen(tpath);
        tjson = lp_malloc(l + 32);
        if (!tjson) return lp_fail(c, "MemoryError", "out of memory");
        if (stat(tpath, &st) == 0 && S_ISDIR(st.st_mode)) snprintf(tjson, l + 32, "%s/tokenizer.json", tpath);
        else snprintf(tjson, l + 32, "%s", tpath);
        if (!(tok = tok_load(tjson))) {
            lp_free(tjson);
            return lp_fail(c, "IOError", "tokenizer=: %s", lp_geterr());
        }
        tvocab = tok_vocab_size(tok);
    }
    json_t *cfg = build_config(c, &tvocab, tok);
    tok_free(tok);
    if (!cfg) { lp_free(tjson); return -1; }
    json_object_set_new(cfg, "dtype", json_string(dt == ST_F32 ? "float32" : dt == ST_BF16 ? "bfloat16" : "float16"));
    const char *a0 = json_string_value(json_array_get(json_object_get(cfg, "architectures"), 0));
    char name[200];
    snprintf(name, sizeof name, "(created %s, seed %lld)", a0 ? a0 : "model", (long long)seed);
    mdl_model *m = tr_create(cfg, (uint64_t)seed, dt, name);
    json_decref(cfg);
    if (!m) {
        lp_free(tjson);
        const char *e = lp_geterr();
        return lp_fail(c, strstr(e, "out of memory") ? "MemoryError" : "ValueError", "%s", e);
    }
    m->tokenizer = tjson;
    /* transformers' from_config gives a model in training mode (nn.Module's default) */
    if (!(*result = mv_new_model(m, 1))) return lp_fail(c, "MemoryError", "out of memory");
    return 0;
}

static const lp_param create_params[] = {
    {"arch", LP_T_STRING, .def = "none", .help = "\"llama\", \"mistral\", \"qwen2\", \"qwen3\", \"gemma\", \"gemma3\", \"gemma2\", \"gpt2\", \"bert\", or a class name (\"BertForSequenceClassification\")"},
    {0}};
static const lp_param create_opts[] = {
    {"config", LP_T_ANY, .def = "none", .help = "a config.json (or checkpoint directory) to take every size from, or a dict of config keys to set"},
    {"hidden", LP_T_INT, .def = "none", .help = "hidden_size (default 64)"},
    {"layers", LP_T_INT, .def = "none", .help = "num_hidden_layers (default 2)"},
    {"heads", LP_T_INT, .def = "none", .help = "num_attention_heads (default 4)"},
    {"kv_heads", LP_T_INT, .def = "none", .help = "num_key_value_heads (default: heads)"},
    {"head_dim", LP_T_INT, .def = "none", .help = "head_dim (default: hidden/heads)"},
    {"intermediate", LP_T_INT, .def = "none", .help = "intermediate_size (default 4·hidden)"},
    {"vocab", LP_T_INT, .def = "none", .help = "vocab_size (default: the tokenizer's, else 1000)"},
    {"max_pos", LP_T_INT, .def = "none", .help = "max_position_embeddings (default: transformers')"},
    {"labels", LP_T_INT, .def = "none", .help = "num_labels of a BertForSequenceClassification (default 2)"},
    {"tie", LP_T_BOOL, .def = "none", .help = "tie_word_embeddings (default: the architecture's)"},
    {"seed", LP_T_INT, .def = "0", .help = "random seed of the weights: the same seed, the same model"},
    {"dtype", LP_T_STRING, .def = "\"f32\"", .help = "dtype of the weights: \"f32\", \"bf16\", \"f16\""},
    {"tokenizer", LP_T_STRING, .def = "none", .help = "a tokenizer.json (or a directory with one) for the model; none: ids only"},
    {0}};
const lp_command lp_cmd_create = {
    "create", create_params, create_opts, run_create,
    .summary = "Make a new model from a config, with seeded random weights",
    .help = "Every config key transformers writes for the architecture gets its default; the\n"
            "options set the sizes. Weights are initialised as transformers' _init_weights does:\n"
            "Linear/Conv1D/Embedding ~ N(0, initializer_range²) (GPT-2's c_proj scaled by\n"
            "1/√(2·layers)), the padding row, biases zero, norms one (Gemma: zero) — drawn from\n"
            "loupe's own generator, so the numbers are not torch's. The model starts in train\n"
            "mode (as from_config); `save m DIR` writes a checkpoint transformers loads.\n"
            "Example:\n"
            "    m = create \"llama\" hidden=64 layers=2 heads=4 kv_heads=2 intermediate=128 vocab=1000\n"
            "    m = create \"gpt2\" config={\"n_positions\": 256} seed=1\n"
            "    m = create config=\"models/default/config.json\" tokenizer=\"models/default\"",
};

/* ---- train_mode / eval_mode ----------------------------------------------------------------- */

static int set_mode(lp_call *c, int on) {
    lv_value *v = lp_arg(c, "model");
    mv_set_training(v, on);
    char msg[160];
    int n = snprintf(msg, sizeof msg, on ? "train mode: `forward` draws dropout (evaluate and generate never do)\n"
                                         : "eval mode: no dropout in `forward`\n");
    lp_out_text(c, 1, msg, (size_t)n);
    return 0;
}
static int run_train_mode(lp_call *c, lv_value **result) { (void)result; return set_mode(c, 1); }
static int run_eval_mode(lp_call *c, lv_value **result) { (void)result; return set_mode(c, 0); }

static const lp_param mode_params[] = {
    {"model", LP_T_VALUE, .vtype = &lv_model_type, .help = "a model"}, {0}};
const lp_command lp_cmd_train_mode = {
    "train_mode", mode_params, NULL, run_train_mode,
    .summary = "Put a model in training mode (model.train()): `forward` draws dropout",
    .help = "As PyTorch's model.train(): dropout (LoRA's, GPT-2's and BERT's) is drawn in\n"
            "`forward`, and `backward` uses the same mask. `load` gives a model in eval mode (as\n"
            "from_pretrained), `create` one in train mode (as from_config); `train` always\n"
            "trains in train mode, `evaluate` and `generate` always run in eval mode, and\n"
            "neither changes the model's mode. `m.training` tells the mode.\n"
            "Example:\n    train_mode m\n    out = forward m batch\n    backward out",
};
/* ---- gradient_checkpointing ----------------------------------------------------------------- */

static int run_gradient_checkpointing(lp_call *c, lv_value **result) {
    (void)result;
    int on = lp_arg_bool(c, "on");
    mv_set_checkpointing(lp_arg(c, "model"), on);
    const char *msg = on ? "gradient checkpointing on: a training forward keeps each layer's input "
                           "only, and the backward runs each layer's forward again first (less "
                           "memory, about one more forward's time)\n"
                         : "gradient checkpointing off: a training forward keeps what the "
                           "backward reads\n";
    lp_out_text(c, 1, msg, strlen(msg));
    return 0;
}

static const lp_param ckpt_opts[] = {
    {"on", LP_T_BOOL, .def = "true", .help = "false switches it off again"}, {0}};
const lp_command lp_cmd_gradient_checkpointing = {
    "gradient_checkpointing", mode_params, ckpt_opts, run_gradient_checkpointing,
    .summary = "Trade compute for memory in training: keep each layer's input, remake the rest",
    .help = "As transformers' model.gradient_checkpointing_enable() (TrainingArguments\n"
            "gradient_checkpointing=True; `train ... gradient_checkpointing=true` switches it on\n"
            "too): a `forward` that keeps state for `backward` keeps only each decoder layer's\n"
            "input and output (and its dropout masks); `backward` runs each layer's forward again,\n"
            "from that input, just before the layer's own backward. The gradients are the same\n"
            "numbers; the memory for activations falls from every layer's to one layer's, for\n"
            "about one more forward's time per step. `attention` and `activations` keep\n"
            "everything whatever it says.\n"
            "Example:\n    gradient_checkpointing m\n    gradient_checkpointing m on=false",
};

const lp_command lp_cmd_eval_mode = {
    "eval_mode", mode_params, NULL, run_eval_mode,
    .summary = "Put a model in eval mode (model.eval()): no dropout in `forward`",
    .help = "As PyTorch's model.eval(). See `train_mode`.\nExample:\n    eval_mode m\n    out = forward m \"The cat\"",
};
