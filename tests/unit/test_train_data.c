/* test_train_data.c — datasets (train/data.h): the three file kinds, prompt masking,
 * truncation, packing, padding, the eval split and the shuffled epochs, on small files written
 * here and the one-token-per-byte tokenizer of tests/fixtures/forward/gpt2-bytes (so token
 * counts are byte counts). */
#include "t.h"

#include <stdlib.h>
#include <unistd.h>

#include "train/data.h"
#include "util/err.h"

static char dir[] = "/tmp/loupe_td_XXXXXX";
static tok_tokenizer *tok;

static const char *file(const char *name, const char *text) {
    static char path[256];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "wb");
    fputs(text, f);
    fclose(f);
    return path;
}

static td_dataset *open1(const char *path, const td_config *c) {
    td_dataset *tr = NULL, *ev = NULL;
    T_CHECK(td_open(path, c, &tr, &ev) == 0, "%s", lp_geterr());
    td_free(ev);
    if (tr) T_CHECK(td_tokenize(tr, tok) == 0, "%s", lp_geterr());
    return tr;
}

static void test_jsonl_text(void) {
    const char *p = file("a.jsonl", "{\"text\": \"hello\"}\n\n{\"text\": \"hi\", \"x\": 1}\n");
    td_config c;
    td_config_default(&c);
    c.shuffle = 0;
    td_dataset *d = open1(p, &c);
    if (!d) return;
    td_info in;
    td_get_info(d, &in);
    T_EQ_INT(in.examples, 2);
    T_EQ_INT(in.tokens, 7);
    T_EQ_INT(in.targets, 5);   /* the first token of each example is never a target (shift) */
    td_batch b;
    T_OK(td_next(d, 2, &b, NULL) == 0);
    T_EQ_INT(b.B, 2);
    T_EQ_INT(b.T, 5);
    T_EQ_INT(b.mask[5 + 1], 1);
    T_EQ_INT(b.mask[5 + 2], 0);        /* "hi" padded on the right */
    T_EQ_INT(b.labels[5 + 2], -100);
    T_EQ_INT(b.labels[5 + 1], b.ids[5 + 1]);
    T_EQ_INT(b.ids[5 + 2], in.pad);
    T_EQ_INT(b.targets, 5);
    td_batch_free(&b);
    td_free(d);
    /* a missing field names the fields there are */
    td_dataset *tr, *ev;
    c.field = "content";
    T_OK(td_open(p, &c, &tr, &ev) < 0);
    T_CONTAINS(lp_geterr(), "a.jsonl:1: no text field `content` (fields: text)");
    p = file("bad.jsonl", "{\"text\": \"a\"}\n{\"text\": \n");
    c.field = "text";
    T_OK(td_open(p, &c, &tr, &ev) < 0);
    T_CONTAINS(lp_geterr(), "bad.jsonl:2: not a JSON object");
    T_OK(td_open("/nonexistent/x.jsonl", &c, &tr, &ev) < 0);
    T_CONTAINS(lp_geterr(), "cannot open");
    T_OK(td_open("x.parquet", &c, &tr, &ev) < 0);
    T_CONTAINS(lp_geterr(), ".jsonl, .txt or .csv");
}

static void test_prompt_response(void) {
    const char *p = file("pr.jsonl", "{\"q\": \"Q?\", \"a\": \"yes\"}\n");
    td_config c;
    td_config_default(&c);
    c.prompt = "q";
    c.response = "a";
    c.template_ = "User: {prompt}\nBot:{response}";
    c.eos = 1;
    td_dataset *d = open1(p, &c);
    if (!d) return;
    const td_example *e = td_example_at(d, 0);
    /* "User: Q?\nBot:" is 13 bytes, all masked; " yes" is not in the template: "yes" (3) */
    int masked = 0, learned = 0;
    for (int i = 0; i < e->n; i++) e->labels[i] == -100 ? masked++ : learned++;
    T_EQ_INT(masked, 13);
    T_OK(learned == 3 || learned == 4);   /* + eos when the tokenizer has one */
    T_EQ_INT(e->labels[13], e->ids[13]);
    td_free(d);
}

static void test_csv_labels(void) {
    const char *p = file("c.csv", "label,text\n1,\"a, \"\"quoted\"\" one\"\n0,plain\n\n");
    td_config c;
    td_config_default(&c);
    c.label = "label";
    c.shuffle = 0;
    td_dataset *d = open1(p, &c);
    if (!d) return;
    T_EQ_INT(td_len(d), 2);
    T_STR(td_record_text(d, 0), "a, \"quoted\" one");
    T_EQ_INT(td_example_at(d, 0)->cls, 1);
    T_OK(td_example_at(d, 0)->labels == NULL);
    td_batch b;
    T_OK(td_next(d, 2, &b, NULL) == 0);
    T_OK(b.classify);
    T_EQ_INT(b.labels[0], 1);
    T_EQ_INT(b.labels[1], 0);
    td_batch_free(&b);
    td_free(d);
    td_dataset *tr, *ev;
    c.field = "body";
    T_OK(td_open(p, &c, &tr, &ev) < 0);
    T_CONTAINS(lp_geterr(), "no column `body` (columns: label, text)");
}

static void test_txt_truncate_pack(void) {
    const char *p = file("t.txt", "abcdefghij\r\nklm\n\n  \nnopq\n");
    td_config c;
    td_config_default(&c);
    c.max_len = 4;
    c.shuffle = 0;
    td_dataset *d = open1(p, &c);
    if (!d) return;
    T_EQ_INT(td_len(d), 3);
    T_EQ_INT(td_example_at(d, 0)->n, 4);   /* truncated */
    T_EQ_INT(td_example_at(d, 1)->n, 3);
    td_free(d);
    c.pack = 1;   /* 10 + 3 + 4 = 17 tokens → 4 blocks of 4, the last token dropped */
    d = open1(p, &c);
    if (!d) return;
    T_EQ_INT(td_len(d), 4);
    for (size_t i = 0; i < 4; i++) T_EQ_INT(td_example_at(d, i)->n, 4);
    td_free(d);
    c.pack = 0;
    c.by_line = 0;
    c.max_len = 100;
    d = open1(p, &c);
    if (!d) return;
    T_EQ_INT(td_len(d), 1);
    T_EQ_INT(td_example_at(d, 0)->n, 25);   /* the whole file, newlines included */
    td_free(d);
}

static void test_split_and_epochs(void) {
    char text[4096] = "";
    for (int i = 0; i < 20; i++) {
        char line[64];
        snprintf(line, sizeof line, "{\"text\": \"%c%c\"}\n", 'a' + i, 'a' + i);
        strcat(text, line);
    }
    const char *p = file("s.jsonl", text);
    td_config c;
    td_config_default(&c);
    c.eval = 0.25;
    td_dataset *tr, *ev;
    T_OK(td_open(p, &c, &tr, &ev) == 0);
    T_OK(ev != NULL);
    if (!ev) return;
    td_info a, b;
    td_get_info(tr, &a);
    td_get_info(ev, &b);
    T_EQ_INT(a.records, 15);
    T_EQ_INT(b.records, 5);
    /* disjoint */
    for (size_t i = 0; i < a.records; i++)
        for (size_t j = 0; j < b.records; j++) T_OK(strcmp(td_record_text(tr, i), td_record_text(ev, j)));
    /* the same seed holds out the same examples */
    td_dataset *tr2, *ev2;
    T_OK(td_open(p, &c, &tr2, &ev2) == 0);
    for (size_t j = 0; j < b.records; j++) T_STR(td_record_text(ev2, j), td_record_text(ev, j));
    T_OK(td_tokenize(tr, tok) == 0);
    /* an epoch visits every example once, in a shuffled order; then the next epoch starts */
    int seen[256] = {0}, end = 0, inorder = 1;
    for (int s = 0; s < 5; s++) {
        td_batch bt;
        T_OK(td_next(tr, 3, &bt, &end) == 0);
        for (int r = 0; r < 3; r++) {
            seen[bt.ids[r * bt.T]]++;
            if (s * 3 + r > 0 && bt.ids[r * bt.T] != td_example_at(tr, (size_t)(s * 3 + r))->ids[0]) inorder = 0;
        }
        td_batch_free(&bt);
    }
    T_EQ_INT(end, 1);
    int distinct = 0;
    for (int i = 0; i < 256; i++) distinct += seen[i] == 1;
    T_EQ_INT(distinct, 15);
    T_OK(!inorder);
    td_get_info(tr, &a);
    T_EQ_INT(a.epoch, 0);
    td_batch bt;
    T_OK(td_next(tr, 1, &bt, &end) == 0);
    td_batch_free(&bt);
    td_get_info(tr, &a);
    T_EQ_INT(a.epoch, 1);
    td_free(tr), td_free(ev), td_free(tr2), td_free(ev2);
    c.eval = 20;
    T_OK(td_open(p, &c, &tr, &ev) < 0);
    T_CONTAINS(lp_geterr(), "nothing left to train on");
}

int main(void) {
    if (!mkdtemp(dir)) return 1;
    tok = tok_load("tests/fixtures/forward/gpt2-bytes/tokenizer.json");
    if (!tok) { fprintf(stderr, "%s\n", lp_geterr()); return 1; }
    T_RUN(test_jsonl_text);
    T_RUN(test_prompt_response);
    T_RUN(test_csv_labels);
    T_RUN(test_txt_truncate_pack);
    T_RUN(test_split_and_epochs);
    tok_free(tok);
    return t_done();
}
