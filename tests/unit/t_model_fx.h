/* t_model_fx.h — a fixture file (safetensors from tools/make_*_fixtures.py) with the tiny
 * checkpoint it was made on, loaded on the device under test, and its batch.
 *
 *   fx x;
 *   if (fx_open(&x, "tests/fixtures/adalora/grad_llama.safetensors",
 *               "tests/fixtures/models/llama") == 0) { ... x.fm, x.ids, x.mask, x.labels ... }
 *   fx_close(&x);      // always (fx_open may fail half-way) */
#ifndef LOUPE_T_MODEL_FX_H
#define LOUPE_T_MODEL_FX_H
#include <stdlib.h>
#include <string.h>

#include "model/model.h"
#include "model/st.h"
#include "nn/forward.h"
#include "t.h"
#include "t_device.h"
#include "t_fixture.h"
#include "util/err.h"

typedef struct fx {
    st_file *f;
    mdl_model *m;
    fw_model *fm;
    int32_t *ids, *mask, *labels;   /* labels NULL when the file has none */
    int B, T;
} fx;

static inline int fx_open(fx *x, const char *fixture, const char *model) {
    memset(x, 0, sizeof *x);
    x->f = st_open(fixture);
    T_CHECK(x->f != NULL, "%s", lp_geterr());
    x->m = mdl_load(model);
    T_CHECK(x->m != NULL, "%s", lp_geterr());
    if (!x->f || !x->m) return -1;
    x->fm = fw_new(x->m, t_device());
    T_CHECK(x->fm != NULL, "%s", lp_geterr());
    const st_tensor *t = st_find(x->f, "ids");
    x->B = (int)t->shape[0];
    x->T = (int)t->shape[1];
    x->ids = t_fx(x->f, "ids", ST_I32, NULL);
    x->mask = t_fx(x->f, "mask", ST_I32, NULL);
    x->labels = st_find(x->f, "labels") ? t_fx(x->f, "labels", ST_I32, NULL) : NULL;
    return x->fm ? 0 : -1;
}

static inline void fx_close(fx *x) {
    fw_free(x->fm);
    mdl_free(x->m);
    st_close(x->f);
    free(x->ids);
    free(x->mask);
    free(x->labels);
}

#endif
