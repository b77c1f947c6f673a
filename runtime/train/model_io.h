/* model_io.h — whole models made and written by loupe: `create` (a config and seeded random
 * weights) and `save MODEL DIR` (a Hugging Face checkpoint transformers loads).
 *
 *   json_t *cfg = tr_create_config("llama", overrides, &err_kind);   // config.json as
 *                                                                    // transformers writes it
 *   mdl_model *m = tr_create(cfg, 0, ST_F32, "created llama");   // weights in memory
 *   tr_model_save(m, fm, "out/tiny", ST_NDTYPES, NULL);          // config.json,
 *                                                                // model.safetensors, tokenizer
 *
 * Initialisation follows transformers' _init_weights (PreTrainedModel and the GPT-2, Gemma
 * and BERT overrides): Linear, Conv1D and Embedding weights ~ N(0, initializer_range²), the
 * embedding's padding_idx row (pad_token_id) zero, biases zero, norm weights one (Gemma's
 * (1+w) RMSNorm: zero), GPT-2's c_proj weights ~ N(0, (initializer_range/√(2·n_layer))²).
 * The normal draws come from loupe's counter-based generator (nn_rand_normal, Box–Muller),
 * not torch's: the same distribution, other numbers. Tensor i of the model (in the order of
 * the architecture table) uses counters from the sum of the sizes before it, so a seed gives
 * the same weights on every machine. */
#ifndef LOUPE_TRAIN_MODEL_IO_H
#define LOUPE_TRAIN_MODEL_IO_H
#include <stdint.h>
#include <jansson.h>

#include "model/model.h"
#include "nn/forward.h"

/* The names `create` accepts: model types ("llama", "gpt2", "bert"…) and architecture class
 * names ("BertForSequenceClassification"). The config transformers 5.24 saves for that class's
 * defaults, with `architectures` set (new reference, NULL + lp_seterr for an unknown name). */
json_t *tr_create_defaults(const char *arch);
/* For messages: "llama, mistral, qwen2, gemma, gemma2, gpt2, bert". */
const char *tr_create_names(void);

/* A model from a complete config (borrowed) with random weights of dtype (F32, BF16, F16).
 * `name` becomes m->path. NULL + lp_seterr (an unknown architecture, bad sizes, a model too
 * large for this machine's memory, out of memory). */
mdl_model *tr_create(json_t *config, uint64_t seed, st_dtype dtype, const char *name);

/* Write m as a Hugging Face checkpoint into dir: config.json (m's config with architectures,
 * model_type, dtype and torch_dtype), model.safetensors (transformers' names; tied weights
 * left out as save_pretrained does), generation_config.json and the tokenizer files when m's
 * directory has them (or tok_json's directory). Values: fm's live f32 weights when fm is
 * given (training, merges), else the checkpoint's. dtype ST_NDTYPES: each tensor keeps its
 * own stored dtype. The directory appears atomically (util/savedir.h). */
int tr_model_save(const mdl_model *m, fw_model *fm, const char *dir, st_dtype dtype);

#endif
