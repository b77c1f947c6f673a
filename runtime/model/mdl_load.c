/* mdl_load.c — find a checkpoint's files, open them, map stored tensor names onto the names
 * transformers uses, and check them against the architecture table. The tree itself is built
 * in mdl_tree.c. */
#define _GNU_SOURCE
#include "model/arch.h"
#include "model/mdl_int.h"
#include "model/model.h"
#include "util/err.h"
#include "util/mem.h"
#include "util/sbuf.h"
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

int mdl_build_tree(mdl_model *m);   /* mdl_tree.c */


static int is_file(const char *p) { struct stat s; return stat(p, &s) == 0 && S_ISREG(s.st_mode); }

static char *join(const char *dir, const char *name) {
    sbuf b;
    sb_init(&b);
    sb_printf(&b, "%s/%s", dir, name);
    return b.oom ? (sb_free(&b), NULL) : sb_take(&b);
}

static char *dir_of(const char *path) {
    const char *s = strrchr(path, '/');
    return s ? lp_strndup(path, (size_t)(s - path)) : lp_strdup(".");
}

static int add_file(mdl_model *m, const char *path) {
    st_file **nf = lp_realloc(m->files, sizeof *nf * (m->nfiles + 1));
    if (!nf) return lp_seterr("out of memory");
    m->files = nf;
    st_file *f = st_open(path);
    if (!f) return -1;
    m->files[m->nfiles++] = f;
    return 0;
}

static int cmp_str(const void *a, const void *b) {
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Open the shards an index lists, and check that each tensor is where the index says. */
static int open_index(mdl_model *m, const char *index_path, const char *dir) {
    json_error_t je;
    json_t *ix = json_load_file(index_path, 0, &je), *wm;
    if (!ix) return lp_seterr("%s: not valid JSON: %s (line %d)", index_path, je.text, je.line);
    int rc = -1;
    if (!json_is_object(wm = json_object_get(ix, "weight_map"))) {
        lp_seterr("%s: no `weight_map` object", index_path);
        goto out;
    }
    const char *k; json_t *v;
    size_t n = 0;
    const char **names = lp_malloc(sizeof *names * (json_object_size(wm) + 1));
    if (!names) { lp_seterr("out of memory"); goto out; }
    json_object_foreach(wm, k, v) {
        const char *fn = json_string_value(v);
        if (!fn) { lp_seterr("%s: tensor `%s`: shard name is not a string", index_path, k); goto out2; }
        if (strchr(fn, '/') || strcmp(fn, "..") == 0 || strcmp(fn, ".") == 0 || !fn[0]) {
            lp_seterr("%s: tensor `%s`: shard `%s` is not a file in this directory", index_path, k, fn);
            goto out2;
        }
        names[n++] = fn;
    }
    qsort(names, n, sizeof *names, cmp_str);
    for (size_t i = 0; i < n; i++) {
        if (i && strcmp(names[i], names[i - 1]) == 0) continue;
        char *p = join(dir, names[i]);
        if (!p) { lp_seterr("out of memory"); goto out2; }
        int r = add_file(m, p);
        if (r < 0 && !is_file(p)) lp_seterr("%s lists shard `%s`, which is missing", index_path, names[i]);
        lp_free(p);
        if (r < 0) goto out2;
    }
    json_object_foreach(wm, k, v) {
        const char *fn = json_string_value(v);
        size_t i;
        for (i = 0; i < m->nfiles; i++) {
            const char *base = strrchr(m->files[i]->path, '/');
            if (strcmp(base ? base + 1 : m->files[i]->path, fn) == 0) break;
        }
        if (i == m->nfiles || !st_find(m->files[i], k)) {
            lp_seterr("%s: tensor `%s` is not in shard `%s` as the index says", index_path, k, fn);
            goto out2;
        }
    }
    rc = 0;
out2:
    lp_free(names);
out:
    json_decref(ix);
    return rc;
}

/* Every *.safetensors file in dir, sorted (a directory without model.safetensors). */
static int open_all(mdl_model *m, const char *dir) {
    DIR *d = opendir(dir);
    if (!d) return lp_seterr("%s: cannot list directory: %m", dir);
    char **names = NULL;
    size_t n = 0;
    struct dirent *e;
    int rc = 0;
    while ((e = readdir(d))) {
        size_t l = strlen(e->d_name);
        if (l > 12 && strcmp(e->d_name + l - 12, ".safetensors") == 0) {
            char **nn = lp_realloc(names, sizeof *nn * (n + 1));
            if (!nn || !(nn[n] = lp_strdup(e->d_name))) { if (nn) names = nn; rc = lp_seterr("out of memory"); break; }
            names = nn;
            n++;
        }
    }
    closedir(d);
    if (rc == 0 && n == 0)
        rc = lp_seterr("%s: no .safetensors file here (and no model.safetensors.index.json)", dir);
    if (rc == 0) qsort(names, n, sizeof *names, cmp_str);
    for (size_t i = 0; i < n && rc == 0; i++) {
        char *p = join(dir, names[i]);
        rc = p ? add_file(m, p) : lp_seterr("out of memory");
        lp_free(p);
    }
    for (size_t i = 0; i < n; i++) lp_free(names[i]);
    lp_free(names);
    return rc;
}

static char *cat3(const char *a, const char *b, const char *c) {
    size_t la = strlen(a), lb = strlen(b), lc = strlen(c);
    char *s = lp_malloc(la + lb + lc + 1);
    if (!s) return NULL;
    memcpy(s, a, la);
    memcpy(s + la, b, lb);
    memcpy(s + la + lb, c, lc + 1);
    return s;
}

/* The stored name `fn` as transformers would name it for architecture a; sets row/layer. */
static int canon_name(const arch_desc *a, const mdl_config *c, entry *e) {
    const char *fn = e->st->name;
    char *tmp = NULL;
    size_t l = strlen(fn);
    /* old BERT files: LayerNorm.gamma / LayerNorm.beta */
    if ((a->flags & AF_GAMMA_BETA) && l > 6 && strcmp(fn + l - 6, ".gamma") == 0) {
        if ((tmp = lp_malloc(l + 2))) { memcpy(tmp, fn, l - 6); strcpy(tmp + l - 6, ".weight"); }
        fn = tmp;
    } else if ((a->flags & AF_GAMMA_BETA) && l > 5 && strcmp(fn + l - 5, ".beta") == 0) {
        if ((tmp = lp_malloc(l + 1))) { memcpy(tmp, fn, l - 5); strcpy(tmp + l - 5, ".bias"); }
        fn = tmp;
    }
    if (!fn) return lp_seterr("out of memory");
    /* strip whichever base prefix the file carries */
    const char *rel = fn;
    size_t pl = strlen(a->prefix);
    if (pl && strncmp(fn, a->prefix, pl) == 0 && fn[pl] == '.') rel = fn + pl + 1;
    else if (a->alt_prefix) {
        size_t al = strlen(a->alt_prefix);
        if (strncmp(fn, a->alt_prefix, al) == 0 && fn[al] == '.') rel = fn + al + 1;
    }
    e->row = -1;
    e->layer = -1;
    for (size_t r = 0; r < a->ntensors; r++) {
        const arch_tensor *t = &a->tensors[r];
        if (!arch_row_exists(a, c, t->flags)) continue;
        int layer;
        int head = (t->flags & AT_HEAD) != 0;
        if (!arch_match(t->name, head ? fn : rel, &layer)) continue;
        e->row = (int)r;
        e->layer = layer;
        e->canon = head || !pl ? lp_strdup(head ? fn : rel) : cat3(a->prefix, ".", rel);
        lp_free(tmp);
        return e->canon ? 0 : lp_seterr("out of memory");
    }
    /* not in the table: keep the stored name (an extra tensor, still inspectable) */
    e->canon = lp_strdup(e->st->name);
    lp_free(tmp);
    return e->canon ? 0 : lp_seterr("out of memory");
}

static int cmp_canon(const void *a, const void *b) {
    return strcmp(((const entry *)a)->canon, ((const entry *)b)->canon);
}

static const entry *find_entry(const entry *es, size_t n, const char *name) {
    entry key = {.canon = (char *)name};
    return bsearch(&key, es, n, sizeof *es, cmp_canon);
}

static void fmt_shape(sbuf *b, const uint64_t *s, int nd) {
    sb_putc(b, '[');
    for (int i = 0; i < nd; i++) sb_printf(b, "%s%llu", i ? ", " : "", (unsigned long long)s[i]);
    sb_putc(b, ']');
}

/* Every row the config implies is present with its shape; tied lm_head handled. */
static int check_expected(mdl_model *m, entry *es, size_t n) {
    const arch_desc *a = m->arch;
    const mdl_config *c = m->config;
    qsort(es, n, sizeof *es, cmp_canon);
    for (size_t i = 1; i < n; i++)
        if (strcmp(es[i].canon, es[i - 1].canon) == 0)
            return lp_seterr("%s and %s: both hold tensor `%s`", es[i - 1].file->path,
                             es[i].file->path, es[i].canon);
    for (size_t i = 0; i < n; i++) {
        entry *e = &es[i];
        if (e->row < 0) continue;
        const arch_tensor *t = &a->tensors[e->row];
        if (t->flags & AT_BUFFER) { e->drop = 1; continue; }
        if (e->layer >= c->num_hidden_layers)
            return lp_seterr("%s: tensor `%s` is for layer %d, but config.json says %lld layers",
                             e->file->path, e->st->name, e->layer, (long long)c->num_hidden_layers);
        if ((t->flags & AT_TIED) && c->tie_word_embeddings) { e->drop = 1; continue; }
        uint64_t want[2];
        int bad = e->st->ndim != t->ndim;
        for (int d = 0; d < t->ndim; d++) {
            want[d] = (uint64_t)arch_dim_value(c, (arch_dim)t->dim[d]);
            if (!bad && e->st->shape[d] != want[d]) bad = 1;
        }
        if (bad) {
            sbuf b;
            sb_init(&b);
            sb_printf(&b, "%s: tensor `%s` has shape ", e->file->path, e->st->name);
            fmt_shape(&b, e->st->shape, e->st->ndim);
            sb_puts(&b, ", but config.json implies ");
            fmt_shape(&b, want, t->ndim);
            sb_printf(&b, " for %s", a->name);
            lp_seterr("%s", sb_str(&b));
            sb_free(&b);
            return -1;
        }
    }
    /* what should be there */
    for (size_t r = 0; r < a->ntensors; r++) {
        const arch_tensor *t = &a->tensors[r];
        if (!arch_row_exists(a, c, t->flags) || (t->flags & (AT_OPTIONAL | AT_BUFFER)) ||
            ((t->flags & AT_TIED) && c->tie_word_embeddings))
            continue;
        int layered = strchr(t->name, '#') != NULL;
        int64_t nl = layered ? c->num_hidden_layers : 1;
        for (int64_t L = 0; L < nl; L++) {
            sbuf b;
            sb_init(&b);
            if (!(t->flags & AT_HEAD) && a->prefix[0]) sb_printf(&b, "%s.", a->prefix);
            for (const char *p = t->name; *p; p++) {
                if (*p == '#') sb_printf(&b, "%lld", (long long)L);
                else sb_putc(&b, *p);
            }
            if (b.oom) { sb_free(&b); return lp_seterr("out of memory"); }
            if (!find_entry(es, n, sb_str(&b))) {
                lp_seterr("%s: tensor `%s` is missing (%s with %lld layers has it)", m->path,
                          sb_str(&b), a->name, (long long)c->num_hidden_layers);
                sb_free(&b);
                return -1;
            }
            sb_free(&b);
        }
    }
    return 0;
}

/* Definition order: table row order, the repeated layer rows grouped per layer; tensors the
 * table does not know go last, in natural order (layer numbers compared as numbers). */
static int natcmp(const char *a, const char *b) {
    while (*a && *b) {
        if (*a >= '0' && *a <= '9' && *b >= '0' && *b <= '9') {
            char *ea, *eb;
            unsigned long long x = strtoull(a, &ea, 10), y = strtoull(b, &eb, 10);
            if (x != y) return x < y ? -1 : 1;
            a = ea;
            b = eb;
        } else {
            if (*a != *b) return (unsigned char)*a - (unsigned char)*b;
            a++;
            b++;
        }
    }
    return (unsigned char)*a - (unsigned char)*b;
}

static int cmp_def(const void *pa, const void *pb, void *ctx) {
    const entry *a = pa, *b = pb;
    const int *group = ctx;   /* group[row]: first layer row for layer rows, else row */
    long ga = a->row < 0 ? 1000000 : group[a->row], gb = b->row < 0 ? 1000000 : group[b->row];
    if (ga != gb) return ga < gb ? -1 : 1;
    if (a->layer != b->layer) return a->layer < b->layer ? -1 : 1;
    if (a->row != b->row) return a->row < b->row ? -1 : 1;
    return natcmp(a->canon, b->canon);
}

static int build_tensors(mdl_model *m) {
    size_t n = 0;
    for (size_t i = 0; i < m->nfiles; i++) n += m->files[i]->ntensors;
    entry *es = lp_calloc(n ? n : 1, sizeof *es);
    if (!es) return lp_seterr("out of memory");
    int rc = -1;
    size_t k = 0;
    for (size_t i = 0; i < m->nfiles; i++)
        for (size_t j = 0; j < m->files[i]->ntensors; j++) {
            entry *e = &es[k++];
            e->st = &m->files[i]->tensors[j];
            e->file = m->files[i];
            e->row = e->layer = -1;
            if (m->arch) {
                if (canon_name(m->arch, m->config, e) < 0) goto out;
            } else if (!(e->canon = lp_strdup(e->st->name))) {
                lp_seterr("out of memory");
                goto out;
            }
        }
    if (mdl_bnb_fold(m, es, n) < 0) goto out;
    if (m->arch) {
        if (check_expected(m, es, n) < 0) goto out;
    } else {
        qsort(es, n, sizeof *es, cmp_canon);
        for (size_t i = 1; i < n; i++)
            if (strcmp(es[i].canon, es[i - 1].canon) == 0) {
                lp_seterr("%s and %s: both hold tensor `%s`", es[i - 1].file->path,
                          es[i].file->path, es[i].canon);
                goto out;
            }
    }
    int group[64] = {0};
    if (m->arch) {
        int first_layer = -1;
        for (size_t r = 0; r < m->arch->ntensors && r < 64; r++) {
            int layered = strchr(m->arch->tensors[r].name, '#') != NULL;
            if (layered && first_layer < 0) first_layer = (int)r;
            group[r] = layered ? first_layer : (int)r;
        }
    }
    qsort_r(es, n, sizeof *es, cmp_def, group);
    m->tensors = lp_calloc(n ? n : 1, sizeof *m->tensors);
    if (!m->tensors) { lp_seterr("out of memory"); goto out; }
    for (size_t i = 0; i < n; i++) {
        if (es[i].drop) { m->summary.ignored_buffers += es[i].row >= 0 &&
                          (m->arch->tensors[es[i].row].flags & AT_BUFFER); continue; }
        mdl_tensor *t = &m->tensors[m->ntensors++];
        t->name = es[i].canon;
        es[i].canon = NULL;
        t->file_name = es[i].st->name;
        t->st = es[i].st;
        t->file = es[i].file;
        t->layer = es[i].layer;
        t->q4 = es[i].q4;
    }
    rc = 0;
out:
    for (size_t i = 0; i < n; i++) lp_free(es[i].canon);
    lp_free(es);
    return rc;
}

void mdl_free(mdl_model *m) {
    if (!m) return;
    for (size_t i = 0; i < m->nmodules; i++) {
        lp_free(m->modules[i]->path);
        lp_free(m->modules[i]->children);
        lp_free(m->modules[i]->params);
        lp_free((void *)m->modules[i]->cls_owned);
        lp_free(m->modules[i]);
    }
    lp_free(m->modules);
    for (size_t i = 0; i < m->ntensors; i++) lp_free(m->tensors[i].name);
    lp_free(m->tensors);
    if (!m->files_borrowed)
        for (size_t i = 0; i < m->nfiles; i++) st_close(m->files[i]);
    lp_free(m->files);
    lp_free(m->owned_buf);
    lp_free(m->tokenizer);
    for (size_t i = 0; i < m->nq4; i++) {
        lp_free(m->q4s[i].absmax);
        lp_free(m->q4s[i].qabsmax);
        lp_free(m->q4s[i].absmax2);
        lp_free(m->q4s[i].code8);
        lp_free((void *)m->q4_st[i].shape);
    }
    lp_free(m->q4s);
    lp_free(m->q4_st);
    mdl_config_free(m->config);
    lp_free(m->path);
    lp_free(m);
}

mdl_model *mdl_load(const char *path) {
    struct stat s;
    if (stat(path, &s) < 0) { lp_seterr("%s: %m", path); return NULL; }
    mdl_model *m = lp_calloc(1, sizeof *m);
    if (!m || !(m->path = lp_strdup(path))) { lp_free(m); lp_seterr("out of memory"); return NULL; }
    char *dir = S_ISDIR(s.st_mode) ? lp_strdup(path) : dir_of(path);
    char *cfg = dir ? join(dir, "config.json") : NULL, *ix = NULL, *single = NULL;
    if (!cfg) { lp_seterr("out of memory"); goto fail; }
    if (is_file(cfg) && !(m->config = mdl_config_load(cfg))) goto fail;
    m->arch = m->config ? arch_lookup(m->config->architecture) : NULL;
    size_t pl = strlen(path);
    if (S_ISDIR(s.st_mode)) {
        ix = join(dir, "model.safetensors.index.json");
        single = join(dir, "model.safetensors");
        if (!ix || !single) { lp_seterr("out of memory"); goto fail; }
        if (is_file(ix)) { if (open_index(m, ix, dir) < 0) goto fail; }
        else if (is_file(single)) { if (add_file(m, single) < 0) goto fail; }
        else if (open_all(m, dir) < 0) goto fail;
    } else if (pl > 5 && strcmp(path + pl - 5, ".json") == 0) {
        if (open_index(m, path, dir) < 0) goto fail;
    } else {
        if (add_file(m, path) < 0) goto fail;
    }
    if (build_tensors(m) < 0 || mdl_build_tree(m) < 0) goto fail;
    lp_free(dir); lp_free(cfg); lp_free(ix); lp_free(single);
    return m;
fail:
    lp_free(dir); lp_free(cfg); lp_free(ix); lp_free(single);
    mdl_free(m);
    return NULL;
}

mdl_model *mdl_from_files(st_file *const *files, size_t nfiles, mdl_config *config,
                          const char *name) {
    mdl_model *m = lp_calloc(1, sizeof *m);
    if (!m || !(m->path = lp_strdup(name))) {
        lp_free(m);
        mdl_config_free(config);
        lp_seterr("out of memory");
        return NULL;
    }
    m->config = config;
    m->arch = config ? arch_lookup(config->architecture) : NULL;
    m->files_borrowed = 1;
    m->files = lp_malloc(sizeof *m->files * (nfiles ? nfiles : 1));
    if (!m->files) { mdl_free(m); lp_seterr("out of memory"); return NULL; }
    memcpy(m->files, files, sizeof *files * nfiles);
    m->nfiles = nfiles;
    if (build_tensors(m) < 0 || mdl_build_tree(m) < 0) { mdl_free(m); return NULL; }
    return m;
}
