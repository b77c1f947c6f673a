// shim.cu — inside libloupe_cuda.so, the runtime helpers the CUDA code calls (util/err.h,
// util/mem.h), forwarded to the loading program's own functions (cuda_plugin.h).
#include <cstdarg>
#include <cstdio>

#include "backend/cuda/cuda_plugin.h"
extern "C" {
#include "util/err.h"
#include "util/mem.h"
}

static lp_cuda_host host;

extern "C" {

int loupe_cuda_plugin_init(const lp_cuda_host *h, int abi) {
    if (abi != LP_CUDA_PLUGIN_ABI || !h) return -1;
    host = *h;
    return 0;
}

void *lp_malloc(size_t n) { return host.malloc(n); }
void lp_free(void *p) {
    if (p) host.free(p);
}
const char *lp_geterr(void) { return host.geterr(); }
void lp_mem_fail_after(long n) { host.mem_fail_after(n); }

int lp_seterr(const char *fmt, ...) {
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    return host.seterr("%s", msg);
}

}  // extern "C"
