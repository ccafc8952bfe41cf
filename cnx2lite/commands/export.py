"""cnx2lite export: a trained model as ONNX, a torch.export program or TorchScript (see :mod:`cnx2lite.export`)."""
from __future__ import annotations

import argparse

from .. import export
from .flags import image_size


def run_export(args: argparse.Namespace) -> int:
    print(f"exporting {args.checkpoint} as {args.format}", flush=True)  # a full stdout stops here, before any file
    result = export.export_checkpoint(args.checkpoint, args.format, args.output, args.model, args.img_size,
                                      args.overwrite)
    kind = "classifier (logits)" if result.classifier else "encoder (pooled features)"
    height, width = result.img_size
    print(f"wrote {', '.join(map(str, result.files))} ({args.format}, {kind}, {height}x{width} px, dynamic batch); "
          f"max |difference| from PyTorch on 3 images: {result.max_difference:.2e}")
    return 0


def register(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser("export", help="write a trained model as ONNX, a torch.export program or TorchScript",
                                 description=export.__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", required=True, help="a cnx2lite run directory or checkpoint, any file "
                        "cnx2lite.checkpoints.load_pretrained reads (give --model), or a released name (required)")
    parser.add_argument("--format", required=True, choices=tuple(export.FORMATS),
                        help="onnx, exported-program or torchscript")
    parser.add_argument("--output", default=None, help="file to write (default: <checkpoint name>.<format's suffix> in "
                        "the current folder); never a checkpoint")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --output file (never a "
                        "checkpoint or a file inside a run directory) (default: off)")
    parser.add_argument("--model", default=None, help="variant for a file that is not a cnx2lite run "
                        "(default: the run's, else convnextv2_atto)")
    parser.add_argument("--img-size", type=image_size, nargs="+", default=None, metavar="PX",
                        help="input size, one value (square) or H W (default: the run's, else 224)")
    parser.set_defaults(run=run_export)
