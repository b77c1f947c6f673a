/* tok_pre.c — pre-tokenizers: split normalised text into words for the model.
 *
 * A split first cuts a piece into intervals, each a delimiter match or not (a regex match,
 * or one character satisfying a predicate — the library treats every such character as its
 * own match), then the behaviour decides what the matches become (dropped, separate words,
 * glued to a neighbour). Pre-tokenizers that only cut keep pointing into the same arena
 * bytes; ByteLevel and Metaspace write transformed text to the arena. */
#include <string.h>
#include "model/tok_int.h"
#include "util/err.h"
#include "util/mem.h"

typedef struct { size_t s, e; int m; } ival;
typedef struct { ival *v; size_t n, cap; } ivals;

static int iv_push(ivals *a, size_t s, size_t e, int m) {
    if (a->n == a->cap) {
        size_t cap = a->cap ? a->cap * 2 : 64;
        ival *v = lp_realloc(a->v, cap * sizeof *v);
        if (!v) return lp_seterr("out of memory");
        a->v = v; a->cap = cap;
    }
    a->v[a->n++] = (ival){ s, e, m };
    return 0;
}

enum { PRED_WS, PRED_PUNCT, PRED_NUM, PRED_CHAR, PRED_WHITESPACE_RE };

/* Intervals of s by a character predicate. PRED_WHITESPACE_RE emulates the Whitespace
 * pre-tokenizer's inverted regex \w+|[^\w\s]+: runs of word chars and runs of other
 * non-space chars are kept (m = 0), each whitespace char is a removed match. */
static int pred_intervals(const char *s, size_t n, int pred, int32_t delim, ivals *out) {
    size_t last = 0;
    int prevkind = -1;
    for (size_t i = 0; i < n;) {
        int32_t c; int l = tok_utf8_next(s, n, i, &c);
        if (pred == PRED_WHITESPACE_RE) {
            int kind = tok_is_whitespace(c) ? 2 : tok_is_word(c) ? 0 : 1;
            if (kind == 2) {
                if (last < i && iv_push(out, last, i, 0) < 0) return -1;
                if (iv_push(out, i, i + l, 1) < 0) return -1;
                last = i + l;
            } else if (prevkind != kind && prevkind != 2 && last < i) {
                if (iv_push(out, last, i, 0) < 0) return -1;
                last = i;
            }
            prevkind = kind;
            i += l;
            continue;
        }
        int hit = pred == PRED_WS ? tok_is_whitespace(c) : pred == PRED_PUNCT ? tok_is_punct(c)
                : pred == PRED_NUM ? tok_is_numeric(c) : c == delim;
        if (hit) {
            if (last < i && iv_push(out, last, i, 0) < 0) return -1;
            if (iv_push(out, i, i + l, 1) < 0) return -1;
            last = i + l;
        }
        i += l;
    }
    if (last < n && iv_push(out, last, n, 0) < 0) return -1;
    return 0;
}

static int regex_intervals(tok_tokenizer *t, const char *s, size_t n, pcre2_code *re, ivals *out) {
    size_t at = 0, prev = 0;
    while (at <= n) {
        int rc = pcre2_match(re, (PCRE2_SPTR)s, n, at, PCRE2_NO_UTF_CHECK, t->md, NULL);
        if (rc == PCRE2_ERROR_NOMATCH) break;
        if (rc < 0) {
            PCRE2_UCHAR msg[128];
            pcre2_get_error_message(rc, msg, sizeof msg);
            return lp_seterr("pre-tokenizer regex: %s", (char *)msg);
        }
        PCRE2_SIZE *ov = pcre2_get_ovector_pointer(t->md);
        size_t ms = ov[0], me = ov[1];
        if (prev != ms && iv_push(out, prev, ms, 0) < 0) return -1;
        if (iv_push(out, ms, me, 1) < 0) return -1;
        prev = me;
        if (me == ms) {   /* empty match: move on by one character */
            if (me >= n) break;
            int32_t c;
            at = me + tok_utf8_next(s, n, me, &c);
        } else at = me;
    }
    if (prev != n && iv_push(out, prev, n, 0) < 0) return -1;
    return 0;
}

/* Turn intervals into words per SplitDelimiterBehavior; empty words vanish. */
static int apply_behavior(const tok_seg *sg, ivals *iv, int b, int invert, tok_segs *out) {
    if (invert) for (size_t k = 0; k < iv->n; k++) iv->v[k].m = !iv->v[k].m;
    size_t n0 = out->n;
    int prev_match = 0;
    for (size_t k = 0; k < iv->n; k++) {
        ival x = iv->v[k];
        int extend = 0;
        if (b == TB_REMOVED && x.m) { prev_match = x.m; continue; }
        if (b == TB_CONTIGUOUS) extend = x.m == prev_match && out->n > n0;
        else if (b == TB_MERGED_PREV) extend = x.m && !prev_match && out->n > n0;
        else if (b == TB_MERGED_NEXT && x.m && k + 1 < iv->n && !iv->v[k + 1].m) {
            x.e = iv->v[k + 1].e;   /* the match starts the next word */
            k++;
            x.m = 0;
        }
        prev_match = iv->v[k].m;
        if (extend) {
            tok_seg *last = &out->v[out->n - 1];
            last->len = sg->off + x.e - last->off;
            continue;
        }
        if (tok_segs_push(out, sg->off + x.s, x.e - x.s, -1, sg->first && x.s == 0) < 0) return -1;
    }
    /* drop empty words (zero-length regex matches) */
    size_t w = n0;
    for (size_t k = n0; k < out->n; k++) if (out->v[k].len) out->v[w++] = out->v[k];
    out->n = w;
    return 0;
}

int tok_split_regex(tok_tokenizer *t, const tok_seg *sg, pcre2_code *re, int b, int invert,
                    tok_segs *out) {
    ivals iv = {0};
    int rc = regex_intervals(t, t->arena.s + sg->off, sg->len, re, &iv);
    if (rc == 0) rc = apply_behavior(sg, &iv, b, invert, out);
    lp_free(iv.v);
    return rc;
}

static int split_pred(tok_tokenizer *t, const tok_seg *sg, int pred, int32_t delim, int b,
                      tok_segs *out) {
    ivals iv = {0};
    int rc = pred_intervals(t->arena.s + sg->off, sg->len, pred, delim, &iv);
    if (rc == 0) rc = apply_behavior(sg, &iv, b, 0, out);
    lp_free(iv.v);
    return rc;
}

/* Put bytes into the arena as a new piece. The arena may move: callers keep offsets. */
static int arena_seg(tok_tokenizer *t, const sbuf *src, int first, tok_seg *sg) {
    sg->off = t->arena.len; sg->len = src->len; sg->id = -1; sg->first = first;
    sb_putn(&t->arena, sb_str((sbuf *)src), src->len);
    return t->arena.oom || src->oom ? lp_seterr("out of memory") : 0;
}

static int bytelevel_map(tok_tokenizer *t, tok_seg *sg) {
    sbuf b; sb_init(&b);
    const char *s = t->arena.s + sg->off;   /* stable: b is a separate buffer */
    for (size_t i = 0; i < sg->len; i++) {
        char u[4];
        sb_putn(&b, u, tok_utf8_put(u, tok_byte_to_cp[(uint8_t)s[i]]));
    }
    int rc = arena_seg(t, &b, sg->first, sg);
    sb_free(&b);
    return rc;
}

static int pre_one(tok_tokenizer *t, const tok_pre *p, const tok_seg *in, tok_segs *out) {
    switch (p->kind) {
    case TP_WHITESPACE:  return split_pred(t, in, PRED_WHITESPACE_RE, 0, TB_REMOVED, out);
    case TP_WSSPLIT:     return split_pred(t, in, PRED_WS, 0, TB_REMOVED, out);
    case TP_PUNCT:       return split_pred(t, in, PRED_PUNCT, 0, p->behavior, out);
    case TP_DIGITS:      return split_pred(t, in, PRED_NUM, 0,
                                           p->individual ? TB_ISOLATED : TB_CONTIGUOUS, out);
    case TP_CHARSPLIT:   return split_pred(t, in, PRED_CHAR, p->delim, TB_REMOVED, out);
    case TP_SPLIT:       return tok_split_regex(t, in, p->re, p->behavior, p->invert, out);
    case TP_BERT: {
        tok_segs tmp = {0};
        int rc = split_pred(t, in, PRED_WS, 0, TB_REMOVED, &tmp);
        for (size_t k = 0; rc == 0 && k < tmp.n; k++)
            rc = split_pred(t, &tmp.v[k], PRED_PUNCT, 0, TB_ISOLATED, out);
        lp_free(tmp.v);
        return rc;
    }
    case TP_BYTELEVEL: {
        tok_seg sg = *in;
        const char *s = t->arena.s + in->off;
        if (p->add_prefix_space && (in->len == 0 || s[0] != ' ')) {
            sbuf b; sb_init(&b);
            sb_putc(&b, ' '); sb_putn(&b, s, in->len);
            int rc = arena_seg(t, &b, in->first, &sg);
            sb_free(&b);
            if (rc < 0) return -1;
        }
        size_t n0 = out->n;
        if (p->use_regex) {
            if (tok_split_regex(t, &sg, p->re, TB_ISOLATED, 0, out) < 0) return -1;
        } else if (sg.len && tok_segs_push(out, sg.off, sg.len, -1, sg.first) < 0) return -1;
        for (size_t k = n0; k < out->n; k++)
            if (bytelevel_map(t, &out->v[k]) < 0) return -1;
        return 0;
    }
    case TP_METASPACE: {
        sbuf b; sb_init(&b);
        const char *s = t->arena.s + in->off;
        size_t rl = strlen(p->repl);
        /* the library tests for a leading replacement after spaces became replacements */
        int starts = (in->len && s[0] == ' ') || (in->len >= rl && memcmp(s, p->repl, rl) == 0);
        if (!starts && (p->prepend == TM_ALWAYS || (p->prepend == TM_FIRST && in->first)))
            sb_puts(&b, p->repl);
        for (size_t i = 0; i < in->len; i++) {
            if (s[i] == ' ') sb_puts(&b, p->repl); else sb_putc(&b, s[i]);
        }
        tok_seg sg;
        int rc = arena_seg(t, &b, in->first, &sg);
        sb_free(&b);
        if (rc < 0) return -1;
        if (!p->split) return sg.len ? tok_segs_push(out, sg.off, sg.len, -1, sg.first) : 0;
        int32_t c;
        tok_utf8_next(p->repl, rl, 0, &c);
        return split_pred(t, &sg, PRED_CHAR, c, TB_MERGED_NEXT, out);
    }
    }
    return lp_seterr("internal: pre-tokenizer kind %d", p->kind);
}

int tok_pre_apply(tok_tokenizer *t, const tok_pre *p) {
    if (p->kind == TP_SEQ) {
        for (size_t k = 0; k < p->nsub; k++)
            if (tok_pre_apply(t, p->sub[k]) < 0) return -1;
        return 0;
    }
    tok_segs *in = &t->segs, *out = &t->segs2;
    out->n = 0;
    for (size_t k = 0; k < in->n; k++) {
        tok_seg sg = in->v[k];
        if (sg.id >= 0) {   /* added tokens are already words */
            if (tok_segs_push(out, sg.off, sg.len, sg.id, sg.first) < 0) return -1;
            continue;
        }
        if (pre_one(t, p, &sg, out) < 0) return -1;
    }
    tok_segs tmp = t->segs; t->segs = t->segs2; t->segs2 = tmp;
    return 0;
}

void tok_pre_free(tok_pre *p) {
    if (!p) return;
    for (size_t k = 0; k < p->nsub; k++) tok_pre_free(p->sub[k]);
    lp_free(p->sub);
    if (p->re) pcre2_code_free(p->re);
    lp_free(p);
}
