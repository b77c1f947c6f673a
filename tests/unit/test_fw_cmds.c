/* test_fw_cmds.c — `forward`, `generate`, `attention`, `activations` through the interpreter,
 * as a notebook cell runs them, on the tiny checkpoints. The commands (and `load`) are added
 * with lp_interp_add_command, so the test does not depend on runtime/commands/list.h.
 *
 * tests/fixtures/forward/gpt2-bytes is the tiny GPT-2 with a one-token-per-byte
 * tokenizer.json, for the paths that take text. */
#include "t.h"
#include "t_device.h"
#include "commands/model.h"
#include "test_lang_harness.h"
#include "lang/interp.h"
#include "lang/registry.h"

extern const lp_command lp_cmd_load, lp_cmd_forward, lp_cmd_generate, lp_cmd_attention,
    lp_cmd_activations;

static lp_interp *new_interp(void) {
    lp_interp *it = lp_interp_new();
    const lp_command *cmds[] = {&lp_cmd_load, &lp_cmd_forward, &lp_cmd_generate,
                                &lp_cmd_attention, &lp_cmd_activations};
    for (size_t i = 0; i < 5; i++) {
        T_OK(reg_validate(cmds[i]) == 0);
        if (!ev_find_cmd(it, cmds[i]->name, strlen(cmds[i]->name))) lp_interp_add_command(it, cmds[i]);
    }
    return it;
}

static void test_forward(void) {
    lp_interp *it = new_interp();
    int rc;
    const char *out = run_cell(it, "m = load \"tests/fixtures/models/llama\"\n"
                                   "out = forward m [5, 9, 33, 120, 7]\nout", &rc);
    T_EQ_INT(rc, 0);
    T_CONTAINS(out, "forward · LlamaForCausalLM · batch 1 × 5 tokens · logits [5, 256]");
    T_CONTAINS(out, "loss ");
    T_CONTAINS(out, "over 4 targets");
    T_STR(run_cell(it, "out.shape", &rc), "[1, 5, 256]\n");
    T_STR(run_cell(it, "out.logits.length", &rc), "1\n");
    T_STR(run_cell(it, "out.logits[0].length", &rc), "5\n");
    T_STR(run_cell(it, "out.logits[0][4].length", &rc), "256\n");
    T_STR(run_cell(it, "out.predictions.length", &rc), "5\n");
    /* two rows, right-padded; explicit labels */
    out = run_cell(it, "o2 = forward m [[5, 9, 33], [4, 5]]\no2.count", &rc);
    T_EQ_INT(rc, 0);
    T_STR(out, "3\n");
    out = run_cell(it, "out.logits", &rc);   /* replaced by the later forward */
    T_OK(rc != 0);
    T_CONTAINS(out, "replaced by a later forward");
    out = run_cell(it, "(forward m [1, 2, 3] labels=[-100, 2, -100]).count", &rc);
    T_STR(out, "1\n");
    /* dict batches */
    out = run_cell(it, "(forward m {\"input_ids\": [[1, 2, 3]], \"attention_mask\": [[1, 1, 0]]}).count", &rc);
    T_STR(out, "1\n");
    /* errors leave the kernel and the model usable */
    out = run_cell(it, "forward m []", &rc);
    T_OK(rc != 0);
    T_CONTAINS(out, "empty input");
    out = run_cell(it, "forward m [1, 2, 256]", &rc);
    T_CONTAINS(out, "token id 256 (row 0, position 2) is outside the vocabulary [0, 256)");
    out = run_cell(it, "forward m \"hello\"", &rc);
    T_CONTAINS(out, "has no tokenizer.json: pass token ids");
    out = run_cell(it, "forward 3 [1]", &rc);
    T_OK(rc != 0);
    out = run_cell(it, "ids = []\nrepeat 65 { ids = ids + [1] }\nforward m ids", &rc);
    T_CONTAINS(out, "65 tokens is longer than this model's 64 positions");
    out = run_cell(it, "(forward m [1, 2, 3]).count", &rc);
    T_STR(out, "2\n");
    /* BERT: class logits, labels per row */
    out = run_cell(it, "b = load \"tests/fixtures/models/bert\"\nob = forward b [[2, 7, 9], [2, 8]] labels=[1, 4]\nob", &rc);
    T_EQ_INT(rc, 0);
    T_CONTAINS(out, "class logits [2, 5]");
    T_CONTAINS(out, "over 2 targets");
    T_STR(run_cell(it, "ob.shape", &rc), "[2, 5]\n");
    lp_interp_free(it);
}

static void test_generate(void) {
    lp_interp *it = new_interp();
    int rc;
    /* the fixture's greedy tokens (tests/fixtures/forward/llama.safetensors) */
    const char *out = run_cell(it, "m = load \"tests/fixtures/models/llama\"\n"
                                   "generate m [8, 9, 10] max_tokens=5", &rc);
    T_EQ_INT(rc, 0);
    char expect[64];
    strcpy(expect, out);   /* streamed ids, one line */
    T_OK(strlen(expect) > 2 && expect[strlen(expect) - 1] == '\n');
    out = run_cell(it, "g = generate m [8, 9, 10] max_tokens=5\ng.length", &rc);
    T_STR(out, strcat(expect, "5\n") ? expect : "");
    /* seeded sampling repeats */
    out = run_cell(it, "a = generate m [8, 9] max_tokens=12 temperature=1.0 top_k=50 seed=3\n"
                       "b = generate m [8, 9] max_tokens=12 temperature=1.0 top_k=50 seed=3\na == b", &rc);
    T_CONTAINS(out, "true");
    /* stop token */
    out = run_cell(it, "s = generate m [8, 9, 10] max_tokens=5 stop=[" "68" "]\ns", &rc);
    T_EQ_INT(rc, 0);
    /* errors */
    out = run_cell(it, "generate m []", &rc);
    T_CONTAINS(out, "empty prompt");
    out = run_cell(it, "generate m \"\"", &rc);
    T_CONTAINS(out, "empty prompt");
    out = run_cell(it, "ids = []\nrepeat 65 { ids = ids + [1] }\ngenerate m ids", &rc);
    T_CONTAINS(out, "this model has 64 positions");
    out = run_cell(it, "generate m [1] top_p=0", &rc);
    T_CONTAINS(out, "top_p must be in (0, 1]");
    out = run_cell(it, "b = load \"tests/fixtures/models/bert\"\ngenerate b [1, 2]", &rc);
    T_CONTAINS(out, "not a causal language model");
    /* text in, text out (byte tokenizer); interrupted after 3 tokens */
    out = run_cell(it, "t = load \"tests/fixtures/forward/gpt2-bytes\"\n"
                       "x = generate t \"Hello\" max_tokens=4\nx.length", &rc);
    T_EQ_INT(rc, 0);
    rec r;
    lp_sink sink;
    rec_init(&r, it, &sink);
    r.interrupt_after_streams = 3;
    lp_outcome o;
    const char *code = "generate m [8, 9] max_tokens=50";
    rc = lp_execute(it, code, strlen(code), &sink, &o);
    T_OK(rc != 0);
    T_STR(o.ename, "Interrupted");
    lp_outcome_free(&o);
    rec_free(&r);
    T_STR(run_cell(it, "1 + 1", &rc), "2\n");
    lp_interp_free(it);
}

static void test_attention(void) {
    lp_interp *it = new_interp();
    int rc;
    const char *out = run_cell(it, "t = load \"tests/fixtures/forward/gpt2-bytes\"\n"
                                   "a = attention t \"Hi you\" layer=1 head=3\na", &rc);
    T_EQ_INT(rc, 0);
    T_CONTAINS(out, "attention · GPT2LMHeadModel · layer 1 · head 3 of 4 · 6 tokens");
    T_CONTAINS(out, "H      1.00 0.00 0.00");
    T_CONTAINS(out, "Ġ ");
    T_STR(run_cell(it, "a.tokens", &rc), "[\"H\", \"i\", \"Ġ\", \"y\", \"o\", \"u\"]\n");
    T_STR(run_cell(it, "a.probs[0]", &rc), "[1.0, 0.0, 0.0, 0.0, 0.0, 0.0]\n");
    /* rows sum to 1 */
    out = run_cell(it, "s = 0\nfor p in a.probs[5] { s = s + p }\ns > 0.9999 and s < 1.0001", &rc);
    T_CONTAINS(out, "true");
    /* the bundle has the SVG */
    rec r;
    lp_sink sink;
    rec_init(&r, it, &sink);
    lp_outcome o;
    const char *code = "a";
    rc = lp_execute(it, code, strlen(code), &sink, &o);
    T_EQ_INT(rc, 0);
    const char *svg = json_string_value(json_object_get(o.result, "image/svg+xml"));
    T_CONTAINS(svg, "<svg xmlns=\"http://www.w3.org/2000/svg\"");
    T_CONTAINS(svg, ">H</text>");
    lp_outcome_free(&o);
    rec_free(&r);
    out = run_cell(it, "attention t \"Hi\" layer=2", &rc);
    T_CONTAINS(out, "layer must be 0 .. 1, got 2");
    out = run_cell(it, "attention t \"Hi\" head=4", &rc);
    T_CONTAINS(out, "head must be 0 .. 3, got 4");
    out = run_cell(it, "b = load \"tests/fixtures/models/bert\"\n(attention b [2, 5, 6, 3] layer=-1).probs[0].length", &rc);
    T_STR(out, "4\n");
    lp_interp_free(it);
}

static void test_activations(void) {
    lp_interp *it = new_interp();
    int rc;
    const char *out = run_cell(it, "m = load \"tests/fixtures/models/gemma2\"\n"
                                   "a = activations m [3, 4, 5]\na", &rc);
    T_EQ_INT(rc, 0);
    T_CONTAINS(out, "activations · Gemma2ForCausalLM · 3 tokens");
    T_CONTAINS(out, "layers.1.gate");
    T_CONTAINS(out, "logits");
    T_STR(run_cell(it, "a[\"layers.0.q\"].length", &rc), "3\n");
    T_STR(run_cell(it, "a[\"layers.0.q\"][0].length", &rc), "64\n");
    out = run_cell(it, "a[\"nope\"]", &rc);
    T_CONTAINS(out, "no activation `nope`");
    out = run_cell(it, "(activations m [3, 4] layer=1).names", &rc);
    T_CONTAINS(out, "\"layers.1.n1\"");
    lp_interp_free(it);
}

int main(void) {
    /* every `load` of the scripts on LOUPE_TEST_DEVICE (t_device.h) */
    printf("device %s\n", t_device()->name);
    if (!t_on_cpu()) mv_device_override = t_device_name();
    T_RUN(test_forward);
    T_RUN(test_generate);
    T_RUN(test_attention);
    T_RUN(test_activations);
    return t_done();
}
