/* test_nn_util.h — helpers shared by the nn tests: a seeded test RNG, tensor allocation
 * that the test frees in one go, and the comparison used everywhere:
 *
 *   err(a, ref) = max_i |a_i − ref_i| / max(max_i |ref_i|, floor)
 *
 * i.e. the worst element error relative to the tensor's own magnitude. Elementwise
 * relative error would fail on every output that happens to cross zero, and a tensor is
 * only as precise as its largest entries anyway (f32 sums cancel down to that scale). */
#ifndef LOUPE_TEST_NN_UTIL_H
#define LOUPE_TEST_NN_UTIL_H
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "t.h"

static uint64_t tn_state = 0x1234567887654321ull;

static inline void tn_seed(uint64_t s) { tn_state = s * 2654435761ull + 1; }

static inline uint32_t tn_u32(void) {   // xorshift64*: plenty for test data
    tn_state ^= tn_state >> 12;
    tn_state ^= tn_state << 25;
    tn_state ^= tn_state >> 27;
    return (uint32_t)((tn_state * 0x2545F4914F6CDD1Dull) >> 32);
}

static inline float tn_uniform(float lo, float hi) {
    return lo + (hi - lo) * (float)(tn_u32() >> 8) * (1.0f / 16777216.0f);
}

static inline float tn_normal(void) {
    float u = tn_uniform(1e-7f, 1.0f), v = tn_uniform(0.0f, 1.0f);
    return sqrtf(-2.0f * logf(u)) * cosf(6.2831853f * v);
}

/* Every tensor a test makes goes on this list; tn_free_all() releases them. */
#define TN_MAX_ALLOCS 4096
static void *tn_allocs[TN_MAX_ALLOCS];
static int tn_nallocs;

static inline void *tn_track(void *p) {
    if (!p || tn_nallocs >= TN_MAX_ALLOCS) {
        fprintf(stderr, "test allocation failed\n");
        exit(2);
    }
    return tn_allocs[tn_nallocs++] = p;
}

static inline float *tn_zeros(size_t n) { return (float *)tn_track(calloc(n ? n : 1, sizeof(float))); }

static inline float *tn_randn(size_t n, float scale) {
    float *p = tn_zeros(n);
    for (size_t i = 0; i < n; i++) p[i] = scale * tn_normal();
    return p;
}

static inline float *tn_copy(const float *src, size_t n) {
    float *p = tn_zeros(n);
    memcpy(p, src, n * sizeof(float));
    return p;
}

static inline int *tn_ints(size_t n) { return (int *)tn_track(calloc(n ? n : 1, sizeof(int))); }

static inline void tn_free_all(void) {
    while (tn_nallocs) free(tn_allocs[--tn_nallocs]);
}

static inline double tn_err(const float *a, const float *ref, size_t n, double floor) {
    double mx = floor, worst = 0;
    for (size_t i = 0; i < n; i++) mx = fmax(mx, fabs(ref[i]));
    for (size_t i = 0; i < n; i++) {
        double e = fabs((double)a[i] - ref[i]);
        if (!(e <= worst)) worst = e;   // NaN propagates as the worst error
    }
    return worst / mx;
}

/* Check a tensor against its reference; names the op, tensor and shape on failure. */
#define TN_CLOSE(a, ref, n, tol, ...) do { \
    double _e = tn_err((a), (ref), (n), 1e-6); \
    char _what[200]; snprintf(_what, sizeof _what, __VA_ARGS__); \
    T_CHECK(_e <= (tol), "%s: error %.3g > %.1g", _what, _e, (double)(tol)); } while (0)

#endif
