#!/usr/bin/env python3
"""make_forward_fixtures.py — what transformers computes for every tiny checkpoint, for
tests/unit/test_fw_parity.c.

For each model in tests/fixtures/models/ (written by tools/make_tiny.py) this runs
transformers (eager attention, f32) on a fixed batch of 3 sequences of 20 tokens — row 0
without padding, row 1 right-padded, row 2 left-padded — and writes
tests/fixtures/forward/<model>.safetensors with:

  ids, mask, labels   I32 (3, 20); labels are the ids with -100 on padding (see label_ids)
  logits              F32 (3, 20, vocab), every position (padding rows are not compared)
  loss                F32 (1), the model's own loss for those labels (causal shift inside)
  gen_prompt          I32 (6): row 0's first 6 tokens
  gen_ids             I32 (32): generate(do_sample=False, max_new_tokens=32), no eos stop

For bf16 checkpoints, `logits` is the f32 computation on the widened weights (what loupe does
on the CPU) and `logits_bf16` what transformers gives when it runs in bf16.

BERT (BertForSequenceClassification): ids, mask, types (token_type_ids, row 0 has a second
segment), labels (3), class_logits F32 (3, num_labels), loss.

BertForMaskedLM (bert-mlm): ids, mask, labels (-100 but at 4 positions), logits
F32 (3, 20, vocab), loss.

tests/fixtures/forward/gpt2-bytes/ is the tiny GPT-2 (a link to its weights) with a
tokenizer.json of one token per byte, for the language goldens that pass text.

Run once and commit the output; CI does not need torch:

    python3 tools/make_forward_fixtures.py [--out DIR] [NAME...]
"""
import os
import sys

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
MODELS = os.path.join(ROOT, "tests", "fixtures", "models")
OUT = os.path.join(ROOT, "tests", "fixtures", "forward")

CAUSAL = ["llama", "llama-sharded", "mistral", "qwen2", "qwen2-bf16", "qwen3", "smollm3", "phi3",
          "phi3-longrope", "phi3-partial", "gemma", "gemma2", "gemma3", "gpt2"]
B, T, PROMPT, NEW = 3, 20, 6, 32


def batch(vocab, seed):
    import torch
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(3, vocab, (B, T), generator=g)
    mask = torch.ones(B, T, dtype=torch.long)
    mask[1, 13:] = 0           # right padding
    mask[2, :5] = 0            # left padding
    ids = ids.masked_fill(mask == 0, 0)
    return ids, mask


def label_ids(ids, mask):
    """The ids as labels, -100 on padding and on the first token of a left-padded row.

    With the causal shift, that first token is predicted from a padding position, whose
    attention sees no key: eager attention (the only kind Gemma 2 has) spreads it uniformly
    over every key, sdpa and loupe give zeros (docs/compute.md, "Padding queries"). The loss
    would then depend on the attention implementation, so that target is left out."""
    labels = ids.masked_fill(mask == 0, -100)
    for b in range(ids.shape[0]):
        first = int(mask[b].argmax())
        if first > 0:
            labels[b, first] = -100
    return labels


def causal(name):
    import torch
    import transformers as tf
    from safetensors.torch import save_file
    path = os.path.join(MODELS, name)
    model = tf.AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32,
                                                    attn_implementation="eager").eval()
    ids, mask = batch(model.config.vocab_size, 1234)
    labels = label_ids(ids, mask)
    with torch.no_grad():
        out = model(input_ids=ids, attention_mask=mask, labels=labels)
        prompt = ids[:1, :PROMPT]
        gen = model.generate(prompt, attention_mask=torch.ones_like(prompt), do_sample=False,
                             max_new_tokens=NEW, min_new_tokens=NEW, eos_token_id=None,
                             pad_token_id=0)
    t = {
        "ids": ids.to(torch.int32), "mask": mask.to(torch.int32),
        "labels": labels.to(torch.int32),
        "logits": out.logits.float().contiguous(), "loss": out.loss.float().reshape(1),
        "gen_prompt": prompt[0].to(torch.int32).contiguous(),
        "gen_ids": gen[0, PROMPT:].to(torch.int32).contiguous(),
    }
    assert t["gen_ids"].numel() == NEW
    if name.endswith("bf16"):
        m16 = tf.AutoModelForCausalLM.from_pretrained(path, dtype=torch.bfloat16,
                                                      attn_implementation="eager").eval()
        with torch.no_grad():
            t["logits_bf16"] = m16(input_ids=ids, attention_mask=mask).logits.float().contiguous()
    if name == "gemma3":
        assert torch.equal(legacy_gemma3_logits(path, ids, mask), out.logits), "legacy config"
    save_file(t, os.path.join(OUT, name + ".safetensors"))
    print(f"{name}: loss {out.loss.item():.6f}, gen {t['gen_ids'].tolist()[:8]}...")


LEGACY_GEMMA3 = {"rope_theta": 1000000.0, "rope_scaling": {"rope_type": "linear", "factor": 4.0},
                 "rope_local_base_freq": 10000.0, "sliding_window_pattern": 2}


def legacy_gemma3_logits(path, ids, mask):
    """The tiny Gemma 3 with its config as transformers 4.5x wrote it (rope_theta, rope_scaling,
    rope_local_base_freq, sliding_window_pattern; no layer_types, no rope_parameters): the same
    model, so the same logits. test_fw_parity loads that form too (LEGACY_GEMMA3 there)."""
    import json
    import tempfile
    import torch
    import transformers as tf
    cfg = json.load(open(os.path.join(path, "config.json")))
    for k in ("layer_types", "rope_parameters", "_sliding_window_pattern"):
        cfg.pop(k)
    cfg.update(LEGACY_GEMMA3)
    with tempfile.TemporaryDirectory() as d:
        json.dump(cfg, open(os.path.join(d, "config.json"), "w"))
        os.symlink(os.path.abspath(os.path.join(path, "model.safetensors")),
                   os.path.join(d, "model.safetensors"))
        m = tf.AutoModelForCausalLM.from_pretrained(d, dtype=torch.float32,
                                                    attn_implementation="eager").eval()
        assert m.config.layer_types == ["sliding_attention", "full_attention", "sliding_attention"]
        with torch.no_grad():
            return m(input_ids=ids, attention_mask=mask).logits


def bert():
    import torch
    import transformers as tf
    from safetensors.torch import save_file
    path = os.path.join(MODELS, "bert")
    model = tf.BertForSequenceClassification.from_pretrained(
        path, dtype=torch.float32, attn_implementation="eager").eval()
    g = torch.Generator().manual_seed(99)
    ids = torch.randint(3, model.config.vocab_size, (B, T), generator=g)
    mask = torch.ones(B, T, dtype=torch.long)
    mask[1, 13:] = 0
    mask[2, 9:] = 0
    ids = ids.masked_fill(mask == 0, 0)
    types = torch.zeros(B, T, dtype=torch.long)
    types[0, 11:] = 1
    labels = torch.tensor([4, 0, 2])
    with torch.no_grad():
        out = model(input_ids=ids, attention_mask=mask, token_type_ids=types, labels=labels)
    save_file({"ids": ids.to(torch.int32), "mask": mask.to(torch.int32),
               "types": types.to(torch.int32), "labels": labels.to(torch.int32),
               "class_logits": out.logits.float().contiguous(),
               "loss": out.loss.float().reshape(1)},
              os.path.join(OUT, "bert.safetensors"))
    print(f"bert: loss {out.loss.item():.6f}")


def bert_mlm():
    """BertForMaskedLM: logits over the vocabulary at every position, loss on a few masked
    positions (labels -100 elsewhere, no shift)."""
    import torch
    import transformers as tf
    from safetensors.torch import save_file
    path = os.path.join(MODELS, "bert-mlm")
    model = tf.BertForMaskedLM.from_pretrained(path, dtype=torch.float32,
                                               attn_implementation="eager").eval()
    g = torch.Generator().manual_seed(7)
    ids = torch.randint(3, model.config.vocab_size, (B, T), generator=g)
    mask = torch.ones(B, T, dtype=torch.long)
    mask[1, 13:] = 0
    ids = ids.masked_fill(mask == 0, 0)
    labels = torch.full((B, T), -100)
    for b, t in [(0, 2), (0, 7), (1, 4), (2, 19)]:
        labels[b, t] = ids[b, t]
    with torch.no_grad():
        out = model(input_ids=ids, attention_mask=mask, labels=labels)
    save_file({"ids": ids.to(torch.int32), "mask": mask.to(torch.int32),
               "labels": labels.to(torch.int32), "logits": out.logits.float().contiguous(),
               "loss": out.loss.float().reshape(1)},
              os.path.join(OUT, "bert-mlm.safetensors"))
    print(f"bert-mlm: loss {out.loss.item():.6f}")


def bytes_to_unicode():
    """GPT-2's table of byte -> printable character (printable bytes first)."""
    bs = (list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
          + list(range(ord("®"), ord("ÿ") + 1)))
    cs, n = bs[:], 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, map(chr, cs)))


def byte_model():
    """tests/fixtures/forward/gpt2-bytes: the tiny GPT-2 with a tokenizer of its 256 ids, one
    per byte (byte-level BPE without merges, made by the tokenizers library), so that the
    language goldens can give the tiny model text."""
    import shutil
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    d = os.path.join(OUT, "gpt2-bytes")
    os.makedirs(d, exist_ok=True)
    vocab = {ch: i for i, ch in enumerate(bytes_to_unicode().values())}
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.save(os.path.join(d, "tokenizer.json"))
    shutil.copy(os.path.join(MODELS, "gpt2", "config.json"), d)
    link = os.path.join(d, "model.safetensors")
    if not os.path.lexists(link):
        os.symlink("../../models/gpt2/model.safetensors", link)
    print("gpt2-bytes:", tok.encode("Hello world").ids)


def main():
    global OUT
    import argparse
    import torch
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=OUT, help="output directory (tests compare a fresh run)")
    ap.add_argument("names", nargs="*")
    a = ap.parse_args()
    OUT = a.out
    torch.manual_seed(0)
    os.makedirs(OUT, exist_ok=True)
    names = a.names or CAUSAL + ["bert", "bert-mlm", "gpt2-bytes"]
    jobs = {"bert": bert, "bert-mlm": bert_mlm, "gpt2-bytes": byte_model}
    for n in names:
        jobs[n]() if n in jobs else causal(n)


if __name__ == "__main__":
    main()
