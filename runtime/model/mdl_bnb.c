/* mdl_bnb.c — checkpoints transformers saved from a bitsandbytes 4-bit or 8-bit model
 * (BitsAndBytesConfig(load_in_4bit=True, …) or load_in_8bit=True, then save_pretrained: the
 * "-bnb-4bit" and "-8bit" models of the Hub). Each quantized Linear weight W.weight is stored as its packed codes (U8, shape
 * [n/2, 1]) beside W.weight.absmax, W.weight.quant_map, with double quantization
 * W.weight.nested_absmax and W.weight.nested_quant_map, and
 * W.weight.quant_state.bitsandbytes__nf4 (or __fp4): UTF-8 JSON with quant_type, blocksize,
 * the weight's shape, and nested_offset / nested_blocksize. Here W.weight becomes a tensor of
 * its logical shape whose values read back dequantized (mdl_tensor_to_f32), its companions
 * are folded into an mdl_q4 record, and the compute stores the bytes as they are
 * (nn/q4_weights.c).
 *
 * An 8-bit (LLM.int8) weight W.weight is its int8 codes (I8 [out, in], GPT-2's Conv1D
 * transposed too) beside W.SCB (F32 [out], each row's absmax) and W.weight_format (U8, 0:
 * bitsandbytes' row layout); its values are code · (SCB · 1/127), Linear8bitLt's. */
#include <jansson.h>
#include <string.h>

#include "model/arch.h"
#include "model/mdl_int.h"
#include "util/err.h"
#include "util/mem.h"

static const char *const SUFFIX[3] = {NULL, ".quant_state.bitsandbytes__nf4",
                                      ".quant_state.bitsandbytes__fp4"};

float mdl_q4_scale(const mdl_q4 *q, size_t b) {
    if (q->absmax) return q->absmax[b];
    float v = q->code8[q->qabsmax[b]] * q->absmax2[b / 256];
    return v + q->offset;
}

static int ends_with(const char *s, const char *suf) {
    size_t l = strlen(s), k = strlen(suf);
    return l > k && !strcmp(s + l - k, suf);
}

static entry *find(entry *es, size_t n, const char *base, const char *suffix) {
    size_t bl = strlen(base);
    for (size_t i = 0; i < n; i++) {
        const char *s = es[i].st->name;
        if (!strncmp(s, base, bl) && !strcmp(s + bl, suffix)) return &es[i];
    }
    return NULL;
}

/* A companion of `base` with dtype dt and n values, copied into a new buffer (size bytes
 * each); NULL + lp_seterr when absent or of another shape. */
static void *companion(entry *es, size_t n, const char *base, const char *suffix, st_dtype dt,
                       uint64_t count, size_t size) {
    entry *e = find(es, n, base, suffix);
    if (!e) return lp_seterr("%s%s is missing (a bitsandbytes quantized weight's companion)", base, suffix), NULL;
    if (e->st->dtype != dt || e->st->nelem != count)
        return lp_seterr("%s%s: %llu %s values, where this quantized weight needs %llu %s", base,
                         suffix, (unsigned long long)e->st->nelem, st_dtype_name(e->st->dtype),
                         (unsigned long long)count, st_dtype_name(dt)),
               NULL;
    void *p = lp_malloc(count ? count * size : 1);
    if (!p) return lp_seterr("out of memory"), NULL;
    memcpy(p, e->st->data, count * size);
    e->drop = 1;
    return p;
}

/* The kind of weight a companion announces: 1 nf4, 2 fp4, 3 int8 (W.SCB), 0 none. */
static int kind_of(const char *name) {
    return ends_with(name, SUFFIX[1]) ? 1 : ends_with(name, SUFFIX[2]) ? 2
           : ends_with(name, ".SCB") ? 3 : 0;
}

/* Both kinds share the summary: one kind a checkpoint. */
static int note_kind(mdl_model *m, size_t k, int type, int nested, const char *base) {
    if (k && (m->summary.q4 != type || m->summary.q4_double != nested))
        return lp_seterr("%s: quantized weights of more than one kind in one checkpoint", base);
    m->summary.q4 = type;
    m->summary.q4_double = nested;
    return 0;
}

static int fold_one(mdl_model *m, entry *es, size_t n, entry *qs, int type, size_t k) {
    char base[1024];
    size_t bl = strlen(qs->st->name) - strlen(SUFFIX[type]);
    if (bl >= sizeof base) return lp_seterr("%s: name too long", qs->st->name);
    memcpy(base, qs->st->name, bl);
    base[bl] = 0;
    entry *w = find(es, n, base, "");
    if (!w || w->st->dtype != ST_U8)
        return lp_seterr("%s: the packed weight %s is missing or not U8", qs->st->name, base);
    json_error_t err;
    json_t *j = json_loadb(qs->st->data, qs->st->nbytes, 0, &err);
    json_t *shape = j ? json_object_get(j, "shape") : NULL;
    const char *qt = j ? json_string_value(json_object_get(j, "quant_type")) : NULL;
    int rc = 0;
    if (!json_is_array(shape) || json_array_size(shape) != 2 || !qt ||
        json_integer_value(json_object_get(j, "blocksize")) != 64 ||
        strcmp(qt, type == 1 ? "nf4" : "fp4"))
        rc = lp_seterr("%s: a quant_state loupe does not read (it reads bitsandbytes' nf4 and "
                       "fp4 with blocks of 64)", qs->st->name);
    int64_t out = rc ? 0 : json_integer_value(json_array_get(shape, 0));
    int64_t in = rc ? 0 : json_integer_value(json_array_get(shape, 1));
    uint64_t ne = (uint64_t)out * (uint64_t)in, nb = (ne + 63) / 64;
    if (!rc && (out <= 0 || in <= 0 || w->st->nbytes != (ne + 1) / 2))
        rc = lp_seterr("%s: %llu bytes of codes for a [%lld, %lld] weight", base,
                       (unsigned long long)w->st->nbytes, (long long)out, (long long)in);
    json_t *off = rc ? NULL : json_object_get(j, "nested_offset");
    if (!rc && off && json_integer_value(json_object_get(j, "nested_blocksize")) != 256)
        rc = lp_seterr("%s: nested blocks of other than 256", qs->st->name);
    mdl_q4 *q = &m->q4s[k];
    q->type = type;
    float *code = NULL;
    if (!rc && off) {
        q->offset = (float)json_number_value(off);
        if (!(q->qabsmax = companion(es, n, base, ".absmax", ST_U8, nb, 1)) ||
            !(q->absmax2 = companion(es, n, base, ".nested_absmax", ST_F32, (nb + 255) / 256, 4)) ||
            !(q->code8 = companion(es, n, base, ".nested_quant_map", ST_F32, 256, 4)))
            rc = -1;
    } else if (!rc && !(q->absmax = companion(es, n, base, ".absmax", ST_F32, nb, 4))) {
        rc = -1;
    }
    if (!rc && !(code = companion(es, n, base, ".quant_map", ST_F32, 16, 4))) rc = -1;
    json_decref(j);
    if (rc) return -1;
    memcpy(q->code, code, sizeof q->code);
    lp_free(code);
    uint64_t *sh = lp_malloc(2 * sizeof *sh);
    if (!sh) return lp_seterr("out of memory");
    /* GPT-2's Conv1D weights are [in, out]; transformers quantized their transpose */
    q->transposed = m->arch && (m->arch->flags & AF_CONV1D);
    sh[0] = (uint64_t)(q->transposed ? in : out), sh[1] = (uint64_t)(q->transposed ? out : in);
    st_tensor *t = &m->q4_st[k];
    *t = *w->st;
    t->ndim = 2, t->shape = sh, t->nelem = ne;
    q->codes = w->st->data;
    w->st = t;
    w->q4 = q;
    qs->drop = 1;
    return note_kind(m, k, type, q->qabsmax != NULL, base);
}

/* W.SCB: W.weight's int8 codes [out, in] and their row scales (see the top). */
static int fold_int8(mdl_model *m, entry *es, size_t n, entry *scb, size_t k) {
    char base[1024], name[1100];
    size_t bl = strlen(scb->st->name) - 4;
    if (bl >= sizeof base) return lp_seterr("%s: name too long", scb->st->name);
    memcpy(base, scb->st->name, bl);
    base[bl] = 0;
    snprintf(name, sizeof name, "%s.weight", base);
    entry *w = find(es, n, name, "");
    if (!w || w->st->dtype != ST_I8 || w->st->ndim != 2)
        return lp_seterr("%s: the int8 weight %s is missing or not a 2-D I8 tensor "
                         "(bitsandbytes 8-bit weight)", scb->st->name, name);
    uint64_t out = w->st->shape[0], in = w->st->shape[1];
    entry *f = find(es, n, name, "_format");
    if (f && (f->st->dtype != ST_U8 || f->st->nelem != 1))
        return lp_seterr("%s_format: expected one U8 value", name);
    if (f && ((const uint8_t *)f->st->data)[0] != 0) {
        static const char *const layout[] = {"row", "col32", "col_turing", "col_ampere"};
        unsigned v = ((const uint8_t *)f->st->data)[0];
        return lp_seterr("%s is stored in bitsandbytes' %s layout (a GPU tiling of its older "
                         "versions); loupe reads the row layout: load it with a current "
                         "bitsandbytes and save it again", name, v < 4 ? layout[v] : "unknown");
    }
    mdl_q4 *q = &m->q4s[k];
    q->type = 3;
    if (!(q->absmax = companion(es, n, base, ".SCB", ST_F32, out, 4))) return -1;
    if (f) f->drop = 1;
    uint64_t *sh = lp_malloc(2 * sizeof *sh);
    if (!sh) return lp_seterr("out of memory");
    q->transposed = m->arch && (m->arch->flags & AF_CONV1D);   /* stored [out, in] too */
    sh[0] = q->transposed ? in : out, sh[1] = q->transposed ? out : in;
    st_tensor *t = &m->q4_st[k];
    *t = *w->st;
    t->shape = sh;
    q->codes = w->st->data;
    w->st = t;
    w->q4 = q;
    return note_kind(m, k, 3, 0, name);
}

/* W.weight_format left over: an 8-bit weight whose scales (W.SCB) are not there. */
static int orphan_formats(const entry *es, size_t n) {
    for (size_t i = 0; i < n; i++) {
        const char *s = es[i].st->name;
        if (ends_with(s, ".weight_format") && !es[i].drop)
            return lp_seterr("%.*s: a bitsandbytes 8-bit weight without its row scales (%.*sSCB)",
                             (int)(strlen(s) - 7), s, (int)(strlen(s) - 13), s);
    }
    return 0;
}

int mdl_bnb_fold(mdl_model *m, entry *es, size_t n) {
    size_t count = 0;
    for (size_t i = 0; i < n; i++) count += kind_of(es[i].st->name) != 0;
    if (!count) return orphan_formats(es, n);
    m->q4s = lp_calloc(count, sizeof *m->q4s);
    m->q4_st = lp_calloc(count, sizeof *m->q4_st);
    if (!m->q4s || !m->q4_st) return lp_seterr("out of memory");
    m->nq4 = count;   /* mdl_free frees every record, filled or not */
    for (size_t i = 0, k = 0; i < n; i++) {
        int type = kind_of(es[i].st->name);
        if (type == 3 && fold_int8(m, es, n, &es[i], k++) < 0) return -1;
        if (type && type < 3 && fold_one(m, es, n, &es[i], type, k++) < 0) return -1;
    }
    if (orphan_formats(es, n) < 0) return -1;
    /* one dynamic map for the whole model (the compute keeps one copy on the device) */
    for (size_t k = 1; k < m->nq4; k++)
        if (m->q4s[k].code8 && memcmp(m->q4s[k].code8, m->q4s[0].code8, 256 * sizeof(float)))
            return lp_seterr("%s: the 4-bit weights' nested quant maps differ", m->path);
    return 0;
}
