/* t_json.h — reading the JSON fixtures (loss curves of tools/make_*_fixtures.py).
 *
 *   int B, T;
 *   int32_t *ids = t_json_ints(json_object_get(batch, "ids"), &B, &T);   // malloc'd, B × T */
#ifndef LOUPE_T_JSON_H
#define LOUPE_T_JSON_H
#include <jansson.h>
#include <stdint.h>
#include <stdlib.h>

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

#endif
