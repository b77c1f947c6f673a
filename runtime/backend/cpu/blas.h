/* blas.h — the CPU backend's BLAS: cblas_sgemm from Intel MKL's sequential layer when the
 * build found MKL (LOUPE_BLAS_MKL, see the root CMakeLists.txt), else from OpenBLAS.
 *
 * Both are called from inside our OpenMP threads, one product block per thread
 * (cpu_ops.c), so neither may start threads of its own: MKL's sequential layer has none;
 * OpenBLAS (Debian's pthreads build) is put in single-threaded mode by blas_one_thread(). */
#ifndef LOUPE_CPU_BLAS_H
#define LOUPE_CPU_BLAS_H

#ifdef LOUPE_BLAS_MKL
#include <mkl_cblas.h>
#define LOUPE_BLAS_NAME "MKL"
static inline void blas_one_thread(void) {}
#else
#include <cblas.h>
#define LOUPE_BLAS_NAME "OpenBLAS"
static inline void blas_one_thread(void) { openblas_set_num_threads(1); }
#endif

#endif
