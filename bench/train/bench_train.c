/* bench_train.c — time one LoRA training step of loupe for bench/train/run_bench.py.
 *
 *   bench_train MODEL_DIR IDS_FILE B T REPEATS R
 *
 * The step is what `train` does: zero the grads, fw_forward(FW_KEEP | FW_TRAIN) with labels =
 * ids, bw_backward, AdamW (lr 2e-4) over the LoRA parameters (r = R, alpha = 2R, dropout 0, on
 * q/k/v/o_proj). One warm-up step (weights widened to f32, arena and optimizer state made),
 * then REPEATS timed steps. Prints one JSON line: the warm-up, the median step, the losses,
 * and the peak resident memory (getrusage: the whole process, mapped weights included).
 *
 * With LOUPE_BENCH_OPS=1 in the environment the model runs on a copy of the CPU backend whose
 * main ops are timed (wall clock, per call, the calls being sequential), and a table of seconds
 * per timed step by op (linear ops by shape) goes to stderr: where the step's time goes. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

#include "backend/backend.h"
#include "model/model.h"
#include "nn/backward.h"
#include "nn/forward.h"
#include "train/lora.h"
#include "train/optim.h"
#include "util/err.h"

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* CPU seconds the process has used (all threads): on a shared box a step's CPU time moves
 * less with the other tenants' load than its wall time. */
static double cpu_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* ---- the timed backend (LOUPE_BENCH_OPS=1) ------------------------------------------------- */

static const be_backend *cpu;
static be_backend timed;
enum { NSLOT = 64 };
static struct { char name[48]; double s; long calls; } slot[NSLOT];

static void add(const char *name, double s) {
    int i = 0;
    while (i < NSLOT - 1 && slot[i].name[0] && strcmp(slot[i].name, name)) i++;
    if (!slot[i].name[0]) snprintf(slot[i].name, sizeof slot[i].name, "%s", name);
    slot[i].s += s;
    slot[i].calls++;
}

/* T(op, (params), (args)): a wrapper that times cpu->op; TI for ops returning int. */
#define T(op, params, args)                                                          \
    static void t_##op params {                                                      \
        double t0 = now();                                                           \
        cpu->op args;                                                                \
        add(#op, now() - t0);                                                        \
    }
#define TI(op, params, args)                                                         \
    static int t_##op params {                                                       \
        double t0 = now();                                                           \
        int rc = cpu->op args;                                                       \
        add(#op, now() - t0);                                                        \
        return rc;                                                                   \
    }
T(zero, (void *p, size_t n), (p, n))
T(copy, (void *d, const void *s, size_t n), (d, s, n))
TI(embedding_forward, (float *o, const int *ids, const float *t, int N, int V, int C),
   (o, ids, t, N, V, C))
T(lora_forward, (float *o, float *h, const float *x, const float *m, const float *A,
                 const float *B, float s, int N, int IN, int OUT, int R),
  (o, h, x, m, A, B, s, N, IN, OUT, R))
T(lora_backward, (float *dx, float *dA, float *dB, float *dh, const float *dout, const float *h,
                  const float *x, const float *m, const float *A, const float *B, float s,
                  int N, int IN, int OUT, int R),
  (dx, dA, dB, dh, dout, h, x, m, A, B, s, N, IN, OUT, R))
T(rmsnorm_forward, (float *o, float *r, const float *x, const float *w, float e, int a1, int N,
                    int C), (o, r, x, w, e, a1, N, C))
T(rmsnorm_backward, (float *dx, float *dw, const float *dy, const float *r, const float *x,
                     const float *w, int a1, int N, int C), (dx, dw, dy, r, x, w, a1, N, C))
T(rope_forward, (float *o, const float *x, const float *c, const float *s, int N, int H, int D),
  (o, x, c, s, N, H, D))
T(rope_backward, (float *o, const float *x, const float *c, const float *s, int N, int H, int D),
  (o, x, c, s, N, H, D))
T(attention_forward, (float *o, float *p, const float *q, const float *k, const float *v,
                      const int *am, const nn_attn_params *pp, int B, int Tn, int H, int KVH,
                      int D), (o, p, q, k, v, am, pp, B, Tn, H, KVH, D))
T(attention_backward, (float *dq, float *dk, float *dv, float *ds, const float *dout,
                       const float *p, const float *q, const float *k, const float *v,
                       const int *am, const nn_attn_params *pp, int B, int Tn, int H, int KVH,
                       int D), (dq, dk, dv, ds, dout, p, q, k, v, am, pp, B, Tn, H, KVH, D))
T(gated_forward, (float *o, const float *g, const float *u, nn_act a, size_t n),
  (o, g, u, a, n))
T(gated_backward, (float *dg, float *du, const float *dy, const float *g, const float *u,
                   nn_act a, size_t n), (dg, du, dy, g, u, a, n))
TI(cross_entropy_forward, (float *l, float *lse, int *c, const float *x, const int *t, int N,
                           int V), (l, lse, c, x, t, N, V))
T(cross_entropy_backward, (float *d, float dl, const float *lse, const float *x, const int *t,
                           int c, int N, int V), (d, dl, lse, x, t, c, N, V))
T(add_forward, (float *o, const float *a, const float *b, size_t n), (o, a, b, n))
T(slice_backward, (float *d, const float *g, int N, int CI, int off, int W),
  (d, g, N, CI, off, W))
T(q8_linear_forward, (float *o, const float *x, const int8_t *cb, const float *scb, const float *b,
                      int N, int IN, int OUT, float t, float *w), (o, x, cb, scb, b, N, IN, OUT, t, w))
T(q4_dequant, (float *o, const uint8_t *c, const float *a, size_t n, int bs, int ty),
  (o, c, a, n, bs, ty))
T(adamw_step, (float *p, float *m, float *v, const float *g, size_t n, double lr, double b1,
               double b2, double e, double wd, int t), (p, m, v, g, n, lr, b1, b2, e, wd, t))

/* products and linear ops by shape: "matmul 1024×576×49152" (M×N×K), "linear_forward 576→49152" */
static void t_matmul(float *c, const float *a, const float *b, int M, int N, int K, int ta, int tb,
                     float al, float be) {
    double t0 = now();
    cpu->matmul(c, a, b, M, N, K, ta, tb, al, be);
    char name[48];
    snprintf(name, sizeof name, "matmul %d×%d×%d", M, N, K);
    add(name, now() - t0);
}

static void t_linear_forward(float *o, const float *x, const float *w, const float *b, int N,
                             int IN, int OUT) {
    double t0 = now();
    cpu->linear_forward(o, x, w, b, N, IN, OUT);
    char name[48];
    snprintf(name, sizeof name, "linear_forward %d→%d", IN, OUT);
    add(name, now() - t0);
}
static void t_linear_backward(float *dx, float *dw, float *db, const float *dy, const float *x,
                              const float *w, int N, int IN, int OUT) {
    double t0 = now();
    cpu->linear_backward(dx, dw, db, dy, x, w, N, IN, OUT);
    char name[48];
    snprintf(name, sizeof name, "linear_backward %d→%d%s", IN, OUT, dw ? " +dW" : "");
    add(name, now() - t0);
}

static const be_backend *timed_backend(void) {
    cpu = be_cpu();
    timed = *cpu;
#define SET(op) timed.op = t_##op
    SET(zero), SET(copy), SET(matmul), SET(embedding_forward), SET(lora_forward);
    SET(lora_backward), SET(rmsnorm_forward), SET(rmsnorm_backward), SET(rope_forward);
    SET(rope_backward), SET(attention_forward), SET(attention_backward), SET(gated_forward);
    SET(gated_backward), SET(cross_entropy_forward), SET(cross_entropy_backward);
    SET(add_forward), SET(slice_backward), SET(adamw_step), SET(linear_forward);
    SET(linear_backward), SET(q8_linear_forward), SET(q4_dequant);
#undef SET
    return &timed;
}

static int by_time(const void *a, const void *b) {
    const double x = ((const double *)a)[0], y = ((const double *)b)[0];
    return x < y ? 1 : x > y ? -1 : 0;
}

static void print_ops(int steps, double step_total) {
    double rows[NSLOT][2], sum = 0;
    int n = 0;
    for (int i = 0; i < NSLOT && slot[i].name[0]; i++, n++) {
        rows[n][0] = slot[i].s / steps;
        rows[n][1] = i;
        sum += rows[n][0];
    }
    qsort(rows, (size_t)n, sizeof rows[0], by_time);
    fprintf(stderr, "per timed step (%d steps, %.3f s a step):\n", steps, step_total / steps);
    for (int i = 0; i < n; i++) {
        int k = (int)rows[i][1];
        fprintf(stderr, "  %-34s %8.1f ms  %6ld calls  %5.1f%%\n", slot[k].name, rows[i][0] * 1e3,
                slot[k].calls / steps, 100 * rows[i][0] / (step_total / steps));
    }
    fprintf(stderr, "  %-34s %8.1f ms\n", "(ops not timed, glue)", (step_total - sum * steps) / steps * 1e3);
}

static int cmp(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static void die(void) {
    fprintf(stderr, "%s\n", lp_geterr());
    exit(1);
}

static double part[3];   /* seconds of the last step in forward, backward, optimizer */

static float one_step(fw_model *fm, to_optim *o, fw_batch *in) {
    fw_out out;
    to_info info;
    double t0 = now();
    to_zero_grad(o);
    if (fw_forward(fm, in, &out) < 0) die();
    double t1 = now();
    if (bw_backward(fm, 1.0f) < 0) die();
    double t2 = now();
    if (to_step(o, &info) < 0) die();
    part[0] = t1 - t0, part[1] = t2 - t1, part[2] = now() - t2;
    return out.loss;
}

int main(int argc, char **argv) {
    if (argc != 7) {
        fprintf(stderr, "usage: %s MODEL_DIR IDS_FILE B T REPEATS ADAPTER (R: LoRA rank R, ia3, "
                "qloraR: LoRA rank R on NF4 weights, qloraRdq: with double quantization, doraR: DoRA of rank R, int8R: LoRA of rank R on LLM.int8 weights, adalora; +ckpt: gradient checkpointing)\n", argv[0]);
        return 2;
    }
    int B = atoi(argv[3]), T = atoi(argv[4]), reps = atoi(argv[5]);
    int nf4 = !strncmp(argv[6], "qlora", 5), dora = !strncmp(argv[6], "dora", 4);
    int q8 = !strncmp(argv[6], "int8", 4);
    int r = atoi(argv[6] + (nf4 ? 5 : dora || q8 ? 4 : 0));   /* ia3: 0 */
    int dq = nf4 && strstr(argv[6], "dq") != NULL;
    int ckpt = strstr(argv[6], "+ckpt") != NULL;   /* gradient checkpointing */
    if (reps < 1 || reps > 64) reps = 3;
    int32_t *ids = malloc(sizeof(int32_t) * (size_t)B * T);
    FILE *f = fopen(argv[2], "rb");
    if (!f || fread(ids, sizeof(int32_t), (size_t)B * T, f) != (size_t)B * T) return 1;
    fclose(f);
    mdl_model *m = mdl_load(argv[1]);
    if (!m) die();
    const char *ops = getenv("LOUPE_BENCH_OPS");
    int timing = ops && *ops && *ops != '0';
    fw_model *fm = fw_new(m, timing ? timed_backend() : be_cpu());
    if (!fm || fw_set_q4(fm, nf4 ? NN_Q4_NF4 : q8 ? NN_Q8 : 0, dq) < 0) die();
    fw_set_checkpointing(fm, ckpt);
    const char *targets[] = {"q_proj", "k_proj", "v_proj", "o_proj"};
    tr_lora_config lc = {.name = "default", .r = r, .alpha = 2.0 * r, .dropout = 0,
                         .targets = targets, .ntargets = 4, .seed = 0, .dora = dora};
    /* ia3 (r = 0): IA3 with PEFT's Llama defaults (k_proj, v_proj, down_proj feed-forward) */
    const char *ia3_t[] = {"k_proj", "v_proj", "down_proj"}, *ff = "down_proj";
    tr_ia3_config ic = {.targets = ia3_t, .ntargets = 3, .ff = &ff, .nff = 1};
    /* adalora: PEFT's AdaLoraConfig defaults for Llama (q_proj, v_proj, init_r 12 → target_r
       8, alpha 8, orth_reg_weight 0.5) over a 100-step schedule: every step reallocates */
    const char *qv[] = {"q_proj", "v_proj"};
    tr_adalora_config ac = {.init_r = 12, .target_r = 8, .alpha = 8, .total_step = 100,
                            .delta_t = 1, .beta1 = 0.85, .beta2 = 0.85, .orth = 0.5,
                            .targets = qv, .ntargets = 2};
    int ada = !strncmp(argv[6], "adalora", 7);
    if (ada ? tr_adalora_add(fm, &ac) < 0
            : r > 0 ? tr_lora_add(fm, &lc) < 0 : tr_ia3_add(fm, &ic) < 0)
        die();
    to_config cfg;
    to_config_default(&cfg, TO_ADAMW);
    to_optim *o = to_new(fm, &cfg);
    fw_batch in = {.B = B, .T = T, .ids = ids, .labels = ids,
                   .flags = FW_KEEP | FW_TRAIN | FW_LOSS};
    double t0 = now();
    float first_loss = one_step(fm, o, &in), last_loss = first_loss;
    double warm = now() - t0, t[64], tc[64], total = 0;
    memset(slot, 0, sizeof slot);
    for (int i = 0; i < reps; i++) {
        t0 = now();
        double c0 = cpu_now();
        last_loss = one_step(fm, o, &in);
        t[i] = now() - t0;
        tc[i] = cpu_now() - c0;
        total += t[i];
        fprintf(stderr, "step %d: %.3f s (forward %.3f, backward %.3f, optimizer %.4f; cpu %.3f s)\n",
                i + 2, t[i], part[0], part[1], part[2], tc[i]);
    }
    if (timing) print_ops(reps, total);
    qsort(t, (size_t)reps, sizeof t[0], cmp);
    qsort(tc, (size_t)reps, sizeof tc[0], cmp);
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    printf("{\"first_s\": %.4f, \"step_s\": %.4f, \"step_min_s\": %.4f, \"step_cpu_s\": %.4f, "
           "\"loss_first\": %.6f, \"loss_last\": %.6f, \"peak_rss_mb\": %.1f}\n", warm, t[reps / 2],
           t[0], tc[reps / 2], first_loss, last_loss, ru.ru_maxrss / 1024.0);
    to_free(o);
    fw_free(fm);
    mdl_free(m);
    free(ids);
    return 0;
}
