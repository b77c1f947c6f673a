/* tok_int.h — the tokenizer's insides, shared by the tok_*.c files (not a public API).
 *
 * tok_load.c reads tokenizer.json into these structs; tok_norm.c, tok_pre.c, tok_model.c,
 * tok_decode.c implement the pipeline stages; tok_encode.c runs them; tok_util.c holds the
 * hash maps and Unicode helpers. Offsets are not tracked: loupe needs ids and pieces. */
#ifndef LOUPE_TOK_INT_H
#define LOUPE_TOK_INT_H
#include <stddef.h>
#include <stdint.h>
#ifndef PCRE2_CODE_UNIT_WIDTH
#define PCRE2_CODE_UNIT_WIDTH 8
#endif
#include <pcre2.h>
#include "model/tok.h"
#include "util/sbuf.h"

/* ---- hash maps (tok_util.c) ---- */

/* string → id; keys point at strings owned elsewhere (the vocabulary). */
typedef struct {
    const char **keys;
    uint32_t    *klen;
    int32_t     *vals;
    size_t       cap, n;   /* cap a power of two */
} tok_strmap;

int     tok_strmap_put(tok_strmap *m, const char *k, size_t klen, int32_t v);  /* 0 / -1 oom */
int32_t tok_strmap_get(const tok_strmap *m, const char *k, size_t klen);       /* -1 absent */
void    tok_strmap_free(tok_strmap *m);

/* (left id, right id) → (rank, merged id), for BPE merges. */
typedef struct {
    uint64_t *keys;     /* left << 32 | right; UINT64_MAX = empty */
    int32_t  *rank, *merged;
    size_t    cap, n;
} tok_pairmap;

int  tok_pairmap_put(tok_pairmap *m, int32_t a, int32_t b, int32_t rank, int32_t merged);
int  tok_pairmap_get(const tok_pairmap *m, int32_t a, int32_t b, int32_t *rank, int32_t *merged);
void tok_pairmap_free(tok_pairmap *m);

/* ---- Unicode and UTF-8 helpers (tok_util.c) ---- */

int  tok_utf8_next(const char *s, size_t n, size_t i, int32_t *cp);  /* bytes of the char at i */
int  tok_utf8_put(char *out, int32_t cp);                            /* 1..4 bytes written */
long tok_utf8_check(const char *s, size_t n);                        /* -1 ok, else bad offset */
void tok_utf8_lossy(sbuf *out, const char *s, size_t n);  /* invalid bytes → U+FFFD, as Rust */
int  tok_is_whitespace(int32_t cp);   /* Rust char::is_whitespace (White_Space) */
int  tok_is_punct(int32_t cp);        /* ASCII punctuation or Unicode P* (BERT) */
int  tok_is_alnum(int32_t cp);        /* Rust char::is_alphanumeric */
int  tok_is_word(int32_t cp);         /* regex \w: alphanumeric, marks, connector punct */
int  tok_is_numeric(int32_t cp);      /* Rust char::is_numeric: Nd, Nl, No */
int  tok_is_mn(int32_t cp);           /* nonspacing mark (BertNormalizer strip_accents) */
int  tok_is_mark(int32_t cp);         /* any mark: Mn, Mc, Me (StripAccents) */
int  tok_is_other(int32_t cp);        /* Cc, Cf, Cs, Co */
int  tok_is_cjk(int32_t cp);          /* the CJK blocks BertNormalizer pads with spaces */
void tok_lower(sbuf *out, int32_t cp);   /* Rust char::to_lowercase, full mapping */
extern const uint16_t tok_byte_to_cp[256];   /* GPT-2 bytes_to_unicode */
int  tok_cp_to_byte(int32_t cp);             /* inverse, -1 when not in the table */

/* ---- pipeline parts (tok_load.c builds them) ---- */

enum { TN_SEQ, TN_NFC, TN_NFD, TN_NFKC, TN_NFKD, TN_LOWER, TN_STRIP_ACCENTS, TN_STRIP,
       TN_REPLACE, TN_PREPEND, TN_BERT, TN_BYTELEVEL };

typedef struct tok_norm {
    int kind;
    struct tok_norm **sub; size_t nsub;       /* TN_SEQ */
    char *pat, *content;                      /* TN_REPLACE (pat), TN_PREPEND (content) */
    pcre2_code *re;                           /* TN_REPLACE with a Regex pattern */
    int left, right;                          /* TN_STRIP */
    int clean_text, chinese, strip_accents, lowercase;   /* TN_BERT */
} tok_norm;

/* How a Split keeps the matched delimiters (SplitDelimiterBehavior). */
enum { TB_REMOVED, TB_ISOLATED, TB_MERGED_PREV, TB_MERGED_NEXT, TB_CONTIGUOUS };
enum { TP_SEQ, TP_BYTELEVEL, TP_SPLIT, TP_METASPACE, TP_WHITESPACE, TP_WSSPLIT, TP_BERT,
       TP_PUNCT, TP_DIGITS, TP_CHARSPLIT };
enum { TM_ALWAYS, TM_FIRST, TM_NEVER };    /* Metaspace prepend_scheme */

typedef struct tok_pre {
    int kind;
    struct tok_pre **sub; size_t nsub;        /* TP_SEQ */
    pcre2_code *re;                           /* TP_SPLIT (Regex or escaped String), ByteLevel */
    int behavior, invert;                     /* TP_SPLIT, TP_PUNCT */
    int add_prefix_space, use_regex;          /* TP_BYTELEVEL */
    char repl[8]; int prepend, split;         /* TP_METASPACE: replacement char as UTF-8 */
    int individual;                           /* TP_DIGITS */
    int32_t delim;                            /* TP_CHARSPLIT */
} tok_pre;

enum { TD_SEQ, TD_BYTELEVEL, TD_METASPACE, TD_WORDPIECE, TD_BPE, TD_REPLACE, TD_BYTEFALLBACK,
       TD_FUSE, TD_STRIP };

typedef struct tok_dec {
    int kind;
    struct tok_dec **sub; size_t nsub;
    char *a, *b;             /* Replace: pattern, content; WordPiece: prefix; BPE: suffix;
                                Metaspace: replacement; Strip: content */
    int cleanup, prepend;    /* WordPiece cleanup; Metaspace prepend_scheme != never */
    int start, stop;         /* Strip */
} tok_dec;

/* A post-processor piece: a sequence slot or a run of special ids. Bert and Roberta
 * processors are loaded as the templates they are equivalent to. */
typedef struct {
    int seq;                 /* 0 = $A, 1 = $B, -1 = special */
    int type_id;
    int32_t *ids; size_t nids;
} tok_tpl_piece;

typedef struct {
    tok_tpl_piece *single, *pair;
    size_t nsingle, npair;
} tok_post;

typedef struct {
    char   *content; size_t len;
    char   *norm; size_t normlen;   /* content after the normalizer, for normalized tokens */
    int32_t id;
    int special, normalized, lstrip, rstrip, single_word;
} tok_added;

enum { TOK_BPE, TOK_WORDPIECE, TOK_UNIGRAM };

/* A piece of text during encoding: bytes at off in the scratch arena, or a finished token. */
typedef struct {
    size_t  off, len;
    int32_t id;       /* -1 until an added token or the model gives it one */
    int     first;    /* starts at offset 0 of the original text (Metaspace "first") */
} tok_seg;

typedef struct {
    tok_seg *v; size_t n, cap;
} tok_segs;

struct tok_tokenizer {
    char *name;
    int model;
    /* vocabulary: id → piece (model vocab and added tokens), piece → id */
    char **id_tok; size_t nid;
    tok_strmap vocab;          /* the model's own vocabulary */
    uint8_t *is_special;       /* per id */
    /* BPE */
    tok_pairmap merges;
    char *unk; int32_t unk_id;
    char *prefix, *suffix;     /* continuing_subword_prefix, end_of_word_suffix (NULL = none) */
    int byte_fallback, fuse_unk, ignore_merges;
    int32_t byte_ids[256];     /* <0xXX> ids for byte fallback, -1 absent */
    /* WordPiece */
    size_t max_chars;
    /* Unigram: log-probability per id, the lowest one, the longest piece in bytes */
    double *scores; double min_score; size_t max_piece;
    /* pipeline */
    tok_added *added; size_t nadded;
    /* added-token indices bucketed by class (0 raw, 1 normalized) and first byte, so the
     * scan for added tokens looks only at candidates starting with the byte at hand */
    uint32_t *abucket[2]; size_t astart[2][257];
    tok_strmap added_map;      /* content → id, for token_to_id */
    tok_norm *norm;
    tok_pre *pre;
    tok_post *post;
    tok_dec *dec;
    tok_special sp;
    /* scratch, reused across calls */
    sbuf arena;
    tok_segs segs, segs2;
    tok_ids ta, tb;            /* the sequences before the post-processor lays them out */
    pcre2_match_data *md;
    /* BPE word cache: word → ids. Fixed-size pools (never moved, so the map can point into
     * them); when one fills up the whole cache is dropped and refilled. */
    tok_strmap cache;          /* word → entry index */
    char *ck; size_t ck_len;   /* key bytes */
    int32_t *ci; size_t ci_len;          /* ids */
    uint32_t (*ce)[2]; size_t ce_n;      /* entry: offset in ci, count */
    unsigned cache_scale;                /* pools are scale/64 of their maximum */
    struct strpool *pool;      /* every string the tokenizer owns (tok_load.c) */
};

/* tok_util.c */
int  tok_segs_push(tok_segs *s, size_t off, size_t len, int32_t id, int first);
pcre2_code *tok_regex(const char *pat, size_t len, int literal);   /* NULL + lp_seterr */

/* tok_norm.c: normalise s into out (appended). 0 / -1. */
int tok_norm_apply(const tok_norm *nm, const char *s, size_t n, sbuf *out);
void tok_norm_free(tok_norm *nm);

/* tok_pre.c: split every untokenised seg of t->segs into words (t->segs replaced). */
int tok_pre_apply(tok_tokenizer *t, const tok_pre *p);
void tok_pre_free(tok_pre *p);
/* Split [off, off+len) of the arena where re matches, with behaviour b: segs appended. */
int tok_split_regex(tok_tokenizer *t, const tok_seg *sg, pcre2_code *re, int b, int invert,
                    tok_segs *out);

/* tok_model.c: append the ids of one word to out. */
int tok_model_word(tok_tokenizer *t, const char *w, size_t n, tok_ids *out);
void tok_cache_clear(tok_tokenizer *t);

/* tok_encode.c */
int tok_ids_push(tok_ids *o, int32_t id, int32_t type_id, const char *piece, int special);

/* tok_decode.c */
void tok_dec_free(tok_dec *d);

#endif
