#include "commands/list_tensor.h"
#include <string.h>
#include "util/mem.h"

/* Shape of a rectangular nested list of numbers; -1 with a message otherwise. */
static int shape_of(lv_value *v, int depth, lt_tensor *t, const char *name) {
    if (v->kind != LV_LIST) {
        if (!lv_is_number(v))
            return lp_seterr("`%s`: a tensor holds numbers, found %s", name, lv_type_name(v));
        if (depth == 0 || t->ndim == depth) { t->ndim = depth; return 0; }
        return lp_seterr("`%s`: the nesting is not rectangular", name);
    }
    if (depth >= LT_MAX_DIMS) return lp_seterr("`%s`: more than %d dimensions", name, LT_MAX_DIMS);
    if (t->ndim > depth && t->shape[depth] != v->u.list.n)
        return lp_seterr("`%s`: rows of different lengths (%llu and %zu) at depth %d", name,
                         (unsigned long long)t->shape[depth], v->u.list.n, depth + 1);
    if (t->ndim <= depth) t->shape[depth] = v->u.list.n;
    if (v->u.list.n == 0) {
        if (t->ndim < depth + 1) t->ndim = depth + 1;
        return 0;
    }
    if (t->ndim < depth + 1 && lv_is_number(v->u.list.items[0])) t->ndim = depth + 1;
    for (size_t i = 0; i < v->u.list.n; i++)
        if (shape_of(v->u.list.items[i], depth + 1, t, name)) return -1;
    return 0;
}

static void fill(lv_value *v, float **out) {
    if (v->kind != LV_LIST) { *(*out)++ = (float)lv_as_double(v); return; }
    for (size_t i = 0; i < v->u.list.n; i++) fill(v->u.list.items[i], out);
}

int lt_from_value(lv_value *v, const char *name, lt_tensor *t) {
    memset(t, 0, sizeof *t);
    if (v->kind != LV_LIST && !lv_is_number(v))
        return lp_seterr("`%s`: cannot use %s as a tensor (a weight, or a list of numbers)", name,
                         lv_type_name(v));
    if (shape_of(v, 0, t, name)) return -1;
    t->nelem = 1;
    for (int d = 0; d < t->ndim; d++) t->nelem *= t->shape[d];
    t->data = lp_malloc(sizeof(float) * (t->nelem ? t->nelem : 1));
    if (!t->data) return lp_seterr("out of memory");
    float *p = t->data;
    fill(v, &p);
    return 0;
}

void lt_free(lt_tensor *t) {
    lp_free(t->data);
    t->data = NULL;
}
