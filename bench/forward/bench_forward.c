/* bench_forward.c — time loupe's forward pass for bench/forward/run_bench.py.
 *
 *   bench_forward MODEL_DIR IDS_FILE B T REPEATS LOGITS_OUT
 *
 * IDS_FILE holds B·T little-endian int32 token ids (written by run_bench.py, which gives the
 * same ids to transformers). Prints one JSON line: the first forward (weights widened to f32
 * included), the median of REPEATS inference forwards (layers share one activation set) and
 * of REPEATS forwards that keep every layer's state for a backward, and tokens/s. Writes the
 * logits of the last position of row 0 (V floats) to LOGITS_OUT for a parity check. */
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "backend/backend.h"
#include "model/model.h"
#include "nn/forward.h"
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

/* median seconds of n forwards with `flags` */
static double timed(fw_model *fm, fw_batch *in, int n) {
    double t[64];
    fw_out out;
    for (int i = 0; i < n && i < 64; i++) {
        double t0 = now();
        if (fw_forward(fm, in, &out) < 0) { fprintf(stderr, "%s\n", lp_geterr()); exit(1); }
        t[i] = now() - t0;
    }
    qsort(t, (size_t)n, sizeof t[0], cmp);
    return t[n / 2];
}

int main(int argc, char **argv) {
    if (argc != 7) {
        fprintf(stderr, "usage: %s MODEL_DIR IDS_FILE B T REPEATS LOGITS_OUT\n", argv[0]);
        return 2;
    }
    int B = atoi(argv[3]), T = atoi(argv[4]), reps = atoi(argv[5]);
    int32_t *ids = malloc(sizeof(int32_t) * (size_t)B * T);
    FILE *f = fopen(argv[2], "rb");
    if (!f || fread(ids, sizeof(int32_t), (size_t)B * T, f) != (size_t)B * T) return 1;
    fclose(f);
    double t0 = now();
    mdl_model *m = mdl_load(argv[1]);
    if (!m) { fprintf(stderr, "%s\n", lp_geterr()); return 1; }
    fw_model *fm = fw_new(m, be_cpu());
    if (!fm) { fprintf(stderr, "%s\n", lp_geterr()); return 1; }
    fw_batch in = {.B = B, .T = T, .ids = ids};
    fw_out out;
    if (fw_forward(fm, &in, &out) < 0) { fprintf(stderr, "%s\n", lp_geterr()); return 1; }
    double first = now() - t0;
    float *row = malloc(sizeof(float) * (size_t)out.V);
    fw_backend(fm)->to_host(row, out.logits + (size_t)(T - 1) * out.V, sizeof(float) * (size_t)out.V);
    f = fopen(argv[6], "wb");
    if (!f || fwrite(row, sizeof(float), (size_t)out.V, f) != (size_t)out.V) return 1;
    fclose(f);
    double inf = timed(fm, &in, reps);
    in.flags = FW_KEEP;
    double keep = timed(fm, &in, reps);
    printf("{\"first_s\": %.4f, \"forward_s\": %.4f, \"forward_keep_s\": %.4f, "
           "\"tokens_per_s\": %.1f, \"tokens_per_s_keep\": %.1f}\n",
           first, inf, keep, B * T / inf, B * T / keep);
    fw_free(fm);
    mdl_free(m);
    free(row);
    free(ids);
    return 0;
}
