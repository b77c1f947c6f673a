"""`jupyter console --kernel loupe` in a scripted session (stdin piped, simple prompt).

A scripted session hung twice in about 190 runs on 2026-11-29, each time after printing the
banner and the first prompt (jupyter_console 6.6.3 waiting on its first cell; the kernel
alive). jupyter_client driving the kernel directly did not reproduce it (60 kernels × these
4 cells, no reply or idle status missing), so the cause is not found yet: a hung attempt is
reported with what it printed and the session is tried once more; two hangs fail the test."""
import subprocess
import sys

import conftest  # noqa: F401  (installs the kernel into a private Jupyter path)


def test_scripted_console_session():
    script = 'x = 20\nprint "twice:" x * 2\nundefined_thing\nprint "still here"\n'
    p = None
    for attempt in range(2):
        try:
            p = subprocess.run(["jupyter", "console", "--kernel", "loupe", "--simple-prompt", "-y"],
                               input=script, capture_output=True, text=True, timeout=60)
            break
        except subprocess.TimeoutExpired as e:
            print(f"attempt {attempt + 1} hung; it printed:\n{e.stdout!r}\n{e.stderr!r}",
                  file=sys.stderr)
    assert p is not None, "the scripted console session hung twice"
    out = p.stdout + p.stderr   # console prints tracebacks on stderr
    assert "loupe" in out                       # the banner
    assert "twice: 40" in out
    assert "NameError" in out
    assert "still here" in out
