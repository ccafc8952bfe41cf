"""Reading a file that ``torch.save`` wrote, safely (``weights_only=True``) and with one clear error: a file of another
kind is named as what it looks like, a truncated or foreign pickle as what it is."""
from __future__ import annotations

import errno
import os
import re

import torch

TORCH_FILE_STARTS = (b"PK\x03\x04", b"\x80")  # torch.save's zip archive, or its legacy pickle (any protocol)
OTHER_FILE_STARTS = {b"\x89PNG": "a PNG image", b"\xff\xd8\xff": "a JPEG image", b"GIF8": "a GIF image",
                     b"\x1f\x8b": "gzip-compressed", b"%PDF": "a PDF"}


class NotACheckpoint(ValueError):
    """A file ``torch.load`` cannot read as a checkpoint. The message names the file and what to give instead;
    ``reason`` says why in a few words, for a caller that words its own message (a download's check)."""

    def __init__(self, message: str, reason: str) -> None:
        super().__init__(message)
        self.reason = reason


def read_torch_file(path: str | os.PathLike) -> object:
    """``torch.load(path, weights_only=True)`` on the CPU; a file that is not a readable checkpoint (truncated, not
    torch's format, pickled objects other than tensors and containers) raises :class:`NotACheckpoint` (a ValueError)
    in one line naming it.
    A missing or unreadable file raises the OSError."""
    with open(path, "rb") as f:
        head = f.read(8)
    if not head.startswith(TORCH_FILE_STARTS):  # not torch.save's output at all: say what it looks like instead
        looks = next((kind for start, kind in OTHER_FILE_STARTS.items() if head.startswith(start)),
                     "a text file" if head and head.isascii() else "empty" if not head else "another format")
        raise NotACheckpoint(f"{os.fspath(path)} is not a checkpoint (it is {looks}): give a file written by "
                             "torch.save (.pt, .pth), a .safetensors file, a run folder or a released model name",
                             reason=f"it is {looks}")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except OSError as e:
        if e.filename is not None or e.errno not in (errno.EINVAL, None):
            raise  # the file system's (permissions, an I/O error): the file may be whole
        raise NotACheckpoint(f"cannot read {os.fspath(path)} as a checkpoint: its zip archive is cut short or "
                             f"damaged ({e.strerror or e}); a truncated file (a full disk, an interrupted copy)",
                             reason="its zip archive is cut short or damaged") from None
    except Exception as e:  # unpickling errors vary: UnpicklingError, RuntimeError, EOFError, ...
        lines = [line.strip() for line in re.sub(r"\x1b\[[0-9;]*m", "", str(e)).splitlines() if line.strip()]
        detail = next((line for line in lines if "Unsupported global" in line), lines[0] if lines else "")
        reason = f"{type(e).__name__}: {detail[:200]}"
        raise NotACheckpoint(f"cannot read {os.fspath(path)} as a checkpoint with torch.load(weights_only=True) "
                             f"({reason}): a truncated file, another format, or objects other than tensors and "
                             "containers; if you trust it, re-save just its state dict, e.g. "
                             "torch.save(checkpoint['model'], path)", reason=reason) from None
