/* data.h (commands) — the language values of runtime/train/data.h: `dataset` and `batch`.
 *
 *   data = dataset "data/train.jsonl" model=m max_len=128 eval=0.1
 *   b = next data size=4            # a batch value: a table; b.ids, b.mask, b.labels
 *   out = forward m b               # forward.c reads batch values through cmd_batch_of
 */
#ifndef LOUPE_COMMANDS_DATA_H
#define LOUPE_COMMANDS_DATA_H
#include "lang/registry.h"
#include "train/data.h"

extern const lv_type lv_dataset_type, lv_batch_type;

/* The batch behind a batch value (borrowed), or NULL. */
const td_batch *cmd_batch_of(lv_value *v);

/* The dataset behind a dataset value, tokenized with the tokenizer of `model` (a model value)
 * when it was made without one. NULL after lp_fail. */
td_dataset *cmd_dataset_ready(lp_call *c, lv_value *data, lv_value *model);

#endif
