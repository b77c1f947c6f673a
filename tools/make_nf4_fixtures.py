#!/usr/bin/env python3
"""QLoRA fixtures from bitsandbytes + transformers + peft (CPU), for tests/unit/test_nf4.c.

bitsandbytes' CPU dequantization works in blocks per row, so it agrees with its own (flat)
quantization only when a row's length is a multiple of the block (64): the checkpoint here
has every Linear dimension a multiple of 64 (the tiny llama fixture, hidden 32, does not), and
this script checks that bitsandbytes' model equals the flat dequantization before it writes.

Writes:
  tests/fixtures/models/llama-nf4/   a Llama checkpoint (hidden 64, intermediate 128, 2 layers,
                                     vocab 96), seeded random weights (f32)
  tests/fixtures/nf4/ops.safetensors  for cases c: c.x (F32, flat), c.codes (U8: two 4-bit
                                     indices a byte, first high), c.absmax (F32), c.deq (F32):
                                     bitsandbytes' quantize_4bit(nf4, blocksize 64) and its
                                     dequantization; cases: a weight of the checkpoint, an odd
                                     length with a short last block, a block of zeros, values on
                                     the midpoints between codes
  tests/fixtures/nf4/ia3_llama.safetensors  peft IA3 (Llama defaults) on the same 4-bit model,
                                     vectors set to seeded values: logits, loss, every ia3_l
                                     gradient (ia3.<name>, grad.<name>)
  tests/fixtures/nf4/adalora_llama.safetensors  peft AdaLoRA (init_r 4, q/v/down_proj,
                                     task_type CAUSAL_LM: the regulariser in the loss) on the
                                     same 4-bit model, A, B, E set to seeded values: logits,
                                     loss, ada.<name>, grad.<name>
  tests/fixtures/nf4/qlora_llama.safetensors  the checkpoint loaded with
                                     BitsAndBytesConfig(load_in_4bit, nf4, compute float32) and
                                     peft LoRA (r=4, alpha 8, q/k/v/o/gate/up/down) with A and B
                                     set to seeded values: ids, mask, labels, loss, logits,
                                     lora.<module>.lora_{A,B}.weight, grad.<name>; base_logits
                                     (the quantized model with the adapter disabled);
                                     merged_logits after peft's merge_adapter (dequantize, add
                                     B·A·scale, quantize again), unmerged_logits after its
                                     unmerge_adapter (the same the other way)

Run from the repository root and commit the output (CI has no torch):
    python3 tools/make_nf4_fixtures.py [--out DIR]
"""
import argparse
import os
import sys

import torch
from bitsandbytes import functional as F
from bitsandbytes.backends.default.ops import _dequantize_4bit_compute
from bitsandbytes.backends.utils import _get_4bit_code
from peft import LoraConfig, get_peft_model
from safetensors.torch import save_file
from transformers import AutoModelForCausalLM, BitsAndBytesConfig, LlamaConfig, LlamaForCausalLM

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from make_train_fixtures import batch  # noqa: E402  (the gradient fixtures' batch)

MODEL = "tests/fixtures/models/llama-nf4"
OUT = "tests/fixtures/nf4"


def make_model():
    torch.manual_seed(11)
    cfg = LlamaConfig(hidden_size=64, intermediate_size=128, num_attention_heads=4,
                      num_key_value_heads=2, head_dim=16, num_hidden_layers=2, vocab_size=96,
                      max_position_embeddings=64, rms_norm_eps=1e-6, tie_word_embeddings=False,
                      bos_token_id=1, eos_token_id=2)
    m = LlamaForCausalLM(cfg)
    with torch.no_grad():   # a spread of magnitudes per block, not one shared scale
        for n, p in m.named_parameters():
            if p.dim() == 2:
                p.mul_(torch.exp(torch.randn(p.shape[0], 1) * 0.5))
    m.save_pretrained(MODEL, safe_serialization=True)


def flat_dequant(codes, absmax, n):
    code = _get_4bit_code("nf4", torch.device("cpu"))
    return _dequantize_4bit_compute(codes.reshape(-1), absmax, code, 64, (n,), torch.float32)


def ops(out):
    from safetensors.torch import load_file
    w = load_file(f"{MODEL}/model.safetensors")["model.layers.0.mlp.down_proj.weight"]
    g = torch.Generator().manual_seed(3)
    code = _get_4bit_code("nf4", torch.device("cpu")).float()
    mids = (code[:-1] + code[1:]) / 2
    cases = {
        "weight": w.reshape(-1).float(),
        "odd": torch.randn(5 * 13, generator=g),                      # 65: a block of 1
        "zeros": torch.cat([torch.zeros(64), torch.randn(64, generator=g)]),
        "midpoints": torch.cat([torch.tensor([1.0, -1.0]), mids, -mids, torch.zeros(64 - 32)]),
    }
    t = {}
    for name, x in cases.items():
        q, st = F.quantize_4bit(x.reshape(1, -1), blocksize=64, quant_type="nf4")
        t[f"{name}.x"] = x.contiguous()
        t[f"{name}.codes"] = q.reshape(-1).contiguous()
        t[f"{name}.absmax"] = st.absmax.contiguous()
        t[f"{name}.deq"] = flat_dequant(q, st.absmax, x.numel()).contiguous()
    save_file(t, f"{out}/ops.safetensors")


def key_of(n):
    return n.replace("base_model.model.", "", 1).replace(".default", "")


def set_and_grad(p, t, match, key, draw, ids, mask, labels):
    """Adapter tensors (names containing `match`) set by draw(shape) and kept in t as
    "<key>.<name>"; one forward + backward; every gradient into t as "grad.<name>"."""
    for n, prm in p.named_parameters():
        if match in n:
            with torch.no_grad():
                prm.copy_(draw(prm.shape))
            t[key + "." + key_of(n)] = prm.detach().clone()
    o = p(input_ids=ids, attention_mask=mask, labels=labels)
    o.loss.backward()
    for n, prm in p.named_parameters():
        if prm.grad is not None:
            t["grad." + key_of(n)] = prm.grad.detach().clone()
    return o


def seeded_grads(p, t, match, key, seed, batch_seed=0, scale=0.3, base=0.0):
    """set_and_grad on batch(96, batch_seed) with the adapter tensors drawn as
    base + scale·N(0, 1) from a generator seeded `seed`; t also gets ids, mask, labels, loss
    and logits. Returns the output, ids and mask."""
    g = torch.Generator().manual_seed(seed)

    def draw(shape):
        x = torch.randn(shape, generator=g) * scale
        return x + base if base else x
    ids, mask, labels = batch(96, seed=batch_seed)
    o = set_and_grad(p, t, match, key, draw, ids, mask, labels)
    t.update(ids=ids.to(torch.int32), mask=mask.to(torch.int32), labels=labels.to(torch.int32),
             loss=o.loss.detach().reshape(1), logits=o.logits.detach())
    return o, ids, mask


def qlora(out):
    q = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4",
                           bnb_4bit_compute_dtype=torch.float32)
    m = AutoModelForCausalLM.from_pretrained(MODEL, quantization_config=q, device_map="cpu",
                                             attn_implementation="eager")
    ref = AutoModelForCausalLM.from_pretrained(MODEL, dtype=torch.float32,
                                               attn_implementation="eager")
    with torch.no_grad():   # the flat dequantization in a plain f32 model: the same logits
        for n, mod in ref.named_modules():
            if isinstance(mod, torch.nn.Linear) and n != "lm_head":
                x = mod.weight.data
                c, st = F.quantize_4bit(x, blocksize=64, quant_type="nf4")
                mod.weight.data = flat_dequant(c, st.absmax, x.numel()).reshape(x.shape)
    ids, mask, labels = batch(96)
    # training mode throughout: in eval mode on a CPU with AVX512-BF16, bitsandbytes repacks
    # the weights for a kernel that multiplies in bf16 (Linear4bit.forward), not the
    # dequantize-then-matmul in compute dtype that it does on GPUs and in training
    m.train()
    with torch.no_grad():
        a = m(input_ids=ids, attention_mask=mask).logits
        b = ref(input_ids=ids, attention_mask=mask).logits
    assert torch.allclose(a, b, atol=1e-5), (a - b).abs().max()
    cfg = LoraConfig(r=4, lora_alpha=8, lora_dropout=0.0,
                     target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj",
                                     "up_proj", "down_proj"])
    p = get_peft_model(m, cfg)
    p.train()
    t = {}
    o, ids, mask = seeded_grads(p, t, "lora_", "lora", 99)
    with torch.no_grad(), p.disable_adapter():   # still in training mode (see above)
        base = p(input_ids=ids, attention_mask=mask).logits
    with torch.no_grad():   # merged as peft does into 4-bit layers: dequantize, add, quantize
        p.merge_adapter()
        merged = p(input_ids=ids, attention_mask=mask).logits
        p.unmerge_adapter()
        unmerged = p(input_ids=ids, attention_mask=mask).logits
    t.update(base_logits=base, merged_logits=merged, unmerged_logits=unmerged)
    save_file({k: v.contiguous() for k, v in t.items()}, f"{out}/qlora_llama.safetensors")
    print("qlora loss", float(o.loss), "grads", sum(k.startswith("grad.") for k in t))


def ia3(out):
    """peft IA3 (the Llama defaults: k_proj, v_proj, down_proj feed-forward) on the 4-bit
    model, vectors set to 1 + 0.2·N(0, 1): ids, mask, labels, loss, logits, ia3.<name>,
    grad.<name>."""
    from peft import IA3Config
    q = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4",
                           bnb_4bit_compute_dtype=torch.float32)
    m = AutoModelForCausalLM.from_pretrained(MODEL, quantization_config=q, device_map="cpu",
                                             attn_implementation="eager")
    p = get_peft_model(m, IA3Config(target_modules=["k_proj", "v_proj", "down_proj"],
                                    feedforward_modules=["down_proj"]))
    p.train()   # bitsandbytes' dequantize-then-matmul path (see qlora)
    t = {}
    seeded_grads(p, t, "ia3_l", "ia3", 5, batch_seed=2, scale=0.2, base=1.0)
    save_file({k: v.contiguous() for k, v in t.items()}, f"{out}/ia3_llama.safetensors")


def adalora(out):
    """peft AdaLoRA (SVDLinear4bit) on the 4-bit model, A, B, E set to 0.3·N(0, 1): ids, mask,
    labels, loss (the orthogonal regulariser included), logits, ada.<name>, grad.<name>."""
    from peft import AdaLoraConfig
    q = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4",
                           bnb_4bit_compute_dtype=torch.float32)
    m = AutoModelForCausalLM.from_pretrained(MODEL, quantization_config=q, device_map="cpu",
                                             attn_implementation="eager")
    p = get_peft_model(m, AdaLoraConfig(init_r=4, target_r=2, total_step=10, task_type="CAUSAL_LM",
                                        target_modules=["q_proj", "v_proj", "down_proj"]))
    p.train()   # bitsandbytes' dequantize-then-matmul path (see qlora)
    t = {}
    seeded_grads(p, t, "lora_", "ada", 6, batch_seed=4)
    save_file({k: v.contiguous() for k, v in t.items()}, f"{out}/adalora_llama.safetensors")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=OUT)
    ap.add_argument("--model", action="store_true", help="write the checkpoint again")
    a = ap.parse_args()
    os.makedirs(a.out, exist_ok=True)
    if a.model or not os.path.exists(f"{MODEL}/model.safetensors"):
        make_model()
    ops(a.out)
    qlora(a.out)
    ia3(a.out)
    adalora(a.out)


if __name__ == "__main__":
    main()
