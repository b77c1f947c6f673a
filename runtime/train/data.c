/* data.c — datasets: read .jsonl / .txt / .csv, split, tokenize, pack, batch (data.h). */
#include "train/data.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "model/model.h"
#include "util/err.h"
#include "util/mem.h"
#include "util/sbuf.h"

typedef struct td_record {
    char *text;              /* text mode, or the rendered prompt part */
    char *response;          /* prompt/response mode: the rendered response part, else NULL */
    int32_t cls;             /* class label or −1 */
} td_record;

struct td_dataset {
    char *path;
    const char *split;
    td_config cfg;           /* string fields not kept (only used while reading) */
    td_record *rec;
    size_t nrec;
    td_example *ex;          /* after tokenizing */
    size_t nex;
    int tokenized;
    int32_t pad;
    size_t *order;           /* [nex] this epoch's order */
    size_t cursor;
    long epoch;
};

void td_config_default(td_config *c) {
    memset(c, 0, sizeof *c);
    c->field = "text";
    c->template_ = "{prompt}{response}";
    c->max_len = 256;
    c->by_line = 1;
    c->shuffle = 1;
    c->seed = 42;   /* the Trainer's default seed */
}

/* splitmix64: one small generator, same draws on every machine. */
static uint64_t sm64(uint64_t *s) {
    uint64_t z = (*s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

static void shuffle(size_t *a, size_t n, uint64_t seed) {
    uint64_t s = seed;
    for (size_t i = n; i > 1; i--) {   /* Fisher–Yates */
        size_t j = (size_t)(sm64(&s) % i);
        size_t t = a[i - 1]; a[i - 1] = a[j]; a[j] = t;
    }
}

static void rec_free(td_record *r) {
    lp_free(r->text);
    lp_free(r->response);
}

void td_free(td_dataset *d) {
    if (!d) return;
    for (size_t i = 0; i < d->nrec; i++) rec_free(&d->rec[i]);
    lp_free(d->rec);
    for (size_t i = 0; i < d->nex; i++) {
        lp_free(d->ex[i].ids);
        lp_free(d->ex[i].labels);
    }
    lp_free(d->ex);
    lp_free(d->order);
    lp_free(d->path);
    lp_free(d);
}

/* ---- reading ------------------------------------------------------------------------------ */

typedef struct recs { td_record *r; size_t n, cap; } recs;

static int recs_push(recs *v, td_record r) {
    if (v->n == v->cap) {
        size_t cap = v->cap ? v->cap * 2 : 64;
        td_record *p = lp_realloc(v->r, cap * sizeof *p);
        if (!p) { rec_free(&r); lp_seterr("out of memory"); return -1; }
        v->r = p, v->cap = cap;
    }
    v->r[v->n++] = r;
    return 0;
}

/* "{prompt}" in s replaced by p (every occurrence). */
static char *subst(const char *s, size_t n, const char *key, const char *val) {
    sbuf b;
    sb_init(&b);
    size_t kl = strlen(key);
    for (size_t i = 0; i < n;) {
        if (i + kl <= n && !memcmp(s + i, key, kl)) { sb_puts(&b, val); i += kl; }
        else sb_putc(&b, s[i++]);
    }
    if (b.oom) { sb_free(&b); return NULL; }
    return sb_take(&b);
}

/* A prompt/response pair through the template: the part before {response} is the prompt
 * (masked out of the loss), the rest the response. */
static int render_pair(const td_config *c, const char *prompt, const char *response, td_record *r) {
    const char *t = c->template_;
    const char *at = strstr(t, "{response}");
    if (!at) { lp_seterr("template %s has no {response}", t); return -1; }
    r->text = subst(t, (size_t)(at - t), "{prompt}", prompt);
    char *rest = subst(at + 10, strlen(at + 10), "{prompt}", prompt);
    r->response = rest ? lp_strdup(response) : NULL;
    if (r->response && rest && *rest) {
        char *both = lp_malloc(strlen(r->response) + strlen(rest) + 1);
        if (both) strcat(strcpy(both, r->response), rest);
        lp_free(r->response);
        r->response = both;
    }
    lp_free(rest);
    if (!r->text || !r->response) { rec_free(r); lp_seterr("out of memory"); return -1; }
    return 0;
}

static int read_jsonl(const char *path, const char *buf, size_t len, const td_config *c, recs *v) {
    size_t line = 0;
    for (size_t i = 0; i < len;) {
        size_t e = i;
        while (e < len && buf[e] != '\n') e++;
        line++;
        size_t s = i;
        i = e + 1;
        while (s < e && (buf[s] == ' ' || buf[s] == '\t' || buf[s] == '\r')) s++;
        if (s == e) continue;
        json_error_t err;
        json_t *o = json_loadb(buf + s, e - s, JSON_DISABLE_EOF_CHECK, &err);
        if (!o || !json_is_object(o)) {
            json_decref(o);
            lp_seterr("%s:%zu: not a JSON object (%s)", path, line, o ? "another value" : err.text);
            return -1;
        }
        td_record r = {.cls = -1};
        const char *pf = c->prompt ? c->prompt : NULL;
        json_t *lab = c->label ? json_object_get(o, c->label) : NULL;
        if (c->label) {
            if (!json_is_integer(lab)) {
                json_decref(o);
                lp_seterr("%s:%zu: `%s` is not an int class label", path, line, c->label);
                return -1;
            }
            r.cls = (int32_t)json_integer_value(lab);
        }
        if (c->response) {
            json_t *p = json_object_get(o, pf ? pf : "prompt"), *q = json_object_get(o, c->response);
            if (!json_is_string(p) || !json_is_string(q)) {
                json_decref(o);
                lp_seterr("%s:%zu: no string fields `%s` and `%s`", path, line, pf ? pf : "prompt", c->response);
                return -1;
            }
            if (render_pair(c, json_string_value(p), json_string_value(q), &r) < 0) { json_decref(o); return -1; }
        } else {
            json_t *t = json_object_get(o, c->field);
            if (!json_is_string(t)) {
                /* say which fields there are: the usual mistake is the field's name */
                sbuf b;
                sb_init(&b);
                const char *k;
                json_t *x;
                json_object_foreach(o, k, x) sb_printf(&b, "%s%s", b.len ? ", " : "", k);
                lp_seterr("%s:%zu: no text field `%s` (fields: %s); use field=\"...\", or "
                          "prompt=\"...\" response=\"...\"", path, line, c->field, sb_str(&b));
                sb_free(&b);
                json_decref(o);
                return -1;
            }
            r.text = lp_strdup(json_string_value(t));
            if (!r.text) { json_decref(o); lp_seterr("out of memory"); return -1; }
        }
        json_decref(o);
        if (recs_push(v, r) < 0) return -1;
    }
    return 0;
}

/* One CSV field starting at *p (RFC 4180: quotes, doubled quotes, newlines inside quotes). */
static char *csv_field(const char **p, const char *end, int *last) {
    sbuf b;
    sb_init(&b);
    const char *s = *p;
    if (s < end && *s == '"') {
        s++;
        while (s < end) {
            if (*s == '"') {
                if (s + 1 < end && s[1] == '"') { sb_putc(&b, '"'); s += 2; continue; }
                s++;
                break;
            }
            sb_putc(&b, *s++);
        }
    }
    while (s < end && *s != ',' && *s != '\n') {
        if (*s != '\r') sb_putc(&b, *s);
        s++;
    }
    *last = s >= end || *s == '\n';
    *p = s < end ? s + 1 : s;
    if (b.oom) { sb_free(&b); return NULL; }
    return sb_take(&b);
}

static int read_csv(const char *path, const char *buf, size_t len, const td_config *c, recs *v) {
    const char *p = buf, *end = buf + len;
    int col = -1, lcol = -1, ncol = 0, last = 0;
    sbuf names;
    sb_init(&names);
    while (!last && p < end) {   /* header */
        char *h = csv_field(&p, end, &last);
        if (!h) { sb_free(&names); lp_seterr("out of memory"); return -1; }
        if (!strcmp(h, c->field)) col = ncol;
        if (c->label && !strcmp(h, c->label)) lcol = ncol;
        sb_printf(&names, "%s%s", ncol ? ", " : "", h);
        lp_free(h);
        ncol++;
    }
    if (col < 0 || (c->label && lcol < 0)) {
        lp_seterr("%s: no column `%s` (columns: %s); use field=\"...\"", path,
                  col < 0 ? c->field : c->label, sb_str(&names));
        sb_free(&names);
        return -1;
    }
    sb_free(&names);
    size_t row = 1;
    while (p < end) {
        row++;
        td_record r = {.cls = -1};
        int k = 0;
        last = 0;
        if (*p == '\n' || (*p == '\r' && p + 1 < end && p[1] == '\n')) {   /* a blank line */
            p += *p == '\r' ? 2 : 1;
            continue;
        }
        while (!last) {
            char *f = csv_field(&p, end, &last);
            if (!f) { rec_free(&r); lp_seterr("out of memory"); return -1; }
            if (k == col) r.text = f;
            else {
                if (k == lcol) {
                    char *e;
                    long x = strtol(f, &e, 10);
                    if (e == f || *e) {
                        lp_seterr("%s: row %zu: `%s` is not an int class label: %s", path, row, c->label, f);
                        lp_free(f);
                        rec_free(&r);
                        return -1;
                    }
                    r.cls = (int32_t)x;
                }
                lp_free(f);
            }
            k++;
        }
        if (!r.text) { lp_seterr("%s: row %zu has %d columns, fewer than the header's %d", path, row, k, ncol); return -1; }
        if (recs_push(v, r) < 0) return -1;
    }
    return 0;
}

static int read_txt(const char *buf, size_t len, const td_config *c, recs *v) {
    if (!c->by_line) {
        td_record r = {.text = lp_strndup(buf, len), .cls = -1};
        if (!r.text) { lp_seterr("out of memory"); return -1; }
        return recs_push(v, r);
    }
    for (size_t i = 0; i < len;) {
        size_t e = i;
        while (e < len && buf[e] != '\n') e++;
        size_t n = e - i;
        if (n && buf[i + n - 1] == '\r') n--;
        int blank = 1;
        for (size_t k = i; k < i + n; k++) if (buf[k] != ' ' && buf[k] != '\t') blank = 0;
        if (!blank) {
            td_record r = {.text = lp_strndup(buf + i, n), .cls = -1};
            if (!r.text) { lp_seterr("out of memory"); return -1; }
            if (recs_push(v, r) < 0) return -1;
        }
        i = e + 1;
    }
    return 0;
}

static td_dataset *ds_new(const char *path, const td_config *c, const char *split) {
    td_dataset *d = lp_calloc(1, sizeof *d);
    if (!d || !(d->path = lp_strdup(path))) { lp_free(d); lp_seterr("out of memory"); return NULL; }
    d->cfg = *c;
    d->cfg.field = d->cfg.prompt = d->cfg.response = d->cfg.template_ = d->cfg.label = NULL;
    d->split = split;
    d->pad = 0;
    return d;
}

int td_open(const char *path, const td_config *c, td_dataset **train, td_dataset **eval) {
    *train = NULL;
    if (eval) *eval = NULL;
    if (c->max_len < 1) { lp_seterr("max_len must be 1 or more, got %d", c->max_len); return -1; }
    if (c->eval < 0) { lp_seterr("eval must be a fraction in (0, 1) or a count, got %g", c->eval); return -1; }
    const char *ext = strrchr(path, '.');
    int kind = !ext ? 0 : !strcmp(ext, ".jsonl") || !strcmp(ext, ".json") ? 1 : !strcmp(ext, ".txt") ? 2
             : !strcmp(ext, ".csv") ? 3 : 0;
    if (!ext && mdl_is_hub_id(path) && access(path, F_OK) != 0) {   /* "imdb", "org/name" */
        const char *base = strrchr(path, '/') ? strrchr(path, '/') + 1 : path;
        lp_seterr("%s: a dataset is a local .jsonl, .txt or .csv file (loupe never downloads): "
                  "write a Hugging Face dataset to one first, as datasets' "
                  "load_dataset(\"%s\", split=\"train\").to_json(\"%s.jsonl\")", path, path, base);
        return -1;
    }
    if (!kind) { lp_seterr("%s: a dataset is a .jsonl, .txt or .csv file", path); return -1; }
    if (kind == 2 && (c->response || c->label)) { lp_seterr("%s: a .txt file has only text (no response or label fields)", path); return -1; }
    if (kind == 3 && c->response) { lp_seterr("%s: prompt/response fields are read from .jsonl files", path); return -1; }
    FILE *f = fopen(path, "rb");
    if (!f) { lp_seterr("cannot open %s", path); return -1; }
    sbuf b;
    sb_init(&b);
    char chunk[65536];
    size_t got;
    while ((got = fread(chunk, 1, sizeof chunk, f)) > 0) sb_putn(&b, chunk, got);
    int rerr = ferror(f);
    fclose(f);
    if (b.oom || rerr) { sb_free(&b); lp_seterr(rerr ? "cannot read %s" : "out of memory", path); return -1; }
    recs v = {0};
    int rc = kind == 1 ? read_jsonl(path, sb_str(&b), b.len, c, &v)
           : kind == 3 ? read_csv(path, sb_str(&b), b.len, c, &v) : read_txt(sb_str(&b), b.len, c, &v);
    sb_free(&b);
    if (rc == 0 && !v.n) { lp_seterr("%s: no examples in the file", path); rc = -1; }
    size_t nev = 0;
    if (rc == 0 && c->eval > 0) {
        nev = c->eval < 1 ? (size_t)(c->eval * (double)v.n + 0.999999) : (size_t)c->eval;
        if (nev >= v.n) {
            lp_seterr("eval=%g holds out %zu of %zu examples: nothing left to train on%s", c->eval, nev, v.n,
                      v.n == 1 ? " (the split takes whole records, before packing: read the file "
                                 "by=\"line\", or evaluate on another file)" : "");
            rc = -1;
        }
    }
    td_dataset *tr = rc ? NULL : ds_new(path, c, "train");
    td_dataset *ev = rc || !nev ? NULL : ds_new(path, c, "eval");
    if (rc == 0 && (!tr || (nev && !ev))) rc = -1;
    if (rc == 0) {
        /* a seeded shuffle decides which examples are held out; each split keeps file order */
        size_t *perm = lp_malloc(sizeof(size_t) * v.n);
        tr->rec = lp_calloc(v.n - nev, sizeof(td_record));
        if (ev) ev->rec = lp_calloc(nev, sizeof(td_record));
        if (!perm || !tr->rec || (ev && !ev->rec)) {
            lp_free(perm);
            lp_seterr("out of memory");
            rc = -1;
        } else {
            unsigned char *held = lp_calloc(v.n, 1);
            if (!held) { lp_free(perm); lp_seterr("out of memory"); rc = -1; }
            else {
                for (size_t i = 0; i < v.n; i++) perm[i] = i;
                if (nev) shuffle(perm, v.n, c->seed ^ 0x5eedull);
                for (size_t i = 0; i < nev; i++) held[perm[i]] = 1;
                for (size_t i = 0; i < v.n; i++) {
                    if (held[i]) ev->rec[ev->nrec++] = v.r[i];
                    else tr->rec[tr->nrec++] = v.r[i];
                }
                v.n = 0;   /* moved */
                lp_free(held);
                lp_free(perm);
            }
        }
    }
    for (size_t i = 0; i < v.n; i++) rec_free(&v.r[i]);
    lp_free(v.r);
    if (rc) { td_free(tr); td_free(ev); return -1; }
    *train = tr;
    if (eval) *eval = ev;
    else td_free(ev);
    return 0;
}

/* ---- tokenizing --------------------------------------------------------------------------- */

typedef struct ibuf { int32_t *ids, *lab; size_t n, cap; } ibuf;

static int ib_push(ibuf *b, int32_t id, int32_t lab) {
    if (b->n == b->cap) {
        size_t cap = b->cap ? b->cap * 2 : 256;
        int32_t *a = lp_realloc(b->ids, cap * sizeof *a);
        if (!a) return -1;
        b->ids = a;
        int32_t *l = lp_realloc(b->lab, cap * sizeof *l);
        if (!l) return -1;
        b->lab = l;
        b->cap = cap;
    }
    b->ids[b->n] = id, b->lab[b->n] = lab, b->n++;
    return 0;
}

static int add_example(td_dataset *d, size_t *cap, const int32_t *ids, const int32_t *lab, size_t n,
                       int32_t cls) {
    if (d->nex == *cap) {
        size_t c2 = *cap ? *cap * 2 : 64;
        td_example *p = lp_realloc(d->ex, c2 * sizeof *p);
        if (!p) return -1;
        d->ex = p, *cap = c2;
    }
    td_example *e = &d->ex[d->nex];
    memset(e, 0, sizeof *e);
    e->n = (int)n;
    e->cls = cls;
    e->ids = lp_malloc(sizeof(int32_t) * (n ? n : 1));
    if (!e->ids) return -1;
    memcpy(e->ids, ids, sizeof(int32_t) * n);
    if (cls < 0) {
        e->labels = lp_malloc(sizeof(int32_t) * (n ? n : 1));
        if (!e->labels) { lp_free(e->ids); return -1; }
        memcpy(e->labels, lab, sizeof(int32_t) * n);
    }
    d->nex++;
    return 0;
}

int td_tokenized(const td_dataset *d) { return d->tokenized; }

int td_tokenize(td_dataset *d, tok_tokenizer *tok) {
    if (d->tokenized) return 0;
    const tok_special *sp = tok_specials(tok);
    d->pad = sp->pad >= 0 ? sp->pad : sp->eos >= 0 ? sp->eos : 0;
    int eos = d->cfg.eos && sp->eos >= 0;
    tok_ids tk;
    tok_ids_init(&tk);
    ibuf one = {0}, all = {0};
    size_t cap = 0;
    int rc = -1;
    for (size_t i = 0; i < d->nrec; i++) {
        td_record *r = &d->rec[i];
        one.n = 0;
        if (tok_encode(tok, r->text, strlen(r->text), 1, &tk) < 0) {
            lp_preferr("%s, example %zu", d->path, i + 1);
            goto out;
        }
        /* the prompt part of a pair is not learned: label −100 */
        for (size_t k = 0; k < tk.n; k++)
            if (ib_push(&one, tk.ids[k], r->response ? -100 : tk.ids[k]) < 0) goto oom;
        if (r->response) {
            if (tok_encode(tok, r->response, strlen(r->response), 0, &tk) < 0) {
                lp_preferr("%s, example %zu", d->path, i + 1);
                goto out;
            }
            for (size_t k = 0; k < tk.n; k++)
                if (ib_push(&one, tk.ids[k], tk.ids[k]) < 0) goto oom;
        }
        if (eos && ib_push(&one, sp->eos, sp->eos) < 0) goto oom;
        if (d->cfg.pack && r->cls < 0) {
            for (size_t k = 0; k < one.n; k++)
                if (ib_push(&all, one.ids[k], one.lab[k]) < 0) goto oom;
            continue;
        }
        size_t n = one.n < (size_t)d->cfg.max_len ? one.n : (size_t)d->cfg.max_len;
        if (!n) continue;   /* an empty text with no special tokens: nothing to learn */
        if (add_example(d, &cap, one.ids, one.lab, n, r->cls) < 0) goto oom;
    }
    if (d->cfg.pack) {
        size_t L = (size_t)d->cfg.max_len;
        size_t blocks = all.n / L;
        if (!blocks && all.n) blocks = 1, L = all.n;   /* less than one block: keep it whole */
        for (size_t k = 0; k < blocks; k++)
            if (add_example(d, &cap, all.ids + k * L, all.lab + k * L, L, -1) < 0) goto oom;
    }
    if (!d->nex) { lp_seterr("%s: no tokens in the %s split", d->path, d->split); goto out; }
    d->order = lp_malloc(sizeof(size_t) * d->nex);
    if (!d->order) goto oom;
    d->tokenized = 1;
    td_rewind(d);
    rc = 0;
    goto out;
oom:
    lp_seterr("out of memory");
out:
    if (rc) {
        for (size_t i = 0; i < d->nex; i++) { lp_free(d->ex[i].ids); lp_free(d->ex[i].labels); }
        lp_free(d->ex);
        d->ex = NULL;
        d->nex = 0;
    }
    lp_free(one.ids); lp_free(one.lab);
    lp_free(all.ids); lp_free(all.lab);
    tok_ids_free(&tk);
    return rc;
}

void td_rewind(td_dataset *d) {
    d->epoch = 0;
    d->cursor = 0;
    if (!d->order) return;
    for (size_t i = 0; i < d->nex; i++) d->order[i] = i;
    if (d->cfg.shuffle) shuffle(d->order, d->nex, d->cfg.seed + 0);
}

size_t td_len(const td_dataset *d) { return d->nex; }

void td_get_info(const td_dataset *d, td_info *in) {
    memset(in, 0, sizeof *in);
    in->path = d->path;
    in->split = d->split;
    in->records = d->nrec;
    in->examples = d->nex;
    for (size_t i = 0; i < d->nex; i++) {
        in->tokens += (size_t)d->ex[i].n;
        if (d->ex[i].labels) {
            for (int k = 1; k < d->ex[i].n; k++) in->targets += d->ex[i].labels[k] != -100;
        } else {
            in->classify = 1;
            in->targets++;
        }
    }
    in->max_len = d->cfg.max_len;
    in->pack = d->cfg.pack;
    in->epoch = d->epoch;
    in->cursor = d->cursor;
    in->pad = d->pad;
    if (!d->nex && d->nrec && d->rec[0].cls >= 0) in->classify = 1;
}

const td_example *td_example_at(const td_dataset *d, size_t i) { return i < d->nex ? &d->ex[i] : NULL; }
const char *td_record_text(const td_dataset *d, size_t i) { return i < d->nrec ? d->rec[i].text : NULL; }

/* ---- batches ------------------------------------------------------------------------------ */

void td_batch_free(td_batch *b) {
    lp_free(b->ids);
    lp_free(b->mask);
    lp_free(b->labels);
    memset(b, 0, sizeof *b);
}

static int fill(const td_dataset *d, const size_t *idx, int B, td_batch *o) {
    memset(o, 0, sizeof *o);
    int T = 1;
    for (int b = 0; b < B; b++) if (d->ex[idx[b]].n > T) T = d->ex[idx[b]].n;
    o->classify = d->ex[idx[0]].labels == NULL;
    size_t N = (size_t)B * T;
    o->ids = lp_malloc(sizeof(int32_t) * N);
    o->mask = lp_malloc(sizeof(int32_t) * N);
    o->labels = lp_malloc(sizeof(int32_t) * (o->classify ? (size_t)B : N));
    if (!o->ids || !o->mask || !o->labels) { td_batch_free(o); lp_seterr("out of memory"); return -1; }
    o->B = B, o->T = T;
    for (int b = 0; b < B; b++) {
        const td_example *e = &d->ex[idx[b]];
        for (int t = 0; t < T; t++) {
            size_t k = (size_t)b * T + t;
            o->ids[k] = t < e->n ? e->ids[t] : d->pad;
            o->mask[k] = t < e->n;
            if (!o->classify) {
                o->labels[k] = t < e->n ? e->labels[t] : -100;
                /* the causal shift: labels[0] never is a target */
                if (t > 0 && o->labels[k] != -100) o->targets++;
            }
        }
        if (o->classify) { o->labels[b] = e->cls; o->targets++; }
    }
    return 0;
}

int td_next(td_dataset *d, int size, td_batch *out, int *epoch_end) {
    if (epoch_end) *epoch_end = 0;
    if (!d->tokenized) { lp_seterr("the dataset is not tokenized yet"); return -1; }
    if (size < 1) { lp_seterr("size must be 1 or more, got %d", size); return -1; }
    size_t *idx = lp_malloc(sizeof(size_t) * (size_t)size);
    if (!idx) { lp_seterr("out of memory"); return -1; }
    for (int b = 0; b < size; b++) {
        if (d->cursor == d->nex) {   /* a new epoch, in a new order */
            d->cursor = 0;
            d->epoch++;
            for (size_t i = 0; i < d->nex; i++) d->order[i] = i;
            if (d->cfg.shuffle) shuffle(d->order, d->nex, d->cfg.seed + (uint64_t)d->epoch);
        }
        idx[b] = d->order[d->cursor++];
        if (d->cursor == d->nex && epoch_end) *epoch_end = 1;
    }
    int rc = fill(d, idx, size, out);
    lp_free(idx);
    return rc;
}

int td_slice(const td_dataset *d, size_t from, int size, td_batch *out) {
    if (!d->tokenized) { lp_seterr("the dataset is not tokenized yet"); return -1; }
    if (from >= d->nex || size < 1) { lp_seterr("no examples at %zu", from); return -1; }
    if ((size_t)size > d->nex - from) size = (int)(d->nex - from);
    size_t *idx = lp_malloc(sizeof(size_t) * (size_t)size);
    if (!idx) { lp_seterr("out of memory"); return -1; }
    for (int b = 0; b < size; b++) idx[b] = from + (size_t)b;
    int rc = fill(d, idx, size, out);
    lp_free(idx);
    return rc;
}
