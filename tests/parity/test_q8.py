"""LLM.int8 (load_in_8bit) between loupe and transformers + bitsandbytes + peft.

    pytest tests/parity/test_q8.py     (after building; LOUPE_BUILD=build-dir, default build)

The op, gradient and model checks run in ctest on committed fixtures (test_q8:
tests/fixtures/q8, tools/make_q8_fixtures.py). These need torch, peft and bitsandbytes and are
skipped only when they cannot be imported (CI has no torch):
- test_peft_loads_loupe_adapter_on_int8: loupe trains LoRA for one AdamW step over the llama
  fixture loaded with quantize="int8" and saves it; PeftModel.from_pretrained on transformers'
  load_in_8bit model of the same checkpoint (eval: MatMul8bitLt) gives loupe's logits.
- test_peft_loads_adapter_trained_on_int8_checkpoint: the same over the checkpoint transformers
  saved from its 8-bit model (llama-int8-bnb, llm_int8_threshold 1.5), which loupe loads as
  stored and transformers reads with its saved quantization config.
- test_q8_fixtures_are_current: tools/make_q8_fixtures.py regenerates the committed ones, and
  the saved checkpoints.
"""
import json
import os

import pytest

from built import IDS, MASK, one_step
from fresh import assert_fixtures_current, assert_logits_match, assert_tool_current, need_torch

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
FIXTURES = os.path.join(ROOT, "tests", "fixtures", "q8")
MODELS = os.path.join(ROOT, "tests", "fixtures", "models")
QKVO = 'target=["q_proj", "k_proj", "v_proj", "o_proj"] init="gaussian" seed=2'


def _deps():
    torch = need_torch("test_q8")
    pytest.importorskip("bitsandbytes")
    return torch


def test_peft_loads_loupe_adapter_on_int8(tmp_path):
    torch = _deps()
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig
    llama = os.path.join(ROOT, "tests", "fixtures", "models", "llama")
    out = tmp_path / "int8_lora"
    logits = one_step(llama, "lora m r=4 " + QKVO, out, tmp_path, load='quantize="int8"')
    base = AutoModelForCausalLM.from_pretrained(
        llama, dtype=torch.float32, device_map="cpu", attn_implementation="eager",
        quantization_config=BitsAndBytesConfig(load_in_8bit=True))
    m = PeftModel.from_pretrained(base, str(out))
    m.eval()
    assert_logits_match(logits, m, IDS, MASK)


def test_peft_loads_adapter_trained_on_int8_checkpoint(tmp_path):
    torch = _deps()
    from peft import PeftModel
    from transformers import AutoModelForCausalLM
    model = os.path.join(MODELS, "llama-int8-bnb")
    out = tmp_path / "bnb_lora"
    logits = one_step(model, "lora m r=4 " + QKVO, out, tmp_path)
    base = AutoModelForCausalLM.from_pretrained(model, dtype=torch.float32, device_map="cpu",
                                                attn_implementation="eager")
    m = PeftModel.from_pretrained(base, str(out))
    m.eval()
    assert_logits_match(logits, m, IDS, MASK)


def test_q8_fixtures_are_current(tmp_path):
    _deps()
    assert_tool_current(ROOT, "make_q8_fixtures.py", FIXTURES, tmp_path, "--models", str(tmp_path))
    for name in ("llama-int8-bnb", "gpt2-int8-bnb"):
        assert_fixtures_current(os.path.join(MODELS, name), tmp_path / name, ["model.safetensors"])
        with open(os.path.join(MODELS, name, "config.json")) as a, \
                open(tmp_path / name / "config.json") as b:
            assert json.load(a) == json.load(b), name
