"""LoRA adapters with rank_pattern / alpha_pattern between loupe and peft.

    pytest tests/parity/test_lora_pattern.py     (after building; LOUPE_BUILD=build-dir)

The gradient checks against peft run in ctest on committed fixtures (test_lora_pattern:
tests/fixtures/pattern, tools/make_pattern_fixtures.py). These need torch + transformers + peft
and are skipped only when torch cannot be imported (CI has no torch):
- test_peft_loads_loupe_patterns: loupe attaches LoRA with a rank_pattern and an alpha_pattern
  to GPT-2 (rsLoRA), trains one AdamW step (so B is not zero) and saves it; PeftModel loads it
  with those patterns, each module's A and B shaped by its rank, and gives loupe's logits.
- test_pattern_fixtures_are_current: tools/make_pattern_fixtures.py regenerates the committed ones.
"""
import json
import os

from built import IDS, MASK, one_step
from fresh import assert_fixtures_current, assert_logits_match, assert_tool_current, need_torch, peft_model

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
FIXTURES = os.path.join(ROOT, "tests", "fixtures", "pattern")


def test_peft_loads_loupe_patterns(tmp_path):
    need_torch("test_lora_pattern")
    gpt2 = os.path.join(ROOT, "tests", "fixtures", "models", "gpt2")
    out = tmp_path / "gpt2_pattern"
    logits = one_step(gpt2, r'lora m r=4 alpha=8 rslora=true target=["c_attn", "c_fc"] '
                      r'rank_pattern={"h\\.0\\.attn\\.c_attn": 8} alpha_pattern={"c_fc": 2.5} '
                      r'seed=3', out, tmp_path)
    with open(out / "adapter_config.json") as f:
        cfg = json.load(f)
    assert cfg["rank_pattern"] == {r"h\.0\.attn\.c_attn": 8} and cfg["alpha_pattern"] == {"c_fc": 2.5}
    m = peft_model(gpt2, str(out))
    a0 = m.get_parameter("base_model.model.transformer.h.0.attn.c_attn.lora_A.default.weight")
    a1 = m.get_parameter("base_model.model.transformer.h.1.attn.c_attn.lora_A.default.weight")
    assert a0.shape[0] == 8 and a1.shape[0] == 4
    assert_logits_match(logits, m, IDS, MASK)


def test_peft_loads_loupe_filters(tmp_path):
    """exclude_modules, layers_to_transform and layers_pattern saved by loupe: peft makes the
    same modules from the config (no missing or unexpected keys) and gives loupe's logits."""
    need_torch("test_lora_pattern")
    gpt2 = os.path.join(ROOT, "tests", "fixtures", "models", "gpt2")
    out = tmp_path / "gpt2_filter"
    logits = one_step(gpt2, 'lora m r=4 target=["c_attn", "c_proj"] layers=[1] '
                      'layers_pattern="h" exclude=["mlp.c_proj"] init="gaussian" seed=2',
                      out, tmp_path)
    with open(out / "adapter_config.json") as f:
        cfg = json.load(f)
    assert cfg["layers_to_transform"] == [1] and cfg["exclude_modules"] == ["mlp.c_proj"]
    m = peft_model(gpt2, str(out))
    adapted = sorted({n.split(".lora_")[0] for n, _ in m.named_parameters() if ".lora_A." in n})
    assert adapted == ["base_model.model.transformer.h.1.attn.c_attn",
                       "base_model.model.transformer.h.1.attn.c_proj"], adapted
    assert_logits_match(logits, m, IDS, MASK)


def test_peft_loads_loupe_bias(tmp_path):
    """bias="all" trained by loupe (one AdamW step moves every bias) and saved: PeftModel loads
    the biases from the adapter file and gives loupe's logits."""
    need_torch("test_lora_pattern")
    gpt2 = os.path.join(ROOT, "tests", "fixtures", "models", "gpt2")
    out = tmp_path / "gpt2_bias"
    logits = one_step(gpt2, 'lora m r=2 target=["c_attn"] bias="all" init="gaussian" seed=2',
                      out, tmp_path)
    with open(out / "adapter_config.json") as f:
        assert json.load(f)["bias"] == "all"
    assert_logits_match(logits, peft_model(gpt2, str(out)),
                        IDS, MASK)


def test_pattern_fixtures_are_current(tmp_path):
    need_torch("test_lora_pattern")
    assert_tool_current(ROOT, "make_pattern_fixtures.py", FIXTURES, tmp_path)
