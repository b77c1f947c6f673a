/* tok_norm.c — normalizers: text → text before pre-tokenisation.
 *
 * Each one appends the normalised form of (s, n) to out. No alignment with the original
 * text is kept (loupe does not report offsets), which makes them plain string functions. */
#define _GNU_SOURCE
#include <stdlib.h>
#include <string.h>
#include <utf8proc.h>
#include "model/tok_int.h"
#include "util/err.h"
#include "util/mem.h"

static int unicode_form(const char *s, size_t n, int opts, sbuf *out) {
    size_t i = 0;
    while (i < n && (uint8_t)s[i] < 0x80) i++;
    if (i == n) { sb_putn(out, s, n); return 0; }   /* ASCII is the same in every form */
    utf8proc_uint8_t *r = NULL;
    utf8proc_ssize_t m = utf8proc_map((const utf8proc_uint8_t *)s, (utf8proc_ssize_t)n, &r,
                                      (utf8proc_option_t)(UTF8PROC_STABLE | opts));
    if (m < 0) { free(r); return lp_seterr("unicode normalisation: %s", utf8proc_errmsg(m)); }
    sb_putn(out, (const char *)r, (size_t)m);
    free(r);   /* utf8proc allocates with malloc */
    return 0;
}

/* Every match of re (or of the literal pat) in s replaced by content. */
static void replace(const tok_norm *nm, const char *s, size_t n, sbuf *out) {
    size_t plen = strlen(nm->pat), i = 0;
    if (!nm->re) {
        if (plen == 0) { sb_putn(out, s, n); return; }
        while (i < n) {
            const char *hit = n - i >= plen ? memmem(s + i, n - i, nm->pat, plen) : NULL;
            if (!hit) break;
            sb_putn(out, s + i, (size_t)(hit - (s + i)));
            sb_puts(out, nm->content);
            i = (size_t)(hit - s) + plen;
        }
        sb_putn(out, s + i, n - i);
        return;
    }
    pcre2_match_data *md = pcre2_match_data_create_from_pattern(nm->re, NULL);
    if (!md) { out->oom = 1; return; }
    size_t at = 0;
    while (at <= n && pcre2_match(nm->re, (PCRE2_SPTR)s, n, at, PCRE2_NO_UTF_CHECK, md, NULL) >= 0) {
        PCRE2_SIZE *ov = pcre2_get_ovector_pointer(md);
        sb_putn(out, s + i, ov[0] - i);
        sb_puts(out, nm->content);
        i = ov[1];
        at = ov[1];
        if (ov[0] == ov[1]) {          /* empty match: step over one character */
            if (at >= n) break;
            int32_t cp;
            int l = tok_utf8_next(s, n, at, &cp);
            sb_putn(out, s + at, l);
            at += l; i = at;
        }
    }
    sb_putn(out, s + i, n - i);
    pcre2_match_data_free(md);
}

static void bert(const tok_norm *nm, const char *s, size_t n, sbuf *out) {
    sbuf a; sb_init(&a);
    for (size_t i = 0; i < n;) {
        int32_t c; int l = tok_utf8_next(s, n, i, &c);
        i += l;
        if (nm->clean_text) {
            if (c == 0 || c == 0xfffd || (c != '\t' && c != '\n' && c != '\r' && tok_is_other(c)))
                continue;
            if (tok_is_whitespace(c)) c = ' ';
        }
        char b[4];
        if (nm->chinese && tok_is_cjk(c)) { sb_putc(&a, ' '); sb_putn(&a, b, tok_utf8_put(b, c)); sb_putc(&a, ' '); }
        else sb_putn(&a, b, tok_utf8_put(b, c));
    }
    sbuf d; sb_init(&d);
    const char *t = sb_str(&a); size_t tn = a.len;
    if (nm->strip_accents) {
        if (unicode_form(t, tn, UTF8PROC_DECOMPOSE, &d) < 0) d.oom = 1;
        t = sb_str(&d); tn = d.len;
    }
    for (size_t i = 0; i < tn;) {
        int32_t c; int l = tok_utf8_next(t, tn, i, &c);
        if (nm->strip_accents && tok_is_mn(c)) { i += l; continue; }
        if (nm->lowercase) tok_lower(out, c); else sb_putn(out, t + i, l);
        i += l;
    }
    if (a.oom || d.oom) out->oom = 1;
    sb_free(&a); sb_free(&d);
}

int tok_norm_apply(const tok_norm *nm, const char *s, size_t n, sbuf *out) {
    switch (nm->kind) {
    case TN_SEQ: {
        sbuf cur; sb_init(&cur);
        sb_putn(&cur, s, n);
        for (size_t k = 0; k < nm->nsub; k++) {
            sbuf next; sb_init(&next);
            if (tok_norm_apply(nm->sub[k], sb_str(&cur), cur.len, &next) < 0) {
                sb_free(&cur); sb_free(&next); return -1;
            }
            sb_free(&cur); cur = next;
        }
        sb_putn(out, sb_str(&cur), cur.len);
        if (cur.oom) out->oom = 1;
        sb_free(&cur);
        break;
    }
    case TN_NFC:  return unicode_form(s, n, UTF8PROC_COMPOSE, out);
    case TN_NFD:  return unicode_form(s, n, UTF8PROC_DECOMPOSE, out);
    case TN_NFKC: return unicode_form(s, n, UTF8PROC_COMPOSE | UTF8PROC_COMPAT, out);
    case TN_NFKD: return unicode_form(s, n, UTF8PROC_DECOMPOSE | UTF8PROC_COMPAT, out);
    case TN_LOWER:
        for (size_t i = 0; i < n;) {
            int32_t c; int l = tok_utf8_next(s, n, i, &c);
            tok_lower(out, c); i += l;
        }
        break;
    case TN_STRIP_ACCENTS:   /* drops nonspacing marks only; pair it with NFD to strip accents */
        for (size_t i = 0; i < n;) {
            int32_t c; int l = tok_utf8_next(s, n, i, &c);
            if (!tok_is_mark(c)) sb_putn(out, s + i, l);
            i += l;
        }
        break;
    case TN_STRIP: {
        size_t b = 0, e = n;
        while (nm->left && b < e) {
            int32_t c; int l = tok_utf8_next(s, e, b, &c);
            if (!tok_is_whitespace(c)) break;
            b += l;
        }
        while (nm->right && e > b) {
            size_t p = e - 1;
            while (p > b && ((uint8_t)s[p] & 0xc0) == 0x80) p--;
            int32_t c; tok_utf8_next(s, e, p, &c);
            if (!tok_is_whitespace(c)) break;
            e = p;
        }
        sb_putn(out, s + b, e - b);
        break;
    }
    case TN_REPLACE: replace(nm, s, n, out); break;
    case TN_PREPEND:
        if (n) sb_puts(out, nm->content);   /* an empty piece stays empty */
        sb_putn(out, s, n);
        break;
    case TN_BERT: bert(nm, s, n, out); break;
    case TN_BYTELEVEL:
        for (size_t i = 0; i < n; i++) {
            char b[4];
            sb_putn(out, b, tok_utf8_put(b, tok_byte_to_cp[(uint8_t)s[i]]));
        }
        break;
    }
    if (out->oom) return lp_seterr("out of memory");
    return 0;
}

void tok_norm_free(tok_norm *nm) {
    if (!nm) return;
    for (size_t k = 0; k < nm->nsub; k++) tok_norm_free(nm->sub[k]);
    lp_free(nm->sub);
    lp_free(nm->pat); lp_free(nm->content);
    if (nm->re) pcre2_code_free(nm->re);
    lp_free(nm);
}
