/* cuda_prof.cu — LOUPE_CUDA_PROFILE=1: GPU time per op (cuda_prof.cuh), read with
 * be_cuda_profile() (cuda_backend.h). Events are made once and reused; a failure to make or
 * record one turns the profile off (the ops go on untimed) rather than failing an op. */
#include <stdlib.h>
#include <string.h>

#include <vector>

#include "backend/cuda/cuda_backend.h"
#include "backend/cuda/cuda_int.cuh"
#include "backend/cuda/cuda_prof.cuh"

#define PROF_PENDING 4096   /* event pairs before they are read */

struct prof_pair { cudaEvent_t a, b; const char *op; };
struct prof_sum { const char *op; long calls; double ms; };

static std::vector<prof_pair> pending;
static std::vector<cudaEvent_t> spare;
static std::vector<prof_sum> sums;
static int broken;

int cu_prof_on(void) {
    static int on = -1;
    if (on < 0) {
        const char *e = getenv("LOUPE_CUDA_PROFILE");
        on = e && strcmp(e, "1") == 0;
    }
    return on && !broken;
}

static cudaEvent_t event(void) {
    cudaEvent_t e = NULL;
    if (!spare.empty()) {
        e = spare.back();
        spare.pop_back();
    } else if (cudaEventCreate(&e) != cudaSuccess) {
        broken = 1;
        return NULL;
    }
    return e;
}

static void add(const char *op, double ms) {
    for (prof_sum &s : sums)
        if (s.op == op || strcmp(s.op, op) == 0) {
            s.calls++, s.ms += ms;
            return;
        }
    sums.push_back(prof_sum{op, 1, ms});
}

/* every pending pair into the sums (waits for the stream) */
static void drain(void) {
    if (pending.empty()) return;
    cudaStreamSynchronize(cu_stream);
    for (prof_pair &p : pending) {
        float ms = 0.0f;
        if (p.op && p.b && cudaEventElapsedTime(&ms, p.a, p.b) == cudaSuccess) add(p.op, ms);
        if (p.a) spare.push_back(p.a);
        if (p.b) spare.push_back(p.b);
    }
    pending.clear();
}

int cu_prof_begin(void) {
    if (!cu_prof_on()) return -1;
    if (pending.size() >= PROF_PENDING) drain();
    cudaEvent_t a = event();
    if (!a || cudaEventRecord(a, cu_stream) != cudaSuccess) {
        broken = 1;
        return -1;
    }
    pending.push_back(prof_pair{a, NULL, NULL});
    return (int)pending.size() - 1;
}

void cu_prof_end(int slot, const char *op) {
    if (slot < 0 || (size_t)slot >= pending.size() || broken) return;
    cudaEvent_t b = event();
    if (!b || cudaEventRecord(b, cu_stream) != cudaSuccess) {
        broken = 1;
        return;
    }
    pending[slot].b = b, pending[slot].op = op;
}

extern "C" size_t be_cuda_profile(be_cuda_op_time *out, size_t cap, int reset) {
    drain();
    size_t n = sums.size() < cap ? sums.size() : cap;
    for (size_t i = 0; i < n; i++) out[i] = be_cuda_op_time{sums[i].op, sums[i].calls, sums[i].ms};
    size_t all = sums.size();
    if (reset) sums.clear();
    return all;
}
