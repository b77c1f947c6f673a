#!/usr/bin/env python3
"""run_bench.py — loupe vs transformers loading a gemma-2-2b-shaped checkpoint.

1. Writes, once, bench/data/gemma-2-2b/: gemma-2-2b's config.json and 2.6 B random bf16
   parameters in three shards plus model.safetensors.index.json, like the hub's layout
   (numpy only, streamed in chunks: no torch init, ~5.2 GB of disk, little memory).
2. Builds bench/load/bench_load (the bench_load target of a cmake build (bench/native.py);
   --build names it, default build-model) and times, each in its own process:
   loupe's load + module-tree listing, and transformers'
   AutoModelForCausalLM.from_pretrained(dtype=bfloat16) + named_modules listing.
   Reports wall time and peak RSS of both, and the ratios.

    cmake -S . -B build-model && cmake --build build-model -j2 --target loupe_runtime
    python3 bench/load/run_bench.py [--build build-model] [--skip-transformers]

Targets (issue 4): loupe ≤ 100 ms, RSS after load < 64 MB.
"""

import argparse
import json
import os
import resource
import struct
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from native import native  # noqa: E402  (bench/native.py)

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DATA = os.path.join(ROOT, "bench", "data", "gemma-2-2b")

CONFIG = {
    "architectures": ["Gemma2ForCausalLM"], "model_type": "gemma2",
    "attention_bias": False, "attention_dropout": 0.0, "attn_logit_softcapping": 50.0,
    "bos_token_id": 2, "eos_token_id": 1, "pad_token_id": 0, "final_logit_softcapping": 30.0,
    "head_dim": 256, "hidden_act": "gelu_pytorch_tanh", "hidden_activation": "gelu_pytorch_tanh",
    "hidden_size": 2304, "initializer_range": 0.02, "intermediate_size": 9216,
    "max_position_embeddings": 8192, "num_attention_heads": 8, "num_hidden_layers": 26,
    "num_key_value_heads": 4, "query_pre_attn_scalar": 256, "rms_norm_eps": 1e-06,
    "rope_theta": 10000.0, "sliding_window": 4096, "torch_dtype": "bfloat16",
    "cache_implementation": "hybrid", "use_cache": True, "vocab_size": 256000,
}


def tensors():
    """(name, shape) in the order gemma-2-2b's modules define them."""
    H, I, V, L, Q, KV = 2304, 9216, 256000, 26, 8 * 256, 4 * 256
    out = [("model.embed_tokens.weight", (V, H))]
    for l in range(L):
        p = f"model.layers.{l}."
        out += [(p + "self_attn.q_proj.weight", (Q, H)), (p + "self_attn.k_proj.weight", (KV, H)),
                (p + "self_attn.v_proj.weight", (KV, H)), (p + "self_attn.o_proj.weight", (H, Q)),
                (p + "mlp.gate_proj.weight", (I, H)), (p + "mlp.up_proj.weight", (I, H)),
                (p + "mlp.down_proj.weight", (H, I))]
        out += [(p + n + ".weight", (H,)) for n in ("input_layernorm", "post_attention_layernorm",
                                                    "pre_feedforward_layernorm",
                                                    "post_feedforward_layernorm")]
    out.append(("model.norm.weight", (H,)))
    return out


def write_checkpoint():
    import numpy as np
    os.makedirs(DATA, exist_ok=True)
    ts = tensors()
    # Three shards of about 2 GB, as the hub splits gemma-2-2b into three files.
    shards, cur, size, limit = [], [], 0, 2_000_000_000
    for name, shape in ts:
        n = int(np.prod(shape)) * 2
        if cur and size + n > limit:
            shards.append(cur)
            cur, size = [], 0
        cur.append((name, shape))
        size += n
    shards.append(cur)
    rng = np.random.default_rng(0)
    # One random block of N(0, 0.02) in bf16, reused: the values do not matter for loading.
    block = (rng.standard_normal(1 << 24, dtype=np.float32) * 0.02).view(np.uint32)
    block = ((block + 0x7FFF + ((block >> 16) & 1)) >> 16).astype(np.uint16).tobytes()
    weight_map, total = {}, 0
    for si, shard in enumerate(shards):
        fn = f"model-{si + 1:05d}-of-{len(shards):05d}.safetensors"
        # the reference writer's order: same dtype everywhere, so by name
        shard = sorted(shard)
        header, off = {"__metadata__": {"format": "pt"}}, 0
        for name, shape in shard:
            n = int(np.prod(shape)) * 2
            header[name] = {"dtype": "BF16", "shape": list(shape), "data_offsets": [off, off + n]}
            off += n
            weight_map[name] = fn
        h = json.dumps(header, separators=(",", ":")).encode()
        h += b" " * (-len(h) % 8)
        tmp = os.path.join(DATA, fn + ".tmp")
        with open(tmp, "wb") as f:
            f.write(struct.pack("<Q", len(h)) + h)
            left, pos = off, 0
            while left:
                k = min(left, len(block) - pos)
                f.write(block[pos:pos + k])
                left -= k
                pos = (pos + k) % len(block)
        os.rename(tmp, os.path.join(DATA, fn))
        total += off
        print(f"  wrote {fn}: {off / 1e9:.2f} GB", file=sys.stderr)
    with open(os.path.join(DATA, "model.safetensors.index.json"), "w") as f:
        json.dump({"metadata": {"total_size": total}, "weight_map": weight_map}, f, indent=2)
    with open(os.path.join(DATA, "config.json"), "w") as f:
        json.dump(CONFIG, f, indent=2)


def build_bench(build):
    return native(build, "bench_load")


TRANSFORMERS = r"""
import json, resource, sys, time
t0 = time.perf_counter()
import torch
from transformers import AutoModelForCausalLM
t1 = time.perf_counter()
m = AutoModelForCausalLM.from_pretrained(sys.argv[1], dtype=torch.bfloat16)
t2 = time.perf_counter()
lines = []
for name, mod in m.named_modules():
    w = getattr(mod, "weight", None)
    lines.append(f"{name}\t{type(mod).__name__}\t{list(w.shape) if w is not None else ''}\t"
                 f"{sum(p.numel() for p in mod.parameters())}")
t3 = time.perf_counter()
print(json.dumps({"import_s": t1 - t0, "load_s": t2 - t1, "list_s": t3 - t2,
                  "params": m.num_parameters(), "modules": len(lines),
                  "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def run_child(cmd):
    """Run cmd; return (stdout JSON, wall seconds, child's peak RSS in MB)."""
    t = time.perf_counter()
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
    out, _ = p.communicate()
    wall = time.perf_counter() - t
    if p.returncode:
        sys.exit(f"{cmd[0]} failed ({p.returncode})")
    return json.loads(out.strip().splitlines()[-1]), wall


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--build", default=os.path.join(ROOT, "build-model"))
    ap.add_argument("--skip-transformers", action="store_true")
    a = ap.parse_args()
    if not os.path.exists(os.path.join(DATA, "model.safetensors.index.json")):
        print(f"writing {DATA} (once)", file=sys.stderr)
        write_checkpoint()
    exe = build_bench(a.build)
    # warm the page cache for the headers the same way for both (first read of the files)
    lp, lp_wall = run_child([exe, DATA, "5"])
    print(f"loupe:        load {lp['load_ms']:.1f} ms + listing {lp['list_ms']:.1f} ms "
          f"(first {lp['first_total_ms']:.1f} ms, median of 5 {lp['median_total_ms']:.1f} ms; "
          f"process wall {lp_wall * 1e3:.0f} ms), {lp['modules']} modules, {lp['params']:,} params, "
          f"RSS after load {lp['rss_after_load_mb']:.1f} MB, peak RSS {lp['peak_rss_mb']:.1f} MB")
    ok_t = lp["first_total_ms"] <= 100
    ok_m = lp["rss_after_load_mb"] < 64
    print(f"targets:      ≤ 100 ms {'met' if ok_t else 'MISSED'}, RSS < 64 MB "
          f"{'met' if ok_m else 'MISSED'}")
    if a.skip_transformers:
        return
    tf, tf_wall = run_child([sys.executable, "-c", TRANSFORMERS, DATA])
    print(f"transformers: import {tf['import_s']:.2f} s, from_pretrained {tf['load_s']:.2f} s, "
          f"listing {tf['list_s'] * 1e3:.1f} ms (process wall {tf_wall:.2f} s), "
          f"{tf['modules']} modules, {tf['params']:,} params, peak RSS {tf['peak_rss_mb']:.0f} MB")
    lt = (tf["load_s"] + tf["list_s"]) * 1e3
    print(f"ratio:        load+list {lt / lp['first_total_ms']:.0f}× faster "
          f"({lt:.0f} ms vs {lp['first_total_ms']:.1f} ms; with import and process start "
          f"{tf_wall / lp_wall:.0f}×), peak RSS {tf['peak_rss_mb'] / lp['peak_rss_mb']:.0f}× smaller")
    if lp["params"] != tf["params"]:
        print(f"WARNING: parameter counts differ: loupe {lp['params']}, transformers {tf['params']}")


if __name__ == "__main__":
    main()
