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
