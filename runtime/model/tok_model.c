/* tok_model.c — the models: BPE, WordPiece and Unigram, one pre-tokenised word at a time.
 *
 * BPE starts from one symbol per character (or per byte through <0xXX> byte fallback) and
 * repeatedly merges the adjacent pair with the lowest merge rank, leftmost first — a min-heap
 * of candidate pairs keyed (rank, position), with stale entries skipped when popped, as the
 * library does. Words repeat a lot in real text, so results are cached per word.
 *
 * WordPiece takes the longest vocabulary entry from the start of the word, then the longest
 * "##"-prefixed entry from there, and so on; a word with any unmatchable rest is [UNK].
 *
 * Unigram picks the segmentation with the highest total log-probability (Viterbi). */
#include <string.h>
#include "model/tok_int.h"
#include "util/err.h"
#include "util/mem.h"

#define CACHE_MAX_WORD 256          /* longer words are not worth caching */
#define CACHE_KEY_BYTES (1u << 20)  /* the pools start at 1/64 of these and double */
#define CACHE_IDS       (1u << 18)
#define CACHE_ENTRIES   (1u << 16)

void tok_cache_clear(tok_tokenizer *t) {
    if (t->cache.cap) {
        memset(t->cache.keys, 0, t->cache.cap * sizeof *t->cache.keys);
        t->cache.n = 0;
    }
    t->ck_len = t->ci_len = t->ce_n = 0;
}

static int cache_get(tok_tokenizer *t, const char *w, size_t n, tok_ids *out) {
    if (!t->ck) return 0;
    int32_t e = tok_strmap_get(&t->cache, w, n);
    if (e < 0) return 0;
    const int32_t *ids = t->ci + t->ce[e][0];
    for (uint32_t k = 0; k < t->ce[e][1]; k++)
        if (tok_ids_push(out, ids[k], 0, t->id_tok[ids[k]], 0) < 0) return -1;
    return 1;
}

/* (Re)allocate the pools at `scale` 64ths of the maximum; the cache starts empty. Growing
 * drops the cached words (the map points into the key pool), which happens a few times. */
static int cache_alloc(tok_tokenizer *t, unsigned scale) {
    char *ck = lp_malloc(CACHE_KEY_BYTES / 64 * scale);
    int32_t *ci = lp_malloc(CACHE_IDS / 64 * scale * sizeof *ci);
    uint32_t (*ce)[2] = lp_malloc(CACHE_ENTRIES / 64 * scale * sizeof *ce);
    if (!ck || !ci || !ce) { lp_free(ck); lp_free(ci); lp_free(ce); return -1; }
    lp_free(t->ck); lp_free(t->ci); lp_free(t->ce);
    t->ck = ck; t->ci = ci; t->ce = ce; t->cache_scale = scale;
    tok_cache_clear(t);
    return 0;
}

static void cache_put(tok_tokenizer *t, const char *w, size_t n, const int32_t *ids, size_t nids) {
    if (n > CACHE_MAX_WORD || nids > CACHE_IDS / 64) return;
    if (!t->ck && cache_alloc(t, 1) < 0) return;   /* no cache is slower, not wrong */
    size_t sc = t->cache_scale;
    if (t->ck_len + n > CACHE_KEY_BYTES / 64 * sc || t->ci_len + nids > CACHE_IDS / 64 * sc ||
        t->ce_n == CACHE_ENTRIES / 64 * sc) {
        if (sc >= 64 || cache_alloc(t, (unsigned)sc * 2) < 0) tok_cache_clear(t);
    }
    char *key = t->ck + t->ck_len;
    memcpy(key, w, n);
    if (tok_strmap_put(&t->cache, key, n, (int32_t)t->ce_n) < 0) return;
    t->ck_len += n;
    t->ce[t->ce_n][0] = (uint32_t)t->ci_len;
    t->ce[t->ce_n][1] = (uint32_t)nids;
    t->ce_n++;
    memcpy(t->ci + t->ci_len, ids, nids * sizeof *ids);
    t->ci_len += nids;
}

/* ---- BPE ---- */

typedef struct { int32_t rank, pos, merged; } cand;

static int cand_less(cand a, cand b) { return a.rank != b.rank ? a.rank < b.rank : a.pos < b.pos; }

static void heap_push(cand *h, size_t *n, cand c) {
    size_t i = (*n)++;
    h[i] = c;
    while (i && cand_less(h[i], h[(i - 1) / 2])) {
        cand tmp = h[i]; h[i] = h[(i - 1) / 2]; h[(i - 1) / 2] = tmp;
        i = (i - 1) / 2;
    }
}

static cand heap_pop(cand *h, size_t *n) {
    cand top = h[0];
    h[0] = h[--*n];
    for (size_t i = 0;;) {
        size_t l = 2 * i + 1, r = l + 1, m = i;
        if (l < *n && cand_less(h[l], h[m])) m = l;
        if (r < *n && cand_less(h[r], h[m])) m = r;
        if (m == i) break;
        cand tmp = h[i]; h[i] = h[m]; h[m] = tmp;
        i = m;
    }
    return top;
}

/* Symbols of the word: ids with a linked list; len 0 marks a symbol merged away. */
typedef struct { int32_t id; int32_t prev, next; uint32_t len; } sym;

static int bpe_word(tok_tokenizer *t, const char *w, size_t n, tok_ids *out) {
    /* a character yields at most one symbol per byte of its piece (byte fallback converts the
     * prefix and suffix too), plus one pending unk */
    size_t plen = t->prefix ? strlen(t->prefix) : 0, slen = t->suffix ? strlen(t->suffix) : 0;
    sym *s = lp_malloc((n * (1 + plen) + slen + 2) * sizeof *s);
    cand *h = NULL;
    int32_t *res = NULL;
    sbuf piece; sb_init(&piece);
    int rc = -1;
    if (!s) { lp_seterr("out of memory"); goto done; }
    size_t ns = 0;
    int32_t unk = -1; uint32_t unk_len = 0;
#define ADD(ID, LEN) do { s[ns].id = (ID); s[ns].len = (LEN); s[ns].prev = (int32_t)ns - 1; \
                          s[ns].next = (int32_t)ns + 1; ns++; } while (0)
    for (size_t i = 0; i < n;) {
        int32_t c; int l = tok_utf8_next(w, n, i, &c);
        int is_last = i + l >= n;
        piece.len = 0; if (piece.s) piece.s[0] = 0;
        if (i > 0 && t->prefix) sb_puts(&piece, t->prefix);
        sb_putn(&piece, w + i, l);
        if (is_last && t->suffix) sb_puts(&piece, t->suffix);
        if (piece.oom) { lp_seterr("out of memory"); goto done; }
        int32_t id = tok_strmap_get(&t->vocab, piece.s, piece.len);
        i += l;
        if (id >= 0) {
            if (unk >= 0) { ADD(unk, unk_len); unk = -1; }
            ADD(id, (uint32_t)l);
            continue;
        }
        if (t->byte_fallback) {
            /* the library converts the whole piece, prefix and suffix included */
            int all = 1;
            for (size_t b = 0; b < piece.len; b++) all &= t->byte_ids[(uint8_t)piece.s[b]] >= 0;
            if (all) {
                for (size_t b = 0; b < piece.len; b++) ADD(t->byte_ids[(uint8_t)piece.s[b]], 1);
                continue;
            }
        }
        if (t->unk_id >= 0) {
            if (unk >= 0 && t->fuse_unk) unk_len += l;
            else {
                if (unk >= 0) ADD(unk, unk_len);
                unk = t->unk_id; unk_len = (uint32_t)l;
            }
        }
    }
    if (unk >= 0) ADD(unk, unk_len);
#undef ADD
    if (ns) s[ns - 1].next = -1;

    if (ns > 1) {
        h = lp_malloc(ns * 3 * sizeof *h);   /* ns - 1 at first, each merge adds at most 2 */
        if (!h) { lp_seterr("out of memory"); goto done; }
        size_t nh = 0;
        for (size_t k = 0; k + 1 < ns; k++) {
            cand c = { 0, (int32_t)k, 0 };
            if (tok_pairmap_get(&t->merges, s[k].id, s[k + 1].id, &c.rank, &c.merged))
                heap_push(h, &nh, c);
        }
        while (nh) {
            cand top = heap_pop(h, &nh);
            sym *a = &s[top.pos];
            if (a->len == 0 || a->next < 0) continue;
            sym *b = &s[a->next];
            int32_t rank, merged;
            if (!tok_pairmap_get(&t->merges, a->id, b->id, &rank, &merged) || merged != top.merged)
                continue;   /* stale: one side was merged since this candidate was queued */
            a->id = merged;
            a->len += b->len;
            a->next = b->next;
            b->len = 0;
            if (a->next >= 0) s[a->next].prev = top.pos;
            if (a->prev >= 0) {
                cand c = { 0, a->prev, 0 };
                if (tok_pairmap_get(&t->merges, s[a->prev].id, a->id, &c.rank, &c.merged))
                    heap_push(h, &nh, c);
            }
            if (a->next >= 0) {
                cand c = { 0, top.pos, 0 };
                if (tok_pairmap_get(&t->merges, a->id, s[a->next].id, &c.rank, &c.merged))
                    heap_push(h, &nh, c);
            }
        }
    }
    res = lp_malloc((ns + 1) * sizeof *res);
    if (!res) { lp_seterr("out of memory"); goto done; }
    size_t nr = 0;
    for (size_t k = 0; k < ns; k++) {
        if (s[k].len == 0) continue;
        res[nr++] = s[k].id;
        if (tok_ids_push(out, s[k].id, 0, t->id_tok[s[k].id], 0) < 0) goto done;
    }
    cache_put(t, w, n, res, nr);
    rc = 0;
done:
    lp_free(s); lp_free(h); lp_free(res); sb_free(&piece);
    return rc;
}

/* ---- WordPiece ---- */

static int unk_word(tok_tokenizer *t, tok_ids *out) {
    if (t->unk_id < 0) return lp_seterr("WordPiece: unk_token `%s` is not in the vocabulary",
                                        t->unk ? t->unk : "");
    return tok_ids_push(out, t->unk_id, 0, t->id_tok[t->unk_id], 0);
}

static int wordpiece_word(tok_tokenizer *t, const char *w, size_t n, tok_ids *out) {
    size_t chars = 0;
    for (size_t i = 0; i < n; i++) chars += ((uint8_t)w[i] & 0xc0) != 0x80;
    if (chars > t->max_chars) return unk_word(t, out);
    size_t plen = t->prefix ? strlen(t->prefix) : 0, n0 = out->n;
    char *buf = lp_malloc(plen + n + 1);
    if (!buf) return lp_seterr("out of memory");
    if (plen) memcpy(buf, t->prefix, plen);
    size_t start = 0;
    while (start < n) {
        size_t end = n;
        int32_t id = -1;
        while (start < end) {
            const char *sub = w + start; size_t sl = end - start;
            if (start > 0) { memcpy(buf + plen, sub, sl); sub = buf; sl += plen; }
            id = tok_strmap_get(&t->vocab, sub, sl);
            if (id >= 0) break;
            do end--; while (end > start && ((uint8_t)w[end] & 0xc0) == 0x80);
        }
        if (id < 0) { out->n = n0; lp_free(buf); return unk_word(t, out); }
        if (tok_ids_push(out, id, 0, t->id_tok[id], 0) < 0) { lp_free(buf); return -1; }
        start = end;
    }
    lp_free(buf);
    return 0;
}

/* ---- Unigram ---- */

/* Viterbi over the word's bytes: best[e] is the best-scoring segmentation of w[0, e) and the
 * piece that ends it. Pieces are tried shortest first and replaced only on a strictly
 * better score, the library's tie-break. A character no piece covers alone becomes unk,
 * scored min_score - 10; adjacent unks are fused, and an unknown string then falls back
 * to <0xXX> pieces when the model has byte_fallback. */
typedef struct { double score; int32_t start, id; } ugnode;

/* A piece of the best path → ids: itself when in the vocabulary (a fused unk run rarely is),
 * else its bytes as <0xXX> pieces when all exist, else unk. */
static int unigram_piece(tok_tokenizer *t, const char *s, size_t n, tok_ids *out) {
    int32_t known = tok_strmap_get(&t->vocab, s, n);
    if (known >= 0) return tok_ids_push(out, known, 0, t->id_tok[known], 0);
    if (t->byte_fallback) {
        int all = 1;
        for (size_t b = 0; b < n; b++) all &= t->byte_ids[(uint8_t)s[b]] >= 0;
        if (all) {
            for (size_t b = 0; b < n; b++)
                if (tok_ids_push(out, t->byte_ids[(uint8_t)s[b]], 0, t->id_tok[t->byte_ids[(uint8_t)s[b]]], 0) < 0)
                    return -1;
            return 0;
        }
    }
    return tok_ids_push(out, t->unk_id, 0, t->id_tok[t->unk_id], 0);
}

static int unigram_word(tok_tokenizer *t, const char *w, size_t n, tok_ids *out) {
    ugnode *best = lp_malloc((n + 1) * sizeof *best);
    size_t *cut = lp_malloc((n + 1) * 2 * sizeof *cut);
    int rc = -1;
    if (!best || !cut) { lp_seterr("out of memory"); goto done; }
    for (size_t i = 0; i <= n; i++) best[i] = (ugnode){ 0, -1, -1 };
    double unk_score = t->min_score - 10.0;
    for (size_t s = 0; s < n;) {
        int32_t c;
        size_t mblen = (size_t)tok_utf8_next(w, n, s, &c);
        double base = best[s].score;
        int single = 0;
        for (size_t e = s + 1; e <= n && e - s <= t->max_piece; e++) {
            if (e < n && ((uint8_t)w[e] & 0xc0) == 0x80) continue;   /* pieces end on characters */
            int32_t id = tok_strmap_get(&t->vocab, w + s, e - s);
            if (id < 0) continue;
            double cand = t->scores[id] + base;
            if (best[e].start < 0 || cand > best[e].score) best[e] = (ugnode){ cand, (int32_t)s, id };
            if (e - s == mblen) single = 1;
        }
        if (!single) {
            if (t->unk_id < 0) { lp_seterr("Unigram: `%.*s` has no piece and the model has no unk_id", (int)mblen, w + s); goto done; }
            double cand = unk_score + base;
            if (best[s + mblen].start < 0 || cand > best[s + mblen].score)
                best[s + mblen] = (ugnode){ cand, (int32_t)s, t->unk_id };
        }
        s += mblen;
    }
    /* walk back from the end, fusing runs of unk, then emit front to back */
    size_t ncut = 0;
    int in_run = 0;
    for (size_t e = n; e > 0;) {
        size_t s = (size_t)best[e].start;
        if (best[e].id == t->unk_id && in_run) cut[2 * (ncut - 1)] = s;   /* extend the run left */
        else { cut[2 * ncut] = s; cut[2 * ncut + 1] = e; ncut++; }
        in_run = best[e].id == t->unk_id;
        e = s;
    }
    for (size_t k = ncut; k-- > 0;) {
        size_t s = cut[2 * k], e = cut[2 * k + 1];
        if (unigram_piece(t, w + s, e - s, out) < 0) goto done;
    }
    rc = 0;
done:
    lp_free(best); lp_free(cut);
    return rc;
}

int tok_model_word(tok_tokenizer *t, const char *w, size_t n, tok_ids *out) {
    if (n == 0) return 0;
    if (t->model == TOK_WORDPIECE) return wordpiece_word(t, w, n, out);
    if (t->model == TOK_UNIGRAM) {
        int hit = cache_get(t, w, n, out);
        if (hit) return hit < 0 ? -1 : 0;
        size_t n0 = out->n;
        if (unigram_word(t, w, n, out) < 0) return -1;
        cache_put(t, w, n, out->ids + n0, out->n - n0);
        return 0;
    }
    if (t->ignore_merges) {
        int32_t id = tok_strmap_get(&t->vocab, w, n);
        if (id >= 0) return tok_ids_push(out, id, 0, t->id_tok[id], 0);
    }
    int hit = cache_get(t, w, n, out);
    if (hit) return hit < 0 ? -1 : 0;
    return bpe_word(t, w, n, out);
}
