"""IA3 adapters between loupe and peft.

    pytest tests/parity/test_ia3.py     (after building; LOUPE_BUILD=build-dir, default build)

The gradient, merge and loss-curve checks against peft run in ctest on committed fixtures
(test_train_parity, test_train_loop: tests/fixtures/ia3, tools/make_ia3_fixtures.py). These
need torch + transformers + peft and are skipped only when torch cannot be imported (CI has no
torch):
- test_peft_loads_loupe_ia3: loupe trains IA3 (default targets) for five AdamW steps on the
  built-in model and saves it; PeftModel.from_pretrained loads it with no missing or unexpected
  keys, the same config keys peft writes, and gives the loss loupe's last forward printed.
- test_peft_loads_gpt2_ia3: IA3 with random vectors (init=false) on GPT-2's Conv1D modules,
  saved by loupe: PeftModel's logits equal loupe's.
- test_ia3_fixtures_are_current: tools/make_ia3_fixtures.py regenerates the committed ones.
"""
import json
import os

from built import five_steps, run_loupe
from fresh import assert_generator_current, assert_logits_match, need_torch, peft_model

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
FIXTURES = os.path.join(ROOT, "tests", "fixtures", "ia3")
IDS = [[5, 17, 99, 3, 42, 7, 8], [11, 12, 13, 14, 0, 0, 0]]
MASK = [[1] * 7, [1, 1, 1, 1, 0, 0, 0]]


def _torch():
    return need_torch("test_train_parity and test_train_loop")


_loupe = run_loupe


def test_peft_loads_loupe_ia3(tmp_path):
    torch = _torch()
    from safetensors.torch import load_file
    out = tmp_path / "ia3"
    batch = [[5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16], [20, 21, 22, 23, 24, 25, 26, 27, 28, 29, 30, 31]]
    text = _loupe(five_steps(f'm = load "{ROOT}/models/default"\nia3 m', batch, out, lr="5e-2"),
                  tmp_path)
    loupe_loss = float(text.strip().splitlines()[-1])
    with open(out / "adapter_config.json") as f, \
            open(os.path.join(FIXTURES, "peft_llama", "adapter_config.json")) as g:
        mine, theirs = json.load(f), json.load(g)
    assert set(mine) == set(theirs)   # every key peft writes
    assert mine["peft_type"] == "IA3" and mine["feedforward_modules"] == ["down_proj"]
    m = peft_model(os.path.join(ROOT, "models", "default"), str(out))
    saved = load_file(str(out / "adapter_model.safetensors"))
    loaded = {k.replace(".default", ""): v for k, v in m.state_dict().items() if "ia3_l" in k}
    assert set(saved) == set(loaded)
    assert any((v - 1).abs().max() > 1e-3 for v in saved.values())   # it trained
    b = torch.tensor(batch)
    with torch.no_grad():
        ref = m(input_ids=b, labels=b).loss.item()
    assert abs(loupe_loss - ref) <= 1e-5 * max(1.0, abs(ref)), (loupe_loss, ref)


def test_peft_loads_gpt2_ia3(tmp_path):
    _torch()
    gpt2 = os.path.join(ROOT, "tests", "fixtures", "models", "gpt2")
    out = tmp_path / "gpt2_ia3"
    text = _loupe(f'''m = load "{gpt2}"
ia3 m init=false seed=4
save_adapter m "{out}"
out = forward m {{"input_ids": {IDS}, "attention_mask": {MASK}}}
print out.logits
''', tmp_path)
    assert_logits_match(json.loads(text.strip().splitlines()[-1]), peft_model(gpt2, str(out)),
                        IDS, MASK)


def test_ia3_fixtures_are_current(tmp_path):
    _torch()
    assert_generator_current(ROOT, "make_ia3_fixtures.py", FIXTURES, tmp_path,
                             "loss_curve_ia3.json")
