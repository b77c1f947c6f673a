#!/usr/bin/env python3
"""AdaLoRA fixtures from transformers + peft (f32, eager), for loupe's AdaLoRA parity tests.

Writes tests/fixtures/adalora/:

  grad_<case>.safetensors   one forward + loss.backward() of peft AdaLoRA (init_r 4, target_r 2,
                            alpha 8, orth_reg_weight 0.5, the model type's default targets) on a
                            tiny checkpoint, every lora_A / lora_B set to 0.3·N(0, 1) and every
                            lora_E to N(0, 1) (seeded; at peft's init E = 0 and the A, B
                            gradients would vanish). The loss is AdaLoraModel.forward's: the
                            model's loss + orth_reg_weight · mean over A, B of ‖PPᵀ − I‖_F
                            (A: A·Aᵀ, B: Bᵀ·B). A PeftModel without task_type skips that
                            forward (it calls the transformers model directly), so the loss is
                            taken from m.base_model(...), which is what PeftModelForCausalLM /
                            ForSequenceClassification call:
                              ids, mask, labels (I32); loss (F32 [1], regulariser included)
                              reg (F32 [1]: orth_reg_weight · the mean norm); logits
                              ada.<module>.lora_A/lora_B/lora_E    the values used
                              grad.<module>.lora_A/lora_B/lora_E   d loss / d value
  cases.json                {case: {model, targets}}
  peft_llama/               an AdaLoRA adapter PeftModel.save_pretrained wrote (init_r 4,
                            task_type CAUSAL_LM, random A, B, E; rank_pattern None)
  peft_llama_logits.safetensors  ids, mask; logits of that PeftModel; merged_logits after
                            peft's merge_adapter() (B·(A⊙E)·alpha/ranknum folded in)
  curve_adalora.json        20 AdamW steps as tools/make_optim_fixtures.py's LoRA curve (same
                            batches, lr, schedule, clipping) with peft AdaLoRA (init_r 6,
                            target_r 2, tinit 3, tfinal 5, deltaT 2, total_step 16, q_proj +
                            v_proj) on the llama fixture, update_and_allocate(step) after every
                            optimizer step: loss (regulariser included), grad_norm, lr_used and,
                            after update_and_allocate, budget, masked (per site, sorted, the
                            indices of E exactly 0), E (per site, flat); sites; rank_pattern
                            (peft's, at the end); trainable (get_nb_trainable_parameters)
  curve_adalora_init.safetensors  the adapter before training: <module>.lora_A/lora_B/lora_E
                            (A, B 0.3·N(0, 1), E 0.5·N(0, 1))
  peft_llama_trained/       that adapter after training, as save_pretrained writes it
                            (rank_pattern in the config, A, B, E cut to the kept ranks)
  peft_llama_trained_logits.safetensors  ids, mask; logits of the trained PeftModel (eval);
                            reloaded_logits only where PeftModel.from_pretrained of the saved
                            adapter does not reproduce them bit for bit
  report.json               per case {trainable, all, base, ranknum}: get_nb_trainable_parameters()
                            with init_r 12, target_r 8 (default targets), the base model's count
                            and the ranknum buffers' count (a frozen Parameter: in "all")

Run from the repository root and commit the output (CI has no torch):
    python3 tools/make_adalora_fixtures.py [--out DIR]
"""
import argparse
import json
import os
import shutil
import sys

import torch
from peft import AdaLoraConfig, PeftModel, get_peft_model
from safetensors.torch import save_file
from transformers import AutoModelForCausalLM

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import make_optim_fixtures as optim  # noqa: E402  (same batches and loop as the LoRA curve)
from make_train_fixtures import batch  # noqa: E402  (the gradient fixtures' batch)
from make_ia3_fixtures import key_of, load, tidy_config  # noqa: E402  (the same loading and tidying)

OUT = "tests/fixtures/adalora"
CASES = {   # PEFT's AdaLoRA defaults for these model types (utils/constants.py)
    "llama": dict(model="llama", targets=["q_proj", "v_proj"]),
    "qwen2": dict(model="qwen2", targets=["q_proj", "v_proj"]),
    "gpt2": dict(model="gpt2", targets=["c_attn"]),     # Conv1D: fan_in_fan_out
    "bert": dict(model="bert", targets=["query", "value"]),
}
GRAD = dict(init_r=4, target_r=2, lora_alpha=8, total_step=10, orth_reg_weight=0.5)
CURVE = dict(init_r=6, target_r=2, lora_alpha=8, tinit=3, tfinal=5, deltaT=2, total_step=16,
             beta1=0.85, beta2=0.85, orth_reg_weight=0.5, target_modules=["q_proj", "v_proj"],
             lora_dropout=0.0)
REPORT = dict(init_r=12, target_r=8, total_step=100)


def is_lora(n):
    return any(f"{w}.default" in n for w in ("lora_A", "lora_B", "lora_E"))


def randomise(m, seed, e_std):
    g = torch.Generator().manual_seed(seed)
    for n, p in m.named_parameters():
        if not is_lora(n):
            continue
        std = e_std if "lora_E" in n else 0.3
        with torch.no_grad():
            p.copy_(std * torch.randn(p.shape, generator=g))


def orth_reg(pm):
    """AdaLoraModel.forward's regulariser, recomputed: weight · mean over every lora_A (A·Aᵀ)
    and lora_B (Bᵀ·B) of ‖P − I‖_F."""
    w = pm.peft_config["default"].orth_reg_weight
    norms = []
    for n, p in pm.base_model.model.named_parameters():
        if ("lora_A" in n or "lora_B" in n) and "default" in n:
            cov = p @ p.T if "lora_A" in n else p.T @ p
            norms.append(torch.norm(cov - torch.eye(*cov.shape), p="fro"))
    return w * (sum(norms) / len(norms))


def sites(m):
    return sorted(key_of(n)[:-len(".lora_E")] for n, _ in m.named_parameters()
                  if "lora_E.default" in n)


def run_case(name, c, out):
    m = get_peft_model(load(c["model"]), AdaLoraConfig(**GRAD))
    got = sorted({s.rsplit(".", 1)[1] for s in sites(m)})
    assert got == sorted(c["targets"]), (name, got)   # the defaults are what we think
    randomise(m, 99, 1.0)
    tensors = {}
    for n, p in m.named_parameters():
        if is_lora(n):
            tensors["ada." + key_of(n)] = p.detach().clone()
    ids, mask, labels = batch(m.config.vocab_size)
    if c["model"] == "bert":
        labels = torch.tensor([1, 0])
    o = m.base_model(input_ids=ids, attention_mask=mask, labels=labels)   # + orth regulariser
    with torch.no_grad():
        reg = orth_reg(m)
        plain = m(input_ids=ids, attention_mask=mask, labels=labels)       # PeftModel: none
        base = m.base_model.model(input_ids=ids, attention_mask=mask, labels=labels)
    assert torch.equal(plain.loss, base.loss) and torch.equal(plain.logits, o.logits)
    assert abs(float(o.loss.detach() - reg - base.loss)) < 1e-6, (float(o.loss.detach()),
                                                                  float(reg), float(base.loss))
    o.loss.backward()
    for n, p in m.named_parameters():
        if p.grad is not None:
            assert is_lora(n), n
            tensors["grad." + key_of(n)] = p.grad.detach().clone()
    tensors.update(ids=ids.to(torch.int32), mask=mask.to(torch.int32),
                   labels=labels.to(torch.int32), loss=o.loss.detach().reshape(1),
                   reg=reg.detach().reshape(1), logits=o.logits.detach())
    save_file({k: v.contiguous() for k, v in tensors.items()}, f"{out}/grad_{name}.safetensors")
    print(name, "loss", float(o.loss.detach()), "reg", float(reg), "base", float(base.loss),
          "grads", sum(k.startswith("grad.") for k in tensors))


def peft_saved(out):
    m = get_peft_model(load("llama"), AdaLoraConfig(init_r=4, target_r=2, total_step=10,
                                                    task_type="CAUSAL_LM"))
    randomise(m, 5, 1.0)
    d = f"{out}/peft_llama"
    shutil.rmtree(d, ignore_errors=True)
    m.save_pretrained(d)
    tidy_config(d, "llama")
    assert json.load(open(f"{d}/adapter_config.json"))["rank_pattern"] is None
    ids, mask, _ = batch(m.config.vocab_size, seed=3)
    with torch.no_grad():
        logits = m(input_ids=ids, attention_mask=mask).logits
        m.merge_adapter()
        merged = m(input_ids=ids, attention_mask=mask).logits
    print("peft_llama merged vs unmerged max diff", float((merged - logits).abs().max()))
    save_file({"ids": ids.to(torch.int32), "mask": mask.to(torch.int32), "logits": logits,
               "merged_logits": merged}, f"{out}/peft_llama_logits.safetensors")


def train(pm, params, data):
    """make_optim_fixtures.run with AdaLoRA's loss (AdaLoraModel.forward: + orth regulariser)
    and update_and_allocate(step) after every optimizer step."""
    from transformers import get_linear_schedule_with_warmup
    opt = torch.optim.AdamW(params, lr=optim.LR, weight_decay=optim.WD, foreach=False)
    sch = get_linear_schedule_with_warmup(opt, optim.WARMUP, optim.STEPS)
    names = sites(pm)
    inner = dict(pm.base_model.model.named_modules())
    log = {k: [] for k in ("loss", "grad_norm", "lr_used", "budget", "masked", "E")}
    pm.train()
    for step, (ids, mask, labels) in enumerate(data):
        opt.zero_grad()
        out = pm.base_model(input_ids=ids, attention_mask=mask, labels=labels)
        out.loss.backward()
        norm = torch.nn.utils.clip_grad_norm_(params, optim.CLIP)
        log["lr_used"].append(float(opt.param_groups[0]["lr"]))
        opt.step()
        sch.step()
        pm.base_model.update_and_allocate(step)
        log["loss"].append(float(out.loss.detach()))
        log["grad_norm"].append(float(norm))
        log["budget"].append(pm.base_model.rankallocator.budget_schedule(step)[0])
        es = [inner[s].lora_E["default"].detach().view(-1) for s in names]
        log["masked"].append([(e == 0).nonzero().view(-1).tolist() for e in es])
        log["E"].append([e.tolist() for e in es])
    return log


def curve(out):
    model = AutoModelForCausalLM.from_pretrained(optim.MODEL, dtype=torch.float32,
                                                 attn_implementation="eager")
    data = optim.batches(model.config.vocab_size)
    pm = get_peft_model(model, AdaLoraConfig(**CURVE))
    randomise(pm, 11, 0.5)
    save_file({key_of(n): p.detach().clone().contiguous() for n, p in pm.named_parameters()
               if is_lora(n)}, f"{out}/curve_adalora_init.safetensors")
    params = [p for p in pm.parameters() if p.requires_grad]
    log = train(pm, params, data)
    rank_pattern = pm.peft_config["default"].rank_pattern
    extra = {"adalora": dict(CURVE, init="tests/fixtures/adalora/curve_adalora_init.safetensors"),
             "sites": sites(pm), "budget": log["budget"], "masked": log["masked"], "E": log["E"],
             "rank_pattern": {k: list(v) for k, v in rank_pattern.items()},
             "trainable": list(pm.get_nb_trainable_parameters())}
    with open(f"{out}/curve_adalora.json", "w") as f:
        json.dump(optim.curve_json(data, log["loss"], log["grad_norm"], log["lr_used"], extra), f)
    for s in range(optim.STEPS):
        print("step", s, "loss", log["loss"][s], "budget", log["budget"][s], "masked",
              log["masked"][s])
    return pm


def trained_saved(pm, out):
    pm.eval()
    d = f"{out}/peft_llama_trained"
    shutil.rmtree(d, ignore_errors=True)
    pm.save_pretrained(d)
    tidy_config(d, "llama")
    ids, mask, _ = batch(pm.config.vocab_size, seed=3)
    with torch.no_grad():
        logits = pm(input_ids=ids, attention_mask=mask).logits
        back = PeftModel.from_pretrained(load("llama"), d)
        back.eval()
        reloaded = back(input_ids=ids, attention_mask=mask).logits
    tensors = {"ids": ids.to(torch.int32), "mask": mask.to(torch.int32), "logits": logits}
    diff = float((reloaded - logits).abs().max())
    print("peft_llama_trained reloaded vs in-memory: equal", torch.equal(reloaded, logits),
          "max diff", diff)
    assert diff < 1e-5, diff
    if not torch.equal(reloaded, logits):
        tensors["reloaded_logits"] = reloaded
    save_file(tensors, f"{out}/peft_llama_trained_logits.safetensors")


def report(out):
    rep = {}
    for name, c in CASES.items():
        base = load(c["model"])
        n_base = sum(p.numel() for p in base.parameters())
        m = get_peft_model(base, AdaLoraConfig(**REPORT))
        trainable, total = m.get_nb_trainable_parameters()
        ranknum = sum(p.numel() for n, p in m.named_parameters() if "ranknum" in n)
        rep[name] = {"trainable": trainable, "all": total, "base": n_base, "ranknum": ranknum,
                     "ranknum_in_all": total == n_base + trainable + ranknum}
        print(name, rep[name])
    with open(f"{out}/report.json", "w") as f:
        json.dump({"config": REPORT, "cases": rep}, f, indent=1, sort_keys=True)
        f.write("\n")


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
    trained_saved(curve(out), out)
    report(out)


if __name__ == "__main__":
    main()
