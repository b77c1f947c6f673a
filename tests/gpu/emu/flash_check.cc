/* flash_check.cc — cuda_flash.cu's kernels, run by emu.h on the CPU, against the reference
 * (nn_attention_fused_forward / _backward): out, lse (+inf rows exactly), dq, dk, dv at 1e-5
 * relative to the largest value, on odd T, D, GQA, padding, a row of padding only, causal,
 * sliding window, soft-cap; "big" adds D = 128, 200, 256 at T ≈ 100. */
#include "emu.h"
void *guarded(size_t n);
void cu_attention_fused_forward(float *out, float *lse, const float *q, const float *k,
                                const float *v, const int *amask, const nn_attn_params *p,
                                int B, int T, int H, int KVH, int D);
void cu_attention_fused_backward(float *dq, float *dk, float *dv, const float *dout,
                                 const float *out, const float *lse, const float *q,
                                 const float *k, const float *v, const int *amask,
                                 const nn_attn_params *p, int B, int T, int H, int KVH, int D);
static uint64_t rs = 88172645463325252ull;
static double urand() { rs ^= rs << 13; rs ^= rs >> 7; rs ^= rs << 17; return (rs >> 11) * (1.0 / 9007199254740992.0); }
static float nrand() { double u = urand() + 1e-12, v = urand(); return (float)(sqrt(-2 * log(u)) * cos(6.283185307 * v)); }
static float *rnd(size_t n) { float *p = (float *)guarded(n * 4); for (size_t i = 0; i < n; i++) p[i] = nrand(); return p; }
static float *cpy(const float *s, size_t n) { float *p = (float *)guarded(n * 4); memcpy(p, s, n * 4); return p; }
static int fails = 0;
/* floor: the smallest scale errors are measured against. The gradients use 1, the inputs'
 * (randn) scale: they are written (ops.h), and where every query sees at most one key they
 * are 0 up to float noise. */
static void close_(const char *what, const float *a, const float *r, size_t n, const char *ctx,
                   double floor = 1e-6) {
    double mx = floor, worst = 0;
    for (size_t i = 0; i < n; i++) if (std::isfinite(r[i])) mx = fmax(mx, fabs(r[i]));
    for (size_t i = 0; i < n; i++) {
        double e;
        if (std::isinf(r[i]) || std::isinf(a[i])) e = (r[i] == a[i]) ? 0 : INFINITY;
        else e = fabs((double)a[i] - r[i]);
        if (!(e <= worst)) worst = e;
    }
    if (!(worst / mx <= 1e-5)) { fails++; printf("FAIL %s %s: %.3g\n", what, ctx, worst / mx); }
}
static void run(int B, int T, int H, int KVH, int D, nn_attn_params p, int pad) {
    size_t nq = (size_t)B * T * H * D, nk = (size_t)B * T * KVH * D, nl = (size_t)B * H * T;
    float *q = rnd(nq), *k = rnd(nk), *v = rnd(nk), *g = rnd(nq);
    int *am = NULL;
    if (pad) {
        am = (int *)guarded((size_t)B * T * 4);
        for (int b = 0; b < B; b++) {
            int np_ = b + 1 < T ? b + 1 : T - 1;
            for (int t = 0; t < T; t++) am[b * T + t] = pad == 2 && b == 0 ? 0 : b % 2 ? t >= np_ : t < T - np_;
        }
    }
    float *o1 = (float *)guarded(nq * 4), *l1 = (float *)guarded(nl * 4);
    float *o2 = (float *)guarded(nq * 4), *l2 = (float *)guarded(nl * 4);
    for (size_t i = 0; i < nq; i++) o2[i] = NAN;
    for (size_t i = 0; i < nl; i++) l2[i] = NAN;
    nn_attention_fused_forward(o1, l1, q, k, v, am, &p, B, T, H, KVH, D);
    cu_attention_fused_forward(o2, l2, q, k, v, am, &p, B, T, H, KVH, D);
    char ctx[160];
    snprintf(ctx, sizeof ctx, "B=%d T=%d H=%d KVH=%d D=%d causal=%d window=%d cap=%g pad=%d", B, T, H, KVH, D, p.causal, p.window, p.softcap, pad);
    close_("out", o2, o1, nq, ctx);
    close_("lse", l2, l1, nl, ctx);
    float *dq0 = rnd(nq), *dk0 = rnd(nk), *dv0 = rnd(nk);
    float *dq1 = cpy(dq0, nq), *dk1 = cpy(dk0, nk), *dv1 = cpy(dv0, nk);
    float *dq2 = cpy(dq0, nq), *dk2 = cpy(dk0, nk), *dv2 = cpy(dv0, nk);
    nn_attention_fused_backward(dq1, dk1, dv1, g, o1, l1, q, k, v, am, &p, B, T, H, KVH, D);
    cu_attention_fused_backward(dq2, dk2, dv2, g, o1, l1, q, k, v, am, &p, B, T, H, KVH, D);
    close_("dq", dq2, dq1, nq, ctx, 1.0);
    close_("dk", dk2, dk1, nk, ctx, 1.0);
    close_("dv", dv2, dv1, nk, ctx, 1.0);
    float *dv3 = cpy(dv0, nk);   // dv alone
    cu_attention_fused_backward(NULL, NULL, dv3, g, o1, l1, q, k, v, am, &p, B, T, H, KVH, D);
    close_("dv alone", dv3, dv1, nk, ctx, 1.0);
    float *dq3 = cpy(dq0, nq);
    cu_attention_fused_backward(dq3, NULL, NULL, g, o1, l1, q, k, v, am, &p, B, T, H, KVH, D);
    close_("dq alone", dq3, dq1, nq, ctx, 1.0);
    float *dq4 = cpy(dq0, nq), *dk4 = cpy(dk0, nk), *dv4 = cpy(dv0, nk);   // no scratch
    emu_scratch_fail = 1, emu_scratch_failed_op = NULL;
    cu_attention_fused_backward(dq4, dk4, dv4, g, o1, l1, q, k, v, am, &p, B, T, H, KVH, D);
    if (!emu_scratch_failed_op || strcmp(emu_scratch_failed_op, "attention_fused_backward") ||
        memcmp(dq4, dq0, nq * 4) || memcmp(dk4, dk0, nk * 4) || memcmp(dv4, dv0, nk * 4)) {
        fails++;
        printf("FAIL without scratch %s: not skipped untouched\n", ctx);
    }
    emu_scratch_fail = 0;
    printf("checked %s\n", ctx); fflush(stdout);
}
int main(int argc, char **argv) {
    int big = argc > 1;
    nn_attn_params causal = {}; causal.scale = 0.125f; causal.causal = 1;
    nn_attn_params bidir = {}; bidir.scale = 0.3f;
    nn_attn_params gemma = {}; gemma.scale = 0.0625f; gemma.causal = 1; gemma.softcap = 5.0f; gemma.window = 4;
    nn_attn_params win = {}; win.scale = 0.11f; win.causal = 1; win.window = 7;
    nn_attn_params bwin = {}; bwin.scale = 0.2f; bwin.window = 9; bwin.softcap = 3.0f;
    int Ts[] = {1, 3, 17, 33, 65};
    for (int T : Ts) {
        run(2, T, 4, 2, 64, causal, 1);
        run(3, T, 3, 3, 17, bidir, 2);
        run(2, T, 6, 2, 80, win, 0);
        run(2, T, 2, 1, 3, bwin, 1);
        run(1, T, 2, 1, 33, gemma, 1);
        if (big) run(1, T, 2, 1, 256, gemma, 1);
    }
    nn_attn_params diag = {}; diag.scale = 0.3f; diag.causal = 1; diag.window = 1;
    nn_attn_params wide = {}; wide.scale = 0.3f; wide.window = 1000; wide.softcap = 2.0f;
    for (int T : {16, 32, 48, 64}) {   // exact multiples of the tiles; window 1 and ≥ T
        run(2, T, 2, 1, 64, causal, 1);
        run(1, T, 3, 3, 20, diag, 0);
        run(2, T, 4, 2, 36, wide, 2);
    }
    if (big) { run(1, 100, 2, 1, 256, gemma, 1); run(2, 97, 3, 1, 128, causal, 1); run(1, 70, 2, 2, 200, bidir, 2); }
    printf("%d failures\n", fails);
    return fails != 0;
}
