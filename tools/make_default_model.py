#!/usr/bin/env python3
"""make_default_model.py — build loupe's built-in default model, models/default/.

A tiny Llama-family causal LM (LlamaForCausalLM, about 1M parameters) with its own byte-level
BPE tokenizer, both trained from scratch on the public-domain text in data/corpus/en and
data/corpus/ja (data/corpus/finetune is NOT used: it is what the tutorial fine-tunes on with
LoRA, so that generation visibly changes).

Steps, all deterministic (fixed seeds, torch deterministic algorithms, 2 CPU threads):

  1. tokenizer: `tokenizers` BPE, vocab 2048, GPT-2-style ByteLevel pre-tokenizer and decoder,
     one special token <|endoftext|> (id 0) used as bos, eos and pad; no BOS is added on encode
     (like GPT-2). Saved as tokenizer.json, tokenizer_config.json, special_tokens_map.json.
  2. pre-training: the corpus files, each followed by <|endoftext|>, are one token stream;
     every step draws BATCH random 128-token windows from it (labels = inputs, shifted inside).
     AdamW, linear warm-up then cosine decay to 10 %, gradient clipping at 1.0.
  3. save_pretrained(safe_serialization=True) in float32, generation_config.json, train_log.json,
     README.md (the model card).
  4. fixtures for loupe's tests in tests/fixtures/default_model/: greedy.json (prompt ids and 32
     greedy tokens from generate(do_sample=False) for English and Japanese prompts) and
     logits.safetensors (the logits of one short padded batch).

Run once on a CPU and commit the outputs (CI has no torch):

    nice python3 tools/make_default_model.py            # everything (about 14 minutes on 2 shared cores)
    python3 tools/make_default_model.py --fixtures-only # re-make the fixtures from models/default
    python3 tools/make_default_model.py --bench 5       # time 5 steps, write nothing

Versions used for the committed model: see models/default/README.md.
"""
import argparse
import glob
import json
import math
import os
import random
import sys
import time

os.environ.setdefault("RAYON_NUM_THREADS", "2")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("OMP_NUM_THREADS", "2")
os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")

ROOT = os.path.abspath(os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
CORPUS = os.path.join(ROOT, "data", "corpus")
OUT = os.path.join(ROOT, "models", "default")
FIX = os.path.join(ROOT, "tests", "fixtures", "default_model")

SEED = 1234
VOCAB = 2048
EOT = "<|endoftext|>"
SEQ = 128
BATCH = 8
STEPS = 800         # about 0.5-3 s a step on the 2 shared cores; the committed run took 822 s
WARMUP = 40
LR = 3e-3
LR_MIN_FRAC = 0.1
WEIGHT_DECAY = 0.1
LOG_EVERY = 10

CONFIG = dict(
    vocab_size=VOCAB,
    hidden_size=128,
    intermediate_size=352,
    num_hidden_layers=4,
    num_attention_heads=4,
    num_key_value_heads=2,
    max_position_embeddings=256,
    rope_theta=10000.0,
    rms_norm_eps=1e-5,
    tie_word_embeddings=True,
    hidden_act="silu",
    initializer_range=0.02,
    attention_bias=False,
    mlp_bias=False,
    bos_token_id=0,
    eos_token_id=0,
    pad_token_id=0,
)

PROMPTS = [
    "Once upon a time",
    "Alice was beginning to get very tired",
    "The Fox and the",
    "日本の首都は",
]


def corpus_files():
    """The pre-training files in a fixed order (English first, then Japanese)."""
    files = sorted(glob.glob(os.path.join(CORPUS, "en", "*.txt")))
    files += sorted(glob.glob(os.path.join(CORPUS, "ja", "*.txt")))
    if not files:
        sys.exit("no corpus files under " + CORPUS)
    return files


def read(path):
    with open(path, encoding="utf-8") as f:
        return f.read()


def seed_all():
    import numpy as np
    import torch
    random.seed(SEED)
    np.random.seed(SEED)
    torch.manual_seed(SEED)
    torch.set_num_threads(2)
    torch.use_deterministic_algorithms(True)


# ---------------------------------------------------------------------------------------------
# 1. tokenizer

def train_tokenizer(files):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB,
        min_frequency=2,
        special_tokens=[EOT],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    # train_from_iterator over whole files in a fixed order (deterministic)
    tok.train_from_iterator([read(p) for p in files], trainer=trainer)
    assert tok.token_to_id(EOT) == 0, tok.token_to_id(EOT)
    return tok


def save_tokenizer(tok, out):
    from transformers import PreTrainedTokenizerFast
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=EOT, eos_token=EOT,
                                   pad_token=EOT, unk_token=EOT, model_max_length=256,
                                   clean_up_tokenization_spaces=False)
    fast.save_pretrained(out)
    # tokenizer_config.json: make it explicit and stable across transformers versions
    cfg_path = os.path.join(out, "tokenizer_config.json")
    with open(cfg_path, encoding="utf-8") as f:
        cfg = json.load(f)
    cfg.update({
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": EOT, "eos_token": EOT, "pad_token": EOT, "unk_token": EOT,
        "add_bos_token": False, "add_eos_token": False, "add_prefix_space": False,
        "model_max_length": 256, "clean_up_tokenization_spaces": False,
        "padding_side": "right",
    })
    with open(cfg_path, "w", encoding="utf-8") as f:
        json.dump(cfg, f, indent=2, ensure_ascii=False, sort_keys=True)
        f.write("\n")
    with open(os.path.join(out, "special_tokens_map.json"), "w", encoding="utf-8") as f:
        json.dump({"bos_token": EOT, "eos_token": EOT, "pad_token": EOT, "unk_token": EOT},
                  f, indent=2)
        f.write("\n")
    # tokenizer.json written by the tokenizers library itself (pretty, stable key order)
    tok.save(os.path.join(out, "tokenizer.json"), pretty=True)


def token_stream(tok, files):
    ids = []
    for p in files:
        ids += tok.encode(read(p)).ids
        ids.append(0)
    return ids


# ---------------------------------------------------------------------------------------------
# 2. model and training

def make_model():
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM
    config = LlamaConfig(**CONFIG)
    torch.manual_seed(SEED)
    model = LlamaForCausalLM(config)
    model.config.use_cache = True
    return model


def lr_at(step, steps):
    if step < WARMUP:
        return LR * (step + 1) / WARMUP
    t = (step - WARMUP) / max(1, steps - WARMUP)
    return LR * (LR_MIN_FRAC + (1 - LR_MIN_FRAC) * 0.5 * (1 + math.cos(math.pi * t)))


def train(model, stream, steps, log=None, total=None):
    total = total or steps   # the schedule's length (--bench runs only the first steps)
    import torch
    data = torch.tensor(stream, dtype=torch.long)
    n = data.numel() - SEQ
    g = torch.Generator().manual_seed(SEED + 1)
    decay = [p for nme, p in model.named_parameters() if p.dim() >= 2]
    no_decay = [p for nme, p in model.named_parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": WEIGHT_DECAY},
                             {"params": no_decay, "weight_decay": 0.0}],
                            lr=LR, betas=(0.9, 0.95), eps=1e-8)
    model.train()
    curve = []
    t0 = time.time()
    for step in range(steps):
        for grp in opt.param_groups:
            grp["lr"] = lr_at(step, total)
        starts = torch.randint(0, n, (BATCH,), generator=g)
        x = torch.stack([data[s:s + SEQ] for s in starts.tolist()])
        loss = model(input_ids=x, labels=x).loss    # the causal shift is inside
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        lv = loss.item()
        if step % LOG_EVERY == 0 or step == steps - 1:
            curve.append({"step": step + 1, "loss": round(lv, 4), "lr": round(lr_at(step, total), 6)})
            el = time.time() - t0
            print(f"step {step + 1:5d}/{steps}  loss {lv:.4f}  lr {lr_at(step, total):.2e}  "
                  f"{el:6.1f}s", flush=True)
            if log is not None:
                log(curve)
    return curve, time.time() - t0


# ---------------------------------------------------------------------------------------------
# 3. fixtures

def make_fixtures(out_dir, fix_dir):
    import torch
    from safetensors.torch import save_file
    from tokenizers import Tokenizer
    from transformers import LlamaForCausalLM
    torch.set_num_threads(2)
    tok = Tokenizer.from_file(os.path.join(out_dir, "tokenizer.json"))
    model = LlamaForCausalLM.from_pretrained(out_dir, dtype=torch.float32,
                                             attn_implementation="eager")
    model.eval()
    os.makedirs(fix_dir, exist_ok=True)
    cases = []
    with torch.no_grad():
        for p in PROMPTS:
            ids = tok.encode(p).ids
            x = torch.tensor([ids])
            gen = model.generate(x, attention_mask=torch.ones_like(x), do_sample=False,
                                 max_new_tokens=32, min_new_tokens=32, eos_token_id=None,
                                 pad_token_id=0)
            new = gen[0, len(ids):].tolist()
            # the same by hand (full forward each step, argmax): generate must agree
            y = list(ids)
            for _ in range(32):
                lg = model(input_ids=torch.tensor([y])).logits[0, -1]
                y.append(int(lg.argmax()))
            assert y[len(ids):] == new, (p, y[len(ids):], new)
            cases.append({
                "prompt": p,
                "prompt_ids": ids,
                "new_ids": new,
                "text": tok.decode(new, skip_special_tokens=False),
                "full_text": tok.decode(ids + new, skip_special_tokens=False),
            })
            print(repr(p), "->", repr(cases[-1]["text"]))
        # logits of one short batch: row 0 unpadded, row 1 right-padded (mask 0 at the end)
        a = tok.encode("It is a truth universally acknowledged, that a single man").ids
        b = tok.encode("メロスは激怒した。").ids
        T = 12
        a = a[:T]
        lb = min(len(b), T - 3)
        b = b[:lb] + [0] * (T - lb)
        ids = torch.tensor([a + [0] * (T - len(a)), b], dtype=torch.long)
        mask = torch.zeros(2, T, dtype=torch.long)
        mask[0, :len(a)] = 1
        mask[1, :lb] = 1
        labels = ids.masked_fill(mask == 0, -100)
        o = model(input_ids=ids, attention_mask=mask, labels=labels)
        tensors = {
            "ids": ids.to(torch.int32).contiguous(),
            "mask": mask.to(torch.int32).contiguous(),
            "labels": labels.to(torch.int32).contiguous(),
            "logits": o.logits.float().contiguous(),
            "loss": o.loss.float().reshape(1).contiguous(),
        }
        save_file(tensors, os.path.join(fix_dir, "logits.safetensors"),
                  metadata={"model": "models/default", "attn": "eager", "dtype": "float32",
                            "note": "row 1 is right-padded; compare logits where mask == 1"})
    import transformers
    with open(os.path.join(fix_dir, "greedy.json"), "w", encoding="utf-8") as f:
        json.dump({
            "model": "models/default",
            "how": "tokenizers.Tokenizer.encode (no BOS added); transformers generate("
                   "do_sample=False, max_new_tokens=32, min_new_tokens=32, eos_token_id=None), "
                   "f32, eager attention; checked equal to an argmax loop over full forwards",
            "transformers": transformers.__version__,
            "torch": torch.__version__,
            "cases": cases,
        }, f, indent=2, ensure_ascii=False)
        f.write("\n")
    return cases


# ---------------------------------------------------------------------------------------------

def write_card(out, info):
    c = CONFIG
    lines = f"""# loupe default model

loupe's built-in default model: a tiny Llama-family causal language model with its own
tokenizer, trained from scratch on public-domain text kept in this repository
(`data/corpus/`). It is committed so that the README's first command and the tutorial notebook
need no download. It is a toy: at a training loss of about {info['tail_loss']:.1f} it writes
corpus-flavoured English (fables, Alice, Pride and Prejudice, Peter Rabbit...) that is often
ungrammatical, and its Japanese is mostly noise. The tutorial fine-tunes it with LoRA on
`data/corpus/finetune/` (questions and answers about ships and the sea), which it has never seen,
so that generation visibly changes.

## Architecture

`LlamaForCausalLM` (model_type `llama`), float32, {info['params']:,} parameters
({info['params_nonemb']:,} without the tied embedding).

| | |
|---|---|
| vocab_size | {c['vocab_size']} (byte-level BPE) |
| hidden_size | {c['hidden_size']} |
| num_hidden_layers | {c['num_hidden_layers']} |
| num_attention_heads | {c['num_attention_heads']} (head_dim {c['hidden_size'] // c['num_attention_heads']}) |
| num_key_value_heads | {c['num_key_value_heads']} (grouped-query attention) |
| intermediate_size | {c['intermediate_size']} (SwiGLU MLP: gate_proj, up_proj, down_proj) |
| max_position_embeddings | {c['max_position_embeddings']} |
| rope_theta | {c['rope_theta']} |
| rms_norm_eps | {c['rms_norm_eps']} |
| tie_word_embeddings | true (lm_head shares embed_tokens) |

Files: `config.json`, `generation_config.json`, `model.safetensors` ({info['size']:,} bytes),
`tokenizer.json`, `tokenizer_config.json`, `special_tokens_map.json`, `train_log.json`
(loss every {LOG_EVERY} steps).

## Tokenizer

Byte-level BPE trained with the `tokenizers` library on the same corpus: vocabulary {VOCAB},
GPT-2-style `ByteLevel` pre-tokenizer (no prefix space) and decoder. One special token,
`<|endoftext|>` (id 0), serves as bos, eos and pad. Encoding adds no BOS (like GPT-2).
Japanese is split into pieces of one or two characters or into single bytes, so a
greedy continuation can end in the middle of a character (decoded as U+FFFD).

## Training

- Data: every `.txt` under `data/corpus/en` and `data/corpus/ja` ({info['n_files']} files,
  {info['n_bytes']:,} bytes), each followed by `<|endoftext|>`, as one stream of
  {info['n_tokens']:,} tokens. `data/corpus/finetune/` is not used (it is for the LoRA tutorial).
- {info['steps']} steps of {BATCH} random windows of {SEQ} tokens ({info['steps'] * BATCH * SEQ:,}
  tokens seen, about {info['epochs']:.0f} passes over the corpus).
- AdamW (betas 0.9/0.95, weight decay {WEIGHT_DECAY} on matrices), peak lr {LR}, {WARMUP}
  warm-up steps, cosine decay to {LR_MIN_FRAC:g} x peak, gradient clipping 1.0.
- Seed {SEED}, `torch.use_deterministic_algorithms(True)`, `torch.set_num_threads(2)`, CPU.
- Final training loss: {info['final_loss']:.4f} (mean of the last 5 logged losses:
  {info['tail_loss']:.4f}); wall time {info['wall']:.0f} s on 2 shared CPU cores.
- Versions: torch {info['torch']}, transformers {info['transformers']}, tokenizers
  {info['tokenizers']}.

Reproduce (from the repository root; writes this folder and `tests/fixtures/default_model/`):

    nice python3 tools/make_default_model.py

## Samples (greedy, 32 new tokens)

""".splitlines()
    for cs in info["samples"]:
        lines.append(f"- `{cs['prompt']}` → {json.dumps(cs['text'], ensure_ascii=False)}")
    lines += """
## License

The training text is public domain (see `data/corpus/README.md`). The weights and tokenizer
were produced by this repository's script and are distributed under the repository's license.
""".splitlines()
    with open(os.path.join(out, "README.md"), "w", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=STEPS)
    ap.add_argument("--bench", type=int, default=0, help="time N steps and exit")
    ap.add_argument("--lr", type=float, default=None, help="peak lr (only with --bench)")
    ap.add_argument("--fixtures-only", action="store_true")
    ap.add_argument("--out", default=OUT)
    ap.add_argument("--fix", default=FIX)
    args = ap.parse_args()

    if args.fixtures_only:
        make_fixtures(args.out, args.fix)
        return

    seed_all()
    import torch
    import tokenizers
    import transformers
    files = corpus_files()
    tok = train_tokenizer(files)
    stream = token_stream(tok, files)
    print(f"{len(files)} files, {sum(len(read(p).encode()) for p in files)} bytes, "
          f"{len(stream)} tokens", flush=True)

    model = make_model()
    n_params = sum(p.numel() for p in model.parameters())
    print(f"{n_params} parameters", flush=True)

    if args.bench:
        global LR
        LR = args.lr or LR
        _, wall = train(model, stream, args.bench, total=args.steps)
        print(f"{wall / args.bench:.3f} s/step")
        return

    os.makedirs(args.out, exist_ok=True)
    save_tokenizer(tok, args.out)

    def log(curve):
        with open(os.path.join(args.out, "train_log.json"), "w") as f:
            json.dump({"batch": BATCH, "seq": SEQ, "steps": args.steps, "curve": curve}, f)

    curve, wall = train(model, stream, args.steps, log)
    log(curve)
    # save in a stable form
    with open(os.path.join(args.out, "train_log.json"), "w") as f:
        json.dump({"batch": BATCH, "seq": SEQ, "steps": args.steps, "wall_s": round(wall, 1),
                   "curve": curve}, f, indent=1)
        f.write("\n")

    model.eval()
    model.generation_config.do_sample = False
    model.generation_config.bos_token_id = 0
    model.generation_config.eos_token_id = 0
    model.generation_config.pad_token_id = 0
    model.generation_config.max_new_tokens = 64
    model.save_pretrained(args.out, safe_serialization=True)

    cases = make_fixtures(args.out, args.fix)
    emb = model.model.embed_tokens.weight.numel()
    tail = [c["loss"] for c in curve[-5:]]
    info = dict(
        params=n_params, params_nonemb=n_params - emb,
        size=os.path.getsize(os.path.join(args.out, "model.safetensors")),
        n_files=len(files), n_bytes=sum(len(read(p).encode()) for p in files),
        n_tokens=len(stream), steps=args.steps,
        epochs=args.steps * BATCH * SEQ / len(stream),
        final_loss=curve[-1]["loss"], tail_loss=sum(tail) / len(tail), wall=wall,
        torch=torch.__version__, transformers=transformers.__version__,
        tokenizers=tokenizers.__version__, samples=cases,
    )
    write_card(args.out, info)
    print(json.dumps({k: v for k, v in info.items() if k != "samples"}, indent=1))


if __name__ == "__main__":
    main()
