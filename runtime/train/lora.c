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

/* Another adapter that trains bias weight w takes over its gradient slot: 1, or 0 for none. */
static int bias_heir(fw_model *fm, const tr_adapter *a, size_t w) {
    tr_state *s = *fw_train_slot(fm, NULL);   /* never made here: this may be its teardown */
    for (size_t i = 0; s && i < s->nad; i++)
        for (size_t k = 0; s->ad[i] != a && k < s->ad[i]->nbias_w; k++)
            if (s->ad[i]->bias_w[k] == w) {
                s->ad[i]->bias_own[k] = 1;
                return 1;
            }
    return 0;
}

void tr_adapter_free(fw_model *fm, tr_adapter *a) {
    if (!a) return;
    tr_ada_free(fm, a);
    for (size_t i = 0; i < a->nsites; i++) {
        fw_lora_detach(fm, &a->sites[i].lo);
        lp_free(a->sites[i].module);
        lp_free(a->sites[i].dora_g);
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
    for (size_t i = 0; i < a->nff; i++) lp_free(a->ff[i]);
    lp_free(a->ff);
    for (size_t i = 0; i < a->nrank; i++) lp_free(a->rank_keys[i]);
    for (size_t i = 0; i < a->nalpha; i++) lp_free(a->alpha_keys[i]);
    fw_weight *bw;
    size_t nbw;
    if (a->nbias_w && fw_weights(fm, &bw, &nbw) == 0)   /* freeze the biases it made train */
        for (size_t i = 0; i < a->nbias_w; i++)
            if (a->bias_own[i] && a->bias_w[i] < nbw && !bias_heir(fm, a, a->bias_w[i])) {
                fw_backend(fm)->free(bw[a->bias_w[i]].grad);
                bw[a->bias_w[i]].grad = NULL;
            }
    lp_free(a->bias_w);
    lp_free(a->bias_own);
    for (size_t i = 0; i < a->nexclude; i++) lp_free(a->exclude[i]);
    for (size_t i = 0; i < a->nlpat; i++) lp_free(a->lpat[i]);
    lp_free(a->exclude);
    lp_free(a->lpat);
    lp_free(a->layers);
    lp_free(a->rank_keys);
    lp_free(a->rank_vals);
    lp_free(a->alpha_keys);
    lp_free(a->alpha_vals);
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

/* Python regex → POSIX ERE, for the common forms: \d, (?:, and the whole-name anchor (after
 * `head`: "" for a whole match, PEFT's pattern keys "(.*\.)?"). */
static char *py_to_ere_after(const char *head, const char *pat) {
    sbuf b;
    sb_init(&b);
    sb_printf(&b, "^%s(", head);
    for (const char *p = pat; *p; p++) {
        if (p[0] == '\\' && p[1] == 'd') { sb_printf(&b, "[0-9]"); p++; }
        else if (p[0] == '(' && p[1] == '?' && p[2] == ':') { sb_printf(&b, "("); p += 2; }
        else sb_printf(&b, "%c", *p);
    }
    sb_printf(&b, ")$");
    return b.oom ? (sb_free(&b), NULL) : sb_take(&b);
}
static char *py_to_ere(const char *pat) { return py_to_ere_after("", pat); }
static int copy_strs(char ***out, size_t *nout, const char *const *in, size_t n);

/* The first of keys[n] that matches module mod as PEFT's get_pattern_key, or -1 (a key that
 * does not compile matches nothing: tr_set_patterns refuses them). */
static long pattern_index(char *const *keys, size_t n, const char *mod) {
    for (size_t i = 0; i < n; i++) {
        char *ere = py_to_ere_after("(.*\\.)?", keys[i]);
        regex_t re;
        int hit = ere && regcomp(&re, ere, REG_EXTENDED | REG_NOSUB) == 0;
        if (hit) {
            hit = regexec(&re, mod, 0, NULL, 0) == 0;
            regfree(&re);
        }
        lp_free(ere);
        if (hit) return (long)i;
    }
    return -1;
}

int tr_site_r(const tr_adapter *a, const char *mod) {
    long k = pattern_index(a->rank_keys, a->nrank, mod);
    return k >= 0 ? a->rank_vals[k] : a->r;
}

double tr_site_alpha(const tr_adapter *a, const char *mod) {
    long k = pattern_index(a->alpha_keys, a->nalpha, mod);
    return k >= 0 ? a->alpha_vals[k] : a->alpha;
}

/* the index of the site on module mod, or -1 */
static long site_of(const tr_adapter *a, const char *mod, size_t len) {
    for (size_t k = 0; k < a->nsites; k++)
        if (strlen(a->sites[k].module) == len && !strncmp(a->sites[k].module, mod, len))
            return (long)k;
    return -1;
}

void tr_bias_key(const tr_adapter *a, const char *wname, char *buf, size_t len) {
    size_t n = strlen(wname);
    if (n > 5 && site_of(a, wname, n - 5) >= 0)   /* PEFT: the tuner layer's base_layer.bias */
        snprintf(buf, len, "base_model.model.%.*s.base_layer.bias", (int)(n - 5), wname);
    else
        snprintf(buf, len, "base_model.model.%s", wname);
}

int tr_bias_attach(fw_model *fm, tr_adapter *a) {
    fw_weight *w;
    size_t nw;
    if (a->bias == TR_BIAS_NONE) return 0;
    if (fw_weights(fm, &w, &nw) < 0) return -1;
    a->bias_w = lp_calloc(nw + 1, sizeof *a->bias_w);
    a->bias_own = lp_calloc(nw + 1, 1);
    if (!a->bias_w || !a->bias_own) return lp_seterr("out of memory");
    const be_backend *be = fw_backend(fm);
    for (size_t i = 0; i < nw; i++) {
        size_t n = strlen(w[i].name);
        if (n < 5 || strcmp(w[i].name + n - 5, ".bias")) continue;
        if (a->bias == TR_BIAS_LORA && site_of(a, w[i].name, n - 5) < 0) continue;
        size_t k = a->nbias_w;
        a->bias_w[k] = i;
        if (!w[i].grad) {
            if (fw_weight_f32(fm, &w[i]) < 0) return -1;
            w[i].grad = be->alloc(w[i].numel * sizeof(float));
            if (!w[i].grad) return lp_preferr("gradient of %s", w[i].name);
            be->zero(w[i].grad, w[i].numel * sizeof(float));
            a->bias_own[k] = 1;
        }
        a->nbias_w++;
    }
    return tr_params_rebuild(fm);
}

int tr_set_filter(tr_adapter *a, const tr_filter *f) {
    if (!f) return 0;
    const char *bad = NULL;
    for (size_t i = 0; i < f->npattern && !bad; i++) {
        char *ere = py_to_ere_after("(.*\\.)?", f->layers_pattern[i]);
        regex_t re;
        if (!ere) return lp_seterr("out of memory");
        if (regcomp(&re, ere, REG_EXTENDED | REG_NOSUB)) bad = f->layers_pattern[i];
        else regfree(&re);
        lp_free(ere);
    }
    if (bad) return lp_seterr("layers_pattern `%s` does not compile as a regex", bad);
    if (f->exclude_regex && f->nexclude) {
        char *ere = py_to_ere(f->exclude[0]);
        regex_t re;
        if (!ere) return lp_seterr("out of memory");
        int no = regcomp(&re, ere, REG_EXTENDED | REG_NOSUB);
        lp_free(ere);
        if (no) return lp_seterr("exclude regex `%s` does not compile", f->exclude[0]);
        regfree(&re);
    }
    for (size_t i = 0; i < f->nlayers; i++)
        if (f->layers[i] < 0)
            return lp_seterr("layers_to_transform: %d is not a layer index", f->layers[i]);
    a->exclude_regex = f->exclude_regex;
    if (copy_strs(&a->exclude, &a->nexclude, f->exclude, f->nexclude) < 0 ||
        copy_strs(&a->lpat, &a->nlpat, f->layers_pattern, f->npattern) < 0)
        return -1;
    if (f->nlayers) {
        a->layers = lp_malloc(f->nlayers * sizeof *a->layers);
        if (!a->layers) return lp_seterr("out of memory");
        memcpy(a->layers, f->layers, f->nlayers * sizeof *a->layers);
        a->nlayers = f->nlayers;
    }
    return 0;
}

int tr_set_patterns(tr_adapter *a, const char *const *rk, const int *rv, size_t nr,
                    const char *const *ak, const double *av, size_t na) {
    for (size_t i = 0; i < nr + na; i++) {
        const char *k = i < nr ? rk[i] : ak[i - nr];
        char *ere = py_to_ere_after("(.*\\.)?", k);
        regex_t re;
        if (!ere) return lp_seterr("out of memory");
        int bad = regcomp(&re, ere, REG_EXTENDED | REG_NOSUB);
        lp_free(ere);
        if (bad) return lp_seterr("%s key `%s` does not compile as a regex",
                                  i < nr ? "rank_pattern" : "alpha_pattern", k);
        regfree(&re);
        if (i < nr && (rv[i] <= 0 || rv[i] > 1 << 16))
            return lp_seterr("rank_pattern: `%s` gives r=%d; a rank is a positive integer "
                             "(at most 65536)", k, rv[i]);
    }
    a->rank_keys = lp_calloc(nr ? nr : 1, sizeof *a->rank_keys);
    a->rank_vals = lp_malloc((nr ? nr : 1) * sizeof *a->rank_vals);
    a->alpha_keys = lp_calloc(na ? na : 1, sizeof *a->alpha_keys);
    a->alpha_vals = lp_malloc((na ? na : 1) * sizeof *a->alpha_vals);
    if (!a->rank_keys || !a->rank_vals || !a->alpha_keys || !a->alpha_vals)
        return lp_seterr("out of memory");
    for (; a->nrank < nr; a->nrank++) {
        a->rank_vals[a->nrank] = rv[a->nrank];
        if (!(a->rank_keys[a->nrank] = lp_strdup(rk[a->nrank]))) return lp_seterr("out of memory");
    }
    for (; a->nalpha < na; a->nalpha++) {
        a->alpha_vals[a->nalpha] = av[a->nalpha];
        if (!(a->alpha_keys[a->nalpha] = lp_strdup(ak[a->nalpha])))
            return lp_seterr("out of memory");
    }
    return 0;
}

/* Does Python regex `pat` match all of `text` (after `head`, an ERE prefix)? */
static int py_full_match(const char *head, const char *pat, const char *text) {
    char *ere = py_to_ere_after(head, pat);
    regex_t re;
    int hit = ere && regcomp(&re, ere, REG_EXTENDED | REG_NOSUB) == 0;
    if (hit) {
        hit = regexec(&re, text, 0, NULL, 0) == 0;
        regfree(&re);
    }
    lp_free(ere);
    return hit;
}

/* exclude_modules: one regex over the whole name, or names equal or a "." suffix */
static int excluded(const tr_adapter *a, const char *name) {
    if (a->exclude_regex) return py_full_match("", a->exclude[0], name);
    size_t n = strlen(name);
    for (size_t i = 0; i < a->nexclude; i++) {
        size_t k = strlen(a->exclude[i]);
        if (!strcmp(name, a->exclude[i]) ||
            (n > k && name[n - k - 1] == '.' && !strcmp(name + n - k, a->exclude[i])))
            return 1;
    }
    return 0;
}

/* The layer of module `name` as PEFT reads it for layers_to_transform: the first all-digit
 * segment s_k followed by another segment, with (no layers_pattern) k ≥ 2, or the text before
 * it matching (^|.*\.)(pattern)$ for one of the patterns; -1 when there is none. */
static long layer_of(const tr_adapter *a, const char *name) {
    char *buf = lp_strdup(name);
    if (!buf) return -1;
    long found = -1;
    int seg = 0;
    for (char *p = buf; *p && found < 0; seg++) {
        char *dot = strchr(p, '.');
        if (!dot) break;   /* the last segment: no "." after it */
        size_t len = (size_t)(dot - p);
        int digits = len > 0 && strspn(p, "0123456789") == len;
        if (digits && seg >= 1) {
            if (p - buf >= 1) p[-1] = 0;   /* the text before ".s_k." */
            int ok = a->nlpat == 0 ? seg >= 2 : 0;
            for (size_t i = 0; i < a->nlpat && !ok; i++) ok = py_full_match("(.*\\.)?", a->lpat[i], buf);
            if (p - buf >= 1) p[-1] = '.';
            if (ok) found = strtol(p, NULL, 10);
        }
        p = dot + 1;
    }
    lp_free(buf);
    return found;
}

static int layer_ok(const tr_adapter *a, const char *name) {
    if (!a->nlayers) return 1;
    long l = layer_of(a, name);
    for (size_t i = 0; i < a->nlayers && l >= 0; i++)
        if (a->layers[i] == l) return 1;
    return 0;
}

/* Does module `name` match the adapter's targets (PEFT's check_target_module_exists)? */
static int target_match(const tr_adapter *a, const regex_t *re, const fw_weight *w,
                        const char *name) {
    if (excluded(a, name)) return 0;
    if (a->all_linear) return !w->is_head && layer_ok(a, name);
    if (a->target_regex) return regexec(re, name, 0, NULL, 0) == 0;
    size_t n = strlen(name);
    for (size_t i = 0; i < a->ntargets; i++)   /* named in full: every layer */
        if (!strcmp(name, a->targets[i])) return 1;
    for (size_t i = 0; i < a->ntargets; i++) {
        const char *t = a->targets[i];
        size_t k = strlen(t);
        if (n > k && name[n - k - 1] == '.' && !strcmp(name + n - k, t)) return layer_ok(a, name);
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
 * left zero when init == NULL: the loader fills them). IA3's vector (A): ones for init
 * "true", N(0, 1) for "false". */
static int alloc_sites(fw_model *fm, tr_adapter *a, const char *init, uint64_t seed) {
    const be_backend *be = fw_backend(fm);
    size_t total = 0, maxa = 0;
    for (size_t i = 0; i < a->nsites; i++) {
        const fw_lora *lo = &a->sites[i].lo;
        total += 2 * (fw_lora_na(lo) + fw_lora_nb(lo) + fw_lora_nm(lo));
        if (fw_lora_na(lo) > maxa) maxa = fw_lora_na(lo);
    }
    a->buf = be->alloc(total * sizeof(float));
    if (!a->buf) return lp_preferr("adapter weights (%.1f MB)", total * 4.0 / 1e6);
    be->zero(a->buf, total * sizeof(float));
    float *host = lp_malloc((maxa ? maxa : 1) * sizeof(float));
    if (!host) return lp_seterr("out of memory");
    float *p = a->buf;
    uint64_t off = 0;
    for (size_t i = 0; i < a->nsites; i++) {
        fw_lora *lo = &a->sites[i].lo;
        size_t na = fw_lora_na(lo), nb = fw_lora_nb(lo), nm = fw_lora_nm(lo);
        lo->A = p; p += na;
        lo->B = nb ? p : NULL; p += nb;
        lo->mag = nm ? p : NULL; p += nm;
        lo->dA = p; p += na;
        lo->dB = nb ? p : NULL; p += nb;
        lo->dmag = nm ? p : NULL; p += nm;
        if (init && !tr_init_residual(init)) {   /* PiSSA / OLoRA: tr_lora_residual */
            if (a->ia3 && !strcmp(init, "true"))
                for (size_t k = 0; k < na; k++) host[k] = 1.0f;
            else if (a->ia3 || !strcmp(init, "gaussian"))
                nn_rand_normal(host, seed, off, 0.0f, a->ia3 ? 1.0f : 1.0f / (float)lo->r, na);
            else {
                float bound = 1.0f / sqrtf((float)lo->in);
                nn_rand_uniform(host, seed, off, -bound, bound, na);
            }
            be->to_device(lo->A, host, na * sizeof(float));
            /* DoRA's magnitude starts as ‖W + s·B·A‖ (B = 0: the weight's row norms) */
            if (nm && fw_dora_norm(fm, lo, lo->mag) < 0) {
                lp_free(host);
                return lp_preferr("DoRA weight norms of %s", a->sites[i].module);
            }
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
    if (alloc_sites(fm, a, a->ada ? NULL : init, seed) < 0) return -1;
    if (a->ada && tr_ada_alloc(fm, a, init, seed) < 0) return -1;
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
int tr_site_init(tr_adapter *a, const fw_weight *w, const char *mod, int kind) {
    tr_site *st = &a->sites[a->nsites];
    st->module = lp_strdup(mod);
    if (!st->module) return lp_seterr("out of memory");
    a->nsites++;
    st->lo.base = w->data;
    st->lo.kind = kind;
    if (kind != FW_AD_LORA) {
        st->lo.in = w->in;
        st->lo.out = w->out;
        st->lo.enabled = 1;
        return 0;
    }
    st->lo.r = a->ada ? a->r : tr_site_r(a, mod);
    st->lo.in = w->in;
    st->lo.out = w->out;
    st->lo.scale = a->ada ? tr_ada_scale(a)
                          : lora_scale(tr_site_alpha(a, mod), st->lo.r, a->rslora);
    st->lo.dropout = (float)a->dropout;
    st->lo.dora = a->dora;
    st->lo.enabled = 1;
    return 0;
}

/* IA3: is module `mod` one of the feed-forward modules (PEFT's
 * _check_target_module_feedforward: a plain suffix, no dot needed, or a full regex match)? */
static int ff_match(const tr_adapter *a, const regex_t *ffre, const char *mod) {
    if (a->ff_regex) return regexec(ffre, mod, 0, NULL, 0) == 0;
    size_t n = strlen(mod);
    for (size_t i = 0; i < a->nff; i++) {
        size_t k = strlen(a->ff[i]);
        if (n >= k && !strcmp(mod + n - k, a->ff[i])) return 1;
    }
    return 0;
}

/* An IA3 site may not scale a module's input where another IA3 adapter scales its output
 * (or the other way round): the two would need their own backward order. */
static int ia3_kind_clash(fw_model *fm, const tr_site *st) {
    tr_state *s = tr_state_of(fm);
    for (size_t i = 0; s && i < s->nad; i++)
        for (size_t k = 0; s->ad[i]->ia3 && k < s->ad[i]->nsites; k++) {
            const tr_site *o = &s->ad[i]->sites[k];
            if (o->lo.base == st->lo.base && o->lo.kind != st->lo.kind)
                return lp_seterr("%s: IA3 adapter `%s` scales its %s; this one would scale its %s "
                                 "(feedforward differs): delete one", st->module, s->ad[i]->name,
                                 o->lo.kind == FW_AD_IA3_FF ? "input" : "output",
                                 st->lo.kind == FW_AD_IA3_FF ? "input" : "output");
        }
    return 0;
}

/* Is module mod (or a module above it) one of modules_to_save? PEFT never puts an adapter
 * there: re.match of (^|.*\.)M($|\..*). */
static int in_modules_to_save(const char *mod, const char *const *mts, size_t n) {
    for (size_t i = 0; i < n; i++) {
        size_t k = strlen(mts[i]);
        char *pat = lp_malloc(k + 16);
        if (!pat) return 0;
        snprintf(pat, k + 16, "%s(\\..*)?", mts[i]);
        int hit = py_full_match("(.*\\.)?", pat, mod);
        lp_free(pat);
        if (hit) return 1;
    }
    return 0;
}

/* A new adapter with sites chosen by its targets (IA3: kinds by ffre / a->ff), installed. */
static int add_adapter(fw_model *fm, tr_adapter *a, const char *init, uint64_t seed,
                       const regex_t *re, const regex_t *ffre, const char *const *mts,
                       size_t nmts) {
    fw_weight *w;
    size_t nw;
    if (fw_weights(fm, &w, &nw) < 0) return -1;
    a->sites = lp_calloc(nw ? nw : 1, sizeof *a->sites);
    if (!a->sites) return lp_seterr("out of memory");
    for (size_t i = 0; i < nw; i++) {
        char mod[512];
        if (w[i].kind == FW_W_OTHER || module_of(w[i].name, mod, sizeof mod) < 0) continue;
        if (!target_match(a, re, &w[i], mod)) continue;
        if (in_modules_to_save(mod, mts, nmts)) continue;
        if (!w[i].adaptable)
            return lp_seterr("target `%s`: loupe has no %s on the output layer (lm_head)", mod,
                             a->ia3 ? "IA3" : a->ada ? "AdaLoRA" : "LoRA");
        int kind = !a->ia3 ? FW_AD_LORA : ff_match(a, ffre, mod) ? FW_AD_IA3_FF : FW_AD_IA3;
        if (tr_site_init(a, &w[i], mod, kind) < 0) return -1;
        if (a->ia3 && ia3_kind_clash(fm, &a->sites[a->nsites - 1]) < 0) return -1;
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

/* Copies of n strings into *out (counted in *nout as they are made). */
static int copy_strs(char ***out, size_t *nout, const char *const *in, size_t n) {
    *out = lp_calloc(n ? n : 1, sizeof **out);
    if (!*out) return lp_seterr("out of memory");
    for (size_t i = 0; i < n; i++) {
        (*out)[i] = lp_strdup(in[i]);
        if (!(*out)[i]) return lp_seterr("out of memory");
        (*nout)++;
    }
    return 0;
}

/* A Python regex compiled as POSIX ERE into *re; 1 compiled, -1 + lp_seterr. */
static int compile_py(regex_t *re, const char *pat, const char *what) {
    char *ere = py_to_ere(pat);
    if (!ere) return lp_seterr("out of memory");
    int bad = regcomp(re, ere, REG_EXTENDED | REG_NOSUB);
    lp_free(ere);
    return bad ? lp_seterr("%s regex `%s` does not compile", what, pat) : 1;
}

static const char *const type_names[] = {"LoRA", "IA3", "AdaLoRA"};

/* PEFT keeps one adapter type per model ("Cannot combine adapters with different peft
 * types"): -1 + lp_seterr when the model has an adapter of another type. */
int tr_same_type(fw_model *fm, int type) {
    tr_state *s = tr_state_of(fm);
    for (size_t i = 0; s && i < s->nad; i++)
        if (tr_type(s->ad[i]) != type)
            return lp_seterr("this model has %s %s adapter `%s`; PEFT does not combine adapter "
                             "types on one model: delete it first (`adapter model \"%s\" "
                             "action=\"delete\"`)", tr_type(s->ad[i]) == TR_LORA ? "a" : "an",
                             type_names[tr_type(s->ad[i])], s->ad[i]->name, s->ad[i]->name);
    return s ? 0 : -1;
}

/* Name, init and targets of a new adapter (common to LoRA and IA3). */
tr_adapter *tr_adapter_new(fw_model *fm, const char *name, const char *init,
                           const char *const *targets, size_t ntargets, int target_regex,
                           int all_linear) {
    tr_state *s = tr_state_of(fm);
    if (!s) return NULL;
    if (find_adapter(s, name, NULL))
        return lp_seterr("an adapter named `%s` exists already; give name=\"...\" or delete it",
                         name), NULL;
    if (!all_linear && !ntargets)
        return lp_seterr("no target modules: give target=[\"q_proj\", \"v_proj\"], a regex "
                         "string, or \"all-linear\""), NULL;
    tr_adapter *a = lp_calloc(1, sizeof *a);
    if (!a) return lp_seterr("out of memory"), NULL;
    a->name = lp_strdup(name);
    a->init = lp_strdup(init);
    a->all_linear = all_linear;
    a->target_regex = target_regex;
    a->enabled = 1;
    if (!a->name || !a->init || copy_strs(&a->targets, &a->ntargets, targets, ntargets) < 0) {
        lp_seterr("out of memory");
        tr_adapter_free(fm, a);
        return NULL;
    }
    return a;
}

int tr_adapter_finish(fw_model *fm, tr_adapter *a, const char *init, uint64_t seed,
                      const char *const *mts, size_t nmts) {
    regex_t re, ffre;
    int have_re = 0, have_ff = 0, rc = 0;
    if (a->target_regex) rc = have_re = compile_py(&re, a->targets[0], "target");
    if (rc >= 0 && a->ff_regex) rc = have_ff = compile_py(&ffre, a->ff[0], "feedforward");
    if (rc >= 0)
        rc = add_adapter(fm, a, init, seed ? seed : 0x10a4ULL, have_re == 1 ? &re : NULL,
                         have_ff == 1 ? &ffre : NULL, mts, nmts);
    if (have_re == 1) regfree(&re);
    if (have_ff == 1) regfree(&ffre);
    if (rc >= 0 && nmts) {
        if (tr_mts_attach(fm, a, mts, nmts) < 0) {
            tr_adapter_delete(fm, a->name);
            return -1;
        }
        rc = tr_params_rebuild(fm);
    }
    if (rc < 0) {
        tr_state *st = tr_state_of(fm);
        if (!st || !find_adapter(st, a->name, NULL)) tr_adapter_free(fm, a);
        return -1;
    }
    return 0;
}

int tr_lora_add(fw_model *fm, const tr_lora_config *cfg) {
    if (cfg->r <= 0) return lp_seterr("r must be a positive integer, got %d", cfg->r);
    if (!(cfg->dropout >= 0 && cfg->dropout < 1))
        return lp_seterr("dropout must be in [0, 1), got %g", cfg->dropout);
    const char *init = cfg->init ? cfg->init : "true";
    if (!strncmp(init, "pissa_niter_", 12))
        return lp_seterr("init=\"%s\" is PiSSA through a randomized SVD (torch's svd_lowrank), "
                         "which loupe cannot draw as torch does; init=\"pissa\" is the exact "
                         "one", init);
    if (strcmp(init, "true") && strcmp(init, "gaussian") && !tr_init_residual(init))
        return lp_seterr("init must be true, \"gaussian\", \"pissa\" or \"olora\", got `%s`",
                         init);
    if (tr_same_type(fm, TR_LORA) < 0) return -1;
    tr_adapter *a = tr_adapter_new(fm, cfg->name ? cfg->name : "default", init, cfg->targets,
                                cfg->ntargets, cfg->target_regex, cfg->all_linear);
    if (!a) return -1;
    a->r = cfg->r;
    a->alpha = cfg->alpha;
    a->dropout = cfg->dropout;
    a->rslora = cfg->rslora;
    a->dora = cfg->dora != 0;
    const char *bias = cfg->bias ? cfg->bias : "none";
    a->bias = !strcmp(bias, "all") ? TR_BIAS_ALL : !strcmp(bias, "lora_only") ? TR_BIAS_LORA : 0;
    if (strcmp(bias, "none") && !a->bias) {
        tr_adapter_free(fm, a);
        return lp_seterr("bias must be \"none\", \"all\" or \"lora_only\", got `%s`", bias);
    }
    if (tr_set_patterns(a, cfg->rank_keys, cfg->rank_vals, cfg->nrank, cfg->alpha_keys,
                        cfg->alpha_vals, cfg->nalpha) < 0 ||
        tr_set_filter(a, &cfg->filter) < 0) {
        tr_adapter_free(fm, a);
        return -1;
    }
    if (tr_adapter_finish(fm, a, init, cfg->seed, cfg->modules_to_save, cfg->nmts) < 0) return -1;
    if (tr_bias_attach(fm, a) < 0) {
        tr_adapter_delete(fm, a->name);
        return lp_preferr("bias=\"%s\"", bias);
    }
    if (tr_lora_residual(fm, a) < 0) {
        char why[1024];
        snprintf(why, sizeof why, "%s", lp_geterr());
        tr_adapter_delete(fm, cfg->name ? cfg->name : "default");
        return lp_seterr("init=\"%s\": %s", init, why);
    }
    return 0;
}

int tr_ia3_add(fw_model *fm, const tr_ia3_config *cfg) {
    if (tr_same_type(fm, TR_IA3) < 0) return -1;
    if (!cfg->ff_regex && !cfg->target_regex && !cfg->all_linear)
        for (size_t i = 0; i < cfg->nff; i++) {   /* PEFT: a subset of target_modules */
            size_t k = 0;
            while (k < cfg->ntargets && strcmp(cfg->targets[k], cfg->ff[i])) k++;
            if (k == cfg->ntargets)
                return lp_seterr("feedforward module `%s` is not among the targets "
                                 "(PEFT: feedforward_modules should be a subset of "
                                 "target_modules)", cfg->ff[i]);
        }
    const char *init = cfg->random_init ? "false" : "true";
    tr_adapter *a = tr_adapter_new(fm, cfg->name ? cfg->name : "default", init, cfg->targets,
                                cfg->ntargets, cfg->target_regex, cfg->all_linear);
    if (!a) return -1;
    a->ia3 = 1;
    a->ff_regex = cfg->ff_regex;
    if (copy_strs(&a->ff, &a->nff, cfg->ff, cfg->nff) < 0 || tr_set_filter(a, &cfg->filter) < 0) {
        tr_adapter_free(fm, a);
        return -1;
    }
    return tr_adapter_finish(fm, a, init, cfg->seed, cfg->modules_to_save, cfg->nmts);
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
            float *A = lo->A;   /* alloc_sites: A, B, m, dA, dB, dm */
            size_t na = fw_lora_na(lo), nb = fw_lora_nb(lo), nm = fw_lora_nm(lo);
            lo->dA = i == idx ? A + na + nb + nm : NULL;
            lo->dB = i == idx && nb ? A + 2 * na + nb + nm : NULL;
            lo->dmag = i == idx && nm ? A + 2 * (na + nb) + nm : NULL;
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

/* IA3 merged as PEFT: W ⊙ l (a Linear's rows or a Conv1D's columns for the output kind, the
 * other way for the feed-forward kind) and, for the output kind, the bias ⊙ l; unmerge
 * divides by l + 1e-8. */
static int ia3_merge(fw_model *fm, fw_weight *W, const fw_lora *lo, const char *mod,
                     fw_weight *w, size_t nw, int merge) {
    int out = lo->kind == FW_AD_IA3, conv = W->kind == FW_W_CONV1D;
    size_t len = out ? (size_t)lo->out : (size_t)lo->in;
    if (fw_weight_scale(fm, W, lo->A, len, out != conv, !merge) < 0) return -1;
    char bias[600];
    snprintf(bias, sizeof bias, "%s.bias", mod);
    for (size_t i = 0; out && i < nw; i++)
        if (!strcmp(w[i].name, bias)) return fw_weight_scale(fm, &w[i], lo->A, len, 1, !merge);
    return 0;
}

/* DoRA merged as PEFT: W' = (m/‖W + s·B·A‖)·(W + s·B·A) per output channel, the norms
 * those of the unmerged weight (kept for the unmerge: W = W'·‖·‖/m − s·B·A). */
static int dora_merge(fw_model *fm, fw_weight *W, tr_site *st, int merge) {
    const be_backend *be = fw_backend(fm);
    const fw_lora *lo = &st->lo;
    int conv = W->kind == FW_W_CONV1D, OUT = lo->out;
    float *g = lp_malloc(2 * (size_t)OUT * sizeof(float)), *dev = be->alloc(OUT * sizeof(float));
    int rc = g && dev ? 0 : lp_seterr("out of memory");
    if (!rc && merge) {
        if (!st->dora_g) st->dora_g = lp_malloc((size_t)OUT * sizeof(float));
        rc = st->dora_g ? fw_dora_norm(fm, lo, dev) : lp_seterr("out of memory");
        if (!rc) {
            be->to_host(g, dev, OUT * sizeof(float));
            be->to_host(g + OUT, lo->mag, OUT * sizeof(float));
            for (int j = 0; j < OUT; j++) st->dora_g[j] = g[OUT + j] / g[j];
        }
    }
    if (!rc && !st->dora_g) rc = lp_seterr("%s: no norms kept from its merge", st->module);
    if (!rc) {   /* merge: scale by g after adding; unmerge: by 1/g before subtracting */
        for (int j = 0; j < OUT; j++) g[j] = merge ? st->dora_g[j] : 1.0f / st->dora_g[j];
        be->to_device(dev, g, OUT * sizeof(float));
        float sc = merge ? lo->scale : -lo->scale;
        if (!merge) rc = fw_weight_scale(fm, W, dev, OUT, !conv, 0);
        if (!rc)
            rc = conv ? fw_weight_addmm(fm, W, lo->A, lo->B, lo->in, OUT, lo->r, 1, 1, sc)
                      : fw_weight_addmm(fm, W, lo->B, lo->A, OUT, lo->in, lo->r, 0, 0, sc);
        if (!rc && merge) rc = fw_weight_scale(fm, W, dev, OUT, !conv, 0);
    }
    lp_free(g);
    be->free(dev);
    return rc;
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
        if (lo->kind != FW_AD_LORA) {
            if (ia3_merge(fm, W, lo, a->sites[k].module, w, nw, merge) < 0) {
                if (k == 0) return lp_preferr("%s adapter `%s`", merge ? "merging" : "unmerging", name);
                lp_preferr("adapter `%s` is only partly %s", name, merge ? "merged" : "unmerged");
                return -1;
            }
            fw_mark_weights_changed(fm);
            continue;
        }
        if (lo->dora) {
            if (dora_merge(fm, W, &a->sites[k], merge) < 0) {
                if (k == 0) return lp_preferr("%s adapter `%s`", merge ? "merging" : "unmerging", name);
                lp_preferr("adapter `%s` is only partly %s", name, merge ? "merged" : "unmerged");
                return -1;
            }
            fw_mark_weights_changed(fm);
            continue;
        }
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
        for (size_t k = 0; k < a->nsites; k++)
            a->sites[k].lo.dA = a->sites[k].lo.dB = a->sites[k].lo.dmag = NULL;
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

int tr_adapters_ia3(fw_model *fm) {
    tr_state *s = tr_state_of(fm);
    return s && s->nad && s->ad[0]->ia3;
}

const char *tr_adapters_kind(fw_model *fm) {
    tr_state *s = tr_state_of(fm);
    return s && s->nad ? type_names[tr_type(s->ad[0])] : NULL;
}

int tr_adapter_is_dora(fw_model *fm, const char *name) {
    tr_state *s = tr_state_of(fm);
    tr_adapter *a = s ? find_adapter(s, name, NULL) : NULL;
    return a && a->dora;
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
                if (k == 0 && s->ad[i]->ada) a += s->ad[i]->ada->nempty;   /* their ranknum */
                const fw_lora *lo = &s->ad[i]->sites[k].lo;
                a += fw_lora_na(lo) + fw_lora_nb(lo) + fw_lora_nm(lo);
                if (s->ad[i]->ada) a += (uint64_t)lo->r + 1;   /* lora_E, ranknum */
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
