/* fuzz_safetensors.c — libFuzzer target for the safetensors header reader (st_open_mem).
 * Any input must either be refused with a message or give tensors whose data lies inside
 * the buffer; conversion of each tensor's first elements must stay in bounds (ASan checks),
 * and the module tree built from its names must hold together. */
#include "model/model.h"
#include "model/st.h"
#include "util/err.h"
#include <assert.h>
#include <stdint.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    st_file *f = st_open_mem(data, size, "fuzz");
    if (!f) {
        assert(strncmp(lp_geterr(), "fuzz", 4) == 0 || strstr(lp_geterr(), "out of memory"));
        return 0;
    }
    float out[8];
    for (size_t i = 0; i < f->ntensors; i++) {
        const st_tensor *t = &f->tensors[i];
        assert(st_find(f, t->name) == t);
        assert((const uint8_t *)t->data >= data && (const uint8_t *)t->data + t->nbytes <= data + size);
        size_t n = t->nelem < 8 ? (size_t)t->nelem : 8;
        if (st_dtype_bits(t->dtype) % 8 == 0) st_to_f32(out, t->data, t->dtype, 0, n);
    }
    st_meta(f, "format");
    /* the module tree of an unknown architecture, built from whatever names the file has */
    mdl_model *m = mdl_from_files(&f, 1, NULL, "fuzz");
    if (m) {
        const mdl_module *hits[4];
        mdl_glob(m, "*.0.*", hits, 4);
        if (f->ntensors) mdl_find_tensor(m, f->tensors[0].name);
        mdl_free(m);
    }
    st_close(f);
    return 0;
}
