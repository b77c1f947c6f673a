/* test_lora_pattern.c — LoRA's rank_pattern, alpha_pattern and target filters against
 * transformers + peft (tools/make_pattern_fixtures.py, tests/fixtures/pattern).
 *
 * grad_<case>: peft LoRA where some modules take another r or lora_alpha — llama (q_proj at
 * r 2, layer 1's down_proj at r 6 and alpha 12, v_proj at alpha 3) and GPT-2 with rsLoRA (one
 * layer's c_attn at r 8, c_fc at alpha 2.5); and exclude_modules / layers_to_transform /
 * layers_pattern: llama in layer 1 only with one module named in full (every layer, as peft)
 * and one excluded by a regex, GPT-2 in layer 0 after "h" with mlp.c_proj excluded — the set of
 * adapted modules must be peft's (every fixture gradient has its tensor); bias="all" (GPT-2: every
 * bias, LayerNorms' too) and "lora_only" (qwen2: q_proj's, o_proj has none), the biases'
 * gradients peft's as well. A and B set to the fixture's values (so each
 * site's shape must be peft's): peft's trainable counts, logits, loss and every gradient within
 * 1e-4 of peft's. peft's saved adapter (peft_llama) loads with its patterns and gives
 * PeftModel's logits; saved again by loupe and loaded back, the same logits and the patterns in
 * adapter_config.json. A key that does not compile, a rank of 0 and a file whose shapes do not
 * fit its rank_pattern are refused. */
#include <math.h>
#include <stdlib.h>
#include <unistd.h>

#include "t.h"
#include "t_device.h"
#include "t_fixture.h"
#include "t_peft.h"

#include "model/model.h"
#include "train/lora.h"

#define TOL 1e-4

static const char *const LLAMA_T[] = {"q_proj", "v_proj", "down_proj"};
static const char *const LLAMA_RK[] = {"q_proj", "layers\\.1\\.mlp\\.down_proj"};
static const int LLAMA_RV[] = {2, 6};
static const char *const LLAMA_AK[] = {"v_proj", "down_proj"};
static const double LLAMA_AV[] = {3, 12};
static const char *const GPT2_T[] = {"c_attn", "c_fc"};
static const char *const GPT2_RK[] = {"h\\.0\\.attn\\.c_attn"};
static const int GPT2_RV[] = {8};
static const char *const GPT2_AK[] = {"c_fc"};
static const double GPT2_AV[] = {2.5};

static const char *const LF_T[] = {"q_proj", "v_proj", "o_proj", "model.layers.0.mlp.up_proj"};
static const char *const LF_EX[] = {"model\\.layers\\.1\\.self_attn\\.o_proj"};
static const int LAYER1[] = {1}, LAYER0[] = {0};
static const char *const GF_T[] = {"c_attn", "c_proj"}, *const GF_EX[] = {"mlp.c_proj"};
static const char *const GF_LP[] = {"h"};
static const char *const GB_T[] = {"c_attn"}, *const QB_T[] = {"q_proj", "o_proj"};

static const tr_lora_config CASES[] = {
    {.r = 4, .alpha = 8, .targets = LLAMA_T, .ntargets = 3, .rank_keys = LLAMA_RK,
     .rank_vals = LLAMA_RV, .nrank = 2, .alpha_keys = LLAMA_AK, .alpha_vals = LLAMA_AV,
     .nalpha = 2},
    {.r = 4, .alpha = 8, .rslora = 1, .targets = GPT2_T, .ntargets = 2, .rank_keys = GPT2_RK,
     .rank_vals = GPT2_RV, .nrank = 1, .alpha_keys = GPT2_AK, .alpha_vals = GPT2_AV,
     .nalpha = 1},
    {.r = 4, .alpha = 8, .targets = LF_T, .ntargets = 4,
     .filter = {.exclude = LF_EX, .nexclude = 1, .exclude_regex = 1, .layers = LAYER1, .nlayers = 1}},
    {.r = 4, .alpha = 8, .targets = GF_T, .ntargets = 2,
     .filter = {.exclude = GF_EX, .nexclude = 1, .layers = LAYER0, .nlayers = 1,
                .layers_pattern = GF_LP, .npattern = 1}},
    {.r = 2, .alpha = 4, .targets = GB_T, .ntargets = 1, .bias = "all"},
    {.r = 2, .alpha = 4, .targets = QB_T, .ntargets = 2, .bias = "lora_only"},
};
static const char *const NAMES[] = {"llama", "gpt2", "llama_filter", "gpt2_filter", "gpt2_bias",
                                    "qwen2_bias"};
static const char *const MODELS[] = {"llama", "gpt2", "llama", "gpt2", "gpt2", "qwen2"};

static void test_fixtures(void) {
    for (int c = 0; c < 6; c++) {
        char path[256];
        snprintf(path, sizeof path, "tests/fixtures/pattern/grad_%s.safetensors", NAMES[c]);
        st_file *f = st_open(path);
        snprintf(path, sizeof path, "tests/fixtures/models/%s", MODELS[c]);
        mdl_model *m = mdl_load(path);
        T_CHECK(f && m, "%s", lp_geterr());
        if (!f || !m) continue;
        fw_model *fm = fw_new(m, t_device_f32());
        T_CHECK(tr_lora_add(fm, &CASES[c]) == 0, "%s", lp_geterr());
        set_params(fm, f, "lora.");
        int64_t *rep = t_fx(f, "report", ST_I64, NULL);
        uint64_t nt = 0, na = 0;
        char line[256];
        tr_report(fm, line, sizeof line, &nt, &na);
        T_CHECK(rep && nt == (uint64_t)rep[0] && na == (uint64_t)rep[1], "%s: %s", NAMES[c], line);
        fw_batch in = fixture_batch(f);
        float *logits = t_fx(f, "logits", ST_F32, NULL), *loss = t_fx(f, "loss", ST_F32, NULL), got;
        double le = logits_err(fm, &in, logits, &got);
        T_CHECK(le <= TOL, "%s: logits %.3g", NAMES[c], le);
        T_NEAR(got, loss[0], 1e-5 * fabs(loss[0]));
        double ge = check_grads(fm, f, TOL);
        printf("%s: logits %.2e, gradients %.2e\n", NAMES[c], le, ge);
        free((void *)in.ids), free((void *)in.mask), free((void *)in.labels);
        free(rep), free(logits), free(loss);
        fw_free(fm);
        mdl_free(m);
        st_close(f);
    }
}

static double file_logits(fw_model *fm, const st_file *pf) {
    const st_tensor *ti = st_find(pf, "ids");
    fw_batch in = {.B = (int)ti->shape[0], .T = (int)ti->shape[1],
                   .ids = t_fx(pf, "ids", ST_I32, NULL), .mask = t_fx(pf, "mask", ST_I32, NULL)};
    float *want = t_fx(pf, "logits", ST_F32, NULL);
    double e = logits_err(fm, &in, want, NULL);
    free((void *)in.ids), free((void *)in.mask), free(want);
    return e;
}

/* adapter src with one config entry replaced (`from` by `to`) is refused with `why` */
static void refused(mdl_model *m, const char *src, const char *from, const char *to,
                    const char *why) {
    char dir[64];
    if (t_adapter_variant(src, from, to, dir) < 0) return;
    fw_model *fm = fw_new(m, t_device_f32());
    T_EQ_INT(tr_adapter_load(fm, dir, NULL), -1);
    T_CONTAINS(lp_geterr(), why);
    fw_free(fm);
}

static void test_files(void) {
    mdl_model *m = mdl_load("tests/fixtures/models/llama");
    st_file *pf = st_open("tests/fixtures/pattern/peft_llama_logits.safetensors");
    T_CHECK(m && pf, "%s", lp_geterr());
    if (!m || !pf) return;
    fw_model *fm = fw_new(m, t_device_f32());
    T_CHECK(tr_adapter_load(fm, "tests/fixtures/pattern/peft_llama", NULL) == 0, "%s", lp_geterr());
    double e = file_logits(fm, pf);
    T_CHECK(e <= TOL, "peft's adapter with patterns: logits %.3g", e);
    char dir[] = "/tmp/loupe_pattern_XXXXXX";
    T_OK(mkdtemp(dir) != NULL);
    T_CHECK(tr_adapter_save(fm, NULL, dir) == 0, "%s", lp_geterr());
    fw_model *back = fw_new(m, t_device_f32());
    T_CHECK(tr_adapter_load(back, dir, NULL) == 0, "%s", lp_geterr());
    double e2 = file_logits(back, pf);
    T_CHECK(e2 <= TOL, "saved by loupe and loaded again: logits %.3g", e2);
    printf("peft's adapter: logits %.2e; saved and loaded again %.2e\n", e, e2);
    char p[300];
    snprintf(p, sizeof p, "%s/adapter_config.json", dir);
    char *cfg = t_slurp(p, NULL);
    T_CONTAINS(cfg, "\"layers\\\\.1\\\\.mlp\\\\.down_proj\": 6");
    T_CONTAINS(cfg, "\"down_proj\": 12");
    free(cfg);
    /* the same file with a rank_pattern its shapes do not fit, and what loupe cannot honour */
    refused(m, dir, "\"q_proj\": 2", "\"q_proj\": 3", "shapes do not fit r=3");
    static const char *const PEFT = "tests/fixtures/pattern/peft_llama";
    refused(m, PEFT, "\"lora_bias\": false", "\"lora_bias\": true", "lora_bias=true");
    refused(m, PEFT, "\"init_lora_weights\": true", "\"init_lora_weights\": \"pissa_niter_4\"",
            "path_initial_model_for_weight_conversion");
    refused(m, PEFT, "\"target_parameters\": null", "\"target_parameters\": [\"w\"]",
            "target_parameters");
    refused(m, PEFT, "\"bias\": \"none\"", "\"bias\": \"dora_only\"", "loupe supports bias");
    refused(m, PEFT, "\"q_proj\": 2", "\"q_proj\": \"2\"", "rank_pattern `q_proj` is not an integer");
    refused(m, PEFT, "\"q_proj\": 2", "\"q_proj\": 99999999999", "(at most 65536)");
    refused(m, PEFT, "\"exclude_modules\": null", "\"exclude_modules\": \"((\"",
            "exclude regex `((` does not compile");
    refused(m, PEFT, "\"layers_to_transform\": null", "\"layers_to_transform\": [-1]",
            "-1 is not a layer index");
    /* refused when added */
    static const char *const badkey[] = {"q_proj("};
    static const int r0[] = {0};
    tr_lora_config c = CASES[0];
    c.name = "bad", c.rank_keys = badkey, c.nrank = 1;
    T_EQ_INT(tr_lora_add(fm, &c), -1);
    T_CONTAINS(lp_geterr(), "does not compile");
    c.rank_keys = LLAMA_RK, c.rank_vals = r0;
    T_EQ_INT(tr_lora_add(fm, &c), -1);
    T_CONTAINS(lp_geterr(), "a rank is a positive integer");
    fw_free(back);
    fw_free(fm);
    st_close(pf);
    mdl_free(m);
}

/* bias="all": peft's file carries every trained bias; loaded, they are the model's (PeftModel's
 * logits), trainable; saved by loupe and loaded again, the same; deleting the adapter freezes
 * them again (their values stay, as peft's). */
static void test_bias_files(void) {
    mdl_model *m = mdl_load("tests/fixtures/models/gpt2");
    st_file *pf = st_open("tests/fixtures/pattern/peft_gpt2_bias_logits.safetensors");
    T_CHECK(m && pf, "%s", lp_geterr());
    if (!m || !pf) return;
    fw_model *fm = fw_new(m, t_device_f32());
    T_CHECK(tr_adapter_load(fm, "tests/fixtures/pattern/peft_gpt2_bias", NULL) == 0, "%s",
            lp_geterr());
    double e = file_logits(fm, pf);
    T_CHECK(e <= TOL, "peft's bias=\"all\" adapter: logits %.3g", e);
    uint64_t nt = 0;
    char line[256];
    tr_report(fm, line, sizeof line, &nt, NULL);
    T_EQ_INT(nt, 1248);   /* peft: A and B 512, every bias 736 (grad_gpt2_bias's report) */
    char dir[] = "/tmp/loupe_bias_XXXXXX";
    T_OK(mkdtemp(dir) != NULL);
    T_CHECK(tr_adapter_save(fm, NULL, dir) == 0, "%s", lp_geterr());
    T_CHECK(tr_adapter_delete(fm, "default") == 0, "%s", lp_geterr());
    tr_report(fm, line, sizeof line, &nt, NULL);
    T_EQ_INT(nt, 0);
    fw_model *back = fw_new(m, t_device_f32());
    T_CHECK(tr_adapter_load(back, dir, NULL) == 0, "%s", lp_geterr());
    double e2 = file_logits(back, pf);
    T_CHECK(e2 <= TOL, "saved by loupe and loaded again: logits %.3g", e2);
    printf("peft's bias=\"all\" adapter: logits %.2e; saved and loaded again %.2e\n", e, e2);
    fw_free(back);
    fw_free(fm);
    st_close(pf);
    mdl_free(m);
}

int main(void) {
    printf("device %s\n", t_device()->name);
    T_RUN(test_fixtures);
    T_RUN(test_files);
    T_RUN(test_bias_files);
    return t_done();
}
