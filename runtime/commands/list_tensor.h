/* list_tensor.h — nested lists of numbers as f32 tensors, for commands that take what loupe
 * computed (logits, attention weights, activations come back as nested lists): `save`,
 * `stats`, `show`. */
#ifndef LOUPE_LIST_TENSOR_H
#define LOUPE_LIST_TENSOR_H
#include <stdint.h>
#include "lang/value.h"

#define LT_MAX_DIMS 8

typedef struct lt_tensor {
    int ndim;
    uint64_t shape[LT_MAX_DIMS];
    uint64_t nelem;
    float *data;      /* lp_malloc'd, nelem values, row-major */
} lt_tensor;

/* A number or a rectangular nested list of numbers → *t. -1 after lp_seterr naming `name`
 * (ragged rows, a non-number, too many dimensions, out of memory). */
int  lt_from_value(lv_value *v, const char *name, lt_tensor *t);
void lt_free(lt_tensor *t);

#endif
