#!/usr/bin/env python3
"""PiSSA and OLoRA fixtures from transformers + peft (init_lora_weights="pissa" / "olora": the
adapter made from the base weight, the base weight replaced by the residual), for
tests/unit/test_lora_init.c.

Writes tests/fixtures/lora_init/:

  <case>.safetensors   peft's adapter right after get_peft_model, on a tiny checkpoint:
                         init.<module>.lora_A.weight / .lora_B.weight   the values peft made
                         res.<module>.weight     the residual base weight it left
                         ids, mask, labels (I32 [B,T]); loss (F32 [1]); logits
                         grad.<module>.lora_A.weight / .lora_B.weight   d loss / d value
                         merged_logits           after merge_adapter()
                         report (I64 [2])        peft's trainable and all counts
                         (with DoRA: .lora_magnitude_vector too)
  cases.json           {case: {model, init, targets, r, alpha, rslora, quant, dora}}
  peft_<case>/         that adapter after its values moved (seeded), saved by
                       PeftModel.save_pretrained (adapter_config says init_lora_weights: peft
                       makes the residual again when it loads it on the original model)
  peft_<case>_logits.safetensors   ids, mask; PeftModel.from_pretrained's logits for it

The quantized cases (OLoRA over bitsandbytes' 4-bit NF4 with double quantization, and over
LLM.int8): peft dequantizes the weight, makes the adapter from it and quantizes the residual
again; res.* is that residual dequantized. The scales' quantization (double quantization) uses
bitsandbytes' GPU rounding, as tools/make_q4_fixtures.py arranges on import. The 4-bit case runs in training mode (bitsandbytes'
dequantize-then-matmul, as tools/make_q4_fixtures.py), the 8-bit one in eval mode
(MatMul8bitLt, as tools/make_q8_fixtures.py).

PiSSA's singular vectors are defined up to a sign each (LAPACK's sgesdd, here MKL's); a test
compares component by component after matching signs. OLoRA's QR (Householder) is not.

Run from the repository root and commit the output (CI has no torch):
    python3 tools/make_lora_init_fixtures.py [--out DIR]
"""
import argparse
import json
import os
import shutil
import sys

import torch
from peft import LoraConfig, PeftModel, get_peft_model
from safetensors.torch import save_file

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from make_dora_fixtures import grads_of, key_of, load, randomise, tidy_config  # noqa: E402
from make_train_fixtures import batch  # noqa: E402
# double quantization on the CPU as bitsandbytes' GPU kernel rounds it (make_q4_fixtures.py)
import make_q4_fixtures  # noqa: E402,F401

OUT = "tests/fixtures/lora_init"
LLAMA = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "down_proj"]
CASES = {
    "pissa_llama": dict(model="llama", init="pissa", targets=LLAMA, r=4, alpha=8, rslora=False),
    "pissa_gpt2": dict(model="gpt2", init="pissa", targets=["c_attn", "c_proj", "c_fc"], r=4,
                       alpha=16, rslora=True),
    "olora_llama": dict(model="llama", init="olora", targets=LLAMA, r=4, alpha=8, rslora=False),
    "olora_qwen2": dict(model="qwen2", init="olora", targets=["q_proj", "v_proj", "up_proj"],
                        r=2, alpha=4, rslora=False),
    "pissa_dora": dict(model="llama", init="pissa", targets=["q_proj", "v_proj", "down_proj"],
                       r=4, alpha=8, rslora=False, dora=True),
    "olora_nf4": dict(model="llama-nf4", init="olora", targets=["q_proj", "v_proj", "down_proj"],
                      r=4, alpha=8, rslora=False, quant="nf4"),
    "olora_int8": dict(model="llama", init="olora", targets=["q_proj", "o_proj", "gate_proj"],
                       r=4, alpha=8, rslora=False, quant="int8"),
}
SAVED = ["pissa_llama", "olora_llama", "pissa_dora"]


def load_base(c):
    q = c.get("quant")
    if not q:
        return load(c["model"])
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig
    bnb = (BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4",
                              bnb_4bit_use_double_quant=True, bnb_4bit_compute_dtype=torch.float32)
           if q == "nf4" else BitsAndBytesConfig(load_in_8bit=True))
    return AutoModelForCausalLM.from_pretrained(
        f"tests/fixtures/models/{c['model']}", quantization_config=bnb, device_map="cpu",
        dtype=torch.float32, attn_implementation="eager")


def dequantized(w):
    """A base weight's values: as they are, or bitsandbytes' dequantization of them."""
    import bitsandbytes.functional as F
    if type(w).__name__ == "Params4bit":
        return F.dequantize_4bit(w.data, w.quant_state)
    if type(w).__name__ == "Int8Params":   # Linear8bitLt's backward's order
        return w.data.to(torch.float32).mul_(w.SCB.unsqueeze(1).mul(1.0 / 127.0))
    return w.detach().clone()


def peft_model(c):
    cfg = LoraConfig(r=c["r"], lora_alpha=c["alpha"], target_modules=c["targets"],
                     init_lora_weights=c["init"], use_rslora=c["rslora"],
                     fan_in_fan_out=c["model"] == "gpt2", lora_dropout=0.0,
                     use_dora=c.get("dora", False))
    m = get_peft_model(load_base(c), cfg)
    if c.get("quant") == "nf4":
        m.train()   # bitsandbytes' dequantize-then-matmul (make_q4_fixtures.py)
    else:
        m.eval()
    return m


def run_case(name, c, out):
    m = peft_model(c)
    report = m.get_nb_trainable_parameters()
    t = {}
    for n, p in m.named_parameters():
        k = key_of(n)
        if "lora_" in n:
            t["init." + k] = p.detach().clone()
        elif k.endswith(".base_layer.weight"):
            t["res." + k.replace(".base_layer", "")] = dequantized(p)
    g, o = grads_of(m)
    t.update({k: v for k, v in g.items() if not k.startswith("lora.")})
    with torch.no_grad():
        ids, mask = t["ids"].long(), t["mask"].long()
        t["logits"] = o.logits.detach()
        m.merge_adapter()
        t["merged_logits"] = m(input_ids=ids, attention_mask=mask).logits
    t["report"] = torch.tensor(report, dtype=torch.int64)
    save_file({k: v.contiguous() for k, v in t.items()}, f"{out}/{name}.safetensors")
    print(name, "loss", float(o.loss), "tensors", len(t))


def saved(name, c, out):
    m = peft_model(c)
    randomise(m, 7)
    d = f"{out}/peft_{name}"
    shutil.rmtree(d, ignore_errors=True)
    m.save_pretrained(d)
    tidy_config(d, c["model"])
    p = PeftModel.from_pretrained(load(c["model"]), d)   # the residual made again
    ids, mask, _ = batch(p.config.vocab_size, seed=3)
    with torch.no_grad():
        logits = p(input_ids=ids, attention_mask=mask).logits
        want = m(input_ids=ids, attention_mask=mask).logits
    assert torch.allclose(logits, want, atol=1e-5), "peft's own round trip"
    save_file({"ids": ids.to(torch.int32), "mask": mask.to(torch.int32), "logits": logits},
              f"{out}/peft_{name}_logits.safetensors")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=OUT)
    out = ap.parse_args().out
    os.makedirs(out, exist_ok=True)
    torch.manual_seed(0)
    for name, c in CASES.items():
        run_case(name, c, out)
    for name in SAVED:
        saved(name, CASES[name], out)
    with open(f"{out}/cases.json", "w") as f:
        json.dump(CASES, f, indent=2, sort_keys=True)
        f.write("\n")


if __name__ == "__main__":
    main()
