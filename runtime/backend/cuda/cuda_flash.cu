/* cuda_flash.cu — fused (flash-attention style) attention forward and backward: the (T,T)
 * probabilities are never written. f32 throughout (the op test holds it to the double
 * reference at 1e-5).
 *
 * Forward (flash_fwd_kernel): a block takes FL_BQ = 16 queries of one (batch, head), 4 per
 * warp, and walks the key tiles of 32 that any of them can see (causal: up to its last
 * query; sliding window: from its first query − window + 1). Per tile, lane j of a warp
 * scores key j against the warp's 4 queries (q tile and k/v tile in shared memory), and an
 * online softmax keeps per query the running max m, the running sum l and the unnormalised
 * output (lane owns output columns lane, lane+32, …). At the end out = acc / l and
 * lse = m + log l; a query with no visible key gets out = 0, lse = +INFINITY (ops.h).
 *
 * Backward, no atomics: D_i = dout_i·out_i per row (flash_rowdot_kernel), then
 *  - flash_dq_kernel: the forward's tiling; per key tile the probabilities are recomputed as
 *    P = exp(s − lse), dS = P (dout·v − D_i) (· tanh' of the soft-cap), dq_i += scale·dS·k;
 *  - flash_dkv_kernel: a block takes 16 keys of one (batch, kv head), 4 per warp, and walks
 *    every query head of its group and the query tiles of 32 that can see them, lane i
 *    a query: dv_j += Σ_i P_ij dout_i, dk_j += scale·Σ_i dS_ij q_i.
 * Each output row (dq of a query, dk/dv of a key) belongs to one warp, which writes its sum
 * once at the end (the attention backwards write their gradients, ops.h).
 *
 * Dot products over D read float4s: shared rows are D rounded up to 4 (zero-padded) plus 4
 * when that is a multiple of 8 floats, so the pitch is an odd number of float4s and the 8
 * lanes of each phase of a 128-bit load, reading 8 rows at the same column, hit distinct
 * banks. Sums over rows (P·V, dS·K, …) read a row's columns lane, lane+32, …, once for all
 * 4 rows of the warp. The head size D is at most FL_DMAX = 256 (per-lane registers hold D/32
 * columns; be_backend.fused_attention tells the model). For D = 256 a block uses ~98 KB of
 * shared memory (the kernels opt in past 48 KB); smaller heads use less. */
#include "backend/cuda/cuda_int.cuh"

enum { FL_WARPS = 4, FL_ROWS = 4, FL_BQ = FL_WARPS * FL_ROWS, FL_BK = 32, FL_DMAX = 256 };

typedef struct {
    const float *q, *k, *v;   /* (B,T,H,D), (B,T,KVH,D), (B,T,KVH,D) */
    const int *amask;         /* (B,T) or NULL */
    float scale, softcap;
    int causal, window;
    int T, H, KVH, D, rep;    /* rep = H / KVH */
} fl_args;

static fl_args make_args(const float *q, const float *k, const float *v, const int *amask,
                         const nn_attn_params *p, int T, int H, int KVH, int D) {
    fl_args a;
    a.q = q, a.k = k, a.v = v, a.amask = amask;
    a.scale = p->scale, a.softcap = p->softcap, a.causal = p->causal, a.window = p->window;
    a.T = T, a.H = H, a.KVH = KVH, a.D = D, a.rep = H / KVH;
    return a;
}

__device__ __forceinline__ bool fl_visible(const fl_args &a, int b, int i, int j) {
    if (a.amask && !a.amask[(size_t)b * a.T + j]) return false;
    if (a.causal && j > i) return false;
    if (a.window > 0 && i - j >= a.window) return false;
    return true;
}

/* scale·q·k after the soft-cap (the score the softmax sees) */
__device__ __forceinline__ float fl_capped(const fl_args &a, float x) {
    return a.softcap > 0.0f ? a.softcap * tanhf(x / a.softcap) : x;
}

/* Shared row pitch for head size D (see the top): a multiple of 4, an odd number of float4s. */
static __host__ __device__ __forceinline__ int fl_pitch(int D) {
    int d4 = (D + 3) & ~3;
    return (d4 / 4) % 2 ? d4 : d4 + 4;
}

/* Rows [r0, r0+n) of a (T, stride) tensor's head slice `base` into shared `dst` (pitch P):
 * columns D up to the next multiple of 4, and rows past T, are zeros. */
__device__ __forceinline__ void fl_load(float *dst, const float *base, size_t stride, int r0,
                                        int n, int T, int D, int P) {
    int W = (D + 3) & ~3;
    for (int x = threadIdx.x; x < n * W; x += blockDim.x) {
        int r = x / W, d = x - r * W, i = r0 + r;
        dst[r * P + d] = i < T && d < D ? base[(size_t)i * stride + d] : 0.0f;
    }
}

__device__ __forceinline__ float4 fl_ld4(const float *p) {
    return *reinterpret_cast<const float4 *>(p);
}

/* acc += a·b over 4 columns */
__device__ __forceinline__ float fl_dot4(float4 a, float4 b, float acc) {
    acc = fmaf(a.x, b.x, acc);
    acc = fmaf(a.y, b.y, acc);
    acc = fmaf(a.z, b.z, acc);
    return fmaf(a.w, b.w, acc);
}

/* The key range [lo, hi) that queries [q0, q0+n) may see. */
__device__ __forceinline__ void fl_key_range(const fl_args &a, int q0, int n, int *lo, int *hi) {
    cu_att_keys(a.causal, a.window, a.T, q0, min(a.T, q0 + n), lo, hi);
}

/* ---- forward ------------------------------------------------------------------------------ */

template <int NC>
__global__ void __launch_bounds__(FL_WARPS * 32)
flash_fwd_kernel(float *out, float *lse, fl_args a, int ntiles) {
    extern __shared__ float fl_sh[];
    const int D = a.D, P = fl_pitch(D), D4 = (D + 3) / 4;   // D4: float4s per row
    float *Qs = fl_sh, *Ks = Qs + FL_BQ * P, *Vs = Ks + FL_BK * P;
    int tile = (int)(blockIdx.x % (unsigned)ntiles), bh = (int)(blockIdx.x / (unsigned)ntiles);
    int b = bh / a.H, h = bh % a.H, kh = h / a.rep;
    int q0 = tile * FL_BQ, lane = threadIdx.x & 31, w = threadIdx.x >> 5;
    size_t qstride = (size_t)a.H * D, kstride = (size_t)a.KVH * D;
    const float *qb = a.q + (size_t)b * a.T * qstride + (size_t)h * D;
    const float *kb = a.k + (size_t)b * a.T * kstride + (size_t)kh * D;
    const float *vb = a.v + (size_t)b * a.T * kstride + (size_t)kh * D;
    fl_load(Qs, qb, qstride, q0, FL_BQ, a.T, D, P);
    float m[FL_ROWS], l[FL_ROWS], acc[FL_ROWS][NC];
#pragma unroll
    for (int r = 0; r < FL_ROWS; r++) {
        m[r] = -INFINITY, l[r] = 0.0f;
#pragma unroll
        for (int c = 0; c < NC; c++) acc[r][c] = 0.0f;
    }
    int jlo, jhi;
    fl_key_range(a, q0, FL_BQ, &jlo, &jhi);
    for (int j0 = jlo; j0 < jhi; j0 += FL_BK) {
        __syncthreads();   // the previous tile is no longer read
        fl_load(Ks, kb, kstride, j0, FL_BK, a.T, D, P);
        fl_load(Vs, vb, kstride, j0, FL_BK, a.T, D, P);
        __syncthreads();
        int j = j0 + lane;
        float s[FL_ROWS], pj[FL_ROWS];
#pragma unroll
        for (int r = 0; r < FL_ROWS; r++) s[r] = 0.0f;
#pragma unroll 2
        for (int d = 0; d < D4; d++) {
            float4 kd = fl_ld4(Ks + lane * P + 4 * d);
#pragma unroll
            for (int r = 0; r < FL_ROWS; r++)
                s[r] = fl_dot4(fl_ld4(Qs + (w * FL_ROWS + r) * P + 4 * d), kd, s[r]);
        }
#pragma unroll
        for (int r = 0; r < FL_ROWS; r++) {
            int i = q0 + w * FL_ROWS + r;
            bool ok = i < a.T && j < jhi && fl_visible(a, b, i, j);
            float x = ok ? fl_capped(a, a.scale * s[r]) : -INFINITY;
            float mn = fmaxf(m[r], cu_warp_max(x));   // the same in every lane
            pj[r] = 0.0f;
            if (mn == -INFINITY) continue;            // nothing visible yet
            pj[r] = ok ? expf(x - mn) : 0.0f;
            float corr = expf(m[r] - mn);             // 0 while m is -inf
            l[r] = l[r] * corr + cu_warp_sum(pj[r]);
            m[r] = mn;
#pragma unroll
            for (int c = 0; c < NC; c++) acc[r][c] *= corr;
        }
#pragma unroll 2
        for (int jj = 0; jj < FL_BK; jj++) {   // acc += P·V, each V value read once
            float pb[FL_ROWS];
            bool any = false;
#pragma unroll
            for (int r = 0; r < FL_ROWS; r++) {
                pb[r] = __shfl_sync(0xffffffffu, pj[r], jj);
                any |= pb[r] != 0.0f;
            }
            if (!any) continue;   // uniform: key jj masked for all 4 queries, or past the range
#pragma unroll
            for (int c = 0; c < NC; c++) {
                int d = lane + 32 * c;
                if (d >= D) continue;
                float vd = Vs[jj * P + d];
#pragma unroll
                for (int r = 0; r < FL_ROWS; r++) acc[r][c] = fmaf(pb[r], vd, acc[r][c]);
            }
        }
    }
#pragma unroll
    for (int r = 0; r < FL_ROWS; r++) {
        int i = q0 + w * FL_ROWS + r;
        if (i >= a.T) continue;
        float inv = l[r] > 0.0f ? 1.0f / l[r] : 0.0f;
        float *o = out + ((size_t)b * a.T + i) * qstride + (size_t)h * D;
#pragma unroll
        for (int c = 0; c < NC; c++) {
            int d = lane + 32 * c;
            if (d < D) o[d] = acc[r][c] * inv;
        }
        if (lane == 0)
            lse[((size_t)b * a.H + h) * a.T + i] = l[r] > 0.0f ? m[r] + logf(l[r]) : INFINITY;
    }
}

/* ---- backward ----------------------------------------------------------------------------- */

/* rowdot (B,H,T) = Σ_d dout·out of each (b, i, h) row; one warp per row. */
__global__ void flash_rowdot_kernel(float *rowdot, const float *dout, const float *out, int T,
                                    int H, int D, size_t rows) {
    size_t z = (size_t)blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5);
    if (z >= rows) return;   // a whole warp leaves together
    int lane = threadIdx.x & 31;
    const float *g = dout + z * D, *o = out + z * D;
    float s = 0.0f;
    for (int d = lane; d < D; d += 32) s = fmaf(g[d], o[d], s);
    s = cu_warp_sum(s);
    size_t bi = z / H;   // z = (b·T + i)·H + h
    int h = (int)(z % H), i = (int)(bi % T);
    size_t b = bi / T;
    if (lane == 0) rowdot[(b * H + h) * T + i] = s;
}

/* dS of one (query, key) pair from its raw score x = scale·q·k, dP = dout·v, lse and D_i;
 * the gradient of scale·q·k (the caller multiplies by scale for q·k). */
__device__ __forceinline__ float fl_ds(const fl_args &a, float x, float dp, float L, float Di,
                                       float *P) {
    float p = expf(fl_capped(a, x) - L);
    float g = p * (dp - Di);
    if (a.softcap > 0.0f) {   // d(cap·tanh(x/cap))/dx = 1 − tanh²
        float t = tanhf(x / a.softcap);
        g *= 1.0f - t * t;
    }
    *P = p;
    return g;
}

template <int NC>
__global__ void __launch_bounds__(FL_WARPS * 32)
flash_dq_kernel(float *dq, const float *dout, const float *lse, const float *rowdot, fl_args a,
                int ntiles) {
    extern __shared__ float fl_sh[];
    const int D = a.D, P = fl_pitch(D), D4 = (D + 3) / 4;   // D4: float4s per row
    float *Qs = fl_sh, *Gs = Qs + FL_BQ * P, *Ks = Gs + FL_BQ * P, *Vs = Ks + FL_BK * P;
    int tile = (int)(blockIdx.x % (unsigned)ntiles), bh = (int)(blockIdx.x / (unsigned)ntiles);
    int b = bh / a.H, h = bh % a.H, kh = h / a.rep;
    int q0 = tile * FL_BQ, lane = threadIdx.x & 31, w = threadIdx.x >> 5;
    size_t qstride = (size_t)a.H * D, kstride = (size_t)a.KVH * D;
    const float *qb = a.q + (size_t)b * a.T * qstride + (size_t)h * D;
    const float *gb = dout + (size_t)b * a.T * qstride + (size_t)h * D;
    const float *kb = a.k + (size_t)b * a.T * kstride + (size_t)kh * D;
    const float *vb = a.v + (size_t)b * a.T * kstride + (size_t)kh * D;
    fl_load(Qs, qb, qstride, q0, FL_BQ, a.T, D, P);
    fl_load(Gs, gb, qstride, q0, FL_BQ, a.T, D, P);
    float L[FL_ROWS], Di[FL_ROWS], acc[FL_ROWS][NC];
#pragma unroll
    for (int r = 0; r < FL_ROWS; r++) {
        int i = q0 + w * FL_ROWS + r;
        size_t at = ((size_t)b * a.H + h) * a.T + i;
        L[r] = i < a.T ? lse[at] : INFINITY;   // +inf: no visible key, every P is 0
        Di[r] = i < a.T ? rowdot[at] : 0.0f;
#pragma unroll
        for (int c = 0; c < NC; c++) acc[r][c] = 0.0f;
    }
    int jlo, jhi;
    fl_key_range(a, q0, FL_BQ, &jlo, &jhi);
    for (int j0 = jlo; j0 < jhi; j0 += FL_BK) {
        __syncthreads();
        fl_load(Ks, kb, kstride, j0, FL_BK, a.T, D, P);
        fl_load(Vs, vb, kstride, j0, FL_BK, a.T, D, P);
        __syncthreads();
        int j = j0 + lane;
        float s[FL_ROWS], dp[FL_ROWS], g[FL_ROWS];
#pragma unroll
        for (int r = 0; r < FL_ROWS; r++) s[r] = dp[r] = 0.0f;
#pragma unroll 2
        for (int d = 0; d < D4; d++) {
            float4 kd = fl_ld4(Ks + lane * P + 4 * d), vd = fl_ld4(Vs + lane * P + 4 * d);
#pragma unroll
            for (int r = 0; r < FL_ROWS; r++) {
                s[r] = fl_dot4(fl_ld4(Qs + (w * FL_ROWS + r) * P + 4 * d), kd, s[r]);
                dp[r] = fl_dot4(fl_ld4(Gs + (w * FL_ROWS + r) * P + 4 * d), vd, dp[r]);
            }
        }
#pragma unroll
        for (int r = 0; r < FL_ROWS; r++) {
            int i = q0 + w * FL_ROWS + r;
            // +inf lse: past T, or a query that sees nothing
            bool ok = !isinf(L[r]) && j < jhi && fl_visible(a, b, i, j);
            float p;
            g[r] = ok ? fl_ds(a, a.scale * s[r], dp[r], L[r], Di[r], &p) * a.scale : 0.0f;
        }
#pragma unroll 2
        for (int jj = 0; jj < FL_BK; jj++) {   // dq += dS·K, each K value read once
            float gb[FL_ROWS];
            bool any = false;
#pragma unroll
            for (int r = 0; r < FL_ROWS; r++) {
                gb[r] = __shfl_sync(0xffffffffu, g[r], jj);
                any |= gb[r] != 0.0f;
            }
            if (!any) continue;   // uniform
#pragma unroll
            for (int c = 0; c < NC; c++) {
                int d = lane + 32 * c;
                if (d >= D) continue;
                float kd = Ks[jj * P + d];
#pragma unroll
                for (int r = 0; r < FL_ROWS; r++) acc[r][c] = fmaf(gb[r], kd, acc[r][c]);
            }
        }
    }
#pragma unroll
    for (int r = 0; r < FL_ROWS; r++) {
        int i = q0 + w * FL_ROWS + r;
        if (i >= a.T) continue;
        float *o = dq + ((size_t)b * a.T + i) * qstride + (size_t)h * D;
#pragma unroll
        for (int c = 0; c < NC; c++) {
            int d = lane + 32 * c;
            if (d < D) o[d] = acc[r][c];
        }
    }
}

template <int NC>
__global__ void __launch_bounds__(FL_WARPS * 32)
flash_dkv_kernel(float *dk, float *dv, const float *dout, const float *lse,
                 const float *rowdot, fl_args a, int ntiles) {
    extern __shared__ float fl_sh[];
    const int D = a.D, P = fl_pitch(D), D4 = (D + 3) / 4;   // D4: float4s per row
    float *Ks = fl_sh, *Vs = Ks + FL_BQ * P, *Qs = Vs + FL_BQ * P, *Gs = Qs + FL_BK * P;
    float *Ls = Gs + FL_BK * P, *Ds = Ls + FL_BK;
    int tile = (int)(blockIdx.x % (unsigned)ntiles), bk = (int)(blockIdx.x / (unsigned)ntiles);
    int b = bk / a.KVH, kh = bk % a.KVH;
    int k0 = tile * FL_BQ, lane = threadIdx.x & 31, w = threadIdx.x >> 5;
    size_t qstride = (size_t)a.H * D, kstride = (size_t)a.KVH * D;
    const float *kb = a.k + (size_t)b * a.T * kstride + (size_t)kh * D;
    const float *vb = a.v + (size_t)b * a.T * kstride + (size_t)kh * D;
    fl_load(Ks, kb, kstride, k0, FL_BQ, a.T, D, P);
    fl_load(Vs, vb, kstride, k0, FL_BQ, a.T, D, P);
    float dka[FL_ROWS][NC], dva[FL_ROWS][NC];
#pragma unroll
    for (int r = 0; r < FL_ROWS; r++)
#pragma unroll
        for (int c = 0; c < NC; c++) dka[r][c] = dva[r][c] = 0.0f;
    // queries that may see keys [k0, k0+16): causal i >= k0; window i < k0 + 15 + window
    int ilo = a.causal ? k0 : 0;
    int ihi = a.window > 0 ? min(a.T, k0 + FL_BQ - 1 + a.window) : a.T;
    for (int h = kh * a.rep; h < (kh + 1) * a.rep; h++) {
        const float *qb = a.q + (size_t)b * a.T * qstride + (size_t)h * D;
        const float *gb = dout + (size_t)b * a.T * qstride + (size_t)h * D;
        const float *lb = lse + ((size_t)b * a.H + h) * a.T;
        const float *db = rowdot + ((size_t)b * a.H + h) * a.T;
        for (int i0 = ilo; i0 < ihi; i0 += FL_BK) {
            __syncthreads();
            fl_load(Qs, qb, qstride, i0, FL_BK, a.T, D, P);
            fl_load(Gs, gb, qstride, i0, FL_BK, a.T, D, P);
            if (threadIdx.x < FL_BK) {
                int i = i0 + threadIdx.x;
                Ls[threadIdx.x] = i < ihi ? lb[i] : INFINITY;
                Ds[threadIdx.x] = i < ihi ? db[i] : 0.0f;
            }
            __syncthreads();
            int i = i0 + lane;
            float L = Ls[lane], Di = Ds[lane];
            float s[FL_ROWS], dp[FL_ROWS], p[FL_ROWS], g[FL_ROWS];
#pragma unroll
            for (int r = 0; r < FL_ROWS; r++) s[r] = dp[r] = 0.0f;
#pragma unroll 2
            for (int d = 0; d < D4; d++) {
                float4 qd = fl_ld4(Qs + lane * P + 4 * d), gd = fl_ld4(Gs + lane * P + 4 * d);
#pragma unroll
                for (int r = 0; r < FL_ROWS; r++) {
                    s[r] = fl_dot4(qd, fl_ld4(Ks + (w * FL_ROWS + r) * P + 4 * d), s[r]);
                    dp[r] = fl_dot4(gd, fl_ld4(Vs + (w * FL_ROWS + r) * P + 4 * d), dp[r]);
                }
            }
#pragma unroll
            for (int r = 0; r < FL_ROWS; r++) {
                int j = k0 + w * FL_ROWS + r;
                // L is +inf past ihi and for a query that sees nothing
                bool ok = j < a.T && !isinf(L) && fl_visible(a, b, i, j);
                p[r] = 0.0f;
                g[r] = ok ? fl_ds(a, a.scale * s[r], dp[r], L, Di, &p[r]) * a.scale : 0.0f;
            }
#pragma unroll 2
            for (int ii = 0; ii < FL_BK; ii++) {   // dv += P·dout, dk += dS·q
                float pb[FL_ROWS], gb[FL_ROWS];
                bool any = false;
#pragma unroll
                for (int r = 0; r < FL_ROWS; r++) {
                    pb[r] = __shfl_sync(0xffffffffu, p[r], ii);
                    gb[r] = __shfl_sync(0xffffffffu, g[r], ii);
                    any |= pb[r] != 0.0f || gb[r] != 0.0f;
                }
                if (!any) continue;   // uniform
#pragma unroll
                for (int c = 0; c < NC; c++) {
                    int d = lane + 32 * c;
                    if (d >= D) continue;
                    float gd = Gs[ii * P + d], qd = Qs[ii * P + d];
#pragma unroll
                    for (int r = 0; r < FL_ROWS; r++) {
                        dva[r][c] = fmaf(pb[r], gd, dva[r][c]);
                        dka[r][c] = fmaf(gb[r], qd, dka[r][c]);
                    }
                }
            }
        }
    }
#pragma unroll
    for (int r = 0; r < FL_ROWS; r++) {
        int j = k0 + w * FL_ROWS + r;
        if (j >= a.T) continue;
        size_t at = ((size_t)b * a.T + j) * kstride + (size_t)kh * D;
#pragma unroll
        for (int c = 0; c < NC; c++) {
            int d = lane + 32 * c;
            if (d >= D) continue;
            if (dk) dk[at + d] = dka[r][c];
            if (dv) dv[at + d] = dva[r][c];
        }
    }
}

/* ---- launches ----------------------------------------------------------------------------- */

/* Dynamic shared memory past the default 48 KB must be asked for, per kernel. */
template <typename K> static void fl_smem(K kernel, size_t bytes) {
    if (bytes > 48 * 1024)
        CU_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                      (int)bytes));
}

static void fl_check(const nn_attn_params *p, int H, int KVH, int D) {
    if (p->dropout || D > FL_DMAX || KVH <= 0 || H % KVH != 0)
        cu_fatal("fused attention: dropout, head size over 256 or H not a multiple of KVH",
                 __FILE__, __LINE__);
}

template <int NC>
static void fwd_launch(float *out, float *lse, const fl_args &a, int B) {
    int ntiles = (a.T + FL_BQ - 1) / FL_BQ;
    size_t smem = (size_t)(FL_BQ + 2 * FL_BK) * fl_pitch(a.D) * sizeof(float);
    fl_smem(flash_fwd_kernel<NC>, smem);
    flash_fwd_kernel<NC><<<(unsigned)((size_t)ntiles * B * a.H), FL_WARPS * 32, smem,
                           cu_stream>>>(out, lse, a, ntiles);
    CU_LAUNCHED();
}

template <int NC>
static void bwd_launch(float *dq, float *dk, float *dv, const float *dout, const float *lse,
                       const float *rowdot, const fl_args &a, int B) {
    int ntiles = (a.T + FL_BQ - 1) / FL_BQ;
    size_t smem = (size_t)(2 * FL_BQ + 2 * FL_BK) * fl_pitch(a.D) * sizeof(float);
    if (dq) {
        fl_smem(flash_dq_kernel<NC>, smem);
        flash_dq_kernel<NC><<<(unsigned)((size_t)ntiles * B * a.H), FL_WARPS * 32, smem,
                              cu_stream>>>(dq, dout, lse, rowdot, a, ntiles);
        CU_LAUNCHED();
    }
    if (dk || dv) {
        size_t smem2 = smem + 2 * FL_BK * sizeof(float);
        fl_smem(flash_dkv_kernel<NC>, smem2);
        flash_dkv_kernel<NC><<<(unsigned)((size_t)ntiles * B * a.KVH), FL_WARPS * 32, smem2,
                               cu_stream>>>(dk, dv, dout, lse, rowdot, a, ntiles);
        CU_LAUNCHED();
    }
}

/* NC = ⌈D/32⌉ output columns per lane, 1..8 */
#define FL_DISPATCH(D, CALL)                                                              \
    switch (((D) + 31) / 32) {                                                            \
    CU_CASES_1_7(CALL)                                                                    \
    default: CALL(8); break;                                                              \
    }

void cu_attention_fused_forward(float *out, float *lse, const float *q, const float *k,
                                const float *v, const int *amask, const nn_attn_params *p,
                                int B, int T, int H, int KVH, int D) {
    if (B <= 0 || T <= 0 || H <= 0 || D <= 0) return;
    fl_check(p, H, KVH, D);
    fl_args a = make_args(q, k, v, amask, p, T, H, KVH, D);
#define FWD(NC) fwd_launch<NC>(out, lse, a, B)
    FL_DISPATCH(D, FWD)
#undef FWD
}

void cu_attention_fused_backward(float *dq, float *dk, float *dv, const float *dout,
                                 const float *out, const float *lse, const float *q,
                                 const float *k, const float *v, const int *amask,
                                 const nn_attn_params *p, int B, int T, int H, int KVH, int D) {
    if (B <= 0 || T <= 0 || H <= 0 || D <= 0 || (!dq && !dk && !dv)) return;
    fl_check(p, H, KVH, D);
    size_t rows = (size_t)B * T * H;
    float *rowdot = (float *)cu_scratch("attention_fused_backward", rows * sizeof(float));
    if (!rowdot) return;
    flash_rowdot_kernel<<<(unsigned)((rows + 7) / 8), 256, 0, cu_stream>>>(rowdot, dout, out,
                                                                           T, H, D, rows);
    CU_LAUNCHED();
    fl_args a = make_args(q, k, v, amask, p, T, H, KVH, D);
#define BWD(NC) bwd_launch<NC>(dq, dk, dv, dout, lse, rowdot, a, B)
    FL_DISPATCH(D, BWD)
#undef BWD
    cu_scratch_free(rowdot);
}
