"""A run's saved ``config.json`` replayed (:func:`load_config`), and overrides fitted to the config they change
(:func:`fit_overrides`)."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .config import FIELDS, TrainConfig, check_overrides, resolve_batch_and_lr
from .config_checks import check_task


def load_config(path: str | Path, task: str, **overrides: Any) -> TrainConfig:
    """A run's saved ``config.json`` replayed exactly: the config as the run asked for it (its ``requested`` entry:
    ``base_lr``, ``global_batch``, ... before they were resolved, so overriding one re-derives the rest; older files
    without it replay their resolved fields), with ``overrides`` on top, e.g. another ``name``."""
    try:
        saved = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise ValueError(f"config: cannot read {path} as a run's config.json ({type(e).__name__}: {e})") from None
    if not isinstance(saved, dict) or saved.get("task") != check_task(task):
        found = saved.get("task") if isinstance(saved, dict) else type(saved).__name__
        raise ValueError(f"config: {path} is not a {task} config.json (task {found!r})")
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
    fields = {k: tuple(v) if isinstance(v, list) else v for k, v in requested.items()}
    if "requested" in saved:  # the top level is what the run resolved from 'requested': an edit there is not replayed
        resolved = resolve_batch_and_lr(TrainConfig(**{**fields, "task": task}), saved.get("world_size", 1)).to_dict()
        edited = [k for k in FIELDS if k in saved and _as_json(saved[k]) != _as_json(resolved[k])]
        if edited:  # one side was edited by hand; which one cannot be told, so neither is guessed
            shown = "; ".join(f"{k}: {saved[k]!r} at the top level, {resolved[k]!r} from 'requested'" for k in edited)
            raise ValueError(f"config: {path} disagrees with itself ({shown}): the top level is what the run resolved "
                             "from its 'requested' entry, and a replay reads 'requested'. Give the change as a flag "
                             f"(e.g. --{edited[0].replace('_', '-')}), or edit both places alike")
    return TrainConfig(**{**fields, **fit_overrides(fields, overrides), "task": task})


# What a run's config.json records beside its settings (:meth:`cnx2lite.train.engine.Trainer._write_config`).
RECORDED = ("requested", "world_size", "effective_batch", "data_folder", "data_fingerprint", "train_images",
            "val_images", "classes")


def _as_json(value: Any) -> Any:
    return json.loads(json.dumps(value))


# A setting given yields the base's setting that would override it: lr is derived from base_lr only while lr is
# unset, and global_batch sets accum_steps.
YIELDS = {"base_lr": "lr", "accum_steps": "global_batch"}


def fit_overrides(base: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """``overrides`` fitted to the ``base`` config they change, so that each takes effect:

    - a setting of :data:`YIELDS` given without its partner clears the base's partner (``--base-lr`` on a preset that
      sets ``lr`` trains at the ``base_lr``-derived lr, not at the preset's);
    - a warmup shortened with the schedule when they shorten ``epochs`` to the base's warmup or below without giving
      one (the whole run would be warmup): the base's warmup share of its epochs is kept (a 2-of-20-epoch warmup, run
      for 1 epoch, warms up for 0.1). An explicit warmup longer than the epochs is refused by :class:`TrainConfig`."""
    if overrides.get("lr") is not None and "base_lr" in overrides:  # one of them would be dropped without a word
        raise ValueError("lr and base_lr given together: give lr (the peak lr itself) or base_lr (per 256 images)")
    overrides = {**overrides, **{partner: None for given, partner in YIELDS.items()
                                 if given in overrides and partner not in overrides and base.get(partner) is not None}}
    epochs, warmup = overrides.get("epochs"), base.get("warmup_epochs", 0.0)
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (epochs, warmup, base.get("epochs"))):
        return overrides  # a value of the wrong type: TrainConfig refuses it by name
    if epochs is None or "warmup_epochs" in overrides or warmup < epochs or not base.get("epochs") or not warmup:
        return overrides
    return {**overrides, "warmup_epochs": warmup * epochs / base["epochs"]}
