"""Model backward, LoRA and PEFT adapter files against peft.

    pytest tests/parity/test_train.py     (after building; LOUPE_BUILD=build-dir, default build)

test_c_train_parity runs tests/unit/test_train_parity.c: LoRA and partial fine-tuning gradients
on the tiny llama / gpt2 / gemma / gemma2 / qwen2 / BERT classifier against peft within 1e-4
(relative to each tensor's largest entry), and an adapter PeftModel.save_pretrained wrote,
loaded by loupe, giving PeftModel's logits (no torch needed: committed fixtures).

The tests below need torch + transformers + peft and are skipped only when torch cannot be
imported (CI has no torch):
- test_peft_loads_loupe_adapter: `loupe run` loads the PEFT-saved fixture adapter, saves it with
  `save_adapter`, and prints its logits; PeftModel.from_pretrained on loupe's directory gives the
  same logits (1e-4), with no missing or unexpected keys.
- test_peft_loads_all_linear: a fresh all-linear adapter (gaussian init) made by loupe loads in
  peft with the same module set and the same A.
- test_peft_loads_trained_adapter: five AdamW steps in loupe (all-linear LoRA on the built-in
  model), saved; PeftModel gives the loss loupe's last forward printed (1e-5).
- test_peft_loads_seq_cls_adapter: a peft SEQ_CLS BERT adapter (LoRA + classifier in
  modules_to_save) loaded and saved again by loupe; PeftModel gives loupe's class logits.
- test_fixtures_are_current: tools/make_train_fixtures.py regenerates the committed fixtures.
"""
import json
import os
import subprocess
import sys

import pytest

from built import built, five_steps, run_loupe
from fresh import assert_fixtures_current

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
FIXTURES = os.path.join(ROOT, "tests", "fixtures", "train")
LLAMA = os.path.join(ROOT, "tests", "fixtures", "models", "llama")


def _torch():
    try:
        import torch  # noqa: F401
    except ImportError:
        pytest.skip("torch is not importable (CI has no torch); the committed-fixture checks "
                    "in test_train_parity (ctest) still run")
    import torch
    return torch


_loupe = run_loupe


IDS = [[5, 17, 99, 3, 42, 7, 8], [11, 12, 13, 14, 0, 0, 0]]
MASK = [[1] * 7, [1, 1, 1, 1, 0, 0, 0]]


def _peft_logits(adapter_dir):
    torch = _torch()
    from peft import PeftModel
    from transformers import AutoModelForCausalLM
    base = AutoModelForCausalLM.from_pretrained(LLAMA, attn_implementation="eager",
                                                dtype=torch.float32)
    m = PeftModel.from_pretrained(base, adapter_dir)
    m.eval()
    with torch.no_grad():
        return m, m(input_ids=torch.tensor(IDS), attention_mask=torch.tensor(MASK)).logits


def test_peft_loads_loupe_adapter(tmp_path):
    torch = _torch()
    pytest.importorskip("peft")
    out = tmp_path / "adapter"
    text = _loupe(f'''model = load "{LLAMA}"
load_adapter model "{FIXTURES}/peft_llama"
save_adapter model "{out}"
out = forward model {{"input_ids": {IDS}, "attention_mask": {MASK}}}
print out.logits
''', tmp_path)
    loupe = torch.tensor(json.loads(text.strip().splitlines()[-1]))
    with open(out / "adapter_config.json") as f, open(FIXTURES + "/peft_llama/adapter_config.json") as g:
        assert set(json.load(f)) == set(json.load(g))   # every key peft writes
    _, ref = _peft_logits(str(out))
    m = torch.tensor(MASK).bool()
    assert torch.allclose(loupe[m], ref[m], rtol=1e-4, atol=1e-4), (loupe[m] - ref[m]).abs().max()


def test_peft_loads_all_linear(tmp_path):
    torch = _torch()
    pytest.importorskip("peft")
    from safetensors.torch import load_file
    out = tmp_path / "wide"
    _loupe(f'''model = load "{LLAMA}"
lora model r=2 alpha=4 target="all-linear" init="gaussian" seed=5
save_adapter model "{out}"
''', tmp_path)
    m, _ = _peft_logits(str(out))
    saved = load_file(str(out / "adapter_model.safetensors"))
    loaded = {k.replace(".default", ""): v for k, v in m.state_dict().items() if "lora_" in k}
    assert set(saved) == set(loaded)
    for k in saved:
        assert torch.equal(saved[k], loaded[k]), k


def test_peft_loads_trained_adapter(tmp_path):
    torch = _torch()
    pytest.importorskip("peft")
    from peft import PeftModel
    from transformers import AutoModelForCausalLM
    out = tmp_path / "trained"
    batch = [[5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16], [20, 21, 22, 23, 24, 25, 26, 27, 28, 29, 30, 31]]
    text = _loupe(five_steps(f'''m = load "{ROOT}/models/default"
lora m r=8 alpha=16 target="all-linear"''', batch, out), tmp_path)
    loupe_loss = float(text.strip().splitlines()[-1])
    base = AutoModelForCausalLM.from_pretrained(os.path.join(ROOT, "models", "default"),
                                                attn_implementation="eager", dtype=torch.float32)
    m = PeftModel.from_pretrained(base, str(out))
    m.eval()
    b = torch.tensor(batch)
    with torch.no_grad():
        ref = m(input_ids=b, labels=b).loss.item()
    assert abs(loupe_loss - ref) <= 1e-5 * max(1.0, abs(ref)), (loupe_loss, ref)


def test_peft_loads_seq_cls_adapter(tmp_path):
    torch = _torch()
    pytest.importorskip("peft")
    from peft import PeftModel
    from transformers import AutoModelForSequenceClassification
    out = tmp_path / "cls"
    text = _loupe(f'''m = load "{ROOT}/tests/fixtures/models/bert"
load_adapter m "{FIXTURES}/peft_bert_cls"
save_adapter m "{out}"
out = forward m {{"input_ids": {IDS}, "attention_mask": {MASK}}}
print out.logits
''', tmp_path)
    loupe = torch.tensor(json.loads(text.strip().splitlines()[-1]))
    base = AutoModelForSequenceClassification.from_pretrained(
        os.path.join(ROOT, "tests", "fixtures", "models", "bert"), attn_implementation="eager")
    m = PeftModel.from_pretrained(base, str(out))
    m.eval()
    with torch.no_grad():
        ref = m(input_ids=torch.tensor(IDS), attention_mask=torch.tensor(MASK)).logits
    assert torch.allclose(loupe, ref, rtol=1e-4, atol=1e-4), (loupe - ref).abs().max()


def test_fixtures_are_current(tmp_path):
    _torch()
    pytest.importorskip("peft")
    subprocess.run([sys.executable, os.path.join(ROOT, "tools", "make_train_fixtures.py"),
                    "--out", str(tmp_path)], check=True, capture_output=True, timeout=600, cwd=ROOT)
    names = sorted(n for n in os.listdir(tmp_path) if n.endswith(".safetensors"))
    assert_fixtures_current(FIXTURES, tmp_path, names)
