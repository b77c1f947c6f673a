/* test_dora.c — DoRA (peft's use_dora) against transformers + peft (tools/make_dora_fixtures.py,
 * tests/fixtures/dora).
 *
 * grad_<case>: LoRA with dora=1 on llama (all-linear), qwen2 (q/k/v with biases, o), gemma2
 * and GPT-2 (Conv1D: the norms over the stored weight's columns), A, B and the magnitude set
 * to the fixture's seeded values. PEFT's trainable / all parameter counts; logits, loss and every gradient (A, B, magnitude) within 1e-4
 * of peft's; the same with dropout drawn (p = 1e-9: every mask value 1, so the dropout path —
 * y from its own product of the dropped-out input, its own backward — must give the same
 * numbers; not on GPT-2, whose training forward draws its own dropout too); after a move to
 * another device and back; with gradient checkpointing; after peft's merge (merged_logits) and an unmerge (the
 * logits again). A fresh adapter's magnitude is the weights' row norms (‖W‖ per output
 * channel: B starts at 0), and its logits are the base model's. Saved, the adapter has peft's
 * names and use_dora; loaded back it gives the same logits; peft's own saved adapter (peft_llama)
 * gives PeftModel's logits and, through the KV cache, its greedy generation; a file without a magnitude is refused; running out of memory at
 * any allocation of adding, forward or backward is a clear error, and the model trains on.
 * With bf16 weights: against peft computing loupe's bf16 semantics (bf16_qwen2). The fixtures are f32
 * products, so the device's f32 variant runs them whatever LOUPE_CUDA_BF16 says
 * (t_device_f32). */
#include <math.h>
#include <stdlib.h>
#include <unistd.h>

#include "t.h"
#include "t_device.h"
#include "t_fixture.h"
#include "t_peft.h"

#include "backend/guard/guard_backend.h"
#include "model/model.h"
#include "nn/generate.h"
#include "nn/migrate.h"
#include "train/lora.h"
#include "train/train_int.h"
#include "util/mem.h"

#define TOL 1e-4

static const char *const ALL[] = {"all-linear"};
static const char *const QWEN[] = {"q_proj", "k_proj", "v_proj", "o_proj"};
static const char *const GEMMA[] = {"q_proj", "v_proj", "down_proj"};
static const char *const GPT2[] = {"c_attn", "attn.c_proj", "c_fc"};

typedef struct {
    const char *name, *model;
    const char *const *targets;
    size_t nt;
    int r;
    double alpha;
} dcase;

static const dcase CASES[] = {
    {"llama", "llama", ALL, 0, 4, 8},
    {"qwen2", "qwen2", QWEN, 4, 4, 16},
    {"gemma2", "gemma2", GEMMA, 3, 2, 4},
    {"gpt2", "gpt2", GPT2, 3, 4, 8},
};

static fw_model *dora_model(mdl_model *m, const dcase *c, double dropout) {
    fw_model *fm = fw_new(m, t_device_f32());
    T_OK(fm != NULL);
    tr_lora_config cfg = {.r = c->r, .alpha = c->alpha, .dora = 1, .dropout = dropout,
                          .targets = c->targets, .ntargets = c->nt, .all_linear = c->nt == 0};
    T_CHECK(tr_lora_add(fm, &cfg) == 0, "%s", lp_geterr());
    return fm;
}

static void run_case(const dcase *c) {
    char path[256];
    snprintf(path, sizeof path, "tests/fixtures/dora/grad_%s.safetensors", c->name);
    st_file *f = st_open(path);
    T_CHECK(f != NULL, "%s", lp_geterr());
    snprintf(path, sizeof path, "tests/fixtures/models/%s", c->model);
    mdl_model *m = mdl_load(path);
    T_CHECK(m != NULL, "%s", lp_geterr());
    if (!f || !m) return;
    fw_batch in = fixture_batch(f);
    size_t nl;
    float *logits = t_fx(f, "logits", ST_F32, &nl), *loss = t_fx(f, "loss", ST_F32, NULL);
    float *merged = t_fx(f, "merged_logits", ST_F32, NULL);
    /* dropout 0, and dropout drawn with every mask value 1 (in a training forward) */
    int has_dropout = !strcmp(c->model, "gpt2");   /* its own dropout in training forwards */
    for (int drop = 0; drop < 2 - has_dropout; drop++) {
        fw_model *fm = dora_model(m, c, drop ? 1e-9 : 0.0);
        set_params(fm, f, "lora.");
        int64_t *rep = t_fx(f, "report", ST_I64, NULL);
        uint64_t nt = 0, na = 0;
        char line[256];
        tr_report(fm, line, sizeof line, &nt, &na);
        T_CHECK(rep && nt == (uint64_t)rep[0] && na == (uint64_t)rep[1],
                "%s: %s, peft %lld / %lld", c->name, line, rep ? (long long)rep[0] : -1LL,
                rep ? (long long)rep[1] : -1LL);
        free(rep);
        if (drop) in.flags = FW_KEEP | FW_TRAIN;
        float got;
        double le = logits_err(fm, &in, logits, &got);
        T_CHECK(le <= TOL, "%s%s: logits %.3g", c->name, drop ? " (dropout path)" : "", le);
        T_NEAR(got, loss[0], 1e-5 * fabs(loss[0]));
        double ge = check_grads(fm, f, TOL);
        fw_set_checkpointing(fm, 1);
        T_CHECK(fw_forward(fm, &in, &(fw_out){0}) == 0, "%s", lp_geterr());
        double ce = check_grads(fm, f, TOL);
        fw_set_checkpointing(fm, 0);
        printf("%s%s: logits %.2e, gradients %.2e (checkpointing %.2e)\n", c->name,
               drop ? " dropout path" : "", le, ge, ce);
        in.flags = FW_KEEP;
        if (!drop) {   /* moved to another device and back: the magnitudes go with A and B */
            const char *there = t_on_cpu() ? "guard" : "cpu";
            for (int k = 0; k < 2; k++) {
                fw_move *mv = fw_move_new(fm, k ? t_device_f32() : be_get(there));
                T_CHECK(mv && fw_move_prepare(mv) == 0, "%s", lp_geterr());
                if (mv) fw_move_commit(mv);
                double em = logits_err(fm, &in, logits, NULL);
                T_CHECK(em <= TOL, "%s on %s after a move: logits %.3g", c->name,
                        fw_backend(fm)->name, em);
            }
            T_CHECK(check_grads(fm, f, TOL) <= TOL, "%s: gradients after the moves", c->name);
        }
        if (!drop) {   /* merged as peft merges DoRA, then unmerged */
            T_CHECK(tr_adapter_merge(fm, "default", 1) == 0, "%s", lp_geterr());
            double me = logits_err(fm, &in, merged, NULL);
            T_CHECK(me <= TOL, "%s: merged logits %.3g", c->name, me);
            T_CHECK(tr_adapter_merge(fm, "default", 0) == 0, "%s", lp_geterr());
            double ue = logits_err(fm, &in, logits, NULL);
            T_CHECK(ue <= TOL, "%s: unmerged logits %.3g", c->name, ue);
            printf("%s: merged logits %.2e, unmerged %.2e\n", c->name, me, ue);
        }
        fw_free(fm);
    }
    free((void *)in.ids), free((void *)in.mask), free((void *)in.labels);
    free(logits), free(loss), free(merged);
    mdl_free(m);
    st_close(f);
}

/* A trainable base weight under a DoRA adapter (layer 1's q_proj): its gradient comes through
 * the base product and the rescaled one (g·dout), the norm detached, as peft's. */
static void test_base_trains(void) {
    static const char *const qv[] = {"q_proj", "v_proj"};
    st_file *f = st_open("tests/fixtures/dora/grad_llama_base.safetensors");
    mdl_model *m = mdl_load("tests/fixtures/models/llama");
    T_CHECK(f && m, "%s", lp_geterr());
    if (!f || !m) return;
    dcase c = {"llama_base", "llama", qv, 2, 4, 8};
    fw_model *fm = dora_model(m, &c, 0.0);
    size_t n = 0;
    T_CHECK(tr_freeze(fm, "model.layers.1.self_attn.q_proj", 1, &n) == 0 && n == 1, "%s",
            lp_geterr());
    set_params(fm, f, "lora.");
    fw_batch in = fixture_batch(f);
    float *logits = t_fx(f, "logits", ST_F32, NULL);
    double le = logits_err(fm, &in, logits, NULL);
    T_CHECK(le <= TOL, "llama_base: logits %.3g", le);
    double ge = check_grads(fm, f, TOL);
    printf("DoRA with layer 1's q_proj weight trainable: logits %.2e, %zu gradients %.2e\n", le,
           tr_params_of(fm)->n, ge);
    free((void *)in.ids), free((void *)in.mask), free((void *)in.labels), free(logits);
    fw_free(fm);
    mdl_free(m);
    st_close(f);
}

static void test_fixtures(void) {
    for (size_t i = 0; i < sizeof CASES / sizeof CASES[0]; i++) run_case(&CASES[i]);
}

/* A fresh adapter: magnitude = the row norms of W, logits the base model's. */
static void test_init(void) {
    mdl_model *m = mdl_load("tests/fixtures/models/gpt2");
    T_CHECK(m != NULL, "%s", lp_geterr());
    if (!m) return;
    st_file *f = st_open("tests/fixtures/dora/grad_gpt2.safetensors");
    fw_batch in = fixture_batch(f);
    fw_model *base = fw_new(m, t_device_f32());
    fw_out out;
    T_CHECK(fw_forward(base, &in, &out) == 0, "%s", lp_geterr());
    size_t n = (size_t)in.B * in.T * fw_model_info(base)->vocab;
    float *want = t_host(fw_backend(base), out.logits, n);
    fw_model *fm = dora_model(m, &CASES[3], 0.0);
    double e = logits_err(fm, &in, want, NULL);
    T_CHECK(e <= 1e-6, "a fresh DoRA adapter changes the logits by %.3g", e);
    /* c_attn's magnitude: ‖column j‖ of the checkpoint's [in, out] weight */
    tr_state *s = tr_state_of(fm);
    const fw_lora *lo = &s->ad[0]->sites[0].lo;
    const mdl_tensor *w = mdl_find_tensor(m, "transformer.h.0.attn.c_attn.weight");
    T_OK(w != NULL);
    if (w) {
        float *wv = malloc((size_t)lo->in * lo->out * sizeof(float));
        T_OK(mdl_tensor_to_f32(w, 0, (size_t)lo->in * lo->out, wv) == 0);
        float *mag = t_host(fw_backend(fm), lo->mag, lo->out);
        double worst = 0;
        for (int j = 0; j < lo->out; j++) {
            double ss = 0;
            for (int i = 0; i < lo->in; i++) ss += (double)wv[(size_t)i * lo->out + j] * wv[(size_t)i * lo->out + j];
            double d = fabs(mag[j] - sqrt(ss)) / sqrt(ss);
            if (d > worst) worst = d;
        }
        T_CHECK(worst <= 1e-6, "magnitude vs ‖W_j‖: %.3g", worst);
        free(wv), free(mag);
    }
    free(want);
    free((void *)in.ids), free((void *)in.mask), free((void *)in.labels);
    fw_free(fm);
    fw_free(base);
    st_close(f);
    mdl_free(m);
}

/* Save → load gives the same logits; peft's saved DoRA adapter gives PeftModel's logits. */
static void test_files(void) {
    mdl_model *m = mdl_load("tests/fixtures/models/llama");
    st_file *f = st_open("tests/fixtures/dora/grad_llama.safetensors");
    st_file *pf = st_open("tests/fixtures/dora/peft_llama_logits.safetensors");
    T_CHECK(m && f && pf, "%s", lp_geterr());
    if (!m || !f || !pf) return;
    fw_batch in = fixture_batch(f);
    size_t nl;
    float *logits = t_fx(f, "logits", ST_F32, &nl);
    fw_model *fm = dora_model(m, &CASES[0], 0.0);
    set_params(fm, f, "lora.");
    char dir[] = "/tmp/loupe_dora_XXXXXX";
    T_OK(mkdtemp(dir) != NULL);
    T_CHECK(tr_adapter_save(fm, NULL, dir) == 0, "%s", lp_geterr());
    fw_model *back = fw_new(m, t_device_f32());
    T_CHECK(tr_adapter_load(back, dir, NULL) == 0, "%s", lp_geterr());
    double e = logits_err(back, &in, logits, NULL);
    T_CHECK(e <= TOL, "saved and loaded again: logits %.3g", e);
    char p[300];
    snprintf(p, sizeof p, "%s/adapter_config.json", dir);
    char *cfg = t_slurp(p, NULL);
    T_CONTAINS(cfg, "\"use_dora\": true");
    free(cfg);
    snprintf(p, sizeof p, "%s/adapter_model.safetensors", dir);
    st_file *sf = st_open(p);
    const st_tensor *mt = sf ? st_find(sf, "base_model.model.model.layers.0.mlp.down_proj.lora_magnitude_vector") : NULL;
    T_CHECK(mt && mt->ndim == 1 && mt->shape[0] == 32, "the magnitude as peft names and shapes it");
    st_close(sf);
    /* peft's own file */
    fw_model *pm = fw_new(m, t_device_f32());
    T_CHECK(tr_adapter_load(pm, "tests/fixtures/dora/peft_llama", NULL) == 0, "%s", lp_geterr());
    const st_tensor *ti = st_find(pf, "ids");
    fw_batch pin = {.B = (int)ti->shape[0], .T = (int)ti->shape[1],
                    .ids = t_fx(pf, "ids", ST_I32, NULL), .mask = t_fx(pf, "mask", ST_I32, NULL)};
    float *plog = t_fx(pf, "logits", ST_F32, NULL);
    e = logits_err(pm, &pin, plog, NULL);
    T_CHECK(e <= TOL, "peft's saved DoRA adapter: logits %.3g", e);
    printf("peft's DoRA adapter: logits %.2e\n", e);
    /* its greedy generation through the KV cache (the one-token steps reuse the prompt's norms) */
    size_t np = 0, ng = 0;
    int32_t *prompt = t_fx(pf, "gen_prompt", ST_I32, &np), *gen = t_fx(pf, "gen_ids", ST_I32, &ng);
    gn_params gp;
    gn_params_default(&gp);
    gp.max_tokens = (int)ng;
    gn_result r;
    T_CHECK(prompt && gen && gn_generate(pm, prompt, (int)np, &gp, &r) == 0, "%s", lp_geterr());
    if (prompt && gen) {
        int same = 0;
        while (same < r.n && r.ids[same] == gen[same]) same++;
        T_CHECK(same == (int)ng, "DoRA generation differs from PeftModel.generate at token %d", same);
        gn_result_free(&r);
    }
    free(prompt), free(gen);
    /* a plain LoRA file whose config says use_dora: refused, the weight named */
    char bad[64];
    if (t_adapter_variant("tests/fixtures/train/peft_llama", "\"use_dora\": false",
                          "\"use_dora\": true", bad) == 0) {
        fw_model *nm = fw_new(m, t_device_f32());
        T_EQ_INT(tr_adapter_load(nm, bad, NULL), -1);
        T_CONTAINS(lp_geterr(), "has no lora_magnitude_vector");
        fw_free(nm);
    }
    free((void *)pin.ids), free((void *)pin.mask), free(plog);
    free((void *)in.ids), free((void *)in.mask), free((void *)in.labels), free(logits);
    fw_free(pm);
    fw_free(back);
    fw_free(fm);
    st_close(pf);
    st_close(f);
    mdl_free(m);
}

/* bf16 weights (be_guard_bf16 on the CPU, the device's bf16 variant on a GPU): DoRA on every
 * linear layer of qwen2-bf16 against peft on transformers with loupe's bf16 semantics
 * (bf16_qwen2: make_bf16_fixtures' rounding): the loss within 1e-4, every A, B and m gradient
 * within one bf16 step (4e-3) of its largest value, as test_fw_bf16's LoRA parity. With the
 * attention on tensor cores (q, k, v, P, dS rounded) that bound does not hold; it is skipped. */
static void test_bf16(void) {
    const be_backend *dev = t_on_cpu() ? be_guard_bf16() : t_device_bf16();
    if (!dev) {
        printf("bf16: NOT RUN (no bf16 variant of %s)\n", t_device()->name);
        return;
    }
    mdl_model *m = mdl_load("tests/fixtures/models/qwen2-bf16");
    st_file *f = st_open("tests/fixtures/dora/bf16_qwen2.safetensors");
    T_CHECK(m && f, "%s", lp_geterr());
    if (!m || !f) return;
    fw_model *fm = fw_new(m, dev);
    tr_lora_config cfg = {.r = 4, .alpha = 8, .dora = 1, .all_linear = 1};
    T_CHECK(fm && tr_lora_add(fm, &cfg) == 0, "%s", lp_geterr());
    const char *kind = fm ? fw_attention_kind(fm) : "";
    if (fm && strncmp(kind, "fused-", 6)) {
        set_params(fm, f, "lora.");
        fw_batch in = fixture_batch(f);
        float *loss = t_fx(f, "loss", ST_F32, NULL);
        fw_out out;
        T_CHECK(fw_forward(fm, &in, &out) == 0, "%s", lp_geterr());
        T_CHECK(loss && fabs(out.loss - loss[0]) <= 1e-4, "bf16 loss %.6f vs %.6f", out.loss,
                loss ? loss[0] : 0);
        double ge = check_grads(fm, f, 4e-3);
        printf("bf16 (%s): loss %.6f vs %.6f, gradients within %.2e of their largest\n",
               dev->name, out.loss, loss ? loss[0] : 0, ge);
        free(loss);
        free((void *)in.ids), free((void *)in.mask), free((void *)in.labels);
    } else if (fm) {
        printf("bf16: the semantics bound skipped (%s attention)\n", kind);
    }
    fw_free(fm);
    st_close(f);
    mdl_free(m);
}

/* Out of memory anywhere in adding the adapter, a forward and a backward (lp_mem_fail_after:
 * also the device's pool records, so DoRA's norms, v, g and the backward's scratch): a clear
 * error, and then the same model gives peft's gradients. */
static void test_oom(void) {
    mdl_model *m = mdl_load("tests/fixtures/models/qwen2");
    st_file *f = st_open("tests/fixtures/dora/grad_qwen2.safetensors");
    T_CHECK(m && f, "%s", lp_geterr());
    if (!m || !f) return;
    fw_batch in = fixture_batch(f);
    int failures = 0, ok = 0;
    for (long n = 1; n < 2000 && ok < 2; n++) {
        fw_model *fm = fw_new(m, t_device_f32());
        tr_lora_config cfg = {.r = 4, .alpha = 16, .dora = 1, .targets = CASES[1].targets,
                              .ntargets = CASES[1].nt};
        lp_mem_fail_after(n);
        int rc = tr_lora_add(fm, &cfg);
        if (rc == 0) {
            lp_mem_fail_after(0);
            set_params(fm, f, "lora.");
            lp_mem_fail_after(n);
            rc = fw_forward(fm, &in, &(fw_out){0});
        }
        if (rc == 0) rc = bw_backward(fm, 1.0f);
        lp_mem_fail_after(0);
        if (rc < 0) {
            failures++;
            T_CHECK(strstr(lp_geterr(), "out of memory") || strstr(lp_geterr(), "out of GPU memory"),
                    "n=%ld: %s", n, lp_geterr());
            if (tr_params_of(fm)->n) {   /* the adapter is there: it trains on */
                set_params(fm, f, "lora.");
                T_CHECK(fw_forward(fm, &in, &(fw_out){0}) == 0, "%s", lp_geterr());
                T_CHECK(check_grads(fm, f, TOL) <= TOL, "n=%ld: gradients after the failure", n);
            }
        } else {
            ok++;
        }
        fw_free(fm);
    }
    printf("out of memory: %d failures, each a clear error\n", failures);
    T_OK(failures > 10);
    T_OK(ok > 0);
    free((void *)in.ids), free((void *)in.mask), free((void *)in.labels);
    st_close(f);
    mdl_free(m);
}

int main(void) {
    printf("device %s\n", t_device_f32()->name);
    T_RUN(test_fixtures);
    T_RUN(test_base_trains);
    T_RUN(test_init);
    T_RUN(test_files);
    T_RUN(test_oom);
    T_RUN(test_bf16);
    return t_done();
}
