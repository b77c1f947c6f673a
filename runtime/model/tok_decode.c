/* tok_decode.c — ids back to text: pieces, then the decoder chain, then concatenation.
 *
 * Like the library, each decoder maps a list of strings to a list of strings (Fuse and
 * ByteLevel collapse it to one), and the final text is the list joined with nothing; with
 * no decoder at all the pieces are joined with spaces. */
#define _GNU_SOURCE
#include <string.h>
#include "model/tok_int.h"
#include "util/err.h"
#include "util/mem.h"

typedef struct {
    sbuf buf;              /* the strings' bytes, back to back */
    size_t *off, *len;
    size_t n, cap;
} strlist;

static int sl_push(strlist *l, const char *s, size_t n) {
    if (l->n == l->cap) {
        size_t cap = l->cap ? l->cap * 2 : 16;
        size_t *o = lp_realloc(l->off, cap * sizeof *o);
        if (o) l->off = o;
        size_t *q = lp_realloc(l->len, cap * sizeof *q);
        if (q) l->len = q;
        if (!o || !q) return lp_seterr("out of memory");
        l->cap = cap;
    }
    l->off[l->n] = l->buf.len; l->len[l->n] = n; l->n++;
    sb_putn(&l->buf, s, n);
    return l->buf.oom ? lp_seterr("out of memory") : 0;
}

/* Start a string that the caller appends to l->buf, then closes with sl_end. */
static int sl_begin(strlist *l) { return sl_push(l, "", 0); }
static void sl_end(strlist *l) { l->len[l->n - 1] = l->buf.len - l->off[l->n - 1]; }

static void sl_free(strlist *l) { sb_free(&l->buf); lp_free(l->off); lp_free(l->len); }

#define STR(l, k) ((l)->buf.s + (l)->off[k])

static void replace_all(sbuf *out, const char *s, size_t n, const char *pat, const char *with) {
    size_t pl = strlen(pat), i = 0;
    if (!pl) { sb_putn(out, s, n); return; }
    while (i < n) {
        const char *hit = n - i >= pl ? memmem(s + i, n - i, pat, pl) : NULL;
        if (!hit) break;
        sb_putn(out, s + i, (size_t)(hit - (s + i)));
        sb_puts(out, with);
        i = (size_t)(hit - s) + pl;
    }
    sb_putn(out, s + i, n - i);
}

/* The WordPiece decoder's English clean-up, replacement by replacement in this order. */
static void cleanup(sbuf *tok) {
    static const char *pairs[][2] = {
        {" .", "."}, {" ?", "?"}, {" !", "!"}, {" ,", ","}, {" ' ", "'"}, {" n't", "n't"},
        {" 'm", "'m"}, {" do not", " don't"}, {" 's", "'s"}, {" 've", "'ve"}, {" 're", "'re"},
    };
    for (size_t k = 0; k < sizeof pairs / sizeof *pairs; k++) {
        if (!tok->len || !memmem(tok->s, tok->len, pairs[k][0], strlen(pairs[k][0]))) continue;
        sbuf r; sb_init(&r);
        replace_all(&r, tok->s, tok->len, pairs[k][0], pairs[k][1]);
        if (r.oom) tok->oom = 1;
        sb_free(tok); *tok = r;
    }
}

static int hexval(char c) {
    return c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10
         : c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
}

/* <0xXX> bytes runs: valid UTF-8 becomes its text, else one U+FFFD per byte. */
static int flush_bytes(strlist *out, sbuf *bytes) {
    int rc = 0;
    if (!bytes->len) return 0;
    if (tok_utf8_check(bytes->s, bytes->len) < 0) rc = sl_push(out, bytes->s, bytes->len);
    else for (size_t k = 0; k < bytes->len && rc == 0; k++) rc = sl_push(out, "\xef\xbf\xbd", 3);
    bytes->len = 0;
    return rc;
}

static int dec_apply(const tok_dec *d, strlist *in, strlist *out) {
    int rc = 0;
    switch (d->kind) {
    case TD_SEQ: {
        strlist cur = *in, next;
        memset(in, 0, sizeof *in);   /* cur owns it now */
        for (size_t k = 0; k < d->nsub && rc == 0; k++) {
            memset(&next, 0, sizeof next);
            rc = dec_apply(d->sub[k], &cur, &next);
            sl_free(&cur); cur = next;
        }
        *out = cur;
        return rc;
    }
    case TD_BYTELEVEL: {
        sbuf bytes; sb_init(&bytes);
        for (size_t k = 0; k < in->n; k++) {
            const char *s = STR(in, k); size_t n = in->len[k], mark = bytes.len;
            int ok = 1;
            for (size_t i = 0; i < n && ok;) {
                int32_t c; int l = tok_utf8_next(s, n, i, &c);
                int b = tok_cp_to_byte(c);
                if (b < 0) ok = 0; else sb_putc(&bytes, (char)b);
                i += l;
            }
            if (!ok) { bytes.len = mark; sb_putn(&bytes, s, n); }   /* not byte-level: as is */
        }
        rc = sl_begin(out);
        if (rc == 0) { tok_utf8_lossy(&out->buf, sb_str(&bytes), bytes.len); sl_end(out); }
        if (bytes.oom) rc = lp_seterr("out of memory");
        sb_free(&bytes);
        break;
    }
    case TD_METASPACE:
        for (size_t k = 0; k < in->n && rc == 0; k++) {
            rc = sl_begin(out);
            /* the library drops every replacement char of the first token, not only the
             * leading one, when a prefix was prepended */
            if (rc == 0) { replace_all(&out->buf, STR(in, k), in->len[k], d->a, k == 0 && d->prepend ? "" : " "); sl_end(out); }
        }
        break;
    case TD_WORDPIECE:
        for (size_t k = 0; k < in->n && rc == 0; k++) {
            sbuf t; sb_init(&t);
            const char *s = STR(in, k); size_t n = in->len[k], pl = strlen(d->a);
            if (k == 0) sb_putn(&t, s, n);
            else if (n >= pl && memcmp(s, d->a, pl) == 0) sb_putn(&t, s + pl, n - pl);
            else { sb_putc(&t, ' '); sb_putn(&t, s, n); }
            if (d->cleanup) cleanup(&t);
            rc = t.oom ? lp_seterr("out of memory") : sl_push(out, sb_str(&t), t.len);
            sb_free(&t);
        }
        break;
    case TD_BPE:
        for (size_t k = 0; k < in->n && rc == 0; k++) {
            rc = sl_begin(out);
            if (rc == 0) { replace_all(&out->buf, STR(in, k), in->len[k], d->a, k + 1 == in->n ? "" : " "); sl_end(out); }
        }
        break;
    case TD_REPLACE:
        for (size_t k = 0; k < in->n && rc == 0; k++) {
            rc = sl_begin(out);
            if (rc == 0) { replace_all(&out->buf, STR(in, k), in->len[k], d->a, d->b); sl_end(out); }
        }
        break;
    case TD_BYTEFALLBACK: {
        sbuf bytes; sb_init(&bytes);
        for (size_t k = 0; k < in->n && rc == 0; k++) {
            const char *s = STR(in, k); size_t n = in->len[k];
            int hi, lo;
            if (n == 6 && memcmp(s, "<0x", 3) == 0 && s[5] == '>' &&
                (hi = hexval(s[3])) >= 0 && (lo = hexval(s[4])) >= 0) {
                sb_putc(&bytes, (char)(hi << 4 | lo));
                continue;
            }
            rc = flush_bytes(out, &bytes);
            if (rc == 0) rc = sl_push(out, s, n);
        }
        if (rc == 0) rc = flush_bytes(out, &bytes);
        if (rc == 0 && bytes.oom) rc = lp_seterr("out of memory");
        sb_free(&bytes);
        break;
    }
    case TD_FUSE:
        rc = sl_begin(out);
        for (size_t k = 0; k < in->n && rc == 0; k++) sb_putn(&out->buf, STR(in, k), in->len[k]);
        if (rc == 0) sl_end(out);
        break;
    case TD_STRIP:
        for (size_t k = 0; k < in->n && rc == 0; k++) {
            const char *s = STR(in, k); size_t n = in->len[k], cl = strlen(d->a);
            size_t b = 0, e = n;
            /* up to `start` leading and `stop` trailing copies of the content character */
            for (int i = 0; i < d->start && cl && e - b >= cl && memcmp(s + b, d->a, cl) == 0; i++) b += cl;
            for (int i = 0; i < d->stop && cl && e - b >= cl && memcmp(s + e - cl, d->a, cl) == 0; i++) e -= cl;
            rc = sl_push(out, s + b, e - b);
        }
        break;
    }
    if (rc == 0 && out->buf.oom) rc = lp_seterr("out of memory");
    return rc;
}

char *tok_decode(tok_tokenizer *t, const int32_t *ids, size_t n, int skip_special) {
    strlist in = {0}, out = {0};
    sb_init(&in.buf);
    for (size_t k = 0; k < n; k++) {
        int32_t id = ids[k];
        if (id < 0 || (size_t)id >= t->nid || !t->id_tok[id]) {
            lp_seterr("token id %d is not in the vocabulary (%zu ids)", id, t->nid);
            sl_free(&in);
            return NULL;
        }
        if (skip_special && t->is_special[id]) continue;
        if (sl_push(&in, t->id_tok[id], strlen(t->id_tok[id])) < 0) { sl_free(&in); return NULL; }
    }
    sbuf res; sb_init(&res);
    if (!t->dec) {
        for (size_t k = 0; k < in.n; k++) {
            if (k) sb_putc(&res, ' ');
            sb_putn(&res, STR(&in, k), in.len[k]);
        }
    } else {
        if (dec_apply(t->dec, &in, &out) < 0) { sl_free(&in); sl_free(&out); sb_free(&res); return NULL; }
        for (size_t k = 0; k < out.n; k++) sb_putn(&res, STR(&out, k), out.len[k]);
    }
    sl_free(&in); sl_free(&out);
    if (res.oom) { sb_free(&res); lp_seterr("out of memory"); return NULL; }
    return res.s ? sb_take(&res) : lp_strdup("");
}

void tok_dec_free(tok_dec *d) {
    if (!d) return;
    for (size_t k = 0; k < d->nsub; k++) tok_dec_free(d->sub[k]);
    lp_free(d->sub); lp_free(d->a); lp_free(d->b);
    lp_free(d);
}
