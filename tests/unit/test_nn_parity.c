/* test_nn_parity.c — loupe's ops against PyTorch / transformers / peft.
 *
 * tests/fixtures/ops/ holds what tools/make_op_fixtures.py computed with the libraries
 * (index.json lists the cases, ops.safetensors the tensors "<case>.<name>"). Every case is
 * run through the reference ops and through each backend, forward and backward, and must
 * agree within 1e-5 relative to the tensor's magnitude (test_nn_util.h). A case whose op
 * this file does not know fails, so new fixtures cannot be skipped silently.
 *
 * The safetensors reader here is deliberately minimal (whole file read, F32/I32 only);
 * the real one is runtime/model's. Run from the repository root (ctest does). */
#include <jansson.h>
#include <stdlib.h>

#include "backend/backend.h"
#include "test_nn_util.h"

#ifndef TOL
#define TOL 1e-5
#endif
#define DIR "tests/fixtures/ops/"

static char *st_buf;       // the whole ops.safetensors file
static json_t *st_header;  // its JSON header
static size_t st_data;     // offset of the data section
static json_t *index_json;

static int load_fixtures(void) {
    FILE *f = fopen(DIR "ops.safetensors", "rb");
    if (!f) return -1;
    fseek(f, 0, SEEK_END);
    long len = ftell(f);
    fseek(f, 0, SEEK_SET);
    st_buf = malloc((size_t)len);
    if (fread(st_buf, 1, (size_t)len, f) != (size_t)len) return fclose(f), -1;
    fclose(f);
    uint64_t hlen = 0;
    for (int i = 7; i >= 0; i--) hlen = hlen << 8 | (unsigned char)st_buf[i];
    json_error_t err;
    st_header = json_loadb(st_buf + 8, (size_t)hlen, 0, &err);
    st_data = 8 + (size_t)hlen;
    index_json = json_load_file(DIR "index.json", 0, &err);
    return st_header && index_json ? 0 : -1;
}

/* Tensor `name` of case `c` (NULL if absent); *n gets its element count. The data is copied
 * into an aligned tracked buffer, since offsets in the file only promise byte alignment. */
static void *tensor(const char *c, const char *name, size_t *n, const char *want_dtype) {
    char key[160];
    snprintf(key, sizeof key, "%s.%s", c, name);
    json_t *e = json_object_get(st_header, key);
    if (!e) return NULL;
    json_t *off = json_object_get(e, "data_offsets");
    size_t b = (size_t)json_integer_value(json_array_get(off, 0));
    size_t end = (size_t)json_integer_value(json_array_get(off, 1));
    T_STR(json_string_value(json_object_get(e, "dtype")), want_dtype);
    size_t count = (end - b) / 4;
    if (n) *n = count;
    void *p = tn_zeros(count);
    memcpy(p, st_buf + st_data + b, end - b);
    return p;
}

static float *F(const char *c, const char *name, size_t *n) {
    float *p = tensor(c, name, n, "F32");
    T_CHECK(p != NULL, "fixture %s.%s missing", c, name);
    if (!p) {   // keep going with zeros so one missing tensor reports instead of crashing
        p = tn_zeros(1 << 16);
        if (n) *n = 0;
    }
    return p;
}

static int *I(const char *c, const char *name, size_t *n) {
    int *p = tensor(c, name, n, "I32");
    T_CHECK(p != NULL, "fixture %s.%s missing", c, name);
    return p ? p : tn_ints(1 << 16);
}

static double P(json_t *params, const char *key) {
    json_t *v = json_object_get(params, key);
    T_CHECK(v != NULL, "parameter %s missing", key);
    return json_number_value(v);
}

static int shape_dim(const char *c, const char *name, int i) {
    char key[160];
    snprintf(key, sizeof key, "%s.%s", c, name);
    return (int)json_integer_value(
        json_array_get(json_object_get(json_object_get(st_header, key), "shape"), i));
}

#define CHECK(got, want, n, what) TN_CLOSE((got), (want), (n), TOL, "%s [%s] %s", c, be->name, what)

/* ---- one function per fixture op; `be` is the backend under test ------------------------ */

static void run_embedding(const be_backend *be, const char *c, json_t *p) {
    size_t nid, nt, no;
    int *ids = I(c, "ids", &nid);
    float *table = F(c, "table", &nt), *want = F(c, "out", &no), *dout = F(c, "dout", NULL);
    int C = shape_dim(c, "table", 1), V = (int)(nt / C);
    float *out = tn_zeros(no), *dt = tn_zeros(nt);
    T_EQ_INT(be->embedding_forward(out, ids, table, (int)nid, V, C), 0);
    be->embedding_backward(dt, dout, ids, (int)nid, C);
    CHECK(out, want, no, "out");
    CHECK(dt, F(c, "dtable", NULL), nt, "dtable");
}

static void run_linear(const be_backend *be, const char *c, json_t *p, int conv) {
    size_t ni, no, nw;
    float *x = F(c, "inp", &ni), *w = F(c, "weight", &nw), *b = F(c, "bias", NULL);
    float *want = F(c, "out", &no), *dout = F(c, "dout", NULL);
    int OUT = conv ? shape_dim(c, "weight", 1) : shape_dim(c, "weight", 0);
    int IN = (int)(nw / OUT), N = (int)(ni / IN);
    float *out = tn_zeros(no), *dx = tn_zeros(ni), *dw = tn_zeros(nw), *db = tn_zeros(OUT);
    (conv ? be->conv1d_forward : be->linear_forward)(out, x, w, b, N, IN, OUT);
    (conv ? be->conv1d_backward : be->linear_backward)(dx, dw, db, dout, x, w, N, IN, OUT);
    CHECK(out, want, no, "out");
    CHECK(dx, F(c, "dinp", NULL), ni, "dinp");
    CHECK(dw, F(c, "dweight", NULL), nw, "dweight");
    CHECK(db, F(c, "dbias", NULL), (size_t)OUT, "dbias");
}

static void run_lora(const be_backend *be, const char *c, json_t *p) {
    size_t ni, no, na;
    float *x = F(c, "inp", &ni), *A = F(c, "A", &na), *B = F(c, "B", NULL);
    float *want = F(c, "out", &no), *dout = F(c, "dout", NULL);
    float *mask = tensor(c, "mask", NULL, "F32");
    int R = (int)P(p, "r"), IN = (int)(na / R), N = (int)(ni / IN), OUT = (int)(no / N);
    float scale = (float)P(p, "scale");
    float *out = tn_zeros(no), *h = tn_zeros((size_t)N * R), *dh = tn_zeros((size_t)N * R);
    float *dx = tn_zeros(ni), *dA = tn_zeros(na), *dB = tn_zeros((size_t)OUT * R);
    float *w = tensor(c, "weight", NULL, "F32");
    if (w) {   // PEFT: the base layer's output first, then the adapter adds to it
        float *bias = F(c, "bias", NULL);
        be->linear_forward(out, x, w, bias, N, IN, OUT);
        be->linear_backward(dx, NULL, NULL, dout, x, w, N, IN, OUT);
    }
    be->lora_forward(out, h, x, mask, A, B, scale, N, IN, OUT, R);
    be->lora_backward(dx, dA, dB, dh, dout, h, x, mask, A, B, scale, N, IN, OUT, R);
    CHECK(out, want, no, "out");
    CHECK(dx, F(c, "dinp", NULL), ni, "dinp");
    CHECK(dA, F(c, "dA", NULL), na, "dA");
    CHECK(dB, F(c, "dB", NULL), (size_t)OUT * R, "dB");
}

/* PEFT IA3 on a two-layer model: k (output scaling) then down (feed-forward, input scaling). */
static void run_ia3(const be_backend *be, const char *c, json_t *p) {
    size_t nx, nlk, nld, no;
    float *x = F(c, "inp", &nx), *wk = F(c, "k_weight", NULL), *lk = F(c, "l_k", &nlk);
    float *wd = F(c, "down_weight", NULL), *bd = F(c, "down_bias", NULL);
    float *ld = F(c, "l_down", &nld), *want = F(c, "out", &no), *dout = F(c, "dout", NULL);
    int K = (int)nlk, M = (int)nld, N = (int)(no / (size_t)shape_dim(c, "out", 1));
    int IN = (int)(nx / N), OUT = (int)(no / N);
    T_EQ_INT(K, M);   // k's output feeds down's input
    float *h = tn_zeros((size_t)N * K), *hs = tn_zeros((size_t)N * K), *hd = tn_zeros((size_t)N * K);
    float *out = tn_zeros(no), *dhd = tn_zeros((size_t)N * K), *dhs = tn_zeros((size_t)N * K);
    float *dh = tn_zeros((size_t)N * K), *dx = tn_zeros(nx), *dlk = tn_zeros(K), *dld = tn_zeros(M);
    be->linear_forward(h, x, wk, NULL, N, IN, K);
    be->channel_scale_forward(hs, h, lk, N, K);   // k_proj output · l_k
    be->channel_scale_forward(hd, hs, ld, N, M);  // down_proj input · l_down
    be->linear_forward(out, hd, wd, bd, N, M, OUT);
    be->linear_backward(dhd, NULL, NULL, dout, hd, wd, N, M, OUT);
    be->channel_scale_backward(dhs, dld, dhd, hs, ld, N, M);
    be->channel_scale_backward(dh, dlk, dhs, h, lk, N, K);
    be->linear_backward(dx, NULL, NULL, dh, x, wk, N, IN, K);
    CHECK(out, want, no, "out");
    CHECK(dx, F(c, "dinp", NULL), nx, "dinp");
    CHECK(dlk, F(c, "dl_k", NULL), (size_t)K, "dl_k");
    CHECK(dld, F(c, "dl_down", NULL), (size_t)M, "dl_down");
}

static void run_norm(const be_backend *be, const char *c, json_t *p, int ln) {
    size_t n, C;
    float *x = F(c, "inp", &n), *w = F(c, "weight", &C), *want = F(c, "out", NULL);
    float *dout = F(c, "dout", NULL);
    int N = (int)(n / C);
    float eps = (float)P(p, "eps");
    float *out = tn_zeros(n), *mean = tn_zeros(N), *rstd = tn_zeros(N);
    float *dx = tn_zeros(n), *dw = tn_zeros(C), *db = tn_zeros(C);
    if (ln) {
        float *b = F(c, "bias", NULL);
        be->layernorm_forward(out, mean, rstd, x, w, b, eps, N, (int)C);
        be->layernorm_backward(dx, dw, db, dout, mean, rstd, x, w, N, (int)C);
        CHECK(db, F(c, "dbias", NULL), C, "dbias");
    } else {
        int add_one = (int)P(p, "add_one");
        be->rmsnorm_forward(out, rstd, x, w, eps, add_one, N, (int)C);
        be->rmsnorm_backward(dx, dw, dout, rstd, x, w, add_one, N, (int)C);
    }
    CHECK(out, want, n, "out");
    CHECK(dx, F(c, "dinp", NULL), n, "dinp");
    CHECK(dw, F(c, "dweight", NULL), C, "dweight");
}

static void run_rope(const be_backend *be, const char *c, json_t *p) {
    int D = (int)P(p, "D"), H = (int)P(p, "H"), KVH = (int)P(p, "KVH");
    nn_rope_config cfg = {
        .theta = P(p, "theta"), .factor = P(p, "factor"),
        .low_freq_factor = P(p, "low_freq_factor"), .high_freq_factor = P(p, "high_freq_factor"),
        .original_max_position = (int)P(p, "original_max_position"),
        .max_position = (int)P(p, "max_position")};
    T_EQ_INT(nn_rope_type_from_name(&cfg.type, json_string_value(json_object_get(p, "type"))), 0);
    size_t npos, nq, nk;
    int *pos = I(c, "pos", &npos);
    int N = (int)npos;
    float inv[256], *cos_t = tn_zeros((size_t)N * D / 2), *sin_t = tn_zeros((size_t)N * D / 2);
    nn_rope_inv_freq(inv, &cfg, D, (int)P(p, "seq_len"));
    nn_rope_table(cos_t, sin_t, inv, pos, N, D);
    CHECK(inv, F(c, "inv_freq", NULL), (size_t)D / 2, "inv_freq");
    CHECK(cos_t, F(c, "cos", NULL), (size_t)N * D / 2, "cos");
    CHECK(sin_t, F(c, "sin", NULL), (size_t)N * D / 2, "sin");
    float *q = F(c, "q", &nq), *k = F(c, "k", &nk);
    float *qo = tn_zeros(nq), *ko = tn_zeros(nk), *dq = tn_zeros(nq), *dk = tn_zeros(nk);
    be->rope_forward(qo, q, cos_t, sin_t, N, H, D);
    be->rope_forward(ko, k, cos_t, sin_t, N, KVH, D);
    be->rope_backward(dq, F(c, "dq_out", NULL), cos_t, sin_t, N, H, D);
    be->rope_backward(dk, F(c, "dk_out", NULL), cos_t, sin_t, N, KVH, D);
    CHECK(qo, F(c, "q_out", NULL), nq, "q_out");
    CHECK(ko, F(c, "k_out", NULL), nk, "k_out");
    CHECK(dq, F(c, "dq", NULL), nq, "dq");
    CHECK(dk, F(c, "dk", NULL), nk, "dk");
}

static void run_attention(const be_backend *be, const char *c, json_t *p) {
    int B = (int)P(p, "B"), T = (int)P(p, "T"), H = (int)P(p, "H"), KVH = (int)P(p, "KVH");
    int D = (int)P(p, "D");
    nn_attn_params ap = {.scale = (float)P(p, "scale"), .softcap = (float)P(p, "softcap"),
                         .causal = (int)P(p, "causal"), .window = (int)P(p, "window"),
                         .dropout = tensor(c, "dropout", NULL, "F32")};
    size_t nq = (size_t)B * T * H * D, nk = (size_t)B * T * KVH * D, np = (size_t)B * H * T * T;
    int *am = I(c, "amask", NULL);
    float *q = F(c, "q", NULL), *k = F(c, "k", NULL), *v = F(c, "v", NULL);
    float *want = F(c, "out", NULL), *wprobs = F(c, "probs", NULL), *dout = F(c, "dout", NULL);
    float *out = tn_zeros(nq), *probs = tn_zeros(np), *ds = tn_zeros(np);
    float *dq = tn_zeros(nq), *dk = tn_zeros(nk), *dv = tn_zeros(nk);
    be->attention_forward(out, probs, q, k, v, am, &ap, B, T, H, KVH, D);
    be->attention_backward(dq, dk, dv, ds, dout, probs, q, k, v, am, &ap, B, T, H, KVH, D);
    // Padding queries are where loupe (zeros) and eager transformers (uniform weights over
    // a fully masked row) differ by design: compare only rows of real tokens.
    for (int b = 0; b < B; b++)
        for (int t = 0; t < T; t++)
            if (!am[b * T + t]) {
                memset(out + ((size_t)b * T + t) * H * D, 0, (size_t)H * D * sizeof(float));
                memset(want + ((size_t)b * T + t) * H * D, 0, (size_t)H * D * sizeof(float));
                for (int h = 0; h < H; h++) {
                    size_t row = (((size_t)b * H + h) * T + t) * T;
                    memset(probs + row, 0, (size_t)T * sizeof(float));
                    memset(wprobs + row, 0, (size_t)T * sizeof(float));
                }
            }
    CHECK(out, want, nq, "out");
    CHECK(probs, wprobs, np, "probs");
    CHECK(dq, F(c, "dq", NULL), nq, "dq");
    CHECK(dk, F(c, "dk", NULL), nk, "dk");
    CHECK(dv, F(c, "dv", NULL), nk, "dv");
}

static void run_act(const be_backend *be, const char *c, json_t *p, int gated) {
    nn_act act;
    T_EQ_INT(nn_act_from_name(&act, json_string_value(json_object_get(p, "act"))), 0);
    size_t n;
    float *dout = F(c, "dout", NULL), *want = F(c, "out", &n), *out = tn_zeros(n);
    float *dx = tn_zeros(n), *du = tn_zeros(n);
    if (gated) {
        float *g = F(c, "gate", NULL), *u = F(c, "up", NULL);
        be->gated_forward(out, g, u, act, n);
        be->gated_backward(dx, du, dout, g, u, act, n);
        CHECK(dx, F(c, "dgate", NULL), n, "dgate");
        CHECK(du, F(c, "dup", NULL), n, "dup");
    } else {
        float *x = F(c, "inp", NULL);
        be->act_forward(out, x, act, n);
        be->act_backward(dx, dout, x, act, n);
        CHECK(dx, F(c, "dinp", NULL), n, "dinp");
    }
    CHECK(out, want, n, "out");
}

static void run_softmax(const be_backend *be, const char *c, json_t *p) {
    size_t n;
    float *x = F(c, "inp", &n), *want = F(c, "out", NULL), *dout = F(c, "dout", NULL);
    int C = shape_dim(c, "inp", 1), N = (int)(n / C);
    float *out = tn_zeros(n), *dx = tn_zeros(n);
    be->softmax_forward(out, x, N, C);
    be->softmax_backward(dx, dout, out, N, C);
    CHECK(out, want, n, "out");
    CHECK(dx, F(c, "dinp", NULL), n, "dinp");
}

/* The causal-LM shift as docs/compute.md tells callers to do it: row t predicts labels[t+1],
 * the last row of each sequence predicts nothing (-100). */
static void run_loss(const be_backend *be, const char *c, json_t *p, int causal) {
    size_t n, nt;
    float *logits = F(c, "logits", &n);
    int *targets;
    int N, V;
    if (causal) {
        int B = (int)P(p, "B"), T = (int)P(p, "T");
        V = (int)P(p, "V");
        N = B * T;
        int *labels = I(c, "labels", &nt);
        targets = tn_ints(N);
        for (int b = 0; b < B; b++)
            for (int t = 0; t < T; t++)
                targets[b * T + t] = t + 1 < T ? labels[b * T + t + 1] : -100;
    } else {
        targets = I(c, "targets", &nt);
        N = (int)nt;
        V = (int)(n / nt);
    }
    float loss, *lse = tn_zeros(N), *dl = tn_zeros(n);
    int count;
    T_EQ_INT(be->cross_entropy_forward(&loss, lse, &count, logits, targets, N, V), 0);
    be->cross_entropy_backward(dl, 1.0f, lse, logits, targets, count, N, V);
    CHECK(&loss, F(c, "loss", NULL), 1, "loss");
    CHECK(dl, F(c, "dlogits", NULL), n, "dlogits");
}

static void run_softcap(const be_backend *be, const char *c, json_t *p) {
    size_t n;
    float *x = F(c, "inp", &n), *out = tn_zeros(n), *dx = tn_zeros(n), cap = (float)P(p, "cap");
    be->softcap_forward(out, x, cap, n);
    be->softcap_backward(dx, F(c, "dout", NULL), out, cap, n);
    CHECK(out, F(c, "out", NULL), n, "out");
    CHECK(dx, F(c, "dinp", NULL), n, "dinp");
}

static void run_optim(const be_backend *be, const char *c, json_t *p, int adamw) {
    size_t n;
    float *p0 = F(c, "param0", &n);
    float *param = tn_copy(p0, n), *m = tn_zeros(n), *v = tn_zeros(n);
    for (int t = 1; t <= 3; t++) {
        char g[16], want[16];
        snprintf(g, sizeof g, "grad%d", t);
        snprintf(want, sizeof want, "param%d", t);
        if (adamw)
            be->adamw_step(param, m, v, F(c, g, NULL), n, P(p, "lr"), P(p, "beta1"),
                           P(p, "beta2"), P(p, "eps"), P(p, "weight_decay"), t);
        else
            be->sgd_step(param, m, F(c, g, NULL), n, P(p, "lr"), P(p, "momentum"),
                         P(p, "weight_decay"), t);
        CHECK(param, F(c, want, NULL), n, want);
    }
    CHECK(m, F(c, adamw ? "m" : "buf", NULL), n, adamw ? "exp_avg" : "momentum_buffer");
    if (adamw) CHECK(v, F(c, "v", NULL), n, "exp_avg_sq");
}

static void run_clip(const be_backend *be, const char *c, json_t *p) {
    size_t sz[3];
    float *g[3];
    for (int i = 0; i < 3; i++) {
        char nm[8];
        snprintf(nm, sizeof nm, "g%d", i);
        float *g0 = F(c, nm, &sz[i]);
        g[i] = tn_copy(g0, sz[i]);
    }
    float total = (float)be->clip_grad_norm(g, sz, 3, P(p, "max_norm"));
    CHECK(&total, F(c, "total", NULL), 1, "total_norm");
    for (int i = 0; i < 3; i++) {
        char nm[8];
        snprintf(nm, sizeof nm, "c%d", i);
        CHECK(g[i], F(c, nm, NULL), sz[i], nm);
    }
}

/* A whole Llama decoder layer with LoRA on q and v, composed from the ops the way a model
 * forward and backward will (docs/compute.md), against transformers + peft. */
static void run_llama_block(const be_backend *be, const char *c, json_t *p) {
    int B = (int)P(p, "B"), T = (int)P(p, "T"), C = (int)P(p, "C"), H = (int)P(p, "H");
    int KVH = (int)P(p, "KVH"), D = (int)P(p, "D"), I_ = (int)P(p, "I"), R = (int)P(p, "r");
    int N = B * T, QD = H * D, KD = KVH * D;
    float eps = (float)P(p, "eps"), ls = (float)P(p, "lora_scale");
    float *x = F(c, "x", NULL), *dy = F(c, "dy", NULL), *ln1 = F(c, "ln1", NULL);
    float *ln2 = F(c, "ln2", NULL), *Wq = F(c, "q_proj", NULL), *Wk = F(c, "k_proj", NULL);
    float *Wv = F(c, "v_proj", NULL), *Wo = F(c, "o_proj", NULL), *Wg = F(c, "gate_proj", NULL);
    float *Wu = F(c, "up_proj", NULL), *Wd = F(c, "down_proj", NULL);
    float *qA = F(c, "q_A", NULL), *qB = F(c, "q_B", NULL), *vA = F(c, "v_A", NULL);
    float *vB = F(c, "v_B", NULL);
    int *am = I(c, "amask", NULL);
    // rope tables: positions 0..T-1 in every row, as transformers for a padded batch
    float inv[64], *cs = tn_zeros((size_t)N * D / 2), *sn = tn_zeros((size_t)N * D / 2);
    int *pos = tn_ints(N);
    for (int n = 0; n < N; n++) pos[n] = n % T;
    nn_rope_config rc = {.type = NN_ROPE_DEFAULT, .theta = P(p, "theta")};
    nn_rope_inv_freq(inv, &rc, D, T);
    nn_rope_table(cs, sn, inv, pos, N, D);
    // forward, keeping what backward needs
    float *xn = tn_zeros((size_t)N * C), *r1 = tn_zeros(N), *q = tn_zeros((size_t)N * QD);
    float *k = tn_zeros((size_t)N * KD), *v = tn_zeros((size_t)N * KD), *hq = tn_zeros((size_t)N * R);
    float *hv = tn_zeros((size_t)N * R), *qr = tn_zeros((size_t)N * QD), *kr = tn_zeros((size_t)N * KD);
    float *probs = tn_zeros((size_t)B * H * T * T), *a = tn_zeros((size_t)N * QD);
    float *o = tn_zeros((size_t)N * C), *h = tn_zeros((size_t)N * C), *hn = tn_zeros((size_t)N * C);
    float *r2 = tn_zeros(N), *g = tn_zeros((size_t)N * I_), *u = tn_zeros((size_t)N * I_);
    float *m = tn_zeros((size_t)N * I_), *d = tn_zeros((size_t)N * C), *y = tn_zeros((size_t)N * C);
    nn_attn_params ap = {.scale = 1.0f / sqrtf((float)D), .causal = 1};
    be->rmsnorm_forward(xn, r1, x, ln1, eps, 0, N, C);
    be->linear_forward(q, xn, Wq, NULL, N, C, QD);
    be->lora_forward(q, hq, xn, NULL, qA, qB, ls, N, C, QD, R);
    be->linear_forward(k, xn, Wk, NULL, N, C, KD);
    be->linear_forward(v, xn, Wv, NULL, N, C, KD);
    be->lora_forward(v, hv, xn, NULL, vA, vB, ls, N, C, KD, R);
    be->rope_forward(qr, q, cs, sn, N, H, D);
    be->rope_forward(kr, k, cs, sn, N, KVH, D);
    be->attention_forward(a, probs, qr, kr, v, am, &ap, B, T, H, KVH, D);
    be->linear_forward(o, a, Wo, NULL, N, QD, C);
    be->add_forward(h, x, o, (size_t)N * C);
    be->rmsnorm_forward(hn, r2, h, ln2, eps, 0, N, C);
    be->linear_forward(g, hn, Wg, NULL, N, C, I_);
    be->linear_forward(u, hn, Wu, NULL, N, C, I_);
    be->gated_forward(m, g, u, NN_ACT_SILU, (size_t)N * I_);
    be->linear_forward(d, m, Wd, NULL, N, I_, C);
    be->add_forward(y, h, d, (size_t)N * C);
    CHECK(y, F(c, "y", NULL), (size_t)N * C, "y");
    // backward: frozen base weights (dweight NULL), LoRA A/B trainable
    float *dh = tn_zeros((size_t)N * C), *dd = tn_zeros((size_t)N * C), *dm = tn_zeros((size_t)N * I_);
    float *dg = tn_zeros((size_t)N * I_), *du = tn_zeros((size_t)N * I_), *dhn = tn_zeros((size_t)N * C);
    float *dx = tn_zeros((size_t)N * C), *doo = tn_zeros((size_t)N * C), *da = tn_zeros((size_t)N * QD);
    float *dqr = tn_zeros((size_t)N * QD), *dkr = tn_zeros((size_t)N * KD), *dv = tn_zeros((size_t)N * KD);
    float *dq = tn_zeros((size_t)N * QD), *dk = tn_zeros((size_t)N * KD), *dxn = tn_zeros((size_t)N * C);
    float *dS = tn_zeros((size_t)B * H * T * T), *dhs = tn_zeros((size_t)N * R);
    float *dqA = tn_zeros((size_t)R * C), *dqB = tn_zeros((size_t)QD * R);
    float *dvA = tn_zeros((size_t)R * C), *dvB = tn_zeros((size_t)KD * R);
    be->add_backward(dh, dd, dy, (size_t)N * C);
    be->linear_backward(dm, NULL, NULL, dd, m, Wd, N, I_, C);
    be->gated_backward(dg, du, dm, g, u, NN_ACT_SILU, (size_t)N * I_);
    be->linear_backward(dhn, NULL, NULL, dg, hn, Wg, N, C, I_);
    be->linear_backward(dhn, NULL, NULL, du, hn, Wu, N, C, I_);
    be->rmsnorm_backward(dh, NULL, dhn, r2, h, ln2, 0, N, C);
    be->add_backward(dx, doo, dh, (size_t)N * C);
    be->linear_backward(da, NULL, NULL, doo, a, Wo, N, QD, C);
    be->attention_backward(dqr, dkr, dv, dS, da, probs, qr, kr, v, am, &ap, B, T, H, KVH, D);
    be->rope_backward(dq, dqr, cs, sn, N, H, D);
    be->rope_backward(dk, dkr, cs, sn, N, KVH, D);
    be->lora_backward(dxn, dqA, dqB, dhs, dq, hq, xn, NULL, qA, qB, ls, N, C, QD, R);
    be->linear_backward(dxn, NULL, NULL, dq, xn, Wq, N, C, QD);
    be->linear_backward(dxn, NULL, NULL, dk, xn, Wk, N, C, KD);
    be->lora_backward(dxn, dvA, dvB, dhs, dv, hv, xn, NULL, vA, vB, ls, N, C, KD, R);
    be->linear_backward(dxn, NULL, NULL, dv, xn, Wv, N, C, KD);
    be->rmsnorm_backward(dx, NULL, dxn, r1, x, ln1, 0, N, C);
    CHECK(dx, F(c, "dx", NULL), (size_t)N * C, "dx");
    CHECK(dqA, F(c, "dq_A", NULL), (size_t)R * C, "dq_A");
    CHECK(dqB, F(c, "dq_B", NULL), (size_t)QD * R, "dq_B");
    CHECK(dvA, F(c, "dv_A", NULL), (size_t)R * C, "dv_A");
    CHECK(dvB, F(c, "dv_B", NULL), (size_t)KD * R, "dv_B");
}

static void run_case(const be_backend *be, const char *c, const char *op, json_t *p) {
    if (!strcmp(op, "embedding")) run_embedding(be, c, p);
    else if (!strcmp(op, "linear")) run_linear(be, c, p, 0);
    else if (!strcmp(op, "conv1d")) run_linear(be, c, p, 1);
    else if (!strcmp(op, "lora")) run_lora(be, c, p);
    else if (!strcmp(op, "ia3")) run_ia3(be, c, p);
    else if (!strcmp(op, "rmsnorm")) run_norm(be, c, p, 0);
    else if (!strcmp(op, "layernorm")) run_norm(be, c, p, 1);
    else if (!strcmp(op, "rope")) run_rope(be, c, p);
    else if (!strcmp(op, "attention")) run_attention(be, c, p);
    else if (!strcmp(op, "act")) run_act(be, c, p, 0);
    else if (!strcmp(op, "gated")) run_act(be, c, p, 1);
    else if (!strcmp(op, "softmax")) run_softmax(be, c, p);
    else if (!strcmp(op, "causal_lm_loss")) run_loss(be, c, p, 1);
    else if (!strcmp(op, "cross_entropy")) run_loss(be, c, p, 0);
    else if (!strcmp(op, "softcap")) run_softcap(be, c, p);
    else if (!strcmp(op, "adamw")) run_optim(be, c, p, 1);
    else if (!strcmp(op, "sgd")) run_optim(be, c, p, 0);
    else if (!strcmp(op, "clip_grad_norm")) run_clip(be, c, p);
    else if (!strcmp(op, "llama_block")) run_llama_block(be, c, p);
    else T_CHECK(0, "fixture case %s: unknown op %s", c, op);
}

static void test_fixtures(void) {
    const be_backend *backends[] = {be_ref(), be_cpu()};
    json_t *cases = json_object_get(index_json, "cases");
    T_OK(json_array_size(cases) >= 30);
    for (size_t b = 0; b < sizeof backends / sizeof backends[0]; b++)
        for (size_t i = 0; i < json_array_size(cases); i++) {
            json_t *cs = json_array_get(cases, i);
            run_case(backends[b], json_string_value(json_object_get(cs, "name")),
                     json_string_value(json_object_get(cs, "op")), json_object_get(cs, "params"));
            tn_free_all();
        }
}

int main(void) {
    if (load_fixtures() < 0) {
        fprintf(stderr, "cannot read %s (run from the repository root)\n", DIR);
        return 1;
    }
    T_RUN(test_fixtures);
    json_decref(st_header);
    json_decref(index_json);
    free(st_buf);
    return t_done();
}
