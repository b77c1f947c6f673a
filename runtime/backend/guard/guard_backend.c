/* guard_backend.c — be_guard(): be_cpu() behind memory the host cannot touch (see the header).
 *
 * Device memory is one reserved range (mmap PROT_NONE, MAP_NORESERVE); allocations are
 * page-aligned blocks in it, kept in a list sorted by address (first fit). Around every
 * backend call the used part of the range is made readable and writable with one mprotect
 * and protected again after, so the cost is two system calls per op whatever the number of
 * allocations. Freed blocks are madvise'd away (their pages read as zeros when reused). */
#define _GNU_SOURCE
#include "backend/guard/guard_backend.h"

#include <execinfo.h>
#include <limits.h>
#include <math.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "nn/ops_bf16.h"
#include "util/err.h"
#include "util/mem.h"

typedef struct gblk {
    char *p;
    size_t bytes, size;   /* asked, reserved (whole pages) */
    struct gblk *next;    /* by address */
} gblk;

static struct {
    char *base;           /* the reserved range */
    size_t cap;           /* its size */
    size_t top;           /* end of the highest block ever used: what open/close protect */
    size_t in_use;
    size_t limit;         /* be_guard_set_limit: allocations past it fail (0: the whole range) */
    size_t page;
    gblk *blocks;
    int depth;            /* > 0 while a backend function runs */
    int fail_scratch;     /* be_guard_fail_scratch: the n-th op needing scratch fails (0: off) */
    int op_failed;        /* an op had no scratch since g_op_failed last asked */
    char op_err[LP_ERR_MAX];
    const be_backend *in; /* be_cpu() */
    struct sigaction old_segv;
} G;
static pthread_mutex_t g_lock = PTHREAD_MUTEX_INITIALIZER;

static void die(const char *fmt, const char *fn, const char *what, const void *p) {
    fprintf(stderr, "guard device: ");
    fprintf(stderr, fmt, fn, what, p);
    fprintf(stderr, "\n");
    void *bt[32];
    int n = backtrace(bt, 32);
    backtrace_symbols_fd(bt, n, 2);
    abort();
}

static gblk *find(const void *p) {   /* the block holding p (its end counts), or NULL */
    const char *c = p;
    for (gblk *b = G.blocks; b; b = b->next)
        if (c >= b->p && c <= b->p + b->bytes) return b;
    return NULL;
}

/* An op's pointer argument must be device memory (NULL allowed: optional outputs). */
static void dev(const void *p, const char *fn, const char *what) {
    if (p && !find(p)) die("%s: `%s` = %p is not device memory", fn, what, p);
}
#define D(x) dev((x), __func__, #x)

static void open_(void) {
    if (G.depth++ == 0 && G.top && mprotect(G.base, G.top, PROT_READ | PROT_WRITE) != 0)
        die("%s%s: mprotect failed (%p)", "open", "", G.base);
}
static void close_(void) {
    if (--G.depth == 0 && G.top && mprotect(G.base, G.top, PROT_NONE) != 0)
        die("%s%s: mprotect failed (%p)", "close", "", G.base);
}

/* SIGSEGV inside the range: host code touched device memory. Say where, then die of the
 * signal (the default action, re-raised by returning). Other faults go to the old handler. */
static void on_segv(int sig, siginfo_t *si, void *ctx) {
    char *a = si->si_addr;
    if (G.base && a >= G.base && a < G.base + G.cap) {
        char msg[256];
        gblk *b = find(a);
        int n = b ? snprintf(msg, sizeof msg,
                             "guard device: host code touched device memory at %p "
                             "(offset %zu of a %zu-byte allocation at %p)\n",
                             (void *)a, (size_t)(a - b->p), b->bytes, (void *)b->p)
                  : snprintf(msg, sizeof msg,
                             "guard device: host code touched freed or unallocated device "
                             "memory at %p\n", (void *)a);
        if (write(2, msg, (size_t)n) < 0) {}
        void *bt[48];
        int k = backtrace(bt, 48);
        backtrace_symbols_fd(bt, k, 2);
        signal(SIGSEGV, SIG_DFL);
        return;
    }
    if (G.old_segv.sa_flags & SA_SIGINFO) {
        if (G.old_segv.sa_sigaction) G.old_segv.sa_sigaction(sig, si, ctx);
        return;
    }
    if (G.old_segv.sa_handler == SIG_IGN) return;
    if (G.old_segv.sa_handler != SIG_DFL) {
        G.old_segv.sa_handler(sig);
        return;
    }
    signal(SIGSEGV, SIG_DFL);
}

/* ---- memory --------------------------------------------------------------------------- */

static void *g_alloc(size_t bytes) {
    size_t need = ((bytes ? bytes : 1) + G.page - 1) / G.page * G.page;
    gblk *nb = lp_malloc(sizeof *nb);   // the record first: lp_mem_fail_after reaches device allocations
    if (!nb || need > G.cap) {
        lp_free(nb);
        return lp_seterr("out of GPU memory allocating %zu bytes; try a smaller batch or "
                         "sequence", bytes), NULL;
    }
    pthread_mutex_lock(&g_lock);
    size_t at = 0;
    gblk **pp = &G.blocks;
    for (; *pp; pp = &(*pp)->next) {
        if ((size_t)((*pp)->p - G.base) - at >= need) break;
        at = (size_t)((*pp)->p - G.base) + (*pp)->size;
    }
    if ((!*pp && G.cap - at < need) || (G.limit && G.in_use + need > G.limit)) {
        pthread_mutex_unlock(&g_lock);
        lp_free(nb);
        return lp_seterr("out of GPU memory allocating %zu bytes (guard device: %zu of %zu "
                         "bytes in use); try a smaller batch or sequence",
                         bytes, G.in_use, G.limit ? G.limit : G.cap), NULL;
    }
    nb->p = G.base + at;
    nb->bytes = bytes;
    nb->size = need;
    nb->next = *pp;
    *pp = nb;
    G.in_use += need;
    if (at + need > G.top) G.top = at + need;
    if (G.depth > 0) mprotect(nb->p, need, PROT_READ | PROT_WRITE);
    pthread_mutex_unlock(&g_lock);
    return nb->p;
}

static void g_free(void *p) {
    if (!p) return;
    pthread_mutex_lock(&g_lock);
    gblk **pp = &G.blocks;
    while (*pp && (*pp)->p != (char *)p) pp = &(*pp)->next;
    if (!*pp) die("%s: %s%p is not the start of a device allocation", "free", "", p);
    gblk *b = *pp;
    *pp = b->next;
    G.in_use -= b->size;
    madvise(b->p, b->size, MADV_DONTNEED);   // back to zero pages, no memory held
    pthread_mutex_unlock(&g_lock);
    lp_free(b);
}

static void g_to_device(void *dst, const void *src, size_t bytes) {
    D(dst);
    if (bytes && find(src)) die("%s: `%s` = %p is device memory (use copy)", __func__, "src", src);
    open_();
    G.in->to_device(dst, src, bytes);
    close_();
}
static void g_to_host(void *dst, const void *src, size_t bytes) {
    D(src);
    if (bytes && find(dst)) die("%s: `%s` = %p is device memory (use copy)", __func__, "dst", dst);
    open_();
    G.in->to_host(dst, src, bytes);
    close_();
}
static void g_copy(void *dst, const void *src, size_t bytes) {
    D(dst);
    D(src);
    open_();
    G.in->copy(dst, src, bytes);
    close_();
}
static void g_zero(void *p, size_t bytes) {
    D(p);
    open_();
    G.in->zero(p, bytes);
    close_();
}
static void g_sync(void) { G.in->sync(); }

/* ---- op scratch: what the CUDA backend's ops take from its pool (cuda_int.cuh) -----------
 * An op that needs temporary device memory on CUDA asks here first, with about the bytes the
 * CUDA op takes. It cannot have them past the limit (be_guard_set_limit) or at the n-th request
 * (be_guard_fail_scratch); then it does nothing, as the CUDA op, and the first failure is kept
 * for op_failed. No memory is taken: the CPU's ops need none. */

static void fmt_size(char *buf, size_t cap, size_t bytes) {
    if (bytes < 1000) snprintf(buf, cap, "%zu bytes", bytes);
    else if (bytes < 100000) snprintf(buf, cap, "%.1f KB", (double)bytes / 1e3);
    else snprintf(buf, cap, "%.1f MB", (double)bytes / 1e6);
}

static int no_scratch(const char *op, size_t bytes) {
    size_t cap = G.limit ? G.limit : G.cap, fr = G.in_use < cap ? cap - G.in_use : 0;
    int fail = bytes > fr;
    if (G.fail_scratch > 0 && --G.fail_scratch == 0) fail = 1;
    if (!fail) return 0;
    char need[32], have[32];
    fmt_size(need, sizeof need, bytes);
    fmt_size(have, sizeof have, fr);
    lp_seterr("%s: out of GPU memory for %s of scratch (%s free); try a smaller batch or "
              "sequence length", op, need, have);
    if (!G.op_failed) {
        snprintf(G.op_err, sizeof G.op_err, "%s", lp_geterr());
        G.op_failed = 1;
    }
    return 1;
}

static int g_op_failed(void) {
    if (!G.op_failed) return 0;
    G.op_failed = 0;
    lp_seterr("%s", G.op_err);
    return 1;
}

/* ---- ops: check the device pointers, open, call be_cpu()'s op, close ------------------- */

#define CALL(op, ...) do { open_(); G.in->op(__VA_ARGS__); close_(); } while (0)
#define CALLR(r, op, ...) do { open_(); r = G.in->op(__VA_ARGS__); close_(); } while (0)

static void g_matmul(float *c, const float *a, const float *b, int M, int N, int K, int ta,
                     int tb, float alpha, float beta) {
    D(c); D(a); D(b);
    CALL(matmul, c, a, b, M, N, K, ta, tb, alpha, beta);
}
static int g_embedding_forward(float *out, const int *ids, const float *table, int N, int V,
                               int C) {
    int r;
    D(out); D(ids); D(table);
    CALLR(r, embedding_forward, out, ids, table, N, V, C);
    return r;
}
static int g_embedding_add_forward(float *out, const int *ids, const float *table, int N,
                                   int V, int C) {
    int r;
    D(out); D(ids); D(table);
    CALLR(r, embedding_add_forward, out, ids, table, N, V, C);
    return r;
}
/* the CUDA backend's unchecked rows (ids the caller checked), so that the model's path here is
 * the GPU's; a negative id still stops the host op (no V to check the other end against) */
static void g_embedding_rows(float *out, const int *ids, const float *table, int N, int C,
                             int add) {
    D(out); D(ids); D(table);
    open_();
    if ((add ? G.in->embedding_add_forward : G.in->embedding_forward)(out, ids, table, N, INT_MAX,
                                                                      C) < 0)
        die("%s: %s (the caller checks the ids)%p", "embedding_rows", lp_geterr(), NULL);
    close_();
}
static void g_embedding_backward(float *dtable, const float *dout, const int *ids, int N, int C) {
    D(dtable); D(dout); D(ids);
    CALL(embedding_backward, dtable, dout, ids, N, C);
}
static void g_linear_forward(float *out, const float *inp, const float *w, const float *b,
                             int N, int IN, int OUT) {
    D(out); D(inp); D(w); D(b);
    CALL(linear_forward, out, inp, w, b, N, IN, OUT);
}
static void g_linear_backward(float *dinp, float *dw, float *db, const float *dout,
                              const float *inp, const float *w, int N, int IN, int OUT) {
    D(dinp); D(dw); D(db); D(dout); D(inp); D(w);
    CALL(linear_backward, dinp, dw, db, dout, inp, w, N, IN, OUT);
}
static void g_conv1d_forward(float *out, const float *inp, const float *w, const float *b,
                             int N, int IN, int OUT) {
    D(out); D(inp); D(w); D(b);
    CALL(conv1d_forward, out, inp, w, b, N, IN, OUT);
}
static void g_conv1d_backward(float *dinp, float *dw, float *db, const float *dout,
                              const float *inp, const float *w, int N, int IN, int OUT) {
    D(dinp); D(dw); D(db); D(dout); D(inp); D(w);
    CALL(conv1d_backward, dinp, dw, db, dout, inp, w, N, IN, OUT);
}
static void g_lora_forward(float *out, float *h, const float *inp, const float *mask,
                           const float *A, const float *B, float scale, int N, int IN, int OUT,
                           int R) {
    D(out); D(h); D(inp); D(mask); D(A); D(B);
    if (mask && no_scratch("lora_forward", sizeof(float) * (size_t)N * IN)) return;
    CALL(lora_forward, out, h, inp, mask, A, B, scale, N, IN, OUT, R);
}
static void g_lora_backward(float *dinp, float *dA, float *dB, float *dh, const float *dout,
                            const float *h, const float *inp, const float *mask, const float *A,
                            const float *B, float scale, int N, int IN, int OUT, int R) {
    D(dinp); D(dA); D(dB); D(dh); D(dout); D(h); D(inp); D(mask); D(A); D(B);
    if (mask && (dA || dinp) && no_scratch("lora_backward", sizeof(float) * (size_t)N * IN))
        return;
    CALL(lora_backward, dinp, dA, dB, dh, dout, h, inp, mask, A, B, scale, N, IN, OUT, R);
}
static void g_lora_forward_first(float *out, float *h, const float *inp, const float *mask,
                                 const float *A, const float *B, float scale, int N, int IN,
                                 int OUT, int R) {
    D(out); D(h); D(inp); D(mask); D(A); D(B);
    if (mask && no_scratch("lora_forward", sizeof(float) * (size_t)N * IN)) return;
    open_();
    memset(out, 0, sizeof(float) * (size_t)N * OUT);   /* written: 0 + the adapter's term */
    close_();
    CALL(lora_forward, out, h, inp, mask, A, B, scale, N, IN, OUT, R);
}
static void g_lora_backward_first(float *dinp, float *dA, float *dB, float *dh,
                                  const float *dout, const float *h, const float *inp,
                                  const float *mask, const float *A, const float *B, float scale,
                                  int N, int IN, int OUT, int R) {
    D(dinp); D(dA); D(dB); D(dh); D(dout); D(h); D(inp); D(mask); D(A); D(B);
    if (mask && (dA || dinp) && no_scratch("lora_backward", sizeof(float) * (size_t)N * IN))
        return;
    open_();
    if (dinp) memset(dinp, 0, sizeof(float) * (size_t)N * IN);   /* written: 0 + the term */
    close_();
    CALL(lora_backward, dinp, dA, dB, dh, dout, h, inp, mask, A, B, scale, N, IN, OUT, R);
}
static void g_dropout_mask(float *mask, uint64_t seed, uint64_t offset, float p, size_t n) {
    D(mask);
    CALL(dropout_mask, mask, seed, offset, p, n);
}
static void g_q8_linear_forward(float *out, const float *inp, const int8_t *cb,
                                const float *scb, const float *bias, int N, int IN, int OUT,
                                float threshold, float *work) {
    D(out); D(inp); D(cb); D(scb); D(bias); D(work);
    CALL(q8_linear_forward, out, inp, cb, scb, bias, N, IN, OUT, threshold, work);
}
static void g_row_norm(float *norm, const float *w, int rows, int cols, int trans) {
    D(norm); D(w);
    CALL(row_norm, norm, w, rows, cols, trans);
}
static void g_dora_forward(float *out, float *v, float *g, const float *y, const float *su,
                           const float *bias, const float *m, const float *norm, int N,
                           int OUT) {
    D(out); D(v); D(g); D(y); D(su); D(bias); D(m); D(norm);
    CALL(dora_forward, out, v, g, y, su, bias, m, norm, N, OUT);
}
static void g_channel_scale_forward(float *out, const float *inp, const float *l, int N, int C) {
    D(out); D(inp); D(l);
    CALL(channel_scale_forward, out, inp, l, N, C);
}
static void g_channel_scale_backward(float *dinp, float *dl, const float *dout,
                                     const float *inp, const float *l, int N, int C) {
    D(dinp); D(dl); D(dout); D(inp); D(l);
    CALL(channel_scale_backward, dinp, dl, dout, inp, l, N, C);
}
static void g_rmsnorm_forward(float *out, float *rstd, const float *inp, const float *w,
                              float eps, int add_one, int N, int C) {
    D(out); D(rstd); D(inp); D(w);
    CALL(rmsnorm_forward, out, rstd, inp, w, eps, add_one, N, C);
}
static void g_rmsnorm_backward(float *dinp, float *dw, const float *dout, const float *rstd,
                               const float *inp, const float *w, int add_one, int N, int C) {
    D(dinp); D(dw); D(dout); D(rstd); D(inp); D(w);
    CALL(rmsnorm_backward, dinp, dw, dout, rstd, inp, w, add_one, N, C);
}
static void g_layernorm_forward(float *out, float *mean, float *rstd, const float *inp,
                                const float *w, const float *b, float eps, int N, int C) {
    D(out); D(mean); D(rstd); D(inp); D(w); D(b);
    CALL(layernorm_forward, out, mean, rstd, inp, w, b, eps, N, C);
}
static void g_layernorm_backward(float *dinp, float *dw, float *db, const float *dout,
                                 const float *mean, const float *rstd, const float *inp,
                                 const float *w, int N, int C) {
    D(dinp); D(dw); D(db); D(dout); D(mean); D(rstd); D(inp); D(w);
    CALL(layernorm_backward, dinp, dw, db, dout, mean, rstd, inp, w, N, C);
}
static void g_rope_forward(float *out, const float *inp, const float *cos, const float *sin,
                           int N, int H, int D_) {
    D(out); D(inp); D(cos); D(sin);
    CALL(rope_forward, out, inp, cos, sin, N, H, D_);
}
static void g_rope_backward(float *dinp, const float *dout, const float *cos, const float *sin,
                            int N, int H, int D_) {
    D(dinp); D(dout); D(cos); D(sin);
    CALL(rope_backward, dinp, dout, cos, sin, N, H, D_);
}
/* CUDA's materialised attention: 4 (forward) or 8 (backward) pointers per (batch, head), one
 * more (B,H,Tq,Tk) for P∘dropout (and for the raw scores under soft-cap, backward) */
static size_t attn_scratch(int ptrs, int probs, int B, int Tq, int Tk, int H) {
    return (size_t)ptrs * B * H * sizeof(float *) + (size_t)probs * B * H * Tq * Tk * sizeof(float);
}

static void g_attention_forward(float *out, float *probs, const float *q, const float *k,
                                const float *v, const int *amask, const nn_attn_params *p,
                                int B, int T, int H, int KVH, int D_) {
    D(out); D(probs); D(q); D(k); D(v); D(amask);
    if (B > 0 && T > 0 && H > 0 &&
        no_scratch("attention_forward", attn_scratch(4, out && p->dropout, B, T, T, H)))
        return;
    CALL(attention_forward, out, probs, q, k, v, amask, p, B, T, H, KVH, D_);
}
static void g_attention_kv_forward(float *out, float *probs, const float *q, const float *k,
                                   const float *v, const int *amask, const nn_attn_params *p,
                                   int B, int Tq, int Tk, int q_off, int H, int KVH, int D_) {
    D(out); D(probs); D(q); D(k); D(v); D(amask);
    if (B > 0 && Tq > 0 && Tk > 0 && H > 0 &&
        no_scratch("attention_forward", attn_scratch(4, out && p->dropout, B, Tq, Tk, H)))
        return;
    CALL(attention_kv_forward, out, probs, q, k, v, amask, p, B, Tq, Tk, q_off, H, KVH, D_);
}
static void g_attention_backward(float *dq, float *dk, float *dv, float *dscores,
                                 const float *dout, const float *probs, const float *q,
                                 const float *k, const float *v, const int *amask,
                                 const nn_attn_params *p, int B, int T, int H, int KVH, int D_) {
    D(dq); D(dk); D(dv); D(dscores); D(dout); D(probs); D(q); D(k); D(v); D(amask);
    int extra = (p->softcap > 0.0f) + ((dk || dv) && p->dropout);
    if (B > 0 && T > 0 && H > 0 &&
        no_scratch("attention_backward", attn_scratch(8, extra, B, T, T, H)))
        return;
    CALL(attention_backward, dq, dk, dv, dscores, dout, probs, q, k, v, amask, p, B, T, H, KVH,
         D_);
}
static void g_attention_fused_forward(float *out, float *lse, const float *q, const float *k,
                                      const float *v, const int *amask,
                                      const nn_attn_params *p, int B, int T, int H, int KVH,
                                      int D_) {
    D(out); D(lse); D(q); D(k); D(v); D(amask);
    CALL(attention_fused_forward, out, lse, q, k, v, amask, p, B, T, H, KVH, D_);
}
static void g_attention_fused_backward(float *dq, float *dk, float *dv, const float *dout,
                                       const float *out, const float *lse, const float *q,
                                       const float *k, const float *v, const int *amask,
                                       const nn_attn_params *p, int B, int T, int H, int KVH,
                                       int D_) {
    D(dq); D(dk); D(dv); D(dout); D(out); D(lse); D(q); D(k); D(v); D(amask);
    if (B > 0 && T > 0 && H > 0 && D_ > 0 && (dq || dk || dv) &&
        no_scratch("attention_fused_backward", sizeof(float) * (size_t)B * T * H))   /* D_i */
        return;
    CALL(attention_fused_backward, dq, dk, dv, dout, out, lse, q, k, v, amask, p, B, T, H,
         KVH, D_);
}
static void g_act_forward(float *out, const float *inp, nn_act act, size_t n) {
    D(out); D(inp);
    CALL(act_forward, out, inp, act, n);
}
static void g_act_backward(float *dinp, const float *dout, const float *inp, nn_act act,
                           size_t n) {
    D(dinp); D(dout); D(inp);
    CALL(act_backward, dinp, dout, inp, act, n);
}
static void g_gated_forward(float *out, const float *gate, const float *up, nn_act act,
                            size_t n) {
    D(out); D(gate); D(up);
    CALL(gated_forward, out, gate, up, act, n);
}
static void g_gated_backward(float *dgate, float *dup, const float *dout, const float *gate,
                             const float *up, nn_act act, size_t n) {
    D(dgate); D(dup); D(dout); D(gate); D(up);
    CALL(gated_backward, dgate, dup, dout, gate, up, act, n);
}
static void g_softmax_forward(float *out, const float *inp, int N, int C) {
    D(out); D(inp);
    CALL(softmax_forward, out, inp, N, C);
}
static void g_softmax_backward(float *dinp, const float *dout, const float *out, int N, int C) {
    D(dinp); D(dout); D(out);
    CALL(softmax_backward, dinp, dout, out, N, C);
}
static int g_cross_entropy_forward(float *loss, float *lse, int *count, const float *logits,
                                   const int *targets, int N, int V) {
    int r;
    // loss and count are host scalars (the CUDA backend writes them from the host)
    if (find(loss) || find(count)) die("%s: `%s` = %p must be host memory", __func__, "loss", loss);
    D(lse); D(logits); D(targets);
    if (N > 0 && no_scratch("cross_entropy_forward", sizeof(float) * (size_t)N)) return -1;
    CALLR(r, cross_entropy_forward, loss, lse, count, logits, targets, N, V);
    return r;
}
static void g_cross_entropy_rows(float *rowloss, float *lse, const float *logits,
                                 const int *targets, int N, int V) {
    D(rowloss); D(lse); D(logits); D(targets);
    CALL(cross_entropy_rows, rowloss, lse, logits, targets, N, V);
}
static void g_cross_entropy_backward(float *dlogits, float dloss, const float *lse,
                                     const float *logits, const int *targets, int count, int N,
                                     int V) {
    D(dlogits); D(lse); D(logits); D(targets);
    CALL(cross_entropy_backward, dlogits, dloss, lse, logits, targets, count, N, V);
}
static void g_softcap_forward(float *out, const float *inp, float cap, size_t n) {
    D(out); D(inp);
    CALL(softcap_forward, out, inp, cap, n);
}
static void g_softcap_backward(float *dinp, const float *dout, const float *out, float cap,
                               size_t n) {
    D(dinp); D(dout); D(out);
    CALL(softcap_backward, dinp, dout, out, cap, n);
}
static void g_slice_forward(float *out, const float *inp, int N, int CI, int off, int W) {
    D(out); D(inp);
    CALL(slice_forward, out, inp, N, CI, off, W);
}
static void g_slice_backward(float *dinp, const float *dout, int N, int CI, int off, int W) {
    D(dinp); D(dout);
    CALL(slice_backward, dinp, dout, N, CI, off, W);
}
static void g_add_forward(float *out, const float *a, const float *b, size_t n) {
    D(out); D(a); D(b);
    CALL(add_forward, out, a, b, n);
}
static void g_add_backward(float *da, float *db, const float *dout, size_t n) {
    D(da); D(db); D(dout);
    CALL(add_backward, da, db, dout, n);
}
static void g_mul_forward(float *out, const float *a, const float *b, size_t n) {
    D(out); D(a); D(b);
    CALL(mul_forward, out, a, b, n);
}
static void g_mul_backward(float *da, float *db, const float *dout, const float *a,
                           const float *b, size_t n) {
    D(da); D(db); D(dout); D(a); D(b);
    CALL(mul_backward, da, db, dout, a, b, n);
}
static void g_scale_forward(float *out, const float *inp, float s, size_t n) {
    D(out); D(inp);
    CALL(scale_forward, out, inp, s, n);
}
static void g_scale_backward(float *dinp, const float *dout, float s, size_t n) {
    D(dinp); D(dout);
    CALL(scale_backward, dinp, dout, s, n);
}
static void g_q4_dequant(float *out, const uint8_t *codes, const float *absmax, size_t n,
                         int blocksize, int type) {
    D(out); D(codes); D(absmax);
    CALL(q4_dequant, out, codes, absmax, n, blocksize, type);
}
static void g_dq_dequant(float *absmax, const uint8_t *q, const float *absmax2,
                         const float *code, float offset, size_t nb) {
    D(absmax); D(q); D(absmax2); D(code);
    CALL(dq_dequant, absmax, q, absmax2, code, offset, nb);
}
static void g_adamw_step(float *param, float *m, float *v, const float *grad, size_t n,
                         double lr, double b1, double b2, double eps, double wd, int t) {
    D(param); D(m); D(v); D(grad);
    CALL(adamw_step, param, m, v, grad, n, lr, b1, b2, eps, wd, t);
}
static void g_sgd_step(float *param, float *buf, const float *grad, size_t n, double lr,
                       double momentum, double wd, int t) {
    D(param); D(buf); D(grad);
    CALL(sgd_step, param, buf, grad, n, lr, momentum, wd, t);
}
static double g_clip_grad_norm(float *const *grads, const size_t *sizes, int count,
                               double max_norm) {
    double r;
    // grads and sizes are host arrays; the gradients they point at are device memory
    if (find(grads) || find(sizes)) die("%s: `%s` = %p must be a host array", __func__, "grads", grads);
    for (int i = 0; i < count; i++) dev(grads[i], __func__, "grads[i]");
    if (no_scratch("clip_grad_norm", sizeof(double))) return NAN;
    CALLR(r, clip_grad_norm, grads, sizes, count, max_norm);
    return r;
}

/* ---- bf16 weights (be_guard_bf16): the CUDA backend's bf16 mode emulated on the CPU -----
 * The weight is widened and the activation rounded to bf16 (nn/ops_bf16.h) into host scratch,
 * then be_cpu()'s f32 op multiplies: exact bf16 products, f32 accumulation, as cuBLAS with
 * CUBLAS_COMPUTE_32F. The scratch is plain malloc (an op cannot fail; tests that make
 * lp_malloc fail count the model's allocations, not this emulation's). */

static float *scratch(size_t n) {
    float *p = malloc((n ? n : 1) * sizeof *p);
    if (!p) die("%s: %s%p", "bf16 emulation", "out of host memory ", NULL);
    return p;
}

static float *rounded(const float *x, size_t n) {
    float *r = scratch(n);
    for (size_t i = 0; i < n; i++) r[i] = nn_bf16_rounded(x[i]);
    return r;
}

static float *widened(const be_bf16 *w, size_t n) {
    float *r = scratch(n);
    nn_bf16_widen(r, w, n);
    return r;
}

/* The products on an input (or output gradient) already rounded and widened, x (freed):
 * out = x·op(W) + b; dinp = x·W (Conv1D: ·Wᵀ) + beta·dinp. W widened here. */
static void forward_of(float *out, float *x, const be_bf16 *w, const float *b, int N, int IN,
                       int OUT, int conv1d) {
    float *wf = widened(w, (size_t)IN * OUT);
    if (conv1d) G.in->conv1d_forward(out, x, wf, b, N, IN, OUT);
    else G.in->linear_forward(out, x, wf, b, N, IN, OUT);
    free(x);
    free(wf);
}
static void backward_of(float *dinp, float *x, const be_bf16 *w, int N, int IN, int OUT,
                        int conv1d, float beta) {
    float *wf = widened(w, (size_t)IN * OUT);
    G.in->matmul(dinp, x, wf, N, IN, OUT, 0, conv1d, 1.0f, beta);   // x·W or x·Wᵀ
    free(x);
    free(wf);
}

static void g_bf16_round(be_bf16 *dst, const float *src, size_t n) {
    D(dst); D(src);
    open_();
    nn_bf16_round(dst, src, n);
    close_();
}
static void g_bf16_widen(float *dst, const be_bf16 *src, size_t n) {
    D(dst); D(src);
    open_();
    nn_bf16_widen(dst, src, n);
    close_();
}
static void g_bf16_linear_forward(float *out, const float *inp, const be_bf16 *w,
                                  const float *b, int N, int IN, int OUT, int conv1d) {
    D(out); D(inp); D(w); D(b);
    if (N && OUT && no_scratch("linear_forward (bf16)", 2 * (size_t)N * IN + 16)) return;
    open_();
    forward_of(out, rounded(inp, (size_t)N * IN), w, b, N, IN, OUT, conv1d);
    close_();
}
static void g_bf16_linear_backward(float *dinp, const float *dout, const be_bf16 *w, int N,
                                   int IN, int OUT, int conv1d, float beta) {
    D(dinp); D(dout); D(w);
    if (N && IN && no_scratch("linear_backward (bf16)", 2 * (size_t)N * OUT + 16)) return;
    open_();
    backward_of(dinp, rounded(dout, (size_t)N * OUT), w, N, IN, OUT, conv1d, beta);
    close_();
}
static void g_bf16_linear_forward_rounded(float *out, const be_bf16 *inp, const be_bf16 *w,
                                          const float *b, int N, int IN, int OUT, int conv1d,
                                          float beta) {
    D(out); D(inp); D(w); D(b);
    open_();
    if (beta == 0.0f) {
        forward_of(out, widened(inp, (size_t)N * IN), w, b, N, IN, OUT, conv1d);
    } else {   /* the product and bias in host scratch, then added: the reference's order */
        size_t n = (size_t)N * OUT;
        float *y = scratch(n);
        forward_of(y, widened(inp, (size_t)N * IN), w, b, N, IN, OUT, conv1d);
        for (size_t i = 0; i < n; i++) out[i] += y[i];
        free(y);
    }
    close_();
}
static void g_bf16_gated_forward_rounded(float *out, be_bf16 *ho, const float *gate,
                                         const float *up, nn_act act, size_t n) {
    D(out); D(ho); D(gate); D(up);
    open_();
    G.in->gated_forward(out, gate, up, act, n);
    nn_bf16_round(ho, out, n);
    close_();
}
static void g_bf16_gated_backward_rounded(float *dgate, float *dup, be_bf16 *hg, be_bf16 *hu,
                                          const float *dout, const float *gate,
                                          const float *up, nn_act act, size_t n) {
    D(dgate); D(dup); D(hg); D(hu); D(dout); D(gate); D(up);
    open_();
    G.in->gated_backward(dgate, dup, dout, gate, up, act, n);
    nn_bf16_round(hg, dgate, n);
    nn_bf16_round(hu, dup, n);
    close_();
}
static void g_bf16_linear_backward_rounded(float *dinp, const be_bf16 *dout, const be_bf16 *w,
                                           int N, int IN, int OUT, int conv1d, float beta) {
    D(dinp); D(dout); D(w);
    open_();
    backward_of(dinp, widened(dout, (size_t)N * OUT), w, N, IN, OUT, conv1d, beta);
    close_();
}
static void g_bf16_head_loss_rows(float *rowloss, float *lse, be_bf16 *dlraw, const float *raw,
                                  const int *targets, int N, int V, float cap, float dloss,
                                  int count) {
    D(rowloss); D(lse); D(dlraw); D(raw); D(targets);
    open_();
    nn_head_loss_rows_bf16(rowloss, lse, dlraw, raw, targets, N, V, cap, dloss, count);
    close_();
}
static int g_bf16_embedding_forward(float *out, const int *ids, const be_bf16 *table, int N,
                                    int V, int C) {
    int r;
    D(out); D(ids); D(table);
    open_();
    r = nn_embedding_bf16_forward(out, ids, table, N, V, C);
    close_();
    return r;
}

static void g_bf16_embedding_rows(float *out, const int *ids, const be_bf16 *table, int N,
                                  int C) {
    D(out); D(ids); D(table);
    open_();
    if (nn_embedding_bf16_forward(out, ids, table, N, INT_MAX, C) < 0)
        die("%s: %s (the caller checks the ids)%p", "bf16 embedding_rows", lp_geterr(), NULL);
    close_();
}

static const be_bf16_ops guard_bf16_ops = {
    .round = g_bf16_round, .widen = g_bf16_widen, .linear_forward = g_bf16_linear_forward,
    .linear_backward = g_bf16_linear_backward, .embedding_forward = g_bf16_embedding_forward,
    .embedding_rows = g_bf16_embedding_rows,
    .linear_forward_rounded = g_bf16_linear_forward_rounded,
    .gated_forward_rounded = g_bf16_gated_forward_rounded,
    .gated_backward_rounded = g_bf16_gated_backward_rounded,
    .linear_backward_rounded = g_bf16_linear_backward_rounded,
    .head_loss_rows = g_bf16_head_loss_rows};

/* be_cpu()'s table (so a slot added to be_backend later is at least the CPU's, and its
 * capability fields are the CPU's), every function wrapped (g_init). An op added to the
 * interface without a wrapper here reads protected memory and dies like a host dereference:
 * add its wrapper. */
static be_backend guard_backend, guard_bf16_backend;

static void fill_table(void) {
    guard_backend = *G.in;
    guard_backend.name = "guard";
    guard_backend.alloc = g_alloc, guard_backend.free = g_free;
    guard_backend.to_device = g_to_device, guard_backend.to_host = g_to_host;
    guard_backend.copy = g_copy, guard_backend.zero = g_zero, guard_backend.sync = g_sync;
#define G(op) guard_backend.op = g_##op
    G(matmul); G(embedding_forward); G(embedding_add_forward); G(embedding_backward);
    G(embedding_rows);
    G(linear_forward); G(linear_backward); G(conv1d_forward); G(conv1d_backward);
    G(lora_forward); G(lora_forward_first); G(lora_backward); G(lora_backward_first);
    G(dropout_mask); G(row_norm); G(dora_forward); G(channel_scale_forward); G(channel_scale_backward); G(rmsnorm_forward);
    G(rmsnorm_backward); G(layernorm_forward);
    G(layernorm_backward); G(rope_forward); G(rope_backward); G(attention_forward);
    G(attention_kv_forward); G(attention_backward); G(attention_fused_forward);
    G(attention_fused_backward); G(act_forward); G(act_backward);
    G(gated_forward); G(gated_backward); G(softmax_forward); G(softmax_backward);
    G(cross_entropy_forward); G(cross_entropy_backward); G(cross_entropy_rows);
    G(softcap_forward);
    G(softcap_backward); G(slice_forward); G(slice_backward); G(add_forward); G(add_backward);
    G(mul_forward); G(mul_backward); G(scale_forward); G(scale_backward); G(q4_dequant); G(dq_dequant); G(q8_linear_forward); G(adamw_step);
    G(sgd_step); G(clip_grad_norm);
#undef G
    guard_backend.op_failed = g_op_failed;
    guard_backend.bf16 = NULL;   // be_cpu() has none; the bf16 table is the second one
    guard_bf16_backend = guard_backend;
    guard_bf16_backend.bf16 = &guard_bf16_ops;
}

static pthread_once_t g_once = PTHREAD_ONCE_INIT;
static char g_why[256];

static void g_init(void) {
    G.page = (size_t)sysconf(_SC_PAGESIZE);
    G.cap = (size_t)4 << 30;
    const char *lim = getenv("LOUPE_GUARD_LIMIT");
    if (lim && *lim) {
        unsigned long long v = strtoull(lim, NULL, 10);
        if (v) G.cap = ((size_t)v + G.page - 1) / G.page * G.page;
    }
    void *p = mmap(NULL, G.cap, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (p == MAP_FAILED) {
        snprintf(g_why, sizeof g_why, "guard device: cannot reserve %zu bytes of address space",
                 G.cap);
        return;
    }
    G.base = p;
    G.in = be_cpu();
    fill_table();
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = on_segv;
    sa.sa_flags = SA_SIGINFO | SA_NODEFER;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGSEGV, &sa, &G.old_segv);
}

const be_backend *be_guard(void) {
    pthread_once(&g_once, g_init);
    if (!G.base) return lp_seterr("%s", g_why), NULL;
    const char *e = getenv("LOUPE_CUDA_BF16");
    return e && strcmp(e, "1") == 0 ? &guard_bf16_backend : &guard_backend;
}

const be_backend *be_guard_f32(void) {
    pthread_once(&g_once, g_init);
    if (!G.base) return lp_seterr("%s", g_why), NULL;
    return &guard_backend;
}

const be_backend *be_guard_bf16(void) {
    pthread_once(&g_once, g_init);
    if (!G.base) return lp_seterr("%s", g_why), NULL;
    return &guard_bf16_backend;
}

size_t be_guard_in_use(void) { return G.in_use; }
void be_guard_set_limit(size_t bytes) { G.limit = bytes; }
void be_guard_fail_scratch(int n) { G.fail_scratch = n; }
