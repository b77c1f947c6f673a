/* model_save.c — `save MODEL DIR`: a Hugging Face checkpoint directory (model_io.h).
 *
 *   <dir>/config.json              the model's config.json, with architectures, model_type,
 *                                  dtype (transformers 5) and torch_dtype (4.x) set
 *   <dir>/model.safetensors        every parameter under transformers' name, {"format": "pt"};
 *                                  tied weights (lm_head) left out, as save_pretrained does
 *   <dir>/generation_config.json   copied when the checkpoint had one
 *   <dir>/tokenizer.json …         the tokenizer files beside the checkpoint (or a created
 *                                  model's tokenizer=)
 *
 * The directory appears whole (util/savedir.h). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "model/arch.h"
#include "model/st.h"
#include "train/model_io.h"
#include "util/err.h"
#include "util/mem.h"
#include "util/savedir.h"

static const char *const tok_files[] = {
    "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "added_tokens.json",
    "vocab.json", "merges.txt", "vocab.txt", "tokenizer.model", "spiece.model",
    "chat_template.jinja", NULL};

/* Order matters only when files move one by one: weights first, config last. */
static const char *const mine[] = {
    "model.safetensors", "generation_config.json", "tokenizer.json", "tokenizer_config.json",
    "special_tokens_map.json", "added_tokens.json", "vocab.json", "merges.txt", "vocab.txt",
    "tokenizer.model", "spiece.model", "chat_template.jinja", "config.json",
    "model.safetensors.index.json", "model-*", "pytorch_model*", "README.md", NULL};

static int is_file(const char *p) { struct stat s; return stat(p, &s) == 0 && S_ISREG(s.st_mode); }

static const char *torch_name(st_dtype d) {
    switch (d) {
    case ST_F32: return "float32";
    case ST_BF16: return "bfloat16";
    case ST_F16: return "float16";
    case ST_F64: return "float64";
    default: return NULL;
    }
}

/* The directory a file path is in ("." for a bare name); dst[cap]. */
static void dir_of(const char *path, char *dst, size_t cap) {
    const char *sl = strrchr(path, '/');
    if (!sl) snprintf(dst, cap, ".");
    else snprintf(dst, cap, "%.*s", (int)(sl - path + (sl == path)), path);
}

static int copy_if_there(sd_dir *sd, const char *dir, const char *name) {
    char src[4200];
    snprintf(src, sizeof src, "%s/%s", dir, name);
    return is_file(src) ? sd_copy_file(sd, src, name) : 0;
}

int tr_model_save(const mdl_model *m, fw_model *fm, const char *dir, st_dtype dtype) {
    if (!m->arch || !m->config)
        return lp_seterr("%s is not an architecture loupe computes with; save writes checkpoints "
                         "of those (save single weights with `save MODEL.some.weight FILE`)", m->path);
    fw_weight *w = NULL;
    size_t nw = 0;
    if (fm && fw_weights(fm, &w, &nw) < 0) return -1;
    size_t n = m->ntensors;
    st_wtensor *wt = lp_calloc(n ? n : 1, sizeof *wt);
    void **bufs = lp_calloc(n ? n : 1, sizeof *bufs);
    uint64_t *counts = lp_calloc(ST_NDTYPES, sizeof *counts);
    int rc = (!wt || !bufs || !counts) ? lp_seterr("out of memory") : 0;
    for (size_t i = 0; !rc && i < n; i++) {
        const mdl_tensor *t = &m->tensors[i];
        const st_tensor *st = t->st;
        st_dtype out = dtype != ST_NDTYPES && st_dtype_is_float(st->dtype) ? dtype : st->dtype;
        const fw_weight *live = NULL;
        for (size_t k = 0; k < nw && !live; k++)
            if (!strcmp(w[k].name, t->name) && w[k].numel == st->nelem) live = &w[k];
        if (live && out != ST_F32 && out != ST_BF16 && out != ST_F16) out = ST_F32;
        counts[out] += st->nelem;
        if (!live && out == st->dtype) {   /* untouched: the stored bytes as they are */
            wt[i] = (st_wtensor){t->name, out, st->ndim, st->shape, st->data};
            continue;
        }
        float *f = lp_malloc(sizeof(float) * (st->nelem ? st->nelem : 1));
        bufs[i] = f;
        if (!f) { rc = lp_seterr("out of memory"); break; }
        if (live) { if (fw_weight_read(fm, live, 0, (size_t)st->nelem, f) < 0) { rc = -1; break; } }
        else if (mdl_tensor_to_f32(t, 0, (size_t)st->nelem, f) < 0) { rc = -1; break; }
        if (out == ST_BF16 || out == ST_F16) {   /* narrowed in place, front to back: value k
                                                    goes to bytes 2k, 2k+1, already read */
            for (uint64_t k = 0; k < st->nelem; k++) {
                uint16_t h = out == ST_BF16 ? st_f32_to_bf16(f[k]) : st_f32_to_f16(f[k]);
                memcpy((char *)f + 2 * k, &h, 2);
            }
        } else if (out != ST_F32) {
            rc = lp_seterr("%s: cannot write tensor `%s` as %s", m->path, t->name, st_dtype_name(out));
            break;
        }
        wt[i] = (st_wtensor){t->name, out, st->ndim, st->shape, f};
    }
    /* the dtype most parameters have names the checkpoint's dtype */
    st_dtype main_dt = ST_F32;
    for (int d = 0; counts && d < ST_NDTYPES; d++)
        if (counts[d] > counts[main_dt]) main_dt = (st_dtype)d;
    sd_dir sd;
    int begun = 0;
    if (!rc) {
        rc = sd_begin(&sd, dir);
        begun = !rc;
    }
    if (!rc) {
        char *p = sd_path(&sd, "model.safetensors");
        rc = p ? st_write(p, wt, n, NULL, 0) : -1;
        lp_free(p);
    }
    if (!rc) {
        json_t *cfg = json_deep_copy(m->config->raw);
        if (!cfg) rc = lp_seterr("out of memory");
        else {
            if (!json_object_get(cfg, "architectures")) {
                json_t *a = json_array();
                json_array_append_new(a, json_string(m->arch->name));
                json_object_set_new(cfg, "architectures", a);
            }
            const char *tn = torch_name(main_dt);
            if (tn) {
                json_object_set_new(cfg, "dtype", json_string(tn));
                json_object_set_new(cfg, "torch_dtype", json_string(tn));
            }
            char *text = json_dumps(cfg, JSON_INDENT(2) | JSON_SORT_KEYS);
            json_decref(cfg);
            size_t len = text ? strlen(text) : 0;
            char *nl = text ? lp_malloc(len + 2) : NULL;
            if (!nl) rc = lp_seterr("out of memory");
            else {
                memcpy(nl, text, len);
                memcpy(nl + len, "\n", 2);
                rc = sd_write_text(&sd, "config.json", nl);
            }
            lp_free(nl);
            free(text);
        }
    }
    /* files beside the checkpoint, and the tokenizer's */
    char mdir[4096] = "", tdir[4096] = "";
    struct stat s;
    if (stat(m->path, &s) == 0) {
        if (S_ISDIR(s.st_mode)) snprintf(mdir, sizeof mdir, "%s", m->path);
        else dir_of(m->path, mdir, sizeof mdir);
    }
    if (m->tokenizer) dir_of(m->tokenizer, tdir, sizeof tdir);
    else snprintf(tdir, sizeof tdir, "%s", mdir);
    if (!rc && mdir[0]) rc = copy_if_there(&sd, mdir, "generation_config.json");
    if (!rc && m->tokenizer) {
        rc = sd_copy_file(&sd, m->tokenizer, "tokenizer.json");
        for (int i = 1; !rc && tok_files[i]; i++) rc = copy_if_there(&sd, tdir, tok_files[i]);
    } else if (!rc && tdir[0]) {
        for (int i = 0; !rc && tok_files[i]; i++) rc = copy_if_there(&sd, tdir, tok_files[i]);
    }
    if (begun) {
        if (rc) sd_abort(&sd);
        else {
            rc = sd_commit(&sd, mine);
            /* moved file by file beside an older sharded checkpoint: its index would win */
            char ix[4200];
            snprintf(ix, sizeof ix, "%s/model.safetensors.index.json", dir);
            if (!rc && is_file(ix)) remove(ix);
        }
    }
    for (size_t i = 0; bufs && i < n; i++) lp_free(bufs[i]);
    lp_free(bufs);
    lp_free(wt);
    lp_free(counts);
    return rc;
}
