"""PiSSA and OLoRA (init_lora_weights="pissa" / "olora") between loupe and transformers + peft.

    pytest tests/parity/test_lora_init.py     (after building; LOUPE_BUILD=build-dir, default build)

The initial adapters, residual weights, gradients and peft's saved files are checked in ctest on
committed fixtures (test_lora_init: tests/fixtures/lora_init, tools/make_lora_init_fixtures.py).
These need torch and peft and are skipped only when they cannot be imported (CI has no torch):
- test_peft_loads_loupe_adapter[pissa|olora]: loupe makes the adapter on the llama fixture,
  trains it one AdamW step and saves it; PeftModel.from_pretrained on the original checkpoint
  (which makes the residual again, as the saved config says) gives loupe's logits.
- test_lora_init_fixtures_are_current: tools/make_lora_init_fixtures.py regenerates the
  committed ones.
"""
import os

import pytest

from built import IDS, MASK, one_step
from fresh import assert_fixtures_current, assert_logits_match, assert_tool_current, need_torch

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
FIXTURES = os.path.join(ROOT, "tests", "fixtures", "lora_init")
LLAMA = os.path.join(ROOT, "tests", "fixtures", "models", "llama")


@pytest.mark.parametrize("init", ["pissa", "olora"])
def test_peft_loads_loupe_adapter(tmp_path, init):
    torch = need_torch("test_lora_init")
    from peft import PeftModel
    from transformers import AutoModelForCausalLM
    out = tmp_path / init
    logits = one_step(LLAMA, f'lora m r=4 alpha=8 target=["q_proj", "v_proj", "down_proj"] '
                      f'init="{init}"', out, tmp_path)
    base = AutoModelForCausalLM.from_pretrained(LLAMA, dtype=torch.float32,
                                                attn_implementation="eager")
    m = PeftModel.from_pretrained(base, str(out))
    assert m.peft_config["default"].init_lora_weights == init
    m.eval()
    assert_logits_match(logits, m, IDS, MASK)


def test_lora_init_fixtures_are_current(tmp_path):
    need_torch("test_lora_init")
    assert_tool_current(ROOT, "make_lora_init_fixtures.py", FIXTURES, tmp_path)
    for d in ("peft_pissa_llama", "peft_olora_llama", "peft_pissa_dora"):
        assert_fixtures_current(os.path.join(FIXTURES, d), tmp_path / d,
                                ["adapter_model.safetensors"])
