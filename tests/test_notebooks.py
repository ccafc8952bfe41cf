"""The notebook walkthrough: each Jupytext ``.py`` source is in sync with its committed ``.ipynb``,
and every notebook runs top to bottom at smoke scale with its checked outputs unchanged (nbval).

The execution test runs ``pytest --nbval-lax --nbval-current-env notebooks/`` in a subprocess with
``CNX2LITE_SCALE=smoke`` and ``CNX2LITE_DATA_ROOT`` pointing at the shared photos, so ``make test``
covers it; it skips when nbval is missing or no photos can be found.
"""
from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
NOTEBOOKS = REPO / "notebooks"
NAMES = sorted(p.stem for p in NOTEBOOKS.glob("[0-9][0-9]_*.py"))
SHARED_DATA = REPO.parent / "shared" / "data"


def photo_root() -> Path | None:
    """Where the notebooks will find photos: ``$CNX2LITE_DATA_ROOT``, the shared data, <repo>/data."""
    for root in (os.environ.get("CNX2LITE_DATA_ROOT"), SHARED_DATA, REPO / "data"):
        if root and ((Path(root) / "samples").is_dir() or (Path(root) / "imagenette" / "val").is_dir()):
            return Path(root)
    return None


def notebook_env(runs: Path) -> dict[str, str]:
    """The environment the notebooks run in under test: smoke scale, the photos, ``runs`` for the shared runs
    (trained by the first notebook that needs each, as in a fresh clone), and no downloads: the cells that use
    released weights say in one line that they are offline, at once."""
    env = dict(os.environ, CNX2LITE_SCALE="smoke", CNX2LITE_NOTEBOOK_RUNS=str(runs), CNX2LITE_OFFLINE="1")
    root = photo_root()
    if root is not None:
        env["CNX2LITE_DATA_ROOT"] = str(root)
    env.pop("CNX2LITE_WEIGHTS", None)  # checked outputs assume the random-weight model
    return env


@pytest.mark.parametrize("name", NAMES)
def test_py_and_ipynb_in_sync(name: str) -> None:
    jupytext = pytest.importorskip("jupytext")
    from jupytext.compare import compare_notebooks

    py, ipynb = NOTEBOOKS / f"{name}.py", NOTEBOOKS / f"{name}.ipynb"
    assert py.is_file() and ipynb.is_file(), f"{name}: both {py.name} and {ipynb.name} must be committed"
    try:
        compare_notebooks(jupytext.read(ipynb), jupytext.read(py), fmt="py:percent")
    except Exception as error:  # jupytext raises NotebookDifference (and others on malformed input)
        pytest.fail(
            f"{ipynb.name} is out of sync with {py.name} (the .py is the source of truth): {error}\n"
            f"Regenerate with: CNX2LITE_SCALE=cpu CNX2LITE_DATA_ROOT=... jupytext --to ipynb --execute "
            f"notebooks/{py.name}"
        )


@pytest.mark.parametrize("name", NAMES)
def test_every_exercise_has_a_solution_a_learner_opens_after_trying(name: str) -> None:
    """The numbered exercises of the ``## Exercises`` cell, each with one solution: a code cell tagged ``solution``
    whose input and output JupyterLab shows collapsed, and which nbval runs with the rest."""
    jupytext = pytest.importorskip("jupytext")
    cells = jupytext.read(NOTEBOOKS / f"{name}.py").cells
    exercises = [c.source for c in cells if c.cell_type == "markdown" and "## Exercises" in c.source]
    assert len(exercises) == 1, f"{name}: one '## Exercises' cell expected, found {len(exercises)}"
    count = len(re.findall(r"^\d+\. ", exercises[0], flags=re.MULTILINE))
    solutions = [c for c in cells if "solution" in c.metadata.get("tags", ())]
    assert count >= 2 and len(solutions) == count, f"{name}: {count} exercises, {len(solutions)} solution cells"
    assert all(c.cell_type == "code" and c.metadata.get("jupyter", {}).get("source_hidden") for c in solutions)


@pytest.mark.parametrize("name", NAMES)
def test_ipynb_carries_outputs(name: str) -> None:
    """Readers on GitHub see the figures: every committed notebook was executed and has images, in under 1 MB (a
    figure that would push it over is stored as JPEG: ``cnx2lite.notebook.plotting.as_jpeg``)."""
    nbformat = pytest.importorskip("nbformat")
    size = (NOTEBOOKS / f"{name}.ipynb").stat().st_size
    assert size < 1_000_000, f"{name}.ipynb is {size:,} bytes, over 1 MB"
    nb = nbformat.read(NOTEBOOKS / f"{name}.ipynb", as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert all(c.get("execution_count") for c in code), f"{name}.ipynb has unexecuted code cells"
    assert not [o for c in code for o in c.outputs if o.output_type == "error"], f"{name}.ipynb stores an error"
    assert any({"image/png", "image/jpeg"} & set(o.get("data", {})) for c in code for o in c.outputs), \
        f"{name}.ipynb has no figure"


def test_notebooks_execute_at_smoke_scale(tmp_path) -> None:
    if importlib.util.find_spec("nbval") is None:
        pytest.skip("nbval is not installed (pip install -e '.[dev]')")
    if photo_root() is None and importlib.util.find_spec("skimage") is None:
        pytest.skip(f"no photos for the notebooks: set CNX2LITE_DATA_ROOT (e.g. {SHARED_DATA}) or install scikit-image")
    cmd = [sys.executable, "-m", "pytest", "--nbval-lax", "--nbval-current-env", "-p", "no:cacheprovider", "-q",
           *(str(NOTEBOOKS / f"{n}.ipynb") for n in NAMES)]
    result = subprocess.run(cmd, cwd=REPO, env=notebook_env(tmp_path / "shared-runs"), capture_output=True, text=True,
                            timeout=1200)  # a hung kernel; the six take a few minutes, more beside another test process
    assert result.returncode == 0, f"nbval failed:\n{result.stdout[-8000:]}\n{result.stderr[-2000:]}"
