/* test_fw_parity.c — the model forward and greedy generation against transformers.
 *
 * tests/fixtures/forward/<model>.safetensors holds what tools/make_forward_fixtures.py got
 * from transformers (eager, f32) for the tiny checkpoints in tests/fixtures/models/: a batch of
 * 3 × 20 tokens with right and left padding, the logits at every position, the loss, and 32
 * greedily generated tokens.
 *
 * Metric: for every non-padded position (mask = 1) and every vocabulary entry,
 * |loupe − transformers| ≤ TOL · max(1, |transformers|), TOL = 1e-4; the loss likewise; and
 * the 32 generated ids equal. For qwen2-bf16, loupe (bf16 weights widened to f32, f32 compute)
 * matches transformers' f32 run on the same widened weights at 1e-4, and transformers' own
 * bf16 run within 5e-2 (bf16 keeps 8 bits of mantissa; activations are rounded at every op).
 *
 * bert: BertForSequenceClassification class logits and loss; bert-mlm: BertForMaskedLM
 * logits at every non-padded position and the masked-LM loss.
 *
 * Also: keeping per-layer state (FW_KEEP) or not gives the same numbers, FW_LAST gives the
 * last rows, generation with the KV cache equals argmax over full forwards, and the errors.
 * Run from the repository root (ctest does). */
#include "t.h"
#include "t_device.h"
#include "t_fixture.h"

#include <jansson.h>
#include <limits.h>
#include <stdlib.h>
#include <unistd.h>

#include "model/model.h"
#include "model/st.h"
#include "nn/forward.h"
#include "nn/generate.h"
#include "util/err.h"
#include "util/mem.h"

#define TOL 1e-4

static int32_t *ints(const st_file *f, const char *name, size_t *n) {
    return t_fx(f, name, ST_I32, n);
}

static float *floats(const st_file *f, const char *name, size_t *n) {
    return t_fx(f, name, ST_F32, n);
}

/* max over non-padded rows of |a−b| / max(1,|b|) */
static double rel_err(const float *a, const float *b, const int32_t *mask, int N, int V) {
    double worst = 0;
    for (int r = 0; r < N; r++) {
        if (mask && !mask[r]) continue;
        for (int v = 0; v < V; v++) {
            double d = fabs((double)a[(size_t)r * V + v] - b[(size_t)r * V + v]);
            d /= fmax(1.0, fabs((double)b[(size_t)r * V + v]));
            if (!(d <= worst)) worst = d;   /* NaN counts as worst */
        }
    }
    return worst;
}

/* The fixture `name` against the checkpoint in dir (NULL: tests/fixtures/models/<name>). */
static void lm_at(const char *name, const char *dir, int mlm) {
    char path[256];
    snprintf(path, sizeof path, "tests/fixtures/forward/%s.safetensors", name);
    st_file *f = st_open(path);
    T_CHECK(f != NULL, "%s", lp_geterr());
    snprintf(path, sizeof path, "tests/fixtures/models/%s", name);
    mdl_model *m = mdl_load(dir ? dir : path);
    T_CHECK(m != NULL, "%s", lp_geterr());
    if (!f || !m) { st_close(f); mdl_free(m); return; }
    fw_model *fm = fw_new(m, t_device());
    T_CHECK(fm != NULL, "%s", lp_geterr());
    size_t n;
    int32_t *ids = ints(f, "ids", &n), *mask = ints(f, "mask", NULL), *labels = ints(f, "labels", NULL);
    float *ref = floats(f, "logits", NULL), *loss = floats(f, "loss", NULL);
    const st_tensor *lt = st_find(f, "logits");
    int B = lt ? (int)lt->shape[0] : 0, T = lt ? (int)lt->shape[1] : 0, V = lt ? (int)lt->shape[2] : 0;
    if (fm && ids && ref && loss) {
        fw_batch in = {.B = B, .T = T, .ids = ids, .mask = mask, .labels = labels, .flags = FW_KEEP};
        fw_out out;
        int rc = fw_forward(fm, &in, &out);
        T_CHECK(rc == 0, "%s: %s", name, lp_geterr());
        if (rc == 0) {
            T_EQ_INT(out.R, B * T);
            T_EQ_INT(out.V, V);
            const be_backend *be = t_device();
            float *lg = t_host(be, out.logits, (size_t)B * T * V);
            double e = rel_err(lg, ref, mask, B * T, V);
            T_CHECK(e <= TOL, "%s: logits differ by %.3g (relative)", name, e);
            printf("%-14s logits max rel err %.2e", name, e);
            T_OK(out.has_loss);
            T_NEAR(out.loss, loss[0], TOL);
            printf("  loss %.6f vs %.6f", out.loss, loss[0]);
            /* without kept state: the same numbers */
            float *kept = lg;
            in.flags = 0;
            T_OK(fw_forward(fm, &in, &out) == 0);
            lg = t_host(be, out.logits, (size_t)B * T * V);
            T_OK(rel_err(lg, kept, NULL, B * T, V) == 0);
            free(lg);
            /* FW_LAST: the last row of each sequence */
            in.flags = FW_LAST;
            in.labels = NULL;
            T_OK(fw_forward(fm, &in, &out) == 0);
            T_EQ_INT(out.R, B);
            lg = t_host(be, out.logits, (size_t)B * V);
            for (int b = 0; b < B; b++)
                T_OK(rel_err(lg + (size_t)b * V, kept + ((size_t)b * T + T - 1) * V, NULL, 1, V) < 1e-6);
            free(lg);
            free(kept);
        }
        float *r16 = st_find(f, "logits_bf16") ? floats(f, "logits_bf16", NULL) : NULL;
        if (r16) {
            in.flags = 0;
            in.labels = NULL;
            T_OK(fw_forward(fm, &in, &out) == 0);
            float *lg = t_host(t_device(), out.logits, (size_t)B * T * V);
            double e = rel_err(lg, r16, mask, B * T, V);
            free(lg);
            T_CHECK(e <= 5e-2, "%s: logits vs transformers bf16 differ by %.3g", name, e);
            printf("  vs bf16 run %.2e", e);
            free(r16);
        }
        /* greedy generation through the KV cache */
        size_t np = 0, ng = 0;
        int32_t *prompt = mlm ? NULL : ints(f, "gen_prompt", &np);
        int32_t *gen = mlm ? NULL : ints(f, "gen_ids", &ng);
        if (prompt && gen) {
            gn_params p;
            gn_params_default(&p);
            p.max_tokens = (int)ng;
            gn_result r;
            rc = gn_generate(fm, prompt, (int)np, &p, &r);
            T_CHECK(rc == 0, "%s: %s", name, lp_geterr());
            T_EQ_INT(r.n, (int)ng);
            int same = 0;
            while (same < r.n && r.ids[same] == gen[same]) same++;
            T_CHECK(same == (int)ng, "%s: generation differs at token %d", name, same);
            printf("  generate %d/%zu equal\n", same, ng);
            gn_result_free(&r);
        }
        if (mlm) printf("\n");
        free(prompt);
        free(gen);
    }
    free(ids); free(mask); free(labels); free(ref); free(loss);
    fw_free(fm);
    mdl_free(m);
    st_close(f);
}

static void lm(const char *name, int mlm) { lm_at(name, NULL, mlm); }

/* The tiny `model` with config.json keys replaced by `patch` (JSON): its compute must be refused
 * with `why` in the message. */
static void refused_config(const char *model, const char *patch, const char *why) {
    char dir[] = "/tmp/loupe_cfg_XXXXXX", path[300], src[PATH_MAX];
    snprintf(path, sizeof path, "tests/fixtures/models/%s/config.json", model);
    json_t *cfg = json_load_file(path, 0, NULL), *p = json_loads(patch, 0, NULL);
    snprintf(path, sizeof path, "tests/fixtures/models/%s/model.safetensors", model);
    T_OK(cfg && p && mkdtemp(dir) && realpath(path, src));
    if (!cfg || !p) return;
    json_object_update(cfg, p);
    snprintf(path, sizeof path, "%s/config.json", dir);
    T_OK(json_dump_file(cfg, path, 0) == 0);
    snprintf(path, sizeof path, "%s/model.safetensors", dir);
    T_OK(symlink(src, path) == 0);
    mdl_model *m = mdl_load(dir);
    fw_model *fm = m ? fw_new(m, t_device()) : NULL;
    T_CHECK(m && !fm, "%s: %s computed", model, why);
    T_CONTAINS(lp_geterr(), why);
    printf("refused: %s\n", lp_geterr());
    fw_free(fm);
    mdl_free(m);
    json_decref(cfg), json_decref(p);
    snprintf(path, sizeof path, "rm -rf %s", dir);
    T_OK(system(path) == 0);
}
static void causal(const char *name) { lm(name, 0); }

static void test_llama(void) { causal("llama"); causal("llama-sharded"); }
static void test_mistral(void) { causal("mistral"); }
static void test_qwen2(void) { causal("qwen2"); causal("qwen2-bf16"); }
/* Qwen3: RMSNorm over each head's q and k before RoPE; head_dim 16 with 4 heads of hidden 32 */
static void test_qwen3(void) { causal("qwen3"); }
/* SmolLM3: Llama with a NoPE layer (no_rope_layers [1, 0, 1]: no rotary embedding in layer 1) */
static void test_smollm3(void) { causal("smollm3"); }
/* Phi-3: q, k, v sliced from one qkv_proj (GQA widths), gate and up from one gate_up_proj, a
 * sliding window of 8 on every layer */
static void test_phi3(void) {
    causal("phi3");
    /* what loupe does not compute yet is refused, not computed wrongly */
    refused_config("phi3", "{\"rope_parameters\": {\"rope_theta\": 10000.0, \"rope_type\": "
                   "\"default\", \"partial_rotary_factor\": 0.1}}", "gives 0 rotary dimensions");
    refused_config("phi3", "{\"rope_parameters\": {\"rope_theta\": 10000.0, \"rope_type\": "
                   "\"longrope\", \"short_factor\": [1, 1, 1], \"long_factor\": [1, 1, 1, 1]}}",
                   "short_factor must hold 4 numbers");
    /* LongRoPE: the long factors for the 20-token batch (past 16), both in the generation */
    causal("phi3-longrope");
    /* partial_rotary_factor 0.5 (Phi-4-mini: 0.75): RoPE on the first half of each head */
    causal("phi3-partial");
}
static void test_gemma(void) { causal("gemma"); }
static void test_gemma2(void) { causal("gemma2"); }
/* Gemma 3: Gemma 2's layout, Qwen3's head norms ((1+w)), sliding layers with their own RoPE
 * base beside the full layer's linearly scaled one, no soft-caps */
static void test_gemma3(void) {
    causal("gemma3");
    /* the same checkpoint with its config as transformers 4.5x wrote it (rope_theta,
       rope_scaling, rope_local_base_freq, sliding_window_pattern): make_forward_fixtures.py
       checks transformers gives the same logits for it */
    char dir[] = "/tmp/loupe_gemma3_XXXXXX", path[300], src[PATH_MAX];
    json_t *cfg = json_load_file("tests/fixtures/models/gemma3/config.json", 0, NULL);
    T_OK(cfg && mkdtemp(dir) && realpath("tests/fixtures/models/gemma3/model.safetensors", src));
    json_object_del(cfg, "layer_types");
    json_object_del(cfg, "rope_parameters");
    json_object_del(cfg, "_sliding_window_pattern");
    json_t *legacy = json_loads("{\"rope_theta\": 1000000.0, \"rope_scaling\": {\"rope_type\": "
                                "\"linear\", \"factor\": 4.0}, \"rope_local_base_freq\": 10000.0, "
                                "\"sliding_window_pattern\": 2}", 0, NULL);
    json_object_update(cfg, legacy);
    snprintf(path, sizeof path, "%s/config.json", dir);
    T_OK(json_dump_file(cfg, path, 0) == 0);
    snprintf(path, sizeof path, "%s/model.safetensors", dir);
    T_OK(symlink(src, path) == 0);
    printf("legacy config: ");
    lm_at("gemma3", dir, 0);
    json_decref(cfg), json_decref(legacy);
    snprintf(path, sizeof path, "rm -rf %s", dir);
    T_OK(system(path) == 0);
    /* EmbeddingGemma's bidirectional attention: refused, not computed causally */
    refused_config("gemma3", "{\"use_bidirectional_attention\": true}",
                   "use_bidirectional_attention");
}
static void test_gpt2(void) { causal("gpt2"); }

static void test_bert(void) {
    st_file *f = st_open("tests/fixtures/forward/bert.safetensors");
    mdl_model *m = mdl_load("tests/fixtures/models/bert");
    T_OK(f && m);
    if (!f || !m) { st_close(f); mdl_free(m); return; }
    fw_model *fm = fw_new(m, t_device());
    T_CHECK(fm != NULL, "%s", lp_geterr());
    int32_t *ids = ints(f, "ids", NULL), *mask = ints(f, "mask", NULL), *types = ints(f, "types", NULL);
    int32_t *labels = ints(f, "labels", NULL);
    float *ref = floats(f, "class_logits", NULL), *loss = floats(f, "loss", NULL);
    const st_tensor *it = st_find(f, "ids"), *ct = st_find(f, "class_logits");
    if (fm && ids && ref && it && ct) {
        int B = (int)it->shape[0], T = (int)it->shape[1], L = (int)ct->shape[1];
        fw_batch in = {.B = B, .T = T, .ids = ids, .mask = mask, .types = types, .labels = labels,
                       .flags = FW_KEEP};
        fw_out out;
        int rc = fw_forward(fm, &in, &out);
        T_CHECK(rc == 0, "bert: %s", lp_geterr());
        if (rc == 0) {
            T_EQ_INT(out.kind, FW_OUT_CLASSES);
            T_EQ_INT(out.R, B);
            T_EQ_INT(out.V, L);
            float *lg = t_host(t_device(), out.logits, (size_t)B * L);
            double e = rel_err(lg, ref, NULL, B, L);
            free(lg);
            T_CHECK(e <= TOL, "bert: class logits differ by %.3g", e);
            T_NEAR(out.loss, loss[0], TOL);
            printf("%-14s class logits max rel err %.2e  loss %.6f vs %.6f\n", "bert", e, out.loss, loss[0]);
        }
        /* an encoder does not generate */
        gn_params p;
        gn_params_default(&p);
        gn_result r;
        T_OK(gn_generate(fm, ids, 3, &p, &r) < 0);
        T_CONTAINS(lp_geterr(), "not a causal language model");
    }
    free(ids); free(mask); free(types); free(labels); free(ref); free(loss);
    fw_free(fm);
    mdl_free(m);
    st_close(f);
}

/* BertForMaskedLM: vocabulary logits at every position, loss without the shift */
static void test_bert_mlm(void) { lm("bert-mlm", 1); }

static void test_errors(void) {
    mdl_model *m = mdl_load("tests/fixtures/models/llama");
    T_OK(m != NULL);
    if (!m) return;
    fw_model *fm = fw_new(m, t_device());
    T_OK(fm != NULL);
    fw_out out;
    int32_t ids[80] = {0};
    fw_batch in = {.B = 1, .T = 0, .ids = ids};
    T_OK(fw_forward(fm, &in, &out) < 0);
    T_CONTAINS(lp_geterr(), "empty input");
    in.T = 65;   /* max_position_embeddings is 64 */
    T_OK(fw_forward(fm, &in, &out) < 0);
    T_CONTAINS(lp_geterr(), "longer than this model's 64 positions");
    in.T = 4;
    ids[2] = 256;
    T_OK(fw_forward(fm, &in, &out) < 0);
    T_CONTAINS(lp_geterr(), "token id 256 (row 0, position 2) is outside the vocabulary [0, 256)");
    ids[2] = 5;
    int32_t labels[4] = {1, 2, 300, 4};
    in.labels = labels;
    T_OK(fw_forward(fm, &in, &out) < 0);
    T_CONTAINS(lp_geterr(), "300");
    in.labels = NULL;
    T_OK(fw_forward(fm, &in, &out) == 0);   /* the model is still usable after errors */
    gn_params p;
    gn_params_default(&p);
    gn_result r;
    T_OK(gn_generate(fm, ids, 0, &p, &r) < 0);
    T_CONTAINS(lp_geterr(), "empty prompt");
    T_OK(gn_generate(fm, ids, 65, &p, &r) < 0);
    T_CONTAINS(lp_geterr(), "64 positions");
    /* generation stops at the last position: tokens for positions 60..64, the last one
     * predicted but never fed */
    p.max_tokens = 100;
    T_OK(gn_generate(fm, ids, 60, &p, &r) == 0);
    T_EQ_INT(r.n, 5);
    T_EQ_INT(r.stop, GN_STOP_LENGTH);
    gn_result_free(&r);
    fw_free(fm);
    mdl_free(m);

    /* a weight the forward needs, gone (loading refuses such files, so the name is changed
     * in memory): a clear error on the first forward */
    m = mdl_load("tests/fixtures/models/llama");
    for (size_t i = 0; m && i < m->ntensors; i++)
        if (!strcmp(m->tensors[i].name, "model.layers.1.mlp.up_proj.weight")) {
            char *keep = m->tensors[i].name;
            m->tensors[i].name = "model.layers.1.mlp.renamed.weight";
            fm = fw_new(m, t_device());
            in.T = 3;
            T_OK(fm && fw_forward(fm, &in, &out) < 0);
            T_CONTAINS(lp_geterr(), "weight `layers.1.mlp.up_proj.weight` is missing from the checkpoint");
            fw_free(fm);
            m->tensors[i].name = keep;
        }
    mdl_free(m);

    /* a bare safetensors file: inspection only */
    m = mdl_load("tests/fixtures/models/llama/model.safetensors");
    if (m && !m->arch) {
        T_OK(fw_new(m, t_device()) == NULL);
        T_CONTAINS(lp_geterr(), "no compute for an unknown architecture; inspection only");
    }
    mdl_free(m);
    st_file *sf = st_open("tests/fixtures/models/llama/model.safetensors");
    if (sf) {
        mdl_model *bare = mdl_from_files(&sf, 1, NULL, "bare");
        T_OK(bare && fw_new(bare, t_device()) == NULL);
        T_CONTAINS(lp_geterr(), "inspection only");
        mdl_free(bare);
        st_close(sf);
    }
}

/* eos from generation_config.json (over config.json's), and generation stopping at it. */
static void test_eos(void) {
    mdl_model *m = mdl_load("tests/fixtures/models/llama");
    T_OK(m != NULL);
    if (!m) return;
    int32_t eos[4];
    T_EQ_INT(gn_eos_from_model(m, eos, 4), 1);   /* config.json: eos_token_id 2 */
    T_EQ_INT(eos[0], 2);
    mdl_free(m);
    /* a copy of the checkpoint with a generation_config.json naming the 3rd greedy token, in
       a directory of this process's own (tests/gpu/emu/run_backend.sh runs two at a time) */
    char dir[64], cmd[400], gcfg[96];
    snprintf(dir, sizeof dir, "out/test_fw_eos.%ld", (long)getpid());
    snprintf(cmd, sizeof cmd,
             "rm -rf %s && mkdir -p %s && cp tests/fixtures/models/llama/config.json "
             "tests/fixtures/models/llama/model.safetensors %s/", dir, dir, dir);
    snprintf(gcfg, sizeof gcfg, "%s/generation_config.json", dir);
    T_OK(system(cmd) == 0);
    st_file *f = st_open("tests/fixtures/forward/llama.safetensors");
    size_t np, ng;
    int32_t *prompt = f ? ints(f, "gen_prompt", &np) : NULL, *gen = f ? ints(f, "gen_ids", &ng) : NULL;
    if (prompt && gen) {
        FILE *g = fopen(gcfg, "w");
        fprintf(g, "{\"eos_token_id\": [%d, 250], \"do_sample\": false}\n", gen[2]);
        fclose(g);
        m = mdl_load(dir);
        T_OK(m != NULL);
        T_EQ_INT(gn_eos_from_model(m, eos, 4), 2);
        T_EQ_INT(eos[0], gen[2]);
        fw_model *fm = fw_new(m, t_device());
        gn_params p;
        gn_params_default(&p);
        p.stop_ids = eos;
        p.nstop = 2;
        gn_result r;
        T_OK(gn_generate(fm, prompt, (int)np, &p, &r) == 0);
        int first = 0;   /* the first position where the eos token comes */
        while (first < (int)ng && gen[first] != gen[2]) first++;
        T_EQ_INT(r.n, first + 1);
        T_EQ_INT(r.stop, GN_STOP_EOS);
        gn_result_free(&r);
        fw_free(fm);
        mdl_free(m);
    }
    free(prompt);
    free(gen);
    st_close(f);
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    T_OK(system(cmd) == 0);
}

/* Every allocation of fw_new, the first forward and a generation failing in turn: a clean
 * error each time (and the next attempt works). */
static void test_oom(void) {
    mdl_model *m = mdl_load("tests/fixtures/models/gemma2");
    T_OK(m != NULL);
    if (!m) return;
    int32_t ids[6] = {5, 6, 7, 8, 9, 10}, labels[6] = {5, 6, 7, 8, 9, 10};
    int failures = 0, ok = 0;
    for (long n = 1; n < 400 && ok < 3; n++) {
        lp_mem_fail_after(n);
        fw_model *fm = fw_new(m, t_device());
        int rc = -1;
        if (fm) {
            fw_batch in = {.B = 2, .T = 3, .ids = ids, .labels = labels, .flags = FW_KEEP};
            fw_out out;
            rc = fw_forward(fm, &in, &out);
            if (rc == 0) {
                gn_params p;
                gn_params_default(&p);
                p.max_tokens = 4;
                gn_result r;
                rc = gn_generate(fm, ids, 3, &p, &r);
                gn_result_free(&r);
            }
        }
        lp_mem_fail_after(0);
        if (rc < 0) {
            failures++;
            T_CHECK(strstr(lp_geterr(), "out of memory") || strstr(lp_geterr(), "out of GPU memory"),
                    "n=%ld: %s", n, lp_geterr());
        } else {
            ok++;
        }
        fw_free(fm);
    }
    T_OK(failures > 10);
    T_OK(ok > 0);
    mdl_free(m);
}

/* Sampling: seeded draws repeat, top_k = 1 is greedy, a tiny top_p is greedy. */
static void test_sampling(void) {
    float base[8] = {0.1f, 2.0f, 1.5f, -1.0f, 2.0f, 0.0f, 0.3f, 1.9f}, l[8];
    gn_params p;
    gn_params_default(&p);
    uint64_t s = 1;
    memcpy(l, base, sizeof l);
    T_EQ_INT(gn_sample(l, 8, &p, &s), 1);   /* greedy: first of the equal maxima */
    p.temperature = 1.0;
    p.seed = 7;
    int32_t a[20], b[20];
    uint64_t s1 = 7, s2 = 7;
    for (int i = 0; i < 20; i++) {
        memcpy(l, base, sizeof l);
        a[i] = gn_sample(l, 8, &p, &s1);
        memcpy(l, base, sizeof l);
        b[i] = gn_sample(l, 8, &p, &s2);
        T_EQ_INT(a[i], b[i]);
    }
    p.top_k = 1;
    for (int i = 0; i < 10; i++) {
        memcpy(l, base, sizeof l);
        int32_t t = gn_sample(l, 8, &p, &s1);
        T_OK(t == 1 || t == 4);   /* ties with the k-th stay */
    }
    p.top_k = 0;
    p.top_p = 1e-6;
    for (int i = 0; i < 10; i++) {
        memcpy(l, base, sizeof l);
        T_EQ_INT(gn_sample(l, 8, &p, &s1), 1);
    }
    p.top_p = 1.0;
    p.top_k = 3;   /* only 1, 4, 7 */
    for (int i = 0; i < 50; i++) {
        memcpy(l, base, sizeof l);
        int32_t t = gn_sample(l, 8, &p, &s1);
        T_OK(t == 1 || t == 4 || t == 7);
    }
}

int main(void) {
    printf("device %s\n", t_device()->name);
    T_RUN(test_llama);
    T_RUN(test_mistral);
    T_RUN(test_qwen2);
    T_RUN(test_qwen3);
    T_RUN(test_smollm3);
    T_RUN(test_phi3);
    T_RUN(test_gemma);
    T_RUN(test_gemma2);
    T_RUN(test_gemma3);
    T_RUN(test_gpt2);
    T_RUN(test_bert);
    T_RUN(test_bert_mlm);
    T_RUN(test_errors);
    T_RUN(test_sampling);
    T_RUN(test_eos);
    T_RUN(test_oom);
    return t_done();
}
