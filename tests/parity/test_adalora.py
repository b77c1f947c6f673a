"""AdaLoRA adapters between loupe and peft.

    pytest tests/parity/test_adalora.py     (after building; LOUPE_BUILD=build-dir, default build)

The gradient, allocator-curve and adapter-file checks against peft run in ctest on committed
fixtures (test_adalora: tests/fixtures/adalora, tools/make_adalora_fixtures.py). These need
torch + transformers + peft and are skipped only when torch cannot be imported (CI has no
torch):
- test_peft_loads_loupe_adalora: loupe trains AdaLoRA on the built-in model for five AdamW
  steps through a whole schedule (ranks dropped, then fixed) and saves it; peft loads it (the
  rank_pattern resizes its modules) with the config keys peft writes, no missing or unexpected
  tensors, and gives loupe's logits.
- test_adalora_fixtures_are_current: tools/make_adalora_fixtures.py regenerates the committed
  ones.
"""
import json
import os

from built import five_steps, run_loupe
from fresh import assert_generator_current, need_torch

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
FIXTURES = os.path.join(ROOT, "tests", "fixtures", "adalora")
IDS = [[5, 17, 99, 3, 42, 7, 8], [11, 12, 13, 14, 0, 0, 0]]
MASK = [[1] * 7, [1, 1, 1, 1, 0, 0, 0]]


def _torch():
    return need_torch("test_adalora")


def test_peft_loads_loupe_adalora(tmp_path):
    torch = _torch()
    import transformers
    from peft import PeftModel
    from safetensors.torch import load_file
    model = os.path.join(ROOT, "models", "default")
    out = tmp_path / "ada"
    batch = [[5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16], [20, 21, 22, 23, 24, 25, 26, 27, 28, 29, 30, 31]]
    text = run_loupe(five_steps(
        f'm = load "{model}"\nadalora m init_r=6 target_r=2 total_step=4 tinit=1 tfinal=1', batch,
        out, lr="5e-2",
        last=f'out = forward m {{"input_ids": {IDS}, "attention_mask": {MASK}}}\nprint out.logits'),
        tmp_path)
    loupe = torch.tensor(json.loads(text.strip().splitlines()[-1]))
    with open(out / "adapter_config.json") as f, \
            open(os.path.join(FIXTURES, "peft_llama_trained", "adapter_config.json")) as g:
        mine, theirs = json.load(f), json.load(g)
    assert set(mine) == set(theirs)   # every key peft writes
    pattern = mine["rank_pattern"]
    assert pattern and all(len(v) == 6 for v in pattern.values())
    assert sum(sum(v) for v in pattern.values()) == 2 * len(pattern)   # the target budget
    saved = load_file(str(out / "adapter_model.safetensors"))
    for k, v in pattern.items():   # the kept ranks only
        assert saved["base_model.model." + k].shape[0] == sum(v)
    base = transformers.AutoModelForCausalLM.from_pretrained(model, attn_implementation="eager",
                                                             dtype=torch.float32)
    m = PeftModel.from_pretrained(base, str(out))
    m.eval()
    loaded = {k.replace(".default", ""): v for k, v in m.state_dict().items()
              if "lora_" in k}
    assert set(saved) == set(loaded)
    with torch.no_grad():
        ref = m(input_ids=torch.tensor(IDS), attention_mask=torch.tensor(MASK)).logits
    mask = torch.tensor(MASK).bool()
    assert torch.allclose(loupe[mask], ref[mask], rtol=1e-4, atol=1e-4), \
        (loupe[mask] - ref[mask]).abs().max()
    with m.disable_adapter(), torch.no_grad():   # it trained: the adapter changes the logits
        plain = m(input_ids=torch.tensor(IDS), attention_mask=torch.tensor(MASK)).logits
    assert (plain[mask] - ref[mask]).abs().max() > 1e-3


def test_adalora_fixtures_are_current(tmp_path):
    _torch()
    assert_generator_current(ROOT, "make_adalora_fixtures.py", FIXTURES, tmp_path,
                             "curve_adalora.json", keys=("batches", "masked"))
