"""``make notebooks``: does a learner get the stored notebooks? Train the runs the notebooks share, run every notebook
from its source, and compare the numbers each cell prints with those stored in its ``.ipynb``.

Numbers are compared within a tolerance (:data:`RTOL`, :data:`ATOL`): on another machine floating-point sums may
run in another order, and trained numbers move a little. Not compared: cells tagged ``nbval-ignore-output``
(timings), and numbers inside paths (temporary folders).

``python -m cnx2lite.notebook.replay [NAME ...]``: exit status 1 when a number differs, 2 for an unknown name.
"""
from __future__ import annotations

import math
import os
import re
import sys
import time

import jupytext
import nbformat
from nbclient import NotebookClient

from ..data import ENV_VAR, REPO
from ..writing import print_line
from . import shared_runs

NOTEBOOKS = REPO / "notebooks"
RTOL, ATOL = 0.05, 0.01  # how far a number may move and still reproduce
TIMEOUT = 3600  # seconds a cell may run
VARIES = "nbval-ignore-output"  # nbval's tag for a cell whose output changes from run to run
PATH = re.compile(r"\S*/\S*")
NUMBER = re.compile(r"(?<![\w.])[-+]?(?:\d+\.\d*|\.\d+|\d+)(?:[eE][-+]?\d+)?")  # not inside a word ("v2")


def printed_numbers(cell: nbformat.NotebookNode) -> list[float]:
    """The numbers a code cell printed or returned as text or markdown (a report's table), in order (numbers inside
    paths left out)."""
    texts = [out.get("text", "") if out.output_type == "stream" else _shown_text(out.get("data", {}))
             for out in cell.get("outputs", []) if out.output_type in ("stream", "execute_result", "display_data")]
    text = PATH.sub(" ", "".join(t if isinstance(t, str) else "".join(t) for t in texts))
    return [float(token) for token in NUMBER.findall(text)]


def _shown_text(data: dict) -> str:
    """What a displayed object shows as text: its markdown where it has one (its plain text then only names it)."""
    return data.get("text/markdown", data.get("text/plain", ""))


def compare(stored: nbformat.NotebookNode, executed: nbformat.NotebookNode, rtol: float, atol: float) -> list[str]:
    """Where ``executed`` prints other numbers than ``stored`` (code cells in order): one line per cell."""
    stored_cells = [c for c in stored.cells if c.cell_type == "code"]
    executed_cells = [c for c in executed.cells if c.cell_type == "code"]
    if len(stored_cells) != len(executed_cells):
        return [f"{len(executed_cells)} code cells, {len(stored_cells)} stored: the .ipynb is out of date"]
    differences = []
    for index, (old, new) in enumerate(zip(stored_cells, executed_cells), 1):
        if VARIES in old.metadata.get("tags", []):
            continue
        before, after = printed_numbers(old), printed_numbers(new)
        if len(before) != len(after):
            differences.append(f"code cell {index}: prints {len(after)} numbers, {len(before)} stored")
            continue
        off = [(b, a) for b, a in zip(before, after) if not math.isclose(a, b, rel_tol=rtol, abs_tol=atol)]
        if off:
            shown = ", ".join(f"{a:g} (stored {b:g})" for b, a in off[:3])
            differences.append(f"code cell {index}: {len(off)} of {len(before)} numbers differ: {shown}")
    return differences


def execute(name: str, timeout: int) -> nbformat.NotebookNode:
    """Notebook ``name`` built from its Jupytext source and run top to bottom in ``notebooks/``."""
    notebook = jupytext.read(NOTEBOOKS / f"{name}.py")
    NotebookClient(notebook, timeout=timeout, kernel_name="python3",
                   resources={"metadata": {"path": str(NOTEBOOKS)}}).execute()
    return notebook


def replay(names: list[str], rtol: float, atol: float, timeout: int) -> bool:
    """Train the shared runs the notebooks of ``names`` read (outside their kernels: a run trained inside one would
    print into its cell), then run and compare each; whether all reproduce."""
    start = time.perf_counter()
    shared_runs.train_all(names)
    folder = shared_runs.runs_folder() / "replayed"
    folder.mkdir(parents=True, exist_ok=True)
    same = True
    for name in names:
        began = time.perf_counter()
        executed = execute(name, timeout)
        nbformat.write(executed, folder / f"{name}.ipynb")
        differences = compare(nbformat.read(NOTEBOOKS / f"{name}.ipynb", as_version=4), executed, rtol, atol)
        same &= not differences
        verdict = "reproduces its stored numbers" if not differences else "differs from its stored numbers:"
        print_line(f"{name}: {verdict} ({(time.perf_counter() - began) / 60:.1f} min)")
        for line in differences:
            print_line(f"  {line}")
    print_line(f"{len(names)} notebooks in {(time.perf_counter() - start) / 60:.1f} min, training included; "
               f"executed copies in {folder}")
    return same


def main(names: list[str]) -> int:
    """``python -m cnx2lite.notebook.replay [NAME ...]`` (``make notebooks``): every notebook, or those named."""
    known = sorted(p.stem for p in NOTEBOOKS.glob("[0-9][0-9]_*.py"))
    if unknown := sorted(set(names) - set(known)):
        print(f"error: unknown notebook {', '.join(unknown)}: choose from {', '.join(known)}", file=sys.stderr)
        return 2
    if root := os.environ.get(ENV_VAR):  # the kernels run in notebooks/: a root relative to here would move
        os.environ[ENV_VAR] = os.path.abspath(root)
    return 0 if replay(names or known, RTOL, ATOL, TIMEOUT) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
