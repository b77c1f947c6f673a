/* adapter.c (commands) — `lora` (`ia3` is in ia3.c), `freeze`, `unfreeze`, `trainable`, `backward`, `save_adapter`,
 * `load_adapter`, `adapter`: LoRA adapters and partial fine-tuning on a loaded model, and the
 * gradients of the last forward. The work is runtime/train/lora.h and runtime/nn/backward.h;
 * this file turns arguments into calls and results into text, tables and values. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "commands/compute.h"
#include "commands/model.h"
#include "lang/registry.h"
#include "lang/table.h"
#include "nn/backward.h"
#include "train/lora.h"
#include "train/params.h"
#include "util/err.h"
#include "util/mem.h"
#include "util/sbuf.h"

/* commands/forward.c: the compute state whose last forward made the forward output `out`;
 * NULL after lp_fail when `out` is not one, or a later forward on that model replaced it. */
fw_model *cmd_forward_output_model(lp_call *c, lv_value *out);

static void say(lp_call *c, const char *text) {
    lp_out_text(c, 1, text, strlen(text));
    lp_out_text(c, 1, "\n", 1);
}

static void say_report(lp_call *c, fw_model *fm) {
    char buf[256];
    tr_report(fm, buf, sizeof buf, NULL, NULL);
    say(c, buf);
}

static const lp_param model_param[] = {
    {"model", LP_T_VALUE, .vtype = &lv_model_type, .help = "a loaded model"}, {0}};

/* ---- lora ------------------------------------------------------------------------------------ */

int cmd_names(lp_call *c, const char *arg, const char ***out, size_t *n, int *is_str) {
    lv_value *v = lp_arg(c, arg);
    *out = NULL;
    *n = 0;
    *is_str = v->kind == LV_STR;
    if (v->kind == LV_NONE) return 0;
    if (v->kind != LV_STR && v->kind != LV_LIST)
        return lp_fail(c, "TypeError", "%s: a list of module names or a regex string, got %s",
                       arg, lv_type_name(v));
    size_t k = v->kind == LV_STR ? 1 : v->u.list.n;
    *out = lp_calloc(k ? k : 1, sizeof **out);
    if (!*out) return lp_fail(c, "MemoryError", "out of memory");
    for (size_t i = 0; i < k; i++) {
        const lv_value *x = v->kind == LV_STR ? v : v->u.list.items[i];
        if (x->kind != LV_STR) {
            lp_free(*out);
            *out = NULL;
            return lp_fail(c, "TypeError", "%s: a list of module names, got a %s in it", arg,
                           lv_type_name(x));
        }
        (*out)[i] = x->u.str.s;
    }
    *n = k;
    return 0;
}

int cmd_filter(lp_call *c, tr_filter *f) {
    memset(f, 0, sizeof *f);
    const char **ex = NULL, **lp = NULL;
    int ex_str = 0, lp_str = 0;
    if (cmd_names(c, "exclude", &ex, &f->nexclude, &ex_str) < 0) return -1;
    f->exclude = ex;
    f->exclude_regex = ex_str;
    if (cmd_names(c, "layers_pattern", &lp, &f->npattern, &lp_str) < 0) {
        cmd_filter_free(f);
        return -1;
    }
    f->layers_pattern = lp;
    lv_value *v = lp_arg(c, "layers");
    if (v->kind == LV_NONE) return 0;
    size_t n = v->kind == LV_LIST ? v->u.list.n : 1;
    int *l = lp_calloc(n + 1, sizeof *l);
    if (!l) {
        cmd_filter_free(f);
        return lp_fail(c, "MemoryError", "out of memory");
    }
    f->layers = l;
    f->nlayers = n;
    for (size_t i = 0; i < n; i++) {
        const lv_value *x = v->kind == LV_LIST ? v->u.list.items[i] : v;
        if (x->kind != LV_INT || x->u.i < 0 || x->u.i > 1 << 20) {
            cmd_filter_free(f);
            return lp_fail(c, "TypeError", "layers: a layer index or a list of them, like [0, 1], "
                           "got %s", lv_type_name(x));
        }
        l[i] = (int)x->u.i;
    }
    return 0;
}

void cmd_filter_free(tr_filter *f) {
    lp_free((void *)f->exclude);
    lp_free((void *)f->layers_pattern);
    lp_free((void *)f->layers);
    memset(f, 0, sizeof *f);
}

/* A dict option of module patterns (rank_pattern, alpha_pattern) into keys[] and values (ints
 * into iv, numbers into dv, whichever is given); n = 0 for none. -1 after lp_fail. */
static int pattern_arg(lp_call *c, const char *arg, const char ***keys, int **iv, double **dv,
                       size_t *n) {
    lv_value *v = lp_arg(c, arg);
    *keys = NULL;
    *n = 0;
    if (v->kind == LV_NONE) return 0;
    if (v->kind != LV_DICT)
        return lp_fail(c, "TypeError", "%s: a dict of module patterns, like {\"q_proj\": 16}, "
                       "got %s", arg, lv_type_name(v));
    size_t k = v->u.dict.n;
    *keys = lp_calloc(k + 1, sizeof **keys);
    if (iv) *iv = lp_calloc(k + 1, sizeof **iv);
    if (dv) *dv = lp_calloc(k + 1, sizeof **dv);
    if (!*keys || (iv && !*iv) || (dv && !*dv)) return lp_fail(c, "MemoryError", "out of memory");
    for (size_t i = 0; i < k; i++) {
        const lv_dict_entry *e = &v->u.dict.e[i];
        if (iv ? e->val->kind != LV_INT : !lv_is_number(e->val))
            return lp_fail(c, "TypeError", "%s: `%s` maps to %s; it takes %s", arg, e->key,
                           lv_type_name(e->val), iv ? "an integer rank" : "a number");
        (*keys)[i] = e->key;
        if (iv) (*iv)[i] = e->val->u.i > 1 << 16 ? (1 << 16) + 1 : e->val->u.i < -1 ? -1
                                                                    : (int)e->val->u.i;
        else (*dv)[i] = lv_as_double(e->val);
    }
    *n = k;
    return 0;
}

static int run_lora(lp_call *c, lv_value **result) {
    (void)result;
    fw_model *fm = cmd_compute(c, "model", 0);
    if (!fm) return -1;
    tr_lora_config cfg = {0};
    cfg.name = lp_arg_str(c, "name");
    int64_t r = lp_arg_int(c, "r");
    if (r <= 0 || r > 1 << 16) return lp_fail(c, "ValueError", "r must be a positive integer, got %lld", (long long)r);
    cfg.r = (int)r;
    cfg.alpha = lp_arg_float(c, "alpha");
    cfg.dropout = lp_arg_float(c, "dropout");
    cfg.rslora = lp_arg_bool(c, "rslora");
    cfg.dora = lp_arg_bool(c, "dora");
    cfg.bias = lp_arg_str(c, "bias");
    cfg.seed = (uint64_t)lp_arg_int(c, "seed");
    lv_value *init = lp_arg(c, "init");
    if (init->kind == LV_BOOL && init->u.b) cfg.init = "true";
    else if (init->kind == LV_STR) cfg.init = init->u.str.s;
    else return lp_fail(c, "ValueError", "init must be true, \"gaussian\", \"pissa\" or \"olora\"");
    const char **names = NULL, **mts = NULL;
    int is_str = 0, ms_str;
    if (cmd_names(c, "target", &names, &cfg.ntargets, &is_str) < 0 ||
        cmd_names(c, "modules_to_save", &mts, &cfg.nmts, &ms_str) < 0) {
        lp_free(names);
        return -1;
    }
    static const char *const qv[] = {"q_proj", "v_proj"}, *const gpt2[] = {"c_attn"},
                             *const bert[] = {"query", "value"};
    if (!names) {   /* PEFT's default targets per model type */
        const mdl_config *mc = fw_mdl(fm)->config;
        const char *mt = mc && mc->model_type ? mc->model_type : "";
        if (!strcmp(mt, "phi3") || !strcmp(mt, "smollm3")) {   /* none in PEFT's table */
            lp_free(names), lp_free(mts);
            return lp_fail(c, "ValueError", "PEFT has no default LoRA targets for model type "
                           "`%s`: give target=[...] (%s) or target=\"all-linear\"", mt,
                           !strcmp(mt, "phi3") ? "\"qkv_proj\", \"o_proj\", \"gate_up_proj\", "
                                                 "\"down_proj\""
                                               : "\"q_proj\", \"v_proj\", …");
        }
        cfg.targets = !strcmp(mt, "gpt2") ? gpt2 : !strcmp(mt, "bert") ? bert : qv;
        cfg.ntargets = !strcmp(mt, "gpt2") ? 1 : 2;
    } else if (is_str && !strcmp(names[0], "all-linear")) {
        cfg.all_linear = 1;
        cfg.ntargets = 0;
    } else {
        cfg.targets = names;
        cfg.target_regex = is_str;
    }
    cfg.modules_to_save = mts;
    const char **rk = NULL, **ak = NULL;
    int *rv = NULL;
    double *av = NULL;
    if (pattern_arg(c, "rank_pattern", &rk, &rv, NULL, &cfg.nrank) < 0 ||
        pattern_arg(c, "alpha_pattern", &ak, NULL, &av, &cfg.nalpha) < 0) {
        lp_free(names), lp_free(mts), lp_free(rk), lp_free(rv), lp_free(ak), lp_free(av);
        return -1;
    }
    cfg.rank_keys = rk, cfg.rank_vals = rv, cfg.alpha_keys = ak, cfg.alpha_vals = av;
    if (cmd_filter(c, &cfg.filter) < 0) {
        lp_free(names), lp_free(mts), lp_free(rk), lp_free(rv), lp_free(ak), lp_free(av);
        return -1;
    }
    int rc = tr_lora_add(fm, &cfg);
    cmd_filter_free(&cfg.filter);
    lp_free(names);
    lp_free(mts);
    lp_free(rk), lp_free(rv), lp_free(ak), lp_free(av);
    if (rc < 0) return lp_fail(c, "ValueError", "%s", lp_geterr());
    say_report(c, fm);
    return 0;
}

static const lp_param lora_opts[] = {
    {"r", LP_T_INT, .def = "8", .help = "rank of A [r, in] and B [out, r]"},
    {"alpha", LP_T_FLOAT, .def = "8", .help = "the update is scaled by alpha/r", .hf = "lora_alpha"},
    {"dropout", LP_T_FLOAT, .def = "0", .help = "dropout on the adapter's input while training (forward)", .hf = "lora_dropout"},
    {"target", LP_T_ANY, .def = "none",
     .help = "module names (a name matches itself or a .suffix), a regex string (full match), or \"all-linear\"; "
             "default as PEFT: q_proj, v_proj (c_attn for GPT-2, query, value for BERT)", .hf = "target_modules"},
    {"rslora", LP_T_BOOL, .def = "false", .help = "scale by alpha/sqrt(r) (rank-stabilised LoRA)", .hf = "use_rslora"},
    CMD_FILTER_OPTS,
    {"bias", LP_T_STRING, .def = "\"none\"",
     .help = "\"all\": every bias of the model trains too (in place, saved with the adapter); "
             "\"lora_only\": the adapted modules' biases"},
    {"rank_pattern", LP_T_ANY, .def = "none",
     .help = "another r for some modules: {\"q_proj\": 16, \"layers.0.mlp.down_proj\": 4} (a key is a regex matching the end of the module name; the first that matches wins)"},
    {"alpha_pattern", LP_T_ANY, .def = "none", .help = "another alpha for some modules, as rank_pattern"},
    {"dora", LP_T_BOOL, .def = "false",
     .help = "DoRA: a trained magnitude per output channel rescales W + (alpha/r)·B·A to it", .hf = "use_dora"},
    {"init", LP_T_ANY, .def = "true", .help = "true: A ~ U(±1/sqrt(in)), B = 0; \"gaussian\": A ~ N(0, 1/r); \"pissa\": A, B from the weight's top r singular vectors, \"olora\": from its QR; both leave the residual in the base weight", .hf = "init_lora_weights"},
    {"name", LP_T_STRING, .def = "\"default\"", .help = "adapter name (several may coexist)", .hf = "adapter_name"},
    {"seed", LP_T_INT, .def = "0", .help = "seed of A's initialisation"},
    {"modules_to_save", LP_T_ANY, .def = "none",
     .help = "modules trained whole and saved with the adapter (PEFT's; e.g. [\"classifier\"])"},
    {0}};

const lp_command lp_cmd_lora = {
    "lora", model_param, lora_opts, run_lora,
    .summary = "Attach a LoRA adapter (as PEFT): the base model is frozen, A and B train",
    .help = "Each targeted Linear computes W·x + b + (alpha/r)·B(A(dropout(x))). A starts random,\n"
            "B at zero, so the model is unchanged until it trains. Prints PEFT's trainable line.\n"
            "Example:\n"
            "    lora model r=8 alpha=16 dropout=0.05 target=[\"q_proj\", \"v_proj\"]\n"
            "    # trainable params: 921,600 || all params: 2,615,263,488 || trainable%: 0.0352\n"
            "    lora model r=4 target=\"all-linear\" name=\"wide\"\n"
            "With dora=true (PEFT's use_dora) each output channel j of W' = W + (alpha/r)·B·A is\n"
            "rescaled to a trained magnitude m_j: the layer computes (m_j / ||W'_j||)·(W'·x)_j + b_j,\n"
            "m starting at the rows' norms ||W_j||; see `explain dora`.",
};

/* ---- freeze / unfreeze ------------------------------------------------------------------------ */

static int run_freeze_any(lp_call *c, int unfreeze) {
    fw_model *fm = cmd_compute(c, "model", 0);
    if (!fm) return -1;
    size_t n;
    if (tr_freeze(fm, lp_arg_str(c, "pattern"), unfreeze, &n) < 0)
        return lp_fail(c, "ValueError", "%s", lp_geterr());
    char buf[128];
    snprintf(buf, sizeof buf, "%s %zu tensor%s", unfreeze ? "unfroze" : "froze", n, n == 1 ? "" : "s");
    say(c, buf);
    say_report(c, fm);
    return 0;
}
static int run_freeze(lp_call *c, lv_value **r) { (void)r; return run_freeze_any(c, 0); }
static int run_unfreeze(lp_call *c, lv_value **r) { (void)r; return run_freeze_any(c, 1); }

static const lp_param pattern_params[] = {
    {"model", LP_T_VALUE, .vtype = &lv_model_type, .help = "a loaded model"},
    {"pattern", LP_T_STRING, .help = "glob over parameter names: \"layers.11.*\", \"*.mlp.*\", \"lm_head\""},
    {0}};

const lp_command lp_cmd_freeze = {
    "freeze", pattern_params, NULL, run_freeze,
    .summary = "Stop training base weights matching a pattern",
    .help = "Example:\n    freeze model \"*\"            # back to adapters only",
};
const lp_command lp_cmd_unfreeze = {
    "unfreeze", pattern_params, NULL, run_unfreeze,
    .summary = "Train base weights matching a pattern (partial fine-tuning)",
    .help = "A pattern naming a module covers its parameters; the model prefix is optional.\n"
            "Example:\n    unfreeze model \"layers.1.*\"\n    unfreeze model \"lm_head\"",
};

/* ---- trainable --------------------------------------------------------------------------------- */

static char *shape_text(const tr_param *p) {
    char *s = lp_malloc(48);
    if (s) {
        size_t n = strlen(p->name), k = strlen(".lora_magnitude_vector");
        int vec = n > k && !strcmp(p->name + n - k, ".lora_magnitude_vector");   /* (out,) */
        if (p->cols > 1 || (p->is_adapter && p->rows > 1 && !vec))   /* IA3's ia3_l (out, 1) */
            snprintf(s, 48, "[%d, %d]", p->rows, p->cols);
        else snprintf(s, 48, "[%d]", p->rows);
    }
    return s;
}

/* AdaLoRA: the ranks the allocator has left, grouped by layer ("layers.0: q_proj 7, v_proj 11"). */
static void ranks_footer(sbuf *f, fw_model *fm) {
    size_t n = tr_adalora_status(fm, NULL, NULL, NULL, NULL, 0);
    int *ranks = n ? lp_malloc(n * sizeof *ranks) : NULL;
    const char **mods = n ? lp_malloc(n * sizeof *mods) : NULL;
    int budget, total = 0;
    long step;
    if (!ranks || !mods) {   /* not AdaLoRA, or no memory for the list: no footer */
        lp_free(ranks), lp_free(mods);
        return;
    }
    tr_adalora_status(fm, &step, &budget, ranks, mods, n);
    for (size_t i = 0; i < n; i++) total += ranks[i];
    sb_printf(f, "\nranks kept after %ld step%s: %d", step, step == 1 ? "" : "s", total);
    if (budget >= 0) sb_printf(f, " (budget %d)", budget);
    size_t plen = 0;   /* the shared prefix up to the layer number ("model.layers.") */
    const char *last = "";
    size_t lastll = 0;
    for (size_t i = 0; i < n; i++) {
        const char *m = mods[i], *dot = strrchr(m, '.');
        const char *lay = m + strlen(m);   /* the layer part: up to the first ".N." */
        for (const char *p = m; *p; p++)
            if (*p == '.' && p[1] >= '0' && p[1] <= '9') {
                const char *e = p + 1;
                while (*e >= '0' && *e <= '9') e++;
                if (*e == '.') { lay = e; break; }
            }
        size_t ll = (size_t)(lay - m);
        if (!i) {
            plen = 0;
            const char *l = strstr(m, "layers.") ? strstr(m, "layers.") : strstr(m, "layer.");
            if (l && l < lay) plen = (size_t)(l - m);
        }
        if (lastll != ll || strncmp(last, m, ll))
            sb_printf(f, "\n  %.*s:", (int)(ll - plen), m + plen);
        else sb_printf(f, ",");
        sb_printf(f, " %s %d", dot ? dot + 1 : m, ranks[i]);
        last = m, lastll = ll;
    }
    lp_free(ranks), lp_free(mods);
}

static int run_trainable(lp_call *c, lv_value **result) {
    fw_model *fm = cmd_compute(c, "model", 0);
    if (!fm) return -1;
    tr_params *P = tr_params_of(fm);
    if (!P) return lp_fail(c, "MemoryError", "out of memory");
    static const char *const hdr[] = {"name", "shape", "params", "kind"};
    lp_table *t = lp_table_new(4, hdr);
    if (!t) return lp_fail(c, "MemoryError", "out of memory");
    for (size_t i = 0; i < P->n; i++) {
        char *shape = shape_text(&P->p[i]), num[32];
        snprintf(num, sizeof num, "%zu", P->p[i].numel);
        const char *row[] = {P->p[i].name, shape ? shape : "?", num, P->p[i].is_adapter ? "adapter" : "base"};
        int rc = lp_table_row(t, row);
        lp_free(shape);
        if (rc < 0) { lp_table_free(t); return lp_fail(c, "MemoryError", "out of memory"); }
    }
    char buf[256];
    tr_report(fm, buf, sizeof buf, NULL, NULL);
    lp_table_set_title(t, buf);
    const char *names[16];
    int active;
    size_t na = tr_adapter_names(fm, names, 16, &active);
    if (na) {
        sbuf f;
        sb_init(&f);
        const char *kind = tr_adapters_kind(fm);
        if (kind && strcmp(kind, "LoRA")) sb_printf(&f, "%s ", kind);
        sb_printf(&f, "adapters:");
        for (size_t i = 0; i < na && i < 16; i++)
            sb_printf(&f, " %s%s", names[i],
                      (int)i == active ? (tr_adapter_is_dora(fm, names[i]) ? " (active, DoRA)"
                                                                           : " (active)")
                      : tr_adapter_is_dora(fm, names[i]) ? " (DoRA)" : "");
        ranks_footer(&f, fm);
        lp_table_set_footer(t, sb_str(&f));
        sb_free(&f);
    } else if (!P->n) {
        lp_table_set_footer(t, "nothing trains yet: `lora model ...`, `ia3 model`, `adalora model total_step=N` or `unfreeze model PATTERN`");
    }
    *result = lp_table_value(t);
    return *result ? 0 : lp_fail(c, "MemoryError", "out of memory");
}

const lp_command lp_cmd_trainable = {
    "trainable", model_param, NULL, run_trainable,
    .summary = "What trains: PEFT's trainable line and a table of the trainable tensors",
    .help = "Example:\n    trainable model",
};

/* ---- backward ---------------------------------------------------------------------------------- */

typedef struct gr_row { char *module; double norm; } gr_row;
typedef struct gr_value {
    double loss, norm;
    int count;
    size_t ntensors;
    gr_row *rows;     /* per module (adapter A and B together), or per base tensor */
    size_t n;
} gr_value;

static void gr_free(void *p) {
    gr_value *g = p;
    for (size_t i = 0; i < g->n; i++) lp_free(g->rows[i].module);
    lp_free(g->rows);
    lp_free(g);
}

static char *gr_text(void *p) {
    gr_value *g = p;
    sbuf b;
    sb_init(&b);
    sb_printf(&b, "backward · loss %.4f over %d targets · gradient norm %.6g (%zu tensors)",
              g->loss, g->count, g->norm, g->ntensors);
    return sb_take(&b);
}

static lp_table *gr_table(const gr_value *g) {
    static const char *const hdr[] = {"module", "grad norm"};
    lp_table *t = lp_table_new(2, hdr);
    for (size_t i = 0; t && i < g->n; i++) {
        char num[32];
        snprintf(num, sizeof num, "%.6g", g->rows[i].norm);
        const char *row[] = {g->rows[i].module, num};
        if (lp_table_row(t, row) < 0) { lp_table_free(t); return NULL; }
    }
    return t;
}

static lv_value *gr_attr(void *p, const char *name) {
    gr_value *g = p;
    if (!strcmp(name, "loss")) return lv_float(g->loss);
    if (!strcmp(name, "norm")) return lv_float(g->norm);
    if (!strcmp(name, "count")) return lv_int(g->count);
    if (!strcmp(name, "norms")) {
        lv_value *d = lv_dict_new();
        for (size_t i = 0; d && i < g->n; i++)
            if (lv_dict_set(d, g->rows[i].module, strlen(g->rows[i].module), lv_float(g->rows[i].norm)) < 0) {
                lv_decref(d);
                d = NULL;
            }
        if (!d) lv_seterr_kind("MemoryError", "out of memory");
        return d;
    }
    if (!strcmp(name, "table")) {
        lp_table *t = gr_table(g);
        lv_value *v = t ? lp_table_value(t) : NULL;
        if (!v) lv_seterr_kind("MemoryError", "out of memory");
        return v;
    }
    return NULL;
}

static int gr_attrs(void *p, lv_attr_fn add, void *actx) {
    (void)p;
    static const char *const f[] = {"loss", "norm", "count", "norms", "table", NULL};
    for (const char *const *k = f; *k; k++) add(actx, *k);
    return 0;
}

const lv_type lv_gradients_type = {
    .name = "gradients", .free = gr_free, .text = gr_text, .getattr = gr_attr, .attrs = gr_attrs,
};

/* Per-module norms: an adapter's lora_A and lora_B (or ia3_l) count as their module. */
static int gr_fill(gr_value *g, const tr_params *P, const be_backend *be) {
    g->rows = lp_calloc(P->n ? P->n : 1, sizeof *g->rows);
    if (!g->rows) return -1;
    tr_params one = {0};
    for (size_t i = 0; i < P->n; i++) {
        one.p = &P->p[i];
        one.n = 1;
        double nn = tr_params_grad_norm(&one, be);
        char mod[600];
        snprintf(mod, sizeof mod, "%s", P->p[i].name);
        if (P->p[i].is_adapter) {
            char *cut = strstr(mod, ".lora_");
            if (!cut) cut = strstr(mod, ".ia3_l");
            if (cut) *cut = 0;
        }
        if (g->n && !strcmp(g->rows[g->n - 1].module, mod)) {
            double a = g->rows[g->n - 1].norm;
            g->rows[g->n - 1].norm = sqrt(a * a + nn * nn);
            continue;
        }
        g->rows[g->n].module = lp_strdup(mod);
        if (!g->rows[g->n].module) return -1;
        g->rows[g->n++].norm = nn;
    }
    return 0;
}

static int run_backward(lp_call *c, lv_value **result) {
    fw_model *fm = cmd_forward_output_model(c, lp_arg(c, "out"));
    if (!fm) return -1;
    float loss;
    int count;
    if (bw_last_loss(fm, &loss, &count) < 0) return lp_fail(c, "ValueError", "%s", lp_geterr());
    tr_params *P = tr_params_of(fm);
    if (!P) return lp_fail(c, "MemoryError", "out of memory");
    if (!P->n)
        return lp_fail(c, "ValueError", "nothing to train: add an adapter (`lora model ...`, `ia3 model`) or "
                       "unfreeze weights (`unfreeze model \"layers.1.*\"`) first");
    const be_backend *be = fw_backend(fm);
    if (bw_backward(fm, (float)lp_arg_float(c, "scale")) < 0) {
        /* out of device memory part-way leaves some gradients half added: a later backward
           must not add to them, so they all start again from zero */
        tr_params_zero_grad(P, be);
        return lp_fail(c, "ValueError", "the gradients were set to zero: %s", lp_geterr());
    }
    gr_value *g = lp_calloc(1, sizeof *g);
    if (!g) return lp_fail(c, "MemoryError", "out of memory");
    g->loss = loss;
    g->count = count;
    g->ntensors = P->n;
    g->norm = tr_params_grad_norm(P, be);
    if (gr_fill(g, P, be) < 0) { gr_free(g); return lp_fail(c, "MemoryError", "out of memory"); }
    *result = lv_new_opaque(&lv_gradients_type, g);
    return *result ? 0 : lp_fail(c, "MemoryError", "out of memory");
}

static const lp_param backward_params[] = {
    {"out", LP_T_ANY, .help = "the output of `forward` (its loss is differentiated)"}, {0}};
static const lp_param backward_opts[] = {
    {"scale", LP_T_FLOAT, .def = "1", .help = "multiply the loss first (gradient accumulation: 1/steps)"},
    {0}};

const lp_command lp_cmd_backward = {
    "backward", backward_params, backward_opts, run_backward,
    .summary = "Gradients of the last forward's loss for every trainable tensor",
    .help = "Gradients add up over calls (as loss.backward() in torch) until `zero_grad`\n"
            "clears them. The result shows the loss and the global gradient norm; .norms\n"
            "(a dict) and .table give the norm per adapted module.\n"
            "Example:\n    out = forward model batch\n    g = backward out\n    g.table",
};

/* ---- save / load ------------------------------------------------------------------------------- */

static int run_save_adapter(lp_call *c, lv_value **result) {
    (void)result;
    fw_model *fm = cmd_compute(c, "model", 0);
    if (!fm) return -1;
    const char *path = lp_arg_str(c, "path");
    if (tr_adapter_save(fm, lp_arg_str(c, "name"), path) < 0)
        return lp_fail(c, "IOError", "%s", lp_geterr());
    char buf[4200];
    snprintf(buf, sizeof buf, "saved %s/adapter_config.json and adapter_model.safetensors (PEFT layout)", path);
    say(c, buf);
    return 0;
}

static const lp_param path_params[] = {
    {"model", LP_T_VALUE, .vtype = &lv_model_type, .help = "a loaded model"},
    {"path", LP_T_STRING, .help = "the adapter directory"},
    {0}};
static const lp_param save_opts[] = {
    {"name", LP_T_STRING, .def = "none", .help = "which adapter (default: the active one)"}, {0}};

const lp_command lp_cmd_save_adapter = {
    "save_adapter", path_params, save_opts, run_save_adapter,
    .summary = "Save an adapter in PEFT's layout (PeftModel.from_pretrained loads it)",
    .help = "Writes adapter_config.json and adapter_model.safetensors, each atomically.\n"
            "Example:\n    save_adapter model \"out/my-adapter\"",
};

static int run_load_adapter(lp_call *c, lv_value **result) {
    (void)result;
    fw_model *fm = cmd_compute(c, "model", 0);
    if (!fm) return -1;
    if (tr_adapter_load(fm, lp_arg_str(c, "path"), lp_arg_str(c, "name")) < 0)
        return lp_fail(c, "ValueError", "%s", lp_geterr());
    say_report(c, fm);
    return 0;
}

static const lp_param load_opts[] = {
    {"name", LP_T_STRING, .def = "\"default\"", .help = "name for the loaded adapter"}, {0}};

const lp_command lp_cmd_load_adapter = {
    "load_adapter", path_params, load_opts, run_load_adapter,
    .summary = "Load a PEFT LoRA or IA3 adapter directory onto the model (active and trainable)",
    .help = "Example:\n    load_adapter model \"out/my-adapter\"",
};

/* ---- adapter: set / enable / disable / delete -------------------------------------------------- */

static int run_adapter(lp_call *c, lv_value **result) {
    (void)result;
    fw_model *fm = cmd_compute(c, "model", 0);
    if (!fm) return -1;
    const char *name = lp_arg_str(c, "name"), *act = lp_arg_str(c, "action");
    int rc;
    if (!strcmp(act, "set")) rc = tr_adapter_set_active(fm, name);
    else if (!strcmp(act, "enable")) rc = tr_adapter_enable(fm, name, 1);
    else if (!strcmp(act, "disable")) rc = tr_adapter_enable(fm, name, 0);
    else if (!strcmp(act, "delete")) rc = tr_adapter_delete(fm, name);
    else if (!strcmp(act, "merge")) rc = tr_adapter_merge(fm, name, 1);
    else if (!strcmp(act, "unmerge")) rc = tr_adapter_merge(fm, name, 0);
    else return lp_fail(c, "ValueError", "action must be \"set\", \"enable\", \"disable\", \"delete\", "
                        "\"merge\" or \"unmerge\", got \"%s\"", act);
    if (rc < 0) return lp_fail(c, "ValueError", "%s", lp_geterr());
    say_report(c, fm);
    return 0;
}

static const lp_param adapter_params[] = {
    {"model", LP_T_VALUE, .vtype = &lv_model_type, .help = "a loaded model"},
    {"name", LP_T_STRING, .help = "adapter name"},
    {0}};
static const lp_param adapter_opts[] = {
    {"action", LP_T_STRING, .def = "\"set\"",
     .help = "\"set\" (make it the trainable one), \"enable\", \"disable\", \"delete\", \"merge\" (W += scale·B·A), \"unmerge\""},
    {0}};

const lp_command lp_cmd_adapter = {
    "adapter", adapter_params, adapter_opts, run_adapter,
    .summary = "Switch between named adapters: set the active one, enable, disable, delete, merge",
    .help = "Example:\n    adapter model \"wide\"\n    adapter model \"default\" action=\"disable\"",
};
