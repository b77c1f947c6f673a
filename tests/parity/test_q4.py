"""FP4, double quantization, 4-bit GPT-2 and pre-quantized checkpoints between loupe and
bitsandbytes + peft.

    pytest tests/parity/test_q4.py     (after building; LOUPE_BUILD=build-dir, default build)

The bit-level and gradient checks run in ctest on committed fixtures (test_q4:
tests/fixtures/q4, tools/make_q4_fixtures.py). These need torch, transformers, peft and
bitsandbytes, and are skipped only when one cannot be imported (CI has none):
- test_peft_loads_adapter_trained_on_bnb_checkpoint: loupe loads the checkpoint transformers
  saved from its 4-bit model (llama-nf4-bnb, NF4 + double quantization) as stored, trains LoRA
  five AdamW steps and saves it; PeftModel.from_pretrained on transformers' load of the same
  checkpoint gives the loss loupe's last forward printed.
- test_peft_loads_adapter_trained_on_4bit_gpt2: the same on GPT-2 quantized at load
  (quantize="fp4" double_quant=true: Conv1D weights stored transposed, as transformers does).
- test_q4_fixtures_are_current: tools/make_q4_fixtures.py regenerates the committed ones.
"""
import json
import os
import subprocess
import sys

import pytest

from built import five_steps, run_loupe
from fresh import assert_fixtures_current

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
MODELS = os.path.join(ROOT, "tests", "fixtures", "models")
FIXTURES = os.path.join(ROOT, "tests", "fixtures", "q4")
BATCH = [[5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16], [20, 21, 22, 23, 24, 25, 26, 27, 28, 29, 30, 31]]


def _need():
    for mod in ("torch", "transformers", "peft", "bitsandbytes"):
        pytest.importorskip(mod, reason=f"{mod} is not importable (CI has none); the "
                            "committed-fixture checks in test_q4 (ctest) still run")
    import torch
    return torch


def _peft_loss(torch, model_dir, adapter, quantization_config):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM
    kw = {"quantization_config": quantization_config} if quantization_config else {}
    base = AutoModelForCausalLM.from_pretrained(model_dir, device_map="cpu",
                                                attn_implementation="eager", **kw)
    m = PeftModel.from_pretrained(base, str(adapter))
    m.train()   # bitsandbytes' dequantize-then-matmul path (make_nf4_fixtures.py)
    b = torch.tensor(BATCH)
    with torch.no_grad():
        return m(input_ids=b, labels=b).loss.item()


def test_peft_loads_adapter_trained_on_bnb_checkpoint(tmp_path):
    torch = _need()
    model = os.path.join(MODELS, "llama-nf4-bnb")
    out = tmp_path / "a"
    text = run_loupe(five_steps(f'''m = load "{model}"
lora m r=4 alpha=8 target="all-linear" init="gaussian" seed=3''', BATCH, out), tmp_path)
    loupe_loss = float(text.strip().splitlines()[-1])
    ref = _peft_loss(torch, model, out, None)   # its config.json says how it is quantized
    assert abs(loupe_loss - ref) <= 1e-5 * max(1.0, abs(ref)), (loupe_loss, ref)


def test_peft_loads_adapter_trained_on_4bit_gpt2(tmp_path):
    torch = _need()
    from transformers import BitsAndBytesConfig
    model = os.path.join(MODELS, "gpt2-nf4")
    out = tmp_path / "g"
    text = run_loupe(five_steps(f'''m = load "{model}" quantize="fp4" double_quant=true
lora m r=4 alpha=8 target=["c_attn", "c_fc"] init="gaussian" seed=3''', BATCH, out), tmp_path)
    loupe_loss = float(text.strip().splitlines()[-1])
    q = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="fp4",
                           bnb_4bit_use_double_quant=True, bnb_4bit_compute_dtype=torch.float32)
    ref = _peft_loss(torch, model, out, q)
    assert abs(loupe_loss - ref) <= 1e-5 * max(1.0, abs(ref)), (loupe_loss, ref)


def test_q4_fixtures_are_current(tmp_path):
    _need()
    subprocess.run([sys.executable, os.path.join(ROOT, "tools", "make_q4_fixtures.py"),
                    "--out", str(tmp_path), "--models", str(tmp_path)], check=True,
                   capture_output=True, timeout=600, cwd=ROOT)
    assert_fixtures_current(FIXTURES, tmp_path,
                            ["ops.safetensors", "nf4dq_llama.safetensors", "fp4_llama.safetensors",
                             "fp4dq_llama.safetensors", "gpt2nf4dq.safetensors",
                             "nf4dq_bf16w.safetensors"])
    for name in ("llama-nf4-bnb", "llama-fp4-bnb", "gpt2-nf4-bnb"):
        assert_fixtures_current(os.path.join(MODELS, name), tmp_path / name, ["model.safetensors"])
        with open(os.path.join(MODELS, name, "config.json")) as a, \
                open(tmp_path / name / "config.json") as b:
            assert json.load(a) == json.load(b), name
