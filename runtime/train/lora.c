/* lora.c — LoRA adapters like PEFT's (lora.h). */
#include "train/train_int.h"

#include "util/mem.h"

void tr_adapter_free(fw_model *fm, tr_adapter *a) {
    if (!a) return;
    for (size_t i = 0; i < a->nsites; i++) {
        fw_lora_detach(fm, &a->sites[i].lo);
        lp_free(a->sites[i].module);
    }
    lp_free(a->sites);
    fw_backend(fm)->free(a->buf);
    for (size_t i = 0; i < a->ntargets; i++) lp_free(a->targets[i]);
    lp_free(a->targets);
    lp_free(a->name);
    lp_free(a->init);
    lp_free(a);
}
