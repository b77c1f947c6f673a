/* test_adalora.c — AdaLoRA against peft 0.21.2 (tests/fixtures/adalora,
 * tools/make_adalora_fixtures.py).
 *
 *  - grad_<case>: init_r 4, the model type's default targets, A, B, E set to seeded values;
 *    one forward + backward. loupe's loss (the orthogonal regulariser included, as
 *    AdaLoraModel.forward adds it) within 1e-5 relative, every lora_A / lora_B / lora_E
 *    gradient within 1e-4 of the tensor's largest (the regulariser's gradient included).
 *  - curve_adalora: 20 AdamW steps (clipping, linear schedule) with the rank allocator
 *    (tinit 3, tfinal 5, deltaT 2, total_step 16, init_r 6 → target_r 2): every step's loss
 *    and grad norm, the budget, which E values are exactly zero after the step, and E itself.
 *  - peft_llama: an adapter PeftModel saved, loaded: PeftModel's logits; merged, peft's merged
 *    logits. peft_llama_trained: the curve's adapter as peft saved it (a rank_pattern, one
 *    module at rank 0): PeftModel's logits; saved again by loupe, the same files' meaning.
 *  - The config checks PEFT makes (total_step, the schedule) and one type per model. */
#include "t.h"
#include "t_device.h"
#include "t_fixture.h"
#include "t_json.h"
#include "t_model_fx.h"
#include "t_peft.h"

#include <jansson.h>
#include <stdlib.h>
#include <unistd.h>

#include "model/model.h"
#include "model/st.h"
#include "nn/backward.h"
#include "nn/forward.h"
#include "train/lora.h"
#include "train/optim.h"
#include "train/params.h"
#include "train/train_int.h"
#include "util/err.h"

/* Every trainable tensor (lora_A, lora_B, lora_E) from the file's prefix + name, then A ⊙ E. */
static void set_ada(fw_model *fm, const st_file *f, const char *prefix) {
    set_params(fm, f, prefix);
    tr_state *s = tr_state_of(fm);
    T_OK(tr_ada_sync(fm, s->ad[s->active]) == 0);
}

static tr_adalora_config config(const char *const *targets, size_t nt) {
    return (tr_adalora_config){.init_r = 4, .target_r = 2, .alpha = 8, .total_step = 10,
                               .delta_t = 1, .beta1 = 0.85, .beta2 = 0.85, .orth = 0.5,
                               .targets = targets, .ntargets = nt};
}

static void grad_case(const char *cs, const char *const *targets, size_t nt, int flags) {
    char fix[256], mp[256];
    snprintf(fix, sizeof fix, "tests/fixtures/adalora/grad_%s.safetensors", cs);
    snprintf(mp, sizeof mp, "tests/fixtures/models/%s", cs);
    fx x;
    if (fx_open(&x, fix, mp) < 0) return fx_close(&x);
    tr_adalora_config c = config(targets, nt);
    T_CHECK(tr_adalora_add(x.fm, &c) == 0, "%s", lp_geterr());
    set_ada(x.fm, x.f, "ada.");
    tr_params *P = tr_params_of(x.fm);
    fw_batch in = {.B = x.B, .T = x.T, .ids = x.ids, .mask = x.mask, .labels = x.labels,
                   .flags = flags};
    fw_out out;
    T_CHECK(fw_forward(x.fm, &in, &out) == 0, "%s", lp_geterr());
    float *loss = t_fx(x.f, "loss", ST_F32, NULL);
    if (loss) T_CHECK(fabs(out.loss - loss[0]) <= 1e-5 * fabs(loss[0]), "%s: loss %.7g, peft %.7g",
                      cs, out.loss, loss[0]);
    tr_params_zero_grad(P, fw_backend(x.fm));
    T_CHECK(bw_backward(x.fm, 1.0f) == 0, "%s", lp_geterr());
    size_t nfix = 0;
    for (size_t i = 0; i < x.f->ntensors; i++) nfix += !strncmp(x.f->tensors[i].name, "grad.", 5);
    T_CHECK(P->n == nfix, "%s: %zu trainable tensors, peft has %zu", cs, P->n, nfix);
    double worst = 0;
    for (size_t i = 0; i < P->n; i++) {
        char key[600];
        snprintf(key, sizeof key, "grad.%s", P->p[i].name);
        size_t n;
        float *ref = t_fx(x.f, key, ST_F32, &n);
        if (!ref) continue;
        float *got = malloc(n * sizeof(float));
        fw_backend(x.fm)->to_host(got, P->p[i].grad, n * sizeof(float));
        double e = t_rel_max(got, ref, n);
        T_CHECK(e <= 1e-4, "%s: %s: relative error %.3g", cs, P->p[i].name, e);
        if (e > worst) worst = e;
        free(got), free(ref);
    }
    printf("adalora %-6s %s loss %.6f (peft %.6f), %zu gradients, worst %.2e\n", cs,
           flags & FW_LOSS ? "FW_LOSS" : "logits ", out.loss, loss ? loss[0] : 0, P->n, worst);
    free(loss);
    fx_close(&x);
}

static void test_grads(void) {
    static const char *const qv[] = {"q_proj", "v_proj"}, *const gpt2[] = {"c_attn"},
                             *const bert[] = {"query", "value"};
    for (int k = 0; k < 2; k++) {
        int flags = k ? FW_KEEP | FW_LOSS : FW_KEEP;
        grad_case("llama", qv, 2, flags);
        grad_case("qwen2", qv, 2, flags);
        grad_case("gpt2", gpt2, 1, flags);   /* Conv1D: A (r, in), B (out, r) as a Linear's */
        if (!k) grad_case("bert", bert, 2, flags);   /* a classifier: no FW_LOSS path */
    }
}

/* ---- the training curve with the allocator ------------------------------------------------ */

/* After step s: E of every site against the curve's values; exactly the zeros it lists. */
static void check_e(fw_model *fm, json_t *fx, size_t s, double *worst) {
    tr_state *st = tr_state_of(fm);
    tr_adapter *a = st->ad[st->active];
    json_t *E = json_array_get(json_object_get(fx, "E"), s);
    json_t *masked = json_array_get(json_object_get(fx, "masked"), s);
    for (size_t k = 0; k < a->nsites; k++) {
        int r = a->sites[k].lo.r;
        float got[64], want[64];
        fw_backend(fm)->to_host(got, a->ada->s[k].E, (size_t)r * sizeof(float));
        json_t *ek = json_array_get(E, k), *mk = json_array_get(masked, k);
        for (int j = 0; j < r; j++) want[j] = (float)json_number_value(json_array_get(ek, (size_t)j));
        double e = t_rel_max(got, want, (size_t)r);
        if (e > *worst) *worst = e;
        T_CHECK(e <= 1e-4, "step %zu, %s: E differs by %.3g", s, a->sites[k].module, e);
        int zeros = 0;
        for (int j = 0; j < r; j++) zeros += got[j] == 0.0f;
        T_CHECK((size_t)zeros == json_array_size(mk), "step %zu, %s: %d zeros in E, peft %zu", s,
                a->sites[k].module, zeros, json_array_size(mk));
        for (size_t i = 0; i < json_array_size(mk); i++) {
            int j = (int)json_integer_value(json_array_get(mk, i));
            T_CHECK(got[j] == 0.0f, "step %zu, %s: E[%d] = %g, peft's is 0", s, a->sites[k].module, j, got[j]);
        }
    }
}

static void test_curve(void) {
    const char *path = "tests/fixtures/adalora/curve_adalora.json";
    json_error_t err;
    json_t *fx = json_load_file(path, 0, &err);
    T_CHECK(fx != NULL, "%s: %s", path, err.text);
    if (!fx) return;
    json_t *ac = json_object_get(fx, "adalora");
    mdl_model *m = mdl_load(json_string_value(json_object_get(fx, "model")));
    fw_model *fm = m ? fw_new(m, t_device()) : NULL;
    T_CHECK(fm != NULL, "%s", lp_geterr());
    if (!fm) return;
    static const char *const qv[] = {"q_proj", "v_proj"};
#define I(k) (int)json_integer_value(json_object_get(ac, k))
#define F(k) json_number_value(json_object_get(ac, k))
    tr_adalora_config c = {.init_r = I("init_r"), .target_r = I("target_r"), .alpha = F("lora_alpha"),
                           .tinit = I("tinit"), .tfinal = I("tfinal"), .delta_t = I("deltaT"),
                           .total_step = I("total_step"), .beta1 = F("beta1"), .beta2 = F("beta2"),
                           .orth = F("orth_reg_weight"), .targets = qv, .ntargets = 2};
    T_CHECK(tr_adalora_add(fm, &c) == 0, "%s", lp_geterr());
    st_file *init = st_open(json_string_value(json_object_get(ac, "init")));
    T_CHECK(init != NULL, "%s", lp_geterr());
    if (init) set_ada(fm, init, "");
    st_close(init);
    to_config cfg;
    t_json_adamw(fx, &cfg);
    to_optim *o = to_new(fm, &cfg);
    json_t *batches = json_object_get(fx, "batches"), *loss = json_object_get(fx, "loss");
    json_t *norms = json_object_get(fx, "grad_norm"), *budgets = json_object_get(fx, "budget");
    double worst = 0, worst_e = 0;
    for (size_t s = 0; s < json_array_size(batches); s++) {
        json_t *bt = json_array_get(batches, s);
        int B, T;
        int32_t *ids = t_json_ints(json_object_get(bt, "ids"), &B, &T);
        int32_t *mask = t_json_ints(json_object_get(bt, "mask"), &B, &T);
        int32_t *labels = t_json_ints(json_object_get(bt, "labels"), &B, &T);
        to_zero_grad(o);
        fw_batch in = {.B = B, .T = T, .ids = ids, .mask = mask, .labels = labels,
                       .flags = FW_KEEP | FW_TRAIN | (s % 2 ? FW_LOSS : 0)};
        fw_out out;
        T_CHECK(fw_forward(fm, &in, &out) == 0, "%s", lp_geterr());
        T_CHECK(bw_backward(fm, 1.0f) == 0, "%s", lp_geterr());
        to_info info;
        T_CHECK(to_step(o, &info) == 0, "%s", lp_geterr());
        double want = json_number_value(json_array_get(loss, s));
        T_CHECK(fabs(out.loss - want) <= 1e-4 * want, "step %zu: loss %.7g, peft %.7g", s, out.loss, want);
        if (fabs(out.loss - want) / want > worst) worst = fabs(out.loss - want) / want;
        T_NEAR(info.grad_norm, json_number_value(json_array_get(norms, s)), 1e-3);
        long step;
        int budget, ranks[4];
        T_EQ_INT(tr_adalora_status(fm, &step, &budget, ranks, NULL, 4), 4);
        T_EQ_INT(step, (long)s + 1);
        int want_b = (int)json_integer_value(json_array_get(budgets, s));
        int masks = (long)s > c.tinit && ((long)s % c.delta_t == 0 ||
                                          (long)s >= c.total_step - c.tfinal);
        if (masks) T_EQ_INT(budget, want_b);   /* the budget of this step's allocation */
        else T_CHECK((long)s <= c.tinit ? budget == -1 : budget >= want_b, "step %zu: budget %d", s, budget);
        check_e(fm, fx, s, &worst_e);
        free(ids), free(mask), free(labels);
    }
    printf("adalora curve: %zu steps, worst loss rel diff %.2e, worst E diff %.2e\n",
           json_array_size(batches), worst, worst_e);
    char buf[256];
    uint64_t tn, an;
    tr_report(fm, buf, sizeof buf, &tn, &an);
    json_t *tr = json_object_get(fx, "trainable");
    T_EQ_INT(tn, (uint64_t)json_integer_value(json_array_get(tr, 0)));
    T_EQ_INT(an, (uint64_t)json_integer_value(json_array_get(tr, 1)));
    /* saved: peft's rank_pattern (keys without the adapter name) and the kept ranks only */
    char dir[] = "/tmp/loupe_adalora_XXXXXX";
    T_OK(mkdtemp(dir) != NULL);
    T_CHECK(tr_adapter_save(fm, NULL, dir) == 0, "%s", lp_geterr());
    char p[600];
    snprintf(p, sizeof p, "%s/adapter_config.json", dir);
    json_t *saved = json_load_file(p, 0, &err), *rp = json_object_get(saved, "rank_pattern");
    T_CHECK(json_is_object(rp) && json_object_size(rp) == 4, "rank_pattern not saved");
    const char *key;
    json_t *val;
    json_object_foreach(json_object_get(fx, "rank_pattern"), key, val) {
        char k2[600];
        snprintf(k2, sizeof k2, "%.*s", (int)(strlen(key) - strlen(".default")), key);
        T_CHECK(json_equal(json_object_get(rp, k2), val), "rank_pattern[%s] differs from peft's", k2);
    }
    json_decref(saved);
    snprintf(p, sizeof p, "%s/adapter_model.safetensors", dir);
    st_file *sf = st_open(p);
    const st_tensor *z = sf ? st_find(sf, "base_model.model.model.layers.1.self_attn.q_proj.lora_A") : NULL;
    T_CHECK(z && z->shape[0] == 0 && z->shape[1] == 32, "the rank-0 module's lora_A is not (0, 32)");
    st_close(sf);
    snprintf(p, sizeof p, "rm -rf '%s'", dir);
    T_OK(system(p) == 0);
    to_free(o);
    fw_free(fm);
    mdl_free(m);
    json_decref(fx);
}

/* ---- adapters peft saved ----------------------------------------------------------------- */

static double logit_err(fx *x, const char *name) {
    fw_batch in = {.B = x->B, .T = x->T, .ids = x->ids, .mask = x->mask};
    fw_out out;
    T_CHECK(fw_forward(x->fm, &in, &out) == 0, "%s", lp_geterr());
    size_t n;
    float *ref = t_fx(x->f, name, ST_F32, &n);
    if (!ref) return 1e9;
    float *got = malloc(n * sizeof(float));
    fw_backend(x->fm)->to_host(got, out.logits, n * sizeof(float));
    double e = t_rel_max(got, ref, n);
    free(ref), free(got);
    return e;
}

static void test_peft_adapter(void) {
    fx x;
    if (fx_open(&x, "tests/fixtures/adalora/peft_llama_logits.safetensors",
                "tests/fixtures/models/llama") < 0)
        return fx_close(&x);
    T_CHECK(tr_adapter_load(x.fm, "tests/fixtures/adalora/peft_llama", NULL) == 0, "%s", lp_geterr());
    double e = logit_err(&x, "logits");
    T_CHECK(tr_adapter_merge(x.fm, "default", 1) == 0, "%s", lp_geterr());
    double em = logit_err(&x, "merged_logits");
    T_CHECK(tr_adapter_merge(x.fm, "default", 0) == 0, "%s", lp_geterr());
    double eu = logit_err(&x, "logits");
    T_CHECK(e <= 1e-5 && em <= 1e-5 && eu <= 1e-5, "logits %.3g, merged %.3g, unmerged %.3g", e, em, eu);
    printf("peft AdaLoRA adapter: logits %.2e, merged %.2e, unmerged %.2e\n", e, em, eu);
    /* its ranks were never cut: it trains on with the allocator (peft's schedule: total_step
       10, deltaT 1: the first step already cuts) */
    to_config oc;
    to_config_default(&oc, TO_ADAMW);
    to_optim *o = to_new(x.fm, &oc);
    fw_batch in = {.B = x.B, .T = x.T, .ids = x.ids, .mask = x.mask, .labels = x.ids,
                   .flags = FW_KEEP};
    fw_out out;
    for (int s2 = 0; s2 < 2; s2++) {
        to_zero_grad(o);
        T_CHECK(fw_forward(x.fm, &in, &out) == 0 && bw_backward(x.fm, 1.0f) == 0, "%s", lp_geterr());
        T_CHECK(to_step(o, NULL) == 0, "%s", lp_geterr());
    }
    long step;
    int budget, ranks[4];
    T_EQ_INT(tr_adalora_status(x.fm, &step, &budget, ranks, NULL, 4), 4);
    T_EQ_INT(step, 2);
    T_CHECK(budget >= 8 && budget < 16, "budget %d after two steps of a 10-step schedule", budget);
    to_free(o);
    static const char *const t[] = {"q_proj"};
    tr_lora_config lc = {.name = "l", .r = 2, .alpha = 2, .targets = t, .ntargets = 1};
    T_CHECK(tr_lora_add(x.fm, &lc) < 0, "LoRA beside AdaLoRA");
    T_CONTAINS(lp_geterr(), "an AdaLoRA adapter `default`");
    tr_adalora_config ac = config(t, 1);
    ac.name = "second";
    T_CHECK(tr_adalora_add(x.fm, &ac) < 0, "a second AdaLoRA adapter");
    T_CONTAINS(lp_geterr(), "one AdaLoRA adapter per model");
    fx_close(&x);
}

static void test_trained_adapter(void) {
    fx x;
    if (fx_open(&x, "tests/fixtures/adalora/peft_llama_trained_logits.safetensors",
                "tests/fixtures/models/llama") < 0)
        return fx_close(&x);
    const char *src = "tests/fixtures/adalora/peft_llama_trained";
    T_CHECK(tr_adapter_load(x.fm, src, NULL) == 0, "%s", lp_geterr());
    double e = logit_err(&x, "logits");
    T_CHECK(e <= 1e-5, "a resized adapter (rank_pattern): logits differ by %.3g", e);
    int ranks[8];
    T_EQ_INT(tr_adalora_status(x.fm, NULL, NULL, ranks, NULL, 8), 3);   /* the rank-0 module: none */
    T_CHECK(ranks[0] == 2 && ranks[1] == 2 && ranks[2] == 4, "ranks %d %d %d, peft's 2 2 4",
            ranks[0], ranks[1], ranks[2]);
    char dir[] = "/tmp/loupe_adalora_XXXXXX";
    T_OK(mkdtemp(dir) != NULL);
    T_CHECK(tr_adapter_save(x.fm, NULL, dir) == 0, "%s", lp_geterr());
    char a[600], b[600];
    snprintf(a, sizeof a, "%s/adapter_config.json", src);
    snprintf(b, sizeof b, "%s/adapter_config.json", dir);
    json_t *ja = json_load_file(a, 0, NULL), *jb = json_load_file(b, 0, NULL);
    T_CHECK(json_equal(json_object_get(ja, "rank_pattern"), json_object_get(jb, "rank_pattern")),
            "the rank_pattern did not survive a save");
    json_decref(ja), json_decref(jb);
    snprintf(a, sizeof a, "%s/adapter_model.safetensors", src);
    snprintf(b, sizeof b, "%s/adapter_model.safetensors", dir);
    st_file *fa = st_open(a), *fb = st_open(b);
    T_OK(fa && fb && fa->ntensors == fb->ntensors);
    for (size_t i = 0; fa && fb && i < fa->ntensors; i++) {
        const st_tensor *ta = &fa->tensors[i], *tb = st_find(fb, ta->name);
        T_CHECK(tb && tb->nbytes == ta->nbytes && !memcmp(ta->data, tb->data, ta->nbytes),
                "%s differs after a save", ta->name);
    }
    st_close(fa), st_close(fb);
    T_OK(tr_adapter_delete(x.fm, "default") == 0);
    T_CHECK(tr_adapter_load(x.fm, dir, NULL) == 0, "%s", lp_geterr());
    double e2 = logit_err(&x, "logits");
    T_CHECK(e2 <= 1e-5, "reloaded: logits differ by %.3g", e2);
    printf("peft AdaLoRA adapter with a rank_pattern: logits %.2e, after save + load %.2e\n", e, e2);
    snprintf(a, sizeof a, "rm -rf '%s'", dir);
    T_OK(system(a) == 0);
    fx_close(&x);
}

static void refuse(fw_model *fm, const tr_adalora_config *c, const char *msg) {
    T_CHECK(tr_adalora_add(fm, c) < 0, "accepted; wanted \"%s\"", msg);
    T_CONTAINS(lp_geterr(), msg);
}

/* PEFT's checks on AdaLoraConfig, with loupe's messages. */
static void test_config_errors(void) {
    mdl_model *m = mdl_load("tests/fixtures/models/llama");
    fw_model *fm = m ? fw_new(m, t_device()) : NULL;
    T_OK(fm != NULL);
    if (!fm) return;
    static const char *const qv[] = {"q_proj", "v_proj"};
    tr_adalora_config c = config(qv, 2);
    c.total_step = 0;
    refuse(fm, &c, "needs total_step=");
    c = config(qv, 2);
    c.tinit = 6, c.tfinal = 4;
    refuse(fm, &c, "leave no steps");
    c = config(qv, 2);
    c.target_r = 4;
    refuse(fm, &c, "target_r must be");
    c = config(qv, 2);
    c.delta_t = 0;
    refuse(fm, &c, "deltaT");
    c = config(qv, 2);
    c.orth = -1;
    refuse(fm, &c, "orth_reg_weight");
    c = config(qv, 2);
    c.beta1 = 1;
    refuse(fm, &c, "beta1");
    static const char *const none[] = {"nothing_here"};
    c = config(none, 1);
    refuse(fm, &c, "no module of this model matches");
    T_EQ_INT(tr_params_of(fm)->n, 0);   /* nothing was left behind */
    c = config(qv, 2);
    T_CHECK(tr_adalora_add(fm, &c) == 0, "%s", lp_geterr());
    T_EQ_INT(tr_params_of(fm)->n, 12);
    fw_free(fm);
    mdl_free(m);
}

int main(void) {
    printf("device %s\n", t_device()->name);
    T_RUN(test_grads);
    T_RUN(test_curve);
    T_RUN(test_peft_adapter);
    T_RUN(test_trained_adapter);
    T_RUN(test_config_errors);
    return t_done();
}
