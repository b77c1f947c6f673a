/* test_train_parity.c — the model backward and LoRA against peft / transformers.
 *
 * tests/fixtures/train/grad_<case>.safetensors (tools/make_train_fixtures.py): a right-padded
 * batch of 2 × 9 tokens on a tiny checkpoint, peft LoRA with A and B set to seeded values (or
 * the last layer's base weights unfrozen), and after one forward + loss.backward(): the loss,
 * the logits and every trainable gradient. Here: the same adapter through tr_lora_add (A and B
 * overwritten with the fixture's), fw_forward(FW_KEEP), bw_backward, and every tr_param's
 * gradient compared by name.
 *
 * Metric: per tensor, max|loupe − peft| / max|peft| ≤ 1e-4 (the worst is printed); loss within
 * 1e-5 relative; the set of trainable names equals peft's.
 *
 * Also without torch: tests/fixtures/train/peft_llama/ is an adapter saved by
 * PeftModel.save_pretrained; loaded by tr_adapter_load, the forward gives PeftModel's logits
 * (peft_llama_logits.safetensors) within 1e-4. And the round trip save → load in loupe, the
 * trainable report against peft's own line, and freeze / unfreeze / adapter errors. */
#include "t.h"
#include "t_device.h"
#include "t_fixture.h"
#include "t_model_fx.h"

#include <stdlib.h>
#include <unistd.h>

#include "model/model.h"
#include "model/st.h"
#include "nn/backward.h"
#include "nn/forward.h"
#include "nn/generate.h"
#include "train/lora.h"
#include "train/params.h"
#include "train/train_int.h"
#include "util/err.h"
#include "util/mem.h"

#define TOL 1e-4

static double worst_seen;

#define copy_of t_fx

#define rel_max t_rel_max

/* Overwrite every site's A and B with the fixture's "lora.<module>.lora_A.weight". */
static void set_lora_from_fixture(fx *x) {
    tr_state *s = tr_state_of(x->fm);
    tr_adapter *a = s->ad[s->active];
    const be_backend *be = fw_backend(x->fm);
    for (size_t k = 0; k < a->nsites; k++) {
        char key[600];
        for (int ab = 0; ab < 2; ab++) {
            snprintf(key, sizeof key, "lora.%s.lora_%c.weight", a->sites[k].module, ab ? 'B' : 'A');
            size_t n;
            float *v = copy_of(x->f, key, ST_F32, &n);
            if (!v) continue;
            fw_lora *lo = &a->sites[k].lo;
            T_EQ_INT(n, ab ? (size_t)lo->out * lo->r : (size_t)lo->r * lo->in);
            be->to_device(ab ? lo->B : lo->A, v, n * sizeof(float));
            free(v);
        }
    }
}

/* forward + backward, then every trainable gradient against "grad.<name>"; twice: the
 * forward that keeps the logits (`forward` then `backward` cells) and the FW_LOSS one that
 * takes the loss's gradient through the head as it goes (`train`). */
static void check_grads_as(fx *x, const char *label, int flags);
static void same_with_checkpointing(fx *x, const char *label, int flags);
static void check_grads(fx *x, const char *label) {
    char l2[64];
    check_grads_as(x, label, FW_KEEP);
    snprintf(l2, sizeof l2, "%s/loss", label);
    check_grads_as(x, l2, FW_KEEP | FW_LOSS);
    /* gradient checkpointing: peft's gradients too, and the very bits of the run without */
    snprintf(l2, sizeof l2, "%s/ckpt", label);
    fw_set_checkpointing(x->fm, 1);
    check_grads_as(x, l2, FW_KEEP | FW_LOSS);
    fw_set_checkpointing(x->fm, 0);
    same_with_checkpointing(x, label, FW_KEEP | FW_LOSS);
    /* a label outside the vocabulary: FW_LOSS checks them on the host (the device's rows are
       read once, after the head), the same message as the loss op's; the model stays usable */
    const fw_info *mi = fw_model_info(x->fm);
    if (mi->out_kind != FW_OUT_LM || x->T < 2) return;
    size_t n = (size_t)x->B * x->T;
    int32_t *bad = malloc(n * sizeof *bad);
    memcpy(bad, x->labels, n * sizeof *bad);
    bad[1] = mi->vocab;   /* the target of position 0 (of 1 without the shift: BERT MLM) */
    fw_batch in = {.B = x->B, .T = x->T, .ids = x->ids, .mask = x->mask, .labels = bad,
                   .flags = FW_KEEP | FW_LOSS};
    fw_out out;
    T_EQ_INT(fw_forward(x->fm, &in, &out), -1);
    T_CONTAINS(lp_geterr(), "is outside [0,");
    in.labels = x->labels;
    T_CHECK(fw_forward(x->fm, &in, &out) == 0, "%s", lp_geterr());
    float *loss = copy_of(x->f, "loss", ST_F32, NULL);
    if (loss) T_NEAR(out.loss, loss[0], 1e-5);
    free(loss);
    free(bad);
}

static void check_grads_as(fx *x, const char *label, int flags) {
    fw_batch in = {.B = x->B, .T = x->T, .ids = x->ids, .mask = x->mask, .labels = x->labels,
                   .flags = flags};   /* eval mode, as the fixtures (m.eval(): no GPT-2 /
                                         BERT dropout; LoRA dropout is 0 in these cases) */
    fw_out out;
    tr_params *P = tr_params_of(x->fm);
    const be_backend *be = fw_backend(x->fm);
    T_CHECK(fw_forward(x->fm, &in, &out) == 0, "%s", lp_geterr());
    const fw_acts *A = fw_last_acts(x->fm);
    /* the lean layout: one n1 / act buffer for all layers, made again by the backward; with
       checkpointing one set of everything, each layer keeping only its output */
    T_CHECK((A->lean || A->ckpt) && A->layers[0].act == A->layers[1].act,
            "%s: layers keep their own act", label);
    T_CHECK(A->ckpt == fw_checkpointing(x->fm), "%s: checkpointing %d", label, A->ckpt);
    if (A->ckpt)
        T_CHECK(A->layers[0].h == A->layers[1].h && A->layers[0].y != A->layers[1].y,
                "%s: the checkpointed layout", label);
    if ((flags & FW_LOSS) && out.kind == FW_OUT_LM)   /* the head's gradient went with the loss */
        T_CHECK(!out.logits && A->dfin, "%s: FW_LOSS kept the logits", label);
    float *loss = copy_of(x->f, "loss", ST_F32, NULL);
    if (loss) T_NEAR(out.loss, loss[0], 1e-5);
    free(loss);
    tr_params_zero_grad(P, be);
    T_CHECK(bw_backward(x->fm, 1.0f) == 0, "%s", lp_geterr());
    size_t nfix = 0;
    for (size_t i = 0; i < x->f->ntensors; i++) nfix += !strncmp(x->f->tensors[i].name, "grad.", 5);
    T_CHECK(P->n == nfix, "%s: %zu trainable tensors, peft has %zu", label, P->n, nfix);
    double worst = 0;
    const char *wname = "";
    for (size_t i = 0; i < P->n; i++) {
        char key[600];
        snprintf(key, sizeof key, "grad.%s", P->p[i].name);
        size_t n = 0;
        float *ref = copy_of(x->f, key, ST_F32, &n);
        if (!ref) continue;
        T_EQ_INT(n, P->p[i].numel);
        float *got = malloc(n * sizeof(float));
        be->to_host(got, P->p[i].grad, n * sizeof(float));
        double e = rel_max(got, ref, n);
        T_CHECK(e <= TOL, "%s: %s: relative error %.3g", label, P->p[i].name, e);
        if (e > worst) { worst = e; wname = P->p[i].name; }
        free(got);
        free(ref);
    }
    if (worst > worst_seen) worst_seen = worst;
    printf("%-14s %2zu tensors, worst gradient error %.2e (%s)\n", label, P->n, worst, wname);
}

/* The gradients of one forward + backward (every trainable tensor, concatenated). */
static float *grads_of(fx *x, const fw_batch *in, size_t *n) {
    tr_params *P = tr_params_of(x->fm);
    const be_backend *be = fw_backend(x->fm);
    fw_out out;
    *n = 0;
    for (size_t i = 0; i < P->n; i++) *n += P->p[i].numel;
    float *g = malloc(*n * sizeof(float));
    T_OK(fw_forward(x->fm, in, &out) == 0);
    tr_params_zero_grad(P, be);
    T_OK(bw_backward(x->fm, 1.0f) == 0);
    for (size_t i = 0, at = 0; i < P->n; at += P->p[i].numel, i++)
        be->to_host(g + at, P->p[i].grad, P->p[i].numel * sizeof(float));
    return g;
}

/* With checkpointing the backward remakes each layer by the same ops on the same input:
 * every gradient bit for bit the run's without (in train mode the same dropout masks:
 * drawn once, kept per layer). On cuda within 1e-6 instead: its column sums (bias and norm
 * gradients) add blocks' partial sums with atomics, in no fixed order on longer inputs. */
static void same_with_checkpointing(fx *x, const char *label, int flags) {
    fw_batch in = {.B = x->B, .T = x->T, .ids = x->ids, .mask = x->mask, .labels = x->labels,
                   .flags = flags};
    uint64_t draws = fw_train_draws(x->fm);
    size_t n0, n1;
    float *g0 = grads_of(x, &in, &n0);
    fw_set_checkpointing(x->fm, 1);
    fw_set_train_draws(x->fm, draws);   /* train mode: the same masks */
    float *g1 = grads_of(x, &in, &n1);
    fw_set_checkpointing(x->fm, 0);
    int exact = strcmp(fw_backend(x->fm)->name, "cuda") != 0;
    double e = n0 == n1 ? rel_max(g1, g0, n0) : 1;
    T_CHECK(n0 == n1 && (exact ? memcmp(g0, g1, n0 * sizeof(float)) == 0 : e <= 1e-6),
            "%s: checkpointing changed the gradients (%.3g)", label, e);
    printf("%-14s checkpointing: the same %zu gradient values%s\n", label, n0,
           exact ? ", bit for bit" : "");
    free(g0);
    free(g1);
}

static void lora_case_u(const char *cs, const char *model, const char *const *targets, size_t nt,
                        int all_linear, int rslora, const char *unfreeze) {
    char fix[256], mp[256];
    snprintf(fix, sizeof fix, "tests/fixtures/train/grad_%s.safetensors", cs);
    snprintf(mp, sizeof mp, "tests/fixtures/models/%s", model);
    fx x;
    if (fx_open(&x, fix, mp) == 0) {
        tr_lora_config c = {.r = 4, .alpha = 8, .targets = targets, .ntargets = nt,
                            .all_linear = all_linear, .rslora = rslora};
        T_CHECK(tr_lora_add(x.fm, &c) == 0, "%s", lp_geterr());
        set_lora_from_fixture(&x);
        size_t n;
        if (unfreeze) T_CHECK(tr_freeze(x.fm, unfreeze, 1, &n) == 0, "%s", lp_geterr());
        check_grads(&x, cs);
    }
    fx_close(&x);
}

static void lora_case(const char *cs, const char *model, const char *const *targets, size_t nt,
                      int all_linear, int rslora) {
    lora_case_u(cs, model, targets, nt, all_linear, rslora, NULL);
}

static void test_gemma_all_linear(void) { lora_case("gemma_all", "gemma", NULL, 0, 1, 0); }

/* BERT classifier: "dense" also matches the pooler (PEFT's suffix rule); the classifier's own
 * weights unfrozen. */
static void test_bert_classifier(void) {
    static const char *const t[] = {"query", "value", "dense"};
    lora_case_u("bert_cls", "bert", t, 3, 0, 0, "classifier");
}

static void test_llama_qv(void) {
    static const char *const t[] = {"q_proj", "v_proj"};
    lora_case("llama_qv", "llama", t, 2, 0, 0);
}
static void test_llama_all_linear(void) { lora_case("llama_all", "llama", NULL, 0, 1, 0); }
static void test_gpt2_all_linear(void) { lora_case("gpt2_all", "gpt2", NULL, 0, 1, 0); }
static void test_gemma2(void) {
    static const char *const t[] = {"q_proj", "v_proj", "down_proj"};
    lora_case("gemma2_qv", "gemma2", t, 3, 0, 0);
}
static void test_qwen2_rslora(void) {
    static const char *const t[] = {"q_proj", "k_proj", "o_proj", "up_proj"};
    lora_case("qwen2_rs", "qwen2", t, 4, 0, 1);
}

/* Layer 1 of `model` unfrozen (ntensors tensors): every base-weight gradient against
 * grad_<cs>. */
static void layer1_case(const char *cs, const char *model, size_t ntensors) {
    char fix[256], mp[256];
    snprintf(fix, sizeof fix, "tests/fixtures/train/grad_%s.safetensors", cs);
    snprintf(mp, sizeof mp, "tests/fixtures/models/%s", model);
    fx x;
    if (fx_open(&x, fix, mp) == 0) {
        size_t n;
        T_CHECK(tr_freeze(x.fm, "layers[1]", 1, &n) == 0, "%s", lp_geterr());
        T_EQ_INT(n, ntensors);
        check_grads(&x, cs);
    }
    fx_close(&x);
}

/* Qwen3: LoRA on every Linear (the head norms in the gradients' path); then the whole last
 * layer unfrozen, q_norm and k_norm weights among its tensors. */
static void test_qwen3(void) {
    lora_case("qwen3_all", "qwen3", NULL, 0, 1, 0);
    layer1_case("qwen3_last", "qwen3", 11);
}

/* Gemma 3: LoRA on every Linear across sliding and full layers (each its own RoPE); then the
 * full layer unfrozen (its (1+w) head norms, the four layer norms). */
static void test_gemma3(void) {
    lora_case("gemma3_all", "gemma3", NULL, 0, 1, 0);
    layer1_case("gemma3_full", "gemma3", 13);
}

static void test_llama_last_layer(void) { layer1_case("llama_last", "llama", 9); }

/* SmolLM3: LoRA on every Linear, the NoPE layer's gradients without the RoPE backward */
static void test_smollm3(void) { lora_case("smollm3_all", "smollm3", NULL, 0, 1, 0); }

/* Phi-3: LoRA on the fused qkv_proj and gate_up_proj (and o, down); then layer 1 unfrozen (the
 * fused weights' own gradients through the slices) */
static void test_phi3(void) {
    lora_case("phi3_all", "phi3", NULL, 0, 1, 0);
    layer1_case("phi3_last", "phi3", 6);
    lora_case("phi3p_all", "phi3-partial", NULL, 0, 1, 0);   /* partial rotary's backward */
}

/* ---- IA3 (tests/fixtures/ia3, tools/make_ia3_fixtures.py) ---------------------------------- */

/* Every trainable vector set to the fixture's "ia3.<name>". */
static void set_ia3_from_fixture(fx *x) {
    tr_params *P = tr_params_of(x->fm);
    for (size_t i = 0; i < P->n; i++) {
        char key[600];
        snprintf(key, sizeof key, "ia3.%s", P->p[i].name);
        size_t n;
        float *v = copy_of(x->f, key, ST_F32, &n);
        if (!v) continue;
        T_EQ_INT(n, P->p[i].numel);
        fw_backend(x->fm)->to_device(P->p[i].data, v, n * sizeof(float));
        free(v);
    }
}

/* peft IA3 with the model type's defaults (the `ia3` command's): every ia3_l gradient. */
static void ia3_case(const char *cs, const char *const *targets, size_t nt, const char *ff) {
    char fix[256], mp[256];
    snprintf(fix, sizeof fix, "tests/fixtures/ia3/grad_%s.safetensors", cs);
    snprintf(mp, sizeof mp, "tests/fixtures/models/%s", cs);
    fx x;
    if (fx_open(&x, fix, mp) == 0) {
        tr_ia3_config c = {.targets = targets, .ntargets = nt, .ff = &ff, .nff = 1};
        T_CHECK(tr_ia3_add(x.fm, &c) == 0, "%s", lp_geterr());
        set_ia3_from_fixture(&x);
        char label[64];
        snprintf(label, sizeof label, "ia3_%s", cs);
        check_grads(&x, label);
    }
    fx_close(&x);
}

static void test_ia3(void) {
    static const char *const kv[] = {"k_proj", "v_proj", "down_proj"},
                             *const qv[] = {"q_proj", "v_proj", "down_proj"},
                             *const gpt2[] = {"c_attn", "mlp.c_proj"},
                             *const bert[] = {"key", "value", "output.dense"};
    ia3_case("llama", kv, 3, "down_proj");
    ia3_case("qwen2", qv, 3, "down_proj");
    ia3_case("gemma2", qv, 3, "down_proj");
    ia3_case("gpt2", gpt2, 2, "mlp.c_proj");   /* Conv1D: c_attn's 3C outputs scaled */
    ia3_case("bert", bert, 3, "output.dense");  /* attention.output.dense is feed-forward too */
}

/* logits (B,T,V) of a forward against the fixture's `name`, padded rows skipped: worst
 * |a − b| / max(1, |b|) */
static double logit_err(fx *x, const char *name) {
    fw_batch in = {.B = x->B, .T = x->T, .ids = x->ids, .mask = x->mask, .flags = 0};
    fw_out out;
    T_CHECK(fw_forward(x->fm, &in, &out) == 0, "%s", lp_geterr());
    size_t n;
    float *ref = copy_of(x->f, name, ST_F32, &n);
    if (!ref) return 1e9;
    float *got = malloc(n * sizeof(float));
    fw_backend(x->fm)->to_host(got, out.logits, n * sizeof(float));
    size_t V = n / ((size_t)x->B * x->T);
    double worst = 0;
    for (size_t r = 0; r < (size_t)x->B * x->T; r++)
        for (size_t v = 0; x->mask[r] && v < V; v++) {
            double d = fabs((double)got[r * V + v] - ref[r * V + v]) / fmax(1.0, fabs(ref[r * V + v]));
            if (!(d <= worst)) worst = d;
        }
    free(ref);
    free(got);
    return worst;
}

/* An IA3 adapter PEFT saved: loaded, PeftModel's logits; merged (W ⊙ l), peft's merged
 * logits; unmerged, the adapter's again; saved and loaded in loupe, the same; a LoRA adapter
 * on the same model is refused (one type per model, as PEFT). */
static void test_ia3_peft_adapter(void) {
    fx x;
    if (fx_open(&x, "tests/fixtures/ia3/peft_llama_logits.safetensors",
                "tests/fixtures/models/llama") < 0) {
        fx_close(&x);
        return;
    }
    T_CHECK(tr_adapter_load(x.fm, "tests/fixtures/ia3/peft_llama", NULL) == 0, "%s", lp_geterr());
    char buf[256];
    tr_report(x.fm, buf, sizeof buf, NULL, NULL);   /* peft's print_trainable_parameters */
    T_STR(buf, "trainable params: 192 || all params: 35,168 || trainable%: 0.5460");
    double e = logit_err(&x, "logits");
    T_CHECK(e <= TOL, "PEFT-saved IA3 adapter: logits differ by %.3g", e);
    T_CHECK(tr_adapter_merge(x.fm, "default", 1) == 0, "%s", lp_geterr());
    double em = logit_err(&x, "merged_logits");
    T_CHECK(em <= TOL, "merged IA3: logits differ from peft's merged ones by %.3g", em);
    T_CHECK(tr_adapter_merge(x.fm, "default", 0) == 0, "%s", lp_geterr());
    double eu = logit_err(&x, "logits");
    T_CHECK(eu <= TOL, "unmerged IA3: logits differ by %.3g", eu);
    printf("peft IA3 adapter: logits %.2e, merged %.2e, unmerged %.2e\n", e, em, eu);
    tr_adapter_enable(x.fm, "default", 0);
    T_CHECK(logit_err(&x, "logits") > 1e-3, "disabling the IA3 adapter changed nothing");
    tr_adapter_enable(x.fm, "default", 1);
    char dir[] = "/tmp/loupe_ia3_XXXXXX";
    T_OK(mkdtemp(dir) != NULL);
    T_CHECK(tr_adapter_save(x.fm, NULL, dir) == 0, "%s", lp_geterr());
    T_CHECK(tr_adapter_load(x.fm, dir, "again") == 0, "%s", lp_geterr());
    tr_adapter_enable(x.fm, "default", 0);
    double er = logit_err(&x, "logits");
    T_CHECK(er <= TOL, "IA3 save/load round trip: %.3g", er);
    tr_lora_config lc = {.r = 2, .alpha = 4, .all_linear = 1, .name = "lora"};
    T_CHECK(tr_lora_add(x.fm, &lc) < 0, "a LoRA adapter beside IA3 ones");
    T_CONTAINS(lp_geterr(), "does not combine adapter types");
    static const char *const down[] = {"down_proj"}, *const up = "up_proj";
    tr_ia3_config bad = {.name = "bad", .targets = down, .ntargets = 1, .ff = &up, .nff = 1};
    T_CHECK(tr_ia3_add(x.fm, &bad) < 0, "a feed-forward module outside the targets");
    T_CONTAINS(lp_geterr(), "subset of target_modules");
    tr_ia3_config clash = {.name = "clash", .targets = down, .ntargets = 1};
    T_CHECK(tr_ia3_add(x.fm, &clash) < 0, "down_proj's output scaled beside its input");
    T_CONTAINS(lp_geterr(), "feedforward differs");
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    T_OK(system(cmd) == 0);
    fx_close(&x);
}

/* An adapter PEFT saved, loaded by loupe: PeftModel's logits. */
static void test_load_peft_adapter(void) {
    fx x;
    if (fx_open(&x, "tests/fixtures/train/peft_llama_logits.safetensors",
                "tests/fixtures/models/llama") < 0) {
        fx_close(&x);
        return;
    }
    T_CHECK(tr_adapter_load(x.fm, "tests/fixtures/train/peft_llama", NULL) == 0, "%s", lp_geterr());
    fw_batch in = {.B = x.B, .T = x.T, .ids = x.ids, .mask = x.mask, .flags = 0};
    fw_out out;
    T_CHECK(fw_forward(x.fm, &in, &out) == 0, "%s", lp_geterr());
    size_t n;
    float *ref = copy_of(x.f, "logits", ST_F32, &n);
    float *got = malloc(n * sizeof(float));
    fw_backend(x.fm)->to_host(got, out.logits, n * sizeof(float));
    double worst = 0;
    size_t V = n / ((size_t)x.B * x.T);
    for (size_t r = 0; r < (size_t)x.B * x.T; r++) {
        if (!x.mask[r]) continue;
        for (size_t v = 0; v < V; v++) {
            double d = fabs((double)got[r * V + v] - ref[r * V + v]) / fmax(1.0, fabs(ref[r * V + v]));
            if (!(d <= worst)) worst = d;
        }
    }
    T_CHECK(worst <= TOL, "PEFT-saved adapter: logits differ by %.3g", worst);
    printf("peft adapter load: worst logit error %.2e\n", worst);
    /* greedy generation through the KV cache with the adapter: PeftModel.generate's tokens */
    size_t ng = 0;
    int32_t *gen = copy_of(x.f, "generated", ST_I32, &ng);
    if (gen) {
        gn_params gp;
        gn_params_default(&gp);
        gp.max_tokens = (int)ng;
        gn_result gr;
        T_CHECK(gn_generate(x.fm, x.ids, x.T, &gp, &gr) == 0, "%s", lp_geterr());
        T_EQ_INT(gr.n, ng);
        for (int i = 0; i < gr.n && i < (int)ng; i++) T_EQ_INT(gr.ids[i], gen[i]);
        gn_result_free(&gr);
        free(gen);
    }
    /* without the adapter the logits differ (the adapter did something) */
    tr_adapter_enable(x.fm, "default", 0);
    T_CHECK(fw_forward(x.fm, &in, &out) == 0, "%s", lp_geterr());
    fw_backend(x.fm)->to_host(got, out.logits, n * sizeof(float));
    T_CHECK(rel_max(got, ref, n) > 1e-3, "disabling the adapter changed nothing");
    tr_adapter_enable(x.fm, "default", 1);
    /* save → load again in loupe: the same logits */
    char dir[] = "/tmp/loupe_adapter_XXXXXX";
    T_OK(mkdtemp(dir) != NULL);
    char sub[300];
    snprintf(sub, sizeof sub, "%s/out/a", dir);
    T_CHECK(tr_adapter_save(x.fm, NULL, sub) == 0, "%s", lp_geterr());
    T_CHECK(tr_adapter_load(x.fm, sub, "again") == 0, "%s", lp_geterr());
    tr_adapter_enable(x.fm, "default", 0);
    T_CHECK(fw_forward(x.fm, &in, &out) == 0, "%s", lp_geterr());
    fw_backend(x.fm)->to_host(got, out.logits, n * sizeof(float));
    double e2 = 0;
    for (size_t r = 0; r < (size_t)x.B * x.T; r++)
        if (x.mask[r])
            for (size_t v = 0; v < V; v++)
                e2 = fmax(e2, fabs((double)got[r * V + v] - ref[r * V + v]));
    T_CHECK(e2 <= 1e-4, "save/load round trip: %.3g", e2);
    /* errors */
    T_CHECK(tr_adapter_load(x.fm, sub, "again") < 0, "a second adapter with the same name");
    T_CONTAINS(lp_geterr(), "exists already");
    T_CHECK(tr_adapter_load(x.fm, "tests/fixtures/train/none", "x") < 0, "missing dir");
    T_CONTAINS(lp_geterr(), "adapter_config.json");
    char cmd[700];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    T_OK(system(cmd) == 0);
    free(ref);
    free(got);
    fx_close(&x);
}

/* A BERT classification adapter peft saved with task_type SEQ_CLS: LoRA on query/value and the
 * classifier in modules_to_save. Loaded: PeftModel's logits and trainable line; disabled or
 * deleted: the base model's logits (the checkpoint's classifier back); saved and loaded again
 * in loupe: the same logits. */
static void modules_to_save(const char *fixtures) {   /* tests/fixtures/train or …/ia3 */
    fx x;
    char fix[256], adir[256];
    snprintf(fix, sizeof fix, "%s/peft_bert_cls_logits.safetensors", fixtures);
    snprintf(adir, sizeof adir, "%s/peft_bert_cls", fixtures);
    if (fx_open(&x, fix, "tests/fixtures/models/bert") < 0) {
        fx_close(&x);
        return;
    }
    T_CHECK(tr_adapter_load(x.fm, adir, NULL) == 0, "%s", lp_geterr());
    const st_tensor *rep = st_find(x.f, "report");
    int64_t counts[2] = {0, 0};
    if (rep) memcpy(counts, rep->data, sizeof counts);
    uint64_t tr, all;
    char buf[200];
    tr_report(x.fm, buf, sizeof buf, &tr, &all);
    T_EQ_INT(tr, counts[0]);
    T_EQ_INT(all, counts[1]);
    fw_batch in = {.B = x.B, .T = x.T, .ids = x.ids, .mask = x.mask};
    fw_out out;
    size_t n;
    float *ref = copy_of(x.f, "logits", ST_F32, &n), *base = copy_of(x.f, "base_logits", ST_F32, NULL);
    float *got = malloc(n * sizeof(float));
    const char *phase[] = {"loaded", "disabled", "enabled", "reloaded", "deleted"};
    char dir[] = "/tmp/loupe_mts_XXXXXX";
    T_OK(mkdtemp(dir) != NULL);
    for (int ph = 0; ph < 5; ph++) {
        if (ph == 1) T_OK(tr_adapter_enable(x.fm, "default", 0) == 0);
        if (ph == 2) T_OK(tr_adapter_enable(x.fm, "default", 1) == 0);
        if (ph == 3) {   /* save, delete, load loupe's own files */
            T_CHECK(tr_adapter_save(x.fm, NULL, dir) == 0, "%s", lp_geterr());
            T_OK(tr_adapter_delete(x.fm, "default") == 0);
            T_CHECK(tr_adapter_load(x.fm, dir, NULL) == 0, "%s", lp_geterr());
        }
        if (ph == 4) {
            T_OK(tr_adapter_delete(x.fm, "default") == 0);
            T_EQ_INT(tr_params_count(tr_params_of(x.fm)), 0);
        }
        T_CHECK(fw_forward(x.fm, &in, &out) == 0, "%s", lp_geterr());
        fw_backend(x.fm)->to_host(got, out.logits, n * sizeof(float));
        const float *want = ph == 1 || ph == 4 ? base : ref;
        double e = rel_max(got, want, n);
        T_CHECK(e <= TOL, "%s modules_to_save %s: logits differ by %.3g", fixtures, phase[ph], e);
    }
    char cmd[100];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    T_OK(system(cmd) == 0);
    free(ref);
    free(base);
    free(got);
    fx_close(&x);
}

static void test_modules_to_save(void) { modules_to_save("tests/fixtures/train"); }
/* the same with IA3 (peft's IA3Config(task_type="SEQ_CLS")) */
static void test_ia3_modules_to_save(void) { modules_to_save("tests/fixtures/ia3"); }

/* Merge: W += scale·B·A gives the adapter's logits without the adapter; unmerge restores.
 * Linear (llama) and Conv1D (gpt2, W stored [in, out]). */
static void merge_case(const char *model, const char *fixture) {
    char mp[256], fp[256];
    snprintf(mp, sizeof mp, "tests/fixtures/models/%s", model);
    snprintf(fp, sizeof fp, "tests/fixtures/train/grad_%s.safetensors", fixture);
    fx x;
    if (fx_open(&x, fp, mp) == 0) {
        tr_lora_config c = {.r = 4, .alpha = 8, .all_linear = 1};
        T_CHECK(tr_lora_add(x.fm, &c) == 0, "%s", lp_geterr());
        set_lora_from_fixture(&x);
        fw_batch in = {.B = x.B, .T = x.T, .ids = x.ids, .mask = x.mask};
        fw_out out;
        size_t n = 0;
        float *ref = copy_of(x.f, "logits", ST_F32, &n);
        float *got = malloc(n * sizeof(float));
        const char *phase[] = {"adapter", "merged", "unmerged"};
        for (int ph = 0; ph < 3; ph++) {
            if (ph == 1) T_CHECK(tr_adapter_merge(x.fm, "default", 1) == 0, "%s", lp_geterr());
            if (ph == 2) T_CHECK(tr_adapter_merge(x.fm, "default", 0) == 0, "%s", lp_geterr());
            T_CHECK(fw_forward(x.fm, &in, &out) == 0, "%s", lp_geterr());
            fw_backend(x.fm)->to_host(got, out.logits, n * sizeof(float));
            double e = rel_max(got, ref, n);
            T_CHECK(e <= TOL, "%s %s: logits differ from peft's by %.3g", model, phase[ph], e);
            if (ph == 1) {
                T_EQ_INT(tr_params_count(tr_params_of(x.fm)), 0);
                T_CHECK(tr_adapter_enable(x.fm, "default", 1) < 0, "enable while merged");
                T_CHECK(tr_adapter_merge(x.fm, "default", 1) < 0, "merged twice");
            }
        }
        T_CHECK(tr_params_count(tr_params_of(x.fm)) > 0, "trainable again after unmerge");
        free(ref);
        free(got);
    }
    fx_close(&x);
}

static void test_merge(void) {
    merge_case("llama", "llama_all");
    merge_case("gpt2", "gpt2_all");
}

/* BERT masked LM: LoRA on query/value, the MLM transform unfrozen (no shift in the loss). */
static void test_bert_mlm(void) {
    static const char *const t[] = {"query", "value"};
    lora_case_u("bertmlm", "bert-mlm", t, 2, 0, 0, "cls.predictions.transform");
}

/* PEFT's print_trainable_parameters for q/v r=4 on the tiny llama:
 * "trainable params: 896 || all params: 35,872 || trainable%: 2.4978" (peft 0.21.2). */
static void test_report_and_errors(void) {
    mdl_model *m = mdl_load("tests/fixtures/models/llama");
    fw_model *fm = m ? fw_new(m, t_device()) : NULL;
    T_OK(fm != NULL);
    if (!fm) { mdl_free(m); return; }
    static const char *const t[] = {"q_proj", "v_proj"};
    tr_lora_config c = {.r = 4, .alpha = 8, .targets = t, .ntargets = 2};
    T_CHECK(tr_lora_add(fm, &c) == 0, "%s", lp_geterr());
    char buf[200];
    tr_report(fm, buf, sizeof buf, NULL, NULL);
    T_STR(buf, "trainable params: 896 || all params: 35,872 || trainable%: 2.4978");
    /* A ~ U(±1/√in), B = 0 */
    tr_state *s = tr_state_of(fm);
    fw_lora *lo = &s->ad[0]->sites[0].lo;
    float A[4 * 32], Bm[32 * 4];
    fw_backend(fm)->to_host(A, lo->A, sizeof A);
    fw_backend(fm)->to_host(Bm, lo->B, sizeof Bm);
    double mx = 0, bz = 0;
    for (int i = 0; i < 128; i++) { mx = fmax(mx, fabs(A[i])); bz = fmax(bz, fabs(Bm[i])); }
    T_CHECK(mx <= 1 / sqrt(32.0) && mx > 0.5 / sqrt(32.0), "A bound %g", mx);
    T_CHECK(bz == 0, "B is zero at init");
    T_CHECK(tr_lora_add(fm, &c) < 0, "duplicate name");
    static const char *const bad[] = {"nope"};
    tr_lora_config c2 = {.name = "b", .r = 4, .alpha = 8, .targets = bad, .ntargets = 1};
    T_CHECK(tr_lora_add(fm, &c2) < 0, "no match");
    T_CONTAINS(lp_geterr(), "no module of this model matches");
    static const char *const re[] = {"model\\.layers\\.\\d\\.mlp\\.(up|down)_proj"};
    tr_lora_config c3 = {.name = "re", .r = 2, .alpha = 4, .targets = re, .ntargets = 1,
                         .target_regex = 1, .init = "gaussian"};
    T_CHECK(tr_lora_add(fm, &c3) == 0, "%s", lp_geterr());
    T_EQ_INT(s->ad[1]->nsites, 4);
    /* only the active adapter trains: 2 layers × (up 2·32+64·2 + down 2·64+32·2) */
    T_EQ_INT(tr_params_count(tr_params_of(fm)), 2 * (2 * 32 + 64 * 2 + 2 * 64 + 32 * 2));
    size_t n;
    T_CHECK(tr_freeze(fm, "*.nothing", 1, &n) < 0, "no match");
    T_CHECK(tr_freeze(fm, "lm_head", 1, &n) == 0 && n == 1, "%s", lp_geterr());
    T_CHECK(tr_freeze(fm, "lm_head", 0, &n) == 0 && n == 1, "%s", lp_geterr());
    T_CHECK(tr_adapter_delete(fm, "re") == 0, "%s", lp_geterr());
    T_EQ_INT(tr_params_count(tr_params_of(fm)), 0);
    T_CHECK(tr_adapter_set_active(fm, "default") == 0, "%s", lp_geterr());
    T_EQ_INT(tr_params_count(tr_params_of(fm)), 896);
    /* backward without a forward, and after a forward without labels */
    T_CHECK(bw_backward(fm, 1) < 0, "no forward");
    int32_t ids[3] = {5, 6, 7};
    fw_batch in = {.B = 1, .T = 3, .ids = ids, .flags = FW_KEEP};
    fw_out out;
    T_OK(fw_forward(fm, &in, &out) == 0);
    T_CHECK(bw_backward(fm, 1) < 0, "no labels");
    T_CONTAINS(lp_geterr(), "no labels");
    fw_free(fm);
    mdl_free(m);
}

/* LoRA dropout: FW_TRAIN draws a fresh mask per forward (losses differ), a forward without it
 * draws none (same loss as p = 0), and the backward uses the forward's mask: central finite
 * differences of the loss, with the same mask redrawn (the draw counter reset), match the
 * gradient of the largest lora_A and lora_B entries. */
static void test_dropout(void) {
    fx x;
    if (fx_open(&x, "tests/fixtures/train/grad_llama_qv.safetensors", "tests/fixtures/models/llama") == 0) {
        static const char *const t[] = {"q_proj", "v_proj"};
        tr_lora_config c = {.r = 4, .alpha = 8, .dropout = 0.3, .targets = t, .ntargets = 2};
        T_CHECK(tr_lora_add(x.fm, &c) == 0, "%s", lp_geterr());
        set_lora_from_fixture(&x);
        fw_batch in = {.B = x.B, .T = x.T, .ids = x.ids, .mask = x.mask, .labels = x.labels,
                       .flags = FW_KEEP | FW_TRAIN};
        fw_batch ev = in;
        ev.flags = FW_KEEP;
        fw_out o1, o2, o3;
        T_OK(fw_forward(x.fm, &in, &o1) == 0);
        T_OK(fw_forward(x.fm, &in, &o2) == 0);
        T_CHECK(o1.loss != o2.loss, "two training forwards drew the same dropout mask");
        T_OK(fw_forward(x.fm, &ev, &o3) == 0);
        float *ref = copy_of(x.f, "loss", ST_F32, NULL);
        if (ref) T_NEAR(o3.loss, ref[0], 1e-5);   /* no dropout outside training */
        free(ref);
        fw_model *fm = x.fm;
        tr_params *P = tr_params_of(fm);
        const be_backend *be = fw_backend(fm);
        uint64_t before = fw_train_draws(fm);
        T_OK(fw_forward(fm, &in, &o1) == 0);
        tr_params_zero_grad(P, be);
        T_OK(bw_backward(fm, 1.0f) == 0);
        for (size_t pi = 0; pi < 2; pi++) {   /* layer 0 q_proj lora_A, lora_B */
            tr_param *p = &P->p[pi];
            float *g = malloc(p->numel * sizeof(float)), *w = malloc(p->numel * sizeof(float));
            be->to_host(g, p->grad, p->numel * sizeof(float));
            be->to_host(w, p->data, p->numel * sizeof(float));
            size_t at = 0;
            for (size_t i = 1; i < p->numel; i++) if (fabs(g[i]) > fabs(g[at])) at = i;
            double h = 1e-2, l[2];
            for (int sgn = 0; sgn < 2; sgn++) {
                float v = w[at] + (float)(sgn ? -h : h);
                be->to_device(p->data + at, &v, sizeof v);
                fw_set_train_draws(fm, before);   /* the same mask again */
                T_OK(fw_forward(fm, &in, &o2) == 0);
                l[sgn] = o2.loss;
            }
            be->to_device(p->data + at, &w[at], sizeof(float));
            double fd = (l[0] - l[1]) / (2 * h);
            T_CHECK(fabs(fd - g[at]) <= 2e-2 * fmax(fabs(g[at]), 1e-3),
                    "%s[%zu]: finite difference %.6g, backward %.6g", p->name, at, fd, (double)g[at]);
            free(g);
            free(w);
        }
        same_with_checkpointing(&x, "llama dropout", FW_KEEP | FW_TRAIN);
    }
    fx_close(&x);
    /* GPT-2's and BERT's own dropout in train mode (attention, residual, embeddings): masks
       kept per layer, so the remade layers are the same */
    if (fx_open(&x, "tests/fixtures/train/grad_gpt2_all.safetensors", "tests/fixtures/models/gpt2") == 0) {
        tr_lora_config c = {.r = 4, .alpha = 8, .all_linear = 1, .dropout = 0.1};
        T_CHECK(tr_lora_add(x.fm, &c) == 0, "%s", lp_geterr());
        same_with_checkpointing(&x, "gpt2 dropout", FW_KEEP | FW_TRAIN | FW_LOSS);
    }
    fx_close(&x);
    if (fx_open(&x, "tests/fixtures/train/grad_bert_cls.safetensors", "tests/fixtures/models/bert") == 0) {
        static const char *const t[] = {"query", "value"};
        tr_lora_config c = {.r = 4, .alpha = 8, .targets = t, .ntargets = 2};
        T_CHECK(tr_lora_add(x.fm, &c) == 0, "%s", lp_geterr());
        same_with_checkpointing(&x, "bert dropout", FW_KEEP | FW_TRAIN);
    }
    fx_close(&x);
}

/* Every allocation of lora / load / save / freeze failing in turn: an error, no crash, no leak
 * (ASan), and the model as it was (no adapter, nothing trainable). */
static void test_oom(void) {
    mdl_model *m = mdl_load("tests/fixtures/models/llama");
    fw_model *fm = m ? fw_new(m, t_device()) : NULL;
    T_OK(fm != NULL);
    if (!fm) { mdl_free(m); return; }
    T_OK(fw_load_weights(fm) == 0);
    T_OK(tr_params_of(fm) != NULL);
    static const char *const t[] = {"q_proj", "v_proj"};
    tr_lora_config c = {.r = 4, .alpha = 8, .targets = t, .ntargets = 2};
    int ok_at = 0;
    for (long n = 1; n < 400 && !ok_at; n++) {
        lp_mem_fail_after(n);
        int rc = tr_lora_add(fm, &c);
        lp_mem_fail_after(0);
        if (rc == 0) { ok_at = (int)n; break; }
        const char *names[4];
        int active;
        T_EQ_INT(tr_adapter_names(fm, names, 4, &active), 0);
    }
    T_CHECK(ok_at > 1, "tr_lora_add never succeeded under failing allocations");
    T_OK(tr_adapter_delete(fm, "default") == 0);
    ok_at = 0;
    for (long n = 1; n < 400 && !ok_at; n++) {
        lp_mem_fail_after(n);
        int rc = tr_adapter_load(fm, "tests/fixtures/train/peft_llama", "p");
        lp_mem_fail_after(0);
        if (rc == 0) ok_at = (int)n;
        else {
            const char *names[4];
            int active;
            T_EQ_INT(tr_adapter_names(fm, names, 4, &active), 0);
        }
    }
    T_CHECK(ok_at > 1, "tr_adapter_load never succeeded under failing allocations");
    char dir[] = "/tmp/loupe_oom_XXXXXX";
    T_OK(mkdtemp(dir) != NULL);
    for (long n = 1; n < 100; n++) {
        lp_mem_fail_after(n);
        int rc = tr_adapter_save(fm, "p", dir);
        lp_mem_fail_after(0);
        if (rc == 0) break;
    }
    for (long n = 1; n < 100; n++) {
        size_t k;
        lp_mem_fail_after(n);
        int rc = tr_freeze(fm, "layers.1.*", 1, &k);
        lp_mem_fail_after(0);
        if (rc == 0) break;
    }
    char cmd[200];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    T_OK(system(cmd) == 0);
    fw_free(fm);
    mdl_free(m);
}

int main(void) {
    printf("device %s\n", t_device()->name);
    T_RUN(test_llama_qv);
    T_RUN(test_llama_all_linear);
    T_RUN(test_llama_last_layer);
    T_RUN(test_gpt2_all_linear);
    T_RUN(test_gemma2);
    T_RUN(test_qwen2_rslora);
    T_RUN(test_qwen3);
    T_RUN(test_gemma3);
    T_RUN(test_smollm3);
    T_RUN(test_phi3);
    T_RUN(test_gemma_all_linear);
    T_RUN(test_bert_classifier);
    T_RUN(test_bert_mlm);
    T_RUN(test_load_peft_adapter);
    T_RUN(test_ia3);
    T_RUN(test_ia3_peft_adapter);
    T_RUN(test_merge);
    T_RUN(test_modules_to_save);
    T_RUN(test_ia3_modules_to_save);
    T_RUN(test_dropout);
    T_RUN(test_report_and_errors);
    T_RUN(test_oom);
    printf("worst gradient error over all cases %.2e (tolerance %.0e)\n", worst_seen, TOL);
    return t_done();
}
