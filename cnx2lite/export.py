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

import argparse
import sys
import warnings
from pathlib import Path

import torch
from torch import Tensor, nn

from .argtypes import image_size
from .data import image_hw
from .evaluation import load_model

FORMATS = {"onnx": ".onnx", "exported-program": ".pt2", "torchscript": ".torchscript.pt"}


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
    if fmt == "onnx":
        _require("onnx", "onnxscript")
        torch.onnx.export(model, example, str(path), dynamo=True, dynamic_shapes=batch, verbose=False)
    elif fmt == "exported-program":
        torch.export.save(torch.export.export(model, example, dynamic_shapes=batch), str(path))
    else:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the deprecation, and trace's notes on the input checks it records
            torch.jit.trace(model, example).save(str(path))
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
        loaded = torch.export.load(str(path)).module() if fmt == "exported-program" else torch.jit.load(str(path))
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
    import importlib.util

    missing = [p for p in packages if importlib.util.find_spec(p) is None]
    if missing:
        raise ImportError(f"{', '.join(missing)} not installed: pip install {' '.join(missing)} (or cnx2lite[export])")


def run_export(args: argparse.Namespace) -> int:
    try:
        model, config = load_model(args.checkpoint, args.model, classifier=None)  # a fine-tuning run's head
        size = image_hw(args.img_size or config.get("img_size", 224))
        output = Path(args.output or Path(args.checkpoint).with_suffix("").name + FORMATS[args.format])
        if output.exists() and output.resolve() == Path(args.checkpoint).resolve():
            raise ValueError(f"--output {output} is the checkpoint being exported: choose another file")
        path = export_model(model, output, args.format, size, model.in_chans)
        difference = max_difference(model, path, args.format, size, model.in_chans)
    except (ValueError, OSError, ImportError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    kind = "classifier (logits)" if model.num_classes else "encoder (pooled features)"
    print(f"wrote {path} ({args.format}, {kind}, {size[0]}x{size[1]} px, dynamic batch); max |difference| from "
          f"PyTorch on 3 images: {difference:.2e}")
    return 0


def register(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser("export", help="write a trained model as ONNX, a torch.export program or TorchScript",
                                 description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", required=True, help="a cnx2lite run directory or checkpoint, any file "
                        "cnx2lite.checkpoints.load_pretrained reads (give --model), or a released name (required)")
    parser.add_argument("--format", required=True, choices=tuple(FORMATS), help="onnx, exported-program or torchscript")
    parser.add_argument("--output", default=None, help="file to write (default: <checkpoint name>.<format's suffix>)")
    parser.add_argument("--model", default=None, help="variant for a file that is not a cnx2lite run "
                        "(default: the run's, else convnextv2_atto)")
    parser.add_argument("--img-size", type=image_size, nargs="+", default=None, metavar="PX",
                        help="input size, one value (square) or H W (default: the run's, else 224)")
    parser.set_defaults(run=run_export)
