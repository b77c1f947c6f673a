#!/usr/bin/env python3
"""LLM.int8 fixtures from bitsandbytes + transformers + peft (load_in_8bit, Linear8bitLt), for
tests/unit/test_q8.c.

Writes tests/fixtures/q8/:

  ops.safetensors       <case>.w (F32 [out, in]) a weight, <case>.cb (I8) and <case>.scb (F32
                        [out]) what Int8Params quantizes it to (f16, then
                        int8_vectorwise_quant); <case>.x (F32 [N, in]) inputs (some past the
                        threshold), <case>.y_<t> (F32 [N, out]) Linear8bitLt's eval forward
                        (MatMul8bitLt, bias included) with llm_int8_threshold t (0, 2, 6);
                        <case>.deq (F32) the weight Linear8bitLt's backward multiplies
  <model>.safetensors   LoRA r=4 over a load_in_8bit model (llama: threshold 6, and 1.5 in
                        llama_t15; gpt2: 1.5, gpt2_t6: 6, gpt2_t0: none): ids, mask, labels; lora.<name> the adapter values
                        (seeded), loss, logits, grad.<name> (model.eval(): MatMul8bitLt's
                        forward, as on a GPU, not the CPU training path's dequantized one);
                        report (I64 [2]) peft's trainable and all counts

  prequant.safetensors  <model>.<weight>.deq (F32 [out, in]): the weight Linear8bitLt's backward
                        multiplies, read by transformers from the checkpoints below
  tests/fixtures/models/{llama,gpt2}-int8-bnb
                        what save_pretrained writes of the load_in_8bit llama and GPT-2 with
                        llm_int8_threshold 1.5 (the Hub's 8-bit models): int8 weights, W.SCB,
                        W.weight_format; the same codes as llama_t15 and gpt2 above

Run from the repository root and commit the output (CI has no torch):
    python3 tools/make_q8_fixtures.py [--out DIR] [--models DIR]
"""
import argparse
import os
import sys

import bitsandbytes as bnb
import torch
from peft import LoraConfig, get_peft_model
from safetensors.torch import save_file
from transformers import AutoModelForCausalLM, BitsAndBytesConfig

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from make_dora_fixtures import grads_of  # noqa: E402

OUT = "tests/fixtures/q8"


def linear8(w, b, threshold):
    lin = bnb.nn.Linear8bitLt(w.shape[1], w.shape[0], bias=b is not None,
                              has_fp16_weights=False, threshold=threshold)
    lin.weight = bnb.nn.Int8Params(w.clone(), requires_grad=False, has_fp16_weights=False)
    if b is not None:
        lin.bias = torch.nn.Parameter(b.clone())
    lin.weight.to("cpu")   # quantizes in place (Int8Params._quantize): f16, then int8 rows
    lin.eval()
    return lin


def ops(out):
    g = torch.Generator().manual_seed(5)
    t = {}
    for name, (n, i, o) in {"a": (5, 40, 24), "b": (1, 33, 7), "c": (9, 130, 17)}.items():
        w = torch.randn(o, i, generator=g) * 0.05
        w[0, 3] = 0.0
        w[1] = 0.0 if o > 1 else w[1]          # an all-zero row
        b = torch.randn(o, generator=g) * 0.1
        x = torch.randn(n, i, generator=g)
        x[:, 2] *= 4.0                         # columns with values past 2 and 6
        x[0, 5] = 7.5
        x[-1, 0] = -6.0                        # exactly the threshold
        t[f"{name}.w"], t[f"{name}.x"], t[f"{name}.bias"] = w, x, b
        for thr in (0.0, 2.0, 6.0):
            lin = linear8(w, b, thr)
            with torch.no_grad():
                t[f"{name}.y_{int(thr)}"] = lin(x).float()
        cb, scb = lin.state.CB, lin.state.SCB   # moved there by the first forward
        t[f"{name}.cb"], t[f"{name}.scb"] = cb.clone(), scb.clone()
        t[f"{name}.deq"] = cb.to(torch.float32).mul_(scb.unsqueeze(1).mul(1.0 / 127.0))
    save_file({k: v.contiguous() for k, v in t.items()}, f"{out}/ops.safetensors")


def model(name, src, threshold, targets, out):
    m = AutoModelForCausalLM.from_pretrained(
        f"tests/fixtures/models/{src}", dtype=torch.float32, device_map="cpu",
        quantization_config=BitsAndBytesConfig(load_in_8bit=True,
                                               llm_int8_threshold=threshold))
    m = get_peft_model(m, LoraConfig(r=4, lora_alpha=8, target_modules=targets))
    report = m.get_nb_trainable_parameters()
    m.eval()   # MatMul8bitLt (bitsandbytes' CPU training path dequantizes instead)
    g = torch.Generator().manual_seed(17)
    with torch.no_grad():
        for n, p in m.named_parameters():
            if "lora_" in n:
                p.copy_(0.3 * torch.randn(p.shape, generator=g))
    tensors, o = grads_of(m)
    tensors.update(logits=o.logits.detach(), report=torch.tensor(report, dtype=torch.int64))
    save_file({k: v.contiguous() for k, v in tensors.items()}, f"{out}/{name}.safetensors")
    print(name, "loss", float(o.loss.detach()), "grads", sum(k.startswith("grad.") for k in tensors))


def load8(src, threshold):
    return AutoModelForCausalLM.from_pretrained(
        src, dtype=torch.float32, device_map="cpu",
        quantization_config=BitsAndBytesConfig(load_in_8bit=True, llm_int8_threshold=threshold))


def prequantized(out, models):
    """Saved 8-bit checkpoints (in models); what transformers reads back of one weight each."""
    t = {}
    for src, weight in (("llama", "model.layers.0.mlp.down_proj"),
                        ("gpt2", "transformer.h.0.mlp.c_fc")):
        dst = f"{models}/{src}-int8-bnb"
        load8(f"tests/fixtures/models/{src}", 1.5).save_pretrained(dst)
        lin = load8(dst, 6.0).get_submodule(weight)   # the file's threshold wins
        assert isinstance(lin, bnb.nn.Linear8bitLt) and lin.state.threshold == 1.5
        cb, scb = lin.weight.data, lin.weight.SCB      # Linear8bitLt's backward's order
        t[f"{src}.{weight}.deq"] = cb.to(torch.float32).mul_(scb.unsqueeze(1).mul(1.0 / 127.0))
    save_file({k: v.contiguous() for k, v in t.items()}, f"{out}/prequant.safetensors")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=OUT)
    ap.add_argument("--models", default="tests/fixtures/models",
                    help="where the saved 8-bit checkpoints go")
    a = ap.parse_args()
    out = a.out
    os.makedirs(out, exist_ok=True)
    ops(out)
    prequantized(out, a.models)
    qkvo = ["q_proj", "k_proj", "v_proj", "o_proj"]
    model("llama", "llama", 6.0, qkvo, out)
    model("llama_t15", "llama", 1.5, qkvo, out)
    for sfx, thr in (("", 1.5), ("_t6", 6.0), ("_t0", 0.0)):
        model("gpt2" + sfx, "gpt2", thr, ["c_attn", "c_proj", "c_fc"], out)


if __name__ == "__main__":
    main()
