#!/usr/bin/env python3
"""Write tests/fixtures/ops/: per-op inputs, outputs and gradients computed by PyTorch,
transformers and peft, for tests/unit/test_nn_parity.c.

    python tools/make_op_fixtures.py [--out tests/fixtures/ops]

Output: ops.safetensors (every tensor, named "<case>.<tensor>", f32 or i32, little-endian)
and index.json ({"generator": versions, "cases": [{"name", "op", "params"}]}). Layouts are
loupe's (docs/compute.md): attention q/k/v/out are (B,T,H,D) — transposed from HF's
(B,H,T,D) here — and RoPE tables are (N, D/2). Backward tensors are named "d<input>" and
were computed by autograd from the upstream gradient "dout". Run on CPU, f32, seeded; the
files are committed because CI has no torch.

Wherever a library function exists, it is the one called (LlamaRMSNorm, Gemma2RMSNorm,
LlamaRotaryEmbedding + apply_rotary_pos_emb, masking_utils.eager_mask, Gemma 2's
eager_attention_forward, ACT2FN, Conv1D, peft LoRA, ForCausalLMLoss, torch.optim), so
the fixtures carry library semantics rather than our reading of them.
"""
import argparse
import json
import os

import torch
import torch.nn as nn
import torch.nn.functional as F
from safetensors.torch import save_file

import transformers
from transformers import LlamaConfig
from transformers.activations import ACT2FN
from transformers.loss.loss_utils import ForCausalLMLoss
from transformers.masking_utils import (and_masks, bidirectional_mask_function,
                                        causal_mask_function, eager_mask,
                                        sliding_window_overlay)
from transformers.models.gemma2.modeling_gemma2 import Gemma2RMSNorm
from transformers.models.gemma2.modeling_gemma2 import eager_attention_forward
from transformers.models.llama.modeling_llama import (LlamaRMSNorm, LlamaRotaryEmbedding,
                                                      apply_rotary_pos_emb)
from transformers.pytorch_utils import Conv1D

tensors = {}
cases = []


def case(name, op, params=None, **ts):
    cases.append({"name": name, "op": op, "params": params or {}})
    for k, v in ts.items():
        v = v.detach().clone().contiguous()   # clone: safetensors refuses shared storage
        v = v.to(torch.int32) if not v.is_floating_point() else v.to(torch.float32)
        tensors[f"{name}.{k}"] = v


def leaf(*shape, scale=1.0):
    return (torch.randn(*shape) * scale).requires_grad_(True)


def grads(out, dout, *xs):
    return torch.autograd.grad(out, xs, dout, allow_unused=True)


def embedding():
    table = leaf(11, 6)
    ids = torch.tensor([3, 0, 10, 3, 7, 3, 1])
    out = F.embedding(ids, table)
    dout = torch.randn_like(out)
    (dt,) = grads(out, dout, table)
    case("embedding", "embedding", ids=ids, table=table, out=out, dout=dout, dtable=dt)


def linear():
    x, w, b = leaf(5, 7), leaf(3, 7), leaf(3)
    out = F.linear(x, w, b)
    dout = torch.randn_like(out)
    dx, dw, db = grads(out, dout, x, w, b)
    case("linear", "linear", inp=x, weight=w, bias=b, out=out, dout=dout, dinp=dx,
         dweight=dw, dbias=db)
    conv = Conv1D(9, 4)   # nf = out features, nx = in features; weight is [in, out]
    with torch.no_grad():
        conv.weight.normal_()
        conv.bias.normal_()
    x = leaf(6, 4)
    out = conv(x)
    dout = torch.randn_like(out)
    dx, dw, db = grads(out, dout, x, conv.weight, conv.bias)
    case("conv1d", "conv1d", inp=x, weight=conv.weight, bias=conv.bias, out=out, dout=dout,
         dinp=dx, dweight=dw, dbias=db)


def lora():
    from peft import LoraConfig, get_peft_model

    class Tiny(nn.Module):
        def __init__(self):
            super().__init__()
            self.proj = nn.Linear(12, 10, bias=True)

        def forward(self, x):
            return self.proj(x)

    model = get_peft_model(Tiny(), LoraConfig(r=4, lora_alpha=8, lora_dropout=0.0,
                                              target_modules=["proj"]))
    layer = model.base_model.model.proj
    A, B = layer.lora_A["default"].weight, layer.lora_B["default"].weight
    with torch.no_grad():
        B.normal_()   # PEFT starts B at zero; a random B exercises every gradient
    x = leaf(2, 3, 12)
    out = model(x)
    dout = torch.randn_like(out)
    dx, dA, dB = grads(out, dout, x, A, B)
    base = layer.base_layer
    case("lora", "lora", {"scale": layer.scaling["default"], "r": 4},
         inp=x.reshape(6, 12), weight=base.weight, bias=base.bias, A=A, B=B,
         out=out.reshape(6, 10), dout=dout.reshape(6, 10), dinp=dx.reshape(6, 12), dA=dA, dB=dB)
    # dropout: torch's RNG cannot be reproduced, so the same formula with an explicit mask
    x = leaf(6, 12)
    mask = (torch.rand(6, 12) >= 0.25).float() / 0.75
    out = F.linear(F.linear(x * mask, A), B) * 2.0
    dout = torch.randn_like(out)
    dx, dA, dB = grads(out, dout, x, A, B)
    case("lora_dropout", "lora", {"scale": 2.0, "r": 4, "base": False}, inp=x, mask=mask,
         A=A, B=B, out=out, dout=dout, dinp=dx, dA=dA, dB=dB)


def ia3():
    from peft import IA3Config, get_peft_model

    class Tiny(nn.Module):
        def __init__(self):
            super().__init__()
            self.k_proj = nn.Linear(8, 6, bias=False)
            self.down_proj = nn.Linear(6, 5, bias=True)

        def forward(self, x):
            return self.down_proj(self.k_proj(x))

    model = get_peft_model(Tiny(), IA3Config(target_modules=["k_proj", "down_proj"],
                                             feedforward_modules=["down_proj"]))
    k, down = model.base_model.model.k_proj, model.base_model.model.down_proj
    lk, ld = k.ia3_l["default"], down.ia3_l["default"]
    with torch.no_grad():   # PEFT starts at ones; random vectors exercise the gradients
        lk.normal_()
        ld.normal_()
    x = leaf(4, 8)
    out = model(x)
    dout = torch.randn_like(out)
    dx, dlk, dld = grads(out, dout, x, lk, ld)
    # k_proj: output scaling, ia3_l (out, 1); down_proj (feed-forward): input scaling (1, in)
    case("ia3", "ia3", inp=x, k_weight=k.base_layer.weight, l_k=lk.flatten(),
         down_weight=down.base_layer.weight, down_bias=down.base_layer.bias,
         l_down=ld.flatten(), out=out, dout=dout, dinp=dx, dl_k=dlk.flatten(),
         dl_down=dld.flatten())


def norms():
    for name, mod, add_one in (("rmsnorm", LlamaRMSNorm(24, eps=1e-6), 0),
                               ("rmsnorm_gemma", Gemma2RMSNorm(24, eps=1e-6), 1)):
        with torch.no_grad():
            mod.weight.normal_()
        x = leaf(5, 24, scale=2.0)
        out = mod(x)
        dout = torch.randn_like(out)
        dx, dw = grads(out, dout, x, mod.weight)
        case(name, "rmsnorm", {"eps": 1e-6, "add_one": add_one}, inp=x, weight=mod.weight,
             out=out, dout=dout, dinp=dx, dweight=dw)
    for name, eps in (("layernorm", 1e-5), ("layernorm_bert", 1e-12)):
        ln = nn.LayerNorm(20, eps=eps)
        with torch.no_grad():
            ln.weight.normal_()
            ln.bias.normal_()
        x = leaf(4, 20, scale=3.0)
        out = ln(x)
        dout = torch.randn_like(out)
        dx, dw, db = grads(out, dout, x, ln.weight, ln.bias)
        case(name, "layernorm", {"eps": eps}, inp=x, weight=ln.weight, bias=ln.bias, out=out,
             dout=dout, dinp=dx, dweight=dw, dbias=db)


def rope():
    D, H, KVH, T = 16, 3, 1, 9
    variants = [
        ("rope_default", {"rope_type": "default", "rope_theta": 10000.0}, 64, 0),
        ("rope_linear", {"rope_type": "linear", "rope_theta": 10000.0, "factor": 4.0}, 64, 0),
        # dynamic NTK only changes anything past max_position_embeddings (16 here)
        ("rope_dynamic", {"rope_type": "dynamic", "rope_theta": 10000.0, "factor": 2.0}, 16, 20),
        # theta 1e4, D 16, original length 32: wavelengths 6.3 (kept), 19.9 (blended), 63+ (/8)
        ("rope_llama3", {"rope_type": "llama3", "rope_theta": 10000.0, "factor": 8.0,
                         "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                         "original_max_position_embeddings": 32}, 4096, 4000),
    ]
    for name, rp, max_pos, offset in variants:
        cfg = LlamaConfig(hidden_size=D * H, num_attention_heads=H, num_key_value_heads=KVH,
                          head_dim=D, max_position_embeddings=max_pos, rope_parameters=rp)
        emb = LlamaRotaryEmbedding(cfg)
        # row 0 from 0, row 1 from `offset` (large positions test the f32 angle arithmetic)
        pos = torch.stack([torch.arange(T), torch.arange(T) + offset])
        x = torch.zeros(2, T, H * D)
        cos, sin = emb(x, pos)   # (B, T, D), halves equal
        q, k = leaf(2, H, T, D), leaf(2, KVH, T, D)
        qo, ko = apply_rotary_pos_emb(q, k, cos, sin)
        dq_out, dk_out = torch.randn_like(qo), torch.randn_like(ko)
        dq, dk = torch.autograd.grad((qo, ko), (q, k), (dq_out, dk_out))
        bthd = lambda t: t.transpose(1, 2)   # HF (B,H,T,D) → loupe (B,T,H,D)
        params = {"type": rp["rope_type"], "theta": rp["rope_theta"], "D": D, "H": H,
                  "KVH": KVH, "T": T, "max_position": max_pos,
                  "seq_len": int(pos.max()) + 1,
                  "factor": rp.get("factor", 1.0),
                  "low_freq_factor": rp.get("low_freq_factor", 0.0),
                  "high_freq_factor": rp.get("high_freq_factor", 0.0),
                  "original_max_position": rp.get("original_max_position_embeddings", 0)}
        case(name, "rope", params, pos=pos, inv_freq=emb.inv_freq, cos=cos[..., : D // 2],
             sin=sin[..., : D // 2], q=bthd(q), k=bthd(k), q_out=bthd(qo), k_out=bthd(ko),
             dq_out=bthd(dq_out), dk_out=bthd(dk_out), dq=bthd(dq), dk=bthd(dk))


class _AttnModule(nn.Module):   # what eager_attention_forward reads off its module
    def __init__(self, groups):
        super().__init__()
        self.num_key_value_groups = groups
        self.training = False


def attention():
    variants = [
        # name, B, T, H, KVH, D, causal, window, softcap, scale, padding (per batch row)
        ("attn_llama_gqa", 2, 7, 4, 2, 8, True, 0, 0.0, 8 ** -0.5, ["right", "left"]),
        ("attn_gemma2_local", 2, 9, 4, 2, 8, True, 4, 50.0 / 40, 0.5, ["none", "left"]),
        ("attn_gemma2_global", 1, 6, 2, 1, 8, True, 0, 1.5, 0.4, ["none"]),
        ("attn_bert", 2, 6, 3, 3, 5, False, 0, 0.0, 5 ** -0.5, ["right", "none"]),
    ]
    for name, B, T, H, KVH, D, causal, window, cap, scale, pads in variants:
        am = torch.ones(B, T, dtype=torch.long)
        for b, pad in enumerate(pads):
            if pad == "right":
                am[b, T - 2:] = 0
            elif pad == "left":
                am[b, :3] = 0
        fn = causal_mask_function if causal else bidirectional_mask_function
        if window:
            fn = and_masks(sliding_window_overlay(window), causal_mask_function)
        mask = eager_mask(batch_size=B, q_length=T, kv_length=T, mask_function=fn,
                          attention_mask=am.bool(), dtype=torch.float32)
        q, k, v = leaf(B, H, T, D), leaf(B, KVH, T, D), leaf(B, KVH, T, D)
        out, w = eager_attention_forward(_AttnModule(H // KVH), q, k, v, mask, dropout=0.0,
                                         scaling=scale, softcap=cap if cap else None)
        if name == "attn_bert":   # training-time dropout on the probabilities, explicit mask
            drop = (torch.rand(B, H, T, T) >= 0.1).float() / 0.9
            out = torch.matmul(w * drop, v).transpose(1, 2)
        # upstream gradient is zero at padding queries: no loss reaches them in training,
        # and there loupe (zeros) and eager (uniform weights) deliberately differ
        dout = torch.randn_like(out) * am[:, :, None, None]
        dq, dk, dv = grads(out, dout, q, k, v)
        bthd = lambda t: t.transpose(1, 2)
        params = {"B": B, "T": T, "H": H, "KVH": KVH, "D": D, "causal": int(causal),
                  "window": window, "softcap": cap, "scale": scale}
        extra = {"dropout": drop} if name == "attn_bert" else {}
        case(name, "attention", params, amask=am, q=bthd(q), k=bthd(k), v=bthd(v), out=out,
             probs=w, dout=dout, dq=bthd(dq), dk=bthd(dk), dv=bthd(dv), **extra)


def activations():
    for hf in ("silu", "gelu", "gelu_new", "gelu_pytorch_tanh", "tanh", "relu"):
        x = leaf(64, scale=3.0)
        out = ACT2FN[hf](x)
        dout = torch.randn_like(out)
        (dx,) = grads(out, dout, x)
        case(f"act_{hf}", "act", {"act": hf}, inp=x, out=out, dout=dout, dinp=dx)
    for hf in ("silu", "gelu_pytorch_tanh"):   # Llama and Gemma MLPs: act(gate) * up
        g, u = leaf(48, scale=2.0), leaf(48)
        out = ACT2FN[hf](g) * u
        dout = torch.randn_like(out)
        dg, du = grads(out, dout, g, u)
        case(f"gated_{hf}", "gated", {"act": hf}, gate=g, up=u, out=out, dout=dout, dgate=dg,
             dup=du)


def losses():
    x = leaf(4, 13, scale=3.0)
    out = torch.softmax(x, dim=-1)
    dout = torch.randn_like(out)
    (dx,) = grads(out, dout, x)
    case("softmax", "softmax", inp=x, out=out, dout=dout, dinp=dx)

    # causal LM: labels are the input ids; transformers shifts them itself
    B, T, V = 2, 6, 50
    logits = leaf(B, T, V, scale=2.0)
    labels = torch.randint(0, V, (B, T))
    labels[1, :2] = -100   # e.g. a prompt or left padding
    loss = ForCausalLMLoss(logits, labels, V)
    (dl,) = grads(loss, torch.tensor(1.0), logits)
    case("causal_lm_loss", "causal_lm_loss", {"B": B, "T": T, "V": V}, logits=logits,
         labels=labels, loss=loss.reshape(1), dlogits=dl)

    # sequence classification (BertForSequenceClassification: plain cross entropy)
    logits = leaf(4, 5)
    labels = torch.tensor([4, 0, 2, 2])
    loss = F.cross_entropy(logits, labels)
    (dl,) = grads(loss, torch.tensor(1.0), logits)
    case("classifier_loss", "cross_entropy", logits=logits, targets=labels,
         loss=loss.reshape(1), dlogits=dl)

    # Gemma 2 final logits: tanh(l / 30) * 30
    x = leaf(40, scale=40.0)
    out = torch.tanh(x / 30.0) * 30.0
    dout = torch.randn_like(out)
    (dx,) = grads(out, dout, x)
    case("softcap", "softcap", {"cap": 30.0}, inp=x, out=out, dout=dout, dinp=dx)


def optimizers():
    p0 = torch.randn(37)
    gs = [torch.randn(37) for _ in range(3)]
    hp = {"lr": 1e-2, "beta1": 0.9, "beta2": 0.999, "eps": 1e-8, "weight_decay": 0.01}
    p = p0.clone().requires_grad_(True)
    opt = torch.optim.AdamW([p], lr=hp["lr"], betas=(hp["beta1"], hp["beta2"]), eps=hp["eps"],
                            weight_decay=hp["weight_decay"], foreach=False)
    ts = {"param0": p0}
    for i, g in enumerate(gs):
        p.grad = g.clone()
        opt.step()
        ts[f"grad{i + 1}"] = g
        ts[f"param{i + 1}"] = p.detach().clone()
    st = opt.state[p]
    case("adamw", "adamw", hp, m=st["exp_avg"], v=st["exp_avg_sq"], **ts)

    hp = {"lr": 0.1, "momentum": 0.9, "weight_decay": 0.001}
    p = p0.clone().requires_grad_(True)
    opt = torch.optim.SGD([p], lr=hp["lr"], momentum=hp["momentum"],
                          weight_decay=hp["weight_decay"], foreach=False)
    ts = {"param0": p0}
    for i, g in enumerate(gs):
        p.grad = g.clone()
        opt.step()
        ts[f"grad{i + 1}"] = g
        ts[f"param{i + 1}"] = p.detach().clone()
    case("sgd", "sgd", hp, buf=opt.state[p]["momentum_buffer"], **ts)

    ps = [torch.randn(5, 3).requires_grad_(True), torch.randn(1).requires_grad_(True),
          torch.randn(100).requires_grad_(True)]
    g0 = [torch.randn_like(x) for x in ps]
    for x, g in zip(ps, g0):
        x.grad = g.clone()
    total = torch.nn.utils.clip_grad_norm_(ps, max_norm=1.0, foreach=False)
    case("clip_grad_norm", "clip_grad_norm", {"max_norm": 1.0}, g0=g0[0], g1=g0[1], g2=g0[2],
         c0=ps[0].grad, c1=ps[1].grad, c2=ps[2].grad, total=total.reshape(1))


def llama_block():
    """One transformers LlamaDecoderLayer (GQA, RoPE, SiLU MLP) with PEFT LoRA on q_proj and
    v_proj, forward and backward on a right-padded batch: checks that the ops compose with
    HF's layouts (q (B,T,H,D), rotate-half, repeat_kv, o_proj input (B,T,H·D))."""
    from peft import LoraConfig, get_peft_model
    from transformers.models.llama.modeling_llama import LlamaDecoderLayer

    B, T, C, H, KVH, D, I = 2, 7, 32, 4, 2, 8, 48
    cfg = LlamaConfig(hidden_size=C, intermediate_size=I, num_attention_heads=H,
                      num_key_value_heads=KVH, head_dim=D, rms_norm_eps=1e-5,
                      max_position_embeddings=64, rope_parameters={"rope_type": "default",
                                                                   "rope_theta": 10000.0})
    cfg._attn_implementation = "eager"
    layer = LlamaDecoderLayer(cfg, layer_idx=0)
    with torch.no_grad():
        for prm in layer.parameters():
            prm.normal_(0, 0.3)
        layer.input_layernorm.weight.normal_(1, 0.1)
        layer.post_attention_layernorm.weight.normal_(1, 0.1)
    model = get_peft_model(layer, LoraConfig(r=4, lora_alpha=8, lora_dropout=0.0,
                                             target_modules=["q_proj", "v_proj"]))
    attn = model.base_model.model.self_attn
    loras = {}
    for nm in ("q_proj", "v_proj"):
        mod = getattr(attn, nm)
        with torch.no_grad():
            mod.lora_B["default"].weight.normal_(0, 0.3)
        loras[nm] = (mod.lora_A["default"].weight, mod.lora_B["default"].weight)

    am = torch.ones(B, T, dtype=torch.long)
    am[1, T - 2:] = 0   # right padding: every query still sees a real key
    pos = torch.arange(T)[None].expand(B, T)
    cos, sin = LlamaRotaryEmbedding(cfg)(torch.zeros(B, T, C), pos)
    mask = eager_mask(batch_size=B, q_length=T, kv_length=T, mask_function=causal_mask_function,
                      attention_mask=am.bool(), dtype=torch.float32)
    x = leaf(B, T, C)
    y = model(x, attention_mask=mask, position_ids=pos, position_embeddings=(cos, sin))
    dy = torch.randn_like(y) * am[:, :, None]
    (qa, qb), (va, vb) = loras["q_proj"], loras["v_proj"]
    dx, dqa, dqb, dva, dvb = grads(y, dy, x, qa, qb, va, vb)
    base = model.base_model.model
    ts = dict(x=x, amask=am, y=y, dy=dy, dx=dx, q_A=qa, q_B=qb, v_A=va, v_B=vb, dq_A=dqa,
              dq_B=dqb, dv_A=dva, dv_B=dvb,
              ln1=base.input_layernorm.weight, ln2=base.post_attention_layernorm.weight)
    for nm in ("q_proj", "k_proj", "v_proj", "o_proj"):
        mod = getattr(attn, nm)
        ts[nm] = getattr(mod, "base_layer", mod).weight
    for nm in ("gate_proj", "up_proj", "down_proj"):
        ts[nm] = getattr(base.mlp, nm).weight
    case("llama_block", "llama_block",
         {"B": B, "T": T, "C": C, "H": H, "KVH": KVH, "D": D, "I": I, "eps": 1e-5,
          "theta": 10000.0, "lora_scale": attn.q_proj.scaling["default"], "r": 4}, **ts)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "..", "tests",
                                                  "fixtures", "ops"))
    out = ap.parse_args().out
    torch.manual_seed(0)
    torch.set_default_dtype(torch.float32)
    for f in (embedding, linear, lora, ia3, norms, rope, attention, activations, losses,
              optimizers, llama_block):
        f()
    os.makedirs(out, exist_ok=True)
    save_file(tensors, os.path.join(out, "ops.safetensors"), metadata={"format": "pt"})
    import peft
    index = {"generator": {"torch": torch.__version__, "transformers": transformers.__version__,
                           "peft": peft.__version__, "script": "tools/make_op_fixtures.py"},
             "cases": cases}
    with open(os.path.join(out, "index.json"), "w") as f:
        json.dump(index, f, indent=1)
        f.write("\n")
    print(f"{len(cases)} cases, {len(tensors)} tensors -> {out}")


if __name__ == "__main__":
    main()
