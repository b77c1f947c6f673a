#!/bin/sh
# build_ops.sh OUTDIR — build test_nn_ops against the CUDA backend with nvcc and gcc alone
# (no CMake, no kernel libraries): the op test for a GPU machine that has only the CUDA
# toolkit. The host backend is the plain-C reference (tests/gpu/ops_host.c).
set -e
out=${1:-build-gpu-ops}
arch=${CUDA_ARCH:-90}
mkdir -p "$out"
for f in runtime/nn/ops_ref.c runtime/nn/ops_ref_attn.c runtime/nn/ops_bf16.c runtime/util/err.c runtime/util/mem.c \
         tests/gpu/ops_host.c tests/unit/test_nn_ops.c; do
    gcc -std=gnu11 -O2 -DLOUPE_HAVE_CUDA=1 -Iruntime -Itests/unit -c "$f" \
        -o "$out/$(basename "$f" .c).o" &
done
for f in runtime/backend/cuda/*.cu; do
    nvcc -O2 -std=c++17 -lineinfo -arch=sm_$arch -Iruntime -c "$f" \
        -o "$out/$(basename "$f" .cu).o" &
done
wait
nvcc -arch=sm_$arch -o "$out/test_nn_ops" "$out"/*.o -lcublas -lm
echo "$out/test_nn_ops"
