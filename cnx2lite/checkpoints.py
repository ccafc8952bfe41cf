"""Load ConvNeXt V2 weights from any source, with clear errors.

:func:`load_pretrained` reads a path or a state dict through :func:`read_weights` (the one reader: the weights
inside a bare state dict, a training checkpoint's ``"model"`` / ``"ema"`` entry or a saved folder), converts them to
our dense names with :func:`~cnx2lite.checkpoint_formats.convert_state_dict` (the formats it recognizes are listed
there), and loads them into a model, refusing another architecture with a message that names the keys."""
from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping

from torch import Tensor

from . import hub
from .arguments import checked_arguments, checked_path
from .checkpoint_formats import FINAL_KEYS, convert_state_dict, strip_wrappers
from .models.convnextv2 import ARCHITECTURE, VARIANTS, ConvNeXtV2, architecture, recorded_block_norm
from .rundir import resolve_checkpoint
from .torch_files import read_torch_file

__all__ = ["LoadResult", "load_pretrained", "read_state_dict", "read_weights"]

logger = logging.getLogger(__name__)

MODEL_KEYS = ("model", "state_dict")  # where checkpoints keep the weights, in order of preference
EMA_KEYS = ("ema", "model_ema", "state_dict_ema")  # ours, the official repo's, timm's


@dataclass
class LoadResult:
    """What :func:`load_pretrained` did. ``missing_keys`` kept the model's initialization."""

    missing_keys: list[str]
    unexpected_keys: list[str]
    source_format: str
    notes: list[str] = field(default_factory=list)


@checked_arguments
def load_pretrained(
    model: ConvNeXtV2,
    source: str | os.PathLike | Mapping[str, Tensor],
    strict: bool = True,
    *,
    use_ema: bool = False,
    skip_head: bool | str = False,
    grn_change: bool = False,
) -> LoadResult:
    """Load weights into ``model`` from a checkpoint file, a run directory (its newest checkpoint) or a (possibly
    wrapped) state dict.

    ``use_ema`` takes a training checkpoint's EMA weights (under ``"ema"``, or the official repo's
    ``"model_ema"``, or timm's ``"state_dict_ema"``) instead of ``"model"`` / ``"state_dict"``.
    ``skip_head`` keeps the model's own classifier, e.g. to fine-tune on another number of classes
    (``"mismatched"``: only when the checkpoint's classifier has another number of classes, said in the notes);
    a model built with ``num_classes=0`` ignores the checkpoint's classifier anyway.
    ``grn_change`` allows the paper's "GRN at fine-tuning" ablation (fine-tuning asks for it): weights trained with GRN
    into blocks without it (GRN's weights dropped), or weights of blocks without GRN into blocks with it (GRN added
    at the identity). Without it, a block norm other than the source's is refused like any other architecture.

    With ``strict``, any missing or unexpected key or shape mismatch raises a ``ValueError`` naming
    them, except the final norm and head that an encoder-only (FCMAE) checkpoint lacks: those keep
    their initialization and are listed in ``missing_keys``. Without ``strict``, keys that do not
    fit are skipped and reported in the result. A released name of another variant is refused before its download."""
    if not isinstance(model, ConvNeXtV2):
        raise ValueError(f"model must be a ConvNeXtV2 (e.g. cnx2lite.create_model('convnextv2_atto')); got "
                         f"{type(model).__name__}")
    if not isinstance(source, (str, os.PathLike, Mapping)):
        raise ValueError(f"source must be a file, a run folder, a released name or a state dict; got "
                         f"{type(source).__name__}")
    hub.check_released_variant(source, getattr(model, "variant", None), "the model")  # None: built by hand
    state_dict, saved, notes = read_weights(source, use_ema)
    where = "" if isinstance(source, Mapping) else f"{os.fspath(source)}: "  # errors name a file's source
    try:
        _check_architecture(model, saved, grn_change)  # what a run or a saved folder records: block, GRN, block norm
    except ValueError as e:
        raise ValueError(f"{where}{e}") from None
    state_dict, source_format = convert_state_dict(state_dict)
    state_dict, adapted = _adapt_stem(state_dict, model.in_chans)
    notes += adapted
    if skip_head == "mismatched":
        head = state_dict.get("head.weight")
        skip_head = head is not None and head.shape[0] != model.num_classes
    if skip_head or model.num_classes == 0:
        dropped = [k for k in state_dict if k.startswith("head.")]
        state_dict = {k: v for k, v in state_dict.items() if k not in dropped}
        if dropped:
            notes.append("the checkpoint's classifier was not loaded: the model keeps its own head")

    state_dict, grn_notes, grn_missing = _grn_changed(model, state_dict, saved) if grn_change else (state_dict, [], ())
    notes += grn_notes
    expected = model.state_dict()
    allowed_missing = ("stage_norms.", "head.") if skip_head else ("stage_norms.",)  # no release has stage norms
    allowed_missing += grn_missing
    if not any(k.startswith(FINAL_KEYS) for k in state_dict):
        allowed_missing += FINAL_KEYS
        notes.append("encoder-only checkpoint: the final norm and head keep their initialization")
    mismatched = [k for k in state_dict if k in expected and state_dict[k].shape != expected[k].shape]
    unexpected = [k for k in state_dict if k not in expected]
    missing = [k for k in expected if k not in state_dict or k in mismatched]
    if strict:
        bad_missing = [k for k in missing if k not in mismatched and not k.startswith(allowed_missing)]
        if mismatched or unexpected or bad_missing:
            message = _mismatch_message(model, state_dict, expected, mismatched, bad_missing, unexpected)
            raise ValueError(where + message)
    elif mismatched:
        notes.append(f"skipped {len(mismatched)} shape-mismatched key(s): {', '.join(mismatched)}")

    loadable = {k: v for k, v in state_dict.items() if k in expected and k not in mismatched}
    model.load_state_dict(loadable, strict=False)
    for note in notes:
        logger.info(note)
    return LoadResult(missing, unexpected, source_format, notes)


@checked_arguments
def read_state_dict(source: str | os.PathLike | Mapping[str, Tensor], use_ema: bool = False) -> dict[str, Tensor]:
    """The raw state dict inside any source :func:`load_pretrained` reads (file, run directory, released name,
    wrapped mapping), unconverted, with wrapper prefixes (``module.``) removed."""
    state_dict, _, _ = read_weights(source, use_ema)
    return {strip_wrappers(k): v for k, v in state_dict.items()}


@checked_arguments
def read_weights(source: str | os.PathLike | Mapping[str, Tensor],
                 use_ema: bool = False) -> tuple[Mapping[str, Tensor], dict, list[str]]:
    """The one reader under every loader: the raw state dict inside any source (a file, a run directory's newest
    checkpoint, a released name, a ``save_pretrained`` folder or its file, a ``.safetensors`` file, a possibly wrapped
    mapping), the architecture it records
    (a run's :data:`~cnx2lite.models.convnextv2.ARCHITECTURE` options, a saved folder's config; empty for other
    sources), and notes on where the weights were found."""
    if not isinstance(source, Mapping):
        checked_path(source, "source")
    if hub.is_safetensors_file(source) and hub.is_saved_folder(Path(source).parent):  # a save's own file
        source = Path(source).parent
    if not isinstance(source, Mapping) and hub.is_saved_folder(source):
        state_dict, saved = hub.load_saved(source)
        return state_dict, saved, []
    if hub.is_safetensors_file(source):  # a bare state dict, e.g. timm's weights
        return hub.read_safetensors(source), {}, []
    if isinstance(source, Mapping):
        checkpoint, where = source, "the checkpoint"
    else:
        where = resolve_checkpoint(hub.resolve_name(source))  # a released name comes from the cache or is downloaded
        checkpoint = read_torch_file(where)
    if not isinstance(checkpoint, Mapping):
        raise ValueError(f"{where} holds a {type(checkpoint).__name__}, not a state dict or checkpoint dict")
    if not use_ema and checkpoint and all(isinstance(v, Tensor) for v in checkpoint.values()):
        return checkpoint, {}, []
    config = checkpoint.get("config") if isinstance(checkpoint.get("config"), Mapping) else {}
    architecture = {k: config[k] for k in ARCHITECTURE if k in config}
    names = EMA_KEYS if use_ema else MODEL_KEYS
    name = next((n for n in names if isinstance(checkpoint.get(n), Mapping)), None)
    if name is None and use_ema and any(n in checkpoint for n in EMA_KEYS):
        raise ValueError(f"no EMA weights in {where}: its EMA entry is empty (trained with ema_decay 0); use its "
                         "weights, without use_ema (--ema)")
    if name is None:
        kind = "EMA weights" if use_ema else "state dict"
        raise ValueError(f"no {kind} in {where}: expected one under {' or '.join(map(repr, names))}; "
                         f"top-level keys: {', '.join(map(str, list(checkpoint)[:10]))}")
    return checkpoint[name], architecture, [f"read from checkpoint[{name!r}]"]


STEM = "downsample_layers.0.0.weight"


def _adapt_stem(state_dict: dict[str, Tensor], in_chans: int) -> tuple[dict[str, Tensor], list[str]]:
    """RGB weights for a model of another ``in_chans``, as timm adapts a first conv: for greyscale the stem's
    filters are summed over R, G, B (a grey image then gives what its RGB copy gave); otherwise the RGB filters are
    repeated over the channels and scaled by 3 / in_chans."""
    weight = state_dict.get(STEM)
    if weight is None or weight.shape[1] == in_chans:
        return state_dict, []
    if weight.shape[1] != 3:
        raise ValueError(f"the weights take {weight.shape[1]}-channel images (their stem, {STEM}) and the model "
                         f"{in_chans}-channel ones: only RGB weights are adapted to another number of channels; give "
                         f"the model in_chans={weight.shape[1]} (--in-chans {weight.shape[1]})")
    if in_chans == 1:
        adapted = weight.sum(dim=1, keepdim=True)
    else:
        adapted = weight.repeat(1, (in_chans + 2) // 3, 1, 1)[:, :in_chans] * (3 / in_chans)
    return {**state_dict, STEM: adapted}, [f"stem adapted from 3 to {in_chans} input channels"]


GRN_CHANGE = {"grn", "none"}  # a block norm swap that loading allows: GRN removed, or added at the identity
LAYER_SCALE = re.compile(r"stages\.\d+\.\d+\.gamma")  # a V1 block's LayerScale (GRN's is "...grn.gamma")


def _grn_changed(model: ConvNeXtV2, state_dict: dict[str, Tensor],
                 saved: Mapping) -> tuple[dict[str, Tensor], list[str], tuple]:
    """The paper's "GRN at fine-tuning" ablation: weights trained with GRN into a model without it (GRN's weights are
    dropped) or weights of blocks without GRN (V1's, with LayerScale, or recorded ``block_norm="none"``) into a model
    with it (GRN starts as the identity, gamma = beta = 0). Returns the state dict, a note, and the keys allowed to be
    missing. Any other missing GRN still fails the strict load."""
    has_grn = any(".grn." in k for k in state_dict)
    without_grn = recorded_block_norm(saved) == "none" or any(LAYER_SCALE.fullmatch(k) for k in state_dict)
    if model.block_norm == "none" and has_grn:
        kept = {k: v for k, v in state_dict.items() if ".grn." not in k}
        return kept, ["GRN removed: the source's GRN weights are not loaded (the model's blocks have none)"], ()
    if model.block_norm == "grn" and not has_grn and without_grn:
        grn_keys = tuple(k for k in model.state_dict() if ".grn." in k)
        return state_dict, ["GRN added: the source has none, so every GRN starts as the identity"], grn_keys
    return state_dict, [], ()


def _check_architecture(model: ConvNeXtV2, saved: Mapping, grn_change: bool = False) -> None:
    """Saved weights' recorded architecture must be the model's: GRN's aggregation has no parameters, so a mismatch
    would otherwise load silently. Fields the source does not record are not compared."""
    mine = {"depths": list(model.depths), "dims": list(model.dims), "in_chans": model.in_chans, **architecture(model)}
    if "block_norm" in saved:  # a config's "auto" (or None): the block style's own
        saved = {**saved, "block_norm": recorded_block_norm(saved)}
    allowed = set()
    if grn_change and {saved.get("block_norm"), model.block_norm} == GRN_CHANGE:  # "auto" resolved above
        allowed = {"block_norm", "grn_aggregation"}  # GRN removed or added: its aggregation no longer matters
    differ = [f"{k}: saved {saved[k]!r}, model {v!r}" for k, v in mine.items() if k in saved and saved[k] != v
              and k not in allowed]
    if differ:
        raise ValueError(f"the saved weights are of another architecture ({'; '.join(differ)}): build the model "
                         "with the saved settings (--model, --block, --block-norm and --grn-aggregation on the command "
                         "line)")


def _describe(state_dict: Mapping[str, Tensor]) -> str | None:
    """Guess which variant and block style a converted state dict belongs to."""
    try:
        dims = tuple(state_dict[f"stages.{i}.0.dwconv.weight"].shape[0] for i in range(4))
    except KeyError:
        return None
    depths = tuple(len({k.split(".")[2] for k in state_dict if k.startswith(f"stages.{i}.")}) for i in range(4))
    name = next((n for n, cfg in VARIANTS.items() if cfg == (depths, dims)), f"depths={depths}, dims={dims}")
    block = "v2" if any(".grn." in k for k in state_dict) else "v1"
    return f"{name}, block={block!r}"


def _mismatch_message(
    model: ConvNeXtV2,
    state_dict: Mapping[str, Tensor],
    expected: Mapping[str, Tensor],
    mismatched: list[str],
    missing: list[str],
    unexpected: list[str],
) -> str:
    """A ``ValueError`` message naming a few offending keys and shapes, with a hint at the cause."""
    this = f"{getattr(model, 'variant', type(model).__name__)}, block={model.block!r}"
    problems = []
    if mismatched:
        examples = [f"{k}: checkpoint {tuple(state_dict[k].shape)} vs model {tuple(expected[k].shape)}"
                    for k in mismatched[:3]]
        problems.append(f"{len(mismatched)} shape mismatch(es), e.g. {'; '.join(examples)}")
    for what, keys in (("missing", missing), ("unexpected", unexpected)):
        if keys:
            problems.append(f"{len(keys)} {what} key(s), e.g. {', '.join(keys[:3])}")
    message = f"checkpoint does not match {this}: {'; '.join(problems)}"
    guess = _describe(state_dict)
    if guess is not None and guess != this:
        message += f". The checkpoint looks like {guess}: build the model so (--model, --block on the command line)"
    classes = state_dict["head.weight"].shape[0] if "head.weight" in state_dict else 0
    if classes != model.num_classes and any(k.startswith("head.") for k in mismatched + missing + unexpected):
        message += (f". Its classifier has {classes} classes and the model {model.num_classes}: build the model "
                    f"with num_classes={classes}, or pass skip_head=True to keep the model's own head")
    return message
