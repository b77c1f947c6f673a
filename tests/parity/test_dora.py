"""DoRA adapters (peft's use_dora) between loupe and peft.

    pytest tests/parity/test_dora.py     (after building; LOUPE_BUILD=build-dir, default build)

The gradient, merge and loss-curve checks against peft run in ctest on committed fixtures
(test_dora, test_train_loop: tests/fixtures/dora, tools/make_dora_fixtures.py). These need
torch + transformers + peft and are skipped only when torch cannot be imported (CI has no
torch):
- test_peft_loads_loupe_dora: loupe trains DoRA (r=4 on every linear layer) for five AdamW
  steps on the built-in model and saves it; PeftModel.from_pretrained loads it with the keys
  and config keys peft writes, use_dora set, the magnitudes trained, and gives the loss loupe's
  last forward printed.
- test_peft_loads_gpt2_dora: DoRA on GPT-2's Conv1D modules with random A (B trained one
  step so it is not zero), saved by loupe: PeftModel's logits equal loupe's.
- test_dora_fixtures_are_current: tools/make_dora_fixtures.py regenerates the committed ones.
"""
import json
import os

from built import five_steps, run_loupe
from fresh import assert_generator_current, assert_logits_match, need_torch, peft_model

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
FIXTURES = os.path.join(ROOT, "tests", "fixtures", "dora")
IDS = [[5, 17, 99, 3, 42, 7, 8], [11, 12, 13, 14, 0, 0, 0]]
MASK = [[1] * 7, [1, 1, 1, 1, 0, 0, 0]]


def _torch():
    return need_torch("test_dora and test_train_loop")


def test_peft_loads_loupe_dora(tmp_path):
    torch = _torch()
    from safetensors.torch import load_file
    out = tmp_path / "dora"
    batch = [[5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16], [20, 21, 22, 23, 24, 25, 26, 27, 28, 29, 30, 31]]
    text = run_loupe(five_steps(f'm = load "{ROOT}/models/default"\n'
                                'lora m r=4 alpha=8 target="all-linear" dora=true', batch, out),
                     tmp_path)
    loupe_loss = float(text.strip().splitlines()[-1])
    with open(out / "adapter_config.json") as f, \
            open(os.path.join(FIXTURES, "peft_llama", "adapter_config.json")) as g:
        mine, theirs = json.load(f), json.load(g)
    assert set(mine) == set(theirs)   # every key peft writes
    assert mine["use_dora"] is True
    m = peft_model(os.path.join(ROOT, "models", "default"), str(out))
    saved = load_file(str(out / "adapter_model.safetensors"))
    loaded = {k.replace(".default", "").replace("lora_magnitude_vector.weight",
                                                 "lora_magnitude_vector"): v
              for k, v in m.state_dict().items() if "lora_" in k}
    assert set(saved) == set(loaded)
    mags = [k for k in saved if k.endswith("lora_magnitude_vector")]
    assert mags and all(saved[k].dim() == 1 for k in mags)
    for k in mags:   # trained: no longer the base weight's row norms
        w = m.get_parameter(k.replace("lora_magnitude_vector", "base_layer.weight"))
        if (saved[k] - w.norm(dim=1)).abs().max() > 1e-4:
            break
    else:
        raise AssertionError("no magnitude moved in five steps")
    b = torch.tensor(batch)
    with torch.no_grad():
        ref = m(input_ids=b, labels=b).loss.item()
    assert abs(loupe_loss - ref) <= 1e-5 * max(1.0, abs(ref)), (loupe_loss, ref)


def test_peft_loads_gpt2_dora(tmp_path):
    _torch()
    gpt2 = os.path.join(ROOT, "tests", "fixtures", "models", "gpt2")
    out = tmp_path / "gpt2_dora"
    text = run_loupe(f'''m = load "{gpt2}"
lora m r=4 alpha=8 dora=true target=["c_attn", "c_proj", "c_fc"] seed=3
opt = adamw m lr=0.05
b = {{"input_ids": {IDS}, "attention_mask": {MASK}, "labels": {IDS}}}
out = forward m b
backward out
step opt
save_adapter m "{out}"
out = forward m {{"input_ids": {IDS}, "attention_mask": {MASK}}}
print out.logits
''', tmp_path)
    assert_logits_match(json.loads(text.strip().splitlines()[-1]), peft_model(gpt2, str(out)),
                        IDS, MASK)


def test_dora_fixtures_are_current(tmp_path):
    _torch()
    assert_generator_current(ROOT, "make_dora_fixtures.py", FIXTURES, tmp_path,
                             "loss_curve_dora.json")
