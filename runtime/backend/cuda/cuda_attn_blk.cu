/* cuda_attn_blk.cu — the fused attention ops (attention_fused_forward / _backward: only the
 * (B,H,T) log-sum-exp is kept, nn/ops.h) as cuBLAS products over blocks of queries.
 *
 * The materialised attention (cuda_attn.cu) writes all (B,H,T,T) probabilities; here the
 * queries go in blocks of Tb rows, so only one block's scores exist at a time, in pool
 * scratch of at most BLK_FLOATS floats (two such buffers in the backward). Per block
 * [i0, i1), over the keys any of its queries can see, [kb, ke) (causal: ke = i1; sliding
 * window: kb = i0 − window + 1):
 *
 *   forward   S = scale·Q·Kᵀ (batched GEMM over the (batch, head) pairs)
 *             cu_att_softmax (cuda_attn.cu): soft-cap, masks, softmax in place, lse
 *             out = P·V                                                 (batched GEMM)
 *   backward  S = scale·Q·Kᵀ, dP = dout·Vᵀ                              (batched GEMMs)
 *             blk_grad_kernel: P = exp(cap(S) − lse), dS = P (dP − D_i) (· 1 − tanh²),
 *               D_i = dout_i·out_i (blk_rowdot_kernel, once for all rows)
 *             dq = scale·dS·K (written: a query row is in one block only)
 *             dk += scale·dSᵀ·Q, dv += Pᵀ·dout — per query head of a GQA group, so no two
 *               matrices of one batched call write the same kv head (as cuda_attn.cu)
 *
 * The products are cuBLAS's (FP32 by default, TF32 with LOUPE_CUDA_TF32=1; always TF32
 * tensor cores in the _tc ops, which the bf16 table uses where cuda_attn_tc.cu's kernels do
 * not fit: be_bf16_ops) instead of the SIMT loops of cuda_flash.cu, at the price of writing
 * and reading each block's scores once more. LOUPE_CUDA_ATTENTION=flash selects
 * cuda_flash.cu's kernels instead (cuda_backend.cu); LOUPE_ATTN_BLOCK_ROWS=n sets Tb (the
 * tests use a few rows, so that blocks, the causal key range and the window's start are
 * exercised on tiny models). */
#include <stdlib.h>

#include "backend/cuda/cuda_int.cuh"

#define BLK_FLOATS ((size_t)32 << 20)   /* 128 MB of scores per buffer */

/* Query rows per block: LOUPE_ATTN_BLOCK_ROWS, else as many as fit BLK_FLOATS (≥ 16). */
static int blk_rows(int B, int H, int T) {
    const char *e = getenv("LOUPE_ATTN_BLOCK_ROWS");
    long r = e && *e ? strtol(e, NULL, 10) : 0;
    if (r <= 0) r = (long)(BLK_FLOATS / ((size_t)B * H * T));
    if (r < 16 && !(e && *e)) r = 16;
    return r < 1 ? 1 : r > T ? T : (int)r;
}

/* Row r of matrix z: S holds scale·q·k, dP dout·vᵀ. Leaves P in S and dS, the gradient of
 * the scores before the scale, in dP: P (dP − D_i), times 1 − tanh² under soft-capping. */
__global__ void blk_grad_kernel(float *S, float *dP, const float *lse, const float *rowdot,
                                const int *amask, float softcap, int causal, int window, int H,
                                int T, int Tb, int Tk, int i0, int kb) {
    size_t zr = blockIdx.x;
    int z = (int)(zr / Tb), r = (int)(zr % Tb), b = z / H, h = z % H, i = i0 + r;
    float *s = S + zr * Tk, *d = dP + zr * Tk;
    float l = lse[(size_t)z * T + i];
    float di = rowdot[((size_t)b * T + i) * H + h];
    for (int jj = threadIdx.x; jj < Tk; jj += blockDim.x) {
        float p = 0.0f, g = 0.0f;
        if (cu_att_visible(amask, causal, window, b, T, i, kb + jj)) {
            float x = s[jj], t = 0.0f;
            if (softcap > 0.0f) {
                t = tanhf(x / softcap);
                x = softcap * t;
            }
            p = expf(x - l);   /* l = +∞ (no visible key): 0 */
            g = p * (d[jj] - di);
            if (softcap > 0.0f) g *= 1.0f - t * t;
        }
        s[jj] = p;
        d[jj] = g;
    }
}

/* D_i = dout_i·out_i for every (b, t, h) row of D values (each operand rounded to bf16
 * first with half): a warp per row. */
__global__ void blk_rowdot_kernel(float *rowdot, const float *dout, const float *out, int D,
                                  size_t rows, int half) {
    size_t row = (size_t)blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32;
    int lane = threadIdx.x % 32;
    if (row >= rows) return;
    const float *a = dout + row * D, *o = out + row * D;
    float s = 0.0f;
    for (int d = lane; d < D; d += 32)
        s += half ? cu_bf16_to(cu_bf16_from(a[d])) * cu_bf16_to(cu_bf16_from(o[d])) : a[d] * o[d];
    s = cu_warp_sum(s);
    if (lane == 0) rowdot[row] = s;
}

void cu_att_rowdot(float *rowdot, const float *dout, const float *out, int D, size_t rows,
                   int half) {
    blk_rowdot_kernel<<<(unsigned)((rows + 7) / 8), 256, 0, cu_stream>>>(rowdot, dout, out, D,
                                                                         rows, half);
    CU_LAUNCHED();
}

/* a batched product of the ops: cu_gemm_batched, or cu_gemm_batched_tf32 for the _tc ops */
typedef void (*blk_gemm)(int ta, int tb, int M, int N, int K, float alpha, const float *const *a,
                         int lda, const float *const *b, int ldb, float beta, float *const *c,
                         int ldc, int count);

static void blk_check(const nn_attn_params *p, int H, int KVH) {
    if (p->dropout || KVH <= 0 || H % KVH != 0)
        cu_fatal("fused attention: dropout, or H not a multiple of KVH", __FILE__, __LINE__);
}

static void blk_forward(blk_gemm gemm, float *out, float *lse, const float *q, const float *k,
                        const float *v, const int *amask, const nn_attn_params *p, int B, int T,
                        int H, int KVH, int D) {
    if (B <= 0 || T <= 0 || H <= 0 || D <= 0) return;
    blk_check(p, H, KVH);
    int rep = H / KVH, n = B * H, Tb = blk_rows(B, H, T);
    size_t qs = (size_t)T * H * D, ks = (size_t)T * KVH * D;
    const float **ptr = (const float **)cu_scratch("attention_fused_forward",
                                                   4 * (size_t)n * sizeof(float *));
    float *S = ptr ? (float *)cu_scratch("attention_fused_forward",
                                         (size_t)n * Tb * T * sizeof(float)) : NULL;
    if (!S) {
        cu_scratch_free(ptr);
        return;
    }
    const float **Pq = ptr, **Pk = ptr + n, **Pv = ptr + 2 * n, **Ps = ptr + 3 * n;
    for (int i0 = 0; i0 < T; i0 += Tb) {
        int i1 = i0 + Tb < T ? i0 + Tb : T, rows = i1 - i0, kb, ke;
        cu_att_keys(p->causal, p->window, T, i0, i1, &kb, &ke);
        int Tk = ke - kb;
        size_t ps = (size_t)rows * Tk;
        cu_fill_ptrs(Pq, cu_spec(q + (size_t)i0 * H * D, qs, D, 1, 1, 0), B, H, n);
        cu_fill_ptrs(Pk, cu_spec(k + (size_t)kb * KVH * D, ks, D, rep, 1, 0), B, H, n);
        cu_fill_ptrs(Pv, cu_spec(v + (size_t)kb * KVH * D, ks, D, rep, 1, 0), B, H, n);
        cu_fill_ptrs(Ps, cu_spec(S, (size_t)H * ps, ps, 1, 1, 0), B, H, n);
        gemm(0, 1, rows, Tk, D, p->scale, Pq, H * D, Pk, KVH * D, 0.0f,
             (float *const *)Ps, Tk, n);
        cu_att_softmax(S, lse, amask, p, n, rows, Tk, i0, kb, T, H);
        /* out rows i0..i1 */
        cu_fill_ptrs(Pq, cu_spec(out + (size_t)i0 * H * D, qs, D, 1, 1, 0), B, H, n);
        gemm(0, 0, rows, D, Tk, 1.0f, Ps, Tk, Pv, KVH * D, 0.0f,
             (float *const *)Pq, H * D, n);
    }
    cu_scratch_free(S);
    cu_scratch_free(ptr);
}

static void blk_backward(blk_gemm gemm, float *dq, float *dk, float *dv, const float *dout,
                         const float *out, const float *lse, const float *q, const float *k,
                         const float *v, const int *amask, const nn_attn_params *p, int B, int T,
                         int H, int KVH, int D) {
    if (B <= 0 || T <= 0 || H <= 0 || D <= 0 || (!dq && !dk && !dv)) return;
    blk_check(p, H, KVH);
    int rep = H / KVH, n = B * H, m = B * KVH, Tb = blk_rows(B, H, T);
    size_t qs = (size_t)T * H * D, ks = (size_t)T * KVH * D, rows_all = (size_t)B * T * H;
    const char *op = "attention_fused_backward";
    /* 10 arrays of n pointers; rowdot; scores and their gradient for one block */
    const float **ptr = (const float **)cu_scratch(op, 10 * (size_t)n * sizeof(float *));
    float *rowdot = ptr ? (float *)cu_scratch(op, rows_all * sizeof(float)) : NULL;
    float *S = rowdot ? (float *)cu_scratch(op, (size_t)n * Tb * T * sizeof(float)) : NULL;
    float *dP = S ? (float *)cu_scratch(op, (size_t)n * Tb * T * sizeof(float)) : NULL;
    if (!dP) {
        cu_scratch_free(S);
        cu_scratch_free(rowdot);
        cu_scratch_free(ptr);
        return;
    }
    cu_att_rowdot(rowdot, dout, out, D, rows_all, 0);
    /* dk, dv are sums over the blocks (and the heads of a group): zero, then add */
    if (dk) CU_CHECK(cudaMemsetAsync(dk, 0, (size_t)B * ks * sizeof(float), cu_stream));
    if (dv) CU_CHECK(cudaMemsetAsync(dv, 0, (size_t)B * ks * sizeof(float), cu_stream));
    const float **Pq = ptr, **Pk = ptr + n, **Pv = ptr + 2 * n, **Pdo = ptr + 3 * n;
    const float **Ps = ptr + 4 * n, **Pd = ptr + 5 * n, **Pdq = ptr + 6 * n;
    /* the backward's regrouped arrays: matrix r·(B·KVH) + b·KVH + kh is query head
     * kh·rep + r of batch b */
    const float **Gq = ptr + 7 * n, **Gdo = ptr + 8 * n, **Gs = ptr + 9 * n;
    for (int i0 = 0; i0 < T; i0 += Tb) {
        int i1 = i0 + Tb < T ? i0 + Tb : T, rows = i1 - i0, kb, ke;
        cu_att_keys(p->causal, p->window, T, i0, i1, &kb, &ke);
        int Tk = ke - kb;
        size_t ps = (size_t)rows * Tk, qo = (size_t)i0 * H * D, ko = (size_t)kb * KVH * D;
        cu_fill_ptrs(Pq, cu_spec(q + qo, qs, D, 1, 1, 0), B, H, n);
        cu_fill_ptrs(Pk, cu_spec(k + ko, ks, D, rep, 1, 0), B, H, n);
        cu_fill_ptrs(Pv, cu_spec(v + ko, ks, D, rep, 1, 0), B, H, n);
        cu_fill_ptrs(Pdo, cu_spec(dout + qo, qs, D, 1, 1, 0), B, H, n);
        cu_fill_ptrs(Ps, cu_spec(S, (size_t)H * ps, ps, 1, 1, 0), B, H, n);
        cu_fill_ptrs(Pd, cu_spec(dP, (size_t)H * ps, ps, 1, 1, 0), B, H, n);
        gemm(0, 1, rows, Tk, D, p->scale, Pq, H * D, Pk, KVH * D, 0.0f,
             (float *const *)Ps, Tk, n);
        gemm(0, 1, rows, Tk, D, 1.0f, Pdo, H * D, Pv, KVH * D, 0.0f,
             (float *const *)Pd, Tk, n);
        unsigned nb = (unsigned)((size_t)n * rows);
        blk_grad_kernel<<<nb, cu_row_threads(Tk), 0, cu_stream>>>(
            S, dP, lse, rowdot, amask, p->softcap, p->causal, p->window, H, T, rows, Tk, i0, kb);
        CU_LAUNCHED();
        if (dq) {   /* dq rows i0..i1 = scale·dS·K */
            cu_fill_ptrs(Pdq, cu_spec(dq + qo, qs, D, 1, 1, 0), B, H, n);
            gemm(0, 0, rows, D, Tk, p->scale, Pd, Tk, Pk, KVH * D, 0.0f,
                 (float *const *)Pdq, H * D, n);
        }
        if (!dk && !dv) continue;
        cu_fill_ptrs(Gq, cu_spec(q + qo, qs, D, 1, rep, 1), B, KVH, n);
        cu_fill_ptrs(Gdo, cu_spec(dout + qo, qs, D, 1, rep, 1), B, KVH, n);
        cu_fill_ptrs(Gs, cu_spec(S, (size_t)H * ps, ps, 1, rep, 1), B, KVH, n);
        cu_fill_ptrs(Pd, cu_spec(dP, (size_t)H * ps, ps, 1, rep, 1), B, KVH, n);   /* dS */
        cu_fill_ptrs(Pk, cu_spec(dk ? dk + ko : NULL, ks, D, 1, 1, 0), B, KVH, m);
        cu_fill_ptrs(Pv, cu_spec(dv ? dv + ko : NULL, ks, D, 1, 1, 0), B, KVH, m);
        for (int r = 0; r < rep; r++) {
            size_t o = (size_t)r * m;
            if (dk)   /* dk += scale·dSᵀ·q */
                gemm(1, 0, Tk, D, rows, p->scale, Pd + o, Tk, Gq + o, H * D, 1.0f,
                     (float *const *)Pk, KVH * D, m);
            if (dv)   /* dv += Pᵀ·dout */
                gemm(1, 0, Tk, D, rows, 1.0f, Gs + o, Tk, Gdo + o, H * D, 1.0f,
                     (float *const *)Pv, KVH * D, m);
        }
    }
    cu_scratch_free(dP);
    cu_scratch_free(S);
    cu_scratch_free(rowdot);
    cu_scratch_free(ptr);
}

void cu_attention_blk_forward(float *out, float *lse, const float *q, const float *k,
                              const float *v, const int *amask, const nn_attn_params *p,
                              int B, int T, int H, int KVH, int D) {
    blk_forward(cu_gemm_batched, out, lse, q, k, v, amask, p, B, T, H, KVH, D);
}

void cu_attention_blk_backward(float *dq, float *dk, float *dv, const float *dout,
                               const float *out, const float *lse, const float *q,
                               const float *k, const float *v, const int *amask,
                               const nn_attn_params *p, int B, int T, int H, int KVH, int D) {
    blk_backward(cu_gemm_batched, dq, dk, dv, dout, out, lse, q, k, v, amask, p, B, T, H, KVH,
                 D);
}

void cu_attention_blk_tc_forward(float *out, float *lse, const float *q, const float *k,
                                 const float *v, const int *amask, const nn_attn_params *p,
                                 int B, int T, int H, int KVH, int D) {
    blk_forward(cu_gemm_batched_tf32, out, lse, q, k, v, amask, p, B, T, H, KVH, D);
}

void cu_attention_blk_tc_backward(float *dq, float *dk, float *dv, const float *dout,
                                  const float *out, const float *lse, const float *q,
                                  const float *k, const float *v, const int *amask,
                                  const nn_attn_params *p, int B, int T, int H, int KVH, int D) {
    blk_backward(cu_gemm_batched_tf32, dq, dk, dv, dout, out, lse, q, k, v, amask, p, B, T, H,
                 KVH, D);
}
