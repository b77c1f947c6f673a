/* test_device.c — a whole notebook session on a device whose memory the host cannot touch.
 *
 * One script — load, forward, generate (greedy and sampled), attention map, activations,
 * stats, lora, forward/backward/step by hand, train, evaluate, save_adapter, load_adapter,
 * forward with the loaded adapter, disable / delete / merge / unmerge, unfreeze and SGD steps
 * on base weights, save the trained checkpoint and load it back, save logits — runs on the CPU and again on the device under test,
 * and the two outputs must agree: every number within a tolerance (0 for the guard device,
 * which runs the CPU's own ops; 2e-3 relative on a GPU), all other text equal. The device is
 * LOUPE_TEST_DEVICE (t_device.h); on "cpu" (plain ctest) it is "guard". The CPU numbers are the
 * ones the fixtures check (test_fw_parity, test_train_parity, test_train_loop), so equal output
 * means the device path reproduces them.
 *
 * Also: the guard device really guards (a host read of device memory dies of SIGSEGV, an op
 * given a host pointer aborts), `load device=` and `to` (errors load nothing and leave the
 * model where it was), and running out of device memory: a clear error, the model usable. */
#define _GNU_SOURCE
#include "t.h"
#include "t_device.h"

#define _GNU_SOURCE
#include <fcntl.h>
#include <signal.h>
#include <stddef.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

#include "backend/guard/guard_backend.h"
#include "commands/model.h"
#include "lang/interp.h"
#include "test_lang_harness.h"

static const char *dev_name;   /* the device under test */
static double tol;             /* relative, per number */

static const char *const script[] = {
    "m = load \"tests/fixtures/forward/gpt2-bytes\"\nm.device",
    "out = forward m \"Hello there\"\nout",
    "out.logits[0][1][0:6]",
    "out.predictions",
    "generate m \"Hi\" max_tokens=12",
    "generate m \"Hi\" max_tokens=12 temperature=0.8 seed=3",
    "a = attention m \"Hi you\" layer=1 head=3\na.probs",
    "activations m \"Hi you\"",
    "stats m.transformer.h[0].attn.c_attn.weight",
    "lora m r=4 alpha=8 target=[\"c_attn\", \"c_proj\"]",
    "data = dataset \"data/corpus/finetune/sea_qa_prompt_response_train.jsonl\" model=m "
    "prompt=\"prompt\" response=\"response\" max_len=40 eval=8 seed=7",
    "opt = adamw m lr=1e-2 clip=1.0",
    "b = next data size=3\no = forward m b\no.loss",
    "backward o",
    "step opt",
    "zero_grad opt",
    "o = forward m b\no.loss",
    "train m data steps=4 batch=2 lr=1e-2",
    "evaluate m data.eval",
    "save_adapter m \"out/test_device/a\"",
    "load_adapter m \"out/test_device/a\" name=\"again\"",
    "trainable m",
    "(forward m \"Hello there\").logits[0][2][0:6]",
    "generate m \"Hi\" max_tokens=12",
    "adapter m \"default\" action=\"disable\"\n(forward m \"Hello\").loss",
    "adapter m \"default\" action=\"enable\"\nadapter m \"again\" action=\"delete\"",
    "adapter m \"default\" action=\"merge\"\n(forward m \"Hello\").loss",
    "adapter m \"default\" action=\"unmerge\"\n(forward m \"Hello\").loss",
    "adapter m \"default\" action=\"merge\"",
    "unfreeze m \"transformer.h.1.*\"\nopt2 = sgd m lr=0.1",
    "b = next data size=2\no = forward m b\nbackward o\nstep opt2",
    "(forward m \"Hello\").loss",
    "save m \"out/test_device/full\"",
    "save (forward m \"Hi\").logits \"out/test_device/logits.safetensors\"",
    "m2 = load \"out/test_device/full\"\n(forward m2 \"Hello\").loss",
    "stats (activations m \"Hi\")[\"layers.1.h\"]",
    NULL,
};

/* Run the script with every load on `device`; the concatenated outputs (malloc'd). */
static char *run_script(const char *device) {
    mv_device_override = strcmp(device, "cpu") ? device : NULL;
    T_OK(system("rm -rf out/test_device && mkdir -p out/test_device") == 0);
    lp_interp *it = lp_interp_new();
    sbuf all;
    sb_init(&all);
    for (int i = 0; script[i]; i++) {
        int rc;
        const char *out = run_cell(it, script[i], &rc);
        T_CHECK(rc == 0, "%s: cell %d failed: %s", device, i, out);
        sb_printf(&all, "## %s\n%s", script[i], out);
    }
    lp_interp_free(it);
    mv_device_override = NULL;
    return sb_take(&all);
}

/* The output without what depends on timing: the live plot and progress redraws (their
 * number follows the clock) and speeds; the final line of `train` is kept up to its speed. */
static char *untimed(const char *s) {
    sbuf b;
    sb_init(&b);
    while (*s) {
        const char *e = strchr(s, '\n');
        size_t n = e ? (size_t)(e - s) : strlen(s);
        /* a histogram's bars move when a value crosses a bin edge: compared on the guard only */
        int live = (tol > 0 && !strncmp(s, "histogram ", 10)) ||
                   !strncmp(s, "loss · train loss", strlen("loss · train loss")) ||
                   (!strncmp(s, "step ", 5) && memmem(s, n, " elapsed", 8));
        if (!live) {
            const char *t = memmem(s, n, "tokens/s", 8);
            size_t keep = n;
            if (t) {   /* back to the " · " before the speed */
                while (t > s && memcmp(t, " · ", strlen(" · "))) t--;
                keep = (size_t)(t - s);
            }
            sb_putn(&b, s, keep);
            sb_putc(&b, '\n');
        }
        s += n + (e != NULL);
    }
    return sb_take(&b);
}

/* Compare two outputs: numbers within tol, everything else equal. Reports the first few
 * differences. */
static void compare(const char *a, const char *b) {
    int line = 1, ndiff = 0;
    double worst = 0;
    while (*a || *b) {
        const char *ea = strchr(a, '\n'), *eb = strchr(b, '\n');
        size_t na = ea ? (size_t)(ea - a) : strlen(a), nb = eb ? (size_t)(eb - b) : strlen(b);
        {
            const char *p = a, *q = b;
            int bad = 0;
            while (p < a + na && q < b + nb && !bad) {
                int isnum = (*p == '-' || (*p >= '0' && *p <= '9')) &&
                            (*q == '-' || (*q >= '0' && *q <= '9'));
                if (isnum) {
                    char *pe, *qe;
                    double x = strtod(p, &pe), y = strtod(q, &qe);
                    if (pe > p && qe > q) {
                        double d = fabs(x - y) / fmax(1e-3, fmax(fabs(x), fabs(y)));
                        if (d > worst) worst = d;
                        if (d > tol) bad = 1;
                        p = pe, q = qe;
                        continue;
                    }
                }
                if (*p == ' ' && *q == ' ') {   /* tables align numbers of other widths */
                    while (*p == ' ') p++;
                    while (*q == ' ') q++;
                    continue;
                }
                if (*p != *q) bad = 1;
                p++, q++;
            }
            if (!bad && (p != a + na || q != b + nb)) bad = 1;
            T_CHECK(!bad, "line %d differs:\n  cpu:    %.*s\n  %-6s: %.*s", line, (int)na, a,
                    dev_name, (int)nb, b);
            if (bad && ++ndiff == 8) return;   /* the first few differences */
        }
        a += na + (ea != NULL);
        b += nb + (eb != NULL);
        line++;
    }
    printf("script: %d lines, cpu and %s agree (worst relative difference %.2e)\n", line - 1,
           dev_name, worst);
}

static void test_script(void) {
    char *cpu = run_script("cpu");
    char *dev = run_script(dev_name);
    T_CONTAINS(cpu, "## m = load \"tests/fixtures/forward/gpt2-bytes\"\nm.device\n\"cpu\"\n");
    char want[100];
    snprintf(want, sizeof want, "m.device\n\"%s\"\n", dev_name);
    T_CONTAINS(dev, want);
    /* the first line names the device; the rest must agree */
    const char *a = strstr(cpu, "## out ="), *b = strstr(dev, "## out =");
    T_OK(a && b);
    if (a && b) {
        char *ua = untimed(a), *ub = untimed(b);
        compare(ua, ub);
        free(ua);
        free(ub);
    }
    if (getenv("LOUPE_TEST_SHOW")) printf("%s\n", dev);
    free(cpu);
    free(dev);
}

/* The guard device catches what would crash on a GPU. */
static int dies_of(void (*fn)(void)) {
    fflush(stdout);
    fflush(stderr);
    pid_t pid = fork();
    if (pid == 0) {
        int fd = open("/dev/null", 1);   // the guard's report is expected: keep the log clean
        if (fd >= 0) dup2(fd, 2);
        fn();
        _exit(0);
    }
    int st = 0;
    waitpid(pid, &st, 0);
    return WIFSIGNALED(st) ? WTERMSIG(st) : 0;
}
static void host_reads_device(void) {
    const be_backend *g = be_guard();
    float *p = g->alloc(64 * sizeof(float)), x = 1;
    g->to_device(p, &x, sizeof x);
    volatile float y = p[0];   // what forgotten host code does
    (void)y;
}
static void host_writes_device(void) {
    const be_backend *g = be_guard();
    int *p = g->alloc(16 * sizeof(int));
    p[3] = 7;
}
static void op_on_host_memory(void) {
    const be_backend *g = be_guard();
    float host[8] = {0}, *d = g->alloc(sizeof host);
    g->add_forward(d, d, host, 8);
}
static void to_host_from_host(void) {
    const be_backend *g = be_guard();
    float a[4], b[4] = {0};
    g->to_host(a, b, sizeof a);
}

static void test_guard(void) {
    const be_backend *g = be_guard();
    T_OK(g && be_get("guard") == g);
    if (!g) return;
    T_STR(g->name, "guard");
    /* every function of the table is a wrapper: none is NULL, none is be_cpu()'s own (an op
     * added to be_backend needs its wrapper in guard_backend.c) */
    const be_backend *cpu = be_cpu();
    size_t from = offsetof(be_backend, alloc), to = offsetof(be_backend, clip_grad_norm);
    for (size_t off = from; off <= to; off += sizeof(void (*)(void))) {
        void (*gf)(void), (*cf)(void);
        memcpy(&gf, (const char *)g + off, sizeof gf);
        memcpy(&cf, (const char *)cpu + off, sizeof cf);
        T_CHECK(gf && gf != cf, "be_backend slot at offset %zu is %s", off,
                gf ? "be_cpu()'s, not wrapped" : "NULL");
    }
    size_t before = be_guard_in_use();
    float *p = g->alloc(1000 * sizeof(float)), *q = g->alloc(10 * sizeof(float));
    T_OK(p && q && ((uintptr_t)p & 4095) == 0);
    float h[1000], r[1000];
    for (int i = 0; i < 1000; i++) h[i] = (float)i;
    g->to_device(p, h, sizeof h);
    g->scale_forward(p, p, 2.0f, 1000);   /* an op reads and writes device memory */
    g->copy(q, p + 990, 10 * sizeof(float));
    g->to_host(r, q, 10 * sizeof(float));
    T_OK(r[0] == 1980.0f && r[9] == 1998.0f);
    g->free(p);
    g->free(q);
    T_EQ_INT(be_guard_in_use(), before);
    T_EQ_INT(dies_of(host_reads_device), SIGSEGV);
    T_EQ_INT(dies_of(host_writes_device), SIGSEGV);
    T_EQ_INT(dies_of(op_on_host_memory), SIGABRT);
    T_EQ_INT(dies_of(to_host_from_host), SIGABRT);
    /* the limit: a full device */
    be_guard_set_limit(be_guard_in_use() + 8192);
    T_OK(g->alloc(1 << 20) == NULL);
    T_CONTAINS(lp_geterr(), "out of GPU memory allocating 1048576 bytes");
    T_CONTAINS(lp_geterr(), "try a smaller batch or sequence");
    be_guard_set_limit(0);
}

/* `load dtype=` picks the device's storage (be_get_dtype): bf16 weights on the guard device
 * (the CUDA backend's bf16 mode emulated), whatever LOUPE_CUDA_BF16 says; "f32" keeps f32. */
static void test_load_dtype(void) {
    lp_interp *it = lp_interp_new();
    int rc;
    const char *load = "m = load \"tests/fixtures/models/qwen2-bf16\" device=\"guard\"";
    char cell[256];
    snprintf(cell, sizeof cell, "%s dtype=\"bf16\"\n(forward m [5, 9, 33]).loss", load);
    char bf16_loss[64], f32_loss[64];
    snprintf(bf16_loss, sizeof bf16_loss, "%s", run_cell(it, cell, &rc));
    T_EQ_INT(rc, 0);
    const char *out = run_cell(it, "to m \"cpu\"\nto m \"guard\"", &rc);
    T_EQ_INT(rc, 0);
    T_CONTAINS(out, "frozen weights stored as bf16 there");
    T_CONTAINS(run_cell(it, "m", &rc), "compute dtype bf16\n");   /* no note: guard stores bf16 */
    snprintf(cell, sizeof cell, "%s dtype=\"f32\"\n(forward m [5, 9, 33]).loss", load);
    setenv("LOUPE_CUDA_BF16", "1", 1);   /* the default would be bf16; f32 is asked for */
    snprintf(f32_loss, sizeof f32_loss, "%s", run_cell(it, cell, &rc));
    unsetenv("LOUPE_CUDA_BF16");
    T_EQ_INT(rc, 0);
    out = run_cell(it, "to m \"cpu\"\nto m \"guard\"", &rc);
    T_OK(strstr(out, "stored as bf16") == NULL);
    T_OK(strcmp(bf16_loss, f32_loss) != 0);   /* bf16 products round: another loss */
    snprintf(cell, sizeof cell, "%s\n(forward m [5, 9, 33]).loss", load);
    T_STR(run_cell(it, cell, &rc), f32_loss);   /* "auto": the guard's default, f32 */
    lp_interp_free(it);
}

/* `load device=` and `to`. */
static void test_load_and_to(void) {
    lp_interp *it = lp_interp_new();
    int rc;
    const char *out = run_cell(it, "m = load \"tests/fixtures/models/llama\" device=\"tpu\"", &rc);
    T_OK(rc != 0);
    T_CONTAINS(out, "device=\"tpu\": expected \"cpu\" or \"cuda\"");
    out = run_cell(it, "m = load \"tests/fixtures/models/llama\" device=\"cuda:1\"", &rc);
    T_OK(rc != 0);   /* torch's second GPU: one GPU is all loupe uses */
    T_CONTAINS(out, "device=\"cuda:1\": loupe computes on one GPU, \"cuda\" (cuda:0)");
    out = run_cell(it, "m = load \"tests/fixtures/models/llama\" device=\"cuda:\"", &rc);
    T_CONTAINS(out, "device=\"cuda:\": expected \"cpu\" or \"cuda\"");
    if (!be_get("cuda")) {   /* torch's "cuda:0" is "cuda" */
        out = run_cell(it, "m = load \"tests/fixtures/models/llama\" device=\"cuda:0\"", &rc);
        T_OK(rc != 0);
        T_CONTAINS(out, "ValueError: `load`: device=\"cuda\": ");
    }
    if (!be_get("cuda")) {   /* no GPU here (or no CUDA in the build): a clear error */
        out = run_cell(it, "m = load \"tests/fixtures/models/llama\" device=\"cuda\"", &rc);
        T_OK(rc != 0);
        T_CONTAINS(out, "ValueError: `load`: device=\"cuda\": ");
        T_OK(strstr(out, "no CUDA") || strstr(out, "CUDA backend"));
        out = run_cell(it, "m", &rc);   /* nothing was loaded */
        T_OK(rc != 0);
    }
    out = run_cell(it, "m = load \"tests/fixtures/models/llama\" device=\"guard\"\nm.device", &rc);
    T_STR(out, "\"guard\"\n");
    out = run_cell(it, "m", &rc);
    T_CONTAINS(out, "\ndevice guard");
    out = run_cell(it, "(forward m [5, 9, 33, 120, 7]).loss", &rc);
    T_EQ_INT(rc, 0);
    char loss_guard[64];
    snprintf(loss_guard, sizeof loss_guard, "%s", out);
    out = run_cell(it, "to m \"cpu\"\nm.device", &rc);
    T_EQ_INT(rc, 0);
    T_STR(out, "moved to cpu: weights (139.9 KB)\n\"cpu\"\n");
    out = run_cell(it, "(forward m [5, 9, 33, 120, 7]).loss", &rc);
    T_STR(out, loss_guard);
    out = run_cell(it, "to m \"cpu\"", &rc);
    T_STR(out, "already on cpu\n");
    out = run_cell(it, "to m \"guard\"\nlora m r=4\nto m \"cpu\"\nto m \"guard\"", &rc);
    T_EQ_INT(rc, 0);   /* adapters move with the model (test_move.c checks the numbers) */
    T_CONTAINS(out, "moved to cpu: weights, adapter default (147.1 KB)\n");
    out = run_cell(it, "m.device", &rc);
    T_STR(out, "\"guard\"\n");
    out = run_cell(it, "to m \"tpu\"", &rc);
    T_CONTAINS(out, "device=\"tpu\": expected");
    if (!be_get("cuda")) {
        out = run_cell(it, "to m \"cuda\"", &rc);
        T_OK(rc != 0);
        T_CONTAINS(out, "device=\"cuda\": ");
    }
    out = run_cell(it, "(forward m [5, 9, 33, 120, 7]).count\nm.device", &rc);
    T_STR(out, "4\n\"guard\"\n");   /* errors left the model usable where it was */
    lp_interp_free(it);
}

/* Out of device memory in the middle of commands: a clear error, nothing half-done, and the
 * same commands work once memory is there again. */
static void test_out_of_memory(void) {
    lp_interp *it = lp_interp_new();
    int rc;
    const char *out = run_cell(it, "m = load \"tests/fixtures/forward/gpt2-bytes\" device=\"guard\"\n"
                                   "(forward m \"Hi\").count", &rc);
    T_STR(out, "1\n");
    /* a long batch does not fit */
    be_guard_set_limit(be_guard_in_use() + 64 * 1024);
    out = run_cell(it, "forward m [[1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 29, 30, 31, 32, 33, 34, 35, 36, 37, 38, 39, 40, 41, 42, 43, 44, 45, 46, 47, 48, 49, 50, 51, 52, 53, 54, 55, 56, 57, 58, 59, 60, 61, 62, 63, 64]]", &rc);
    T_OK(rc != 0);
    T_CONTAINS(out, "out of GPU memory");
    T_CONTAINS(out, "try a smaller batch or sequence");
    out = run_cell(it, "(forward m \"Hi\").count", &rc);
    T_EQ_INT(rc, 0);
    /* training steps: every limit from tiny to enough fails cleanly or works */
    be_guard_set_limit(0);
    out = run_cell(it, "lora m r=4 alpha=8\n"
                       "data = dataset \"data/corpus/finetune/sea_qa_prompt_response_train.jsonl\" model=m "
                       "prompt=\"prompt\" response=\"response\" max_len=40 eval=8 seed=7\n"
                       "opt = adamw m lr=1e-2", &rc);
    T_EQ_INT(rc, 0);
    size_t base = be_guard_in_use();
    int failed = 0, worked = 0;
    for (size_t extra = 4096; extra < ((size_t)64 << 20) && worked < 2; extra *= 2) {
        be_guard_set_limit(be_guard_in_use() + extra);
        if (getenv("LOUPE_TEST_SHOW")) printf("extra %zu in use %zu\n", extra, be_guard_in_use());
        out = run_cell(it, "b = next data size=4\no = forward m b\nbackward o\nstep opt\nzero_grad opt", &rc);
        if (rc) {
            failed++;
            if (getenv("LOUPE_TEST_SHOW")) printf("%s\n", out);
            T_CHECK(strstr(out, "out of GPU memory") && strstr(out, "try a smaller batch"),
                    "extra %zu: %s", extra, out);
        } else {
            worked++;
        }
        be_guard_set_limit(0);
        out = run_cell(it, "(forward m \"Hi\").count", &rc);   /* usable after each */
        T_CHECK(rc == 0, "after extra %zu: %s", extra, out);
    }
    T_OK(failed > 0 && worked > 0);
    printf("out of memory: %d limits failed cleanly, then %d worked (%zu bytes in use)\n", failed,
           worked, base);
    out = run_cell(it, "train m data steps=2 batch=2", &rc);
    T_CHECK(rc == 0, "%s", out);
    lp_interp_free(it);
}

int main(void) {
    const be_backend *be = t_device();   /* exits 77 (skipped) without the device */
    dev_name = t_on_cpu() ? "guard" : t_device_name();
    tol = !strcmp(dev_name, "guard") ? 0 : 2e-3;
    printf("device %s (compared with cpu, tolerance %g)\n", dev_name, tol);
    (void)be;
    T_RUN(test_guard);
    T_RUN(test_load_dtype);
    T_RUN(test_load_and_to);
    T_RUN(test_out_of_memory);
    T_RUN(test_script);
    return t_done();
}
