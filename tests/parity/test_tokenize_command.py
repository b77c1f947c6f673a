"""The `tokenize` and `detokenize` commands, run by `loupe run`, give the ids and texts that
Hugging Face's tokenizers library gave for the same tokenizer.json (fixtures made by
tools/make_tokenizers.py: tests/fixtures/tokenizers/*/expect.json)."""
import json
import os
import pathlib
import subprocess

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
LOUPE = pathlib.Path(os.environ.get("LOUPE_BUILD", ROOT / "build")) / "cli" / "loupe"
FIX = ROOT / "tests" / "fixtures" / "tokenizers"
DIRS = sorted(p.parent.name for p in FIX.glob("*/expect.json"))
END = "<<END>>"


def lit(s):
    """A loupe string literal for s (None when loupe strings cannot hold it: NUL)."""
    if "\x00" in s:
        return None
    out = []
    for ch in s:
        if ch in '\\"':
            out.append("\\" + ch)
        elif ch == "\n":
            out.append("\\n")
        elif ch == "\t":
            out.append("\\t")
        elif ch == "\r":
            out.append("\\r")
        elif ord(ch) < 32 or ord(ch) == 127:
            out.append("\\u%04X" % ord(ch))
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'


def run(script, tmp_path):
    f = tmp_path / "t.loupe"
    f.write_text(script, encoding="utf-8")
    # bytes, not text=True: universal newlines would turn a decoded "\r\n" into "\n"
    p = subprocess.run([str(LOUPE), "run", str(f)], capture_output=True, cwd=ROOT, timeout=120)
    out = p.stdout.decode("utf-8", errors="surrogateescape")
    assert p.returncode == 0, out + p.stderr.decode(errors="replace")
    return out


@pytest.mark.parametrize("name", DIRS)
def test_ids_and_text_equal_the_tokenizers_library(name, tmp_path):
    exp = json.loads((FIX / name / "expect.json").read_text(encoding="utf-8"))
    d = lit(f"tests/fixtures/tokenizers/{name}")
    lines, cases = [], []
    for case in exp["cases"]:
        t = lit(case["text"])
        if t is None:
            continue
        cases.append(case)
        lines.append(f"print (tokenize {d} {t}).ids")
        lines.append(f"print (tokenize {d} {t} special=false).ids")
        lines.append(f'print (detokenize {d} {case["ids"]}) end="\\n{END}\\n"')
        lines.append(f'print (detokenize {d} {case["ids"]} skip_special=true) end="\\n{END}\\n"')
    out = run("\n".join(lines) + "\n", tmp_path)
    pos = 0
    for case in cases:
        ids_line, out_rest = out[pos:].split("\n", 1)
        plain_line, out_rest = out_rest.split("\n", 1)
        decoded, out_rest = out_rest.split(f"\n{END}\n", 1)
        decoded_skip, out_rest = out_rest.split(f"\n{END}\n", 1)
        pos = len(out) - len(out_rest)
        assert json.loads(ids_line) == case["ids"], case["text"]
        assert json.loads(plain_line) == case["ids_plain"], case["text"]
        assert decoded == case["decode"], case["text"]
        assert decoded_skip == case["decode_skip"], case["text"]
    assert len(cases) >= 10


def test_pairs(tmp_path):
    exp = json.loads((FIX / "bert-cased" / "expect.json").read_text(encoding="utf-8"))
    d = lit("tests/fixtures/tokenizers/bert-cased")
    script = "".join(f"print (tokenize {d} {lit(p['a'])} pair={lit(p['b'])}).ids\n" for p in exp["pairs"])
    got = [json.loads(line) for line in run(script, tmp_path).splitlines()]
    assert got == [p["ids"] for p in exp["pairs"]]


def test_errors(tmp_path):
    f = tmp_path / "e.loupe"
    f.write_text('tokenize "no/such/dir" "x"\n', encoding="utf-8")
    p = subprocess.run([str(LOUPE), "run", str(f)], capture_output=True, text=True, cwd=ROOT)
    assert p.returncode == 1 and "IOError" in p.stdout and "no/such/dir" in p.stdout
    f.write_text('detokenize "tests/fixtures/tokenizers/gpt2" [99999999]\n', encoding="utf-8")
    p = subprocess.run([str(LOUPE), "run", str(f)], capture_output=True, text=True, cwd=ROOT)
    assert p.returncode == 1 and "outside the vocabulary" in p.stdout
