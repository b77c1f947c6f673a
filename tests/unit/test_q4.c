/* test_q4.c — bitsandbytes' other 4-bit settings against bitsandbytes + peft
 * (tools/make_q4_fixtures.py): FP4 and double quantization (bnb_4bit_use_double_quant).
 *
 * Ops (tests/fixtures/q4/ops.safetensors): nn_dynamic_map is create_dynamic_map(signed=True)
 * bit for bit; nn_q4_quantize(FP4) gives bitsandbytes' bytes and absmax values (a weight, an
 * odd length, zeros, values on the midpoints) and the device's q4_dequant its values; with
 * double quantization, the offset is torch's f32 mean within 2 ulp (its summation order is
 * the machine's), and from bitsandbytes' offset nn_dq_quantize gives its 8-bit indices and
 * absmax2 exactly, the device's dq_dequant its scales and q4_dequant its weights exactly.
 *
 * Models (<v>_llama.safetensors: NF4 + double quantization, FP4, FP4 + double quantization):
 * LoRA r=4 on every projection over the 4-bit llama: logits, loss and every LoRA gradient
 * within 1e-4 of peft's, also after a move to another device and back; merged as peft merges
 * into 4-bit layers (quantized again, a fresh offset), its logits; the weights' bytes.
 * GPT-2 (gpt2nf4dq.safetensors: NF4 + double quantization, its Conv1D weights quantized
 * transposed as transformers does), LoRA on c_attn, c_proj, c_fc: the same checks, and a
 * Conv1D weight read back in the checkpoint's [in, out] order is bitsandbytes' dequantized
 * [out, in] weight transposed (within 1e-6: the offset's last bit).
 *
 * Pre-quantized checkpoints (tests/fixtures/models/llama-nf4-bnb, llama-fp4-bnb: what
 * transformers' save_pretrained writes of the 4-bit model, mdl_bnb.c): the weight reads back
 * (from the file and from the device) as bitsandbytes' dequantization to the bit — the file
 * carries its offset — and the model with LoRA gives the nf4dq / fp4 fixtures' logits,
 * gradients and merge; asking for another 4-bit kind is refused. Broken ones (a quant_state
 * that is not JSON, another block size, a missing or short absmax, a missing nested map,
 * codes that do not fit the shape) are refused with the weight named, nothing leaked.
 *
 * bf16 products (nf4dq_bf16w.safetensors; a device with bf16 ops: be_guard_bf16() on the CPU,
 * the guard's and CUDA's dtype="bf16" variants): the 4-bit weights dequantized and rounded to bf16, multiplied
 * as bf16 weights are — logits, loss and every LoRA gradient within 4e-3 of transformers + peft
 * computing the same semantics (make_bf16_fixtures.py's), and visibly not the f32 products. */
#include <math.h>
#include <stdlib.h>

#include "t.h"
#include "t_broken.h"
#include "t_device.h"
#include "t_fixture.h"
#include "t_peft.h"

#include "backend/guard/guard_backend.h"
#include "model/model.h"
#include "nn/migrate.h"
#include "nn/ops.h"
#include "train/lora.h"

#define TOL 1e-4
#define OPS "tests/fixtures/q4/ops.safetensors"

static float *fx(const st_file *f, const char *a, const char *b, st_dtype dt, size_t *n) {
    char k[96];
    snprintf(k, sizeof k, "%s.%s", a, b);
    return t_fx(f, k, dt, n);
}

static void test_dynamic_map(void) {
    st_file *f = st_open(OPS);
    T_CHECK(f != NULL, "%s", lp_geterr());
    if (!f) return;
    size_t n = 0;
    float *want = t_fx(f, "code8", ST_F32, &n), got[256];
    nn_dynamic_map(got);
    T_EQ_INT(n, 256);
    size_t bad = 0;
    for (size_t i = 0; want && i < 256; i++) bad += memcmp(&got[i], &want[i], sizeof(float)) != 0;
    T_CHECK(want && bad == 0, "%zu of 256 values differ from bitsandbytes' dynamic map", bad);
    free(want);
    st_close(f);
}

/* Device dequantization of (codes, absmax) against want (n values), exactly. */
static int dequant_equal(const uint8_t *codes, const float *am, size_t n, int type,
                         const float *want) {
    const be_backend *be = t_device();
    size_t nc = (n + 1) / 2, na = (n + 63) / 64;
    uint8_t *dc = be->alloc(nc);
    float *da = be->alloc(na * sizeof(float)), *dd = be->alloc(n * sizeof(float));
    float *d = malloc(n * sizeof(float));
    be->to_device(dc, codes, nc);
    be->to_device(da, am, na * sizeof(float));
    be->q4_dequant(dd, dc, da, n, 64, type);
    be->to_host(d, dd, n * sizeof(float));
    int ok = memcmp(d, want, n * sizeof(float)) == 0;
    be->free(dc), be->free(da), be->free(dd);
    free(d);
    return ok;
}

static void fp4_case(const st_file *f, const char *c) {
    char p[32];
    snprintf(p, sizeof p, "fp4.%s", c);
    size_t n = 0, nc = 0, na = 0;
    float *x = fx(f, p, "x", ST_F32, &n), *want_a = fx(f, p, "absmax", ST_F32, &na);
    uint8_t *want_c = (uint8_t *)fx(f, p, "codes", ST_U8, &nc);
    float *want_d = fx(f, p, "deq", ST_F32, NULL);
    if (!x || !want_c || !want_a || !want_d) return;
    T_EQ_INT(nc, (n + 1) / 2);
    uint8_t *codes = calloc(nc, 1);
    float *am = calloc(na, sizeof(float));
    nn_q4_quantize(codes, am, x, n, 64, NN_Q4_FP4);
    size_t bad = 0;
    for (size_t i = 0; i < nc; i++) bad += codes[i] != want_c[i];
    T_CHECK(bad == 0, "fp4 %s: %zu of %zu code bytes differ from bitsandbytes'", c, bad, nc);
    T_CHECK(memcmp(am, want_a, na * sizeof(float)) == 0, "fp4 %s: absmax differs", c);
    T_CHECK(dequant_equal(want_c, want_a, n, NN_Q4_FP4, want_d), "fp4 %s: dequantized values "
            "differ", c);
    printf("fp4 %-9s %4zu values: codes, absmax and dequantization equal bitsandbytes'\n", c, n);
    free(x), free(want_c), free(want_a), free(want_d), free(codes), free(am);
}

static void dq_case(const st_file *f, const char *c, int type) {
    char p[32];
    snprintf(p, sizeof p, "dq.%s", c);
    size_t n = 0, nb = 0, n2 = 0;
    float *x = fx(f, p, "x", ST_F32, &n), *a2w = fx(f, p, "absmax2", ST_F32, &n2);
    uint8_t *cw = (uint8_t *)fx(f, p, "codes", ST_U8, NULL);
    uint8_t *qw = (uint8_t *)fx(f, p, "qabsmax", ST_U8, &nb);
    float *offw = fx(f, p, "offset", ST_F32, NULL), *amw = fx(f, p, "absmax", ST_F32, NULL);
    float *dw = fx(f, p, "deq", ST_F32, NULL);
    if (!x || !a2w || !cw || !qw || !offw || !amw || !dw) return;
    T_EQ_INT(nb, (n + 63) / 64);
    T_EQ_INT(n2, (nb + 255) / 256);
    uint8_t *codes = calloc((n + 1) / 2, 1), *q = calloc(nb, 1);
    float *am = calloc(nb, sizeof(float)), *a2 = calloc(n2, sizeof(float));
    float *work = calloc(nb, sizeof(float)), map[256];
    nn_q4_quantize(codes, am, x, n, 64, type);
    T_CHECK(memcmp(codes, cw, (n + 1) / 2) == 0, "dq %s: the 4-bit codes differ", c);
    float off = nn_dq_offset(am, nb);
    double ulps = fabs((double)off - offw[0]) / (nextafterf(offw[0], INFINITY) - offw[0]);
    T_CHECK(ulps <= 2, "dq %s: offset %.9g, bitsandbytes' %.9g (%.0f ulp)", c, off, offw[0],
            ulps);
    nn_dynamic_map(map);
    nn_dq_quantize(q, a2, work, am, nb, offw[0], map);
    size_t bad = 0;
    for (size_t i = 0; i < nb; i++) bad += q[i] != qw[i];
    T_CHECK(bad == 0, "dq %s: %zu of %zu scale indices differ from bitsandbytes'", c, bad, nb);
    T_CHECK(memcmp(a2, a2w, n2 * sizeof(float)) == 0, "dq %s: absmax2 differs", c);
    const be_backend *be = t_device();   /* the device's scales, from bitsandbytes' indices */
    uint8_t *dq = be->alloc(nb);
    float *da2 = be->alloc(n2 * sizeof(float)), *dm = be->alloc(sizeof map);
    float *dam = be->alloc(nb * sizeof(float));
    be->to_device(dq, qw, nb);
    be->to_device(da2, a2w, n2 * sizeof(float));
    be->to_device(dm, map, sizeof map);
    be->dq_dequant(dam, dq, da2, dm, offw[0], nb);
    float *got = t_host(be, dam, nb);
    T_CHECK(memcmp(got, amw, nb * sizeof(float)) == 0, "dq %s: dequantized scales differ", c);
    T_CHECK(dequant_equal(cw, got, n, type, dw), "dq %s: dequantized weights differ", c);
    printf("dq %-10s %6zu values, %4zu scales in %zu blocks: offset %.0f ulp from torch's, "
           "indices, absmax2, scales and weights equal bitsandbytes'\n", c, n, nb, n2, ulps);
    be->free(dq), be->free(da2), be->free(dm), be->free(dam);
    free(got), free(x), free(a2w), free(cw), free(qw), free(offw), free(amw), free(dw);
    free(codes), free(q), free(am), free(a2), free(work);
}

static void test_ops(void) {
    st_file *f = st_open(OPS);
    T_CHECK(f != NULL, "%s", lp_geterr());
    if (!f) return;
    const char *cases[] = {"weight", "odd", "zeros", "midpoints"};
    for (size_t i = 0; i < 4; i++) fp4_case(f, cases[i]);
    dq_case(f, "nf4.weight", NN_Q4_NF4);
    dq_case(f, "nf4.long", NN_Q4_NF4);
    dq_case(f, "fp4.weight", NN_Q4_FP4);
    st_close(f);
}

/* A Conv1D weight read back (fw_weight_read, in pieces) against "deq.<name>" ([out, in]). */
static void check_transposed_read(fw_model *fm, const st_file *f, const char *name) {
    fw_weight *wl, *w = NULL;
    size_t nwl, n = 0;
    T_OK(fw_weights(fm, &wl, &nwl) == 0);
    for (size_t i = 0; i < nwl; i++)
        if (!strcmp(wl[i].name, name)) w = &wl[i];
    char k[128];
    snprintf(k, sizeof k, "deq.%s", name);
    float *deq = t_fx(f, k, ST_F32, &n);
    T_CHECK(w && w->q4 && w->kind == FW_W_CONV1D && deq && n == w->numel, "%s", name);
    if (!w || !deq || n != w->numel) return;
    float *got = malloc(n * sizeof(float)), *want = malloc(n * sizeof(float));
    for (size_t at = 0; at < n; at += 1000)
        T_OK(fw_weight_read(fm, w, at, n - at < 1000 ? n - at : 1000, got + at) == 0);
    for (size_t i = 0; i < (size_t)w->in; i++)   /* [out, in] → the checkpoint's [in, out] */
        for (size_t o = 0; o < (size_t)w->out; o++) want[i * w->out + o] = deq[o * w->in + i];
    double e = t_rel_max(got, want, n);
    T_CHECK(e <= 1e-6, "%s read back: %.3g from bitsandbytes' weight, transposed", name, e);
    printf("%s [%d, %d] read back: bitsandbytes' [%d, %d] transposed, within %.1e\n", name,
           w->in, w->out, w->out, w->in, e);
    free(got), free(want), free(deq);
}

/* Every trainable gradient, concatenated on the host (grads_bytes of them). */
static size_t grads_bytes(fw_model *fm) {
    tr_params *P = tr_params_of(fm);
    size_t n = 0;
    for (size_t i = 0; i < P->n; i++) n += P->p[i].numel;
    return n * sizeof(float);
}
static float *grads_now(fw_model *fm) {
    tr_params *P = tr_params_of(fm);
    float *g = malloc(grads_bytes(fm));
    for (size_t i = 0, at = 0; g && i < P->n; at += P->p[i].numel, i++)
        fw_backend(fm)->to_host(g + at, P->p[i].grad, P->p[i].numel * sizeof(float));
    return g;
}
/* Bit-for-bit comparisons hold off cuda (its column sums add with atomics). */
static int t_exact(fw_model *fm) { return strcmp(fw_backend(fm)->name, "cuda") != 0; }

static void variant(const char *name, const char *model, int type, int dq,
                    const char *const *t, int nt) {
    char path[96];
    snprintf(path, sizeof path, "tests/fixtures/q4/%s.safetensors", name);
    st_file *f = st_open(path);
    mdl_model *m = mdl_load(model);
    T_CHECK(f && m, "%s", lp_geterr());
    if (!f || !m) return;
    fw_model *fm = fw_new(m, t_device_f32()), *full = fw_new(m, t_device_f32());
    T_CHECK(fw_set_q4(fm, type, dq) == 0, "%s", lp_geterr());
    tr_lora_config c = {.r = 4, .alpha = 8, .targets = t, .ntargets = nt};
    T_CHECK(tr_lora_add(fm, &c) == 0, "%s", lp_geterr());
    set_params(fm, f, "lora.");
    fw_batch in = fixture_batch(f);
    float *want = t_fx(f, "logits", ST_F32, NULL), *loss = t_fx(f, "loss", ST_F32, NULL);
    float got_loss = 0;
    double el = logits_err(fm, &in, want, &got_loss);
    T_CHECK(el <= TOL, "%s: logits differ from peft + bitsandbytes by %.3g", name, el);
    T_NEAR(got_loss, loss[0], 1e-5);
    double worst = check_grads(fm, f, TOL);
    size_t ngrads = tr_params_of(fm)->n;
    /* with gradient checkpointing (the QLoRA recipe's): the layers remade from their inputs,
       the 4-bit weights dequantized again, the same gradients */
    float *g0 = grads_now(fm);
    fw_set_checkpointing(fm, 1);
    T_OK(logits_err(fm, &in, want, NULL) <= TOL);
    double eck = check_grads(fm, f, TOL);
    float *g1 = grads_now(fm);
    fw_set_checkpointing(fm, 0);
    T_CHECK((g0 && g1 && memcmp(g0, g1, grads_bytes(fm)) == 0) || !t_exact(fm),
            "%s: checkpointing changed the gradients", name);
    free(g0), free(g1);
    if (st_find(f, "deq.transformer.h.0.mlp.c_fc.weight"))
        check_transposed_read(fm, f, "transformer.h.0.mlp.c_fc.weight");
    /* moved to another device and back: the codes, scales and map go with the buffer */
    const char *there = t_on_cpu() ? "guard" : "cpu";
    in.flags = 0;
    for (int k = 0; k < 2; k++) {
        fw_move *mv = fw_move_new(fm, k ? t_device_f32() : be_get(there));
        T_CHECK(mv && fw_move_prepare(mv) == 0, "%s", lp_geterr());
        if (mv) fw_move_commit(mv);
        double em = logits_err(fm, &in, want, NULL);
        T_CHECK(em <= TOL, "%s on %s after a move: logits differ by %.3g", name,
                fw_backend(fm)->name, em);
    }
    float *merged = t_fx(f, "merged_logits", ST_F32, NULL);
    T_CHECK(tr_adapter_merge(fm, "default", 1) == 0, "%s", lp_geterr());
    double emg = logits_err(fm, &in, merged, NULL);
    T_CHECK(emg <= TOL, "%s merged: logits differ from peft's by %.3g", name, emg);
    /* bytes: 4 bits a value and a scale a block (f32; with double quantization one byte and
       an f32 per 256 blocks) */
    fw_weight *w;
    size_t nw, lin = 0, scales = 0;
    T_OK(fw_weights(full, &w, &nw) == 0);
    size_t f32 = fw_weight_bytes(full);
    T_OK(fw_weights(fm, &w, &nw) == 0);
    for (size_t i = 0; i < nw; i++)
        if (w[i].q4) {
            size_t nb = (w[i].numel + 63) / 64;
            lin += w[i].numel;
            scales += dq ? nb + (nb + 255) / 256 * 4 : nb * 4;
        }
    T_EQ_INT(f32 - fw_weight_bytes(fm), lin * 4 - (lin / 2 + scales));
    printf("%-11s logits %.2e, loss %.6f (peft %.6f), %zu gradients worst %.2e (checkpointed "
           "%.2e), merged %.2e; scales %zu bytes for %zu values\n", name, el, got_loss, loss[0],
           ngrads, worst, eck, emg, scales, lin);
    free((void *)in.ids), free((void *)in.mask), free((void *)in.labels);
    free(want), free(loss), free(merged);
    fw_free(fm);
    fw_free(full);
    mdl_free(m);
    st_close(f);
}

#define LLAMA "tests/fixtures/models/llama-nf4"
static const char *const llama_t[] = {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj",
                                      "up_proj", "down_proj"};
static const char *const gpt2_t[] = {"c_attn", "c_proj", "c_fc"};

/* A pre-quantized checkpoint's down_proj of layer 0, read from the file (mdl) and from the
 * device (fw), against bitsandbytes' dequantization of the same bytes ("<key>.deq"). */
static void stored_reads(const char *model, int type, int dq, const char *key) {
    st_file *f = st_open(OPS);
    mdl_model *m = mdl_load(model);
    T_CHECK(f && m, "%s", lp_geterr());
    if (!f || !m) return;
    T_EQ_INT(m->summary.q4, type);
    T_EQ_INT(m->summary.q4_double, dq);
    const char *name = "model.layers.0.mlp.down_proj.weight";
    const mdl_tensor *t = mdl_find_tensor(m, name);
    size_t n = 0;
    float *want = fx(f, key, "deq", ST_F32, &n);
    T_CHECK(t && t->q4 && want && n == t->st->nelem && t->st->shape[0] == 64, "%s", name);
    fw_model *fm = fw_new(m, t_device_f32());
    T_OK(fm && fw_set_q4(fm, type, dq) == 0);
    T_CHECK(fw_set_q4(fm, type == NN_Q4_NF4 ? NN_Q4_FP4 : NN_Q4_NF4, dq) < 0, "another kind");
    T_CONTAINS(lp_geterr(), "a bitsandbytes 4-bit checkpoint already");
    fw_weight *wl, *w = NULL;
    size_t nw;
    T_OK(fw_weights(fm, &wl, &nw) == 0);
    for (size_t i = 0; i < nw; i++)
        if (!strcmp(wl[i].name, name)) w = &wl[i];
    if (t && want && n == t->st->nelem && w && w->q4) {
        float *a = malloc(n * sizeof(float)), *b = malloc(n * sizeof(float));
        T_OK(mdl_tensor_to_f32(t, 0, n, a) == 0);
        T_OK(fw_weight_read(fm, w, 0, n, b) == 0);
        T_CHECK(memcmp(a, want, n * sizeof(float)) == 0, "%s: the file's values", model);
        T_CHECK(memcmp(b, want, n * sizeof(float)) == 0, "%s: the device's values", model);
        printf("%s: %s read back from the file and the device: bitsandbytes' values\n", model,
               name);
        free(a), free(b);
    } else {
        T_CHECK(0, "%s: no 4-bit %s", model, name);
    }
    free(want);
    fw_free(fm);
    mdl_free(m);
    st_close(f);
}

static void test_prequantized(void) {
    stored_reads("tests/fixtures/models/llama-nf4-bnb", NN_Q4_NF4, 1, "dq.nf4.weight");
    stored_reads("tests/fixtures/models/llama-fp4-bnb", NN_Q4_FP4, 0, "fp4.weight");
    variant("nf4dq_llama", "tests/fixtures/models/llama-nf4-bnb", NN_Q4_NF4, 1, llama_t, 7);
    variant("fp4_llama", "tests/fixtures/models/llama-fp4-bnb", NN_Q4_FP4, 0, llama_t, 7);
    /* GPT-2: the Conv1D weights stored as their transpose reads back as [in, out] */
    variant("gpt2nf4dq", "tests/fixtures/models/gpt2-nf4-bnb", NN_Q4_NF4, 1, gpt2_t, 3);
    st_file *f = st_open("tests/fixtures/q4/gpt2nf4dq.safetensors");
    mdl_model *m = mdl_load("tests/fixtures/models/gpt2-nf4-bnb");
    T_CHECK(f && m, "%s", lp_geterr());
    const mdl_tensor *t = m ? mdl_find_tensor(m, "transformer.h.0.mlp.c_fc.weight") : NULL;
    size_t n = 0;
    float *deq = f ? t_fx(f, "deq.transformer.h.0.mlp.c_fc.weight", ST_F32, &n) : NULL;
    T_CHECK(t && t->q4 && t->q4->transposed && t->st->shape[0] == 64 && t->st->shape[1] == 256,
            "gpt2-nf4-bnb c_fc: a [64, 256] 4-bit tensor");
    if (t && deq && n == t->st->nelem) {
        float *got = malloc(n * sizeof(float));
        T_OK(mdl_tensor_to_f32(t, 0, n, got) == 0);
        size_t bad = 0;
        for (size_t i = 0; i < 64; i++)
            for (size_t o = 0; o < 256; o++) bad += got[i * 256 + o] != deq[o * 64 + i];
        T_CHECK(bad == 0, "gpt2-nf4-bnb c_fc: %zu values differ from bitsandbytes' transposed", bad);
        printf("gpt2-nf4-bnb c_fc [64, 256]: bitsandbytes' [256, 64] transposed, to the bit\n");
        free(got);
    }
    free(deq);
    mdl_free(m);
    st_close(f);
}

/* The nf4-bnb checkpoint with one tensor changed (t_broken.h): the weight's name in the error. */
static void test_broken_checkpoints(void) {
    t_broken b;
    if (t_broken_open(&b, "tests/fixtures/models/llama-nf4-bnb") < 0) return;
    const char *w = "model.layers.0.mlp.down_proj.weight";
    const char *qs = "model.layers.0.mlp.down_proj.weight.quant_state.bitsandbytes__nf4";
    const char *bad_json = "{\"quant_type\": \"nf4\", \"blocksize\": 64, \"shape\": [64, 1";
    t_broken_load(&b, qs, bad_json, strlen(bad_json), ST_U8, w, "not JSON");
    const char *bs = "{\"quant_type\": \"nf4\", \"blocksize\": 128, \"shape\": [64, 128]}";
    t_broken_load(&b, qs, bs, strlen(bs), ST_U8, w, "blocks of 128");
    const char *sh = "{\"quant_type\": \"nf4\", \"blocksize\": 64, \"shape\": [64, 64], "
                     "\"nested_offset\": 0.5, \"nested_blocksize\": 256}";
    t_broken_load(&b, qs, sh, strlen(sh), ST_U8, w, "codes for another shape");
    t_broken_load(&b, "model.layers.0.mlp.down_proj.weight.absmax", NULL, 0, ST_U8, w,
                  "no absmax");
    uint8_t few[3] = {1, 2, 3};
    t_broken_load(&b, "model.layers.0.mlp.down_proj.weight.absmax", few, 3, ST_U8, w,
                  "short absmax");
    t_broken_load(&b, "model.layers.0.mlp.down_proj.weight.nested_quant_map", NULL, 0, ST_U8, w,
                  "no nested map");
    t_broken_close(&b);
}

static void test_bf16_products(void) {
    const be_backend *dev = t_on_cpu() ? be_guard_bf16() : t_device_bf16();
    if (!dev) {
        printf("bf16 products: %s has no variant with bf16 ops\n", t_device()->name);
        return;
    }
    st_file *f = st_open("tests/fixtures/q4/nf4dq_bf16w.safetensors");
    st_file *f32 = st_open("tests/fixtures/q4/nf4dq_llama.safetensors");
    mdl_model *m = mdl_load("tests/fixtures/models/llama-nf4-bnb");
    T_CHECK(f && f32 && m, "%s", lp_geterr());
    if (!f || !f32 || !m) return;
    fw_model *fm = fw_new(m, dev);
    T_OK(fm && fw_set_q4(fm, NN_Q4_NF4, 1) == 0);
    tr_lora_config c = {.r = 4, .alpha = 8, .targets = llama_t, .ntargets = 7};
    T_CHECK(tr_lora_add(fm, &c) == 0, "%s", lp_geterr());
    set_params(fm, f, "lora.");
    fw_batch in = fixture_batch(f);
    float *want = t_fx(f, "logits", ST_F32, NULL), *loss = t_fx(f, "loss", ST_F32, NULL);
    float *f32logits = t_fx(f32, "logits", ST_F32, NULL), got_loss = 0;
    double e16 = logits_err(fm, &in, want, &got_loss);
    double worst = check_grads(fm, f, 4e-3);
    double e32 = logits_err(fm, &in, f32logits, NULL);
    T_CHECK(e16 <= 4e-3, "bf16 products: logits %.3g from the same semantics", e16);
    T_NEAR(got_loss, loss[0], 1e-4);
    T_CHECK(e32 > 1e-4 && e32 < 5e-2, "bf16 products: %.3g from the f32 products", e32);
    printf("bf16 products on %s: logits %.2e (f32 products' %.2e), loss %.6f (same semantics "
           "%.6f), %zu gradients worst %.2e\n", dev->name, e16, e32, got_loss, loss[0],
           tr_params_of(fm)->n, worst);
    free((void *)in.ids), free((void *)in.mask), free((void *)in.labels);
    free(want), free(loss), free(f32logits);
    fw_free(fm);
    mdl_free(m);
    st_close(f);
    st_close(f32);
}

static void test_nf4_double(void) { variant("nf4dq_llama", LLAMA, NN_Q4_NF4, 1, llama_t, 7); }
static void test_fp4(void) { variant("fp4_llama", LLAMA, NN_Q4_FP4, 0, llama_t, 7); }
static void test_fp4_double(void) { variant("fp4dq_llama", LLAMA, NN_Q4_FP4, 1, llama_t, 7); }
static void test_gpt2(void) {
    variant("gpt2nf4dq", "tests/fixtures/models/gpt2-nf4", NN_Q4_NF4, 1, gpt2_t, 3);
}

int main(void) {
    printf("device %s\n", t_device()->name);
    T_RUN(test_dynamic_map);
    T_RUN(test_ops);
    T_RUN(test_nf4_double);
    T_RUN(test_fp4);
    T_RUN(test_fp4_double);
    T_RUN(test_gpt2);
    T_RUN(test_prequantized);
    T_RUN(test_broken_checkpoints);
    T_RUN(test_bf16_products);
    return t_done();
}
