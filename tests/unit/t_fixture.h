/* t_fixture.h — reading reference fixtures (safetensors written by tools/make_*_fixtures.py)
 * and comparing against them.
 *
 *   size_t n;
 *   float *want = t_fx(f, "logits", ST_F32, &n);   // malloc'd copy (free it); NULL + a failed
 *                                                  // check when missing or of another type
 *   double e = t_rel_max(got, want, n);            // max|got − want| / max|want| */
#ifndef LOUPE_T_FIXTURE_H
#define LOUPE_T_FIXTURE_H
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "model/st.h"
#include "t.h"

static inline void *t_fx(const st_file *f, const char *name, st_dtype dt, size_t *n) {
    const st_tensor *t = st_find(f, name);
    T_CHECK(t && t->dtype == dt, "fixture tensor %s missing or of another type", name);
    if (!t || t->dtype != dt) return NULL;
    void *p = malloc(t->nbytes ? t->nbytes : 4);
    memcpy(p, t->data, t->nbytes);
    if (n) *n = (size_t)t->nelem;
    return p;
}

/* max|a−b| / max|b| over n (a NaN in a counts as the worst) */
static inline double t_rel_max(const float *a, const float *b, size_t n) {
    double d = 0, m = 0;
    for (size_t i = 0; i < n; i++) {
        double e = fabs((double)a[i] - b[i]);
        if (!(e <= d)) d = e;
        if (fabs(b[i]) > m) m = fabs(b[i]);
    }
    return m > 0 ? d / m : d;
}

#endif
