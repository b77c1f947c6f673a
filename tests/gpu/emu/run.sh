#!/bin/sh
# tests/gpu/emu/run.sh [big] — the fused-attention kernels (runtime/backend/cuda/cuda_flash.cu)
# and the bf16-weight ops (cuda_bf16.cu, with a plain-loop cublasGemmEx: bf16_check.cc) run on
# the CPU by a small CUDA emulator (emu.h) and checked against the plain-C reference,
# for a machine without a GPU: indexing, tile ranges, masks, barriers and shuffles, shared
# memory bounds. Not a substitute for the op test on a GPU (no real scheduling, no
# performance), but it runs the .cu source itself. About a minute; "big" adds D up to 256.
set -e
cd "$(dirname "$0")/../../.."
out=${EMU_OUT:-build-emu}
mkdir -p "$out"
python3 tests/gpu/emu/convert.py runtime/backend/cuda/cuda_flash.cu > "$out/flash_emu.cc"
# UBSan's alignment check: float4 loads from shared memory must be 16-byte aligned
CXX="g++ -O1 -g -std=c++17 -fsanitize=alignment -fno-sanitize-recover=all -Iruntime -Itests/gpu/emu"
$CXX -c tests/gpu/emu/emu.cc -o "$out/emu.o" &
$CXX -c "$out/flash_emu.cc" -o "$out/flash_emu.o" &
$CXX -c tests/gpu/emu/flash_check.cc -o "$out/flash_check.o" &
python3 tests/gpu/emu/convert.py runtime/backend/cuda/cuda_bf16.cu > "$out/bf16_emu.cc"
$CXX -c "$out/bf16_emu.cc" -o "$out/bf16_emu.o" &
$CXX -c tests/gpu/emu/bf16_check.cc -o "$out/bf16_check.o" &
for f in nn/ops_ref_attn nn/ops_bf16 util/err util/mem; do
    gcc -O1 -std=gnu11 -Iruntime -c "runtime/$f.c" -o "$out/$(basename $f).o" &
done
wait
g++ -fsanitize=alignment -o "$out/flash_check" "$out"/emu.o "$out"/flash_emu.o "$out"/flash_check.o \
    "$out"/ops_ref_attn.o "$out"/err.o "$out"/mem.o -lm
g++ -fsanitize=alignment -o "$out/bf16_check" "$out"/emu.o "$out"/bf16_emu.o "$out"/bf16_check.o \
    "$out"/ops_bf16.o "$out"/err.o "$out"/mem.o -lm
"$out/bf16_check"
"$out/flash_check" "$@"
