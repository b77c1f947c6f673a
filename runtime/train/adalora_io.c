/* adalora_io.c — PEFT's AdaLoRA adapter files (train_int.h; adapter_io.c writes the directory).
 *
 *   adapter_model.safetensors   "base_model.model.<module>.lora_A" [r, in], ".lora_B" [out, r],
 *                               ".lora_E" [r, 1] (ParameterDicts: no ".weight"; ranknum is not
 *                               saved). Once ranks were dropped, only the kept rows of A and E
 *                               and columns of B are written, and the config's rank_pattern
 *                               says which of the init_r were kept ("<module>.lora_E": [bool]);
 *                               a module that keeps none has zero-size tensors.
 *   adapter_config.json         AdaLoraConfig.to_dict() of peft 0.21.2.
 *
 * A loaded adapter has each module at its saved rank (ranknum stays init_r, as PEFT's
 * resize_modules_by_rank_pattern). One whose ranks were never cut trains on with the allocator
 * from step 0 (a PeftModel loaded with is_trainable=True, its loop counting from 0); one cut
 * by a rank_pattern trains with the regulariser but without the allocator and is saved with
 * the rank_pattern it came with. */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "model/arch.h"
#include "model/st.h"
#include "train/lora.h"
#include "train/train_int.h"
#include "util/err.h"
#include "util/mem.h"

#define PREFIX "base_model.model."

static json_t *num(double v) {
    return v == (double)(long long)v ? json_integer((long long)v) : json_real(v);
}

/* The rank_pattern to write: the loaded one, the allocator's, or null. */
static json_t *pattern_json(const tr_adapter *a) {
    const tr_ada *d = a->ada;
    if (d->pattern) {
        json_t *p = json_loads(d->pattern, 0, NULL);
        return p ? p : json_null();
    }
    if (!d->have_pattern) return json_null();
    json_t *o = json_object();
    for (size_t k = 0; k < a->nsites; k++) {
        json_t *l = json_array();
        for (int j = 0; j < a->sites[k].lo.r; j++) json_array_append_new(l, json_boolean(d->s[k].keep[j]));
        char key[600];
        snprintf(key, sizeof key, "%s.lora_E", a->sites[k].module);
        json_object_set_new(o, key, l);
    }
    return o;
}

json_t *tr_ada_config(fw_model *fm, const tr_adapter *a, json_t *am, json_t *targets, json_t *mts) {
    const mdl_model *m = fw_mdl(fm);
    const tr_ada *d = a->ada;
    json_t *o = json_object();
    struct { const char *k; json_t *v; } kv[] = {
        {"alora_invocation_tokens", json_null()}, {"alpha_pattern", json_object()},
        {"arrow_config", json_null()}, {"auto_mapping", am},
        {"base_model_name_or_path", json_string(m->path)}, {"beta1", json_real(d->beta1)},
        {"beta2", json_real(d->beta2)}, {"bias", json_string("none")},
        {"corda_config", json_null()}, {"deltaT", json_integer(d->delta_t)},
        {"ensure_weight_tying", json_false()}, {"eva_config", json_null()},
        {"exclude_modules", json_null()},
        {"fan_in_fan_out", json_boolean(m->arch && (m->arch->flags & AF_CONV1D))},
        {"inference_mode", json_true()},
        {"init_lora_weights", json_boolean(strcmp(a->init, "false") != 0)},
        {"init_r", json_integer(d->init_r)}, {"kasa_config", json_null()},
        {"layer_replication", json_null()}, {"layers_pattern", json_null()},
        {"layers_to_transform", json_null()}, {"loftq_config", json_object()},
        {"lora_alpha", num(a->alpha)}, {"lora_bias", json_false()},
        {"lora_dropout", json_real(a->dropout)}, {"lora_ga_config", json_null()},
        {"megatron_config", json_null()}, {"megatron_core", json_string("megatron.core")},
        {"modules_to_save", mts}, {"monteclora_config", json_null()},
        {"orth_reg_weight", json_real(d->orth)}, {"peft_type", json_string("ADALORA")},
        {"peft_version", json_string("0.21.2")}, {"qalora_group_size", json_integer(16)},
        {"r", json_integer(8)}, {"rank_pattern", pattern_json(a)}, {"revision", json_null()},
        {"target_modules", targets}, {"target_parameters", json_null()},
        {"target_r", json_integer(d->target_r)}, {"task_type", json_null()},
        {"tfinal", json_integer(d->tfinal)}, {"tinit", json_integer(d->tinit)},
        {"total_step", json_integer(d->total_step)}, {"trainable_token_indices", json_null()},
        {"use_bdlora", json_null()}, {"use_dora", json_false()}, {"use_qalora", json_false()},
        {"use_rslora", json_false()}, {"velora_config", json_null()},
    };
    for (size_t i = 0; i < sizeof kv / sizeof kv[0]; i++) json_object_set_new(o, kv[i].k, kv[i].v);
    return o;
}

/* Rows a save writes for site k: the kept ones when an allocation happened (fresh adapter). */
static int kept(const tr_adapter *a, size_t k) {
    const tr_ada *d = a->ada;
    int r = a->sites[k].lo.r;
    if (d->pattern || !d->have_pattern) return r;
    int n = 0;
    for (int j = 0; j < r; j++) n += d->s[k].keep[j] != 0;
    return n;
}

size_t tr_ada_ntensors(const tr_adapter *a, size_t *floats) {
    size_t f = 0;
    for (size_t k = 0; k < a->nsites; k++) {
        const fw_lora *lo = &a->sites[k].lo;
        f += (size_t)kept(a, k) * (lo->in + lo->out + 1);
    }
    *floats = f + 1;
    return 3 * (a->nsites + a->ada->nempty);
}

static int name(char **out, const char *mod, const char *t) {
    size_t len = strlen(PREFIX) + strlen(mod) + strlen(t) + 1;
    *out = lp_malloc(len);
    if (!*out) return lp_seterr("out of memory");
    snprintf(*out, len, PREFIX "%s%s", mod, t);
    return 0;
}

int tr_ada_tensors(fw_model *fm, const tr_adapter *a, st_wtensor *t, uint64_t *shapes,
                   char **names, float **p) {
    const be_backend *be = fw_backend(fm);
    const tr_ada *d = a->ada;
    size_t i = 0;
    for (size_t k = 0; k < a->nsites + d->nempty; k++) {
        int site = k < a->nsites;
        const fw_lora *lo = site ? &a->sites[k].lo : NULL;
        const char *mod = site ? a->sites[k].module : d->empty[k - a->nsites];
        int in = site ? lo->in : d->empty_in[k - a->nsites];
        int out = site ? lo->out : d->empty_out[k - a->nsites];
        int r = site ? lo->r : 0, n = site ? kept(a, k) : 0;
        float *A = *p, *B = A + (size_t)n * in, *E = B + (size_t)out * n;
        if (site) {   /* the kept rows of A and E, columns of B */
            float *full = lp_malloc(((size_t)r * in + (size_t)out * r + r) * sizeof(float));
            if (!full) return lp_seterr("out of memory");
            float *fa = full, *fb = fa + (size_t)r * in, *fe = fb + (size_t)out * r;
            be->to_host(fa, d->s[k].A, (size_t)r * in * sizeof(float));
            be->to_host(fb, lo->B, (size_t)out * r * sizeof(float));
            be->to_host(fe, d->s[k].E, (size_t)r * sizeof(float));
            int all = n == r, c = 0;
            for (int j = 0; j < r; j++) {
                if (!all && !d->s[k].keep[j]) continue;
                memcpy(A + (size_t)c * in, fa + (size_t)j * in, (size_t)in * sizeof(float));
                for (int o = 0; o < out; o++) B[(size_t)o * n + c] = fb[(size_t)o * r + j];
                E[c++] = fe[j];
            }
            lp_free(full);
        }
        static const char *const sfx[3] = {".lora_A", ".lora_B", ".lora_E"};
        uint64_t sh[3][2] = {{(uint64_t)n, (uint64_t)in}, {(uint64_t)out, (uint64_t)n},
                             {(uint64_t)n, 1}};
        float *data[3] = {A, B, E};
        for (int x = 0; x < 3; x++, i++) {
            if (name(&names[i], mod, sfx[x]) < 0) return -1;
            shapes[2 * i] = sh[x][0];
            shapes[2 * i + 1] = sh[x][1];
            t[i] = (st_wtensor){names[i], ST_F32, 2, shapes + 2 * i, data[x]};
        }
        *p = E + n;
    }
    return 0;
}

/* ---- load ---------------------------------------------------------------------------------- */

static int cfg_int(json_t *cfg, const char *k, int def) {
    json_t *v = json_object_get(cfg, k);
    return json_is_integer(v) ? (int)json_integer_value(v) : def;
}
static double cfg_num(json_t *cfg, const char *k, double def) {
    json_t *v = json_object_get(cfg, k);
    return json_is_number(v) ? json_number_value(v) : def;
}

/* The module of a tensor name PREFIX<module><suffix> with suffix .lora_A/.lora_B/.lora_E. */
static int tensor_module(const char *tn, char *mod, size_t len) {
    size_t pl = strlen(PREFIX), n = strlen(tn);
    if (strncmp(tn, PREFIX, pl) || n < pl + 8) return 0;
    const char *s = tn + n - 7;
    if (strcmp(s, ".lora_A") && strcmp(s, ".lora_B") && strcmp(s, ".lora_E")) return 0;
    snprintf(mod, len, "%.*s", (int)(n - 7 - pl), tn + pl);
    return 1;
}

static int add_empty(tr_ada *d, const char *mod, int in, int out) {
    char **e = lp_realloc(d->empty, (d->nempty + 1) * sizeof *e);
    int *ei = e ? lp_realloc(d->empty_in, (d->nempty + 1) * sizeof *ei) : NULL;
    if (e) d->empty = e;
    if (ei) d->empty_in = ei;
    int *eo = ei ? lp_realloc(d->empty_out, (d->nempty + 1) * sizeof *eo) : NULL;
    if (eo) d->empty_out = eo;
    char *m = eo ? lp_strdup(mod) : NULL;
    if (!m) return lp_seterr("out of memory");
    d->empty[d->nempty] = m, d->empty_in[d->nempty] = in, d->empty_out[d->nempty] = out;
    d->nempty++;
    return 0;
}

/* Check one site's three tensors against weight w: its rank, or -1 + lp_seterr. */
static int site_rank(const st_file *f, const fw_weight *w, const char *mod, const char *file,
                     const st_tensor **tv) {
    static const char *const sfx[3] = {".lora_A", ".lora_B", ".lora_E"};
    for (int x = 0; x < 3; x++) {
        char key[700];
        snprintf(key, sizeof key, PREFIX "%s%s", mod, sfx[x]);
        tv[x] = st_find(f, key);
        if (!tv[x]) return lp_seterr("%s: %s has lora_A but no %s", file, mod, sfx[x] + 1);
        if (tv[x]->ndim != 2) return lp_seterr("%s: %s%s is not 2-D", file, mod, sfx[x]);
    }
    int r = (int)tv[0]->shape[0];
    if ((int)tv[0]->shape[1] != w->in || (int)tv[1]->shape[0] != w->out ||
        (int)tv[1]->shape[1] != r || (int)tv[2]->shape[0] != r || tv[2]->shape[1] != 1)
        return lp_seterr("%s: %s: lora_A/lora_B/lora_E shapes do not fit one rank and the "
                         "module's [%d → %d]", file, mod, w->in, w->out);
    return r;
}

int tr_ada_load(fw_model *fm, tr_adapter *a, json_t *cfg, const st_file *f, const char *file) {
    tr_ada *d = lp_calloc(1, sizeof *d);
    if (!d) return lp_seterr("out of memory");
    a->ada = d;
    d->init_r = cfg_int(cfg, "init_r", 12), d->target_r = cfg_int(cfg, "target_r", 8);
    d->tinit = cfg_int(cfg, "tinit", 0), d->tfinal = cfg_int(cfg, "tfinal", 0);
    d->delta_t = cfg_int(cfg, "deltaT", 1), d->total_step = cfg_int(cfg, "total_step", 0);
    d->beta1 = cfg_num(cfg, "beta1", 0.85), d->beta2 = cfg_num(cfg, "beta2", 0.85);
    d->orth = cfg_num(cfg, "orth_reg_weight", 0.5);
    d->budget = -1;
    if (d->init_r <= 0) return lp_seterr("%s: init_r is missing or not positive", file);
    if (!(d->orth >= 0)) return lp_seterr("%s: orth_reg_weight is negative", file);
    a->r = d->init_r;
    json_t *rp = json_object_get(cfg, "rank_pattern");
    if (json_is_object(rp) && json_object_size(rp)) {
        d->pattern = json_dumps(rp, JSON_COMPACT | JSON_SORT_KEYS);
        d->have_pattern = 1;
        if (!d->pattern) return lp_seterr("out of memory");
    }
    fw_weight *w;
    size_t nw;
    if (fw_weights(fm, &w, &nw) < 0) return -1;
    a->sites = lp_calloc(nw ? nw : 1, sizeof *a->sites);
    if (!a->sites) return lp_seterr("out of memory");
    const st_tensor *tv[3];
    for (size_t i = 0; i < nw; i++) {   /* every module with a lora_A in the file, model order */
        char mod[600], key[700];
        size_t nl = strlen(w[i].name);
        if (nl < 8 || strcmp(w[i].name + nl - 7, ".weight")) continue;
        snprintf(mod, sizeof mod, "%.*s", (int)(nl - 7), w[i].name);
        snprintf(key, sizeof key, PREFIX "%s.lora_A", mod);
        if (!st_find(f, key)) continue;
        if (!w[i].adaptable) return lp_seterr("%s: an adapter on %s, which loupe cannot adapt", file, mod);
        int r = site_rank(f, &w[i], mod, file, tv);
        if (r < 0) return -1;
        if (r == 0) {
            if (add_empty(d, mod, w[i].in, w[i].out) < 0) return -1;
            continue;
        }
        if (tr_site_init(a, &w[i], mod, FW_AD_LORA) < 0) return -1;
        a->sites[a->nsites - 1].lo.r = r;
    }
    for (size_t i = 0; i < f->ntensors; i++) {   /* a tensor for a module this model lacks */
        const char *tn = f->tensors[i].name;
        char mod[600];
        int known = 0;
        if (tensor_module(tn, mod, sizeof mod)) {
            for (size_t k = 0; k < a->nsites && !known; k++) known = !strcmp(a->sites[k].module, mod);
            for (size_t k = 0; k < d->nempty && !known; k++) known = !strcmp(d->empty[k], mod);
        }
        if (!known && !strncmp(tn, PREFIX, strlen(PREFIX)))
            known = tr_mts_tensor(cfg, w, nw, tn + strlen(PREFIX));
        if (!known)
            return lp_seterr("%s: tensor `%s` does not belong to a module of this model "
                             "(an adapter for another architecture?)", file, tn);
    }
    if (!a->nsites) return lp_seterr("%s: no AdaLoRA tensors with a rank above 0", file);
    /* ranks never cut (no rank_pattern, every module at init_r) and a schedule PEFT accepts:
       the allocator runs from step 0, as on a PeftModel loaded with is_trainable=True */
    int full = !d->pattern && !d->nempty;
    for (size_t k = 0; k < a->nsites; k++) full &= a->sites[k].lo.r == d->init_r;
    d->allocate = full && d->total_step > 0 && d->tinit >= 0 && d->tfinal >= 0 &&
                  d->tinit < d->total_step - d->tfinal && d->delta_t > 0 && d->target_r >= 0 &&
                  d->target_r < d->init_r && d->beta1 > 0 && d->beta1 < 1 && d->beta2 > 0 &&
                  d->beta2 < 1;
    if (tr_adapter_install(fm, a, NULL, 0) < 0) return -1;
    const be_backend *be = fw_backend(fm);
    for (size_t k = 0; k < a->nsites; k++) {
        fw_lora *lo = &a->sites[k].lo;
        fw_weight *wk = NULL;
        for (size_t i = 0; i < nw && !wk; i++)
            if (w[i].data == lo->base) wk = &w[i];
        site_rank(f, wk, a->sites[k].module, file, tv);
        float *dst[3] = {d->s[k].A, lo->B, d->s[k].E};
        for (int x = 0; x < 3; x++) {
            float *host = lp_malloc((size_t)tv[x]->nelem * sizeof(float));
            if (!host) return lp_seterr("out of memory");
            int bad = st_to_f32(host, tv[x]->data, tv[x]->dtype, 0, (size_t)tv[x]->nelem) < 0;
            if (!bad) be->to_device(dst[x], host, (size_t)tv[x]->nelem * sizeof(float));
            lp_free(host);
            if (bad) return lp_preferr("%s: %s", file, a->sites[k].module);
        }
    }
    if (tr_ada_sync(fm, a) < 0) return -1;
    return tr_load_mts(fm, a, cfg, f, file);
}
