/* t_broken.h — a checkpoint written again with one tensor changed, which must not load.
 *
 *   t_broken b;
 *   if (t_broken_open(&b, "tests/fixtures/models/llama-nf4-bnb") == 0) {
 *       t_broken_load(&b, "W.absmax", NULL, 0, ST_U8, "W.weight", "no absmax");  // dropped
 *       t_broken_load(&b, "W.absmax", few, 3, ST_U8, "W.weight", "short absmax");
 *   }
 *   t_broken_close(&b);
 *
 * The changed tensor holds n bytes of data, shape [n] (U8, I8) or [n/4] (F32); loading must
 * fail with `expect` (the weight's name) in the message. */
#ifndef LOUPE_T_BROKEN_H
#define LOUPE_T_BROKEN_H
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "model/model.h"
#include "model/st.h"
#include "t.h"
#include "util/err.h"

typedef struct t_broken {
    char dir[32];
    const char *src;
} t_broken;

static inline int t_broken_open(t_broken *b, const char *src) {
    char cmd[600];
    snprintf(b->dir, sizeof b->dir, "/tmp/loupe_broken_XXXXXX");
    b->src = src;
    if (!mkdtemp(b->dir)) return b->dir[0] = 0, -1;
    snprintf(cmd, sizeof cmd, "cp %s/config.json %s/", src, b->dir);
    T_OK(system(cmd) == 0);
    return 0;
}

static inline void t_broken_load(const t_broken *b, const char *name, const void *data, size_t n,
                                 st_dtype dt, const char *expect, const char *why) {
    char path[600];
    snprintf(path, sizeof path, "%s/model.safetensors", b->src);
    st_file *f = st_open(path);
    T_CHECK(f != NULL, "%s", lp_geterr());
    if (!f) return;
    st_wtensor *w = calloc(f->ntensors, sizeof *w);
    uint64_t shape = dt == ST_F32 ? n / 4 : n;
    size_t k = 0;
    for (size_t i = 0; i < f->ntensors; i++) {
        const st_tensor *t = &f->tensors[i];
        if (!strcmp(t->name, name)) {
            if (!data) continue;
            w[k++] = (st_wtensor){t->name, dt, 1, &shape, data};
        } else {
            w[k++] = (st_wtensor){t->name, t->dtype, t->ndim, t->shape, t->data};
        }
    }
    snprintf(path, sizeof path, "%s/model.safetensors", b->dir);
    T_OK(st_write(path, w, k, NULL, 0) == 0);
    mdl_model *m = mdl_load(b->dir);
    T_CHECK(!m, "%s: loaded", why);
    T_CONTAINS(lp_geterr(), expect);
    printf("broken (%s): %s\n", why, lp_geterr());
    mdl_free(m);
    free(w);
    st_close(f);
}

static inline void t_broken_close(t_broken *b) {
    char cmd[600];
    if (!b->dir[0]) return;
    snprintf(cmd, sizeof cmd, "rm -rf %s", b->dir);
    T_OK(system(cmd) == 0);
}

#endif
