/* emu_alloc.cc — in libloupe_cuda_emu.so only: be_cuda, which the loader calls, wrapping
 * cuda_mem.cu's (compiled as emu_pool_be_cuda by build_lib.sh). */
#include "emu.h"

#include <sys/mman.h>
#include <map>

void emu_block_add(void *p, size_t n);   // emu_rt.cc
size_t emu_block_remove(void *p);

/* ---- LOUPE_EMU_ALLOC: the table's alloc without the pool ---------------------------------------
 * The pool (cuda_mem.cu) rounds every request up (512 bytes, 1 MB), so a kernel that reads or
 * writes a little past a tensor stays inside the block and nothing faults. With
 * LOUPE_EMU_ALLOC=exact the table's alloc/free (what the ops' inputs and outputs come from)
 * bypass the pool: every tensor is a block of exactly its size ending at a PROT_NONE page;
 * =front puts the PROT_NONE page right before the tensor instead (reads before the start
 * fault). Pool statistics then leave those out, so this is for the op tests (test_nn_ops),
 * not the memory tests. build_lib.sh compiles cuda_mem.cu's be_cuda as emu_pool_be_cuda. */
extern "C" const be_backend *emu_pool_be_cuda(void);

static int alloc_mode() {   // 0 pool, 1 exact, 2 front
    static int m = -1;
    if (m < 0) {
        const char *e = getenv("LOUPE_EMU_ALLOC");
        m = !e ? 0 : !strcmp(e, "exact") ? 1 : !strcmp(e, "front") ? 2 : 0;
    }
    return m;
}

static void *exact_alloc(size_t bytes) {
    void *node = lp_malloc(16);   // lp_mem_fail_after() reaches it, as the pool's records
    if (!node) {
        lp_seterr("out of GPU memory allocating %zu bytes; try a smaller batch or sequence", bytes);
        return NULL;
    }
    lp_free(node);
    size_t n = bytes ? bytes : 1, pg = 4096, body = (n + pg - 1) / pg * pg;
    char *m;
    if (alloc_mode() == 1) {
        m = (char *)guarded(n);
    } else {
        char *p = (char *)mmap(NULL, body + pg, PROT_READ | PROT_WRITE,
                               MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (p == MAP_FAILED) abort();
        mprotect(p, pg, PROT_NONE);
        m = p + pg;
    }
    memset(m, 0xff, n);
    emu_block_add(m, n);
    return m;
}

static void exact_free(void *p) {
    if (!p) return;
    size_t n = emu_block_remove(p), pg = 4096, body = (n + pg - 1) / pg * pg;
    if (!n) {
        fprintf(stderr, "emu: free of a pointer alloc did not hand out\n");
        abort();
    }
    if (alloc_mode() == 1) munmap((char *)p + n - body, body + pg);
    else munmap((char *)p - pg, body + pg);
}

extern "C" const be_backend *be_cuda(void) {
    const be_backend *t = emu_pool_be_cuda();
    if (!t || !alloc_mode()) return t;
    static std::map<const be_backend *, be_backend *> patched;
    be_backend *&c = patched[t];
    if (!c) {
        c = new be_backend(*t);
        c->alloc = exact_alloc, c->free = exact_free;
    }
    return c;
}
