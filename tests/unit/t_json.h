/* t_json.h — reading the JSON fixtures (loss curves of tools/make_*_fixtures.py).
 *
 *   int B, T;
 *   int32_t *ids = t_json_ints(json_object_get(batch, "ids"), &B, &T);   // malloc'd, B × T
 *   to_config cfg;
 *   t_json_adamw(curve, &cfg);   // the curve's AdamW: lr, weight decay, betas, eps, clipping,
 *                                // linear schedule (warmup, steps) */
#ifndef LOUPE_T_JSON_H
#define LOUPE_T_JSON_H
#include <jansson.h>
#include <stdint.h>
#include <stdlib.h>

#include "train/optim.h"

static inline int32_t *t_json_ints(json_t *rows, int *B, int *T) {
    *B = (int)json_array_size(rows);
    *T = (int)json_array_size(json_array_get(rows, 0));
    int32_t *x = malloc(sizeof(int32_t) * (size_t)*B * (size_t)*T);
    for (int b = 0; b < *B; b++)
        for (int t = 0; t < *T; t++)
            x[b * *T + t] = (int32_t)json_integer_value(
                json_array_get(json_array_get(rows, (size_t)b), (size_t)t));
    return x;
}

/* The AdamW a loss curve of tools/make_optim_fixtures.py's loop ran (curve_json's keys). */
static inline void t_json_adamw(json_t *fx, to_config *cfg) {
    to_config_default(cfg, TO_ADAMW);
    json_t *betas = json_object_get(fx, "betas");
    cfg->lr = json_number_value(json_object_get(fx, "lr"));
    cfg->weight_decay = json_number_value(json_object_get(fx, "weight_decay"));
    cfg->beta1 = json_number_value(json_array_get(betas, 0));
    cfg->beta2 = json_number_value(json_array_get(betas, 1));
    cfg->eps = json_number_value(json_object_get(fx, "eps"));
    cfg->clip = json_number_value(json_object_get(fx, "clip"));
    cfg->sched = (to_schedule){TO_SCHED_LINEAR, (int)json_integer_value(json_object_get(fx, "warmup")),
                               (int)json_integer_value(json_object_get(fx, "steps")), 0.5};
}

#endif
