/* emu.cc — the device side of the emulator (emu.h): fibers, barriers, shuffles, shared
 * memory and launches.
 *
 * A launch runs its blocks one after the other. In a block, every CUDA thread is a fiber
 * with a stack of its own; a fiber runs until it reaches a barrier (__syncthreads, or the
 * exchange of a warp shuffle) or returns, and then hands over to the next fiber in threadIdx
 * order that can run (its barrier open, or not started yet). When none can, yet some have
 * not returned, that is a deadlock (a barrier or shuffle that some threads never reach),
 * reported with the kernel's name. A thread that has returned no longer counts at
 * __syncthreads (as on the hardware), but a warp shuffle waits for all its lanes.
 * Stacks of finished fibers are reused, so a kernel without barriers runs on one stack.
 * On x86-64 the switch is a few instructions (no signal mask system call, as swapcontext
 * makes); elsewhere it is ucontext.
 *
 * LOUPE_EMU_ORDER=reverse runs the threads of a block, and the blocks, last to first: a
 * kernel whose result depends on the order (a missing barrier, blocks that race) gives
 * other numbers then.
 *
 * LOUPE_EMU_PROFILE=1 prints, at exit, the time spent in each kernel (launches, blocks,
 * threads): what to look at when a test is slow under the emulator. */
#include "emu.h"

#include <cxxabi.h>
#include <dlfcn.h>
#include <pthread.h>
#include <sys/mman.h>
#include <time.h>
#include <algorithm>
#include <map>
#include <string>
#include <vector>
#if !defined(__x86_64__)
#include <ucontext.h>
#endif

emu_thread *emu_cur;
uint3 emu_bid;
dim3 emu_bdim, emu_gdim;

/* ---- guarded host memory ------------------------------------------------------------------ */

static void *map_or_die(size_t n) {
    void *p = mmap(NULL, n, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE,
                   -1, 0);
    if (p == MAP_FAILED) { perror("emu: mmap"); abort(); }
    return p;
}

/* n bytes ending right before a PROT_NONE page */
void *guarded(size_t n) {
    size_t pg = 4096, body = (n + pg - 1) / pg * pg;
    char *p = (char *)map_or_die(body + pg);
    mprotect(p + body, pg, PROT_NONE);
    return p + body - n;
}

/* the same, 16-byte aligned (n rounded up): shared memory */
static void *guarded16(size_t n) { return guarded(n ? (n + 15) & ~(size_t)15 : 16); }

/* dynamic shared memory: one region per size, reused by every launch that asks for it */
static void *dyn_region(size_t n) {
    static std::map<size_t, void *> cache;
    void *&p = cache[n];
    if (!p) p = guarded16(n);
    return p;
}

/* ---- kernels: names for messages, shared-memory attributes -------------------------------- */

std::string emu_kernel_name(const void *k) {
    Dl_info di;
    if (k && dladdr(k, &di) && di.dli_sname) {
        int st = 0;
        char *d = abi::__cxa_demangle(di.dli_sname, NULL, NULL, &st);
        std::string s = st == 0 && d ? d : di.dli_sname;
        free(d);
        return s;
    }
    char buf[32];
    snprintf(buf, sizeof buf, "kernel %p", k);
    return buf;
}

static std::map<const void *, int> max_dyn_smem;   // cudaFuncAttributeMaxDynamicSharedMemorySize

cudaError_t emu_func_set_attribute(const void *kernel, cudaFuncAttribute attr, int value) {
    if (attr != cudaFuncAttributeMaxDynamicSharedMemorySize || value < 0 || value > 227 * 1024)
        return emu_set_error(cudaErrorInvalidValue), cudaErrorInvalidValue;
    max_dyn_smem[kernel] = value;
    return cudaSuccess;
}

/* ---- fibers --------------------------------------------------------------------------------- */

enum { STACK = 256 << 10, NOT_STARTED = 0, STARTED, DONE };
struct emu_fiber {
    emu_thread th;
    int state;
    char *stack;            // its top
    const unsigned *wait;   // blocked while *wait == wait_gen
    unsigned wait_gen;
#if defined(__x86_64__)
    void *sp;
#else
    ucontext_t ctx;
#endif
};

static std::vector<emu_fiber> fib;
static std::vector<char *> free_stacks;
static emu_fiber sched, *curf;   // sched: the launching thread's own context
static char *dying;              // the stack of a fiber that has just ended, freed once left
static bool stuck;               // no fiber can run, yet some have not ended: a deadlock
static bool reverse;             // LOUPE_EMU_ORDER=reverse: threads and blocks last to first
static const std::function<void()> *kfn;
static const void *kcur;        // the running kernel, for messages
static uint64_t block_serial;   // one per block run: static shared memory is per block
static unsigned nthreads, alive, arrived, bar_gen;
/* a warp's shuffle slots, double-buffered by the parity of its barrier generation: a lane
 * may write the next shuffle's slots while the others still read this one's, and cannot
 * write this one's again before every lane has passed the next barrier (so has read) */
struct warp_st { unsigned arrived, gen, size; uint64_t slot[2][32]; };
static warp_st warps[32];
static char *dyn_smem;
static size_t dyn_bytes, static_bytes, smem_limit;

static char *take_stack() {
    static unsigned made;
    if (!free_stacks.empty()) {
        char *s = free_stacks.back();
        free_stacks.pop_back();
        return s;
    }
    char *p = (char *)map_or_die(STACK + 4096);
    mprotect(p, 4096, PROT_NONE);   // an overflow faults
    // tops staggered by 64-byte lines: the hot ends of the stacks would otherwise all fall
    // into the same L1 cache sets
    return p + 4096 + STACK - (made++ % 48) * 64;
}

#if defined(__x86_64__)
/* emu_switch(&save, to): push the callee-saved registers, save rsp, load the other's, pop. */
extern "C" void emu_switch(void **save, void *to);
asm(".text\n"
    ".globl emu_switch\n.hidden emu_switch\n.type emu_switch,@function\n"
    "emu_switch:\n"
    "  pushq %rbp\n  pushq %rbx\n  pushq %r12\n  pushq %r13\n  pushq %r14\n  pushq %r15\n"
    "  movq %rsp, (%rdi)\n  movq %rsi, %rsp\n"
    "  popq %r15\n  popq %r14\n  popq %r13\n  popq %r12\n  popq %rbx\n  popq %rbp\n"
    "  ret\n"
    ".size emu_switch, .-emu_switch\n");
static void jump(emu_fiber &from, emu_fiber &to) { emu_switch(&from.sp, to.sp); }
#else
static void jump(emu_fiber &from, emu_fiber &to) { swapcontext(&from.ctx, &to.ctx); }
#endif

static void reap() {   // after every switch: the stack of the fiber that ended is free now
    if (dying) free_stacks.push_back(dying), dying = NULL;
}

static void release_block_barrier() {
    arrived = 0;
    bar_gen++;
}

static void start(emu_fiber &f);

/* Leave the running fiber for the next one, in threadIdx order after it, that can run (its
 * barrier open, or not started); none: back to the launch (all ended, or a deadlock). */
static void switch_away() {
    emu_fiber *me = curf, *to = NULL;
    unsigned i = (unsigned)(me - fib.data());
    if (reverse) i = nthreads - 1 - i;   // the position in the order of running
    for (unsigned k = 1; k <= nthreads && !to; k++) {
        unsigned t = i + k >= nthreads ? i + k - nthreads : i + k;
        if (reverse) t = nthreads - 1 - t;
        emu_fiber &f = fib[t];
        if (f.state == DONE || (f.wait && *f.wait == f.wait_gen)) continue;
        to = &f;
    }
    if (!to) {
        stuck = alive > 0;
        to = &sched;
    } else if (to->state == NOT_STARTED) {
        start(*to);
    }
    curf = to, emu_cur = &to->th;
    jump(*me, *to);
    reap();
}

[[noreturn]] static void fiber_main() {
    reap();
    (*kfn)();
    curf->state = DONE;
    alive--;
    if (arrived && arrived == alive) release_block_barrier();   // it waited on this thread only
    dying = curf->stack;
    switch_away();
    abort();   // never resumed
}

static void start(emu_fiber &f) {
    f.stack = take_stack();
    f.state = STARTED;
#if defined(__x86_64__)
    void **s = (void **)f.stack;
    *--s = NULL;                   // fiber_main's return address (it never returns)
    *--s = (void *)fiber_main;     // emu_switch's ret goes there, rsp ≡ 8 mod 16 as after a call
    for (int i = 0; i < 6; i++) *--s = NULL;   // r15 … rbp
    f.sp = s;
#else
    getcontext(&f.ctx);
    f.ctx.uc_stack.ss_sp = f.stack - STACK + (48 * 64), f.ctx.uc_stack.ss_size = STACK - 48 * 64;
    f.ctx.uc_link = NULL;
    makecontext(&f.ctx, fiber_main, 0);
#endif
}

static void block_on(const unsigned *w, unsigned gen) {
    curf->wait = w, curf->wait_gen = gen;
    switch_away();
    curf->wait = NULL;
}

void __syncthreads() {
    unsigned g = bar_gen;
    if (++arrived == alive) release_block_barrier();
    else block_on(&bar_gen, g);
}

uint64_t *emu_warp_exchange(uint64_t v, void (*all)(uint64_t *slots)) {
    warp_st &w = warps[emu_cur->lin >> 5];
    uint64_t *slot = w.slot[w.gen & 1];
    slot[emu_cur->lin & 31] = v;
    unsigned g = w.gen;
    if (++w.arrived == w.size) {   // the last lane: the collective's work, then open
        if (all) all(slot);
        w.arrived = 0, w.gen++;
    } else {
        block_on(&w.gen, g);
    }
    return slot;
}

float *emu_smem() { return (float *)dyn_smem; }

void emu_wmma_check(const char *fn, const void *p, unsigned ldm, size_t esize) {
    uintptr_t a = (uintptr_t)p, base = (uintptr_t)dyn_smem;
    if (dyn_smem && a >= base && a < base + dyn_bytes) a -= base;   // from the region's start
    if (a % 32 == 0 && ldm % (16 / esize) == 0) return;
    fprintf(stderr, "emu: %s in %s: pointer %p not 32-byte aligned or ldm %u not a multiple "
            "of %zu elements (undefined on a GPU)\n", fn, emu_kernel_name(kcur).c_str(), p, ldm,
            16 / esize);
    abort();
}

void *emu_shared_at(emu_site &s, size_t n) {
    if (s.block != block_serial) {   // the first thread of this block to get here
        if (!s.p) s.p = guarded16(n), s.n = n;
        if (s.n != n) { fprintf(stderr, "emu: static shared size changed\n"); abort(); }
        static_bytes += (n + 15) & ~(size_t)15;
        if (static_bytes + dyn_bytes > smem_limit) {
            fprintf(stderr, "emu: %s uses %zu bytes of static + %zu of dynamic shared memory, "
                    "over %zu\n", emu_kernel_name(kcur).c_str(), static_bytes, dyn_bytes, smem_limit);
            abort();
        }
        memset(s.p, 0xff, n);   // NaN as floats and doubles: unwritten shared memory
        s.block = block_serial;
    }
    return s.p;
}

[[noreturn]] static void deadlock() {
    unsigned at_bar = 0, at_warp = 0;
    for (unsigned t = 0; t < nthreads; t++) {
        if (fib[t].state == DONE || !fib[t].wait) continue;
        if (fib[t].wait == &bar_gen) at_bar++;
        else at_warp++;
    }
    fprintf(stderr, "emu: deadlock in %s, block (%u,%u,%u): %u of %u threads alive, %u waiting "
            "at __syncthreads, %u at a warp shuffle (a barrier or shuffle not every thread "
            "reaches)\n", emu_kernel_name(kcur).c_str(), emu_bid.x, emu_bid.y, emu_bid.z, alive,
            nthreads, at_bar, at_warp);
    abort();
}

static void run_block() {
    block_serial++;
    static_bytes = 0;
    if (dyn_bytes) memset(dyn_smem, 0xff, (dyn_bytes + 15) & ~(size_t)15);
    alive = nthreads, arrived = 0, bar_gen = 0;
    for (unsigned w = 0; w < (nthreads + 31) / 32; w++) {
        warps[w].arrived = warps[w].gen = 0;
        warps[w].size = nthreads - 32 * w < 32 ? nthreads - 32 * w : 32;
    }
    for (unsigned t = 0; t < nthreads; t++) fib[t].state = NOT_STARTED, fib[t].wait = NULL;
    stuck = false;
    emu_fiber &first = fib[reverse ? nthreads - 1 : 0];
    start(first);   // the fibers hand over to each other until all have ended
    curf = &first, emu_cur = &first.th;
    jump(sched, first);
    reap();
    if (stuck) deadlock();
}

/* LOUPE_EMU_PROFILE=1: seconds, launches, blocks and threads per kernel, printed at exit */
struct kstat { double s; uint64_t launches, blocks, threads; };
static std::map<const void *, kstat> *prof;
static void print_profile() {
    std::vector<std::pair<double, const void *>> order;
    double all = 0;
    for (auto &e : *prof) order.push_back({e.second.s, e.first}), all += e.second.s;
    std::sort(order.rbegin(), order.rend());
    fprintf(stderr, "emu profile: %.2f s in kernels\n", all);
    for (auto &o : order) {
        kstat &k = (*prof)[o.second];
        fprintf(stderr, "%8.3f s %8lu launches %10lu blocks %12lu threads  %s\n", k.s,
                (unsigned long)k.launches, (unsigned long)k.blocks, (unsigned long)k.threads,
                emu_kernel_name(o.second).c_str());
    }
}
static double now() {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static pthread_mutex_t launch_lock = PTHREAD_MUTEX_INITIALIZER;

void emu_launch(const void *kernel, dim3 grid, dim3 block, size_t smem, cudaStream_t,
                const std::function<void()> &fn) {
    size_t nt = (size_t)block.x * block.y * block.z;
    if (!nt || nt > 1024 || block.x > 1024 || block.y > 1024 || block.z > 64 || !grid.x ||
        !grid.y || !grid.z || grid.x > 0x7fffffffu || grid.y > 65535 || grid.z > 65535) {
        emu_set_error(cudaErrorInvalidConfiguration);
        return;
    }
    if (emu_memory_only()) return;
    pthread_mutex_lock(&launch_lock);
    auto attr = max_dyn_smem.find(kernel);
    size_t limit = attr != max_dyn_smem.end() && attr->second > 48 * 1024 ? attr->second : 48 * 1024;
    if (smem > limit) {
        pthread_mutex_unlock(&launch_lock);
        emu_set_error(cudaErrorInvalidValue);
        return;
    }
    kfn = &fn, kcur = kernel;
    emu_gdim = grid, emu_bdim = block;
    nthreads = (unsigned)nt;
    if (fib.size() < nt) fib.resize(nt);
    for (unsigned t = 0; t < nt; t++) {   // threadIdx of each fiber, x fastest
        emu_thread &th = fib[t].th;
        th.lin = t;
        th.tid.x = t % block.x, th.tid.y = t / block.x % block.y, th.tid.z = t / (block.x * block.y);
    }
    dyn_bytes = smem, smem_limit = limit;
    dyn_smem = (char *)dyn_region(smem);
    static int profile = -1;
    if (profile < 0) {
        const char *e = getenv("LOUPE_EMU_PROFILE");
        profile = e && *e == '1';
        if (profile) prof = new std::map<const void *, kstat>, atexit(print_profile);
        e = getenv("LOUPE_EMU_ORDER");
        reverse = e && !strcmp(e, "reverse");
    }
    double t0 = profile ? now() : 0;
    for (unsigned z = 0; z < grid.z; z++)
        for (unsigned y = 0; y < grid.y; y++)
            for (unsigned x = 0; x < grid.x; x++) {
                emu_bid.x = reverse ? grid.x - 1 - x : x;
                emu_bid.y = reverse ? grid.y - 1 - y : y;
                emu_bid.z = reverse ? grid.z - 1 - z : z;
                run_block();
            }
    if (profile) {
        kstat &k = (*prof)[kernel];
        uint64_t nb = (uint64_t)grid.x * grid.y * grid.z;
        k.s += now() - t0, k.launches++, k.blocks += nb, k.threads += nb * nt;
    }
    emu_cur = NULL, curf = NULL, kfn = NULL;
    pthread_mutex_unlock(&launch_lock);
}
