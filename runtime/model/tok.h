/* tok.h — Hugging Face tokenizer.json: load, encode text to token ids, decode ids to text.
 *
 * The reference for every id is the `tokenizers` library (tests/parity compares against
 * fixtures it produced). The file is one JSON object; the parts loupe reads:
 *
 *   {
 *     "added_tokens": [ {"id": 0, "content": "<s>", "special": true, "normalized": false,
 *                        "lstrip": false, "rstrip": false, "single_word": false}, ... ],
 *     "normalizer":     null | {"type": "NFC"|"NFD"|"NFKC"|"NFKD"|"Lowercase"|"StripAccents"
 *                               |"Strip"|"Replace"|"Prepend"|"BertNormalizer"|"ByteLevel"
 *                               |"Sequence", ...},
 *     "pre_tokenizer":  null | {"type": "ByteLevel"|"Split"|"Metaspace"|"Whitespace"
 *                               |"WhitespaceSplit"|"BertPreTokenizer"|"Punctuation"|"Digits"
 *                               |"CharDelimiterSplit"|"Sequence", ...},
 *     "model":          {"type": "BPE", "vocab": {"piece": id, ...}, "merges": ["a b", ...]
 *                         or [["a", "b"], ...], "unk_token", "byte_fallback", "fuse_unk",
 *                         "ignore_merges", "continuing_subword_prefix", "end_of_word_suffix"}
 *                     | {"type": "WordPiece", "vocab", "unk_token",
 *                         "continuing_subword_prefix": "##", "max_input_chars_per_word": 100},
 *     "post_processor": null | {"type": "TemplateProcessing"|"BertProcessing"
 *                               |"RobertaProcessing"|"ByteLevel"|"Sequence", ...},
 *     "decoder":        null | {"type": "ByteLevel"|"Metaspace"|"WordPiece"|"BPEDecoder"
 *                               |"Replace"|"ByteFallback"|"Fuse"|"Strip"|"Sequence", ...},
 *     "truncation", "padding": read by nothing here (the data loader decides lengths)
 *   }
 *
 * Encoding runs the pipeline of the library: added tokens are split out of the raw text
 * (longest match; those with "normalized": true are matched after normalisation), each
 * remaining piece is normalised, pre-tokenised into words, and each word goes through the
 * model (BPE merges by rank, WordPiece greedy longest match, or the Unigram segmentation of
 * highest probability); the post-processor then adds special tokens ([CLS] … [SEP], <s> …)
 * and type ids. Decoding maps ids back to pieces and runs the decoder chain; to show one
 * token as text, decode it alone (tok_decode(t, &id, 1, 0)). Byte-level BPE pieces look
 * like "Ġthe" (Ġ is the space byte), SentencePiece-style ones like "▁the" or "<0xE3>",
 * WordPiece continuations like "##ing".
 *
 * Anything the file asks for that loupe does not implement (WordLevel models, the
 * Precompiled normalizer that most SentencePiece Unigram files carry, …) is a load error
 * naming the type. A file's "padding" and "truncation" settings are not applied, BPE
 * "dropout" is ignored (encoding is deterministic), and offsets are not computed.
 *
 * Errors follow util/err.h: NULL / -1 and lp_geterr(). A tok_tokenizer keeps a BPE word cache
 * and scratch buffers, so it must not be used by two threads at once.
 *
 *   tok_tokenizer *t = tok_load("models/gpt2");          // directory or tokenizer.json
 *   tok_ids out; tok_ids_init(&out);
 *   tok_encode(t, "Hello world", 11, 1, &out);            // out.ids, out.pieces, out.n
 *   char *s = tok_decode(t, out.ids, out.n, 1);           // "Hello world"; lp_free(s)
 *   tok_ids_free(&out); tok_free(t);
 */
#ifndef LOUPE_TOK_H
#define LOUPE_TOK_H
#include <stddef.h>
#include <stdint.h>

typedef struct tok_tokenizer tok_tokenizer;

/* The result of an encode: parallel arrays of n entries. Reuse one across calls (encode
 * clears it first and keeps its memory); the tokenizer keeps its own scratch buffers too,
 * so steady-state encoding allocates little (a BPE word missing from the cache, a
 * normalised copy). */
typedef struct {
    int32_t      *ids;
    int32_t      *type_ids;  /* 0 for the first sequence, 1 (usually) for a pair's second */
    const char  **pieces;    /* token strings as in the vocabulary; owned by the tokenizer */
    uint8_t      *special;   /* 1 where the token is a special token (added or [CLS]-like) */
    size_t        n, cap;
} tok_ids;

/* Special token ids, -1 where unknown. bos/eos/pad/unk come from tokenizer_config.json or
 * special_tokens_map.json next to tokenizer.json when present, else from the model's
 * unk_token, the post-processor and the usual names (<s>, </s>, [CLS], <|endoftext|>, …). */
typedef struct {
    int32_t bos, eos, pad, unk, cls, sep, mask;
} tok_special;

void tok_ids_init(tok_ids *ids);
void tok_ids_free(tok_ids *ids);

/* path: a tokenizer.json file, or a directory containing one. */
tok_tokenizer *tok_load(const char *path);
/* The same from JSON text in memory; name is used in error messages. No sidecar files. */
tok_tokenizer *tok_load_json(const char *json, size_t len, const char *name);
void tok_free(tok_tokenizer *t);

/* text must be valid UTF-8 (else -1 with the byte offset in the message). add_special: run
 * the post-processor's special tokens (bos, [CLS] … [SEP]). Returns 0 or -1. */
int tok_encode(tok_tokenizer *t, const char *text, size_t len, int add_special, tok_ids *out);
/* A pair (sentence A, sentence B) as the post-processor's pair template lays it out. */
int tok_encode_pair(tok_tokenizer *t, const char *a, size_t alen, const char *b, size_t blen,
                    int add_special, tok_ids *out);

/* Text for ids; skip_special drops special tokens. Returns an lp_malloc'd string (lp_free),
 * or NULL on error (an id out of range is an error). */
char *tok_decode(tok_tokenizer *t, const int32_t *ids, size_t n, int skip_special);

/* Number of ids: the model's vocabulary plus added tokens beyond it (max id + 1). */
size_t tok_vocab_size(const tok_tokenizer *t);
int32_t tok_token_to_id(const tok_tokenizer *t, const char *piece);   /* -1 when absent */
const char *tok_id_to_token(const tok_tokenizer *t, int32_t id);      /* NULL when absent */
int tok_is_special(const tok_tokenizer *t, int32_t id);
const tok_special *tok_specials(const tok_tokenizer *t);
const char *tok_model_type(const tok_tokenizer *t);       /* "BPE", "WordPiece", "Unigram" */

#endif
