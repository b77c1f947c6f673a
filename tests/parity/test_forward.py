"""Model forward and generation parity with transformers.

    pytest tests/parity/test_forward.py     (after building; LOUPE_BUILD=build-dir, default build)

test_c_forward_matches_fixtures runs the C test (tests/unit/test_fw_parity.c): logits of every
tiny checkpoint within 1e-4 relative on non-padded positions, the loss, 32 greedy tokens.
test_fixtures_are_current regenerates tests/fixtures/forward/ with
tools/make_forward_fixtures.py into a temporary directory and checks it matches the committed
files (ids and generated tokens exactly, floats within 1e-5), so the files in git come from
the script in git; it needs torch and transformers and is skipped without them.
"""
import os
import subprocess
import sys

import pytest

from fresh import assert_fixtures_current

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
FIXTURES = os.path.join(ROOT, "tests", "fixtures", "forward")


def test_fixtures_are_current(tmp_path):
    pytest.importorskip("torch")
    pytest.importorskip("transformers")

    subprocess.run([sys.executable, os.path.join(ROOT, "tools", "make_forward_fixtures.py"),
                    "--out", str(tmp_path)], check=True, capture_output=True, timeout=600)
    # the bf16-weight fixtures beside them (test_fw_bf16.c) come from their own generator
    subprocess.run([sys.executable, os.path.join(ROOT, "tools", "make_bf16_fixtures.py"),
                    "--out", str(tmp_path)], check=True, capture_output=True, timeout=600)
    names = sorted(n for n in os.listdir(FIXTURES) if n.endswith(".safetensors"))
    assert names == sorted(n for n in os.listdir(tmp_path) if n.endswith(".safetensors"))
    assert_fixtures_current(FIXTURES, tmp_path, names)
    with open(os.path.join(FIXTURES, "gpt2-bytes", "tokenizer.json")) as f, \
            open(tmp_path / "gpt2-bytes" / "tokenizer.json") as g:
        assert f.read() == g.read()
