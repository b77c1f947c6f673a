/* lora.c — LoRA adapters like PEFT's, partial fine-tuning, the trainable report (lora.h).
 * PEFT's file layout is in adapter_io.c. */
#include "train/lora.h"

#include <math.h>
#include <regex.h>
#include <stdio.h>
#include <string.h>

#include "model/arch.h"
#include "nn/ops.h"
#include "train/train_int.h"
#include "util/err.h"
#include "util/mem.h"
#include "util/sbuf.h"

void tr_adapter_free(fw_model *fm, tr_adapter *a) {
    if (!a) return;
    for (size_t i = 0; i < a->nsites; i++) {
        fw_lora_detach(fm, &a->sites[i].lo);
        lp_free(a->sites[i].module);
    }
    lp_free(a->sites);
    fw_backend(fm)->free(a->buf);
    if (a->nmts) {
        fw_weight *w;
        size_t nw;
        if (a->mts_live) tr_mts_swap(fm, a, 0);
        if (fw_weights(fm, &w, &nw) == 0)
            for (size_t i = 0; i < a->nmts; i++)
                if (a->mts[i].own_grad) {
                    fw_backend(fm)->free(w[a->mts[i].w].grad);
                    w[a->mts[i].w].grad = NULL;
                }
    }
    for (size_t i = 0; i < a->nmts; i++) {
        lp_free(a->mts[i].orig);
        lp_free(a->mts[i].mine);
    }
    lp_free(a->mts);
    for (size_t i = 0; i < a->nmts_names; i++) lp_free(a->mts_names[i]);
    lp_free(a->mts_names);
    for (size_t i = 0; i < a->ntargets; i++) lp_free(a->targets[i]);
    lp_free(a->targets);
    lp_free(a->name);
    lp_free(a->init);
    lp_free(a);
}

static tr_adapter *find_adapter(tr_state *s, const char *name, size_t *idx) {
    for (size_t i = 0; i < s->nad; i++)
        if (!strcmp(s->ad[i]->name, name)) {
            if (idx) *idx = i;
            return s->ad[i];
        }
    return NULL;
}

/* ---- target matching ------------------------------------------------------------------------ */

/* Python regex → POSIX ERE, for the common forms: \d, (?:, and the whole-name anchor. */
static char *py_to_ere(const char *pat) {
    sbuf b;
    sb_init(&b);
    sb_printf(&b, "^(");
    for (const char *p = pat; *p; p++) {
        if (p[0] == '\\' && p[1] == 'd') { sb_printf(&b, "[0-9]"); p++; }
        else if (p[0] == '(' && p[1] == '?' && p[2] == ':') { sb_printf(&b, "("); p += 2; }
        else sb_printf(&b, "%c", *p);
    }
    sb_printf(&b, ")$");
    return b.oom ? (sb_free(&b), NULL) : sb_take(&b);
}

/* Does module `name` match the adapter's targets (PEFT's check_target_module_exists)? */
static int target_match(const tr_adapter *a, const regex_t *re, const fw_weight *w,
                        const char *name) {
    if (a->all_linear) return !w->is_head;
    if (a->target_regex) return regexec(re, name, 0, NULL, 0) == 0;
    size_t n = strlen(name);
    for (size_t i = 0; i < a->ntargets; i++) {
        const char *t = a->targets[i];
        size_t k = strlen(t);
        if (!strcmp(name, t)) return 1;
        if (n > k && name[n - k - 1] == '.' && !strcmp(name + n - k, t)) return 1;
    }
    return 0;
}

/* The module name of a `.weight` parameter, into buf. */
static int module_of(const char *pname, char *buf, size_t len) {
    size_t n = strlen(pname);
    if (n < 8 || strcmp(pname + n - 7, ".weight")) return -1;
    snprintf(buf, len, "%.*s", (int)(n - 7), pname);
    return 0;
}

/* ---- making an adapter ---------------------------------------------------------------------- */

/* Allocate A, B, dA, dB for every site in one device buffer; A, B from the initialiser (or
 * left zero when init == NULL: the loader fills them). */
static int alloc_sites(fw_model *fm, tr_adapter *a, const char *init, uint64_t seed) {
    const be_backend *be = fw_backend(fm);
    size_t total = 0;
    for (size_t i = 0; i < a->nsites; i++) {
        fw_lora *lo = &a->sites[i].lo;
        total += 2 * ((size_t)lo->r * lo->in + (size_t)lo->out * lo->r);
    }
    a->buf = be->alloc(total * sizeof(float));
    if (!a->buf) return lp_preferr("LoRA weights (%.1f MB)", total * 4.0 / 1e6);
    be->zero(a->buf, total * sizeof(float));
    size_t maxa = 0;
    for (size_t i = 0; i < a->nsites; i++) {
        size_t k = (size_t)a->sites[i].lo.r * a->sites[i].lo.in;
        if (k > maxa) maxa = k;
    }
    float *host = lp_malloc((maxa ? maxa : 1) * sizeof(float));
    if (!host) return lp_seterr("out of memory");
    float *p = a->buf;
    uint64_t off = 0;
    for (size_t i = 0; i < a->nsites; i++) {
        fw_lora *lo = &a->sites[i].lo;
        size_t na = (size_t)lo->r * lo->in, nb = (size_t)lo->out * lo->r;
        lo->A = p; p += na;
        lo->B = p; p += nb;
        lo->dA = p; p += na;
        lo->dB = p; p += nb;
        if (init) {
            if (!strcmp(init, "gaussian"))
                nn_rand_normal(host, seed, off, 0.0f, 1.0f / (float)lo->r, na);
            else {
                float bound = 1.0f / sqrtf((float)lo->in);
                nn_rand_uniform(host, seed, off, -bound, bound, na);
            }
            be->to_device(lo->A, host, na * sizeof(float));
        }
        off += na;
    }
    lp_free(host);
    return 0;
}

static float lora_scale(double alpha, int r, int rslora) {
    return (float)(rslora ? alpha / sqrt((double)r) : alpha / r);
}

/* Allocate, attach and register an adapter whose sites are filled; it becomes active. */
int tr_adapter_install(fw_model *fm, tr_adapter *a, const char *init, uint64_t seed) {
    tr_state *s = tr_state_of(fm);
    if (!s) return -1;
    if (alloc_sites(fm, a, init, seed) < 0) return -1;
    for (size_t i = 0; i < a->nsites; i++)
        if (fw_lora_attach(fm, &a->sites[i].lo) < 0) {
            for (size_t k = 0; k < i; k++) fw_lora_detach(fm, &a->sites[k].lo);
            return -1;
        }
    tr_adapter **ad = lp_realloc(s->ad, (s->nad + 1) * sizeof *ad);
    if (!ad) {
        for (size_t k = 0; k < a->nsites; k++) fw_lora_detach(fm, &a->sites[k].lo);
        return lp_seterr("out of memory");
    }
    s->ad = ad;
    s->ad[s->nad++] = a;
    int prev = s->active;
    if (tr_adapter_set_active(fm, a->name) == 0) return 0;
    /* undo: the caller frees `a`; the previous active adapter trains again */
    s->nad--;
    for (size_t k = 0; k < a->nsites; k++) fw_lora_detach(fm, &a->sites[k].lo);
    s->active = -1;
    if (prev >= 0) tr_adapter_set_active(fm, s->ad[prev]->name);
    else tr_params_rebuild(fm);
    return -1;
}

/* Fill one site on weight w (module name mod). */
int tr_site_init(tr_adapter *a, const fw_weight *w, const char *mod) {
    tr_site *st = &a->sites[a->nsites];
    st->module = lp_strdup(mod);
    if (!st->module) return lp_seterr("out of memory");
    a->nsites++;
    st->lo.base = w->data;
    st->lo.r = a->r;
    st->lo.in = w->in;
    st->lo.out = w->out;
    st->lo.scale = lora_scale(a->alpha, a->r, a->rslora);
    st->lo.dropout = (float)a->dropout;
    st->lo.enabled = 1;
    return 0;
}

/* A new adapter with sites chosen by its targets, installed. */
static int add_adapter(fw_model *fm, tr_adapter *a, const char *init, uint64_t seed,
                       const regex_t *re) {
    fw_weight *w;
    size_t nw;
    if (fw_weights(fm, &w, &nw) < 0) return -1;
    a->sites = lp_calloc(nw ? nw : 1, sizeof *a->sites);
    if (!a->sites) return lp_seterr("out of memory");
    for (size_t i = 0; i < nw; i++) {
        char mod[512];
        if (w[i].kind == FW_W_OTHER || module_of(w[i].name, mod, sizeof mod) < 0) continue;
        if (!target_match(a, re, &w[i], mod)) continue;
        if (!w[i].adaptable)
            return lp_seterr("target `%s`: loupe has no LoRA on the output layer (lm_head)", mod);
        if (tr_site_init(a, &w[i], mod) < 0) return -1;
    }
    if (!a->nsites) {
        sbuf b;
        sb_init(&b);
        for (size_t i = 0; i < a->ntargets; i++) sb_printf(&b, "%s`%s`", i ? ", " : "", a->targets[i]);
        lp_seterr("no module of this model matches target %s (Linear modules look like "
                  "self_attn.q_proj; see `layers model`)", sb_str(&b));
        sb_free(&b);
        return -1;
    }
    return tr_adapter_install(fm, a, init, seed);
}


/* ---- modules_to_save ----------------------------------------------------------------------- */

static int suffix_match(const char *name, const char *t) {
    size_t n = strlen(name), k = strlen(t);
    return !strcmp(name, t) || (n > k && name[n - k - 1] == '.' && !strcmp(name + n - k, t));
}

int tr_mts_attach(fw_model *fm, tr_adapter *a, const char *const *names, size_t n) {
    fw_weight *w;
    size_t nw;
    if (!n) return 0;
    if (fw_weights(fm, &w, &nw) < 0) return -1;
    const be_backend *be = fw_backend(fm);
    a->mts_names = lp_calloc(n, sizeof *a->mts_names);
    a->mts = lp_calloc(nw ? nw : 1, sizeof *a->mts);
    if (!a->mts_names || !a->mts) return lp_seterr("out of memory");
    for (size_t i = 0; i < n; i++) {
        a->mts_names[i] = lp_strdup(names[i]);
        if (!a->mts_names[i]) return lp_seterr("out of memory");
        a->nmts_names++;
    }
    for (size_t i = 0; i < nw; i++) {
        char mod[600];
        size_t len = strlen(w[i].name);
        const char *dot = strrchr(w[i].name, '.');
        if (!dot) continue;
        snprintf(mod, sizeof mod, "%.*s", (int)(dot - w[i].name), w[i].name);
        int hit = 0;
        for (size_t k = 0; k < n && !hit; k++) hit = suffix_match(mod, names[k]);
        if (!hit) continue;
        (void)len;
        tr_mts *m = &a->mts[a->nmts];
        m->w = i;
        m->orig = lp_malloc(w[i].numel * sizeof(float));
        m->mine = lp_malloc(w[i].numel * sizeof(float));
        if (!m->orig || !m->mine) {
            lp_free(m->orig);
            lp_free(m->mine);
            return lp_seterr("out of memory");
        }
        a->nmts++;
        if (fw_weight_f32(fm, &w[i]) < 0) return -1;   /* it trains: an f32 master copy */
        be->to_host(m->orig, w[i].data, w[i].numel * sizeof(float));
        memcpy(m->mine, m->orig, w[i].numel * sizeof(float));
        if (!w[i].grad) {
            w[i].grad = be->alloc(w[i].numel * sizeof(float));
            if (!w[i].grad) return lp_preferr("gradient of %s", w[i].name);
            be->zero(w[i].grad, w[i].numel * sizeof(float));
            m->own_grad = 1;
        }
    }
    if (!a->nmts)
        return lp_seterr("modules_to_save: no module of this model matches %s%s", names[0],
                         n > 1 ? " (nor the others)" : "");
    a->mts_live = 1;
    return 0;
}

void tr_mts_swap(fw_model *fm, tr_adapter *a, int on) {
    fw_weight *w;
    size_t nw;
    if (!a->nmts || a->mts_live == on || fw_weights(fm, &w, &nw) < 0) return;
    const be_backend *be = fw_backend(fm);
    for (size_t i = 0; i < a->nmts; i++) {
        fw_weight *x = &w[a->mts[i].w];
        if (!on) be->to_host(a->mts[i].mine, x->data, x->numel * sizeof(float));
        be->to_device(x->data, on ? a->mts[i].mine : a->mts[i].orig, x->numel * sizeof(float));
    }
    a->mts_live = on;
}

int tr_lora_add(fw_model *fm, const tr_lora_config *cfg) {
    tr_state *s = tr_state_of(fm);
    if (!s) return -1;
    const char *name = cfg->name ? cfg->name : "default";
    if (find_adapter(s, name, NULL))
        return lp_seterr("an adapter named `%s` exists already; give name=\"...\" or delete it",
                         name);
    if (cfg->r <= 0) return lp_seterr("r must be a positive integer, got %d", cfg->r);
    if (!(cfg->dropout >= 0 && cfg->dropout < 1))
        return lp_seterr("dropout must be in [0, 1), got %g", cfg->dropout);
    const char *init = cfg->init ? cfg->init : "true";
    if (strcmp(init, "true") && strcmp(init, "gaussian"))
        return lp_seterr("init must be true or \"gaussian\", got `%s`", init);
    if (!cfg->all_linear && !cfg->ntargets)
        return lp_seterr("no target modules: give target=[\"q_proj\", \"v_proj\"], a regex "
                         "string, or \"all-linear\"");
    tr_adapter *a = lp_calloc(1, sizeof *a);
    if (!a) return lp_seterr("out of memory");
    a->name = lp_strdup(name);
    a->init = lp_strdup(init);
    a->r = cfg->r;
    a->alpha = cfg->alpha;
    a->dropout = cfg->dropout;
    a->rslora = cfg->rslora;
    a->all_linear = cfg->all_linear;
    a->target_regex = cfg->target_regex;
    a->enabled = 1;
    a->targets = lp_calloc(cfg->ntargets ? cfg->ntargets : 1, sizeof *a->targets);
    int rc = (!a->name || !a->init || !a->targets) ? lp_seterr("out of memory") : 0;
    for (size_t i = 0; !rc && i < cfg->ntargets; i++) {
        a->targets[i] = lp_strdup(cfg->targets[i]);
        if (!a->targets[i]) rc = lp_seterr("out of memory");
        else a->ntargets++;
    }
    regex_t re;
    int have_re = 0;
    if (!rc && a->target_regex) {
        char *ere = py_to_ere(a->targets[0]);
        if (!ere) rc = lp_seterr("out of memory");
        else if (regcomp(&re, ere, REG_EXTENDED | REG_NOSUB))
            rc = lp_seterr("target regex `%s` does not compile", a->targets[0]);
        else have_re = 1;
        lp_free(ere);
    }
    if (!rc) rc = add_adapter(fm, a, init, cfg->seed ? cfg->seed : 0x10a4ULL, have_re ? &re : NULL);
    if (!rc && cfg->nmts) {
        rc = tr_mts_attach(fm, a, cfg->modules_to_save, cfg->nmts);
        if (rc) {
            tr_adapter_delete(fm, a->name);
            return -1;
        }
        rc = tr_params_rebuild(fm);
    }
    if (have_re) regfree(&re);
    if (rc) {
        tr_state *st = tr_state_of(fm);
        if (!st || !find_adapter(st, a->name ? a->name : "", NULL)) tr_adapter_free(fm, a);
        return -1;
    }
    return 0;
}

/* ---- management ----------------------------------------------------------------------------- */

int tr_adapter_set_active(fw_model *fm, const char *name) {
    tr_state *s = tr_state_of(fm);
    size_t idx;
    if (!s) return -1;
    tr_adapter *a = find_adapter(s, name, &idx);
    if (!a) return lp_seterr("no adapter named `%s`", name);
    if (a->merged)
        return lp_seterr("adapter `%s` is merged into the weights; unmerge it first", name);
    s->active = (int)idx;
    for (size_t i = 0; i < s->nad; i++)   /* only the active adapter is trainable */
        for (size_t k = 0; k < s->ad[i]->nsites; k++) {
            fw_lora *lo = &s->ad[i]->sites[k].lo;
            float *A = lo->A;
            size_t na = (size_t)lo->r * lo->in, nb = (size_t)lo->out * lo->r;
            lo->dA = i == idx ? A + na + nb : NULL;
            lo->dB = i == idx ? A + 2 * na + nb : NULL;
        }
    tr_adapter_enable(fm, name, 1);
    return tr_params_rebuild(fm);
}

int tr_adapter_enable(fw_model *fm, const char *name, int on) {
    tr_state *s = tr_state_of(fm);
    if (!s) return -1;
    tr_adapter *a = find_adapter(s, name, NULL);
    if (!a) return lp_seterr("no adapter named `%s`", name);
    if (on && a->merged)
        return lp_seterr("adapter `%s` is merged into the weights; unmerge it first", name);
    if (a->enabled != on) fw_lora_touch(fm);
    tr_mts_swap(fm, a, on);
    a->enabled = on;
    for (size_t k = 0; k < a->nsites; k++) a->sites[k].lo.enabled = on;
    return 0;
}

int tr_adapter_merge(fw_model *fm, const char *name, int merge) {
    tr_state *s = tr_state_of(fm);
    size_t idx;
    fw_weight *w;
    size_t nw;
    if (!s || fw_weights(fm, &w, &nw) < 0) return -1;
    tr_adapter *a = find_adapter(s, name, &idx);
    if (!a) return lp_seterr("no adapter named `%s`", name);
    if ((a->merged != 0) == merge)
        return lp_seterr("adapter `%s` is %s merged", name, merge ? "already" : "not");
    for (size_t k = 0; k < a->nsites; k++) {
        fw_lora *lo = &a->sites[k].lo;
        fw_weight *W = NULL;
        for (size_t i = 0; i < nw && !W; i++)
            if (w[i].data == lo->base) W = &w[i];
        if (!W) return lp_seterr("adapter `%s`: base weight of %s not found", name, a->sites[k].module);
        float sc = merge ? lo->scale : -lo->scale;
        /* a bf16 weight (CUDA, LOUPE_CUDA_BF16=1) is rounded back to bf16, as PEFT merges in
           the weight's dtype; only the first site can fail (scratch), before any change */
        int rc = W->kind == FW_W_CONV1D   /* W [in, out] += sc · Aᵀ Bᵀ */
                     ? fw_weight_addmm(fm, W, lo->A, lo->B, lo->in, lo->out, lo->r, 1, 1, sc)
                     /* W [out, in] += sc · B A */
                     : fw_weight_addmm(fm, W, lo->B, lo->A, lo->out, lo->in, lo->r, 0, 0, sc);
        if (rc < 0) {
            if (k == 0) return lp_preferr("%s adapter `%s`", merge ? "merging" : "unmerging", name);
            lp_preferr("adapter `%s` is only partly %s", name, merge ? "merged" : "unmerged");
            return -1;
        }
        fw_mark_weights_changed(fm);
    }
    if (merge) {
        tr_adapter_enable(fm, name, 0);
        a->merged = s->active == (int)idx ? 2 : 1;   /* 2: it trains again once unmerged */
        if (s->active == (int)idx) s->active = -1;
        for (size_t k = 0; k < a->nsites; k++) a->sites[k].lo.dA = a->sites[k].lo.dB = NULL;
        fw_lora_touch(fm);
        return tr_params_rebuild(fm);
    }
    int was_active = a->merged == 2;
    a->merged = 0;
    return was_active ? tr_adapter_set_active(fm, name) : tr_adapter_enable(fm, name, 1);
}

int tr_adapter_delete(fw_model *fm, const char *name) {
    tr_state *s = tr_state_of(fm);
    size_t idx;
    if (!s) return -1;
    tr_adapter *a = find_adapter(s, name, &idx);
    if (!a) return lp_seterr("no adapter named `%s`", name);
    if (a->merged)
        return lp_seterr("adapter `%s` is merged into the weights; unmerge it before deleting", name);
    tr_adapter_free(fm, a);
    memmove(s->ad + idx, s->ad + idx + 1, (s->nad - idx - 1) * sizeof *s->ad);
    s->nad--;
    if (s->active == (int)idx) s->active = -1;
    else if (s->active > (int)idx) s->active--;
    return tr_params_rebuild(fm);
}

size_t tr_adapter_names(fw_model *fm, const char **out, size_t cap, int *active) {
    tr_state *s = tr_state_of(fm);
    if (!s) { if (active) *active = -1; return 0; }
    for (size_t i = 0; i < s->nad && i < cap; i++) out[i] = s->ad[i]->name;
    if (active) *active = s->active;
    return s->nad;
}

/* ---- partial fine-tuning -------------------------------------------------------------------- */

/* Glob: `*` any run (dots included), `?` one character. */
static int glob(const char *p, const char *s) {
    if (!*p) return !*s;
    if (*p == '*') {
        for (;; s++) {
            if (glob(p + 1, s)) return 1;
            if (!*s) return 0;
        }
    }
    if (!*s) return 0;
    return (*p == '?' || *p == *s) && glob(p + 1, s + 1);
}

static int pattern_covers(const char *pat, const char *name) {
    if (glob(pat, name)) return 1;
    char buf[1024];   /* a module pattern covers its parameters */
    snprintf(buf, sizeof buf, "%s.*", pat);
    return glob(buf, name);
}

int tr_freeze(fw_model *fm, const char *pattern, int unfreeze, size_t *matched) {
    fw_weight *w;
    size_t nw;
    *matched = 0;
    if (fw_weights(fm, &w, &nw) < 0 || !tr_state_of(fm)) return -1;
    char *pat = mdl_path_norm(pattern);
    if (!pat) return lp_seterr("out of memory");
    const char *pre = fw_mdl(fm)->arch->prefix;
    size_t pl = strlen(pre);
    const be_backend *be = fw_backend(fm);
    int rc = 0;
    for (size_t i = 0; i < nw && !rc; i++) {
        const char *n = w[i].name;
        int hit = pattern_covers(pat, n);
        if (!hit && pl && !strncmp(n, pre, pl) && n[pl] == '.') hit = pattern_covers(pat, n + pl + 1);
        if (!hit) continue;
        (*matched)++;
        if (unfreeze && !w[i].grad && fw_weight_f32(fm, &w[i]) < 0) {   /* f32 master */
            rc = -1;
        } else if (unfreeze && !w[i].grad) {
            w[i].grad = be->alloc(w[i].numel * sizeof(float));
            if (!w[i].grad) rc = lp_preferr("gradient of %s", n);
            else be->zero(w[i].grad, w[i].numel * sizeof(float));
        } else if (!unfreeze && w[i].grad) {
            be->free(w[i].grad);
            w[i].grad = NULL;
        }
    }
    lp_free(pat);
    if (!rc && !*matched)
        rc = lp_seterr("no parameter matches `%s` (patterns look like \"layers.1.*\", "
                       "\"*.mlp.*\", \"lm_head\"; see `layers model`)", pattern);
    if (tr_params_rebuild(fm) < 0) rc = -1;
    return rc;
}

/* ---- the report ----------------------------------------------------------------------------- */

static void commas(char *buf, size_t len, uint64_t v) {
    char raw[32];
    snprintf(raw, sizeof raw, "%llu", (unsigned long long)v);
    size_t n = strlen(raw), o = 0;
    for (size_t i = 0; i < n && o + 2 < len; i++) {
        if (i && (n - i) % 3 == 0) buf[o++] = ',';
        buf[o++] = raw[i];
    }
    buf[o] = 0;
}

void tr_report(fw_model *fm, char *buf, size_t len, uint64_t *trainable, uint64_t *all) {
    tr_state *s = tr_state_of(fm);
    uint64_t t = 0, a = fw_mdl(fm)->summary.params;
    if (s) {
        t = tr_params_count(&s->params);
        for (size_t i = 0; i < s->nad; i++)   /* every adapter's weights count in "all" */
            for (size_t k = 0; k < s->ad[i]->nsites; k++) {
                const fw_lora *lo = &s->ad[i]->sites[k].lo;
                a += (uint64_t)lo->r * lo->in + (uint64_t)lo->out * lo->r;
            }
        fw_weight *w;
        size_t nw;
        if (fw_weights(fm, &w, &nw) == 0)   /* PEFT keeps a copy of each modules_to_save one */
            for (size_t i = 0; i < s->nad; i++)
                for (size_t k = 0; k < s->ad[i]->nmts; k++) a += w[s->ad[i]->mts[k].w].numel;
    }
    char ts[32], as[32];
    commas(ts, sizeof ts, t);
    commas(as, sizeof as, a);
    snprintf(buf, len, "trainable params: %s || all params: %s || trainable%%: %.4f", ts, as,
             a ? 100.0 * (double)t / (double)a : 0.0);
    if (trainable) *trainable = t;
    if (all) *all = a;
}
