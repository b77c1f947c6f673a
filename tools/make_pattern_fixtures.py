#!/usr/bin/env python3
"""LoRA rank_pattern / alpha_pattern and exclude_modules / layers_to_transform / layers_pattern
fixtures from transformers + peft (f32, eager), for tests/unit/test_lora_pattern.c.

Writes tests/fixtures/pattern/:

  grad_<case>.safetensors   one forward + loss.backward() of peft LoRA whose rank_pattern and
                            alpha_pattern give some modules another r and lora_alpha, or whose
                            exclude_modules / layers_to_transform / layers_pattern leave some
                            targets out (cases.json),
                            A and B set to seeded values:
                              ids, mask, labels (I32 [B,T]); loss (F32 [1]); logits
                              lora.<module>.lora_A.weight / .lora_B.weight   the values used
                              grad.<same names>                             d loss / d value
                              report (I64 [2])   peft's trainable and all parameter counts
  cases.json                {case: {model, targets, r, alpha, rslora, rank_pattern, alpha_pattern}}
  peft_llama/               the llama case's adapter as PeftModel.save_pretrained writes it
  peft_llama_logits.safetensors  ids, mask; that PeftModel's logits
  peft_gpt2_bias/, peft_gpt2_bias_logits.safetensors  the gpt2_bias case with its biases moved,
                            saved by peft (biases in the file), and that PeftModel's logits

Run from the repository root and commit the output (CI has no torch):
    python3 tools/make_pattern_fixtures.py [--out DIR]
"""
import argparse
import json
import os
import shutil
import sys

import torch
from peft import LoraConfig, get_peft_model
from safetensors.torch import save_file
from transformers import AutoModelForCausalLM

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from make_dora_fixtures import grads_of, key_of as dora_key, load, tidy_config  # noqa: E402
from make_train_fixtures import batch  # noqa: E402  (the gradient fixtures' batch)

OUT = "tests/fixtures/pattern"
CASES = {
    # q_proj everywhere and one layer's down_proj take other ranks; v_proj and down_proj
    # other alphas (layer 1's down_proj both: r 6, alpha 12)
    "llama": dict(model="llama", targets=["q_proj", "v_proj", "down_proj"], r=4, alpha=8,
                  rslora=False, rank_pattern={"q_proj": 2, r"layers\.1\.mlp\.down_proj": 6},
                  alpha_pattern={"v_proj": 3, "down_proj": 12}),
    # rsLoRA (alpha/√r per module), Conv1D, a float alpha
    "gpt2": dict(model="gpt2", targets=["c_attn", "c_fc"], r=4, alpha=8, rslora=True,
                 rank_pattern={r"h\.0\.attn\.c_attn": 8}, alpha_pattern={"c_fc": 2.5}),
    # layer 1 only, but up_proj named in full (every layer: peft's exact-name match) and one
    # o_proj excluded by a regex: layers.1.{q,v}_proj and layers.0.mlp.up_proj
    "llama_filter": dict(model="llama", targets=["q_proj", "v_proj", "o_proj",
                                                 "model.layers.0.mlp.up_proj"],
                         r=4, alpha=8, rslora=False, rank_pattern={}, alpha_pattern={},
                         layers_to_transform=1,
                         exclude_modules=r"model\.layers\.1\.self_attn\.o_proj"),
    # the layer index after "h", mlp.c_proj excluded by name: h.0.attn.c_attn, h.0.attn.c_proj
    "gpt2_filter": dict(model="gpt2", targets=["c_attn", "c_proj"], r=4, alpha=8, rslora=False,
                        rank_pattern={}, alpha_pattern={}, layers_to_transform=[0],
                        layers_pattern="h", exclude_modules=["mlp.c_proj"]),
    # bias="all": every bias of GPT-2 trains (LayerNorms' too); "lora_only": the adapted
    # modules' (q_proj has one, o_proj none)
    "gpt2_bias": dict(model="gpt2", targets=["c_attn"], r=2, alpha=4, rslora=False,
                      rank_pattern={}, alpha_pattern={}, bias="all"),
    "qwen2_bias": dict(model="qwen2", targets=["q_proj", "o_proj"], r=2, alpha=4, rslora=False,
                       rank_pattern={}, alpha_pattern={}, bias="lora_only"),
}


def key_of(n):   # peft's name of a trained bias on an adapted module has ".base_layer"
    return dora_key(n).replace(".base_layer.", ".")


def pattern_model(c):
    cfg = LoraConfig(r=c["r"], lora_alpha=c["alpha"], target_modules=c["targets"],
                     use_rslora=c["rslora"], rank_pattern=c["rank_pattern"],
                     alpha_pattern=c["alpha_pattern"], fan_in_fan_out=c["model"] == "gpt2",
                     layers_to_transform=c.get("layers_to_transform"),
                     layers_pattern=c.get("layers_pattern"),
                     exclude_modules=c.get("exclude_modules"), bias=c.get("bias", "none"))
    return get_peft_model(load(c["model"]), cfg)


def randomise(m, seed):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for n, p in m.named_parameters():
            if "lora_A" in n or "lora_B" in n:
                p.copy_(0.3 * torch.randn(p.shape, generator=g))


def run_case(name, c, out):
    m = pattern_model(c)
    report = m.get_nb_trainable_parameters()
    randomise(m, 13)
    tensors, o = grads_of(m, key_of)
    tensors.update(logits=o.logits.detach(), report=torch.tensor(report, dtype=torch.int64))
    save_file({k: v.contiguous() for k, v in tensors.items()}, f"{out}/grad_{name}.safetensors")
    print(name, "loss", float(o.loss.detach()), "grads", sum(k.startswith("grad.") for k in tensors))


def peft_saved(out):
    m = pattern_model(CASES["llama"])
    randomise(m, 5)
    d = f"{out}/peft_llama"
    shutil.rmtree(d, ignore_errors=True)
    m.save_pretrained(d)
    tidy_config(d, "llama")
    ids, mask, _ = batch(m.config.vocab_size, seed=3)
    with torch.no_grad():
        logits = m(input_ids=ids, attention_mask=mask).logits
    save_file({"ids": ids.to(torch.int32), "mask": mask.to(torch.int32), "logits": logits},
              f"{out}/peft_llama_logits.safetensors")


def peft_saved_bias(out):
    """GPT-2 with bias="all", the biases moved from the checkpoint's: saved by peft (the biases
    go into the adapter file), and its logits."""
    m = pattern_model(CASES["gpt2_bias"])
    randomise(m, 8)
    g = torch.Generator().manual_seed(9)
    with torch.no_grad():
        for n, p in m.named_parameters():
            if n.endswith(".bias"):
                p.add_(0.2 * torch.randn(p.shape, generator=g))
    d = f"{out}/peft_gpt2_bias"
    shutil.rmtree(d, ignore_errors=True)
    m.save_pretrained(d)
    tidy_config(d, "gpt2")
    ids, mask, _ = batch(m.config.vocab_size, seed=3)
    with torch.no_grad():
        logits = m(input_ids=ids, attention_mask=mask).logits
    save_file({"ids": ids.to(torch.int32), "mask": mask.to(torch.int32), "logits": logits},
              f"{out}/peft_gpt2_bias_logits.safetensors")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=OUT)
    out = ap.parse_args().out
    os.makedirs(out, exist_ok=True)
    for name, c in CASES.items():
        run_case(name, c, out)
    with open(f"{out}/cases.json", "w") as f:
        json.dump(CASES, f, indent=1, sort_keys=True)
        f.write("\n")
    peft_saved(out)
    peft_saved_bias(out)


if __name__ == "__main__":
    main()
