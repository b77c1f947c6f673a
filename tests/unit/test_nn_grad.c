/* test_nn_grad.c — finite-difference check of every reference backward in nn/ops.h.
 *
 * For an op y = f(x, …) the scalar L = Σ w·y (w fixed and random) has ∂L/∂x equal to
 * the op's backward with dout = w. The numerical side perturbs one element at a time by
 * ±h and takes (L+ − L−)/(2h), with L summed in double. f32 outputs carry ~6e-8 relative
 * rounding, so the difference quotient has noise ≈ 6e-8·Σ|w·y|/(2h) while central
 * differences err by O(h²): h ≈ 1e-3 (inputs of order 1) balances both well below the
 * 1e-2 tolerance. The perturbation actually applied is what f32 can represent
 * ((x+h) − x), and that is what we divide by. Inputs sit away from kinks (ReLU at 0). */
#include <stdlib.h>

#include "nn/ops.h"
#include "test_nn_util.h"

typedef double (*loss_fn)(void *ctx);

static double wsum(const float *w, const float *y, size_t n) {
    double s = 0;
    for (size_t i = 0; i < n; i++) s += (double)w[i] * y[i];
    return s;
}

/* Compare the analytical gradient g of L w.r.t. x (n elements) with central differences. */
static void fd_check(const char *what, void *ctx, loss_fn f, float *x, const float *g, size_t n,
                     float h) {
    double *num = malloc(n * sizeof(double));
    double mx = 1e-4, worst = 0;
    size_t at = 0;
    for (size_t i = 0; i < n; i++) {
        float save = x[i];
        float xp = save + h, xm = save - h;
        x[i] = xp;
        double lp = f(ctx);
        x[i] = xm;
        double lm = f(ctx);
        x[i] = save;
        num[i] = (lp - lm) / ((double)xp - (double)xm);
        mx = fmax(mx, fmax(fabs(num[i]), fabs(g[i])));
    }
    for (size_t i = 0; i < n; i++) {
        double e = fabs(num[i] - g[i]);
        if (!(e <= worst)) worst = e, at = i;
    }
    if (getenv("TN_VERBOSE")) printf("  %-36s fd error %.2e\n", what, worst / mx);
    T_CHECK(worst / mx <= 1e-2, "%s: finite-difference error %.3g at [%zu]: numeric %.6g, "
            "analytic %.6g", what, worst / mx, at, num[at], (double)g[at]);
    free(num);
}

/* ---- embedding ---------------------------------------------------------------------- */

typedef struct { float *out, *table, *w; int *ids; int N, V, C; } emb_ctx;

static double emb_loss(void *p) {
    emb_ctx *c = p;
    nn_embedding_forward(c->out, c->ids, c->table, c->N, c->V, c->C);
    return wsum(c->w, c->out, (size_t)c->N * c->C);
}

static void test_embedding(void) {
    emb_ctx c = {.N = 7, .V = 5, .C = 3};
    c.out = tn_zeros(21); c.table = tn_randn(15, 1); c.w = tn_randn(21, 1);
    c.ids = tn_ints(7);
    for (int n = 0; n < 7; n++) c.ids[n] = (n * 3) % 5;   // repeats: scatter-add must sum
    float *dt = tn_zeros(15);
    nn_embedding_backward(dt, c.w, c.ids, c.N, c.C);
    fd_check("embedding dtable", &c, emb_loss, c.table, dt, 15, 1e-3f);
    tn_free_all();
}

/* ---- linear / conv1d ------------------------------------------------------------------ */

typedef struct { float *out, *inp, *weight, *bias, *w; int N, IN, OUT, conv; } lin_ctx;

static double lin_loss(void *p) {
    lin_ctx *c = p;
    (c->conv ? nn_conv1d_forward : nn_linear_forward)(c->out, c->inp, c->weight, c->bias, c->N,
                                                      c->IN, c->OUT);
    return wsum(c->w, c->out, (size_t)c->N * c->OUT);
}

static void test_linear(void) {
    for (int conv = 0; conv < 2; conv++) {
        lin_ctx c = {.N = 5, .IN = 7, .OUT = 3, .conv = conv};
        size_t no = 15, ni = 35, nw = 21;
        c.out = tn_zeros(no); c.inp = tn_randn(ni, 1); c.weight = tn_randn(nw, 0.5f);
        c.bias = tn_randn(3, 1); c.w = tn_randn(no, 1);
        float *dx = tn_zeros(ni), *dw = tn_zeros(nw), *db = tn_zeros(3);
        (conv ? nn_conv1d_backward : nn_linear_backward)(dx, dw, db, c.w, c.inp, c.weight, c.N,
                                                         c.IN, c.OUT);
        const char *nm = conv ? "conv1d" : "linear";
        char what[64];
        snprintf(what, sizeof what, "%s dinp", nm);
        fd_check(what, &c, lin_loss, c.inp, dx, ni, 1e-3f);
        snprintf(what, sizeof what, "%s dweight", nm);
        fd_check(what, &c, lin_loss, c.weight, dw, nw, 1e-3f);
        snprintf(what, sizeof what, "%s dbias", nm);
        fd_check(what, &c, lin_loss, c.bias, db, 3, 1e-3f);
        tn_free_all();
    }
}

/* ---- LoRA ------------------------------------------------------------------------------ */

typedef struct { float *out, *h, *inp, *mask, *A, *B, *w; float scale; int N, IN, OUT, R; } lora_ctx;

static double lora_loss(void *p) {
    lora_ctx *c = p;
    memset(c->out, 0, (size_t)c->N * c->OUT * sizeof(float));
    nn_lora_forward(c->out, c->h, c->inp, c->mask, c->A, c->B, c->scale, c->N, c->IN, c->OUT,
                    c->R);
    return wsum(c->w, c->out, (size_t)c->N * c->OUT);
}

static void test_lora(void) {
    for (int drop = 0; drop < 2; drop++) {
        lora_ctx c = {.N = 4, .IN = 9, .OUT = 5, .R = 3, .scale = 2.0f};
        size_t ni = 36, no = 20;
        c.out = tn_zeros(no); c.h = tn_zeros(12); c.inp = tn_randn(ni, 1);
        c.A = tn_randn(27, 0.5f); c.B = tn_randn(15, 0.5f); c.w = tn_randn(no, 1);
        if (drop) {
            c.mask = tn_zeros(ni);
            nn_dropout_mask(c.mask, 42, 0, 0.3f, ni);
        }
        lora_loss(&c);   // fills h
        float *dx = tn_zeros(ni), *dA = tn_zeros(27), *dB = tn_zeros(15), *dh = tn_zeros(12);
        nn_lora_backward(dx, dA, dB, dh, c.w, c.h, c.inp, c.mask, c.A, c.B, c.scale, c.N, c.IN,
                         c.OUT, c.R);
        fd_check(drop ? "lora+dropout dinp" : "lora dinp", &c, lora_loss, c.inp, dx, ni, 1e-3f);
        fd_check(drop ? "lora+dropout dA" : "lora dA", &c, lora_loss, c.A, dA, 27, 1e-3f);
        fd_check(drop ? "lora+dropout dB" : "lora dB", &c, lora_loss, c.B, dB, 15, 1e-3f);
        tn_free_all();
    }
}

/* ---- per-channel scale (IA3) ------------------------------------------------------------ */

typedef struct { float *out, *inp, *l, *w; int N, C; } cs_ctx;

static double cs_loss(void *p) {
    cs_ctx *c = p;
    nn_channel_scale_forward(c->out, c->inp, c->l, c->N, c->C);
    return wsum(c->w, c->out, (size_t)c->N * c->C);
}

static void test_channel_scale(void) {
    cs_ctx c = {.N = 5, .C = 7};
    c.out = tn_zeros(35); c.inp = tn_randn(35, 1); c.l = tn_randn(7, 1); c.w = tn_randn(35, 1);
    float *dx = tn_zeros(35), *dl = tn_zeros(7);
    nn_channel_scale_backward(dx, dl, c.w, c.inp, c.l, c.N, c.C);
    fd_check("channel_scale dinp", &c, cs_loss, c.inp, dx, 35, 1e-3f);
    fd_check("channel_scale dl", &c, cs_loss, c.l, dl, 7, 1e-3f);
    tn_free_all();
}

/* ---- norms ------------------------------------------------------------------------------ */

typedef struct { float *out, *mean, *rstd, *inp, *weight, *bias, *w; int N, C, add_one, ln; } norm_ctx;

static double norm_loss(void *p) {
    norm_ctx *c = p;
    if (c->ln)
        nn_layernorm_forward(c->out, c->mean, c->rstd, c->inp, c->weight, c->bias, 1e-5f, c->N,
                             c->C);
    else
        nn_rmsnorm_forward(c->out, c->rstd, c->inp, c->weight, 1e-6f, c->add_one, c->N, c->C);
    return wsum(c->w, c->out, (size_t)c->N * c->C);
}

static void test_norms(void) {
    for (int kind = 0; kind < 3; kind++) {   // rmsnorm, gemma rmsnorm, layernorm
        norm_ctx c = {.N = 3, .C = 17, .add_one = kind == 1, .ln = kind == 2};
        size_t n = 51;
        c.out = tn_zeros(n); c.mean = tn_zeros(3); c.rstd = tn_zeros(3);
        c.inp = tn_randn(n, 1); c.weight = tn_randn(17, 1); c.bias = tn_randn(17, 1);
        c.w = tn_randn(n, 1);
        norm_loss(&c);
        float *dx = tn_zeros(n), *dw = tn_zeros(17), *db = tn_zeros(17);
        if (c.ln)
            nn_layernorm_backward(dx, dw, db, c.w, c.mean, c.rstd, c.inp, c.weight, c.N, c.C);
        else
            nn_rmsnorm_backward(dx, dw, c.w, c.rstd, c.inp, c.weight, c.add_one, c.N, c.C);
        const char *nm[] = {"rmsnorm", "rmsnorm(1+w)", "layernorm"};
        char what[64];
        snprintf(what, sizeof what, "%s dinp", nm[kind]);
        fd_check(what, &c, norm_loss, c.inp, dx, n, 1e-3f);
        snprintf(what, sizeof what, "%s dweight", nm[kind]);
        fd_check(what, &c, norm_loss, c.weight, dw, 17, 1e-3f);
        if (c.ln) fd_check("layernorm dbias", &c, norm_loss, c.bias, db, 17, 1e-3f);
        tn_free_all();
    }
}

/* ---- rope ------------------------------------------------------------------------------- */

typedef struct { float *out, *inp, *cos, *sin, *w; int N, H, D; } rope_ctx;

static double rope_loss(void *p) {
    rope_ctx *c = p;
    nn_rope_forward(c->out, c->inp, c->cos, c->sin, c->N, c->H, c->D);
    return wsum(c->w, c->out, (size_t)c->N * c->H * c->D);
}

static void test_rope(void) {
    rope_ctx c = {.N = 5, .H = 3, .D = 8};
    size_t n = 120;
    float inv[4];
    nn_rope_config cfg = {.type = NN_ROPE_DEFAULT, .theta = 10000};
    nn_rope_inv_freq(inv, &cfg, 8, 5);
    int pos[5] = {0, 1, 2, 7, 100};
    c.cos = tn_zeros(20); c.sin = tn_zeros(20);
    nn_rope_table(c.cos, c.sin, inv, pos, 5, 8);
    c.out = tn_zeros(n); c.inp = tn_randn(n, 1); c.w = tn_randn(n, 1);
    float *dx = tn_zeros(n);
    nn_rope_backward(dx, c.w, c.cos, c.sin, c.N, c.H, c.D);
    fd_check("rope dinp", &c, rope_loss, c.inp, dx, n, 1e-3f);
    tn_free_all();
}

/* ---- attention -------------------------------------------------------------------------- */

typedef struct {
    float *out, *probs, *q, *k, *v, *w;
    int *amask;
    nn_attn_params p;
    int B, T, H, KVH, D;
} att_ctx;

static double att_loss(void *p) {
    att_ctx *c = p;
    nn_attention_forward(c->out, c->probs, c->q, c->k, c->v, c->amask, &c->p, c->B, c->T, c->H,
                         c->KVH, c->D);
    return wsum(c->w, c->out, (size_t)c->B * c->T * c->H * c->D);
}

static void att_case(const char *name, int causal, int window, float softcap, int pad,
                     float drop) {
    att_ctx c = {.B = 2, .T = 6, .H = 4, .KVH = 2, .D = 4};
    c.p = (nn_attn_params){.scale = 0.5f, .softcap = softcap, .causal = causal, .window = window};
    if (drop > 0) {
        float *m = tn_zeros(2 * 4 * 6 * 6);
        nn_dropout_mask(m, 3, 0, drop, 2 * 4 * 6 * 6);
        c.p.dropout = m;
    }
    size_t nq = 2 * 6 * 4 * 4, nk = 2 * 6 * 2 * 4;
    c.out = tn_zeros(nq); c.probs = tn_zeros(2 * 4 * 6 * 6);
    c.q = tn_randn(nq, 1); c.k = tn_randn(nk, 1); c.v = tn_randn(nk, 1); c.w = tn_randn(nq, 1);
    if (pad) {   // batch 0 right-padded by 2, batch 1 left-padded by 2
        c.amask = tn_ints(12);
        for (int t = 0; t < 6; t++) c.amask[t] = t < 4, c.amask[6 + t] = t >= 2;
    }
    att_loss(&c);
    float *dq = tn_zeros(nq), *dk = tn_zeros(nk), *dv = tn_zeros(nk), *ds = tn_zeros(2 * 4 * 36);
    nn_attention_backward(dq, dk, dv, ds, c.w, c.probs, c.q, c.k, c.v, c.amask, &c.p, c.B, c.T,
                          c.H, c.KVH, c.D);
    char what[96];
    snprintf(what, sizeof what, "attention(%s) dq", name);
    fd_check(what, &c, att_loss, c.q, dq, nq, 1e-3f);
    snprintf(what, sizeof what, "attention(%s) dk", name);
    fd_check(what, &c, att_loss, c.k, dk, nk, 1e-3f);
    snprintf(what, sizeof what, "attention(%s) dv", name);
    fd_check(what, &c, att_loss, c.v, dv, nk, 1e-3f);
    tn_free_all();
}

static void test_attention(void) {
    att_case("causal, gqa", 1, 0, 0, 0, 0);
    att_case("causal, padded", 1, 0, 0, 1, 0);
    att_case("bidirectional, padded", 0, 0, 0, 1, 0);
    att_case("softcap, window 3", 1, 3, 1.5f, 1, 0);
    att_case("bidirectional, dropout", 0, 0, 0, 1, 0.3f);
}

/* ---- activations -------------------------------------------------------------------------- */

typedef struct { float *out, *inp, *up, *w; nn_act act; size_t n; int gated; } act_ctx;

static double act_loss(void *p) {
    act_ctx *c = p;
    if (c->gated) nn_gated_forward(c->out, c->inp, c->up, c->act, c->n);
    else nn_act_forward(c->out, c->inp, c->act, c->n);
    return wsum(c->w, c->out, c->n);
}

static void test_activations(void) {
    const char *names[] = {"silu", "gelu", "gelu_tanh", "tanh", "relu"};
    for (int a = 0; a <= NN_ACT_RELU; a++)
        for (int gated = 0; gated < 2; gated++) {
            act_ctx c = {.act = (nn_act)a, .n = 40, .gated = gated};
            c.out = tn_zeros(40); c.inp = tn_randn(40, 2); c.up = tn_randn(40, 1);
            c.w = tn_randn(40, 1);
            for (int i = 0; i < 40; i++)   // keep clear of ReLU's kink
                if (fabsf(c.inp[i]) < 0.05f) c.inp[i] = 0.5f;
            float *dx = tn_zeros(40), *du = tn_zeros(40);
            if (gated) nn_gated_backward(dx, du, c.w, c.inp, c.up, c.act, 40);
            else nn_act_backward(dx, c.w, c.inp, c.act, 40);
            char what[64];
            snprintf(what, sizeof what, "%s%s dinp", gated ? "gated " : "", names[a]);
            fd_check(what, &c, act_loss, c.inp, dx, 40, 1e-3f);
            if (gated) {
                snprintf(what, sizeof what, "gated %s dup", names[a]);
                fd_check(what, &c, act_loss, c.up, du, 40, 1e-3f);
            }
            tn_free_all();
        }
}

/* ---- softmax, cross entropy, soft-cap, elementwise ----------------------------------------- */

typedef struct { float *out, *inp, *w, *lse, *other; int *targets; int N, C, kind; float cap; } misc_ctx;

static double misc_loss(void *p) {
    misc_ctx *c = p;
    size_t n = (size_t)c->N * c->C;
    switch (c->kind) {
    case 0: nn_softmax_forward(c->out, c->inp, c->N, c->C); break;
    case 1: {
        float loss;
        int count;
        nn_cross_entropy_forward(&loss, c->lse, &count, c->inp, c->targets, c->N, c->C);
        return loss;
    }
    case 2: nn_softcap_forward(c->out, c->inp, c->cap, n); break;
    case 3: nn_scale_forward(c->out, c->inp, 1.7f, n); break;
    case 4: nn_add_forward(c->out, c->inp, c->w, n); break;
    case 6: nn_mul_forward(c->out, c->inp, c->other, n); break;
    case 5:   // columns 4..7 of each 11-wide row
        nn_slice_forward(c->out, c->inp, c->N, c->C, 4, 4);
        return wsum(c->w, c->out, (size_t)c->N * 4);
    }
    return wsum(c->w, c->out, n);
}

static void test_misc(void) {
    const char *names[] = {"softmax", "cross_entropy", "softcap", "scale", "add", "slice", "mul"};
    for (int kind = 0; kind < 7; kind++) {
        misc_ctx c = {.N = 4, .C = 11, .kind = kind, .cap = 3.0f};
        size_t n = 44;
        c.out = tn_zeros(n); c.inp = tn_randn(n, 2); c.w = tn_randn(n, 1); c.lse = tn_zeros(4);
        c.other = tn_randn(n, 1);   // mul's second operand
        c.targets = tn_ints(4);
        int tg[4] = {3, -100, 10, 0};
        memcpy(c.targets, tg, sizeof tg);
        misc_loss(&c);
        float *dx = tn_zeros(n), *dother = tn_zeros(n);
        switch (kind) {
        case 0: nn_softmax_backward(dx, c.w, c.out, c.N, c.C); break;
        case 1: nn_cross_entropy_backward(dx, 1.0f, c.lse, c.inp, c.targets, 3, c.N, c.C); break;
        case 2: nn_softcap_backward(dx, c.w, c.out, c.cap, n); break;
        case 3: nn_scale_backward(dx, c.w, 1.7f, n); break;
        case 4: nn_add_backward(dx, dother, c.w, n); break;
        case 5: nn_slice_backward(dx, c.w, c.N, c.C, 4, 4); break;
        case 6: nn_mul_backward(dx, NULL, c.w, c.inp, c.other, n); break;
        }
        char what[64];
        snprintf(what, sizeof what, "%s dinp", names[kind]);
        // the CE loss is a single f32 value, so its quotient needs a wider step
        fd_check(what, &c, misc_loss, c.inp, dx, n, kind == 1 ? 1e-2f : 1e-3f);
        tn_free_all();
    }
}

int main(void) {
    tn_seed(7);
    T_RUN(test_embedding);
    T_RUN(test_linear);
    T_RUN(test_lora);
    T_RUN(test_channel_scale);
    T_RUN(test_norms);
    T_RUN(test_rope);
    T_RUN(test_attention);
    T_RUN(test_activations);
    T_RUN(test_misc);
    return t_done();
}
