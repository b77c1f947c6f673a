/* mdl_tree.c — the module tree over a model's tensors: nodes from the dotted names, types and
 * classes from the architecture table (or guessed from names and shapes), parameter counts per
 * subtree, lookup by path, glob matching and the summary. */
#define _GNU_SOURCE
#include "model/arch.h"
#include "model/model.h"
#include "util/err.h"
#include "util/mem.h"
#include <fnmatch.h>
#include <stdio.h>
#include <string.h>

static const char *const mtype_names[MT_NTYPES] = {
    [MT_MODEL] = "Model", [MT_MODULE] = "Module", [MT_LIST] = "ModuleList",
    [MT_EMBEDDING] = "Embedding", [MT_LINEAR] = "Linear", [MT_CONV1D] = "Conv1D",
    [MT_RMSNORM] = "RMSNorm", [MT_LAYERNORM] = "LayerNorm", [MT_ATTENTION] = "Attention",
    [MT_MLP] = "MLP", [MT_LAYER] = "Layer", [MT_EMBEDDINGS] = "Embeddings",
};

const char *mdl_mtype_name(mdl_mtype t) { return t < MT_NTYPES ? mtype_names[t] : "?"; }

/* Base-model prefixes that files and users may or may not write. */
static const char *const known_prefixes[] = {"model", "transformer", "bert", NULL};

static mdl_module *node_new(mdl_model *m, mdl_module *parent, const char *path, size_t len) {
    mdl_module *n = lp_calloc(1, sizeof *n);
    if (!n || !(n->path = lp_strndup(path, len))) { lp_free(n); return NULL; }
    const char *dot = strrchr(n->path, '.');
    n->local = dot ? dot + 1 : n->path;
    n->parent = parent;
    n->layer = -1;
    if (parent) {
        mdl_module **c = lp_realloc(parent->children, sizeof *c * (parent->nchildren + 1));
        if (!c) { lp_free(n->path); lp_free(n); return NULL; }
        parent->children = c;
        c[parent->nchildren++] = n;
    }
    mdl_module **all = lp_realloc(m->modules, sizeof *all * (m->nmodules + 1));
    if (!all) {   /* keep it reachable for mdl_free through the parent only: undo */
        if (parent) parent->nchildren--;
        lp_free(n->path);
        lp_free(n);
        return NULL;
    }
    m->modules = all;
    all[m->nmodules++] = n;
    return n;
}

static mdl_module *child(mdl_module *p, const char *local, size_t len) {
    for (size_t i = 0; i < p->nchildren; i++)
        if (strlen(p->children[i]->local) == len && memcmp(p->children[i]->local, local, len) == 0)
            return p->children[i];
    return NULL;
}

/* The module for the dotted path name[0..len), created with its ancestors as needed. */
static mdl_module *ensure(mdl_model *m, const char *name, size_t len) {
    mdl_module *cur = m->root;
    size_t start = 0;
    while (start < len) {
        const char *dot = memchr(name + start, '.', len - start);
        size_t end = dot ? (size_t)(dot - name) : len;
        mdl_module *c = child(cur, name + start, end - start);
        if (!c && !(c = node_new(m, cur, name, end))) return NULL;
        cur = c;
        start = end + 1;
    }
    return cur;
}

static int add_param(mdl_module *mod, mdl_tensor *t) {
    mdl_tensor **p = lp_realloc(mod->params, sizeof *p * (mod->nparams_local + 1));
    if (!p) return -1;
    mod->params = p;
    p[mod->nparams_local++] = t;
    return 0;
}

const mdl_tensor *mdl_param(const mdl_module *mod, const char *local) {
    for (size_t i = 0; i < mod->nparams_local; i++) {
        const char *n = strrchr(mod->params[i]->name, '.');
        if (strcmp(n ? n + 1 : mod->params[i]->name, local) == 0) return mod->params[i];
    }
    if (mod->tied && strcmp(local, "weight") == 0) return mod->tied;
    return NULL;
}

static int all_digits(const char *s) {
    if (!*s) return 0;
    for (; *s; s++) if (*s < '0' || *s > '9') return 0;
    return 1;
}

static int contains(const char *s, const char *w) { return strstr(s, w) != NULL; }

/* No table row: guess from names and shapes, so unknown models still read well. */
static void guess_type(mdl_module *n) {
    const mdl_tensor *w = mdl_param(n, "weight"), *b = mdl_param(n, "bias");
    int digits = n->nchildren > 0;
    for (size_t i = 0; i < n->nchildren; i++) digits &= all_digits(n->children[i]->local);
    const char *l = n->local;
    if (digits) n->type = MT_LIST;
    else if (w && w->st->ndim == 2 && n->nchildren == 0 &&
             (contains(l, "emb") || !strcmp(l, "wte") || !strcmp(l, "wpe")))
        n->type = MT_EMBEDDING;
    else if (w && w->st->ndim == 2 && n->nchildren == 0) n->type = MT_LINEAR;
    else if (w && w->st->ndim == 1 && n->nchildren == 0 &&
             (contains(l, "norm") || contains(l, "ln") || contains(l, "LayerNorm")))
        n->type = b ? MT_LAYERNORM : MT_RMSNORM;
    else if (contains(l, "attn") || contains(l, "attention")) n->type = MT_ATTENTION;
    else if (!strcmp(l, "mlp") || contains(l, "feed_forward") || !strcmp(l, "ffn")) n->type = MT_MLP;
    else if (n->parent && n->parent->type == MT_LIST && all_digits(l)) n->type = MT_LAYER;
    else n->type = MT_MODULE;
}

/* The module's path relative to the base model, or NULL when it lies outside it. */
static const char *rel_path(const arch_desc *a, const char *path) {
    size_t pl = strlen(a->prefix);
    if (!pl) return path;
    if (strcmp(path, a->prefix) == 0) return "";
    if (strncmp(path, a->prefix, pl) == 0 && path[pl] == '.') return path + pl + 1;
    return NULL;
}

static int set_class(mdl_model *m, mdl_module *n) {
    const arch_desc *a = m->arch;
    if (n == m->root) {
        n->type = MT_MODEL;
        n->cls = m->config && m->config->architecture ? m->config->architecture : "Model";
        return 0;
    }
    if (a) {
        const char *rel = rel_path(a, n->path);
        for (size_t r = 0; r < a->nmodules; r++) {
            const arch_module *row = &a->modules[r];
            int layer, head = (row->flags & AT_HEAD) != 0;
            if (!arch_row_exists(a, m->config, row->flags)) continue;
            if (head ? !arch_match(row->name, n->path, &layer)
                     : !(rel && arch_match(row->name, rel, &layer)))
                continue;
            n->type = row->type;
            const char *cls = row->cls ? row->cls : a->embed_cls;
            if (!row->name[0] && row->type == MT_MODULE && a->base_cls) cls = a->base_cls;
            if (strstr(cls, "%s")) {
                size_t len = strlen(cls) + strlen(a->cls_prefix);
                if (!(n->cls_owned = lp_malloc(len))) return lp_seterr("out of memory");
                snprintf(n->cls_owned, len, cls, a->cls_prefix);
                n->cls = n->cls_owned;
            } else {
                n->cls = cls;
            }
            return 0;
        }
    }
    guess_type(n);
    n->cls = mdl_mtype_name(n->type);
    return 0;
}

/* Post-order: parameter counts, in/out, layer indices. Tied parameters count once, where
 * they are stored. */
static uint64_t finish(mdl_module *n, int layer) {
    n->layer = layer;
    uint64_t total = 0;
    for (size_t i = 0; i < n->nparams_local; i++) total += n->params[i]->st->nelem;
    for (size_t i = 0; i < n->nchildren; i++) {
        mdl_module *c = n->children[i];
        int cl = layer;
        if (n->type == MT_LIST && all_digits(c->local)) cl = atoi(c->local);
        total += finish(c, cl);
    }
    n->nparams = total;
    const mdl_tensor *w = mdl_param(n, "weight");
    if (w && w->st->ndim == 2) {
        const uint64_t *s = w->st->shape;
        if (n->type == MT_CONV1D) { n->in = (int64_t)s[0]; n->out = (int64_t)s[1]; }
        else if (n->type == MT_EMBEDDING) { n->in = (int64_t)s[0]; n->out = (int64_t)s[1]; }
        else { n->out = (int64_t)s[0]; n->in = (int64_t)s[1]; }
        if (n->tied && n->type == MT_LINEAR) { n->out = (int64_t)s[0]; n->in = (int64_t)s[1]; }
    } else if (w && w->st->ndim == 1) {
        n->in = n->out = (int64_t)w->st->shape[0];
    }
    return total;
}

static void summarise(mdl_model *m) {
    mdl_summary *s = &m->summary;
    const mdl_config *c = m->config;
    s->architecture = c && c->architecture ? c->architecture : "unknown";
    if (c) {
        s->layers = c->num_hidden_layers;
        s->hidden = c->hidden_size;
        s->heads = c->num_attention_heads;
        s->kv_heads = c->num_key_value_heads;
        s->head_dim = c->head_dim;
        s->intermediate = c->intermediate_size;
        s->vocab = c->vocab_size;
    }
    if (!s->layers) {   /* no config: the longest ModuleList is the layer stack */
        for (size_t i = 0; i < m->nmodules; i++)
            if (m->modules[i]->type == MT_LIST && (int64_t)m->modules[i]->nchildren > s->layers)
                s->layers = (int64_t)m->modules[i]->nchildren;
    }
    s->params = m->root->nparams;
    uint64_t per[ST_NDTYPES] = {0};
    for (size_t i = 0; i < m->ntensors; i++)   /* 4-bit weights: their type, below */
        if (!m->tensors[i].q4) per[m->tensors[i].st->dtype] += m->tensors[i].st->nelem;
    int used = 0;
    s->dtype = ST_F32;
    for (int d = 0; d < ST_NDTYPES; d++) {
        if (per[d]) used++;
        if (per[d] > per[s->dtype]) s->dtype = (st_dtype)d;
    }
    s->mixed_dtypes = used > 1;
    s->nfiles = (int)m->nfiles;
    for (size_t i = 0; i < m->nfiles; i++) s->file_bytes += m->files[i]->size;
}

int mdl_build_tree(mdl_model *m) {
    if (!(m->root = node_new(m, NULL, "", 0))) return lp_seterr("out of memory");
    for (size_t i = 0; i < m->ntensors; i++) {
        mdl_tensor *t = &m->tensors[i];
        const char *dot = strrchr(t->name, '.');
        mdl_module *mod = dot ? ensure(m, t->name, (size_t)(dot - t->name)) : m->root;
        if (!mod || add_param(mod, t) < 0) return lp_seterr("out of memory");
    }
    /* A head that shares the token embedding: present as a module, counted once. */
    const arch_desc *a = m->arch;
    if (a && m->config->tie_word_embeddings) {
        for (size_t r = 0; r < a->ntensors; r++) {
            if (!(a->tensors[r].flags & AT_TIED)) continue;
            char embed[256];
            snprintf(embed, sizeof embed, "%s%s%s", a->prefix, a->prefix[0] ? "." : "", a->embed);
            const mdl_tensor *e = mdl_find_tensor(m, embed);
            const char *name = a->tensors[r].name, *dot = strrchr(name, '.');
            mdl_module *mod = ensure(m, name, (size_t)(dot - name));
            if (!mod) return lp_seterr("out of memory");
            mod->tied = e;
        }
    }
    for (size_t i = 0; i < m->nmodules; i++)   /* pre-order: parents typed before children */
        if (set_class(m, m->modules[i]) < 0) return -1;
    finish(m->root, -1);
    /* m->modules is in creation order; rebuild it in tree pre-order */
    size_t k = 0, cap = m->nmodules;
    mdl_module **order = lp_malloc(sizeof *order * cap), **stack = lp_malloc(sizeof *stack * cap);
    if (!order || !stack) { lp_free(order); lp_free(stack); return lp_seterr("out of memory"); }
    size_t sp = 0;
    stack[sp++] = m->root;
    while (sp) {
        mdl_module *n = stack[--sp];
        order[k++] = n;
        for (size_t i = n->nchildren; i-- > 0;) stack[sp++] = n->children[i];
    }
    lp_free(stack);
    lp_free(m->modules);
    m->modules = order;
    summarise(m);
    return 0;
}

/* ---- lookup ------------------------------------------------------------------------------- */

char *mdl_path_norm(const char *path) {
    size_t n = strlen(path);
    char *out = lp_malloc(n + 2), *o = out;
    if (!out) return NULL;
    while (*path == ' ' || *path == '.') path++;
    for (const char *p = path; *p; p++) {
        if (*p == '[') { if (o > out && o[-1] != '.') *o++ = '.'; }
        else if (*p == ']') { /* `[0].x` and `[0]` both end the index */ }
        else *o++ = *p;
    }
    while (o > out && (o[-1] == '.' || o[-1] == ' ')) o--;
    *o = 0;
    return out;
}

/* Call try(path) for the path as given and with the model prefix added or removed. */
typedef const void *(*try_fn)(const mdl_model *m, const char *path);

static const void *with_prefixes(const mdl_model *m, const char *path, try_fn try) {
    char *p = mdl_path_norm(path);
    if (!p) return NULL;
    const void *r = try(m, p);
    char buf[1024];
    for (const char *const *k = known_prefixes; !r && *k; k++) {
        size_t kl = strlen(*k);
        if (strncmp(p, *k, kl) == 0 && (p[kl] == '.' || p[kl] == 0)) {
            r = try(m, p[kl] ? p + kl + 1 : "");   /* `model.layers.0` in a file without it */
        } else if (snprintf(buf, sizeof buf, "%s%s%s", *k, *p ? "." : "", p) < (int)sizeof buf) {
            if (!m->arch || strcmp(m->arch->prefix, *k) == 0 ||
                (m->arch->alt_prefix && strcmp(m->arch->alt_prefix, *k) == 0) || !m->arch->prefix[0])
                r = try(m, buf);
        }
    }
    lp_free(p);
    return r;
}

static const void *try_module(const mdl_model *m, const char *p) {
    for (size_t i = 0; i < m->nmodules; i++)
        if (strcmp(m->modules[i]->path, p) == 0) return m->modules[i];
    return NULL;
}

static const void *try_tensor(const mdl_model *m, const char *p) {
    for (size_t i = 0; i < m->ntensors; i++)
        if (strcmp(m->tensors[i].name, p) == 0) return &m->tensors[i];
    const char *dot = strrchr(p, '.');   /* a tied head's weight */
    if (dot) {
        for (size_t i = 0; i < m->nmodules; i++) {
            const mdl_module *mod = m->modules[i];
            if (mod->tied && strlen(mod->path) == (size_t)(dot - p) &&
                memcmp(mod->path, p, (size_t)(dot - p)) == 0 && strcmp(dot + 1, "weight") == 0)
                return mod->tied;
        }
    }
    return NULL;
}

const mdl_module *mdl_find(const mdl_model *m, const char *path) {
    return with_prefixes(m, path, try_module);
}

const mdl_tensor *mdl_find_tensor(const mdl_model *m, const char *path) {
    return with_prefixes(m, path, try_tensor);
}

size_t mdl_glob(const mdl_model *m, const char *pattern, const mdl_module **out, size_t cap) {
    char *p = mdl_path_norm(pattern);
    if (!p) return 0;
    const char *ps = p;   /* the pattern without a prefix the model may not have */
    for (const char *const *k = known_prefixes; *k; k++) {
        size_t kl = strlen(*k);
        if (strncmp(p, *k, kl) == 0 && p[kl] == '.') { ps = p + kl + 1; break; }
    }
    size_t n = 0;
    for (size_t i = 1; i < m->nmodules; i++) {   /* modules[0] is the root */
        const char *path = m->modules[i]->path, *stripped = path;
        for (const char *const *k = known_prefixes; *k; k++) {
            size_t kl = strlen(*k);
            if (strncmp(path, *k, kl) == 0 && path[kl] == '.') { stripped = path + kl + 1; break; }
        }
        if (fnmatch(p, path, 0) == 0 || fnmatch(p, stripped, 0) == 0 ||
            fnmatch(ps, stripped, 0) == 0) {
            if (n < cap) out[n] = m->modules[i];
            n++;
        }
    }
    lp_free(p);
    return n;
}

int mdl_tensor_to_f32(const mdl_tensor *t, uint64_t first, size_t n, float *out) {
    if (first > t->st->nelem || n > t->st->nelem - first)
        return lp_seterr("tensor `%s`: elements %llu..%llu are outside its %llu elements", t->name,
                         (unsigned long long)first, (unsigned long long)(first + n),
                         (unsigned long long)t->st->nelem);
    if (t->q4) {   /* bitsandbytes' dequantization, value by value */
        uint64_t cols = t->st->shape[1], rows = t->st->shape[0];
        uint64_t in = t->q4->transposed ? rows : cols;   /* a stored row */
        for (size_t i = 0; i < n; i++) {
            uint64_t e = first + i;
            if (t->q4->transposed) e = (e % cols) * rows + e / cols;   /* [in, out] of [out, in] */
            if (t->q4->type == 3) {   /* int8: CB · (SCB · 1/127), Linear8bitLt's order */
                out[i] = (float)(int8_t)t->q4->codes[e] * (t->q4->absmax[e / in] * (1.0f / 127.0f));
                continue;
            }
            uint8_t c = t->q4->codes[e / 2];
            out[i] = t->q4->code[e % 2 ? c & 15 : c >> 4] * mdl_q4_scale(t->q4, e / 64);
        }
        return 0;
    }
    if (st_to_f32(out, t->st->data, t->st->dtype, first, n) < 0)
        return lp_preferr("tensor `%s`", t->name);
    return 0;
}
