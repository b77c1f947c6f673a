/* bench_load.c — time loupe's load of a checkpoint and the listing of its module tree.
 *
 *   bench_load DIR [REPEATS]
 *
 * Prints one JSON object: the first load (ms), the median of REPEATS loads, the listing
 * (every module's line as `layers` would format it), peak RSS and RSS after the first load.
 * Built and run by bench/load/run_bench.py (a one-line cc against libloupe_runtime.a). */
#define _GNU_SOURCE
#include "model/model.h"
#include "util/err.h"
#include "util/sbuf.h"
#include <stdio.h>
#include <stdlib.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

static double now_ms(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec * 1e3 + t.tv_nsec / 1e6;
}

static long rss_kb(void) {   /* resident set now, from /proc/self/statm (pages) */
    long size = 0, res = 0;
    FILE *f = fopen("/proc/self/statm", "r");
    if (f) { if (fscanf(f, "%ld %ld", &size, &res) != 2) res = 0; fclose(f); }
    return res * (sysconf(_SC_PAGESIZE) / 1024);
}

/* One line per module: path, class, shape of its weight, dtype, parameters. */
static size_t listing(const mdl_model *m, sbuf *out) {
    for (size_t i = 1; i < m->nmodules; i++) {
        const mdl_module *mod = m->modules[i];
        const mdl_tensor *w = mdl_param(mod, "weight");
        sb_printf(out, "%s\t%s", mod->path, mod->cls);
        if (w) {
            sb_puts(out, "\t[");
            for (int d = 0; d < w->st->ndim; d++)
                sb_printf(out, "%s%llu", d ? ", " : "", (unsigned long long)w->st->shape[d]);
            sb_printf(out, "] %s", st_dtype_name(w->st->dtype));
        }
        sb_printf(out, "\t%llu\n", (unsigned long long)mod->nparams);
    }
    return m->nmodules - 1;
}

static int cmp_d(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

int main(int argc, char **argv) {
    if (argc < 2) { fprintf(stderr, "usage: bench_load DIR [REPEATS]\n"); return 2; }
    int reps = argc > 2 ? atoi(argv[2]) : 5;
    if (reps < 1) reps = 1;
    double t0 = now_ms();
    mdl_model *m = mdl_load(argv[1]);
    if (!m) { fprintf(stderr, "%s\n", lp_geterr()); return 1; }
    double t1 = now_ms();
    sbuf out;
    sb_init(&out);
    size_t nmod = listing(m, &out);
    double t2 = now_ms();
    long rss_after = rss_kb();
    unsigned long long params = (unsigned long long)m->summary.params;
    mdl_free(m);
    sb_free(&out);
    double *times = malloc(sizeof *times * reps);
    for (int r = 0; r < reps; r++) {
        double a = now_ms();
        mdl_model *mm = mdl_load(argv[1]);
        sbuf o;
        sb_init(&o);
        listing(mm, &o);
        sb_free(&o);
        mdl_free(mm);
        times[r] = now_ms() - a;
    }
    qsort(times, reps, sizeof *times, cmp_d);
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    printf("{\"load_ms\": %.2f, \"list_ms\": %.2f, \"first_total_ms\": %.2f, "
           "\"median_total_ms\": %.2f, \"modules\": %zu, \"params\": %llu, "
           "\"rss_after_load_mb\": %.1f, \"peak_rss_mb\": %.1f}\n",
           t1 - t0, t2 - t1, t2 - t0, times[reps / 2], nmod, params, rss_after / 1024.0,
           ru.ru_maxrss / 1024.0);
    free(times);
    return 0;
}
