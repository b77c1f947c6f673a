/* cuda_attn_tc.cu — the fused attention ops (only the (B,H,T) log-sum-exp kept, nn/ops.h)
 * with their products on bf16 tensor cores (wmma 16×16×16, f32 accumulation): the bf16
 * table's attention_fused_* (be_bf16_ops) for head sizes up to TC_DMAX = 256 where the device
 * has the shared memory (tc_fits). Scores never leave shared memory, unlike
 * cuda_attn_blk.cu's blocks, which write and read each block's scores in global memory
 * several times; other heads go there (its TF32 products).
 *
 * q, k, v and dout are rounded to bf16 once per op (copies in pool scratch: a tile is then
 * half the bytes to read), and tiles zero-pad the head to Dp, a multiple of 16; scores, the
 * softmax and every sum are f32; the probabilities P and the score gradients dS are rounded
 * to bf16 for the products that take them (as flash-attention does in bf16). A block is 4
 * warps of 16 rows; a tile 64 keys (or queries).
 *
 *   forward   (tc_fwd_kernel; 64 queries of one (batch, head)) one pass over the key tiles
 *             the queries can see: S = Q·Kᵀ (a warp's 16 × 64 in shared memory), soft-cap
 *             and masks, P = exp(s − mu) (bf16) against a running row max mu, out += P·V
 *             in accumulator fragments, l += P (the rounded P, so that out is an exact
 *             average of v's rows); at the end out /= l, lse = mu + log l (a
 *             query that sees no key: out = 0, lse = +∞). A fragment's elements cannot be
 *             addressed by row, so rescaling the output goes through shared memory
 *             (tc_scale_rows); it is done only when a tile's max passes mu by more than
 *             TC_SLACK (e^8 bounds every P), which after the first tiles is rare.
 *   backward  D_i = dout_i·out_i of both rounded to bf16 (cu_att_rowdot: dP − D_i is then
 *             0 up to f32 sums where one key is visible), then, without atomics:
 *             tc_dq_kernel, the forward's tiling: S = Q·Kᵀ, dP = dout·Vᵀ, P = exp(s − lse),
 *               dS = P (dP − D_i) (· 1 − tanh² under the soft-cap), dq += scale·dS·K;
 *             tc_dkv_kernel, 64 keys of one (batch, kv head), a warp 16 of them, over every
 *               query head of the group and the query tiles that can see them: Sᵀ = K·Qᵀ,
 *               dPᵀ = V·doutᵀ, the same P and dS, dv += Pᵀ·dout, dk += scale·dSᵀ·Q.
 *             Each gradient row is one warp's, written once at the end (ops.h: written).
 *
 * A warp's 16 × 64 scores go row by row, lane j on columns j and j + 32, so its shared memory
 * accesses are conflict-free; the forward keeps each row's mu (the same in every lane, a
 * tile's max taken by shuffles) and this lane's part of its sum, added over the lanes at the
 * end; the backward reads a row's lse and D_i from shared memory (one address for the warp:
 * a broadcast).
 * Shared memory (tc_smem): the tiles (Q or dout, K, V, and dout or Q) of 64 × Dp bf16 and per
 * warp 16 × 64 f32 scores (and their gradient) and 16 × 64 bf16 P / dS, bf16 rows padded by 16
 * bytes (TC_PAD: no bank conflicts in the fragment loads): the backward's 86.5 KB at Dp = 64,
 * 118.5 KB at 128, 182.5 KB at 256; the forward's 52, 76 and 124 KB (past 48 KB the kernels
 * ask for it; a device that cannot give the backward's takes the blocked ops). The
 * head size is a template argument (Dp/16: 1–8, 12, 16), so the accumulators stay in
 * registers; past 128 the dk and dv sums take a launch each. Under the
 * emulator (tests/gpu/emu) a fragment is lane 0's whole matrix, so these kernels run on the
 * CPU against the reference. */
#include "backend/cuda/cuda_int.cuh"

#include <cuda_bf16.h>
#include <mma.h>

using namespace nvcuda;

enum { TC_WARPS = 4, TC_R = 16, TC_B = 64, TC_DMAX = 256 };
/* Row pitches in shared memory. A bf16 tile row of Dp values is padded by 8 (16 bytes), as is
 * a warp's bf16 P / dS row of 64: wmma loads a fragment as 8-row pieces of 16 bytes, and rows
 * 2·Dp bytes apart (a multiple of 128) put all eight on the same four banks, an 8-way conflict
 * on every load; 16 more bytes a row put them on eight different ones. The f32 scores keep
 * 64 a row (the lanes walk them along rows, conflict-free; a fragment store conflicts 8-way,
 * but there is one per four to sixteen products). */
enum { TC_PAD = 8, TC_PP = TC_B + TC_PAD };
static __host__ __device__ constexpr int tc_tp(int Dp) { return Dp + TC_PAD; }

typedef wmma::fragment<wmma::matrix_a, 16, 16, 16, __nv_bfloat16, wmma::row_major> tc_a;
typedef wmma::fragment<wmma::matrix_b, 16, 16, 16, __nv_bfloat16, wmma::row_major> tc_b;
typedef wmma::fragment<wmma::matrix_b, 16, 16, 16, __nv_bfloat16, wmma::col_major> tc_bt;
typedef wmma::fragment<wmma::accumulator, 16, 16, 16, float> tc_c;

typedef struct {
    const uint16_t *q, *k, *v, *dout;   /* bf16 copies: (B,T,H,D), (B,T,KVH,D) ×2, (B,T,H,D) */
    const float *lse, *rowdot;          /* (B,H,T), (B,T,H): the backward's */
    const int *amask;                   /* (B,T) or NULL */
    float scale, softcap;
    int causal, window;
    int T, H, KVH, D, Dp, rep;
} tc_args;

static __device__ __forceinline__ const __nv_bfloat16 *bf(const uint16_t *p) {
    return (const __nv_bfloat16 *)p;
}

/* Rows r0 … r0+n−1 of head hh of a (B,T,HN,D) bf16 tensor into a 64 × Dp tile (row pitch
 * tc_tp(Dp)), zero past n rows and D columns. The whole block. When D is a multiple of 8 a
 * thread moves 16 bytes at a time (a row of D values then starts 16-byte aligned: tc_halves
 * aligns each copy to 128 bytes); other heads (the tests' odd sizes) go value by value. */
template <int ND>
static __device__ void tc_load(uint16_t *dst, const uint16_t *src, int b, int hh, int HN, int r0,
                               int n, const tc_args &a) {
    constexpr int Dp = ND * 16, P = tc_tp(Dp), CH = Dp / 8;   /* CH: 16-byte chunks a row */
    const int D = a.D;
    const uint16_t *row0 = src + (((size_t)b * a.T + r0) * HN + hh) * D;
    const size_t rs = (size_t)HN * D;   /* from one row to the next */
    if ((D & 7) == 0) {
#pragma unroll 2
        for (int e = threadIdx.x; e < TC_B * CH; e += blockDim.x) {
            int r = e / CH, c = e % CH;
            uint4 v = make_uint4(0u, 0u, 0u, 0u);
            if (r < n && c * 8 < D) v = *(const uint4 *)(row0 + r * rs + c * 8);
            *(uint4 *)(dst + r * P + c * 8) = v;
        }
        return;
    }
    for (int e = threadIdx.x; e < TC_B * Dp; e += blockDim.x) {
        int r = e / Dp, d = e % Dp;
        dst[r * P + d] = r < n && d < D ? row0[r * rs + d] : 0;
    }
}

/* out (16 × 64 f32, row stride 64) = A (16 × Dp rows of a tile) · Bᵀ (B: 64 × Dp tile),
 * Dp = 16·ND, tile rows tc_tp(Dp) apart. The warp. NB of the four 16-column blocks of out at
 * a time, each 16 columns of A loaded once for their NB products: 1.25 fragment loads a
 * product with all four, for four accumulators more (heads up to 64; past that the registers
 * are the accumulators', ptxas spills). (ND is a template argument throughout, so that the
 * loops over it unroll and the accumulator arrays stay in registers.) */
template <int ND, int NB = (ND <= 4 ? 4 : 1)>
static __device__ void tc_abt(float *out, const uint16_t *A, const uint16_t *Bt) {
    constexpr int P = tc_tp(ND * 16);
#pragma unroll
    for (int n0 = 0; n0 < TC_B / 16; n0 += NB) {
        tc_c c[NB];
#pragma unroll
        for (int n = 0; n < NB; n++) wmma::fill_fragment(c[n], 0.0f);
#pragma unroll
        for (int k = 0; k < ND; k++) {
            tc_a fa;
            wmma::load_matrix_sync(fa, bf(A + k * 16), P);
#pragma unroll
            for (int n = 0; n < NB; n++) {
                tc_bt fb;
                wmma::load_matrix_sync(fb, bf(Bt + (n0 + n) * 16 * P + k * 16), P);
                wmma::mma_sync(c[n], fa, fb, c[n]);
            }
        }
#pragma unroll
        for (int n = 0; n < NB; n++)
            wmma::store_matrix_sync(out + (n0 + n) * 16, c[n], TC_B, wmma::mem_row_major);
    }
}

/* acc[d] += P (16 × 64 bf16, row pitch TC_PP) · V (64 × Dp tile), d over ND columns. */
template <int ND> static __device__ void tc_pv(tc_c *acc, const uint16_t *P, const uint16_t *V) {
    constexpr int TP = tc_tp(ND * 16);
#pragma unroll
    for (int k = 0; k < TC_B / 16; k++) {
        tc_a fa;
        wmma::load_matrix_sync(fa, bf(P + k * 16), TC_PP);
#pragma unroll
        for (int d = 0; d < ND; d++) {
            tc_b fb;
            wmma::load_matrix_sync(fb, bf(V + k * 16 * TP + d * 16), TP);
            wmma::mma_sync(acc[d], fa, fb, acc[d]);
        }
    }
}

/* The warp's 16 rows of acc (16 × Dp) times s into rows row0 … of head hh of a (B,T,HN,D)
 * tensor (rows past T and columns past D left out), through stage (16 × 16 f32). */
template <int ND>
static __device__ void tc_store(float *dst, const tc_c *acc, float s, float *stage, int b,
                                int hh, int HN, int row0, const tc_args &a) {
    int lane = threadIdx.x & 31;
#pragma unroll
    for (int d = 0; d < ND; d++) {
        __syncwarp();   /* the previous columns are read */
        wmma::store_matrix_sync(stage, acc[d], 16, wmma::mem_row_major);
        __syncwarp();
        for (int e = lane; e < 256; e += 32) {
            int r = row0 + e / 16, c = d * 16 + e % 16;
            if (r < a.T && c < a.D) dst[(((size_t)b * a.T + r) * HN + hh) * a.D + c] = s * stage[e];
        }
    }
}

/* The soft-capped score of a raw product x, and t = tanh(x·scale / cap) for its gradient. */
static __device__ __forceinline__ float tc_score(float x, const tc_args &a, float *t) {
    x *= a.scale;
    *t = 0.0f;
    if (a.softcap > 0.0f) {
        *t = tanhf(x / a.softcap);
        x = a.softcap * *t;
    }
    return x;
}

static __device__ __forceinline__ bool tc_visible(const tc_args &a, int b, int i, int j) {
    return i < a.T && j < a.T && cu_att_visible(a.amask, a.causal, a.window, b, a.T, i, j);
}

/* Shared memory, in the order tc_carve lays it out: three 64 × Dp bf16 tiles (rows
 * tc_tp(Dp)), per warp 16 × 64 f32 scores and 16 × 64 bf16 P (rows TC_PP) — all the forward
 * uses (fwd) — then a fourth tile, per warp 16 × 64 f32 dP and bf16 dS, and 2 × 64 f32 (a
 * query tile's lse and D_i): the backward's. So the forward asks for less (52 KB at head size
 * 64: four blocks an SM). Every region is a multiple of 32 bytes (wmma's alignment). */
static size_t tc_smem(int Dp, int fwd) {
    size_t tile = (size_t)TC_B * tc_tp(Dp) * 2;
    size_t warps = (size_t)TC_WARPS * TC_R * (TC_B * 4 + TC_PP * 2);
    return fwd ? 3 * tile + warps : 4 * tile + 2 * warps + 2 * TC_B * 4;
}

struct tc_smem_at {
    uint16_t *t0, *t1, *t2, *t3;   /* the tiles */
    float *s, *g;                  /* this warp's scores and their gradient */
    uint16_t *p, *ds;              /* this warp's bf16 P and dS */
    float *lse, *di;               /* the block's: a query tile's lse and D_i (the backward) */
};

static __device__ tc_smem_at tc_carve(float *sh, int Dp) {
    tc_smem_at m;
    int w = threadIdx.x >> 5;
    size_t tile = (size_t)TC_B * tc_tp(Dp), wrow = (size_t)TC_R * TC_B, prow = TC_R * TC_PP;
    m.t0 = (uint16_t *)sh, m.t1 = m.t0 + tile, m.t2 = m.t1 + tile;
    float *f = (float *)(m.t2 + tile);
    m.s = f + w * wrow;
    uint16_t *h = (uint16_t *)(f + TC_WARPS * wrow);
    m.p = h + w * prow;
    m.t3 = h + TC_WARPS * prow;   /* the forward's end (tc_smem) */
    f = (float *)(m.t3 + tile);
    m.g = f + w * wrow;
    h = (uint16_t *)(f + TC_WARPS * wrow);
    m.ds = h + w * prow;
    m.lse = (float *)(h + TC_WARPS * prow);
    m.di = m.lse + TC_B;
    return m;
}

/* The block of 64 queries of one (batch, head) that a forward or dq block takes; the warp
 * and lane; row0, the warp's first query. */
struct tc_qblock { int b, h, kh, w, lane, i0, nq, row0; };
static __device__ __forceinline__ tc_qblock tc_qblock_of(const tc_args &a, int ntiles) {
    int tile = (int)(blockIdx.x % ntiles), z = (int)(blockIdx.x / ntiles);
    int w = threadIdx.x >> 5, i0 = tile * TC_B;
    return {z / a.H, z % a.H, z % a.H / a.rep, w, (int)(threadIdx.x & 31), i0,
            min((int)TC_B, a.T - i0), i0 + w * TC_R};
}

/* ---- forward ---------------------------------------------------------------------------- */

/* acc's row r times f[r], for the warp's 16 rows (through stage, 16 × 16 f32: a fragment's
 * elements cannot be addressed by row). Lane j takes elements j + 32k: row 2k + j/16. */
template <int ND>
static __device__ void tc_scale_rows(tc_c *acc, const float (&f)[TC_R], float *stage) {
    int lane = threadIdx.x & 31, hi = lane >> 4;
#pragma unroll
    for (int d = 0; d < ND; d++) {
        __syncwarp();   /* stage is free */
        wmma::store_matrix_sync(stage, acc[d], 16, wmma::mem_row_major);
        __syncwarp();
#pragma unroll
        for (int k = 0; k < 8; k++) stage[lane + 32 * k] *= hi ? f[2 * k + 1] : f[2 * k];
        __syncwarp();
        wmma::load_matrix_sync(acc[d], stage, 16, wmma::mem_row_major);
    }
    __syncwarp();
}

/* How far a tile's row max may pass the max the row's exponentials are taken against before
 * the output is rescaled: exp(x − mu) ≤ e^8 stays well inside f32 and bf16. */
#ifndef TC_SLACK   /* the emulated check builds with 0: a rescale whenever the max grows */
#define TC_SLACK 8.0f
#endif

template <int ND>
__global__ void __launch_bounds__(TC_WARPS * 32)
    tc_fwd_kernel(float *out, float *lse, tc_args a, int ntiles) {
    extern __shared__ __align__(128) float tc_sh[];   /* wmma wants 32-byte alignment */
    const int Dp = ND * 16;
    auto [b, h, kh, w, lane, i0, nq, row0] = tc_qblock_of(a, ntiles);
    int kb, ke;
    tc_smem_at sm = tc_carve(tc_sh, Dp);
    uint16_t *Q = sm.t0, *K = sm.t1, *V = sm.t2;
    tc_load<ND>(Q, a.q, b, h, a.H, i0, nq, a);
    cu_att_keys(a.causal, a.window, a.T, i0, i0 + nq, &kb, &ke);
    /* per row of the warp: mu, the max its exponentials are taken against (the same in every
       lane), and this lane's sum of them */
    float mu[TC_R], l[TC_R], f[TC_R];
#pragma unroll
    for (int r = 0; r < TC_R; r++) mu[r] = -INFINITY, l[r] = 0.0f;
    tc_c acc[ND];
#pragma unroll
    for (int d = 0; d < ND; d++) wmma::fill_fragment(acc[d], 0.0f);
    for (int j0 = kb; j0 < ke; j0 += TC_B) {
        int nk = min((int)TC_B, ke - j0);
        __syncthreads();   /* the previous tile is read */
        tc_load<ND>(K, a.k, b, kh, a.KVH, j0, nk, a);
        tc_load<ND>(V, a.v, b, kh, a.KVH, j0, nk, a);
        __syncthreads();
        tc_abt<ND>(sm.s, Q + w * TC_R * tc_tp(Dp), K);
        __syncwarp();
        /* row by row, lane j on columns j and j + 32 (conflict-free shared memory): the
           scores (−∞ where not visible) back in place, the tile's row max; a row whose max
           passes mu by more than TC_SLACK takes it as its new mu, its sum and output scaled
           by exp(old − new) */
        bool resc = false;
#pragma unroll
        for (int r = 0; r < TC_R; r++) {
            float tmax = -INFINITY;
#pragma unroll
            for (int half = 0; half < 2; half++) {
                int c = lane + 32 * half, e = r * TC_B + c;
                float t, x = -INFINITY;
                if (c < nk && tc_visible(a, b, row0 + r, j0 + c)) x = tc_score(sm.s[e], a, &t);
                sm.s[e] = x;
                tmax = max(tmax, x);
            }
            for (int o = 16; o > 0; o >>= 1)
                tmax = max(tmax, __shfl_xor_sync(0xffffffffu, tmax, o));
            f[r] = 1.0f;
            if (tmax > mu[r] + TC_SLACK) {   /* the same in every lane */
                f[r] = expf(mu[r] - tmax);   /* 0 from −∞: nothing summed yet */
                resc |= mu[r] != -INFINITY;
                l[r] *= f[r];
                mu[r] = tmax;
            }
        }
#pragma unroll
        for (int r = 0; r < TC_R; r++)
#pragma unroll
            for (int half = 0; half < 2; half++) {
                int e = r * TC_B + lane + 32 * half;
                float x = sm.s[e], p = x == -INFINITY ? 0.0f : expf(x - mu[r]);
                uint16_t ph = cu_bf16_from(p);
                l[r] += cu_bf16_to(ph);
                sm.p[r * TC_PP + lane + 32 * half] = ph;
            }
        if (resc) tc_scale_rows<ND>(acc, f, sm.s);   /* rare once the max has settled */
        __syncwarp();
        tc_pv<ND>(acc, sm.p, V);
    }
#pragma unroll
    for (int r = 0; r < TC_R; r++) {   /* the row's sum over its lanes; lse; 1/sum */
        for (int o = 16; o > 0; o >>= 1) l[r] += __shfl_xor_sync(0xffffffffu, l[r], o);
        if (lane == r && row0 + r < a.T)
            lse[((size_t)b * a.H + h) * a.T + row0 + r] =
                l[r] > 0.0f ? mu[r] + logf(l[r]) : INFINITY;
        f[r] = l[r] > 0.0f ? 1.0f / l[r] : 0.0f;
    }
    tc_scale_rows<ND>(acc, f, sm.s);
    tc_store<ND>(out, acc, 1.0f, sm.s, b, h, a.H, row0, a);
}

/* ---- backward ----------------------------------------------------------------------------- */

/* P and dS of one score s (raw product) with its dP, for query i (its lse and D_i), key j of
 * batch b */
static __device__ __forceinline__ void tc_grad(const tc_args &a, int b, int i, int j, float s,
                                               float dp, float lse, float di, float *p,
                                               float *g) {
    *p = 0.0f, *g = 0.0f;
    if (!tc_visible(a, b, i, j)) return;
    float t, x = tc_score(s, a, &t);
    *p = expf(x - lse);   /* lse = +∞: 0 */
    *g = *p * (dp - di);
    if (a.softcap > 0.0f) *g *= 1.0f - t * t;
}

/* query i's lse and D_i (0 past T) */
static __device__ __forceinline__ void tc_row(const tc_args &a, int b, int h, int i, float *lse,
                                              float *di) {
    *lse = i < a.T ? a.lse[((size_t)b * a.H + h) * a.T + i] : 0.0f;
    *di = i < a.T ? a.rowdot[((size_t)b * a.T + i) * a.H + h] : 0.0f;
}

template <int ND>
__global__ void __launch_bounds__(TC_WARPS * 32)
    tc_dq_kernel(float *dq, tc_args a, int ntiles) {
    extern __shared__ __align__(128) float tc_sh[];   /* wmma wants 32-byte alignment */
    const int Dp = ND * 16;
    auto [b, h, kh, w, lane, i0, nq, row0] = tc_qblock_of(a, ntiles);
    int kb, ke;
    tc_smem_at sm = tc_carve(tc_sh, Dp);
    uint16_t *Q = sm.t0, *K = sm.t1, *V = sm.t2, *G = sm.t3;
    tc_load<ND>(Q, a.q, b, h, a.H, i0, nq, a);
    tc_load<ND>(G, a.dout, b, h, a.H, i0, nq, a);
    cu_att_keys(a.causal, a.window, a.T, i0, i0 + nq, &kb, &ke);
    for (int c = threadIdx.x; c < TC_B; c += blockDim.x)   /* the block's rows' lse and D_i */
        tc_row(a, b, h, i0 + c, &sm.lse[c], &sm.di[c]);   /* (read after a __syncthreads) */
    tc_c acc[ND];
#pragma unroll
    for (int d = 0; d < ND; d++) wmma::fill_fragment(acc[d], 0.0f);
    for (int j0 = kb; j0 < ke; j0 += TC_B) {
        int nk = min((int)TC_B, ke - j0);
        __syncthreads();
        tc_load<ND>(K, a.k, b, kh, a.KVH, j0, nk, a);
        tc_load<ND>(V, a.v, b, kh, a.KVH, j0, nk, a);
        __syncthreads();
        tc_abt<ND>(sm.s, Q + w * TC_R * tc_tp(Dp), K);   /* S */
        tc_abt<ND>(sm.g, G + w * TC_R * tc_tp(Dp), V);   /* dP */
        __syncwarp();
#pragma unroll
        for (int r = 0; r < TC_R; r++)   /* as the forward: lane j on columns j, j + 32 */
#pragma unroll
            for (int half = 0; half < 2; half++) {
                int c = lane + 32 * half, e = r * TC_B + c;
                float p, g;
                tc_grad(a, b, row0 + r, c < nk ? j0 + c : a.T, sm.s[e], sm.g[e],
                        sm.lse[w * TC_R + r], sm.di[w * TC_R + r], &p, &g);
                sm.ds[r * TC_PP + c] = cu_bf16_from(g);
            }
        __syncwarp();
        tc_pv<ND>(acc, sm.ds, K);   /* dq += dS·K */
    }
    tc_store<ND>(dq, acc, a.scale, sm.s, b, h, a.H, row0, a);
}

/* W: 1 dk, 2 dv, 3 both (heads past 128 take two launches, so that one set of accumulators
 * fits the registers) */
template <int ND, int W>
__global__ void __launch_bounds__(TC_WARPS * 32)
    tc_dkv_kernel(float *dk, float *dv, tc_args a, int ntiles) {
    extern __shared__ __align__(128) float tc_sh[];   /* wmma wants 32-byte alignment */
    const int Dp = ND * 16;
    int tile = (int)(blockIdx.x % ntiles), z = (int)(blockIdx.x / ntiles);
    int b = z / a.KVH, kh = z % a.KVH;
    int w = threadIdx.x >> 5, lane = threadIdx.x & 31;
    int j0 = tile * TC_B, nk = min((int)TC_B, a.T - j0), row0 = j0 + w * TC_R;
    tc_smem_at sm = tc_carve(tc_sh, Dp);
    uint16_t *K = sm.t0, *V = sm.t1, *Q = sm.t2, *G = sm.t3;
    tc_load<ND>(K, a.k, b, kh, a.KVH, j0, nk, a);
    tc_load<ND>(V, a.v, b, kh, a.KVH, j0, nk, a);
    /* the queries that can see these keys: [qb, qe) */
    int qb = a.causal ? j0 : 0;
    int qe = a.window > 0 ? min(a.T, j0 + nk + a.window - 1) : a.T;
    const int NK = W & 1 ? ND : 1, NV = W & 2 ? ND : 1;
    tc_c dka[NK], dva[NV];
#pragma unroll
    for (int d = 0; d < NK; d++) wmma::fill_fragment(dka[d], 0.0f);
#pragma unroll
    for (int d = 0; d < NV; d++) wmma::fill_fragment(dva[d], 0.0f);
    for (int g = 0; g < a.rep; g++) {
        int h = kh * a.rep + g;
        for (int i0 = qb; i0 < qe; i0 += TC_B) {
            int nq = min((int)TC_B, qe - i0);
            __syncthreads();
            tc_load<ND>(Q, a.q, b, h, a.H, i0, nq, a);
            tc_load<ND>(G, a.dout, b, h, a.H, i0, nq, a);
            for (int c = threadIdx.x; c < TC_B; c += blockDim.x)   /* the tile's lse and D_i */
                tc_row(a, b, h, i0 + c, &sm.lse[c], &sm.di[c]);
            __syncthreads();
            tc_abt<ND>(sm.s, K + w * TC_R * tc_tp(Dp), Q);   /* Sᵀ: keys × queries */
            tc_abt<ND>(sm.g, V + w * TC_R * tc_tp(Dp), G);   /* dPᵀ */
            __syncwarp();
            /* rows are keys, columns queries: lane j on queries j and j + 32 */
            float ls[2] = {sm.lse[lane], sm.lse[lane + 32]};
            float dd[2] = {sm.di[lane], sm.di[lane + 32]};
#pragma unroll
            for (int r = 0; r < TC_R; r++)
#pragma unroll
                for (int half = 0; half < 2; half++) {
                    int c = lane + 32 * half, e = r * TC_B + c;
                    float p, gr;
                    tc_grad(a, b, c < nq ? i0 + c : a.T, row0 + r, sm.s[e], sm.g[e], ls[half],
                            dd[half], &p, &gr);
                    sm.p[r * TC_PP + c] = cu_bf16_from(p);
                    sm.ds[r * TC_PP + c] = cu_bf16_from(gr);
                }
            __syncwarp();
            if ((W & 2) && dv) tc_pv<ND>(dva, sm.p, G);    /* dv += Pᵀ·dout */
            if ((W & 1) && dk) tc_pv<ND>(dka, sm.ds, Q);   /* dk += dSᵀ·q */
        }
    }
    if ((W & 1) && dk) tc_store<ND>(dk, dka, a.scale, sm.s, b, kh, a.KVH, row0, a);
    if ((W & 2) && dv) tc_store<ND>(dv, dva, 1.0f, sm.s, b, kh, a.KVH, row0, a);
}

/* ---- launches ------------------------------------------------------------------------------ */

/* Dp / 16 for heads of D values: ⌈D/16⌉ up to 8, then 12 or 16 (fewer kernels to build; the
 * tiles are zero past D anyway) */
static int tc_nd(int D) {
    int n = (D + 15) / 16;
    return n <= 8 ? n : n <= 12 ? 12 : 16;
}

/* 1 when these kernels take heads of D values on this device (else cuda_attn_blk.cu's): the
 * backward's 86.5 KB of shared memory at 64, 118.5 KB at 128, 182.5 KB at 256 (an H100's
 * 227 KB, not an A100's 163) */
static int tc_fits(int D) {
    return D >= 1 && D <= TC_DMAX && tc_smem(tc_nd(D) * 16, 0) <= cu_smem_optin();
}

/* bf16 copies of n[0..cnt) values of src[…] in one block of pool scratch (freed by the
 * caller with cu_scratch_free(out[0])): each tile is then read as bf16, half the bytes, and
 * rounded once rather than once per block that reads it. 0, or -1 without scratch. */
static int tc_halves(const char *op, const float *const *src, const size_t *n, int cnt,
                     uint16_t **out) {
    size_t all = 0;
    for (int i = 0; i < cnt; i++) all += (n[i] + 63) & ~(size_t)63;   /* 128-byte starts */
    uint16_t *h = (uint16_t *)cu_scratch(op, all * sizeof(uint16_t));
    if (!h) return -1;
    for (int i = 0; i < cnt; i++) {
        out[i] = h;
        cu_bf16_round(h, src[i], n[i]);
        h += (n[i] + 63) & ~(size_t)63;
    }
    return 0;
}

static tc_args tc_make(const nn_attn_params *p, const int *amask, int T, int H, int KVH, int D) {
    tc_args a = {};
    a.amask = amask;
    a.scale = p->scale, a.softcap = p->softcap, a.causal = p->causal, a.window = p->window;
    a.T = T, a.H = H, a.KVH = KVH, a.D = D, a.Dp = tc_nd(D) * 16, a.rep = H / KVH;
    return a;
}

template <typename K> static size_t tc_prepare(K kernel, int Dp, int fwd) {
    size_t bytes = tc_smem(Dp, fwd);
    if (bytes > 48 * 1024)
        CU_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                      (int)bytes));
    return bytes;
}

template <int ND> static void fwd_launch(float *out, float *lse, const tc_args &a, int B) {
    int ntiles = (a.T + TC_B - 1) / TC_B;
    size_t smem = tc_prepare(tc_fwd_kernel<ND>, a.Dp, 1);
    tc_fwd_kernel<ND><<<(unsigned)((size_t)ntiles * B * a.H), TC_WARPS * 32, smem, cu_stream>>>(
        out, lse, a, ntiles);
    CU_LAUNCHED();
}

template <int ND, int W> static void dkv_launch(float *dk, float *dv, const tc_args &a, int B) {
    int ntiles = (a.T + TC_B - 1) / TC_B;
    size_t smem = tc_prepare(tc_dkv_kernel<ND, W>, a.Dp, 0);
    tc_dkv_kernel<ND, W><<<(unsigned)((size_t)ntiles * B * a.KVH), TC_WARPS * 32, smem,
                           cu_stream>>>(dk, dv, a, ntiles);
    CU_LAUNCHED();
}

template <int ND>
static void bwd_launch(float *dq, float *dk, float *dv, const tc_args &a, int B) {
    int ntiles = (a.T + TC_B - 1) / TC_B;
    if (dq) {
        size_t smem = tc_prepare(tc_dq_kernel<ND>, a.Dp, 0);
        tc_dq_kernel<ND><<<(unsigned)((size_t)ntiles * B * a.H), TC_WARPS * 32, smem,
                           cu_stream>>>(dq, a, ntiles);
        CU_LAUNCHED();
    }
    if constexpr (ND <= 8) {
        if (dk || dv) dkv_launch<ND, 3>(dk, dv, a, B);
    } else {
        if (dk) dkv_launch<ND, 1>(dk, NULL, a, B);
        if (dv) dkv_launch<ND, 2>(NULL, dv, a, B);
    }
}

/* ND = Dp / 16 (tc_nd) */
#define TC_DISPATCH(nd, CALL)                                                                \
    switch (nd) {                                                                            \
    CU_CASES_1_7(CALL)                                                                       \
    case 8: CALL(8); break;                                                                  \
    case 12: CALL(12); break;                                                                \
    default: CALL(16); break;                                                                \
    }

void cu_attention_tc_forward(float *out, float *lse, const float *q, const float *k,
                             const float *v, const int *amask, const nn_attn_params *p, int B,
                             int T, int H, int KVH, int D) {
    if (!tc_fits(D)) {
        cu_attention_blk_tc_forward(out, lse, q, k, v, amask, p, B, T, H, KVH, D);
        return;
    }
    if (B <= 0 || T <= 0 || H <= 0) return;
    if (p->dropout || KVH <= 0 || H % KVH != 0)
        cu_fatal("fused attention: dropout, or H not a multiple of KVH", __FILE__, __LINE__);
    size_t nq = (size_t)B * T * H * D, nk = (size_t)B * T * KVH * D;
    const float *src[] = {q, k, v};
    size_t n[] = {nq, nk, nk};
    uint16_t *h[3];
    if (tc_halves("attention_fused_forward", src, n, 3, h) < 0) return;
    tc_args a = tc_make(p, amask, T, H, KVH, D);
    a.q = h[0], a.k = h[1], a.v = h[2];
#define FWD(ND) fwd_launch<ND>(out, lse, a, B)
    TC_DISPATCH(a.Dp / 16, FWD)
#undef FWD
    cu_scratch_free(h[0]);
}

void cu_attention_tc_backward(float *dq, float *dk, float *dv, const float *dout,
                              const float *out, const float *lse, const float *q,
                              const float *k, const float *v, const int *amask,
                              const nn_attn_params *p, int B, int T, int H, int KVH, int D) {
    if (!tc_fits(D)) {
        cu_attention_blk_tc_backward(dq, dk, dv, dout, out, lse, q, k, v, amask, p, B, T, H,
                                     KVH, D);
        return;
    }
    if (B <= 0 || T <= 0 || H <= 0 || (!dq && !dk && !dv)) return;
    if (p->dropout || KVH <= 0 || H % KVH != 0)
        cu_fatal("fused attention: dropout, or H not a multiple of KVH", __FILE__, __LINE__);
    size_t rows = (size_t)B * T * H, nq = rows * D, nk = (size_t)B * T * KVH * D;
    const float *src[] = {q, k, v, dout};
    size_t n[] = {nq, nk, nk, nq};
    uint16_t *h[4];
    float *rowdot = (float *)cu_scratch("attention_fused_backward", rows * sizeof(float));
    if (!rowdot) return;
    if (tc_halves("attention_fused_backward", src, n, 4, h) < 0) {
        cu_scratch_free(rowdot);
        return;
    }
    cu_att_rowdot(rowdot, dout, out, D, rows, 1);
    tc_args a = tc_make(p, amask, T, H, KVH, D);
    a.q = h[0], a.k = h[1], a.v = h[2], a.dout = h[3], a.lse = lse, a.rowdot = rowdot;
#define BWD(ND) bwd_launch<ND>(dq, dk, dv, a, B)
    TC_DISPATCH(a.Dp / 16, BWD)
#undef BWD
    cu_scratch_free(h[0]);
    cu_scratch_free(rowdot);
}

int cu_attention_tc_dmax(void) {
    for (int d = TC_DMAX; d > 0; d -= 16)
        if (tc_fits(d)) return d;
    return 0;
}
