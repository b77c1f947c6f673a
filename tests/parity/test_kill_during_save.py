"""Killing loupe in the middle of a save never damages what was there (issue 6).

A first save writes version 1 into a directory. Then, many times over, a `loupe run` process
saves other versions into the same directory in a loop (big enough that a save takes a good
part of a second) and is killed with SIGKILL at a random moment — most kills land inside a
save. After every kill the directory must hold one complete, consistent version: the config
parses, the safetensors file is whole and every tensor reads, and the config agrees with the
tensors (an adapter's r with lora_A's rows; a checkpoint's dtype and hidden_size with its
weights). Temporary directories never pile up: at most the killed process's one remains, and the
next save removes it. No torch needed."""
import json
import os
import pathlib
import random
import signal
import struct
import subprocess
import time

import numpy as np
import pytest

from built import built

ROOT = pathlib.Path(__file__).resolve().parents[2]
KILLS = int(os.environ.get("LOUPE_KILLS", "20"))

try:
    from safetensors.numpy import load_file
except ImportError:   # read it by hand
    load_file = None


def read_safetensors(path):
    """All tensors, checked: the header, every data range inside the file, the file ends where
    the last tensor ends."""
    data = open(path, "rb").read()
    n = struct.unpack("<Q", data[:8])[0]
    h = json.loads(data[8:8 + n])
    h.pop("__metadata__", None)
    end = max(v["data_offsets"][1] for v in h.values())
    assert 8 + n + end == len(data), "truncated or padded safetensors file"
    if load_file:
        return {k: v.shape for k, v in load_file(str(path)).items()}, {k: v["dtype"] for k, v in h.items()}
    shapes = {}
    for k, v in h.items():
        b, e = v["data_offsets"]
        width = {"F32": 4, "BF16": 2, "F16": 2}[v["dtype"]]
        assert e - b == int(np.prod(v["shape"])) * width
        shapes[k] = tuple(v["shape"])
    return shapes, {k: v["dtype"] for k, v in h.items()}


def check_adapter(d, allowed_r):
    cfg = json.loads((d / "adapter_config.json").read_text())
    shapes, _ = read_safetensors(d / "adapter_model.safetensors")
    assert cfg["r"] in allowed_r
    a = [s for k, s in shapes.items() if k.endswith("lora_A.weight")]
    assert a and all(s[0] == cfg["r"] for s in a), f"config r={cfg['r']} but lora_A {a[0]}"
    return cfg["r"]


def check_model(d, allowed):
    cfg = json.loads((d / "config.json").read_text())
    shapes, dtypes = read_safetensors(d / "model.safetensors")
    want = {"float32": "F32", "float16": "F16"}[cfg["dtype"]]
    assert set(dtypes.values()) == {want}, "config dtype does not match the weights"
    assert shapes["model.embed_tokens.weight"][1] == cfg["hidden_size"]
    assert (cfg["hidden_size"], cfg["dtype"]) in allowed
    return cfg["hidden_size"], cfg["dtype"]


def temps(parent):
    return [p for p in os.listdir(parent) if ".loupe-tmp-" in p]


def run_ok(script, tmp_path):
    f = tmp_path / "first.loupe"
    f.write_text(script)
    p = subprocess.run([built("cli/loupe"), "run", str(f)], capture_output=True, text=True, cwd=ROOT,
                       timeout=300)
    assert p.returncode == 0, p.stdout + p.stderr


def kill_loop(tmp_path, script, check, target):
    f = tmp_path / "loop.loupe"
    f.write_text(script)
    rng = random.Random(6)
    mid_save, seen = 0, set()
    env = dict(os.environ, OMP_NUM_THREADS="1")
    kills = 0
    # KILLS kills, and more (up to 3 × KILLS) until a quarter of them landed inside a save: how
    # much of a loop iteration a save's temporary directory lives varies with the machine's speed
    while kills < KILLS or (mid_save < KILLS // 4 and kills < 3 * KILLS):
        kills += 1
        p = subprocess.Popen([built("cli/loupe"), "run", str(f)], cwd=ROOT, env=env,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        # wait for a save to begin (its temporary directory appears), then kill at random
        t0 = time.time()
        while not temps(tmp_path) and time.time() - t0 < 60 and p.poll() is None:
            time.sleep(0.005)
        assert p.poll() is None, "the saving process ended early"
        time.sleep(rng.uniform(0, 1.2))
        os.kill(p.pid, signal.SIGKILL)
        p.wait()
        left = temps(tmp_path)
        mid_save += bool(left)
        assert len(left) <= 1, f"temporary directories pile up: {left}"
        assert not [n for n in os.listdir(target) if ".tmp." in n]
        seen.add(check(target))
    print(f"{mid_save} of {kills} kills inside a save; versions seen: {sorted(seen)}")
    return mid_save, seen


def test_kill_during_adapter_save(tmp_path):
    d = tmp_path / "adapter"
    base = 'm = create "llama" hidden=256 layers=4 heads=4 vocab=512 seed=1\n'
    run_ok(base + f'lora m r=4\nsave_adapter m "{d}"\n', tmp_path)
    assert check_adapter(d, {4}) == 4
    # two big adapters with other ranks, saved in turn (a save of one takes ~0.1-0.5 s)
    loop = base + ('lora m r=192 target="all-linear" name="a" seed=2\n'
                   'lora m r=160 target="all-linear" name="b" seed=3\n'
                   f'repeat 100000 {{\n    save_adapter m "{d}" name="a"\n'
                   f'    save_adapter m "{d}" name="b"\n}}\n')
    mid, seen = kill_loop(tmp_path, loop, lambda t: check_adapter(t, {4, 192, 160}), d)
    assert mid >= KILLS // 4, f"only {mid} of {KILLS} kills landed inside a save"
    assert seen - {4}, "no newer adapter was ever completed"
    run_ok(base + f'lora m r=8\nsave_adapter m "{d}"\n', tmp_path)   # cleans the last temp
    assert check_adapter(d, {8}) == 8 and not temps(tmp_path)


def test_kill_during_model_save(tmp_path):
    d = tmp_path / "ckpt"
    run_ok(f'm = create "llama" hidden=64 layers=1 heads=4 vocab=128\nsave m "{d}"\n', tmp_path)
    assert check_model(d, {(64, "float32")}) == (64, "float32")
    loop = ('m = create "llama" hidden=384 layers=6 heads=6 vocab=2048 seed=2\n'
            f'repeat 100000 {{\n    save m "{d}"\n    save m "{d}" dtype="f16"\n}}\n')
    allowed = {(64, "float32"), (384, "float32"), (384, "float16")}
    mid, seen = kill_loop(tmp_path, loop, lambda t: check_model(t, allowed), d)
    assert mid >= KILLS // 4, f"only {mid} of {KILLS} kills landed inside a save"
    assert seen - {(64, "float32")}, "no newer checkpoint was ever completed"
    run_ok(f'm = create "llama" hidden=32 layers=1 heads=4 vocab=64\nsave m "{d}"\n', tmp_path)
    assert check_model(d, {(32, "float32")}) and not temps(tmp_path)
