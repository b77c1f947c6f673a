/* test_move.c — `to MODEL DEVICE` moves the live state (nn/migrate.h, commands/device.c).
 *
 * One training session — LoRA with dropout and an unfrozen layer, steps by hand, gradients
 * made on one device and applied on the other, two `train` runs, a second adapter, merge,
 * evaluate, generate, save_adapter, save — runs twice: once on the cpu, once moved between the
 * cpu and the device under test (the guard by default, LOUPE_TEST_DEVICE otherwise) at every
 * `@MOVE` line. Outputs and saved files must be identical (on the guard: bit for bit, it runs
 * the CPU's ops; on a GPU numbers within 2e-3 and the files are not compared). Also: running
 * out of memory on either device during the move leaves the model usable where it was and
 * frees what the move had allocated. */
#define _GNU_SOURCE
#include "t.h"
#include "t_device.h"

#include <stdlib.h>
#include <string.h>

#include "backend/guard/guard_backend.h"
#include "commands/model.h"
#include "lang/interp.h"
#include "test_lang_harness.h"

static const char *dev_name;   /* the device under test */
static double tol;             /* relative, per number */

/* `@MOVE` lines: `to m DEVICE` (DEVICE = the device under test) or `to m "cpu"` in the moved
 * run, nothing in the reference run. */
static const char *const script[] = {
    "m = load \"tests/fixtures/forward/gpt2-bytes\"",
    "data = dataset \"data/corpus/finetune/sea_qa_prompt_response_train.jsonl\" model=m "
    "prompt=\"prompt\" response=\"response\" max_len=40 eval=8 seed=7",
    "lora m r=4 alpha=8 dropout=0.1 target=[\"c_attn\", \"c_proj\"]",
    "unfreeze m \"transformer.h.1.mlp.*\"",
    "train_mode m",
    "opt = adamw m lr=1e-2 clip=1.0 schedule=\"cosine\" warmup=1 steps=8",
    "b = next data size=3\no = forward m b\no.loss\nbackward o\nstep opt\nzero_grad opt",
    "@MOVE dev",
    "b = next data size=3\no = forward m b\no.loss\nbackward o",
    "@MOVE cpu",   /* gradients made on the device, applied on the cpu */
    "step opt\nzero_grad opt\nopt",
    "@MOVE dev",
    "b = next data size=2\no = forward m b\nbackward o\nstep opt\nzero_grad opt",
    "train m data steps=3 batch=2 lr=1e-2 log_every=1",
    "@MOVE cpu",
    "train m data steps=2 batch=2 lr=1e-2 log_every=1",   /* continues the run's optimizer */
    "lora m r=2 alpha=4 name=\"second\" target=[\"c_fc\"]\nb = next data size=2\n"
    "o = forward m b\nbackward o\nstep opt\nzero_grad opt",
    "@MOVE dev",
    "adapter m \"default\"\nb = next data size=2\no = forward m b\nbackward o\nstep opt",
    "freeze m \"transformer.h.1.mlp.*\"\neval_mode m\nevaluate m data.eval",
    "save_adapter m \"out/test_move/RUN/default\"",
    "save_adapter m \"out/test_move/RUN/second\" name=\"second\"",
    "@MOVE cpu",
    "generate m \"Hi\" max_tokens=10",
    "adapter m \"default\" action=\"merge\"\nadapter m \"second\" action=\"merge\"",
    "@MOVE dev",
    "(forward m \"Hello there\").loss",
    "save m \"out/test_move/RUN/full\"",
    "opt",
    NULL,
};

/* The cell with RUN replaced by the run's name; NULL for an @MOVE line the reference skips. */
static char *cell(const char *src, const char *run, int moved) {
    sbuf b;
    sb_init(&b);
    if (!strncmp(src, "@MOVE ", 6)) {
        if (!moved) return NULL;
        sb_printf(&b, "to m \"%s\"", strcmp(src + 6, "dev") ? src + 6 : dev_name);
        return sb_take(&b);
    }
    for (const char *p = src; *p;) {
        if (!strncmp(p, "RUN", 3)) { sb_puts(&b, run); p += 3; }
        else sb_putc(&b, *p++);
    }
    return sb_take(&b);
}

/* The part of a line that does not depend on the clock: live plot and progress redraws go
 * (their number follows the clock), a final line is cut before its speed. */
static size_t untimed(const char *s, size_t n) {
    if (!strncmp(s, "loss · train loss", strlen("loss · train loss")) ||
        (!strncmp(s, "step ", 5) && memmem(s, n, " elapsed", 8)))
        return 0;
    const char *t = memmem(s, n, "tokens/s", 8);
    if (!t) return n + 1;
    while (t > s && memcmp(t, " · ", strlen(" · "))) t--;
    return (size_t)(t - s) + 1;
}

/* Run the session; the outputs (without `to`'s own lines and timed ones), malloc'd. */
static char *run_session(const char *run, int moved) {
    char cmd[200];
    snprintf(cmd, sizeof cmd, "rm -rf out/test_move/%s && mkdir -p out/test_move/%s", run, run);
    T_OK(system(cmd) == 0);
    lp_interp *it = lp_interp_new();
    sbuf all;
    sb_init(&all);
    int moves = 0;
    for (int i = 0; script[i]; i++) {
        char *code = cell(script[i], run, moved);
        if (!code) continue;
        int rc;
        const char *out = run_cell(it, code, &rc);
        T_CHECK(rc == 0, "%s: cell %d failed: %s", run, i, out);
        if (!strncmp(code, "to m", 4)) {
            T_CHECK(!strncmp(out, "moved to ", 9) && strstr(out, "weights, adapter"),
                    "%s: %s", code, out);
            moves++;
        } else {
            sb_printf(&all, "## %s\n", code);
            for (const char *s = out; *s;) {
                const char *e = strchr(s, '\n');
                size_t n = e ? (size_t)(e - s) : strlen(s);
                size_t keep = untimed(s, n);
                if (keep) { sb_putn(&all, s, keep - 1); sb_putc(&all, '\n'); }
                s += n + (e != NULL);
            }
        }
        free(code);
    }
    int rc;
    const char *dev = run_cell(it, "m.device", &rc);
    char want[64];
    snprintf(want, sizeof want, "\"%s\"\n", moved ? dev_name : "cpu");
    T_STR(dev, want);
    if (moved) printf("%s: %d moves\n", run, moves);
    lp_interp_free(it);
    /* the runs save into their own directories: name them alike */
    char *text = sb_take(&all), dir[64];
    snprintf(dir, sizeof dir, "out/test_move/%s/", run);
    for (char *p = text; (p = strstr(p, dir));) {
        memmove(p + 18, p + strlen(dir), strlen(p + strlen(dir)) + 1);
        memcpy(p, "out/test_move/RUN/", 18);
    }
    return text;
}

/* Numbers within tol (0: equal text), everything else equal; the first differences shown. */
static void compare(const char *a, const char *b) {
    int line = 1, bad_lines = 0;
    while ((*a || *b) && bad_lines < 6) {
        const char *ea = strchr(a, '\n'), *eb = strchr(b, '\n');
        size_t na = ea ? (size_t)(ea - a) : strlen(a), nb = eb ? (size_t)(eb - b) : strlen(b);
        int bad = tol == 0 ? na != nb || memcmp(a, b, na) : 0;
        for (const char *p = a, *q = b; tol > 0 && !bad && (p < a + na || q < b + nb);) {
            char *pe, *qe;
            double x = strtod(p, &pe), y = strtod(q, &qe);
            if (pe > p && qe > q && (*p == '-' || (*p >= '0' && *p <= '9'))) {
                bad = fabs(x - y) > tol * fmax(1e-3, fmax(fabs(x), fabs(y)));
                p = pe, q = qe;
            } else {
                bad = *p != *q;
                p++, q++;
            }
        }
        T_CHECK(!bad, "line %d differs:\n  unmoved: %.*s\n  moved:   %.*s", line, (int)na, a,
                (int)nb, b);
        bad_lines += bad;
        a += na + (ea != NULL);
        b += nb + (eb != NULL);
        line++;
    }
}

static void same_file(const char *rel) {
    char pa[300], pb[300];
    snprintf(pa, sizeof pa, "out/test_move/still/%s", rel);
    snprintf(pb, sizeof pb, "out/test_move/moved/%s", rel);
    size_t na = 0, nb = 0;
    char *a = t_slurp(pa, &na), *b = t_slurp(pb, &nb);
    T_CHECK(a && b && na == nb && na > 0 && !memcmp(a, b, na), "%s and %s differ", pa, pb);
    free(a);
    free(b);
}

static void test_session(void) {
    char *still = run_session("still", 0);
    char *moved = run_session("moved", 1);
    T_CONTAINS(still, "\ntrained 5/5 steps · loss ");   /* the second `train` continued */
    T_CONTAINS(moved, "\ntrained 5/5 steps · loss ");
    compare(still, moved);
    if (tol == 0) {
        same_file("default/adapter_model.safetensors");
        same_file("default/adapter_config.json");
        same_file("second/adapter_model.safetensors");
        same_file("full/model.safetensors");
    }
    if (getenv("LOUPE_TEST_SHOW")) printf("%s\n", moved);
    free(still);
    free(moved);
}

/* Running out of memory on the device during `to`: every limit from a few pages up either
 * fails with the device's words, the model still on the cpu with its numbers and nothing
 * left allocated on the device, or moves it with the same numbers. */
static void test_device_full(void) {
    if (strcmp(dev_name, "guard")) return;   /* the guard's limit makes the device full */
    lp_interp *it = lp_interp_new();
    int rc;
    const char *out = run_cell(it, "m = load \"tests/fixtures/models/llama\"\nlora m r=4 alpha=8\n"
                                   "unfreeze m \"layers.1.*\"\nopt = adamw m lr=1e-2\n"
                                   "b = {\"input_ids\": [[5, 9, 33, 120, 7]], \"labels\": [[5, 9, 33, 120, 7]]}\n"
                                   "o = forward m b\nbackward o\nstep opt\nzero_grad opt", &rc);
    T_EQ_INT(rc, 0);
    out = run_cell(it, "(forward m b).loss", &rc);
    char loss[64];
    snprintf(loss, sizeof loss, "%s", out);
    size_t before = be_guard_in_use();
    int failed = 0, moved = 0;
    for (size_t extra = 4096; !moved && extra < ((size_t)64 << 20); extra *= 2) {
        be_guard_set_limit(before + extra);
        out = run_cell(it, "to m \"guard\"", &rc);
        be_guard_set_limit(0);
        if (rc) {
            failed++;
            T_CHECK(strstr(out, "MemoryError: moving to guard: ") &&
                    strstr(out, "out of GPU memory allocating") && !strstr(out, "smaller batch") &&
                    strstr(out, "in use); the model stays on cpu\n"),
                    "extra %zu: %s", extra, out);
            T_EQ_INT(be_guard_in_use(), before);   /* the copies made so far were freed */
            out = run_cell(it, "m.device\n(forward m b).loss", &rc);
            T_EQ_INT(rc, 0);
            char want[100];
            snprintf(want, sizeof want, "\"cpu\"\n%s", loss);
            T_STR(out, want);
        } else {
            moved = 1;
            T_CONTAINS(out, "moved to guard: weights, adapter default, 9 trainable weights, optimizer opt");
        }
    }
    T_OK(failed > 3 && moved);
    out = run_cell(it, "(forward m b).loss", &rc);
    T_STR(out, loss);
    /* and training goes on there: one more step, as on the cpu */
    out = run_cell(it, "o = forward m b\nbackward o\nstep opt\n(forward m b).loss", &rc);
    T_EQ_INT(rc, 0);
    printf("device full: %d limits failed cleanly, then it moved\n", failed);
    lp_interp_free(it);
}

/* Out of host memory (the cpu backend's allocations and the move's own) during `to m "cpu"`:
 * the model stays on the device, usable. */
static void test_host_full(void) {
    lp_interp *it = lp_interp_new();
    int rc;
    char setup[400];
    snprintf(setup, sizeof setup, "m = load \"tests/fixtures/models/llama\" device=\"%s\"\n"
             "lora m r=4 alpha=8\nopt = sgd m lr=0.1\n"
             "b = {\"input_ids\": [[5, 9, 33, 120, 7]], \"labels\": [[5, 9, 33, 120, 7]]}\n"
             "o = forward m b\nbackward o\nstep opt", dev_name);
    const char *out = run_cell(it, setup, &rc);
    T_EQ_INT(rc, 0);
    out = run_cell(it, "(forward m b).loss", &rc);
    char loss[64], want[100];
    snprintf(loss, sizeof loss, "%s", out);
    snprintf(want, sizeof want, "\"%s\"\n%s", dev_name, loss);
    int failed = 0;
    for (long n = 1; n < 400; n++) {
        lp_mem_fail_after(n);
        out = run_cell(it, "to m \"cpu\"", &rc);
        lp_mem_fail_after(0);
        if (!rc) break;
        failed++;
        out = run_cell(it, "m.device\n(forward m b).loss", &rc);
        T_CHECK(rc == 0 && !strcmp(out, want), "after failing allocation %ld: %s", n, out);
    }
    out = run_cell(it, "m.device\n(forward m b).loss", &rc);
    snprintf(want, sizeof want, "\"cpu\"\n%s", loss);
    T_STR(out, want);
    T_OK(failed > 3);
    printf("host full: %d allocations failed cleanly, then it moved\n", failed);
    lp_interp_free(it);
}

int main(void) {
    const be_backend *be = t_device();   /* exits 77 (skipped) without the device */
    (void)be;
    dev_name = t_on_cpu() ? "guard" : t_device_name();
    tol = !strcmp(dev_name, "guard") ? 0 : 2e-3;
    printf("moving between cpu and %s (tolerance %g)\n", dev_name, tol);
    T_RUN(test_session);
    T_RUN(test_device_full);
    T_RUN(test_host_full);
    return t_done();
}
