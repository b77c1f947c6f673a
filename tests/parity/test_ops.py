"""Op-level parity with PyTorch / transformers / peft.

    pytest tests/parity/test_ops.py        (after building; LOUPE_BUILD=build-dir, default build)

test_c_ops_match_fixtures runs the C test (tests/unit/test_nn_parity.c), which checks every
op of every backend, forward and backward, against tests/fixtures/ops/ within 1e-5.
test_fixtures_are_current regenerates the fixtures with tools/make_op_fixtures.py into a
temporary directory and checks they still match the committed ones, so the files in git
are known to come from the script in git; it needs torch and is skipped without it.
"""
import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
FIXTURES = os.path.join(ROOT, "tests", "fixtures", "ops")


def test_fixture_index_is_complete():
    with open(os.path.join(FIXTURES, "index.json")) as f:
        index = json.load(f)
    ops = {c["op"] for c in index["cases"]}
    # every op family of nn/ops.h that has a library counterpart
    for op in ("embedding", "linear", "conv1d", "lora", "ia3", "rmsnorm", "layernorm", "rope",
               "attention", "act", "gated", "softmax", "causal_lm_loss", "cross_entropy",
               "softcap", "adamw", "sgd", "clip_grad_norm"):
        assert op in ops, op


def test_fixtures_are_current(tmp_path):
    torch = pytest.importorskip("torch")
    pytest.importorskip("transformers")
    pytest.importorskip("peft")
    from safetensors.torch import load_file

    subprocess.run([sys.executable, os.path.join(ROOT, "tools", "make_op_fixtures.py"),
                    "--out", str(tmp_path)], check=True, capture_output=True, timeout=300)
    old = load_file(os.path.join(FIXTURES, "ops.safetensors"))
    new = load_file(str(tmp_path / "ops.safetensors"))
    assert old.keys() == new.keys()
    for name in old:
        a, b = old[name], new[name]
        assert a.shape == b.shape and a.dtype == b.dtype, name
        if a.is_floating_point():
            # library versions may move the last bits; the ops are held to 1e-5
            scale = max(a.abs().max().item(), 1e-6)
            assert (a - b).abs().max().item() <= 1e-6 * scale, name
        else:
            assert torch.equal(a, b), name
