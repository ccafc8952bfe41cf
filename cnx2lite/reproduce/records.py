"""What the grid keeps of a run once its checkpoints are gone: a folder of small files meant to be committed.

The ``cpu`` grid takes longer than one sitting, and the machine it trains on may not outlive the sitting; checkpoints
are never committed. So every finished run leaves a *record*, and the report is written from records alone::

    <records>/<run name>/config.json        the run's resolved config (copied from the run)
    <records>/<run name>/metrics.csv        its per-epoch history (copied)
    <records>/<run name>/reconstruction.png the last reconstruction figure, of the FCMAE run a report shows (copied)
    <records>/<run name>/measured.pt        what was measured on its weights, keyed by what, in what precision, on
                                            which images: "val_correct-bf16@<val id>" (N,) bool,
                                            "knn-k50-s0-bf16@<val id>" (N,) bool,
                                            "collapse-gelu-96px-500images-50ranks@<val id>" per-image statistics

    <records>/data.json                     which images the records were made on (a fingerprint of train/ and val/)

A later sitting finds a recorded run finished without its checkpoints; it retrains a recorded run only when it needs
the weights (a pretraining run whose fine-tuning runs are not all recorded yet), and then checks that the retrained
run's history equals the record's, so that runs of one table never mix two different pretrainings. A record counts
only for the images it was made on and the settings it was trained with: records of another data folder, or a run
of the same name with other settings (another scale), are refused in one line, never mixed in.
"""
from __future__ import annotations

import json
import math
import os
import shutil
from pathlib import Path

import torch
from torch import Tensor

from ..rundir import RunResult, run_directory_of
from ..torch_files import read_torch_file
from ..train.config_files import comparable
from ..train.run_log import last_epoch, read_metrics
from ..writing import check_folder_creatable, make_folder

RECORDS_FOLDER = "records"  # under a grid's output, unless it is given another
COPIED = ("config.json", "metrics.csv")
FIGURE = "reconstruction.png"  # about 750 KB: kept only where asked
MEASURED = "measured.pt"
PATH_SETTINGS = ("data", "output", "pretrained", "init_encoder", "resume")  # where, not what: free to differ
COMPARED = ("train_loss", "val_loss", "val_top1", "knn_top1")  # what a retrained run must reproduce, per epoch


class RecordMismatch(ValueError):
    """A record that does not fit this grid (other images, other settings, a retrained run that came out otherwise):
    the two cannot be mixed in one table. A ValueError: the command line says it in one line."""


class Records:
    """The records under ``root``, one folder per run name."""

    def __init__(self, root: str | os.PathLike) -> None:
        self.root = Path(root)
        self._measured: dict[str, dict[str, Tensor]] = {}

    def check_writable(self) -> None:
        """Refuse, before any training and creating nothing, a records folder that cannot hold records: inside a run,
        under a file, not writable (its first record, or :meth:`check_data`, creates it), or holding files that are
        not records (a class folder's images, a user's files)."""
        if (run := run_directory_of(self.root)) is not None:
            raise ValueError(f"--records {self.root} is inside the training run {run}: choose another folder")
        check_folder_creatable(self.root, "--records")
        foreign = sorted(p.name for p in self.root.iterdir() if not p.is_dir() and p.name != "data.json") \
            if self.root.is_dir() else []
        if foreign:
            raise ValueError(f"--records {self.root} holds files that are not records ({', '.join(foreign[:3])}"
                             f"{', ...' if len(foreign) > 3 else ''}): choose an empty folder, or one of records")

    def check_data(self, fingerprint: str) -> None:
        """Bind the records to the images they are made on (the first call writes ``data.json``); records made on
        other images raise :class:`RecordMismatch`."""
        path = self.root / "data.json"
        if path.is_file():
            recorded = json.loads(path.read_text()).get("data_fingerprint")
            if recorded != fingerprint:
                raise RecordMismatch(f"the records in {self.root} were made on other images (data fingerprint "
                                     f"{recorded}, these images {fingerprint}): use another --records folder")
        else:
            make_folder(self.root, "the records folder", "choose another --records")
            path.write_text(json.dumps({"data_fingerprint": fingerprint}, indent=2) + "\n")

    def has_run(self, name: str, settings: dict | None = None) -> bool:
        """Whether run ``name`` is recorded; with ``settings`` (a config's ``to_dict()``), a record trained with other
        settings raises :class:`RecordMismatch` instead of counting as this run."""
        if not all((self.root / name / file).is_file() for file in COPIED):
            return False
        recorded = self.run(name).config["requested"]  # a damaged record raises here
        if settings is not None:
            mine, theirs = comparable(settings), comparable(recorded)
            differ = [key for key in settings if key not in PATH_SETTINGS and key in recorded
                      and mine[key] != theirs[key]]
            if differ:
                shown = ", ".join(f"{key} {recorded[key]!r} recorded, {settings[key]!r} here" for key in differ[:3])
                raise RecordMismatch(f"the record of {name} in {self.root} was trained with other settings ({shown}): "
                                     "use another --records folder, or remove that record to train the run again")
        return True

    def run(self, name: str) -> RunResult:
        """The recorded run as a :class:`RunResult` without weights (``checkpoint`` None, ``run_dir`` the record);
        a damaged record (edited, cut short) raises :class:`RecordMismatch` naming it."""
        folder = self.root / name
        try:
            config = json.loads((folder / "config.json").read_text())
            history = read_metrics(folder / "metrics.csv")
            if (last := last_epoch(history)) is None or last < config["epochs"]:
                raise ValueError(f"its metrics.csv ends before epoch {config['epochs']}")
            if not isinstance(config.get("requested"), dict):  # what a run is matched with its record on
                raise ValueError("its config.json has no 'requested' settings")
        except (ValueError, KeyError, TypeError) as e:
            raise RecordMismatch(f"the record {folder} is damaged ({e}): remove it to train the run again") from None
        return RunResult(folder, history, None, config=config)

    def keep_run(self, result: RunResult, figure: bool = False) -> None:
        """Record a finished run's config and history (and with ``figure`` its reconstruction figure); a retrained run
        must match its earlier record."""
        name = result.run_dir.name
        if self.has_run(name):
            self.check_same(name, result.history)
        folder = self.root / name
        if folder.resolve() == result.run_dir.resolve():
            return
        folder.mkdir(parents=True, exist_ok=True)
        for file in ((FIGURE,) if figure else ()) + COPIED:  # metrics.csv last: a record is whole once it is there
            if (result.run_dir / file).is_file():
                try:
                    shutil.copyfile(result.run_dir / file, folder / f"{file}.partial")
                    os.replace(folder / f"{file}.partial", folder / file)
                except OSError as e:
                    (folder / f"{file}.partial").unlink(missing_ok=True)
                    raise OSError(e.errno, f"cannot write the record {folder / file}: {e.strerror}",
                                  str(folder / file)) from None

    def check_same(self, name: str, history: list[dict]) -> None:
        """Raise :class:`RecordMismatch` unless ``history``'s epochs have the recorded losses and accuracies."""
        recorded = [row for row in self.run(name).history if row["kind"] == "epoch"]
        new = [row for row in history if row["kind"] == "epoch"]
        for old, now in zip(recorded, new):
            for key in COMPARED:
                a, b = old.get(key), now.get(key)
                if (a is None) != (b is None) or (a is not None and not math.isclose(a, b, rel_tol=1e-4)):
                    raise RecordMismatch(
                        f"run {name} trained again differs from its record in {self.root}: {key} at epoch "
                        f"{old['epoch']:g} is {b} now, {a} recorded (another machine or code version); its recorded "
                        f"runs cannot be mixed with the new ones: remove {self.root / name} and the records of the "
                        "runs that start from it, or use another records folder")
        if len(new) != len(recorded):
            raise RecordMismatch(f"run {name} trained again has {len(new)} epochs, its record {len(recorded)}")

    def measured(self, name: str, key: str) -> Tensor | dict | None:
        """A recorded measurement of run ``name``, or None."""
        if name not in self._measured:
            path = self.root / name / MEASURED
            try:
                self._measured[name] = read_torch_file(path) if path.is_file() else {}
            except ValueError:
                raise RecordMismatch(f"{path} is damaged: remove it to measure the run again") from None
            if not isinstance(self._measured[name], dict):  # what keep_measured writes is a dict
                raise RecordMismatch(f"{path} is damaged (it holds a {type(self._measured[name]).__name__}): remove "
                                     "it to measure the run again")
        return self._measured[name].get(key)

    def keep_measured(self, name: str, key: str, value: Tensor | dict) -> Tensor | dict:
        """Record a measurement of run ``name`` (a tensor, or a dict of tensors and names; written at once,
        atomically) and return it."""
        self.measured(name, key)  # loads what is there
        value = value.cpu() if isinstance(value, Tensor) else {k: v.cpu() if isinstance(v, Tensor) else v
                                                                for k, v in value.items()}
        self._measured[name][key] = value
        folder = self.root / name
        folder.mkdir(parents=True, exist_ok=True)
        partial = folder / (MEASURED + ".partial")
        torch.save(self._measured[name], partial)
        os.replace(partial, folder / MEASURED)
        return value
