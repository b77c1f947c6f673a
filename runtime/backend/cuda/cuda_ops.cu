/* cuda_ops.cu — CUDA kernels for the row and elementwise ops: embeddings, dropout masks,
 * per-channel scale, RMSNorm / LayerNorm, rotary embeddings, activations, softmax,
 * cross-entropy, soft-cap, slices and elementwise arithmetic. See nn/ops.h for each op's
 * contract; the reference (nn/ops_ref.c) computes in double, these kernels in f32 with
 * tree reductions, well inside the op tests' 1e-5.
 *
 * Row ops (norms, softmax, cross-entropy) run one block per row and reduce with warp
 * shuffles; elementwise ops loop grid-stride. */
#include "backend/cuda/cuda_int.cuh"

#define ROW_THREADS 256

/* ---- embeddings -------------------------------------------------------------------------
 * ids live on the device; the validating ops copy them back (one synchronising copy of N
 * ints) so that a bad id is reported like the reference's, with the output untouched. */

int cu_check_ids(const int *ids, int N, int V) {
    int *h = (int *)lp_malloc((N ? N : 1) * sizeof(int));
    if (!h) return lp_seterr("out of memory");
    CU_CHECK(cudaMemcpyAsync(h, ids, (size_t)N * sizeof(int), cudaMemcpyDeviceToHost, cu_stream));
    cu_wait();
    int rc = 0;
    for (int n = 0; n < N && rc == 0; n++)
        if (h[n] < 0 || h[n] >= V)
            rc = lp_seterr("token id %d at position %d is outside the vocabulary [0, %d)", h[n],
                           n, V);
    lp_free(h);
    return rc;
}

__global__ void embed_kernel(float *out, const int *ids, const float *table, size_t n, int C,
                             int add) {
    CU_GRID_STRIDE(i, n) {
        size_t row = i / C, c = i % C;
        float x = table[(size_t)ids[row] * C + c];
        out[i] = add ? out[i] + x : x;
    }
}

void cu_embedding_rows(float *out, const int *ids, const float *table, int N, int C, int add) {
    size_t n = (size_t)N * C;
    if (n) {
        embed_kernel<<<cu_blocks(n), 256, 0, cu_stream>>>(out, ids, table, n, C, add);
        CU_LAUNCHED();
    }
}

static int embed(float *out, const int *ids, const float *table, int N, int V, int C, int add) {
    if (cu_check_ids(ids, N, V) < 0) return -1;
    cu_embedding_rows(out, ids, table, N, C, add);
    return 0;
}

int cu_embedding_forward(float *out, const int *ids, const float *table, int N, int V, int C) {
    return embed(out, ids, table, N, V, C, 0);
}

int cu_embedding_add_forward(float *out, const int *ids, const float *table, int N, int V,
                             int C) {
    return embed(out, ids, table, N, V, C, 1);
}

__global__ void embed_bwd_kernel(float *dtable, const float *dout, const int *ids, size_t n,
                                 int C) {
    CU_GRID_STRIDE(i, n) atomicAdd(dtable + (size_t)ids[i / C] * C + i % C, dout[i]);
}

void cu_embedding_backward(float *dtable, const float *dout, const int *ids, int N, int C) {
    size_t n = (size_t)N * C;
    if (!dtable || !n) return;
    embed_bwd_kernel<<<cu_blocks(n), 256, 0, cu_stream>>>(dtable, dout, ids, n, C);
    CU_LAUNCHED();
}

/* ---- dropout mask: the reference's counter-based generator, bit for bit ---------------- */

__device__ __forceinline__ uint64_t mix64(uint64_t z) {
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

__global__ void dropout_kernel(float *mask, uint64_t s, uint64_t offset, float p, float keep,
                               size_t n) {
    CU_GRID_STRIDE(i, n) {
        uint64_t c = offset + i;
        float u = (float)(mix64(s ^ (c * 0x9E3779B97F4A7C15ull)) >> 40) * (1.0f / 16777216.0f);
        mask[i] = u < p ? 0.0f : keep;
    }
}

void cu_dropout_mask(float *mask, uint64_t seed, uint64_t offset, float p, size_t n) {
    if (!n) return;
    // the seed's own mix (ops_ref.c counter_uniform), done once on the host
    uint64_t z = seed + 0x9E3779B97F4A7C15ull;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    z ^= z >> 31;
    float keep = 1.0f / (1.0f - p);
    dropout_kernel<<<cu_blocks(n), 256, 0, cu_stream>>>(mask, z, offset, p, keep, n);
    CU_LAUNCHED();
}

/* ---- per-channel scale ------------------------------------------------------------------- */

__global__ void chscale_kernel(float *out, const float *inp, const float *l, size_t n, int C,
                               int accumulate) {
    CU_GRID_STRIDE(i, n) {
        float y = inp[i] * l[i % C];
        out[i] = accumulate ? out[i] + y : y;
    }
}

void cu_channel_scale_forward(float *out, const float *inp, const float *l, int N, int C) {
    size_t n = (size_t)N * C;
    if (!n) return;
    chscale_kernel<<<cu_blocks(n), 256, 0, cu_stream>>>(out, inp, l, n, C, 0);
    CU_LAUNCHED();
}

void cu_channel_scale_backward(float *dinp, float *dl, const float *dout, const float *inp,
                               const float *l, int N, int C) {
    size_t n = (size_t)N * C;
    if (!n) return;
    if (dinp) {
        chscale_kernel<<<cu_blocks(n), 256, 0, cu_stream>>>(dinp, dout, l, n, C, 1);
        CU_LAUNCHED();
    }
    if (dl) cu_col_sum(dl, dout, inp, NULL, NULL, N, C);
}

/* ---- DoRA: row norms (a block a row, or a thread a column), sums in double as the reference */

__global__ void row_norm_kernel(float *norm, const float *w, int cols) {
    __shared__ double sh[32];
    const float *x = w + (size_t)blockIdx.x * cols;
    double ss = 0.0;
    for (int c = threadIdx.x; c < cols; c += blockDim.x) ss += (double)x[c] * x[c];
    ss = cu_block_sum(ss, sh);
    if (threadIdx.x == 0) norm[blockIdx.x] = (float)sqrt(ss);
}

__global__ void col_norm_kernel(float *norm, const float *w, int rows, int cols) {
    int c = blockIdx.x * blockDim.x + threadIdx.x;
    if (c >= cols) return;
    double ss = 0.0;
    for (int r = 0; r < rows; r++) {
        double x = w[(size_t)r * cols + c];
        ss += x * x;
    }
    norm[c] = (float)sqrt(ss);
}

void cu_row_norm(float *norm, const float *w, int rows, int cols, int trans) {
    if (rows <= 0 || cols <= 0) return;
    if (trans) col_norm_kernel<<<(cols + 255) / 256, 256, 0, cu_stream>>>(norm, w, rows, cols);
    else row_norm_kernel<<<rows, ROW_THREADS, 0, cu_stream>>>(norm, w, cols);
    CU_LAUNCHED();
}

__global__ void dora_g_kernel(float *g, const float *m, const float *norm, int OUT) {
    int j = blockIdx.x * blockDim.x + threadIdx.x;
    if (j >= OUT) return;
    float gj = m[j] / norm[j];
    g[j] = gj;
    g[OUT + j] = gj - 1.0f;
}

__global__ void dora_fwd_kernel(float *out, float *v, const float *g, const float *y,
                                const float *su, const float *bias, const float *norm, size_t n,
                                int OUT) {
    CU_GRID_STRIDE(i, n) {
        int j = (int)(i % OUT);
        float yy = y ? y[i] : out[i] - (bias ? bias[j] : 0.0f);
        v[i] = (yy + su[i]) / norm[j];
        out[i] += g[OUT + j] * yy + g[j] * su[i];
    }
}

void cu_dora_forward(float *out, float *v, float *g, const float *y, const float *su,
                     const float *bias, const float *m, const float *norm, int N, int OUT) {
    if (OUT <= 0) return;
    dora_g_kernel<<<(OUT + 255) / 256, 256, 0, cu_stream>>>(g, m, norm, OUT);
    CU_LAUNCHED();
    size_t n = (size_t)N * OUT;
    if (!n) return;
    dora_fwd_kernel<<<cu_blocks(n), 256, 0, cu_stream>>>(out, v, g, y, su, bias, norm, n, OUT);
    CU_LAUNCHED();
}

/* ---- normalisation: one block per row ----------------------------------------------------- */

__global__ void rmsnorm_fwd_kernel(float *out, float *rstd, const float *inp, const float *w,
                                   float eps, int add_one, int C) {
    __shared__ float sh[32];
    size_t row = blockIdx.x;
    const float *x = inp + row * C;
    float ss = 0.0f;
    for (int c = threadIdx.x; c < C; c += blockDim.x) ss += x[c] * x[c];
    ss = cu_block_sum(ss, sh);
    float r = (float)(1.0 / sqrt((double)ss / C + (double)eps));
    if (threadIdx.x == 0) rstd[row] = r;
    for (int c = threadIdx.x; c < C; c += blockDim.x) {
        float wc = add_one ? 1.0f + w[c] : w[c];
        out[row * C + c] = x[c] * r * wc;
    }
}

__global__ void rmsnorm_bwd_kernel(float *dinp, const float *dout, const float *rstd,
                                   const float *inp, const float *w, int add_one, int C) {
    __shared__ float sh[32];
    size_t row = blockIdx.x;
    const float *x = inp + row * C, *dy = dout + row * C;
    float r = rstd[row], dot = 0.0f;
    for (int c = threadIdx.x; c < C; c += blockDim.x)
        dot += dy[c] * (add_one ? 1.0f + w[c] : w[c]) * x[c];
    dot = cu_block_sum(dot, sh);
    float k = r * r * dot / C;
    for (int c = threadIdx.x; c < C; c += blockDim.x) {
        float wc = add_one ? 1.0f + w[c] : w[c];
        dinp[row * C + c] += r * (wc * dy[c] - x[c] * k);
    }
}

void cu_rmsnorm_forward(float *out, float *rstd, const float *inp, const float *weight, float eps,
                        int add_one, int N, int C) {
    if (N <= 0) return;
    rmsnorm_fwd_kernel<<<N, ROW_THREADS, 0, cu_stream>>>(out, rstd, inp, weight, eps, add_one, C);
    CU_LAUNCHED();
}

void cu_rmsnorm_backward(float *dinp, float *dweight, const float *dout, const float *rstd,
                         const float *inp, const float *weight, int add_one, int N, int C) {
    if (N <= 0) return;
    if (dinp) {
        rmsnorm_bwd_kernel<<<N, ROW_THREADS, 0, cu_stream>>>(dinp, dout, rstd, inp, weight,
                                                             add_one, C);
        CU_LAUNCHED();
    }
    if (dweight) cu_col_sum(dweight, dout, inp, NULL, rstd, N, C);   // Σ dy·x·r
}

__global__ void layernorm_fwd_kernel(float *out, float *mean, float *rstd, const float *inp,
                                     const float *w, const float *b, float eps, int C) {
    __shared__ float sh[32];
    size_t row = blockIdx.x;
    const float *x = inp + row * C;
    float s = 0.0f;
    for (int c = threadIdx.x; c < C; c += blockDim.x) s += x[c];
    float m = cu_block_sum(s, sh) / C;
    float v = 0.0f;
    for (int c = threadIdx.x; c < C; c += blockDim.x) v += (x[c] - m) * (x[c] - m);
    v = cu_block_sum(v, sh) / C;   // biased, as torch
    float r = (float)(1.0 / sqrt((double)v + (double)eps));
    if (threadIdx.x == 0) mean[row] = m, rstd[row] = r;
    for (int c = threadIdx.x; c < C; c += blockDim.x)
        out[row * C + c] = (x[c] - m) * r * w[c] + (b ? b[c] : 0.0f);
}

__global__ void layernorm_bwd_kernel(float *dinp, const float *dout, const float *mean,
                                     const float *rstd, const float *inp, const float *w, int C) {
    __shared__ float sh[32];
    size_t row = blockIdx.x;
    const float *x = inp + row * C, *dy = dout + row * C;
    float m = mean[row], r = rstd[row], gm = 0.0f, gxm = 0.0f;
    // g rounded on its own (no FMA into the sums), so that with C = 1 g − mean(g) is
    // exactly 0 as in the reference
    for (int c = threadIdx.x; c < C; c += blockDim.x) {
        float g = __fmul_rn(dy[c], w[c]);
        gm += g;
        gxm += g * (x[c] - m) * r;
    }
    gm = cu_block_sum(gm, sh) / C;
    gxm = cu_block_sum(gxm, sh) / C;
    for (int c = threadIdx.x; c < C; c += blockDim.x) {
        float xh = (x[c] - m) * r, g = __fmul_rn(dy[c], w[c]);
        dinp[row * C + c] += r * (g - gm - xh * gxm);
    }
}

void cu_layernorm_forward(float *out, float *mean, float *rstd, const float *inp,
                          const float *weight, const float *bias, float eps, int N, int C) {
    if (N <= 0) return;
    layernorm_fwd_kernel<<<N, ROW_THREADS, 0, cu_stream>>>(out, mean, rstd, inp, weight, bias,
                                                           eps, C);
    CU_LAUNCHED();
}

void cu_layernorm_backward(float *dinp, float *dweight, float *dbias, const float *dout,
                           const float *mean, const float *rstd, const float *inp,
                           const float *weight, int N, int C) {
    if (N <= 0) return;
    if (dinp) {
        layernorm_bwd_kernel<<<N, ROW_THREADS, 0, cu_stream>>>(dinp, dout, mean, rstd, inp,
                                                               weight, C);
        CU_LAUNCHED();
    }
    if (dweight) cu_col_sum(dweight, dout, inp, mean, rstd, N, C);   // Σ dy·x̂
    if (dbias) cu_col_sum(dbias, dout, NULL, NULL, NULL, N, C);
}

/* ---- rotary embeddings: one thread per (row, head, pair) ------------------------------------ */

__global__ void rope_kernel(float *out, const float *inp, const float *cs, const float *sn,
                            size_t n, int H, int half, int backward) {
    CU_GRID_STRIDE(t, n) {
        size_t nh = t / half, row = nh / H;
        int i = (int)(t % half);
        const float *x = inp + nh * 2 * half;
        float *y = out + nh * 2 * half;
        float c = cs[row * half + i], s = sn[row * half + i];
        float x1 = x[i], x2 = x[i + half];   // both read before writing: out may be inp
        if (!backward) {
            y[i] = x1 * c - x2 * s;
            y[i + half] = x2 * c + x1 * s;
        } else {   // the transpose of a rotation is the rotation by -θ (written, ops.h)
            y[i] = x1 * c + x2 * s;
            y[i + half] = x2 * c - x1 * s;
        }
    }
}

void cu_rope_forward(float *out, const float *inp, const float *cos, const float *sin, int N,
                     int H, int D) {
    size_t n = (size_t)N * H * (D / 2);
    if (!n) return;
    rope_kernel<<<cu_blocks(n), 256, 0, cu_stream>>>(out, inp, cos, sin, n, H, D / 2, 0);
    CU_LAUNCHED();
}

void cu_rope_backward(float *dinp, const float *dout, const float *cos, const float *sin, int N,
                      int H, int D) {
    size_t n = (size_t)N * H * (D / 2);
    if (!n) return;
    rope_kernel<<<cu_blocks(n), 256, 0, cu_stream>>>(dinp, dout, cos, sin, n, H, D / 2, 1);
    CU_LAUNCHED();
}

/* ---- activations --------------------------------------------------------------------------- */

#define GELU_K 0.7978845608028654f   /* sqrt(2/pi) */
#define GELU_C 0.044715f

__device__ __forceinline__ float act_f(nn_act act, float x) {
    switch (act) {
    case NN_ACT_SILU: return x / (1.0f + expf(-x));
    case NN_ACT_GELU: return 0.5f * x * (1.0f + erff(x * 0.70710678118654752f));
    case NN_ACT_GELU_TANH: return 0.5f * x * (1.0f + tanhf(GELU_K * (x + GELU_C * x * x * x)));
    case NN_ACT_TANH: return tanhf(x);
    case NN_ACT_RELU: return x > 0.0f ? x : 0.0f;
    }
    return 0.0f;
}

__device__ __forceinline__ float act_df(nn_act act, float x) {
    switch (act) {
    case NN_ACT_SILU: {
        float s = 1.0f / (1.0f + expf(-x));
        return s * (1.0f + x * (1.0f - s));
    }
    case NN_ACT_GELU:   // Φ(x) + x·φ(x)
        return 0.5f * (1.0f + erff(x * 0.70710678118654752f)) +
               x * expf(-0.5f * x * x) * 0.3989422804014327f;
    case NN_ACT_GELU_TANH: {
        float t = tanhf(GELU_K * (x + GELU_C * x * x * x));
        return 0.5f * (1.0f + t) + 0.5f * x * (1.0f - t * t) * GELU_K * (1.0f + 3.0f * GELU_C * x * x);
    }
    case NN_ACT_TANH: {
        float t = tanhf(x);
        return 1.0f - t * t;
    }
    case NN_ACT_RELU: return x > 0.0f ? 1.0f : 0.0f;
    }
    return 0.0f;
}

__global__ void act_fwd_kernel(float *out, const float *inp, nn_act act, size_t n) {
    CU_GRID_STRIDE(i, n) out[i] = act_f(act, inp[i]);
}

__global__ void act_bwd_kernel(float *dinp, const float *dout, const float *inp, nn_act act,
                               size_t n) {
    CU_GRID_STRIDE(i, n) dinp[i] += dout[i] * act_df(act, inp[i]);
}

/* hout (bf16_ops.gated_forward_rounded): out rounded to bf16 too */
__global__ void gated_fwd_kernel(float *out, uint16_t *hout, const float *gate, const float *up,
                                 nn_act act, size_t n) {
    CU_GRID_STRIDE(i, n) {
        out[i] = act_f(act, gate[i]) * up[i];
        if (hout) hout[i] = cu_bf16_from(out[i]);
    }
}

/* hg, hu (bf16_ops.gated_backward_rounded): the two gradients rounded to bf16 too */
__global__ void gated_bwd_kernel(float *dgate, float *dup, uint16_t *hg, uint16_t *hu,
                                 const float *dout, const float *gate, const float *up,
                                 nn_act act, size_t n) {
    CU_GRID_STRIDE(i, n) {
        float g = gate[i], d = dout[i];
        if (dgate) dgate[i] = d * up[i] * act_df(act, g);   // written (ops.h)
        if (dup) dup[i] = d * act_f(act, g);
        if (hg) hg[i] = cu_bf16_from(dgate[i]), hu[i] = cu_bf16_from(dup[i]);
    }
}

#define LAUNCH(kernel, n, ...) do { if (n) { \
    kernel<<<cu_blocks(n), 256, 0, cu_stream>>>(__VA_ARGS__); CU_LAUNCHED(); } } while (0)

void cu_act_forward(float *out, const float *inp, nn_act act, size_t n) {
    LAUNCH(act_fwd_kernel, n, out, inp, act, n);
}

void cu_act_backward(float *dinp, const float *dout, const float *inp, nn_act act, size_t n) {
    LAUNCH(act_bwd_kernel, n, dinp, dout, inp, act, n);
}

void cu_gated_forward(float *out, const float *gate, const float *up, nn_act act, size_t n) {
    LAUNCH(gated_fwd_kernel, n, out, NULL, gate, up, act, n);
}

void cu_bf16_gated_forward_rounded(float *out, uint16_t *hout, const float *gate,
                                   const float *up, nn_act act, size_t n) {
    LAUNCH(gated_fwd_kernel, n, out, hout, gate, up, act, n);
}

void cu_gated_backward(float *dgate, float *dup, const float *dout, const float *gate,
                       const float *up, nn_act act, size_t n) {
    if (dgate || dup) LAUNCH(gated_bwd_kernel, n, dgate, dup, NULL, NULL, dout, gate, up, act, n);
}

void cu_bf16_gated_backward_rounded(float *dgate, float *dup, uint16_t *hgate, uint16_t *hup,
                                    const float *dout, const float *gate, const float *up,
                                    nn_act act, size_t n) {
    LAUNCH(gated_bwd_kernel, n, dgate, dup, hgate, hup, dout, gate, up, act, n);
}

/* ---- softmax --------------------------------------------------------------------------------- */

__global__ void softmax_fwd_kernel(float *out, const float *inp, int C) {
    __shared__ float sh[32];
    size_t row = blockIdx.x;
    const float *x = inp + row * C;
    float mx = -INFINITY;
    for (int c = threadIdx.x; c < C; c += blockDim.x) mx = fmaxf(mx, x[c]);
    mx = cu_block_max(mx, sh);
    float s = 0.0f;
    for (int c = threadIdx.x; c < C; c += blockDim.x) s += expf(x[c] - mx);
    s = cu_block_sum(s, sh);
    float inv = 1.0f / s;
    for (int c = threadIdx.x; c < C; c += blockDim.x) out[row * C + c] = expf(x[c] - mx) * inv;
}

__global__ void softmax_bwd_kernel(float *dinp, const float *dout, const float *out, int C) {
    __shared__ float sh[32];
    size_t row = blockIdx.x;
    const float *dy = dout + row * C, *y = out + row * C;
    float dot = 0.0f;
    for (int c = threadIdx.x; c < C; c += blockDim.x) dot += dy[c] * y[c];
    dot = cu_block_sum(dot, sh);
    for (int c = threadIdx.x; c < C; c += blockDim.x) dinp[row * C + c] += y[c] * (dy[c] - dot);
}

void cu_softmax_forward(float *out, const float *inp, int N, int C) {
    if (N <= 0 || C <= 0) return;
    softmax_fwd_kernel<<<N, ROW_THREADS, 0, cu_stream>>>(out, inp, C);
    CU_LAUNCHED();
}

void cu_softmax_backward(float *dinp, const float *dout, const float *out, int N, int C) {
    if (N <= 0 || C <= 0) return;
    softmax_bwd_kernel<<<N, ROW_THREADS, 0, cu_stream>>>(dinp, dout, out, C);
    CU_LAUNCHED();
}

/* ---- cross-entropy ------------------------------------------------------------------------------
 * One block per row reads the logits once: each thread keeps a running (max, sum of exp)
 * pair, rescaling its sum when the max grows (online softmax), and the pairs are merged
 * across the block. Nothing of size N·V is written. The loss of each row goes to pool
 * scratch and is summed on the host in double with the count, which the caller needs
 * there anyway (the one synchronising point of a training step). */

#define CE_THREADS 512

__global__ void ce_fwd_kernel(float *lse, float *rowloss, const float *logits,
                              const int *targets, int V) {
    __shared__ float shm[32], shs[32];
    size_t row = blockIdx.x;
    const float *l = logits + row * V;
    float m = -INFINITY, s = 0.0f;
    for (int v = threadIdx.x; v < V; v += blockDim.x) cu_lse_add(m, s, l[v]);
    float z = cu_block_lse(m, s, shm, shs);
    if (threadIdx.x == 0) {
        lse[row] = z;
        int t = targets[row];
        rowloss[row] = t == -100 ? 0.0f : z - l[t];   // targets were validated
    }
}

int cu_cross_entropy_forward(float *loss, float *lse, int *count, const float *logits,
                             const int *targets, int N, int V) {
    int *tg = (int *)lp_malloc((N ? N : 1) * sizeof(int));
    float *rl = (float *)lp_malloc((N ? N : 1) * sizeof(float));
    if (!tg || !rl) {
        lp_free(tg), lp_free(rl);
        return lp_seterr("out of memory");
    }
    CU_CHECK(cudaMemcpyAsync(tg, targets, (size_t)N * sizeof(int), cudaMemcpyDeviceToHost,
                             cu_stream));
    cu_wait();
    int cnt = 0;
    for (int n = 0; n < N; n++) {
        if (tg[n] == -100) continue;
        if (tg[n] < 0 || tg[n] >= V) {
            lp_seterr("label %d at position %d is outside [0, %d) and is not -100", tg[n], n, V);
            lp_free(tg), lp_free(rl);
            return -1;
        }
        cnt++;
    }
    double total = 0;
    if (N > 0) {
        float *drl = (float *)cu_scratch("cross_entropy_forward", (size_t)N * sizeof(float));
        if (!drl) {   // lp_seterr says why; op_failed will say it again
            lp_free(tg), lp_free(rl);
            return -1;
        }
        ce_fwd_kernel<<<N, CE_THREADS, 0, cu_stream>>>(lse, drl, logits, targets, V);
        CU_LAUNCHED();
        CU_CHECK(cudaMemcpyAsync(rl, drl, (size_t)N * sizeof(float), cudaMemcpyDeviceToHost,
                                 cu_stream));
        cu_wait();
        cu_scratch_free(drl);
        for (int n = 0; n < N; n++)
            if (tg[n] != -100) total += rl[n];
    }
    *loss = cnt ? (float)(total / cnt) : 0.0f;
    *count = cnt;
    lp_free(tg), lp_free(rl);
    return 0;
}

void cu_cross_entropy_rows(float *rowloss, float *lse, const float *logits, const int *targets,
                           int N, int V) {
    if (N <= 0) return;
    ce_fwd_kernel<<<N, CE_THREADS, 0, cu_stream>>>(lse, rowloss, logits, targets, V);
    CU_LAUNCHED();
}

__global__ void ce_bwd_kernel(float *dlogits, float g, const float *lse, const float *logits,
                              const int *targets, int N, int V) {
    for (size_t row = blockIdx.y; row < (size_t)N; row += gridDim.y) {   // gridDim.y ≤ 65535
        int t = targets[row];   // written (ops.h): an ignored row gets zeros (g is 0 then)
        const float *l = logits + row * V;
        float *d = dlogits + row * V;
        float z = lse[row];
        for (int v = blockIdx.x * blockDim.x + threadIdx.x; v < V; v += gridDim.x * blockDim.x)
            d[v] = t == -100 ? 0.0f : g * (expf(l[v] - z) - (v == t ? 1.0f : 0.0f));
    }
}

void cu_cross_entropy_backward(float *dlogits, float dloss, const float *lse,
                               const float *logits, const int *targets, int count, int N, int V) {
    if (N <= 0 || V <= 0) return;
    float g = count ? (float)((double)dloss / count) : 0.0f;   // count 0: every row ignored
    int bx = (V + 256 * 4 - 1) / (256 * 4);
    dim3 grid(bx > 64 ? 64 : bx, N > 65535 ? 65535 : N);
    ce_bwd_kernel<<<grid, 256, 0, cu_stream>>>(dlogits, g, lse, logits, targets, N, V);
    CU_LAUNCHED();
}

/* ---- soft-cap, slices, elementwise ------------------------------------------------------------ */

__global__ void softcap_fwd_kernel(float *out, const float *inp, float cap, size_t n) {
    CU_GRID_STRIDE(i, n) out[i] = cap * tanhf(inp[i] / cap);
}

__global__ void softcap_bwd_kernel(float *dinp, const float *dout, const float *out, float cap,
                                   size_t n) {
    CU_GRID_STRIDE(i, n) {
        float t = out[i] / cap;
        dinp[i] += dout[i] * (1.0f - t * t);
    }
}

void cu_softcap_forward(float *out, const float *inp, float cap, size_t n) {
    LAUNCH(softcap_fwd_kernel, n, out, inp, cap, n);
}

void cu_softcap_backward(float *dinp, const float *dout, const float *out, float cap, size_t n) {
    LAUNCH(softcap_bwd_kernel, n, dinp, dout, out, cap, n);
}

__global__ void slice_kernel(float *out, const float *inp, size_t n, int CI, int off, int W,
                             int backward) {
    CU_GRID_STRIDE(i, n) {
        size_t row = i / W, c = i % W, j = row * CI + off + c;
        if (!backward) out[i] = inp[j];
        else out[j] += inp[i];   // out is dinp (N,CI), inp is dout (N,W)
    }
}

void cu_slice_forward(float *out, const float *inp, int N, int CI, int off, int W) {
    size_t n = (size_t)N * W;
    LAUNCH(slice_kernel, n, out, inp, n, CI, off, W, 0);
}

void cu_slice_backward(float *dinp, const float *dout, int N, int CI, int off, int W) {
    size_t n = (size_t)N * W;
    LAUNCH(slice_kernel, n, dinp, dout, n, CI, off, W, 1);
}

__global__ void add_kernel(float *out, const float *a, const float *b, size_t n) {
    CU_GRID_STRIDE(i, n) out[i] = a[i] + b[i];
}

__global__ void add_bwd_kernel(float *da, float *db, const float *dout, size_t n) {
    CU_GRID_STRIDE(i, n) {
        float g = dout[i];
        if (da) da[i] += g;
        if (db) db[i] += g;
    }
}

__global__ void mulf_kernel(float *out, const float *a, const float *b, size_t n) {
    CU_GRID_STRIDE(i, n) out[i] = a[i] * b[i];
}

__global__ void mul_bwd_kernel(float *da, float *db, const float *dout, const float *a,
                               const float *b, size_t n) {
    CU_GRID_STRIDE(i, n) {
        float g = dout[i];
        if (da) da[i] += g * b[i];
        if (db) db[i] += g * a[i];
    }
}

__global__ void scale_kernel(float *out, const float *inp, float s, size_t n, int accumulate) {
    CU_GRID_STRIDE(i, n) out[i] = accumulate ? out[i] + s * inp[i] : s * inp[i];
}

void cu_add_forward(float *out, const float *a, const float *b, size_t n) {
    LAUNCH(add_kernel, n, out, a, b, n);
}

void cu_add_backward(float *da, float *db, const float *dout, size_t n) {
    if (da || db) LAUNCH(add_bwd_kernel, n, da, db, dout, n);
}

void cu_mul_forward(float *out, const float *a, const float *b, size_t n) {
    LAUNCH(mulf_kernel, n, out, a, b, n);
}

void cu_mul_backward(float *da, float *db, const float *dout, const float *a, const float *b,
                     size_t n) {
    if (da || db) LAUNCH(mul_bwd_kernel, n, da, db, dout, a, b, n);
}

void cu_scale_forward(float *out, const float *inp, float s, size_t n) {
    LAUNCH(scale_kernel, n, out, inp, s, n, 0);
}

void cu_scale_backward(float *dinp, const float *dout, float s, size_t n) {
    if (dinp) LAUNCH(scale_kernel, n, dinp, dout, s, n, 1);
}

/* ---- 4-bit → f32 (nn_q4_dequant): one thread per value ---------------------------------- */

struct q4_codes { float v[16]; };

__global__ void q4_dequant_kernel(float *out, const uint8_t *codes, const float *absmax,
                                  size_t n, int blocksize, q4_codes code) {
    CU_GRID_STRIDE(i, n) {
        uint8_t c = codes[i / 2];
        out[i] = code.v[i % 2 ? c & 15 : c >> 4] * absmax[i / (size_t)blocksize];
    }
}

__global__ void q8_dequant_kernel(float *out, const int8_t *codes, const float *absmax, size_t n,
                                  int blocksize) {   /* (float)code · (scale · (1/127)) */
    CU_GRID_STRIDE(i, n) out[i] = (float)codes[i] * __fmul_rn(absmax[i / (size_t)blocksize], 1.0f / 127.0f);
}

void cu_q4_dequant(float *out, const uint8_t *codes, const float *absmax, size_t n,
                   int blocksize, int type) {
    if (type == 3) {   /* NN_Q8 */
        LAUNCH(q8_dequant_kernel, n, out, (const int8_t *)codes, absmax, n, blocksize);
        return;
    }
    static const q4_codes nf4 = {{   /* nn_nf4_code */
        -1.0f, -0.6961928009986877f, -0.5250730514526367f, -0.39491748809814453f,
        -0.28444138169288635f, -0.18477343022823334f, -0.09105003625154495f, 0.0f,
        0.07958029955625534f, 0.16093020141124725f, 0.24611230194568634f, 0.33791524171829224f,
        0.44070982933044434f, 0.5626170039176941f, 0.7229568362236023f, 1.0f}};
    static const q4_codes fp4 = {{   /* nn_fp4_code */
        0.0f, 0.0052083334885537624f, 0.6666666865348816f, 1.0f, 0.3333333432674408f, 0.5f,
        0.1666666716337204f, 0.25f, 0.0f, -0.0052083334885537624f, -0.6666666865348816f,
        -1.0f, -0.3333333432674408f, -0.5f, -0.1666666716337204f, -0.25f}};
    q4_codes code = type == 2 ? fp4 : nf4;   /* NN_Q4_FP4 */
    LAUNCH(q4_dequant_kernel, n, out, codes, absmax, n, blocksize, code);
}

/* Double quantization's absmax (nn_dq_dequant): the product rounded before the offset is
 * added (no fused multiply-add), as bitsandbytes' two steps. */
__global__ void dq_dequant_kernel(float *absmax, const uint8_t *q, const float *absmax2,
                                  const float *code, float offset, size_t nb) {
    CU_GRID_STRIDE(i, nb) absmax[i] = __fadd_rn(__fmul_rn(code[q[i]], absmax2[i / 256]), offset);
}

void cu_dq_dequant(float *absmax, const uint8_t *q, const float *absmax2, const float *code,
                   float offset, size_t nb) {
    LAUNCH(dq_dequant_kernel, nb, absmax, q, absmax2, code, offset, nb);
}

/* ---- LLM.int8's product (nn_q8_linear_forward) ---------------------------------------------
 * work: the input's codes as f32 (N,IN), each row's absmax (N), the outlier flags (IN), then
 * the outlier columns' indices and count, the weight's codes as f32 (OUT,IN), and the sums
 * (N,OUT). The sums are SGEMMs over 1024 input features at a time (products of int8 values:
 * each partial exact in f32), added in f32: exact below 2^24, as bitsandbytes' CPU kernel. */

__device__ __forceinline__ float q8_half(float x) {   /* nn_half_round */
    unsigned u = __float_as_uint(x), s = u & 0x80000000u;
    u &= 0x7fffffffu;
    if (u >= 0x7f800000u) return x;
    if (u < 0x38800000u) {
        float r = rintf(fabsf(x) * 16777216.0f) / 16777216.0f;
        return s ? -r : r;
    }
    u = (u + 0x0fffu + ((u >> 13) & 1u)) & ~0x1fffu;
    if (u >= 0x47800000u) u = 0x7f800000u;
    return __uint_as_float(u | s);
}

__global__ void q8_cols_kernel(float *ocol, const float *inp, int N, int IN, float threshold) {
    int c = blockIdx.x * blockDim.x + threadIdx.x;
    if (c >= IN) return;
    float f = 0.0f;
    for (int n = 0; threshold > 0.0f && n < N && f == 0.0f; n++)
        if (fabsf(q8_half(inp[(size_t)n * IN + c])) >= threshold) f = 1.0f;
    ocol[c] = f;
}

__global__ void q8_list_kernel(int *list, const float *ocol, int IN) {   /* one thread */
    int k = 0;
    for (int c = 0; c < IN; c++)
        if (ocol[c] != 0.0f) list[1 + k++] = c;
    list[0] = k;
}

__global__ void q8_rows_kernel(float *ca, float *rs, const float *inp, const float *ocol, int N,
                               int IN, float threshold) {
    __shared__ float sh[32];
    int n = blockIdx.x;
    const float *x = inp + (size_t)n * IN;
    float m = 0.0f;
    for (int c = threadIdx.x; c < IN; c += blockDim.x) {
        float h = fabsf(q8_half(x[c]));
        if (!(threshold > 0.0f && h >= threshold)) m = fmaxf(m, h);
    }
    m = cu_block_max(m, sh);
    if (threadIdx.x == 0) rs[n] = m;
    float k = (1.0f / m) * 127.0f;   /* torch's 127.0 / absmax (nn/ops_quant.c) */
    for (int c = threadIdx.x; c < IN; c += blockDim.x) {
        float h = q8_half(x[c]);
        int outlier = threshold > 0.0f && fabsf(h) >= threshold;
        float q = m > 0.0f && !outlier ? rintf(h * k) : 0.0f;
        if (!(fabsf(q) <= 127.0f)) q = 0.0f;
        ca[(size_t)n * IN + c] = N > 1 && ocol[c] != 0.0f ? 0.0f : q;
    }
}

__global__ void q8_widen_kernel(float *out, const int8_t *cb, size_t n) {
    CU_GRID_STRIDE(i, n) out[i] = (float)cb[i];
}

__global__ void q8_out_kernel(float *out, const float *acc, const float *rs, const float *scb,
                              const float *bias, const float *inp, const int8_t *cb,
                              const int *list, int N, int IN, int OUT) {
    size_t n_all = (size_t)N * OUT;
    CU_GRID_STRIDE(i, n_all) {
        int n = (int)(i / OUT), o = (int)(i % OUT);
        float v = acc[i] * (rs[n] * scb[o]) * 6.200124e-05f;
        if (bias) v += bias[o];
        float sub = 0.0f;
        for (int j = 0; j < list[0]; j++) {
            int c = list[1 + j];
            sub += inp[(size_t)n * IN + c] *
                   ((float)cb[(size_t)o * IN + c] * scb[o] * 7.874015718698502e-3f);
        }
        out[i] = v + sub;
    }
}

void cu_q8_linear_forward(float *out, const float *inp, const int8_t *cb, const float *scb,
                          const float *bias, int N, int IN, int OUT, float threshold,
                          float *work) {
    if (N <= 0 || OUT <= 0) return;
    float *ca = work, *rs = ca + (size_t)N * IN, *ocol = rs + N;
    float *cbf = ocol + IN, *acc = cbf + (size_t)OUT * IN;
    int *list;
    q8_cols_kernel<<<(IN + 255) / 256, 256, 0, cu_stream>>>(ocol, inp, N, IN, threshold);
    CU_LAUNCHED();
    q8_rows_kernel<<<N, ROW_THREADS, 0, cu_stream>>>(ca, rs, inp, ocol, N, IN, threshold);
    CU_LAUNCHED();
    LAUNCH(q8_widen_kernel, (size_t)OUT * IN, cbf, cb, (size_t)OUT * IN);
    for (int c0 = 0; c0 < IN; c0 += 1024) {
        int k = IN - c0 < 1024 ? IN - c0 : 1024;
        cu_gemm(0, 1, N, OUT, k, 1.0f, ca + c0, IN, cbf + c0, IN, c0 ? 1.0f : 0.0f, acc, OUT);
    }
    /* the weight's f32 copy is no longer needed: the outlier list goes there */
    list = (int *)cbf;
    q8_list_kernel<<<1, 1, 0, cu_stream>>>(list, ocol, IN);
    CU_LAUNCHED();
    LAUNCH(q8_out_kernel, (size_t)N * OUT, out, acc, rs, scb, bias, inp, cb, list, N, IN, OUT);
}
