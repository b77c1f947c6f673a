"""QLoRA (NF4 weights) between loupe and bitsandbytes + peft.

    pytest tests/parity/test_nf4.py     (after building; LOUPE_BUILD=build-dir, default build)

The quantization, logits and LoRA-gradient checks run in ctest on committed fixtures
(test_nf4: tests/fixtures/nf4, tools/make_nf4_fixtures.py). These need torch, transformers,
peft and bitsandbytes, and are skipped only when one cannot be imported (CI has none):
- test_peft_qlora_loads_loupe_adapter: loupe trains LoRA for five AdamW steps on the 4-bit
  model and saves it; PeftModel.from_pretrained on transformers' 4-bit model
  (BitsAndBytesConfig nf4, compute float32, training mode: see make_nf4_fixtures.py) gives the
  loss loupe's last forward printed.
- test_nf4_fixtures_are_current: tools/make_nf4_fixtures.py regenerates the committed ones.
"""
import os
import subprocess
import sys

import pytest

from built import five_steps, run_loupe
from fresh import assert_fixtures_current

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
MODEL = os.path.join(ROOT, "tests", "fixtures", "models", "llama-nf4")
FIXTURES = os.path.join(ROOT, "tests", "fixtures", "nf4")


def _need():
    for mod in ("torch", "transformers", "peft", "bitsandbytes"):
        pytest.importorskip(mod, reason=f"{mod} is not importable (CI has none); the "
                            "committed-fixture checks in test_nf4 (ctest) still run")
    import torch
    return torch


def test_peft_qlora_loads_loupe_adapter(tmp_path):
    torch = _need()
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig
    out = tmp_path / "qlora"
    batch = [[5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16], [20, 21, 22, 23, 24, 25, 26, 27, 28, 29, 30, 31]]
    text = run_loupe(five_steps(f'''m = load "{MODEL}" quantize="nf4"
lora m r=4 alpha=8 target="all-linear" init="gaussian" seed=3''', batch, out), tmp_path)
    loupe_loss = float(text.strip().splitlines()[-1])
    q = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4",
                           bnb_4bit_compute_dtype=torch.float32)
    base = AutoModelForCausalLM.from_pretrained(MODEL, quantization_config=q, device_map="cpu",
                                                attn_implementation="eager")
    m = PeftModel.from_pretrained(base, str(out))
    m.train()   # bitsandbytes' dequantize-then-matmul path (make_nf4_fixtures.py)
    b = torch.tensor(batch)
    with torch.no_grad():
        ref = m(input_ids=b, labels=b).loss.item()
    assert abs(loupe_loss - ref) <= 1e-5 * max(1.0, abs(ref)), (loupe_loss, ref)


def test_nf4_fixtures_are_current(tmp_path):
    _need()
    subprocess.run([sys.executable, os.path.join(ROOT, "tools", "make_nf4_fixtures.py"),
                    "--out", str(tmp_path)], check=True, capture_output=True, timeout=600, cwd=ROOT)
    assert_fixtures_current(FIXTURES, tmp_path,
                            ["ops.safetensors", "qlora_llama.safetensors", "ia3_llama.safetensors"])
