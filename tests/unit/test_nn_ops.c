/* test_nn_ops.c — every op of every backend against the reference (be_ref()), forward and
 * backward, on shapes that include the awkward sizes (1, 3, 17, 65), ggml
 * test-backend-ops style. Gradient outputs start from random values, not zeros, so the
 * "backward accumulates" contract is checked too. Tolerance: 1e-5 relative to the
 * tensor's magnitude (test_nn_util.h). Inputs reach the backend through to_device and
 * results come back through to_host, so a GPU backend is tested exactly like the CPU one.
 * The CUDA backend joins `backends` when the build has it and a GPU is present; otherwise
 * the test prints "cuda: NOT RUN (…)" and passes. A backend with bf16 weight ops (CUDA: main
 * sets LOUPE_CUDA_BF16=1) has them checked against nn/ops_bf16.c as well (test_bf16). */
#include <stdlib.h>

#include "backend/backend.h"
#include "nn/ops_bf16.h"
#include "test_nn_util.h"
#include "util/err.h"
#include "util/mem.h"

#ifndef TOL
#define TOL 1e-5
#endif

static const be_backend *be;   // the backend under test
static const be_backend *ref;

static const int SIZES[] = {1, 3, 17, 65};
#define NS (int)(sizeof SIZES / sizeof SIZES[0])

/* ---- device round trips: these tests pass host pointers through the backend's memory */

static float *dev(const float *host, size_t n) {
    float *d = be->alloc(n * sizeof(float));
    be->to_device(d, host, n * sizeof(float));
    return d;
}

static int *dev_i(const int *host, size_t n) {
    int *d = be->alloc(n * sizeof(int));
    be->to_device(d, host, n * sizeof(int));
    return d;
}

static float *host(float *d, size_t n) {   // copy back into a tracked host buffer, free d
    float *h = tn_zeros(n);
    be->sync();
    be->to_host(h, d, n * sizeof(float));
    be->free(d);
    return h;
}

#define CLOSE(dptr, refp, n, ...) do { float *_h = host((dptr), (n)); \
    TN_CLOSE(_h, (refp), (n), TOL, __VA_ARGS__); } while (0)
/* The attention gradients are written (ops.h), and where every query sees at most one key
 * they are 0 up to float noise (dS = P·(dP − P·dP) with P = 1): measure the error against
 * the inputs' scale (randn, so 1) when the reference's own entries are smaller. */
#define CLOSE_ATT(dptr, refp, n, ...) do { float *_h = host((dptr), (n)); \
    double _e = tn_err(_h, (refp), (n), 1.0); \
    char _what[200]; snprintf(_what, sizeof _what, __VA_ARGS__); \
    T_CHECK(_e <= TOL, "%s: error %.3g > %.1g", _what, _e, (double)TOL); } while (0)

/* ---- ops ----------------------------------------------------------------------------- */

static void test_matmul(void) {
    for (int a = 0; a < NS; a++)
        for (int b = 0; b < NS; b++)
            for (int tr = 0; tr < 4; tr++) {
                int M = SIZES[a], N = SIZES[b], K = SIZES[(a + b) % NS], ta = tr & 1, tb = tr >> 1;
                float *A = tn_randn((size_t)M * K, 1), *B = tn_randn((size_t)K * N, 1);
                float *C = tn_randn((size_t)M * N, 1), *Cr = tn_copy(C, (size_t)M * N);
                float *dA = dev(A, (size_t)M * K), *dB = dev(B, (size_t)K * N);
                float *dC = dev(C, (size_t)M * N);
                ref->matmul(Cr, A, B, M, N, K, ta, tb, 0.7f, 0.5f);
                be->matmul(dC, dA, dB, M, N, K, ta, tb, 0.7f, 0.5f);
                CLOSE(dC, Cr, (size_t)M * N, "matmul %dx%dx%d ta=%d tb=%d", M, N, K, ta, tb);
                be->free(dA), be->free(dB);
                tn_free_all();
            }
    // big enough to be split across threads: by rows (tall c) and by columns (wide c)
    const int big[][3] = {{130, 257, 65}, {3, 2001, 300}, {9, 700, 1000}};
    for (int s = 0; s < 3; s++)
        for (int tr = 0; tr < 4; tr++) {
            int M = big[s][0], N = big[s][1], K = big[s][2], ta = tr & 1, tb = tr >> 1;
            float *A = tn_randn((size_t)M * K, 1), *B = tn_randn((size_t)K * N, 1);
            float *C = tn_randn((size_t)M * N, 1), *Cr = tn_copy(C, (size_t)M * N);
            float *dA = dev(A, (size_t)M * K), *dB = dev(B, (size_t)K * N);
            float *dC = dev(C, (size_t)M * N);
            ref->matmul(Cr, A, B, M, N, K, ta, tb, 1.0f, 1.0f);
            be->matmul(dC, dA, dB, M, N, K, ta, tb, 1.0f, 1.0f);
            CLOSE(dC, Cr, (size_t)M * N, "matmul %dx%dx%d ta=%d tb=%d", M, N, K, ta, tb);
            be->free(dA), be->free(dB);
            tn_free_all();
        }
}

static void test_embedding(void) {
    for (int s = 0; s < NS; s++) {
        int N = SIZES[s], V = 11, C = SIZES[(s + 2) % NS];
        int *ids = tn_ints(N);
        for (int n = 0; n < N; n++) ids[n] = (int)(tn_u32() % V);
        float *table = tn_randn((size_t)V * C, 1), *out = tn_randn((size_t)N * C, 1);
        float *dt = tn_randn((size_t)V * C, 1), *dout = tn_randn((size_t)N * C, 1);
        float *outr = tn_copy(out, (size_t)N * C), *dtr = tn_copy(dt, (size_t)V * C);
        int *did = dev_i(ids, N);
        float *dtab = dev(table, (size_t)V * C), *dO = dev(out, (size_t)N * C);
        float *dT = dev(dt, (size_t)V * C), *dG = dev(dout, (size_t)N * C);
        ref->embedding_add_forward(outr, ids, table, N, V, C);
        T_EQ_INT(be->embedding_add_forward(dO, did, dtab, N, V, C), 0);
        CLOSE(dO, outr, (size_t)N * C, "embedding_add N=%d C=%d", N, C);
        dO = dev(out, (size_t)N * C);
        ref->embedding_forward(outr, ids, table, N, V, C);
        T_EQ_INT(be->embedding_forward(dO, did, dtab, N, V, C), 0);
        CLOSE(dO, outr, (size_t)N * C, "embedding N=%d C=%d", N, C);
        ref->embedding_backward(dtr, dout, ids, N, C);
        be->embedding_backward(dT, dG, did, N, C);
        CLOSE(dT, dtr, (size_t)V * C, "embedding_backward N=%d C=%d", N, C);
        if (be->embedding_rows) {   /* ids checked by the caller: the same rows, no check */
            dO = dev(out, (size_t)N * C);
            be->embedding_rows(dO, did, dtab, N, C, 0);
            CLOSE(dO, outr, (size_t)N * C, "embedding_rows N=%d C=%d", N, C);
            float *addr = tn_copy(out, (size_t)N * C);
            ref->embedding_add_forward(addr, ids, table, N, V, C);
            dO = dev(out, (size_t)N * C);
            be->embedding_rows(dO, did, dtab, N, C, 1);
            CLOSE(dO, addr, (size_t)N * C, "embedding_rows add N=%d C=%d", N, C);
        }
        // a bad id is the user's error: -1 with a message, output untouched
        ids[N - 1] = V;
        be->to_device(did, ids, N * sizeof(int));
        dO = dev(out, (size_t)N * C);
        T_EQ_INT(be->embedding_forward(dO, did, dtab, N, V, C), -1);
        T_CONTAINS(lp_geterr(), "outside the vocabulary");
        be->free(dO), be->free(did), be->free(dtab), be->free(dG);
        tn_free_all();
    }
}

static void test_linear(void) {
    for (int conv = 0; conv < 2; conv++)
        for (int a = 0; a < NS; a++)
            for (int b = 0; b < NS; b++) {
                int N = SIZES[a], IN = SIZES[b], OUT = SIZES[(a + b + 1) % NS];
                int usebias = (a + b) % 2 == 0;
                size_t ni = (size_t)N * IN, no = (size_t)N * OUT, nw = (size_t)IN * OUT;
                float *x = tn_randn(ni, 1), *w = tn_randn(nw, 1), *bias = tn_randn(OUT, 1);
                float *g = tn_randn(no, 1), *outr = tn_zeros(no);
                float *dxr = tn_randn(ni, 1), *dwr = tn_randn(nw, 1), *dbr = tn_randn(OUT, 1);
                float *dx = dev(dxr, ni), *dw = dev(dwr, nw), *db = dev(dbr, OUT);
                float *X = dev(x, ni), *W = dev(w, nw), *Bb = dev(bias, OUT), *G = dev(g, no);
                float *O = be->alloc(no * sizeof(float));
                const float *bp = usebias ? bias : NULL, *Bp = usebias ? Bb : NULL;
                if (conv) {
                    ref->conv1d_forward(outr, x, w, bp, N, IN, OUT);
                    be->conv1d_forward(O, X, W, Bp, N, IN, OUT);
                    ref->conv1d_backward(dxr, dwr, dbr, g, x, w, N, IN, OUT);
                    be->conv1d_backward(dx, dw, db, G, X, W, N, IN, OUT);
                } else {
                    ref->linear_forward(outr, x, w, bp, N, IN, OUT);
                    be->linear_forward(O, X, W, Bp, N, IN, OUT);
                    ref->linear_backward(dxr, dwr, dbr, g, x, w, N, IN, OUT);
                    be->linear_backward(dx, dw, db, G, X, W, N, IN, OUT);
                }
                const char *nm = conv ? "conv1d" : "linear";
                CLOSE(O, outr, no, "%s_forward N=%d IN=%d OUT=%d", nm, N, IN, OUT);
                CLOSE(dx, dxr, ni, "%s_backward dinp N=%d IN=%d OUT=%d", nm, N, IN, OUT);
                CLOSE(dw, dwr, nw, "%s_backward dweight N=%d IN=%d OUT=%d", nm, N, IN, OUT);
                CLOSE(db, dbr, OUT, "%s_backward dbias N=%d IN=%d OUT=%d", nm, N, IN, OUT);
                be->free(X), be->free(W), be->free(Bb), be->free(G);
                tn_free_all();
            }
    // frozen weight: dweight = NULL, only dinp is produced
    float *x = tn_randn(12, 1), *w = tn_randn(12, 1), *g = tn_randn(9, 1);
    float *dxr = tn_zeros(12), *dx = dev(dxr, 12);
    float *X = dev(x, 12), *W = dev(w, 12), *G = dev(g, 9);
    ref->linear_backward(dxr, NULL, NULL, g, x, w, 3, 4, 3);
    be->linear_backward(dx, NULL, NULL, G, X, W, 3, 4, 3);
    CLOSE(dx, dxr, 12, "linear_backward frozen");
    be->free(X), be->free(W), be->free(G);
    tn_free_all();
}

static void test_lora(void) {
    for (int a = 0; a < NS; a++)
        for (int drop = 0; drop < 2; drop++) {
            int N = SIZES[a], IN = SIZES[(a + 1) % NS], OUT = SIZES[(a + 2) % NS];
            int R = a % 2 ? 8 : 1;
            size_t ni = (size_t)N * IN, no = (size_t)N * OUT;
            float *x = tn_randn(ni, 1), *A = tn_randn((size_t)R * IN, 1);
            float *B = tn_randn((size_t)OUT * R, 1), *g = tn_randn(no, 1);
            float *mask = NULL, *M = NULL;
            if (drop) {
                mask = tn_zeros(ni);
                ref->dropout_mask(mask, 99, 5, 0.25f, ni);
                M = be->alloc(ni * sizeof(float));
                be->dropout_mask(M, 99, 5, 0.25f, ni);
                CLOSE(M, mask, ni, "dropout_mask n=%zu", ni);
                M = dev(mask, ni);
            }
            float *outr = tn_randn(no, 1), *hr = tn_zeros((size_t)N * R);
            float *dxr = tn_randn(ni, 1), *dAr = tn_randn((size_t)R * IN, 1);
            float *dBr = tn_randn((size_t)OUT * R, 1), *dhr = tn_zeros((size_t)N * R);
            float *O = dev(outr, no), *Hh = be->alloc((size_t)N * R * sizeof(float));
            float *X = dev(x, ni), *dA_ = dev(A, (size_t)R * IN), *dB_ = dev(B, (size_t)OUT * R);
            float *G = dev(g, no), *dx = dev(dxr, ni), *dA = dev(dAr, (size_t)R * IN);
            float *dB = dev(dBr, (size_t)OUT * R), *dh = be->alloc((size_t)N * R * sizeof(float));
            ref->lora_forward(outr, hr, x, mask, A, B, 0.5f, N, IN, OUT, R);
            be->lora_forward(O, Hh, X, M, dA_, dB_, 0.5f, N, IN, OUT, R);
            ref->lora_backward(dxr, dAr, dBr, dhr, g, hr, x, mask, A, B, 0.5f, N, IN, OUT, R);
            be->lora_backward(dx, dA, dB, dh, G, Hh, X, M, dA_, dB_, 0.5f, N, IN, OUT, R);
            const char *d = drop ? "+dropout" : "";
            CLOSE(O, outr, no, "lora%s_forward N=%d IN=%d OUT=%d R=%d", d, N, IN, OUT, R);
            CLOSE(Hh, hr, (size_t)N * R, "lora%s_forward h", d);
            CLOSE(dx, dxr, ni, "lora%s_backward dinp N=%d IN=%d OUT=%d R=%d", d, N, IN, OUT, R);
            CLOSE(dA, dAr, (size_t)R * IN, "lora%s_backward dA N=%d IN=%d", d, N, IN);
            CLOSE(dB, dBr, (size_t)OUT * R, "lora%s_backward dB N=%d OUT=%d", d, N, OUT);
            CLOSE(dh, dhr, (size_t)N * R, "lora%s_backward dh", d);
            if (be->lora_forward_first) {   // written, not added: 0 + the reference's term
                float *o1 = tn_zeros(no), *h1 = tn_zeros((size_t)N * R), *O1 = dev(g, no);
                float *H1 = be->alloc((size_t)N * R * sizeof(float));
                ref->lora_forward(o1, h1, x, mask, A, B, 0.5f, N, IN, OUT, R);
                be->lora_forward_first(O1, H1, X, M, dA_, dB_, 0.5f, N, IN, OUT, R);
                CLOSE(O1, o1, no, "lora%s_forward_first N=%d IN=%d OUT=%d R=%d", d, N, IN, OUT,
                      R);
                CLOSE(H1, h1, (size_t)N * R, "lora%s_forward_first h", d);
            }
            if (be->lora_backward_first) {   // dinp written; dA, dB added as lora_backward
                float *dx1 = tn_zeros(ni), *dA1 = tn_randn((size_t)R * IN, 3);
                float *dB1 = tn_randn((size_t)OUT * R, 3), *dh1 = tn_zeros((size_t)N * R);
                float *DX = dev(x, ni), *DA = dev(dA1, (size_t)R * IN);   // DX: anything
                float *DB = dev(dB1, (size_t)OUT * R), *DH = be->alloc((size_t)N * R * 4);
                float *H = dev(hr, (size_t)N * R), *G2 = dev(g, no);
                ref->lora_backward(dx1, dA1, dB1, dh1, g, hr, x, mask, A, B, 0.5f, N, IN, OUT, R);
                be->lora_backward_first(DX, DA, DB, DH, G2, H, X, M, dA_, dB_, 0.5f, N, IN, OUT,
                                        R);
                CLOSE(DX, dx1, ni, "lora%s_backward_first dinp N=%d IN=%d OUT=%d R=%d", d, N,
                      IN, OUT, R);
                CLOSE(DA, dA1, (size_t)R * IN, "lora%s_backward_first dA", d);
                CLOSE(DB, dB1, (size_t)OUT * R, "lora%s_backward_first dB", d);
                CLOSE(DH, dh1, (size_t)N * R, "lora%s_backward_first dh", d);
                be->free(H), be->free(G2);
            }
            be->free(X), be->free(dA_), be->free(dB_), be->free(G), be->free(M);
            tn_free_all();
        }
}

static void test_dropout_mask(void) {
    size_t n = 100000;
    float *m = tn_zeros(n), *m2 = tn_zeros(n);
    nn_dropout_mask(m, 1, 0, 0.1f, n);
    size_t zeros = 0;
    for (size_t i = 0; i < n; i++) {
        zeros += m[i] == 0.0f;
        T_OK(m[i] == 0.0f || fabsf(m[i] - 1.0f / 0.9f) < 1e-6f);
    }
    T_OK(zeros > 9400 && zeros < 10600);   // p = 0.1 within ~6σ
    // counter-based: the tail drawn alone equals the tail of the whole
    nn_dropout_mask(m2, 1, 500, 0.1f, n - 500);
    T_OK(memcmp(m + 500, m2, (n - 500) * sizeof(float)) == 0);
    nn_dropout_mask(m2, 2, 0, 0.1f, n);   // another seed, another mask
    T_OK(memcmp(m, m2, n * sizeof(float)) != 0);
    nn_dropout_mask(m2, 2, 0, 0.0f, 16);
    for (int i = 0; i < 16; i++) T_OK(m2[i] == 1.0f);
    tn_free_all();
}

static void test_rand(void) {
    size_t n = 200000;
    float *u = tn_zeros(n), *g = tn_zeros(n), *tail = tn_zeros(n);
    nn_rand_uniform(u, 5, 0, -0.5f, 0.25f, n);
    nn_rand_normal(g, 5, 0, 1.0f, 0.02f, n);
    double su = 0, sg = 0, sg2 = 0;
    for (size_t i = 0; i < n; i++) {
        T_OK(u[i] >= -0.5f && u[i] < 0.25f);
        su += u[i], sg += g[i], sg2 += (g[i] - 1.0) * (g[i] - 1.0);
    }
    T_NEAR(su / n, -0.125, 2e-3);             // mean of U(-0.5, 0.25)
    T_NEAR(sg / n, 1.0, 3e-4);                 // N(1, 0.02²): 6σ of the mean
    T_NEAR(sqrt(sg2 / n), 0.02, 2e-4);
    nn_rand_normal(tail, 5, 1000, 1.0f, 0.02f, n - 1000);   // counter-based: same tail
    T_OK(memcmp(g + 1000, tail, (n - 1000) * sizeof(float)) == 0);
    tn_free_all();
}

static void test_channel_scale(void) {
    for (int a = 0; a < NS; a++)
        for (int b = 0; b < NS; b++) {
            int N = SIZES[a], C = SIZES[b] * 2 + 1;
            size_t n = (size_t)N * C;
            float *x = tn_randn(n, 1), *l = tn_randn(C, 1), *g = tn_randn(n, 1);
            float *outr = tn_zeros(n), *dxr = tn_randn(n, 1), *dlr = tn_randn(C, 1);
            float *X = dev(x, n), *L = dev(l, C), *G = dev(g, n), *O = be->alloc(n * 4);
            float *dx = dev(dxr, n), *dl = dev(dlr, C);
            ref->channel_scale_forward(outr, x, l, N, C);
            be->channel_scale_forward(O, X, L, N, C);
            ref->channel_scale_backward(dxr, dlr, g, x, l, N, C);
            be->channel_scale_backward(dx, dl, G, X, L, N, C);
            CLOSE(O, outr, n, "channel_scale_forward N=%d C=%d", N, C);
            CLOSE(dx, dxr, n, "channel_scale_backward dinp N=%d C=%d", N, C);
            CLOSE(dl, dlr, C, "channel_scale_backward dl N=%d C=%d", N, C);
            be->free(X), be->free(L), be->free(G);
            tn_free_all();
        }
}

/* DoRA's row norms (both layouts) and its combination, with and without y and a bias */
static void test_dora(void) {
    for (int a = 0; a < NS; a++)
        for (int b = 0; b < NS; b++) {
            int R = SIZES[a] * 3 + 2, C = SIZES[b] * 2 + 1, N = SIZES[(a + b) % NS];
            float *w = tn_randn((size_t)R * C, 1), *nr = tn_zeros(R), *nc = tn_zeros(C);
            float *W = dev(w, (size_t)R * C), *NR = be->alloc(R * 4), *NC = be->alloc(C * 4);
            ref->row_norm(nr, w, R, C, 0);
            be->row_norm(NR, W, R, C, 0);
            ref->row_norm(nc, w, R, C, 1);
            be->row_norm(NC, W, R, C, 1);
            CLOSE(NR, nr, R, "row_norm rows=%d cols=%d", R, C);
            CLOSE(NC, nc, C, "row_norm trans rows=%d cols=%d", R, C);
            for (int mode = 0; mode < 3; mode++) {   /* y given; y = out − bias; y = out */
                size_t n = (size_t)N * R;
                float *out = tn_randn(n, 1), *y = tn_randn(n, 1), *su = tn_randn(n, 1);
                float *bias = tn_randn(R, 1), *m = tn_randn(R, 1);
                float *v = tn_zeros(n), *g = tn_zeros(2 * (size_t)R);
                float *O = dev(out, n), *Y = dev(y, n), *S = dev(su, n), *Bi = dev(bias, R);
                float *M = dev(m, R), *V = be->alloc(n * 4), *G = be->alloc(8 * (size_t)R);
                float *NR2 = dev(nr, R);
                ref->dora_forward(out, v, g, mode == 0 ? y : NULL, su, mode == 1 ? bias : NULL,
                                  m, nr, N, R);
                be->dora_forward(O, V, G, mode == 0 ? Y : NULL, S, mode == 1 ? Bi : NULL, M,
                                 NR2, N, R);
                CLOSE(O, out, n, "dora_forward out N=%d OUT=%d mode %d", N, R, mode);
                CLOSE(V, v, n, "dora_forward v N=%d OUT=%d mode %d", N, R, mode);
                CLOSE(G, g, 2 * (size_t)R, "dora_forward g N=%d OUT=%d mode %d", N, R, mode);
                be->free(Y), be->free(S), be->free(Bi), be->free(M), be->free(NR2);
            }
            be->free(W);
            tn_free_all();
        }
}

static void test_norms(void) {
    for (int kind = 0; kind < 3; kind++)
        for (int a = 0; a < NS; a++)
            for (int b = 0; b < NS; b++) {
                int N = SIZES[a], C = SIZES[b];
                size_t n = (size_t)N * C;
                float *x = tn_randn(n, 2), *w = tn_randn(C, 1), *bias = tn_randn(C, 1);
                float *g = tn_randn(n, 1), *outr = tn_zeros(n), *mr = tn_zeros(N), *rr = tn_zeros(N);
                float *dxr = tn_randn(n, 1), *dwr = tn_randn(C, 1), *dbr = tn_randn(C, 1);
                float *X = dev(x, n), *W = dev(w, C), *Bb = dev(bias, C), *G = dev(g, n);
                float *O = be->alloc(n * sizeof(float)), *Mn = be->alloc(N * sizeof(float));
                float *Rs = be->alloc(N * sizeof(float));
                float *dx = dev(dxr, n), *dw = dev(dwr, C), *db = dev(dbr, C);
                const char *nm = kind == 2 ? "layernorm" : kind ? "rmsnorm(1+w)" : "rmsnorm";
                if (kind == 2) {
                    ref->layernorm_forward(outr, mr, rr, x, w, bias, 1e-5f, N, C);
                    be->layernorm_forward(O, Mn, Rs, X, W, Bb, 1e-5f, N, C);
                    ref->layernorm_backward(dxr, dwr, dbr, g, mr, rr, x, w, N, C);
                    be->layernorm_backward(dx, dw, db, G, Mn, Rs, X, W, N, C);
                    CLOSE(Mn, mr, N, "%s mean N=%d C=%d", nm, N, C);
                    CLOSE(db, dbr, C, "%s dbias N=%d C=%d", nm, N, C);
                } else {
                    ref->rmsnorm_forward(outr, rr, x, w, 1e-6f, kind, N, C);
                    be->rmsnorm_forward(O, Rs, X, W, 1e-6f, kind, N, C);
                    ref->rmsnorm_backward(dxr, dwr, g, rr, x, w, kind, N, C);
                    be->rmsnorm_backward(dx, dw, G, Rs, X, W, kind, N, C);
                    be->free(Mn), be->free(db);
                }
                CLOSE(O, outr, n, "%s forward N=%d C=%d", nm, N, C);
                CLOSE(Rs, rr, N, "%s rstd N=%d C=%d", nm, N, C);
                CLOSE(dx, dxr, n, "%s dinp N=%d C=%d", nm, N, C);
                CLOSE(dw, dwr, C, "%s dweight N=%d C=%d", nm, N, C);
                be->free(X), be->free(W), be->free(Bb), be->free(G);
                tn_free_all();
            }
}

static void test_rope(void) {
    const int Ds[] = {2, 8, 34, 128};
    for (int a = 0; a < NS; a++)
        for (int d = 0; d < 4; d++) {
            int N = SIZES[a], H = SIZES[(a + d) % NS], D = Ds[d];
            size_t n = (size_t)N * H * D, nt = (size_t)N * (D / 2);
            float inv[64];
            nn_rope_config cfg = {.type = NN_ROPE_DEFAULT, .theta = 10000};
            nn_rope_inv_freq(inv, &cfg, D, N);
            int *pos = tn_ints(N);
            for (int i = 0; i < N; i++) pos[i] = i * 7;
            float *c = tn_zeros(nt), *s = tn_zeros(nt);
            nn_rope_table(c, s, inv, pos, N, D);
            float *x = tn_randn(n, 1), *g = tn_randn(n, 1), *outr = tn_zeros(n), *dxr = tn_randn(n, 1);
            float *X = dev(x, n), *G = dev(g, n), *Cc = dev(c, nt), *Ss = dev(s, nt);
            float *O = be->alloc(n * sizeof(float)), *dx = dev(dxr, n);
            ref->rope_forward(outr, x, c, s, N, H, D);
            be->rope_forward(O, X, Cc, Ss, N, H, D);
            ref->rope_backward(dxr, g, c, s, N, H, D);
            be->rope_backward(dx, G, Cc, Ss, N, H, D);
            CLOSE(O, outr, n, "rope_forward N=%d H=%d D=%d", N, H, D);
            CLOSE(dx, dxr, n, "rope_backward N=%d H=%d D=%d", N, H, D);
            be->rope_forward(X, X, Cc, Ss, N, H, D);   // in place
            CLOSE(X, outr, n, "rope_forward in place N=%d H=%d D=%d", N, H, D);
            be->free(G), be->free(Cc), be->free(Ss);
            tn_free_all();
        }
}

static void att_case(int B, int T, int H, int KVH, int D, nn_attn_params p, int pad) {
    size_t nq = (size_t)B * T * H * D, nk = (size_t)B * T * KVH * D, np = (size_t)B * H * T * T;
    float *M = NULL;
    if (p.dropout) {   // the caller asks for dropout with a non-NULL marker: make the mask
        float *m = tn_zeros(np);
        nn_dropout_mask(m, 17, 0, 0.2f, np);
        p.dropout = m;
        M = dev(m, np);
    }
    nn_attn_params pb = p;   // the backend reads its own (device) copy of the mask
    pb.dropout = M;
    float *q = tn_randn(nq, 1), *k = tn_randn(nk, 1), *v = tn_randn(nk, 1), *g = tn_randn(nq, 1);
    int *am = NULL;
    if (pad) {   // even batches right-padded, odd left-padded, by b+1 tokens (capped)
        am = tn_ints((size_t)B * T);
        for (int b = 0; b < B; b++) {
            int np_ = b + 1 < T ? b + 1 : T - 1;
            for (int t = 0; t < T; t++)
                am[b * T + t] = b % 2 ? t >= np_ : t < T - np_;
        }
    }
    float *outr = tn_zeros(nq), *pr = tn_zeros(np), *dsr = tn_zeros(np);
    float *dqr = tn_randn(nq, 1), *dkr = tn_randn(nk, 1), *dvr = tn_randn(nk, 1);
    float *Q = dev(q, nq), *K = dev(k, nk), *V = dev(v, nk), *G = dev(g, nq);
    int *AM = am ? dev_i(am, (size_t)B * T) : NULL;
    float *O = be->alloc(nq * sizeof(float)), *P = be->alloc(np * sizeof(float));
    float *dS = be->alloc(np * sizeof(float));
    float *dq = dev(dqr, nq), *dk = dev(dkr, nk), *dv = dev(dvr, nk);
    ref->attention_forward(outr, pr, q, k, v, am, &p, B, T, H, KVH, D);
    be->attention_forward(O, P, Q, K, V, AM, &pb, B, T, H, KVH, D);
    ref->attention_backward(dqr, dkr, dvr, dsr, g, pr, q, k, v, am, &p, B, T, H, KVH, D);
    be->attention_backward(dq, dk, dv, dS, G, P, Q, K, V, AM, &pb, B, T, H, KVH, D);
    char what[128];
    snprintf(what, sizeof what, "B=%d T=%d H=%d KVH=%d D=%d causal=%d window=%d cap=%g pad=%d "
             "dropout=%d", B, T, H, KVH, D, p.causal, p.window, p.softcap, pad, M != NULL);
    float *oh = host(O, nq), *ph = host(P, np);
    for (size_t i = 0; i < nq; i++) T_OK(isfinite(oh[i]));   // padded rows too
    TN_CLOSE(oh, outr, nq, TOL, "attention_forward out %s", what);
    TN_CLOSE(ph, pr, np, TOL, "attention_forward probs %s", what);
    CLOSE_ATT(dq, dqr, nq, "attention_backward dq %s", what);
    CLOSE_ATT(dk, dkr, nk, "attention_backward dk %s", what);
    CLOSE_ATT(dv, dvr, nk, "attention_backward dv %s", what);
    // weights only (heat map): out = NULL
    P = be->alloc(np * sizeof(float));
    be->attention_forward(NULL, P, Q, K, V, AM, &pb, B, T, H, KVH, D);
    CLOSE(P, pr, np, "attention weights only %s", what);
    be->free(Q), be->free(K), be->free(V), be->free(G), be->free(AM), be->free(dS), be->free(M);
    tn_free_all();
}

static void test_attention(void) {
    for (int a = 0; a < NS; a++) {
        int T = SIZES[a];
        nn_attn_params causal = {.scale = 0.25f, .causal = 1};
        nn_attn_params bidir = {.scale = 0.3f, .causal = 0};
        nn_attn_params gemma = {.scale = 0.2f, .causal = 1, .softcap = 5.0f, .window = 4};
        att_case(2, T, 4, 2, 16, causal, 0);
        att_case(3, T, 3, 3, 17, causal, 1);
        att_case(2, T, 2, 1, 3, bidir, 1);
        att_case(2, T, 4, 1, 8, gemma, 1);
        static const float marker = 0;   // non-NULL: att_case draws a dropout mask
        nn_attn_params bert_train = {.scale = 0.3f, .causal = 0, .dropout = &marker};
        att_case(2, T, 3, 3, 5, bert_train, 1);
    }
}

/* Fused attention against the materialised reference: the same out, lse the log-sum-exp of
 * the reference's scores (+inf exactly for a query that sees no key), and dq, dk, dv equal to
 * attention_backward's, written over random values. pad: 0 none, 1 as att_case (a left-
 * padded causal row has queries that see nothing), 2 batch row 0 entirely padding. */
static int odd(int lo, int hi);

/* The fused ops under test and their tolerance: the backend's (TOL), or the bf16 table's
 * tensor-core ones (TF32 operands: FUSED_TF32_TOL; bf16 operands for heads up to
 * bf16_dmax: FUSED_BF16_TOL). */
typedef struct {
    const char *name;
    void (*fwd)(float *, float *, const float *, const float *, const float *, const int *,
                const nn_attn_params *, int, int, int, int, int);
    void (*bwd)(float *, float *, float *, const float *, const float *, const float *,
                const float *, const float *, const float *, const int *,
                const nn_attn_params *, int, int, int, int, int);
    double tol;
    int bf16_dmax;
} fused_ops;
static fused_ops fused;   // set by test_attention_fused and test_bf16

/* TF32 keeps 10 of f32's 23 mantissa bits: one rounding is 2^-11 ≈ 5e-4 relative, and the
 * products' errors add up over D or T terms. The emulator (tests/gpu/emu) measures up to
 * 1e-3 on most shapes and 2.9e-3 where a query sees one key (window 1: dS = P·(dP − D_i)
 * is a TF32 product minus f32's D_i, 0 up to that noise); a wrong mask or block is O(1). */
#define FUSED_TF32_TOL 1e-2
/* bf16 keeps 7: q, k, v, dout, P and dS each rounded once (2^-9 ≈ 2e-3 relative) */
#define FUSED_BF16_TOL 3e-2

static void fused_case(int B, int T, int H, int KVH, int D, nn_attn_params p, int pad) {
    size_t nq = (size_t)B * T * H * D, nk = (size_t)B * T * KVH * D, np = (size_t)B * H * T * T;
    size_t nl = (size_t)B * H * T;
    float *q = tn_randn(nq, 1), *k = tn_randn(nk, 1), *v = tn_randn(nk, 1), *g = tn_randn(nq, 1);
    int *am = NULL;
    if (pad) {
        am = tn_ints((size_t)B * T);
        for (int b = 0; b < B; b++) {
            int np_ = b + 1 < T ? b + 1 : T - 1;
            for (int t = 0; t < T; t++)
                am[b * T + t] = pad == 2 && b == 0 ? 0 : b % 2 ? t >= np_ : t < T - np_;
        }
    }
    // the expected lse, from the reference's definition of the scores
    float *lser = tn_zeros(nl);
    int rep = H / KVH;
    for (int b = 0; b < B; b++)
        for (int h = 0; h < H; h++)
            for (int i = 0; i < T; i++) {
                double mx = -INFINITY, sum = 0, s[T];
                for (int j = 0; j < T; j++) {
                    s[j] = -INFINITY;
                    if ((am && !am[b * T + j]) || (p.causal && j > i) ||
                        (p.window > 0 && i - j >= p.window))
                        continue;
                    double x = 0;
                    for (int d = 0; d < D; d++)
                        x += (double)q[(((size_t)b * T + i) * H + h) * D + d] *
                             k[(((size_t)b * T + j) * KVH + h / rep) * D + d];
                    x *= p.scale;
                    if (p.softcap > 0) x = p.softcap * tanh(x / p.softcap);
                    s[j] = x;
                    mx = x > mx ? x : mx;
                }
                for (int j = 0; j < T; j++)
                    if (s[j] > -INFINITY) sum += exp(s[j] - mx);
                lser[((size_t)b * H + h) * T + i] = sum > 0 ? (float)(mx + log(sum)) : INFINITY;
            }
    float *outr = tn_zeros(nq), *pr = tn_zeros(np), *dsr = tn_zeros(np);
    float *dq0 = tn_randn(nq, 1), *dk0 = tn_randn(nk, 1), *dv0 = tn_randn(nk, 1);
    float *dqr = tn_copy(dq0, nq), *dkr = tn_copy(dk0, nk), *dvr = tn_copy(dv0, nk);
    ref->attention_forward(outr, pr, q, k, v, am, &p, B, T, H, KVH, D);
    ref->attention_backward(dqr, dkr, dvr, dsr, g, pr, q, k, v, am, &p, B, T, H, KVH, D);
    float *Q = dev(q, nq), *K = dev(k, nk), *V = dev(v, nk), *G = dev(g, nq);
    int *AM = am ? dev_i(am, (size_t)B * T) : NULL;
    float *O = be->alloc(nq * sizeof(float)), *L = be->alloc(nl * sizeof(float));
    float *dq = dev(dq0, nq), *dk = dev(dk0, nk), *dv = dev(dv0, nk), *dk2 = dev(dk0, nk);
    fused.fwd(O, L, Q, K, V, AM, &p, B, T, H, KVH, D);
    fused.bwd(dq, dk, dv, G, O, L, Q, K, V, AM, &p, B, T, H, KVH, D);
    // a NULL gradient is skipped: dk alone
    fused.bwd(NULL, dk2, NULL, G, O, L, Q, K, V, AM, &p, B, T, H, KVH, D);
    char what[160];
    int half = D <= fused.bf16_dmax;
    double tol = half ? FUSED_BF16_TOL : fused.tol;
    snprintf(what, sizeof what, "%s B=%d T=%d H=%d KVH=%d D=%d causal=%d window=%d cap=%g pad=%d",
             half ? "bf16" : fused.name, B, T, H, KVH, D, p.causal, p.window, p.softcap, pad);
    float *oh = host(O, nq), *lh = host(L, nl);
    for (size_t i = 0; i < nq; i++) T_OK(isfinite(oh[i]));
    TN_CLOSE(oh, outr, nq, tol, "attention_fused_forward out %s", what);
    size_t unseen = 0, wrong = 0;   // rows with no visible key: +inf in both, then compared as 0
    for (size_t i = 0; i < nl; i++) {
        int want = isinf(lser[i]);
        unseen += want;
        wrong += want != (isinf(lh[i]) && lh[i] > 0);
        if (want) lser[i] = lh[i] = 0;
    }
    T_CHECK(wrong == 0, "attention_fused_forward lse %s: %zu rows disagree on +inf", what, wrong);
    if (pad == 2) T_OK(unseen >= (size_t)H * T);
    TN_CLOSE(lh, lser, nl, tol, "attention_fused_forward lse %s", what);
    float *grads[] = {dq, dk, dv, dk2}, *want[] = {dqr, dkr, dvr, dkr};
    size_t sizes[] = {nq, nk, nk, nk};
    const char *names[] = {"dq", "dk", "dv", "dk alone"};
    for (int i = 0; i < 4; i++) {   // CLOSE_ATT's measure, at this tolerance
        double e = tn_err(host(grads[i], sizes[i]), want[i], sizes[i], 1.0);
        T_CHECK(e <= tol, "attention_fused_backward %s %s: error %.3g > %.1g", names[i], what, e,
                tol);
    }
    be->free(Q), be->free(K), be->free(V), be->free(G), be->free(AM);
    tn_free_all();
}

/* every shape of the fused ops, through `fused` */
static void fused_cases(void) {
    for (int a = 0; a < NS; a++) {
        int T = SIZES[a];
        nn_attn_params causal = {.scale = 0.125f, .causal = 1};
        nn_attn_params bidir = {.scale = 0.3f, .causal = 0};
        nn_attn_params gemma = {.scale = 0.0625f, .causal = 1, .softcap = 5.0f, .window = 4};
        nn_attn_params window = {.scale = 0.11f, .causal = 1, .window = 7};
        fused_case(2, T, 4, 2, 64, causal, 1);    // Qwen2-like head, GQA 2
        fused_case(3, T, 3, 3, 17, bidir, 2);     // odd D, a batch row of padding only
        fused_case(2, T, 4, 2, 256, gemma, 1);    // gemma-2: D 256, soft-cap, window
        fused_case(1, T, 6, 2, 80, window, 0);    // D 80, GQA 3
        fused_case(2, T, 2, 1, 3, bidir, 0);
    }
    for (int T = 16; T <= 64; T += 16) {   // exact multiples of the CUDA tiles; window 1, ≥ T
        nn_attn_params causal = {.scale = 0.125f, .causal = 1};
        nn_attn_params diag = {.scale = 0.3f, .causal = 1, .window = 1};
        nn_attn_params wide = {.scale = 0.3f, .causal = 0, .window = 1000, .softcap = 2.0f};
        fused_case(2, T, 2, 1, 64, causal, 1);
        fused_case(1, T, 3, 3, 20, diag, 0);
        fused_case(2, T, 4, 2, 36, wide, 2);
        fused_case(1, T, 2, 2, 136, causal, 0);   // a multiple of 8 short of its tile (192)
    }
    for (int it = 0; it < 4; it++) {   // past several tiles (16 queries, 32 keys), odd sizes
        static const int Ds[] = {64, 80, 256, 0};
        int T = odd(33, 161), KVH = 1 + it % 2, H = KVH * (1 + it % 3), D = Ds[it];
        if (!D) D = odd(3, 47);
        nn_attn_params p = {.scale = 1.0f / sqrtf((float)D), .causal = it != 1,
                            .softcap = it >= 2 ? 7.0f : 0.0f,
                            .window = it == 2 || it == 3 ? odd(5, 41) : 0};
        fused_case(1 + it % 2, T, H, KVH, D, p, it % 3);
    }
}

static void test_attention_fused(void) {
    fused = (fused_ops){"f32", be->attention_fused_forward, be->attention_fused_backward, TOL, 0};
    fused_cases();
}

/* A KV-cache step must give exactly the rows of a full forward over the same tokens. */
static void test_attention_kv(void) {
    for (int a = 0; a < NS; a++) {
        int B = 2, T = SIZES[a] + 1, H = 4, KVH = 2, D = 8;
        int nq_new = T > 3 ? 3 : 1, q_off = T - nq_new;
        size_t nq = (size_t)B * T * H * D, nk = (size_t)B * T * KVH * D;
        float *q = tn_randn(nq, 1), *k = tn_randn(nk, 1), *v = tn_randn(nk, 1);
        int *am = tn_ints((size_t)B * T);
        for (int i = 0; i < B * T; i++) am[i] = !(i / T == 1 && i % T == 0);   // row 1 left-padded
        nn_attn_params p = {.scale = 0.3f, .causal = 1, .window = 3, .softcap = 4.0f};
        float *outr = tn_zeros(nq), *pr = tn_zeros((size_t)B * H * T * T);
        ref->attention_forward(outr, pr, q, k, v, am, &p, B, T, H, KVH, D);
        // the new queries: rows q_off.. of every batch
        size_t nqn = (size_t)B * nq_new * H * D, npn = (size_t)B * H * nq_new * T;
        float *qn = tn_zeros(nqn), *want = tn_zeros(nqn), *wantp = tn_zeros(npn);
        for (int b = 0; b < B; b++) {
            memcpy(qn + (size_t)b * nq_new * H * D, q + ((size_t)b * T + q_off) * H * D,
                   (size_t)nq_new * H * D * sizeof(float));
            memcpy(want + (size_t)b * nq_new * H * D, outr + ((size_t)b * T + q_off) * H * D,
                   (size_t)nq_new * H * D * sizeof(float));
            for (int h = 0; h < H; h++)
                memcpy(wantp + ((size_t)b * H + h) * nq_new * T,
                       pr + (((size_t)b * H + h) * T + q_off) * T, (size_t)nq_new * T * sizeof(float));
        }
        float *Q = dev(qn, nqn), *K = dev(k, nk), *V = dev(v, nk);
        int *AM = dev_i(am, (size_t)B * T);
        float *O = be->alloc(nqn * 4), *P = be->alloc(npn * 4);
        be->attention_kv_forward(O, P, Q, K, V, AM, &p, B, nq_new, T, q_off, H, KVH, D);
        CLOSE(O, want, nqn, "attention_kv_forward out T=%d new=%d", T, nq_new);
        CLOSE(P, wantp, npn, "attention_kv_forward probs T=%d new=%d", T, nq_new);
        float *o2 = tn_zeros(nqn), *p2 = tn_zeros(npn);   // and the reference's own kv path
        ref->attention_kv_forward(o2, p2, qn, k, v, am, &p, B, nq_new, T, q_off, H, KVH, D);
        TN_CLOSE(o2, want, nqn, TOL, "ref attention_kv_forward out T=%d", T);
        TN_CLOSE(p2, wantp, npn, TOL, "ref attention_kv_forward probs T=%d", T);
        be->free(Q), be->free(K), be->free(V), be->free(AM);
        tn_free_all();
    }
}

static void test_activations(void) {
    for (int a = 0; a <= NN_ACT_RELU; a++)
        for (int s = 0; s < NS; s++) {
            size_t n = (size_t)SIZES[s] * 67;
            float *x = tn_randn(n, 3), *u = tn_randn(n, 1), *g = tn_randn(n, 1);
            float *outr = tn_zeros(n), *dxr = tn_randn(n, 1), *dur = tn_randn(n, 1);
            float *X = dev(x, n), *U = dev(u, n), *G = dev(g, n), *O = be->alloc(n * 4);
            float *dx = dev(dxr, n), *du = dev(dur, n);
            ref->act_forward(outr, x, a, n);
            be->act_forward(O, X, a, n);
            CLOSE(O, outr, n, "act_forward act=%d n=%zu", a, n);
            ref->act_backward(dxr, g, x, a, n);
            be->act_backward(dx, G, X, a, n);
            CLOSE(dx, dxr, n, "act_backward act=%d n=%zu", a, n);
            dx = dev(dxr, n);
            O = be->alloc(n * 4);
            ref->gated_forward(outr, x, u, a, n);
            be->gated_forward(O, X, U, a, n);
            CLOSE(O, outr, n, "gated_forward act=%d n=%zu", a, n);
            ref->gated_backward(dxr, dur, g, x, u, a, n);
            be->gated_backward(dx, du, G, X, U, a, n);
            CLOSE(dx, dxr, n, "gated_backward dgate act=%d n=%zu", a, n);
            CLOSE(du, dur, n, "gated_backward dup act=%d n=%zu", a, n);
            be->free(X), be->free(U), be->free(G);
            tn_free_all();
        }
    nn_act act;
    T_EQ_INT(nn_act_from_name(&act, "gelu_pytorch_tanh"), 0);
    T_EQ_INT(act, NN_ACT_GELU_TANH);
    T_EQ_INT(nn_act_from_name(&act, "swiglu"), -1);
    T_CONTAINS(lp_geterr(), "swiglu");
}

static void test_softmax_losses(void) {
    for (int a = 0; a < NS; a++)
        for (int b = 0; b < NS; b++) {
            int N = SIZES[a], C = SIZES[b] * 31;   // vocab-like widths up to 2015
            size_t n = (size_t)N * C;
            float *x = tn_randn(n, 4), *g = tn_randn(n, 1);
            float *outr = tn_zeros(n), *dxr = tn_randn(n, 1);
            float *X = dev(x, n), *G = dev(g, n), *O = be->alloc(n * 4), *dx = dev(dxr, n);
            ref->softmax_forward(outr, x, N, C);
            be->softmax_forward(O, X, N, C);
            ref->softmax_backward(dxr, g, outr, N, C);
            float *Oh = host(O, n);
            O = dev(Oh, n);
            be->softmax_backward(dx, G, O, N, C);
            TN_CLOSE(Oh, outr, n, TOL, "softmax_forward N=%d C=%d", N, C);
            CLOSE(dx, dxr, n, "softmax_backward N=%d C=%d", N, C);
            be->free(O);

            int *tg = tn_ints(N);
            for (int i = 0; i < N; i++) tg[i] = i % 3 == 1 ? -100 : (int)(tn_u32() % C);
            int *TG = dev_i(tg, N), cr, cb;
            float lr, lb, *lser = tn_zeros(N), *LSE = be->alloc(N * 4);
            T_EQ_INT(ref->cross_entropy_forward(&lr, lser, &cr, x, tg, N, C), 0);
            T_EQ_INT(be->cross_entropy_forward(&lb, LSE, &cb, X, TG, N, C), 0);
            T_EQ_INT(cb, cr);
            T_NEAR(lb, lr, TOL);
            float *dlr = tn_randn(n, 1), *dl = dev(dlr, n);
            ref->cross_entropy_backward(dlr, 1.5f, lser, x, tg, cr, N, C);
            be->cross_entropy_backward(dl, 1.5f, LSE, X, TG, cb, N, C);
            CLOSE(LSE, lser, N, "cross_entropy lse N=%d V=%d", N, C);
            CLOSE(dl, dlr, n, "cross_entropy_backward N=%d V=%d", N, C);
            /* the rows: the reference's against its own forward (lse to the bit, the kept
               rows' mean its loss), the backend's against the reference's */
            float *rlr = tn_randn(N, 1), *lse2 = tn_zeros(N), *RL = be->alloc(N * 4);
            LSE = be->alloc(N * 4);
            ref->cross_entropy_rows(rlr, lse2, x, tg, N, C);
            double mean = 0;
            for (int i = 0; i < N; i++) {
                T_OK(memcmp(&lse2[i], &lser[i], 4) == 0);
                if (tg[i] == -100) T_OK(rlr[i] == 0.0f);
                mean += rlr[i];
            }
            T_NEAR(cr ? mean / cr : 0.0, lr, 1e-6);
            be->cross_entropy_rows(RL, LSE, X, TG, N, C);
            CLOSE(RL, rlr, N, "cross_entropy_rows loss N=%d V=%d", N, C);
            CLOSE(LSE, lser, N, "cross_entropy_rows lse N=%d V=%d", N, C);

            O = be->alloc(n * 4);
            dx = dev(dxr, n);
            ref->softcap_forward(outr, x, 3.0f, n);
            be->softcap_forward(O, X, 3.0f, n);
            ref->softcap_backward(dxr, g, outr, 3.0f, n);
            be->softcap_backward(dx, G, O, 3.0f, n);
            CLOSE(O, outr, n, "softcap_forward n=%zu", n);
            CLOSE(dx, dxr, n, "softcap_backward n=%zu", n);
            be->free(X), be->free(G), be->free(TG);
            tn_free_all();
        }
    // all targets ignored: loss 0, count 0, no gradient (torch would give NaN). loss and
    // count are host values; logits, lse, targets and gradients live on the device.
    float x[6] = {1, 2, 3, 4, 5, 6}, loss = -1, d[6] = {0};
    int tg[2] = {-100, -100}, cnt = -1;
    float *X = dev(x, 6), *LSE = be->alloc(2 * sizeof(float)), *Dl = dev(d, 6);
    int *TG = dev_i(tg, 2);
    T_EQ_INT(be->cross_entropy_forward(&loss, LSE, &cnt, X, TG, 2, 3), 0);
    T_EQ_INT(cnt, 0);
    T_OK(loss == 0.0f);
    be->cross_entropy_backward(Dl, 1.0f, LSE, X, TG, cnt, 2, 3);
    float *dh = host(Dl, 6);
    for (int i = 0; i < 6; i++) T_OK(dh[i] == 0.0f);
    tg[1] = 3;   // out of range and not -100
    be->to_device(TG, tg, sizeof tg);
    T_EQ_INT(be->cross_entropy_forward(&loss, LSE, &cnt, X, TG, 2, 3), -1);
    T_CONTAINS(lp_geterr(), "label 3");
    be->free(X), be->free(LSE), be->free(TG);
    tn_free_all();
}

static void test_elementwise(void) {
    for (int s = 0; s < NS; s++) {
        size_t n = (size_t)SIZES[s] * SIZES[s] * 3;
        float *a = tn_randn(n, 1), *b = tn_randn(n, 1), *g = tn_randn(n, 1);
        float *outr = tn_zeros(n), *dar = tn_randn(n, 1), *dbr = tn_randn(n, 1);
        float *A = dev(a, n), *Bv = dev(b, n), *G = dev(g, n), *O = be->alloc(n * 4);
        float *da = dev(dar, n), *db = dev(dbr, n);
        ref->add_forward(outr, a, b, n);
        be->add_forward(O, A, Bv, n);
        CLOSE(O, outr, n, "add_forward n=%zu", n);
        ref->add_backward(dar, dbr, g, n);
        be->add_backward(da, db, G, n);
        CLOSE(da, dar, n, "add_backward da n=%zu", n);
        CLOSE(db, dbr, n, "add_backward db n=%zu", n);
        O = be->alloc(n * 4);
        da = dev(dar, n), db = dev(dbr, n);
        ref->mul_forward(outr, a, b, n);
        be->mul_forward(O, A, Bv, n);
        CLOSE(O, outr, n, "mul_forward n=%zu", n);
        ref->mul_backward(dar, dbr, g, a, b, n);
        be->mul_backward(da, db, G, A, Bv, n);
        CLOSE(da, dar, n, "mul_backward da n=%zu", n);
        CLOSE(db, dbr, n, "mul_backward db n=%zu", n);
        O = be->alloc(n * 4);
        da = dev(dar, n);
        ref->scale_forward(outr, a, 48.0f, n);
        be->scale_forward(O, A, 48.0f, n);
        ref->scale_backward(dar, g, 48.0f, n);
        be->scale_backward(da, G, 48.0f, n);
        CLOSE(O, outr, n, "scale_forward n=%zu", n);
        CLOSE(da, dar, n, "scale_backward n=%zu", n);
        be->free(A), be->free(Bv), be->free(G);
        tn_free_all();
    }
}

/* 4-bit dequantization (NF4 and FP4) on odd lengths (a short last block, an unpaired last
 * nibble): exactly the reference's values (one f32 product each); double quantization's
 * scales (8-bit indices into the dynamic map, a short last block of 256) exactly too. */
/* LLM.int8: the int8 rows dequantized (q4_dequant, NN_Q8) to the bit, and the product
 * (q8_linear_forward) against the reference, with outlier columns (thresholds 0, 1.5, 3), an
 * all-zero weight row, single rows and rows past one SGEMM chunk (1024 input features). */
static void test_q8(void) {
    for (int s = 0; s < NS; s++) {
        int N = SIZES[s], IN = SIZES[(s + 1) % NS] * 3 + 2 + (s == NS - 1 ? 1100 : 0);
        int OUT = SIZES[(s + 2) % NS] + 4;
        size_t nw = (size_t)OUT * IN;
        float *w = tn_randn(nw, 1), *x = tn_randn((size_t)N * IN, 1), *b = tn_randn(OUT, 1);
        for (int c = 0; c < IN; c++) w[c] = 0.0f;   /* row 0 all zero */
        for (int n = 0; n < N; n++) x[(size_t)n * IN + (n % IN)] *= 5.0f;
        float *scb = tn_zeros(OUT), *deq = tn_zeros(nw);
        uint8_t *cb = calloc(nw, 1);
        nn_q4_quantize(cb, scb, w, nw, IN, NN_Q8);
        ref->q4_dequant(deq, cb, scb, nw, IN, NN_Q8);
        uint8_t *CB = be->alloc(nw);
        be->to_device(CB, cb, nw);
        float *SCB = dev(scb, OUT), *O = be->alloc(nw * 4);
        be->q4_dequant(O, CB, SCB, nw, IN, NN_Q8);
        float *got = host(O, nw);
        T_CHECK(memcmp(got, deq, nw * 4) == 0, "q4_dequant int8 %dx%d: not the same values", OUT, IN);
        size_t nk = nn_q8_work(N, IN, OUT);
        float *work = tn_zeros(nk), *yr = tn_zeros((size_t)N * OUT);
        float *X = dev(x, (size_t)N * IN), *B = dev(b, OUT), *W = be->alloc(nk * 4);
        for (int t = 0; t < 3; t++) {
            float thr = t == 0 ? 0.0f : t == 1 ? 1.5f : 3.0f;
            nn_q8_linear_forward(yr, x, (const int8_t *)cb, scb, t == 2 ? NULL : b, N, IN, OUT,
                                 thr, work);
            float *Y = be->alloc((size_t)N * OUT * 4);
            be->q8_linear_forward(Y, X, (const int8_t *)CB, SCB, t == 2 ? NULL : B, N, IN, OUT,
                                  thr, W);
            CLOSE(Y, yr, (size_t)N * OUT, "q8_linear_forward N=%d IN=%d OUT=%d threshold %g", N,
                  IN, OUT, thr);
        }
        be->free(CB), be->free(SCB), be->free(X), be->free(B), be->free(W);
        free(cb);
        tn_free_all();
    }
}

static void test_q4(void) {
    for (int s = 0; s < NS; s++)
        for (int type = NN_Q4_NF4; type <= NN_Q4_FP4; type++) {
            size_t n = (size_t)SIZES[s] * 37 + 1, nc = (n + 1) / 2, na = (n + 63) / 64;
            float *x = tn_randn(n, 1), *am = tn_zeros(na), *outr = tn_zeros(n);
            uint8_t *codes = calloc(nc, 1);
            nn_q4_quantize(codes, am, x, n, 64, type);
            ref->q4_dequant(outr, codes, am, n, 64, type);
            uint8_t *C = be->alloc(nc);
            float *AM = dev(am, na), *O = be->alloc(n * 4);
            be->to_device(C, codes, nc);
            be->q4_dequant(O, C, AM, n, 64, type);
            float *got = host(O, n);
            T_CHECK(memcmp(got, outr, n * 4) == 0, "q4_dequant n=%zu type %d: not the same values",
                    n, type);
            be->free(C), be->free(AM);
            free(codes);
            tn_free_all();
        }
    for (int s = 0; s < NS; s++) {
        size_t nb = (size_t)SIZES[s] * 41 + 3, n2 = (nb + 255) / 256;
        float *am = tn_randn(nb, 2), *a2 = tn_zeros(n2), *work = tn_zeros(nb), *want = tn_zeros(nb);
        for (size_t i = 0; i < nb; i++) am[i] = fabsf(am[i]);
        float map[256];
        nn_dynamic_map(map);
        uint8_t *q = calloc(nb, 1);
        float off = nn_dq_offset(am, nb);
        nn_dq_quantize(q, a2, work, am, nb, off, map);
        ref->dq_dequant(want, q, a2, map, off, nb);
        uint8_t *Q = be->alloc(nb);
        float *A2 = dev(a2, n2), *M = dev(map, 256), *O = be->alloc(nb * 4);
        be->to_device(Q, q, nb);
        be->dq_dequant(O, Q, A2, M, off, nb);
        float *got = host(O, nb);
        T_CHECK(memcmp(got, want, nb * 4) == 0, "dq_dequant nb=%zu: not the same values", nb);
        be->free(Q), be->free(A2), be->free(M);
        free(q);
        tn_free_all();
    }
}

static void test_slice(void) {
    for (int a = 0; a < NS; a++)
        for (int b = 0; b < NS; b++) {
            int N = SIZES[a], W = SIZES[b], CI = 3 * W + 1, off = (a + b) % 3 * W;
            float *x = tn_randn((size_t)N * CI, 1), *g = tn_randn((size_t)N * W, 1);
            float *outr = tn_zeros((size_t)N * W), *dxr = tn_randn((size_t)N * CI, 1);
            float *X = dev(x, (size_t)N * CI), *G = dev(g, (size_t)N * W);
            float *O = be->alloc((size_t)N * W * 4), *dx = dev(dxr, (size_t)N * CI);
            ref->slice_forward(outr, x, N, CI, off, W);
            be->slice_forward(O, X, N, CI, off, W);
            ref->slice_backward(dxr, g, N, CI, off, W);
            be->slice_backward(dx, G, N, CI, off, W);
            CLOSE(O, outr, (size_t)N * W, "slice_forward N=%d CI=%d off=%d W=%d", N, CI, off, W);
            CLOSE(dx, dxr, (size_t)N * CI, "slice_backward N=%d CI=%d off=%d W=%d", N, CI, off, W);
            be->free(X), be->free(G);
            tn_free_all();
        }
}

static void test_optimizers(void) {
    const size_t sizes[] = {1, 17, 70000};   // the last spans several parallel chunks
    for (int s = 0; s < 3; s++) {
        size_t n = sizes[s];
        float *p = tn_randn(n, 1), *m = tn_zeros(n), *v = tn_zeros(n), *buf = tn_zeros(n);
        float *P = dev(p, n), *M = dev(m, n), *V = dev(v, n), *Bf = dev(buf, n);
        float *p2 = tn_copy(p, n), *P2 = dev(p, n);
        for (int t = 1; t <= 3; t++) {
            float *g = tn_randn(n, 1), *G = dev(g, n);
            ref->adamw_step(p, m, v, g, n, 1e-2, 0.9, 0.999, 1e-8, 0.01, t);
            be->adamw_step(P, M, V, G, n, 1e-2, 0.9, 0.999, 1e-8, 0.01, t);
            ref->sgd_step(p2, buf, g, n, 1e-1, 0.9, 0.001, t);
            be->sgd_step(P2, Bf, G, n, 1e-1, 0.9, 0.001, t);
            be->free(G);
        }
        CLOSE(P, p, n, "adamw param n=%zu", n);
        CLOSE(M, m, n, "adamw m n=%zu", n);
        CLOSE(V, v, n, "adamw v n=%zu", n);
        CLOSE(P2, p2, n, "sgd param n=%zu", n);
        CLOSE(Bf, buf, n, "sgd momentum n=%zu", n);
        tn_free_all();
    }
    // clipping: three tensors, total norm above and below the limit
    for (int over = 0; over < 2; over++) {
        size_t sz[3] = {5, 1, 4000};
        float *gr[3], *gb[3];
        for (int i = 0; i < 3; i++) gr[i] = tn_randn(sz[i], 1), gb[i] = dev(gr[i], sz[i]);
        double limit = over ? 1.0 : 1e6;
        double nr = ref->clip_grad_norm(gr, sz, 3, limit), nb = be->clip_grad_norm(gb, sz, 3, limit);
        T_NEAR(nb, nr, 1e-9);
        for (int i = 0; i < 3; i++) CLOSE(gb[i], gr[i], sz[i], "clip_grad_norm over=%d", over);
        double after = 0;
        for (int i = 0; i < 3; i++)
            for (size_t j = 0; j < sz[i]; j++) after += (double)gr[i][j] * gr[i][j];
        if (over) T_NEAR(sqrt(after), 1.0, 1e-5);
        else T_NEAR(sqrt(after), nr, 1e-6);
        tn_free_all();
    }
    // a non-finite norm is reported and leaves the grads alone
    float bad[3] = {1.0f, NAN, 2.0f}, *bp = dev(bad, 3);
    size_t bn = 3;
    T_OK(isnan(be->clip_grad_norm(&bp, &bn, 1, 1.0)));
    float *bh = host(bp, 3);
    T_OK(bh[0] == 1.0f && bh[2] == 2.0f);
    tn_free_all();
}

/* Random odd shapes, larger than SIZES, drawn from the test seed: rows past one block of a
 * column reduction (128), channels past one block of a row kernel (256), a GPT-2-sized
 * vocabulary, sequences past one block of an attention row, GQA groups of 2 and 3. */
static int odd(int lo, int hi) { return (lo | 1) + 2 * (int)(tn_u32() % (unsigned)((hi - lo) / 2 + 1)); }

static void test_random_shapes(void) {
    for (int it = 0; it < 4; it++) {
        {   // matmul, all transposes
            int M = odd(1, 301), N = odd(1, 301), K = odd(1, 301), tr = it;
            int ta = tr & 1, tb = tr >> 1;
            float *A = tn_randn((size_t)M * K, 1), *B = tn_randn((size_t)K * N, 1);
            float *C = tn_randn((size_t)M * N, 1), *Cr = tn_copy(C, (size_t)M * N);
            float *dA = dev(A, (size_t)M * K), *dB = dev(B, (size_t)K * N), *dC = dev(C, (size_t)M * N);
            ref->matmul(Cr, A, B, M, N, K, ta, tb, -0.3f, 0.0f);
            be->matmul(dC, dA, dB, M, N, K, ta, tb, -0.3f, 0.0f);
            CLOSE(dC, Cr, (size_t)M * N, "random matmul %dx%dx%d ta=%d tb=%d", M, N, K, ta, tb);
            be->free(dA), be->free(dB);
            tn_free_all();
        }
        {   // linear with bias, gradients accumulate
            int N = odd(129, 401), IN = odd(3, 199), OUT = odd(3, 199);
            size_t ni = (size_t)N * IN, no = (size_t)N * OUT, nw = (size_t)IN * OUT;
            float *x = tn_randn(ni, 1), *w = tn_randn(nw, 1), *bias = tn_randn(OUT, 1);
            float *g = tn_randn(no, 1), *outr = tn_zeros(no);
            float *dxr = tn_randn(ni, 1), *dwr = tn_randn(nw, 1), *dbr = tn_randn(OUT, 1);
            float *X = dev(x, ni), *W = dev(w, nw), *Bb = dev(bias, OUT), *G = dev(g, no);
            float *O = be->alloc(no * 4), *dx = dev(dxr, ni), *dw = dev(dwr, nw), *db = dev(dbr, OUT);
            ref->linear_forward(outr, x, w, bias, N, IN, OUT);
            be->linear_forward(O, X, W, Bb, N, IN, OUT);
            ref->linear_backward(dxr, dwr, dbr, g, x, w, N, IN, OUT);
            be->linear_backward(dx, dw, db, G, X, W, N, IN, OUT);
            CLOSE(O, outr, no, "random linear N=%d IN=%d OUT=%d", N, IN, OUT);
            CLOSE(dx, dxr, ni, "random linear dinp N=%d IN=%d OUT=%d", N, IN, OUT);
            CLOSE(dw, dwr, nw, "random linear dweight N=%d IN=%d OUT=%d", N, IN, OUT);
            CLOSE(db, dbr, OUT, "random linear dbias N=%d IN=%d OUT=%d", N, IN, OUT);
            be->free(X), be->free(W), be->free(Bb), be->free(G);
            tn_free_all();
        }
        {   // LoRA with a dropout mask
            int N = odd(129, 301), IN = odd(17, 199), OUT = odd(17, 199), R = odd(1, 17);
            size_t ni = (size_t)N * IN, no = (size_t)N * OUT;
            float *x = tn_randn(ni, 1), *A = tn_randn((size_t)R * IN, 1);
            float *B = tn_randn((size_t)OUT * R, 1), *g = tn_randn(no, 1), *mask = tn_zeros(ni);
            ref->dropout_mask(mask, 7 + it, 1000, 0.1f, ni);
            float *Mk = be->alloc(ni * 4);
            be->dropout_mask(Mk, 7 + it, 1000, 0.1f, ni);
            float *mh = host(Mk, ni);
            T_OK(memcmp(mh, mask, ni * sizeof(float)) == 0);   // the same bits
            float *outr = tn_randn(no, 1), *hr = tn_zeros((size_t)N * R), *dhr = tn_zeros((size_t)N * R);
            float *dxr = tn_randn(ni, 1), *dAr = tn_randn((size_t)R * IN, 1), *dBr = tn_randn((size_t)OUT * R, 1);
            float *O = dev(outr, no), *Hh = be->alloc((size_t)N * R * 4), *dh = be->alloc((size_t)N * R * 4);
            float *X = dev(x, ni), *M = dev(mask, ni), *dA_ = dev(A, (size_t)R * IN), *dB_ = dev(B, (size_t)OUT * R);
            float *G = dev(g, no), *dx = dev(dxr, ni), *dA = dev(dAr, (size_t)R * IN), *dB = dev(dBr, (size_t)OUT * R);
            ref->lora_forward(outr, hr, x, mask, A, B, 2.0f, N, IN, OUT, R);
            be->lora_forward(O, Hh, X, M, dA_, dB_, 2.0f, N, IN, OUT, R);
            ref->lora_backward(dxr, dAr, dBr, dhr, g, hr, x, mask, A, B, 2.0f, N, IN, OUT, R);
            be->lora_backward(dx, dA, dB, dh, G, Hh, X, M, dA_, dB_, 2.0f, N, IN, OUT, R);
            CLOSE(O, outr, no, "random lora N=%d IN=%d OUT=%d R=%d", N, IN, OUT, R);
            CLOSE(dx, dxr, ni, "random lora dinp N=%d IN=%d OUT=%d R=%d", N, IN, OUT, R);
            CLOSE(dA, dAr, (size_t)R * IN, "random lora dA N=%d IN=%d R=%d", N, IN, R);
            CLOSE(dB, dBr, (size_t)OUT * R, "random lora dB N=%d OUT=%d R=%d", N, OUT, R);
            be->free(Hh), be->free(dh), be->free(X), be->free(M), be->free(dA_), be->free(dB_), be->free(G);
            tn_free_all();
        }
        {   // norms: many rows, wide rows
            int N = odd(129, 513), C = odd(257, 2305), kind = it % 3;
            size_t n = (size_t)N * C;
            float *x = tn_randn(n, 2), *w = tn_randn(C, 1), *bias = tn_randn(C, 1), *g = tn_randn(n, 1);
            float *outr = tn_zeros(n), *mr = tn_zeros(N), *rr = tn_zeros(N);
            float *dxr = tn_randn(n, 1), *dwr = tn_randn(C, 1), *dbr = tn_randn(C, 1);
            float *X = dev(x, n), *W = dev(w, C), *Bb = dev(bias, C), *G = dev(g, n);
            float *O = be->alloc(n * 4), *Mn = be->alloc(N * 4), *Rs = be->alloc(N * 4);
            float *dx = dev(dxr, n), *dw = dev(dwr, C), *db = dev(dbr, C);
            if (kind == 2) {
                ref->layernorm_forward(outr, mr, rr, x, w, bias, 1e-5f, N, C);
                be->layernorm_forward(O, Mn, Rs, X, W, Bb, 1e-5f, N, C);
                ref->layernorm_backward(dxr, dwr, dbr, g, mr, rr, x, w, N, C);
                be->layernorm_backward(dx, dw, db, G, Mn, Rs, X, W, N, C);
            } else {
                ref->rmsnorm_forward(outr, rr, x, w, 1e-6f, kind, N, C);
                be->rmsnorm_forward(O, Rs, X, W, 1e-6f, kind, N, C);
                ref->rmsnorm_backward(dxr, dwr, g, rr, x, w, kind, N, C);
                be->rmsnorm_backward(dx, dw, G, Rs, X, W, kind, N, C);
            }
            CLOSE(O, outr, n, "random norm %d N=%d C=%d", kind, N, C);
            CLOSE(Rs, rr, N, "random norm %d rstd N=%d C=%d", kind, N, C);
            CLOSE(dx, dxr, n, "random norm %d dinp N=%d C=%d", kind, N, C);
            CLOSE(dw, dwr, C, "random norm %d dweight N=%d C=%d", kind, N, C);
            CLOSE(db, dbr, C, "random norm %d dbias N=%d C=%d", kind, N, C);
            be->free(X), be->free(W), be->free(Bb), be->free(G), be->free(Mn);
            tn_free_all();
        }
        {   // cross-entropy over a large vocabulary, some targets ignored
            int N = odd(3, 9), V = odd(30001, 70001);
            size_t n = (size_t)N * V;
            float *x = tn_randn(n, 4);
            int *tg = tn_ints(N);
            for (int i = 0; i < N; i++) tg[i] = i % 4 == 3 ? -100 : (int)(tn_u32() % V);
            float lr, lb, *lser = tn_zeros(N), *dlr = tn_randn(n, 1);
            int cr, cb, *TG = dev_i(tg, N);
            float *X = dev(x, n), *LSE = be->alloc(N * 4), *dl = dev(dlr, n);
            T_EQ_INT(ref->cross_entropy_forward(&lr, lser, &cr, x, tg, N, V), 0);
            T_EQ_INT(be->cross_entropy_forward(&lb, LSE, &cb, X, TG, N, V), 0);
            T_EQ_INT(cb, cr);
            T_NEAR(lb, lr, TOL);
            ref->cross_entropy_backward(dlr, 1.0f, lser, x, tg, cr, N, V);
            be->cross_entropy_backward(dl, 1.0f, LSE, X, TG, cb, N, V);
            CLOSE(LSE, lser, N, "random cross_entropy lse N=%d V=%d", N, V);
            CLOSE(dl, dlr, n, "random cross_entropy_backward N=%d V=%d", N, V);
            be->free(X), be->free(TG);
            tn_free_all();
        }
        {   // embeddings with repeated ids (the backward's scatter-add collides)
            int N = odd(129, 301), V = odd(3, 33), C = odd(17, 129);
            int *ids = tn_ints(N);
            for (int i = 0; i < N; i++) ids[i] = (int)(tn_u32() % V);
            float *table = tn_randn((size_t)V * C, 1), *g = tn_randn((size_t)N * C, 1);
            float *outr = tn_zeros((size_t)N * C), *dtr = tn_randn((size_t)V * C, 1);
            int *ID = dev_i(ids, N);
            float *Tb = dev(table, (size_t)V * C), *G = dev(g, (size_t)N * C);
            float *O = be->alloc((size_t)N * C * 4), *dt = dev(dtr, (size_t)V * C);
            ref->embedding_forward(outr, ids, table, N, V, C);
            T_EQ_INT(be->embedding_forward(O, ID, Tb, N, V, C), 0);
            ref->embedding_backward(dtr, g, ids, N, C);
            be->embedding_backward(dt, G, ID, N, C);
            CLOSE(O, outr, (size_t)N * C, "random embedding N=%d V=%d C=%d", N, V, C);
            CLOSE(dt, dtr, (size_t)V * C, "random embedding_backward N=%d V=%d C=%d", N, V, C);
            be->free(ID), be->free(Tb), be->free(G);
            tn_free_all();
        }
        {   // attention past one block per row, GQA groups of 2 and 3, odd head sizes
            int T = odd(65, 161), KVH = 1 + it % 2, H = KVH * (2 + it % 2), D = odd(3, 33);
            nn_attn_params p = {.scale = 0.2f, .causal = it != 1, .softcap = it >= 2 ? 7.0f : 0.0f,
                                .window = it == 3 ? odd(5, 31) : 0};
            att_case(1 + it % 2, T, H, KVH, D, p, it % 2);
        }
    }
}

/* ---- bf16 weights (backend.h, be_bf16_ops): against nn/ops_bf16.c, when the backend
 * has them (CUDA with LOUPE_CUDA_BF16=1, which main sets). Both sides multiply the same bf16
 * values exactly; only the order of the f32 (device) vs double (reference) sums differs. */

static uint16_t *dev16(const uint16_t *h, size_t n) {
    uint16_t *d = be->alloc((n ? n : 1) * sizeof *d);
    be->to_device(d, h, n * sizeof *d);
    return d;
}

static uint16_t *bf16_randn(size_t n) {   /* tracked host bf16 values */
    float *f = tn_randn(n, 1);
    uint16_t *h = (uint16_t *)tn_track(malloc((n ? n : 1) * sizeof *h));
    nn_bf16_round(h, f, n);
    return h;
}

static void bf16_linear(int N, int IN, int OUT, int conv, int usebias) {
    size_t ni = (size_t)N * IN, no = (size_t)N * OUT, nw = (size_t)IN * OUT;
    float *x = tn_randn(ni, 1), *bias = tn_randn(OUT, 1), *g = tn_randn(no, 1);
    float *outr = tn_zeros(no), *dxr = tn_randn(ni, 1);
    uint16_t *w = bf16_randn(nw), *W = dev16(w, nw);
    float *X = dev(x, ni), *Bb = dev(bias, OUT), *G = dev(g, no), *dx = dev(dxr, ni);
    float *O = be->alloc(no * sizeof(float));
    nn_linear_bf16_forward(outr, x, w, usebias ? bias : NULL, N, IN, OUT, conv);
    be->bf16->linear_forward(O, X, W, usebias ? Bb : NULL, N, IN, OUT, conv);
    CLOSE(O, outr, no, "bf16 linear_forward N=%d IN=%d OUT=%d conv=%d", N, IN, OUT, conv);
    nn_linear_bf16_backward(dxr, g, w, N, IN, OUT, conv, 1.0f);   /* accumulates */
    be->bf16->linear_backward(dx, G, W, N, IN, OUT, conv, 1.0f);
    CLOSE(dx, dxr, ni, "bf16 linear_backward beta=1 N=%d IN=%d OUT=%d conv=%d", N, IN, OUT, conv);
    float *nan = tn_zeros(ni);
    for (size_t i = 0; i < ni; i++) nan[i] = NAN;   /* beta 0 must not read dinp */
    dx = dev(nan, ni);
    nn_linear_bf16_backward(dxr, g, w, N, IN, OUT, conv, 0.0f);
    be->bf16->linear_backward(dx, G, W, N, IN, OUT, conv, 0.0f);
    CLOSE(dx, dxr, ni, "bf16 linear_backward beta=0 N=%d IN=%d OUT=%d conv=%d", N, IN, OUT, conv);
    be->free(X), be->free(W), be->free(Bb), be->free(G);
    tn_free_all();
}

static void test_bf16(void) {
    if (!be->bf16) return;
    /* round: random values, exact ties (an odd bf16 + half an ulp rounds up, even down),
       ±0, ±inf, NaN — bit for bit */
    enum { NR = 4099 };
    float *f = tn_randn(NR, 1);
    for (int i = 0; i < 64; i++) {
        uint32_t u = (0x3f80u + (uint32_t)i) << 16 | 0x8000u;   /* 1.x + half ulp: a tie */
        memcpy(&f[i], &u, 4);
    }
    f[64] = 0.0f, f[65] = -0.0f, f[66] = INFINITY, f[67] = -INFINITY, f[68] = NAN;
    f[69] = 3.4e38f;   /* rounds to inf in bf16 */
    uint16_t *hr = (uint16_t *)tn_track(malloc(NR * 2)), *hb = (uint16_t *)tn_track(malloc(NR * 2));
    nn_bf16_round(hr, f, NR);
    float *F = dev(f, NR);
    uint16_t *R = be->alloc(NR * 2);
    be->bf16->round(R, F, NR);
    be->sync();
    be->to_host(hb, R, NR * 2);
    int bad = 0;
    for (int i = 0; i < NR; i++) bad += hr[i] != hb[i] && !(f[i] != f[i] && (hb[i] & 0x7fff) > 0x7f80);
    T_CHECK(bad == 0, "bf16 round: %d of %d values differ from the reference", bad, NR);
    float *wr = tn_zeros(NR);
    nn_bf16_widen(wr, hr, NR);
    float *Wd = be->alloc(NR * sizeof(float));
    be->bf16->widen(Wd, R, NR);
    float *wb = host(Wd, NR);
    bad = 0;
    for (int i = 0; i < NR; i++) bad += memcmp(&wr[i], &wb[i], 4) != 0 && !(wr[i] != wr[i]);
    T_CHECK(bad == 0, "bf16 widen: %d of %d values differ", bad, NR);
    be->free(F), be->free(R);
    tn_free_all();
    /* products: the odd sizes, Linear and Conv1D, with and without bias; then bigger ones
       (several tensor-core tiles, K past one split) */
    for (int conv = 0; conv < 2; conv++)
        for (int a = 0; a < NS; a++)
            for (int b = 0; b < NS; b++)
                bf16_linear(SIZES[a], SIZES[b], SIZES[(a + b + 1) % NS], conv, (a + b) % 2 == 0);
    bf16_linear(130, 257, 65, 0, 1);
    bf16_linear(67, 1000, 300, 1, 0);
    bf16_linear(9, 896, 2001, 0, 0);
    /* the embedding from a bf16 table; a bad id: -1, output untouched */
    int N = 17, V = 11, C = 65;
    int *ids = tn_ints(N);
    for (int n = 0; n < N; n++) ids[n] = (int)(tn_u32() % V);
    uint16_t *tab = bf16_randn((size_t)V * C), *T16 = dev16(tab, (size_t)V * C);
    float *outr = tn_zeros((size_t)N * C), *O = be->alloc((size_t)N * C * sizeof(float));
    int *I = dev_i(ids, N);
    T_EQ_INT(nn_embedding_bf16_forward(outr, ids, tab, N, V, C), 0);
    T_EQ_INT(be->bf16->embedding_forward(O, I, T16, N, V, C), 0);
    CLOSE(O, outr, (size_t)N * C, "bf16 embedding N=%d C=%d", N, C);
    if (be->bf16->embedding_rows) {   /* ids checked by the caller */
        O = be->alloc((size_t)N * C * sizeof(float));
        be->bf16->embedding_rows(O, I, T16, N, C);
        CLOSE(O, outr, (size_t)N * C, "bf16 embedding_rows N=%d C=%d", N, C);
    }
    ids[3] = -1;
    be->to_device(I, ids, N * sizeof(int));
    O = be->alloc((size_t)N * C * sizeof(float));
    T_EQ_INT(be->bf16->embedding_forward(O, I, T16, N, V, C), -1);
    T_CONTAINS(lp_geterr(), "outside the vocabulary");
    be->free(O), be->free(I), be->free(T16);
    tn_free_all();
}

/* the LM head's one-pass loss and bf16 gradient (head_loss_rows) and the product that takes
 * that gradient (linear_backward_rounded), where the backend has them. The gradient may be one
 * bf16 ulp off where the f32 (device) and double (reference) values straddle a rounding
 * boundary; more than that, or many of those, is a fault. */
/* bf16 values a and b: how many are more than one ulp apart (the return) and one apart */
static size_t ulps_apart(const uint16_t *a, const uint16_t *b, size_t n, size_t *off1) {
    size_t worse = 0;
    *off1 = 0;
    for (size_t i = 0; i < n; i++) {
        int d = abs((int)(int16_t)a[i] - (int)(int16_t)b[i]);   /* same sign: ulps apart */
        *off1 += d == 1, worse += d > 1 && ((a[i] & 0x7fff) | (b[i] & 0x7fff));
    }
    return worse;
}

static void bf16_head(int N, int V, float cap) {
    size_t nv = (size_t)N * V;
    float *raw = tn_randn(nv, 3.0f), *rl = tn_zeros(N), *lse = tn_zeros(N);
    int *tg = tn_ints(N), count = 2;   /* the batch's count: more targets than these rows */
    for (int n = 0; n < N; n++) {
        tg[n] = n % 3 == 1 ? -100 : (int)(tn_u32() % V);
        count += tg[n] != -100;
    }
    uint16_t *dl = (uint16_t *)tn_track(malloc(nv * 2)), *dlb = (uint16_t *)tn_track(malloc(nv * 2));
    nn_head_loss_rows_bf16(rl, lse, dl, raw, tg, N, V, cap, 1.0f, count);
    /* the reference is the f32 reference ops one after the other, to the bit */
    float *lg = tn_copy(raw, nv), *d = tn_zeros(nv), *dr = tn_zeros(nv);
    float *rl2 = tn_zeros(N), *lse2 = tn_zeros(N);
    uint16_t *comp = (uint16_t *)tn_track(malloc(nv * 2));
    if (cap > 0) nn_softcap_forward(lg, raw, cap, nv);
    nn_cross_entropy_rows(rl2, lse2, lg, tg, N, V);
    nn_cross_entropy_backward(d, 1.0f, lse2, lg, tg, count, N, V);
    if (cap > 0) nn_softcap_backward(dr, d, lg, cap, nv);
    nn_bf16_round(comp, cap > 0 ? dr : d, nv);
    T_CHECK(!memcmp(comp, dl, nv * 2) && !memcmp(rl2, rl, N * 4) && !memcmp(lse2, lse, N * 4),
            "nn_head_loss_rows_bf16 N=%d V=%d cap=%g is not the f32 ops' result", N, V, cap);
    float *R = dev(raw, nv), *RL = be->alloc(N * sizeof(float)), *L = be->alloc(N * sizeof(float));
    int *TG = dev_i(tg, N);
    uint16_t *DL = be->alloc(nv * 2);
    be->bf16->head_loss_rows(RL, L, DL, R, TG, N, V, cap, 1.0f, count);
    CLOSE(RL, rl, N, "head_loss_rows rowloss N=%d V=%d cap=%g", N, V, cap);
    CLOSE(L, lse, N, "head_loss_rows lse N=%d V=%d cap=%g", N, V, cap);
    be->sync();
    be->to_host(dlb, DL, nv * 2);
    size_t off1, worse = ulps_apart(dl, dlb, nv, &off1);
    T_CHECK(worse == 0 && off1 * 100 <= nv, "head_loss_rows gradient N=%d V=%d cap=%g: %zu "
            "values more than one bf16 ulp off, %zu one ulp off, of %zu", N, V, cap, worse,
            off1, nv);
    /* dfin = dlraw·W, the head (V,C), from the device's gradient on both sides */
    int C = 33;
    uint16_t *w = bf16_randn((size_t)V * C), *W = dev16(w, (size_t)V * C);
    float *dfr = tn_zeros((size_t)N * C), *DF = be->alloc((size_t)N * C * sizeof(float));
    nn_linear_bf16_backward_rounded(dfr, dlb, w, N, C, V, 0, 0.0f);
    be->bf16->linear_backward_rounded(DF, DL, W, N, C, V, 0, 0.0f);
    CLOSE(DF, dfr, (size_t)N * C, "linear_backward_rounded N=%d C=%d V=%d", N, C, V);
    be->free(R), be->free(TG), be->free(DL), be->free(W);
    tn_free_all();
}

/* the products that take their input or output gradient already rounded, and the gated
 * backward that writes its gradients rounded too */
static void bf16_rounded(int N, int IN, int OUT, int conv) {
    size_t ni = (size_t)N * IN, no = (size_t)N * OUT, nw = (size_t)IN * OUT;
    uint16_t *g = bf16_randn(no), *w = bf16_randn(nw), *G = dev16(g, no), *W = dev16(w, nw);
    uint16_t *x = bf16_randn(ni), *X = dev16(x, ni);
    float *dxr = tn_randn(ni, 1), *dx = dev(dxr, ni), *bias = tn_randn(OUT, 1);
    float *Bb = dev(bias, OUT), *outr = tn_zeros(no), *O = be->alloc(no * sizeof(float));
    nn_linear_bf16_backward_rounded(dxr, g, w, N, IN, OUT, conv, 1.0f);
    be->bf16->linear_backward_rounded(dx, G, W, N, IN, OUT, conv, 1.0f);
    CLOSE(dx, dxr, ni, "linear_backward_rounded beta=1 N=%d IN=%d OUT=%d conv=%d", N, IN, OUT,
          conv);
    nn_linear_bf16_forward_rounded(outr, x, w, conv ? NULL : bias, N, IN, OUT, conv, 0.0f);
    be->bf16->linear_forward_rounded(O, X, W, conv ? NULL : Bb, N, IN, OUT, conv, 0.0f);
    CLOSE(O, outr, no, "linear_forward_rounded N=%d IN=%d OUT=%d conv=%d", N, IN, OUT, conv);
    // beta 1: added to what is there (after lora_forward_first), with and without a bias
    for (int wb = 0; wb < 2; wb++) {
        float *O2 = dev(outr, no);   // (CLOSE freed O) what the reference adds to
        nn_linear_bf16_forward_rounded(outr, x, w, wb ? bias : NULL, N, IN, OUT, conv, 1.0f);
        be->bf16->linear_forward_rounded(O2, X, W, wb ? Bb : NULL, N, IN, OUT, conv, 1.0f);
        CLOSE(O2, outr, no, "linear_forward_rounded beta=1 bias=%d N=%d IN=%d OUT=%d conv=%d", wb,
              N, IN, OUT, conv);
    }
    /* gated_backward_rounded over the (N,OUT) values */
    float *d = tn_randn(no, 1), *ga = tn_randn(no, 2), *up = tn_randn(no, 1);
    float *dgr = tn_zeros(no), *dur = tn_zeros(no);
    uint16_t *hg = (uint16_t *)tn_track(malloc(no * 2)), *hu = (uint16_t *)tn_track(malloc(no * 2));
    uint16_t *hgb = (uint16_t *)tn_track(malloc(no * 2)), *hub = (uint16_t *)tn_track(malloc(no * 2));
    nn_act act = conv ? NN_ACT_GELU_TANH : NN_ACT_SILU;
    nn_gated_backward_rounded(dgr, dur, hg, hu, d, ga, up, act, no);
    float *D = dev(d, no), *GA = dev(ga, no), *UP = dev(up, no);
    float *DG = be->alloc(no * sizeof(float)), *DU = be->alloc(no * sizeof(float));
    uint16_t *HG = be->alloc(no * 2), *HU = be->alloc(no * 2);
    be->bf16->gated_backward_rounded(DG, DU, HG, HU, D, GA, UP, act, no);
    /* the copies are the device's own values rounded, to the bit: the forward's output, then
       the backward's gradients */
    float *outg = tn_zeros(no), *og = tn_zeros(no), *OG = be->alloc(no * sizeof(float));
    uint16_t *ho = (uint16_t *)tn_track(malloc(no * 2)), *hob = (uint16_t *)tn_track(malloc(no * 2));
    uint16_t *HO = be->alloc(no * 2);
    nn_gated_forward_rounded(outg, ho, ga, up, act, no);
    be->bf16->gated_forward_rounded(OG, HO, GA, UP, act, no);
    be->sync();
    be->to_host(og, OG, no * sizeof(float));
    be->to_host(hob, HO, no * 2);
    nn_bf16_round(ho, og, no);
    T_CHECK(!memcmp(ho, hob, no * 2), "gated_forward_rounded n=%zu: the bf16 copy is not the "
            "output rounded", no);
    CLOSE(OG, outg, no, "gated_forward_rounded n=%zu", no);
    be->free(HO);
    float *dgb = tn_zeros(no), *dub = tn_zeros(no);
    be->sync();
    be->to_host(dgb, DG, no * sizeof(float));
    be->to_host(dub, DU, no * sizeof(float));
    be->to_host(hgb, HG, no * 2);
    be->to_host(hub, HU, no * 2);
    nn_bf16_round(hg, dgb, no);
    nn_bf16_round(hu, dub, no);
    T_CHECK(!memcmp(hg, hgb, no * 2) && !memcmp(hu, hub, no * 2),
            "gated_backward_rounded n=%zu: the bf16 copies are not the gradients rounded", no);
    CLOSE(DG, dgr, no, "gated_backward_rounded dgate n=%zu", no);
    CLOSE(DU, dur, no, "gated_backward_rounded dup n=%zu", no);
    be->free(G), be->free(W), be->free(X), be->free(Bb), be->free(D), be->free(GA);
    be->free(UP), be->free(HG), be->free(HU);
    tn_free_all();
}

static void test_bf16_head(void) {
    if (!be->bf16 || !be->bf16->head_loss_rows) return;
    int shapes[][2] = {{1, 5}, {3, 1000}, {7, 4097}, {17, 513}, {2, 70001}};
    for (int i = 0; i < 5; i++)
        for (int c = 0; c < 3; c++)   /* no cap, Gemma 2's 30, and one that bends every logit */
            bf16_head(shapes[i][0], shapes[i][1], c == 0 ? 0.0f : c == 1 ? 30.0f : 2.5f);
    for (int conv = 0; conv < 2; conv++)
        for (int a = 0; a < NS; a++)
            bf16_rounded(SIZES[a], SIZES[(a + 1) % NS], SIZES[(a + 3) % NS], conv);
}

/* the bf16 table's fused attention on tensor cores, where it has one: every shape of the f32
 * ops' test, at TF32's tolerance */
static void test_bf16_attention(void) {
    if (!be->bf16 || !be->bf16->attention_fused_forward) return;
    const be_bf16_ops *o = be->bf16;
    fused = (fused_ops){"tf32", o->attention_fused_forward, o->attention_fused_backward,
                        FUSED_TF32_TOL, o->attention_bf16_dmax ? o->attention_bf16_dmax() : 0};
    printf("%s: bf16 fused attention for heads up to %d, TF32 past\n", be->name, fused.bf16_dmax);
    fused_cases();
}

static void test_alloc_failure(void) {
    lp_mem_fail_after(1);
    T_OK(be->alloc(1024) == NULL);
    T_CONTAINS(lp_geterr(), "out of");   // "out of memory", "out of GPU memory"
    T_CONTAINS(lp_geterr(), "memory allocating 1024 bytes");
    lp_mem_fail_after(0);
    void *p = be->alloc(0);   // a zero-byte buffer is still a valid pointer to free
    T_OK(p != NULL);
    be->free(p);
    be->free(NULL);
}

/* The five backwards that write (ops.h) give the same gradients over zeros and over junk. */
static float *twice_host(float *d0, float *d1, size_t n, float **h1) {
    *h1 = host(d1, n);
    return host(d0, n);
}

static void test_written_grads(void) {
    int B = 2, T = 5, H = 4, KVH = 2, D = 6, V = 7, N = B * T;
    size_t nq = (size_t)N * H * D, nk = (size_t)N * KVH * D, nv = (size_t)N * V;
    float *junk = tn_randn(nq > nv ? nq : nv, 3), *zeros = tn_zeros(nq > nv ? nq : nv), *a, *b;
    float *q = dev(tn_randn(nq, 1), nq), *k = dev(tn_randn(nk, 1), nk);
    float *v = dev(tn_randn(nk, 1), nk), *g = dev(tn_randn(nq, 1), nq);
    float *cs = dev(tn_randn((size_t)N * D / 2, 1), (size_t)N * D / 2);
    float *sn = dev(tn_randn((size_t)N * D / 2, 1), (size_t)N * D / 2);
    float *d0 = dev(zeros, nq), *d1 = dev(junk, nq);   // rope
    be->rope_backward(d0, g, cs, sn, N, H, D);
    be->rope_backward(d1, g, cs, sn, N, H, D);
    a = twice_host(d0, d1, nq, &b);
    T_CHECK(memcmp(a, b, nq * sizeof(float)) == 0, "rope_backward added to its output");
    float *e0 = dev(zeros, nq), *e1 = dev(junk, nq), *u0 = dev(zeros, nq), *u1 = dev(junk, nq);
    be->gated_backward(e0, u0, g, q, g, NN_ACT_SILU, nq);   // gated
    be->gated_backward(e1, u1, g, q, g, NN_ACT_SILU, nq);
    a = twice_host(e0, e1, nq, &b);
    T_CHECK(memcmp(a, b, nq * sizeof(float)) == 0, "gated_backward added to dgate");
    a = twice_host(u0, u1, nq, &b);
    T_CHECK(memcmp(a, b, nq * sizeof(float)) == 0, "gated_backward added to dup");
    nn_attn_params p = {.scale = 0.4f, .causal = 1};   // attention, both kinds
    float *P = be->alloc((size_t)B * H * T * T * sizeof(float)), *O = be->alloc(nq * sizeof(float));
    float *dS = be->alloc((size_t)B * H * T * T * sizeof(float));
    float *L = be->alloc((size_t)B * H * T * sizeof(float));
    be->attention_forward(O, P, q, k, v, NULL, &p, B, T, H, KVH, D);
    for (int fused = 0; fused < 2; fused++) {
        float *dq[2] = {dev(zeros, nq), dev(junk, nq)}, *dk[2] = {dev(zeros, nk), dev(junk, nk)};
        float *dv[2] = {dev(zeros, nk), dev(junk, nk)};
        if (fused) be->attention_fused_forward(O, L, q, k, v, NULL, &p, B, T, H, KVH, D);
        for (int i = 0; i < 2; i++)
            if (fused)
                be->attention_fused_backward(dq[i], dk[i], dv[i], g, O, L, q, k, v, NULL, &p, B,
                                             T, H, KVH, D);
            else
                be->attention_backward(dq[i], dk[i], dv[i], dS, g, P, q, k, v, NULL, &p, B, T, H,
                                       KVH, D);
        a = twice_host(dq[0], dq[1], nq, &b);
        T_CHECK(memcmp(a, b, nq * sizeof(float)) == 0, "attention (fused %d) added to dq", fused);
        a = twice_host(dk[0], dk[1], nk, &b);
        T_CHECK(memcmp(a, b, nk * sizeof(float)) == 0, "attention (fused %d) added to dk", fused);
        a = twice_host(dv[0], dv[1], nk, &b);
        T_CHECK(memcmp(a, b, nk * sizeof(float)) == 0, "attention (fused %d) added to dv", fused);
    }
    int tg[10] = {1, -100, 3, 0, 6, -100, 2, 2, 5, 4}, cnt = 0;   // cross-entropy
    float loss, *x = dev(tn_randn(nv, 2), nv), *lse = be->alloc((size_t)N * sizeof(float));
    int *TG = dev_i(tg, (size_t)N);
    T_OK(be->cross_entropy_forward(&loss, lse, &cnt, x, TG, N, V) == 0 && cnt == 8);
    float *c0 = dev(zeros, nv), *c1 = dev(junk, nv);
    be->cross_entropy_backward(c0, 1.0f, lse, x, TG, cnt, N, V);
    be->cross_entropy_backward(c1, 1.0f, lse, x, TG, cnt, N, V);
    a = twice_host(c0, c1, nv, &b);
    T_CHECK(memcmp(a, b, nv * sizeof(float)) == 0, "cross_entropy_backward added to dlogits");
    for (int j = 0; j < V; j++) T_OK(b[V + j] == 0.0f);   // an ignored row is zeros
    be->free(q), be->free(k), be->free(v), be->free(g), be->free(cs), be->free(sn);
    be->free(P), be->free(O), be->free(dS), be->free(L), be->free(x), be->free(lse);
    be->free(TG);
    tn_free_all();
}

int main(void) {
    const be_backend *backends[2] = {be_cpu()};
    size_t nb = 1;
    ref = be_ref();
    T_OK(be_get("cpu") == be_cpu());
    T_OK(be_get("nope") == NULL);
    T_CONTAINS(lp_geterr(), "unknown device");
    // CUDA joins when this build has it and the machine has a GPU; otherwise say so loudly
    // (tests/gpu/run.sh fails on this line, a GPU-less machine passes)
    // its bf16 ops too (test_bf16): the table is chosen at be_cuda()'s first call
    setenv("LOUPE_CUDA_BF16", "1", 1);
    const be_backend *cuda = be_get("cuda");
#ifdef LOUPE_HAVE_CUDA
    if (cuda) {
        T_OK(be_get("cuda") == cuda);
        T_OK(cuda->bf16 != NULL);
        printf("cuda: bf16 ops checked too\n");
        backends[nb++] = cuda;
    } else {
        T_CONTAINS(lp_geterr(), "no CUDA device");
        printf("cuda: NOT RUN (%s)\n", lp_geterr());
    }
#else
    T_OK(cuda == NULL);
    T_CONTAINS(lp_geterr(), "no CUDA backend");
    printf("cuda: NOT RUN (this build has no CUDA backend)\n");
#endif
    // the fused attention's reference against the materialised one (then every backend)
    be = ref;
    printf("backend ref (fused attention)\n");
    tn_seed(7);
    T_RUN(test_attention_fused);
    T_RUN(test_written_grads);
    for (size_t i = 0; i < nb; i++) {
        be = backends[i];
        printf("backend %s\n", be->name);
        tn_seed(11 + i);
        T_RUN(test_matmul);
        T_RUN(test_embedding);
        T_RUN(test_linear);
        T_RUN(test_lora);
        T_RUN(test_dropout_mask);
        T_RUN(test_rand);
        T_RUN(test_channel_scale);
        T_RUN(test_dora);
        T_RUN(test_norms);
        T_RUN(test_rope);
        T_RUN(test_attention);
        T_RUN(test_attention_kv);
        T_RUN(test_attention_fused);
        T_RUN(test_activations);
        T_RUN(test_softmax_losses);
        T_RUN(test_elementwise);
        T_RUN(test_slice);
        T_RUN(test_q4);
        T_RUN(test_optimizers);
        T_RUN(test_random_shapes);
        T_RUN(test_bf16);
        T_RUN(test_bf16_head);
        T_RUN(test_bf16_attention);
        T_RUN(test_alloc_failure);
        T_RUN(test_written_grads);
        T_RUN(test_q8);   /* last: the random shapes above keep their draws */
    }
    return t_done();
}
