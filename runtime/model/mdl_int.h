/* mdl_int.h — what mdl_load.c and mdl_bnb.c share: a stored tensor on its way into the
 * model. */
#ifndef MDL_INT_H
#define MDL_INT_H

#include "model/model.h"

typedef struct entry {
    const st_tensor *st;
    const st_file   *file;
    char            *canon;   /* canonical name (owned until moved into mdl_tensor) */
    int              row;     /* arch tensor row, -1 when none matched */
    int              layer;
    int              drop;    /* buffer, an lm_head that is really the tied embedding, or a
                                 bitsandbytes 4-bit weight's companion (absmax, quant_map, …) */
    const mdl_q4    *q4;      /* a bitsandbytes 4-bit weight (mdl_bnb.c), else NULL */
} entry;

/* transformers' bitsandbytes 4-bit checkpoints (mdl_bnb.c): each `W.weight.quant_state.
 * bitsandbytes__nf4|fp4` found folds its weight's companions into an mdl_q4 record (m->q4s),
 * gives W.weight its logical shape (m->q4_st) and drops the companions. 0 when there are
 * none; -1 + lp_seterr on a malformed or unsupported one. */
int mdl_bnb_fold(mdl_model *m, entry *es, size_t n);

#endif
