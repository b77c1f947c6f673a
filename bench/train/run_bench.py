#!/usr/bin/env python3
"""run_bench.py — one LoRA (or IA3, QLoRA, AdaLoRA) training step, loupe vs transformers + peft
(torch, CPU).

The checkpoint is bench/forward/run_bench.py's SmolLM2-135M-shaped one (random bf16 weights,
written once into bench/data/smollm2-135m/ with a seeded batch of ids). One step = zero the
grads, forward on batch 4 × 256 with labels = ids, backward, AdamW (lr 2e-4) over LoRA r=8,
alpha 16, dropout 0 on q_proj/k_proj/v_proj/o_proj. Each side runs in its own process with the
same thread count n (OMP_NUM_THREADS, OPENBLAS_NUM_THREADS, MKL_NUM_THREADS = n;
torch.set_num_threads(n)), one warm-up step, then the median of --repeats steps; peak resident
memory is the process's ru_maxrss (loupe computes in f32 from widened weights; transformers
loads in f32). The first-step losses are printed side by side (same weights, same ids; the
LoRA A draws differ, B starts at 0 so the first loss is the base model's on both).

Each side also reports its fastest step and the CPU seconds of its median step (all threads;
on a box shared with other work, CPU time moves less with the others' load than wall time).
--rounds K runs the pair K times, alternating loupe and transformers, and prints every
round's ratio and the ratio of the two sides' best medians: load that comes and goes then
hits both sides alike.

    cmake -S . -B build-fwd -DCMAKE_BUILD_TYPE=Release && cmake --build build-fwd -j2 --target loupe_runtime
    python3 bench/train/run_bench.py [--build build-fwd] [--threads N] [--repeats 3] [--rounds 1]
                                     [--adapter lora|ia3|qlora|qlora-dq|adalora|dora|int8]

--adapter ia3: PEFT's IA3 with its Llama defaults (k_proj, v_proj, down_proj feed-forward) on
both sides instead of LoRA; the vectors start at ones, so the first losses are equal.
--adapter qlora: the same LoRA over 4-bit weights: loupe's `quantize="nf4"` against transformers
with bitsandbytes (BitsAndBytesConfig nf4, compute float32; the model in training mode, so
bitsandbytes dequantizes and multiplies in f32 as loupe does). Needs bitsandbytes.
--checkpointing: gradient checkpointing on both sides (loupe's `gradient_checkpointing`;
transformers' gradient_checkpointing_enable with use_reentrant=False, as the Trainer's
gradient_checkpointing=True): the activations' memory for one more forward a step.
--adapter qlora-dq: the same with double quantization (bnb_4bit_use_double_quant=True; loupe's
double_quant=true): every product first dequantizes the weight's 8-bit scales.
--adapter dora: the LoRA with use_dora=True on both sides (loupe's dora=true): each step also
recomputes the weight norms ||W + s·B·A|| of the four projections of every layer.
--adapter int8: the LoRA over LLM.int8 weights: loupe's `quantize="int8"` (MatMul8bitLt's
int8 products, outliers in f32) against transformers with bitsandbytes' load_in_8bit, which on
the CPU in training mode multiplies the dequantized weight instead (MatMul8bitFp); the first
losses then differ by LLM.int8's input rounding. Needs bitsandbytes.
--adapter adalora: PEFT's AdaLoRA with its Llama defaults (q_proj, v_proj, init_r 12 → target_r
8, alpha 8, orth_reg_weight 0.5) over a 100-step schedule, so every step runs the rank
allocator: transformers + peft calls update_and_allocate after optimizer.step() (its example
loop), task_type CAUSAL_LM (the regulariser in the loss, as loupe's). A, B draws differ, E
starts at 0 on both: the first losses differ only by the regulariser of those draws.
"""

import argparse
import importlib.util
import json
import os
import statistics
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from native import native  # noqa: E402  (bench/native.py)

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
spec = importlib.util.spec_from_file_location("fwbench", os.path.join(ROOT, "bench", "forward", "run_bench.py"))
fwbench = importlib.util.module_from_spec(spec)
spec.loader.exec_module(fwbench)
DATA, B, T, R = fwbench.DATA, fwbench.B, fwbench.T, 8

TRANSFORMERS = r"""
import json, resource, statistics, sys, time
import numpy as np
import torch
from transformers import AutoModelForCausalLM
from peft import AdaLoraConfig, IA3Config, LoraConfig, get_peft_model
data, n, reps, B, T, kind = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]), sys.argv[6]
ckpt = kind.endswith("+ckpt")
kind = kind.replace("+ckpt", "")
nf4 = kind.startswith("qlora")
dora = kind.startswith("dora")
q8 = kind.startswith("int8")
ada = kind == "adalora"
dq = kind.endswith("dq")
r = 0 if kind in ("ia3", "adalora") else int(kind[5:].replace("dq", "") if nf4 else kind[4:] if dora or q8 else kind)
torch.set_num_threads(n)
torch.manual_seed(0)
ids = torch.from_numpy(np.fromfile(data + "/ids.bin", dtype=np.int32).reshape(B, T)).long()
mask = torch.ones_like(ids)
if q8:   # bitsandbytes' LLM.int8 (on the CPU in training mode it dequantizes: MatMul8bitFp)
    from transformers import BitsAndBytesConfig
    m = AutoModelForCausalLM.from_pretrained(data, dtype=torch.float32, device_map="cpu",
        quantization_config=BitsAndBytesConfig(load_in_8bit=True))
elif nf4:   # bitsandbytes' 4-bit weights, compute float32 (training mode: dequantize, matmul)
    from transformers import BitsAndBytesConfig
    m = AutoModelForCausalLM.from_pretrained(data, dtype=torch.float32, device_map="cpu", quantization_config=BitsAndBytesConfig(
        load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=dq,
        bnb_4bit_compute_dtype=torch.float32))
else:
    m = AutoModelForCausalLM.from_pretrained(data, dtype=torch.float32)
m = get_peft_model(m, LoraConfig(r=r, lora_alpha=2 * r, lora_dropout=0.0, use_dora=dora,
                                 target_modules=["q_proj", "k_proj", "v_proj", "o_proj"])
                   if r > 0 else AdaLoraConfig(init_r=12, target_r=8, total_step=100, task_type="CAUSAL_LM",
                                               target_modules=["q_proj", "v_proj"]) if ada
                   else IA3Config(target_modules=["k_proj", "v_proj", "down_proj"],
                                  feedforward_modules=["down_proj"]))
if ckpt:
    m.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
gstep = [0]
m.train()
opt = torch.optim.AdamW([p for p in m.parameters() if p.requires_grad], lr=2e-4)
def step():
    opt.zero_grad()
    out = m(input_ids=ids, attention_mask=mask, labels=ids, use_cache=False)
    out.loss.backward()
    opt.step()
    if ada:   # PEFT's AdaLoRA loop: the allocator after each optimizer step
        m.base_model.update_and_allocate(gstep[0])
        gstep[0] += 1
    return float(out.loss.detach())
t0 = time.perf_counter(); first = step(); warm = time.perf_counter() - t0
ts, cs, last = [], [], first
for _ in range(reps):
    t0, c0 = time.perf_counter(), time.process_time()
    last = step()
    ts.append(time.perf_counter() - t0); cs.append(time.process_time() - c0)
print(json.dumps({"first_s": warm, "step_s": statistics.median(ts), "step_min_s": min(ts),
                  "step_cpu_s": statistics.median(cs), "loss_first": first,
                  "loss_last": last, "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                  "threads": torch.get_num_threads(), "attn": m.config._attn_implementation}))
"""


def build_bench(build):
    return native(build, "bench_train")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--build", default=os.path.join(ROOT, "build-fwd"))
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--skip-transformers", action="store_true")
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--checkpointing", action="store_true")
    ap.add_argument("--adapter", choices=["lora", "ia3", "qlora", "qlora-dq", "adalora", "dora",
                                          "int8"],
                    default="lora")
    a = ap.parse_args()
    r = {"lora": str(R), "ia3": "ia3", "qlora": f"qlora{R}", "qlora-dq": f"qlora{R}dq",
         "adalora": "adalora", "dora": f"dora{R}", "int8": f"int8{R}"}[a.adapter] + ("+ckpt" if a.checkpointing else "")
    if not os.path.exists(os.path.join(DATA, "ids.bin")):
        print(f"writing {DATA} (once)", file=sys.stderr)
        fwbench.write_checkpoint()
    exe = build_bench(os.path.abspath(a.build))
    n = str(a.threads)
    env = dict(os.environ, OMP_NUM_THREADS=n, OPENBLAS_NUM_THREADS=n, MKL_NUM_THREADS=n)
    what = {"lora": f"LoRA r={R} on q/k/v/o", "ia3": "IA3 on k/v/down (PEFT's Llama defaults)",
            "qlora": f"QLoRA: LoRA r={R} on q/k/v/o over NF4 Linear weights",
            "qlora-dq": f"QLoRA: LoRA r={R} on q/k/v/o over NF4 weights, scales double-quantized",
            "adalora": "AdaLoRA on q/v (PEFT's Llama defaults), the allocator every step",
            "dora": f"DoRA (use_dora) r={R} on q/k/v/o",
            "int8": f"LoRA r={R} on q/k/v/o over LLM.int8 weights"}[a.adapter]
    if a.checkpointing:
        what += ", gradient checkpointing" 
    print(f"shape:        SmolLM2-135M (random bf16 weights, f32 compute), {what}, "
          f"batch {B} × {T} tokens, AdamW, {a.threads} threads")
    best, rounds = {}, []   # rounds: (loupe step, transformers step, RSS ratio) per round
    for k in range(a.rounds):
        lp = fwbench.run([exe, DATA, os.path.join(DATA, "ids.bin"), str(B), str(T), str(a.repeats), r], env)
        show("loupe:       ", lp, a.repeats)
        best["loupe"] = min(best.get("loupe", 1e9), lp["step_s"])
        if a.skip_transformers:
            continue
        tf = fwbench.run([sys.executable, "-c", TRANSFORMERS, DATA, n, str(a.repeats), str(B), str(T), r], env)
        show("transformers:", tf, a.repeats, f"torch threads {tf['threads']}, attention {tf['attn']}; ")
        best["tf"] = min(best.get("tf", 1e9), tf["step_s"])
        rounds.append((lp["step_s"], tf["step_s"], lp["peak_rss_mb"] / tf["peak_rss_mb"]))
        print(f"ratio:        step time loupe / transformers = {lp['step_s'] / tf['step_s']:.2f}× "
              f"(below 1: loupe faster; fastest steps {lp['step_min_s'] / tf['step_min_s']:.2f}×, "
              f"CPU time {lp['step_cpu_s'] / tf['step_cpu_s']:.2f}×); peak RSS loupe / transformers = "
              f"{lp['peak_rss_mb'] / tf['peak_rss_mb']:.2f}×")
    if a.rounds > 1 and "tf" in best:
        print(f"best of {a.rounds} rounds: loupe {best['loupe'] * 1e3:.0f} ms, transformers "
              f"{best['tf'] * 1e3:.0f} ms: {best['loupe'] / best['tf']:.2f}×")
        # the targets (issue 6): step time ≤ 0.8× and peak RSS ≤ 1× of transformers + peft
        ratios = [l / t for l, t, _ in rounds]
        ml, mt = (statistics.median(x[i] for x in rounds) for i in (0, 1))
        print(f"over {len(rounds)} rounds: median ratio {statistics.median(ratios):.2f}×, "
              f"ratio of the medians {ml / mt:.2f}×; step ≤ 0.8× in "
              f"{sum(r <= 0.8 for r in ratios)} of {len(ratios)}, peak RSS ≤ 1× in "
              f"{sum(x[2] <= 1 for x in rounds)} of {len(rounds)}")


def show(who, r, reps, extra=""):
    print(f"{who} {r['step_s'] * 1e3:.0f} ms/step (median of {reps}; fastest {r['step_min_s'] * 1e3:.0f} ms, "
          f"CPU {r['step_cpu_s']:.2f} s; warm-up step {r['first_s'] * 1e3:.0f} ms; {extra}"
          f"peak RSS {r['peak_rss_mb']:.0f} MB), loss {r['loss_first']:.4f} → {r['loss_last']:.4f}")


if __name__ == "__main__":
    main()
