#!/usr/bin/env python3
"""Gradient fixtures for loupe's model backward and LoRA, from transformers + peft (f32, eager).

For each case: a tiny checkpoint from tests/fixtures/models/, a fixed right-padded batch
(labels = ids, -100 on padding), LoRA (peft) with A and B both set to seeded random values (B is
zero at init, which would make dA zero: the test would prove little), or base weights of the last
layer unfrozen. One forward + loss.backward(); the fixture keeps inputs, the adapter weights,
the loss, and the gradients.

  tests/fixtures/train/grad_<case>.safetensors
      ids, mask, labels (I32 [B,T]); loss (F32 [1]); logits (F32 [B,T,V])
      lora.<module>.lora_A.weight / lora_B.weight    the adapter weights used
      grad.<name>                                    d loss / d tensor (peft/HF names)
  tests/fixtures/train/grad_cases.json
      {case: {model, r, alpha, targets (list | "all-linear"), unfreeze (glob) or null}}

Also a PEFT-saved adapter for the load check (no torch in CI):
  tests/fixtures/train/peft_llama/ adapter_config.json + adapter_model.safetensors (B nonzero),
  tests/fixtures/train/peft_llama_logits.safetensors: ids, mask, logits of PeftModel, and 12
  greedy tokens it generates from row 0.
  tests/fixtures/train/peft_bert_cls/ (task_type SEQ_CLS: LoRA + the classifier in
  modules_to_save) and peft_bert_cls_logits.safetensors: logits with and without the adapter,
  and peft's (trainable, all) parameter counts.

Run from the repository root: python3 tools/make_train_fixtures.py
"""
import argparse
import json
import os
import shutil

import torch
from peft import LoraConfig, get_peft_model
from safetensors.torch import save_file
from transformers import (AutoModelForCausalLM, AutoModelForMaskedLM,
                          AutoModelForSequenceClassification)

OUT = "tests/fixtures/train"   # --out DIR writes elsewhere (the freshness check in tests/parity)
CASES = {
    "llama_qv": dict(model="llama", r=4, alpha=8, targets=["q_proj", "v_proj"], unfreeze=None),
    "llama_all": dict(model="llama", r=4, alpha=8, targets="all-linear", unfreeze=None),
    "llama_last": dict(model="llama", r=0, alpha=0, targets=None, unfreeze="model.layers.1.*"),
    "gpt2_all": dict(model="gpt2", r=4, alpha=8, targets="all-linear", unfreeze=None),
    "gemma2_qv": dict(model="gemma2", r=4, alpha=8, targets=["q_proj", "v_proj", "down_proj"],
                      unfreeze=None),
    "gemma_all": dict(model="gemma", r=4, alpha=8, targets="all-linear", unfreeze=None),
    "bert_cls": dict(model="bert", r=4, alpha=8, targets=["query", "value", "dense"],
                     unfreeze="classifier.*"),
    "bertmlm": dict(model="bert-mlm", r=4, alpha=8, targets=["query", "value"],
                    unfreeze="cls.predictions.transform."),
    "qwen2_rs": dict(model="qwen2", r=4, alpha=8, targets=["q_proj", "k_proj", "o_proj", "up_proj"],
                     unfreeze=None, rslora=True),
    "qwen3_all": dict(model="qwen3", r=4, alpha=8, targets="all-linear", unfreeze=None),
    "qwen3_last": dict(model="qwen3", r=0, alpha=0, targets=None, unfreeze="model.layers.1.*"),
    "gemma3_all": dict(model="gemma3", r=4, alpha=8, targets="all-linear", unfreeze=None),
    "smollm3_all": dict(model="smollm3", r=4, alpha=8, targets="all-linear", unfreeze=None),
    "phi3_all": dict(model="phi3", r=4, alpha=8, targets="all-linear", unfreeze=None),
    "phi3_last": dict(model="phi3", r=0, alpha=0, targets=None, unfreeze="model.layers.1.*"),
    "phi3p_all": dict(model="phi3-partial", r=4, alpha=8, targets="all-linear", unfreeze=None),
    "gemma3_full": dict(model="gemma3", r=0, alpha=0, targets=None, unfreeze="model.layers.1.*"),
}


def batch(vocab, B=2, T=9, seed=0):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(3, vocab, (B, T), generator=g)
    mask = torch.ones(B, T, dtype=torch.long)
    mask[1, 6:] = 0          # right padding
    ids[1, 6:] = 0
    labels = ids.clone()
    labels[mask == 0] = -100
    return ids, mask, labels


def load(name):
    auto = {"bert": AutoModelForSequenceClassification,
            "bert-mlm": AutoModelForMaskedLM}.get(name, AutoModelForCausalLM)
    m = auto.from_pretrained(f"tests/fixtures/models/{name}",
                                             attn_implementation="eager", dtype=torch.float32)
    m.eval()                 # no hidden dropout (GPT-2); LoRA dropout is 0 here anyway
    return m


def run_case(name, c):
    torch.manual_seed(1234)
    m = load(c["model"])
    tensors = {}
    if c["targets"] is not None:
        cfg = LoraConfig(r=c["r"], lora_alpha=c["alpha"], lora_dropout=0.0,
                         target_modules=c["targets"], use_rslora=c.get("rslora", False))
        m = get_peft_model(m, cfg)
        g = torch.Generator().manual_seed(99)
        for n, p in m.named_parameters():
            if "lora_" in n:
                with torch.no_grad():
                    p.copy_(torch.randn(p.shape, generator=g) * 0.3)
                key = n.replace("base_model.model.", "", 1).replace(".default", "")
                tensors["lora." + key] = p.detach().clone()
    if c["unfreeze"] is not None:
        pat = c["unfreeze"].rstrip("*")
        for n, p in m.named_parameters():
            key = n.replace("base_model.model.", "", 1)
            if "lora_" not in n:
                p.requires_grad_(key.startswith(pat))
    ids, mask, labels = batch(m.config.vocab_size)
    if c["model"] == "bert":     # one class label per row
        labels = torch.tensor([1, 0])
    if c["model"] == "bert-mlm":  # masked LM: targets at a few positions, no shift
        labels = torch.full_like(ids, -100)
        labels[0, 2], labels[0, 5], labels[1, 1], labels[1, 4] = ids[0, 2], ids[0, 5], ids[1, 1], ids[1, 4]
    out = m(input_ids=ids, attention_mask=mask, labels=labels)
    out.loss.backward()
    for n, p in m.named_parameters():
        if p.grad is not None:
            key = n.replace("base_model.model.", "", 1).replace(".default", "")
            tensors["grad." + key] = p.grad.detach().clone()
            if "lora_" not in n:     # an unfrozen base weight (names as the checkpoint's)
                tensors["grad." + key.replace(".base_layer", "")] = tensors.pop("grad." + key)
    tensors["ids"] = ids.to(torch.int32)
    tensors["mask"] = mask.to(torch.int32)
    tensors["labels"] = labels.to(torch.int32)
    tensors["loss"] = out.loss.detach().reshape(1)
    tensors["logits"] = out.logits.detach()
    save_file({k: v.contiguous() for k, v in tensors.items()}, f"{OUT}/grad_{name}.safetensors")
    print(name, "loss", float(out.loss), "grads", sum(k.startswith("grad.") for k in tensors))


def peft_saved():
    torch.manual_seed(7)
    m = get_peft_model(load("llama"), LoraConfig(r=4, lora_alpha=8, lora_dropout=0.0,
                                                 target_modules=["q_proj", "v_proj", "down_proj"]))
    g = torch.Generator().manual_seed(5)
    for n, p in m.named_parameters():
        if "lora_B" in n:
            with torch.no_grad():
                p.copy_(torch.randn(p.shape, generator=g) * 0.2)
    d = f"{OUT}/peft_llama"
    shutil.rmtree(d, ignore_errors=True)
    m.save_pretrained(d)
    cfgp = f"{d}/adapter_config.json"   # no machine-specific path in a committed fixture
    cfg = json.load(open(cfgp))
    cfg["base_model_name_or_path"] = "tests/fixtures/models/llama"
    cfg["target_modules"] = sorted(cfg["target_modules"])   # a set in peft: order varies by run
    json.dump(cfg, open(cfgp, "w"), indent=2, sort_keys=True)
    if os.path.exists(f"{d}/README.md"):
        os.remove(f"{d}/README.md")
    ids, mask, _ = batch(m.config.vocab_size, seed=3)
    with torch.no_grad():
        logits = m(input_ids=ids, attention_mask=mask).logits
        prompt = ids[:1]        # greedy continuation of row 0 (no padding), no eos stop
        gen = m.generate(input_ids=prompt, max_new_tokens=12, do_sample=False,
                         eos_token_id=None, pad_token_id=0)[0, prompt.shape[1]:]
    save_file({"ids": ids.to(torch.int32), "mask": mask.to(torch.int32), "logits": logits,
               "generated": gen.to(torch.int32).contiguous()},
              f"{OUT}/peft_llama_logits.safetensors")


def peft_saved_seq_cls():
    """A BERT classification adapter as peft makes it with task_type SEQ_CLS: LoRA on the
    default targets (query, value) and the classifier in modules_to_save (a trained copy)."""
    torch.manual_seed(8)
    m = get_peft_model(load("bert"), LoraConfig(r=2, lora_alpha=8, task_type="SEQ_CLS"))
    report = m.get_nb_trainable_parameters()
    g = torch.Generator().manual_seed(6)
    for n, p in m.named_parameters():
        if "lora_B" in n or "modules_to_save" in n:
            with torch.no_grad():
                p.copy_(torch.randn(p.shape, generator=g) * 0.2)
    m.eval()
    d = f"{OUT}/peft_bert_cls"
    shutil.rmtree(d, ignore_errors=True)
    m.save_pretrained(d)
    cfgp = f"{d}/adapter_config.json"
    cfg = json.load(open(cfgp))
    cfg["base_model_name_or_path"] = "tests/fixtures/models/bert"
    for k in ("target_modules", "modules_to_save"):
        cfg[k] = sorted(cfg[k])
    json.dump(cfg, open(cfgp, "w"), indent=2, sort_keys=True)
    if os.path.exists(f"{d}/README.md"):
        os.remove(f"{d}/README.md")
    ids, mask, _ = batch(m.config.vocab_size, seed=4)
    with torch.no_grad():
        logits = m(input_ids=ids, attention_mask=mask).logits
        with m.disable_adapter():
            base = m(input_ids=ids, attention_mask=mask).logits
    save_file({"ids": ids.to(torch.int32), "mask": mask.to(torch.int32), "logits": logits,
               "base_logits": base, "report": torch.tensor(report, dtype=torch.int64)},
              f"{OUT}/peft_bert_cls_logits.safetensors")


def main():
    global OUT
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=OUT)
    OUT = ap.parse_args().out
    os.makedirs(OUT, exist_ok=True)
    for name, c in CASES.items():
        run_case(name, c)
    with open(f"{OUT}/grad_cases.json", "w") as f:
        json.dump(CASES, f, indent=1, sort_keys=True)
        f.write("\n")
    peft_saved()
    peft_saved_seq_cls()


if __name__ == "__main__":
    main()
