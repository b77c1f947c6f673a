"""`create` and `save MODEL DIR`: checkpoints transformers loads.

Torch-free (CI): the config.json and the tensor list loupe writes for a created model equal
what transformers' save_pretrained writes for the same config (tests/fixtures/create/cases.json,
from tools/make_create_fixtures.py); loupe reloads what it saved into the same module tree,
tensors and logits. With torch and transformers installed (skipped otherwise): transformers'
from_pretrained loads what loupe saved — created, partly fine-tuned, and LoRA-merged — and its
logits equal loupe's."""
import json
import os
import pathlib
import struct
import subprocess

import numpy as np
import pytest

from built import built

ROOT = pathlib.Path(__file__).resolve().parents[2]
CASES = json.loads((ROOT / "tests/fixtures/create/cases.json").read_text())["cases"]
IDS = [[1, 5, 9, 2, 7, 3], [4, 4, 8, 1, 0, 6]]


def run(script, tmp_path, ok=True):
    f = tmp_path / "s.loupe"
    f.write_text(script, encoding="utf-8")
    p = subprocess.run([built("cli/loupe"), "run", str(f)], capture_output=True, text=True, cwd=ROOT,
                       timeout=300, env=dict(os.environ, OMP_NUM_THREADS="1"))
    if ok:
        assert p.returncode == 0, p.stdout + p.stderr
    return p.returncode, p.stdout


def header(path):
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        return json.loads(f.read(n))


DT = {"F32": np.float32, "F16": np.float16}


def tensors(path):
    """Every tensor of a safetensors file as numpy (bf16 widened to f32), read by hand."""
    h = header(path)
    data = open(path, "rb").read()
    base = 8 + struct.unpack("<Q", data[:8])[0]
    out = {}
    for k, v in h.items():
        if k == "__metadata__":
            continue
        b, e = v["data_offsets"]
        raw = data[base + b:base + e]
        if v["dtype"] == "BF16":
            a = (np.frombuffer(raw, np.uint16).astype(np.uint32) << 16).view(np.float32)
        else:
            a = np.frombuffer(raw, DT[v["dtype"]])
        out[k] = a.reshape(v["shape"])
    return out


def logits_of(path):
    return tensors(path)["tensor"]


@pytest.mark.parametrize("name", sorted(CASES))
def test_created_checkpoint_is_what_transformers_writes(name, tmp_path):
    case = CASES[name]
    out = tmp_path / "ckpt"
    run(f'm = create {case["create"]} seed=3\nsave m "{out}"\n', tmp_path)
    cfg = json.loads((out / "config.json").read_text())
    assert cfg.pop("torch_dtype") == cfg["dtype"]   # transformers 4.x reads this spelling
    assert cfg == case["config"]
    h = header(out / "model.safetensors")
    assert h.pop("__metadata__") == case["metadata"]
    assert {k: {"dtype": v["dtype"], "shape": v["shape"]} for k, v in h.items()} == case["tensors"]
    assert sorted(os.listdir(out)) == ["config.json", "model.safetensors"]
    assert not [p for p in os.listdir(tmp_path) if "loupe-tmp" in p]


def test_init_distribution(tmp_path):
    """transformers' _init_weights: N(0, 0.02) weights, zero biases and padding row, unit norms,
    GPT-2's c_proj at 0.02/sqrt(2·layers); the same seed gives the same weights."""
    run('m = create "llama" hidden=128 layers=2 heads=4 intermediate=256 vocab=512 config={"pad_token_id": 0}\n'
        f'save m "{tmp_path}/a"\n'
        'm2 = create "llama" hidden=128 layers=2 heads=4 intermediate=256 vocab=512 config={"pad_token_id": 0}\n'
        f'save m2 "{tmp_path}/b"\n'
        f'g = create "gpt2" hidden=128 layers=8 heads=4 vocab=64\nsave g "{tmp_path}/g"\n', tmp_path)
    a, b = tensors(tmp_path / "a/model.safetensors"), tensors(tmp_path / "b/model.safetensors")
    for k in a:
        np.testing.assert_array_equal(a[k], b[k])
    q = a["model.layers.0.self_attn.q_proj.weight"]
    assert abs(q.std() - 0.02) < 0.001 and abs(q.mean()) < 0.001
    assert not np.array_equal(q, a["model.layers.1.self_attn.q_proj.weight"])
    emb = a["model.embed_tokens.weight"]
    assert not emb[0].any() and emb[1:].std() > 0.019
    assert (a["model.norm.weight"] == 1).all()
    g = tensors(tmp_path / "g/model.safetensors")
    assert abs(g["transformer.h.0.attn.c_proj.weight"].std() - 0.02 / 4) < 0.0005
    assert abs(g["transformer.h.0.attn.c_attn.weight"].std() - 0.02) < 0.001
    assert not g["transformer.h.0.attn.c_attn.bias"].any()


def test_loupe_round_trip(tmp_path):
    """loupe saves, loupe reloads: the same module tree, tensors and logits."""
    for arch in ("llama", "gpt2", "gemma2", "bert"):
        d = tmp_path / arch
        _, text = run(f'm = create "{arch}" hidden=32 layers=2 heads=2 vocab=64 seed=7\n'
                      f'save m "{d}/a"\nm2 = load "{d}/a"\n'
                      'print "-- tree"\nlayers m\nprint "-- tree"\nlayers m2\n'
                      f'save m2 "{d}/b"\neval_mode m\n'
                      f'o1 = forward m {IDS}\no2 = forward m2 {IDS}\n'
                      f'save o1.logits "{d}/l1.safetensors"\nsave o2.logits "{d}/l2.safetensors"\n',
                      tmp_path)
        t1, t2 = text.split("-- tree\n")[1], text.split("-- tree\n")[2]
        assert t1.splitlines()[:-1] == t2.splitlines()[:len(t1.splitlines()) - 1]
        assert open(d / "a/model.safetensors", "rb").read() == open(d / "b/model.safetensors", "rb").read()
        assert json.loads((d / "a/config.json").read_text()) == json.loads((d / "b/config.json").read_text())
        np.testing.assert_array_equal(logits_of(d / "l1.safetensors"), logits_of(d / "l2.safetensors"))


FINETUNE = '''m = load "tests/fixtures/models/llama"
unfreeze m "layers.1.*"
train_mode m
opt = adamw m lr=1e-2
repeat 3 {{
    out = forward m {ids}
    backward out
    step opt
    zero_grad opt
}}
eval_mode m
save m "{out}"
o = forward m {ids}
save o.logits "{out}.logits.safetensors"
'''


def test_finetune_round_trip(tmp_path):
    """Partial fine-tuning: the unfrozen layer's weights change, the rest are the original bytes;
    loupe's reload gives the same logits as the trained model."""
    out = tmp_path / "tuned"
    run(FINETUNE.format(out=out, ids=IDS) +
        f'r = load "{out}"\no2 = forward r {IDS}\nsave o2.logits "{out}.re.safetensors"\n', tmp_path)
    new, old = tensors(out / "model.safetensors"), tensors(ROOT / "tests/fixtures/models/llama/model.safetensors")
    assert new.keys() == old.keys()
    for k in new:
        same = np.array_equal(new[k], old[k])
        assert same == (".layers.1." not in k), k
    np.testing.assert_array_equal(logits_of(f"{out}.logits.safetensors"), logits_of(f"{out}.re.safetensors"))


def test_dtype_kept_or_converted(tmp_path):
    src = ROOT / "tests/fixtures/models/qwen2-bf16"
    run(f'm = load "{src}"\nunfreeze m "layers.0.mlp.*"\nsave m "{tmp_path}/a"\n'
        f'save m "{tmp_path}/b" dtype="f32"\n', tmp_path)
    ha, hb = header(tmp_path / "a/model.safetensors"), header(tmp_path / "b/model.safetensors")
    assert {v["dtype"] for k, v in ha.items() if k != "__metadata__"} == {"BF16"}
    assert {v["dtype"] for k, v in hb.items() if k != "__metadata__"} == {"F32"}
    assert json.loads((tmp_path / "a/config.json").read_text())["dtype"] == "bfloat16"
    assert json.loads((tmp_path / "b/config.json").read_text())["torch_dtype"] == "float32"
    a, b, o = (tensors(p) for p in (tmp_path / "a/model.safetensors", tmp_path / "b/model.safetensors",
                                    src / "model.safetensors"))
    for k in o:
        np.testing.assert_array_equal(a[k], o[k])
        np.testing.assert_array_equal(b[k], o[k])


def test_save_errors(tmp_path):
    rc, text = run('m = load "tests/fixtures/models/llama"\nlora m r=4\n'
                   f'save m "{tmp_path}/x"\n', tmp_path, ok=False)
    assert rc == 1 and "not merged" in text and "action=\"merge\"" in text and "save_adapter" in text
    assert not (tmp_path / "x").exists()
    rc, text = run(f'm = load "tests/fixtures/models/llama"\nsave m "{tmp_path}/y" dtype="int8"\n',
                   tmp_path, ok=False)
    assert rc == 1 and "dtype=" in text
    (tmp_path / "file").write_text("x")
    rc, text = run(f'm = load "tests/fixtures/models/llama"\nsave m "{tmp_path}/file"\n', tmp_path, ok=False)
    assert rc == 1 and "not a directory" in text


# ---- with torch: transformers loads what loupe saved --------------------------------------------

def hf_logits(path, cls="AutoModelForCausalLM", ids=IDS):
    torch = pytest.importorskip("torch")
    tf = pytest.importorskip("transformers")
    m = getattr(tf, cls).from_pretrained(str(path), dtype=torch.float32, attn_implementation="eager")
    m.eval()
    with torch.no_grad():
        return m(torch.tensor(ids)).logits.numpy()


def close(a, b, tol=1e-4):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64).reshape(np.shape(a))
    return np.abs(a - b).max() / max(1.0, np.abs(b).max()) < tol


@pytest.mark.parametrize("name", ["llama", "qwen2", "qwen3", "gemma", "gemma2", "gemma3", "gpt2",
                                  "bert"])
def test_transformers_loads_created(name, tmp_path):
    pytest.importorskip("torch")
    case = CASES[name]
    out = tmp_path / "ckpt"
    run(f'm = create {case["create"]} seed=1\nsave m "{out}"\neval_mode m\no = forward m {IDS}\n'
        f'save o.logits "{tmp_path}/l.safetensors"\n', tmp_path)
    assert close(logits_of(tmp_path / "l.safetensors"), hf_logits(out, case["class"]))


@pytest.mark.parametrize("model", ["llama", "qwen3"])
def test_transformers_loads_finetuned(tmp_path, model):
    """The last layer trained three steps (Qwen3: its q_norm / k_norm weights too) and saved:
    transformers' from_pretrained gives loupe's logits."""
    pytest.importorskip("torch")
    out = tmp_path / "tuned"
    run(FINETUNE.replace("models/llama", f"models/{model}").format(out=out, ids=IDS), tmp_path)
    assert close(logits_of(f"{out}.logits.safetensors"), hf_logits(out))


def test_transformers_loads_merged_lora(tmp_path):
    pytest.importorskip("torch")
    out = tmp_path / "merged"
    run(f'm = load "tests/fixtures/models/gpt2"\nlora m r=4 alpha=8 target="all-linear"\n'
        f'opt = adamw m lr=1e-2\nrepeat 3 {{ out = forward m {IDS}\nbackward out\nstep opt\nzero_grad opt }}\n'
        'adapter m "default" action="merge"\n'
        f'save m "{out}"\no = forward m {IDS}\nsave o.logits "{out}.l.safetensors"\n', tmp_path)
    assert close(logits_of(f"{out}.l.safetensors"), hf_logits(out))


def test_tokenizer_and_generation_config_travel(tmp_path):
    """A created model's tokenizer= and a loaded checkpoint's tokenizer and generation config are
    copied into the saved directory; an untouched loaded model is saved byte for byte."""
    src = ROOT / "models/default"
    _, text = run(f'm = create config="{src}/config.json" tokenizer="{src}" seed=1\n'
                  f'save m "{tmp_path}/a"\nd = load "{src}"\nsave d "{tmp_path}/b"\n'
                  f'r = load "{tmp_path}/a"\nprint (tokenize r "The ship").ids (tokenize m "The ship").ids\n',
                  tmp_path)
    a, b = text.strip().splitlines()[-1].split("] [")
    assert a + "]" == "[" + b
    assert sorted(os.listdir(tmp_path / "a")) == ["config.json", "model.safetensors",
                                                  "special_tokens_map.json", "tokenizer.json",
                                                  "tokenizer_config.json"]
    assert "generation_config.json" in os.listdir(tmp_path / "b")
    for f in ("tokenizer.json", "tokenizer_config.json"):
        assert (tmp_path / "a" / f).read_bytes() == (src / f).read_bytes()
    assert (tmp_path / "b/model.safetensors").read_bytes() == (src / "model.safetensors").read_bytes()
    cfg, orig = (json.loads(p.read_text()) for p in (tmp_path / "b/config.json", src / "config.json"))
    assert cfg.pop("torch_dtype") == "float32" and cfg == orig
