#!/usr/bin/env python3
"""memory.py — loupe's peak GPU memory for bench/gpu's training step, without a GPU.

bench_gpu (the step run_bench.py times: batch 8 × 1024, LoRA r=16 on every linear layer,
AdamW) runs against the emulated CUDA backend (tests/gpu/emu, libloupe_cuda_emu.so) with
LOUPE_EMU_MEMORY_ONLY=1: the CUDA backend's own host code runs — its pool, every
cudaMalloc, every scratch request, in the order of a real step — but no kernel and no product
is computed (losses read back as 0). The pool's high-water mark of bytes in use is the
figure run_bench.py reports as loupe's peak on a GPU (be_cuda_memory), so it is compared
here with transformers + peft's torch.cuda.max_memory_allocated measured on an H200
(bench/gpu/README.md; torch's number depends on torch, not on the GPU).

    tests/gpu/emu/build_lib.sh build-emu
    python3 bench/gpu/memory.py [--build build] [--old-build DIR] [--models qwen2-0.5b,gemma-2-2b]

--old-build runs an older build's bench_gpu against the same emulated library, for a
before/after in one run. Each configuration is a row: the switches (LOUPE_CUDA_BF16,
LOUPE_FUSED_ATTENTION) as the benchmark script sets them.
"""
import argparse
import json
import os
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, HERE)
import run_bench  # noqa: E402

# transformers 5.x + peft, bf16, sdpa, same step, one NVIDIA H200 (bench/gpu/README.md, run of
# 2026-11-28): torch.cuda.max_memory_allocated in GiB
PEFT_GIB = {"qwen2-0.5b": 32.3, "gemma-2-2b": 75.3}
CONFIGS = [
    ("f32 weights, materialised attention (default)", {}),
    ("f32 weights, fused attention", {"LOUPE_FUSED_ATTENTION": "1"}),
    ("bf16 weights, fused attention, blocked TF32 products",
     {"LOUPE_CUDA_BF16": "1", "LOUPE_FUSED_ATTENTION": "1", "LOUPE_CUDA_ATTENTION": "blocked"}),
    ("bf16 weights, fused attention (target)", {"LOUPE_CUDA_BF16": "1", "LOUPE_FUSED_ATTENTION": "1"}),
    ("bf16 weights, fused attention, gradient checkpointing",
     {"LOUPE_CUDA_BF16": "1", "LOUPE_FUSED_ATTENTION": "1", "LOUPE_BENCH_CHECKPOINTING": "1"}),
    ("QLoRA: NF4 + double quantization, bf16 products, fused attention",
     {"LOUPE_CUDA_BF16": "1", "LOUPE_FUSED_ATTENTION": "1", "LOUPE_BENCH_QLORA": "1"}),
]


def run(exe, lib, data, ids, B, T, extra):
    env = dict(os.environ, LOUPE_CUDA_LIB=lib, LOUPE_EMU_MEMORY_ONLY="1",
               LOUPE_EMU_MEM_MB=str(141 * 1024), **extra)
    for k in ("LOUPE_CUDA_BF16", "LOUPE_FUSED_ATTENTION", "LOUPE_CUDA_TF32", "LOUPE_CUDA_ATTENTION",
              "LOUPE_BENCH_CHECKPOINTING", "LOUPE_BENCH_QLORA"):
        if k not in extra:
            env.pop(k, None)
    p = subprocess.run([exe, data, ids, str(B), str(T), "1", str(run_bench.R), "cuda"],
                       env=env, capture_output=True, text=True, timeout=3600)
    if p.returncode != 0:
        return {"error": (p.stderr or p.stdout).strip().splitlines()[-1:]}
    return json.loads(p.stdout.strip().splitlines()[-1])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--build", default="build")
    ap.add_argument("--old-build")
    ap.add_argument("--lib", default="build-emu/libloupe_cuda_emu.so")
    ap.add_argument("--models", default="qwen2-0.5b,gemma-2-2b")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--seq", type=int, default=1024)
    a = ap.parse_args()
    lib = os.path.abspath(a.lib)
    if not os.path.exists(lib):
        sys.exit(f"{lib} missing: run tests/gpu/emu/build_lib.sh first")
    builds = [("loupe", a.build)] + ([("loupe (old build)", a.old_build)] if a.old_build else [])
    ms = run_bench.models()
    B, T = a.batch, a.seq
    for name in a.models.split(","):
        m = ms[name]
        if not os.path.exists(os.path.join(m["data"], "config.json")):
            m["write"](m["data"])
        ids = os.path.join(m["data"], f"ids_{B}x{T}.bin")
        if not os.path.exists(ids):
            import numpy as np
            rng = np.random.default_rng(0)
            rng.integers(0, m["config"]["vocab_size"], size=(B, T), dtype=np.int32).tofile(ids)
        print(f"\n{m['shape']}-shaped, batch {B} × {T}, LoRA r={run_bench.R} on every linear layer: "
              f"peak GPU memory (emulated pool, no compute) vs transformers + peft {PEFT_GIB[name]} GiB")
        for label, build in builds:
            exe = os.path.join(build, "bench", "bench_gpu")
            for cname, extra in CONFIGS:
                x = run(exe, lib, m["data"], ids, B, T, extra)
                if "error" in x:
                    print(f"  {label:18s} {cname:48s} FAILED: {x['error']}")
                    continue
                gib = x["peak_mb"] / 1024
                print(f"  {label:18s} {cname:48s} {gib:6.2f} GiB  ({gib / PEFT_GIB[name]:.2f}× PEFT; "
                      f"reserved {x['reserved_mb'] / 1024:.2f}, weights {x['weights']} "
                      f"{x['weights_mb'] / 1024:.2f} GiB, {x.get('attention', '?')} attention)",
                      flush=True)


if __name__ == "__main__":
    main()
