/* cuda_loader.c — be_cuda() and the pool statistics of cuda_backend.h, in the runtime: the
 * first call dlopen()s the CUDA backend library (cuda_plugin.h), later calls use it. The
 * library is found at $LOUPE_CUDA_LIB, else where the build put it, else by the dynamic
 * linker's search (LD_LIBRARY_PATH). A library that cannot be loaded is the same error as no
 * device: "no CUDA device: …" with dlopen's reason. */
#ifdef LOUPE_HAVE_CUDA
#include <dlfcn.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend/cuda/cuda_backend.h"
#include "backend/cuda/cuda_plugin.h"
#include "util/err.h"
#include "util/mem.h"

static struct {
    const be_backend *(*be_cuda)(void);
    const be_backend *(*be_cuda_table)(int bf16);
    void (*memory)(be_cuda_mem_stats *out);
    void (*reset_peak)(void);
    size_t (*peak_bytes)(void);
    void (*trim)(void);
    const char *(*device_name)(void);
    size_t (*profile)(be_cuda_op_time *out, size_t cap, int reset);
    long (*waits)(void);
} lib;
static char load_err[768];
static pthread_once_t load_once = PTHREAD_ONCE_INIT;

static void *open_lib(void) {
    const char *env = getenv("LOUPE_CUDA_LIB");
    const char *paths[] = {env && *env ? env : NULL, LOUPE_CUDA_PLUGIN, "libloupe_cuda.so"};
    for (int i = 0; i < 3; i++) {
        if (!paths[i]) continue;
        void *h = dlopen(paths[i], RTLD_NOW | RTLD_LOCAL);
        if (h) return h;
        snprintf(load_err, sizeof load_err, "cannot load the CUDA backend library: %s",
                 dlerror());
        if (i == 0) break;   // an explicit LOUPE_CUDA_LIB is the one meant
    }
    return NULL;
}

static void load(void) {
    void *h = open_lib();
    if (!h) return;
    int (*init)(const lp_cuda_host *, int) =
        (int (*)(const lp_cuda_host *, int))dlsym(h, "loupe_cuda_plugin_init");
    lp_cuda_host host = {lp_malloc, lp_free, lp_seterr, lp_geterr, lp_mem_fail_after};
#define SYM(field, name) *(void **)&lib.field = dlsym(h, name)
    SYM(be_cuda, "be_cuda");
    SYM(be_cuda_table, "be_cuda_table");
    SYM(memory, "be_cuda_memory");
    SYM(reset_peak, "be_cuda_reset_peak");
    SYM(peak_bytes, "be_cuda_peak_bytes");
    SYM(trim, "be_cuda_trim");
    SYM(device_name, "be_cuda_device_name");
    SYM(profile, "be_cuda_profile");
    SYM(waits, "be_cuda_waits");
#undef SYM
    if (!init || !lib.be_cuda || !lib.be_cuda_table || !lib.memory || !lib.reset_peak ||
        !lib.peak_bytes || !lib.trim || !lib.device_name || !lib.profile || !lib.waits ||
        init(&host, LP_CUDA_PLUGIN_ABI) != 0) {
        snprintf(load_err, sizeof load_err,
                 "the CUDA backend library does not match this build (rebuild loupe)");
        memset(&lib, 0, sizeof lib);
    }
}

static int loaded(void) {
    pthread_once(&load_once, load);
    return lib.be_cuda != NULL;
}

static int started;   /* be_cuda() has returned the table once */

const be_backend *be_cuda(void) {
    if (!loaded()) return lp_seterr("no CUDA device: %s", load_err), NULL;
    const be_backend *be = lib.be_cuda();
    if (be) started = 1;
    return be;
}

const be_backend *be_cuda_as(int bf16) {
    if (!loaded()) return lp_seterr("no CUDA device: %s", load_err), NULL;
    const be_backend *be = lib.be_cuda_table(bf16);
    if (be) started = 1;
    return be;
}

int be_cuda_started(void) { return started; }

void be_cuda_memory(be_cuda_mem_stats *out) {
    if (loaded()) lib.memory(out);
    else memset(out, 0, sizeof *out);
}
void be_cuda_reset_peak(void) {
    if (loaded()) lib.reset_peak();
}
size_t be_cuda_peak_bytes(void) { return loaded() ? lib.peak_bytes() : 0; }
void be_cuda_trim(void) {
    if (loaded()) lib.trim();
}
const char *be_cuda_device_name(void) { return loaded() ? lib.device_name() : ""; }
size_t be_cuda_profile(be_cuda_op_time *out, size_t cap, int reset) {
    return loaded() ? lib.profile(out, cap, reset) : 0;
}
long be_cuda_waits(void) { return loaded() ? lib.waits() : 0; }
#endif
