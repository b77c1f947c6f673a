/* bench_gpu.c — time LoRA training steps of loupe on a device, for bench/gpu/run_bench.py.
 *
 *   bench_gpu MODEL_DIR IDS_FILE B T REPEATS R [DEVICE]
 *
 * One step is what `train` does: zero the grads, fw_forward(FW_KEEP | FW_TRAIN) with
 * labels = ids, bw_backward, AdamW (lr 2e-4) over LoRA r = R, alpha = 2R, dropout 0 on every
 * linear layer (q/k/v/o and gate/up/down). DEVICE is "cuda" (default) or "cpu". One warm-up
 * step (weights widened to f32 and uploaded, arena, optimizer state), then REPEATS timed
 * steps, each closed by the backend's sync so that queued GPU work is counted. Prints one
 * JSON line: median step, tokens/s, losses, the pool's peak bytes in use (what compares with
 * torch.cuda.max_memory_allocated) and reserved (torch.cuda.max_memory_reserved), and the
 * device's name, and `waits`: how often the last step's calls waited for the device (the
 * loss, the gradient norm: cuda_backend.h be_cuda_waits). Errors (no device, out of GPU
 * memory) go to stderr with exit status 1. With LOUPE_CUDA_PROFILE=1 the GPU time of every
 * op over the timed steps goes to stderr too (docs/cuda.md). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "backend/backend.h"
#ifdef LOUPE_HAVE_CUDA
#include "backend/cuda/cuda_backend.h"
#endif
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

static int cmp(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static void die(const char *what) {
    fprintf(stderr, "bench_gpu: %s: %s\n", what, lp_geterr());
    exit(1);
}

static const be_backend *be;
static double part[3];   /* seconds of the last step in forward, backward, optimizer */
static long step_waits;  /* times the last step's library calls waited for the device */

static long waits(void) {
#ifdef LOUPE_HAVE_CUDA
    return strcmp(be->name, "cuda") == 0 ? be_cuda_waits() : 0;
#else
    return 0;
#endif
}

static float one_step(fw_model *fm, to_optim *o, fw_batch *in) {
    fw_out out;
    to_info info;
    double t0 = now();
    long w0 = waits();
    to_zero_grad(o);
    if (fw_forward(fm, in, &out) < 0) die("forward");   // reads the loss: waits
    double t1 = now();
    if (bw_backward(fm, 1.0f) < 0) die("backward");
    long w1 = waits();
    be->sync();   // the benchmark's own waits (to time the parts) are not the step's
    double t2 = now();
    long w2 = waits();
    if (to_step(o, &info) < 0) die("optimizer step");
    step_waits = w1 - w0 + waits() - w2;
    be->sync();
    part[0] = t1 - t0, part[1] = t2 - t1, part[2] = now() - t2;
    return out.loss;
}

#ifdef LOUPE_HAVE_CUDA
static int by_ms(const void *a, const void *b) {
    double x = ((const be_cuda_op_time *)a)->ms, y = ((const be_cuda_op_time *)b)->ms;
    return x > y ? -1 : x < y;
}

/* LOUPE_CUDA_PROFILE=1 (cuda_prof.cuh): GPU time per op over the timed steps, per step, to
 * stderr; the ops' total against the steps' wall time says how long the GPU had nothing of
 * ours to run (launch gaps, host work). Nothing without the variable. */
static void print_profile(be_cuda_op_time *p, size_t n, int reps, double wall_s) {
    if (!n) return;
    n = n > 128 ? 128 : n;
    qsort(p, n, sizeof *p, by_ms);
    double all = 0;
    for (size_t i = 0; i < n; i++) all += p[i].ms;
    fprintf(stderr, "GPU time per step by op (LOUPE_CUDA_PROFILE=1, %d steps):\n", reps);
    fprintf(stderr, "  %-40s %8s %10s %6s\n", "op", "calls", "ms", "share");
    for (size_t i = 0; i < n; i++)
        fprintf(stderr, "  %-40s %8.0f %10.2f %5.1f%%\n", p[i].op, (double)p[i].calls / reps,
                p[i].ms / reps, 100.0 * p[i].ms / (all > 0 ? all : 1));
    fprintf(stderr, "  ops in all: %.2f ms a step, the step %.2f ms: %.1f%% of it\n", all / reps,
            1e3 * wall_s / reps, 100.0 * all / (1e3 * wall_s > 0 ? 1e3 * wall_s : 1));
}
#endif

int main(int argc, char **argv) {
    if (argc != 7 && argc != 8) {
        fprintf(stderr, "usage: %s MODEL_DIR IDS_FILE B T REPEATS R [DEVICE]\n", argv[0]);
        return 2;
    }
    int B = atoi(argv[3]), T = atoi(argv[4]), reps = atoi(argv[5]), r = atoi(argv[6]);
    const char *device = argc == 8 ? argv[7] : "cuda";
    if (reps < 1 || reps > 64) reps = 3;
    int32_t *ids = malloc(sizeof(int32_t) * (size_t)B * T);
    FILE *f = fopen(argv[2], "rb");
    if (!ids || !f || fread(ids, sizeof(int32_t), (size_t)B * T, f) != (size_t)B * T) {
        fprintf(stderr, "bench_gpu: cannot read %d×%d ids from %s\n", B, T, argv[2]);
        return 1;
    }
    fclose(f);
    if (!(be = be_get(device))) die("device");
    mdl_model *m = mdl_load(argv[1]);
    if (!m) die("load");
    fw_model *fm = fw_new(m, be);
    if (!fm) die("model");
    const char *ck = getenv("LOUPE_BENCH_CHECKPOINTING");   /* gradient checkpointing */
    fw_set_checkpointing(fm, ck && *ck && *ck != '0');
    const char *ql = getenv("LOUPE_BENCH_QLORA");   /* QLoRA: NF4 + double quantization */
    if (ql && *ql && *ql != '0' && fw_set_q4(fm, NN_Q4_NF4, 1) < 0) die("quantize");
    const char *targets[] = {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj",
                             "down_proj"};
    tr_lora_config lc = {.name = "default", .r = r, .alpha = 2.0 * r, .dropout = 0,
                         .targets = targets, .ntargets = 7, .seed = 0};
    if (tr_lora_add(fm, &lc) < 0) die("lora");
    to_config cfg;
    to_config_default(&cfg, TO_ADAMW);
    to_optim *o = to_new(fm, &cfg);
    if (!o) die("optimizer");
    fw_batch in = {.B = B, .T = T, .ids = ids, .labels = ids,
                   .flags = FW_KEEP | FW_TRAIN | FW_LOSS};
    double t0 = now();
    float first_loss = one_step(fm, o, &in), last_loss = first_loss;
    double warm = now() - t0, t[64], sum_t = 0;
#ifdef LOUPE_HAVE_CUDA
    be_cuda_op_time prof[128];
    if (strcmp(device, "cuda") == 0) be_cuda_profile(prof, 128, 1);   /* the timed steps only */
#endif
    for (int i = 0; i < reps; i++) {
        t0 = now();
        last_loss = one_step(fm, o, &in);
        t[i] = now() - t0;
        sum_t += t[i];
        fprintf(stderr, "step %d: %.3f s (forward %.3f, backward %.3f, optimizer %.4f)\n", i + 2,
                t[i], part[0], part[1], part[2]);
    }
    qsort(t, (size_t)reps, sizeof t[0], cmp);
    double peak_mb = 0, reserved_mb = 0;
    const char *name = device;
#ifdef LOUPE_HAVE_CUDA
    if (strcmp(device, "cuda") == 0) {
        be_cuda_mem_stats s;
        be_cuda_memory(&s);
        peak_mb = s.peak_in_use / 1048576.0, reserved_mb = s.peak_reserved / 1048576.0;
        name = be_cuda_device_name();
    }
#endif
    /* weights: bf16 storage with LOUPE_CUDA_BF16=1 (docs/cuda.md), else f32 */
    printf("{\"first_s\": %.4f, \"step_s\": %.4f, \"tokens_per_s\": %.1f, \"loss_first\": %.6f, "
           "\"loss_last\": %.6f, \"peak_mb\": %.1f, \"reserved_mb\": %.1f, \"device\": \"%s\", "
           "\"weights\": \"%s\", \"weights_mb\": %.1f, \"attention\": \"%s\", "
           "\"waits\": %ld}\n",
           warm, t[reps / 2], (double)B * T / t[reps / 2], first_loss, last_loss, peak_mb,
           reserved_mb, name, be->bf16 ? "bf16" : "f32", fw_weight_bytes(fm) / 1048576.0,
           fw_attention_kind(fm), step_waits);
#ifdef LOUPE_HAVE_CUDA
    if (strcmp(device, "cuda") == 0) print_profile(prof, be_cuda_profile(prof, 128, 1), reps, sum_t);
#endif
    to_free(o);
    fw_free(fm);
    mdl_free(m);
    free(ids);
    return 0;
}
