/* tok_load.c — read tokenizer.json (format in tok.h) into a tok_tokenizer.
 *
 * Everything the file can get wrong is a load error with the JSON path of the problem
 * ("tokenizer.json: normalizer.normalizers[1]: type `Precompiled` is not supported yet"),
 * so a bad file never fails later, in the middle of a training run. */
#define _GNU_SOURCE
#include <errno.h>
#include <stdarg.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include "model/tok_int.h"
#include "util/err.h"
#include "util/mem.h"

/* Ids index dense tables (id → piece), so a file claiming id 2^30 would cost gigabytes.
 * The largest real vocabularies have about a million entries. */
#define TOK_MAX_ID (1 << 24)

/* the path of the JSON value being read, for error messages */
typedef struct { const char *file; char where[256]; } ctx;

/* Sets "FILE: WHERE: message" and returns -1. The message is formatted before errbuf is
 * written, so an argument may be lp_geterr(). */
static int LP_PRINTF(2, 3) fail(ctx *c, const char *fmt, ...) {
    char msg[LP_ERR_MAX];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    if (c->where[0]) return lp_seterr("%s: %s: %s", c->file, c->where, msg);
    return lp_seterr("%s: %s", c->file, msg);
}
#define FAIL fail

static void at(ctx *c, const char *fmt, const char *key, size_t idx, char *saved) {
    strcpy(saved, c->where);
    size_t l = strlen(c->where);
    snprintf(c->where + l, sizeof c->where - l, fmt, key, idx);
}

static const char *jstr(json_t *o, const char *k, const char *dflt) {
    json_t *v = json_object_get(o, k);
    return json_is_string(v) ? json_string_value(v) : dflt;
}

static int jbool(json_t *o, const char *k, int dflt) {
    json_t *v = json_object_get(o, k);
    return json_is_boolean(v) ? json_is_true(v) : dflt;
}

static long jint(json_t *o, const char *k, long dflt) {
    json_t *v = json_object_get(o, k);
    return json_is_integer(v) ? (long)json_integer_value(v) : dflt;
}

/* {"String": "x"} or {"Regex": "x"} → a compiled pattern (literal for String). */
static pcre2_code *pattern(ctx *c, json_t *o, char **literal) {
    json_t *p = json_object_get(o, "pattern");
    json_t *s = json_object_get(p, "String"), *r = json_object_get(p, "Regex");
    if (literal) *literal = NULL;
    if (json_is_string(s)) {
        if (literal) {   /* callers that can use a plain substring search take it as is */
            *literal = lp_strdup(json_string_value(s));
            if (!*literal) lp_seterr("out of memory");
            return NULL;
        }
        return tok_regex(json_string_value(s), json_string_length(s), 1);
    }
    if (json_is_string(r)) return tok_regex(json_string_value(r), json_string_length(r), 0);
    lp_seterr("`pattern` must be {\"String\": …} or {\"Regex\": …}");
    return NULL;
}

/* ---- normalizers ---- */

static tok_norm *norm_parse(ctx *c, json_t *j) {
    const char *type = jstr(j, "type", NULL);
    if (!type) { FAIL(c, "normalizer without a `type`"); return NULL; }
    tok_norm *nm = lp_calloc(1, sizeof *nm);
    if (!nm) { lp_seterr("out of memory"); return NULL; }
    static const struct { const char *name; int kind; } simple[] = {
        {"NFC", TN_NFC}, {"NFD", TN_NFD}, {"NFKC", TN_NFKC}, {"NFKD", TN_NFKD},
        {"Lowercase", TN_LOWER}, {"StripAccents", TN_STRIP_ACCENTS}, {"ByteLevel", TN_BYTELEVEL},
    };
    for (size_t k = 0; k < sizeof simple / sizeof *simple; k++)
        if (strcmp(type, simple[k].name) == 0) { nm->kind = simple[k].kind; return nm; }
    if (strcmp(type, "Sequence") == 0) {
        json_t *a = json_object_get(j, "normalizers");
        nm->kind = TN_SEQ;
        if (!json_is_array(a)) { FAIL(c, "Sequence normalizer without a `normalizers` list"); goto bad; }
        nm->sub = lp_calloc(json_array_size(a) + 1, sizeof *nm->sub);
        if (!nm->sub) { lp_seterr("out of memory"); goto bad; }
        for (size_t k = 0; k < json_array_size(a); k++) {
            char saved[256];
            at(c, "%s[%zu]", ".normalizers", k, saved);
            nm->sub[k] = norm_parse(c, json_array_get(a, k));
            strcpy(c->where, saved);
            if (!nm->sub[k]) goto bad;
            nm->nsub++;
        }
    } else if (strcmp(type, "Strip") == 0) {
        nm->kind = TN_STRIP;
        nm->left = jbool(j, "strip_left", 1); nm->right = jbool(j, "strip_right", 1);
    } else if (strcmp(type, "Replace") == 0) {
        nm->kind = TN_REPLACE;
        json_t *p = json_object_get(j, "pattern");
        if (json_is_string(json_object_get(p, "String"))) {
            nm->pat = lp_strdup(json_string_value(json_object_get(p, "String")));
        } else {
            nm->re = pattern(c, j, NULL);
            if (!nm->re) { FAIL(c, "Replace normalizer: %s", lp_geterr()); goto bad; }
            nm->pat = lp_strdup("");
        }
        nm->content = lp_strdup(jstr(j, "content", ""));
        if (!nm->pat || !nm->content) { lp_seterr("out of memory"); goto bad; }
    } else if (strcmp(type, "Prepend") == 0) {
        nm->kind = TN_PREPEND;
        nm->content = lp_strdup(jstr(j, "prepend", ""));
        if (!nm->content) { lp_seterr("out of memory"); goto bad; }
    } else if (strcmp(type, "BertNormalizer") == 0) {
        nm->kind = TN_BERT;
        nm->clean_text = jbool(j, "clean_text", 1);
        nm->chinese = jbool(j, "handle_chinese_chars", 1);
        nm->lowercase = jbool(j, "lowercase", 1);
        nm->strip_accents = jbool(j, "strip_accents", nm->lowercase);   /* null: follow lowercase */
    } else if (strcmp(type, "Precompiled") == 0) {
        FAIL(c, "normalizer type `Precompiled` (a SentencePiece character map) is not supported yet");
        goto bad;
    } else {
        FAIL(c, "normalizer type `%s` is not supported", type);
        goto bad;
    }
    return nm;
bad:
    tok_norm_free(nm);
    return NULL;
}

/* ---- pre-tokenizers ---- */

static int behavior(const char *b) {
    static const char *names[] = {"Removed", "Isolated", "MergedWithPrevious", "MergedWithNext",
                                  "Contiguous"};
    for (int k = 0; k < 5; k++) if (b && strcmp(b, names[k]) == 0) return k;
    return -1;
}

static const char GPT2_RE[] =
    "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+";

static int metaspace_opts(ctx *c, json_t *j, char repl[8], int *prepend) {
    const char *r = jstr(j, "replacement", "\xe2\x96\x81");
    int32_t cp;
    if (!*r || strlen(r) >= 8 || tok_utf8_check(r, strlen(r)) >= 0 ||
        tok_utf8_next(r, strlen(r), 0, &cp) != (int)strlen(r))
        return FAIL(c, "Metaspace `replacement` must be one character");
    strcpy(repl, r);
    const char *ps = jstr(j, "prepend_scheme", NULL);
    if (ps) {
        if (strcmp(ps, "always") == 0) *prepend = TM_ALWAYS;
        else if (strcmp(ps, "first") == 0) *prepend = TM_FIRST;
        else if (strcmp(ps, "never") == 0) *prepend = TM_NEVER;
        else return FAIL(c, "Metaspace prepend_scheme `%s` is not always/first/never", ps);
    } else *prepend = jbool(j, "add_prefix_space", 1) ? TM_ALWAYS : TM_NEVER;   /* older files */
    return 0;
}

static tok_pre *pre_parse(ctx *c, json_t *j) {
    const char *type = jstr(j, "type", NULL);
    if (!type) { FAIL(c, "pre-tokenizer without a `type`"); return NULL; }
    tok_pre *p = lp_calloc(1, sizeof *p);
    if (!p) { lp_seterr("out of memory"); return NULL; }
    if (strcmp(type, "Sequence") == 0) {
        json_t *a = json_object_get(j, "pretokenizers");
        p->kind = TP_SEQ;
        if (!json_is_array(a)) { FAIL(c, "Sequence pre-tokenizer without a `pretokenizers` list"); goto bad; }
        p->sub = lp_calloc(json_array_size(a) + 1, sizeof *p->sub);
        if (!p->sub) { lp_seterr("out of memory"); goto bad; }
        for (size_t k = 0; k < json_array_size(a); k++) {
            char saved[256];
            at(c, "%s[%zu]", ".pretokenizers", k, saved);
            p->sub[k] = pre_parse(c, json_array_get(a, k));
            strcpy(c->where, saved);
            if (!p->sub[k]) goto bad;
            p->nsub++;
        }
    } else if (strcmp(type, "ByteLevel") == 0) {
        p->kind = TP_BYTELEVEL;
        p->add_prefix_space = jbool(j, "add_prefix_space", 1);
        p->use_regex = jbool(j, "use_regex", 1);
        if (p->use_regex && !(p->re = tok_regex(GPT2_RE, sizeof GPT2_RE - 1, 0))) goto bad;
    } else if (strcmp(type, "Split") == 0) {
        p->kind = TP_SPLIT;
        p->behavior = behavior(jstr(j, "behavior", NULL));
        p->invert = jbool(j, "invert", 0);
        if (p->behavior < 0) { FAIL(c, "Split `behavior` `%s` is not known", jstr(j, "behavior", "")); goto bad; }
        if (!(p->re = pattern(c, j, NULL))) { FAIL(c, "Split: %s", lp_geterr()); goto bad; }
    } else if (strcmp(type, "Metaspace") == 0) {
        p->kind = TP_METASPACE;
        p->split = jbool(j, "split", 1);
        if (metaspace_opts(c, j, p->repl, &p->prepend) < 0) goto bad;
    } else if (strcmp(type, "Whitespace") == 0) p->kind = TP_WHITESPACE;
    else if (strcmp(type, "WhitespaceSplit") == 0) p->kind = TP_WSSPLIT;
    else if (strcmp(type, "BertPreTokenizer") == 0) p->kind = TP_BERT;
    else if (strcmp(type, "Punctuation") == 0) {
        p->kind = TP_PUNCT;
        p->behavior = behavior(jstr(j, "behavior", "Isolated"));
        if (p->behavior < 0) { FAIL(c, "Punctuation `behavior` is not known"); goto bad; }
    } else if (strcmp(type, "Digits") == 0) {
        p->kind = TP_DIGITS;
        p->individual = jbool(j, "individual_digits", 0);
    } else if (strcmp(type, "CharDelimiterSplit") == 0) {
        const char *d = jstr(j, "delimiter", "");
        p->kind = TP_CHARSPLIT;
        if (!*d || tok_utf8_check(d, strlen(d)) >= 0) { FAIL(c, "CharDelimiterSplit needs a `delimiter`"); goto bad; }
        tok_utf8_next(d, strlen(d), 0, &p->delim);
    } else {
        FAIL(c, "pre-tokenizer type `%s` is not supported", type);
        goto bad;
    }
    return p;
bad:
    tok_pre_free(p);
    return NULL;
}

/* ---- decoders ---- */

static tok_dec *dec_parse(ctx *c, json_t *j) {
    const char *type = jstr(j, "type", NULL);
    if (!type) { FAIL(c, "decoder without a `type`"); return NULL; }
    tok_dec *d = lp_calloc(1, sizeof *d);
    if (!d) { lp_seterr("out of memory"); return NULL; }
    const char *a = NULL, *b = NULL;
    if (strcmp(type, "Sequence") == 0) {
        json_t *arr = json_object_get(j, "decoders");
        d->kind = TD_SEQ;
        if (!json_is_array(arr)) { FAIL(c, "Sequence decoder without a `decoders` list"); goto bad; }
        d->sub = lp_calloc(json_array_size(arr) + 1, sizeof *d->sub);
        if (!d->sub) { lp_seterr("out of memory"); goto bad; }
        for (size_t k = 0; k < json_array_size(arr); k++) {
            char saved[256];
            at(c, "%s[%zu]", ".decoders", k, saved);
            d->sub[k] = dec_parse(c, json_array_get(arr, k));
            strcpy(c->where, saved);
            if (!d->sub[k]) goto bad;
            d->nsub++;
        }
    } else if (strcmp(type, "ByteLevel") == 0) d->kind = TD_BYTELEVEL;
    else if (strcmp(type, "ByteFallback") == 0) d->kind = TD_BYTEFALLBACK;
    else if (strcmp(type, "Fuse") == 0) d->kind = TD_FUSE;
    else if (strcmp(type, "Metaspace") == 0) {
        char repl[8]; int prepend;
        d->kind = TD_METASPACE;
        if (metaspace_opts(c, j, repl, &prepend) < 0) goto bad;
        a = repl; d->prepend = prepend != TM_NEVER;
        d->a = lp_strdup(a);
    } else if (strcmp(type, "WordPiece") == 0) {
        d->kind = TD_WORDPIECE;
        d->a = lp_strdup(jstr(j, "prefix", "##"));
        d->cleanup = jbool(j, "cleanup", 1);
    } else if (strcmp(type, "BPEDecoder") == 0) {
        d->kind = TD_BPE;
        d->a = lp_strdup(jstr(j, "suffix", "</w>"));
    } else if (strcmp(type, "Replace") == 0) {
        json_t *p = json_object_get(j, "pattern");
        d->kind = TD_REPLACE;
        a = jstr(p, "String", NULL);
        if (!a) { FAIL(c, "Replace decoder: only {\"String\": …} patterns are supported"); goto bad; }
        b = jstr(j, "content", "");
        d->a = lp_strdup(a); d->b = lp_strdup(b);
    } else if (strcmp(type, "Strip") == 0) {
        d->kind = TD_STRIP;
        d->a = lp_strdup(jstr(j, "content", " "));
        d->start = (int)jint(j, "start", 0); d->stop = (int)jint(j, "stop", 0);
    } else {
        FAIL(c, "decoder type `%s` is not supported", type);
        goto bad;
    }
    if ((d->kind == TD_METASPACE || d->kind == TD_WORDPIECE || d->kind == TD_BPE ||
         d->kind == TD_REPLACE || d->kind == TD_STRIP) && (!d->a || (d->kind == TD_REPLACE && !d->b))) {
        lp_seterr("out of memory"); goto bad;
    }
    return d;
bad:
    tok_dec_free(d);
    return NULL;
}

/* ---- post-processors: all become templates ---- */

static void post_free(tok_post *p) {
    if (!p) return;
    for (size_t k = 0; k < p->nsingle; k++) lp_free(p->single[k].ids);
    for (size_t k = 0; k < p->npair; k++) lp_free(p->pair[k].ids);
    lp_free(p->single); lp_free(p->pair); lp_free(p);
}

static int tpl_add(tok_tpl_piece **v, size_t *n, int seq, int type_id, const int32_t *ids, size_t nids) {
    tok_tpl_piece *nv = lp_realloc(*v, (*n + 1) * sizeof **v);
    if (!nv) return lp_seterr("out of memory");
    *v = nv;
    tok_tpl_piece *p = &nv[(*n)++];
    p->seq = seq; p->type_id = type_id; p->ids = NULL; p->nids = nids;
    if (nids) {
        if (!(p->ids = lp_malloc(nids * sizeof *ids))) { p->nids = 0; return lp_seterr("out of memory"); }
        memcpy(p->ids, ids, nids * sizeof *ids);
    }
    return 0;
}

static int template_list(ctx *c, json_t *list, json_t *specials, tok_tpl_piece **v, size_t *n) {
    if (!json_is_array(list)) return FAIL(c, "TemplateProcessing: `single` and `pair` must be lists");
    for (size_t k = 0; k < json_array_size(list); k++) {
        json_t *e = json_array_get(list, k);
        json_t *sp = json_object_get(e, "SpecialToken"), *sq = json_object_get(e, "Sequence");
        if (sq) {
            const char *id = jstr(sq, "id", "A");
            if (tpl_add(v, n, strcmp(id, "B") == 0, (int)jint(sq, "type_id", 0), NULL, 0) < 0) return -1;
        } else if (sp) {
            const char *id = jstr(sp, "id", "");
            json_t *def = json_object_get(specials, id), *ids = json_object_get(def, "ids");
            if (!json_is_array(ids)) return FAIL(c, "TemplateProcessing: special token `%s` has no ids", id);
            int32_t buf[16]; size_t ni = json_array_size(ids);
            if (ni > 16) return FAIL(c, "TemplateProcessing: special token `%s` has too many ids", id);
            for (size_t q = 0; q < ni; q++) {
                json_int_t x = json_integer_value(json_array_get(ids, q));
                if (x < 0 || x > INT32_MAX) return FAIL(c, "TemplateProcessing: bad id for `%s`", id);
                buf[q] = (int32_t)x;
            }
            if (tpl_add(v, n, -1, (int)jint(sp, "type_id", 0), buf, ni) < 0) return -1;
        } else return FAIL(c, "TemplateProcessing: entry %zu is neither SpecialToken nor Sequence", k);
    }
    return 0;
}

/* ["[SEP]", 102] → id */
static int tok_pair_id(ctx *c, json_t *j, const char *key, int32_t *id) {
    json_t *v = json_object_get(j, key), *x = json_array_get(v, 1);
    if (!json_is_integer(x) || json_integer_value(x) < 0 || json_integer_value(x) > INT32_MAX)
        return FAIL(c, "`%s` must be [token, id]", key);
    *id = (int32_t)json_integer_value(x);
    return 0;
}

static int post_parse(ctx *c, json_t *j, tok_post **out) {
    const char *type = jstr(j, "type", NULL);
    if (!type) return FAIL(c, "post-processor without a `type`");
    if (strcmp(type, "ByteLevel") == 0) return 0;    /* offsets only */
    if (strcmp(type, "Sequence") == 0) {
        json_t *a = json_object_get(j, "processors");
        if (!json_is_array(a)) return FAIL(c, "Sequence post-processor without `processors`");
        for (size_t k = 0; k < json_array_size(a); k++) {
            char saved[256];
            at(c, "%s[%zu]", ".processors", k, saved);
            tok_post *before = *out;
            int rc = post_parse(c, json_array_get(a, k), out);
            if (rc == 0 && before && *out != before) {
                rc = FAIL(c, "a Sequence with more than one template post-processor is not supported");
            }
            strcpy(c->where, saved);
            if (rc < 0) return -1;
        }
        return 0;
    }
    tok_post *p = lp_calloc(1, sizeof *p);
    if (!p) return lp_seterr("out of memory");
    int rc = 0;
    if (strcmp(type, "TemplateProcessing") == 0) {
        json_t *sp = json_object_get(j, "special_tokens");
        rc = template_list(c, json_object_get(j, "single"), sp, &p->single, &p->nsingle);
        if (rc == 0) rc = template_list(c, json_object_get(j, "pair"), sp, &p->pair, &p->npair);
    } else if (strcmp(type, "BertProcessing") == 0 || strcmp(type, "RobertaProcessing") == 0) {
        int roberta = type[0] == 'R';
        int32_t cls = 0, sep = 0;   /* set by tok_pair_id (gcc cannot tell) */
        rc = tok_pair_id(c, j, "cls", &cls);
        if (rc == 0) rc = tok_pair_id(c, j, "sep", &sep);
        /* [CLS] A [SEP] (B [SEP]); Roberta: <s> A </s> (</s> B </s>), every type id 0 */
        int tb = roberta ? 0 : 1;
        if (rc == 0) rc = tpl_add(&p->single, &p->nsingle, -1, 0, &cls, 1);
        if (rc == 0) rc = tpl_add(&p->single, &p->nsingle, 0, 0, NULL, 0);
        if (rc == 0) rc = tpl_add(&p->single, &p->nsingle, -1, 0, &sep, 1);
        if (rc == 0) rc = tpl_add(&p->pair, &p->npair, -1, 0, &cls, 1);
        if (rc == 0) rc = tpl_add(&p->pair, &p->npair, 0, 0, NULL, 0);
        if (rc == 0) rc = tpl_add(&p->pair, &p->npair, -1, 0, &sep, 1);
        if (rc == 0 && roberta) rc = tpl_add(&p->pair, &p->npair, -1, 0, &sep, 1);
        if (rc == 0) rc = tpl_add(&p->pair, &p->npair, 1, tb, NULL, 0);
        if (rc == 0) rc = tpl_add(&p->pair, &p->npair, -1, tb, &sep, 1);
    } else rc = FAIL(c, "post-processor type `%s` is not supported", type);
    if (rc < 0) { post_free(p); return -1; }
    post_free(*out);
    *out = p;
    return 0;
}

/* ---- the model ---- */

/* Keeps a string alive for the tokenizer's lifetime: strings are owned by a list freed in
 * tok_free, so id_tok and the maps can point anywhere without tracking who owns what. */
struct strpool { struct strpool *next; char s[]; };
typedef struct strpool strpool;

static char *keep(tok_tokenizer *t, strpool **pool, const char *s, size_t n) {
    strpool *p = lp_malloc(sizeof *p + n + 1);
    if (!p) { lp_seterr("out of memory"); return NULL; }
    memcpy(p->s, s, n); p->s[n] = 0;
    p->next = *pool; *pool = p;
    return p->s;
}

static int set_id(tok_tokenizer *t, int32_t id, char *s) {
    if ((size_t)id >= t->nid) {
        size_t n = (size_t)id + 1;
        char **v = lp_realloc(t->id_tok, n * sizeof *v);
        uint8_t *sp = lp_realloc(t->is_special, n);
        if (v) t->id_tok = v;
        if (sp) t->is_special = sp;
        if (!v || !sp) return lp_seterr("out of memory");
        memset(t->id_tok + t->nid, 0, (n - t->nid) * sizeof *v);
        memset(t->is_special + t->nid, 0, n - t->nid);
        t->nid = n;
    }
    t->id_tok[id] = s;
    return 0;
}

/* The library reads numbers with serde_json's default parser: significand as an integer,
 * then one multiply or divide by a power of ten in doubles. That is an ulp away from strtod
 * now and then, and Unigram scores break ties between equally likely segmentations, so
 * the scores are re-read that way: recover the shortest decimal digits of the value (what
 * the writer, also shortest-repr, put in the file) and redo serde_json's arithmetic. */
static double serde_f64(double d) {
    if (d == 0 || d != d || d - d != 0) return d;
    char buf[48];
    int prec;
    for (prec = 1; prec < 17; prec++) {
        snprintf(buf, sizeof buf, "%.*e", prec - 1, d);
        if (strtod(buf, NULL) == d) break;
    }
    snprintf(buf, sizeof buf, "%.*e", prec - 1, d);
    const char *p = buf;
    int neg = *p == '-';
    if (neg) p++;
    uint64_t sig = 0;
    int ndig = 0;
    for (; *p && *p != 'e'; p++) if (*p >= '0' && *p <= '9') { sig = sig * 10 + (uint64_t)(*p - '0'); ndig++; }
    int exp = (*p == 'e' ? atoi(p + 1) : 0) - (ndig - 1);
    double f = (double)sig;
    for (;;) {
        int a = exp < 0 ? -exp : exp;
        if (a <= 308) {
            char pw[16];
            snprintf(pw, sizeof pw, "1e%d", a);
            double p10 = strtod(pw, NULL);   /* correctly rounded, like Rust's literal table */
            f = exp >= 0 ? f * p10 : f / p10;
            break;
        }
        if (exp >= 0) return d;   /* overflow: keep what we have */
        f /= 1e308;
        exp += 308;
    }
    return neg ? -f : f;
}

/* "vocab": [["piece", log-prob], ...] (the id is the position), "unk_id", "byte_fallback" */
static int unigram_parse(ctx *c, tok_tokenizer *t, strpool **pool, json_t *m) {
    json_t *vocab = json_object_get(m, "vocab"), *unk = json_object_get(m, "unk_id");
    size_t n = json_array_size(vocab);
    t->model = TOK_UNIGRAM;
    if (!json_is_array(vocab) || n == 0) return FAIL(c, "Unigram `vocab` must be a non-empty list");
    if (n >= TOK_MAX_ID) return FAIL(c, "Unigram `vocab` has too many entries");
    if (!(t->scores = lp_malloc(n * sizeof *t->scores))) return lp_seterr("out of memory");
    t->min_score = 1e300;
    for (size_t k = 0; k < n; k++) {
        json_t *e = json_array_get(vocab, k), *p = json_array_get(e, 0), *sc = json_array_get(e, 1);
        if (!json_is_string(p) || !json_is_number(sc))
            return FAIL(c, "Unigram vocab entry %zu must be [piece, score]", k);
        size_t pl = json_string_length(p);
        char *s = keep(t, pool, json_string_value(p), pl);
        if (!s || set_id(t, (int32_t)k, s) < 0 || tok_strmap_put(&t->vocab, s, pl, (int32_t)k) < 0)
            return lp_seterr("out of memory");
        t->scores[k] = json_is_integer(sc) ? (double)json_integer_value(sc) : serde_f64(json_number_value(sc));
        if (t->scores[k] < t->min_score) t->min_score = t->scores[k];
        if (pl > t->max_piece) t->max_piece = pl;
    }
    if (json_is_integer(unk)) {
        if (json_integer_value(unk) < 0 || (size_t)json_integer_value(unk) >= n)
            return FAIL(c, "Unigram `unk_id` %lld is not in the vocabulary", (long long)json_integer_value(unk));
        t->unk_id = (int32_t)json_integer_value(unk);
        t->unk = t->id_tok[t->unk_id];
    }
    t->byte_fallback = jbool(m, "byte_fallback", 0);
    for (int b = 0; b < 256; b++) {
        char code[8];
        snprintf(code, sizeof code, "<0x%02X>", b);
        t->byte_ids[b] = tok_strmap_get(&t->vocab, code, 6);
    }
    return 0;
}

static int model_parse(ctx *c, tok_tokenizer *t, strpool **pool, json_t *m) {
    const char *type = jstr(m, "type", NULL);
    json_t *vocab = json_object_get(m, "vocab");
    if (!type) {   /* very old files: tell the model by its fields, as the library does */
        type = json_object_get(m, "merges") ? "BPE"
             : json_is_array(vocab) ? "Unigram"
             : json_object_get(m, "max_input_chars_per_word") ? "WordPiece" : "WordLevel";
    }
    if (strcmp(type, "Unigram") == 0) return unigram_parse(c, t, pool, m);
    if (strcmp(type, "WordLevel") == 0) return FAIL(c, "WordLevel tokenizers are not supported yet");
    if (strcmp(type, "BPE") == 0) t->model = TOK_BPE;
    else if (strcmp(type, "WordPiece") == 0) t->model = TOK_WORDPIECE;
    else return FAIL(c, "model type `%s` is not supported", type);
    if (!json_is_object(vocab)) return FAIL(c, "`vocab` must be an object {piece: id}");
    const char *k; json_t *v;
    json_object_foreach(vocab, k, v) {
        json_int_t id = json_integer_value(v);
        if (!json_is_integer(v) || id < 0 || id >= TOK_MAX_ID)
            return FAIL(c, "vocab entry `%s`: id must be an integer in [0, %d)", k, TOK_MAX_ID);
        size_t kl = strlen(k);
        char *s = keep(t, pool, k, kl);
        if (!s || set_id(t, (int32_t)id, s) < 0 || tok_strmap_put(&t->vocab, s, kl, (int32_t)id) < 0)
            return lp_seterr("out of memory");
    }
    const char *unk = jstr(m, "unk_token", NULL);
    if (unk && !(t->unk = keep(t, pool, unk, strlen(unk)))) return -1;
    t->unk_id = unk ? tok_strmap_get(&t->vocab, unk, strlen(unk)) : -1;
    const char *prefix = jstr(m, "continuing_subword_prefix", t->model == TOK_WORDPIECE ? "##" : NULL);
    const char *suffix = jstr(m, "end_of_word_suffix", NULL);
    if (prefix && *prefix && !(t->prefix = keep(t, pool, prefix, strlen(prefix)))) return -1;
    if (suffix && *suffix && !(t->suffix = keep(t, pool, suffix, strlen(suffix)))) return -1;
    if (t->model == TOK_WORDPIECE) {
        t->max_chars = (size_t)jint(m, "max_input_chars_per_word", 100);
        if (!t->prefix && !(t->prefix = keep(t, pool, "", 0))) return -1;
        return 0;
    }
    t->byte_fallback = jbool(m, "byte_fallback", 0);
    t->fuse_unk = jbool(m, "fuse_unk", 0);
    t->ignore_merges = jbool(m, "ignore_merges", 0);
    for (int b = 0; b < 256; b++) {
        char code[8];
        snprintf(code, sizeof code, "<0x%02X>", b);
        t->byte_ids[b] = tok_strmap_get(&t->vocab, code, 6);
    }
    json_t *merges = json_object_get(m, "merges");
    if (!merges) merges = json_array();   /* a BPE with no merges is a character model */
    else json_incref(merges);
    if (!json_is_array(merges)) { json_decref(merges); return FAIL(c, "`merges` must be a list"); }
    size_t plen = t->prefix ? strlen(t->prefix) : 0;
    sbuf joined; sb_init(&joined);
    int rc = 0;
    for (size_t r = 0; r < json_array_size(merges) && rc == 0; r++) {
        json_t *e = json_array_get(merges, r);
        const char *a, *b; size_t al, bl;
        if (json_is_string(e)) {
            a = json_string_value(e);
            const char *sp = strchr(a, ' ');
            if (!sp || strchr(sp + 1, ' ')) { rc = FAIL(c, "merge %zu `%s` is not \"a b\"", r, a); break; }
            al = (size_t)(sp - a); b = sp + 1; bl = strlen(b);
        } else if (json_is_array(e) && json_array_size(e) == 2 &&
                   json_is_string(json_array_get(e, 0)) && json_is_string(json_array_get(e, 1))) {
            a = json_string_value(json_array_get(e, 0)); al = json_string_length(json_array_get(e, 0));
            b = json_string_value(json_array_get(e, 1)); bl = json_string_length(json_array_get(e, 1));
        } else { rc = FAIL(c, "merge %zu must be \"a b\" or [\"a\", \"b\"]", r); break; }
        int32_t ia = tok_strmap_get(&t->vocab, a, al), ib = tok_strmap_get(&t->vocab, b, bl);
        if (ia < 0 || ib < 0) {
            rc = FAIL(c, "merge %zu: `%.*s` is not in the vocabulary", r, ia < 0 ? (int)al : (int)bl,
                      ia < 0 ? a : b);
            break;
        }
        /* the merged piece drops the right side's continuing_subword_prefix */
        size_t skip = plen && bl >= plen ? plen : 0;
        joined.len = 0;
        sb_putn(&joined, a, al); sb_putn(&joined, b + skip, bl - skip);
        if (joined.oom) { rc = lp_seterr("out of memory"); break; }
        int32_t im = tok_strmap_get(&t->vocab, joined.s, joined.len);
        if (im < 0) { rc = FAIL(c, "merge %zu: `%s` is not in the vocabulary", r, joined.s); break; }
        if (tok_pairmap_put(&t->merges, ia, ib, (int32_t)r, im) < 0) rc = lp_seterr("out of memory");
    }
    sb_free(&joined);
    json_decref(merges);
    return rc;
}

/* ---- added tokens ---- */

static int added_parse(ctx *c, tok_tokenizer *t, strpool **pool, json_t *a) {
    if (!a || json_is_null(a)) return 0;
    if (!json_is_array(a)) return FAIL(c, "`added_tokens` must be a list");
    t->added = lp_calloc(json_array_size(a) + 1, sizeof *t->added);
    if (!t->added) return lp_seterr("out of memory");
    for (size_t k = 0; k < json_array_size(a); k++) {
        json_t *e = json_array_get(a, k), *jid = json_object_get(e, "id");
        json_t *jc = json_object_get(e, "content");
        if (!json_is_integer(jid) || !json_is_string(jc) || json_integer_value(jid) < 0 ||
            json_integer_value(jid) >= TOK_MAX_ID)
            return FAIL(c, "added_tokens[%zu] needs an integer `id` and a string `content`", k);
        tok_added *x = &t->added[t->nadded];
        x->len = json_string_length(jc);
        if (!x->len) continue;
        if (!(x->content = keep(t, pool, json_string_value(jc), x->len))) return -1;
        x->id = (int32_t)json_integer_value(jid);
        x->special = jbool(e, "special", 0);
        x->normalized = jbool(e, "normalized", !x->special);
        x->lstrip = jbool(e, "lstrip", 0);
        x->rstrip = jbool(e, "rstrip", 0);
        x->single_word = jbool(e, "single_word", 0);
        if (set_id(t, x->id, x->content) < 0) return -1;   /* the library's id_to_token prefers it */
        t->is_special[x->id] = (uint8_t)x->special;
        if (tok_strmap_put(&t->added_map, x->content, x->len, x->id) < 0) return lp_seterr("out of memory");
        t->nadded++;
    }
    return 0;
}

/* Normalised forms of normalized added tokens: they are matched after normalisation. */
static int added_normalize(tok_tokenizer *t, strpool **pool) {
    for (size_t k = 0; k < t->nadded; k++) {
        tok_added *x = &t->added[k];
        x->norm = x->content; x->normlen = x->len;
        if (!x->normalized || !t->norm) continue;
        sbuf b; sb_init(&b);
        int rc = tok_norm_apply(t->norm, x->content, x->len, &b);
        if (rc == 0) x->norm = keep(t, pool, sb_str(&b), b.len);
        x->normlen = b.len;
        sb_free(&b);
        if (rc < 0 || !x->norm) return -1;
    }
    return 0;
}

static int added_index(tok_tokenizer *t) {
    for (int c = 0; c < 2; c++) {
        size_t *st = t->astart[c];
        memset(st, 0, sizeof t->astart[c]);
        for (size_t k = 0; k < t->nadded; k++) {
            const tok_added *x = &t->added[k];
            if (x->normalized == c && (c ? x->normlen : x->len)) st[(uint8_t)(c ? x->norm : x->content)[0] + 1]++;
        }
        for (int b = 0; b < 256; b++) st[b + 1] += st[b];
        if (!(t->abucket[c] = lp_malloc((st[256] + 1) * sizeof *t->abucket[c]))) return lp_seterr("out of memory");
        size_t fill[256];
        memcpy(fill, st, sizeof fill);
        for (size_t k = 0; k < t->nadded; k++) {
            const tok_added *x = &t->added[k];
            if (x->normalized == c && (c ? x->normlen : x->len))
                t->abucket[c][fill[(uint8_t)(c ? x->norm : x->content)[0]]++] = (uint32_t)k;
        }
    }
    return 0;
}

/* ---- special ids ---- */

static int32_t lookup(tok_tokenizer *t, const char *s) {
    int32_t id = tok_strmap_get(&t->added_map, s, strlen(s));
    return id >= 0 ? id : tok_strmap_get(&t->vocab, s, strlen(s));
}

static void guess_specials(tok_tokenizer *t, json_t *root) {
    static const char *bos[] = {"<s>", "<|begin_of_text|>", "<bos>", "<|startoftext|>", NULL};
    static const char *eos[] = {"</s>", "<|end_of_text|>", "<|endoftext|>", "<eos>", NULL};
    static const char *pad[] = {"<pad>", "[PAD]", "<|pad|>", "<|finetune_right_pad_id|>", NULL};
    static const char *cls[] = {"[CLS]", "<s>", NULL};
    static const char *sep[] = {"[SEP]", "</s>", NULL};
    static const char *mask[] = {"[MASK]", "<mask>", NULL};
    const char **lists[] = {bos, eos, pad, cls, sep, mask};
    int32_t *dst[] = {&t->sp.bos, &t->sp.eos, &t->sp.pad, &t->sp.cls, &t->sp.sep, &t->sp.mask};
    for (int k = 0; k < 6; k++)
        for (const char **n = lists[k]; *n && *dst[k] < 0; n++) *dst[k] = lookup(t, *n);
    t->sp.unk = t->unk_id;
    json_t *pid = json_object_get(json_object_get(root, "padding"), "pad_id");
    if (json_is_integer(pid) && json_integer_value(pid) >= 0 && (size_t)json_integer_value(pid) < t->nid)
        t->sp.pad = (int32_t)json_integer_value(pid);
}

/* tokenizer_config.json / special_tokens_map.json beside the file name the roles exactly. */
static void sidecar_specials(tok_tokenizer *t, const char *dir) {
    static const char *files[] = {"special_tokens_map.json", "tokenizer_config.json"};
    static const char *keys[] = {"bos_token", "eos_token", "pad_token", "unk_token", "cls_token",
                                 "sep_token", "mask_token"};
    int32_t *dst[] = {&t->sp.bos, &t->sp.eos, &t->sp.pad, &t->sp.unk, &t->sp.cls, &t->sp.sep, &t->sp.mask};
    for (int f = 0; f < 2; f++) {
        sbuf p; sb_init(&p);
        sb_printf(&p, "%s/%s", dir, files[f]);
        json_t *j = p.oom ? NULL : json_load_file(p.s, 0, NULL);
        sb_free(&p);
        if (!j) continue;
        for (int k = 0; k < 7; k++) {
            json_t *v = json_object_get(j, keys[k]);
            const char *s = json_is_string(v) ? json_string_value(v) : jstr(v, "content", NULL);
            int32_t id = s ? lookup(t, s) : -1;
            if (id >= 0) *dst[k] = id;
        }
        json_decref(j);
    }
}

/* ---- entry points ---- */

tok_tokenizer *tok_load_json(const char *text, size_t len, const char *name) {
    ctx c = { name ? name : "tokenizer.json", "" };
    json_error_t je;
    /* duplicate keys: the last one wins, as with the library's serde_json maps */
    json_t *root = json_loadb(text, len, JSON_ALLOW_NUL, &je);
    if (!root) {
        lp_seterr("%s: invalid JSON at line %d, column %d: %s", c.file, je.line, je.column, je.text);
        return NULL;
    }
    tok_tokenizer *t = lp_calloc(1, sizeof *t);
    strpool *pool = NULL;
    if (!t) { json_decref(root); lp_seterr("out of memory"); return NULL; }
    t->unk_id = -1;
    t->sp = (tok_special){ -1, -1, -1, -1, -1, -1, -1 };
    sb_init(&t->arena);
    int rc = 0;
    if (!json_is_object(root)) rc = FAIL(&c, "the top level must be a JSON object");
    json_t *m = json_object_get(root, "model");
    if (rc == 0 && !json_is_object(m)) rc = FAIL(&c, "no `model` object");
    if (rc == 0) { strcpy(c.where, "model"); rc = model_parse(&c, t, &pool, m); }
    if (rc == 0) { strcpy(c.where, "added_tokens"); rc = added_parse(&c, t, &pool, json_object_get(root, "added_tokens")); }
    json_t *j;
    if (rc == 0 && json_is_object(j = json_object_get(root, "normalizer"))) {
        strcpy(c.where, "normalizer");
        if (!(t->norm = norm_parse(&c, j))) rc = -1;
    }
    if (rc == 0 && json_is_object(j = json_object_get(root, "pre_tokenizer"))) {
        strcpy(c.where, "pre_tokenizer");
        if (!(t->pre = pre_parse(&c, j))) rc = -1;
    }
    if (rc == 0 && json_is_object(j = json_object_get(root, "post_processor"))) {
        strcpy(c.where, "post_processor");
        rc = post_parse(&c, j, &t->post);
    }
    if (rc == 0 && json_is_object(j = json_object_get(root, "decoder"))) {
        strcpy(c.where, "decoder");
        if (!(t->dec = dec_parse(&c, j))) rc = -1;
    }
    if (rc == 0) rc = added_normalize(t, &pool);
    if (rc == 0) rc = added_index(t);
    if (rc == 0 && t->post) {   /* template ids must exist, or decoding them would fail later */
        for (int pass = 0; pass < 2 && rc == 0; pass++) {
            tok_tpl_piece *v = pass ? t->post->pair : t->post->single;
            size_t n = pass ? t->post->npair : t->post->nsingle;
            for (size_t k = 0; k < n && rc == 0; k++)
                for (size_t q = 0; q < v[k].nids && rc == 0; q++)
                    if ((size_t)v[k].ids[q] >= t->nid || !t->id_tok[v[k].ids[q]])
                        rc = lp_seterr("%s: post_processor: special token id %d is not in the vocabulary",
                                       c.file, v[k].ids[q]);
        }
    }
    if (rc == 0 && !(t->md = pcre2_match_data_create(1, NULL))) rc = lp_seterr("out of memory");
    if (rc == 0 && !(t->name = keep(t, &pool, c.file, strlen(c.file)))) rc = -1;
    t->pool = pool;
    if (rc == 0) guess_specials(t, root);
    json_decref(root);
    if (rc < 0) { tok_free(t); return NULL; }
    return t;
}

static char *read_file(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    if (!f) { lp_seterr("%s: %s", path, strerror(errno)); return NULL; }
    sbuf b; sb_init(&b);
    char chunk[65536];
    size_t n;
    while ((n = fread(chunk, 1, sizeof chunk, f)) > 0) sb_putn(&b, chunk, n);
    int err = ferror(f);
    fclose(f);
    if (err) { sb_free(&b); lp_seterr("%s: read error", path); return NULL; }
    if (b.oom) { sb_free(&b); lp_seterr("%s: out of memory", path); return NULL; }
    *len = b.len;
    return b.s ? sb_take(&b) : lp_strdup("");
}

tok_tokenizer *tok_load(const char *path) {
    struct stat st;
    if (stat(path, &st) != 0) { lp_seterr("%s: %s", path, strerror(errno)); return NULL; }
    sbuf file, dir; sb_init(&file); sb_init(&dir);
    if (S_ISDIR(st.st_mode)) {
        sb_printf(&file, "%s/tokenizer.json", path);
        sb_puts(&dir, path);
        if (!file.oom && stat(file.s, &st) != 0) {
            lp_seterr("%s: no tokenizer.json in this directory", path);
            sb_free(&file); sb_free(&dir);
            return NULL;
        }
    } else {
        sb_puts(&file, path);
        const char *slash = strrchr(path, '/');
        if (slash) sb_putn(&dir, path, (size_t)(slash - path)); else sb_puts(&dir, ".");
    }
    tok_tokenizer *t = NULL;
    size_t len = 0;
    char *text = file.oom || dir.oom ? NULL : read_file(file.s, &len);
    if (text) {
        t = tok_load_json(text, len, file.s);
        if (t) sidecar_specials(t, dir.s);
    } else if (file.oom || dir.oom) lp_seterr("out of memory");
    lp_free(text); sb_free(&file); sb_free(&dir);
    return t;
}

void tok_free(tok_tokenizer *t) {
    if (!t) return;
    tok_strmap_free(&t->vocab); tok_strmap_free(&t->added_map); tok_strmap_free(&t->cache);
    tok_pairmap_free(&t->merges);
    lp_free(t->id_tok); lp_free(t->is_special); lp_free(t->added); lp_free(t->scores);
    lp_free(t->abucket[0]); lp_free(t->abucket[1]);
    tok_norm_free(t->norm); tok_pre_free(t->pre); tok_dec_free(t->dec); post_free(t->post);
    sb_free(&t->arena);
    lp_free(t->segs.v); lp_free(t->segs2.v);
    tok_ids_free(&t->ta); tok_ids_free(&t->tb);
    if (t->md) pcre2_match_data_free(t->md);
    lp_free(t->ck); lp_free(t->ci); lp_free(t->ce);
    for (strpool *p = t->pool, *nx; p; p = nx) { nx = p->next; lp_free(p); }
    lp_free(t);
}
