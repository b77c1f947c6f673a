/* test_op_oom.c — an op that cannot get device scratch memory (docs/cuda.md, "Errors").
 *
 * On CUDA, attention, LoRA with dropout, cross-entropy, clip_grad_norm and the bf16 products
 * take temporary memory from the pool inside the op; when it is not there the op does nothing,
 * and be_backend.op_failed tells the model, which returns the error where the user's operation
 * ends. The guard device (be_guard) does the same for the same ops, and be_guard_fail_scratch(n)
 * makes the n-th of them fail. Here, on tests/fixtures/models/llama with a LoRA adapter with
 * dropout, every such op in turn fails in a forward, a backward, an optimizer step and a
 * generation: each returns -1 with "OP: out of GPU memory for … of scratch (… free); try a
 * smaller batch or sequence length", and afterwards the same model gives the very numbers
 * (losses, every gradient, grad norms, generated tokens) of a model that never failed. Then
 * the same through the commands, as a notebook shows them. */
#include "t.h"

#include "backend/guard/guard_backend.h"
#include "lang/interp.h"
#include "model/model.h"
#include "nn/backward.h"
#include "nn/forward.h"
#include "nn/generate.h"
#include "test_lang_harness.h"
#include "train/lora.h"
#include "train/optim.h"
#include "train/params.h"
#include "util/err.h"

#define SUGGESTION "try a smaller batch or sequence length"

static const be_backend *dev;

/* two rows, one padded; labels with an ignored position */
static int32_t ids[2 * 6] = {5, 9, 33, 120, 7, 11, 3, 8, 21, 40, 0, 0};
static int32_t mask[2 * 6] = {1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0};
static int32_t labels[2 * 6] = {5, 9, 33, 120, 7, 11, 3, 8, 21, 40, -100, -100};
static const fw_batch batch = {.B = 2, .T = 6, .ids = ids, .mask = mask, .labels = labels,
                               .flags = FW_KEEP | FW_TRAIN};

typedef struct run {
    mdl_model *m;
    fw_model *fm;
    to_optim *o;
} run;

static int open_run(run *r) {
    r->m = mdl_load("tests/fixtures/models/llama");
    T_CHECK(r->m != NULL, "%s", lp_geterr());
    if (!r->m) return -1;
    r->fm = fw_new(r->m, dev);
    T_OK(r->fm != NULL);
    const char *targets[] = {"q_proj", "v_proj"};
    tr_lora_config lc = {.r = 4, .alpha = 8, .dropout = 0.25, .init = "gaussian",
                         .targets = targets, .ntargets = 2, .seed = 7};
    T_CHECK(tr_lora_add(r->fm, &lc) == 0, "%s", lp_geterr());
    to_config cfg;
    to_config_default(&cfg, TO_ADAMW);
    cfg.lr = 1e-2;
    cfg.clip = 1.0;
    r->o = to_new(r->fm, &cfg);
    T_OK(r->o != NULL);
    return 0;
}

static void close_run(run *r) {
    to_free(r->o);
    fw_free(r->fm);
    mdl_free(r->m);
}

/* What one training step gives: the loss, every gradient (bits), the grad norm. */
typedef struct step_out {
    float loss;
    float *grads;   /* host copy, all params one after the other */
    size_t n;
    double norm;
} step_out;

static void grads_of(run *r, step_out *s) {
    tr_params *P = tr_params_of(r->fm);
    s->n = tr_params_count(P);
    s->grads = malloc(sizeof(float) * (s->n ? s->n : 1));
    size_t at = 0;
    for (size_t i = 0; i < P->n; i++) {
        dev->to_host(s->grads + at, P->p[i].grad, sizeof(float) * P->p[i].numel);
        at += P->p[i].numel;
    }
}

static int step(run *r, step_out *s) {
    to_zero_grad(r->o);
    fw_out out;
    if (fw_forward(r->fm, &batch, &out) < 0) return -1;
    s->loss = out.loss;
    if (bw_backward(r->fm, 1.0f) < 0) return -1;
    grads_of(r, s);
    to_info info;
    if (to_step(r->o, &info) < 0) return -1;
    s->norm = info.grad_norm;
    return 0;
}

static void same_step(const step_out *a, const step_out *b, const char *what) {
    T_CHECK(a->loss == b->loss, "%s: loss %.9g, never failed %.9g", what, a->loss, b->loss);
    T_CHECK(a->norm == b->norm, "%s: grad norm %.9g, never failed %.9g", what, a->norm, b->norm);
    T_CHECK(a->n == b->n && a->n > 0 && !memcmp(a->grads, b->grads, sizeof(float) * a->n),
            "%s: the gradients differ from the run that never failed", what);
}

static int generate(run *r, int32_t *out, int *n) {
    gn_params p;
    gn_params_default(&p);
    p.max_tokens = 5;
    p.temperature = 0.9;
    p.seed = 11;
    gn_result g;
    int rc = gn_generate(r->fm, ids, 4, &p, &g);
    *n = rc == 0 ? g.n : 0;
    if (rc == 0) memcpy(out, g.ids, sizeof(int32_t) * (size_t)g.n);
    gn_result_free(&g);
    return rc;
}

/* The error of an op that had no scratch: which op, and what to do. */
static void clear_error(const char *err, const char *what) {
    T_CHECK(strstr(err, ": out of GPU memory for ") && strstr(err, " of scratch (") &&
            strstr(err, SUGGESTION), "%s: %s", what, err);
    T_CHECK(strstr(err, "attention_forward") || strstr(err, "attention_backward") ||
            strstr(err, "lora_forward") || strstr(err, "lora_backward") ||
            strstr(err, "cross_entropy_forward") || strstr(err, "clip_grad_norm"),
            "%s: the op is not named: %s", what, err);
}

/* The reference: two steps and a generation on a model that never failed. */
static step_out ref[2];
static int32_t ref_gen[8];
static int ref_ngen;

static void test_reference(void) {
    run r;
    if (open_run(&r) < 0) return;
    for (int k = 0; k < 2; k++) T_CHECK(step(&r, &ref[k]) == 0, "%s", lp_geterr());
    T_CHECK(ref[1].loss < ref[0].loss, "the step learned nothing: %g → %g", ref[0].loss,
            ref[1].loss);
    T_CHECK(generate(&r, ref_gen, &ref_ngen) == 0, "%s", lp_geterr());
    T_EQ_INT(ref_ngen, 5);
    T_OK(dev->op_failed && dev->op_failed() == 0);
    close_run(&r);
}

/* Fail the k-th scratch op of `attempt` for k = 1, 2, … until it runs through; each failure a
 * clear error naming an op. How many failed comes back (ops named are counted in `seen`).
 * The attempt calls arm() where the operation under test starts. */
static int armed_k;
static void arm(void) { be_guard_fail_scratch(armed_k); }

static int every_op(run *r, int (*attempt)(run *), const char *what, char seen[][32], int *nseen) {
    int failed = 0;
    for (int k = 1; k < 64; k++) {
        armed_k = k;
        int rc = attempt(r);
        be_guard_fail_scratch(0);
        if (rc == 0) break;
        failed++;
        const char *err = lp_geterr();
        clear_error(err, what);
        char op[32] = "";
        sscanf(err, "%31[^:]", op);
        int known = 0;
        for (int i = 0; i < *nseen; i++) known |= !strcmp(seen[i], op);
        if (!known && *nseen < 16) snprintf(seen[(*nseen)++], 32, "%s", op);
        T_OK(dev->op_failed() == 0);   /* the caller was told: nothing left over */
    }
    return failed;
}

static int try_forward(run *r) {
    fw_out out;
    uint64_t draws = fw_train_draws(r->fm);
    arm();
    int rc = fw_forward(r->fm, &batch, &out);
    if (rc < 0) T_EQ_INT(fw_train_draws(r->fm), draws);   /* a failed forward draws no mask */
    return rc;
}

static int try_backward(run *r) {
    fw_out out;
    T_CHECK(fw_forward(r->fm, &batch, &out) == 0, "%s", lp_geterr());
    arm();
    int rc = bw_backward(r->fm, 1.0f);
    if (rc < 0) to_zero_grad(r->o);   /* half-added gradients: the caller zeroes (backward.h) */
    return rc;
}

static int try_step(run *r) {
    to_info info;
    long before = to_steps(r->o);
    arm();
    int rc = to_step(r->o, &info);
    if (rc < 0) {
        T_EQ_INT(to_steps(r->o), before);
        T_CONTAINS(lp_geterr(), "nothing was updated");
    }
    return rc;
}

static int try_generate(run *r) {
    int32_t g[8];
    int n;
    arm();
    return generate(r, g, &n);
}

/* Every kind of failure, one after the other, on one model; then its numbers. */
static void test_fail_then_same_numbers(void) {
    run r;
    if (open_run(&r) < 0) return;
    char seen[16][32];
    int nseen = 0;
    uint64_t draws = fw_train_draws(r.fm);
    /* forward: per layer LoRA q and v (dropout) and attention, then the loss */
    int f = every_op(&r, try_forward, "forward", seen, &nseen);
    T_CHECK(f == 2 * 3 + 1, "forward: %d ops failed, expected 7", f);
    /* generation: the prompt's and each new token's attention */
    int g = every_op(&r, try_generate, "generate", seen, &nseen);
    T_CHECK(g >= 2 * 5, "generate: %d ops failed", g);
    /* backward: attention and the LoRA products of each layer (after a good forward) */
    to_zero_grad(r.o);
    int b = every_op(&r, try_backward, "backward", seen, &nseen);
    T_CHECK(b == 2 * 3, "backward: %d ops failed, expected 6", b);
    /* the step: clip_grad_norm (the gradients are there from the backward that ran) */
    armed_k = 1;
    T_OK(try_step(&r) == -1);
    be_guard_fail_scratch(0);
    clear_error(lp_geterr(), "step");
    T_CONTAINS(lp_geterr(), "clip_grad_norm");
    T_OK(dev->op_failed() == 0);
    const char *want[] = {"attention_forward", "lora_forward", "cross_entropy_forward",
                          "attention_backward", "lora_backward"};
    for (size_t i = 0; i < sizeof want / sizeof *want; i++) {
        int found = 0;
        for (int j = 0; j < nseen; j++) found |= !strcmp(seen[j], want[i]);
        T_CHECK(found, "no failure of %s was seen", want[i]);
    }
    printf("failed without scratch: forward %d ops, generate %d, backward %d, step 1 (ops:", f,
           g, b);
    for (int j = 0; j < nseen; j++) printf(" %s", seen[j]);
    printf(")\n");
    /* nothing changed: the same two steps and generation as the model that never failed
       (no update was made, the optimizer is at step 0). The forwards that worked drew dropout
       masks (the failed ones did not: try_forward): back to the reference's first draw. */
    T_EQ_INT(to_steps(r.o), 0);
    fw_set_train_draws(r.fm, draws);
    step_out s[2];
    for (int k = 0; k < 2; k++) {
        T_CHECK(step(&r, &s[k]) == 0, "%s", lp_geterr());
        same_step(&s[k], &ref[k], k ? "second step" : "first step");
        free(s[k].grads);
    }
    int32_t gen[8];
    int ngen = 0;
    T_CHECK(generate(&r, gen, &ngen) == 0, "%s", lp_geterr());
    T_CHECK(ngen == ref_ngen && !memcmp(gen, ref_gen, sizeof(int32_t) * (size_t)ngen),
            "generation differs from the run that never failed");
    close_run(&r);
}

/* Through the limit instead of the knob: a device too full for one op's scratch (but not for
 * the forward's activations) gives the same clear error. */
static void test_limit(void) {
    run r;
    if (open_run(&r) < 0) return;
    fw_out out;
    T_CHECK(fw_forward(r.fm, &batch, &out) == 0, "%s", lp_geterr());   /* arena made */
    be_guard_set_limit(be_guard_in_use());
    int rc = fw_forward(r.fm, &batch, &out);
    be_guard_set_limit(0);
    T_EQ_INT(rc, -1);
    clear_error(lp_geterr(), "forward at the limit");
    T_CONTAINS(lp_geterr(), "(0 bytes free)");
    T_OK(bw_backward(r.fm, 1.0f) == -1);   /* the failed forward kept nothing */
    T_CONTAINS(lp_geterr(), "run forward");
    close_run(&r);
}

/* The commands: the notebook shows the error, the kernel and the model carry on. Each cell
 * fails at every scratch op in turn until it runs through; a session that never failed runs
 * each cell once, and the two must then give the same loss and the same generated tokens. */
static const char *const setup =
    "m = load \"tests/fixtures/forward/gpt2-bytes\" device=\"guard\"\n"
    "lora m r=4 alpha=8 dropout=0.25 init=\"gaussian\" seed=7 target=[\"c_attn\"]\n"
    "opt = adamw m lr=1e-2 clip=1.0\n"
    "data = dataset \"data/corpus/finetune/sea_qa_prompt_response_train.jsonl\" model=m "
    "prompt=\"prompt\" response=\"response\" max_len=32\n"
    "b = next data size=2";
static const char *const numbers = "(forward m b).loss\ngenerate m [5, 9, 33] max_tokens=4";

/* Run `cell` failing the k-th scratch op for k = 1, 2, … until it works; every failure must be
 * a clear error (and `also`, when given). The number of failures, with `op` among them. */
static int cell_fails(lp_interp *it, const char *cell, const char *op, const char *also) {
    int failed = 0, named = 0, rc = 1;
    for (int k = 1; k < 64 && rc; k++) {
        be_guard_fail_scratch(k);
        const char *out = run_cell(it, cell, &rc);
        be_guard_fail_scratch(0);
        if (!rc) break;
        failed++;
        named |= strstr(out, op) != NULL;
        T_CHECK(strstr(out, "ValueError") && strstr(out, ": out of GPU memory for ") &&
                strstr(out, SUGGESTION) && (!also || strstr(out, also)), "%s (k = %d): %s",
                cell, k, out);
    }
    T_CHECK(rc == 0, "%s never ran through", cell);
    T_CHECK(failed > 0 && named, "%s: %d failures, none of %s", cell, failed, op);
    return failed;
}

static void test_commands(void) {
    lp_interp *ok = lp_interp_new(), *it = lp_interp_new();
    int rc;
    run_cell(ok, setup, &rc);
    T_EQ_INT(rc, 0);
    run_cell(it, setup, &rc);
    T_EQ_INT(rc, 0);
    struct { const char *cell, *op, *also; } cases[] = {
        {"o = forward m b", "cross_entropy_forward", NULL},
        {"generate m [5, 9, 33] max_tokens=4", "attention_forward", NULL},
        {"o = forward m b\nbackward o", "attention_backward", NULL},
        {"step opt", "clip_grad_norm", "step 1: nothing was updated: "},
        {"zero_grad opt\no = forward m b\nbackward o\nstep opt\nzero_grad opt", "clip_grad_norm",
         NULL},
    };
    int n[5];
    for (int i = 0; i < 5; i++) {
        n[i] = cell_fails(it, cases[i].cell, cases[i].op, cases[i].also);
        run_cell(ok, cases[i].cell, &rc);
        T_CHECK(rc == 0, "%s", cases[i].cell);
    }
    printf("commands failed without scratch: forward %d times, generate %d, forward + backward "
           "%d, step %d, a whole step %d\n", n[0], n[1], n[2], n[3], n[4]);
    /* a backward that fails says the gradients were reset (they may be half added) */
    run_cell(it, "o = forward m b", &rc);
    be_guard_fail_scratch(1);
    const char *out = run_cell(it, "backward o", &rc);
    be_guard_fail_scratch(0);
    T_CHECK(rc != 0 && strstr(out, "the gradients were set to zero: attention_backward: "),
            "%s", out);
    char want[512];
    snprintf(want, sizeof want, "%s", run_cell(ok, numbers, &rc));
    T_CHECK(rc == 0, "%s", want);
    T_STR(run_cell(it, numbers, &rc), want);   /* as the session that never failed */
    T_EQ_INT(rc, 0);
    printf("both sessions then: %s", want);
    T_STR(run_cell(it, "opt.steps", &rc), "2\n");
    /* `train`: every failure stops the run before its update; then it trains */
    int t = cell_fails(it, "train m data steps=1 batch=2", "lora_backward", NULL);
    printf("train failed without scratch %d times\n", t);
    lp_interp_free(ok);
    lp_interp_free(it);
}

int main(void) {
    setvbuf(stdout, NULL, _IOLBF, 0);
    dev = be_guard_f32();
    if (!dev) {
        printf("NOT RUN: %s\n", lp_geterr());
        return 77;
    }
    T_OK(be_cpu()->op_failed == NULL && be_ref()->op_failed == NULL && dev->op_failed);
    T_RUN(test_reference);
    T_RUN(test_fail_then_same_numbers);
    T_RUN(test_limit);
    T_RUN(test_commands);
    for (int k = 0; k < 2; k++) free(ref[k].grads);
    return t_done();
}
