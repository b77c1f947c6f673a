#!/bin/sh
# build_cuda_lib.sh OUTDIR — libloupe_cuda.so (runtime/backend/cuda, the library be_cuda()
# loads) with nvcc alone, for the GPU of this machine (CUDA_ARCH, default 90): what
# tests/gpu/run.sh does when a prebuilt bundle's library (tests/gpu/bundle.sh) cannot be
# loaded here. Prints the library's path.
set -e
out=${1:-build-gpu-lib}
arch=${CUDA_ARCH:-90}
mkdir -p "$out"
for f in runtime/backend/cuda/*.cu runtime/backend/cuda/plugin/shim.cu; do
    nvcc -O3 -std=c++17 -lineinfo -Xcompiler -fPIC -arch=sm_$arch -Iruntime -c "$f" \
        -o "$out/$(basename "$f" .cu).o" &
done
wait
nvcc -shared -arch=sm_$arch -o "$out/libloupe_cuda.so" "$out"/*.o -lcublas
echo "$out/libloupe_cuda.so"
