/* test_q8.c — LLM.int8 (bitsandbytes' load_in_8bit, Linear8bitLt) against bitsandbytes +
 * transformers + peft (tools/make_q8_fixtures.py, tests/fixtures/q8).
 *
 * Ops (ops.safetensors): nn_half_round is torch's f16 rounding (spot values: ties to even,
 * subnormals, overflow); a weight quantized as Int8Params does (f16, row absmax, rounded
 * codes) gives bitsandbytes' int8 codes and SCB to the bit, and dequantizes to the weight its
 * backward multiplies, to the bit; nn_q8_linear_forward gives MatMul8bitLt's output (eval)
 * with llm_int8_threshold 0, 2 and 6 — outlier columns, an all-zero weight row, a value on the
 * threshold, a single row — within 1e-6 of its largest value. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "t.h"
#include "t_fixture.h"

#include "model/st.h"
#include "nn/ops.h"
#include "util/err.h"

#define OPS "tests/fixtures/q8/ops.safetensors"

static void test_half(void) {
    T_OK(nn_half_round(1.0f) == 1.0f);
    T_OK(nn_half_round(1.0f + 1.0f / 2048) == 1.0f);           /* a tie: even */
    T_OK(nn_half_round(1.0f + 3.0f / 2048) == 1.0f + 2.0f / 1024);
    T_OK(nn_half_round(65504.0f) == 65504.0f);
    T_OK(isinf(nn_half_round(65520.0f)) && nn_half_round(-70000.0f) < 0);
    T_OK(nn_half_round(65519.0f) == 65504.0f);
    T_OK(nn_half_round(3e-8f) == 5.9604645e-8f);                /* the least subnormal, 2^-24 */
    T_OK(nn_half_round(2.9e-8f) == 0.0f && nn_half_round(-1e-9f) == 0.0f);
}

static void test_ops(void) {
    st_file *f = st_open(OPS);
    T_CHECK(f != NULL, "%s", lp_geterr());
    if (!f) return;
    const char *names[] = {"a", "b", "c"};
    for (int k = 0; k < 3; k++) {
        char key[64];
        size_t nw = 0, nx = 0, no = 0;
        snprintf(key, sizeof key, "%s.w", names[k]);
        const st_tensor *tw = st_find(f, key);
        float *w = t_fx(f, key, ST_F32, &nw);
        snprintf(key, sizeof key, "%s.x", names[k]);
        float *x = t_fx(f, key, ST_F32, &nx);
        snprintf(key, sizeof key, "%s.bias", names[k]);
        float *bias = t_fx(f, key, ST_F32, &no);
        snprintf(key, sizeof key, "%s.cb", names[k]);
        int8_t *cb = t_fx(f, key, ST_I8, NULL);
        snprintf(key, sizeof key, "%s.scb", names[k]);
        float *scb = t_fx(f, key, ST_F32, NULL);
        snprintf(key, sizeof key, "%s.deq", names[k]);
        float *deq = t_fx(f, key, ST_F32, NULL);
        if (!tw || !w || !x || !bias || !cb || !scb || !deq) continue;
        int OUT = (int)tw->shape[0], IN = (int)tw->shape[1], N = (int)(nx / (size_t)IN);
        uint8_t *codes = malloc(nw);
        float *am = malloc(OUT * sizeof(float)), *d = malloc(nw * sizeof(float));
        nn_q4_quantize(codes, am, w, nw, IN, NN_Q8);
        T_CHECK(!memcmp(codes, cb, nw), "%s: int8 codes differ from bitsandbytes'", names[k]);
        T_CHECK(!memcmp(am, scb, OUT * sizeof(float)), "%s: SCB differs", names[k]);
        nn_q4_dequant(d, (const uint8_t *)cb, scb, nw, IN, NN_Q8);
        T_CHECK(!memcmp(d, deq, nw * sizeof(float)), "%s: dequantized weight differs", names[k]);
        float *work = malloc(nn_q8_work(N, IN, OUT) * sizeof(float));
        float *y = malloc((size_t)N * OUT * sizeof(float));
        for (int t = 0; t <= 6; t += t ? 4 : 2) {
            snprintf(key, sizeof key, "%s.y_%d", names[k], t);
            float *want = t_fx(f, key, ST_F32, NULL);
            nn_q8_linear_forward(y, x, cb, scb, bias, N, IN, OUT, (float)t, work);
            double e = want ? t_rel_max(y, want, (size_t)N * OUT) : 1;
            T_CHECK(e <= 1e-6, "%s threshold %d: MatMul8bitLt's output differs by %.3g",
                    names[k], t, e);
            printf("%s (N %d, in %d, out %d) threshold %d: %.2e\n", names[k], N, IN, OUT, t, e);
            free(want);
        }
        free(codes), free(am), free(d), free(work), free(y);
        free(w), free(x), free(bias), free(cb), free(scb), free(deq);
    }
    st_close(f);
}

int main(void) {
    T_RUN(test_half);
    T_RUN(test_ops);
    return t_done();
}
