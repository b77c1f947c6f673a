#!/usr/bin/env python3
"""make_create_fixtures.py — what transformers writes for the models `create` makes.

For each case, transformers builds the model from the same config (`from_config`) and saves it
with `save_pretrained`; the fixture keeps what the checkpoint holds: config.json (less
transformers_version) and every tensor of model.safetensors with its shape and dtype. The
torch-free test (tests/parity/test_create_save.py) runs loupe's `create` with the case's
arguments, saves, and compares its config.json and tensor list against these.

    python3 tools/make_create_fixtures.py      # writes tests/fixtures/create/cases.json

Run once and commit the output; CI does not need torch.
"""
import json
import os
import struct
import tempfile

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "fixtures", "create")

# name: (loupe arguments of `create`, config class kwargs, dtype)
CASES = {
    "llama": ('"llama" hidden=64 layers=2 heads=4 kv_heads=2 intermediate=128 vocab=100',
              "llama", dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                            num_key_value_heads=2, intermediate_size=128, vocab_size=100,
                            head_dim=16), "float32"),
    "mistral": ('"mistral" hidden=32 layers=2 heads=4 vocab=64 max_pos=128',
                "mistral", dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                num_key_value_heads=4, intermediate_size=128, vocab_size=64,
                                head_dim=8, max_position_embeddings=128), "float32"),
    "qwen2": ('"qwen2" hidden=32 layers=3 heads=4 kv_heads=2 vocab=64',
              "qwen2", dict(hidden_size=32, num_hidden_layers=3, num_attention_heads=4,
                            num_key_value_heads=2, intermediate_size=128, vocab_size=64,
                            max_window_layers=3), "float32"),
    "qwen3": ('"qwen3" hidden=32 layers=2 heads=4 kv_heads=2 vocab=64',
              "qwen3", dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                            num_key_value_heads=2, intermediate_size=128, vocab_size=64,
                            head_dim=8, max_window_layers=2), "float32"),
    "gemma": ('"gemma" hidden=32 layers=2 heads=2 vocab=64 dtype="bf16"',
              "gemma", dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                            num_key_value_heads=2, intermediate_size=128, vocab_size=64,
                            head_dim=16), "bfloat16"),
    "gemma2": ('"gemma2" hidden=32 layers=3 heads=2 kv_heads=1 vocab=64',
               "gemma2", dict(hidden_size=32, num_hidden_layers=3, num_attention_heads=2,
                              num_key_value_heads=1, intermediate_size=128, vocab_size=64,
                              head_dim=16, query_pre_attn_scalar=16), "float32"),
    "gemma3": ('"gemma3" hidden=32 layers=7 heads=4 kv_heads=2 vocab=64',
               "gemma3_text", dict(hidden_size=32, num_hidden_layers=7, num_attention_heads=4,
                                   num_key_value_heads=2, intermediate_size=128, vocab_size=64,
                                   head_dim=8, query_pre_attn_scalar=8), "float32"),
    "gpt2": ('"gpt2" hidden=32 layers=2 heads=4 vocab=64 max_pos=128',
             "gpt2", dict(n_embd=32, n_layer=2, n_head=4, vocab_size=64, n_positions=128),
             "float32"),
    "bert": ('"bert" hidden=32 layers=2 heads=2 vocab=64 dtype="f16"',
             "bert", dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                          intermediate_size=128, vocab_size=64), "float16"),
    "bert_cls": ('"BertForSequenceClassification" hidden=32 layers=1 heads=2 vocab=64 labels=3',
                 "bert", dict(hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                              intermediate_size=128, vocab_size=64, num_labels=3), "float32"),
}

CLASSES = {"llama": "AutoModelForCausalLM", "mistral": "AutoModelForCausalLM",
           "qwen2": "AutoModelForCausalLM", "qwen3": "AutoModelForCausalLM",
           "gemma": "AutoModelForCausalLM",
           "gemma2": "AutoModelForCausalLM", "gemma3": "AutoModelForCausalLM",
           "gpt2": "AutoModelForCausalLM",
           "bert": "AutoModelForMaskedLM", "bert_cls": "AutoModelForSequenceClassification"}


def header(path):
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        return json.loads(f.read(n))


def main():
    import torch
    import transformers as tf
    os.makedirs(OUT, exist_ok=True)
    out = {"transformers": tf.__version__, "cases": {}}
    for name, (args, mtype, kw, dtype) in CASES.items():
        cfg = tf.AutoConfig.for_model(mtype, **kw)
        model = getattr(tf, CLASSES[name]).from_config(cfg, dtype=getattr(torch, dtype))
        with tempfile.TemporaryDirectory() as d:
            model.save_pretrained(d)
            config = json.load(open(os.path.join(d, "config.json")))
            config.pop("transformers_version", None)
            h = header(os.path.join(d, "model.safetensors"))
        meta = h.pop("__metadata__", {})
        out["cases"][name] = {
            "create": args,
            "class": CLASSES[name],
            "config": config,
            "metadata": meta,
            "tensors": {k: {"dtype": v["dtype"], "shape": v["shape"]} for k, v in sorted(h.items())},
        }
    with open(os.path.join(OUT, "cases.json"), "w") as f:
        json.dump(out, f, indent=1, sort_keys=True)
        f.write("\n")
    print("wrote", os.path.join(OUT, "cases.json"))


if __name__ == "__main__":
    main()
