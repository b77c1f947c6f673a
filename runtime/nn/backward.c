/* backward.c — the model backward (see backward.h): head, layers in reverse, embeddings.
 *
 * Mirrors forward.c: decoder_layer_bwd undoes decoder_layer, encoder_layer_bwd undoes BERT's
 * encoder_layer, head_bwd undoes head(). Most ops' backwards accumulate (+=), so scratch
 * gradients are zeroed right before the op that fills them — except where the op writes
 * (rope, attention, gated and cross-entropy backwards: nn/ops.h) or a linear layer's input
 * gradient comes first: lin_bwd(fresh = 1) writes it with a plain product (beta 0). Each
 * exception saves a pass over the buffer. `dres` carries the gradient of the residual
 * stream: on entry to a layer it is d(loss)/d(y), on exit d(loss)/d(x). */
#include "nn/backward.h"

#include <string.h>

#include "nn/forward_int.h"
#include "util/err.h"
#include "util/mem.h"

/* Scratch laid out in fm->bw_arena. */
typedef struct bw_bufs {
    float *dres, *dalt;           /* (N,C) residual gradients (BERT swaps them) */
    float *dn, *dtmp;             /* (N,C) norm-input gradient; post-norm raw gradient */
    float *dq, *dk, *dv;          /* (N,Q) (N,KV) (N,KV) gradients after RoPE */
    float *dqr, *dkr;             /* (N,Q) (N,KV) before RoPE */
    float *datt;                  /* (N,Q) */
    float *dqkv;                  /* (N,Q+2KV) GPT-2, Phi-3 */
    float *dgu;                   /* (N,2I) Phi-3's gate_up_proj */
    float *dscores;               /* (B,H,T,T); NULL after a fused attention forward */
    float *dgate, *dup, *dact;    /* (N,I) */
    be_bf16 *hgate, *hup;         /* (N,I) bf16 copies of dgate, dup (fw_rounding), or NULL */
    float *dlh;                   /* (N,rmax) LoRA dh scratch */
    float *dia3[2];               /* (N,wmax) IA3 scratch in turn; wmax = the widest IA3 site */
    float *dlogits, *dlraw;       /* (R,V): R = head_rows rows of the head at a time */
    int head_rows;                /* R, fixed by plan() with the buffers it sized */
    float *dfin;                  /* (N,C) */
    float *dhead;                 /* (N,C) BERT MLM transform gradient */
    float *dpool, *dpool_pre, *dpool_in;   /* (B,C) */
} bw_bufs;

static float *take(float *base, size_t *off, size_t n) {
    float *r = base ? base + *off : NULL;
    *off += (n + 15) & ~(size_t)15;
    return r;
}

static size_t plan(const fw_model *fm, float *base, bw_bufs *b, int rmax, int wmax) {
    const fw_acts *A = &fm->acts;
    size_t N = (size_t)A->N, C = (size_t)fm->C, I = (size_t)fm->I, off = 0;
    size_t R = (size_t)fw_head_rows(fm, A->N);
    size_t V = fm->info.out_kind == FW_OUT_CLASSES ? (size_t)fm->info.num_labels
                                                   : (size_t)fm->V;
    memset(b, 0, sizeof *b);
    b->head_rows = (int)R;
    b->dres = take(base, &off, N * C);
    b->dalt = take(base, &off, N * C);
    b->dn = take(base, &off, N * C);
    b->dtmp = take(base, &off, N * C);
    b->dq = take(base, &off, N * fm->Q);
    b->dk = take(base, &off, N * fm->KV);
    b->dv = take(base, &off, N * fm->KV);
    b->dqr = take(base, &off, N * fm->Q);
    b->dkr = take(base, &off, N * fm->KV);
    b->datt = take(base, &off, N * fm->Q);
    if (fm->lw[0].qkv_w) b->dqkv = take(base, &off, N * (size_t)(fm->Q + 2 * fm->KV));
    if (fm->a->flags & AF_FUSED_MLP) b->dgu = take(base, &off, 2 * N * I);
    if (A->layers[0].probs) b->dscores = take(base, &off, (size_t)A->B * fm->H * A->T * A->T);
    b->dgate = take(base, &off, N * I);
    b->dup = take(base, &off, N * I);
    b->dact = take(base, &off, N * I);
    if (fw_rounding(fm) && fm->lw[0].up_w) {   /* two (N,I) bf16 in the space of one f32 */
        float *h = take(base, &off, N * I);
        b->hgate = (be_bf16 *)h;
        b->hup = h ? (be_bf16 *)h + N * I : NULL;
    }
    b->dlh = take(base, &off, N * (size_t)(rmax > 0 ? rmax : 1));
    if (wmax > 0) {
        b->dia3[0] = take(base, &off, N * (size_t)wmax);
        b->dia3[1] = take(base, &off, N * (size_t)wmax);
    }
    if (!A->dfin) {   /* FW_LOSS: the forward took the loss's gradient through the head */
        b->dlogits = take(base, &off, R * V);
        b->dlraw = fm->final_softcap > 0 ? take(base, &off, R * V) : b->dlogits;
    }
    b->dfin = take(base, &off, N * C);
    b->dhead = take(base, &off, N * C);
    b->dpool = take(base, &off, (size_t)A->B * C);
    b->dpool_pre = take(base, &off, (size_t)A->B * C);
    b->dpool_in = take(base, &off, (size_t)A->B * C);
    return off;
}

/* ---- building blocks ------------------------------------------------------------------------ */

#define G(w) fw_grad_of(fm, (w))

static void zero(const fw_model *fm, float *p, size_t n) { fm->be->zero(p, n * sizeof(float)); }

/* dinp += d(norm)/d(inp)·dout; weight and bias gradients when trainable. */
static void norm_bwd(const fw_model *fm, float *dinp, const float *dout, const float *mean,
                     const float *rstd, const float *inp, const float *w, const float *b, int N) {
    if (fm->a->norm == NORM_LAYER)
        fm->be->layernorm_backward(dinp, G(w), G(b), dout, mean, rstd, inp, w, N, fm->C);
    else
        fm->be->rmsnorm_backward(dinp, G(w), dout, rstd, inp, w, fm->add_one, N, fm->C);
}

/* dinp (+)= bf16(dout)·W for a bf16 weight, dout given rounded (dout16) or not */
static void half_dinp(const fw_model *fm, float *dinp, const float *dout, const be_bf16 *dout16,
                      const float *w, int N, int IN, int OUT, int conv, float beta) {
    const be_bf16_ops *o = fm->be->bf16;
    const be_bf16 *wh = (const be_bf16 *)w;
    if (dout16) o->linear_backward_rounded(dinp, dout16, wh, N, IN, OUT, conv, beta);
    else o->linear_backward(dinp, dout, wh, N, IN, OUT, conv, beta);
}

/* IA3 scaling w's output, undone last first: dout → the base product's output gradient, in
 * bb->dia3 (dout itself without such an adapter); each vector's gradient added on the way. */
static const float *ia3_out_bwd(const fw_model *fm, const bw_bufs *bb, const float *dout,
                                const float *w, int N, int OUT) {
    int t = 0;
    for (size_t i = fm->nlora; i-- > 0;) {
        const fw_lora *lo = fm->loras[i];
        if (lo->base != w || !lo->enabled || lo->kind != FW_AD_IA3) continue;
        float *d = bb->dia3[t];
        t ^= 1;
        zero(fm, d, (size_t)N * OUT);
        fm->be->channel_scale_backward(d, lo->dA, dout, lo->h, lo->A, N, OUT);
        dout = d;
    }
    return dout;
}

/* The last feed-forward IA3 on w (its h is what the base product read), or NULL. */
static const fw_lora *ia3_ff_last(const fw_model *fm, const float *w) {
    const fw_lora *last = NULL;
    for (size_t i = 0; i < fm->nlora; i++) {
        const fw_lora *lo = fm->loras[i];
        if (lo->base == w && lo->enabled && lo->kind == FW_AD_IA3_FF) last = lo;
    }
    return last;
}

/* Feed-forward IA3 on w undone: dx (bb->dia3[0], the base product's input gradient) → dinp
 * (added, or written when fresh; NULL: only the vectors' gradients). */
static void ia3_ff_bwd(const fw_model *fm, const bw_bufs *bb, float *dinp, const float *inp,
                       const float *w, int N, int IN, int fresh) {
    const float *g = bb->dia3[0];
    int t = 1;
    for (size_t i = fm->nlora; i-- > 0;) {
        const fw_lora *lo = fm->loras[i];
        if (lo->base != w || !lo->enabled || lo->kind != FW_AD_IA3_FF) continue;
        const fw_lora *prev = NULL;   /* the adapter before it: its h is this one's input */
        for (size_t k = 0; k < i && !prev; k++) {
            const fw_lora *p = fm->loras[i - 1 - k];
            if (p->base == w && p->enabled && p->kind == FW_AD_IA3_FF) prev = p;
        }
        float *d = prev ? bb->dia3[t] : dinp;
        t ^= 1;
        if (d && (prev || fresh)) zero(fm, d, (size_t)N * IN);
        fm->be->channel_scale_backward(d, lo->dA, g, prev ? prev->h : inp, lo->A, N, IN);
        g = d;
    }
}

/* dinp = d·W + beta·dinp (the input gradient of weight slot w's product, d unrounded) */
static void base_dinp(const fw_model *fm, float *dinp, const float *d, const float *w, int N,
                      int IN, int OUT, float beta) {
    int conv = (fm->a->flags & AF_CONV1D) != 0;
    if (fw_is_half(fm, w)) half_dinp(fm, dinp, d, NULL, w, N, IN, OUT, conv, beta);
    else if (fw_is_q4(fm, w) && fm->be->bf16)
        half_dinp(fm, dinp, d, NULL,
                  (const float *)fw_product_weight16((fw_model *)fm, w), N, IN, OUT, 0, beta);
    else if (fw_is_q4(fm, w))
        fm->be->matmul(dinp, d, fw_product_weight((fw_model *)fm, w), N, IN, OUT, 0, 0, 1.0f,
                       beta);
    else fm->be->matmul(dinp, d, w, N, IN, OUT, 0, conv, 1.0f, beta);
}

/* DoRA on w, before the base product's backward: the output gradient that product takes,
 * dout + Σ (m/‖V‖ − 1)·dout over the DoRA adapters without dropout (their y is the base
 * output: PEFT's autograd sums the two there), in *scr (or dout itself: none). NULL + the
 * NULL without scratch. */
static const float *dora_dbase(const fw_model *fm, const float *dout, const float *w, int N,
                               int OUT, float **scr) {
    *scr = NULL;
    for (size_t i = 0; i < fm->nlora; i++) {
        const fw_lora *lo = fm->loras[i];
        if (lo->base != w || !lo->enabled || !lo->dora || lo->mask_on) continue;
        if (!*scr) {
            *scr = fm->be->alloc(sizeof(float) * (size_t)N * OUT);
            if (!*scr) return NULL;
            fm->be->copy(*scr, dout, sizeof(float) * (size_t)N * OUT);
        }
        fm->be->channel_scale_backward(*scr, NULL, dout, NULL, lo->g + OUT, N, OUT);
    }
    return *scr ? *scr : dout;
}

/* DoRA's terms on w: the magnitude's gradient Σ_n dout·v, the LoRA product's with g·dout,
 * and with dropout the input gradient of its y = x'·Wᵀ (and W's, when W trains). -1: no
 * scratch. */
static int dora_bwd(const fw_model *fm, const bw_bufs *bb, float *dinp, const float *dout,
                    const float *inp, const float *w, int N, int IN, int OUT) {
    const be_backend *be = fm->be;
    float *dw = G(w);
    int conv = (fm->a->flags & AF_CONV1D) != 0;
    for (size_t i = 0; i < fm->nlora; i++) {
        const fw_lora *lo = fm->loras[i];
        if (lo->base != w || !lo->enabled || !lo->dora) continue;
        size_t no = (size_t)N * OUT, ni = (size_t)N * IN;
        int y = lo->mask_on && (dinp || dw);
        float *dg = be->alloc(sizeof(float) * (no + (y ? no + ni : 0)));
        if (!dg) return -1;
        if (lo->dmag) be->channel_scale_backward(NULL, lo->dmag, dout, lo->v, lo->g, N, OUT);
        be->channel_scale_forward(dg, dout, lo->g, N, OUT);
        if (dinp || lo->dA || lo->dB)
            be->lora_backward(dinp, lo->dA, lo->dB, bb->dlh, dg, lo->h, inp,
                              lo->mask_on ? lo->mask : NULL, lo->A, lo->B, lo->scale, N, IN,
                              OUT, lo->r);
        if (y) {   /* y read the dropped-out input: (m/‖V‖ − 1)·dout through W, masked */
            float *d1 = dg + no, *t = d1 + no;
            be->channel_scale_forward(d1, dout, lo->g + OUT, N, OUT);
            if (dinp) {
                base_dinp(fm, t, d1, w, N, IN, OUT, 0.0f);
                be->mul_forward(t, t, lo->mask, ni);
                be->add_forward(dinp, dinp, t, ni);
            }
            if (dw) {
                be->mul_forward(t, inp, lo->mask, ni);
                if (conv) be->conv1d_backward(NULL, dw, NULL, d1, t, w, N, IN, OUT);
                else be->linear_backward(NULL, dw, NULL, d1, t, w, N, IN, OUT);
            }
        }
        be->free(dg);
    }
    return 0;
}

/* The backward of fw_lin_fwd: base layer (dW only when unfrozen), then each enabled adapter.
 * dinp may be NULL (nothing below needs it). fresh: dinp holds nothing yet, the base product
 * overwrites it (dinp = dout·W instead of zeroing and adding). On a bf16 weight with fresh
 * dinp the first adapter writes it instead (lora_backward_first) and the base product adds
 * to it in its GEMM's epilogue (as fw_lin_fwd_r: the adapter's product, memory-bound, then
 * only writes dinp where it read and wrote it). IA3 wraps it: the output's scalings are
 * undone before, the input's after (ia3_out_bwd, ia3_ff_bwd). */
static void lin_bwd16(const fw_model *fm, const bw_bufs *bb, float *dinp, const float *dout,
                      const be_bf16 *dout16, const float *inp, const float *w, const float *b,
                      int N, int IN, int OUT, int fresh) {
    const be_backend *be = fm->be;
    float *dw = G(w), *db = G(b);
    int conv = (fm->a->flags & AF_CONV1D) != 0, half = fw_is_half(fm, w);
    const float *dscaled = ia3_out_bwd(fm, bb, dout, w, N, OUT);
    if (dscaled != dout) dout16 = NULL;
    dout = dscaled;
    const fw_lora *ff = ia3_ff_last(fm, w);
    float *dinp0 = dinp;
    const float *inp0 = inp;
    int fresh0 = fresh;
    if (ff) {   /* the base product read ff->h: its gradient into scratch, then undone */
        inp = ff->h;
        dinp = bb->dia3[0];
        fresh = 1;
    }
    float *dscr;
    const float *dprod = dora_dbase(fm, dout, w, N, OUT, &dscr);   /* the product's dout */
    if (!dprod) {
        ((fw_model *)fm)->dora_oom = 1;
        return;
    }
    if (dprod != dout) dout16 = NULL;
    int dora = dprod != dout || fw_has_dora(fm, w);
    long lead = -1;
    for (size_t i = 0; !dora && half && dinp && fresh && be->lora_backward_first && i < fm->nlora;
         i++)
        if (fm->loras[i]->base == w && fm->loras[i]->enabled &&
            fm->loras[i]->kind == FW_AD_LORA) {
            lead = (long)i;
            break;
        }
    if (half) {   /* frozen by construction (fw_weight_f32 before a gradient) */
        if (dinp && lead < 0)
            half_dinp(fm, dinp, dprod, dout16, w, N, IN, OUT, conv, fresh ? 0.0f : 1.0f);
        if (db) {   /* the bias may train alone; the weight is not read without dinp, dW */
            if (conv) be->conv1d_backward(NULL, NULL, db, dout, inp, NULL, N, IN, OUT);
            else be->linear_backward(NULL, NULL, db, dout, inp, NULL, N, IN, OUT);
        }
    } else if (fw_is_q4(fm, w) && be->bf16) {   /* frozen: dinp from a bf16 copy ([out, in]) */
        if (dinp)
            half_dinp(fm, dinp, dprod, dout16,
                      (const float *)fw_product_weight16((fw_model *)fm, w), N, IN, OUT, 0,
                      fresh ? 0.0f : 1.0f);
        if (db) be->linear_backward(NULL, NULL, db, dout, inp, NULL, N, IN, OUT);
    } else if (fw_is_q4(fm, w)) {   /* frozen: dinp from its dequantized copy */
        const float *wd = fw_product_weight((fw_model *)fm, w);
        if (dinp) be->matmul(dinp, dprod, wd, N, IN, OUT, 0, 0, 1.0f, fresh ? 0.0f : 1.0f);
        if (db) be->linear_backward(NULL, NULL, db, dout, inp, NULL, N, IN, OUT);
    } else if (dprod != dout) {   /* DoRA: the bias's gradient from dout, the rest dprod's */
        if (dinp) be->matmul(dinp, dprod, w, N, IN, OUT, 0, conv, 1.0f, fresh ? 0.0f : 1.0f);
        if (conv) {
            if (dw) be->conv1d_backward(NULL, dw, NULL, dprod, inp, w, N, IN, OUT);
            if (db) be->conv1d_backward(NULL, NULL, db, dout, inp, w, N, IN, OUT);
        } else {
            if (dw) be->linear_backward(NULL, dw, NULL, dprod, inp, w, N, IN, OUT);
            if (db) be->linear_backward(NULL, NULL, db, dout, inp, w, N, IN, OUT);
        }
    } else if (dinp && fresh) {   /* Linear: dout·W, W (OUT,IN); Conv1D: dout·Wᵀ, W (IN,OUT) */
        be->matmul(dinp, dout, w, N, IN, OUT, 0, conv, 1.0f, 0.0f);
        if (dw || db) {
            if (conv) be->conv1d_backward(NULL, dw, db, dout, inp, w, N, IN, OUT);
            else be->linear_backward(NULL, dw, db, dout, inp, w, N, IN, OUT);
        }
    } else if (dinp || dw || db) {
        if (fm->a->flags & AF_CONV1D) be->conv1d_backward(dinp, dw, db, dout, inp, w, N, IN, OUT);
        else be->linear_backward(dinp, dw, db, dout, inp, w, N, IN, OUT);
    }
    fm->be->free(dscr);
    if (dora && dora_bwd(fm, bb, dinp, dout, inp, w, N, IN, OUT) < 0)
        ((fw_model *)fm)->dora_oom = 1;
    for (size_t i = 0; i < fm->nlora; i++) {
        const fw_lora *lo = fm->loras[i];
        if (lo->base != w || !lo->enabled || lo->kind != FW_AD_LORA || lo->dora) continue;
        if (!dinp && !lo->dA && !lo->dB) continue;
        (i == (size_t)lead ? be->lora_backward_first : be->lora_backward)(
            dinp, lo->dA, lo->dB, bb->dlh, dout, lo->h, inp, lo->mask_on ? lo->mask : NULL,
            lo->A, lo->B, lo->scale, N, IN, OUT, lo->r);
    }
    if (lead >= 0) half_dinp(fm, dinp, dout, dout16, w, N, IN, OUT, conv, 1.0f);
    if (ff) ia3_ff_bwd(fm, bb, dinp0, inp0, w, N, IN, fresh0);
}

static void lin_bwd(const fw_model *fm, const bw_bufs *bb, float *dinp, const float *dout,
                    const float *inp, const float *w, const float *b, int N, int IN, int OUT,
                    int fresh) {
    lin_bwd16(fm, bb, dinp, dout, NULL, inp, w, b, N, IN, OUT, fresh);
}

/* Does layer l (or anything in it) have a trainable tensor? */
static int layer_trainable(const fw_model *fm, int l) {
    const fw_lw *w = &fm->lw[l];
    const float *const *p = (const float *const *)w;
    for (size_t i = 0; i < sizeof *w / sizeof(float *); i++) {
        if (!p[i]) continue;
        if (G(p[i])) return 1;
        for (size_t k = 0; k < fm->nlora; k++)
            if (fm->loras[k]->base == p[i] && fm->loras[k]->enabled &&
                (fm->loras[k]->dA || fm->loras[k]->dB))
                return 1;
    }
    return 0;
}

/* q, k, v (after RoPE) gradients in bb->dq/dk/dv → their projections' input gradient dinp
 * (NULL: not needed; fresh: overwritten, else added to); a: the layer's activations (Qwen3's
 * q / k before their norms). */
static void qkv_bwd(fw_model *fm, const bw_bufs *bb, int l, const fw_lw *w,
                    const fw_layer_acts *a, float *dinp, int fresh, const float *in, int N) {
    const be_backend *be = fm->be;
    int C = fm->C;
    float *dq = bb->dq, *dk = bb->dk;
    const float *cs, *sn;
    if (fw_rope_tables(fm, l, &cs, &sn)) {   /* undo RoPE (datt is free now: scratch) */
        fw_rope_apply(fm, bb->dqr, bb->dq, bb->datt, cs, sn, N, fm->H, 1);
        fw_rope_apply(fm, bb->dkr, bb->dk, bb->datt, cs, sn, N, fm->KVH, 1);
        dq = bb->dqr;
        dk = bb->dkr;
    }
    if (w->qn_w) {   /* Qwen3's per-head norms: into the other buffer of each pair */
        float *q2 = dq == bb->dq ? bb->dqr : bb->dq, *k2 = dk == bb->dk ? bb->dkr : bb->dk;
        zero(fm, q2, (size_t)N * fm->Q);
        zero(fm, k2, (size_t)N * fm->KV);
        be->rmsnorm_backward(q2, G(w->qn_w), dq, a->qn_rstd, a->q_raw, w->qn_w, fm->add_one,
                             N * fm->H, fm->D);
        be->rmsnorm_backward(k2, G(w->kn_w), dk, a->kn_rstd, a->k_raw, w->kn_w, fm->add_one,
                             N * fm->KVH, fm->D);
        dq = q2;
        dk = k2;
    }
    if (w->qkv_w) {
        int Q = fm->Q, KV = fm->KV, W = Q + 2 * KV;
        zero(fm, bb->dqkv, (size_t)N * W);
        be->slice_backward(bb->dqkv, dq, N, W, 0, Q);
        be->slice_backward(bb->dqkv, dk, N, W, Q, KV);
        be->slice_backward(bb->dqkv, bb->dv, N, W, Q + KV, KV);
        lin_bwd(fm, bb, dinp, bb->dqkv, in, w->qkv_w, w->qkv_b, N, C, W, fresh);
    } else {
        lin_bwd(fm, bb, dinp, dq, in, w->q_w, w->q_b, N, C, fm->Q, fresh);
        lin_bwd(fm, bb, dinp, dk, in, w->k_w, w->k_b, N, C, fm->KV, 0);
        lin_bwd(fm, bb, dinp, bb->dv, in, w->v_w, w->v_b, N, C, fm->KV, 0);
    }
}

/* datt → q, k, v gradients (bb->dq, dk, dv). */
static void attention_bwd(fw_model *fm, const bw_bufs *bb, const fw_layer_acts *a, int l) {
    const fw_acts *A = &fm->acts;
    const mdl_config *c = fm->m->config;
    nn_attn_params p = {.scale = fm->attn_scale, .softcap = fm->attn_softcap,
                        .causal = fm->info.causal,
                        .window = c->sliding_layers && c->sliding_layers[l] ? fm->window : 0,
                        .dropout = a->attn_drop};
    const be_bf16_ops *tc = fw_tc_attention(fm);
    if (a->lse)   /* fused: probabilities recomputed from lse; out (a->att) gives D_i */
        (tc ? tc->attention_fused_backward : fm->be->attention_fused_backward)(
            bb->dq, bb->dk, bb->dv, bb->datt, a->att, a->lse, a->q, a->k, a->v, A->mask, &p,
            A->B, A->T, fm->H, fm->KVH, fm->D);
    else
        fm->be->attention_backward(bb->dq, bb->dk, bb->dv, bb->dscores, bb->datt, a->probs,
                                   a->q, a->k, a->v, A->mask, &p, A->B, A->T, fm->H, fm->KVH,
                                   fm->D);
}

/* dm (what the MLP added) → the MLP input gradient, added into dinp (fresh: written). */
static void mlp_bwd(fw_model *fm, const bw_bufs *bb, const fw_layer_acts *a, const fw_lw *w,
                    float *dinp, int fresh, const float *dm, const float *in, int N) {
    const be_backend *be = fm->be;
    size_t NI = (size_t)N * fm->I;
    if (w->mn_w) {   /* Gemma 2 post-feed-forward norm */
        zero(fm, bb->dtmp, (size_t)N * fm->C);
        norm_bwd(fm, bb->dtmp, dm, NULL, a->m_rstd, a->m_raw, w->mn_w, NULL, N);
        dm = bb->dtmp;
    }
    lin_bwd(fm, bb, bb->dact, dm, a->act, w->down_w, w->down_b, N, fm->I, fm->C, 1);
    if (bb->dgu) {   /* Phi-3: the two gradients back into [gate | up], one product */
        int I = fm->I;
        be->gated_backward(bb->dgate, bb->dup, bb->dact, a->gate, a->up, fm->act, NI);
        zero(fm, bb->dgu, 2 * NI);
        be->slice_backward(bb->dgu, bb->dgate, N, 2 * I, 0, I);
        be->slice_backward(bb->dgu, bb->dup, N, 2 * I, I, I);
        lin_bwd(fm, bb, dinp, bb->dgu, in, w->gate_w, w->gate_b, N, fm->C, 2 * I, fresh);
        return;
    }
    const be_bf16 *hgate = NULL;
    if (w->up_w && bb->hgate) {   /* the two gradients rounded too, for bf16 products */
        fw_rounding(fm)->gated_backward_rounded(bb->dgate, bb->dup, bb->hgate, bb->hup, bb->dact,
                                                a->gate, a->up, fm->act, NI);
        lin_bwd16(fm, bb, dinp, bb->dup, bb->hup, in, w->up_w, w->up_b, N, fm->C, fm->I, fresh);
        hgate = bb->hgate;
        fresh = 0;
    } else if (w->up_w) {
        be->gated_backward(bb->dgate, bb->dup, bb->dact, a->gate, a->up, fm->act, NI);
        lin_bwd(fm, bb, dinp, bb->dup, in, w->up_w, w->up_b, N, fm->C, fm->I, fresh);
        fresh = 0;
    } else {
        zero(fm, bb->dgate, NI);
        be->act_backward(bb->dgate, bb->dact, a->gate, fm->act, NI);
    }
    lin_bwd16(fm, bb, dinp, bb->dgate, hgate, in, w->gate_w, w->gate_b, N, fm->C, fm->I, fresh);
}

/* The gradient through a training-mode dropout: src·mask into dst (src itself when no mask
 * was drawn). */
static const float *drop_grad(const fw_model *fm, float *dst, const float *src, const float *mask,
                              size_t n) {
    if (!mask) return src;
    fm->be->mul_forward(dst, src, mask, n);
    return dst;
}

/* Pre-norm decoder layer: dres = dy on entry, dx on exit (need_dx: else left partial). */
static void decoder_layer_bwd(fw_model *fm, const bw_bufs *bb, int l, int need_dx) {
    const fw_layer_acts *a = &fm->acts.layers[l];
    const fw_lw *w = &fm->lw[l];
    int N = fm->acts.N;
    size_t NC = (size_t)N * fm->C;
    /* y = h + m: dm = dy; dh = dy + the MLP input's gradient through norm 2 */
    fw_remake_mlp_in(fm, l);
    mlp_bwd(fm, bb, a, w, bb->dn, 1, drop_grad(fm, bb->dtmp, bb->dres, a->m_drop, NC), a->n2, N);
    norm_bwd(fm, bb->dres, bb->dn, a->n2_mean, a->n2_rstd, a->h, w->n2_w, w->n2_b, N);
    /* h = x + o: do = dh; dx = dh + through norm 1 */
    const float *dout = drop_grad(fm, bb->dtmp, bb->dres, a->o_drop, NC);
    if (w->on_w) {
        zero(fm, bb->dtmp, NC);
        norm_bwd(fm, bb->dtmp, bb->dres, NULL, a->o_rstd, a->o_raw, w->on_w, NULL, N);
        dout = bb->dtmp;
    }
    lin_bwd(fm, bb, bb->datt, dout, a->att, w->o_w, w->o_b, N, fm->Q, fm->C, 1);
    attention_bwd(fm, bb, a, l);
    /* the lowest visited layer's input gradient is needed only for norm 1's own weights */
    int need_dn = need_dx || G(w->n1_w) || G(w->n1_b);
    fw_remake_attn_in(fm, l);
    qkv_bwd(fm, bb, l, w, a, need_dn ? bb->dn : NULL, 1, a->n1, N);
    if (need_dn)
        norm_bwd(fm, bb->dres, bb->dn, a->n1_mean, a->n1_rstd, a->x, w->n1_w, w->n1_b, N);
}

/* BERT post-norm encoder layer; swaps bb->dres / dalt (dres = dx on exit). */
static void encoder_layer_bwd(fw_model *fm, bw_bufs *bb, int l, int need_dx) {
    const be_backend *be = fm->be;
    const fw_layer_acts *a = &fm->acts.layers[l];
    const fw_lw *w = &fm->lw[l];
    int N = fm->acts.N, C = fm->C;
    size_t NC = (size_t)N * C;
    float *dr2 = bb->dalt, *dr1 = bb->dn;
    /* y = LN(r2), r2 = h + m */
    zero(fm, dr2, NC);
    be->layernorm_backward(dr2, G(w->r2_w), G(w->r2_b), bb->dres, a->r2_mean, a->r2_rstd, a->r2,
                           w->r2_w, N, C);
    fw_remake_mlp_in(fm, l);
    mlp_bwd(fm, bb, a, w, dr2, 0, drop_grad(fm, bb->dtmp, dr2, a->m_drop, NC), a->h,
            N);   /* down reads dr2 before gate/fc add into it */
    /* h = LN(r1), r1 = x + o */
    zero(fm, dr1, NC);
    be->layernorm_backward(dr1, G(w->r1_w), G(w->r1_b), dr2, a->r1_mean, a->r1_rstd, a->r1,
                           w->r1_w, N, C);
    lin_bwd(fm, bb, bb->datt, drop_grad(fm, bb->dtmp, dr1, a->o_drop, NC), a->att, w->o_w,
            w->o_b, N, fm->Q, C, 1);
    attention_bwd(fm, bb, a, l);
    qkv_bwd(fm, bb, l, w, a, need_dx ? dr1 : NULL, 0, a->x, N);
    /* dr1 is now dx */
    bb->dn = bb->dres;
    bb->dres = dr1;
}

/* ---- head and embeddings ------------------------------------------------------------------ */

/* Loss → dres = d(loss)/d(last hidden state) (zeroed and filled here). */
static void head_bwd(fw_model *fm, bw_bufs *bb, float dloss) {
    const be_backend *be = fm->be;
    const fw_acts *A = &fm->acts;
    int B = A->B, T = A->T, N = A->N, C = fm->C;
    int count = fm->last_out.count;
    const float *hidden = A->layers[fm->L - 1].y;
    zero(fm, bb->dres, (size_t)N * C);
    if (fm->info.out_kind == FW_OUT_CLASSES) {
        int L = fm->info.num_labels;
        be->cross_entropy_backward(bb->dlogits, dloss, A->lse, A->logits, A->targets, count, B, L);
        zero(fm, bb->dpool, (size_t)B * C);
        lin_bwd(fm, bb, bb->dpool, bb->dlogits, A->pooled, fm->cls_w, fm->cls_b, B, C, L, 0);
        if (A->pool_drop) be->mul_forward(bb->dpool, bb->dpool, A->pool_drop, (size_t)B * C);
        zero(fm, bb->dpool_pre, (size_t)B * C);
        be->act_backward(bb->dpool_pre, bb->dpool, A->pooled_pre, NN_ACT_TANH, (size_t)B * C);
        zero(fm, bb->dpool_in, (size_t)B * C);
        lin_bwd(fm, bb, bb->dpool_in, bb->dpool_pre, A->pooled_in, fm->pool_w, fm->pool_b, B, C,
                C, 0);
        for (int b = 0; b < B; b++) {   /* the pooler read token 0 of each row */
            float *row = bb->dres + (size_t)b * T * C;
            be->add_forward(row, row, bb->dpool_in + (size_t)b * C, (size_t)C);
        }
        return;
    }
    /* per chunk of rows: dlogits, dfin = dlogits·W (the head is a Linear, (V,C), even on
     * GPT-2), then dW when trainable (accumulated over the chunks); after an FW_LOSS
     * forward, dfin for dloss = 1 is there already */
    int half = fw_is_half(fm, fm->head_w), rows = bb->head_rows;
    if (A->dfin) be->scale_forward(bb->dfin, A->dfin, dloss, (size_t)N * C);
    for (int r0 = 0; r0 < N && !A->dfin; r0 += rows) {
        int n = N - r0 < rows ? N - r0 : rows;
        const float *logits = A->logits + (size_t)r0 * fm->V, *fin = A->fin + (size_t)r0 * C;
        fw_head_chunk_grad(fm, bb->dfin + (size_t)r0 * C, bb->dlogits, bb->dlraw, logits,
                           A->lse + r0, A->targets + r0, dloss, count, n);
        if (G(fm->head_w) || G(fm->mlm_bias))   /* a bf16 head has no gradient: NULL weight */
            be->linear_backward(NULL, G(fm->head_w), G(fm->mlm_bias), bb->dlraw, fin,
                                half ? NULL : fm->head_w, n, C, fm->V);
    }
    if (fm->info.mlm) {   /* LayerNorm ← activation ← dense */
        zero(fm, bb->dhead, (size_t)N * C);
        norm_bwd(fm, bb->dhead, bb->dfin, A->fin_mean, A->fin_rstd, A->head_act, fm->fin_w,
                 fm->fin_b, N);
        zero(fm, bb->dfin, (size_t)N * C);
        be->act_backward(bb->dfin, bb->dhead, A->head_pre, fm->act, (size_t)N * C);
        lin_bwd(fm, bb, bb->dres, bb->dfin, hidden, fm->mlm_w, fm->mlm_b, N, C, C, 0);
    } else {
        norm_bwd(fm, bb->dres, bb->dfin, A->fin_mean, A->fin_rstd, hidden, fm->fin_w, fm->fin_b,
                 N);
    }
}

/* dres = d(loss)/d(embeddings) → the embedding tables' gradients (when trainable). */
static void embed_bwd(fw_model *fm, bw_bufs *bb) {
    const be_backend *be = fm->be;
    const fw_acts *A = &fm->acts;
    int N = A->N, C = fm->C;
    size_t NC = (size_t)N * C;
    if (A->emb_drop) be->mul_forward(bb->dres, bb->dres, A->emb_drop, NC);   /* dropout */
    const float *d = bb->dres;
    if (A->emb_sum) {   /* BERT: LayerNorm over word + position + type */
        zero(fm, bb->dn, NC);
        be->layernorm_backward(bb->dn, G(fm->embn_w), G(fm->embn_b), bb->dres, A->emb_mean,
                               A->emb_rstd, A->emb_sum, fm->embn_w, N, C);
        d = bb->dn;
    }
    if (fm->emb_scale > 0) {
        zero(fm, bb->dn, NC);
        be->scale_backward(bb->dn, bb->dres, fm->emb_scale, NC);
        d = bb->dn;
    }
    if (G(fm->embed_w)) be->embedding_backward(G(fm->embed_w), d, A->ids, N, C);
    if (fm->pos_w && G(fm->pos_w)) be->embedding_backward(G(fm->pos_w), d, A->pos, N, C);
    if (fm->type_w && G(fm->type_w)) be->embedding_backward(G(fm->type_w), d, A->types, N, C);
}

/* ---- the backward --------------------------------------------------------------------------- */

int bw_last_loss(const fw_model *fm, float *loss, int *count) {
    if (!fm->have_acts || !fm->runs)
        return lp_seterr("no forward to differentiate: run forward first");
    if (!(fm->last_flags & FW_KEEP) || (fm->last_flags & FW_LAST) || fm->kv)
        return lp_seterr("the last forward on this model did not keep its activations "
                         "(generation, attention or a plain evaluation ran since): run forward "
                         "again, then backward");
    if (fm->fwd_epoch != fm->lora_epoch)
        return lp_seterr("the adapters changed since the last forward (added, removed, switched "
                         "on or off): run forward again, then backward");
    if (!fm->last_out.has_loss)
        return lp_seterr("the last forward had no labels, so no loss to differentiate");
    *loss = fm->last_out.loss;
    *count = fm->last_out.count;
    return 0;
}

int bw_backward(fw_model *fm, float dloss) {
    float loss;
    int count = 0;
    if (bw_last_loss(fm, &loss, &count) < 0) return -1;
    if (count == 0) return 0;   /* every target ignored: no gradient */
    int rmax = 0, wmax = 0;
    for (size_t i = 0; i < fm->nlora; i++) {
        const fw_lora *lo = fm->loras[i];
        if (lo->kind == FW_AD_LORA && lo->r > rmax) rmax = lo->r;
        if (lo->kind != FW_AD_LORA && lo->enabled && fw_lora_hw(lo) > wmax) wmax = fw_lora_hw(lo);
    }
    bw_bufs bb;
    size_t need = plan(fm, NULL, &bb, rmax, wmax);
    if (need > fm->bw_cap) {
        fm->be->free(fm->bw_arena);
        fm->bw_arena = fm->be->alloc(need * sizeof(float));
        fm->bw_cap = fm->bw_arena ? need : 0;
        if (!fm->bw_arena)
            return lp_preferr("backward scratch for %d × %d tokens (%.1f MB)", fm->acts.B,
                              fm->acts.T, need * 4.0 / 1e6);
    }
    plan(fm, fm->bw_arena, &bb, rmax, wmax);
    /* the lowest layer with something to train: nothing below it is visited */
    int emb = G(fm->embed_w) || G(fm->pos_w) || G(fm->type_w) || G(fm->embn_w) || G(fm->embn_b);
    int lowest = emb ? -1 : fm->L;
    for (int l = 0; l < fm->L && lowest == fm->L; l++)
        if (layer_trainable(fm, l)) lowest = l;
    fm->dora_oom = 0;   /* DoRA's scratch (lin_bwd16) */
    head_bwd(fm, &bb, dloss);
    for (int l = fm->L - 1; l >= 0 && l >= lowest; l--) {
        int need_dx = l > lowest;
        if (fw_remake_layer(fm, l) < 0) return -1;
        if (fm->a->flags & AF_POST_LN) encoder_layer_bwd(fm, &bb, l, need_dx);
        else decoder_layer_bwd(fm, &bb, l, need_dx);
    }
    if (emb) embed_bwd(fm, &bb);
    /* no wait for the device: the gradients are for ops queued after these. An op without
     * device scratch skipped its part (its message is set): gradients incomplete */
    if (fm->be->op_failed && fm->be->op_failed()) return -1;
    if (fm->dora_oom) return lp_seterr("out of memory for the DoRA adapters' gradients");
    return fm->after_backward ? fm->after_backward(fm, dloss) : 0;
}
