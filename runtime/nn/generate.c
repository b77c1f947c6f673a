/* generate.c — token-by-token generation over fw_step's KV cache (see generate.h). */
#include "nn/generate.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <jansson.h>

#include "util/err.h"
#include "util/mem.h"

void gn_params_default(gn_params *p) {
    memset(p, 0, sizeof *p);
    p->max_tokens = 32;
    p->top_p = 1.0;
}

void gn_result_free(gn_result *r) {
    lp_free(r->ids);
    r->ids = NULL;
    r->n = 0;
}

/* splitmix64: small, fast, and the same everywhere */
static uint64_t rng_next(uint64_t *s) {
    uint64_t z = (*s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}
static double rng_uniform(uint64_t *s) { return (rng_next(s) >> 11) * (1.0 / 9007199254740992.0); }

static int32_t argmax(const float *x, int V) {
    int32_t best = 0;
    for (int i = 1; i < V; i++)
        if (x[i] > x[best]) best = i;   /* first of equal maxima, as torch.argmax */
    return best;
}

static const float *sort_keys;
static int cmp_desc(const void *a, const void *b) {
    float x = sort_keys[*(const int *)a], y = sort_keys[*(const int *)b];
    if (x != y) return x < y ? 1 : -1;
    return *(const int *)a - *(const int *)b;   /* stable: lower id first */
}

int32_t gn_sample(float *logits, int V, const gn_params *p, uint64_t *rng) {
    if (p->temperature <= 0) return argmax(logits, V);
    for (int i = 0; i < V; i++) logits[i] = (float)(logits[i] / p->temperature);
    int *idx = lp_malloc(sizeof(int) * (size_t)V);
    if (!idx) return argmax(logits, V);   /* out of memory: still a valid token */
    for (int i = 0; i < V; i++) idx[i] = i;
    sort_keys = logits;
    qsort(idx, (size_t)V, sizeof(int), cmp_desc);
    int keep = V;
    if (p->top_k > 0 && p->top_k < V) {   /* ties with the k-th logit stay, as transformers */
        float kth = logits[idx[p->top_k - 1]];
        keep = p->top_k;
        while (keep < V && logits[idx[keep]] == kth) keep++;
    }
    double mx = logits[idx[0]], sum = 0;
    for (int i = 0; i < keep; i++) sum += exp(logits[idx[i]] - mx);
    if (p->top_p < 1.0) {   /* smallest prefix whose probability reaches top_p */
        double cum = 0;
        int n = 0;
        while (n < keep) {
            cum += exp(logits[idx[n]] - mx) / sum;
            n++;
            if (cum >= p->top_p) break;
        }
        keep = n;
        sum = 0;
        for (int i = 0; i < keep; i++) sum += exp(logits[idx[i]] - mx);
    }
    double u = rng_uniform(rng) * sum, acc = 0;
    int32_t pick = idx[keep - 1];
    for (int i = 0; i < keep; i++) {
        acc += exp(logits[idx[i]] - mx);
        if (u < acc) { pick = idx[i]; break; }
    }
    lp_free(idx);
    return pick;
}

static int json_ids(json_t *v, int32_t *out, int cap, int n) {
    if (json_is_integer(v)) {
        if (n < cap) out[n++] = (int32_t)json_integer_value(v);
    } else if (json_is_array(v)) {
        size_t i;
        json_t *e;
        json_array_foreach(v, i, e) if (json_is_integer(e) && n < cap) out[n++] = (int32_t)json_integer_value(e);
    }
    return n;
}

int gn_eos_from_model(const mdl_model *m, int32_t *out, int cap) {
    int n = 0;
    /* generation_config.json next to the checkpoint wins, as in transformers' generate() */
    char path[4096];
    const char *dir = m->path;
    size_t len = strlen(dir);
    if (len > 12 && !strcmp(dir + len - 12, ".safetensors")) {
        const char *slash = strrchr(dir, '/');
        len = slash ? (size_t)(slash - dir) : 0;
    }
    snprintf(path, sizeof path, "%.*s%sgeneration_config.json", (int)len, dir, len ? "/" : "");
    json_t *g = json_load_file(path, 0, NULL);
    if (g) {
        n = json_ids(json_object_get(g, "eos_token_id"), out, cap, 0);
        json_decref(g);
    }
    if (!n && m->config) n = json_ids(json_object_get(m->config->raw, "eos_token_id"), out, cap, 0);
    return n;
}

int gn_generate(fw_model *fm, const int32_t *prompt, int n, const gn_params *p, gn_result *r) {
    memset(r, 0, sizeof *r);
    const fw_info *info = fw_model_info(fm);
    if (n <= 0) return lp_seterr("empty prompt: give at least one token");
    if (p->max_tokens < 1) return lp_seterr("max_tokens must be at least 1, got %d", p->max_tokens);
    if (p->temperature < 0) return lp_seterr("temperature must be ≥ 0, got %g", p->temperature);
    if (p->top_k < 0) return lp_seterr("top_k must be ≥ 0, got %d", p->top_k);
    if (!(p->top_p > 0 && p->top_p <= 1)) return lp_seterr("top_p must be in (0, 1], got %g", p->top_p);
    if (info->max_pos > 0 && n > info->max_pos)
        return lp_seterr("the prompt has %d tokens; this model has %d positions "
                         "(max_position_embeddings)", n, info->max_pos);
    int cap = n + p->max_tokens;
    if (info->max_pos > 0 && cap > info->max_pos) cap = info->max_pos;
    fw_kv *kv = fw_kv_new(fm, cap);
    float *logits = lp_malloc(sizeof(float) * (size_t)info->vocab);
    r->ids = lp_malloc(sizeof(int32_t) * (size_t)p->max_tokens);
    int sw = fw_rope_switch(fm);   /* LongRoPE: the whole sequence again past it */
    int32_t *seq = sw ? lp_malloc(sizeof(int32_t) * (size_t)(n + p->max_tokens)) : NULL;
    if (!kv || !logits || !r->ids || (sw && !seq)) {
        fw_kv_free(fm, kv);
        lp_free(logits);
        lp_free(seq);
        gn_result_free(r);
        return lp_seterr("out of memory");
    }
    if (seq) memcpy(seq, prompt, sizeof(int32_t) * (size_t)n);
    uint64_t rng = p->seed;
    int rc = fw_step(fm, kv, prompt, n, logits);
    r->stop = GN_STOP_MAX;
    while (rc == 0) {
        int32_t id = gn_sample(logits, info->vocab, p, &rng);
        r->ids[r->n++] = id;
        int eos = 0;
        for (int i = 0; i < p->nstop; i++) eos |= p->stop_ids[i] == id;
        int cb = p->on_token ? p->on_token(p->ctx, id) : 0;
        if (cb < 0) { rc = -1; break; }
        if (eos) { r->stop = GN_STOP_EOS; break; }
        if (cb) { r->stop = GN_STOP_CALLBACK; break; }
        if (r->n == p->max_tokens) break;
        if (kv->len >= cap) { r->stop = GN_STOP_LENGTH; break; }
        if (seq) seq[n + r->n - 1] = id;
        if (seq && kv->len == sw) {   /* the cache's keys are the short factors' */
            kv->len = 0;
            rc = fw_step(fm, kv, seq, n + r->n, logits);
        } else {
            rc = fw_step(fm, kv, &id, 1, logits);
        }
    }
    fw_kv_free(fm, kv);
    lp_free(logits);
    lp_free(seq);
    if (rc < 0 && r->n == 0) gn_result_free(r);   /* nothing made: nothing to free later */
    return rc;
}
