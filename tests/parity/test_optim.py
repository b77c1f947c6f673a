"""Training-loop parity with torch / transformers / peft.

    pytest tests/parity/test_optim.py      (after building; LOUPE_BUILD=build-dir, default build)

test_c_loop_matches_torch runs tests/unit/test_train_loop.c (20 AdamW steps with a linear
schedule and clipping, LoRA and a partial fine-tune: every step's loss within 1e-4 of torch's)
and test_train_optim.c (transformers' schedules). test_fixtures_are_current regenerates
tests/fixtures/train/{schedules,loss_curve_*}.json and lora_init/ with
tools/make_optim_fixtures.py into a temporary directory and checks the committed files still
come from the script; it needs torch, transformers and peft and is skipped without them.
"""
import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
FIXTURES = os.path.join(ROOT, "tests", "fixtures", "train")


def _close(a, b, rel):
    if isinstance(a, list):
        return len(a) == len(b) and all(_close(x, y, rel) for x, y in zip(a, b))
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_close(a[k], b[k], rel) for k in a)
    if isinstance(a, float) or isinstance(b, float):
        return abs(a - b) <= rel * max(1.0, abs(a), abs(b))
    return a == b


def test_fixtures_are_current(tmp_path):
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    pytest.importorskip("peft")
    r = subprocess.run([sys.executable, os.path.join(ROOT, "tools", "make_optim_fixtures.py"),
                        "--out", str(tmp_path)], cwd=ROOT, capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0, r.stderr
    for name in ("schedules.json", "loss_curve_lora.json", "loss_curve_partial.json",
                 os.path.join("lora_init", "adapter_config.json")):
        with open(os.path.join(FIXTURES, name)) as f:
            committed = json.load(f)
        with open(tmp_path / name) as f:
            fresh = json.load(f)
        # peft records its own version: the numbers are what must agree
        committed.pop("peft_version", None), fresh.pop("peft_version", None)
        assert _close(committed, fresh, 1e-6), name
