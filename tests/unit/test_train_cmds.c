/* test_train_cmds.c — `dataset`, `next`, `adamw`, `sgd`, `step`, `zero_grad`, `train`,
 * `evaluate` through the interpreter, as notebook cells run them, on the tiny GPT-2 with a
 * one-token-per-byte tokenizer and the committed sea-words data. Numbers are checked against
 * torch elsewhere (test_train_loop.c, test_train_optim.c); here: that the cells do what they
 * say, the live output (one plot and one progress display, updated in place), interrupts,
 * continuing runs, and the errors. */
#include "t.h"
#include "t_device.h"
#include "commands/model.h"

#include <time.h>
#include <unistd.h>
#include "test_lang_harness.h"
#include "lang/interp.h"
#include "lang/registry.h"

#define MODEL "m = load \"tests/fixtures/forward/gpt2-bytes\"\n"
#define DATA "data = dataset \"data/corpus/finetune/sea_qa_prompt_response_train.jsonl\" model=m " \
             "prompt=\"prompt\" response=\"response\" max_len=48 eval=16\n"

static lp_interp *interp(void) {
    lp_interp *it = lp_interp_new();
    int rc;
    run_cell(it, MODEL DATA, &rc);
    T_EQ_INT(rc, 0);
    return it;
}

static void test_dataset_next_forward(void) {
    lp_interp *it = interp();
    int rc;
    const char *out = run_cell(it, "data", &rc);
    T_CONTAINS(out, "dataset sea_qa_prompt_response_train.jsonl · train split · 234 records");
    T_CONTAINS(out, "eval split: 16 records (.eval)");
    T_STR(run_cell(it, "data.eval.length", &rc), "16\n");
    out = run_cell(it, "b = next data size=3\nb", &rc);
    T_EQ_INT(rc, 0);
    T_CONTAINS(out, "batch 3 × ");
    T_CONTAINS(out, "row  ids");
    T_CONTAINS(out, "-100×");          /* the prompt is masked */
    T_STR(run_cell(it, "b.shape[0]", &rc), "3\n");
    T_STR(run_cell(it, "b.labels[0][0]", &rc), "-100\n");
    out = run_cell(it, "out = forward m b\nout.count == b.targets", &rc);
    T_EQ_INT(rc, 0);
    T_STR(out, "true\n");
    out = run_cell(it, "data[0].text", &rc);
    T_CONTAINS(out, "Q: ");
    out = run_cell(it, "next data size=0", &rc);
    T_CONTAINS(out, "size must be between 1 and 65536");
    out = run_cell(it, "d2 = dataset \"data/corpus/finetune/sea_qa_train.jsonl\" field=\"body\"", &rc);
    T_CONTAINS(out, "no text field `body` (fields: text)");
    out = run_cell(it, "d3 = dataset \"data/corpus/finetune/sea_qa_train.jsonl\"\nnext d3", &rc);
    T_CONTAINS(out, "not tokenized yet");
    lp_interp_free(it);
}

/* The number on the last line of a cell's output. */
static double last_number(const char *out) {
    const char *last = out;
    for (const char *p = out; *p; p++)
        if (*p == '\n' && p[1]) last = p + 1;
    return strtod(last, NULL);
}

/* IA3 cells: trainable line, a few steps lower the loss, merge keeps the model's output (to
 * bf16 rounding on a device storing bf16 weights), save_adapter / load_adapter. */
static void test_ia3(void) {
    lp_interp *it = interp();
    int rc;
    char dir[] = "/tmp/loupe_ia3_XXXXXX", cell[512];   /* its own: tests run side by side */
    T_OK(mkdtemp(dir) != NULL);
    const char *out = run_cell(it, "ia3 m", &rc);
    T_CHECK(rc == 0, "cell failed: %s", out);
    T_CONTAINS(out, "trainable params: 448 || all params: 36,160 || trainable%: 1.2389");
    out = run_cell(it, "b = next data size=4\nl0 = (forward m b).loss\nopt = adamw m lr=0.1\n"
                       "repeat 4 {\n out = forward m b\n backward out\n step opt\n zero_grad opt\n}\n"
                       "l1 = (forward m b).loss\nl1 < l0", &rc);
    T_CHECK(rc == 0, "cell failed: %s", out);
    T_CONTAINS(out, "step 4 · lr 0.1 · grad norm");
    T_CONTAINS(out, "true");
    snprintf(cell, sizeof cell, "save_adapter m \"%s\"\n"
             "adapter m \"default\" action=\"merge\"\n(forward m b).loss - l1", dir);
    out = run_cell(it, cell, &rc);
    T_CHECK(rc == 0, "cell failed: %s", out);
    double d = last_number(out);
    T_CHECK(fabs(d) < 2e-3, "merged IA3 changed the loss by %g", d);
    /* unmerged (on bf16 weights not back to the same bits, as PEFT warns), then the saved
       adapter in place of this one: the same loss */
    snprintf(cell, sizeof cell, "adapter m \"default\" action=\"unmerge\"\n"
             "l2 = (forward m b).loss\nadapter m \"default\" action=\"delete\"\n"
             "load_adapter m \"%s\"\n(forward m b).loss - l2", dir);
    out = run_cell(it, cell, &rc);
    T_CHECK(rc == 0, "cell failed: %s", out);
    T_CONTAINS(out, "trainable params: 448");
    d = last_number(out);
    T_CHECK(fabs(d) < 1e-5, "the reloaded IA3 adapter changed the loss by %g", d);
    snprintf(cell, sizeof cell, "rm -rf %s", dir);
    T_OK(system(cell) == 0);
    lp_interp_free(it);
}

/* AdaLoRA cells: trainable line (peft's for gpt2's c_attn), a whole allocator schedule in
 * four steps lowers the loss and leaves the target budget, the model moved to another device
 * and back keeps its loss, merge keeps the output, save_adapter / load_adapter the same loss. */
static void test_adalora(void) {
    lp_interp *it = interp();
    int rc;
    char dir[] = "/tmp/loupe_adalora_XXXXXX", cell[512];
    T_OK(mkdtemp(dir) != NULL);
    const char *out = run_cell(it, "adalora m init_r=4 target_r=2 total_step=3 tinit=0 tfinal=1", &rc);
    T_CHECK(rc == 0, "cell failed: %s", out);
    T_CONTAINS(out, "rank budget: 2 modules × 4 = 8, falling to 2 × 2 = 4 between steps 0 and 2");
    out = run_cell(it, "b = next data size=4\nl0 = (forward m b).loss\nopt = adamw m lr=0.05\n"
                       "repeat 4 {\n out = forward m b\n backward out\n step opt\n zero_grad opt\n}\n"
                       "l1 = (forward m b).loss\nprint l1 < l0\ntrainable m", &rc);
    T_CHECK(rc == 0, "cell failed: %s", out);
    T_CONTAINS(out, "true");
    T_CONTAINS(out, "ranks kept after 4 steps: 4 (budget 4)");
    snprintf(cell, sizeof cell, "to m \"%s\"\nd1 = (forward m b).loss - l1\nto m \"%s\"\n"
             "print d1\n(forward m b).loss - l1", t_on_cpu() ? "guard" : "cpu", t_device_name());
    out = run_cell(it, cell, &rc);   /* away and back where it was: the same loss */
    T_CHECK(rc == 0, "cell failed: %s", out);
    T_CHECK(fabs(last_number(out)) < 1e-5, "moved and back: the loss changed: %s", out);
    snprintf(cell, sizeof cell, "save_adapter m \"%s\"\n"
             "adapter m \"default\" action=\"merge\"\n(forward m b).loss - l1", dir);
    out = run_cell(it, cell, &rc);
    T_CHECK(rc == 0, "cell failed: %s", out);
    /* merged: the same output, and the regulariser still added (PEFT's, on every forward) */
    double d = last_number(out);
    T_CHECK(fabs(d) < 1e-4, "merged AdaLoRA: the loss moved by %g", d);
    /* reloaded: the kept ranks only (its regulariser is over the smaller matrices, as PEFT's
       after a reload), the same logits */
    out = run_cell(it, "adapter m \"default\" action=\"unmerge\"\nprint (forward m [[5, 6, 7]]).logits", &rc);
    T_CHECK(rc == 0, "cell failed: %s", out);
    char *before = strdup(out);
    snprintf(cell, sizeof cell, "adapter m \"default\" action=\"delete\"\nload_adapter m \"%s\"\n"
             "trainable m\nprint (forward m [[5, 6, 7]]).logits", dir);
    out = run_cell(it, cell, &rc);
    T_CHECK(rc == 0, "cell failed: %s", out);
    T_CONTAINS(out, "ranks kept after 0 steps: 4");   /* the 4 kept of 8, as saved */
    const char *nl = strrchr(before, '[') ? strchr(before, '[') : before;
    T_CONTAINS(out, nl);
    out = run_cell(it, "train m data steps=1 batch=2", &rc);   /* a loaded one keeps its ranks */
    T_CHECK(rc == 0, "cell failed: %s", out);
    T_CONTAINS(out, "AdaLoRA ranks 4 (as loaded)");
    free(before);
    snprintf(cell, sizeof cell, "rm -rf %s", dir);
    T_OK(system(cell) == 0);
    lp_interp_free(it);
}

static void test_native_loop(void) {
    lp_interp *it = interp();
    int rc;
    run_cell(it, "lora m r=4 alpha=8 target=[\"c_attn\"]", &rc);
    T_EQ_INT(rc, 0);
    const char *out = run_cell(it, "opt = adamw m lr=1e-2 schedule=\"linear\" warmup=1 steps=4\nopt", &rc);
    T_CONTAINS(out, "AdamW · lr 0.01 · betas (0.9, 0.999) · eps 1e-08 · weight_decay 0.01");
    T_CONTAINS(out, "schedule linear · warmup 1 · 4 steps");
    out = run_cell(it, "b = next data size=4\nout = forward m b\nbackward out\nstep opt\nzero_grad opt", &rc);
    T_EQ_INT(rc, 0);
    T_CONTAINS(out, "step 1 · lr 0 · grad norm ");   /* warmup: the first step at lr 0 */
    out = run_cell(it, "l0 = (forward m b).loss\nrepeat 3 {\n out = forward m b\n backward out\n step opt\n zero_grad opt\n}\n"
                       "(forward m b).loss < l0", &rc);
    T_CONTAINS(out, "step 4 · lr 0.00333 · grad norm");
    T_CONTAINS(out, "true");
    T_STR(run_cell(it, "opt.steps", &rc), "4\n");
    out = run_cell(it, "adamw m schedule=\"cosine\"", &rc);
    T_CONTAINS(out, "a cosine schedule needs the run's length: steps=N");
    out = run_cell(it, "adamw m betas=[0.9]", &rc);
    T_CONTAINS(out, "betas is a list of two numbers");
    out = run_cell(it, "s = sgd m lr=0.1\nout = forward m b\nbackward out\nstep s\ns", &rc);
    T_CONTAINS(out, "SGD · lr 0.1 · momentum 0.9");
    lp_interp_free(it);
}

static void test_train_live(void) {
    lp_interp *it = interp();
    int rc;
    const char *out = run_cell(it, "train m data steps=2", &rc);
    T_CONTAINS(out, "nothing to train");
    run_cell(it, "lora m r=4 alpha=8 target=[\"c_attn\"]", &rc);
    rec r;
    lp_sink sink;
    rec_init(&r, it, &sink);
    lp_outcome o;
    const char *code = "train m data steps=6 batch=4 lr=1e-2 eval=data.eval eval_every=3";
    rc = lp_execute(it, code, strlen(code), &sink, &o);
    T_EQ_INT(rc, 0);
    T_EQ_INT(r.displays, 2);                  /* one plot, one progress line */
    T_OK(r.updates >= 2);                     /* the final state at least */
    T_CONTAINS(sb_str(&r.text), "trained 6/6 steps · loss ");
    T_CONTAINS(sb_str(&r.text), "eval loss ");
    lp_outcome_free(&o);
    rec_free(&r);
    /* redrawn at most 4 times a second: 150 quick steps send far fewer than 150 updates */
    rec_init(&r, it, &sink);
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    code = "train m data steps=150 batch=2 lr=1e-3";
    rc = lp_execute(it, code, strlen(code), &sink, &o);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    double el = (double)(t1.tv_sec - t0.tv_sec) + (t1.tv_nsec - t0.tv_nsec) * 1e-9;
    T_EQ_INT(rc, 0);
    T_EQ_INT(r.displays, 2);
    T_CHECK(r.updates <= 2 * (int)(4 * el + 2), "%d updates in %.2f s", r.updates, el);
    lp_outcome_free(&o);
    rec_free(&r);
    /* an interrupt stops at a step boundary; the next train continues the curve */
    rec_init(&r, it, &sink);
    r.interrupt_after_streams = 2;
    code = "train m data steps=10 batch=4 lr=1e-2 log_every=1";
    rc = lp_execute(it, code, strlen(code), &sink, &o);
    T_OK(rc != 0);
    T_CONTAINS(sb_str(&r.text), "step 158 · loss");
    T_CONTAINS(sb_str(&r.text), "interrupted after 158/166 steps");
    lp_outcome_free(&o);
    rec_free(&r);
    out = run_cell(it, "train m data steps=2 batch=4 lr=1e-2", &rc);
    T_EQ_INT(rc, 0);
    T_CONTAINS(out, "step 159/160");
    T_CONTAINS(out, "trained 160/160 steps");
    /* epochs= rounds up to whole steps (234 examples / 64 per step → 4); out= and save_every= */
    char dir[] = "/tmp/loupe_tsave_XXXXXX", cmd[512];
    T_OK(mkdtemp(dir) != NULL);
    snprintf(cmd, sizeof cmd, "train m data epochs=1 batch=32 accumulate=2 lr=1e-2 save_every=2 out=\"%s/run\" restart=true", dir);
    out = run_cell(it, cmd, &rc);
    T_CHECK(rc == 0, "%s", out);
    T_CONTAINS(out, "trained 4/4 steps");
    char path[600];
    snprintf(path, sizeof path, "%s/run/checkpoint-2/adapter_model.safetensors", dir);
    T_OK(access(path, R_OK) == 0);
    snprintf(path, sizeof path, "%s/run/adapter_config.json", dir);
    T_OK(access(path, R_OK) == 0);
    out = run_cell(it, "evaluate m data.eval", &rc);
    T_CONTAINS(out, "\"loss\": ");
    T_CONTAINS(out, "\"perplexity\": ");
    /* a loss that blows up stops with the step named */
    out = run_cell(it, "train m data steps=5 batch=4 lr=1e30 clip=0 restart=true", &rc);
    T_OK(rc != 0);
    T_CONTAINS(out, "FloatingPointError");
    T_CONTAINS(out, "at step ");
    out = run_cell(it, "train m data batch=4", &rc);
    T_CONTAINS(out, "give the run's length as steps=N or epochs=N");
    out = run_cell(it, "train m data steps=2 schedule=\"step\"", &rc);
    T_CONTAINS(out, "schedule is \"constant\", \"linear\" or \"cosine\"");
    lp_interp_free(it);
}

/* accumulate=2 of batch 2 is one batch of 4: every target weighs the same (the micro-batches
 * are weighted by their target counts), so the two runs end with the same weights (on a
 * config without GPT-2's dropout, which `train` draws per micro-batch) */
static void test_accumulate(void) {
    lp_interp *it = lp_interp_new();
    int rc;
    const char *out = run_cell(it,
        "m1 = load \"tests/fixtures/forward/gpt2-bytes-nodrop\"\n"
        "m2 = load \"tests/fixtures/forward/gpt2-bytes-nodrop\"\n"
        "f = \"data/corpus/finetune/sea_qa_prompt_response_train.jsonl\"\n"
        "d1 = dataset f model=m1 prompt=\"prompt\" response=\"response\" max_len=48 shuffle=false\n"
        "d2 = dataset f model=m2 prompt=\"prompt\" response=\"response\" max_len=48 shuffle=false\n"
        "lora m1 r=4 alpha=8 target=[\"c_attn\"] init=\"gaussian\"\n"
        "lora m2 r=4 alpha=8 target=[\"c_attn\"] init=\"gaussian\"\n"
        "train m1 d1 steps=2 batch=4 lr=1e-2 clip=0\n"
        "train m2 d2 steps=2 batch=2 accumulate=2 lr=1e-2 clip=0 gradient_checkpointing=true\n"
        "m2\ne1 = (evaluate m1 d1)[\"loss\"]\ne2 = (evaluate m2 d2)[\"loss\"]\n"
        "print e1 e2", &rc);
    T_CHECK(rc == 0, "%s", out);
    /* m2 also trained with gradient checkpointing (train's option switches it on, and it
       stays on, as the Trainer's): the same run */
    T_CONTAINS(out, "gradient checkpointing on");
    double a = 0, b = 0;
    const char *last = strrchr(out, '\n');
    while (last > out && last[-1] != '\n') last--;
    T_OK(sscanf(last, "%lf %lf", &a, &b) == 2);
    T_NEAR(a, b, 1e-6);
    T_OK(a > 5.0);
    lp_interp_free(it);
}

/* a classifier: the tiny BERT (5 classes) with the byte tokenizer beside it, a .csv with a
 * label column; evaluate reports accuracy, and training the classifier head raises it */
static void test_classifier(void) {
    char dir[] = "/tmp/loupe_tc_XXXXXX", path[256], cwd[1024];
    if (!mkdtemp(dir) || !getcwd(cwd, sizeof cwd)) return;
    const char *links[][2] = {{"tests/fixtures/models/bert/config.json", "config.json"},
                              {"tests/fixtures/models/bert/model.safetensors", "model.safetensors"},
                              {"tests/fixtures/forward/gpt2-bytes/tokenizer.json", "tokenizer.json"}};
    for (int i = 0; i < 3; i++) {
        char src[1300];
        snprintf(src, sizeof src, "%s/%s", cwd, links[i][0]);
        snprintf(path, sizeof path, "%s/%s", dir, links[i][1]);
        T_OK(symlink(src, path) == 0);
    }
    snprintf(path, sizeof path, "%s/reviews.csv", dir);
    FILE *f = fopen(path, "w");
    fputs("text,stars\n", f);
    for (int i = 0; i < 20; i++) fprintf(f, "\"%s review %d\",%d\n", i % 2 ? "good" : "bad", i, i % 2 ? 4 : 0);
    fclose(f);
    lp_interp *it = lp_interp_new();
    char code[1024];
    snprintf(code, sizeof code,
             "c = load \"%s\"\nd = dataset \"%s\" model=c label=\"stars\" field=\"text\"\n"
             "b = next d size=3\nb.labels.length\n"
             "a0 = (evaluate c d)[\"accuracy\"]\nunfreeze c \"classifier.*\"\n"
             "train c d steps=15 batch=8 lr=5e-2 schedule=\"constant\"\n"
             "a1 = (evaluate c d)[\"accuracy\"]\nprint a0 a1 a1 > a0", dir, path);
    int rc;
    const char *out = run_cell(it, code, &rc);
    T_CHECK(rc == 0, "%s", out);
    T_CONTAINS(out, "3\n");
    T_CONTAINS(out, " true\n");
    T_CONTAINS(out, "1.0 true");   /* two easy classes: the head learns them */
    lp_interp_free(it);
}

/* an allocation failure anywhere in dataset / next / adamw / train / evaluate is an error,
 * never a crash or a leak (run under ASan: build-asan) */
/* Run `cell` with the k-th host allocation failing, for k = 1, 2, … until a run goes through
 * without the failure having fired: every failure must leave the interpreter usable. */
static void oom_cell(lp_interp *it, const char *cell, int k) {
    /* a success after a failure is a tolerated one: a live redraw skipped, a table shown as
     * text */
    int failures = 0, tolerated = 0, done = 0, rc;
    for (long n = 1; n < 100000 && !done; n++) {
        rec r;
        lp_sink sink;
        rec_init(&r, it, &sink);
        lp_outcome o;
        lp_mem_fail_after(n);
        rc = lp_execute(it, cell, strlen(cell), &sink, &o);
        if (!rc) {   /* probe the countdown: still armed means it never fired */
            long left = 0;
            void *p;
            while (left < 1000000 && (p = lp_malloc(1))) lp_free(p), left++;
            if (left < 1000000) done = 1;
            else tolerated++;
        } else {
            failures++;
        }
        lp_mem_fail_after(0);
        if (rc && getenv("OOM_DEBUG")) {
            size_t i;
            json_t *l;
            fprintf(stderr, "n=%ld:", n);
            json_array_foreach(o.traceback, i, l) if (i == 0) fprintf(stderr, " %s\n", json_string_value(l));
        }
        lp_outcome_free(&o);
        rec_free(&r);
    }
    printf("oom cell %d: %d failures, %d tolerated\n", k, failures, tolerated);
    T_CHECK(done, "cell %d never ran through", k);
    T_CHECK(failures > 100, "cell %d: %d failures", k, failures);
}

static void test_oom(void) {
    char dir[] = "/tmp/loupe_toom_XXXXXX", path[256];
    if (!mkdtemp(dir)) return;
    snprintf(path, sizeof path, "%s/d.jsonl", dir);
    FILE *f = fopen(path, "w");
    for (int i = 0; i < 6; i++) fprintf(f, "{\"p\": \"Q%d?\", \"r\": \" A%d.\"}\n", i, i);
    fclose(f);
    lp_interp *it = lp_interp_new();
    int rc;
    run_cell(it, MODEL "lora m r=2 alpha=4 target=[\"c_attn\"]", &rc);
    T_EQ_INT(rc, 0);
    /* one cell that reads and tokenizes, one that uses the dataset */
    char cell[1024];
    snprintf(cell, sizeof cell, "d = dataset \"%s\" model=m prompt=\"p\" response=\"r\" eval=2\nd", path);
    oom_cell(it, cell, 0);
    oom_cell(it, "b = next d size=2\nb\no = adamw m clip=1.0\nx = forward m b\nbackward x\nstep o\n"
                 "zero_grad o\ntrain m d steps=2 batch=2 eval=d.eval eval_every=1\n"
                 "evaluate m d.eval", 1);
    lp_interp_free(it);
    /* IA3 and 4-bit weights, in an interpreter of their own (two models with adapters): loading,
     * quantizing, attaching, a backward and a merge each, and a save */
    it = lp_interp_new();
    snprintf(cell, sizeof cell,
             "q = load \"tests/fixtures/models/llama-nf4\" quantize=\"nf4\" double_quant=true\n"
             "lora q r=2\n"
             "backward (forward q [[5, 6, 7]])\nadapter q \"default\" action=\"merge\"\n"
             "g = load \"tests/fixtures/forward/gpt2-bytes\"\nia3 g\n"
             "backward (forward g [[5, 6, 7]])\nsave_adapter g \"%s/ia3\"\n"
             "adapter g \"default\" action=\"merge\"", dir);
    oom_cell(it, cell, 2);
    lp_interp_free(it);
    /* a Conv1D model in 4 bits (stored transposed): loading, a backward, a merge; a
     * pre-quantized checkpoint of one: loading, reading, a forward */
    it = lp_interp_new();
    oom_cell(it, "c = load \"tests/fixtures/models/gpt2-nf4\" quantize=\"fp4\"\nlora c r=2\n"
                 "backward (forward c [[5, 6, 7]])\nadapter c \"default\" action=\"merge\"\n"
                 "stats c.transformer.h[0].attn.c_attn.weight\n"
                 "b = load \"tests/fixtures/models/gpt2-nf4-bnb\"\n"
                 "stats b.transformer.h[0].mlp.c_fc.weight\nx = forward b [[5, 6, 7]]", 4);
    lp_interp_free(it);
    /* AdaLoRA: attaching, steps through its whole schedule (the allocator's host copies), a
     * save of the resized adapter, loading it back */
    it = lp_interp_new();
    snprintf(cell, sizeof cell,
             "a = load \"tests/fixtures/models/llama\"\nadalora a init_r=2 target_r=1 total_step=2\n"
             "o = adamw a\nrepeat 3 {\n backward (forward a [[5, 6, 7]])\n step o\n zero_grad o\n}\n"
             "save_adapter a \"%s/ada\"\nadapter a \"default\" action=\"delete\"\n"
             "load_adapter a \"%s/ada\"", dir, dir);
    oom_cell(it, cell, 3);
    lp_interp_free(it);
    char code[300];
    snprintf(code, sizeof code, "rm -rf %s", dir);
    T_CHECK(system(code) == 0, "cleanup");
}

/* stats and show of a weight that training changed read the trained values (what `save`
 * writes), not the checkpoint's */
static void test_stats_trained(void) {
    lp_interp *it = interp();
    int rc;
    char dir[] = "/tmp/loupe_stats_trained_XXXXXX";
    T_CHECK(mkdtemp(dir) != NULL, "mkdtemp");
    char code[512];
    const char *out = run_cell(it, "before = show m.ln_f.weight[0:1, 0:4]\nbefore", &rc);
    T_EQ_INT(rc, 0);
    char *before = strdup(out);
    run_cell(it, "unfreeze m \"transformer.ln_f\"\nb = next data size=4\ns = sgd m lr=0.5\n"
                 "x = forward m b\nbackward x\nstep s", &rc);
    T_EQ_INT(rc, 0);
    out = run_cell(it, "show m.ln_f.weight[0:1, 0:4]", &rc);
    T_EQ_INT(rc, 0);
    T_CHECK(strcmp(out, before) != 0, "show still reads the checkpoint after a step:\n%s", out);
    char *after = strdup(out);
    snprintf(code, sizeof code, "save m \"%s/ck\" dtype=\"f32\"\nm2 = load \"%s/ck\"\n"
             "show m2.ln_f.weight[0:1, 0:4]", dir, dir);
    out = run_cell(it, code, &rc);
    T_EQ_INT(rc, 0);
    T_CONTAINS(out, strchr(after, '\n') + 1);   /* the same rows as the saved checkpoint's */
    const char *s1 = strdup(run_cell(it, "stats m.ln_f.weight", &rc));
    T_EQ_INT(rc, 0);
    T_STR(run_cell(it, "stats m2.ln_f.weight", &rc), s1);
    free(before), free(after), free((void *)s1);
    snprintf(code, sizeof code, "rm -rf %s", dir);
    T_CHECK(system(code) == 0, "cleanup");
    lp_interp_free(it);
}

int main(void) {
    /* every `load` of the scripts on LOUPE_TEST_DEVICE (t_device.h) */
    printf("device %s\n", t_device()->name);
    if (!t_on_cpu()) mv_device_override = t_device_name();
    /* tiny models: one thread is fastest, and OpenMP's spinning threads would fight the other
     * tests ctest runs beside this one (set before the first parallel region) */
    setenv("OMP_NUM_THREADS", "1", 0);
    T_RUN(test_accumulate);   /* first: it needs both compute slots for models with adapters */
    T_RUN(test_dataset_next_forward);
    T_RUN(test_native_loop);
    T_RUN(test_ia3);
    T_RUN(test_adalora);
    T_RUN(test_train_live);
    T_RUN(test_classifier);
    T_RUN(test_stats_trained);
    T_RUN(test_oom);
    return t_done();
}
