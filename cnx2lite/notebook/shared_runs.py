"""The trained models the notebooks share, each trained once: on first use, or all at once by ``make notebooks``.

A notebook asks for a model by what it is, never by a folder: :func:`fcmae_encoder` (V1 or V2 blocks, sparse or
dense-conv encoder), :func:`finetuned` (from FCMAE or from scratch, on 50 labeled images per class) and
:func:`supervised` (from scratch on every label, the reference of notebook 4). The runs are those of
``cnx2lite reproduce``'s grid (:class:`~cnx2lite.reproduce.grid.Grid`), at a size of their own (:data:`SCALES`), in
``<repo>/runs/notebooks-<scale>`` (or ``$CNX2LITE_NOTEBOOK_RUNS``); a run that is not there yet trains on the spot,
an interrupted one resumes. So every notebook computes on the same models, a learner's from a fresh clone included.

These runs teach; they do not carry the paper's claims. Those numbers come from the committed report of
``cnx2lite reproduce --scale cpu`` (:mod:`.evidence`), replicated over runs and quoted with their intervals.

``python -m cnx2lite.notebook.shared_runs`` (``make notebooks``) trains every run and says how long each took.
"""
from __future__ import annotations

import os
import shutil
import time
from collections.abc import Iterable
from functools import lru_cache
from pathlib import Path

from ..arguments import check_folder_name
from ..data import REPO, resolve_data_root
from ..imagenette import find_or_download
from ..reproduce.grid import SCALES as GRID_SCALES
from ..reproduce.grid import Grid, Scale
from ..reproduce.recipes import Recipe
from ..rundir import run_directory_of
from ..writing import print_line
from .run_scale import scale

RUNS_ENV = "CNX2LITE_NOTEBOOK_RUNS"
SHOTS = 50  # labeled images per class of the fine-tuned pair (notebook 5)
SCALES = {
    "smoke": GRID_SCALES["smoke"],
    # 2 CPU cores, about half an hour for every run together: the demo's size (atto at 96 px, 4 epochs of FCMAE on
    # all of Imagenette, 16 epochs of fine-tuning on 50 images per class); the supervised run trains as many epochs
    # on every label as the pretraining (finetune_epochs[None] is added to them: see Grid.epochs).
    "cpu": Scale("convnextv2_atto", 96, 4, 64, 256, shots=(SHOTS, None), main_shot=SHOTS,
                 finetune_epochs={SHOTS: 16, None: 0}, eval_points=2),
    "gpu": GRID_SCALES["gpu"],
}
RECIPE = Recipe(1e-3, "none")  # both arms' fine-tuning recipe: the one `cnx2lite demo --sweep` chose for each


def runs_folder() -> Path:
    """Where the shared runs live: ``$CNX2LITE_NOTEBOOK_RUNS``, else ``<repo>/runs/notebooks-<scale>``."""
    return Path(os.environ.get(RUNS_ENV) or REPO / "runs" / f"notebooks-{scale()}").expanduser()


def scratch_folder(notebook: str) -> Path:
    """An empty folder for what one notebook writes and nobody keeps (its short runs, its figure files):
    ``<runs folder>/scratch-<notebook>``, emptied on every call, so that running a notebook again replaces its
    files instead of leaving another copy in the temp folder. ``notebook`` is one folder name (a '..' would empty a
    folder elsewhere), and the runs folder is no training run's (its files are the run's record)."""
    check_folder_name(notebook, "notebook", "the folder is <runs folder>/scratch-<notebook>")
    if (run := run_directory_of(runs_folder())) is not None:
        raise ValueError(f"the notebooks' runs folder {runs_folder()} is inside the training run {run}: set "
                         f"${RUNS_ENV} to a folder of its own")
    folder = runs_folder() / f"scratch-{notebook}"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    return folder


@lru_cache(maxsize=None)
def _grid(scale_name: str, folder: Path, data_root: Path) -> Grid:
    return Grid(SCALES[scale_name], str(find_or_download(data_root)), folder, recipes={"fcmae": RECIPE,
                                                                                        "scratch": RECIPE})


def grid() -> Grid:
    """The grid of the shared runs at the notebooks' scale, on the data root's images (``$CNX2LITE_DATA_ROOT``,
    else ``<repo>/data``, where Imagenette is downloaded when absent)."""
    return _grid(scale(), runs_folder(), resolve_data_root())


def fcmae_encoder(block: str = "v2", sparse: bool = True) -> Path:
    """The run folder of an FCMAE pretraining (every training image, labels ignored) with ``block`` style blocks
    (``"v1"``, ``"v2"``), its encoder sparse or dense-conv: trained here first if it is not there yet."""
    return grid().pretrain(block, sparse=sparse, weights=True).run_dir


def finetuned(init: str) -> Path:
    """The run folder of V2 fine-tuned on 50 labeled images per class from ``init``: ``"fcmae"`` (the encoder of
    :func:`fcmae_encoder`) or ``"scratch"``, with the same recipe, images and seed."""
    if init not in ("fcmae", "scratch"):
        raise ValueError(f"init must be 'fcmae' or 'scratch', got {init!r}")
    return grid().finetune(grid().scale.main_shot, init, weights=True).run_dir


def supervised() -> Path:
    """The run folder of V2 trained from scratch on every labeled training image, as many epochs as the
    pretraining: a supervised model that trained, the reference of the collapse measures."""
    return grid().finetune(None, "scratch", weights=True).run_dir


RUNS = {  # every shared run, in training order: what `make notebooks` trains
    "V2 FCMAE": fcmae_encoder,
    "V1 FCMAE": lambda: fcmae_encoder("v1"),
    "V2 FCMAE, dense-conv encoder": lambda: fcmae_encoder("v2", sparse=False),
    "V2 fine-tuned from FCMAE (K=50)": lambda: finetuned("fcmae"),
    "V2 fine-tuned from scratch (K=50)": lambda: finetuned("scratch"),
    "V2 supervised (every label)": supervised,
}


USES = {  # the shared runs each notebook reads, by label of RUNS: what replaying it alone trains first
    "01_masking": (),
    "02_sparse_convolution": ("V2 FCMAE", "V2 FCMAE, dense-conv encoder"),
    "03_grn": ("V2 FCMAE",),
    "04_feature_collapse": ("V2 FCMAE", "V1 FCMAE", "V2 supervised (every label)"),
    "05_fcmae_pretrain_finetune": ("V2 FCMAE", "V2 fine-tuned from FCMAE (K=50)", "V2 fine-tuned from scratch (K=50)"),
    "06_transfer_dense": ("V2 FCMAE",),
}


def train_all(notebooks: Iterable[str] = USES) -> dict[str, float]:
    """Train (or find) every shared run that ``notebooks`` read (default: all of them), in :data:`RUNS` order; the
    seconds each took here, by label."""
    used = {label for notebook in notebooks for label in USES[notebook]}
    seconds = {}
    for label, get in RUNS.items():
        if label not in used:
            continue
        start = time.perf_counter()
        run = get()
        seconds[label] = time.perf_counter() - start
        print_line(f"{label}: {run} ({seconds[label] / 60:.1f} min)")
    print_line(f"the shared runs they read are in {runs_folder()} ({sum(seconds.values()) / 60:.1f} min)")
    return seconds


if __name__ == "__main__":
    train_all()
