"""`jupyter console --kernel loupe` in a scripted session (stdin piped, simple prompt)."""
import subprocess

import conftest  # noqa: F401  (installs the kernel into a private Jupyter path)


def test_scripted_console_session():
    script = 'x = 20\nprint "twice:" x * 2\nundefined_thing\nprint "still here"\n'
    p = subprocess.run(["jupyter", "console", "--kernel", "loupe", "--simple-prompt", "-y"],
                       input=script, capture_output=True, text=True, timeout=120)
    out = p.stdout + p.stderr   # console prints tracebacks on stderr
    assert "loupe" in out                       # the banner
    assert "twice: 40" in out
    assert "NameError" in out
    assert "still here" in out
