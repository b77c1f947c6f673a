#!/usr/bin/env python3
"""make_bf16_fixtures.py — what transformers computes with loupe's bf16-weight semantics, for
tests/unit/test_fw_bf16.c (the CUDA backend's LOUPE_CUDA_BF16=1 mode, emulated on the CPU by
the guard device).

The semantics (runtime/nn/ops_bf16.h): the weights of every Linear / Conv1D (lm_head
included) and the token embedding are rounded to bf16 (nearest even; a bf16 checkpoint is
unchanged); the f32 input of each of those products is rounded to bf16 just before it, and so
is the output gradient before the input-gradient product of the backward; products
accumulate in f32; everything else (norms, attention, residuals, biases, position
embeddings) stays f32. Here that is torch in f32 with the weights rounded and each
Linear / Conv1D forward replaced by an autograd function that rounds its input (forward) and
its output gradient (backward).

For each model, with the batch of tests/fixtures/forward/<model>.safetensors (ids, mask,
labels read from there), writes tests/fixtures/forward/<model>.bf16w.safetensors:

  logits      F32 (3, 20, vocab)   the bf16-weight semantics above
  loss        F32 (1)
  logits_bf16 F32 (3, 20, vocab)   transformers with the whole model in torch.bfloat16 (every
  loss_bf16   F32 (1)              activation rounded too: a looser reference)
  grad_<name> F32                  d(loss)/d(embedding output) is not public, so: the gradient
                                   of the final norm's weight and of layer 0's input norm
                                   (both f32, reached only through the bf16 backward products)

and, for the models of LORA (the benchmark's training: LoRA on every linear layer of a bf16
model), peft's LoRA (r 4, alpha 8, all-linear, A and B seeded random: B is zero at init, which
would leave dA zero) on the same bf16-weight model, adapters f32 on the unrounded input, as
peft computes them with autocast_adapter_dtype:

  lora.<module>.lora_A.weight / lora_B.weight   F32   the adapter weights used
  lora_loss                                     F32 (1)
  lora_grad.<module>.lora_A.weight / lora_B…    F32   d(loss)/d(adapter weights)
  lora_loss_bf16, lora_grad_bf16.<…>            F32   the same with the model in torch.bfloat16
                                                      (peft's bf16 training: a looser reference)

Run once and commit the output (CI does not need torch):

    python3 tools/make_bf16_fixtures.py [--out DIR] [NAME...]   # default: qwen2-bf16 llama gpt2 gemma2 qwen3 gemma3 phi3

(--out: write there instead; tests/parity/test_forward.py regenerates them to check that the
committed files are current.)
"""
import os
import sys

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
MODELS = os.path.join(ROOT, "tests", "fixtures", "models")
OUT = os.path.join(ROOT, "tests", "fixtures", "forward")


def rnd(x):
    import torch
    return x.to(torch.bfloat16).to(torch.float32)


def bf16_product():
    import torch

    class Product(torch.autograd.Function):
        """y = bf16(x)·op(W) + b; dx = bf16(dy)·op(W)ᵀ; W is frozen (no gradient)."""

        @staticmethod
        def forward(ctx, x, w, b, conv):
            ctx.save_for_backward(w)
            ctx.conv = conv
            y = rnd(x) @ (w if conv else w.t())
            return y + b if b is not None else y

        @staticmethod
        def backward(ctx, g):
            (w,) = ctx.saved_tensors
            gx = rnd(g) @ (w.t() if ctx.conv else w)
            return gx, None, None, None

    return Product


def patch(model):
    """Round the weights that loupe stores as bf16; route their products through Product."""
    import torch
    from transformers.pytorch_utils import Conv1D
    prod = bf16_product()
    with torch.no_grad():
        model.get_input_embeddings().weight.copy_(rnd(model.get_input_embeddings().weight))
    for mod in model.modules():
        conv = isinstance(mod, Conv1D)
        if not (conv or isinstance(mod, torch.nn.Linear)):
            continue
        with torch.no_grad():
            mod.weight.copy_(rnd(mod.weight))
        mod.forward = (lambda m, c: lambda x: prod.apply(x, m.weight, m.bias, c))(mod, conv)


LORA = ("qwen2-bf16", "gemma2", "qwen3", "gemma3", "phi3")


def lora_tensors(path, ids, mask, labels):
    """peft's LoRA on the bf16-weight model (see the top): its weights, loss and gradients;
    then the same adapters on the model in torch.bfloat16 ("_bf16")."""
    import torch
    import transformers as tf
    from peft import LoraConfig, get_peft_model
    t = {}
    for whole in (False, True):
        model = tf.AutoModelForCausalLM.from_pretrained(
            path, dtype=torch.bfloat16 if whole else torch.float32,
            attn_implementation="eager").eval()
        if not whole:
            patch(model)   # before peft: the adapters' own Linear layers stay plain f32
        model = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, lora_dropout=0.0,
                                                 target_modules="all-linear"))
        g = torch.Generator().manual_seed(99)
        ps = {}
        for n, p in model.named_parameters():
            if "lora_" in n:
                with torch.no_grad():
                    p.copy_(torch.randn(p.shape, generator=g) * 0.3)
                ps[n.replace("base_model.model.", "", 1).replace(".default", "")] = p
        out = model(input_ids=ids, attention_mask=mask, labels=labels)
        out.loss.backward()
        sfx = "_bf16" if whole else ""
        for k, p in ps.items():
            if not whole:
                t["lora." + k] = p.detach().clone().contiguous()
            t[f"lora_grad{sfx}." + k] = p.grad.detach().float().clone().contiguous()
        t["lora_loss" + sfx] = out.loss.detach().float().reshape(1)
    return t, t["lora_loss"].item()


def norm_params(model):
    """The two f32 parameters whose gradients the fixture keeps, by their HF names."""
    names = [n for n, _ in model.named_parameters()]
    fin = [n for n in names if (n.endswith("norm.weight") or n.endswith("ln_f.weight")) and ".layers." not in n and ".h." not in n]
    first = [n for n in names if (".layers.0." in n or ".h.0." in n) and
             ("input_layernorm.weight" in n or "ln_1.weight" in n)]
    return fin[-1:] + first[:1]


def run(name, out_dir=OUT):
    import torch
    import transformers as tf
    from safetensors.torch import load_file, save_file
    path = os.path.join(MODELS, name)
    ref = load_file(os.path.join(OUT, name + ".safetensors"))
    ids, mask, labels = ref["ids"].long(), ref["mask"].long(), ref["labels"].long()
    model = tf.AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32,
                                                    attn_implementation="eager").eval()
    patch(model)
    for p in model.parameters():
        p.requires_grad_(False)
    keep = norm_params(model)
    params = dict(model.named_parameters())
    for n in keep:
        params[n].requires_grad_(True)
    out = model(input_ids=ids, attention_mask=mask, labels=labels)
    out.loss.backward()
    t = {"logits": out.logits.detach().float().contiguous(),
         "loss": out.loss.detach().float().reshape(1)}
    for n in keep:
        t["grad_" + n] = params[n].grad.float().contiguous()
    m16 = tf.AutoModelForCausalLM.from_pretrained(path, dtype=torch.bfloat16,
                                                  attn_implementation="eager").eval()
    with torch.no_grad():
        o16 = m16(input_ids=ids, attention_mask=mask, labels=labels)
    t["logits_bf16"] = o16.logits.float().contiguous()
    t["loss_bf16"] = o16.loss.float().reshape(1)
    lora_note = ""
    if name in LORA:
        lt, lloss = lora_tensors(path, ids, mask, labels)
        t.update(lt)
        lora_note = (f"; LoRA loss {lloss:.6f} (bf16 model {lt['lora_loss_bf16'].item():.6f}), "
                     f"{sum(k.startswith('lora_grad.') for k in lt)} grads")
    save_file(t, os.path.join(out_dir, name + ".bf16w.safetensors"))
    print(f"{name}: loss {out.loss.item():.6f} (f32 {ref['loss'].item():.6f}, "
          f"bf16 model {o16.loss.item():.6f}); grads of {', '.join(keep)}{lora_note}")


def main():
    args, out_dir = sys.argv[1:], OUT
    if args[:1] == ["--out"]:
        out_dir, args = args[1], args[2:]
    for name in args or ["qwen2-bf16", "llama", "gpt2", "gemma2", "qwen3", "gemma3", "phi3"]:
        run(name, out_dir)


if __name__ == "__main__":
    main()
