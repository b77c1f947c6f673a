/* migrate.c — moving a model's live compute state to another device (migrate.h). */
#include "nn/migrate.h"
#include "nn/forward_int.h"

#include <assert.h>
#include <stdint.h>
#include <string.h>

#include "nn/ops_bf16.h"
#include "util/err.h"
#include "util/mem.h"

enum { STAGE_BYTES = 4 << 20 };   /* host bounce buffer: device → host → other device */

typedef struct mv_buf {
    uintptr_t old;      /* start on the old device */
    char *copy;         /* the same bytes on the new device */
    size_t bytes;
} mv_buf;

struct fw_move {
    fw_model *fm;
    const be_backend *from, *to;
    mv_buf *b;          /* [n] every buffer copied */
    size_t n, cap;
    size_t bytes;
    char *stage;        /* STAGE_BYTES host */
    char *stage2;       /* STAGE_BYTES host: a weight's values converted f32 ↔ bf16 */
    /* the weights, re-packed as the new device stores them (weights_prepare) */
    float *wbuf;        /* f32 weights on the new device */
    be_bf16 *wbuf16;    /* bf16 weights there (it has be_bf16_ops), or NULL */
    size_t n16;
    float **wnew;       /* [nweights] each weight's new address */
    float *deq;         /* the NF4 weights' dequantization scratch on the new device */
    unsigned char *whalf;   /* [nweights] stored as bf16 there */
};

fw_move *fw_move_new(fw_model *fm, const be_backend *to) {
    assert(to && fm->be != to);
    fw_move *mv = lp_calloc(1, sizeof *mv);
    if (!mv) return lp_seterr("out of memory"), NULL;
    mv->fm = fm;
    mv->from = fm->be;
    mv->to = to;
    return mv;
}

const be_backend *fw_move_from(const fw_move *mv) { return mv->from; }
const be_backend *fw_move_to(const fw_move *mv) { return mv->to; }
fw_model *fw_move_model(const fw_move *mv) { return mv->fm; }
size_t fw_move_bytes(const fw_move *mv) { return mv->bytes; }

void fw_set_train_move(fw_model *fm, fw_train_move_fn fn) { fm->train_move = fn; }

static mv_buf *find(const fw_move *mv, uintptr_t p) {
    for (size_t i = 0; i < mv->n; i++)
        if (p >= mv->b[i].old && p - mv->b[i].old < (mv->b[i].bytes ? mv->b[i].bytes : 1))
            return &mv->b[i];
    return NULL;
}

int fw_move_buf(fw_move *mv, const void *old, size_t bytes) {
    if (!old || find(mv, (uintptr_t)old)) return 0;
    if (mv->n == mv->cap) {
        size_t cap = mv->cap ? 2 * mv->cap : 64;
        mv_buf *b = lp_realloc(mv->b, cap * sizeof *b);
        if (!b) return lp_seterr("out of memory");
        mv->b = b;
        mv->cap = cap;
    }
    if (!mv->stage && !(mv->stage = lp_malloc(STAGE_BYTES))) return lp_seterr("out of memory");
    char *copy = mv->to->alloc(bytes ? bytes : 1);
    if (!copy) return -1;   /* the backend's words: "out of GPU memory allocating …" */
    for (size_t at = 0; at < bytes; at += STAGE_BYTES) {
        size_t k = bytes - at < STAGE_BYTES ? bytes - at : STAGE_BYTES;
        mv->from->to_host(mv->stage, (const char *)old + at, k);
        mv->to->to_device(copy + at, mv->stage, k);
    }
    mv->b[mv->n++] = (mv_buf){(uintptr_t)old, copy, bytes};
    mv->bytes += bytes;
    return 0;
}

void *fw_move_at(const fw_move *mv, const void *old) {
    if (!old) return NULL;
    for (size_t i = 0; mv->wnew && i < mv->fm->nweights; i++)   /* a weight: re-packed */
        if (mv->fm->weights[i].data == old) return mv->wnew[i];
    mv_buf *b = find(mv, (uintptr_t)old);
    assert(b && "a device pointer the move did not copy");
    return b->copy + ((uintptr_t)old - b->old);
}

/* ---- the model's own buffers ---------------------------------------------------------------- */

/* One weight through the host stage, converted when the two devices store it differently
 * (bf16 → f32 is exact; f32 → bf16 rounds to nearest even, as loading would). */
static void copy_weight(fw_move *mv, const fw_weight *w, void *dst, int half) {
    size_t chunk = STAGE_BYTES / sizeof(float);
    for (size_t at = 0; at < w->numel; at += chunk) {
        size_t k = w->numel - at < chunk ? w->numel - at : chunk;
        size_t sb = w->half ? sizeof(be_bf16) : sizeof(float);
        mv->from->to_host(mv->stage, (const char *)w->data + at * sb, k * sb);
        const void *src = mv->stage;
        if (w->half && !half) nn_bf16_widen((float *)mv->stage2, (const be_bf16 *)mv->stage, k);
        if (!w->half && half) nn_bf16_round((be_bf16 *)mv->stage2, (const float *)mv->stage, k);
        if (w->half != half) src = mv->stage2;
        size_t db = half ? sizeof(be_bf16) : sizeof(float);
        mv->to->to_device((char *)dst + at * db, src, k * db);
    }
}

/* The weights into new storage on the new device: bf16 where it stores bf16 (be_bf16_ops)
 * and the weight may be and is frozen, else f32; fw_weight_f32's copies are packed in too. */
static int weights_prepare(fw_move *mv) {
    fw_model *fm = mv->fm;
    size_t n = fm->nweights, n32 = 0, n16 = 0;
    mv->wnew = lp_calloc(n ? n : 1, sizeof *mv->wnew);
    mv->whalf = lp_calloc(n ? n : 1, 1);
    mv->stage2 = lp_malloc(STAGE_BYTES);
    if (!mv->wnew || !mv->whalf || !mv->stage2) return lp_seterr("out of memory");
    for (size_t i = 0; i < n; i++) {
        const fw_weight *w = &fm->weights[i];
        mv->whalf[i] = !w->q4 && mv->to->bf16 && fm->can16[i] && !w->grad;
        if (mv->whalf[i]) n16 += fw_pad16(w->numel);
        else if (!w->q4) n32 += w->numel;
    }
    if (fm->wbuf4) {   /* the 4-bit weights as they are: one buffer, and a new scratch */
        if (fw_move_buf(mv, fm->wbuf4, fm->b4) < 0) return -1;
        mv->deq = mv->to->alloc(fm->deq_cap * sizeof(float));
        if (!mv->deq) return -1;
    }
    mv->wbuf = n32 ? mv->to->alloc(n32 * sizeof(float)) : NULL;
    if (n32 && !mv->wbuf) return -1;   /* the backend's words: "out of GPU memory …" */
    mv->wbuf16 = n16 ? mv->to->alloc(n16 * sizeof(be_bf16)) : NULL;
    if (n16 && !mv->wbuf16) return -1;
    mv->n16 = n16;
    size_t o32 = 0, o16 = 0;
    for (size_t i = 0; i < n; i++) {
        const fw_weight *w = &fm->weights[i];
        if (w->q4) {
            mv_buf *b = find(mv, (uintptr_t)fm->wbuf4);
            mv->wnew[i] = (float *)(b->copy + ((uintptr_t)w->data - b->old));
            continue;
        }
        mv->wnew[i] = mv->whalf[i] ? (float *)(mv->wbuf16 + o16) : mv->wbuf + o32;
        if (mv->whalf[i]) o16 += fw_pad16(w->numel);
        else o32 += w->numel;
        copy_weight(mv, w, mv->wnew[i], mv->whalf[i]);
    }
    mv->bytes += n32 * sizeof(float) + n16 * sizeof(be_bf16);
    return 0;
}

/* Commit: the old storage goes, the new is the model's. Slots were re-pointed already. */
static void weights_commit(fw_move *mv) {
    fw_model *fm = mv->fm;
    for (size_t i = 0; i < fm->nweights; i++) {
        mv->from->free(fm->wown[i]);
        fm->wown[i] = NULL;
        fm->weights[i].half = mv->whalf[i];
    }
    if (fm->wbuf4) {   /* its old buffer goes with the others copied (move_free) */
        for (size_t i = 0; i < fm->nweights; i++)
            if (fm->weights[i].q4) {
                fw_weight *w = &fm->weights[i];
                if (w->absmax) w->absmax = fw_move_at(mv, w->absmax);
                if (w->qabsmax) w->qabsmax = fw_move_at(mv, w->qabsmax);
                if (w->absmax2) w->absmax2 = fw_move_at(mv, w->absmax2);
            }
        if (fm->code8) fm->code8 = fw_move_at(mv, fm->code8);
        fm->wbuf4 = fw_move_at(mv, fm->wbuf4);
        mv->from->free(fm->deq);
        fm->deq = mv->deq;
        mv->deq = NULL;
    }
    mv->from->free(fm->wbuf);
    mv->from->free(fm->wbuf16);
    fm->wbuf = mv->wbuf;
    fm->wbuf16 = mv->wbuf16;
    fm->n16 = mv->n16;
    mv->wbuf = NULL;
    mv->wbuf16 = NULL;
}

int fw_move_prepare(fw_move *mv) {
    fw_model *fm = mv->fm;
    mv->from->sync();
    if (!mv->stage && !(mv->stage = lp_malloc(STAGE_BYTES))) return lp_seterr("out of memory");
    if (fm->loaded) {
        if (weights_prepare(mv) < 0) return lp_preferr("the weights");
        for (size_t i = 0; i < fm->nweights; i++)
            if (fw_move_buf(mv, fm->weights[i].grad, fm->weights[i].numel * sizeof(float)) < 0)
                return lp_preferr("the gradient of %s", fm->weights[i].name);
    }
    if (fm->train && fm->train_move && fm->train_move(mv, fm, fm->train, 0) < 0) return -1;
    return 0;
}

static void at(const fw_move *mv, float **p) { *p = fw_move_at(mv, *p); }

/* Every weight slot the forward reads points at a weight (fw_move_at: its new address).
 * fw_lw holds nothing but such float pointers, so a layer is walked as an array of them. */
static void remap_weights(fw_move *mv, fw_model *fm) {
    float **model[] = {&fm->embed_w, &fm->pos_w, &fm->type_w, &fm->embn_w, &fm->embn_b,
                       &fm->fin_w, &fm->fin_b, &fm->head_w, &fm->pool_w, &fm->pool_b,
                       &fm->cls_w, &fm->cls_b, &fm->mlm_w, &fm->mlm_b, &fm->mlmn_w,
                       &fm->mlmn_b, &fm->mlm_bias};
    for (size_t i = 0; i < sizeof model / sizeof *model; i++) at(mv, model[i]);
    _Static_assert(sizeof(fw_lw) % sizeof(float *) == 0, "fw_lw holds float pointers only");
    for (int l = 0; l < fm->L; l++) {
        float **p = (float **)&fm->lw[l];
        for (size_t k = 0; k < sizeof(fw_lw) / sizeof(float *); k++) at(mv, &p[k]);
    }
    for (size_t i = 0; i < fm->nweights; i++) {
        at(mv, &fm->weights[i].data);
        at(mv, &fm->weights[i].grad);
    }
    weights_commit(mv);
}

/* The adapters' weights are the train module's (it copies and re-points them); the forward's
 * scratch in them (h, mask) is dropped with the activations. */
static void drop_lora_scratch(const fw_move *mv, fw_model *fm) {
    for (size_t i = 0; i < fm->nlora; i++) {
        fw_lora *lo = fm->loras[i];
        fw_lora_scratch_free(mv->from, lo);
        lo->mask_on = 0;
    }
}

/* Activations and scratch are made again by the next forward / backward / generate. */
static void drop_activations(const fw_move *mv, fw_model *fm) {
    mv->from->free(fm->arena);
    mv->from->free(fm->iarena);
    mv->from->free(fm->bw_arena);
    mv->from->free(fm->dec_probs);
    fm->arena = fm->bw_arena = fm->dec_probs = NULL;
    fm->iarena = NULL;
    fm->arena_cap = fm->iarena_cap = fm->bw_cap = fm->dec_cap = 0;
    fm->have_acts = 0;
    fm->lora_epoch++;   /* a backward needs a forward made after the move */
}

static void move_free(fw_move *mv, int commit) {
    for (size_t i = 0; i < mv->n; i++) {
        if (commit) mv->from->free((void *)mv->b[i].old);
        else mv->to->free(mv->b[i].copy);
    }
    mv->to->free(mv->wbuf);   /* NULL after a commit */
    mv->to->free(mv->wbuf16);
    mv->to->free(mv->deq);
    lp_free(mv->wnew);
    lp_free(mv->whalf);
    lp_free(mv->b);
    lp_free(mv->stage);
    lp_free(mv->stage2);
    lp_free(mv);
}

void fw_move_commit(fw_move *mv) {
    fw_model *fm = mv->fm;
    if (fm->train && fm->train_move) {
        int rc = fm->train_move(mv, fm, fm->train, 1);
        assert(rc == 0);
        (void)rc;
    }
    if (fm->loaded) remap_weights(mv, fm);
    drop_lora_scratch(mv, fm);
    drop_activations(mv, fm);
    fm->be = mv->to;
    fm->be->sync();
    move_free(mv, 1);
}

void fw_move_abort(fw_move *mv) {
    if (mv) move_free(mv, 0);
}
