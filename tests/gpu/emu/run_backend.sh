#!/bin/bash
# tests/gpu/emu/run_backend.sh [BUILD] — the whole CUDA backend (every .cu file of
# runtime/backend/cuda) on the CPU through the emulator: builds libloupe_cuda_emu.so
# (build_lib.sh, into $EMU_OUT, default build-emu) and runs the device tests of the build
# BUILD (default build; it must have the CUDA loader, -DLOUPE_CUDA=ON) with LOUPE_CUDA_LIB
# naming it and LOUPE_TEST_DEVICE=cuda, as tests/gpu/run.sh runs them on a GPU: test_nn_ops
# (which must have checked "backend cuda"; again with LOUPE_CUDA_ATTENTION=flash and with
# LOUPE_ATTN_BLOCK_ROWS=5), the parity, training and command tests, again with
# LOUPE_FUSED_ATTENTION=1 (cuda_attn_blk.cu; the parity tests also in 3-row blocks and with
# LOUPE_CUDA_ATTENTION=flash: cuda_flash.cu's kernels), the parity tests with
# LOUPE_HEAD_CHUNK_ROWS=3, and the bf16 weights (test_fw_bf16, again with the fused attention:
# its bf16 tensor-core kernels, and with LOUPE_CUDA_ATTENTION=blocked its TF32 products; the
# command tests with LOUPE_CUDA_BF16=1); test_nn_ops also with the emulator's stricter modes
# (LOUPE_EMU_ALLOC, LOUPE_EMU_ORDER), and once against a library built with TC_SLACK=0 (the
# wmma forward's output rescaling on every growing max). One line per test as it ends (JOBS
# at a time, default 2); logs in $EMU_OUT/logs. Exit status 1 when any failed or was skipped (exit 77: the emulated device
# was not found, which is a failure here). About 3 minutes on 2 cores, most of it
# test_train_cmds (its allocation-failure loop runs hundreds of training cells, whose row
# kernels are 256 fibers each: LOUPE_EMU_PROFILE=1 shows where the time goes).
set -u
cd "$(dirname "$0")/../../.."
BUILD=${1:-build}
out=${EMU_OUT:-build-emu}
T0=$(date +%s)
lib=$(tests/gpu/emu/build_lib.sh "$out" | tail -1) || { echo "FAIL: libloupe_cuda_emu.so did not build"; exit 1; }
lib=$(cd "$(dirname "$lib")" && pwd)/$(basename "$lib")
echo "built $lib in $(($(date +%s) - T0)) s"
mkdir -p "$out/logs"
# check NAME [VAR=value...]: $BUILD/tests/NAME with the emulated device and the variables;
# prints one line and leaves it in $out/logs/TAG.result
check() {
    local name=$1 tag log rc t s line
    shift
    tag=$(echo "$name $*" | tr ' =' '_-' | sed 's/_$//')
    log="$out/logs/$tag.log"
    t=$(date +%s.%N)
    if [ ! -x "$BUILD/tests/$name" ]; then
        line="FAIL $name $*: $BUILD/tests/$name is not built"
    else
        env LOUPE_CUDA_LIB="$lib" LOUPE_TEST_DEVICE=cuda "$@" timeout 600 "$BUILD/tests/$name" \
            > "$log" 2>&1
        rc=$?
        s=$(awk "BEGIN { printf \"%.1f\", $(date +%s.%N) - $t }")
        if [ $rc = 77 ]; then
            line="FAIL $name $*: skipped, the emulated device was not found [$log]"
        elif [ $rc != 0 ]; then
            line="FAIL $name $*: exit $rc in $s s [$log]"
        elif [ "$name" = test_nn_ops ] && ! grep -q "^backend cuda" "$log"; then
            line="FAIL $name $*: the CUDA backend was not checked [$log]"
        else
            line="ok   $name $* ($s s): $(grep -E 'passed|failed' "$log" | tail -1)"
        fi
    fi
    echo "$line" > "$out/logs/$tag.result"
    echo "$line"
    case $line in FAIL*) grep -m5 -E "FAIL|fail|rror|emu:|abort|NOT RUN" "$log" 2>/dev/null | sed 's/^/    /' ;; esac
}

# JOBS tests at a time (default 2, the cores of the machine this was sized on), the two
# longest first
JOBS=${JOBS:-2}
rm -f "$out"/logs/*.result
running=0
runs=0
run() {
    runs=$((runs + 1))
    if [ $running -ge "$JOBS" ]; then wait -n; running=$((running - 1)); fi
    check "$@" &
    running=$((running + 1))
}

run test_train_cmds
run test_train_cmds LOUPE_CUDA_BF16=1
run test_nn_ops
run test_nn_ops LOUPE_CUDA_ATTENTION=flash
run test_nn_ops LOUPE_ATTN_BLOCK_ROWS=5
run test_nn_ops LOUPE_CUDA_ATTENTION=blocked   # the bf16 table's blocked TF32 attention
# the emulator's stricter modes: every tensor its exact size up against a PROT_NONE page
# (after it, then before it), and threads and blocks run last to first (emu.cc, emu_alloc.cc)
run test_nn_ops LOUPE_EMU_ALLOC=exact LOUPE_CUDA_ATTENTION=flash
run test_nn_ops LOUPE_EMU_ALLOC=front
run test_nn_ops LOUPE_EMU_ORDER=reverse LOUPE_CUDA_ATTENTION=flash
run test_nn_ops LOUPE_EMU_ORDER=reverse   # the bf16 wmma attention's warp fences
for t in test_nn_parity test_fw_parity test_train_parity test_train_loop test_nf4 test_q4 test_adalora test_dora test_q8 test_fw_cmds \
         test_device test_move; do
    run $t
done
for t in test_fw_parity test_train_parity test_train_loop; do run $t LOUPE_FUSED_ATTENTION=1; done
for t in test_fw_parity test_train_parity; do
    run $t LOUPE_FUSED_ATTENTION=1 LOUPE_CUDA_ATTENTION=flash
    run $t LOUPE_FUSED_ATTENTION=1 LOUPE_ATTN_BLOCK_ROWS=3
done
for t in test_fw_parity test_train_parity; do run $t LOUPE_HEAD_CHUNK_ROWS=3; done
run test_fw_bf16
run test_fw_bf16 LOUPE_FUSED_ATTENTION=1   # fused-bf16 attention (cuda_attn_tc.cu)
run test_fw_bf16 LOUPE_FUSED_ATTENTION=1 LOUPE_CUDA_ATTENTION=blocked LOUPE_ATTN_BLOCK_ROWS=3   # fused-tf32
run test_fw_cmds LOUPE_CUDA_BF16=1
wait
# the per-op profile (LOUPE_CUDA_PROFILE=1, cuda_prof.cu) through bench_gpu on a tiny model in
# the benchmark's configuration: every op of a step timed, the bf16 and attention ops among them
runs=$((runs + 1))
plog="$out/logs/bench_gpu_profile.log"
python3 -c "import struct; open('$out/ids.bin', 'wb').write(struct.pack('<64i', *[i % 200 for i in range(64)]))"
# bench_gpu is not in the default build (bench/CMakeLists.txt): build it (up to date: quick)
cmake --build "$BUILD" --target bench_gpu > "$plog" 2>&1 &&
    LOUPE_CUDA_LIB="$lib" LOUPE_CUDA_BF16=1 LOUPE_FUSED_ATTENTION=1 LOUPE_CUDA_PROFILE=1 \
    timeout 300 "$BUILD/bench/bench_gpu" tests/fixtures/models/qwen2 "$out/ids.bin" 2 32 2 4 cuda \
    >> "$plog" 2>&1
if grep -q "ops in all" "$plog" && grep -q "bf16.linear_forward" "$plog" &&
   grep -q "bf16.attention_fused_backward (tc)" "$plog" && grep -q '"attention": "fused-bf16"' "$plog" &&
   grep -q '"waits": 2}' "$plog"; then   # a step waits for the loss and the gradient norm only
    line="ok   bench_gpu LOUPE_CUDA_PROFILE=1: $(grep "ops in all" "$plog" | sed 's/^ *//')"
else
    line="FAIL bench_gpu LOUPE_CUDA_PROFILE=1: no per-op profile [$plog]"
fi
echo "$line" | tee "$out/logs/bench_gpu_profile.result"
# the wmma forward's rescaling of its output (cuda_attn_tc.cu, tc_scale_rows) runs only when a
# tile's row max passes the running one by TC_SLACK (8), which the tests' scores never do: a
# library built with TC_SLACK=0 rescales whenever the max grows, and takes the op test
runs=$((runs + 1))
slog="$out/logs/test_nn_ops_slack0.log"
mkdir -p "$out-slack0/lib"   # the other objects are the same: only cuda_attn_tc's is rebuilt
cp -p "$out"/lib/*.o "$out-slack0/lib/" && rm -f "$out-slack0/lib/cuda_attn_tc_emu.o"
if slib=$(CXX="${CXX:-g++} -DTC_SLACK=0.0f" tests/gpu/emu/build_lib.sh "$out-slack0" 2> "$slog" | tail -1) &&
   slib=$(cd "$(dirname "$slib")" && pwd)/$(basename "$slib") &&
   LOUPE_CUDA_LIB="$slib" timeout 600 "$BUILD/tests/test_nn_ops" >> "$slog" 2>&1 &&
   grep -q "^backend cuda" "$slog"; then
    line="ok   test_nn_ops (TC_SLACK=0): $(tail -1 "$slog")"
else
    line="FAIL test_nn_ops (TC_SLACK=0) [$slog]"
fi
echo "$line" | tee "$out/logs/test_nn_ops_slack0.result"
n=$(cat "$out"/logs/*.result | wc -l)
bad=$(grep -l "^FAIL" "$out"/logs/*.result | wc -l)
[ "$n" = $runs ] || { echo "FAIL: $n results of $runs"; bad=$((bad + 1)); }
echo "run_backend.sh: $([ "$bad" = 0 ] && echo "all $n passed" || echo "$bad of $n FAILED") in $(($(date +%s) - T0)) s"
[ "$bad" = 0 ]
