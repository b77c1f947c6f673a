#!/usr/bin/env python3
"""make_optim_fixtures.py — what transformers / torch / peft compute for loupe's optimizer,
schedules and training loop, for tests/unit/test_train_optim.c and tests/parity/test_train.py.

Writes tests/fixtures/train/:

  schedules.json        transformers' get_{constant,linear,cosine}_schedule_with_warmup: for
                        each case {kind, warmup, total, lr, factors: [...], lrs: [...]} the
                        lr_lambda factor of optimizer steps k = 0 .. total+2 and the lr a
                        torch.optim.AdamW param group holds at each of those steps (what
                        scheduler.get_last_lr() shows before optimizer.step()).
  loss_curve_lora.json  20 AdamW steps (lr 1e-2, linear schedule, warmup 2, weight_decay 0.01,
                        clip 1.0) on tests/fixtures/models/llama with peft LoRA (r=4, alpha=8,
                        q_proj + v_proj, dropout 0): the batches of every step (ids, mask,
                        labels; right padding masked with -100;
                        4 distinct batches, each seen 5 times), the loss of every step (the
                        forward before that step's update) and grad norms.
  lora_init/            the adapter before training, in PEFT's layout (adapter_config.json +
                        adapter_model.safetensors): loupe loads it, since torch's random
                        kaiming-uniform A cannot be reproduced.
  loss_curve_partial.json  the same loop with every adapter off and only the last decoder
                        layer (model.layers.1.*) trainable.

Run once and commit the output; CI does not need torch:

    python3 tools/make_optim_fixtures.py [--out DIR]
"""
import json
import os
import sys

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
MODEL = os.path.join(ROOT, "tests", "fixtures", "models", "llama")
OUT = os.path.join(ROOT, "tests", "fixtures", "train")

STEPS, B, T = 20, 2, 12
LR, WARMUP, WD, CLIP = 1e-2, 2, 0.01, 1.0


def schedules():
    import torch
    from transformers import (get_constant_schedule_with_warmup, get_cosine_schedule_with_warmup,
                              get_linear_schedule_with_warmup)
    cases = []
    for kind, warmup, total in [("constant", 0, 10), ("constant", 3, 10), ("linear", 0, 10),
                                ("linear", 4, 20), ("linear", 1, 1), ("cosine", 0, 10),
                                ("cosine", 5, 25), ("cosine", 10, 10)]:
        p = torch.nn.Parameter(torch.zeros(1))
        opt = torch.optim.AdamW([p], lr=2e-4)
        if kind == "constant":
            sch = get_constant_schedule_with_warmup(opt, num_warmup_steps=warmup)
        elif kind == "linear":
            sch = get_linear_schedule_with_warmup(opt, warmup, total)
        else:
            sch = get_cosine_schedule_with_warmup(opt, warmup, total)
        factors = [float(sch.lr_lambdas[0](k)) for k in range(total + 3)]
        lrs = []
        for _ in range(total + 3):
            lrs.append(float(opt.param_groups[0]["lr"]))
            opt.step()
            sch.step()
        cases.append({"kind": kind, "warmup": warmup, "total": total, "lr": 2e-4,
                      "factors": factors, "lrs": lrs})
    return cases


def batches(vocab):
    import torch
    g = torch.Generator().manual_seed(7)
    out = []
    fixed = [torch.randint(3, vocab, (B, T), generator=g) for _ in range(4)]
    for s in range(STEPS):
        ids = fixed[s % 4].clone()             # 4 batches seen 5 times: the loss goes down
        mask = torch.ones(B, T, dtype=torch.long)
        mask[1, T - 1 - (s % 4):] = 0          # right padding of varying length
        ids = ids.masked_fill(mask == 0, 0)
        labels = ids.masked_fill(mask == 0, -100)
        out.append((ids, mask, labels))
    return out


def run(model, params, data):
    import torch
    from transformers import get_linear_schedule_with_warmup
    opt = torch.optim.AdamW(params, lr=LR, weight_decay=WD, foreach=False)
    sch = get_linear_schedule_with_warmup(opt, WARMUP, STEPS)
    losses, norms, lrs = [], [], []
    model.train()
    for ids, mask, labels in data:
        opt.zero_grad()
        out = model(input_ids=ids, attention_mask=mask, labels=labels)
        out.loss.backward()
        norm = torch.nn.utils.clip_grad_norm_(params, CLIP)
        lrs.append(float(opt.param_groups[0]["lr"]))
        opt.step()
        sch.step()
        losses.append(float(out.loss.detach()))
        norms.append(float(norm))
    return losses, norms, lrs


def curve_json(data, losses, norms, lrs, extra):
    d = {"model": "tests/fixtures/models/llama", "steps": STEPS, "batch": B, "seq": T, "lr": LR,
         "schedule": "linear", "warmup": WARMUP, "weight_decay": WD, "betas": [0.9, 0.999],
         "eps": 1e-8, "clip": CLIP,
         "batches": [{"ids": i.tolist(), "mask": m.tolist(), "labels": l.tolist()} for i, m, l in data],
         "loss": losses, "grad_norm": norms, "lr_used": lrs}
    d.update(extra)
    return d


def main():
    import torch
    from transformers import AutoModelForCausalLM
    out = OUT
    if "--out" in sys.argv:
        out = sys.argv[sys.argv.index("--out") + 1]
    os.makedirs(out, exist_ok=True)
    torch.manual_seed(0)
    with open(os.path.join(out, "schedules.json"), "w") as f:
        json.dump({"cases": schedules()}, f, indent=1)

    def load():
        return AutoModelForCausalLM.from_pretrained(MODEL, dtype=torch.float32,
                                                    attn_implementation="eager")

    from peft import LoraConfig, get_peft_model
    model = load()
    data = batches(model.config.vocab_size)
    torch.manual_seed(1234)
    cfg = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], lora_dropout=0.0)
    pm = get_peft_model(model, cfg)
    init = os.path.join(out, "lora_init")
    pm.save_pretrained(init)
    os.remove(os.path.join(init, "README.md"))   # peft's model card template: noise
    with open(os.path.join(init, "adapter_config.json")) as f:
        ac = json.load(f)
    ac["base_model_name_or_path"] = "tests/fixtures/models/llama"   # not this machine's path
    ac["target_modules"] = sorted(ac["target_modules"])              # peft writes a set's order
    with open(os.path.join(init, "adapter_config.json"), "w") as f:
        json.dump(ac, f, indent=2, sort_keys=True)
    params = [p for p in pm.parameters() if p.requires_grad]
    losses, norms, lrs = run(pm, params, data)
    with open(os.path.join(out, "loss_curve_lora.json"), "w") as f:
        json.dump(curve_json(data, losses, norms, lrs, {
            "lora": {"r": 4, "alpha": 8, "target": ["q_proj", "v_proj"], "dropout": 0.0,
                     "init": "tests/fixtures/train/lora_init"}}), f)

    model = load()
    for n, p in model.named_parameters():
        p.requires_grad = n.startswith("model.layers.1.")
    params = [p for p in model.parameters() if p.requires_grad]
    losses, norms, lrs = run(model, params, data)
    with open(os.path.join(out, "loss_curve_partial.json"), "w") as f:
        json.dump(curve_json(data, losses, norms, lrs, {"unfrozen": "model.layers.1.*"}), f)
    print("wrote", out)


if __name__ == "__main__":
    main()
