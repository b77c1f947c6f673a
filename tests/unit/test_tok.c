/* test_tok.c — the tokenizer's parts on hand-made tokenizer.json files: byte-level table,
 * BPE merge order, WordPiece greedy match, normalizers, pre-tokenizer behaviours, added
 * tokens, templates, decoders, special ids, and the errors a bad file or call produces.
 * (Parity with the `tokenizers` library on real and trained files: test_tok_parity.c.) */
#include <stdlib.h>
#include <unistd.h>
#include "model/tok_int.h"
#include "t.h"
#include "util/err.h"
#include "util/mem.h"

static tok_tokenizer *mk(const char *json) {
    tok_tokenizer *t = tok_load_json(json, strlen(json), "test.json");
    T_CHECK(t != NULL, "load: %s", lp_geterr());
    return t;
}

/* encode text; return the ids as "1 2 3" (static buffer) */
static const char *enc(tok_tokenizer *t, const char *text, int special) {
    static char buf[1024];
    tok_ids o; tok_ids_init(&o);
    buf[0] = 0;
    if (!t) return "(no tokenizer)";
    if (tok_encode(t, text, strlen(text), special, &o) < 0) { snprintf(buf, sizeof buf, "error: %s", lp_geterr()); }
    size_t l = 0;
    for (size_t k = 0; k < o.n; k++) l += snprintf(buf + l, sizeof buf - l, "%s%d", k ? " " : "", o.ids[k]);
    tok_ids_free(&o);
    return buf;
}

static const char *pieces(tok_tokenizer *t, const char *text) {
    static char buf[1024];
    tok_ids o; tok_ids_init(&o);
    buf[0] = 0;
    if (tok_encode(t, text, strlen(text), 0, &o) < 0) return lp_geterr();
    size_t l = 0;
    for (size_t k = 0; k < o.n; k++) l += snprintf(buf + l, sizeof buf - l, "%s%s", k ? "|" : "", o.pieces[k]);
    tok_ids_free(&o);
    return buf;
}

static const char *norm(const char *json_norm, const char *text) {
    static char buf[512];
    char js[2048];
    snprintf(js, sizeof js, "{\"model\":{\"type\":\"WordPiece\",\"vocab\":{\"[UNK]\":0}},\"normalizer\":%s}", json_norm);
    tok_tokenizer *t = mk(js);
    if (!t) return "(load failed)";
    sbuf b; sb_init(&b);
    if (tok_norm_apply(t->norm, text, strlen(text), &b) < 0) snprintf(buf, sizeof buf, "error");
    else snprintf(buf, sizeof buf, "%s", sb_str(&b));
    sb_free(&b);
    tok_free(t);
    return buf;
}

static void test_byte_table(void) {
    int seen[324] = {0};
    for (int b = 0; b < 256; b++) {
        int cp = tok_byte_to_cp[b];
        T_EQ_INT(tok_cp_to_byte(cp), b);
        T_OK(cp < 324 && !seen[cp]);
        seen[cp] = 1;
    }
    T_EQ_INT(tok_byte_to_cp[' '], 0x120);    /* Ġ */
    T_EQ_INT(tok_byte_to_cp['\n'], 0x10a);   /* Ċ */
    T_EQ_INT(tok_byte_to_cp['a'], 'a');
    T_EQ_INT(tok_cp_to_byte(0x3042), -1);
}

static void test_utf8(void) {
    T_EQ_INT(tok_utf8_check("abc\xe3\x81\x82", 6), -1);
    T_EQ_INT(tok_utf8_check("ab\xc0\x80", 4), 2);          /* overlong */
    T_EQ_INT(tok_utf8_check("\xed\xa0\x80", 3), 0);        /* surrogate */
    T_EQ_INT(tok_utf8_check("\xe3\x81", 2), 0);            /* truncated */
    sbuf b; sb_init(&b);
    tok_utf8_lossy(&b, "a\xe3\x81z\xff", 5);                /* Rust: one U+FFFD per maximal part */
    T_STR(sb_str(&b), "a\xef\xbf\xbdz\xef\xbf\xbd");
    sb_free(&b);
}

static void test_bpe_merges(void) {
    /* rank order beats position: "b c" (rank 0) merges before "a b" (rank 1) */
    tok_tokenizer *t = mk("{\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":0,\"b\":1,\"c\":2,\"ab\":3,\"bc\":4,"
                          "\"abc\":5},\"merges\":[\"b c\",\"a b\",\"a bc\"]}}");
    T_STR(enc(t, "abc", 0), "5");
    T_STR(enc(t, "ab", 0), "3");
    T_STR(enc(t, "cab", 0), "2 3");
    T_STR(enc(t, "xa", 0), "0");        /* no unk_token: unknown characters vanish */
    tok_free(t);
    /* equal ranks: leftmost first, so "aaa" is aa + a; pairs form merges too */
    t = mk("{\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":0,\"aa\":1},\"merges\":[[\"a\",\"a\"]]}}");
    T_STR(enc(t, "aaa", 0), "1 0");
    T_STR(enc(t, "aaaa", 0), "1 1");
    tok_free(t);
    /* unk, fuse_unk and byte fallback */
    t = mk("{\"model\":{\"type\":\"BPE\",\"vocab\":{\"<unk>\":0,\"a\":1,\"<0xC3>\":2,\"<0xA9>\":3},"
           "\"merges\":[],\"unk_token\":\"<unk>\",\"fuse_unk\":true,\"byte_fallback\":true}}");
    T_STR(enc(t, "a\xc3\xa9" "a", 0), "1 2 3 1");     /* é → <0xC3><0xA9> */
    T_STR(enc(t, "a\xe3\x81\x82\xe3\x81\x82" "a", 0), "1 0 1");   /* no byte tokens: one fused unk */
    tok_free(t);
    /* ignore_merges: a whole word in the vocabulary wins over merging */
    t = mk("{\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":0,\"b\":1,\"c\":2,\"ab\":3,\"abc\":4},"
           "\"merges\":[\"a b\"],\"ignore_merges\":true}}");
    T_STR(enc(t, "abc", 0), "4");
    T_STR(enc(t, "abab", 0), "3 3");
    tok_free(t);
}

static void test_unigram(void) {
    /* scores decide: "ab" (-1) beats "a" + "b" (-1.5 + -1.5); unknown characters fuse into
     * one unk; with byte_fallback they become <0xXX> pieces */
    tok_tokenizer *t = mk("{\"model\":{\"type\":\"Unigram\",\"unk_id\":0,\"vocab\":[[\"<unk>\",0.0],"
                          "[\"a\",-1.5],[\"b\",-1.5],[\"ab\",-1.0],[\"abc\",-5.0],[\"c\",-1.0]]}}");
    T_STR(enc(t, "ab", 0), "3");
    T_STR(enc(t, "abc", 0), "3 5");        /* -2.0 beats "abc" at -5.0 */
    T_STR(enc(t, "xyab", 0), "0 3");       /* x and y fused into one unk */
    T_STR(tok_model_type(t), "Unigram");
    tok_free(t);
    t = mk("{\"model\":{\"type\":\"Unigram\",\"unk_id\":0,\"byte_fallback\":true,\"vocab\":[[\"<unk>\",0.0],"
           "[\"a\",-1.0],[\"<0x78>\",-9.0],[\"<0x79>\",-9.0]]}}");
    T_STR(enc(t, "xya", 0), "2 3 1");
    T_STR(enc(t, "za", 0), "0 1");        /* no byte piece for z: unk */
    tok_free(t);
}

static void test_wordpiece(void) {
    tok_tokenizer *t = mk("{\"model\":{\"type\":\"WordPiece\",\"unk_token\":\"[UNK]\",\"max_input_chars_per_word\":12,"
                          "\"vocab\":{\"[UNK]\":0,\"un\":1,\"una\":2,\"##ff\":3,\"##ffable\":4,\"##able\":5,\"aff\":6}},"
                          "\"pre_tokenizer\":{\"type\":\"WhitespaceSplit\"}}");
    T_STR(pieces(t, "unaffable"), "una|##ffable");       /* longest first at every step */
    T_STR(enc(t, "unaffable aff", 0), "2 4 6");
    T_STR(enc(t, "unx", 0), "0");                        /* any unmatchable rest: the word is [UNK] */
    T_STR(enc(t, "unaffableunaffable", 0), "0");         /* over max_input_chars_per_word */
    tok_free(t);
}

static void test_normalizers(void) {
    T_STR(norm("{\"type\":\"NFKC\"}", "\xef\xac\x81" "x\xc2\xbd"), "fix1\xe2\x81\x84" "2");   /* ﬁx½ */
    T_STR(norm("{\"type\":\"NFC\"}", "e\xcc\x81"), "\xc3\xa9");
    T_STR(norm("{\"type\":\"NFD\"}", "\xc3\xa9"), "e\xcc\x81");
    T_STR(norm("{\"type\":\"Lowercase\"}", "ABC \xc3\x89 \xc4\xb0"), "abc \xc3\xa9 i\xcc\x87");  /* İ → i̇ */
    T_STR(norm("{\"type\":\"Strip\",\"strip_left\":true,\"strip_right\":false}", " \t x "), "x ");
    T_STR(norm("{\"type\":\"Replace\",\"pattern\":{\"String\":\" \"},\"content\":\"\xe2\x96\x81\"}", "a b  c"),
          "a\xe2\x96\x81" "b\xe2\x96\x81\xe2\x96\x81" "c");
    T_STR(norm("{\"type\":\"Replace\",\"pattern\":{\"Regex\":\"\\\\s+\"},\"content\":\" \"}", "a \t\n b"), "a b");
    T_STR(norm("{\"type\":\"Prepend\",\"prepend\":\"_\"}", "ab"), "_ab");
    T_STR(norm("{\"type\":\"Prepend\",\"prepend\":\"_\"}", ""), "");
    T_STR(norm("{\"type\":\"BertNormalizer\",\"lowercase\":true}", "H\xc3\xa9llo\tW\x01orld\xe4\xb8\x96"),
          "hello world \xe4\xb8\x96 ");     /* accents, control, tab, CJK padding */
    T_STR(norm("{\"type\":\"BertNormalizer\",\"lowercase\":false}", "H\xc3\xa9llo"), "H\xc3\xa9llo");
    T_STR(norm("{\"type\":\"Sequence\",\"normalizers\":[{\"type\":\"NFD\"},{\"type\":\"StripAccents\"},"
               "{\"type\":\"Lowercase\"}]}", "\xc3\x80" "B"), "ab");
}

static void test_pretokenizers(void) {
    const char *head = "{\"model\":{\"type\":\"WordPiece\",\"vocab\":{\"[UNK]\":0}},\"pre_tokenizer\":";
    struct { const char *pre, *text, *want; } cases[] = {
        {"{\"type\":\"Whitespace\"}", "Hello, world!! x_1", "Hello|,|world|!!|x_1"},
        {"{\"type\":\"BertPreTokenizer\"}", "Hello, world!!", "Hello|,|world|!|!"},
        {"{\"type\":\"Digits\",\"individual_digits\":true}", "a123b", "a|1|2|3|b"},
        {"{\"type\":\"Digits\",\"individual_digits\":false}", "a123b", "a|123|b"},
        {"{\"type\":\"Split\",\"pattern\":{\"String\":\"-\"},\"behavior\":\"Removed\",\"invert\":false}", "a-b--c", "a|b|c"},
        {"{\"type\":\"Split\",\"pattern\":{\"String\":\"-\"},\"behavior\":\"Isolated\",\"invert\":false}", "a-b", "a|-|b"},
        {"{\"type\":\"Split\",\"pattern\":{\"String\":\"-\"},\"behavior\":\"MergedWithPrevious\",\"invert\":false}", "a-b--c", "a-|b-|-|c"},
        {"{\"type\":\"Split\",\"pattern\":{\"String\":\"-\"},\"behavior\":\"MergedWithNext\",\"invert\":false}", "a-b--c", "a|-b|-|-c"},
        {"{\"type\":\"Split\",\"pattern\":{\"String\":\"-\"},\"behavior\":\"Contiguous\",\"invert\":false}", "a-b--c", "a|-|b|--|c"},
        {"{\"type\":\"Split\",\"pattern\":{\"Regex\":\"\\\\d+\"},\"behavior\":\"Removed\",\"invert\":true}", "ab12c345", "12|345"},
        {"{\"type\":\"Metaspace\",\"replacement\":\"_\",\"prepend_scheme\":\"always\",\"split\":true}", "Hey you", "_Hey|_you"},
        {"{\"type\":\"Metaspace\",\"replacement\":\"_\",\"prepend_scheme\":\"never\",\"split\":false}", "Hey you", "Hey_you"},
        {"{\"type\":\"ByteLevel\",\"add_prefix_space\":true,\"use_regex\":true}", "Hi  there\n",
         "\xc4\xa0Hi|\xc4\xa0|\xc4\xa0there|\xc4\x8a"},
    };
    for (size_t k = 0; k < sizeof cases / sizeof *cases; k++) {
        char js[1024];
        snprintf(js, sizeof js, "%s%s}", head, cases[k].pre);
        tok_tokenizer *t = mk(js);
        if (!t) continue;
        /* the words themselves: run the pipeline up to the model by hand */
        tok_ids o; tok_ids_init(&o);
        t->arena.len = 0; t->segs.n = 0;
        sb_putn(&t->arena, cases[k].text, strlen(cases[k].text));
        tok_segs_push(&t->segs, 0, strlen(cases[k].text), -1, 1);
        char got[256] = "";
        if (tok_pre_apply(t, t->pre) == 0) {
            size_t l = 0;
            for (size_t q = 0; q < t->segs.n; q++)
                l += snprintf(got + l, sizeof got - l, "%s%.*s", q ? "|" : "", (int)t->segs.v[q].len,
                              t->arena.s + t->segs.v[q].off);
        }
        T_CHECK(strcmp(got, cases[k].want) == 0, "%s on \"%s\": got \"%s\", want \"%s\"", cases[k].pre,
                cases[k].text, got, cases[k].want);
        tok_ids_free(&o);
        tok_free(t);
    }
}

static const char *ADDED =
    "{\"added_tokens\":["
    "{\"id\":10,\"content\":\"<s>\",\"special\":true,\"normalized\":false},"
    "{\"id\":11,\"content\":\"<s>x\",\"special\":true,\"normalized\":false},"
    "{\"id\":12,\"content\":\"<m>\",\"special\":true,\"normalized\":false,\"lstrip\":true,\"rstrip\":true},"
    "{\"id\":13,\"content\":\"cat\",\"special\":false,\"normalized\":true,\"single_word\":true}],"
    "\"normalizer\":{\"type\":\"Lowercase\"},"
    "\"pre_tokenizer\":{\"type\":\"WhitespaceSplit\"},"
    "\"post_processor\":{\"type\":\"TemplateProcessing\","
    "\"single\":[{\"SpecialToken\":{\"id\":\"<s>\",\"type_id\":0}},{\"Sequence\":{\"id\":\"A\",\"type_id\":0}}],"
    "\"pair\":[{\"Sequence\":{\"id\":\"A\",\"type_id\":0}},{\"Sequence\":{\"id\":\"B\",\"type_id\":1}},"
    "{\"SpecialToken\":{\"id\":\"<s>\",\"type_id\":1}}],"
    "\"special_tokens\":{\"<s>\":{\"id\":\"<s>\",\"ids\":[10],\"tokens\":[\"<s>\"]}}},"
    "\"decoder\":{\"type\":\"WordPiece\",\"prefix\":\"##\",\"cleanup\":true},"
    "\"model\":{\"type\":\"WordPiece\",\"unk_token\":\"[UNK]\",\"vocab\":{\"[UNK]\":0,\"a\":1,\"b\":2,\"c\":3,"
    "\"##at\":4,\"##s\":5,\".\":6}}}";

static void test_added_tokens(void) {
    tok_tokenizer *t = mk(ADDED);
    if (!t) return;
    T_STR(enc(t, "a<s>xb", 0), "1 11 2");          /* longest match: <s>x over <s> */
    T_STR(enc(t, "a<s>b", 0), "1 10 2");
    T_STR(enc(t, "a  <m>  b", 0), "1 12 2");       /* lstrip/rstrip eat the spaces */
    T_STR(enc(t, "CAT cats", 0), "13 3 4 5");      /* normalized: matched after lowercasing; single_word */
    T_STR(enc(t, "a", 1), "10 1");
    tok_ids o; tok_ids_init(&o);
    T_EQ_INT(tok_encode_pair(t, "a", 1, "b", 1, 1, &o), 0);
    T_EQ_INT(o.n, 3);
    if (o.n == 3) { T_EQ_INT(o.ids[2], 10); T_EQ_INT(o.type_ids[0], 0); T_EQ_INT(o.type_ids[1], 1); T_EQ_INT(o.type_ids[2], 1); }
    T_EQ_INT(tok_encode_pair(t, "a", 1, "b", 1, 0, &o), 0);
    T_EQ_INT(o.n, 2);
    tok_ids_free(&o);
    int32_t ids[] = {10, 3, 4, 6, 1, 12};
    char *d = tok_decode(t, ids, 6, 0);
    T_STR(d, "<s> cat. a <m>");
    lp_free(d);
    d = tok_decode(t, ids, 6, 1);
    T_STR(d, "cat. a");
    lp_free(d);
    T_EQ_INT(tok_token_to_id(t, "<m>"), 12);
    T_EQ_INT(tok_token_to_id(t, "##at"), 4);
    T_EQ_INT(tok_token_to_id(t, "nope"), -1);
    T_STR(tok_id_to_token(t, 13), "cat");
    T_OK(tok_id_to_token(t, 7) == NULL);
    T_OK(tok_is_special(t, 10) && !tok_is_special(t, 13));
    T_EQ_INT(tok_vocab_size(t), 14);
    T_STR(tok_model_type(t), "WordPiece");
    tok_free(t);
}

static void test_decoders(void) {
    tok_tokenizer *t = mk("{\"model\":{\"type\":\"BPE\",\"vocab\":{\"\xe2\x96\x81" "a\":0,\"<0xE3>\":1,\"<0x81>\":2,"
                          "\"<0x82>\":3,\"b\":4,\"<0xFF>\":5},\"merges\":[]},"
                          "\"decoder\":{\"type\":\"Sequence\",\"decoders\":["
                          "{\"type\":\"Replace\",\"pattern\":{\"String\":\"\xe2\x96\x81\"},\"content\":\" \"},"
                          "{\"type\":\"ByteFallback\"},{\"type\":\"Fuse\"},"
                          "{\"type\":\"Strip\",\"content\":\" \",\"start\":1,\"stop\":0}]}}");
    int32_t ids[] = {0, 1, 2, 3, 4, 5, 0};
    char *d = t ? tok_decode(t, ids, 7, 0) : NULL;
    T_STR(d, "a\xe3\x81\x82" "b\xef\xbf\xbd a");   /* あ from bytes; a lone 0xFF is U+FFFD */
    lp_free(d);
    tok_free(t);
    t = mk("{\"model\":{\"type\":\"BPE\",\"vocab\":{\"\xc4\xa0" "caf\":0,\"\xc3\x83\":1,\"\xc2\xa9\":2},\"merges\":[]},"
           "\"decoder\":{\"type\":\"ByteLevel\"}}");
    int32_t b[] = {0, 1, 2};
    d = t ? tok_decode(t, b, 3, 0) : NULL;
    T_STR(d, " caf\xc3\xa9");
    lp_free(d);
    tok_free(t);
}

static void test_specials_and_dirs(void) {
    tok_tokenizer *t = tok_load("tests/fixtures/tokenizers/minilm");   /* a directory */
    T_CHECK(t != NULL, "%s", lp_geterr());
    if (t) {
        const tok_special *s = tok_specials(t);
        T_EQ_INT(s->cls, 101); T_EQ_INT(s->sep, 102); T_EQ_INT(s->pad, 0); T_EQ_INT(s->unk, 100);
        T_EQ_INT(s->mask, 103);
        tok_free(t);
    }
    t = tok_load("tests/fixtures/tokenizers/llama2/tokenizer.json");
    if (t) {
        T_EQ_INT(tok_specials(t)->bos, 1); T_EQ_INT(tok_specials(t)->eos, 2); T_EQ_INT(tok_specials(t)->unk, 0);
        T_STR(tok_model_type(t), "BPE");
        tok_free(t);
    }
}

/* tokenizer_config.json beside tokenizer.json names the roles, strings or {"content": …} */
static void test_sidecar(void) {
    char dir[] = "/tmp/loupe_tok_XXXXXX";
    if (!mkdtemp(dir)) { T_CHECK(0, "mkdtemp failed"); return; }
    char path[256];
    const char *tj = "{\"added_tokens\":[{\"id\":3,\"content\":\"<go>\",\"special\":true}],"
                     "\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":0,\"<s>\":1,\"<stop>\":2}}}";
    const char *cfg = "{\"bos_token\": {\"content\": \"<go>\", \"lstrip\": false}, \"eos_token\": \"<stop>\","
                      " \"pad_token\": null}";
    snprintf(path, sizeof path, "%s/tokenizer.json", dir);
    FILE *f = fopen(path, "w"); fputs(tj, f); fclose(f);
    snprintf(path, sizeof path, "%s/tokenizer_config.json", dir);
    f = fopen(path, "w"); fputs(cfg, f); fclose(f);
    tok_tokenizer *t = tok_load(dir);
    T_CHECK(t != NULL, "%s", lp_geterr());
    if (t) {
        T_EQ_INT(tok_specials(t)->bos, 3);   /* the config beats the <s> guess */
        T_EQ_INT(tok_specials(t)->eos, 2);
        T_EQ_INT(tok_specials(t)->pad, -1);
        tok_free(t);
    }
    remove(path);
    snprintf(path, sizeof path, "%s/tokenizer.json", dir);
    remove(path);
    rmdir(dir);
}

static void expect_err(const char *json, const char *msg) {
    tok_tokenizer *t = tok_load_json(json, strlen(json), "bad.json");
    T_CHECK(t == NULL, "loaded, expected error containing \"%s\"", msg);
    tok_free(t);
    T_CONTAINS(lp_geterr(), msg);
}

static void test_errors(void) {
    T_OK(tok_load("tests/fixtures/tokenizers/nope.json") == NULL);
    T_CONTAINS(lp_geterr(), "No such file");
    T_OK(tok_load("tests/unit") == NULL);
    T_CONTAINS(lp_geterr(), "no tokenizer.json");
    expect_err("{\"model\": {", "invalid JSON at line 1");
    expect_err("[1]", "top level must be a JSON object");
    expect_err("{}", "no `model`");
    expect_err("{\"model\":{\"type\":\"Unigram\",\"vocab\":[[\"a\",0.0]],\"unk_id\":3}}", "`unk_id` 3 is not in the vocabulary");
    expect_err("{\"model\":{\"type\":\"Unigram\",\"vocab\":[]}}", "non-empty list");
    expect_err("{\"model\":{\"type\":\"WordLevel\",\"vocab\":{}}}", "WordLevel tokenizers are not supported yet");
    expect_err("{\"model\":{\"type\":\"Magic\"}}", "model type `Magic` is not supported");
    expect_err("{\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":0},\"merges\":[\"a b\"]}}",
               "merge 0: `b` is not in the vocabulary");
    expect_err("{\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":-3}}}", "vocab entry `a`");
    expect_err("{\"model\":{\"type\":\"BPE\",\"vocab\":{}},\"normalizer\":{\"type\":\"Precompiled\",\"precompiled_charsmap\":\"\"}}",
               "normalizer: normalizer type `Precompiled`");
    expect_err("{\"model\":{\"type\":\"BPE\",\"vocab\":{}},\"normalizer\":{\"type\":\"Sequence\",\"normalizers\":[{\"type\":\"NFC\"},{\"type\":\"Fancy\"}]}}",
               "normalizer.normalizers[1]: normalizer type `Fancy` is not supported");
    expect_err("{\"model\":{\"type\":\"BPE\",\"vocab\":{}},\"pre_tokenizer\":{\"type\":\"UnicodeScripts\"}}",
               "pre-tokenizer type `UnicodeScripts` is not supported");
    expect_err("{\"model\":{\"type\":\"BPE\",\"vocab\":{}},\"pre_tokenizer\":{\"type\":\"Split\",\"pattern\":{\"Regex\":\"(\"},\"behavior\":\"Isolated\"}}",
               "regex `(`");
    expect_err("{\"model\":{\"type\":\"BPE\",\"vocab\":{}},\"decoder\":{\"type\":\"CTC\"}}", "decoder type `CTC`");
    expect_err("{\"model\":{\"type\":\"BPE\",\"vocab\":{}},\"post_processor\":{\"type\":\"TemplateProcessing\",\"single\":[{\"SpecialToken\":{\"id\":\"<s>\"}}],\"pair\":[],\"special_tokens\":{}}}",
               "special token `<s>` has no ids");
    tok_tokenizer *t = mk("{\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":0}}}");
    if (t) {
        T_STR(enc(t, "a\xff", 0), "error: text is not valid UTF-8 (byte 1)");
        int32_t ids[] = {0, 5};
        T_OK(tok_decode(t, ids, 2, 0) == NULL);
        T_CONTAINS(lp_geterr(), "token id 5 is not in the vocabulary");
        tok_free(t);
    }
}

/* Every allocation failing in turn: errors, never crashes or leaks (under ASan). */
static void test_oom(void) {
    int failures = 0;
    for (long n = 1; n < 4000; n++) {
        lp_mem_fail_after(n);
        tok_tokenizer *t = tok_load_json(ADDED, strlen(ADDED), "oom.json");
        tok_ids o; tok_ids_init(&o);
        int rc = t ? tok_encode(t, "a <m> CAT b", 11, 1, &o) : -1;
        char *d = rc == 0 ? tok_decode(t, o.ids, o.n, 0) : NULL;
        lp_mem_fail_after(0);
        if (!t || rc < 0 || !d) failures++;
        else { lp_free(d); tok_ids_free(&o); tok_free(t); break; }
        lp_free(d); tok_ids_free(&o); tok_free(t);
    }
    T_OK(failures > 10);
}

int main(void) {
    T_RUN(test_byte_table);
    T_RUN(test_utf8);
    T_RUN(test_bpe_merges);
    T_RUN(test_wordpiece);
    T_RUN(test_unigram);
    T_RUN(test_normalizers);
    T_RUN(test_pretokenizers);
    T_RUN(test_added_tokens);
    T_RUN(test_decoders);
    T_RUN(test_specials_and_dirs);
    T_RUN(test_sidecar);
    T_RUN(test_errors);
    T_RUN(test_oom);
    return t_done();
}
