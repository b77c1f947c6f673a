/* test_lora_init.c — PiSSA and OLoRA (init_lora_weights="pissa" / "olora") against peft
 * (tools/make_lora_init_fixtures.py, tests/fixtures/lora_init).
 *
 * Cases: PiSSA on llama (q, k, v, o, gate, down: square and not) and GPT-2 (Conv1D, rsLoRA);
 * OLoRA on llama and qwen2, and over bitsandbytes' NF4 (double quantization) and int8 weights
 * (the residual quantized again). For each: peft's counts; every A and B peft made (PiSSA's
 * singular pairs matched in sign first: each is defined up to one, B·A is not), within 1e-4
 * of its largest (a singular vector computed by another LAPACK differs by a few 1e-5); every
 * residual base weight within 1e-4; then, with the signs matched, the
 * logits, loss and every gradient within 1e-4, and the merged logits.
 * Files: peft's saved PiSSA and OLoRA adapters (config init_lora_weights "pissa" / "olora")
 * load on the original model — the residual made again — with PeftModel's logits; loupe's
 * saved one loads back with the same logits.
 * PiSSA with DoRA: the magnitudes are ‖W_res + s·B·A‖ (peft's dora_init after pissa_init).
 * Refusals leave the model as it was: PiSSA on 4-bit or 8-bit weights, OLoRA on Conv1D, r above
 * the weight's rank, the randomized "pissa_niter_N". */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "t.h"
#include "t_device.h"
#include "t_fixture.h"
#include "t_peft.h"

#include "model/model.h"
#include "model/st.h"
#include "nn/ops.h"
#include "train/lora.h"
#include "util/err.h"
#include "util/mem.h"

#define DIR "tests/fixtures/lora_init"
static const char *const llama_t[] = {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj",
                                      "down_proj"};
static const char *const gpt2_t[] = {"c_attn", "c_proj", "c_fc"};
static const char *const qwen2_t[] = {"q_proj", "v_proj", "up_proj"};

typedef struct icase {
    const char *name, *model, *init;
    const char *const *targets;
    size_t nt;
    int r, rslora;
    double alpha;
    int q4, dq;   /* quantize= (NN_Q4_NF4 with double quantization, NN_Q8), 0 */
    int dora;
} icase;

static const char *const qvd_t[] = {"q_proj", "v_proj", "down_proj"};
static const char *const int8_t_[] = {"q_proj", "o_proj", "gate_proj"};
static const icase CASES[] = {
    {"pissa_llama", "llama", "pissa", llama_t, 6, 4, 0, 8, 0, 0, 0},
    {"pissa_gpt2", "gpt2", "pissa", gpt2_t, 3, 4, 1, 16, 0, 0, 0},
    {"olora_llama", "llama", "olora", llama_t, 6, 4, 0, 8, 0, 0, 0},
    {"olora_qwen2", "qwen2", "olora", qwen2_t, 3, 2, 0, 4, 0, 0, 0},
    /* with DoRA: the magnitude is ‖W_res + s·B·A‖ */
    {"pissa_dora", "llama", "pissa", qvd_t, 3, 4, 0, 8, 0, 0, 1},
    /* over bitsandbytes' weights: the residual quantized again, as peft */
    {"olora_nf4", "llama-nf4", "olora", qvd_t, 3, 4, 0, 8, NN_Q4_NF4, 1, 0},
    {"olora_int8", "llama", "olora", int8_t_, 3, 4, 0, 8, NN_Q8, 0, 0},
};

static int add(fw_model *fm, const icase *c) {
    tr_lora_config cfg = {.r = c->r, .alpha = c->alpha, .rslora = c->rslora, .init = c->init,
                          .dora = c->dora, .targets = c->targets, .ntargets = c->nt};
    return tr_lora_add(fm, &cfg);
}

/* A's rows and B's columns flipped (on the device) where A's row points away from peft's
 * (PiSSA's sign freedom: B·A, the residual and the model do not change); then A and B against
 * the values peft made (within 1e-4 of each tensor's largest). The worst error. */
static double match_pair(fw_model *fm, const st_file *f, const tr_param *pa, const tr_param *pb,
                         int r, int flip) {
    const be_backend *be = fw_backend(fm);
    char k[700];
    size_t na = 0, nb = 0;
    snprintf(k, sizeof k, "init.%s", pa->name);
    float *wa = t_fx(f, k, ST_F32, &na);
    snprintf(k, sizeof k, "init.%s", pb->name);
    float *wb = t_fx(f, k, ST_F32, &nb);
    float *a = t_host(be, pa->data, pa->numel), *b = t_host(be, pb->data, pb->numel);
    double worst = 1;
    if (wa && wb && na == pa->numel && nb == pb->numel) {
        size_t in = na / (size_t)r, out = nb / (size_t)r;
        for (int i = 0; flip && i < r; i++) {
            double dot = 0;
            for (size_t c = 0; c < in; c++) dot += (double)a[i * in + c] * wa[i * in + c];
            if (dot >= 0) continue;
            for (size_t c = 0; c < in; c++) a[i * in + c] = -a[i * in + c];
            for (size_t o = 0; o < out; o++) b[o * r + i] = -b[o * r + i];
        }
        be->to_device(pa->data, a, na * sizeof(float));
        be->to_device(pb->data, b, nb * sizeof(float));
        double ea = t_rel_max(a, wa, na), eb = t_rel_max(b, wb, nb);
        T_CHECK(ea <= 1e-4 && eb <= 1e-4, "%s: A %.3g, B %.3g from peft's", pa->name, ea, eb);
        worst = ea > eb ? ea : eb;
    } else {
        T_CHECK(0, "%s: no fixture values of its size", pa->name);
    }
    free(wa), free(wb), free(a), free(b);
    return worst;
}

/* Every base weight the adapter changed against peft's residual ("res.<weight>"). */
static double residuals(fw_model *fm, const st_file *f) {
    fw_weight *w;
    size_t nw, seen = 0;
    double worst = 0;
    T_OK(fw_weights(fm, &w, &nw) == 0);
    for (size_t i = 0; i < nw; i++) {
        char k[700];
        snprintf(k, sizeof k, "res.%s", w[i].name);
        if (!st_find(f, k)) continue;
        size_t n = 0;
        float *want = t_fx(f, k, ST_F32, &n), *got = malloc((n ? n : 1) * sizeof(float));
        T_OK(n == w[i].numel && fw_weight_read(fm, &w[i], 0, n, got) == 0);
        double e = t_rel_max(got, want, n);
        T_CHECK(e <= 1e-4, "%s: residual %.3g from peft's", w[i].name, e);
        if (e > worst) worst = e;
        seen++;
        free(want), free(got);
    }
    size_t nres = 0;
    for (size_t i = 0; i < f->ntensors; i++) nres += !strncmp(f->tensors[i].name, "res.", 4);
    T_CHECK(seen == nres && seen > 0, "%zu of the %zu residual weights found", seen, nres);
    return worst;
}

static void run_case(const icase *c) {
    char path[300];
    snprintf(path, sizeof path, DIR "/%s.safetensors", c->name);
    st_file *f = st_open(path);
    snprintf(path, sizeof path, "tests/fixtures/models/%s", c->model);
    mdl_model *m = mdl_load(path);
    T_CHECK(f && m, "%s", lp_geterr());
    if (!f || !m) return;
    fw_model *fm = fw_new(m, t_device_f32());
    T_CHECK(fm && fw_set_q4(fm, c->q4, c->dq) == 0 && add(fm, c) == 0, "%s: %s", c->name,
            lp_geterr());
    int64_t *rep = t_fx(f, "report", ST_I64, NULL);
    uint64_t ntr = 0, nall = 0;
    char line[256];
    tr_report(fm, line, sizeof line, &ntr, &nall);
    T_CHECK(rep && ntr == (uint64_t)rep[0] && nall == (uint64_t)rep[1], "%s: %s", c->name, line);
    tr_params *P = tr_params_of(fm);
    double ew = 0;
    for (size_t i = 0; i < P->n; i++) {   /* lora_A, then its lora_B (and DoRA's magnitude) */
        double e = 0;
        if (strstr(P->p[i].name, "lora_magnitude_vector")) {   /* ‖W_res + s·B·A‖ = ‖W‖ */
            char k[700];
            snprintf(k, sizeof k, "init.%s", P->p[i].name);
            float *want = t_fx(f, k, ST_F32, NULL), *got = t_host(fw_backend(fm), P->p[i].data,
                                                                  P->p[i].numel);
            e = want ? t_rel_max(got, want, P->p[i].numel) : 1;
            T_CHECK(e <= 1e-5, "%s: %.3g from peft's", P->p[i].name, e);
            free(want), free(got);
        } else {
            T_CHECK(i + 1 < P->n && strstr(P->p[i].name, "lora_A") &&
                    strstr(P->p[i + 1].name, "lora_B"), "%s", P->p[i].name);
            if (i + 1 >= P->n) break;
            e = match_pair(fm, f, &P->p[i], &P->p[i + 1], c->r, !strcmp(c->init, "pissa"));
            i++;
        }
        if (e > ew) ew = e;
    }
    double er = residuals(fm, f);
    fw_batch in = fixture_batch(f);
    float *logits = t_fx(f, "logits", ST_F32, NULL), *loss = t_fx(f, "loss", ST_F32, NULL), got;
    float *merged = t_fx(f, "merged_logits", ST_F32, NULL);
    double el = logits_err(fm, &in, logits, &got);
    T_CHECK(el <= 1e-4, "%s: logits %.3g", c->name, el);
    T_NEAR(got, loss[0], 1e-4 * fabs(loss[0]));
    double eg = check_grads(fm, f, 1e-4);
    T_CHECK(tr_adapter_merge(fm, "default", 1) == 0, "%s", lp_geterr());
    double em = logits_err(fm, &in, merged, NULL);
    T_CHECK(em <= 1e-4, "%s: merged logits %.3g", c->name, em);
    printf("%s: A, B %.2e, residuals %.2e, logits %.2e, gradients %.2e, merged %.2e (%s)\n",
           c->name, ew, er, el, eg, em, line);
    free((void *)in.ids), free((void *)in.mask), free((void *)in.labels);
    free(rep), free(logits), free(loss), free(merged);
    fw_free(fm);
    mdl_free(m);
    st_close(f);
}

static void test_cases(void) {
    for (size_t i = 0; i < sizeof CASES / sizeof *CASES; i++) run_case(&CASES[i]);
}

/* ids, mask and logits of a peft_<case>_logits file against fm's forward. */
static double saved_logits_err(fw_model *fm, const char *file) {
    st_file *f = st_open(file);
    T_CHECK(f != NULL, "%s", lp_geterr());
    if (!f) return 1;
    const st_tensor *ti = st_find(f, "ids");
    fw_batch in = {.B = (int)ti->shape[0], .T = (int)ti->shape[1],
                   .ids = t_fx(f, "ids", ST_I32, NULL), .mask = t_fx(f, "mask", ST_I32, NULL),
                   .flags = FW_KEEP};
    float *want = t_fx(f, "logits", ST_F32, NULL);
    double e = logits_err(fm, &in, want, NULL);
    free((void *)in.ids), free((void *)in.mask), free(want);
    st_close(f);
    return e;
}

/* peft's saved adapter on the original model (the residual made again), then loupe's own file
 * of it loaded again. */
static void peft_file(const char *name) {
    char dir[300], logits[300], tmp[] = "/tmp/loupe_lora_init_XXXXXX";
    snprintf(dir, sizeof dir, DIR "/peft_%s", name);
    snprintf(logits, sizeof logits, DIR "/peft_%s_logits.safetensors", name);
    mdl_model *m = mdl_load("tests/fixtures/models/llama");
    fw_model *fm = m ? fw_new(m, t_device_f32()) : NULL;
    T_CHECK(fm && tr_adapter_load(fm, dir, "default") == 0, "%s: %s", dir, lp_geterr());
    double e = saved_logits_err(fm, logits);
    T_CHECK(e <= 1e-4, "%s: logits %.3g from PeftModel's", dir, e);
    T_OK(mkdtemp(tmp) != NULL);
    T_CHECK(tr_adapter_save(fm, "default", tmp) == 0, "%s", lp_geterr());
    fw_model *again = fw_new(m, t_device_f32());
    T_CHECK(again && tr_adapter_load(again, tmp, "default") == 0, "%s", lp_geterr());
    double e2 = saved_logits_err(again, logits);
    T_CHECK(e2 <= 1e-4, "%s: loupe's file of it: logits %.3g", name, e2);
    char cfg[400];
    snprintf(cfg, sizeof cfg, "%s/adapter_config.json", tmp);
    char *text = t_slurp(cfg, NULL);
    const char *init = strncmp(name, "pissa", 5) ? "\"init_lora_weights\": \"olora\""
                                                 : "\"init_lora_weights\": \"pissa\"";
    T_CHECK(text && strstr(text, init), "%s: %s", cfg, init);
    printf("peft_%s: PeftModel's logits %.2e; loupe's file of it %.2e\n", name, e, e2);
    free(text);
    snprintf(cfg, sizeof cfg, "rm -rf %s", tmp);
    T_OK(system(cfg) == 0);
    fw_free(again);
    fw_free(fm);
    mdl_free(m);
}

/* A variant of peft's PiSSA file that must not load, and leaves the model as it was. */
static void load_refused(const char *from, const char *to, const char *why) {
    char dir[64], cmd[100];
    if (t_adapter_variant(DIR "/peft_pissa_llama", from, to, dir) < 0) return;
    mdl_model *m = mdl_load("tests/fixtures/models/llama");
    fw_model *fm = m ? fw_new(m, t_device_f32()) : NULL;
    T_CHECK(fm && tr_adapter_load(fm, dir, "default") < 0, "%s: loaded", why);
    T_CONTAINS(lp_geterr(), why);
    printf("load refused: %s\n", lp_geterr());
    T_OK(fm && !fw_has_training(fm));
    fw_free(fm);
    mdl_free(m);
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    T_OK(system(cmd) == 0);
}

static void test_files(void) {
    peft_file("pissa_llama");
    peft_file("olora_llama");
    peft_file("pissa_dora");
    load_refused("\"init_lora_weights\": \"pissa\"", "\"init_lora_weights\": \"pissa_niter_4\"",
                 "which loupe cannot make again");
    load_refused("\"use_dora\": false", "\"use_dora\": true", "has no lora_magnitude_vector");
    load_refused("\"r\": 4", "\"r\": 40", "shapes do not fit r=40");
}

/* A refused add: a clear error, and the model computes as before (no residual left). */
static void refused(const char *model, int q4, tr_lora_config cfg, const char *why) {
    char path[300];
    snprintf(path, sizeof path, "tests/fixtures/models/%s", model);
    mdl_model *m = mdl_load(path);
    fw_model *fm = m ? fw_new(m, t_device_f32()) : NULL;
    T_OK(fm && fw_set_q4(fm, q4, 0) == 0);
    if (!fm) return;
    int32_t ids[4] = {5, 6, 7, 8};
    fw_batch in = {.B = 1, .T = 4, .ids = ids, .flags = FW_KEEP};
    fw_out out;
    T_OK(fw_forward(fm, &in, &out) == 0);
    size_t n = 4 * (size_t)fw_model_info(fm)->vocab;
    float *before = t_host(fw_backend(fm), out.logits, n);
    T_CHECK(tr_lora_add(fm, &cfg) < 0, "%s: added", why);
    T_CONTAINS(lp_geterr(), why);
    printf("refused: %s\n", lp_geterr());
    T_OK(fw_forward(fm, &in, &out) == 0);
    float *after = t_host(fw_backend(fm), out.logits, n);
    T_CHECK(memcmp(before, after, n * sizeof(float)) == 0, "%s: the model changed", why);
    T_EQ_INT(tr_params_of(fm)->n, 0);
    free(before), free(after);
    fw_free(fm);
    mdl_free(m);
}

static void test_refusals(void) {
    tr_lora_config c = {.r = 4, .alpha = 8, .init = "pissa", .targets = llama_t, .ntargets = 6};
    refused("llama-nf4", NN_Q4_NF4, c, "PiSSA starts from the full-precision weight");
    refused("llama", NN_Q8, c, "PiSSA starts from the full-precision weight");
    tr_lora_config g = {.r = 4, .alpha = 8, .init = "olora", .targets = gpt2_t, .ntargets = 3};
    refused("gpt2", 0, g, "OLoRA on GPT-2's Conv1D weights");
    tr_lora_config big = c;
    big.r = 40;
    refused("llama", 0, big, "r=40 is more than the 32 singular values");
    tr_lora_config niter = c;
    niter.init = "pissa_niter_4";
    refused("llama", 0, niter, "randomized SVD");
}

/* Out of memory at each allocation of a PiSSA add (the factorisations' buffers among them):
 * a clear error, and the model computes as before, with nothing trainable left. */
static void test_oom(void) {
    mdl_model *m = mdl_load("tests/fixtures/models/llama");
    T_CHECK(m != NULL, "%s", lp_geterr());
    if (!m) return;
    int32_t ids[4] = {5, 6, 7, 8};
    fw_batch in = {.B = 1, .T = 4, .ids = ids, .flags = FW_KEEP};
    int failures = 0, ok = 0;
    for (long n = 1; n < 4000 && !ok; n++) {
        fw_model *fm = fw_new(m, t_device_f32());
        fw_out out;
        T_OK(fm && fw_forward(fm, &in, &out) == 0);
        size_t nv = 4 * (size_t)fw_model_info(fm)->vocab;
        float *before = t_host(fw_backend(fm), out.logits, nv);
        tr_lora_config c = {.r = 4, .alpha = 8, .init = n % 2 ? "pissa" : "olora",
                            .targets = llama_t, .ntargets = 6};
        lp_mem_fail_after(n);
        int rc = tr_lora_add(fm, &c);
        lp_mem_fail_after(0);
        if (rc < 0) {
            failures++;
            T_CHECK(strstr(lp_geterr(), "out of memory") || strstr(lp_geterr(), "out of GPU memory"),
                    "n=%ld: %s", n, lp_geterr());
            T_OK(fw_forward(fm, &in, &out) == 0);
            float *after = t_host(fw_backend(fm), out.logits, nv);
            T_CHECK(memcmp(before, after, nv * sizeof(float)) == 0, "n=%ld: the model changed", n);
            T_EQ_INT(tr_params_of(fm)->n, 0);
            free(after);
        } else {
            ok = 1;
        }
        free(before);
        fw_free(fm);
    }
    printf("out of memory: %d failures, each a clear error and the model as it was\n", failures);
    T_OK(failures > 10 && ok);
    mdl_free(m);
}

int main(void) {
    printf("device %s\n", t_device()->name);
    T_RUN(test_cases);
    T_RUN(test_files);
    T_RUN(test_refusals);
    T_RUN(test_oom);
    return t_done();
}
