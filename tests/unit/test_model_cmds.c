/* test_model_cmds.c — the model commands (load, layers, stats, show, explain) and the model,
 * module and tensor values, run through the interpreter like a notebook cell would.
 *
 * The commands are added to the interpreter here with lp_interp_add_command, so the test
 * does not depend on them being listed in runtime/commands/list.h. */
#include "t.h"
#include <stdlib.h>
#include <unistd.h>
#include "backend/backend.h"
#include "test_lang_harness.h"
#include "commands/model.h"
#include "model/model.h"
#include "lang/interp.h"
#include "lang/registry.h"

extern const lp_command lp_cmd_load, lp_cmd_layers, lp_cmd_stats, lp_cmd_show, lp_cmd_explain;

static lp_interp *new_interp(void) {
    lp_interp *it = lp_interp_new();
    const lp_command *cmds[] = {&lp_cmd_load, &lp_cmd_layers, &lp_cmd_stats, &lp_cmd_show,
                                &lp_cmd_explain};
    for (size_t i = 0; i < 5; i++) {
        T_OK(reg_validate(cmds[i]) == 0);
        lp_interp_add_command(it, cmds[i]);
    }
    return it;
}

static void test_load_and_values(void) {
    lp_interp *it = new_interp();
    int rc;
    const char *out = run_cell(it, "m = load \"tests/fixtures/models/llama\"\nm", &rc);
    T_EQ_INT(rc, 0);
    T_CONTAINS(out, "LlamaForCausalLM — tests/fixtures/models/llama");
    T_CONTAINS(out, "layers 2 · hidden 32 · heads 4 (kv 2, head_dim 8) · intermediate 64 · vocab 256");
    T_CONTAINS(out, "parameters 34,976 · f32 · 1 file");
    out = run_cell(it, "m.layers[0].self_attn.q_proj", &rc);
    T_CONTAINS(out, "Linear 32 → 32 · model.layers.0.self_attn.q_proj · weight [32, 32] f32 · 1,024 params");
    T_CONTAINS(out, "Query projection");
    T_STR(run_cell(it, "m.layers.0.self_attn.k_proj.out_features", &rc), "16\n");
    T_STR(run_cell(it, "m.layers[-1].mlp.down_proj.weight.shape", &rc), "[32, 64]\n");
    T_STR(run_cell(it, "m.model.layers.1.mlp.type", &rc), "\"LlamaMLP\"\n");
    T_STR(run_cell(it, "m.num_params", &rc), "34976\n");
    T_STR(run_cell(it, "m[\"layers.0.input_layernorm\"].num_params", &rc), "32\n");
    T_CONTAINS(run_cell(it, "m.lm_head.weight", &rc),
               "Tensor lm_head.weight [256, 32] f32 · 8,192 values");
    /* a module keeps its model alive */
    run_cell(it, "q = m.layers[0].self_attn.q_proj\ndel m", &rc);
    T_EQ_INT(rc, 0);
    T_CONTAINS(run_cell(it, "q.weight", &rc), "[32, 32]");
    out = run_cell(it, "m2 = load \"tests/fixtures/models/llama\"\nm2.layers[7]", &rc);
    T_EQ_INT(rc, -1);
    T_CONTAINS(out, "IndexError");
    T_CONTAINS(out, "model.layers has no `7` (2 children)");
    out = run_cell(it, "load \"tests/fixtures/broken/gap.safetensors\"", &rc);
    T_EQ_INT(rc, -1);
    T_CONTAINS(out, "IOError: `load`: tests/fixtures/broken/gap.safetensors: tensor `b`: data_offsets [12, 16] leave a gap");
    lp_interp_free(it);
}

static void test_layers_stats_show(void) {
    lp_interp *it = new_interp();
    int rc;
    run_cell(it, "m = load \"tests/fixtures/models/llama\"\ng = load \"tests/fixtures/models/gpt2\"", &rc);
    T_EQ_INT(rc, 0);
    const char *out = run_cell(it, "layers m \"layers.0.*\"", &rc);
    T_CONTAINS(out, "model.layers.0.self_attn.k_proj          Linear          [16, 32]  f32       512");
    T_CONTAINS(out, "11 modules · 34,976 parameters in LlamaForCausalLM");
    out = run_cell(it, "layers g.h[1]", &rc);
    T_CONTAINS(out, "transformer.h.1.attn.c_attn  Conv1D         [32, 96]   f32     3,168");
    T_CONTAINS(out, "8 modules · 12,704 parameters in transformer.h.1");
    out = run_cell(it, "layers g", &rc);
    T_CONTAINS(out, "lm_head");
    T_CONTAINS(out, "(tied)");
    out = run_cell(it, "layers m \"nothing*\"", &rc);
    T_EQ_INT(rc, -1);
    T_CONTAINS(out, "no module matches `nothing*`");
    out = run_cell(it, "stats m.layers[0].self_attn.q_proj.weight", &rc);
    T_EQ_INT(rc, 0);
    T_CONTAINS(out, "count        1024");
    T_CONTAINS(out, "histogram");
    out = run_cell(it, "stats m.model.norm", &rc);   /* RMSNorm weights start at 1 */
    T_CONTAINS(out, "min        1");
    T_CONTAINS(out, "std        0");
    out = run_cell(it, "show m.layers[0].mlp.up_proj rows=2 cols=3", &rc);
    T_CONTAINS(out, "model.layers.0.mlp.up_proj.weight [64, 32] f32 (first 2 × 3 of 64 × 32)");
    out = run_cell(it, "stats 3", &rc);
    T_EQ_INT(rc, -1);
    T_CONTAINS(out, "expected a tensor, a module with a weight, or a list of numbers, got int");
    lp_interp_free(it);
}

static size_t count_str(const char *s, const char *needle) {
    size_t n = 0;
    for (const char *p = s; (p = strstr(p, needle)); p += strlen(needle)) n++;
    return n;
}

/* stats: the result bundle carries the histogram as SVG, one <rect> per bin */
static void test_stats_svg(void) {
    lp_interp *it = new_interp();
    int rc;
    run_cell(it, "m = load \"tests/fixtures/models/llama\"", &rc);
    T_EQ_INT(rc, 0);
    const int bins[] = {24, 7, 1};
    const char *code[] = {"stats m.layers[0].self_attn.q_proj.weight",
                          "stats m.layers[0].mlp.up_proj bins=7", "stats m.model.norm bins=1"};
    for (size_t k = 0; k < 3; k++) {
        lp_sink sink;
        rec r;
        rec_init(&r, it, &sink);
        lp_outcome o;
        T_EQ_INT(lp_execute(it, code[k], strlen(code[k]), &sink, &o), 0);
        T_OK(o.result != NULL);
        const char *svg = json_string_value(json_object_get(o.result, "image/svg+xml"));
        T_OK(svg != NULL);
        if (svg) {
            T_OK(!strncmp(svg, "<svg", 4));
            T_CONTAINS(svg, "xmlns=\"http://www.w3.org/2000/svg\"");
            T_EQ_INT((long long)count_str(svg, "<rect "), bins[k]);
            T_CONTAINS(svg, "min ");
            T_CONTAINS(svg, "max ");
            T_OK(strstr(svg, "</svg>") && !strcmp(strstr(svg, "</svg>"), "</svg>"));
        }
        T_OK(json_object_get(o.result, "text/html") != NULL);
        T_CONTAINS(json_string_value(json_object_get(o.result, "text/plain")), "histogram");
        lp_outcome_free(&o);
        rec_free(&r);
    }
    /* still a table: rows, indexing */
    T_STR(run_cell(it, "(stats m.model.norm).rows", &rc), "6\n");
    T_CONTAINS(run_cell(it, "(stats m.model.norm)[1]", &rc), "\"stat\": \"min\"");
    lp_interp_free(it);
}

static void test_load_options_and_depth(void) {
    lp_interp *it = new_interp();
    int rc;
    const char *out;
    if (!be_get("cuda")) {   /* no GPU here, or a build without CUDA: a clear error */
        out = run_cell(it, "m = load \"tests/fixtures/models/llama\" device=\"cuda\"", &rc);
        T_EQ_INT(rc, -1);
        T_CONTAINS(out, "ValueError: `load`: device=\"cuda\": ");
        T_OK(strstr(out, "no CUDA device") || strstr(out, "no CUDA backend"));
        out = run_cell(it, "m", &rc);   /* nothing was loaded */
        T_EQ_INT(rc, -1);
    }
    out = run_cell(it, "load \"tests/fixtures/models/llama\" dtype=\"int4\"", &rc);
    T_EQ_INT(rc, -1);
    T_CONTAINS(out, "ValueError");
    T_CONTAINS(out, "\"auto\", \"f32\", \"bf16\", \"f16\"");
    out = run_cell(it, "m = load \"tests/fixtures/models/llama\" dtype=\"f16\"\nm", &rc);
    T_EQ_INT(rc, 0);
    T_CONTAINS(out, "compute dtype f16 (computed in f32: bf16 is loupe's 16-bit mode)");
    out = run_cell(it, "m2 = load \"tests/fixtures/models/llama\"\nm2", &rc);
    T_OK(strstr(out, "compute dtype") == NULL);
    out = run_cell(it, "layers m depth=1", &rc);
    T_EQ_INT(rc, 0);
    T_CONTAINS(out, "2 modules · 34,976 parameters");
    out = run_cell(it, "layers m.layers[1] depth=2", &rc);
    T_CONTAINS(out, "11 modules · 9,280 parameters in model.layers.1");
    out = run_cell(it, "layers m depth=-1", &rc);
    T_EQ_INT(rc, -1);
    T_CONTAINS(out, "depth must be 1 or more");
    lp_interp_free(it);
}

static void test_explain(void) {
    lp_interp *it = new_interp();
    int rc;
    const char *out = run_cell(it, "explain q_proj", &rc);   /* no model: config names */
    T_CONTAINS(out, "a Linear hidden_size → num_heads·head_dim");
    run_cell(it, "m = load \"tests/fixtures/models/gemma2\"", &rc);
    out = run_cell(it, "explain q_proj", &rc);               /* the last model loaded */
    T_CONTAINS(out, "a Linear 32 → 64 that turns each token's hidden vector into 4 query vectors");
    out = run_cell(it, "explain m.layers[0].self_attn", &rc);
    T_CONTAINS(out, "model.layers.0.self_attn (Gemma2Attention)");
    T_CONTAINS(out, "tanh(s/50)·50");
    out = run_cell(it, "explain m.lm_head", &rc);
    T_CONTAINS(out, "Here it is tied");
    out = run_cell(it, "explain wibble", &rc);
    T_EQ_INT(rc, -1);
    T_CONTAINS(out, "no explanation for `wibble` yet");
    lp_interp_free(it);
}

static const char *complete(lp_interp *it, const char *code) {
    static char buf[4096];
    size_t s, e;
    json_t *a = lp_complete(it, code, strlen(code), strlen(code), &s, &e);
    buf[0] = 0;
    size_t i;
    json_t *x;
    json_array_foreach(a, i, x) {
        if (i) strcat(buf, " ");
        strcat(buf, json_string_value(json_object_get(x, "text")));
        strcat(buf, ":");
        strcat(buf, json_string_value(json_object_get(x, "type")));
    }
    json_decref(a);
    return buf;
}

static void test_completion(void) {
    lp_interp *it = new_interp();
    int rc;
    run_cell(it, "m = load \"tests/fixtures/models/llama\"", &rc);
    T_EQ_INT(rc, 0);
    T_STR(complete(it, "m.layers[0].self_attn."),
          "q_proj:module k_proj:module v_proj:module o_proj:module path:attribute type:attribute "
          "num_params:attribute in_features:attribute out_features:attribute");
    T_STR(complete(it, "layers m.layers.1.mlp.g"), "gate_proj:module");
    T_STR(complete(it, "m.layers[0].self_attn.q_proj.w"), "weight:attribute");
    T_CONTAINS(complete(it, "m.la"), "layers:module");
    T_CONTAINS(complete(it, "m.model.n"), "norm:module");
    lp_interp_free(it);
}

/* `load "org/name"`: the snapshot huggingface_hub keeps in its cache (hub.c), laid out as it
 * does: models--ORG--NAME/refs/main naming snapshots/COMMIT/, whose files link to blobs. */
static void hub_repo(const char *cache, const char *repo, const char *commit, int with_ref) {
    char cmd[2048], cwd[1024];
    T_OK(getcwd(cwd, sizeof cwd) != NULL);
    snprintf(cmd, sizeof cmd,
             "set -e; r=%s/%s; mkdir -p $r/blobs $r/snapshots/%s $r/refs; "
             "for f in config.json model.safetensors; do cp %s/tests/fixtures/models/llama/$f $r/blobs/$f.blob; "
             "ln -s ../../blobs/$f.blob $r/snapshots/%s/$f; done; %s",
             cache, repo, commit, cwd, commit, with_ref ? "" : "rm -rf $r/refs");
    if (with_ref) {
        size_t n = strlen(cmd);
        snprintf(cmd + n, sizeof cmd - n, "printf %s > $r/refs/main", commit);
    }
    T_EQ_INT(system(cmd), 0);
}

static void test_load_from_hub_cache(void) {
    T_OK(mdl_is_hub_id("Qwen/Qwen2-0.5B") && mdl_is_hub_id("gpt2") && mdl_is_hub_id("a.b/c_d-1"));
    T_OK(!mdl_is_hub_id("a/b/c") && !mdl_is_hub_id("../x") && !mdl_is_hub_id("/abs") &&
         !mdl_is_hub_id("a/") && !mdl_is_hub_id(".hidden") && !mdl_is_hub_id("a b") &&
         !mdl_is_hub_id("a/..") && !mdl_is_hub_id(""));
    char cache[256];
    snprintf(cache, sizeof cache, "out/test_hub_cache.%d", (int)getpid());
    hub_repo(cache, "models--tiny-org--llama", "0123abcd", 1);
    hub_repo(cache, "models--llama-noref", "feedbeef", 0);
    setenv("HF_HUB_CACHE", cache, 1);
    lp_interp *it = new_interp();
    int rc;
    const char *out = run_cell(it, "m = load \"tiny-org/llama\"\nm", &rc);
    T_EQ_INT(rc, 0);
    T_CONTAINS(out, "LlamaForCausalLM — out/test_hub_cache.");
    T_CONTAINS(out, "/models--tiny-org--llama/snapshots/0123abcd");
    T_STR(run_cell(it, "m.num_params", &rc), "34976\n");
    out = run_cell(it, "m = load \"llama-noref\"\nm.path", &rc);   /* no refs/main: the one snapshot */
    T_EQ_INT(rc, 0);
    T_CONTAINS(out, "/models--llama-noref/snapshots/feedbeef");
    out = run_cell(it, "m = load \"tiny-org/absent\"", &rc);
    T_EQ_INT(rc, -1);
    T_CONTAINS(out, "IOError: `load`: tiny-org/absent: no such file or directory, and not in the "
                    "Hugging Face cache (out/test_hub_cache.");
    T_CONTAINS(out, "loupe never downloads: fetch it with `hf download tiny-org/absent`");
    /* HF_HOME/hub when HF_HUB_CACHE is not set */
    unsetenv("HF_HUB_CACHE");
    char home[300];
    snprintf(home, sizeof home, "out/test_hub_home.%d", (int)getpid());
    char hub[320];
    snprintf(hub, sizeof hub, "%s/hub", home);
    hub_repo(hub, "models--tiny-org--llama", "0123abcd", 1);
    setenv("HF_HOME", home, 1);
    T_STR(run_cell(it, "(load \"tiny-org/llama\").num_layers", &rc), "2\n");
    unsetenv("HF_HOME");
    lp_interp_free(it);
    char rm[700];
    snprintf(rm, sizeof rm, "rm -rf %s %s", cache, home);
    T_EQ_INT(system(rm), 0);
}

int main(void) {
    T_RUN(test_load_and_values);
    T_RUN(test_load_from_hub_cache);
    T_RUN(test_layers_stats_show);
    T_RUN(test_stats_svg);
    T_RUN(test_load_options_and_depth);
    T_RUN(test_explain);
    T_RUN(test_completion);
    return t_done();
}
