"""`show W[a:b, c:d]` prints exactly the values of that block of the weight, as the
safetensors library reads them from the same file."""
import os
import pathlib
import subprocess

import numpy as np
from safetensors.numpy import load_file

ROOT = pathlib.Path(__file__).resolve().parents[2]
LOUPE = pathlib.Path(os.environ.get("LOUPE_BUILD", ROOT / "build")) / "cli" / "loupe"


def show(script, tmp_path):
    f = tmp_path / "s.loupe"
    f.write_text(script)
    p = subprocess.run([str(LOUPE), "run", str(f)], capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert p.returncode == 0, p.stdout
    rows = [line.split() for line in p.stdout.splitlines()[3:] if line.strip()]
    return [int(r[0]) for r in rows], np.array([[float(x) for x in r[1:]] for r in rows])


def test_slice_values_match_the_file(tmp_path):
    w = load_file(str(ROOT / "tests/fixtures/models/llama/model.safetensors"))["model.layers.1.mlp.down_proj.weight"]
    idx, got = show('m = load "tests/fixtures/models/llama"\n'
                    'show m.model.layers[1].mlp.down_proj.weight[3:7, 10:15]\n', tmp_path)
    assert idx == [3, 4, 5, 6]
    np.testing.assert_allclose(got, w[3:7, 10:15], rtol=1e-4, atol=1e-9)   # printed with 5 digits


def test_negative_and_single_row(tmp_path):
    w = load_file(str(ROOT / "tests/fixtures/models/llama/model.safetensors"))["model.layers.0.self_attn.k_proj.weight"]
    idx, got = show('m = load "tests/fixtures/models/llama"\n'
                    'show m.model.layers[0].self_attn.k_proj.weight[-1, -4:]\n', tmp_path)
    assert idx == [w.shape[0] - 1]
    np.testing.assert_allclose(got, w[-1:, -4:], rtol=1e-4, atol=1e-9)


def test_out_of_range(tmp_path):
    f = tmp_path / "e.loupe"
    f.write_text('m = load "tests/fixtures/models/llama"\nm.model.norm.weight[99]\n')
    p = subprocess.run([str(LOUPE), "run", str(f)], capture_output=True, text=True, cwd=ROOT)
    assert p.returncode == 1 and "IndexError" in p.stdout and "row 99 out of range" in p.stdout
