#!/usr/bin/env python3
"""run_bench.py — tokens/s of one forward pass, loupe vs transformers (torch, CPU).

1. Writes, once, bench/data/smollm2-135m/: the config of HuggingFaceTB/SmolLM2-135M (hidden
   576, 30 layers, 9 heads, 3 kv heads, intermediate 1536, vocab 49152, tied embeddings,
   rope_theta 100000) and random N(0, 0.02) weights stored in bf16 like the hub's file
   (numpy only), plus a batch of token ids (seeded).
2. Builds bench_forward (the CMake target of a build, by bench/native.py; --build
   names it, default build-fwd) into the build directory.
3. Runs, each in its own process with the same thread count n (OMP_NUM_THREADS,
   OPENBLAS_NUM_THREADS, MKL_NUM_THREADS = n; torch.set_num_threads(n)): loupe's forward
   (f32 compute, weights widened once) and transformers' AutoModelForCausalLM forward
   (dtype=float32, its default attention, torch.no_grad) on batch 4 × 256 tokens, all logits.
   Both report the median of --repeats runs after one warm-up; the ratio is printed, and the
   last-position logits of row 0 are compared.

    cmake -S . -B build-fwd -DCMAKE_BUILD_TYPE=Release && cmake --build build-fwd -j2 --target loupe_runtime
    python3 bench/forward/run_bench.py [--build build-fwd] [--threads N] [--repeats 3]
"""

import argparse
import json
import os
import struct
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from native import native  # noqa: E402  (bench/native.py)

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DATA = os.path.join(ROOT, "bench", "data", "smollm2-135m")
B, T = 4, 256

CONFIG = {
    "architectures": ["LlamaForCausalLM"], "model_type": "llama", "attention_bias": False,
    "attention_dropout": 0.0, "bos_token_id": 0, "eos_token_id": 0, "head_dim": 64,
    "hidden_act": "silu", "hidden_size": 576, "initializer_range": 0.041,
    "intermediate_size": 1536, "max_position_embeddings": 8192, "mlp_bias": False,
    "num_attention_heads": 9, "num_hidden_layers": 30, "num_key_value_heads": 3,
    "pretraining_tp": 1, "rms_norm_eps": 1e-05, "rope_scaling": None, "rope_theta": 100000,
    "tie_word_embeddings": True, "torch_dtype": "bfloat16", "use_cache": True,
    "vocab_size": 49152,
}


def tensors():
    H, I, V, L, Q, KV = 576, 1536, 49152, 30, 9 * 64, 3 * 64
    out = [("model.embed_tokens.weight", (V, H))]
    for l in range(L):
        p = f"model.layers.{l}."
        out += [(p + "self_attn.q_proj.weight", (Q, H)), (p + "self_attn.k_proj.weight", (KV, H)),
                (p + "self_attn.v_proj.weight", (KV, H)), (p + "self_attn.o_proj.weight", (H, Q)),
                (p + "mlp.gate_proj.weight", (I, H)), (p + "mlp.up_proj.weight", (I, H)),
                (p + "mlp.down_proj.weight", (H, I)),
                (p + "input_layernorm.weight", (H,)), (p + "post_attention_layernorm.weight", (H,))]
    out.append(("model.norm.weight", (H,)))
    return out


def bf16(x):
    import numpy as np
    u = x.astype(np.float32).view(np.uint32)
    return ((u + 0x7FFF + ((u >> 16) & 1)) >> 16).astype(np.uint16)


def write_checkpoint():
    import numpy as np
    os.makedirs(DATA, exist_ok=True)
    rng = np.random.default_rng(0)
    ts = sorted(tensors())   # the reference writer's order for one dtype: by name
    header, off, blobs = {"__metadata__": {"format": "pt"}}, 0, []
    for name, shape in ts:
        n = int(np.prod(shape))
        if name.endswith("norm.weight"):
            a = np.ones(n, dtype=np.float32)
        else:
            a = rng.standard_normal(n, dtype=np.float32) * 0.02
        b = bf16(a).tobytes()
        header[name] = {"dtype": "BF16", "shape": list(shape), "data_offsets": [off, off + len(b)]}
        off += len(b)
        blobs.append(b)
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * (-len(h) % 8)
    tmp = os.path.join(DATA, "model.safetensors.tmp")
    with open(tmp, "wb") as f:
        f.write(struct.pack("<Q", len(h)) + h)
        for b in blobs:
            f.write(b)
    os.rename(tmp, os.path.join(DATA, "model.safetensors"))
    with open(os.path.join(DATA, "config.json"), "w") as f:
        json.dump(CONFIG, f, indent=2)
    ids = rng.integers(0, CONFIG["vocab_size"], size=(B, T), dtype=np.int32)
    ids.tofile(os.path.join(DATA, "ids.bin"))
    print(f"  wrote {DATA}: {off / 1e6:.0f} MB", file=sys.stderr)


def build_bench(build):
    return native(build, "bench_forward")


TRANSFORMERS = r"""
import json, statistics, sys, time
import numpy as np
import torch
from transformers import AutoModelForCausalLM
data, n, reps, B, T = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
torch.set_num_threads(n)
ids = torch.from_numpy(np.fromfile(data + "/ids.bin", dtype=np.int32).reshape(B, T)).long()
mask = torch.ones_like(ids)
m = AutoModelForCausalLM.from_pretrained(data, dtype=torch.float32).eval()
ts = []
with torch.no_grad():
    t0 = time.perf_counter()
    out = m(input_ids=ids, attention_mask=mask, use_cache=False)
    first = time.perf_counter() - t0
    for _ in range(reps):
        t0 = time.perf_counter()
        m(input_ids=ids, attention_mask=mask, use_cache=False)
        ts.append(time.perf_counter() - t0)
med = statistics.median(ts)
out.logits[0, -1].float().numpy().tofile(data + "/logits_tf.bin")
print(json.dumps({"first_s": first, "forward_s": med, "tokens_per_s": B * T / med,
                  "threads": torch.get_num_threads(), "attn": m.config._attn_implementation}))
"""


def run(cmd, env):
    p = subprocess.run(cmd, stdout=subprocess.PIPE, text=True, env=env)
    if p.returncode:
        sys.exit(f"{cmd[0]} failed ({p.returncode})")
    return json.loads(p.stdout.strip().splitlines()[-1])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--build", default=os.path.join(ROOT, "build-fwd"))
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--skip-transformers", action="store_true")
    a = ap.parse_args()
    if not os.path.exists(os.path.join(DATA, "ids.bin")):
        print(f"writing {DATA} (once)", file=sys.stderr)
        write_checkpoint()
    exe = build_bench(os.path.abspath(a.build))
    n = str(a.threads)
    env = dict(os.environ, OMP_NUM_THREADS=n, OPENBLAS_NUM_THREADS=n, MKL_NUM_THREADS=n)
    lp = run([exe, DATA, os.path.join(DATA, "ids.bin"), str(B), str(T), str(a.repeats),
              os.path.join(DATA, "logits_loupe.bin")], env)
    print(f"shape:        SmolLM2-135M (random bf16 weights, f32 compute), batch {B} × {T} tokens, "
          f"{a.threads} threads")
    print(f"loupe:        {lp['tokens_per_s']:.0f} tokens/s (forward {lp['forward_s'] * 1e3:.0f} ms, "
          f"median of {a.repeats}; first forward with f32 widening {lp['first_s'] * 1e3:.0f} ms); "
          f"keeping every layer for backward: {lp['tokens_per_s_keep']:.0f} tokens/s")
    if a.skip_transformers:
        return
    tf = run([sys.executable, "-c", TRANSFORMERS, DATA, n, str(a.repeats), str(B), str(T)], env)
    print(f"transformers: {tf['tokens_per_s']:.0f} tokens/s (forward {tf['forward_s'] * 1e3:.0f} ms, "
          f"median of {a.repeats}, torch threads {tf['threads']}, attention {tf['attn']}; first "
          f"{tf['first_s'] * 1e3:.0f} ms)")
    print(f"ratio:        loupe / transformers = {lp['tokens_per_s'] / tf['tokens_per_s']:.2f}×")
    import numpy as np
    x = np.fromfile(os.path.join(DATA, "logits_loupe.bin"), dtype=np.float32)
    y = np.fromfile(os.path.join(DATA, "logits_tf.bin"), dtype=np.float32)
    d = np.abs(x - y).max() / max(1.0, np.abs(y).max())
    print(f"parity:       last-position logits of row 0, max |loupe − transformers| / max(1, |t|) "
          f"= {d:.2e}")


if __name__ == "__main__":
    main()
