/* t_peft.h — a model's adapter tensors, logits and gradients against a peft fixture (the
 * 4-bit tests test_nf4 and test_q4, and test_adalora; tools/make_nf4_fixtures.py,
 * make_q4_fixtures.py, make_adalora_fixtures.py). */
#ifndef T_PEFT_H
#define T_PEFT_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "t.h"
#include "t_device.h"
#include "t_fixture.h"

#include "nn/backward.h"
#include "nn/forward.h"
#include "train/params.h"
#include "util/err.h"

static inline double logits_err(fw_model *fm, const fw_batch *in, const float *want, float *loss) {
    fw_out out;
    T_CHECK(fw_forward(fm, in, &out) == 0, "%s", lp_geterr());
    if (loss) *loss = out.loss;
    size_t n = (size_t)in->B * in->T * (size_t)fw_model_info(fm)->vocab;
    float *got = t_host(fw_backend(fm), out.logits, n);
    double e = t_rel_max(got, want, n);
    free(got);
    return e;
}

/* Every trainable tensor set to the fixture's "<prefix><name>" (prefix "lora." and the
 * like, or ""), where the fixture has it. */
static inline void set_params(fw_model *fm, const st_file *f, const char *prefix) {
    tr_params *P = tr_params_of(fm);
    for (size_t i = 0; i < P->n; i++) {
        char k[600];
        snprintf(k, sizeof k, "%s%s", prefix, P->p[i].name);
        size_t n;
        float *v = t_fx(f, k, ST_F32, &n);
        if (v) T_EQ_INT(n, P->p[i].numel);
        if (v) fw_backend(fm)->to_device(P->p[i].data, v, n * sizeof(float));
        free(v);
    }
}

/* The fixture's batch (ids, mask, labels: free them) for a FW_KEEP forward. */
static inline fw_batch fixture_batch(const st_file *f) {
    const st_tensor *ti = st_find(f, "ids");
    return (fw_batch){.B = (int)ti->shape[0], .T = (int)ti->shape[1],
                      .ids = t_fx(f, "ids", ST_I32, NULL), .mask = t_fx(f, "mask", ST_I32, NULL),
                      .labels = t_fx(f, "labels", ST_I32, NULL), .flags = FW_KEEP};
}

/* A backward of the last forward, then every trainable gradient against "grad.<name>" (each
 * within tol of its tensor's largest); the worst relative error. */
static inline double check_grads(fw_model *fm, const st_file *f, double tol) {
    tr_params *P = tr_params_of(fm);
    const be_backend *be = fw_backend(fm);
    tr_params_zero_grad(P, be);
    T_CHECK(bw_backward(fm, 1.0f) == 0, "%s", lp_geterr());
    size_t nfix = 0;
    for (size_t i = 0; i < f->ntensors; i++) nfix += !strncmp(f->tensors[i].name, "grad.", 5);
    T_EQ_INT(P->n, nfix);
    double worst = 0;
    for (size_t i = 0; i < P->n; i++) {
        char k[600];
        snprintf(k, sizeof k, "grad.%s", P->p[i].name);
        size_t n;
        float *ref = t_fx(f, k, ST_F32, &n);
        if (!ref) continue;
        float *got = t_host(be, P->p[i].grad, n);
        double e = t_rel_max(got, ref, n);
        T_CHECK(e <= tol, "%s: relative error %.3g", P->p[i].name, e);
        if (e > worst) worst = e;
        free(got), free(ref);
    }
    return worst;
}

/* Adapter directory src copied into a new temporary directory (its path into dir, 64 bytes)
 * with the first `from` in its adapter_config.json replaced by `to`: 0, or -1 (T_CHECK'ed)
 * when `from` is not in it. */
static inline int t_adapter_variant(const char *src, const char *from, const char *to,
                                    char *dir) {
    char p[600];
    snprintf(dir, 64, "/tmp/loupe_variant_XXXXXX");
    T_OK(mkdtemp(dir) != NULL);
    size_t len;
    snprintf(p, sizeof p, "%s/adapter_config.json", src);
    char *cfg = t_slurp(p, NULL);
    snprintf(p, sizeof p, "%s/adapter_model.safetensors", src);
    char *blob = t_slurp(p, &len);
    char *at = cfg ? strstr(cfg, from) : NULL;
    T_CHECK(at && blob, "%s: `%s` is not in its config", src, from);
    if (at && blob) {
        snprintf(p, sizeof p, "%s/adapter_config.json", dir);
        FILE *o = fopen(p, "w");
        fprintf(o, "%.*s%s%s", (int)(at - cfg), cfg, to, at + strlen(from));
        fclose(o);
        snprintf(p, sizeof p, "%s/adapter_model.safetensors", dir);
        o = fopen(p, "wb");
        fwrite(blob, 1, len, o);
        fclose(o);
    }
    free(cfg), free(blob);
    return at && blob ? 0 : -1;
}

#endif
