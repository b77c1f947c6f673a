/* tok_util.c — hash maps, UTF-8 and Unicode helpers for the tokenizer.
 *
 * The character classes follow Rust's char methods, because that is what the `tokenizers`
 * library calls; categories come from utf8proc, whose Unicode version may differ from
 * Rust's by a release (a handful of new characters at most). */
#include <string.h>
#include <utf8proc.h>
#include "model/tok_int.h"
#include "util/err.h"
#include "util/mem.h"

/* ---- string map: open addressing, FNV-1a ---- */

static uint64_t hash_bytes(const char *s, size_t n) {
    uint64_t h = 1469598103934665603ull;
    for (size_t i = 0; i < n; i++) { h ^= (uint8_t)s[i]; h *= 1099511628211ull; }
    return h;
}

static int strmap_grow(tok_strmap *m) {
    size_t cap = m->cap ? m->cap * 2 : 64;
    const char **keys = lp_calloc(cap, sizeof *keys);
    uint32_t *klen = lp_malloc(cap * sizeof *klen);
    int32_t *vals = lp_malloc(cap * sizeof *vals);
    if (!keys || !klen || !vals) { lp_free(keys); lp_free(klen); lp_free(vals); return -1; }
    for (size_t i = 0; i < m->cap; i++) {
        if (!m->keys[i]) continue;
        size_t j = hash_bytes(m->keys[i], m->klen[i]) & (cap - 1);
        while (keys[j]) j = (j + 1) & (cap - 1);
        keys[j] = m->keys[i]; klen[j] = m->klen[i]; vals[j] = m->vals[i];
    }
    lp_free(m->keys); lp_free(m->klen); lp_free(m->vals);
    m->keys = keys; m->klen = klen; m->vals = vals; m->cap = cap;
    return 0;
}

int tok_strmap_put(tok_strmap *m, const char *k, size_t klen, int32_t v) {
    if ((m->n + 1) * 4 >= m->cap * 3 && strmap_grow(m) < 0) return -1;
    size_t j = hash_bytes(k, klen) & (m->cap - 1);
    while (m->keys[j]) {
        if (m->klen[j] == klen && memcmp(m->keys[j], k, klen) == 0) { m->vals[j] = v; return 0; }
        j = (j + 1) & (m->cap - 1);
    }
    m->keys[j] = k; m->klen[j] = (uint32_t)klen; m->vals[j] = v; m->n++;
    return 0;
}

int32_t tok_strmap_get(const tok_strmap *m, const char *k, size_t klen) {
    if (!m->cap) return -1;
    size_t j = hash_bytes(k, klen) & (m->cap - 1);
    while (m->keys[j]) {
        if (m->klen[j] == klen && memcmp(m->keys[j], k, klen) == 0) return m->vals[j];
        j = (j + 1) & (m->cap - 1);
    }
    return -1;
}

void tok_strmap_free(tok_strmap *m) {
    lp_free(m->keys); lp_free(m->klen); lp_free(m->vals);
    memset(m, 0, sizeof *m);
}

/* ---- pair map ---- */

static uint64_t mix64(uint64_t x) {
    x ^= x >> 33; x *= 0xff51afd7ed558ccdull; x ^= x >> 33; x *= 0xc4ceb9fe1a85ec53ull;
    return x ^ (x >> 33);
}

static int pairmap_grow(tok_pairmap *m) {
    size_t cap = m->cap ? m->cap * 2 : 256;
    uint64_t *keys = lp_malloc(cap * sizeof *keys);
    int32_t *rank = lp_malloc(cap * sizeof *rank), *merged = lp_malloc(cap * sizeof *merged);
    if (!keys || !rank || !merged) { lp_free(keys); lp_free(rank); lp_free(merged); return -1; }
    memset(keys, 0xff, cap * sizeof *keys);
    for (size_t i = 0; i < m->cap; i++) {
        if (m->keys[i] == UINT64_MAX) continue;
        size_t j = mix64(m->keys[i]) & (cap - 1);
        while (keys[j] != UINT64_MAX) j = (j + 1) & (cap - 1);
        keys[j] = m->keys[i]; rank[j] = m->rank[i]; merged[j] = m->merged[i];
    }
    lp_free(m->keys); lp_free(m->rank); lp_free(m->merged);
    m->keys = keys; m->rank = rank; m->merged = merged; m->cap = cap;
    return 0;
}

int tok_pairmap_put(tok_pairmap *m, int32_t a, int32_t b, int32_t rank, int32_t merged) {
    if ((m->n + 1) * 4 >= m->cap * 3 && pairmap_grow(m) < 0) return -1;
    uint64_t k = (uint64_t)(uint32_t)a << 32 | (uint32_t)b;
    size_t j = mix64(k) & (m->cap - 1);
    while (m->keys[j] != UINT64_MAX) {
        /* A repeated merge takes the later rank, as the library's HashMap collect does. */
        if (m->keys[j] == k) { m->rank[j] = rank; m->merged[j] = merged; return 0; }
        j = (j + 1) & (m->cap - 1);
    }
    m->keys[j] = k; m->rank[j] = rank; m->merged[j] = merged; m->n++;
    return 0;
}

int tok_pairmap_get(const tok_pairmap *m, int32_t a, int32_t b, int32_t *rank, int32_t *merged) {
    if (!m->cap) return 0;
    uint64_t k = (uint64_t)(uint32_t)a << 32 | (uint32_t)b;
    size_t j = mix64(k) & (m->cap - 1);
    while (m->keys[j] != UINT64_MAX) {
        if (m->keys[j] == k) { *rank = m->rank[j]; *merged = m->merged[j]; return 1; }
        j = (j + 1) & (m->cap - 1);
    }
    return 0;
}

void tok_pairmap_free(tok_pairmap *m) {
    lp_free(m->keys); lp_free(m->rank); lp_free(m->merged);
    memset(m, 0, sizeof *m);
}

/* ---- segments ---- */

int tok_segs_push(tok_segs *s, size_t off, size_t len, int32_t id, int first) {
    if (s->n == s->cap) {
        size_t cap = s->cap ? s->cap * 2 : 32;
        tok_seg *v = lp_realloc(s->v, cap * sizeof *v);
        if (!v) return lp_seterr("out of memory");
        s->v = v; s->cap = cap;
    }
    s->v[s->n++] = (tok_seg){ off, len, id, first };
    return 0;
}

pcre2_code *tok_regex(const char *pat, size_t len, int literal) {
    int err; PCRE2_SIZE at;
    uint32_t opts = PCRE2_UTF | (literal ? PCRE2_LITERAL : PCRE2_UCP);   /* LITERAL refuses UCP */
    pcre2_code *re = pcre2_compile((PCRE2_SPTR)pat, len, opts, &err, &at, NULL);
    if (!re) {
        PCRE2_UCHAR msg[256];
        pcre2_get_error_message(err, msg, sizeof msg);
        lp_seterr("regex `%.*s`: %s at offset %zu", (int)(len > 200 ? 200 : len), pat,
                  (char *)msg, (size_t)at);
        return NULL;
    }
    pcre2_jit_compile(re, PCRE2_JIT_COMPLETE);   /* a speed-up only; failure is fine */
    return re;
}

/* ---- UTF-8 ---- */

/* Length of the valid UTF-8 sequence at s[i], or 0 when invalid (overlong, surrogate,
 * > U+10FFFF, truncated). */
static int utf8_valid_len(const uint8_t *s, size_t n, size_t i, int32_t *cp) {
    uint8_t c = s[i];
    if (c < 0x80) { *cp = c; return 1; }
    int len; uint8_t lo = 0x80, hi = 0xbf; int32_t v;
    if (c >= 0xc2 && c <= 0xdf) { len = 2; v = c & 0x1f; }
    else if (c >= 0xe0 && c <= 0xef) {
        len = 3; v = c & 0x0f;
        if (c == 0xe0) lo = 0xa0; else if (c == 0xed) hi = 0x9f;
    } else if (c >= 0xf0 && c <= 0xf4) {
        len = 4; v = c & 0x07;
        if (c == 0xf0) lo = 0x90; else if (c == 0xf4) hi = 0x8f;
    } else return 0;
    for (int k = 1; k < len; k++) {
        if (i + k >= n) return -k;    /* truncated after k bytes */
        uint8_t d = s[i + k];
        if (d < (k == 1 ? lo : 0x80) || d > (k == 1 ? hi : 0xbf)) return -k;
        v = v << 6 | (d & 0x3f);
    }
    *cp = v;
    return len;
}

int tok_utf8_next(const char *s, size_t n, size_t i, int32_t *cp) {
    int l = utf8_valid_len((const uint8_t *)s, n, i, cp);
    if (l <= 0) { *cp = 0xfffd; return l == 0 ? 1 : -l; }
    return l;
}

int tok_utf8_put(char *out, int32_t cp) {
    if (cp < 0x80) { out[0] = (char)cp; return 1; }
    if (cp < 0x800) { out[0] = (char)(0xc0 | cp >> 6); out[1] = (char)(0x80 | (cp & 0x3f)); return 2; }
    if (cp < 0x10000) {
        out[0] = (char)(0xe0 | cp >> 12); out[1] = (char)(0x80 | (cp >> 6 & 0x3f));
        out[2] = (char)(0x80 | (cp & 0x3f)); return 3;
    }
    out[0] = (char)(0xf0 | cp >> 18); out[1] = (char)(0x80 | (cp >> 12 & 0x3f));
    out[2] = (char)(0x80 | (cp >> 6 & 0x3f)); out[3] = (char)(0x80 | (cp & 0x3f));
    return 4;
}

long tok_utf8_check(const char *s, size_t n) {
    for (size_t i = 0; i < n;) {
        int32_t cp;
        int l = utf8_valid_len((const uint8_t *)s, n, i, &cp);
        if (l <= 0) return (long)i;
        i += l;
    }
    return -1;
}

/* Rust's String::from_utf8_lossy: each maximal invalid prefix of a sequence (or a lone bad
 * byte) becomes one U+FFFD. Decoders of byte-level models rely on exactly this. */
void tok_utf8_lossy(sbuf *out, const char *s, size_t n) {
    size_t i = 0, run = 0;
    while (i < n) {
        int32_t cp;
        int l = utf8_valid_len((const uint8_t *)s, n, i, &cp);
        if (l > 0) { i += l; continue; }
        sb_putn(out, s + run, i - run);
        sb_puts(out, "\xef\xbf\xbd");
        i += l == 0 ? 1 : (size_t)-l;
        run = i;
    }
    sb_putn(out, s + run, n - run);
}

/* ---- character classes ---- */

int tok_is_whitespace(int32_t cp) {
    return (cp >= 9 && cp <= 13) || cp == 32 || cp == 0x85 || cp == 0xa0 || cp == 0x1680 ||
           (cp >= 0x2000 && cp <= 0x200a) || cp == 0x2028 || cp == 0x2029 || cp == 0x202f ||
           cp == 0x205f || cp == 0x3000;
}

static int cat(int32_t cp) { return utf8proc_category(cp); }

int tok_is_punct(int32_t cp) {
    if (cp < 128) return (cp >= 33 && cp <= 47) || (cp >= 58 && cp <= 64) ||
                         (cp >= 91 && cp <= 96) || (cp >= 123 && cp <= 126);
    int c = cat(cp);
    return c >= UTF8PROC_CATEGORY_PC && c <= UTF8PROC_CATEGORY_PO;
}

int tok_is_numeric(int32_t cp) {
    int c = cat(cp);
    return c == UTF8PROC_CATEGORY_ND || c == UTF8PROC_CATEGORY_NL || c == UTF8PROC_CATEGORY_NO;
}

int tok_is_alnum(int32_t cp) {
    int c = cat(cp);
    return (c >= UTF8PROC_CATEGORY_LU && c <= UTF8PROC_CATEGORY_LO) || tok_is_numeric(cp);
}

int tok_is_word(int32_t cp) {
    int c = cat(cp);
    return (c >= UTF8PROC_CATEGORY_LU && c <= UTF8PROC_CATEGORY_ME) || c == UTF8PROC_CATEGORY_ND ||
           c == UTF8PROC_CATEGORY_NL || c == UTF8PROC_CATEGORY_PC || cp == 0x200c || cp == 0x200d;
}

int tok_is_mn(int32_t cp) { return cat(cp) == UTF8PROC_CATEGORY_MN; }

/* The StripAccents normalizer uses is_combining_mark: every mark, spacing (Mc) and
 * enclosing (Me) ones included, so it strips Devanagari vowel signs; BertNormalizer's
 * strip_accents removes nonspacing marks (Mn) only. */
int tok_is_mark(int32_t cp) {
    int c = cat(cp);
    return c == UTF8PROC_CATEGORY_MN || c == UTF8PROC_CATEGORY_MC || c == UTF8PROC_CATEGORY_ME;
}

/* Rust is_other as the library has it: Cc, Cf, Cs, Co — unassigned code points are kept. */
int tok_is_other(int32_t cp) {
    int c = cat(cp);
    return c == UTF8PROC_CATEGORY_CC || c == UTF8PROC_CATEGORY_CF || c == UTF8PROC_CATEGORY_CS ||
           c == UTF8PROC_CATEGORY_CO;
}

int tok_is_cjk(int32_t c) {
    return (c >= 0x4E00 && c <= 0x9FFF) || (c >= 0x3400 && c <= 0x4DBF) ||
           (c >= 0x20000 && c <= 0x2A6DF) || (c >= 0x2A700 && c <= 0x2B73F) ||
           (c >= 0x2B740 && c <= 0x2B81F) || (c >= 0x2B920 && c <= 0x2CEAF) ||
           (c >= 0xF900 && c <= 0xFAFF) || (c >= 0x2F800 && c <= 0x2FA1F);
}

void tok_lower(sbuf *out, int32_t cp) {
    char b[4];
    if (cp == 0x130) { sb_putn(out, "i\xcc\x87", 3); return; }  /* İ → i + combining dot */
    sb_putn(out, b, tok_utf8_put(b, utf8proc_tolower(cp)));
}

/* ---- GPT-2 byte ↔ unicode table: printable bytes map to themselves, the other 68 to
 * U+0100.. in byte order, so every byte has a visible, non-space character. ---- */

const uint16_t tok_byte_to_cp[256] = {
    256, 257, 258, 259, 260, 261, 262, 263, 264, 265, 266, 267, 268, 269, 270, 271,
    272, 273, 274, 275, 276, 277, 278, 279, 280, 281, 282, 283, 284, 285, 286, 287,
    288, 33, 34, 35, 36, 37, 38, 39, 40, 41, 42, 43, 44, 45, 46, 47,
    48, 49, 50, 51, 52, 53, 54, 55, 56, 57, 58, 59, 60, 61, 62, 63,
    64, 65, 66, 67, 68, 69, 70, 71, 72, 73, 74, 75, 76, 77, 78, 79,
    80, 81, 82, 83, 84, 85, 86, 87, 88, 89, 90, 91, 92, 93, 94, 95,
    96, 97, 98, 99, 100, 101, 102, 103, 104, 105, 106, 107, 108, 109, 110, 111,
    112, 113, 114, 115, 116, 117, 118, 119, 120, 121, 122, 123, 124, 125, 126, 289,
    290, 291, 292, 293, 294, 295, 296, 297, 298, 299, 300, 301, 302, 303, 304, 305,
    306, 307, 308, 309, 310, 311, 312, 313, 314, 315, 316, 317, 318, 319, 320, 321,
    322, 161, 162, 163, 164, 165, 166, 167, 168, 169, 170, 171, 172, 323, 174, 175,
    176, 177, 178, 179, 180, 181, 182, 183, 184, 185, 186, 187, 188, 189, 190, 191,
    192, 193, 194, 195, 196, 197, 198, 199, 200, 201, 202, 203, 204, 205, 206, 207,
    208, 209, 210, 211, 212, 213, 214, 215, 216, 217, 218, 219, 220, 221, 222, 223,
    224, 225, 226, 227, 228, 229, 230, 231, 232, 233, 234, 235, 236, 237, 238, 239,
    240, 241, 242, 243, 244, 245, 246, 247, 248, 249, 250, 251, 252, 253, 254, 255,
};

int tok_cp_to_byte(int32_t cp) {
    if ((cp >= 33 && cp <= 126) || (cp >= 161 && cp <= 255 && cp != 173)) return cp;
    if (cp < 256 || cp > 323) return -1;
    int n = cp - 256;                    /* the n-th unprintable byte */
    return n <= 32 ? n : n <= 66 ? 127 + (n - 33) : 173;
}
