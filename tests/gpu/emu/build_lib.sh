#!/bin/bash
# tests/gpu/emu/build_lib.sh [OUTDIR] — the CUDA backend's own source, every .cu file of
# runtime/backend/cuda (and plugin/shim.cu), converted by convert.py and compiled with g++
# against the emulator (emu.cc: the device side, emu_rt.cc: the CUDA runtime and cuBLAS,
# emu_alloc.cc: LOUPE_EMU_ALLOC) into
# OUTDIR/libloupe_cuda_emu.so (default build-emu). The runtime loads it as it loads
# libloupe_cuda.so: LOUPE_CUDA_LIB=OUTDIR/libloupe_cuda_emu.so (run_backend.sh). Needs python3
# and g++ only, no nvcc or GPU. Objects are rebuilt when their source or the emulator is newer;
# $CXX overrides g++, $JOBS the parallel compiles (default 2).
set -eu
cd "$(dirname "$0")/../../.."
out=${1:-build-emu}
mkdir -p "$out/lib"
CXX=${CXX:-g++}
JOBS=${JOBS:-2}
FLAGS="-O2 -g -fPIC -std=c++17 -ffp-contract=off -Wno-unknown-pragmas -Iruntime -Itests/gpu/emu -Itests/gpu/emu/cuda_stub"
# every object is rebuilt when a header the .cu files share changes (the tables' layout in
# backend.h among them: a stale object would fill the wrong slots)
emu_deps="tests/gpu/emu/emu.h tests/gpu/emu/convert.py $(echo runtime/backend/cuda/*.cuh \
    runtime/backend/cuda/*.h) runtime/backend/backend.h runtime/nn/ops.h"

newer() {   # newer OBJ SRC...: 0 when OBJ is missing or older than one of SRC
    [ -e "$1" ] || return 0
    local o=$1
    shift
    for s in "$@"; do [ "$s" -nt "$o" ] && return 0; done
    return 1
}
pids=()
objs=()
fail=0
wait_one() { wait "${pids[0]}" || fail=1; pids=("${pids[@]:1}"); }
compile() {   # compile SRC OBJ [FLAGS...]
    while [ ${#pids[@]} -ge "$JOBS" ]; do wait_one; done
    $CXX $FLAGS "${@:3}" -c "$1" -o "$2" &
    pids+=($!)
}

for f in runtime/backend/cuda/*.cu runtime/backend/cuda/plugin/*.cu; do
    base=$(basename "$f" .cu)
    cc="$out/lib/${base}_emu.cc"
    obj="$out/lib/${base}_emu.o"
    objs+=("$obj")
    if newer "$obj" "$f" $emu_deps; then
        python3 tests/gpu/emu/convert.py "$f" > "$cc.tmp"
        mv "$cc.tmp" "$cc"
        # cuda_mem.cu's be_cuda is wrapped by emu_rt.cc's (LOUPE_EMU_ALLOC)
        extra=()
        [ "$base" = cuda_mem ] && extra=(-Dbe_cuda=emu_pool_be_cuda)
        compile "$cc" "$obj" "${extra[@]}"
    fi
done
for f in emu emu_rt emu_alloc; do
    obj="$out/lib/$f.o"
    objs+=("$obj")
    if newer "$obj" "tests/gpu/emu/$f.cc" $emu_deps; then compile "tests/gpu/emu/$f.cc" "$obj"; fi
done
while [ ${#pids[@]} -gt 0 ]; do wait_one; done
[ $fail = 0 ] || { echo "build_lib.sh: a compile failed" >&2; exit 1; }
# a file removed from runtime/backend/cuda leaves a stale object behind: link only the current
lib="$out/libloupe_cuda_emu.so"
if newer "$lib" "${objs[@]}"; then
    $CXX -shared -o "$lib.tmp" "${objs[@]}" -Wl,--no-undefined -Wl,-Bsymbolic -lm -ldl -lpthread
    mv "$lib.tmp" "$lib"
fi
echo "$lib"
