"""The built-in model (models/default) in loupe gives transformers' greedy continuations and
the tokenizers library's prompt ids (fixtures: tools/make_default_model.py)."""
import json
import os
import pathlib
import subprocess

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
LOUPE = pathlib.Path(os.environ.get("LOUPE_BUILD", ROOT / "build")) / "cli" / "loupe"
CASES = json.loads((ROOT / "tests/fixtures/default_model/greedy.json").read_text(encoding="utf-8"))["cases"]


def lit(s):
    return json.dumps(s, ensure_ascii=False)


@pytest.mark.parametrize("case", CASES, ids=[c["prompt"] for c in CASES])
def test_greedy_continuation(case, tmp_path):
    script = (f'model = load "models/default"\n'
              f'print (tokenize model {lit(case["prompt"])}).ids\n'
              f'g = generate model {lit(case["prompt"])} max_tokens={len(case["new_ids"])}\n'
              f'print "<<END>>"\nprint g end=""\n')
    f = tmp_path / "g.loupe"
    f.write_text(script, encoding="utf-8")
    p = subprocess.run([str(LOUPE), "run", str(f)], capture_output=True, cwd=ROOT, timeout=120)
    out = p.stdout.decode("utf-8")
    assert p.returncode == 0, out
    ids_line = out.split("\n", 1)[0]
    assert json.loads(ids_line) == case["prompt_ids"]
    assert out.split("<<END>>\n", 1)[1] == case["text"]
