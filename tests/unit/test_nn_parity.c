/* test_nn_parity.c — loupe's ops against PyTorch / transformers / peft.
 *
 * tests/fixtures/ops/ holds what tools/make_op_fixtures.py computed with the libraries
 * (index.json lists the cases, ops.safetensors the tensors "<case>.<name>"). Every case is
 * run through the reference ops and through each backend, forward and backward, and must
 * agree within 1e-5 relative to the tensor's magnitude (test_nn_util.h). A case whose op
 * this file does not know fails, so new fixtures cannot be skipped silently.
 *
 * Backends: be_ref() and be_cpu() always; with LOUPE_TEST_DEVICE=guard|cuda (t_device.h)
 * that device as well (ctest: test_nn_parity_guard, and test_nn_parity_gpu for
 * tests/gpu/run.sh). Every op gets device pointers: inputs go in through to_device,
 * results come back through to_host after sync, as a model's would on a GPU.
 *
 * The safetensors reader here is deliberately minimal (whole file read, F32/I32 only);
 * the real one is runtime/model's. Run from the repository root (ctest does). */
#include <jansson.h>
#include <stdlib.h>

#include "backend/backend.h"
#include "t_device.h"
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

/* ---- device memory: the backend under test and the buffers of the running case --------- */

static const be_backend *be;   // the backend under test
#define DEV_MAX 256
static void *dev_allocs[DEV_MAX];   // this case's device buffers, freed by dev_free_all
static int dev_n;

static void *dev_alloc(size_t bytes) {
    void *d = dev_n < DEV_MAX ? be->alloc(bytes ? bytes : 1) : NULL;
    if (!d) {
        fprintf(stderr, "[%s] device allocation of %zu bytes failed: %s\n", be->name, bytes,
                dev_n < DEV_MAX ? lp_geterr() : "too many buffers");
        exit(2);
    }
    return dev_allocs[dev_n++] = d;
}

static float *dz(size_t n) {   // device zeros (backward ops accumulate)
    float *d = dev_alloc(n * sizeof(float));
    be->zero(d, n * sizeof(float));
    return d;
}

static void *to_dev_bytes(const void *h, size_t bytes) {   // NULL stays NULL (optional inputs)
    if (!h) return NULL;
    void *d = dev_alloc(bytes);
    be->to_device(d, h, bytes);
    return d;
}
static float *to_dev(const float *h, size_t n) { return to_dev_bytes(h, n * sizeof(float)); }
static int *to_dev_i(const int *h, size_t n) { return to_dev_bytes(h, n * sizeof(int)); }

static float *to_hst(const float *d, size_t n) {   // a tracked host copy of device data
    float *h = tn_zeros(n);
    be->sync();
    if (n) be->to_host(h, d, n * sizeof(float));
    return h;
}

static void dev_free_all(void) {
    while (dev_n) be->free(dev_allocs[--dev_n]);
}

/* Fixture tensors on the device; a missing one is F's / I's zeros, uploaded. */
static float *FD(const char *c, const char *name, size_t *n) {
    size_t m = 0;
    float *h = F(c, name, &m);
    if (n) *n = m;
    return to_dev(h, m ? m : 1 << 16);
}

static float *FD_opt(const char *c, const char *name) {   // an optional one: NULL if absent
    size_t m = 0;
    float *h = tensor(c, name, &m, "F32");
    return h ? to_dev(h, m) : NULL;
}

static int *ID(const char *c, const char *name, size_t *n) {
    size_t m = 0;
    int *h = I(c, name, &m);
    if (n) *n = m;
    return to_dev_i(h, m ? m : 1 << 16);
}

/* CHECK: a device result against the fixture (host); CHECK_H: a host result. */
#define CHECK_H(got, want, n, what) \
    TN_CLOSE((got), (want), (n), TOL, "%s [%s] %s", c, be->name, what)
#define CHECK(got, want, n, what) CHECK_H(to_hst((got), (n)), (want), (n), (what))

/* ---- one function per fixture op, on `be` ------------------------------------------------ */

static void run_embedding(const char *c, json_t *p) {
    size_t nid, nt, no;
    int *ids = ID(c, "ids", &nid);
    float *table = FD(c, "table", &nt), *want = F(c, "out", &no), *dout = FD(c, "dout", NULL);
    int C = shape_dim(c, "table", 1), V = (int)(nt / C);
    float *out = dz(no), *dt = dz(nt);
    T_EQ_INT(be->embedding_forward(out, ids, table, (int)nid, V, C), 0);
    be->embedding_backward(dt, dout, ids, (int)nid, C);
    CHECK(out, want, no, "out");
    CHECK(dt, F(c, "dtable", NULL), nt, "dtable");
}

static void run_linear(const char *c, json_t *p, int conv) {
    size_t ni, no, nw;
    float *x = FD(c, "inp", &ni), *w = FD(c, "weight", &nw), *b = FD(c, "bias", NULL);
    float *want = F(c, "out", &no), *dout = FD(c, "dout", NULL);
    int OUT = conv ? shape_dim(c, "weight", 1) : shape_dim(c, "weight", 0);
    int IN = (int)(nw / OUT), N = (int)(ni / IN);
    float *out = dz(no), *dx = dz(ni), *dw = dz(nw), *db = dz(OUT);
    (conv ? be->conv1d_forward : be->linear_forward)(out, x, w, b, N, IN, OUT);
    (conv ? be->conv1d_backward : be->linear_backward)(dx, dw, db, dout, x, w, N, IN, OUT);
    CHECK(out, want, no, "out");
    CHECK(dx, F(c, "dinp", NULL), ni, "dinp");
    CHECK(dw, F(c, "dweight", NULL), nw, "dweight");
    CHECK(db, F(c, "dbias", NULL), (size_t)OUT, "dbias");
}

static void run_lora(const char *c, json_t *p) {
    size_t ni, no, na;
    float *x = FD(c, "inp", &ni), *A = FD(c, "A", &na), *B = FD(c, "B", NULL);
    float *want = F(c, "out", &no), *dout = FD(c, "dout", NULL);
    float *mask = FD_opt(c, "mask");
    int R = (int)P(p, "r"), IN = (int)(na / R), N = (int)(ni / IN), OUT = (int)(no / N);
    float scale = (float)P(p, "scale");
    float *out = dz(no), *h = dz((size_t)N * R), *dh = dz((size_t)N * R);
    float *dx = dz(ni), *dA = dz(na), *dB = dz((size_t)OUT * R);
    float *w = FD_opt(c, "weight");
    if (w) {   // PEFT: the base layer's output first, then the adapter adds to it
        float *bias = FD(c, "bias", NULL);
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
static void run_ia3(const char *c, json_t *p) {
    size_t nx, nlk, nld, no;
    float *x = FD(c, "inp", &nx), *wk = FD(c, "k_weight", NULL), *lk = FD(c, "l_k", &nlk);
    float *wd = FD(c, "down_weight", NULL), *bd = FD(c, "down_bias", NULL);
    float *ld = FD(c, "l_down", &nld), *want = F(c, "out", &no), *dout = FD(c, "dout", NULL);
    int K = (int)nlk, M = (int)nld, N = (int)(no / (size_t)shape_dim(c, "out", 1));
    int IN = (int)(nx / N), OUT = (int)(no / N);
    T_EQ_INT(K, M);   // k's output feeds down's input
    float *h = dz((size_t)N * K), *hs = dz((size_t)N * K), *hd = dz((size_t)N * K);
    float *out = dz(no), *dhd = dz((size_t)N * K), *dhs = dz((size_t)N * K);
    float *dh = dz((size_t)N * K), *dx = dz(nx), *dlk = dz(K), *dld = dz(M);
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

static void run_norm(const char *c, json_t *p, int ln) {
    size_t n, C;
    float *x = FD(c, "inp", &n), *w = FD(c, "weight", &C), *want = F(c, "out", NULL);
    float *dout = FD(c, "dout", NULL);
    int N = (int)(n / C);
    float eps = (float)P(p, "eps");
    float *out = dz(n), *mean = dz(N), *rstd = dz(N);
    float *dx = dz(n), *dw = dz(C), *db = dz(C);
    if (ln) {
        float *b = FD(c, "bias", NULL);
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

/* The tables are host functions (backend.h): checked on the host, then uploaded. */
static void run_rope(const char *c, json_t *p) {
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
    size_t nt = (size_t)N * D / 2;
    float inv[256], *cos_t = tn_zeros(nt), *sin_t = tn_zeros(nt);
    nn_rope_inv_freq(inv, &cfg, D, (int)P(p, "seq_len"));
    nn_rope_table(cos_t, sin_t, inv, pos, N, D);
    CHECK_H(inv, F(c, "inv_freq", NULL), (size_t)D / 2, "inv_freq");
    CHECK_H(cos_t, F(c, "cos", NULL), nt, "cos");
    CHECK_H(sin_t, F(c, "sin", NULL), nt, "sin");
    float *cs = to_dev(cos_t, nt), *sn = to_dev(sin_t, nt);
    float *q = FD(c, "q", &nq), *k = FD(c, "k", &nk);
    float *qo = dz(nq), *ko = dz(nk), *dq = dz(nq), *dk = dz(nk);
    be->rope_forward(qo, q, cs, sn, N, H, D);
    be->rope_forward(ko, k, cs, sn, N, KVH, D);
    be->rope_backward(dq, FD(c, "dq_out", NULL), cs, sn, N, H, D);
    be->rope_backward(dk, FD(c, "dk_out", NULL), cs, sn, N, KVH, D);
    CHECK(qo, F(c, "q_out", NULL), nq, "q_out");
    CHECK(ko, F(c, "k_out", NULL), nk, "k_out");
    CHECK(dq, F(c, "dq", NULL), nq, "dq");
    CHECK(dk, F(c, "dk", NULL), nk, "dk");
}

static void run_attention(const char *c, json_t *p) {
    int B = (int)P(p, "B"), T = (int)P(p, "T"), H = (int)P(p, "H"), KVH = (int)P(p, "KVH");
    int D = (int)P(p, "D");
    size_t nq = (size_t)B * T * H * D, nk = (size_t)B * T * KVH * D, np = (size_t)B * H * T * T;
    nn_attn_params ap = {.scale = (float)P(p, "scale"), .softcap = (float)P(p, "softcap"),
                         .causal = (int)P(p, "causal"), .window = (int)P(p, "window"),
                         .dropout = FD_opt(c, "dropout")};
    int *am = I(c, "amask", NULL), *dam = to_dev_i(am, (size_t)B * T);
    float *q = FD(c, "q", NULL), *k = FD(c, "k", NULL), *v = FD(c, "v", NULL);
    float *want = F(c, "out", NULL), *wprobs = F(c, "probs", NULL), *dout = FD(c, "dout", NULL);
    float *out = dz(nq), *probs = dz(np), *ds = dz(np);
    float *dq = dz(nq), *dk = dz(nk), *dv = dz(nk);
    be->attention_forward(out, probs, q, k, v, dam, &ap, B, T, H, KVH, D);
    be->attention_backward(dq, dk, dv, ds, dout, probs, q, k, v, dam, &ap, B, T, H, KVH, D);
    float *ho = to_hst(out, nq), *hp = to_hst(probs, np);
    // Padding queries are where loupe (zeros) and eager transformers (uniform weights over
    // a fully masked row) differ by design: compare only rows of real tokens.
    for (int b = 0; b < B; b++)
        for (int t = 0; t < T; t++)
            if (!am[b * T + t]) {
                memset(ho + ((size_t)b * T + t) * H * D, 0, (size_t)H * D * sizeof(float));
                memset(want + ((size_t)b * T + t) * H * D, 0, (size_t)H * D * sizeof(float));
                for (int h = 0; h < H; h++) {
                    size_t row = (((size_t)b * H + h) * T + t) * T;
                    memset(hp + row, 0, (size_t)T * sizeof(float));
                    memset(wprobs + row, 0, (size_t)T * sizeof(float));
                }
            }
    CHECK_H(ho, want, nq, "out");
    CHECK_H(hp, wprobs, np, "probs");
    CHECK(dq, F(c, "dq", NULL), nq, "dq");
    CHECK(dk, F(c, "dk", NULL), nk, "dk");
    CHECK(dv, F(c, "dv", NULL), nk, "dv");
}

static void run_act(const char *c, json_t *p, int gated) {
    nn_act act;
    T_EQ_INT(nn_act_from_name(&act, json_string_value(json_object_get(p, "act"))), 0);
    size_t n;
    float *want = F(c, "out", &n), *dout = FD(c, "dout", NULL), *out = dz(n);
    float *dx = dz(n), *du = dz(n);
    if (gated) {
        float *g = FD(c, "gate", NULL), *u = FD(c, "up", NULL);
        be->gated_forward(out, g, u, act, n);
        be->gated_backward(dx, du, dout, g, u, act, n);
        CHECK(dx, F(c, "dgate", NULL), n, "dgate");
        CHECK(du, F(c, "dup", NULL), n, "dup");
    } else {
        float *x = FD(c, "inp", NULL);
        be->act_forward(out, x, act, n);
        be->act_backward(dx, dout, x, act, n);
        CHECK(dx, F(c, "dinp", NULL), n, "dinp");
    }
    CHECK(out, want, n, "out");
}

static void run_softmax(const char *c, json_t *p) {
    size_t n;
    float *x = FD(c, "inp", &n), *want = F(c, "out", NULL), *dout = FD(c, "dout", NULL);
    int C = shape_dim(c, "inp", 1), N = (int)(n / C);
    float *out = dz(n), *dx = dz(n);
    be->softmax_forward(out, x, N, C);
    be->softmax_backward(dx, dout, out, N, C);
    CHECK(out, want, n, "out");
    CHECK(dx, F(c, "dinp", NULL), n, "dinp");
}

/* The causal-LM shift as docs/compute.md tells callers to do it: row t predicts labels[t+1],
 * the last row of each sequence predicts nothing (-100). The loss and count are host values
 * (backend.h). */
static void run_loss(const char *c, json_t *p, int causal) {
    size_t n, nt;
    float *logits = FD(c, "logits", &n);
    int *targets;
    int N, V;
    if (causal) {
        int B = (int)P(p, "B"), T = (int)P(p, "T");
        V = (int)P(p, "V");
        N = B * T;
        int *labels = I(c, "labels", &nt), *tg = tn_ints(N);
        for (int b = 0; b < B; b++)
            for (int t = 0; t < T; t++)
                tg[b * T + t] = t + 1 < T ? labels[b * T + t + 1] : -100;
        targets = to_dev_i(tg, N);
    } else {
        targets = ID(c, "targets", &nt);
        N = (int)nt;
        V = (int)(n / nt);
    }
    float loss, *lse = dz(N), *dl = dz(n);
    int count;
    T_EQ_INT(be->cross_entropy_forward(&loss, lse, &count, logits, targets, N, V), 0);
    be->cross_entropy_backward(dl, 1.0f, lse, logits, targets, count, N, V);
    CHECK_H(&loss, F(c, "loss", NULL), 1, "loss");
    CHECK(dl, F(c, "dlogits", NULL), n, "dlogits");
}

static void run_softcap(const char *c, json_t *p) {
    size_t n;
    float *x = FD(c, "inp", &n), *out = dz(n), *dx = dz(n), cap = (float)P(p, "cap");
    be->softcap_forward(out, x, cap, n);
    be->softcap_backward(dx, FD(c, "dout", NULL), out, cap, n);
    CHECK(out, F(c, "out", NULL), n, "out");
    CHECK(dx, F(c, "dinp", NULL), n, "dinp");
}

static void run_optim(const char *c, json_t *p, int adamw) {
    size_t n;
    float *param = FD(c, "param0", &n), *m = dz(n), *v = dz(n);
    for (int t = 1; t <= 3; t++) {
        char g[16], want[16];
        snprintf(g, sizeof g, "grad%d", t);
        snprintf(want, sizeof want, "param%d", t);
        if (adamw)
            be->adamw_step(param, m, v, FD(c, g, NULL), n, P(p, "lr"), P(p, "beta1"),
                           P(p, "beta2"), P(p, "eps"), P(p, "weight_decay"), t);
        else
            be->sgd_step(param, m, FD(c, g, NULL), n, P(p, "lr"), P(p, "momentum"),
                         P(p, "weight_decay"), t);
        CHECK(param, F(c, want, NULL), n, want);
    }
    CHECK(m, F(c, adamw ? "m" : "buf", NULL), n, adamw ? "exp_avg" : "momentum_buffer");
    if (adamw) CHECK(v, F(c, "v", NULL), n, "exp_avg_sq");
}

/* grads and sizes are host arrays of device gradients; the norm comes back on the host. */
static void run_clip(const char *c, json_t *p) {
    size_t sz[3];
    float *g[3];
    for (int i = 0; i < 3; i++) {
        char nm[8];
        snprintf(nm, sizeof nm, "g%d", i);
        g[i] = FD(c, nm, &sz[i]);
    }
    float total = (float)be->clip_grad_norm(g, sz, 3, P(p, "max_norm"));
    CHECK_H(&total, F(c, "total", NULL), 1, "total_norm");
    for (int i = 0; i < 3; i++) {
        char nm[8];
        snprintf(nm, sizeof nm, "c%d", i);
        CHECK(g[i], F(c, nm, NULL), sz[i], nm);
    }
}

/* A whole Llama decoder layer with LoRA on q and v, composed from the ops the way a model
 * forward and backward will (docs/compute.md), against transformers + peft. */
static void run_llama_block(const char *c, json_t *p) {
    int B = (int)P(p, "B"), T = (int)P(p, "T"), C = (int)P(p, "C"), H = (int)P(p, "H");
    int KVH = (int)P(p, "KVH"), D = (int)P(p, "D"), I_ = (int)P(p, "I"), R = (int)P(p, "r");
    int N = B * T, QD = H * D, KD = KVH * D;
    float eps = (float)P(p, "eps"), ls = (float)P(p, "lora_scale");
    float *x = FD(c, "x", NULL), *dy = FD(c, "dy", NULL), *ln1 = FD(c, "ln1", NULL);
    float *ln2 = FD(c, "ln2", NULL), *Wq = FD(c, "q_proj", NULL), *Wk = FD(c, "k_proj", NULL);
    float *Wv = FD(c, "v_proj", NULL), *Wo = FD(c, "o_proj", NULL), *Wg = FD(c, "gate_proj", NULL);
    float *Wu = FD(c, "up_proj", NULL), *Wd = FD(c, "down_proj", NULL);
    float *qA = FD(c, "q_A", NULL), *qB = FD(c, "q_B", NULL), *vA = FD(c, "v_A", NULL);
    float *vB = FD(c, "v_B", NULL);
    int *am = ID(c, "amask", NULL);
    // rope tables: positions 0..T-1 in every row, as transformers for a padded batch
    size_t nt = (size_t)N * D / 2;
    float inv[64], *cos_t = tn_zeros(nt), *sin_t = tn_zeros(nt);
    int *pos = tn_ints(N);
    for (int n = 0; n < N; n++) pos[n] = n % T;
    nn_rope_config rc = {.type = NN_ROPE_DEFAULT, .theta = P(p, "theta")};
    nn_rope_inv_freq(inv, &rc, D, T);
    nn_rope_table(cos_t, sin_t, inv, pos, N, D);
    float *cs = to_dev(cos_t, nt), *sn = to_dev(sin_t, nt);
    // forward, keeping what backward needs
    float *xn = dz((size_t)N * C), *r1 = dz(N), *q = dz((size_t)N * QD);
    float *k = dz((size_t)N * KD), *v = dz((size_t)N * KD), *hq = dz((size_t)N * R);
    float *hv = dz((size_t)N * R), *qr = dz((size_t)N * QD), *kr = dz((size_t)N * KD);
    float *probs = dz((size_t)B * H * T * T), *a = dz((size_t)N * QD);
    float *o = dz((size_t)N * C), *h = dz((size_t)N * C), *hn = dz((size_t)N * C);
    float *r2 = dz(N), *g = dz((size_t)N * I_), *u = dz((size_t)N * I_);
    float *m = dz((size_t)N * I_), *d = dz((size_t)N * C), *y = dz((size_t)N * C);
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
    float *dh = dz((size_t)N * C), *dd = dz((size_t)N * C), *dm = dz((size_t)N * I_);
    float *dg = dz((size_t)N * I_), *du = dz((size_t)N * I_), *dhn = dz((size_t)N * C);
    float *dx = dz((size_t)N * C), *doo = dz((size_t)N * C), *da = dz((size_t)N * QD);
    float *dqr = dz((size_t)N * QD), *dkr = dz((size_t)N * KD), *dv = dz((size_t)N * KD);
    float *dq = dz((size_t)N * QD), *dk = dz((size_t)N * KD), *dxn = dz((size_t)N * C);
    float *dS = dz((size_t)B * H * T * T), *dhs = dz((size_t)N * R);
    float *dqA = dz((size_t)R * C), *dqB = dz((size_t)QD * R);
    float *dvA = dz((size_t)R * C), *dvB = dz((size_t)KD * R);
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

static void run_case(const char *c, const char *op, json_t *p) {
    if (!strcmp(op, "embedding")) run_embedding(c, p);
    else if (!strcmp(op, "linear")) run_linear(c, p, 0);
    else if (!strcmp(op, "conv1d")) run_linear(c, p, 1);
    else if (!strcmp(op, "lora")) run_lora(c, p);
    else if (!strcmp(op, "ia3")) run_ia3(c, p);
    else if (!strcmp(op, "rmsnorm")) run_norm(c, p, 0);
    else if (!strcmp(op, "layernorm")) run_norm(c, p, 1);
    else if (!strcmp(op, "rope")) run_rope(c, p);
    else if (!strcmp(op, "attention")) run_attention(c, p);
    else if (!strcmp(op, "act")) run_act(c, p, 0);
    else if (!strcmp(op, "gated")) run_act(c, p, 1);
    else if (!strcmp(op, "softmax")) run_softmax(c, p);
    else if (!strcmp(op, "causal_lm_loss")) run_loss(c, p, 1);
    else if (!strcmp(op, "cross_entropy")) run_loss(c, p, 0);
    else if (!strcmp(op, "softcap")) run_softcap(c, p);
    else if (!strcmp(op, "adamw")) run_optim(c, p, 1);
    else if (!strcmp(op, "sgd")) run_optim(c, p, 0);
    else if (!strcmp(op, "clip_grad_norm")) run_clip(c, p);
    else if (!strcmp(op, "llama_block")) run_llama_block(c, p);
    else T_CHECK(0, "fixture case %s: unknown op %s", c, op);
}

static void test_fixtures(void) {
    // ref and cpu always (the plain run stays as it was); LOUPE_TEST_DEVICE's device besides
    const be_backend *backends[3] = {be_ref(), be_cpu()};
    size_t nb = 2;
    if (!t_on_cpu()) backends[nb++] = t_device();
    json_t *cases = json_object_get(index_json, "cases");
    T_OK(json_array_size(cases) >= 30);
    for (size_t b = 0; b < nb; b++)
        for (size_t i = 0; i < json_array_size(cases); i++) {
            json_t *cs = json_array_get(cases, i);
            const char *c = json_string_value(json_object_get(cs, "name"));
            be = backends[b];
            run_case(c, json_string_value(json_object_get(cs, "op")),
                     json_object_get(cs, "params"));
            // an op that had no scratch memory (CUDA, guard) did nothing: say so by name
            T_CHECK(!be->op_failed || !be->op_failed(), "%s [%s]: %s", c, be->name, lp_geterr());
            dev_free_all();
            tn_free_all();
        }
}

int main(void) {
    if (!t_on_cpu()) t_device();   // exits 77 (skipped) when the device is not there
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
