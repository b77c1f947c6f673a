#!/usr/bin/env python3
"""bitsandbytes' other 4-bit settings: FP4 and double quantization, for tests/unit/test_q4.c.

bitsandbytes quantizes the scales again (bnb_4bit_use_double_quant) with quantize_blockwise,
whose CPU kernel (a native binary search) rounds some values differently from its CUDA
kernel. Here the CPU kernel is replaced, for this process, by bitsandbytes' own "default"
kernel (backends/default: 1/absmax, bucketize against the midpoints — the CUDA kernel's
rule), so the fixtures are what a GPU user's bitsandbytes computes. The 4-bit quantization is
the default kernel already. The offset (the mean of the scales) is torch's f32 mean, whose
last bit depends on the machine's summation order; the test allows for it.

Writes (the checkpoint is make_nf4_fixtures.py's tests/fixtures/models/llama-nf4):
  tests/fixtures/q4/ops.safetensors  code8: create_dynamic_map(signed=True); for FP4 cases c
                                     (a weight of the checkpoint, an odd length, zeros, the
                                     midpoints of the codes): fp4.c.{x,codes,absmax,deq}; for
                                     double quantization cases d (nf4.weight, nf4.long: 301
                                     blocks, a short block of 256, fp4.weight):
                                     dq.d.{x,codes,qabsmax,absmax2,offset,absmax,deq}
                                     (absmax: the scales as bitsandbytes dequantizes them)
  tests/fixtures/q4/<v>_llama.safetensors for v in nf4dq, fp4, fp4dq: the checkpoint loaded
                                     with BitsAndBytesConfig(load_in_4bit, quant_type,
                                     use_double_quant, compute float32), peft LoRA (r=4,
                                     alpha 8, every projection) with A and B set to seeded
                                     values: ids, mask, labels, loss, logits, lora.<name>,
                                     grad.<name>, merged_logits (peft's merge_adapter:
                                     dequantize, add, quantize again)
  tests/fixtures/models/gpt2-nf4/    a GPT-2 checkpoint (n_embd 64, 2 layers, vocab 96), seeded
                                     random weights (f32): Conv1D layers, every dimension a
                                     multiple of 64
  tests/fixtures/q4/gpt2nf4dq.safetensors  that checkpoint with NF4 + double quantization
                                     (transformers turns Conv1D into Linear4bit, the weight
                                     transposed) and LoRA r=4 on c_attn, c_proj, c_fc: as above,
                                     and deq.<weight>: bitsandbytes' dequantized c_fc of layer 0
                                     ([out, in], as Linear4bit holds it)
  tests/fixtures/models/llama-nf4-bnb/  the llama checkpoint as transformers saves its 4-bit
  tests/fixtures/models/llama-fp4-bnb/  model (NF4 + double quantization; FP4 without; and
  tests/fixtures/models/gpt2-nf4-bnb/   GPT-2, NF4 + double quantization, its Conv1D weights
                                     quantized transposed):
                                     packed codes, absmax, quant_map, nested_*, quant_state
                                     (the "-bnb-4bit" checkpoints of the Hub); the same bytes
                                     as the nf4dq and fp4 variants above
  tests/fixtures/q4/nf4dq_bf16w.safetensors  loupe's bf16-product semantics (a device with
                                     bf16 ops: make_bf16_fixtures.py) on llama-nf4-bnb: its
                                     4-bit weights as bitsandbytes dequantizes them, rounded
                                     to bf16, lm_head and the embedding rounded, each product's
                                     input (forward) and output gradient (backward) rounded,
                                     f32 sums; peft LoRA (r=4, every projection) in f32 on the
                                     unrounded input: ids, mask, labels, logits, loss,
                                     lora.<name>, grad.<name>

Run from the repository root and commit the output (CI has no torch):
    python3 tools/make_q4_fixtures.py [--out DIR] [--models DIR]
"""
import argparse
import os
import sys

import torch
from bitsandbytes import functional as F
from bitsandbytes.backends.default.ops import _dequantize_4bit_compute
from bitsandbytes.backends.utils import _get_4bit_code
from peft import LoraConfig, get_peft_model
from safetensors.torch import load_file, save_file
from transformers import AutoModelForCausalLM, BitsAndBytesConfig, GPT2Config, GPT2LMHeadModel

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from make_nf4_fixtures import MODEL, seeded_grads  # noqa: E402

OUT = "tests/fixtures/q4"
GPT2 = "tests/fixtures/models/gpt2-nf4"
LLAMA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
_QB = torch.ops.bitsandbytes.quantize_blockwise.default
_DEFAULT = torch._C.DispatchKeySet(torch._C.DispatchKey.CompositeExplicitAutograd)


@torch.library.register_kernel("bitsandbytes::quantize_blockwise", "cpu")
def _quantize_blockwise_as_cuda(A, code, blocksize):
    return _QB.redispatch(_DEFAULT, A, code, blocksize)


def flat_dequant(codes, absmax, n, quant_type):
    code = _get_4bit_code(quant_type, torch.device("cpu"))
    return _dequantize_4bit_compute(codes.reshape(-1), absmax, code, 64, (n,), torch.float32)


def ops(out):
    w = load_file(f"{MODEL}/model.safetensors")["model.layers.0.mlp.down_proj.weight"]
    g = torch.Generator().manual_seed(4)
    code = _get_4bit_code("fp4", torch.device("cpu")).float()
    s = torch.sort(code).values
    mids = (s[:-1] + s[1:]) / 2
    t = {"code8": F.create_dynamic_map(signed=True)}
    cases = {
        "weight": w.reshape(-1).float(),
        "odd": torch.randn(5 * 13, generator=g),
        "zeros": torch.cat([torch.zeros(64), torch.randn(64, generator=g)]),
        "midpoints": torch.cat([torch.tensor([1.0]), mids, torch.zeros(64 - 16)]),
    }
    for name, x in cases.items():
        q, st = F.quantize_4bit(x.reshape(1, -1), blocksize=64, quant_type="fp4")
        t.update({f"fp4.{name}.x": x, f"fp4.{name}.codes": q.reshape(-1),
                  f"fp4.{name}.absmax": st.absmax,
                  f"fp4.{name}.deq": flat_dequant(q, st.absmax, x.numel(), "fp4")})
    long = torch.randn(64 * 300 + 5, generator=g) * torch.exp(torch.randn(64 * 300 + 5, generator=g))
    for name, x, qt in (("nf4.weight", w.reshape(-1).float(), "nf4"), ("nf4.long", long, "nf4"),
                        ("fp4.weight", w.reshape(-1).float(), "fp4")):
        q, st = F.quantize_4bit(x.reshape(1, -1), blocksize=64, quant_type=qt,
                                compress_statistics=True)
        assert st.nested
        am = F.dequantize_blockwise(st.absmax, st.state2) + st.offset
        t.update({f"dq.{name}.x": x, f"dq.{name}.codes": q.reshape(-1),
                  f"dq.{name}.qabsmax": st.absmax, f"dq.{name}.absmax2": st.state2.absmax,
                  f"dq.{name}.offset": st.offset.reshape(1).float(), f"dq.{name}.absmax": am,
                  f"dq.{name}.deq": F.dequantize_4bit(q, st).reshape(-1)})
        assert torch.equal(t[f"dq.{name}.deq"], flat_dequant(q, am, x.numel(), qt))
    save_file({k: v.contiguous().clone() for k, v in t.items()}, f"{out}/ops.safetensors")


def make_gpt2():
    torch.manual_seed(12)
    cfg = GPT2Config(n_embd=64, n_head=4, n_layer=2, vocab_size=96, n_positions=64,
                     bos_token_id=1, eos_token_id=2, resid_pdrop=0.0, embd_pdrop=0.0,
                     attn_pdrop=0.0)   # the fixtures run in training mode
    m = GPT2LMHeadModel(cfg)
    with torch.no_grad():   # a spread of magnitudes per block, as make_nf4_fixtures.py
        for n, p in m.named_parameters():
            if p.dim() == 2 and "wte" not in n and "wpe" not in n:
                p.mul_(torch.exp(torch.randn(p.shape[0], 1) * 0.5))
    m.save_pretrained(GPT2, safe_serialization=True)


def variant(out, name, quant_type, dq, model=MODEL, targets=LLAMA_TARGETS):
    q = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type=quant_type,
                           bnb_4bit_use_double_quant=dq, bnb_4bit_compute_dtype=torch.float32)
    m = AutoModelForCausalLM.from_pretrained(model, quantization_config=q, device_map="cpu",
                                             attn_implementation="eager")
    t = {}
    if model == GPT2:   # Conv1D became Linear4bit, its weight transposed: [out, in]
        lin = m.transformer.h[0].mlp.c_fc.weight
        assert tuple(lin.quant_state.shape) == (256, 64)
        t["deq.transformer.h.0.mlp.c_fc.weight"] = F.dequantize_4bit(lin.data, lin.quant_state)
    else:
        lin = m.model.layers[0].self_attn.q_proj.weight
    assert lin.quant_state.nested == dq and lin.quant_state.quant_type == quant_type
    # training mode throughout: bitsandbytes' dequantize-then-matmul (make_nf4_fixtures.py)
    cfg = LoraConfig(r=4, lora_alpha=8, lora_dropout=0.0, target_modules=targets)
    p = get_peft_model(m, cfg)
    p.train()
    o, ids, mask = seeded_grads(p, t, "lora_", "lora", 21, batch_seed=3)
    with torch.no_grad():
        p.merge_adapter()
        t["merged_logits"] = p(input_ids=ids, attention_mask=mask).logits
    save_file({k: v.contiguous() for k, v in t.items()},
              f"{out}/{name}{'' if model == GPT2 else '_llama'}.safetensors")
    print(name, "loss", float(o.loss), "grads", sum(k.startswith("grad.") for k in t))


def prequantized(models, name, quant_type, dq, src=MODEL):
    q = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type=quant_type,
                           bnb_4bit_use_double_quant=dq, bnb_4bit_compute_dtype=torch.float32)
    m = AutoModelForCausalLM.from_pretrained(src, quantization_config=q, device_map="cpu")
    m.save_pretrained(f"{models}/{name}")


def bf16w(out, models):
    """The pre-quantized llama in loupe's bf16-product semantics (see the top)."""
    import bitsandbytes as bnb
    import make_bf16_fixtures as b16
    from transformers import LlamaForCausalLM
    q = AutoModelForCausalLM.from_pretrained(f"{models}/llama-nf4-bnb", device_map="cpu")
    deq = {n: F.dequantize_4bit(mod.weight.data, mod.weight.quant_state).float()
           for n, mod in q.named_modules() if isinstance(mod, bnb.nn.Linear4bit)}
    assert len(deq) == 14
    m = LlamaForCausalLM.from_pretrained(MODEL, dtype=torch.float32, attn_implementation="eager")
    with torch.no_grad():
        for n, w in deq.items():
            m.get_submodule(n).weight.copy_(w)
    b16.patch(m)   # before peft: the adapters' own Linear layers stay plain f32
    p = get_peft_model(m, LoraConfig(r=4, lora_alpha=8, lora_dropout=0.0,
                                     target_modules=LLAMA_TARGETS))
    t = {}
    o, _, _ = seeded_grads(p, t, "lora_", "lora", 21, batch_seed=3)
    save_file({k: v.contiguous() for k, v in t.items()}, f"{out}/nf4dq_bf16w.safetensors")
    print("bf16w loss", float(o.loss))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=OUT)
    ap.add_argument("--model", action="store_true", help="write the GPT-2 checkpoint again")
    ap.add_argument("--models", default="tests/fixtures/models",
                    help="where the pre-quantized checkpoints go")
    a = ap.parse_args()
    os.makedirs(a.out, exist_ok=True)
    ops(a.out)
    variant(a.out, "nf4dq", "nf4", True)
    variant(a.out, "fp4", "fp4", False)
    variant(a.out, "fp4dq", "fp4", True)
    if a.model or not os.path.exists(f"{GPT2}/model.safetensors"):
        make_gpt2()
    variant(a.out, "gpt2nf4dq", "nf4", True, GPT2, ["c_attn", "c_proj", "c_fc"])
    prequantized(a.models, "llama-nf4-bnb", "nf4", True)
    prequantized(a.models, "llama-fp4-bnb", "fp4", False)
    prequantized(a.models, "gpt2-nf4-bnb", "nf4", True, GPT2)
    bf16w(a.out, a.models)


if __name__ == "__main__":
    main()
