/* fuzz_config.c — libFuzzer target for config.json (mdl_config_parse) and what follows from
 * it: the architecture table checks and the module tree over fixed tiny checkpoints (llama,
 * gpt2, bert from tests/fixtures/models, found next to this source file). Any input must give
 * a config or a message; a config must give a model or a message. */
#include "model/model.h"
#include "util/err.h"
#include "util/mem.h"
#include <assert.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static st_file *files[3];
static size_t nfiles;

static void load_fixtures(void) {
    static const char *names[] = {"llama", "gpt2", "bert"};
    char root[1024];
    snprintf(root, sizeof root, "%s", __FILE__);   /* .../tests/fuzz/fuzz_config.c */
    char *cut = strstr(root, "tests/fuzz/");
    if (cut) *cut = 0; else snprintf(root, sizeof root, "./");
    for (size_t i = 0; i < 3; i++) {
        char path[1200];
        snprintf(path, sizeof path, "%stests/fixtures/models/%s/model.safetensors", root, names[i]);
        st_file *f = st_open(path);
        if (!f) { fprintf(stderr, "fuzz_config: %s\n", lp_geterr()); abort(); }
        files[nfiles++] = f;
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (!nfiles) load_fixtures();
    mdl_config *c = mdl_config_parse((const char *)data, size, "config.json");
    if (!c) {
        assert(strncmp(lp_geterr(), "config.json", 11) == 0 || strstr(lp_geterr(), "out of memory"));
        return 0;
    }
    for (size_t i = 0; i < nfiles; i++) {
        mdl_config *ci = i == 0 ? c : mdl_config_parse((const char *)data, size, "config.json");
        mdl_model *m = mdl_from_files(&files[i], 1, ci, "fuzz");
        if (!m) continue;
        const mdl_module *hits[4];
        mdl_glob(m, "layers.0.*", hits, 4);
        mdl_find(m, "layers[1].self_attn");
        mdl_find_tensor(m, "lm_head.weight");
        assert(m->summary.params == m->root->nparams);
        mdl_free(m);
    }
    return 0;
}
