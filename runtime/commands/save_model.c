/* save_model.c — `save MODEL DIR`: the whole model as a Hugging Face checkpoint, with what
 * training changed (runtime/train/model_save.c writes it).
 *
 *   unfreeze m "layers.1.*"
 *   train m data steps=20
 *   save m "out/tuned"                 # config.json + model.safetensors (+ tokenizer files)
 *   save m "out/tuned-bf16" dtype="bf16"
 *
 * A LoRA adapter that is not merged is refused: a checkpoint has no place for it. */
#include <stdio.h>
#include <string.h>

#include "commands/compute.h"
#include "commands/model.h"
#include "lang/registry.h"
#include "train/lora.h"
#include "train/model_io.h"
#include "train/train_int.h"
#include "util/mem.h"

int cmd_save_model(lp_call *c, lv_value *v, const char *dir, const char *dtype) {
    mdl_model *m = mv_model_of(v);
    st_dtype dt = ST_NDTYPES;
    if (dtype && mv_parse_dtype(dtype, &dt) < 0)
        return lp_fail(c, "ValueError", "dtype=\"%s\": expected \"f32\", \"bf16\" or \"f16\" "
                       "(none: each weight keeps its dtype)", dtype);
    if (mv_q4(v))
        return lp_fail(c, "ValueError", "this model was loaded with quantize=\"%s\": loupe does "
                       "not write quantized checkpoints (bitsandbytes' format). Save the adapter "
                       "(save_adapter MODEL \"%s\"): it goes on the full-precision model as on "
                       "the quantized one", mv_q4(v) == NN_Q4_FP4 ? "fp4"
                       : mv_q4(v) == NN_Q8 ? "int8" : "nf4", dir);
    fw_model *fm = cmd_compute_peek(v);
    if (fm) {
        tr_state *s = tr_state_of(fm);
        if (!s) return lp_fail(c, "MemoryError", "out of memory");
        for (size_t i = 0; i < s->nad; i++) {
            const char *n = s->ad[i]->name;
            if (s->ad[i]->merged) continue;
            return lp_fail(c, "ValueError",
                           "the model has adapter `%s`, not merged: a checkpoint holds the base "
                           "weights only. Merge it in first (adapter MODEL \"%s\" action=\"merge\") to save "
                           "the merged model, save the adapter alone (save_adapter MODEL \"%s\"), or "
                           "delete it (adapter MODEL \"%s\" action=\"delete\") to save the base model",
                           n, n, dir, n);
        }
    }
    if (tr_model_save(m, fm, dir, dt) < 0) {
        const char *e = lp_geterr();
        return lp_fail(c, strstr(e, "out of memory") ? "MemoryError" :
                          strstr(e, "computes with") ? "ValueError" : "IOError", "%s", e);
    }
    char msg[4300];
    int len = snprintf(msg, sizeof msg, "saved %s (%zu tensors%s) to %s\n", m->summary.architecture,
                       m->ntensors, fm ? ", with the weights as trained" : "", dir);
    lp_out_text(c, 1, msg, (size_t)len < sizeof msg ? (size_t)len : sizeof msg - 1);
    return 0;
}
