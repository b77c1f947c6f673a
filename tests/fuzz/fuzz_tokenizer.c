/* fuzz_tokenizer.c — libFuzzer target for the tokenizer.json reader and the encoder.
 *
 * The first byte picks the mode:
 *   even: the rest is a tokenizer.json; if it loads, encode and decode a fixed text that
 *         touches every pipeline stage (specials, CJK, emoji, whitespace runs, digits).
 *   odd:  the rest is text for one of the fixture tokenizers (byte >> 1 picks which):
 *         encode with and without specials, as a pair, decode the ids, and decode the
 *         ids read from the input bytes (out-of-range ids must be errors, not crashes).
 * Run from the repository root so the fixtures are found (see tests/fuzz/README.md). */
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include "model/tok.h"
#include "util/mem.h"

static const char *names[] = {"gpt2", "llama3", "qwen2", "llama2", "gemma", "metaspace",
                              "bert-uncased", "bert-cased", "misc", "roberta", "minilm",
                              "unigram", "unigram-bytes"};
#define NTOK (sizeof names / sizeof *names)
static tok_tokenizer *fixed[NTOK];

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    for (size_t k = 0; k < NTOK; k++) {
        char path[256];
        snprintf(path, sizeof path, "tests/fixtures/tokenizers/%s/tokenizer.json", names[k]);
        fixed[k] = tok_load(path);
    }
    return 0;
}

static const char sample[] = "<s>Hello, World! It's 2026: 12345 tabs\t\tand  spaces \r\n"
                             "日本の首都は東京です。😀 café <mask> [CLS] ##ing </s>";

static void roundtrip(tok_tokenizer *t, const char *text, size_t len, tok_ids *o) {
    for (int sp = 0; sp < 2; sp++) {
        if (tok_encode(t, text, len, sp, o) == 0) {
            char *d = tok_decode(t, o->ids, o->n, sp);
            lp_free(d);
        }
    }
    if (tok_encode_pair(t, text, len / 2, text + len / 2, len - len / 2, 1, o) == 0) {
        char *d = tok_decode(t, o->ids, o->n, 0);
        lp_free(d);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 1) return 0;
    const char *rest = (const char *)data + 1;
    size_t n = size - 1;
    tok_ids o; tok_ids_init(&o);
    if ((data[0] & 1) == 0) {
        tok_tokenizer *t = tok_load_json(rest, n, "fuzz.json");
        if (t) {
            roundtrip(t, sample, sizeof sample - 1, &o);
            tok_vocab_size(t);
            tok_token_to_id(t, "a");
            tok_free(t);
        }
    } else {
        tok_tokenizer *t = fixed[(data[0] >> 1) % NTOK];
        if (t) {
            roundtrip(t, rest, n, &o);
            int32_t ids[64]; size_t m = n / 4 < 64 ? n / 4 : 64;
            memcpy(ids, rest, m * 4);
            char *d = tok_decode(t, ids, m, data[0] & 2);
            lp_free(d);
        }
    }
    tok_ids_free(&o);
    return 0;
}
