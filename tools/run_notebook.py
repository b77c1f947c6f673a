"""Execute a notebook with nbclient on the loupe kernel; write the executed notebook and
an HTML copy into OUTDIR.

    python3 tools/run_notebook.py notebooks/tutorial.ipynb out/

Exits 1 (and names the cell) if any cell fails."""
import pathlib
import sys

import nbclient
import nbformat
from nbconvert import HTMLExporter


def run(path, outdir, kernel="loupe", timeout=600):
    path, outdir = pathlib.Path(path), pathlib.Path(outdir)
    nb = nbformat.read(path, as_version=4)
    client = nbclient.NotebookClient(nb, kernel_name=kernel, timeout=timeout,
                                     resources={"metadata": {"path": str(path.parent)}})
    client.execute()
    outdir.mkdir(parents=True, exist_ok=True)
    out_nb = outdir / path.name
    nbformat.write(nb, out_nb)
    html, _ = HTMLExporter().from_notebook_node(nb)
    (outdir / (path.stem + ".html")).write_text(html, encoding="utf-8")
    return nb, out_nb


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    try:
        _, out = run(sys.argv[1], sys.argv[2])
    except nbclient.exceptions.CellExecutionError as e:
        sys.exit(f"a cell failed:\n{e}")
    print(f"executed notebook: {out}\nHTML copy: {out.with_suffix('.html')}")
