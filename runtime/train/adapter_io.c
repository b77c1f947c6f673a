/* adapter_io.c — PEFT's adapter directory (lora.h: tr_adapter_save, tr_adapter_load).
 *
 *   <dir>/adapter_config.json          LoraConfig.to_dict() as peft 0.21.2 writes it (every key,
 *                                      sorted, indent 2)
 *   <dir>/adapter_model.safetensors    "base_model.model.<module>.lora_A.weight" [r, in] and
 *                                      ".lora_B.weight" [out, r], F32, {"format": "pt"};
 *                                      DoRA also "<module>.lora_magnitude_vector" [out];
 *                                      IA3: "<module>.ia3_l" [out, 1] or, feed-forward, [1, in]
 *
 * The pair appears atomically: both are written into a temporary directory beside the target,
 * which is then swapped in whole (util/savedir.h: a kill mid-save leaves the earlier adapter;
 * beside other entries — checkpoint-N folders — each file is atomic, the config moved last). */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <jansson.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "model/arch.h"
#include "model/st.h"
#include "train/lora.h"
#include "train/train_int.h"
#include "util/err.h"
#include "util/mem.h"
#include "util/savedir.h"

#define PREFIX "base_model.model."

static tr_adapter *adapter_named(fw_model *fm, const char *name) {
    tr_state *s = tr_state_of(fm);
    if (!s) return NULL;
    if (!name) {
        if (s->active < 0) return lp_seterr("no active adapter to save (add one with `lora`)"), NULL;
        return s->ad[s->active];
    }
    for (size_t i = 0; i < s->nad; i++)
        if (!strcmp(s->ad[i]->name, name)) return s->ad[i];
    return lp_seterr("no adapter named `%s`", name), NULL;
}

/* LoraConfig.to_dict() of peft 0.21.2, keys as it writes them. */
static json_t *number(double v) {   /* an integer when it is one, as Python writes 3 and 2.5 */
    return v == (double)(long long)v ? json_integer((long long)v) : json_real(v);
}

static json_t *strs_json(char *const *v, size_t n, int one) {   /* null, "x" or ["x", …] */
    if (!n) return json_null();
    if (one) return json_string(v[0]);
    json_t *l = json_array();
    for (size_t i = 0; i < n; i++) json_array_append_new(l, json_string(v[i]));
    return l;
}

/* exclude_modules, layers_to_transform, layers_pattern into a config that has those keys */
static json_t *with_filter(json_t *o, const tr_adapter *a) {
    if (!o) return NULL;
    if (json_object_get(o, "exclude_modules"))
        json_object_set_new(o, "exclude_modules", strs_json(a->exclude, a->nexclude, a->exclude_regex));
    if (json_object_get(o, "layers_pattern"))
        json_object_set_new(o, "layers_pattern", strs_json(a->lpat, a->nlpat, 0));
    if (json_object_get(o, "layers_to_transform")) {
        json_t *l = a->nlayers ? json_array() : json_null();
        for (size_t i = 0; i < a->nlayers; i++) json_array_append_new(l, json_integer(a->layers[i]));
        json_object_set_new(o, "layers_to_transform", l);
    }
    return o;
}

static json_t *config_json_of(fw_model *fm, const tr_adapter *a);
static json_t *config_json(fw_model *fm, const tr_adapter *a) {
    return with_filter(config_json_of(fm, a), a);
}

static json_t *config_json_of(fw_model *fm, const tr_adapter *a) {
    const mdl_model *m = fw_mdl(fm);
    json_t *o = json_object();
    json_t *am = json_object();
    char lib[256];
    const char *mt = m->config && m->config->model_type ? m->config->model_type : "unknown";
    snprintf(lib, sizeof lib, "transformers.models.%s.modeling_%s", mt, mt);
    json_object_set_new(am, "base_model_class", json_string(m->summary.architecture));
    json_object_set_new(am, "parent_library", json_string(lib));
    json_t *targets;
    if (a->target_regex) {
        targets = json_string(a->targets[0]);
    } else {
        targets = json_array();
        if (a->all_linear)   /* peft expands "all-linear" to the module names it chose */
            for (size_t i = 0; i < a->nsites; i++) json_array_append_new(targets, json_string(a->sites[i].module));
        else
            for (size_t i = 0; i < a->ntargets; i++) json_array_append_new(targets, json_string(a->targets[i]));
    }
    json_t *mts = json_null();
    if (a->nmts_names) {
        mts = json_array();
        for (size_t i = 0; i < a->nmts_names; i++) json_array_append_new(mts, json_string(a->mts_names[i]));
    }
    if (a->ada) return json_decref(o), tr_ada_config(fm, a, am, targets, mts);
    if (a->ia3) {   /* IA3Config.to_dict() of peft 0.21.2 */
        json_t *ff;
        if (a->ff_regex) ff = json_string(a->ff[0]);
        else {
            ff = json_array();
            for (size_t i = 0; i < a->nff; i++) json_array_append_new(ff, json_string(a->ff[i]));
        }
        struct { const char *k; json_t *v; } kv[] = {
            {"auto_mapping", am},
            {"base_model_name_or_path", json_string(m->path)},
            {"exclude_modules", json_null()},
            {"fan_in_fan_out", json_boolean(m->arch && (m->arch->flags & AF_CONV1D))},
            {"feedforward_modules", ff},
            {"inference_mode", json_true()},
            {"init_ia3_weights", json_boolean(strcmp(a->init, "false") != 0)},
            {"modules_to_save", mts},
            {"peft_type", json_string("IA3")},
            {"peft_version", json_string("0.21.2")},
            {"revision", json_null()},
            {"target_modules", targets},
            {"task_type", json_null()},
        };
        for (size_t i = 0; i < sizeof kv / sizeof kv[0]; i++) json_object_set_new(o, kv[i].k, kv[i].v);
        return o;
    }
    json_t *rp = json_object(), *ap = json_object();
    for (size_t i = 0; i < a->nrank; i++)
        json_object_set_new(rp, a->rank_keys[i], json_integer(a->rank_vals[i]));
    for (size_t i = 0; i < a->nalpha; i++)
        json_object_set_new(ap, a->alpha_keys[i], number(a->alpha_vals[i]));
    struct { const char *k; json_t *v; } kv[] = {
        {"alora_invocation_tokens", json_null()},
        {"alpha_pattern", ap},
        {"arrow_config", json_null()},
        {"auto_mapping", am},
        {"base_model_name_or_path", json_string(m->path)},
        {"bias", json_string(a->bias == TR_BIAS_ALL ? "all" : a->bias == TR_BIAS_LORA ? "lora_only"
                                                                                  : "none")},
        {"corda_config", json_null()},
        {"ensure_weight_tying", json_false()},
        {"eva_config", json_null()},
        {"exclude_modules", json_null()},
        {"fan_in_fan_out", json_boolean(m->arch && (m->arch->flags & AF_CONV1D))},
        {"inference_mode", json_true()},
        {"init_lora_weights", !strcmp(a->init, "true") ? json_true() : json_string(a->init)},
        {"kasa_config", json_null()},
        {"layer_replication", json_null()},
        {"layers_pattern", json_null()},
        {"layers_to_transform", json_null()},
        {"loftq_config", json_object()},
        {"lora_alpha", number(a->alpha)},
        {"lora_bias", json_false()},
        {"lora_dropout", json_real(a->dropout)},
        {"lora_ga_config", json_null()},
        {"megatron_config", json_null()},
        {"megatron_core", json_string("megatron.core")},
        {"modules_to_save", mts},
        {"monteclora_config", json_null()},
        {"peft_type", json_string("LORA")},
        {"peft_version", json_string("0.21.2")},
        {"qalora_group_size", json_integer(16)},
        {"r", json_integer(a->r)},
        {"rank_pattern", rp},
        {"revision", json_null()},
        {"target_modules", targets},
        {"target_parameters", json_null()},
        {"task_type", json_null()},
        {"trainable_token_indices", json_null()},
        {"use_bdlora", json_null()},
        {"use_dora", json_boolean(a->dora)},
        {"use_qalora", json_false()},
        {"use_rslora", json_boolean(a->rslora)},
        {"velora_config", json_null()},
    };
    for (size_t i = 0; i < sizeof kv / sizeof kv[0]; i++) json_object_set_new(o, kv[i].k, kv[i].v);
    return o;
}

int tr_adapter_save(fw_model *fm, const char *name, const char *dir) {
    tr_adapter *a = adapter_named(fm, name);
    if (!a) return -1;
    const be_backend *be = fw_backend(fm);
    fw_weight *w = NULL;
    size_t nw = 0;
    if ((a->nmts || a->nbias_w) && fw_weights(fm, &w, &nw) < 0) return -1;
    /* tensors per site: ia3_l, or lora_A and lora_B (and DoRA's lora_magnitude_vector) */
    size_t nt = a->ia3 ? 1 : a->dora ? 3 : 2;
    size_t n = nt * a->nsites + a->nmts + a->nbias_w, total = 0;
    for (size_t i = 0; i < a->nsites; i++)
        total += fw_lora_na(&a->sites[i].lo) + fw_lora_nb(&a->sites[i].lo) +
                 fw_lora_nm(&a->sites[i].lo);
    size_t nsite_t = nt * a->nsites;   /* the sites' tensors come first */
    if (a->ada) {
        nsite_t = tr_ada_ntensors(a, &total);
        n = nsite_t + a->nmts + a->nbias_w;
    }
    for (size_t i = 0; i < a->nmts; i++) total += w[a->mts[i].w].numel;
    for (size_t i = 0; i < a->nbias_w; i++) total += w[a->bias_w[i]].numel;
    st_wtensor *t = lp_calloc(n ? n : 1, sizeof *t);
    uint64_t *shapes = lp_calloc(2 * (n ? n : 1), sizeof *shapes);
    char **names = lp_calloc(n ? n : 1, sizeof *names);
    float *host = lp_malloc((total ? total : 1) * sizeof(float));
    int rc = (!t || !shapes || !names || !host) ? lp_seterr("out of memory") : 0;
    float *p = host;
    if (!rc && a->ada) rc = tr_ada_tensors(fm, a, t, shapes, names, &p);
    for (size_t i = 0; !rc && !a->ada && i < a->nsites; i++) {
        const fw_lora *lo = &a->sites[i].lo;
        for (size_t ab = 0; ab < nt && !rc; ab++) {
            size_t k = nt * i + ab;
            size_t len = strlen(PREFIX) + strlen(a->sites[i].module) + 30;
            names[k] = lp_malloc(len);
            if (!names[k]) { rc = lp_seterr("out of memory"); break; }
            if (a->ia3) {   /* ia3_l (out, 1), or (1, in) on a feed-forward module */
                int ff = lo->kind == FW_AD_IA3_FF;
                snprintf(names[k], len, PREFIX "%s.ia3_l", a->sites[i].module);
                shapes[2 * k] = (uint64_t)(ff ? 1 : lo->out);
                shapes[2 * k + 1] = (uint64_t)(ff ? lo->in : 1);
            } else if (ab == 2) {   /* DoRA: PEFT saves it (out,), without ".weight" */
                snprintf(names[k], len, PREFIX "%s.lora_magnitude_vector", a->sites[i].module);
                shapes[2 * k] = (uint64_t)lo->out;
                shapes[2 * k + 1] = 1;
            } else {
                snprintf(names[k], len, PREFIX "%s.lora_%c.weight", a->sites[i].module,
                         ab ? 'B' : 'A');
                shapes[2 * k] = (uint64_t)(ab ? lo->out : lo->r);
                shapes[2 * k + 1] = (uint64_t)(ab ? lo->r : lo->in);
            }
            size_t cnt = (size_t)shapes[2 * k] * shapes[2 * k + 1];
            be->to_host(p, ab == 2 ? lo->mag : ab ? lo->B : lo->A, cnt * sizeof(float));
            t[k] = (st_wtensor){names[k], ST_F32, ab == 2 ? 1 : 2, shapes + 2 * k, p};
            p += cnt;
        }
    }
    for (size_t i = 0; !rc && i < a->nmts; i++) {   /* modules_to_save: the module's own names */
        const fw_weight *x = &w[a->mts[i].w];
        size_t k = nsite_t + i, len = strlen(PREFIX) + strlen(x->name) + 1;
        names[k] = lp_malloc(len);
        if (!names[k]) { rc = lp_seterr("out of memory"); break; }
        snprintf(names[k], len, PREFIX "%s", x->name);
        int two = x->cols > 1;
        shapes[2 * k] = (uint64_t)x->rows;
        shapes[2 * k + 1] = (uint64_t)x->cols;
        if (a->mts_live) be->to_host(p, x->data, x->numel * sizeof(float));
        else memcpy(p, a->mts[i].mine, x->numel * sizeof(float));
        t[k] = (st_wtensor){names[k], ST_F32, two ? 2 : 1, shapes + 2 * k, p};
        p += x->numel;
    }
    for (size_t i = 0; !rc && i < a->nbias_w; i++) {   /* bias "all" / "lora_only": as PEFT */
        const fw_weight *x = &w[a->bias_w[i]];
        size_t k = nsite_t + a->nmts + i, len = strlen(x->name) + 40;
        names[k] = lp_malloc(len);
        if (!names[k]) { rc = lp_seterr("out of memory"); break; }
        tr_bias_key(a, x->name, names[k], len);
        shapes[2 * k] = (uint64_t)x->numel;
        be->to_host(p, x->data, x->numel * sizeof(float));
        t[k] = (st_wtensor){names[k], ST_F32, 1, shapes + 2 * k, p};
        p += x->numel;
    }
    /* both files into a temporary directory, then swapped in whole (util/savedir.h) */
    sd_dir sd;
    int begun = 0;
    if (!rc) {
        rc = sd_begin(&sd, dir) < 0 ? lp_preferr("saving the adapter") : 0;
        begun = !rc;
    }
    if (!rc) {
        char *path = sd_path(&sd, "adapter_model.safetensors");
        rc = path ? st_write(path, t, n, NULL, 0) : -1;
        lp_free(path);
    }
    if (!rc) {
        json_t *cfg = config_json(fm, a);
        char *text = cfg ? json_dumps(cfg, JSON_INDENT(2) | JSON_SORT_KEYS) : NULL;
        json_decref(cfg);
        if (!text) rc = lp_seterr("out of memory");
        else {
            size_t len = strlen(text);
            char *nl = lp_malloc(len + 2);
            if (!nl) rc = lp_seterr("out of memory");
            else {
                memcpy(nl, text, len);
                nl[len] = '\n';
                nl[len + 1] = 0;
                rc = sd_write_text(&sd, "adapter_config.json", nl);
                lp_free(nl);
            }
            free(text);
        }
    }
    if (begun) {
        /* PEFT reads the config first: it goes last when files must move one by one */
        static const char *const mine[] = {"adapter_model.safetensors", "adapter_config.json",
                                           "README.md", NULL};
        if (rc) sd_abort(&sd);
        else rc = sd_commit(&sd, mine);
    }
    for (size_t i = 0; names && i < n; i++) lp_free(names[i]);
    lp_free(names);
    lp_free(shapes);
    lp_free(t);
    lp_free(host);
    return rc;
}

/* ---- load ------------------------------------------------------------------------------------ */

static int cfg_unsupported(json_t *cfg, const char *dir) {
    json_t *v = json_object_get(cfg, "peft_type");
    if (v && (!json_is_string(v) || (strcmp(json_string_value(v), "LORA") &&
                                     strcmp(json_string_value(v), "IA3") &&
                                     strcmp(json_string_value(v), "ADALORA"))))
        return lp_seterr("%s: peft_type is %s; loupe loads LoRA, IA3 and AdaLoRA adapters", dir,
                         json_is_string(v) ? json_string_value(v) : "not a string");
    int ada = json_is_string(v) && !strcmp(json_string_value(v), "ADALORA");
    v = json_object_get(cfg, "bias");
    int lora = !ada && !(json_is_string(json_object_get(cfg, "peft_type")) &&
                         !strcmp(json_string_value(json_object_get(cfg, "peft_type")), "IA3"));
    if (json_is_string(v) && strcmp(json_string_value(v), "none") &&
        (!lora || (strcmp(json_string_value(v), "all") && strcmp(json_string_value(v), "lora_only"))))
        return lp_seterr("%s: bias=\"%s\"; loupe supports bias \"none\"%s", dir, json_string_value(v),
                         lora ? ", \"all\" and \"lora_only\"" : " on this adapter type");
    if (json_is_true(json_object_get(cfg, "lora_bias")))
        return lp_seterr("%s: lora_bias=true (a bias on lora_B) is not supported", dir);
    v = json_object_get(cfg, "target_parameters");
    if ((json_is_array(v) && json_array_size(v)) || json_is_string(v))
        return lp_seterr("%s: target_parameters (LoRA on nn.Parameter tensors) is not supported; "
                         "loupe adapts modules (target_modules)", dir);
    v = json_object_get(cfg, "init_lora_weights");
    const char *init = json_is_string(v) ? json_string_value(v) : "";
    if (!strncmp(init, "pissa_niter_", 12) || !strcmp(init, "loftq") || !strcmp(init, "corda"))
        /* these change the base weights as they make the adapter, in ways loupe cannot redo
           (a random SVD, LoftQ's quantization, CorDA's data); "pissa" and "olora" it redoes */
        return lp_seterr("%s: init_lora_weights=\"%s\" made the adapter for a changed base model "
                         "(the residual PEFT's %s leaves), which loupe cannot make again; save it "
                         "with PEFT's path_initial_model_for_weight_conversion to load it on the "
                         "original", dir, init, init);
    v = json_object_get(cfg, "alpha_pattern");   /* AdaLoRA's rank_pattern is its own */
    if (ada && json_is_object(v) && json_object_size(v))
        return lp_seterr("%s: alpha_pattern on an AdaLoRA adapter is not supported (one "
                         "lora_alpha for every module)", dir);
    return 0;
}

static int json_strs(json_t *v, char ***out, size_t *n, int *regex);

/* A config's exclude_modules, layers_to_transform and layers_pattern into a (kept to be saved
 * again: a loaded adapter's sites come from its tensors). */
static int load_filter(tr_adapter *a, json_t *cfg, const char *cpath) {
    json_t *ex = json_object_get(cfg, "exclude_modules"), *lt = json_object_get(cfg, "layers_to_transform");
    json_t *lp = json_object_get(cfg, "layers_pattern");
    size_t nl = json_is_array(lt) ? json_array_size(lt) : json_is_integer(lt) ? 1 : 0;
    int *layers = lp_calloc(nl + 1, sizeof *layers);
    char **exv = NULL, **lpv = NULL;
    size_t nex = 0, nlp = 0;
    int ex_regex = 0, lp_regex = 0, rc = 0;
    if (!layers || json_strs(ex, &exv, &nex, &ex_regex) < 0 || json_strs(lp, &lpv, &nlp, &lp_regex) < 0)
        rc = lp_seterr("out of memory");
    for (size_t i = 0; !rc && i < nl; i++) {
        json_t *v = json_is_integer(lt) ? lt : json_array_get(lt, i);
        if (!json_is_integer(v)) rc = lp_seterr("%s: layers_to_transform holds a non-integer", cpath);
        else layers[i] = (int)json_integer_value(v);
    }
    tr_filter f = {.exclude = (const char *const *)exv, .nexclude = nex, .exclude_regex = ex_regex,
                   .layers = layers, .nlayers = nl, .layers_pattern = (const char *const *)lpv,
                   .npattern = nlp};
    if (!rc && tr_set_filter(a, &f) < 0) rc = lp_preferr("%s", cpath);
    for (size_t i = 0; exv && i < nex; i++) lp_free(exv[i]);
    for (size_t i = 0; lpv && i < nlp; i++) lp_free(lpv[i]);
    lp_free(exv), lp_free(lpv), lp_free(layers);
    return rc;
}

/* LoRA's rank_pattern and alpha_pattern from a config into a (its keys in the file's order:
 * the first that matches wins, as PEFT's get_pattern_key). */
static int load_patterns(tr_adapter *a, json_t *cfg, const char *cpath) {
    json_t *rp = json_object_get(cfg, "rank_pattern"), *ap = json_object_get(cfg, "alpha_pattern");
    size_t nr = json_is_object(rp) ? json_object_size(rp) : 0;
    size_t na = json_is_object(ap) ? json_object_size(ap) : 0;
    const char **rk = lp_calloc(nr + 1, sizeof *rk), **ak = lp_calloc(na + 1, sizeof *ak);
    int *rv = lp_calloc(nr + 1, sizeof *rv);
    double *av = lp_calloc(na + 1, sizeof *av);
    int rc = rk && ak && rv && av ? 0 : lp_seterr("out of memory");
    const char *k;
    json_t *v;
    size_t i = 0;
    if (nr) json_object_foreach(rp, k, v) {
        json_int_t r = json_integer_value(v);
        if (!json_is_integer(v) && !rc) rc = lp_seterr("rank_pattern `%s` is not an integer", k);
        if (!rc) rk[i] = k, rv[i++] = r < -1 ? -1 : r > 1 << 16 ? (1 << 16) + 1 : (int)r;
    }
    i = 0;
    if (na) json_object_foreach(ap, k, v) {
        if (!json_is_number(v) && !rc) rc = lp_seterr("alpha_pattern `%s` is not a number", k);
        if (!rc) ak[i] = k, av[i++] = json_number_value(v);
    }
    if (!rc) rc = tr_set_patterns(a, rk, rv, nr, ak, av, na);
    if (rc) lp_preferr("%s", cpath);
    lp_free(rk), lp_free(ak), lp_free(rv), lp_free(av);
    return rc;
}

/* Is `pname` (a parameter name) a weight of a modules_to_save module of the config? */
int tr_mts_tensor(json_t *cfg, const fw_weight *w, size_t nw, const char *pname) {
    json_t *m = json_object_get(cfg, "modules_to_save");
    if (!json_is_array(m)) return 0;
    const char *dot = strrchr(pname, '.');
    if (!dot) return 0;
    int is_weight = 0;
    for (size_t i = 0; i < nw && !is_weight; i++) is_weight = !strcmp(w[i].name, pname);
    if (!is_weight) return 0;
    size_t ml = (size_t)(dot - pname);
    for (size_t i = 0; i < json_array_size(m); i++) {
        const char *t = json_string_value(json_array_get(m, i));
        size_t k = t ? strlen(t) : 0;
        if (!t || k > ml) continue;
        if (!strncmp(pname + ml - k, t, k) && (k == ml || pname[ml - k - 1] == '.')) return 1;
    }
    return 0;
}

/* The config's modules_to_save: copies taken, the file's values put in. */
int tr_load_mts(fw_model *fm, tr_adapter *a, json_t *cfg, const st_file *f, const char *file) {
    json_t *m = json_object_get(cfg, "modules_to_save");
    if (!json_is_array(m) || !json_array_size(m)) return 0;
    size_t n = json_array_size(m);
    const char **names = lp_calloc(n, sizeof *names);
    if (!names) return lp_seterr("out of memory");
    size_t k = 0;
    for (size_t i = 0; i < n; i++)
        if (json_is_string(json_array_get(m, i))) names[k++] = json_string_value(json_array_get(m, i));
    int rc = tr_mts_attach(fm, a, names, k);
    lp_free(names);
    fw_weight *w;
    size_t nw;
    if (!rc && fw_weights(fm, &w, &nw) < 0) rc = -1;
    for (size_t i = 0; !rc && i < a->nmts; i++) {
        fw_weight *x = &w[a->mts[i].w];
        char key[700];
        snprintf(key, sizeof key, PREFIX "%s", x->name);
        const st_tensor *t = st_find(f, key);
        if (!t) rc = lp_seterr("%s: modules_to_save tensor `%s` is missing", file, key);
        else if (t->nelem != x->numel)
            rc = lp_seterr("%s: `%s` has %llu values, the model's %zu", file, key,
                           (unsigned long long)t->nelem, x->numel);
        else if (st_to_f32(a->mts[i].mine, t->data, t->dtype, 0, x->numel) < 0)
            rc = lp_preferr("%s: %s", file, key);
        else
            fw_backend(fm)->to_device(x->data, a->mts[i].mine, x->numel * sizeof(float));
    }
    return rc ? rc : tr_params_rebuild(fm);
}

/* A config's list of names (or one regex string: *regex set) as owned copies. */
static int json_strs(json_t *v, char ***out, size_t *n, int *regex) {
    *n = 0;
    *regex = json_is_string(v);
    *out = lp_calloc(json_is_array(v) ? json_array_size(v) + 1 : 1, sizeof **out);
    if (!*out) return -1;
    if (json_is_string(v)) {
        if (!((*out)[0] = lp_strdup(json_string_value(v)))) return -1;
        *n = 1;
    }
    for (size_t i = 0; json_is_array(v) && i < json_array_size(v); i++)
        if (json_is_string(json_array_get(v, i))) {
            if (!((*out)[*n] = lp_strdup(json_string_value(json_array_get(v, i))))) return -1;
            (*n)++;
        }
    return 0;
}

/* IA3: a site for weight w when the file has its ia3_l; its shape gives the kind ((out, 1)
 * scales the output, (1, in) the input). */
static int ia3_site(tr_adapter *a, const st_file *f, const fw_weight *w, const char *mod,
                    const char *file) {
    char key[700];
    snprintf(key, sizeof key, PREFIX "%s.ia3_l", mod);
    const st_tensor *t = st_find(f, key);
    if (!t) return 0;
    if (!w->adaptable) return lp_seterr("%s: an adapter on %s, which loupe cannot adapt", file, mod);
    int out = t->ndim == 2 && (int)t->shape[0] == w->out && t->shape[1] == 1;
    int ff = t->ndim == 2 && t->shape[0] == 1 && (int)t->shape[1] == w->in;
    if (!out && !ff)
        return lp_seterr("%s: %s: ia3_l is neither (%d, 1) nor (1, %d)", file, mod, w->out, w->in);
    return tr_site_init(a, w, mod, out ? FW_AD_IA3 : FW_AD_IA3_FF);
}

/* bias "all" / "lora_only": the weight a file's tensor `tn` names (its PEFT key), or -1 */
static long bias_weight(const tr_adapter *a, const fw_weight *w, size_t nw, const char *tn) {
    for (size_t i = 0; i < nw; i++) {
        size_t n = strlen(w[i].name);
        if (n < 5 || strcmp(w[i].name + n - 5, ".bias")) continue;
        char key[700];
        tr_bias_key(a, w[i].name, key, sizeof key);
        if (!strcmp(key, tn) && (a->bias == TR_BIAS_ALL || strstr(key, ".base_layer.bias")))
            return (long)i;
    }
    return -1;
}

/* The trained biases: made trainable, and the file's values put in the model's weights. */
static int load_biases(fw_model *fm, tr_adapter *a, const st_file *f, const char *file) {
    fw_weight *w;
    size_t nw;
    if (!a->bias) return 0;
    if (tr_bias_attach(fm, a) < 0 || fw_weights(fm, &w, &nw) < 0) return -1;
    for (size_t i = 0; i < a->nbias_w; i++) {
        fw_weight *x = &w[a->bias_w[i]];
        char key[700];
        tr_bias_key(a, x->name, key, sizeof key);
        const st_tensor *t = st_find(f, key);
        if (!t) continue;   /* PEFT loads what the file has */
        float *host = lp_malloc(x->numel * sizeof(float));
        int rc = !host ? lp_seterr("out of memory")
                 : t->nelem != x->numel ? lp_seterr("%s: `%s` has %llu values, the model's %zu",
                                                    file, key, (unsigned long long)t->nelem, x->numel)
                 : st_to_f32(host, t->data, t->dtype, 0, x->numel) < 0 ? lp_preferr("%s: %s", file, key)
                 : 0;
        if (!rc) fw_backend(fm)->to_device(x->data, host, x->numel * sizeof(float));
        lp_free(host);
        if (rc) return -1;
        fw_mark_weights_changed(fm);
    }
    return 0;
}

static int find_installed(const tr_state *s, const tr_adapter *a) {
    for (size_t i = 0; i < s->nad; i++)
        if (s->ad[i] == a) return 1;
    return 0;
}

int tr_adapter_load(fw_model *fm, const char *path, const char *name) {
    if (!name) name = "default";
    tr_state *s = tr_state_of(fm);
    if (!s) return -1;
    for (size_t i = 0; i < s->nad; i++)
        if (!strcmp(s->ad[i]->name, name))
            return lp_seterr("an adapter named `%s` exists already; give name=\"...\" or delete it",
                             name);
    char dir[4096], file[4200];
    size_t len = strlen(path);
    if (len > 12 && !strcmp(path + len - 12, ".safetensors")) {
        const char *sl = strrchr(path, '/');
        snprintf(dir, sizeof dir, "%.*s", sl ? (int)(sl - path) : 1, sl ? path : ".");
        snprintf(file, sizeof file, "%s", path);
    } else {
        snprintf(dir, sizeof dir, "%s", path);
        snprintf(file, sizeof file, "%s/adapter_model.safetensors", path);
    }
    char cpath[4200];
    snprintf(cpath, sizeof cpath, "%s/adapter_config.json", dir);
    json_error_t jerr;
    json_t *cfg = json_load_file(cpath, 0, &jerr);
    if (!cfg) return lp_seterr("%s: %s (an adapter directory has adapter_config.json)", cpath, jerr.text);
    int rc = cfg_unsupported(cfg, dir);
    json_t *jr = json_object_get(cfg, "r"), *ja = json_object_get(cfg, "lora_alpha");
    json_t *jp = json_object_get(cfg, "peft_type");
    int ia3 = json_is_string(jp) && !strcmp(json_string_value(jp), "IA3");
    int ada = json_is_string(jp) && !strcmp(json_string_value(jp), "ADALORA");
    if (!rc) rc = tr_same_type(fm, ia3 ? TR_IA3 : ada ? TR_ADALORA : TR_LORA);
    if (!rc && ada && s->nad)
        rc = lp_seterr("this model has AdaLoRA adapter `%s` already; PEFT trains one AdaLoRA "
                       "adapter per model: delete it first", s->ad[0]->name);
    if (!rc && !ia3 && !ada && (!json_is_integer(jr) || json_integer_value(jr) <= 0))
        rc = lp_seterr("%s: r is missing or not a positive integer", cpath);
    tr_adapter *a = NULL;
    st_file *f = NULL;
    if (!rc) {
        a = lp_calloc(1, sizeof *a);
        if (!a) rc = lp_seterr("out of memory");
    }
    if (!rc) {
        a->name = lp_strdup(name);
        json_t *ji = json_object_get(cfg, "init_lora_weights");
        a->init = lp_strdup(json_is_string(ji) ? json_string_value(ji) : "true");
        a->targets = lp_calloc(1, sizeof *a->targets);
        a->ia3 = ia3;
        if (ia3) {
            lp_free(a->init);
            a->init = lp_strdup(json_is_false(json_object_get(cfg, "init_ia3_weights")) ? "false"
                                                                                        : "true");
            if (json_strs(json_object_get(cfg, "feedforward_modules"), &a->ff, &a->nff,
                          &a->ff_regex) < 0)
                rc = lp_seterr("out of memory");
        }
        a->r = ia3 ? 0 : (int)json_integer_value(jr);
        a->alpha = json_is_number(ja) ? json_number_value(ja) : 8.0;
        json_t *jd = json_object_get(cfg, "lora_dropout");
        a->dropout = json_is_number(jd) ? json_number_value(jd) : 0.0;
        a->rslora = json_is_true(json_object_get(cfg, "use_rslora"));
        a->dora = !ia3 && !ada && json_is_true(json_object_get(cfg, "use_dora"));
        if (!ia3 && !ada && load_patterns(a, cfg, cpath) < 0) rc = -1;
        const char *bias = json_string_value(json_object_get(cfg, "bias"));
        a->bias = !bias || ia3 || ada ? TR_BIAS_NONE : !strcmp(bias, "all") ? TR_BIAS_ALL
                  : !strcmp(bias, "lora_only") ? TR_BIAS_LORA : TR_BIAS_NONE;
        if (!rc && load_filter(a, cfg, cpath) < 0) rc = -1;
        a->enabled = 1;
        lp_free(a->targets);
        a->targets = NULL;
        if (json_strs(json_object_get(cfg, "target_modules"), &a->targets, &a->ntargets,
                      &a->target_regex) < 0)
            rc = lp_seterr("out of memory");
        if (!a->name || !a->init || !a->targets) rc = lp_seterr("out of memory");
    }
    if (!rc) {
        f = st_open(file);
        if (!f) rc = -1;
    }
    if (!rc && ada) {   /* adalora_io.c: sites, install, values */
        rc = tr_ada_load(fm, a, cfg, f, file);
        if (rc && a->nsites && find_installed(s, a)) tr_adapter_delete(fm, name);
        else if (rc) tr_adapter_free(fm, a);
        st_close(f);
        json_decref(cfg);
        return rc;
    }
    fw_weight *w = NULL;
    size_t nw = 0;
    if (!rc && fw_weights(fm, &w, &nw) < 0) rc = -1;
    if (!rc) {
        a->sites = lp_calloc(nw ? nw : 1, sizeof *a->sites);
        if (!a->sites) rc = lp_seterr("out of memory");
    }
    /* the sites: every module with a lora_A (ia3_l) in the file, in model order */
    for (size_t i = 0; !rc && i < nw; i++) {
        char mod[600], key[700];
        size_t nl = strlen(w[i].name);
        if (nl < 8 || strcmp(w[i].name + nl - 7, ".weight")) continue;
        snprintf(mod, sizeof mod, "%.*s", (int)(nl - 7), w[i].name);
        if (ia3) {
            rc = ia3_site(a, f, &w[i], mod, file);
            continue;
        }
        snprintf(key, sizeof key, PREFIX "%s.lora_A.weight", mod);
        const st_tensor *ta = st_find(f, key);
        if (!ta) continue;
        snprintf(key, sizeof key, PREFIX "%s.lora_B.weight", mod);
        const st_tensor *tb = st_find(f, key);
        snprintf(key, sizeof key, PREFIX "%s.lora_magnitude_vector", mod);
        const st_tensor *tm = st_find(f, key);
        if (!w[i].adaptable)
            rc = lp_seterr("%s: an adapter on %s, which loupe cannot adapt", file, mod);
        else if (!tb)
            rc = lp_seterr("%s: %s has lora_A but no lora_B", file, mod);
        else if (ta->ndim != 2 || tb->ndim != 2 || (int)ta->shape[0] != tr_site_r(a, mod) ||
                 (int)ta->shape[1] != w[i].in || (int)tb->shape[0] != w[i].out ||
                 (int)tb->shape[1] != tr_site_r(a, mod))
            rc = lp_seterr("%s: %s: lora_A/lora_B shapes do not fit r=%d and the module's "
                           "[%d → %d]", file, mod, tr_site_r(a, mod), w[i].in, w[i].out);
        else if (a->dora && !tm)
            rc = lp_seterr("%s: %s has no lora_magnitude_vector, which a DoRA adapter "
                           "(use_dora) needs", file, mod);
        else if (a->dora && (tm->nelem != (uint64_t)w[i].out || tm->ndim > 2))
            rc = lp_seterr("%s: %s: lora_magnitude_vector has %llu values, the module %d "
                           "outputs", file, mod, (unsigned long long)tm->nelem, w[i].out);
        else
            rc = tr_site_init(a, &w[i], mod, FW_AD_LORA);
    }
    if (!rc) {   /* a tensor for a module this model lacks */
        for (size_t i = 0; i < f->ntensors && !rc; i++) {
            const char *tn = f->tensors[i].name;
            int known = 0;
            for (size_t k = 0; k < a->nsites && !known; k++) {
                size_t ml = strlen(a->sites[k].module), pl = strlen(PREFIX);
                known = !strncmp(tn, PREFIX, pl) && !strncmp(tn + pl, a->sites[k].module, ml) &&
                        (ia3 ? !strcmp(tn + pl + ml, ".ia3_l")
                             : !strcmp(tn + pl + ml, ".lora_A.weight") ||
                                   !strcmp(tn + pl + ml, ".lora_B.weight") ||
                                   (a->dora && !strcmp(tn + pl + ml, ".lora_magnitude_vector")));
            }
            if (!known && !strncmp(tn, PREFIX, strlen(PREFIX)))
                known = tr_mts_tensor(cfg, w, nw, tn + strlen(PREFIX));
            if (!known && a->bias) known = bias_weight(a, w, nw, tn) >= 0;
            if (!known)
                rc = lp_seterr("%s: tensor `%s` does not belong to a module of this model "
                               "(an adapter for another architecture?)", file, tn);
        }
        if (!rc && !a->nsites) rc = lp_seterr("%s: no %s tensors", file, ia3 ? "IA3" : "LoRA");
    }
    if (!rc) rc = tr_adapter_install(fm, a, NULL, 0);
    /* PiSSA / OLoRA: the residual made again from this (original) model, as PEFT's loading
       does; the file's A and B then replace the initial ones */
    if (!rc && tr_lora_residual(fm, a) < 0) {
        lp_preferr("%s: init_lora_weights=\"%s\"", file, a->init);
        tr_adapter_delete(fm, name);
        a = NULL;
        rc = -1;
    }
    if (!rc) {   /* the weights */
        const be_backend *be = fw_backend(fm);
        for (size_t k = 0; k < a->nsites && !rc; k++) {
            fw_lora *lo = &a->sites[k].lo;
            for (int ab = 0; ab < (ia3 ? 1 : a->dora ? 3 : 2) && !rc; ab++) {
                char key[700];
                if (ia3) snprintf(key, sizeof key, PREFIX "%s.ia3_l", a->sites[k].module);
                else if (ab == 2)
                    snprintf(key, sizeof key, PREFIX "%s.lora_magnitude_vector",
                             a->sites[k].module);
                else snprintf(key, sizeof key, PREFIX "%s.lora_%c.weight", a->sites[k].module,
                              ab ? 'B' : 'A');
                const st_tensor *t = st_find(f, key);
                float *host = lp_malloc((size_t)t->nelem * sizeof(float));
                if (!host) rc = lp_seterr("out of memory");
                else if (st_to_f32(host, t->data, t->dtype, 0, (size_t)t->nelem) < 0)
                    rc = lp_preferr("%s: %s", file, key);
                else
                    be->to_device(ab == 2 ? lo->mag : ab ? lo->B : lo->A, host,
                                  (size_t)t->nelem * sizeof(float));
                lp_free(host);
            }
        }
        if (!rc) rc = tr_load_mts(fm, a, cfg, f, file);
        if (!rc) rc = load_biases(fm, a, f, file);
        if (rc) tr_adapter_delete(fm, name);
        a = NULL;
    }
    if (a) tr_adapter_free(fm, a);
    st_close(f);
    json_decref(cfg);
    return rc;
}
