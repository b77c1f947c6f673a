#!/usr/bin/env python3
"""run_bench.py — LoRA training on one GPU, loupe vs transformers + peft (issue 7's benchmark).

For each checkpoint shape (random weights, written once under bench/data/):
  qwen2-0.5b  Qwen2-0.5B's config (hidden 896, 24 layers, 14 heads / 2 kv heads, vocab 151936,
              q/k/v biases, tied embeddings), bf16, one file (written here);
  gemma-2-2b  gemma-2-2b's config (bench/load/run_bench.py writes it: 2.6 B, soft-capping,
              sliding window), bf16, three shards;
one training step = zero_grad, forward with labels = ids (batch --batch × --seq, default
8 × 1024), backward, AdamW (lr 2e-4) over LoRA r=16, alpha 32, dropout 0 on every linear
layer (q/k/v/o_proj, gate/up/down_proj). Each side runs in its own process on the same GPU:
  loupe         bench_gpu (bench/gpu/bench_gpu.c, backend "cuda"), built in --build;
  transformers  AutoModelForCausalLM in bf16 with attn_implementation="sdpa", peft LoRA
                (adapter weights f32, PEFT's autocast_adapter_dtype), torch.optim.AdamW.
Both: one warm-up step, then the median of --repeats steps, each closed by a device sync.

Figures: tokens/s = batch·seq / step time; peak GPU memory = loupe's pool high-water mark of
bytes in use (be_cuda_memory) vs torch.cuda.max_memory_allocated (reserved: pool cudaMalloc'd
vs torch.cuda.max_memory_reserved); MFU = model FLOPs per step / step time / --peak-tflops
(989 TFLOPS: H100/H200 SXM bf16 dense), with model FLOPs =
  4·N·tokens            the frozen base: forward 2·N, backward 2·N (activation gradients only,
                        no weight gradients), N = every linear weight incl. the LM head, not the
                        embedding lookup, norms or the LoRA factors;
  + 12·L·H·Dh·T·tokens  attention scores and values, forward (4) and backward (8), full T×T
                        (causal masking not discounted, PaLM's convention).
Targets (issue 7): loupe ≥ 2× PEFT's tokens/s, peak memory ≤ 0.6× PEFT's, MFU ≥ 50%.

    cmake -S . -B build-gpu -DCMAKE_BUILD_TYPE=Release && cmake --build build-gpu -j16 --target bench_gpu
    python3 bench/gpu/run_bench.py [--build build-gpu] [--models qwen2-0.5b,gemma-2-2b]
        [--batch 8] [--seq 1024] [--repeats 3] [--json OUT.json] [--qlora]

--qlora: LoRA over NF4 + double-quantized base weights on both sides (transformers with
bitsandbytes, compute dtype bf16; loupe with LOUPE_BENCH_QLORA=1, bf16 products when
LOUPE_CUDA_BF16=1). Not part of tests/gpu/run.sh; not run on a GPU yet.
"""

import argparse
import importlib.util
import json
import os
import struct
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from native import native  # noqa: E402  (bench/native.py)

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
R = 16
TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]

QWEN2_CONFIG = {
    "architectures": ["Qwen2ForCausalLM"], "model_type": "qwen2", "attention_dropout": 0.0,
    "bos_token_id": 151643, "eos_token_id": 151643, "hidden_act": "silu", "hidden_size": 896,
    "initializer_range": 0.02, "intermediate_size": 4864, "max_position_embeddings": 32768,
    "max_window_layers": 24, "num_attention_heads": 14, "num_hidden_layers": 24,
    "num_key_value_heads": 2, "rms_norm_eps": 1e-06, "rope_theta": 1000000.0,
    "sliding_window": 32768, "tie_word_embeddings": True, "torch_dtype": "bfloat16",
    "use_cache": True, "use_sliding_window": False, "vocab_size": 151936,
}


def qwen2_tensors():
    H, I, V, L, Q, KV = 896, 4864, 151936, 24, 14 * 64, 2 * 64
    out = [("model.embed_tokens.weight", (V, H))]
    for l in range(L):
        p = f"model.layers.{l}."
        out += [(p + "self_attn.q_proj.weight", (Q, H)), (p + "self_attn.q_proj.bias", (Q,)),
                (p + "self_attn.k_proj.weight", (KV, H)), (p + "self_attn.k_proj.bias", (KV,)),
                (p + "self_attn.v_proj.weight", (KV, H)), (p + "self_attn.v_proj.bias", (KV,)),
                (p + "self_attn.o_proj.weight", (H, Q)),
                (p + "mlp.gate_proj.weight", (I, H)), (p + "mlp.up_proj.weight", (I, H)),
                (p + "mlp.down_proj.weight", (H, I)),
                (p + "input_layernorm.weight", (H,)), (p + "post_attention_layernorm.weight", (H,))]
    out.append(("model.norm.weight", (H,)))
    return out


def write_qwen2(data):
    """One safetensors file of random N(0, 0.02) bf16 values (one random block reused, as
    bench/load does: the values do not matter for speed), norms at 1."""
    import numpy as np
    os.makedirs(data, exist_ok=True)
    rng = np.random.default_rng(0)
    block = (rng.standard_normal(1 << 24, dtype=np.float32) * 0.02).view(np.uint32)
    block = ((block + 0x7FFF + ((block >> 16) & 1)) >> 16).astype(np.uint16).tobytes()
    one = struct.pack("<H", 0x3F80)   # bf16 1.0
    ts = sorted(qwen2_tensors())
    header, off = {"__metadata__": {"format": "pt"}}, 0
    for name, shape in ts:
        n = int(np.prod(shape)) * 2
        header[name] = {"dtype": "BF16", "shape": list(shape), "data_offsets": [off, off + n]}
        off += n
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * (-len(h) % 8)
    tmp = os.path.join(data, "model.safetensors.tmp")
    with open(tmp, "wb") as f:
        f.write(struct.pack("<Q", len(h)) + h)
        pos = 0
        for name, shape in ts:
            left = int(np.prod(shape)) * 2
            if name.endswith("norm.weight"):
                f.write(one * (left // 2))
                continue
            while left:
                k = min(left, len(block) - pos)
                f.write(block[pos:pos + k])
                left -= k
                pos = (pos + k) % len(block)
    os.rename(tmp, os.path.join(data, "model.safetensors"))
    with open(os.path.join(data, "config.json"), "w") as f:
        json.dump(QWEN2_CONFIG, f, indent=2)
    print(f"  wrote {data}: {off / 1e9:.2f} GB", file=sys.stderr)


def load_bench():
    spec = importlib.util.spec_from_file_location("loadbench", os.path.join(ROOT, "bench", "load", "run_bench.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def models():
    lb = load_bench()
    return {
        "qwen2-0.5b": {"data": os.path.join(ROOT, "bench", "data", "qwen2-0.5b"),
                       "config": QWEN2_CONFIG, "write": write_qwen2, "shape": "Qwen2-0.5B"},
        "gemma-2-2b": {"data": lb.DATA, "config": lb.CONFIG, "write": lambda d: lb.write_checkpoint(),
                       "shape": "gemma-2-2b"},
    }


def model_flops(cfg, B, T):
    """FLOPs of one LoRA training step by the convention in the docstring; returns (total, N)."""
    H, I, V, L = cfg["hidden_size"], cfg["intermediate_size"], cfg["vocab_size"], cfg["num_hidden_layers"]
    nh, kvh = cfg["num_attention_heads"], cfg["num_key_value_heads"]
    hd = cfg.get("head_dim") or H // nh
    per_layer = H * nh * hd + 2 * H * kvh * hd + nh * hd * H + 3 * H * I
    N = L * per_layer + V * H   # + LM head (tied or not, it is a product)
    tokens = B * T
    return 4 * N * tokens + 12 * L * nh * hd * T * tokens, N


TRANSFORMERS = r"""
import json, statistics, sys, time
import numpy as np
import torch
from transformers import AutoModelForCausalLM
from peft import LoraConfig, get_peft_model
data, ids_file, reps, B, T, r = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]), int(sys.argv[6])
targets = sys.argv[7].split(",")
qlora = sys.argv[8] == "qlora"
torch.manual_seed(0)
dev = torch.device("cuda")
ids = torch.from_numpy(np.fromfile(ids_file, dtype=np.int32).reshape(B, T)).long().to(dev)
mask = torch.ones_like(ids)
if qlora:   # the QLoRA recipe's BitsAndBytesConfig (no prepare_model_for_kbit_training: the
            # norms stay bf16 and no gradient checkpointing, as on loupe's side)
    from transformers import BitsAndBytesConfig
    q = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                           bnb_4bit_compute_dtype=torch.bfloat16)
    m = AutoModelForCausalLM.from_pretrained(data, dtype=torch.bfloat16, attn_implementation="sdpa",
                                             quantization_config=q, device_map={"": 0})
else:
    m = AutoModelForCausalLM.from_pretrained(data, dtype=torch.bfloat16, attn_implementation="sdpa").to(dev)
m = get_peft_model(m, LoraConfig(r=r, lora_alpha=2 * r, lora_dropout=0.0, target_modules=targets))
m.train()
opt = torch.optim.AdamW([p for p in m.parameters() if p.requires_grad], lr=2e-4)
def step():
    opt.zero_grad(set_to_none=True)
    out = m(input_ids=ids, attention_mask=mask, labels=ids, use_cache=False)
    out.loss.backward()
    opt.step()
    torch.cuda.synchronize()
    return float(out.loss.detach())
torch.cuda.reset_peak_memory_stats()
t0 = time.perf_counter(); first = step(); warm = time.perf_counter() - t0
ts, last = [], first
for _ in range(reps):
    t0 = time.perf_counter(); last = step(); ts.append(time.perf_counter() - t0)
s = statistics.median(ts)
adapter_dtype = next(p.dtype for n, p in m.named_parameters() if "lora_A" in n)
print(json.dumps({"first_s": warm, "step_s": s, "tokens_per_s": B * T / s, "loss_first": first,
                  "loss_last": last, "peak_mb": torch.cuda.max_memory_allocated() / 2**20,
                  "reserved_mb": torch.cuda.max_memory_reserved() / 2**20,
                  "device": torch.cuda.get_device_name(), "attn": m.config._attn_implementation,
                  "adapter_dtype": str(adapter_dtype), "torch": torch.__version__}))
"""


def run(cmd, env=None, timeout=None):
    """Run a side; its JSON line, or {"error": …} (out of memory, no device) so the other
    model and side still run."""
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout} s"}
    sys.stderr.write(p.stderr[-8000:])   # bench_gpu's profile table fits
    for line in reversed(p.stdout.strip().splitlines()):
        if line.startswith("{"):
            return json.loads(line)
    tail = (p.stderr.strip().splitlines() or ["(no output)"])[-1]
    return {"error": f"exit {p.returncode}: {tail}"}


def fmt(side, x, peak):
    if "error" in x:
        return f"{side:13s} FAILED: {x['error']}"
    return (f"{side:13s} {x['tokens_per_s']:9.0f} tokens/s  step {x['step_s'] * 1e3:7.0f} ms  "
            f"peak {x['peak_mb'] / 1024:6.2f} GiB (reserved {x['reserved_mb'] / 1024:6.2f})  "
            f"MFU {x['mfu'] * 100:5.1f}%  loss {x['loss_first']:.4f} → {x['loss_last']:.4f}"
            + (f"  weights {x['weights']} {x['weights_mb'] / 1024:.2f} GiB" if "weights" in x else "")
            + (f", {x['attention']} attention" if "attention" in x else ""))


def main():
    ap = argparse.ArgumentParser(description="LoRA training on one GPU: loupe vs transformers + peft "
                                 "(issue 7's benchmark; see the module docstring for the conventions).")
    ap.add_argument("--build", default=os.path.join(ROOT, "build-gpu"),
                    help="CMake build directory with CUDA (bench_gpu is built there)")
    ap.add_argument("--loupe-exe", help="a prebuilt bench_gpu to use instead of building one")
    ap.add_argument("--models", default="qwen2-0.5b,gemma-2-2b", help="comma-separated: qwen2-0.5b, gemma-2-2b")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--seq", type=int, default=1024)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--peak-tflops", type=float, default=989.0,
                    help="the GPU's dense bf16 peak for MFU (H100/H200 SXM: 989)")
    ap.add_argument("--qlora", action="store_true",
                    help="the same LoRA over NF4 + double-quantized weights: bitsandbytes with "
                         "compute dtype bf16 against loupe's LOUPE_BENCH_QLORA=1 (run it with "
                         "LOUPE_CUDA_BF16=1 for loupe's bf16 products); not in tests/gpu/run.sh")
    ap.add_argument("--skip-transformers", action="store_true")
    ap.add_argument("--skip-loupe", action="store_true")
    ap.add_argument("--timeout", type=int, default=600, help="seconds per side and model")
    ap.add_argument("--json", help="also write every figure to this file")
    a = ap.parse_args()
    import numpy as np
    ms = models()
    names = [n.strip() for n in a.models.split(",") if n.strip()]
    for n in names:
        if n not in ms:
            sys.exit(f"unknown model {n!r} (known: {', '.join(ms)})")
    exe = None
    if not a.skip_loupe:
        exe = a.loupe_exe or native(os.path.abspath(a.build), "bench_gpu")
    B, T = a.batch, a.seq
    results = {"batch": B, "seq": T, "r": R, "targets": TARGETS, "peak_tflops": a.peak_tflops,
               "qlora": a.qlora,
               "env": {k: os.environ[k] for k in ("LOUPE_CUDA_BF16", "LOUPE_CUDA_TF32",
                                                   "LOUPE_FUSED_ATTENTION") if k in os.environ},
               "models": {}}
    for n in names:
        m = ms[n]
        if not os.path.exists(os.path.join(m["data"], "config.json")):
            print(f"writing {m['data']} (once)", file=sys.stderr)
            m["write"](m["data"])
        ids_file = os.path.join(m["data"], f"ids_{B}x{T}.bin")
        if not os.path.exists(ids_file):
            rng = np.random.default_rng(1)
            rng.integers(0, m["config"]["vocab_size"], size=(B, T), dtype=np.int32).tofile(ids_file)
        flops, N = model_flops(m["config"], B, T)
        row = {"N": N, "flops_per_step": flops}
        sides = []
        if not a.skip_loupe:
            sides.append(("loupe", [exe, m["data"], ids_file, str(B), str(T), str(a.repeats), str(R), "cuda"]))
        if not a.skip_transformers:
            sides.append(("transformers", [sys.executable, "-c", TRANSFORMERS, m["data"], ids_file,
                                           str(a.repeats), str(B), str(T), str(R), ",".join(TARGETS),
                                           "qlora" if a.qlora else "lora"]))
        env = dict(os.environ, LOUPE_BENCH_QLORA="1") if a.qlora else None
        for side, cmd in sides:
            print(f"[{n}] {side} …", file=sys.stderr, flush=True)
            x = run(cmd, env=env, timeout=a.timeout)
            if "error" not in x:
                x["mfu"] = flops / x["step_s"] / (a.peak_tflops * 1e12)
            row[side] = x
        results["models"][n] = row
        dev = next((row[s]["device"] for s in ("loupe", "transformers") if s in row and "device" in row[s]), "?")
        print(f"\n{m['shape']}-shaped (random bf16 weights), LoRA r={R} on {'/'.join(t[:-5] for t in TARGETS)}, "
              f"batch {B} × {T}, AdamW; GPU: {dev}; N = {N / 1e9:.3f} B, "
              f"{flops / 1e12:.1f} TFLOP/step (4·N·tokens + 12·L·H·Dh·T·tokens)")
        for side in ("loupe", "transformers"):
            if side in row:
                print("  " + fmt(side, row[side], a.peak_tflops))
        lp, tf = row.get("loupe"), row.get("transformers")
        if lp and tf and "error" not in lp and "error" not in tf:
            sp, mem = lp["tokens_per_s"] / tf["tokens_per_s"], lp["peak_mb"] / tf["peak_mb"]
            row["ratios"] = {"tokens_per_s": sp, "peak_memory": mem}
            print(f"  ratios        tokens/s loupe/PEFT {sp:.2f}× (target ≥ 2: {'met' if sp >= 2 else 'NOT met'}); "
                  f"peak memory loupe/PEFT {mem:.2f}× (target ≤ 0.6: {'met' if mem <= 0.6 else 'NOT met'}); "
                  f"loupe MFU {lp['mfu'] * 100:.1f}% (target ≥ 50%: {'met' if lp['mfu'] >= 0.5 else 'NOT met'})")
    if a.json:
        with open(a.json, "w") as f:
            json.dump(results, f, indent=2)


if __name__ == "__main__":
    main()
