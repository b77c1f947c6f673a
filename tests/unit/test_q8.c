/* test_q8.c — LLM.int8 (bitsandbytes' load_in_8bit, Linear8bitLt) against bitsandbytes +
 * transformers + peft (tools/make_q8_fixtures.py, tests/fixtures/q8).
 *
 * Ops (ops.safetensors): nn_half_round is torch's f16 rounding (spot values: ties to even,
 * subnormals, overflow); a weight quantized as Int8Params does (f16, row absmax, rounded
 * codes) gives bitsandbytes' int8 codes and SCB to the bit, and dequantizes to the weight its
 * backward multiplies, to the bit; nn_q8_linear_forward gives MatMul8bitLt's output (eval)
 * with llm_int8_threshold 0, 2 and 6 — outlier columns, an all-zero weight row, a value on the
 * threshold, a single row — within 1e-6 of its largest value.
 *
 * Models: LoRA r=4 over load_in_8bit llama (thresholds 6 and 1.5) and GPT-2 (1.5, 6, none)
 * in eval mode (MatMul8bitLt): peft's trainable counts, logits, loss and every gradient; the
 * same after a move to another device and back; out of memory anywhere in a forward and
 * backward is a clear error, and the model computes on.
 *
 * Pre-quantized checkpoints (tests/fixtures/models/{llama,gpt2}-int8-bnb: what transformers'
 * save_pretrained writes of the load_in_8bit model, mdl_bnb.c): a weight reads back from the
 * file and from the device as transformers reads it (prequant.safetensors), to the bit; LoRA
 * over them gives the llama_t15 and gpt2 fixtures' numbers; another kind is refused; a broken
 * one (no SCB, a short one, a GPU tiling, a weight not int8) does not load. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "t.h"
#include "t_broken.h"
#include "t_device.h"
#include "t_fixture.h"
#include "t_peft.h"

#include "model/model.h"
#include "model/st.h"
#include "nn/ops.h"
#include "nn/migrate.h"
#include "train/lora.h"
#include "util/mem.h"
#include "util/err.h"

#define OPS "tests/fixtures/q8/ops.safetensors"

static void test_half(void) {
    T_OK(nn_half_round(1.0f) == 1.0f);
    T_OK(nn_half_round(1.0f + 1.0f / 2048) == 1.0f);           /* a tie: even */
    T_OK(nn_half_round(1.0f + 3.0f / 2048) == 1.0f + 2.0f / 1024);
    T_OK(nn_half_round(65504.0f) == 65504.0f);
    T_OK(isinf(nn_half_round(65520.0f)) && nn_half_round(-70000.0f) < 0);
    T_OK(nn_half_round(65519.0f) == 65504.0f);
    T_OK(nn_half_round(3e-8f) == 5.9604645e-8f);                /* the least subnormal, 2^-24 */
    T_OK(nn_half_round(2.9e-8f) == 0.0f && nn_half_round(-1e-9f) == 0.0f);
}

static void test_ops(void) {
    st_file *f = st_open(OPS);
    T_CHECK(f != NULL, "%s", lp_geterr());
    if (!f) return;
    const char *names[] = {"a", "b", "c"};
    for (int k = 0; k < 3; k++) {
        char key[64];
        size_t nw = 0, nx = 0, no = 0;
        snprintf(key, sizeof key, "%s.w", names[k]);
        const st_tensor *tw = st_find(f, key);
        float *w = t_fx(f, key, ST_F32, &nw);
        snprintf(key, sizeof key, "%s.x", names[k]);
        float *x = t_fx(f, key, ST_F32, &nx);
        snprintf(key, sizeof key, "%s.bias", names[k]);
        float *bias = t_fx(f, key, ST_F32, &no);
        snprintf(key, sizeof key, "%s.cb", names[k]);
        int8_t *cb = t_fx(f, key, ST_I8, NULL);
        snprintf(key, sizeof key, "%s.scb", names[k]);
        float *scb = t_fx(f, key, ST_F32, NULL);
        snprintf(key, sizeof key, "%s.deq", names[k]);
        float *deq = t_fx(f, key, ST_F32, NULL);
        if (!tw || !w || !x || !bias || !cb || !scb || !deq) continue;
        int OUT = (int)tw->shape[0], IN = (int)tw->shape[1], N = (int)(nx / (size_t)IN);
        uint8_t *codes = malloc(nw);
        float *am = malloc(OUT * sizeof(float)), *d = malloc(nw * sizeof(float));
        nn_q4_quantize(codes, am, w, nw, IN, NN_Q8);
        T_CHECK(!memcmp(codes, cb, nw), "%s: int8 codes differ from bitsandbytes'", names[k]);
        T_CHECK(!memcmp(am, scb, OUT * sizeof(float)), "%s: SCB differs", names[k]);
        nn_q4_dequant(d, (const uint8_t *)cb, scb, nw, IN, NN_Q8);
        T_CHECK(!memcmp(d, deq, nw * sizeof(float)), "%s: dequantized weight differs", names[k]);
        float *work = malloc(nn_q8_work(N, IN, OUT) * sizeof(float));
        float *y = malloc((size_t)N * OUT * sizeof(float));
        for (int t = 0; t <= 6; t += t ? 4 : 2) {
            snprintf(key, sizeof key, "%s.y_%d", names[k], t);
            float *want = t_fx(f, key, ST_F32, NULL);
            nn_q8_linear_forward(y, x, cb, scb, bias, N, IN, OUT, (float)t, work);
            double e = want ? t_rel_max(y, want, (size_t)N * OUT) : 1;
            T_CHECK(e <= 1e-6, "%s threshold %d: MatMul8bitLt's output differs by %.3g",
                    names[k], t, e);
            printf("%s (N %d, in %d, out %d) threshold %d: %.2e\n", names[k], N, IN, OUT, t, e);
            free(want);
        }
        free(codes), free(am), free(d), free(work), free(y);
        free(w), free(x), free(bias), free(cb), free(scb), free(deq);
    }
    st_close(f);
}

/* LoRA r=4 over a load_in_8bit model (eval: MatMul8bitLt's forward): peft's counts, the logits,
 * the loss and every adapter gradient within 1e-4 of bitsandbytes + peft's. */
static void model_case(const char *name, const char *model, float threshold,
                       const char *const *targets, size_t nt, double tol) {
    char path[256];
    snprintf(path, sizeof path, "tests/fixtures/q8/%s.safetensors", name);
    st_file *f = st_open(path);
    snprintf(path, sizeof path, "tests/fixtures/models/%s", model);
    mdl_model *m = mdl_load(path);
    T_CHECK(f && m, "%s", lp_geterr());
    if (!f || !m) return;
    fw_model *fm = fw_new(m, t_device_f32());
    T_CHECK(fm && fw_set_q4(fm, NN_Q8, 0) == 0 && fw_set_q8_threshold(fm, threshold) == 0,
            "%s", lp_geterr());
    tr_lora_config c = {.r = 4, .alpha = 8, .targets = targets, .ntargets = nt};
    T_CHECK(tr_lora_add(fm, &c) == 0, "%s", lp_geterr());
    set_params(fm, f, "lora.");
    int64_t *rep = t_fx(f, "report", ST_I64, NULL);
    uint64_t ntr = 0, nall = 0;
    char line[256];
    tr_report(fm, line, sizeof line, &ntr, &nall);
    T_CHECK(rep && ntr == (uint64_t)rep[0] && nall == (uint64_t)rep[1], "%s: %s (peft %lld / %lld)",
            name, line, rep ? (long long)rep[0] : -1LL, rep ? (long long)rep[1] : -1LL);
    fw_batch in = fixture_batch(f);
    float *logits = t_fx(f, "logits", ST_F32, NULL), *loss = t_fx(f, "loss", ST_F32, NULL), got;
    double le = logits_err(fm, &in, logits, &got);
    T_CHECK(le <= tol, "%s: logits %.3g", name, le);
    T_NEAR(got, loss[0], tol * fabs(loss[0]));
    double ge = check_grads(fm, f, tol);
    printf("%s (threshold %g): logits %.2e, gradients %.2e\n", name, threshold, le, ge);
    const char *there = t_on_cpu() ? "guard" : "cpu";   /* moved and back: codes, scales */
    for (int k = 0; k < 2; k++) {
        fw_move *mv = fw_move_new(fm, k ? t_device_f32() : be_get(there));
        T_CHECK(mv && fw_move_prepare(mv) == 0, "%s", lp_geterr());
        if (mv) fw_move_commit(mv);
        double em = logits_err(fm, &in, logits, NULL);
        T_CHECK(em <= tol, "%s on %s after a move: logits %.3g", name, fw_backend(fm)->name, em);
    }
    free((void *)in.ids), free((void *)in.mask), free((void *)in.labels);
    free(rep), free(logits), free(loss);
    fw_free(fm);
    mdl_free(m);
    st_close(f);
}

/* Out of memory at each allocation of a forward and backward over int8 weights (the
 * products' scratch among them): a clear error, then the fixture's numbers. */
static void test_oom(void) {
    static const char *const qkvo[] = {"q_proj", "k_proj", "v_proj", "o_proj"};
    st_file *f = st_open("tests/fixtures/q8/llama.safetensors");
    mdl_model *m = mdl_load("tests/fixtures/models/llama");
    T_CHECK(f && m, "%s", lp_geterr());
    if (!f || !m) return;
    fw_batch in = fixture_batch(f);
    float *logits = t_fx(f, "logits", ST_F32, NULL);
    int failures = 0, ok = 0;
    for (long n = 1; n < 3000 && ok < 2; n++) {
        fw_model *fm = fw_new(m, t_device_f32());
        tr_lora_config c = {.r = 4, .alpha = 8, .targets = qkvo, .ntargets = 4};
        T_OK(fm && fw_set_q4(fm, NN_Q8, 0) == 0 && tr_lora_add(fm, &c) == 0);
        set_params(fm, f, "lora.");
        lp_mem_fail_after(n);
        int rc = fw_forward(fm, &in, &(fw_out){0});
        if (rc == 0) rc = bw_backward(fm, 1.0f);
        lp_mem_fail_after(0);
        if (rc < 0) {
            failures++;
            T_CHECK(strstr(lp_geterr(), "out of memory") || strstr(lp_geterr(), "out of GPU memory"),
                    "n=%ld: %s", n, lp_geterr());
            double e = logits_err(fm, &in, logits, NULL);
            T_CHECK(e <= 1e-4, "n=%ld: logits after the failure %.3g", n, e);
        } else {
            ok++;
        }
        fw_free(fm);
    }
    printf("out of memory: %d failures, each a clear error\n", failures);
    T_OK(failures > 5 && ok > 0);
    free((void *)in.ids), free((void *)in.mask), free((void *)in.labels), free(logits);
    st_close(f);
    mdl_free(m);
}

static void test_models(void) {
    static const char *const qkvo[] = {"q_proj", "k_proj", "v_proj", "o_proj"};
    static const char *const gpt2[] = {"c_attn", "c_proj", "c_fc"};
    model_case("llama", "llama", 6.0f, qkvo, 4, 1e-4);
    model_case("llama_t15", "llama", 1.5f, qkvo, 4, 1e-4);
    /* GPT-2 (Conv1D, stored transposed) */
    model_case("gpt2", "gpt2", 1.5f, gpt2, 3, 1e-4);
    model_case("gpt2_t6", "gpt2", 6.0f, gpt2, 3, 1e-4);
    model_case("gpt2_t0", "gpt2", 0.0f, gpt2, 3, 1e-4);
}

/* One weight of a saved 8-bit checkpoint, read from the file (mdl) and from the device (fw),
 * against transformers' Linear8bitLt of the same file ([out, in]; GPT-2's Conv1D weight reads
 * as its transpose). */
static void stored_reads(const char *model, const char *name, int conv1d) {
    char path[256], key[256];
    snprintf(path, sizeof path, "tests/fixtures/models/%s-int8-bnb", model);
    st_file *f = st_open("tests/fixtures/q8/prequant.safetensors");
    mdl_model *m = mdl_load(path);
    T_CHECK(f && m, "%s", lp_geterr());
    if (!f || !m) return;
    T_EQ_INT(m->summary.q4, NN_Q8);
    snprintf(key, sizeof key, "%s.%s.deq", model, name);
    snprintf(path, sizeof path, "%s.weight", name);
    const mdl_tensor *t = mdl_find_tensor(m, path);
    size_t n = 0;
    float *want = t_fx(f, key, ST_F32, &n);
    const st_tensor *wt = st_find(f, key);
    T_CHECK(t && t->q4 && t->q4->type == NN_Q8 && want && n == t->st->nelem, "%s", path);
    fw_model *fm = fw_new(m, t_device_f32());
    T_OK(fm && fw_set_q4(fm, NN_Q8, 0) == 0);
    T_CHECK(fw_set_q4(fm, NN_Q4_NF4, 0) < 0, "another kind");
    T_CONTAINS(lp_geterr(), "a bitsandbytes 8-bit checkpoint already (int8)");
    fw_weight *wl, *w = NULL;
    size_t nw;
    T_OK(fw_weights(fm, &wl, &nw) == 0);
    for (size_t i = 0; i < nw; i++)
        if (!strcmp(wl[i].name, path)) w = &wl[i];
    if (t && want && wt && n == t->st->nelem && w && w->q4) {
        size_t out = (size_t)wt->shape[0], in = (size_t)wt->shape[1], bad_f = 0, bad_d = 0;
        T_CHECK(t->st->shape[0] == (conv1d ? in : out), "%s: the checkpoint's shape", path);
        float *a = malloc(n * sizeof(float)), *b = malloc(n * sizeof(float));
        T_OK(mdl_tensor_to_f32(t, 0, n, a) == 0);
        T_OK(fw_weight_read(fm, w, 0, n, b) == 0);
        for (size_t o = 0; o < out; o++)
            for (size_t i = 0; i < in; i++) {
                size_t e = conv1d ? i * out + o : o * in + i;
                bad_f += a[e] != want[o * in + i], bad_d += b[e] != want[o * in + i];
            }
        T_CHECK(bad_f == 0 && bad_d == 0, "%s: %zu values from the file and %zu from the device "
                "differ from transformers'", path, bad_f, bad_d);
        printf("%s-int8-bnb: %s read back from the file and the device: transformers' values\n",
               model, path);
        free(a), free(b);
    }
    free(want);
    fw_free(fm);
    mdl_free(m);
    st_close(f);
}

/* Every weight loupe quantizes from the f32 checkpoint equals bitsandbytes' saved one (codes and
 * scales, read back dequantized), to the bit. */
static void same_codes(const char *model) {
    char path[256];
    snprintf(path, sizeof path, "tests/fixtures/models/%s", model);
    mdl_model *a = mdl_load(path);
    snprintf(path, sizeof path, "tests/fixtures/models/%s-int8-bnb", model);
    mdl_model *b = mdl_load(path);
    T_CHECK(a && b, "%s", lp_geterr());
    fw_model *fa = a ? fw_new(a, t_device_f32()) : NULL, *fb = b ? fw_new(b, t_device_f32()) : NULL;
    fw_weight *wa = NULL, *wb = NULL;
    size_t na = 0, nb = 0, checked = 0, bad = 0;
    T_OK(fa && fb && fw_set_q4(fa, NN_Q8, 0) == 0 && fw_set_q4(fb, NN_Q8, 0) == 0);
    T_OK(fa && fb && fw_weights(fa, &wa, &na) == 0 && fw_weights(fb, &wb, &nb) == 0);
    for (size_t i = 0; i < na; i++)
        for (size_t j = 0; j < nb; j++) {
            if (!wa[i].q4 || strcmp(wa[i].name, wb[j].name)) continue;
            size_t n = wa[i].numel;
            float *x = malloc(n * sizeof(float)), *y = malloc(n * sizeof(float));
            T_OK(wb[j].q4 && wb[j].numel == n);
            T_OK(fw_weight_read(fa, &wa[i], 0, n, x) == 0 && fw_weight_read(fb, &wb[j], 0, n, y) == 0);
            for (size_t k = 0; k < n; k++) bad += x[k] != y[k];
            checked++;
            free(x), free(y);
        }
    T_CHECK(checked >= 8 && bad == 0, "%s: %zu values of %zu weights differ from bitsandbytes'",
            model, bad, checked);
    printf("%s: the %zu weights loupe quantizes are bitsandbytes' saved codes and scales\n", model,
           checked);
    fw_free(fa), fw_free(fb);
    mdl_free(a), mdl_free(b);
}

static void test_prequantized(void) {
    same_codes("llama");
    same_codes("gpt2");
    static const char *const qkvo[] = {"q_proj", "k_proj", "v_proj", "o_proj"};
    static const char *const gpt2[] = {"c_attn", "c_proj", "c_fc"};
    stored_reads("llama", "model.layers.0.mlp.down_proj", 0);
    stored_reads("gpt2", "transformer.h.0.mlp.c_fc", 1);
    model_case("llama_t15", "llama-int8-bnb", 1.5f, qkvo, 4, 1e-4);
    model_case("gpt2", "gpt2-int8-bnb", 1.5f, gpt2, 3, 1e-4);
    t_broken b;
    if (t_broken_open(&b, "tests/fixtures/models/llama-int8-bnb") < 0) return;
    const char *w = "model.layers.0.mlp.down_proj.weight";
    t_broken_load(&b, "model.layers.0.mlp.down_proj.SCB", NULL, 0, ST_U8, w, "no SCB");
    float few[3] = {1, 2, 3};
    t_broken_load(&b, "model.layers.0.mlp.down_proj.SCB", few, sizeof few, ST_F32,
                  "model.layers.0.mlp.down_proj.SCB: 3 F32 values", "short SCB");
    uint8_t col32 = 1;
    t_broken_load(&b, "model.layers.0.mlp.down_proj.weight_format", &col32, 1, ST_U8, "col32",
                  "a GPU tiling");
    int8_t codes[4] = {1, 2, 3, 4};
    t_broken_load(&b, w, codes, 4, ST_I8, w, "a 1-D weight");
    t_broken_load(&b, w, few, sizeof few, ST_F32, w, "an f32 weight");
    t_broken_close(&b);
}

int main(void) {
    T_RUN(test_half);
    T_RUN(test_ops);
    T_RUN(test_models);
    T_RUN(test_oom);
    T_RUN(test_prequantized);
    return t_done();
}
