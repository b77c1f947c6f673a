/* emu.cc — the fibers, barriers and launches behind emu.h. */
#include "emu.h"
emu_fiber *emu_cur;
emu_dim emu_bid, emu_bdim, emu_gdim;
cudaStream_t cu_stream;
static ucontext_t sched;
static std::function<void()> *kfn;
static std::vector<emu_fiber> fibers;
static unsigned alive, blk_arrived, blk_gen;
struct emu_warp { unsigned arrived, gen; float slot[32]; };
static emu_warp warps[32];
static float *smem_base;

/* n bytes ending right before a PROT_NONE page */
void *guarded(size_t n) {
    size_t pg = 4096, body = (n + pg - 1) / pg * pg;
    char *p = (char *)mmap(NULL, body + pg, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    mprotect(p + body, pg, PROT_NONE);
    return p + body - n;
}
void cu_fatal(const char *what, const char *file, int line) {
    fprintf(stderr, "cu_fatal %s %s:%d\n", what, file, line);
    abort();
}
int emu_scratch_fail;
const char *emu_scratch_failed_op;
void *cu_scratch(const char *op, size_t bytes) {
    if (emu_scratch_fail > 0 && --emu_scratch_fail == 0) {
        emu_scratch_failed_op = op;
        return NULL;
    }
    return guarded(bytes);
}
void cu_scratch_free(void *) {}
float *emu_smem() { return smem_base; }

static void yield() { swapcontext(&emu_cur->ctx, &sched); }
void __syncthreads() {
    unsigned g = blk_gen;
    if (++blk_arrived == alive) { blk_arrived = 0; blk_gen++; }
    else while (blk_gen == g) yield();
}
static void warp_bar(emu_warp &w) {
    unsigned g = w.gen;
    if (++w.arrived == 32) { w.arrived = 0; w.gen++; }
    else while (w.gen == g) yield();
}
float __shfl_sync(unsigned, float v, int src) {
    emu_warp &w = warps[threadIdx.x >> 5];
    w.slot[threadIdx.x & 31] = v;
    warp_bar(w);
    float r = w.slot[src & 31];
    warp_bar(w);
    return r;
}
float __shfl_xor_sync(unsigned, float v, int m) {
    emu_warp &w = warps[threadIdx.x >> 5];
    w.slot[threadIdx.x & 31] = v;
    warp_bar(w);
    float r = w.slot[((threadIdx.x & 31) ^ m) & 31];
    warp_bar(w);
    return r;
}
static void entry() {
    (*kfn)();
    emu_cur->done = true;
    alive--;
    swapcontext(&emu_cur->ctx, &sched);
}
void emu_launch(unsigned grid, unsigned block, size_t smem, std::function<void()> fn) {
    if (block % 32 || block > 1024 || grid == 0) { fprintf(stderr, "bad launch\n"); abort(); }
    const size_t STK = 1 << 16;
    if (fibers.size() < block) {
        fibers.resize(block);
        for (auto &f : fibers) f.stack = (char *)malloc(STK);
    }
    size_t need = smem ? (smem + 15) & ~(size_t)15 : 16;   // 16-byte aligned, as CUDA's
    smem_base = (float *)guarded(need);   // leaked: test only
    kfn = &fn;
    emu_gdim.x = grid, emu_bdim.x = block;
    for (unsigned b = 0; b < grid; b++) {
        emu_bid.x = b;
        for (size_t i = 0; i < need / 4; i++) smem_base[i] = NAN;   // unwritten shared memory
        alive = block, blk_arrived = 0, blk_gen = 0;
        memset(warps, 0, sizeof warps);
        for (unsigned t = 0; t < block; t++) {
            emu_fiber &f = fibers[t];
            f.tid.x = t, f.done = false;
            getcontext(&f.ctx);
            f.ctx.uc_stack.ss_sp = f.stack, f.ctx.uc_stack.ss_size = STK, f.ctx.uc_link = NULL;
            makecontext(&f.ctx, entry, 0);
        }
        for (bool any = true; any;) {
            any = false;
            for (unsigned t = 0; t < block; t++) {
                if (fibers[t].done) continue;
                any = true;
                emu_cur = &fibers[t];
                swapcontext(&sched, &fibers[t].ctx);
            }
        }
    }
}
