/* generate.h — text generation with a KV cache: greedy or sampled, token by token.
 *
 *   gn_params p; gn_params_default(&p);          // greedy, 32 tokens
 *   p.temperature = 0.7; p.top_p = 0.9; p.seed = 1;
 *   gn_result r;
 *   if (gn_generate(fm, prompt_ids, n, &p, &r) < 0) show(lp_geterr());
 *   r.ids[0 .. r.n)  the new tokens; r.stop says why it ended; gn_result_free(&r)
 *
 * Sampling follows transformers' order of logits processors: temperature, then top-k, then
 * top-p (the smallest set whose probability reaches top_p, always at least one token), then
 * a draw from the softmax. temperature 0 (or do_sample false) is greedy: the first largest
 * logit, as torch.argmax. The generator is loupe's own (splitmix64), so a seed gives the same
 * tokens on every machine, but not torch's tokens.
 *
 * Stops: a token in stop_ids (eos from config.json / generation_config.json, see
 * gn_eos_from_model), max_tokens, the model's last position, the on_token callback returning
 * non-zero (user stop strings, interrupts). */
#ifndef LOUPE_NN_GENERATE_H
#define LOUPE_NN_GENERATE_H
#include <stddef.h>
#include <stdint.h>

#include "nn/forward.h"

typedef struct gn_params {
    int max_tokens;        /* new tokens at most (≥ 1) */
    double temperature;    /* 0: greedy */
    int top_k;             /* 0: off */
    double top_p;          /* 1: off */
    uint64_t seed;
    const int32_t *stop_ids;   /* [nstop] */
    int nstop;
    /* called after each new token; return non-zero to stop (1: done, -1: error already set
     * with lp_seterr, e.g. interrupted). May be NULL. */
    int (*on_token)(void *ctx, int32_t id);
    void *ctx;
} gn_params;

typedef enum { GN_STOP_MAX, GN_STOP_EOS, GN_STOP_CALLBACK, GN_STOP_LENGTH } gn_stop;

typedef struct gn_result {
    int32_t *ids;   /* [n] new tokens (lp_malloc'd) */
    int n;
    gn_stop stop;
} gn_result;

void gn_params_default(gn_params *p);
/* 0, or -1 + lp_seterr (bad parameters, empty prompt, prompt too long, callback error: the
 * tokens made so far are still in r). Free r with gn_result_free either way. */
int  gn_generate(fw_model *fm, const int32_t *prompt, int n, const gn_params *p, gn_result *r);
void gn_result_free(gn_result *r);

/* eos ids of a model: generation_config.json beside the checkpoint when present, else
 * config.json's eos_token_id (an int or a list). Writes up to cap ids; returns the count. */
int gn_eos_from_model(const mdl_model *m, int32_t *out, int cap);

/* The pure pieces, for tests: pick a token from logits (V); rng is the generator state. */
int32_t gn_sample(float *logits, int V, const gn_params *p, uint64_t *rng);

#endif
