"""Released ConvNeXt V2 weights by name, downloaded once into a cache; and weights saved for sharing.

Names are ``<variant>.<tag>``, e.g. ``"convnextv2_atto.fcmae"``; tags as in the official README
(facebookresearch/ConvNeXt-V2): ``fcmae`` (FCMAE-pretrained encoder, no decoder, no head), ``in1k``
(fine-tuned on ImageNet-1K, EMA weights), ``in22k-in1k`` (ImageNet-22K then 1K, 224 px), ``in22k-in1k-384``
and, for huge, ``in22k-in1k-512``. :func:`weights_path` downloads from ``$CNX2LITE_WEIGHTS_URL`` (default: the
official host) into ``$CNX2LITE_CACHE`` (default: ``<torch hub dir>/checkpoints/cnx2lite``) and records the
file's size and sha256 beside it (``<file>.sha256.json``) on the first download; every later use checks them, and
a file that no longer matches is downloaded again. The official release publishes no checksums, so the first
download is trusted as served. Files are read with ``torch.load(weights_only=True)``. With ``$CNX2LITE_OFFLINE``
set (to anything but ``0`` or empty), nothing is downloaded: a file not in the cache is an ``OSError`` at once, where
a machine without network would otherwise wait for the connection to time out (tests and CI set it).

:func:`save_pretrained` writes ``model.safetensors`` and ``config.json`` (the architecture) into a folder, which
:func:`cnx2lite.checkpoints.load_pretrained` reads back like any checkpoint.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import tempfile
import urllib.error
import urllib.request
from pathlib import Path

import torch
from torch import Tensor

from .arguments import checked_path
from .models.convnextv2 import VARIANTS, ConvNeXtV2, architecture
from .rundir import run_directory_of
from .torch_files import NotACheckpoint, read_torch_file

logger = logging.getLogger(__name__)

URL_ENV, CACHE_ENV = "CNX2LITE_WEIGHTS_URL", "CNX2LITE_CACHE"
OFFLINE = "CNX2LITE_OFFLINE"  # set: never download (see the module doc)
DEFAULT_URL = "https://dl.fbaipublicfiles.com/convnext/convnextv2"
SIZES = tuple(name.removeprefix("convnextv2_") for name in VARIANTS)
# tag -> (folder on the host, file name pattern, sizes released)
RELEASES = {
    "fcmae": ("pt_only", "convnextv2_{size}_1k_224_fcmae.pt", SIZES),
    "in1k": ("im1k", "convnextv2_{size}_1k_224_ema.pt", SIZES),
    "in22k-in1k": ("im22k", "convnextv2_{size}_22k_224_ema.pt", ("nano", "tiny", "base", "large")),
    "in22k-in1k-384": ("im22k", "convnextv2_{size}_22k_384_ema.pt", ("nano", "tiny", "base", "large", "huge")),
    "in22k-in1k-512": ("im22k", "convnextv2_{size}_22k_512_ema.pt", ("huge",)),
}
SAFETENSORS_NAME, CONFIG_NAME = "model.safetensors", "config.json"
NAME_PATTERN = re.compile(r"convnextv2_[a-z]+\.[a-z0-9-]+")


def weight_names() -> list[str]:
    """Every released ``<variant>.<tag>``."""
    return [f"convnextv2_{size}.{tag}" for tag, (_, _, sizes) in RELEASES.items() for size in sizes]


def released_variant(source: object) -> str | None:
    """The variant a released name holds (``"convnextv2_tiny"`` for ``"convnextv2_tiny.fcmae"``); None for any other
    source (an existing path, a mapping, anything not shaped like a name)."""
    if not isinstance(source, (str, os.PathLike)) or NAME_PATTERN.fullmatch(os.fspath(source)) is None \
            or os.path.exists(source):
        return None
    return os.fspath(source).partition(".")[0]


def check_released_variant(source: object, variant: str | None, what: str) -> None:
    """Refuse a released name of another variant than ``variant`` (``what`` names the model's side) before anything
    is downloaded: its weights cannot fit."""
    released = released_variant(source)
    if released is None or variant not in VARIANTS or released == variant:  # an unknown variant is refused later
        return
    tag = os.fspath(source).partition(".")[2]
    same_tag = tag in RELEASES and variant.removeprefix("convnextv2_") in RELEASES[tag][2]
    raise ValueError(f"{source} holds {released} weights, but {what} is {variant}: give a name of {variant} (e.g. "
                     f"{variant}.{tag if same_tag else 'fcmae'}) or a model of {released}; nothing was downloaded")


def resolve_name(source: str | os.PathLike) -> str | os.PathLike:
    """The local file of a released name (``<variant>.<tag>``, downloaded on first use; :func:`weight_url` says which
    names exist), or ``source`` itself when it is an existing path or not shaped like a name."""
    if released_variant(source) is None:
        return source
    return weights_path(os.fspath(source))


def weight_url(name: str) -> str:
    """The download URL of a released name, under ``$CNX2LITE_WEIGHTS_URL`` when set."""
    variant, _, tag = name.partition(".")
    size = variant.removeprefix("convnextv2_")
    if tag not in RELEASES or size not in RELEASES[tag][2]:
        tags = [t for t, (_, _, sizes) in RELEASES.items() if size in sizes]
        released = f"{variant} is released as {', '.join(f'{variant}.{t}' for t in tags)}" if tags else \
            f"names are <variant>.<tag>, variants {', '.join(VARIANTS)}"
        raise ValueError(f"no released weights named {name!r}: {released} (all: cnx2lite.hub.weight_names())")
    folder, pattern, _ = RELEASES[tag]
    return f"{os.environ.get(URL_ENV, DEFAULT_URL).rstrip('/')}/{folder}/{pattern.format(size=size)}"


def cache_dir() -> Path:
    """Where released weights are kept: ``$CNX2LITE_CACHE``, else ``<torch hub dir>/checkpoints/cnx2lite``; a path
    that cannot be a folder is refused naming the setting it comes from."""
    folder = Path(os.environ.get(CACHE_ENV) or Path(torch.hub.get_dir()) / "checkpoints" / "cnx2lite")
    blocked = next((p for p in (folder, *folder.parents) if p.exists()), folder)
    if not blocked.is_dir():
        setting = f"${CACHE_ENV}" if os.environ.get(CACHE_ENV) else "torch's hub folder ($TORCH_HOME, $XDG_CACHE_HOME)"
        raise ValueError(f"the weights cache {folder} cannot be a folder ({blocked} is a file): set {setting} to a "
                         "folder")
    return folder


def weights_path(name: str) -> Path:
    """The local file of released weights ``name``, downloaded on first use and checked on every use."""
    url = weight_url(name)
    path = cache_dir() / url.rsplit("/", 1)[1]
    record = path.with_name(path.name + ".sha256.json")
    if path.is_file() and record.is_file():
        expected = json.loads(record.read_text())
        if path.stat().st_size == expected["size"] and _sha256(path) == expected["sha256"]:
            return path
        logger.warning("%s does not match the size and sha256 recorded at its download: downloading it again", path)
        _download(url, path)
    elif path.is_file():  # put there by hand (e.g. fetched elsewhere, offline): trusted like a first download
        logger.info("%s found without a download record: recording its size and sha256", path)
    else:
        _download(url, path)
    record.write_text(json.dumps({"url": url, "size": path.stat().st_size, "sha256": _sha256(path)}) + "\n")
    return path


def _download(url: str, path: Path) -> None:
    """``url`` -> ``path`` through a temporary file in the same folder, so an interrupted download leaves nothing."""
    if os.environ.get(OFFLINE, "0") not in ("", "0"):
        raise OSError(f"not downloading {url}: ${OFFLINE} is set; give a local path where you gave the name, or put "
                      f"the file at {path}")
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=path.parent, prefix=path.name + ".", suffix=".part", delete=False) as tmp:
        try:
            with urllib.request.urlopen(url, timeout=60) as response:
                shutil.copyfileobj(response, tmp)
                announced = response.headers.get("Content-Length")
        except (urllib.error.URLError, OSError) as e:
            tmp.close()
            os.unlink(tmp.name)
            reason = getattr(e, "reason", e)
            raise OSError(f"cannot download {url} ({reason}): without network access, download it elsewhere and "
                          f"give its path where you gave the name (/path/{path.name}), or put it at {path}") from None
    if problem := _download_problem(Path(tmp.name), announced):  # kept, it would be trusted on every later use
        os.unlink(tmp.name)
        raise OSError(f"cannot download {url}: {problem}; nothing was kept: try again, or download it elsewhere and "
                      f"give its path where you gave the name")
    os.replace(tmp.name, path)


def _download_problem(path: Path, announced: str | None) -> str | None:
    """Why a downloaded file is not the released weights (cut short of the ``Content-Length`` the server announced,
    or not a checkpoint ``torch.load`` reads, e.g. a proxy's HTML page), or None."""
    size = path.stat().st_size
    if announced and announced.isdigit() and int(announced) != size:
        return f"the transfer was cut short ({size} of {announced} bytes)"
    try:
        read_torch_file(path)
    except NotACheckpoint as e:
        return f"what arrived is not a checkpoint torch reads ({e.reason})"
    return None


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def save_pretrained(model: ConvNeXtV2, folder: str | os.PathLike) -> Path:
    """Write ``model``'s weights (``model.safetensors``) and architecture (``config.json``) into ``folder``, for
    :func:`cnx2lite.checkpoints.load_pretrained` (or :func:`load_saved`). Returns the folder. A folder inside a
    training run is refused: its ``config.json`` is the run's record."""
    from safetensors.torch import save

    folder = checked_path(folder, "folder")
    if folder.exists() and not folder.is_dir():
        raise ValueError(f"cannot save into {folder}: it is a file; give a folder")
    if (run := run_directory_of(folder)) is not None:
        raise ValueError(f"cannot save into {folder}: it is inside the training run {run}, whose config.json and "
                         "checkpoints belong to the run; choose a folder outside it")
    ours = _saved_config(folder / CONFIG_NAME) is not None
    theirs = [name for name in (CONFIG_NAME, SAFETENSORS_NAME) if (folder / name).exists() and not ours]
    if theirs:
        raise FileExistsError(f"cannot save into {folder}: its {' and '.join(theirs)} would be overwritten and "
                              f"{'are' if len(theirs) > 1 else 'is'} not a saved model's (no config.json naming its "
                              "architecture); choose another folder")
    folder.mkdir(parents=True, exist_ok=True)
    config = {"variant": getattr(model, "variant", None), "num_classes": model.num_classes,
              "in_chans": model.in_chans, **architecture(model),
              "depths": list(model.depths), "dims": list(model.dims)}
    # written by open() like config.json, so the file gets the umask's permissions (save_file's temporary file: 0600)
    for name in (SAFETENSORS_NAME, CONFIG_NAME):  # a link in their place is replaced, never written through
        if (folder / name).is_symlink():
            (folder / name).unlink()
    (folder / SAFETENSORS_NAME).write_bytes(save({k: v.detach().contiguous() for k, v in model.state_dict().items()}))
    (folder / CONFIG_NAME).write_text(json.dumps(config, indent=2) + "\n")
    return folder


def _saved_config(path: Path) -> dict | None:
    """The config.json :func:`save_pretrained` wrote at ``path`` (it names the architecture), else None."""
    try:
        config = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return config if isinstance(config, dict) and {"depths", "dims", "num_classes"} <= config.keys() else None


def is_saved_folder(path: str | os.PathLike) -> bool:
    return (Path(path) / SAFETENSORS_NAME).is_file()


def load_saved(folder: str | os.PathLike) -> tuple[dict[str, Tensor], dict]:
    """The state dict and config of a :func:`save_pretrained` folder."""
    folder = Path(folder)
    config_path = folder / CONFIG_NAME
    try:
        config = json.loads(config_path.read_text()) if config_path.is_file() else {}
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{config_path} is not a saved model's config (not JSON: {e})") from None
    if not isinstance(config, dict):
        raise ValueError(f"{config_path} is not a saved model's config (it holds a {type(config).__name__})")
    return read_safetensors(folder / SAFETENSORS_NAME), config


def is_safetensors_file(source: object) -> bool:
    """Whether ``source`` names a ``.safetensors`` file (ours, or e.g. timm's weights from the Hugging Face hub)."""
    return isinstance(source, (str, os.PathLike)) and os.fspath(source).endswith(".safetensors") and \
        os.path.isfile(source)


def read_safetensors(path: str | os.PathLike) -> dict[str, Tensor]:
    """The tensors of a ``.safetensors`` file; a truncated or corrupt one is a ValueError naming it."""
    from safetensors.torch import load_file

    try:
        return load_file(os.fspath(path))
    except Exception as e:  # safetensors raises its own SafetensorError for a truncated or corrupt file
        if isinstance(e, OSError):
            raise
        raise ValueError(f"{os.fspath(path)} is truncated or not a safetensors file ({e})") from None
