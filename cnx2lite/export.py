"""``cnx2lite export``: a trained model as a file that other runtimes load, checked against PyTorch.

Formats: ``onnx`` (onnxruntime, TensorRT, ...; through ``torch.onnx.export(dynamo=True)``, which needs the
``onnx`` and ``onnxscript`` packages), ``exported-program`` (``torch.export``, ``.pt2``: torch's own
deployment format) and ``torchscript`` (``torch.jit.trace``; deprecated by torch since 2.10 but still what
LibTorch's C++ API loads). The batch dimension stays dynamic; the image size is fixed at export.

A fine-tuning run exports its classifier (logits); anything else exports the encoder, whose output is the pooled
feature vector ``(N, C4)`` after the model's final LayerNorm. After
writing, the file is loaded back and run on a batch of another size, and the largest difference from PyTorch is
reported.
"""
from __future__ import annotations

import os
import warnings
import zipfile
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor, nn

from .arguments import checked_arguments
from .factory import load_model
from .hub import is_saved_folder
from .image_files import IMG_EXTENSIONS
from .rundir import resolve_checkpoint, run_directory_of
from .transforms import image_hw
from .writing import check_free_space, replaced_atomically, write_error

FORMATS = {"onnx": ".onnx", "exported-program": ".pt2", "torchscript": ".torchscript.pt"}
WEIGHT_SUFFIXES = (".pt", ".pth", ".ckpt", ".bin", ".safetensors")  # what an export is never named


@checked_arguments
def export_model(model: nn.Module, path: str | Path, fmt: str, img_size: int | tuple[int, int] = 224,
                 in_chans: int = 3) -> Path:
    """Write ``model`` (in eval mode) as ``fmt`` to ``path`` for inputs ``(N, in_chans, H, W)``."""
    if fmt not in FORMATS:
        raise ValueError(f"format must be one of {', '.join(FORMATS)}; got {fmt!r}")
    model.eval()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    example = (torch.randn(2, in_chans, *image_hw(img_size)),)
    batch = ({0: torch.export.Dim("batch", min=1)},)
    check_free_space(path, 2 * sum(p.numel() * p.element_size() for p in model.parameters()))
    if fmt == "onnx":  # written in place: a large model's weights go to a file named after it (<name>.data)
        _require("onnx", "onnxscript")
        try:
            torch.onnx.export(model, example, str(path), dynamo=True, dynamic_shapes=batch, verbose=False)
        except (RuntimeError, OSError) as e:  # an OSError may name the exporter's temporary file: name the export
            raise write_error(path, e) from e
        return path
    with replaced_atomically(path) as tmp:  # an existing export is replaced only by a whole new one
        if fmt == "exported-program":  # through a file object: torch checks a path's name for .pt2, not a file's
            with open(tmp, "wb") as f:
                torch.export.save(torch.export.export(model, example, dynamic_shapes=batch), f)
        else:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # the deprecation, and trace's notes on the input checks it records
                torch.jit.trace(model, example).save(str(tmp))
    return path


def run_exported(path: str | Path, fmt: str, images: Tensor) -> Tensor:
    """Run an exported file on ``images`` with its runtime (onnxruntime for ONNX)."""
    if fmt == "onnx":
        _require("onnxruntime")
        import onnxruntime

        session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        return torch.from_numpy(session.run(None, {session.get_inputs()[0].name: images.numpy()})[0])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch.jit.load's deprecation
        if fmt == "exported-program":
            with open(path, "rb") as f:  # any name, as written
                loaded = torch.export.load(f).module()
        else:
            loaded = torch.jit.load(str(path))
    with torch.no_grad():
        return loaded(images)


def max_difference(model: nn.Module, path: str | Path, fmt: str, img_size: int | tuple[int, int],
                   in_chans: int = 3) -> float:
    """The largest absolute difference between ``model`` and its export on 3 random images (a batch size the
    export never saw)."""
    images = torch.randn(3, in_chans, *image_hw(img_size), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = model.eval()(images)
    return (run_exported(path, fmt, images) - expected).abs().max().item()


def _require(*packages: str) -> None:
    """Import ``packages``; one ImportError names those missing, or installed but failing to import (a broken or
    mismatched install raises anything from an ImportError to an AttributeError deep inside the package)."""
    import importlib
    import importlib.util

    missing = [p for p in packages if importlib.util.find_spec(p) is None]
    if missing:
        raise ImportError(f"{', '.join(missing)} not installed: pip install {' '.join(missing)} (or cnx2lite[export])")
    for package in packages:
        try:
            importlib.import_module(package)
        except Exception as e:
            detail = (str(e).strip().splitlines() or [""])[0][:200]
            raise ImportError(f"{package} is installed but does not import ({type(e).__name__}: {detail}): reinstall "
                              f"it, pip install --force-reinstall {' '.join(packages)}") from None


def _default_name(checkpoint: str | os.PathLike) -> str:
    """The export's name without suffix: the source's, and a run checkpoint's as ``<run>-<step>``."""
    path = Path(checkpoint)
    stem = path.with_suffix("").name
    return f"{path.parent.name}-{stem.removeprefix('checkpoint-')}" if stem.startswith("checkpoint-") else stem


def _holds_weights(path: Path) -> bool:
    """Whether ``path`` is a torch checkpoint (a ``torch.save`` zip: a ``data.pkl`` and no TorchScript ``code/``) or a
    safetensors file: what ``--overwrite`` must never replace, wherever it lies and whatever its name."""
    if path.suffix == ".safetensors":
        return True
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as archive:
        names = archive.namelist()
    return any(n.endswith("/data.pkl") for n in names) and not any("/code/" in n for n in names)


def _claimed_kind(suffix: str) -> str | None:
    """The kind of file a suffix says a file is, where it is not an export: an image (an image folder's next run would
    read it as one) or trained weights (``--pretrained`` and every loader read a ``.pt`` as a checkpoint)."""
    suffix = suffix.lower()
    return ("an image" if suffix in IMG_EXTENSIONS else
            "trained weights" if suffix in WEIGHT_SUFFIXES else None)


def _is_export(path: Path, fmt: str) -> bool:
    """Whether ``path`` looks like an earlier ``fmt`` export: named as one, or a TorchScript archive (its ``code/``)."""
    if path.name.endswith(FORMATS[fmt]):
        return True
    if fmt != "torchscript" or not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as archive:
        return any("/code/" in name for name in archive.namelist())


@dataclass(frozen=True)
class Exported:
    """What :func:`export_checkpoint` wrote: every file (ONNX may keep weights in a ``.data`` file beside the graph),
    the model kind, the input size and the largest difference from PyTorch on a batch of 3."""

    files: list[Path]
    fmt: str
    classifier: bool
    img_size: tuple[int, int]
    max_difference: float


@checked_arguments
def export_checkpoint(checkpoint: str | os.PathLike, fmt: str, output: str | os.PathLike | None = None,
                      model: str | None = None, img_size: int | tuple[int, int] | None = None,
                      overwrite: bool = False) -> Exported:
    """Export ``checkpoint`` (anything :func:`~cnx2lite.probes.load_model` reads: a fine-tuning run gives its
    classifier, anything else the encoder) as ``fmt`` to ``output`` (default: ``<checkpoint name><suffix>`` here) and
    check the file against PyTorch. Never writes anywhere inside a run directory (see
    :func:`~cnx2lite.rundir.run_directory_of`) nor over the source; an existing ``output`` only with ``overwrite``."""
    if fmt not in FORMATS:
        raise ValueError(f"format must be one of {', '.join(FORMATS)}; got {fmt!r}")
    net, config = load_model(checkpoint, model, classifier=None)  # a fine-tuning run's head
    size = image_hw(img_size or config.get("img_size", 224))
    if output is not None and str(output).endswith(("/", os.sep)):
        raise ValueError(f"--output {output} names a folder: give a file, e.g. {output}model{FORMATS[fmt]}")
    output = Path(output or _default_name(checkpoint) + FORMATS[fmt])
    if other := [f for f, suffix in FORMATS.items() if f != fmt and output.name.endswith(suffix)]:
        raise ValueError(f"--output {output} is named as {other[0]} ({FORMATS[other[0]]}), but --format is {fmt}: "
                         f"name it *{FORMATS[fmt]}, or pass --format {other[0]}")
    source = None if checkpoint == "random" or is_saved_folder(checkpoint) else Path(resolve_checkpoint(checkpoint))
    source = source.resolve() if source is not None else None
    if output.resolve() == source:
        raise ValueError(f"--output {output} is the checkpoint being exported: choose another file")
    if is_saved_folder(output.resolve().parent):  # its config.json and weights are the saved model
        raise ValueError(f"--output {output} is inside the saved model {output.resolve().parent}: choose a file "
                         "elsewhere")
    run = run_directory_of(output)
    if output.name.startswith("checkpoint-") or output.is_dir() or run is not None:
        what = ("a folder" if output.is_dir() else
                "named like a run checkpoint" if output.name.startswith("checkpoint-") else f"inside the run {run}")
        raise ValueError(f"--output {output} is {what}: choose a new file elsewhere, e.g. model{FORMATS[fmt]}")
    for existing in (output, output.with_name(output.name + ".data")):  # ONNX keeps large weights in <name>.data
        if existing.is_symlink():  # written through, the link's target (any file, anywhere) would be replaced
            raise ValueError(f"--output {existing} is a symbolic link (to {os.readlink(existing)}): an export writes "
                             "only files of its own; choose another name")
        if existing.exists() and not existing.is_file():  # a device, a pipe: --overwrite would replace it
            raise ValueError(f"--output {existing} is not a regular file: choose a file")
        if existing.exists() and not overwrite:
            raise FileExistsError(f"--output {existing} exists: choose a new file, or pass --overwrite to replace it")
    if output.is_file() and _holds_weights(output):
        raise ValueError(f"--output {output} holds trained weights (a checkpoint or safetensors file), which an "
                         "export never replaces: choose another file")
    if output.is_file() and not _is_export(output, fmt):  # an image, a config, a notebook: not an earlier export
        raise ValueError(f"--output {output} exists and is no {fmt} export (named *{FORMATS[fmt]}): --overwrite "
                         "replaces only an earlier export; choose a new file")
    if not output.name.endswith(FORMATS[fmt]) and (kind := _claimed_kind(output.suffix)):
        raise ValueError(f"--output {output} is named as {kind} ({output.suffix}): name it *{FORMATS[fmt]}")
    before = set(output.parent.glob(output.name + "*")) if output.parent.is_dir() else set()
    path = export_model(net, output, fmt, size, net.in_chans)
    files = [path] + sorted(set(path.parent.glob(path.name + "?*")) - before)  # e.g. model.onnx.data
    return Exported(files, fmt, bool(net.num_classes), size, max_difference(net, path, fmt, size, net.in_chans))
