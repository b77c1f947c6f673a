/* bench_train.c — time one LoRA training step of loupe for bench/train/run_bench.py.
 *
 *   bench_train MODEL_DIR IDS_FILE B T REPEATS R
 *
 * The step is what `train` does: zero the grads, fw_forward(FW_KEEP | FW_TRAIN) with labels =
 * ids, bw_backward, AdamW (lr 2e-4) over the LoRA parameters (r = R, alpha = 2R, dropout 0, on
 * q/k/v/o_proj). One warm-up step (weights widened to f32, arena and optimizer state made),
 * then REPEATS timed steps. Prints one JSON line: the warm-up, the median step, the losses,
 * and the peak resident memory (getrusage: the whole process, mapped weights included). */
#include <stdio.h>
#include <stdlib.h>
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
        fprintf(stderr, "usage: %s MODEL_DIR IDS_FILE B T REPEATS R\n", argv[0]);
        return 2;
    }
    int B = atoi(argv[3]), T = atoi(argv[4]), reps = atoi(argv[5]), r = atoi(argv[6]);
    if (reps < 1 || reps > 64) reps = 3;
    int32_t *ids = malloc(sizeof(int32_t) * (size_t)B * T);
    FILE *f = fopen(argv[2], "rb");
    if (!f || fread(ids, sizeof(int32_t), (size_t)B * T, f) != (size_t)B * T) return 1;
    fclose(f);
    mdl_model *m = mdl_load(argv[1]);
    if (!m) die();
    fw_model *fm = fw_new(m, be_cpu());
    if (!fm) die();
    const char *targets[] = {"q_proj", "k_proj", "v_proj", "o_proj"};
    tr_lora_config lc = {.name = "default", .r = r, .alpha = 2.0 * r, .dropout = 0,
                         .targets = targets, .ntargets = 4, .seed = 0};
    if (tr_lora_add(fm, &lc) < 0) die();
    to_config cfg;
    to_config_default(&cfg, TO_ADAMW);
    to_optim *o = to_new(fm, &cfg);
    fw_batch in = {.B = B, .T = T, .ids = ids, .labels = ids, .flags = FW_KEEP | FW_TRAIN};
    double t0 = now();
    float first_loss = one_step(fm, o, &in), last_loss = first_loss;
    double warm = now() - t0, t[64];
    for (int i = 0; i < reps; i++) {
        t0 = now();
        last_loss = one_step(fm, o, &in);
        t[i] = now() - t0;
        fprintf(stderr, "step %d: %.3f s (forward %.3f, backward %.3f, optimizer %.4f)\n", i + 2, t[i],
                part[0], part[1], part[2]);
    }
    qsort(t, (size_t)reps, sizeof t[0], cmp);
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    printf("{\"first_s\": %.4f, \"step_s\": %.4f, \"loss_first\": %.6f, \"loss_last\": %.6f, "
           "\"peak_rss_mb\": %.1f}\n", warm, t[reps / 2], first_loss, last_loss, ru.ru_maxrss / 1024.0);
    to_free(o);
    fw_free(fm);
    mdl_free(m);
    free(ids);
    return 0;
}
