"""Shared set-up for the protocol tests: install the built kernel into a private Jupyter
path, so the tests use this build and never touch the user's kernels or history."""
import os
import pathlib
import subprocess
import tempfile

ROOT = pathlib.Path(__file__).resolve().parents[2]
BUILD = pathlib.Path(os.environ.get("LOUPE_BUILD", ROOT / "build"))
KERNEL = BUILD / "kernel" / "loupe-kernel"

_tmp = tempfile.mkdtemp(prefix="loupe-protocol-")
os.environ["JUPYTER_PATH"] = os.path.join(_tmp, "share", "jupyter")
os.environ["JUPYTER_DATA_DIR"] = os.path.join(_tmp, "data")
os.environ["JUPYTER_RUNTIME_DIR"] = os.path.join(_tmp, "runtime")
subprocess.run([str(KERNEL), "install", "--prefix", _tmp], check=True, stdout=subprocess.DEVNULL)
