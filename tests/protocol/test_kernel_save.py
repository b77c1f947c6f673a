"""Saving through the kernel, as a notebook does: after a few training steps run cell by cell,
`save_adapter` and `save MODEL` write directories that a fresh kernel loads back to the same
loss, in PEFT's and transformers' layout (every key the committed PEFT fixture's
adapter_config.json has, the safetensors header with {"format": "pt"}, PEFT's tensor names).
PeftModel / from_pretrained on such directories are tests/parity/test_train.py's and
test_create_save.py's; this file is about the kernel: cwd-relative paths, output, state kept
across cells, and a failed save reported as an error that loses nothing."""
import json
import struct

import pytest

from client import RawKernel
from conftest import KERNEL, ROOT

LLAMA = ROOT / "tests" / "fixtures" / "models" / "llama"
PEFT_FIXTURE = ROOT / "tests" / "fixtures" / "train" / "peft_llama"
BATCH = [[5, 17, 99, 3, 42, 7, 8], [11, 12, 13, 14, 15, 16, 17]]


@pytest.fixture
def kernel():
    k = RawKernel([str(KERNEL)])
    k.wait_ready()
    yield k
    k.close()


def run(k, code, ok=True):
    reply, msgs = k.execute(code, timeout=60)
    assert reply is not None, "no execute_reply"
    text = "".join(m["content"].get("text", "") for m in msgs if m["msg_type"] == "stream")
    text += "".join(m["content"]["data"]["text/plain"] + "\n" for m in msgs
                    if m["msg_type"] in ("execute_result", "display_data"))
    errors = [m["content"] for m in msgs if m["msg_type"] == "error"]
    if ok:
        assert reply["content"]["status"] == "ok", (code, errors)
    return reply["content"], text, errors


def loss_of(k, model):
    _, text, _ = run(k, f"(forward {model} {BATCH}).loss")
    return float(text.strip().splitlines()[-1])


def st_header(path):
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        return json.loads(f.read(n))


def train_cells(k):
    """The tutorial's loop, one request per cell."""
    run(k, f'm = load "{LLAMA}"')
    run(k, 'lora m r=4 alpha=8 target=["q_proj", "v_proj"] seed=3')
    run(k, "train_mode m\nopt = adamw m lr=1e-2")
    for _ in range(3):
        run(k, f"out = forward m {BATCH}")
        run(k, "backward out")
        run(k, "step opt")
        run(k, "zero_grad opt")
    run(k, "eval_mode m")


def test_save_adapter_through_kernel(kernel, tmp_path):
    train_cells(kernel)
    before = loss_of(kernel, "m")
    _, text, _ = run(kernel, f'save_adapter m "{tmp_path}/adapter"')
    assert "adapter" in text
    cfg = json.loads((tmp_path / "adapter" / "adapter_config.json").read_text())
    fixture = json.loads((PEFT_FIXTURE / "adapter_config.json").read_text())
    assert set(cfg) == set(fixture)
    assert cfg["r"] == 4 and cfg["lora_alpha"] == 8
    assert sorted(cfg["target_modules"]) == ["q_proj", "v_proj"]
    hdr = st_header(tmp_path / "adapter" / "adapter_model.safetensors")
    assert hdr.pop("__metadata__") == {"format": "pt"}
    names = set(hdr)
    assert "base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight" in names
    assert all(".lora_A.weight" in n or ".lora_B.weight" in n for n in names)
    assert all(t["dtype"] == "F32" for t in hdr.values())
    # saving changed nothing in the kernel: the same loss as before the save
    assert loss_of(kernel, "m") == before

    fresh = RawKernel([str(KERNEL)])
    try:
        fresh.wait_ready()
        run(fresh, f'm = load "{LLAMA}"\nload_adapter m "{tmp_path}/adapter"')
        assert loss_of(fresh, "m") == before
    finally:
        fresh.close()


def test_save_model_through_kernel(kernel, tmp_path):
    train_cells(kernel)
    _, _, errors = run(kernel, f'save m "{tmp_path}/ckpt"', ok=False)
    assert errors and "merge" in errors[0]["evalue"], errors   # unmerged LoRA: refused
    assert not (tmp_path / "ckpt").exists()
    run(kernel, 'adapter m "default" action="merge"')
    merged = loss_of(kernel, "m")
    run(kernel, f'save m "{tmp_path}/ckpt"')
    hdr = st_header(tmp_path / "ckpt" / "model.safetensors")
    assert "model.layers.0.self_attn.q_proj.weight" in hdr
    assert not any("lora" in n for n in hdr)
    assert json.loads((tmp_path / "ckpt" / "config.json").read_text())["model_type"] == "llama"

    fresh = RawKernel([str(KERNEL)])
    try:
        fresh.wait_ready()
        run(fresh, f'c = load "{tmp_path}/ckpt"')
        assert abs(loss_of(fresh, "c") - merged) <= 1e-6 * max(1.0, abs(merged))
    finally:
        fresh.close()


def test_failed_save_loses_nothing(kernel, tmp_path):
    train_cells(kernel)
    run(kernel, f'save_adapter m "{tmp_path}/adapter"')
    first = (tmp_path / "adapter" / "adapter_model.safetensors").read_bytes()
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    _, _, errors = run(kernel, f'save_adapter m "{blocker}/adapter"', ok=False)
    assert errors, "saving under a regular file must fail"
    assert (tmp_path / "adapter" / "adapter_model.safetensors").read_bytes() == first
    # the kernel and the model are fine: the next cell trains on
    run(kernel, f"out = forward m {BATCH}\nbackward out\nstep opt")
