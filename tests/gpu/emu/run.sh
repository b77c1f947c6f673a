#!/bin/sh
# tests/gpu/emu/run.sh [big] — the emulator's self-test (emu_selftest.cc), then the fused-attention kernels (runtime/backend/cuda/cuda_flash.cu)
# and the bf16-weight ops (cuda_bf16.cu, through the emulated cublasGemmEx of emu_rt.cc) run on
# the CPU by a small CUDA emulator (emu.h, emu.cc) and checked against the plain-C reference
# by flash_check.cc and bf16_check.cc, for a machine without a GPU: indexing, tile ranges,
# masks, barriers and shuffles, shared memory bounds. Not a substitute for the op test on a
# GPU (no real scheduling, no performance), but it runs the .cu source itself. About a
# minute; "big" adds D up to 256. The whole backend under the emulator, with the device
# tests: run_backend.sh.
set -e
cd "$(dirname "$0")/../../.."
out=${EMU_OUT:-build-emu}
mkdir -p "$out"
python3 tests/gpu/emu/convert.py runtime/backend/cuda/cuda_flash.cu > "$out/flash_emu.cc"
python3 tests/gpu/emu/convert.py runtime/backend/cuda/cuda_bf16.cu > "$out/bf16_emu.cc"
# UBSan's alignment check: float4 loads from shared memory must be 16-byte aligned
CXX="g++ -O1 -g -std=c++17 -ffp-contract=off -fsanitize=alignment -fno-sanitize-recover=all -Iruntime -Itests/gpu/emu -Itests/gpu/emu/cuda_stub"
for f in emu emu_rt emu_check flash_check bf16_check emu_selftest; do
    $CXX -c tests/gpu/emu/$f.cc -o "$out/$f.o" &
done
$CXX -c "$out/flash_emu.cc" -o "$out/flash_emu.o" &
$CXX -c "$out/bf16_emu.cc" -o "$out/bf16_emu.o" &
for f in nn/ops_ref_attn nn/ops_bf16 util/err util/mem; do
    gcc -O1 -std=gnu11 -Iruntime -c "runtime/$f.c" -o "$out/$(basename $f).o" &
done
wait
emu="$out/emu.o $out/emu_rt.o $out/emu_check.o $out/err.o $out/mem.o"
g++ -fsanitize=alignment -rdynamic -o "$out/flash_check" $emu "$out"/flash_emu.o "$out"/flash_check.o \
    "$out"/ops_ref_attn.o -lm -ldl -lpthread
g++ -fsanitize=alignment -rdynamic -o "$out/bf16_check" $emu "$out"/bf16_emu.o "$out"/bf16_check.o \
    "$out"/ops_bf16.o -lm -ldl -lpthread
g++ -fsanitize=alignment -rdynamic -o "$out/emu_selftest" $emu "$out"/emu_selftest.o -lm -ldl -lpthread
"$out/emu_selftest"
"$out/bf16_check"
"$out/flash_check" "$@"
