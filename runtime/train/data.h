/* data.h — datasets for training: read text records, tokenize them, split, shuffle, batch.
 *
 *   td_config cfg;  td_config_default(&cfg);  cfg.max_len = 128;
 *   td_dataset *train, *eval;
 *   if (td_open("data/train.jsonl", &cfg, &train, &eval) < 0) show(lp_geterr());
 *   td_tokenize(train, tok, pad_id);  td_tokenize(eval, tok, pad_id);
 *   td_batch b;  td_next(train, 4, &b);   // (B,T) ids, mask, labels, right-padded
 *
 * Files (the format is chosen by the extension):
 *   .jsonl  one JSON object per line; `field` (default "text") is the text, or `prompt` and
 *           `response` fields joined by a template: the prompt's tokens are masked out of
 *           the loss (label −100), as TRL's completion-only training does. Tokens are
 *           encoded separately (prompt with the tokenizer's special tokens, response
 *           without) so the boundary is exact. A `label` field (int) makes a
 *           classification example (one label per row).
 *   .txt    one example per non-empty line, or (by_line = 0) the whole file as one document
 *           (use packing or truncation).
 *   .csv    a header row, then rows (RFC 4180 quoting); `field` names the text column, `label`
 *           an int class column.
 * Lengths: each example is truncated to max_len; a batch is padded on the right to its
 * longest row (transformers' DataCollatorWithPadding) with the tokenizer's pad id (or eos
 * when it has none, the usual `tokenizer.pad_token = tokenizer.eos_token`), mask 0 and
 * label −100. Packing concatenates every example (eos between them when eos=1) and cuts
 * max_len blocks, dropping the remainder, as transformers' run_clm `group_texts`.
 * Split: the examples are shuffled once with the seed, the first `eval` of them (a
 * count, or a fraction of the whole) become the eval set. Order: shuffled again (seed +
 * epoch) at every epoch when shuffle is on; `td_next` wraps to a new epoch by itself. */
#ifndef LOUPE_TRAIN_DATA_H
#define LOUPE_TRAIN_DATA_H
#include <stddef.h>
#include <stdint.h>

#include "model/tok.h"

typedef struct td_config {
    const char *field;      /* text field / column ("text") */
    const char *prompt;     /* prompt field name, or NULL (then `field`) */
    const char *response;   /* response field name, or NULL */
    const char *template_;  /* how prompt and response are joined: "{prompt}{response}" */
    const char *label;      /* class label field / column, or NULL */
    int max_len;            /* truncation / block size (> 0) */
    int pack;               /* 1: pack into max_len blocks */
    int by_line;            /* .txt: one example per line (1) or the whole file (0) */
    int eos;                /* append eos to every example (when the tokenizer has one) */
    double eval;            /* 0: no eval split; < 1: a fraction; >= 1: a count */
    int shuffle;
    uint64_t seed;
} td_config;

void td_config_default(td_config *c);

typedef struct td_example {
    int32_t *ids;           /* [n] */
    int32_t *labels;        /* [n] (−100 on prompt tokens), or NULL for a classifier row */
    int32_t cls;            /* class label (classification), else −1 */
    int n;
} td_example;

typedef struct td_dataset td_dataset;

/* Read and split a file. *train gets every example not held out; *eval the held-out ones (or
 * NULL when cfg->eval is 0). Nothing is tokenized yet. -1 + lp_seterr for a missing or
 * malformed file (with its line number), a missing field, an empty result. */
int td_open(const char *path, const td_config *cfg, td_dataset **train, td_dataset **eval);
void td_free(td_dataset *d);

/* Tokenize (once; later calls with a tokenizer do nothing). pad: the padding id. -1 +
 * lp_seterr on a text the tokenizer rejects. */
int td_tokenize(td_dataset *d, tok_tokenizer *tok);
int td_tokenized(const td_dataset *d);

/* Facts for display. */
typedef struct td_info {
    const char *path;       /* as given */
    const char *split;      /* "train" or "eval" */
    size_t records;         /* raw records in this split */
    size_t examples;        /* after tokenizing (packed blocks when packing); 0 before */
    size_t tokens;          /* tokens over all examples */
    size_t targets;         /* labels != −100 (what the loss counts) */
    int max_len, pack, classify;
    long epoch;             /* completed passes over the data */
    size_t cursor;          /* position in the current epoch */
    int32_t pad;
} td_info;
void td_get_info(const td_dataset *d, td_info *info);
const td_example *td_example_at(const td_dataset *d, size_t i);   /* NULL past the end */
const char *td_record_text(const td_dataset *d, size_t i);       /* raw text (display) */

/* A batch: host (B,T) arrays, right-padded. Classification: labels (B). */
typedef struct td_batch {
    int B, T;
    int32_t *ids, *mask, *labels;
    int classify;
    long targets;           /* labels != −100 */
} td_batch;

/* The next `size` examples in the current order (fewer never: it wraps into the next
 * epoch). *epoch_end set to 1 when this batch finished an epoch. -1 + lp_seterr when the
 * dataset is not tokenized or on OOM. */
int  td_next(td_dataset *d, int size, td_batch *out, int *epoch_end);
/* Examples [from, from+size) in file order (evaluation: no shuffling, no wrap). */
int  td_slice(const td_dataset *d, size_t from, int size, td_batch *out);
void td_batch_free(td_batch *b);
/* Reset the order to the first epoch (deterministic reruns). */
void td_rewind(td_dataset *d);
size_t td_len(const td_dataset *d);   /* examples (0 before tokenizing) */

#endif
