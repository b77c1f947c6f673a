"""loupe's safetensors writer against the reference reader, and the broken fixtures against
the reference's refusals.

The C side: `test_st --write PATH` (tests/unit/test_st.c) writes a sample file with one tensor
of most dtypes. The test binary is $LOUPE_BUILD/tests/test_st (default ./build). Run: `pytest tests/parity/test_safetensors_writer.py`.
"""
import glob
import os
import subprocess

import numpy as np
import pytest

from built import built

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def raw_tensor(path, name):
    """(dtype, bytes) of one tensor, read by the format's definition (for dtypes numpy lacks)."""
    import json
    import struct
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
        b, e = header[name]["data_offsets"]
        f.seek(8 + n + b)
        return header[name]["dtype"], f.read(e - b)


def test_reference_reads_loupe_file(tmp_path):
    from safetensors import safe_open
    path = str(tmp_path / "sample.safetensors")
    subprocess.run([built("tests/test_st"), "--write", path], check=True, cwd=ROOT)
    with safe_open(path, "np") as f:   # the reference reader parses and checks the whole header
        assert f.metadata() == {"format": "pt"}
        t = {k: f.get_tensor(k) for k in f.keys() if k not in ("a.bf16", "fp8")}
    np.testing.assert_array_equal(t["model.layers.0.weight"],
                                  np.array([[1, -2, 3.5], [-4, 0.25, 6]], np.float32))
    np.testing.assert_array_equal(t["ids"], np.array([-5, 1 << 40], np.int64))
    np.testing.assert_array_equal(t["bytes"], np.array([0, 7, 255], np.uint8))
    np.testing.assert_array_equal(t["mask"], np.array([True, False]))
    np.testing.assert_array_equal(t["double"], np.array([1e-300, -2.5]))
    np.testing.assert_array_equal(t["z.f16"], np.array([0, 0.1, 0.2], np.float16))
    assert t["scalar"].shape == () and t["scalar"] == -123456
    assert t["empty"].shape == (0, 4)
    # bf16 is the top half of an f32; F8_E4M3: 1.0 = 0x38, -2.0 = 0xC0
    dtype, data = raw_tensor(path, "a.bf16")
    assert dtype == "BF16"
    halves = np.frombuffer(data, np.uint16).astype(np.uint32) << 16
    assert halves.view(np.float32).tolist() == [-1.5, -0.5, 0.5, 1.5]
    assert raw_tensor(path, "fp8") == ("F8_E4M3", bytes([0x38, 0xC0]))


def test_reference_writer_makes_the_same_bytes(tmp_path):
    torch = pytest.importorskip("torch", reason="torch reads bf16 and fp8 tensors for the byte comparison")
    from safetensors import safe_open
    from safetensors.torch import save_file
    path = str(tmp_path / "sample.safetensors")
    subprocess.run([built("tests/test_st"), "--write", path], check=True, cwd=ROOT)
    with safe_open(path, "pt") as f:
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    assert tensors["fp8"].to(torch.float32).tolist() == [1.0, -2.0]
    ref = str(tmp_path / "ref.safetensors")
    save_file(tensors, ref, metadata={"format": "pt"})
    assert open(ref, "rb").read() == open(path, "rb").read()


@pytest.mark.parametrize("path", sorted(glob.glob(os.path.join(ROOT, "tests", "fixtures", "broken",
                                                               "*.safetensors"))))
def test_reference_refuses_broken(path):
    from safetensors.numpy import load_file
    with pytest.raises(Exception):
        load_file(path)
