/* save.c — `save VALUE "file.safetensors"`: any tensor-like value into a safetensors file that
 * other tools read (safetensors, torch, numpy). `save MODEL DIR` (a whole model as a Hugging
 * Face checkpoint) is handed to save_model.c.
 *
 *   out = forward model "The cat sat"
 *   save out.logits "logits.safetensors"                 # one tensor, named "tensor"
 *   save {"logits": out.logits, "q": model.layers[0].self_attn.q_proj.weight} "x.safetensors"
 *
 * A value is a weight of a loaded model (its values widened to f32), or a list of numbers
 * nested to any depth with a rectangular shape (f32). A dict saves each entry under its key. */
#include <stdio.h>
#include <string.h>

#include "commands/compute.h"
#include "commands/list_tensor.h"
#include "commands/model.h"
#include "lang/registry.h"
#include "model/st.h"
#include "util/mem.h"

typedef struct {
    char *name;
    lt_tensor t;
} save_item;

static int collect(lv_value *v, const char *name, save_item *it) {
    memset(it, 0, sizeof *it);
    it->name = lp_strdup(name);
    if (!it->name) return lp_seterr("out of memory");
    const mdl_tensor *t = lv_opaque_ptr(v, &lv_tensor_type) ? mv_tensor_of(v) : NULL;
    if (!t) return lt_from_value(v, name, &it->t);
    if (t->st->ndim > LT_MAX_DIMS) return lp_seterr("`%s`: too many dimensions", name);
    it->t.ndim = t->st->ndim;
    for (int d = 0; d < it->t.ndim; d++) it->t.shape[d] = t->st->shape[d];
    it->t.nelem = t->st->nelem;
    it->t.data = lp_malloc(sizeof(float) * (t->st->nelem ? t->st->nelem : 1));
    if (!it->t.data) return lp_seterr("out of memory");
    return mdl_tensor_to_f32(t, 0, (size_t)t->st->nelem, it->t.data);
}

static int run_save(lp_call *c, lv_value **result) {
    (void)result;
    lv_value *v = lp_arg(c, "value");
    const char *path = lp_arg_str(c, "path");
    if (lv_opaque_ptr(v, &lv_model_type)) return cmd_save_model(c, v, path, lp_arg_str(c, "dtype"));
    if (mv_model_of(v) && !lv_opaque_ptr(v, &lv_tensor_type))
        return lp_fail(c, "TypeError", "save takes a whole model, a weight or a list of numbers; a "
                       "module is neither (save its weight: `save MODULE.weight PATH`)");
    if (lp_arg_str(c, "dtype"))
        return lp_fail(c, "ValueError", "dtype= is for saving a model; tensors are saved as f32");
    size_t n = v->kind == LV_DICT ? v->u.dict.n : 1;
    if (n == 0) return lp_fail(c, "ValueError", "the dict is empty: nothing to save");
    save_item *items = lp_calloc(n, sizeof *items);
    st_wtensor *w = lp_calloc(n, sizeof *w);
    int rc = -1;
    if (!items || !w) { lp_fail(c, "MemoryError", "out of memory"); goto out; }
    for (size_t i = 0; i < n; i++) {
        lv_value *x = v->kind == LV_DICT ? v->u.dict.e[i].val : v;
        const char *name = v->kind == LV_DICT ? v->u.dict.e[i].key : "tensor";
        if (collect(x, name, &items[i])) { lp_fail(c, "ValueError", "%s", lp_geterr()); goto out; }
        w[i] = (st_wtensor){items[i].name, ST_F32, items[i].t.ndim, items[i].t.shape, items[i].t.data};
    }
    if (st_write(path, w, n, NULL, 0)) { lp_fail(c, "IOError", "%s", lp_geterr()); goto out; }
    char msg[512];
    int len = snprintf(msg, sizeof msg, "saved %zu tensor%s to %s\n", n, n == 1 ? "" : "s", path);
    lp_out_text(c, 1, msg, (size_t)len < sizeof msg ? (size_t)len : sizeof msg - 1);
    rc = 0;
out:
    for (size_t i = 0; items && i < n; i++) { lp_free(items[i].name); lt_free(&items[i].t); }
    lp_free(items);
    lp_free(w);
    return rc;
}

static const lp_param save_params[] = {
    { "value", LP_T_ANY, .help = "a model, a weight, a list of numbers (logits, attention weights…), or a dict of them" },
    { "path", LP_T_STRING, .help = "the .safetensors file to write (replaced atomically); for a model, the checkpoint directory" }, { 0 } };
static const lp_param save_opts[] = {
    { "dtype", LP_T_STRING, .def = "none", .help = "a model's weights as \"f32\", \"bf16\" or \"f16\" (none: each keeps its own)" }, { 0 } };

const lp_command lp_cmd_save = {
    "save", save_params, save_opts, run_save,
    .summary = "Write a model as a Hugging Face checkpoint, or tensors to a safetensors file",
    .help = "A model is written as a checkpoint directory transformers loads (from_pretrained):\n"
            "config.json, model.safetensors with the weights as trained (unfrozen, merged), the\n"
            "tokenizer files; it appears whole, even if the process is killed mid-save. A LoRA\n"
            "adapter that is not merged is refused (merge it, or `save_adapter`).\n"
            "Lists of numbers are saved as f32 with their nested shape; a dict saves each entry\n"
            "under its key (one value alone is named \"tensor\"). The file has {\"format\": \"pt\"}\n"
            "metadata, so safetensors, torch and transformers read it.\n"
            "Example:\n    save model \"out/my-model\"\n    out = forward model \"The cat sat\"\n    save out.logits \"logits.safetensors\"\n"
            "    save {\"q\": model.layers[0].self_attn.q_proj.weight} \"q.safetensors\"",
};
