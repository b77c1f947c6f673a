"""Every notebook in notebooks/ runs under nbclient on the loupe kernel, with no error
output; a code cell whose metadata has "loupe_expect" must show that text."""
import pathlib
import sys

import nbformat
import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests" / "protocol"))
sys.path.insert(0, str(ROOT / "tools"))
import conftest  # noqa: F401,E402  (installs the kernel into a private Jupyter path)
from run_notebook import run  # noqa: E402

NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))


def cell_text(cell):
    parts = []
    for o in cell.get("outputs", []):
        if o["output_type"] == "stream":
            parts.append(o["text"])
        elif o["output_type"] in ("display_data", "execute_result"):
            parts.append(o["data"].get("text/plain", ""))
        elif o["output_type"] == "error":
            parts.append("\n".join(o["traceback"]))
    return "".join(parts)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_runs(path, tmp_path):
    nb, out = run(path, tmp_path)
    assert out.exists() and out.with_suffix(".html").exists()
    for i, cell in enumerate(nb.cells):
        if cell.cell_type != "code":
            continue
        assert cell.execution_count is not None, f"cell {i} did not run"
        errors = [o for o in cell.outputs if o["output_type"] == "error"]
        assert not errors, f"cell {i} failed: {cell_text(cell)}"
        expect = cell.metadata.get("loupe_expect")
        if expect:
            assert expect in cell_text(cell), f"cell {i}: {expect!r} not in {cell_text(cell)!r}"
    nbformat.validate(nb)
