"""A run's saved ``config.json``: what it records to be replayed from anywhere (:func:`located`,
:func:`start_record`), the replay (:func:`load_config`, :func:`replayed_images_differ`), and overrides fitted to the
config they change (:func:`fit_overrides`)."""
from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any

from .. import data
from ..arguments import checked_path
from ..models.convnextv2 import recorded_block_norm
from ..rundir import resolve_checkpoint
from .config import FIELDS, TrainConfig, check_overrides, fields_for, fit_overrides, resolve_batch_and_lr, start_field
from .config_checks import check_task
from .presets import PRESETS


def load_config(path: str | Path, task: str, **overrides: Any) -> TrainConfig:
    """A run's saved ``config.json`` replayed exactly: the config as the run asked for it (its ``requested`` entry:
    ``base_lr``, ``global_batch``, ... before they were resolved, so overriding one re-derives the rest; older files
    without it replay their resolved fields), with ``overrides`` on top, e.g. another ``name``."""
    path = checked_path(path, "config")  # '~' expanded, as bash leaves it in --config=~/run/config.json
    try:
        saved = json.loads(path.read_text())
    except (OSError, ValueError, RecursionError) as e:  # JSONDecodeError, UnicodeDecodeError are ValueErrors
        raise ValueError(f"config: cannot read {path} as a run's config.json ({type(e).__name__}: {e})") from None
    if not isinstance(saved, dict) or saved.get("task") != check_task(task):
        found = f"task {saved.get('task')!r}" if isinstance(saved, dict) else f"it holds {type(saved).__name__}"
        raise ValueError(f"config: {path} is not a {task} config.json ({found})")
    check_overrides(task, overrides)
    if "requested" in saved:
        requested = saved["requested"]
    else:  # an older file, or one without the entry: its resolved settings, less the records
        requested = {k: v for k, v in saved.items() if k not in RECORDED}
    checks = (("", saved, set(FIELDS) | set(RECORDED)), ("'requested' of ", requested, set(FIELDS)))
    for where, entry, allowed in checks:
        if not isinstance(entry, dict):
            raise ValueError(f"config: {where}{path} is not a mapping of fields (found {type(entry).__name__})")
        if unknown := sorted(set(entry) - allowed):
            raise ValueError(f"config: unknown field(s) {', '.join(unknown)} in {where}{path}; fields: "
                             f"{', '.join(FIELDS)}")
    fields = _as_fields(requested)
    if "requested" in saved:  # the top level is what the run resolved from 'requested': an edit there is not replayed
        # both sides resolved alike ('~' expanded, [64, 64] as 64, lr from base_lr), so only a real difference counts
        try:
            world_size = saved.get("world_size", 1)
            resolved, top = (_resolved(entry, task, world_size) for entry in (fields, _as_fields(saved)))
        except ValueError as e:  # the file's own value, whatever a flag gives instead: a file no run wrote
            raise ValueError(f"config: {path}: {e} (a value of the file itself: fix or remove it there)") from None
        edited = [k for k in FIELDS if k in saved and as_json(top[k]) != as_json(resolved[k])]
        if edited:  # one side was edited by hand; which one cannot be told, so neither is guessed
            shown = "; ".join(f"{k}: {saved[k]!r} at the top level, {resolved[k]!r} from 'requested'" for k in edited)
            raise ValueError(f"config: {path} disagrees with itself ({shown}): the top level is what the run resolved "
                             "from its 'requested' entry, and a replay reads 'requested'. Give the change as a flag "
                             f"(e.g. --{edited[0].replace('_', '-')}), or edit both places alike")
    # a config.json holds every field: one of another task at a value neither its default nor a preset of this task
    # gives was edited in, and would be ignored
    elsewhere = [k for k in fields if k not in fields_for(task) and as_json(fields[k]) not in _given_values(k, task)]
    if elsewhere:
        raise ValueError(f"config: {path}: {', '.join(f'{k} {fields[k]!r}' for k in elsewhere)} do(es) not apply to "
                         f"task {task!r}: the run would ignore it; remove it from 'requested', or train that task")
    _check_start(path, saved, task, fields, overrides)
    return TrainConfig(**{**fields, **fit_overrides(fields, overrides), "task": task})


class ReplayWarning(UserWarning):
    """A ``--config`` replay trains on other images than its run did (:func:`replayed_images_differ`); the command
    line prints it as one ``warning:`` line."""


def _given_values(name: str, task: str) -> list[Any]:
    """What a config of ``task`` holds in field ``name`` unless edited by hand: its default, or a preset's value."""
    field = FIELDS[name]
    default = field.default_factory() if field.default is dataclasses.MISSING else field.default
    return [as_json(value) for value in (default, *(p[name] for p in PRESETS[task].values() if name in p))]


def _as_fields(entry: dict[str, Any]) -> dict[str, Any]:
    """The config fields of a ``config.json`` entry (its lists as the tuples a config holds)."""
    return {k: tuple(v) if isinstance(v, list) else v for k, v in entry.items() if k in FIELDS}


def _resolved(fields: dict[str, Any], task: str, world_size: int) -> dict[str, Any]:
    """``fields`` as a run on ``world_size`` processes resolves them (:func:`resolve_batch_and_lr`), as a dict."""
    return resolve_batch_and_lr(TrainConfig(**{**fields, "task": task}), world_size).to_dict()


def located(settings: dict[str, Any]) -> dict[str, Any]:
    """``settings`` (a config's ``to_dict()``) with its local paths absolute, as ``config.json`` records them:
    ``data`` (the folder the root resolved to, also from ``$CNX2LITE_DATA_ROOT``, links followed: a link pointed
    elsewhere later does not move a replay to other images), ``output``, and ``pretrained`` or
    ``init_encoder`` where they name a file or folder rather than released weights. A replay from another working
    directory or environment reads the same images and weights and writes beside the same runs."""
    paths = {k: settings[k] for k in ("output", "pretrained", "init_encoder") if settings.get(k)}
    return {**settings, "data": os.path.realpath(data.resolve_data_root(settings.get("data"))),  # a link: its folder
            **{k: os.path.abspath(v) for k, v in paths.items() if k == "output" or os.path.exists(v)}}


def start_record(config: TrainConfig, resumed_record: Path | None) -> dict[str, Any]:
    """Which file the run's weights came from, where they came from a local checkpoint or run folder (a folder gives
    its newest checkpoint, which changes as that run trains on): ``start_checkpoint`` (the file a link led to) and
    ``start_stamp`` (its size and modification time: the same name may hold other weights later). ``resumed_record``:
    the ``config.json`` of the run being resumed, whose start it keeps (its weights came from there)."""
    source = config.start
    try:
        previous = json.loads(resumed_record.read_text()) if resumed_record else {}
    except (OSError, ValueError):  # unreadable: the start is what the source gives now
        previous = {}
    if isinstance(previous, dict) and "start_checkpoint" in previous:
        return {k: previous[k] for k in ("start_checkpoint", "start_stamp") if k in previous}
    if not source or not os.path.exists(source):  # from scratch, or released weights by name
        return {}
    return _start_of(source)


def _start_of(source: str) -> dict[str, str]:
    checkpoint = os.path.realpath(resolve_checkpoint(source))
    stat = os.stat(checkpoint)
    return {"start_checkpoint": checkpoint, "start_stamp": f"{stat.st_size} bytes, modified {stat.st_mtime_ns} ns"}


def replayed_images_differ(path: str | Path, fingerprint: str, overrides: dict[str, Any]) -> str | None:
    """What to say when the images a replay of ``path`` (a run's ``config.json``) trains on are not the run's (their
    ``fingerprint`` differs from the one it recorded); None when they are, when the file recorded none, or when
    ``overrides`` choose another subset themselves (:data:`SUBSET_SETTINGS`)."""
    recorded = json.loads(Path(path).expanduser().read_text()).get("data_fingerprint")
    if recorded in (None, fingerprint) or set(overrides) & set(SUBSET_SETTINGS):
        return None
    return (f"config: the images differ from those the run of {path} trained on (files added, removed, replaced or "
            f"relabeled since, another folder, or the settings that choose them edited in the file: "
            f"{', '.join(SUBSET_SETTINGS)}): this replay is not the same experiment")


SUBSET_SETTINGS = ("num_classes", "images_per_class", "image_selection", "seed", "tune_fraction")  # pick the images


def _check_start(path: str | Path, saved: dict[str, Any], task: str, fields: dict[str, Any],
                 overrides: dict[str, Any]) -> None:
    """A replay whose start (a run folder, a link, a file) now gives other weights than the run started from (a newer
    checkpoint, a link moved, the file replaced) would train from them: refused, naming both, unless a start is
    given."""
    name = start_field(task)
    source, started = fields.get(name), saved.get("start_checkpoint")
    if name in overrides or not started or not source or not os.path.exists(source):
        return
    now = _start_of(source)
    if now["start_checkpoint"] != started or saved.get("start_stamp", now["start_stamp"]) != now["start_stamp"]:
        flag = "--" + name.replace("_", "-")
        what = ("its size or time differs from the one the run recorded (replaced since, or the record's start_stamp "
                "edited)" if now["start_checkpoint"] == started else
                f"its {name} {source} now gives {now['start_checkpoint']}")
        raise ValueError(f"config: the run of {path} started from {started}, but {what}: give {flag} with the "
                         "checkpoint this replay should start from")


# What a run's config.json records beside its settings (:meth:`cnx2lite.train.engine.Trainer._write_config`).
RECORDED = ("requested", "world_size", "effective_batch", "data_folder", "data_fingerprint", "train_images",
            "val_images", "classes", "start_checkpoint", "start_stamp")


def as_json(value: Any) -> Any:
    """``value`` as a ``config.json`` holds it (tuples as lists), to compare a config with a saved one."""
    return json.loads(json.dumps(value))


def comparable(settings: dict[str, Any]) -> dict[str, Any]:
    """``settings`` (a config's ``to_dict()`` or a saved one) as runs are compared, resumed or matched with their
    records: JSON's types, and ``block_norm`` "auto" (or None) spelled as the block style's own, so that "auto" and
    "grn" in V2 blocks are one architecture."""
    settings = as_json(settings)
    if "block_norm" in settings:
        settings["block_norm"] = recorded_block_norm(settings)
    return settings
