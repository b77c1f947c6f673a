/* cuda_prof.cuh — LOUPE_CUDA_PROFILE=1: the GPU time of every op of the table.
 *
 * With the variable set when the library loads, cuda_backend.cu builds its tables from
 * cu_timed<fn>::call instead of fn: a CUDA event is recorded on the stream before and after
 * the op, nothing waits. The pairs are read (cudaEventElapsedTime) when 4096 are pending and
 * when the profile is read, and summed per op name: calls and milliseconds of the GPU's
 * timeline between the op's first and last work (a host wait inside the op counts; the gaps
 * between ops, when the host is slow to launch, belong to none). be_cuda_profile()
 * (cuda_backend.h) reads it, bench_gpu prints it. Without the variable the tables hold the
 * ops themselves: no cost. */
#ifndef LOUPE_CUDA_PROF_CUH
#define LOUPE_CUDA_PROF_CUH
#include <type_traits>

int cu_prof_on(void);                           /* LOUPE_CUDA_PROFILE=1, read once */
int cu_prof_begin(void);                        /* a start event; its slot */
void cu_prof_end(int slot, const char *op);     /* the end event of that slot */

template <auto F> struct cu_timed;
template <typename R, typename... A, R (*F)(A...)> struct cu_timed<F> {
    static const char *name;
    static R call(A... a) {
        int s = cu_prof_begin();
        if constexpr (std::is_void<R>::value) {
            F(a...);
            cu_prof_end(s, name);
        } else {
            R r = F(a...);
            cu_prof_end(s, name);
            return r;
        }
    }
};
template <typename R, typename... A, R (*F)(A...)> const char *cu_timed<F>::name = "?";

/* slot = fn, or its timed wrapper named `label` when profiling */
#define CU_OP_AS(t, slot, fn, label) \
    ((t).slot = cu_prof_on() ? (cu_timed<fn>::name = (label), cu_timed<fn>::call) : (fn))
/* the same named after the slot */
#define CU_OP(t, slot, fn) CU_OP_AS(t, slot, fn, #slot)

#endif
