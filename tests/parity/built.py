"""Programs of the build under test: $LOUPE_BUILD (run-tests.sh sets it), else ./build.
A missing program fails the test: run-tests.sh builds everything first."""
import os

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))


def built(rel):
    """Path of build/REL (e.g. "tests/test_st", "cli/loupe"); fails when it is missing."""
    path = os.path.join(os.environ.get("LOUPE_BUILD", os.path.join(ROOT, "build")), rel)
    assert os.access(path, os.X_OK), f"{path} is not built (cmake --build BUILD; set LOUPE_BUILD)"
    return path


def run_loupe(script, tmp_path):
    """`loupe run` on `script` (text) in the repository root; its stdout (the run must pass)."""
    import subprocess
    f = tmp_path / "s.loupe"
    f.write_text(script)
    r = subprocess.run([built("cli/loupe"), "run", str(f)], cwd=ROOT, capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    return r.stdout


def five_steps(setup, batch, out, lr="1e-2", last="out = forward m batch\nprint out.loss"):
    """A loupe script: `setup` (loads `m`, attaches an adapter), five AdamW steps on `batch`,
    save_adapter to `out`, then `last` (by default: the loss of one more forward as its last
    line)."""
    return f'''{setup}
opt = adamw m lr={lr}
batch = {batch}
repeat 5 {{
    out = forward m batch
    backward out
    step opt
    zero_grad opt
}}
save_adapter m "{out}"
{last}
'''


# a right-padded batch of two the adapter round-trip tests use
IDS = [[5, 17, 99, 3, 42, 7, 8], [11, 12, 13, 14, 0, 0, 0]]
MASK = [[1] * 7, [1, 1, 1, 1, 0, 0, 0]]


def one_step(model, lora, out, tmp_path, load=""):
    """loupe: load `model` (with options `load`), `lora`, one AdamW step on IDS (so B is not
    zero), save_adapter to `out`; the logits loupe then gives (nested lists)."""
    import json
    text = run_loupe(f'''m = load "{model}" {load}
{lora}
opt = adamw m lr=0.05
out = forward m {{"input_ids": {IDS}, "attention_mask": {MASK}, "labels": {IDS}}}
backward out
step opt
save_adapter m "{out}"
out = forward m {{"input_ids": {IDS}, "attention_mask": {MASK}}}
print out.logits
''', tmp_path)
    return json.loads(text.strip().splitlines()[-1])
