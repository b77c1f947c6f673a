#!/usr/bin/env python3
"""IA3 fixtures from transformers + peft (f32, eager), for tests/unit/test_train_parity.c and
tests/unit/test_train_loop.c.

Writes tests/fixtures/ia3/:

  grad_<case>.safetensors   one forward + loss.backward() of peft IA3 (the model type's
                            default targets and feed-forward modules) on a tiny checkpoint,
                            every ia3_l set to 1 + 0.2·N(0, 1) (seeded; at the init of ones the
                            test would not see a vector used the wrong way round):
                              ids, mask, labels (I32 [B,T]); loss (F32 [1]); logits
                              ia3.<module>.ia3_l     the vectors used
                              grad.<module>.ia3_l    d loss / d vector
  cases.json                {case: {model, targets, feedforward}}
  peft_llama/               an IA3 adapter PeftModel.save_pretrained wrote (random vectors)
  peft_llama_logits.safetensors  ids, mask; logits of that PeftModel; merged_logits after
                            peft's merge_adapter() (W·l folded into the weights)
  peft_bert_cls/, peft_bert_cls_logits.safetensors  a BERT classifier's IA3 adapter as peft
                            saves it with task_type SEQ_CLS (the classifier in
                            modules_to_save): ids, mask, logits, base_logits (adapter off),
                            report (peft's trainable and all parameter counts)
  loss_curve_ia3.json       20 AdamW steps as tools/make_optim_fixtures.py's LoRA curve (same
                            batches, lr, schedule, clipping) with peft IA3 on the llama
                            fixture (default targets, vectors start at ones)

Run from the repository root and commit the output (CI has no torch):
    python3 tools/make_ia3_fixtures.py [--out DIR]
"""
import argparse
import json
import os
import shutil
import sys

import torch
from peft import IA3Config, get_peft_model
from safetensors.torch import save_file
from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import make_optim_fixtures as optim  # noqa: E402  (same batches and loop as the LoRA curve)
from make_train_fixtures import batch  # noqa: E402  (the gradient fixtures' batch)

OUT = "tests/fixtures/ia3"
CASES = {   # PEFT's defaults for these model types (utils/constants.py)
    "llama": dict(model="llama", targets=["k_proj", "v_proj", "down_proj"], feedforward=["down_proj"]),
    "qwen2": dict(model="qwen2", targets=["q_proj", "v_proj", "down_proj"], feedforward=["down_proj"]),
    "gemma2": dict(model="gemma2", targets=["q_proj", "v_proj", "down_proj"], feedforward=["down_proj"]),
    "gpt2": dict(model="gpt2", targets=["c_attn", "mlp.c_proj"], feedforward=["mlp.c_proj"]),
    # "output.dense" is a plain suffix in peft: attention.output.dense is feed-forward too
    "bert": dict(model="bert", targets=["key", "value", "output.dense"], feedforward=["output.dense"]),
}


def load(name):
    auto = AutoModelForSequenceClassification if name == "bert" else AutoModelForCausalLM
    m = auto.from_pretrained(f"tests/fixtures/models/{name}", attn_implementation="eager",
                             dtype=torch.float32)
    m.eval()
    return m


def key_of(n):
    return n.replace("base_model.model.", "", 1).replace(".default", "")


def randomise(m, seed):
    g = torch.Generator().manual_seed(seed)
    for n, p in m.named_parameters():
        if "ia3_l" in n:
            with torch.no_grad():
                p.copy_(1 + 0.2 * torch.randn(p.shape, generator=g))


def run_case(name, c, out):
    m = get_peft_model(load(c["model"]), IA3Config(target_modules=c["targets"],
                                                   feedforward_modules=c["feedforward"]))
    randomise(m, 99)
    tensors = {}
    for n, p in m.named_parameters():
        if "ia3_l" in n:
            tensors["ia3." + key_of(n)] = p.detach().clone()
    ids, mask, labels = batch(m.config.vocab_size)
    if c["model"] == "bert":
        labels = torch.tensor([1, 0])
    o = m(input_ids=ids, attention_mask=mask, labels=labels)
    o.loss.backward()
    for n, p in m.named_parameters():
        if p.grad is not None:
            tensors["grad." + key_of(n)] = p.grad.detach().clone()
    tensors.update(ids=ids.to(torch.int32), mask=mask.to(torch.int32),
                   labels=labels.to(torch.int32), loss=o.loss.detach().reshape(1),
                   logits=o.logits.detach())
    save_file({k: v.contiguous() for k, v in tensors.items()}, f"{out}/grad_{name}.safetensors")
    print(name, "loss", float(o.loss), "grads", sum(k.startswith("grad.") for k in tensors))


def tidy_config(d, model):
    p = f"{d}/adapter_config.json"
    cfg = json.load(open(p))
    cfg["base_model_name_or_path"] = f"tests/fixtures/models/{model}"   # not this machine's
    for k in ("target_modules", "feedforward_modules", "modules_to_save"):
        if cfg.get(k):
            cfg[k] = sorted(cfg[k])   # sets in peft: their order varies by run
    json.dump(cfg, open(p, "w"), indent=2, sort_keys=True)
    if os.path.exists(f"{d}/README.md"):
        os.remove(f"{d}/README.md")


def peft_saved(out):
    m = get_peft_model(load("llama"), IA3Config(task_type="CAUSAL_LM"))
    randomise(m, 5)
    d = f"{out}/peft_llama"
    shutil.rmtree(d, ignore_errors=True)
    m.save_pretrained(d)
    tidy_config(d, "llama")
    ids, mask, _ = batch(m.config.vocab_size, seed=3)
    with torch.no_grad():
        logits = m(input_ids=ids, attention_mask=mask).logits
        m.merge_adapter()
        merged = m(input_ids=ids, attention_mask=mask).logits
    save_file({"ids": ids.to(torch.int32), "mask": mask.to(torch.int32), "logits": logits,
               "merged_logits": merged}, f"{out}/peft_llama_logits.safetensors")


def peft_saved_seq_cls(out):
    """A BERT classification IA3 adapter as peft makes it with task_type SEQ_CLS: the default
    targets and the classifier in modules_to_save (a trained copy)."""
    m = get_peft_model(load("bert"), IA3Config(task_type="SEQ_CLS"))
    report = m.get_nb_trainable_parameters()
    randomise(m, 6)
    g = torch.Generator().manual_seed(8)
    for n, p in m.named_parameters():
        if "modules_to_save" in n:
            with torch.no_grad():
                p.copy_(torch.randn(p.shape, generator=g) * 0.2)
    m.eval()
    d = f"{out}/peft_bert_cls"
    shutil.rmtree(d, ignore_errors=True)
    m.save_pretrained(d)
    tidy_config(d, "bert")
    ids, mask, _ = batch(m.config.vocab_size, seed=4)
    with torch.no_grad():
        logits = m(input_ids=ids, attention_mask=mask).logits
        with m.disable_adapter():
            base = m(input_ids=ids, attention_mask=mask).logits
    save_file({"ids": ids.to(torch.int32), "mask": mask.to(torch.int32), "logits": logits,
               "base_logits": base, "report": torch.tensor(report, dtype=torch.int64)},
              f"{out}/peft_bert_cls_logits.safetensors")


def curve(out):
    model = AutoModelForCausalLM.from_pretrained(optim.MODEL, dtype=torch.float32,
                                                 attn_implementation="eager")
    data = optim.batches(model.config.vocab_size)
    c = CASES["llama"]
    pm = get_peft_model(model, IA3Config(target_modules=c["targets"],
                                         feedforward_modules=c["feedforward"]))
    params = [p for p in pm.parameters() if p.requires_grad]
    losses, norms, lrs = optim.run(pm, params, data)
    with open(f"{out}/loss_curve_ia3.json", "w") as f:
        json.dump(optim.curve_json(data, losses, norms, lrs, {
            "ia3": {"target": c["targets"], "feedforward": c["feedforward"]}}), f)


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
    peft_saved_seq_cls(out)
    curve(out)


if __name__ == "__main__":
    main()
