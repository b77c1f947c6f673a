#!/usr/bin/env python3
"""DoRA fixtures from transformers + peft (f32, eager), for tests/unit/test_dora.c and
tests/unit/test_train_loop.c.

Writes tests/fixtures/dora/:

  grad_<case>.safetensors   one forward + loss.backward() of peft LoRA with use_dora=True on a
                            tiny checkpoint (cases.json: targets, r, alpha), every lora_A,
                            lora_B and lora_magnitude_vector set to seeded values (B not zero,
                            the magnitude not the weight norms, so every term of DoRA counts):
                              ids, mask, labels (I32 [B,T]); loss (F32 [1]); logits
                              lora.<module>.lora_A.weight / .lora_B.weight /
                              .lora_magnitude_vector       the values used
                              grad.<same names>            d loss / d value
                              merged_logits               after peft's merge_adapter()
                              report (I64 [2])            peft's trainable and all counts
  cases.json                {case: {model, targets, r, alpha}}
  grad_llama_base.safetensors  the same for DoRA on llama's q_proj / v_proj with layer 1's
                            q_proj base weight trainable (lora.<name>, grad.<name>: its name
                            without base_layer)
  peft_llama/               a DoRA adapter PeftModel.save_pretrained wrote (seeded values)
  peft_llama_logits.safetensors  ids, mask; logits of that PeftModel; gen_prompt, gen_ids:
                            its greedy generation of 16 tokens (KV cache, no eos stop)
  bf16_qwen2.safetensors    DoRA all-linear on qwen2-bf16 with loupe's bf16 products (see
                            make_bf16_fixtures.py): the values used, loss, every gradient
  dora_init/                the adapter the curve starts from (peft's own init: A random,
                            B = 0, the magnitude the weights' row norms)
  loss_curve_dora.json      20 AdamW steps as tools/make_optim_fixtures.py's LoRA curve (same
                            batches, lr, schedule, clipping) with that DoRA adapter

Run from the repository root and commit the output (CI has no torch):
    python3 tools/make_dora_fixtures.py [--out DIR]
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
import make_optim_fixtures as optim  # noqa: E402  (same batches and loop as the LoRA curve)
from make_train_fixtures import batch  # noqa: E402  (the gradient fixtures' batch)

OUT = "tests/fixtures/dora"
CASES = {
    "llama": dict(model="llama", targets="all-linear", r=4, alpha=8),
    "qwen2": dict(model="qwen2", targets=["q_proj", "k_proj", "v_proj", "o_proj"], r=4,
                  alpha=16),   # q, k, v have biases: y is the output less its bias
    "gemma2": dict(model="gemma2", targets=["q_proj", "v_proj", "down_proj"], r=2, alpha=4),
    "gpt2": dict(model="gpt2", targets=["c_attn", "attn.c_proj", "c_fc"], r=4, alpha=8),
}


def load(name):
    m = AutoModelForCausalLM.from_pretrained(f"tests/fixtures/models/{name}",
                                             attn_implementation="eager", dtype=torch.float32)
    m.eval()
    return m


def dora_model(c):
    cfg = LoraConfig(r=c["r"], lora_alpha=c["alpha"], target_modules=c["targets"],
                     use_dora=True, fan_in_fan_out=c["model"] == "gpt2")
    return get_peft_model(load(c["model"]), cfg)


def key_of(n):
    k = n.replace("base_model.model.", "", 1).replace(".default", "")
    return k.replace("lora_magnitude_vector.weight", "lora_magnitude_vector")


def randomise(m, seed):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for n, p in m.named_parameters():
            if "lora_magnitude_vector" in n:
                p.mul_(1 + 0.3 * torch.randn(p.shape, generator=g))
            elif "lora_A" in n or "lora_B" in n:
                p.copy_(0.3 * torch.randn(p.shape, generator=g))


def grads_of(m, key=None):
    """One forward + loss.backward() of the peft model m on the gradient fixtures' batch:
    {"lora.<name>": value, "grad.<name>": gradient} of every trainable tensor (names by key, peft's
    made loupe's), the batch and the loss; and the output."""
    key = key or key_of
    tensors = {}
    for n, p in m.named_parameters():
        if p.requires_grad:
            tensors["lora." + key(n)] = p.detach().clone()
    ids, mask, labels = batch(m.config.vocab_size)
    o = m(input_ids=ids, attention_mask=mask, labels=labels)
    o.loss.backward()
    for n, p in m.named_parameters():
        if p.grad is not None:
            tensors["grad." + key(n)] = p.grad.detach().clone()
    tensors.update(ids=ids.to(torch.int32), mask=mask.to(torch.int32),
                   labels=labels.to(torch.int32), loss=o.loss.detach().reshape(1))
    return tensors, o


def run_case(name, c, out):
    m = dora_model(c)
    report = m.get_nb_trainable_parameters()
    randomise(m, 11)
    tensors, o = grads_of(m)
    ids, mask = tensors["ids"].long(), tensors["mask"].long()
    with torch.no_grad():
        m.merge_adapter()
        merged = m(input_ids=ids, attention_mask=mask).logits
    tensors.update(logits=o.logits.detach(), merged_logits=merged,
                   report=torch.tensor(report, dtype=torch.int64))
    save_file({k: v.contiguous() for k, v in tensors.items()}, f"{out}/grad_{name}.safetensors")
    print(name, "loss", float(o.loss), "grads", sum(k.startswith("grad.") for k in tensors))


def tidy_config(d, model):
    p = f"{d}/adapter_config.json"
    cfg = json.load(open(p))
    cfg["base_model_name_or_path"] = f"tests/fixtures/models/{model}"   # not this machine's
    if isinstance(cfg.get("target_modules"), list):
        cfg["target_modules"] = sorted(cfg["target_modules"])   # a set in peft
    json.dump(cfg, open(p, "w"), indent=2, sort_keys=True)
    if os.path.exists(f"{d}/README.md"):
        os.remove(f"{d}/README.md")


def peft_saved(out):
    m = dora_model(dict(CASES["llama"], targets=["q_proj", "v_proj", "down_proj"]))
    randomise(m, 5)
    d = f"{out}/peft_llama"
    shutil.rmtree(d, ignore_errors=True)
    m.save_pretrained(d)
    tidy_config(d, "llama")
    ids, mask, _ = batch(m.config.vocab_size, seed=3)
    with torch.no_grad():
        logits = m(input_ids=ids, attention_mask=mask).logits
        prompt = ids[:1, :5]
        gen = m.generate(input_ids=prompt, attention_mask=torch.ones_like(prompt),
                         do_sample=False, max_new_tokens=16, min_new_tokens=16,
                         eos_token_id=None, pad_token_id=0)
    save_file({"ids": ids.to(torch.int32), "mask": mask.to(torch.int32), "logits": logits,
               "gen_prompt": prompt[0].to(torch.int32).contiguous(),
               "gen_ids": gen[0, 5:].to(torch.int32).contiguous()},
              f"{out}/peft_llama_logits.safetensors")


def curve(out):
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(optim.MODEL, dtype=torch.float32,
                                                 attn_implementation="eager")
    data = optim.batches(model.config.vocab_size)
    pm = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"],
                                          use_dora=True))
    d = f"{out}/dora_init"
    shutil.rmtree(d, ignore_errors=True)
    pm.save_pretrained(d)
    tidy_config(d, "llama")
    params = [p for p in pm.parameters() if p.requires_grad]
    losses, norms, lrs = optim.run(pm, params, data)
    with open(f"{out}/loss_curve_dora.json", "w") as f:
        json.dump(optim.curve_json(data, losses, norms, lrs, {
            "dora": {"r": 4, "alpha": 8, "target": ["q_proj", "v_proj"], "init": "dora_init"}}),
            f)


def bf16(out):
    """DoRA on every linear layer of qwen2-bf16 with loupe's bf16 products (make_bf16_fixtures'
    semantics: weights rounded to bf16, each Linear's input and output gradient rounded before
    its product, f32 sums; the adapters f32 on the unrounded input), seeded A, B and m."""
    import make_bf16_fixtures as b16
    model = AutoModelForCausalLM.from_pretrained("tests/fixtures/models/qwen2-bf16",
                                                 dtype=torch.float32,
                                                 attn_implementation="eager").eval()
    b16.patch(model)   # before peft: the adapters' own Linear layers stay plain f32
    m = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules="all-linear",
                                         use_dora=True))
    randomise(m, 21)
    tensors, _ = grads_of(m)
    save_file({k: v.contiguous() for k, v in tensors.items()}, f"{out}/bf16_qwen2.safetensors")


def base_trains(out):
    """DoRA on llama's q_proj and v_proj with layer 1's q_proj base weight trainable too (its
    gradient through the base product and the rescaled one; the norm is detached)."""
    m = dora_model(dict(CASES["llama"], targets=["q_proj", "v_proj"]))
    base = "base_model.model.model.layers.1.self_attn.q_proj.base_layer.weight"
    m.get_parameter(base).requires_grad_(True)
    randomise(m, 13)
    tensors, o = grads_of(m)
    tensors = {k.replace(".base_layer", ""): v for k, v in tensors.items()}   # loupe's names
    tensors.update(logits=o.logits.detach())
    save_file({k: v.contiguous() for k, v in tensors.items()}, f"{out}/grad_llama_base.safetensors")
    print("llama_base loss", float(o.loss), "grads", sum(k.startswith("grad.") for k in tensors))


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
    base_trains(out)
    peft_saved(out)
    bf16(out)
    curve(out)


if __name__ == "__main__":
    main()
