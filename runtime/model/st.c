/* st.c — safetensors reader, writer and dtype conversion. Format and rules: st.h.
 *
 * The checks follow the reference reader (safetensors/src/tensor.rs, read_metadata and
 * Metadata::validate) in the same order, so a file loupe refuses is one the reference refuses
 * too, and the first complaint is the same; only the messages are loupe's own. */
#define _GNU_SOURCE
#include "model/st.h"
#include "util/err.h"
#include "util/mem.h"
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#define ST_MAX_HEADER 100000000ull   /* the reference's MAX_HEADER_SIZE */

/* ---- dtypes ------------------------------------------------------------------------ */

static const struct { const char *name; int bits; int is_float; } dtypes[ST_NDTYPES] = {
    [ST_BOOL] = {"BOOL", 8, 0},         [ST_F4] = {"F4", 4, 1},
    [ST_F6_E2M3] = {"F6_E2M3", 6, 1},   [ST_F6_E3M2] = {"F6_E3M2", 6, 1},
    [ST_U8] = {"U8", 8, 0},             [ST_I8] = {"I8", 8, 0},
    [ST_F8_E5M2] = {"F8_E5M2", 8, 1},   [ST_F8_E4M3] = {"F8_E4M3", 8, 1},
    [ST_F8_E8M0] = {"F8_E8M0", 8, 1},   [ST_F8_E4M3FNUZ] = {"F8_E4M3FNUZ", 8, 1},
    [ST_F8_E5M2FNUZ] = {"F8_E5M2FNUZ", 8, 1},
    [ST_I16] = {"I16", 16, 0},          [ST_U16] = {"U16", 16, 0},
    [ST_F16] = {"F16", 16, 1},          [ST_BF16] = {"BF16", 16, 1},
    [ST_I32] = {"I32", 32, 0},          [ST_U32] = {"U32", 32, 0},
    [ST_F32] = {"F32", 32, 1},          [ST_C64] = {"C64", 64, 0},
    [ST_F64] = {"F64", 64, 1},          [ST_I64] = {"I64", 64, 0},
    [ST_U64] = {"U64", 64, 0},
};

const char *st_dtype_name(st_dtype dt) { return dt < ST_NDTYPES ? dtypes[dt].name : "?"; }
int st_dtype_bits(st_dtype dt) { return dt < ST_NDTYPES ? dtypes[dt].bits : 0; }
int st_dtype_is_float(st_dtype dt) { return dt < ST_NDTYPES && dtypes[dt].is_float; }

int st_dtype_parse(const char *name, st_dtype *out) {
    for (int i = 0; i < ST_NDTYPES; i++)
        if (strcmp(name, dtypes[i].name) == 0) { *out = (st_dtype)i; return 0; }
    return -1;
}

/* ---- header validation --------------------------------------------------------------- */

/* Length of the longest valid UTF-8 prefix of s[n] (== n when all valid): the rules of
 * Rust's str::from_utf8 — no overlong forms, no surrogates, nothing above U+10FFFF. */
static size_t utf8_valid_prefix(const unsigned char *s, size_t n) {
    size_t i = 0;
    while (i < n) {
        unsigned c = s[i];
        if (c < 0x80) { i++; continue; }
        size_t len; unsigned lo = 0x80, hi = 0xBF;
        if (c >= 0xC2 && c <= 0xDF) len = 2;
        else if (c >= 0xE0 && c <= 0xEF) { len = 3; if (c == 0xE0) lo = 0xA0; if (c == 0xED) hi = 0x9F; }
        else if (c >= 0xF0 && c <= 0xF4) { len = 4; if (c == 0xF0) lo = 0x90; if (c == 0xF4) hi = 0x8F; }
        else return i;
        if (i + len > n) return i;
        if (s[i + 1] < lo || s[i + 1] > hi) return i;
        for (size_t k = 2; k < len; k++)
            if (s[i + k] < 0x80 || s[i + k] > 0xBF) return i;
        i += len;
    }
    return n;
}

/* Format shape[ndim] as "[2, 3]" into buf. */
static const char *shape_str(char *buf, size_t cap, const uint64_t *shape, int ndim) {
    size_t k = 0;
    k += snprintf(buf + k, cap - k, "[");
    for (int i = 0; i < ndim && k < cap; i++)
        k += snprintf(buf + k, cap - k, "%s%llu", i ? ", " : "", (unsigned long long)shape[i]);
    if (k < cap) snprintf(buf + k, cap - k, "]");
    return buf;
}

/* A JSON value as a non-negative integer, or -1. */
static int json_u64(json_t *v, uint64_t *out) {
    if (!json_is_integer(v) || json_integer_value(v) < 0) return -1;
    *out = (uint64_t)json_integer_value(v);
    return 0;
}

void st_close(st_file *f) {
    if (!f) return;
    if (f->mapped && f->base) munmap((void *)f->base, f->size);
    if (f->tensors) {
        for (size_t i = 0; i < f->ntensors; i++) {
            lp_free((void *)f->tensors[i].name);
            lp_free((void *)f->tensors[i].shape);
        }
    }
    for (size_t i = 0; i < 2 * f->nmeta; i++) lp_free(f->meta[i]);
    lp_free(f->meta);
    lp_free(f->tensors);
    lp_free(f->by_name);
    lp_free(f->path);
    lp_free(f);
}

static int cmp_offsets(const void *a, const void *b) {
    const st_tensor *x = a, *y = b;
    if (x->begin != y->begin) return x->begin < y->begin ? -1 : 1;
    /* the second element of data_offsets, kept temporarily in nbytes */
    if (x->nbytes != y->nbytes) return x->nbytes < y->nbytes ? -1 : 1;
    return 0;
}

static int cmp_names(const void *a, const void *b, void *ctx) {   /* ctx: the tensors */
    const st_tensor *t = ctx;
    return strcmp(t[*(const size_t *)a].name, t[*(const size_t *)b].name);
}

/* Read one tensor entry `v` named `name` into *t (shape allocated). The second data offset
 * goes into t->nbytes until the tiling check turns it into a size. */
static int parse_entry(st_tensor *t, const char *path, const char *name, json_t *v) {
    t->name = lp_strdup(name);
    if (!t->name) return lp_seterr("out of memory");
    if (!json_is_object(v))
        return lp_seterr("%s: tensor `%s`: header entry is not an object", path, name);
    json_t *jd = json_object_get(v, "dtype"), *js = json_object_get(v, "shape"),
           *jo = json_object_get(v, "data_offsets");
    if (!json_is_string(jd))
        return lp_seterr("%s: tensor `%s`: missing or non-string `dtype`", path, name);
    if (st_dtype_parse(json_string_value(jd), &t->dtype) < 0)
        return lp_seterr("%s: tensor `%s`: unknown dtype `%s`", path, name, json_string_value(jd));
    if (!json_is_array(js))
        return lp_seterr("%s: tensor `%s`: missing or non-array `shape`", path, name);
    t->ndim = (int)json_array_size(js);
    if (json_array_size(js) > 1024)
        return lp_seterr("%s: tensor `%s`: shape has %zu dimensions", path, name, json_array_size(js));
    uint64_t *shape = lp_malloc(sizeof *shape * (t->ndim ? t->ndim : 1));
    if (!shape) return lp_seterr("out of memory");
    t->shape = shape;
    for (int i = 0; i < t->ndim; i++)
        if (json_u64(json_array_get(js, i), &shape[i]) < 0)
            return lp_seterr("%s: tensor `%s`: shape dimension %d is not a non-negative integer",
                             path, name, i);
    if (!json_is_array(jo) || json_array_size(jo) != 2 ||
        json_u64(json_array_get(jo, 0), &t->begin) < 0 ||
        json_u64(json_array_get(jo, 1), &t->nbytes) < 0)
        return lp_seterr("%s: tensor `%s`: `data_offsets` is not a pair of non-negative integers",
                         path, name);
    return 0;
}

static int parse_metadata(st_file *f, json_t *m) {
    if (json_is_null(m)) return 0;
    if (!json_is_object(m)) return lp_seterr("%s: `__metadata__` is not an object", f->path);
    size_t n = json_object_size(m);
    f->meta = lp_calloc(2 * n + 1, sizeof *f->meta);
    if (!f->meta) return lp_seterr("out of memory");
    const char *k; json_t *v;
    json_object_foreach(m, k, v) {
        if (!json_is_string(v))
            return lp_seterr("%s: `__metadata__` value of `%s` is not a string", f->path, k);
        f->meta[2 * f->nmeta] = lp_strdup(k);
        f->meta[2 * f->nmeta + 1] = lp_strdup(json_string_value(v));
        f->nmeta++;
        if (!f->meta[2 * f->nmeta - 2] || !f->meta[2 * f->nmeta - 1]) return lp_seterr("out of memory");
    }
    return 0;
}

/* The duplicate key from jansson's message "duplicate object key near '"name"'". */
static void dup_name(char *out, size_t cap, const char *text) {
    const char *p = strstr(text, "near '\"");
    out[0] = 0;
    if (!p) return;
    p += 7;
    size_t n = strlen(p);
    if (n >= 2 && p[n - 1] == '\'' && p[n - 2] == '"') n -= 2;
    if (n >= cap) n = cap - 1;
    memcpy(out, p, n);
    out[n] = 0;
}

/* Validate buf[size] (header and tiling) and fill f. Returns 0 or -1 after lp_seterr(). */
static int parse(st_file *f) {
    const unsigned char *b = f->base;
    const char *path = f->path;
    if (f->size < 8)
        return lp_seterr("%s: file is %zu bytes, too short for the 8-byte header length",
                         path, f->size);
    uint64_t n = 0;
    for (int i = 7; i >= 0; i--) n = (n << 8) | b[i];   /* little-endian on any host */
    f->header_len = n;
    if (n > ST_MAX_HEADER)
        return lp_seterr("%s: header length %llu is over the limit of 100,000,000 bytes",
                         path, (unsigned long long)n);
    if (n > f->size - 8)
        return lp_seterr("%s: header length %llu runs past the end of the file (%zu bytes)",
                         path, (unsigned long long)n, f->size);
    const unsigned char *h = b + 8;
    size_t ok = utf8_valid_prefix(h, (size_t)n);
    if (ok != n)
        return lp_seterr("%s: header is not valid UTF-8 (bad byte 0x%02x at header offset %zu)",
                         path, h[ok], ok);

    json_error_t je;
    json_t *root = json_loadb((const char *)h, (size_t)n, JSON_REJECT_DUPLICATES, &je);
    if (!root) {
        if (strncmp(je.text, "duplicate object key", 20) == 0) {
            char name[256];
            dup_name(name, sizeof name, je.text);
            return lp_seterr("%s: duplicate tensor name `%s` in header", path, name);
        }
        return lp_seterr("%s: header is not valid JSON: %s (header offset %d)", path, je.text,
                         je.position);
    }
    int rc = -1;
    if (!json_is_object(root)) {
        lp_seterr("%s: header is not a JSON object", path);
        goto out;
    }
    size_t nt = json_object_size(root) - (json_object_get(root, "__metadata__") ? 1 : 0);
    f->tensors = lp_calloc(nt ? nt : 1, sizeof *f->tensors);
    f->by_name = lp_malloc(sizeof *f->by_name * (nt ? nt : 1));
    if (!f->tensors || !f->by_name) { lp_seterr("out of memory"); goto out; }
    const char *key; json_t *val;
    json_object_foreach(root, key, val) {
        if (strcmp(key, "__metadata__") == 0) {
            if (parse_metadata(f, val) < 0) goto out;
            continue;
        }
        st_tensor *t = &f->tensors[f->ntensors++];
        if (parse_entry(t, path, key, val) < 0) goto out;
    }

    /* The tiling, in offset order, exactly as Metadata::validate walks it. */
    qsort(f->tensors, f->ntensors, sizeof *f->tensors, cmp_offsets);
    uint64_t start = 0;
    char sb[256];
    for (size_t i = 0; i < f->ntensors; i++) {
        st_tensor *t = &f->tensors[i];
        uint64_t s = t->begin, e = t->nbytes;
        if (e < s) {
            lp_seterr("%s: tensor `%s`: data_offsets [%llu, %llu] end before they begin", path,
                      t->name, (unsigned long long)s, (unsigned long long)e);
            goto out;
        }
        if (s > start) {
            if (i == 0)
                lp_seterr("%s: tensor `%s`: data_offsets [%llu, %llu] leave a gap of %llu bytes "
                          "at the start of the data", path, t->name, (unsigned long long)s,
                          (unsigned long long)e, (unsigned long long)s);
            else
                lp_seterr("%s: tensor `%s`: data_offsets [%llu, %llu] leave a gap of %llu bytes "
                          "after tensor `%s`", path, t->name, (unsigned long long)s,
                          (unsigned long long)e, (unsigned long long)(s - start), t[-1].name);
            goto out;
        }
        if (s < start) {
            lp_seterr("%s: tensor `%s`: data_offsets [%llu, %llu] overlap tensor `%s`, which "
                      "ends at %llu", path, t->name, (unsigned long long)s, (unsigned long long)e,
                      t[-1].name, (unsigned long long)start);
            goto out;
        }
        start = e;
        uint64_t nelem = 1, nbits;
        int over = 0;
        for (int d = 0; d < t->ndim; d++) over |= __builtin_mul_overflow(nelem, t->shape[d], &nelem);
        over |= __builtin_mul_overflow(nelem, (uint64_t)st_dtype_bits(t->dtype), &nbits);
        if (over) {
            lp_seterr("%s: tensor `%s`: shape %s × %s overflows 64 bits", path, t->name,
                      shape_str(sb, sizeof sb, t->shape, t->ndim), st_dtype_name(t->dtype));
            goto out;
        }
        if (nbits % 8) {
            lp_seterr("%s: tensor `%s`: shape %s × %s is not a whole number of bytes", path,
                      t->name, shape_str(sb, sizeof sb, t->shape, t->ndim), st_dtype_name(t->dtype));
            goto out;
        }
        if (e - s != nbits / 8) {
            lp_seterr("%s: tensor `%s`: byte size %llu does not match shape %s × %s (%llu)", path,
                      t->name, (unsigned long long)(e - s),
                      shape_str(sb, sizeof sb, t->shape, t->ndim), st_dtype_name(t->dtype),
                      (unsigned long long)(nbits / 8));
            goto out;
        }
        t->nelem = nelem;
        t->nbytes = e - s;
    }
    /* The data must end exactly at the end of the file. start <= 2^64 and 8 + n <= size, so
     * compare without overflowing. */
    if (start != (uint64_t)(f->size - 8 - n)) {
        lp_seterr("%s: tensor data ends at byte %llu of the data region, but the file has %llu "
                  "data bytes (%s)", path, (unsigned long long)start,
                  (unsigned long long)(f->size - 8 - n),
                  start < f->size - 8 - n ? "trailing bytes not covered by any tensor"
                                          : "file truncated");
        goto out;
    }
    const unsigned char *data = b + 8 + n;
    for (size_t i = 0; i < f->ntensors; i++) {
        f->tensors[i].data = data + f->tensors[i].begin;
        f->by_name[i] = i;
    }
    qsort_r(f->by_name, f->ntensors, sizeof *f->by_name, cmp_names, f->tensors);
    rc = 0;
out:
    json_decref(root);
    return rc;
}

static st_file *file_new(const char *name) {
    st_file *f = lp_calloc(1, sizeof *f);
    if (!f || !(f->path = lp_strdup(name))) {
        lp_free(f);
        lp_seterr("out of memory");
        return NULL;
    }
    return f;
}

st_file *st_open_mem(const void *buf, size_t size, const char *name) {
    st_file *f = file_new(name);
    if (!f) return NULL;
    f->base = buf;
    f->size = size;
    if (parse(f) < 0) { st_close(f); return NULL; }
    return f;
}

st_file *st_open(const char *path) {
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) { lp_seterr("%s: %s", path, strerror(errno)); return NULL; }
    struct stat sbuf;
    if (fstat(fd, &sbuf) < 0 || !S_ISREG(sbuf.st_mode)) {
        lp_seterr("%s: not a regular file", path);
        close(fd);
        return NULL;
    }
    st_file *f = file_new(path);
    if (!f) { close(fd); return NULL; }
    f->size = (size_t)sbuf.st_size;
    if (f->size >= 8) {   /* mmap of an empty file fails; parse() reports short files */
        void *m = mmap(NULL, f->size, PROT_READ, MAP_PRIVATE, fd, 0);
        if (m == MAP_FAILED) {
            lp_seterr("%s: cannot map file: %s", path, strerror(errno));
            close(fd);
            st_close(f);
            return NULL;
        }
        f->base = m;
        f->mapped = 1;
    } else {
        static const unsigned char empty[8];
        f->base = empty;
    }
    close(fd);   /* the mapping keeps the file */
    if (parse(f) < 0) { st_close(f); return NULL; }
    return f;
}

const st_tensor *st_find(const st_file *f, const char *name) {
    size_t lo = 0, hi = f->ntensors;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        const st_tensor *t = &f->tensors[f->by_name[mid]];
        int c = strcmp(name, t->name);
        if (c == 0) return t;
        if (c < 0) hi = mid; else lo = mid + 1;
    }
    return NULL;
}

const char *st_meta(const st_file *f, const char *key) {
    for (size_t i = 0; i < f->nmeta; i++)
        if (strcmp(f->meta[2 * i], key) == 0) return f->meta[2 * i + 1];
    return NULL;
}

/* ---- conversion ----------------------------------------------------------------------- */

static float from_bits(uint32_t u) { float f; memcpy(&f, &u, 4); return f; }
static uint32_t to_bits(float f) { uint32_t u; memcpy(&u, &f, 4); return u; }

float st_bf16_to_f32(uint16_t b) { return from_bits((uint32_t)b << 16); }

float st_f16_to_f32(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000) << 16, e = (h >> 10) & 0x1f, m = h & 0x3ff;
    if (e == 0) {   /* zero or subnormal: m · 2^-24 */
        float v = ldexpf((float)m, -24);
        return sign ? -v : v;
    }
    if (e == 31) return from_bits(sign | 0x7f800000u | (m << 13));   /* inf / NaN */
    return from_bits(sign | ((e + 112) << 23) | (m << 13));
}

float st_f8e4m3_to_f32(uint8_t v) {   /* E4M3FN: bias 7, no inf, S.1111.111 is NaN */
    uint32_t sign = (uint32_t)(v & 0x80) << 24, e = (v >> 3) & 0xf, m = v & 7;
    if (e == 15 && m == 7) return from_bits(sign | 0x7fc00000u);
    if (e == 0) { float x = ldexpf((float)m, -9); return sign ? -x : x; }
    return from_bits(sign | ((e + 120) << 23) | (m << 20));
}

float st_f8e5m2_to_f32(uint8_t v) {   /* E5M2: bias 15, IEEE inf and NaN */
    uint32_t sign = (uint32_t)(v & 0x80) << 24, e = (v >> 2) & 0x1f, m = v & 3;
    if (e == 31) return from_bits(sign | 0x7f800000u | (m << 21));
    if (e == 0) { float x = ldexpf((float)m, -16); return sign ? -x : x; }
    return from_bits(sign | ((e + 112) << 23) | (m << 21));
}

static float f8e4m3fnuz(uint8_t v) {   /* bias 8, 0x80 is the only NaN, no -0 */
    if (v == 0x80) return NAN;
    uint32_t sign = (uint32_t)(v & 0x80) << 24, e = (v >> 3) & 0xf, m = v & 7;
    if (e == 0) { float x = ldexpf((float)m, -10); return sign ? -x : x; }
    return from_bits(sign | ((e + 119) << 23) | (m << 20));
}

static float f8e5m2fnuz(uint8_t v) {   /* bias 16, 0x80 is the only NaN */
    if (v == 0x80) return NAN;
    uint32_t sign = (uint32_t)(v & 0x80) << 24, e = (v >> 2) & 0x1f, m = v & 3;
    if (e == 0) { float x = ldexpf((float)m, -17); return sign ? -x : x; }
    return from_bits(sign | ((e + 111) << 23) | (m << 21));
}

static float f8e8m0(uint8_t v) {   /* a bare exponent: 2^(v-127); 0xFF is NaN */
    if (v == 0xff) return NAN;
    return v ? from_bits((uint32_t)v << 23) : from_bits(0x00400000u);
}

uint16_t st_f32_to_bf16(float f) {
    uint32_t x = to_bits(f);
    if ((x & 0x7fffffff) > 0x7f800000) return (uint16_t)((x >> 16) | 0x40);   /* quiet NaN */
    x += 0x7fff + ((x >> 16) & 1);
    return (uint16_t)(x >> 16);
}

uint16_t st_f32_to_f16(float f) {
    uint32_t x = to_bits(f), ax = x & 0x7fffffff;
    uint16_t sign = (uint16_t)((x >> 16) & 0x8000);
    if (ax > 0x7f800000) return sign | 0x7e00 | (uint16_t)((ax >> 13) & 0x3ff);
    if (ax >= 0x477ff000) return sign | 0x7c00;   /* ≥ 65520 rounds to inf */
    if (ax < 0x38800000)                            /* below 2^-14: subnormal, m · 2^-24 */
        return sign | (uint16_t)lrintf(from_bits(ax) * 0x1p24f);
    uint32_t h = (((ax >> 23) - 112) << 10) | ((ax & 0x7fffff) >> 13), rem = ax & 0x1fff;
    if (rem > 0x1000 || (rem == 0x1000 && (h & 1))) h++;   /* carry may reach the exponent */
    return sign | (uint16_t)h;
}

#define LOAD(T, p, i) ({ T _v; memcpy(&_v, (const unsigned char *)(p) + (size_t)(i) * sizeof(T), sizeof(T)); _v; })

int st_to_f32(float *out, const void *src, st_dtype dt, uint64_t first, size_t n) {
    const unsigned char *p = src;
    size_t i;
    switch (dt) {
    case ST_F32: memcpy(out, p + first * 4, n * 4); return 0;
    case ST_F64: for (i = 0; i < n; i++) out[i] = (float)LOAD(double, p, first + i); return 0;
    case ST_BF16: for (i = 0; i < n; i++) out[i] = st_bf16_to_f32(LOAD(uint16_t, p, first + i)); return 0;
    case ST_F16: for (i = 0; i < n; i++) out[i] = st_f16_to_f32(LOAD(uint16_t, p, first + i)); return 0;
    case ST_F8_E4M3: for (i = 0; i < n; i++) out[i] = st_f8e4m3_to_f32(p[first + i]); return 0;
    case ST_F8_E5M2: for (i = 0; i < n; i++) out[i] = st_f8e5m2_to_f32(p[first + i]); return 0;
    case ST_F8_E4M3FNUZ: for (i = 0; i < n; i++) out[i] = f8e4m3fnuz(p[first + i]); return 0;
    case ST_F8_E5M2FNUZ: for (i = 0; i < n; i++) out[i] = f8e5m2fnuz(p[first + i]); return 0;
    case ST_F8_E8M0: for (i = 0; i < n; i++) out[i] = f8e8m0(p[first + i]); return 0;
    case ST_BOOL: for (i = 0; i < n; i++) out[i] = p[first + i] ? 1.0f : 0.0f; return 0;
    case ST_U8: for (i = 0; i < n; i++) out[i] = (float)p[first + i]; return 0;
    case ST_I8: for (i = 0; i < n; i++) out[i] = (float)(int8_t)p[first + i]; return 0;
    case ST_I16: for (i = 0; i < n; i++) out[i] = (float)LOAD(int16_t, p, first + i); return 0;
    case ST_U16: for (i = 0; i < n; i++) out[i] = (float)LOAD(uint16_t, p, first + i); return 0;
    case ST_I32: for (i = 0; i < n; i++) out[i] = (float)LOAD(int32_t, p, first + i); return 0;
    case ST_U32: for (i = 0; i < n; i++) out[i] = (float)LOAD(uint32_t, p, first + i); return 0;
    case ST_I64: for (i = 0; i < n; i++) out[i] = (float)LOAD(int64_t, p, first + i); return 0;
    case ST_U64: for (i = 0; i < n; i++) out[i] = (float)LOAD(uint64_t, p, first + i); return 0;
    default:
        return lp_seterr("cannot convert %s to f32", st_dtype_name(dt));
    }
}

/* ---- writer ---------------------------------------------------------------------------- */

static int cmp_write_order(const void *a, const void *b) {
    const st_wtensor *x = *(st_wtensor *const *)a, *y = *(st_wtensor *const *)b;
    if (x->dtype != y->dtype) return x->dtype > y->dtype ? -1 : 1;   /* descending alignment */
    return strcmp(x->name, y->name);
}

static int write_all(int fd, const void *buf, size_t n) {
    const unsigned char *p = buf;
    while (n) {
        ssize_t k = write(fd, p, n);
        if (k < 0) { if (errno == EINTR) continue; return -1; }
        p += k;
        n -= (size_t)k;
    }
    return 0;
}

int st_write(const char *path, const st_wtensor *t, size_t n, const char *const *meta_kv,
             size_t nmeta) {
    const st_wtensor **order = lp_malloc(sizeof *order * (n ? n : 1));
    json_t *root = json_object(), *meta = json_object();
    char *hdr = NULL, *tmp = NULL;
    int fd = -1, rc = -1;
    if (!order || !root || !meta) { lp_seterr("out of memory"); goto out; }
    for (size_t i = 0; i < n; i++) order[i] = &t[i];
    qsort(order, n, sizeof *order, cmp_write_order);

    if (nmeta == 0) json_object_set_new(meta, "format", json_string("pt"));
    for (size_t i = 0; i < nmeta; i++)
        json_object_set_new(meta, meta_kv[2 * i], json_string(meta_kv[2 * i + 1]));
    json_object_set(root, "__metadata__", meta);   /* first key, as the reference writes */
    uint64_t off = 0;
    for (size_t i = 0; i < n; i++) {
        const st_wtensor *w = order[i];
        if (i > 0 && strcmp(order[i - 1]->name, w->name) == 0) {
            lp_seterr("%s: duplicate tensor name `%s`", path, w->name);
            goto out;
        }
        if (strcmp(w->name, "__metadata__") == 0) {
            lp_seterr("%s: `__metadata__` cannot be a tensor name", path);
            goto out;
        }
        uint64_t nelem = 1;
        json_t *shape = json_array();
        for (int d = 0; d < w->ndim; d++) {
            nelem *= w->shape[d];
            json_array_append_new(shape, json_integer((json_int_t)w->shape[d]));
        }
        uint64_t nb = nelem * (uint64_t)st_dtype_bits(w->dtype);
        if (nb % 8) {
            json_decref(shape);
            lp_seterr("%s: tensor `%s`: not a whole number of bytes", path, w->name);
            goto out;
        }
        json_t *e = json_object();
        json_object_set_new(e, "dtype", json_string(st_dtype_name(w->dtype)));
        json_object_set_new(e, "shape", shape);
        json_object_set_new(e, "data_offsets",
                            json_pack("[II]", (json_int_t)off, (json_int_t)(off + nb / 8)));
        json_object_set_new(root, w->name, e);
        off += nb / 8;
    }
    hdr = json_dumps(root, JSON_COMPACT);
    if (!hdr) { lp_seterr("out of memory"); goto out; }
    size_t hl = strlen(hdr), padded = (hl + 7) / 8 * 8;

    size_t pl = strlen(path);
    tmp = lp_malloc(pl + 16);
    if (!tmp) { lp_seterr("out of memory"); goto out; }
    memcpy(tmp, path, pl);
    memcpy(tmp + pl, ".tmp.XXXXXX", 12);
    fd = mkstemp(tmp);
    if (fd < 0) { lp_seterr("%s: cannot create a temporary file: %s", path, strerror(errno)); goto out; }
    fchmod(fd, 0644);
    unsigned char len8[8];
    for (int i = 0; i < 8; i++) len8[i] = (unsigned char)((uint64_t)padded >> (8 * i));
    static const char spaces[8] = "        ";
    int werr = write_all(fd, len8, 8) || write_all(fd, hdr, hl) ||
               write_all(fd, spaces, padded - hl);
    for (size_t i = 0; i < n && !werr; i++) {
        uint64_t nelem = 1;
        for (int d = 0; d < order[i]->ndim; d++) nelem *= order[i]->shape[d];
        werr = write_all(fd, order[i]->data, nelem * st_dtype_bits(order[i]->dtype) / 8);
    }
    if (werr || fsync(fd) < 0) {
        lp_seterr("%s: write failed: %s", path, strerror(errno));
        goto out;
    }
    if (close(fd) < 0) { fd = -1; lp_seterr("%s: write failed: %s", path, strerror(errno)); goto out; }
    fd = -1;
    if (rename(tmp, path) < 0) { lp_seterr("%s: cannot rename into place: %s", path, strerror(errno)); goto out; }
    /* make the rename itself durable: fsync the directory (best effort) */
    const char *slash = strrchr(path, '/');
    char *dir = slash ? lp_strndup(path, (size_t)(slash - path + (slash == path))) : lp_strdup(".");
    int dfd = dir ? open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC) : -1;
    if (dfd >= 0) { fsync(dfd); close(dfd); }
    lp_free(dir);
    lp_free(tmp);
    tmp = NULL;
    rc = 0;
out:
    if (fd >= 0) close(fd);
    if (tmp) { unlink(tmp); lp_free(tmp); }
    free(hdr);   /* json_dumps allocates with jansson's allocator (malloc) */
    json_decref(meta);
    json_decref(root);
    lp_free(order);
    return rc;
}
