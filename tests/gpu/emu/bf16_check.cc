/* bf16_check.cc — cuda_bf16.cu (bf16 weights, LOUPE_CUDA_BF16=1) run by emu.h on the CPU
 * against the reference nn/ops_bf16.c: round (bit for bit, ties and specials), widen, the
 * embedding (and its bad-id error), and the Linear / Conv1D products forward and backward
 * (beta 0 and 1, also rounded in blocks of rows) through the emulated cublasGemmEx (emu_rt.cc)
 * — which checks the row-major → column-major operand swap, transposes and leading
 * dimensions, the part a GPU run would otherwise be the first to see. Products: 1e-5
 * relative to the largest value. */
#include "emu.h"
extern "C" {
#include "nn/ops_bf16.h"
#include "util/err.h"
}
void *guarded(size_t n);
void cu_bf16_round(uint16_t *dst, const float *src, size_t n);
void cu_bf16_widen(float *dst, const uint16_t *src, size_t n);
int cu_bf16_embedding_forward(float *out, const int *ids, const uint16_t *table, int N, int V,
                              int C);
void cu_bf16_linear_forward(float *out, const float *inp, const uint16_t *weight,
                            const float *bias, int N, int IN, int OUT, int conv1d);
void cu_bf16_linear_backward(float *dinp, const float *dout, const uint16_t *weight, int N,
                             int IN, int OUT, int conv1d, float beta);

int cu_check_ids(const int *ids, int N, int V) {
    for (int n = 0; n < N; n++)
        if (ids[n] < 0 || ids[n] >= V)
            return lp_seterr("token id %d at position %d is outside the vocabulary [0, %d)",
                             ids[n], n, V);
    return 0;
}

static uint64_t rs = 88172645463325252ull;
static float nrand() {
    rs ^= rs << 13; rs ^= rs >> 7; rs ^= rs << 17;
    return (float)((rs >> 11) * (1.0 / 9007199254740992.0)) * 2.0f - 1.0f;
}
static float *rnd(size_t n) { float *p = (float *)guarded(n * 4); for (size_t i = 0; i < n; i++) p[i] = nrand(); return p; }
static uint16_t *rnd16(size_t n) { uint16_t *p = (uint16_t *)guarded(n * 2); for (size_t i = 0; i < n; i++) p[i] = nn_bf16_from_f32(nrand()); return p; }
static int fails = 0;

static void close_(const char *what, const float *a, const float *r, size_t n) {
    double mx = 1e-6, worst = 0;
    for (size_t i = 0; i < n; i++) mx = fmax(mx, fabs(r[i]));
    for (size_t i = 0; i < n; i++) {
        double e = fabs((double)a[i] - r[i]);
        if (!(e <= worst)) worst = e;
    }
    if (!(worst / mx <= 1e-5)) { fails++; printf("FAIL %s: %.3g\n", what, worst / mx); }
}

static void linear(int N, int IN, int OUT, int conv, int bias) {
    size_t ni = (size_t)N * IN, no = (size_t)N * OUT, nw = (size_t)IN * OUT;
    float *x = rnd(ni), *g = rnd(no), *b = bias ? rnd(OUT) : NULL;
    uint16_t *w = rnd16(nw);
    float *o1 = (float *)guarded(no * 4), *o2 = (float *)guarded(no * 4);
    for (size_t i = 0; i < no; i++) o2[i] = NAN;   /* the forward overwrites */
    nn_linear_bf16_forward(o1, x, w, b, N, IN, OUT, conv);
    cu_bf16_linear_forward(o2, x, w, b, N, IN, OUT, conv);
    char ctx[160];
    snprintf(ctx, sizeof ctx, "forward N=%d IN=%d OUT=%d conv=%d bias=%d", N, IN, OUT, conv, bias);
    close_(ctx, o2, o1, no);
    for (int beta = 0; beta < 2; beta++) {
        float *d1 = rnd(ni), *d2 = (float *)guarded(ni * 4);
        for (size_t i = 0; i < ni; i++) d2[i] = beta ? d1[i] : NAN;   /* beta 0 must not read */
        nn_linear_bf16_backward(d1, g, w, N, IN, OUT, conv, (float)beta);
        cu_bf16_linear_backward(d2, g, w, N, IN, OUT, conv, (float)beta);
        snprintf(ctx, sizeof ctx, "backward beta=%d N=%d IN=%d OUT=%d conv=%d", beta, N, IN, OUT, conv);
        close_(ctx, d2, d1, ni);
    }
}

int main() {
    /* round and widen: random values, ties, ±0, ±inf, NaN, overflow to inf */
    size_t n = 3000;
    float *f = rnd(n);
    for (int i = 0; i < 64; i++) { unsigned u = (0x3f80u + i) << 16 | 0x8000u; memcpy(&f[i], &u, 4); }
    f[64] = 0.0f, f[65] = -0.0f, f[66] = INFINITY, f[67] = -INFINITY, f[68] = NAN, f[69] = 3.4e38f;
    uint16_t *h1 = (uint16_t *)guarded(n * 2), *h2 = (uint16_t *)guarded(n * 2);
    nn_bf16_round(h1, f, n);
    cu_bf16_round(h2, f, n);
    if (memcmp(h1, h2, n * 2)) { fails++; printf("FAIL round: not bit for bit\n"); }
    float *w1 = (float *)guarded(n * 4), *w2 = (float *)guarded(n * 4);
    nn_bf16_widen(w1, h1, n);
    cu_bf16_widen(w2, h1, n);
    if (memcmp(w1, w2, n * 4)) { fails++; printf("FAIL widen: not bit for bit\n"); }
    /* the embedding */
    int N = 13, V = 7, C = 37;
    int *ids = (int *)guarded(N * 4);
    for (int i = 0; i < N; i++) ids[i] = (i * 5) % V;
    uint16_t *tab = rnd16((size_t)V * C);
    float *e1 = (float *)guarded((size_t)N * C * 4), *e2 = (float *)guarded((size_t)N * C * 4);
    nn_embedding_bf16_forward(e1, ids, tab, N, V, C);
    if (cu_bf16_embedding_forward(e2, ids, tab, N, V, C) || memcmp(e1, e2, (size_t)N * C * 4)) {
        fails++;
        printf("FAIL embedding\n");
    }
    ids[4] = V;
    if (cu_bf16_embedding_forward(e2, ids, tab, N, V, C) != -1) { fails++; printf("FAIL bad id\n"); }
    /* products */
    const int S[] = {1, 3, 17, 65};
    for (int conv = 0; conv < 2; conv++)
        for (int a = 0; a < 4; a++)
            for (int b = 0; b < 4; b++) linear(S[a], S[b], S[(a + b + 1) % 4], conv, (a + b) % 2);
    linear(33, 130, 70, 0, 1);
    linear(33, 130, 70, 1, 1);
    /* the activation rounded in row blocks (cuda_bf16.cu's cu_bf16_chunk): 1, 2 and 3 rows */
    extern size_t cu_bf16_chunk;
    for (size_t c : {(size_t)100, (size_t)260, (size_t)391}) {
        cu_bf16_chunk = c;
        linear(17, 130, 65, 0, 1);
        linear(17, 65, 130, 1, 0);
    }
    /* no scratch for the rounded activation: the product is skipped, the output untouched */
    {
        int M = 9, K = 21, P = 14;
        float *x = rnd((size_t)M * K), *o = rnd((size_t)M * P), *o0 = (float *)guarded((size_t)M * P * 4);
        uint16_t *w = rnd16((size_t)K * P);
        memcpy(o0, o, (size_t)M * P * 4);
        emu_scratch_fail = 1, emu_scratch_failed_op = NULL;
        cu_bf16_linear_backward(o, x, w, M, P, K, 0, 1.0f);
        if (!emu_scratch_failed_op || strcmp(emu_scratch_failed_op, "linear_backward (bf16)") ||
            memcmp(o, o0, (size_t)M * P * 4)) {
            fails++;
            printf("FAIL without scratch: the product was not skipped\n");
        }
        emu_scratch_fail = 0;
    }
    printf("%s (%d failures)\n", fails ? "FAILED" : "bf16 kernels: all checks passed", fails);
    return fails != 0;
}
