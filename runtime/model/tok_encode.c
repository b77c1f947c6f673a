/* tok_encode.c — the encoding pipeline and the small public accessors.
 *
 *   raw text ─ split out added tokens that match raw text ("normalized": false)
 *            ─ normalise each remaining piece, split out the normalised added tokens
 *            ─ pre-tokenise each piece into words ─ model: words → ids
 *            ─ post-processor template: specials and type ids
 *
 * Pieces live as offsets into one scratch arena reused across calls. */
#include <string.h>
#include "model/tok_int.h"
#include "util/err.h"
#include "util/mem.h"

void tok_ids_init(tok_ids *o) { memset(o, 0, sizeof *o); }

void tok_ids_free(tok_ids *o) {
    lp_free(o->ids); lp_free(o->type_ids); lp_free(o->pieces); lp_free(o->special);
    memset(o, 0, sizeof *o);
}

int tok_ids_push(tok_ids *o, int32_t id, int32_t type_id, const char *piece, int special) {
    if (o->n == o->cap) {
        size_t cap = o->cap ? o->cap * 2 : 64;
        int32_t *a = lp_realloc(o->ids, cap * sizeof *a);
        if (a) o->ids = a;
        int32_t *b = lp_realloc(o->type_ids, cap * sizeof *b);
        if (b) o->type_ids = b;
        const char **c = lp_realloc(o->pieces, cap * sizeof *c);
        if (c) o->pieces = c;
        uint8_t *d = lp_realloc(o->special, cap);
        if (d) o->special = d;
        if (!a || !b || !c || !d) return lp_seterr("out of memory");
        o->cap = cap;
    }
    o->ids[o->n] = id; o->type_ids[o->n] = type_id; o->pieces[o->n] = piece;
    o->special[o->n] = (uint8_t)special;
    o->n++;
    return 0;
}

/* ---- added tokens ---- */

static int starts_word(const char *s, size_t n) {
    int32_t c;
    return n && (tok_utf8_next(s, n, 0, &c), tok_is_word(c));
}

static int ends_word(const char *s, size_t n) {
    if (!n) return 0;
    size_t p = n - 1;
    while (p && ((uint8_t)s[p] & 0xc0) == 0x80) p--;
    int32_t c; tok_utf8_next(s, n, p, &c);
    return tok_is_word(c);
}

/* The longest added token (of the normalized class `norm`) starting at s[i], or NULL. */
static const tok_added *added_at(const tok_tokenizer *t, const char *s, size_t n, size_t i, int norm) {
    const tok_added *best = NULL;
    size_t bl = 0, b = (uint8_t)s[i];
    for (size_t q = t->astart[norm][b]; q < t->astart[norm][b + 1]; q++) {
        const tok_added *x = &t->added[t->abucket[norm][q]];
        const char *c = norm ? x->norm : x->content;
        size_t cl = norm ? x->normlen : x->len;
        if (cl > bl && cl <= n - i && memcmp(c, s + i, cl) == 0) { best = x; bl = cl; }
    }
    return best;
}

/* Split seg (untokenised) around added tokens of one class, like the library's
 * find_matches: leftmost-longest, non-overlapping, single_word / lstrip / rstrip. */
static int split_added(tok_tokenizer *t, const tok_seg *sg, int norm, tok_segs *out) {
    const char *s = t->arena.s + sg->off;
    size_t n = sg->len, start_off = 0;
    for (size_t i = 0; i < n;) {
        const tok_added *x = added_at(t, s, n, i, norm);
        if (!x) { i++; continue; }
        size_t ms = i, me = i + (norm ? x->normlen : x->len);
        i = me;   /* a rejected match is skipped whole, as the automaton does */
        if (x->single_word && ((ms > 0 && ends_word(s, ms)) || (me < n && starts_word(s + me, n - me))))
            continue;
        if (x->lstrip) {
            size_t ns = ms;
            while (ns > 0) {
                size_t p = ns - 1;
                while (p && ((uint8_t)s[p] & 0xc0) == 0x80) p--;
                int32_t c; tok_utf8_next(s, n, p, &c);
                if (!tok_is_whitespace(c)) break;
                ns = p;
            }
            ms = ns > start_off ? ns : start_off;
        }
        if (x->rstrip) {
            while (me < n) {
                int32_t c; int l = tok_utf8_next(s, n, me, &c);
                if (!tok_is_whitespace(c)) break;
                me += l;
            }
            i = me;
        }
        if (start_off < ms && tok_segs_push(out, sg->off + start_off, ms - start_off, -1,
                                            sg->first && start_off == 0) < 0) return -1;
        if (tok_segs_push(out, sg->off + ms, me - ms, x->id, 0) < 0) return -1;
        start_off = me;
    }
    if (start_off < n && tok_segs_push(out, sg->off + start_off, n - start_off, -1,
                                       sg->first && start_off == 0) < 0) return -1;
    return 0;
}

static int has_class(const tok_tokenizer *t, int norm) { return t->astart[norm][256] > 0; }

static void swap_segs(tok_tokenizer *t) {
    tok_segs tmp = t->segs; t->segs = t->segs2; t->segs2 = tmp;
}

/* One sequence → ids appended to out, all with type_id. */
static int encode_seq(tok_tokenizer *t, const char *text, size_t len, tok_ids *out) {
    long bad = tok_utf8_check(text, len);
    if (bad >= 0) return lp_seterr("text is not valid UTF-8 (byte %ld)", bad);
    t->arena.len = 0;
    t->segs.n = t->segs2.n = 0;
    sb_putn(&t->arena, text, len);
    if (t->arena.oom) return lp_seterr("out of memory");
    if (len && tok_segs_push(&t->segs, 0, len, -1, 1) < 0) return -1;

    if (has_class(t, 0)) {
        t->segs2.n = 0;
        for (size_t k = 0; k < t->segs.n; k++)
            if (split_added(t, &t->segs.v[k], 0, &t->segs2) < 0) return -1;
        swap_segs(t);
    }
    if (t->norm) {
        int norm_added = has_class(t, 1);
        t->segs2.n = 0;
        for (size_t k = 0; k < t->segs.n; k++) {
            tok_seg sg = t->segs.v[k];
            if (sg.id >= 0) { if (tok_segs_push(&t->segs2, sg.off, sg.len, sg.id, 0) < 0) return -1; continue; }
            size_t off = t->arena.len;
            sbuf tmp; sb_init(&tmp);
            int rc = tok_norm_apply(t->norm, t->arena.s + sg.off, sg.len, &tmp);
            if (rc == 0) { sb_putn(&t->arena, sb_str(&tmp), tmp.len); if (t->arena.oom) rc = lp_seterr("out of memory"); }
            tok_seg ns = { off, tmp.len, -1, sg.first };
            sb_free(&tmp);
            if (rc < 0) return -1;
            if (!ns.len) continue;
            if (norm_added) rc = split_added(t, &ns, 1, &t->segs2);
            else rc = tok_segs_push(&t->segs2, ns.off, ns.len, -1, ns.first);
            if (rc < 0) return -1;
        }
        swap_segs(t);
    } else if (has_class(t, 1)) {   /* no normalizer: normalized tokens match the raw text */
        t->segs2.n = 0;
        for (size_t k = 0; k < t->segs.n; k++) {
            tok_seg sg = t->segs.v[k];
            int rc = sg.id >= 0 ? tok_segs_push(&t->segs2, sg.off, sg.len, sg.id, 0)
                                : split_added(t, &sg, 1, &t->segs2);
            if (rc < 0) return -1;
        }
        swap_segs(t);
    }
    if (t->pre && tok_pre_apply(t, t->pre) < 0) return -1;
    for (size_t k = 0; k < t->segs.n; k++) {
        tok_seg sg = t->segs.v[k];
        if (sg.id >= 0) {
            if (tok_ids_push(out, sg.id, 0, t->id_tok[sg.id], t->is_special[sg.id]) < 0) return -1;
        } else if (tok_model_word(t, t->arena.s + sg.off, sg.len, out) < 0) return -1;
    }
    return 0;
}

/* Lay out A (and B) by the post-processor's template. */
static int assemble(tok_tokenizer *t, tok_ids *a, tok_ids *b, int add_special, tok_ids *out) {
    out->n = 0;
    tok_tpl_piece dflt[2] = { { 0, 0, NULL, 0 }, { 1, 1, NULL, 0 } };
    const tok_tpl_piece *v = dflt;
    size_t n = b ? 2 : 1;
    if (t->post) { v = b ? t->post->pair : t->post->single; n = b ? t->post->npair : t->post->nsingle; }
    for (size_t k = 0; k < n; k++) {
        if (v[k].seq < 0) {
            if (!add_special) continue;
            for (size_t q = 0; q < v[k].nids; q++)
                if (tok_ids_push(out, v[k].ids[q], v[k].type_id, t->id_tok[v[k].ids[q]], 1) < 0) return -1;
            continue;
        }
        tok_ids *src = v[k].seq == 0 ? a : b;
        if (!src) continue;   /* a $B slot in a single template */
        for (size_t q = 0; q < src->n; q++)
            if (tok_ids_push(out, src->ids[q], v[k].type_id, src->pieces[q], src->special[q]) < 0) return -1;
    }
    return 0;
}

static int encode(tok_tokenizer *t, const char *a, size_t alen, const char *b, size_t blen,
                  int pair, int add_special, tok_ids *out) {
    t->ta.n = t->tb.n = 0;
    out->n = 0;
    int rc = encode_seq(t, a, alen, &t->ta);
    if (rc == 0 && pair) rc = encode_seq(t, b, blen, &t->tb);
    if (rc == 0) rc = assemble(t, &t->ta, pair ? &t->tb : NULL, add_special, out);
    /* a huge input should not pin its scratch memory for the tokenizer's lifetime */
    if (t->arena.cap > (1u << 24)) sb_free(&t->arena);
    if (t->ta.cap > (1u << 20)) tok_ids_free(&t->ta);
    if (t->tb.cap > (1u << 20)) tok_ids_free(&t->tb);
    return rc;
}

int tok_encode(tok_tokenizer *t, const char *text, size_t len, int add_special, tok_ids *out) {
    return encode(t, text, len, NULL, 0, 0, add_special, out);
}

int tok_encode_pair(tok_tokenizer *t, const char *a, size_t alen, const char *b, size_t blen,
                    int add_special, tok_ids *out) {
    return encode(t, a, alen, b, blen, 1, add_special, out);
}

/* ---- accessors ---- */

size_t tok_vocab_size(const tok_tokenizer *t) { return t->nid; }

int32_t tok_token_to_id(const tok_tokenizer *t, const char *piece) {
    size_t n = strlen(piece);
    int32_t id = tok_strmap_get(&t->added_map, piece, n);
    return id >= 0 ? id : tok_strmap_get(&t->vocab, piece, n);
}

const char *tok_id_to_token(const tok_tokenizer *t, int32_t id) {
    return id >= 0 && (size_t)id < t->nid ? t->id_tok[id] : NULL;
}

int tok_is_special(const tok_tokenizer *t, int32_t id) {
    return id >= 0 && (size_t)id < t->nid && t->is_special[id];
}

const tok_special *tok_specials(const tok_tokenizer *t) { return &t->sp; }

const char *tok_model_type(const tok_tokenizer *t) {
    return t->model == TOK_WORDPIECE ? "WordPiece" : t->model == TOK_UNIGRAM ? "Unigram" : "BPE";
}
