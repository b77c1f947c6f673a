/* cuda_attn.cu — attention forward (training and KV-cache) and backward on the GPU.
 *
 * The interface hands the softmax probabilities (B,H,Tq,Tk) to the caller (the heat map,
 * and the backward's cache), so this version materialises them: scores come from one
 * batched cuBLAS GEMM per direction over the (batch, head) pairs, written straight into
 * `probs`; one block per query row then applies soft-cap, the masks (padding, causal,
 * sliding window) and the softmax in place; a second batched GEMM multiplies by V. A
 * fused (flash) kernel that never writes the T×T matrix is future work (docs/cuda.md).
 *
 * Heads are strided inside a row (q is (B,T,H,D)), and with grouped-query attention head
 * h reads kv head h / (H/KVH), so the batched GEMMs take arrays of matrix pointers built
 * on the device by ptrs_kernel. In the backward, dk and dv of one kv head receive from
 * H/KVH query heads: those products run as H/KVH batched calls, each over distinct kv
 * heads, so no two matrices of one call write the same output. */
#include "backend/cuda/cuda_int.cuh"

__global__ void ptrs_kernel(const float **out, cu_ptr_spec s, int B, int HN, int count) {
    int z = blockIdx.x * blockDim.x + threadIdx.x;
    if (z >= count) return;
    int g = z / (B * HN), rem = z % (B * HN), b = rem / HN, hh = rem % HN;
    out[z] = s.base + (size_t)b * s.sb + (size_t)((hh / s.div) * s.mul + g * s.gadd) * s.sh;
}

void cu_fill_ptrs(const float **out, cu_ptr_spec s, int B, int HN, int count) {
    ptrs_kernel<<<(count + 127) / 128, 128, 0, cu_stream>>>(out, s, B, HN, count);
    CU_LAUNCHED();
}

/* Row r of matrix z (= b·H + h) of S, (n·rows, Tk), holds scale·q·k of query i0 + r against
 * keys kb..kb+Tk−1; leaves the masked softmax there (soft-cap first). A row with no visible
 * key stays all zero (ops.h). The padding mask's rows have T entries; lse (when not NULL,
 * rows of T) gets max + log Σ, +∞ for a row with no visible key. */
__global__ void att_softmax_kernel(float *S, float *lse, const int *amask, float softcap,
                                   int causal, int window, int H, int rows, int Tk, int i0,
                                   int kb, int T) {
    __shared__ float sh[32];
    size_t zr = blockIdx.x;
    int z = (int)(zr / rows), b = z / H, i = i0 + (int)(zr % rows);
    float *row = S + zr * Tk;
    float mx = -INFINITY;
    for (int j = threadIdx.x; j < Tk; j += blockDim.x) {
        if (!cu_att_visible(amask, causal, window, b, T, i, kb + j)) continue;
        float x = row[j];
        if (softcap > 0.0f) x = softcap * tanhf(x / softcap);
        row[j] = x;
        mx = fmaxf(mx, x);
    }
    mx = cu_block_max(mx, sh);
    float sum = 0.0f;
    for (int j = threadIdx.x; j < Tk; j += blockDim.x)
        if (cu_att_visible(amask, causal, window, b, T, i, kb + j)) sum += expf(row[j] - mx);
    sum = cu_block_sum(sum, sh);
    float inv = sum > 0.0f ? 1.0f / sum : 0.0f;
    for (int j = threadIdx.x; j < Tk; j += blockDim.x)
        row[j] = cu_att_visible(amask, causal, window, b, T, i, kb + j) ? expf(row[j] - mx) * inv
                                                                         : 0.0f;
    if (lse && threadIdx.x == 0) lse[(size_t)z * T + i] = sum > 0.0f ? mx + logf(sum) : INFINITY;
}

void cu_att_softmax(float *S, float *lse, const int *amask, const nn_attn_params *p, int n,
                    int rows, int Tk, int i0, int kb, int T, int H) {
    att_softmax_kernel<<<(unsigned)((size_t)n * rows), cu_row_threads(Tk), 0, cu_stream>>>(
        S, lse, amask, p->softcap, p->causal, p->window, H, rows, Tk, i0, kb, T);
    CU_LAUNCHED();
}

__global__ void att_mul_kernel(float *out, const float *a, const float *b, size_t n) {
    CU_GRID_STRIDE(i, n) out[i] = a[i] * b[i];
}

/* P∘M in scratch when there is a dropout mask, else P itself; NULL when the scratch cannot
 * be had (cu_scratch recorded it) */
static const float *dropped(const char *op, const float *probs, const float *mask, size_t n) {
    if (!mask) return probs;
    float *pm = (float *)cu_scratch(op, n * sizeof(float));
    if (!pm) return NULL;
    att_mul_kernel<<<cu_blocks(n), 256, 0, cu_stream>>>(pm, probs, mask, n);
    CU_LAUNCHED();
    return pm;
}

void cu_attention_kv_forward(float *out, float *probs, const float *q, const float *k,
                             const float *v, const int *amask, const nn_attn_params *p, int B,
                             int Tq, int Tk, int q_off, int H, int KVH, int D) {
    if (B <= 0 || Tq <= 0 || Tk <= 0 || H <= 0) return;
    int rep = H / KVH, n = B * H;
    size_t qs = (size_t)Tq * H * D, ks = (size_t)Tk * KVH * D, ps = (size_t)Tq * Tk;
    const float **ptr = (const float **)cu_scratch("attention_forward",
                                                   4 * (size_t)n * sizeof(float *));
    if (!ptr) return;
    cu_fill_ptrs(ptr, cu_spec(q, qs, D, 1, 1, 0), B, H, n);
    cu_fill_ptrs(ptr + n, cu_spec(k, ks, D, rep, 1, 0), B, H, n);
    cu_fill_ptrs(ptr + 2 * n, cu_spec(probs, (size_t)H * ps, ps, 1, 1, 0), B, H, n);
    // scores = scale · q·kᵀ into probs, then the masked softmax in place
    cu_gemm_batched(0, 1, Tq, Tk, D, p->scale, ptr, H * D, ptr + n, KVH * D, 0.0f,
                    (float *const *)(ptr + 2 * n), Tk, n);
    cu_att_softmax(probs, NULL, amask, p, n, Tq, Tk, q_off, 0, Tk, H);
    if (out) {   // out = (P∘M)·v
        size_t np = (size_t)n * ps;
        const float *pm = dropped("attention_forward", probs, p->dropout, np);
        if (!pm) {
            cu_scratch_free(ptr);
            return;
        }
        cu_fill_ptrs(ptr, cu_spec(out, qs, D, 1, 1, 0), B, H, n);
        cu_fill_ptrs(ptr + n, cu_spec(v, ks, D, rep, 1, 0), B, H, n);
        cu_fill_ptrs(ptr + 3 * n, cu_spec(pm, (size_t)H * ps, ps, 1, 1, 0), B, H, n);
        cu_gemm_batched(0, 0, Tq, D, Tk, 1.0f, ptr + 3 * n, Tk, ptr + n, KVH * D, 0.0f,
                        (float *const *)ptr, H * D, n);
        if (pm != probs) cu_scratch_free((void *)pm);
    }
    cu_scratch_free(ptr);
}

void cu_attention_forward(float *out, float *probs, const float *q, const float *k,
                          const float *v, const int *amask, const nn_attn_params *p, int B,
                          int T, int H, int KVH, int D) {
    cu_attention_kv_forward(out, probs, q, k, v, amask, p, B, T, T, 0, H, KVH, D);
}

/* ds holds dP = dout·vᵀ for row (b,h,i); leaves dS, the gradient of the scores before
 * the scale: P∘(dP∘M − Σ_j P·dP∘M), times 1 − tanh² under soft-capping (S = scale·q·k,
 * recomputed in `scores`). Masked keys have P = 0 and get 0. */
__global__ void att_bwd_row_kernel(float *ds, const float *probs, const float *mask,
                                   const float *scores, float softcap, int T) {
    __shared__ float sh[32];
    size_t z = blockIdx.x;
    float *d = ds + z * T;
    const float *pr = probs + z * T, *m = mask ? mask + z * T : NULL;
    const float *s = scores ? scores + z * T : NULL;
    float rowdot = 0.0f;
    for (int j = threadIdx.x; j < T; j += blockDim.x) {
        float pj = pr[j], dp = pj != 0.0f ? d[j] * (m ? m[j] : 1.0f) : 0.0f;
        d[j] = dp;
        rowdot += dp * pj;
    }
    rowdot = cu_block_sum(rowdot, sh);
    for (int j = threadIdx.x; j < T; j += blockDim.x) {
        float pj = pr[j], g = pj * (d[j] - rowdot);
        if (s && pj != 0.0f) {
            float t = tanhf(s[j] / softcap);
            g *= 1.0f - t * t;
        }
        d[j] = g;
    }
}

void cu_attention_backward(float *dq, float *dk, float *dv, float *dscores, const float *dout,
                           const float *probs, const float *q, const float *k, const float *v,
                           const int *amask, const nn_attn_params *p, int B, int T, int H,
                           int KVH, int D) {
    if (B <= 0 || T <= 0 || H <= 0) return;
    int rep = H / KVH, n = B * H;
    size_t qs = (size_t)T * H * D, ks = (size_t)T * KVH * D, ps = (size_t)T * T;
    size_t np = (size_t)n * ps;
    // 8 arrays of n pointers: per (b,h) for dP and dq, then per (r; b,kh) for dk and dv
    // (scores and P∘M are taken one after the other, so they may share a block; a failure
    // past the first launch leaves the outputs half written: the op failed, op_failed says so)
    const float **ptr = (const float **)cu_scratch("attention_backward",
                                                   8 * (size_t)n * sizeof(float *));
    float *scores = NULL;
    if (ptr && p->softcap > 0.0f)
        scores = (float *)cu_scratch("attention_backward", np * sizeof(float));
    if (!ptr || (p->softcap > 0.0f && !scores)) {
        cu_scratch_free(ptr);
        return;
    }
    const float **P_dout = ptr, **P_v = ptr + n, **P_ds = ptr + 2 * n, **P_k = ptr + 3 * n;
    cu_fill_ptrs(P_dout, cu_spec(dout, qs, D, 1, 1, 0), B, H, n);
    cu_fill_ptrs(P_v, cu_spec(v, ks, D, rep, 1, 0), B, H, n);
    cu_fill_ptrs(P_ds, cu_spec(dscores, (size_t)H * ps, ps, 1, 1, 0), B, H, n);
    cu_fill_ptrs(P_k, cu_spec(k, ks, D, rep, 1, 0), B, H, n);
    // dP = dout·vᵀ
    cu_gemm_batched(0, 1, T, T, D, 1.0f, P_dout, H * D, P_v, KVH * D, 0.0f,
                    (float *const *)P_ds, T, n);
    if (scores) {   // the raw scores, for tanh' of the soft-cap
        const float **P_q = ptr + 4 * n, **P_s = ptr + 5 * n;
        cu_fill_ptrs(P_q, cu_spec(q, qs, D, 1, 1, 0), B, H, n);
        cu_fill_ptrs(P_s, cu_spec(scores, (size_t)H * ps, ps, 1, 1, 0), B, H, n);
        cu_gemm_batched(0, 1, T, T, D, p->scale, P_q, H * D, P_k, KVH * D, 0.0f,
                        (float *const *)P_s, T, n);
    }
    att_bwd_row_kernel<<<(unsigned)((size_t)n * T), cu_row_threads(T), 0, cu_stream>>>(
        dscores, probs, p->dropout, scores, p->softcap, T);
    CU_LAUNCHED();
    if (scores) cu_scratch_free(scores);
    if (dq) {   // dq = scale · dS·k (the gradients are written, ops.h)
        const float **P_dq = ptr + 4 * n;
        cu_fill_ptrs(P_dq, cu_spec(dq, qs, D, 1, 1, 0), B, H, n);
        cu_gemm_batched(0, 0, T, D, T, p->scale, P_ds, T, P_k, KVH * D, 0.0f,
                        (float *const *)P_dq, H * D, n);
    }
    if (dk || dv) {
        // regrouped: matrix r·(B·KVH) + b·KVH + kh is query head h = kh·rep + r
        int m = B * KVH;
        const float *pm = dropped("attention_backward", probs, p->dropout, np);
        if (!pm) {
            cu_scratch_free(ptr);
            return;
        }
        const float **G_ds = ptr + 2 * n, **G_q = ptr + 3 * n, **G_pm = ptr + 4 * n;
        const float **G_dout = ptr + 5 * n, **G_dk = ptr + 6 * n, **G_dv = ptr + 7 * n;
        cu_fill_ptrs(G_ds, cu_spec(dscores, (size_t)H * ps, ps, 1, rep, 1), B, KVH, n);
        cu_fill_ptrs(G_q, cu_spec(q, qs, D, 1, rep, 1), B, KVH, n);
        cu_fill_ptrs(G_pm, cu_spec(pm, (size_t)H * ps, ps, 1, rep, 1), B, KVH, n);
        cu_fill_ptrs(G_dout, cu_spec(dout, qs, D, 1, rep, 1), B, KVH, n);
        if (dk) cu_fill_ptrs(G_dk, cu_spec(dk, ks, D, 1, 1, 0), B, KVH, n);
        if (dv) cu_fill_ptrs(G_dv, cu_spec(dv, ks, D, 1, 1, 0), B, KVH, n);
        for (int r = 0; r < rep; r++) {
            size_t o = (size_t)r * m;
            float beta = r ? 1.0f : 0.0f;   // the first query head of a group writes
            if (dk)   // dk += scale · dSᵀ·q
                cu_gemm_batched(1, 0, T, D, T, p->scale, G_ds + o, T, G_q + o, H * D, beta,
                                (float *const *)(G_dk + o), KVH * D, m);
            if (dv)   // dv += (P∘M)ᵀ·dout
                cu_gemm_batched(1, 0, T, D, T, 1.0f, G_pm + o, T, G_dout + o, H * D, beta,
                                (float *const *)(G_dv + o), KVH * D, m);
        }
        if (pm != probs) cu_scratch_free((void *)pm);
    }
    cu_scratch_free(ptr);
}
