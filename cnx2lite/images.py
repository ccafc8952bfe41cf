"""Image files to upright 8-bit RGB PIL images: decoding (every mode, EXIF orientation, shrinking large JPEGs at
decode time), header-only sizes and the readable-or-not check the datasets run on their files."""
from __future__ import annotations

import os

import numpy as np
from PIL import ExifTags, Image, ImageOps

DECODE_ERRORS = (OSError, ValueError, SyntaxError, Image.DecompressionBombError)  # what a bad file raises in PIL


class CorruptImageError(OSError):
    """An image file that cannot be decoded; the message names the file."""


def load_image(path: str | os.PathLike, max_side: int | None = None, upright: bool = True) -> Image.Image:
    """Decode an image file to 8-bit RGB, upright; CorruptImageError names the file. Every mode is converted with its
    range scaled (:func:`to_rgb`: 16-bit and float images are not clipped to white or black) and the EXIF orientation
    is applied (a phone photo taken sideways is upright; ``upright=False``: the pixels as stored, for annotations made
    on them). With ``max_side``, an image whose shorter side is longer is shrunk to it (a JPEG is decoded at a reduced
    DCT scale first, then resized with an antialiased bicubic filter)."""
    try:
        with Image.open(path) as img:
            if max_side is not None and shrunk_size(img.size, max_side) != img.size:
                img.draft("RGB", shrunk_size(img.size, max_side))  # JPEG: the smallest DCT scale still >= that
            rgb = to_rgb(ImageOps.exif_transpose(img) if upright else img)
            size = rgb.size if max_side is None else shrunk_size(rgb.size, max_side)
            return rgb if rgb.size == size else rgb.resize(size, Image.Resampling.BICUBIC)
    except DECODE_ERRORS as e:
        raise _unreadable(path, e) from None


def to_rgb(img: Image.Image) -> Image.Image:
    """``img`` as 8-bit RGB. Palette with transparency goes through RGBA; 16-bit integer modes are scaled by 1/257
    (65535 -> 255); 32-bit integer images by 1/257 when their values fit 16 bits (how PNG's 16-bit greyscale often
    opens), else by their maximum; float images ('F') by 255 when their values lie in [0, 1], else their [min, max]
    is stretched to [0, 255]. PIL's own conversion of these modes clips at 255: a 16-bit photo would be white and a
    [0, 1] float one black."""
    if img.mode == "P" and "transparency" in img.info:
        return img.convert("RGBA").convert("RGB")
    if img.mode.startswith("I") or img.mode == "F":
        values = np.asarray(img, dtype=np.float64)
        finite = values[np.isfinite(values)]  # a NaN or inf pixel must not blank the image: it takes the nearest end
        low, high = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 0.0)
        values = np.nan_to_num(values, nan=low, posinf=high, neginf=low)
        if img.mode == "F":
            scaled = values * 255 if low >= 0 and high <= 1 else (values - low) * (255 / max(high - low, 1e-12))
        elif img.mode.startswith("I;16") or high > 255:
            scaled = values / 257 if high <= 65535 else values * (255 / high)
        else:
            scaled = values  # 32-bit integers holding 8-bit values
        return Image.fromarray(np.clip(np.rint(scaled), 0, 255).astype(np.uint8), "L").convert("RGB")
    return img.convert("RGB")


def oriented_size(path: str | os.PathLike) -> tuple[int, int]:
    """``(width, height)`` of the image :func:`load_image` returns, from the header alone (EXIF orientations 5-8 turn
    it by 90 degrees)."""
    return frame_sizes(path)[0]


def frame_sizes(path: str | os.PathLike) -> tuple[tuple[int, int], tuple[int, int]]:
    """``(width, height)`` upright (:func:`load_image`) and as stored (``upright=False``), from the header alone."""
    try:
        with Image.open(path) as img:
            width, height = img.size
            orientation = img.getexif().get(ExifTags.Base.Orientation, 1)
    except DECODE_ERRORS as e:
        raise _unreadable(path, e) from None
    return ((height, width) if orientation in (5, 6, 7, 8) else (width, height)), (width, height)


def open_image(path: str | os.PathLike) -> Image.Image:
    """``Image.open(path)`` (lazy: the header only), CorruptImageError naming the file where PIL cannot open it. For
    files read as they are (an annotation PNG's class indices), not as photos (:func:`load_image`)."""
    try:
        return Image.open(path)
    except DECODE_ERRORS as e:
        raise _unreadable(path, e) from None


def _unreadable(path: str | os.PathLike, error: Exception) -> CorruptImageError:
    return CorruptImageError(f"cannot read image {path}: {type(error).__name__}: {error}")


def shrunk_size(size: tuple[int, int], max_side: int) -> tuple[int, int]:
    """``(width, height)`` scaled down so that the shorter side is at most ``max_side`` (unchanged if it is)."""
    width, height = size
    scale = max_side / min(width, height)
    if scale >= 1:
        return width, height
    return max(1, round(width * scale)), max(1, round(height * scale))


def image_problem(path: str, decode: bool = True) -> str | None:
    """None if ``path`` is a readable image, else the reason. ``decode``: decode it (JPEGs at 1/8 scale, which still
    reads every byte); else only parse its header (PIL's verify: fast, no decode)."""
    try:
        with Image.open(path) as img:
            if decode:
                img.draft(None, (1, 1))  # no-op for other formats
                img.load()
            else:
                img.verify()
    except DECODE_ERRORS as e:
        return f"{type(e).__name__}: {e}"
    return None
