/* t_device.h — which device a parity test runs on, and host copies of device memory.
 *
 *   const be_backend *be = t_device();        // LOUPE_TEST_DEVICE: cpu (default), guard, cuda
 *   float *h = t_host(be, out.logits, n);     // malloc'd host copy of n floats (free it)
 *
 * The same test programs run on every device: ctest registers them again with
 * LOUPE_TEST_DEVICE=guard (memory the host cannot touch: every host read of device memory
 * crashes) and, as the `gpu` tests, with LOUPE_TEST_DEVICE=cuda. When the device is not
 * there (no GPU, a build without CUDA) t_device() prints "NOT RUN: …" and exits 77, which
 * ctest reports as skipped (SKIP_RETURN_CODE), never as passed. */
#ifndef LOUPE_T_DEVICE_H
#define LOUPE_T_DEVICE_H
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend/backend.h"
#include "util/err.h"

#define T_SKIP 77

static const char *t_device_name(void) {
    const char *d = getenv("LOUPE_TEST_DEVICE");
    return d && *d ? d : "cpu";
}

static const be_backend *t_device(void) {
    static const be_backend *be;
    if (be) return be;
    setvbuf(stdout, NULL, _IOLBF, 0);   /* a log that survives an abort */
    be = be_get(t_device_name());
    if (!be) {
        printf("NOT RUN on device \"%s\": %s\n", t_device_name(), lp_geterr());
        fflush(stdout);
        exit(T_SKIP);
    }
    return be;
}

/* The device with f32 products whatever LOUPE_CUDA_BF16 says (be_get_dtype), for checks
 * against f32 fixtures; and the one with bf16 products (NULL where there is none). */
static inline const be_backend *t_device_f32(void) {
    const be_backend *be = t_device();
    const be_backend *f = be_get_dtype(t_device_name(), "f32");
    return f ? f : be;
}
static inline const be_backend *t_device_bf16(void) {
    t_device();
    const be_backend *b = be_get_dtype(t_device_name(), "bf16");
    return b && b->bf16 ? b : NULL;
}

/* 1 when the tests run on the CPU (host-visible memory). */
static inline int t_on_cpu(void) { return strcmp(t_device_name(), "cpu") == 0; }

static inline float *t_host(const be_backend *be, const float *dev, size_t n) {
    float *h = malloc(n ? n * sizeof(float) : sizeof(float));
    if (n) be->to_host(h, dev, n * sizeof(float));
    return h;
}

#endif
