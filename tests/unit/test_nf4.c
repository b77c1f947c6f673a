/* test_nf4.c — QLoRA's 4-bit weights against bitsandbytes + peft (tools/make_nf4_fixtures.py).
 *
 * Ops (tests/fixtures/nf4/ops.safetensors): nn_q4_quantize gives bitsandbytes' bytes and
 * absmax values exactly (a checkpoint weight, an odd length with a one-value last block, a block
 * of zeros, values on the midpoints between codes); the device's q4_dequant gives its
 * dequantized values exactly.
 *
 * Model (qlora_llama.safetensors): tests/fixtures/models/llama-nf4 with quantize on, LoRA r=4
 * on every Linear of the layers (A and B the fixture's): logits, loss and every LoRA gradient
 * equal peft's on bitsandbytes' model within 1e-4; with the adapter disabled, the quantized base
 * model's logits, also after moving to another device and back; merged into the 4-bit weights
 * and unmerged, peft's logits. The Linear weights take a quarter of their f32 bytes and a
 * little; they cannot be unfrozen, with a message that says why. IA3 (ia3_llama.safetensors):
 * peft's IA3 over bitsandbytes' 4-bit layers, logits, loss and every vector's gradient. */
#include "t.h"
#include "t_device.h"
#include "t_fixture.h"
#include "t_peft.h"

#include "model/model.h"
#include "nn/backward.h"
#include "nn/forward.h"
#include "nn/migrate.h"
#include "nn/ops.h"
#include "train/lora.h"
#include "train/params.h"
#include "train/train_int.h"
#include "util/err.h"

#define TOL 1e-4

static void op_case(const st_file *f, const char *c) {
    char k[64];
    size_t n = 0, nc = 0, na = 0;
    snprintf(k, sizeof k, "%s.x", c);
    float *x = t_fx(f, k, ST_F32, &n);
    snprintf(k, sizeof k, "%s.codes", c);
    uint8_t *want_c = t_fx(f, k, ST_U8, &nc);
    snprintf(k, sizeof k, "%s.absmax", c);
    float *want_a = t_fx(f, k, ST_F32, &na);
    snprintf(k, sizeof k, "%s.deq", c);
    float *want_d = t_fx(f, k, ST_F32, NULL);
    if (!x || !want_c || !want_a || !want_d) return;
    T_EQ_INT(nc, (n + 1) / 2);
    T_EQ_INT(na, (n + 63) / 64);
    uint8_t *codes = calloc(nc, 1);
    float *am = calloc(na, sizeof(float)), *d = calloc(n, sizeof(float));
    nn_q4_quantize(codes, am, x, n, 64, NN_Q4_NF4);
    size_t bad = 0;
    for (size_t i = 0; i < nc; i++) bad += codes[i] != want_c[i];
    T_CHECK(bad == 0, "%s: %zu of %zu code bytes differ from bitsandbytes'", c, bad, nc);
    T_CHECK(memcmp(am, want_a, na * sizeof(float)) == 0, "%s: absmax differs", c);
    const be_backend *be = t_device();   /* the device's dequantization, from bnb's codes */
    uint8_t *dc = be->alloc(nc);
    float *da = be->alloc(na * sizeof(float)), *dd = be->alloc(n * sizeof(float));
    be->to_device(dc, want_c, nc);
    be->to_device(da, want_a, na * sizeof(float));
    be->q4_dequant(dd, dc, da, n, 64, NN_Q4_NF4);
    be->to_host(d, dd, n * sizeof(float));
    T_CHECK(memcmp(d, want_d, n * sizeof(float)) == 0, "%s: dequantized values differ", c);
    printf("nf4 %-9s %4zu values: codes, absmax and dequantization equal bitsandbytes'\n", c, n);
    be->free(dc), be->free(da), be->free(dd);
    free(x), free(want_c), free(want_a), free(want_d), free(codes), free(am), free(d);
}

static void test_ops(void) {
    st_file *f = st_open("tests/fixtures/nf4/ops.safetensors");
    T_CHECK(f != NULL, "%s", lp_geterr());
    if (!f) return;
    const char *cases[] = {"weight", "odd", "zeros", "midpoints"};
    for (size_t i = 0; i < 4; i++) op_case(f, cases[i]);
    st_close(f);
}

static void test_qlora(void) {
    st_file *f = st_open("tests/fixtures/nf4/qlora_llama.safetensors");
    mdl_model *m = mdl_load("tests/fixtures/models/llama-nf4");
    T_CHECK(f && m, "%s", lp_geterr());
    if (!f || !m) return;
    fw_model *fm = fw_new(m, t_device_f32()), *full = fw_new(m, t_device_f32());
    T_CHECK(fw_set_q4(fm, NN_Q4_NF4, 0) == 0, "%s", lp_geterr());
    static const char *const t[] = {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj",
                                    "up_proj", "down_proj"};
    tr_lora_config c = {.r = 4, .alpha = 8, .targets = t, .ntargets = 7};
    T_CHECK(tr_lora_add(fm, &c) == 0, "%s", lp_geterr());
    tr_params *P = tr_params_of(fm);
    set_params(fm, f, "lora.");   /* the fixture's A and B */
    fw_batch in = fixture_batch(f);
    float *want = t_fx(f, "logits", ST_F32, NULL), *base = t_fx(f, "base_logits", ST_F32, NULL);
    float *loss = t_fx(f, "loss", ST_F32, NULL);
    float got_loss = 0;
    double el = logits_err(fm, &in, want, &got_loss);
    T_CHECK(el <= TOL, "QLoRA logits differ from peft + bitsandbytes by %.3g", el);
    T_NEAR(got_loss, loss[0], 1e-5);
    double worst = check_grads(fm, f, TOL);
    tr_adapter_enable(fm, "default", 0);
    in.flags = 0;
    double eb = logits_err(fm, &in, base, NULL);
    T_CHECK(eb <= TOL, "quantized base logits differ by %.3g", eb);
    printf("qlora: logits %.2e, %zu LoRA gradients worst %.2e, base logits %.2e\n", el, P->n,
           worst, eb);
    /* reading a 4-bit weight (stats, show) in pieces that start inside a block and on an odd
       value: bitsandbytes' dequantization of that weight (ops.safetensors, "weight") */
    st_file *ops = st_open("tests/fixtures/nf4/ops.safetensors");
    fw_weight *dw = NULL, *wl;
    size_t nwl;
    T_OK(ops && fw_weights(fm, &wl, &nwl) == 0);
    for (size_t i = 0; ops && i < nwl; i++)
        if (!strcmp(wl[i].name, "model.layers.0.mlp.down_proj.weight")) dw = &wl[i];
    float *deq = ops ? t_fx(ops, "weight.deq", ST_F32, NULL) : NULL;
    T_OK(dw && dw->q4 && deq);
    for (size_t at = 0; dw && deq && at < dw->numel; at += 37 * 5) {
        float piece[37 * 5];
        size_t k = dw->numel - at < 37 * 5 ? dw->numel - at : 37 * 5;
        T_OK(fw_weight_read(fm, dw, at, k, piece) == 0);
        T_CHECK(memcmp(piece, deq + at, k * sizeof(float)) == 0, "read at %zu differs", at);
    }
    free(deq);
    st_close(ops);
    /* memory: the Linear weights in 4 bits (+ one f32 scale per 64), against the f32 model */
    fw_weight *w;
    size_t nw;
    T_OK(fw_weights(fm, &w, &nw) == 0 && fw_weights(full, &w, &nw) == 0);
    size_t q = fw_weight_bytes(fm), f32 = fw_weight_bytes(full), lin = 0;
    T_OK(fw_weights(fm, &w, &nw) == 0);
    for (size_t i = 0; i < nw; i++) lin += w[i].q4 ? w[i].numel : 0;
    T_EQ_INT(f32 - q, lin * 4 - (lin / 2 + lin / 64 * 4));
    printf("weights %.0f kB as NF4 against %.0f kB in f32 (%zu Linear values)\n", q / 1e3,
           f32 / 1e3, lin);
    /* moved to another device (and back where it was): the 4-bit weights as they were */
    const char *there = t_on_cpu() ? "guard" : "cpu";
    for (int k2 = 0; k2 < 2; k2++) {
        fw_move *mv = fw_move_new(fm, k2 ? t_device_f32() : be_get(there));
        T_CHECK(mv && fw_move_prepare(mv) == 0, "%s", lp_geterr());
        if (mv) fw_move_commit(mv);
        double em = logits_err(fm, &in, base, NULL);
        T_CHECK(em <= TOL, "on %s after a move: base logits differ by %.3g", fw_backend(fm)->name,
                em);
    }
    /* frozen for good */
    size_t k;
    T_CHECK(tr_freeze(fm, "model.layers.0.mlp.up_proj", 1, &k) < 0, "unfreezing a 4-bit weight");
    T_CONTAINS(lp_geterr(), "quantized to 4 bits (NF4)");
    /* merged and unmerged as peft does with 4-bit layers (dequantize, add, quantize again) */
    tr_adapter_enable(fm, "default", 1);
    float *merged = t_fx(f, "merged_logits", ST_F32, NULL);
    float *unmerged = t_fx(f, "unmerged_logits", ST_F32, NULL);
    T_CHECK(tr_adapter_merge(fm, "default", 1) == 0, "%s", lp_geterr());
    double emg = logits_err(fm, &in, merged, NULL);
    T_CHECK(emg <= TOL, "merged into 4-bit weights: logits differ from peft's by %.3g", emg);
    T_CHECK(tr_adapter_merge(fm, "default", 0) == 0, "%s", lp_geterr());
    double eum = logits_err(fm, &in, unmerged, NULL);
    T_CHECK(eum <= TOL, "unmerged again: logits differ from peft's by %.3g", eum);
    printf("merge into NF4: logits %.2e, unmerged %.2e\n", emg, eum);
    free(merged), free(unmerged);
    T_CHECK(fw_set_q4(full, NN_Q4_NF4, 0) < 0, "quantizing after the weights loaded");
    free((void *)in.ids), free((void *)in.mask), free((void *)in.labels);
    free(want), free(base), free(loss);
    fw_free(fm);
    fw_free(full);
    mdl_free(m);
    st_close(f);
}

/* IA3 on the 4-bit model (peft's IA3 over bitsandbytes' Linear4bit): logits, loss and every
 * vector's gradient. */
static void test_ia3(void) {
    st_file *f = st_open("tests/fixtures/nf4/ia3_llama.safetensors");
    mdl_model *m = mdl_load("tests/fixtures/models/llama-nf4");
    T_CHECK(f && m, "%s", lp_geterr());
    if (!f || !m) return;
    fw_model *fm = fw_new(m, t_device_f32());
    T_CHECK(fw_set_q4(fm, NN_Q4_NF4, 0) == 0, "%s", lp_geterr());
    static const char *const t[] = {"k_proj", "v_proj", "down_proj"}, *const ff = "down_proj";
    tr_ia3_config c = {.targets = t, .ntargets = 3, .ff = &ff, .nff = 1};
    T_CHECK(tr_ia3_add(fm, &c) == 0, "%s", lp_geterr());
    set_params(fm, f, "ia3.");
    fw_batch in = fixture_batch(f);
    float *want = t_fx(f, "logits", ST_F32, NULL), *loss = t_fx(f, "loss", ST_F32, NULL);
    float got_loss = 0;
    double el = logits_err(fm, &in, want, &got_loss);
    T_CHECK(el <= TOL, "IA3 on NF4: logits differ from peft + bitsandbytes by %.3g", el);
    T_NEAR(got_loss, loss[0], 1e-5);
    double worst = check_grads(fm, f, TOL);
    printf("ia3 on nf4: logits %.2e, %zu vector gradients worst %.2e\n", el,
           tr_params_of(fm)->n, worst);
    free((void *)in.ids), free((void *)in.mask), free((void *)in.labels);
    free(want), free(loss);
    fw_free(fm);
    mdl_free(m);
    st_close(f);
}

/* AdaLoRA on the 4-bit model (peft's SVDLinear4bit over bitsandbytes' Linear4bit): logits, the
 * loss with the regulariser, and every lora_A / lora_B / lora_E gradient. */
static void test_adalora(void) {
    st_file *f = st_open("tests/fixtures/nf4/adalora_llama.safetensors");
    mdl_model *m = mdl_load("tests/fixtures/models/llama-nf4");
    T_CHECK(f && m, "%s", lp_geterr());
    if (!f || !m) return;
    fw_model *fm = fw_new(m, t_device_f32());
    T_CHECK(fw_set_q4(fm, NN_Q4_NF4, 0) == 0, "%s", lp_geterr());
    static const char *const t[] = {"q_proj", "v_proj", "down_proj"};
    tr_adalora_config c = {.init_r = 4, .target_r = 2, .alpha = 8, .total_step = 10,
                           .delta_t = 1, .beta1 = 0.85, .beta2 = 0.85, .orth = 0.5,
                           .targets = t, .ntargets = 3};
    T_CHECK(tr_adalora_add(fm, &c) == 0, "%s", lp_geterr());
    set_params(fm, f, "ada.");
    tr_state *s = tr_state_of(fm);
    T_OK(tr_ada_sync(fm, s->ad[s->active]) == 0);
    fw_batch in = fixture_batch(f);
    float *want = t_fx(f, "logits", ST_F32, NULL), *loss = t_fx(f, "loss", ST_F32, NULL);
    float got_loss = 0;
    double el = logits_err(fm, &in, want, &got_loss);
    T_CHECK(el <= TOL, "AdaLoRA on NF4: logits differ from peft + bitsandbytes by %.3g", el);
    T_NEAR(got_loss, loss[0], 1e-5 * loss[0]);
    double worst = check_grads(fm, f, TOL);
    printf("adalora on nf4: logits %.2e, loss %.6f (peft %.6f), %zu gradients worst %.2e\n", el,
           got_loss, loss[0], tr_params_of(fm)->n, worst);
    free((void *)in.ids), free((void *)in.mask), free((void *)in.labels);
    free(want), free(loss);
    fw_free(fm);
    mdl_free(m);
    st_close(f);
}

int main(void) {
    printf("device %s\n", t_device()->name);
    T_RUN(test_ops);
    T_RUN(test_qlora);
    T_RUN(test_ia3);
    T_RUN(test_adalora);
    return t_done();
}
