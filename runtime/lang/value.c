/* value.c — loupe values: construction, reference counting, rendering, attribute and
 * index rules for the built-in types. */
#include "lang/value.h"
#include "util/mem.h"
#include "util/sbuf.h"
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- errors with a name ------------------------------------------------------------ */

static _Thread_local const char *errkind;

int lv_seterr_kind(const char *ename, const char *fmt, ...) {
    char buf[LP_ERR_MAX];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    errkind = ename;
    return lp_seterr("%s", buf);
}
const char *lv_errkind(void) { return errkind; }
void lv_clear_errkind(void) { errkind = NULL; }

static void *oom(void) {
    lv_seterr_kind("MemoryError", "out of memory");
    return NULL;
}

/* ---- construction ---------------------------------------------------------------- */

static lv_value v_none = { -1, LV_NONE, { 0 } };
static lv_value v_true = { -1, LV_BOOL, { .b = 1 } };
static lv_value v_false = { -1, LV_BOOL, { .b = 0 } };

lv_value *lv_none(void) { return &v_none; }
lv_value *lv_bool(int b) { return b ? &v_true : &v_false; }

static lv_value *alloc(lv_kind k) {
    lv_value *v = lp_calloc(1, sizeof *v);
    if (!v) return oom();
    v->refs = 1;
    v->kind = k;
    return v;
}

lv_value *lv_int(int64_t i) {
    lv_value *v = alloc(LV_INT);
    if (v) v->u.i = i;
    return v;
}
lv_value *lv_float(double f) {
    lv_value *v = alloc(LV_FLOAT);
    if (v) v->u.f = f;
    return v;
}
lv_value *lv_str_take(char *s, size_t n) {
    if (!s) return oom();
    lv_value *v = alloc(LV_STR);
    if (!v) { lp_free(s); return NULL; }
    v->u.str.s = s;
    v->u.str.n = n;
    return v;
}
lv_value *lv_strn(const char *s, size_t n) {
    char *c = lp_strndup(s, n);
    return lv_str_take(c, n);
}
lv_value *lv_str(const char *s) { return lv_strn(s, strlen(s)); }

lv_value *lv_list_new(size_t cap) {
    lv_value *v = alloc(LV_LIST);
    if (!v) return NULL;
    if (cap) {
        v->u.list.items = lp_malloc(cap * sizeof(lv_value *));
        if (!v->u.list.items) { lp_free(v); return oom(); }
        v->u.list.cap = cap;
    }
    return v;
}

static int depth_of(const lv_value *v) {
    if (v->kind == LV_LIST) return v->u.list.depth;
    if (v->kind == LV_DICT) return v->u.dict.depth;
    return 0;
}

int lv_list_push(lv_value *l, lv_value *item) {
    if (!item) return -1;
    int d = depth_of(item) + 1;
    if (d > LV_MAX_DEPTH) {
        lv_decref(item);
        return lv_seterr_kind("ValueError", "value nested too deep (more than %d levels)",
                              LV_MAX_DEPTH);
    }
    if (l->u.list.n == l->u.list.cap) {
        size_t cap = l->u.list.cap ? l->u.list.cap * 2 : 4;
        lv_value **items = lp_realloc(l->u.list.items, cap * sizeof *items);
        if (!items) { lv_decref(item); oom(); return -1; }
        l->u.list.items = items;
        l->u.list.cap = cap;
    }
    l->u.list.items[l->u.list.n++] = item;
    if (d > l->u.list.depth) l->u.list.depth = d;
    return 0;
}

lv_value *lv_dict_new(void) { return alloc(LV_DICT); }

static size_t hash(const char *s, size_t n) {
    size_t h = 1469598103934665603ull;   /* FNV-1a */
    for (size_t i = 0; i < n; i++) h = (h ^ (unsigned char)s[i]) * 1099511628211ull;
    return h;
}

/* Small dicts are searched linearly; from 16 entries on an open-addressing index
 * (slots hold entry index + 1) keeps lookups constant-time for big literals. */
static long dict_find(const lv_value *d, const char *k, size_t kn) {
    if (d->u.dict.idx) {
        size_t m = d->u.dict.icap - 1, i = hash(k, kn) & m;
        for (;; i = (i + 1) & m) {
            size_t s = d->u.dict.idx[i];
            if (!s) return -1;
            const lv_dict_entry *e = &d->u.dict.e[s - 1];
            if (e->klen == kn && memcmp(e->key, k, kn) == 0) return (long)(s - 1);
        }
    }
    for (size_t i = 0; i < d->u.dict.n; i++) {
        const lv_dict_entry *e = &d->u.dict.e[i];
        if (e->klen == kn && memcmp(e->key, k, kn) == 0) return (long)i;
    }
    return -1;
}

static int dict_reindex(lv_value *d) {
    size_t icap = 32;
    while (icap < d->u.dict.n * 2 + 2) icap *= 2;
    size_t *idx = lp_calloc(icap, sizeof *idx);
    if (!idx) return -1;
    lp_free(d->u.dict.idx);
    d->u.dict.idx = idx;
    d->u.dict.icap = icap;
    for (size_t j = 0; j < d->u.dict.n; j++) {
        size_t i = hash(d->u.dict.e[j].key, d->u.dict.e[j].klen) & (icap - 1);
        while (idx[i]) i = (i + 1) & (icap - 1);
        idx[i] = j + 1;
    }
    return 0;
}

int lv_dict_set(lv_value *d, const char *k, size_t kn, lv_value *val) {
    if (!val) return -1;
    int dep = depth_of(val) + 1;
    if (dep > LV_MAX_DEPTH) {
        lv_decref(val);
        return lv_seterr_kind("ValueError", "value nested too deep (more than %d levels)",
                              LV_MAX_DEPTH);
    }
    long at = dict_find(d, k, kn);
    if (at >= 0) {
        lv_decref(d->u.dict.e[at].val);
        d->u.dict.e[at].val = val;
        if (dep > d->u.dict.depth) d->u.dict.depth = dep;
        return 0;
    }
    if (d->u.dict.n == d->u.dict.cap) {
        size_t cap = d->u.dict.cap ? d->u.dict.cap * 2 : 4;
        lv_dict_entry *e = lp_realloc(d->u.dict.e, cap * sizeof *e);
        if (!e) { lv_decref(val); oom(); return -1; }
        d->u.dict.e = e;
        d->u.dict.cap = cap;
    }
    char *key = lp_strndup(k, kn);
    if (!key) { lv_decref(val); oom(); return -1; }
    d->u.dict.e[d->u.dict.n++] = (lv_dict_entry){ key, kn, val };
    if (dep > d->u.dict.depth) d->u.dict.depth = dep;
    if (d->u.dict.n >= 16 && d->u.dict.n * 2 + 2 > d->u.dict.icap) {
        if (dict_reindex(d)) { lp_free(d->u.dict.idx); d->u.dict.idx = NULL; d->u.dict.icap = 0; }
    } else if (d->u.dict.idx) {
        size_t m = d->u.dict.icap - 1, i = hash(k, kn) & m;
        while (d->u.dict.idx[i]) i = (i + 1) & m;
        d->u.dict.idx[i] = d->u.dict.n;
    }
    return 0;
}

lv_value *lv_dict_get(lv_value *d, const char *k, size_t kn) {
    long at = dict_find(d, k, kn);
    return at < 0 ? NULL : d->u.dict.e[at].val;
}

int lv_dict_del(lv_value *d, const char *k, size_t kn) {
    long at = dict_find(d, k, kn);
    if (at < 0) return -1;
    lp_free(d->u.dict.e[at].key);
    lv_decref(d->u.dict.e[at].val);
    memmove(&d->u.dict.e[at], &d->u.dict.e[at + 1],
            (d->u.dict.n - (size_t)at - 1) * sizeof(lv_dict_entry));
    d->u.dict.n--;
    if (d->u.dict.idx && dict_reindex(d)) {
        lp_free(d->u.dict.idx);
        d->u.dict.idx = NULL;
        d->u.dict.icap = 0;
    }
    return 0;
}

lv_value *lv_new_opaque(const lv_type *t, void *ptr) {
    lv_value *v = alloc(LV_OPAQUE);
    if (!v) {
        if (t->free) t->free(ptr);
        return NULL;
    }
    v->u.op.type = t;
    v->u.op.ptr = ptr;
    return v;
}

void *lv_opaque_ptr(lv_value *v, const lv_type *t) {
    return v && v->kind == LV_OPAQUE && v->u.op.type == t ? v->u.op.ptr : NULL;
}

lv_value *lv_incref(lv_value *v) {
    if (v && v->refs >= 0) v->refs++;
    return v;
}

void lv_decref(lv_value *v) {
    if (!v || v->refs < 0 || --v->refs > 0) return;
    switch (v->kind) {
    case LV_STR: lp_free(v->u.str.s); break;
    case LV_LIST:
        for (size_t i = 0; i < v->u.list.n; i++) lv_decref(v->u.list.items[i]);
        lp_free(v->u.list.items);
        break;
    case LV_DICT:
        for (size_t i = 0; i < v->u.dict.n; i++) {
            lp_free(v->u.dict.e[i].key);
            lv_decref(v->u.dict.e[i].val);
        }
        lp_free(v->u.dict.e);
        lp_free(v->u.dict.idx);
        break;
    case LV_OPAQUE:
        if (v->u.op.type->free) v->u.op.type->free(v->u.op.ptr);
        break;
    default: break;
    }
    lp_free(v);
}

/* ---- queries --------------------------------------------------------------------- */

const char *lv_type_name(const lv_value *v) {
    switch (v->kind) {
    case LV_NONE: return "none";
    case LV_BOOL: return "bool";
    case LV_INT: return "int";
    case LV_FLOAT: return "float";
    case LV_STR: return "string";
    case LV_LIST: return "list";
    case LV_DICT: return "dict";
    case LV_OPAQUE: return v->u.op.type->name;
    }
    return "?";
}

int lv_truthy(const lv_value *v) {
    switch (v->kind) {
    case LV_NONE: return 0;
    case LV_BOOL: return v->u.b;
    case LV_INT: return v->u.i != 0;
    case LV_FLOAT: return v->u.f != 0.0;
    case LV_STR: return v->u.str.n != 0;
    case LV_LIST: return v->u.list.n != 0;
    case LV_DICT: return v->u.dict.n != 0;
    case LV_OPAQUE: return 1;
    }
    return 0;
}

int lv_is_number(const lv_value *v) { return v->kind == LV_INT || v->kind == LV_FLOAT; }
double lv_as_double(const lv_value *v) {
    return v->kind == LV_INT ? (double)v->u.i : v->kind == LV_FLOAT ? v->u.f : 0.0;
}

int lv_equal(const lv_value *a, const lv_value *b) {
    if (lv_is_number(a) && lv_is_number(b)) {
        if (a->kind == LV_INT && b->kind == LV_INT) return a->u.i == b->u.i;
        return lv_as_double(a) == lv_as_double(b);
    }
    if (a->kind != b->kind) return 0;
    switch (a->kind) {
    case LV_NONE: return 1;
    case LV_BOOL: return a->u.b == b->u.b;
    case LV_STR: return a->u.str.n == b->u.str.n && !memcmp(a->u.str.s, b->u.str.s, a->u.str.n);
    case LV_LIST:
        if (a->u.list.n != b->u.list.n) return 0;
        for (size_t i = 0; i < a->u.list.n; i++)
            if (!lv_equal(a->u.list.items[i], b->u.list.items[i])) return 0;
        return 1;
    case LV_DICT:
        if (a->u.dict.n != b->u.dict.n) return 0;
        for (size_t i = 0; i < a->u.dict.n; i++) {
            const lv_dict_entry *e = &a->u.dict.e[i];
            lv_value *o = lv_dict_get((lv_value *)b, e->key, e->klen);
            if (!o || !lv_equal(e->val, o)) return 0;
        }
        return 1;
    case LV_OPAQUE: return a->u.op.ptr == b->u.op.ptr;
    default: return 0;
    }
}

size_t lv_utf8_len(const char *s, size_t n) {
    size_t c = 0;
    for (size_t i = 0; i < n; i++)
        if (((unsigned char)s[i] & 0xC0) != 0x80) c++;
    return c;
}

/* ---- rendering ------------------------------------------------------------------- */

void lv_format_float(double f, char *buf, size_t cap) {
    if (isnan(f)) { snprintf(buf, cap, "nan"); return; }
    if (isinf(f)) { snprintf(buf, cap, f < 0 ? "-inf" : "inf"); return; }
    /* the fewest significant digits that read back as the same double (like Python's
     * repr): positional for exponents -5..15, scientific outside */
    char e[64];
    int prec;
    for (prec = 1; prec <= 17; prec++) {
        snprintf(e, sizeof e, "%.*e", prec - 1, f);
        if (strtod(e, NULL) == f) break;
    }
    char *ep = strchr(e, 'e');
    int exp = atoi(ep + 1);
    *ep = 0;
    char digits[32];
    size_t nd = 0;
    for (char *q = e; *q; q++)
        if (*q >= '0' && *q <= '9') digits[nd++] = *q;
    digits[nd] = 0;
    const char *sign = f < 0 || (f == 0 && signbit(f)) ? "-" : "";
    if (exp < -4 || exp >= 16) {
        if (nd == 1) snprintf(buf, cap, "%s%ce%+03d", sign, digits[0], exp);
        else snprintf(buf, cap, "%s%c.%se%+03d", sign, digits[0], digits + 1, exp);
        return;
    }
    char out[64];
    size_t n = 0;
    if (exp < 0) {
        out[n++] = '0';
        out[n++] = '.';
        for (int k = 0; k < -exp - 1; k++) out[n++] = '0';
        for (size_t k = 0; k < nd; k++) out[n++] = digits[k];
    } else {
        for (int k = 0; k <= exp; k++) out[n++] = (size_t)k < nd ? digits[k] : '0';
        out[n++] = '.';
        if ((size_t)exp + 1 < nd) for (size_t k = (size_t)exp + 1; k < nd; k++) out[n++] = digits[k];
        else out[n++] = '0';
    }
    out[n] = 0;
    snprintf(buf, cap, "%s%s", sign, out);
}

static void repr_str(sbuf *b, const char *s, size_t n) {
    sb_putc(b, '"');
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        switch (c) {
        case '"': sb_puts(b, "\\\""); break;
        case '\\': sb_puts(b, "\\\\"); break;
        case '\n': sb_puts(b, "\\n"); break;
        case '\t': sb_puts(b, "\\t"); break;
        case '\r': sb_puts(b, "\\r"); break;
        default:
            if (c < 0x20 || c == 0x7f) sb_printf(b, "\\u%04x", c);
            else sb_putc(b, (char)c);
        }
    }
    sb_putc(b, '"');
}

static void repr(sbuf *b, lv_value *v, int top_str_raw) {
    char num[64];
    switch (v->kind) {
    case LV_NONE: sb_puts(b, "none"); break;
    case LV_BOOL: sb_puts(b, v->u.b ? "true" : "false"); break;
    case LV_INT: sb_printf(b, "%lld", (long long)v->u.i); break;
    case LV_FLOAT: lv_format_float(v->u.f, num, sizeof num); sb_puts(b, num); break;
    case LV_STR:
        if (top_str_raw) sb_putn(b, v->u.str.s, v->u.str.n);
        else repr_str(b, v->u.str.s, v->u.str.n);
        break;
    case LV_LIST:
        sb_putc(b, '[');
        for (size_t i = 0; i < v->u.list.n; i++) {
            if (i) sb_puts(b, ", ");
            repr(b, v->u.list.items[i], 0);
        }
        sb_putc(b, ']');
        break;
    case LV_DICT:
        sb_putc(b, '{');
        for (size_t i = 0; i < v->u.dict.n; i++) {
            if (i) sb_puts(b, ", ");
            repr_str(b, v->u.dict.e[i].key, v->u.dict.e[i].klen);
            sb_puts(b, ": ");
            repr(b, v->u.dict.e[i].val, 0);
        }
        sb_putc(b, '}');
        break;
    case LV_OPAQUE: {
        char *t = v->u.op.type->text(v->u.op.ptr);
        if (!t) { b->oom = 1; break; }
        sb_puts(b, t);
        lp_free(t);
        break;
    }
    }
}

static char *render(lv_value *v, int raw) {
    sbuf b;
    sb_init(&b);
    repr(&b, v, raw);
    if (b.oom) { sb_free(&b); return oom(); }
    return sb_take(&b);
}

char *lv_repr(lv_value *v) { return render(v, 0); }
char *lv_tostr(lv_value *v) { return render(v, 1); }

json_t *lv_bundle(lv_value *v) {
    json_t *bundle = NULL;
    if (v->kind == LV_OPAQUE && v->u.op.type->bundle) {
        bundle = v->u.op.type->bundle(v->u.op.ptr);
        if (!bundle) return NULL;
        if (json_object_get(bundle, "text/plain")) return bundle;
    }
    char *t = lv_repr(v);
    if (!t) { json_decref(bundle); return NULL; }
    if (!bundle) bundle = json_object();
    /* jansson rejects invalid UTF-8; values built by the language are valid, opaque
     * renderers should be, and a stray byte must not lose the whole output. */
    json_t *s = json_string(t);
    if (!s) s = json_string("(text is not valid UTF-8)");
    lp_free(t);
    if (!bundle || !s || json_object_set_new(bundle, "text/plain", s)) {
        json_decref(bundle);
        return oom();
    }
    return bundle;
}

char *lv_summary(lv_value *v) {
    if (v->kind == LV_OPAQUE && v->u.op.type->summary) return v->u.op.type->summary(v->u.op.ptr);
    char *r = lv_repr(v);
    if (!r) return NULL;
    sbuf b;
    sb_init(&b);
    sb_printf(&b, "%s", lv_type_name(v));
    if (v->kind == LV_STR) sb_printf(&b, " (%zu characters)", lv_utf8_len(v->u.str.s, v->u.str.n));
    if (v->kind == LV_LIST) sb_printf(&b, " (%zu items)", v->u.list.n);
    if (v->kind == LV_DICT) sb_printf(&b, " (%zu keys)", v->u.dict.n);
    sb_puts(&b, ": ");
    /* long values are cut: inspection is a glance, not a dump */
    size_t n = strlen(r);
    if (n > 400) {
        size_t cut = 400;
        while (cut > 0 && ((unsigned char)r[cut] & 0xC0) == 0x80) cut--;
        sb_putn(&b, r, cut);
        sb_puts(&b, "…");
    } else {
        sb_puts(&b, r);
    }
    lp_free(r);
    if (b.oom) { sb_free(&b); return oom(); }
    return sb_take(&b);
}

/* ---- attributes and indexing ------------------------------------------------------ */

/* index `i` into a sequence of length n, negative counting from the end */
static int norm_index(int64_t i, size_t n, size_t *out) {
    if (i < 0) i += (int64_t)n;
    if (i < 0 || (uint64_t)i >= n) return -1;
    *out = (size_t)i;
    return 0;
}

static lv_value *str_index(lv_value *v, int64_t i) {
    size_t n = lv_utf8_len(v->u.str.s, v->u.str.n), at;
    if (norm_index(i, n, &at))
        return lv_seterr_kind("IndexError", "index %lld out of range for a string of %zu characters",
                              (long long)i, n), NULL;
    const char *s = v->u.str.s, *e = s + v->u.str.n;
    size_t c = 0;
    for (; s < e; s++) {
        if (((unsigned char)*s & 0xC0) == 0x80) continue;
        if (c++ == at) break;
    }
    const char *t = s + 1;
    while (t < e && ((unsigned char)*t & 0xC0) == 0x80) t++;
    return lv_strn(s, (size_t)(t - s));
}

typedef struct { int has_lo, has_hi; int64_t lo, hi; } lv_slice_t;

static char *slice_text(void *p) {
    lv_slice_t *s = p;
    char buf[64] = "", lo[24] = "", hi[24] = "";
    if (s->has_lo) snprintf(lo, sizeof lo, "%lld", (long long)s->lo);
    if (s->has_hi) snprintf(hi, sizeof hi, "%lld", (long long)s->hi);
    snprintf(buf, sizeof buf, "%s:%s", lo, hi);
    return lp_strdup(buf);
}

const lv_type lv_slice_type = { .name = "slice", .free = lp_free, .text = slice_text };

lv_value *lv_slice(int has_lo, int64_t lo, int has_hi, int64_t hi) {
    lv_slice_t *s = lp_malloc(sizeof *s);
    if (!s) return NULL;
    *s = (lv_slice_t){ has_lo, has_hi, lo, hi };
    return lv_new_opaque(&lv_slice_type, s);
}

int lv_slice_bounds(lv_value *v, size_t n, size_t *from, size_t *to) {
    lv_slice_t *s = lv_opaque_ptr(v, &lv_slice_type);
    if (!s) return -1;
    int64_t len = (int64_t)n, lo = s->has_lo ? s->lo : 0, hi = s->has_hi ? s->hi : len;
    if (lo < 0) lo += len;
    if (hi < 0) hi += len;
    lo = lo < 0 ? 0 : lo > len ? len : lo;
    hi = hi < lo ? lo : hi > len ? len : hi;
    *from = (size_t)lo;
    *to = (size_t)hi;
    return 0;
}

lv_value *lv_getindex(lv_value *v, lv_value *key) {
    size_t from, to;
    if (v->kind == LV_LIST && lv_slice_bounds(key, v->u.list.n, &from, &to) == 0) {
        lv_value *l = lv_list_new(to - from);
        for (size_t i = from; l && i < to; i++)
            if (lv_list_push(l, lv_incref(v->u.list.items[i]))) { lv_decref(l); return NULL; }
        return l;
    }
    if (v->kind == LV_STR && lv_opaque_ptr(key, &lv_slice_type)) {
        /* by code point, like indexing a string */
        size_t ncp = lv_utf8_len(v->u.str.s, v->u.str.n), b0 = 0, b1 = v->u.str.n, cp = 0;
        lv_slice_bounds(key, ncp, &from, &to);
        for (size_t i = 0; i <= v->u.str.n; i++) {
            if (i < v->u.str.n && ((unsigned char)v->u.str.s[i] & 0xC0) == 0x80) continue;
            if (cp == from) b0 = i;
            if (cp == to) { b1 = i; break; }
            cp++;
        }
        return lv_strn(v->u.str.s + b0, b1 - b0);
    }
    switch (v->kind) {
    case LV_LIST: {
        size_t at;
        if (key->kind != LV_INT)
            return lv_seterr_kind("TypeError", "list index must be int, not %s", lv_type_name(key)), NULL;
        if (norm_index(key->u.i, v->u.list.n, &at))
            return lv_seterr_kind("IndexError", "index %lld out of range for a list of %zu items",
                                  (long long)key->u.i, v->u.list.n), NULL;
        return lv_incref(v->u.list.items[at]);
    }
    case LV_STR:
        if (key->kind != LV_INT)
            return lv_seterr_kind("TypeError", "string index must be int, not %s", lv_type_name(key)), NULL;
        return str_index(v, key->u.i);
    case LV_DICT: {
        if (key->kind != LV_STR)
            return lv_seterr_kind("TypeError", "dict key must be string, not %s", lv_type_name(key)), NULL;
        lv_value *r = lv_dict_get(v, key->u.str.s, key->u.str.n);
        if (!r) {
            char *k = lv_repr(key);
            lv_seterr_kind("KeyError", "key %s not found", k ? k : "?");
            lp_free(k);
            return NULL;
        }
        return lv_incref(r);
    }
    case LV_OPAQUE:
        if (v->u.op.type->getindex) {
            lv_clear_errkind();
            lp_clearerr();
            lv_value *r = v->u.op.type->getindex(v->u.op.ptr, key);
            if (!r && !lv_errkind()) lv_seterr_kind("IndexError", "%s", lp_geterr());
            return r;
        }
        /* fall through */
    default:
        return lv_seterr_kind("TypeError", "%s cannot be indexed", lv_type_name(v)), NULL;
    }
}

static const char *const str_attrs[] = { "length", NULL };
static const char *const list_attrs[] = { "length", NULL };
static const char *const dict_attrs[] = { "keys", "values", "length", NULL };

lv_value *lv_getattr(lv_value *v, const char *name) {
    size_t nl = strlen(name);
    if (v->kind == LV_DICT) {
        lv_value *r = lv_dict_get(v, name, nl);
        if (r) return lv_incref(r);
        if (!strcmp(name, "length")) return lv_int((int64_t)v->u.dict.n);
        if (!strcmp(name, "keys") || !strcmp(name, "values")) {
            lv_value *l = lv_list_new(v->u.dict.n);
            if (!l) return NULL;
            for (size_t i = 0; i < v->u.dict.n; i++) {
                lv_value *it = name[0] == 'k'
                    ? lv_strn(v->u.dict.e[i].key, v->u.dict.e[i].klen)
                    : lv_incref(v->u.dict.e[i].val);
                if (lv_list_push(l, it)) { lv_decref(l); return NULL; }
            }
            return l;
        }
        return lv_seterr_kind("KeyError", "dict has no key or attribute `%s`", name), NULL;
    }
    if (v->kind == LV_LIST || v->kind == LV_STR) {
        if (!strcmp(name, "length"))
            return lv_int((int64_t)(v->kind == LV_LIST ? v->u.list.n
                                                       : lv_utf8_len(v->u.str.s, v->u.str.n)));
    }
    if (v->kind == LV_OPAQUE && v->u.op.type->getattr) {
        lv_clear_errkind();
        lp_clearerr();
        lv_value *r = v->u.op.type->getattr(v->u.op.ptr, name);
        if (r) return r;
        if (lv_errkind()) return NULL;
        if (strcmp(lp_geterr(), "unknown error") != 0) {   /* set with plain lp_seterr */
            lv_seterr_kind("AttributeError", "%s", lp_geterr());
            return NULL;
        }
    }
    return lv_seterr_kind("AttributeError", "%s has no attribute `%s`", lv_type_name(v), name), NULL;
}

void lv_attrs(lv_value *v, lv_attr_fn add, void *actx) {
    const char *const *names = NULL;
    switch (v->kind) {
    case LV_STR: names = str_attrs; break;
    case LV_LIST: names = list_attrs; break;
    case LV_DICT:
        for (size_t i = 0; i < v->u.dict.n; i++) add(actx, v->u.dict.e[i].key);
        names = dict_attrs;
        break;
    case LV_OPAQUE:
        if (v->u.op.type->attrs) v->u.op.type->attrs(v->u.op.ptr, add, actx);
        return;
    default: return;
    }
    for (; *names; names++) add(actx, *names);
}
