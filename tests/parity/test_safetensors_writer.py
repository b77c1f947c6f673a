"""loupe's safetensors writer against the reference reader, and the broken fixtures against
the reference's refusals.

The C side: `test_st --write PATH` (tests/unit/test_st.c) writes a sample file with one tensor
of most dtypes. The test binary is found under $LOUPE_BUILD (default: the first build*/ dir
that has tests/test_st). Run: `pytest tests/parity/test_safetensors_writer.py`.
"""
import glob
import os
import subprocess

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def find_test_st():
    build = os.environ.get("LOUPE_BUILD")
    cands = [os.path.join(build, "tests", "test_st")] if build else sorted(
        glob.glob(os.path.join(ROOT, "build*", "tests", "test_st")), key=os.path.getmtime,
        reverse=True)
    for c in cands:
        if os.access(c, os.X_OK):
            return c
    pytest.skip("test_st not built (set LOUPE_BUILD to the cmake build directory)")


def test_reference_reads_loupe_file(tmp_path):
    from safetensors import safe_open
    from safetensors.torch import load_file
    path = str(tmp_path / "sample.safetensors")
    subprocess.run([find_test_st(), "--write", path], check=True, cwd=ROOT)
    t = {k: (v.float() if k in ("a.bf16", "fp8") else v).numpy() for k, v in load_file(path).items()}
    np.testing.assert_array_equal(t["model.layers.0.weight"],
                                  np.array([[1, -2, 3.5], [-4, 0.25, 6]], np.float32))
    np.testing.assert_array_equal(t["ids"], np.array([-5, 1 << 40], np.int64))
    np.testing.assert_array_equal(t["bytes"], np.array([0, 7, 255], np.uint8))
    np.testing.assert_array_equal(t["mask"], np.array([True, False]))
    np.testing.assert_array_equal(t["double"], np.array([1e-300, -2.5]))
    np.testing.assert_array_equal(t["z.f16"], np.array([0, 0.1, 0.2], np.float16))
    assert t["scalar"].shape == () and t["scalar"] == -123456
    assert t["empty"].shape == (0, 4)
    with safe_open(path, "pt") as f:   # torch for bf16 and fp8, and the metadata
        assert f.metadata() == {"format": "pt"}
        import torch
        assert f.get_tensor("a.bf16").tolist() == [-1.5, -0.5, 0.5, 1.5]
        assert f.get_tensor("fp8").to(torch.float32).tolist() == [1.0, -2.0]
    # The reference writer makes the same bytes from the same tensors.
    from safetensors.torch import save_file
    import torch
    with safe_open(path, "pt") as f:
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    ref = str(tmp_path / "ref.safetensors")
    save_file(tensors, ref, metadata={"format": "pt"})
    assert open(ref, "rb").read() == open(path, "rb").read()


@pytest.mark.parametrize("path", sorted(glob.glob(os.path.join(ROOT, "tests", "fixtures", "broken",
                                                               "*.safetensors"))))
def test_reference_refuses_broken(path):
    from safetensors.numpy import load_file
    with pytest.raises(Exception):
        load_file(path)
