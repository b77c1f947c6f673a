"""`save` writes what loupe computed into a file other tools read: the built-in model's logits
saved by loupe, read back with the safetensors library, equal transformers' logits
(tests/fixtures/default_model/logits.safetensors, from tools/make_default_model.py)."""
import os
import pathlib
import subprocess

import numpy as np
import pytest
from safetensors import safe_open
from safetensors.numpy import load_file

ROOT = pathlib.Path(__file__).resolve().parents[2]
LOUPE = pathlib.Path(os.environ.get("LOUPE_BUILD", ROOT / "build")) / "cli" / "loupe"


def run(script, tmp_path):
    f = tmp_path / "s.loupe"
    f.write_text(script, encoding="utf-8")
    p = subprocess.run([str(LOUPE), "run", str(f)], capture_output=True, text=True, cwd=ROOT, timeout=120)
    return p.returncode, p.stdout


def test_saved_logits_equal_transformers(tmp_path):
    ref = load_file(str(ROOT / "tests/fixtures/default_model/logits.safetensors"))
    rows = [[int(t) for t, m in zip(ids, mask) if m] for ids, mask in zip(ref["ids"], ref["mask"])]
    out = tmp_path / "out.safetensors"
    rc, text = run(f'm = load "models/default"\nout = forward m {rows}\n'
                   f'save {{"logits": out.logits, "q": m.layers[0].self_attn.q_proj.weight}} "{out}"\n',
                   tmp_path)
    assert rc == 0, text
    assert "saved 2 tensors" in text
    with safe_open(str(out), "np") as f:
        assert f.metadata() == {"format": "pt"}
        logits, q = f.get_tensor("logits"), f.get_tensor("q")
    mask = ref["mask"].astype(bool)
    assert logits.shape == ref["logits"].shape
    err = np.abs(logits - ref["logits"])[mask].max() / max(1.0, np.abs(ref["logits"][mask]).max())
    assert err < 1e-4
    w = load_file(str(ROOT / "models/default/model.safetensors"))["model.layers.0.self_attn.q_proj.weight"]
    np.testing.assert_array_equal(q, w.astype(np.float32))


def test_nested_lists_and_errors(tmp_path):
    out = tmp_path / "l.safetensors"
    rc, text = run(f'save [[1, 2.5], [3, 4]] "{out}"\n', tmp_path)
    assert rc == 0
    np.testing.assert_array_equal(load_file(str(out))["tensor"], np.array([[1, 2.5], [3, 4]], np.float32))
    rc, text = run(f'save [[1, 2], [3]] "{out}"\n', tmp_path)
    assert rc == 1 and "rows of different lengths" in text
    rc, text = run(f'save ["a"] "{out}"\n', tmp_path)
    assert rc == 1 and "a tensor holds numbers" in text
    rc, text = run('save [1] "/nonexistent-dir/x.safetensors"\n', tmp_path)
    assert rc == 1 and "IOError" in text


def test_stats_of_computed_attention_weights(tmp_path):
    """stats/show take what loupe computed (nested lists): stats of the attention weights equal
    numpy's over the same numbers, saved by `save` and read by the safetensors library."""
    out = tmp_path / "a.safetensors"
    rc, text = run(f'm = load "models/default"\na = attention m "Once upon a time there was" layer=1 head=2\n'
                   f'save a.probs "{out}"\nstats a.probs\nshow a.probs[2:4]\n', tmp_path)
    assert rc == 0, text
    p = load_file(str(out))["tensor"].astype(np.float64)
    stat = {line.split()[0]: float(line.split()[1]) for line in text.splitlines()
            if line.split() and line.split()[0] in ("count", "min", "max", "mean", "std")}
    assert stat["count"] == p.size
    assert abs(stat["mean"] - p.mean()) <= 1e-5 and abs(stat["std"] - p.std(ddof=1)) <= 1e-5
    assert stat["min"] == pytest.approx(p.min(), abs=1e-6) and stat["max"] == pytest.approx(p.max(), abs=1e-6)
    np.testing.assert_allclose(p.sum(axis=1), 1.0, rtol=1e-5)          # rows of a softmax
