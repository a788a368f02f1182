"""One image file -> (C, S, S) uint8 with Pillow: first frame, EXIF orientation, any mode to 8 bits,
shorter side to S and a centre crop, transparency on white, then L or RGB (`decode_image`), and the
cheap look at a file that chooses the default size and channels (`probe_image`).

Huge high-depth images (16-bit, 32-bit integer, float) are shrunk by a whole factor in their own
mode before any conversion to float or 8 bits, so a 20000x20000 16-bit PNG costs about its decoded
size (2 bytes a pixel) and never a float32 copy of it (`shrink_native`).
"""

from __future__ import annotations

import contextlib
import math
import os
import warnings
from collections import Counter
from collections.abc import Iterator
from typing import Any

import numpy as np
from PIL import Image, ImageOps

from dlcli.console import note
from dlcli.errors import InputError

GRAY_MODES = frozenset({"1", "L", "LA", "La", "I", "F", "I;16", "I;16L", "I;16B", "I;16N"})
PIXEL_LIMIT = 20000 * 20000  # images are read quietly up to this many pixels ...
MAX_PIXELS = 2 * PIXEL_LIMIT  # ... and refused above this (a decompression bomb)
BIG_PIXELS = 4096 * 4096  # images this large are decoded at most two at a time (memory)
REDUCING_GAP = 3  # as Pillow's resize(reducing_gap=3.0): shrink by whole factors down to 3x S
STRIP_PIXELS = 1 << 22  # a 16-bit image is widened to 32 bits this many pixels at a time
HIGH_DEPTH = ("I", "F")  # with every "I;16*": no 8-bit mode holds their values
IMAGE_EXTENSIONS = frozenset(  # the files read as images (case-insensitive)
    [".png", ".jpg", ".jpeg", ".jpe", ".jfif", ".bmp", ".dib", ".gif", ".tif", ".tiff", ".webp"]
)


class BadImage(Exception):
    """A file that Pillow cannot decode (corrupt, truncated, empty or not an image)."""


@contextlib.contextmanager
def pixel_limit() -> Iterator[None]:
    """Allow big images (up to MAX_PIXELS) only while decoding, with Pillow's warnings silenced:
    a big image is no bomb below the limit, a corrupt EXIF block only loses the orientation, and an
    unreadable file is reported by name (BadImage). Entered once around many decoding threads."""
    old = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = PIXEL_LIMIT
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            warnings.filterwarnings("ignore", module=r"PIL(\.|$)")
            yield
    finally:
        Image.MAX_IMAGE_PIXELS = old


def _is_high_depth(mode: str) -> bool:
    return mode in HIGH_DEPTH or mode.startswith("I;16")


def _depth_divisor(im: Image.Image) -> float | None:
    """What a high-depth image's values are divided by to give 0..255, read from the full image.

    I;16: 0..65535 -> 0..255. I: as I;16 when any value exceeds 255, else taken as 8-bit values.
    F: None, decided after the shrink (0..1 when no value exceeds 1, else 0..255).
    """
    if im.mode.startswith("I;16"):
        return 257.0
    if im.mode == "I":
        top = im.getextrema()[1]  # no copy of the pixels
        return 257.0 if float(top) > 255 else 1.0  # type: ignore[arg-type]
    return None


def shrink_native(im: Image.Image, size: int) -> Image.Image:
    """A high-depth image whose shorter side is at least 2 * 3 * `size`, reduced by a whole factor
    (box average) in its own mode, so its shorter side stays >= 3 * `size` as Pillow's own
    reducing_gap would leave it. Other images are returned as they are.

    Pillow cannot reduce I;16 images: they are widened to 32-bit I one strip of rows at a time,
    each strip reduced on its own, so only ~STRIP_PIXELS extra pixels exist at once.
    """
    w, h = im.size
    factor = min(w, h) // (REDUCING_GAP * size)
    if factor < 2 or not _is_high_depth(im.mode):
        return im
    if not im.mode.startswith("I;16"):
        return im.reduce(factor)  # I and F reduce natively
    out = Image.new("I", (math.ceil(w / factor), math.ceil(h / factor)))
    rows = factor * max(1, STRIP_PIXELS // (w * factor))  # a whole number of factor-row blocks
    for top in range(0, h, rows):
        strip = im.crop((0, top, w, min(h, top + rows))).convert("I")
        out.paste(strip.reduce(factor), (0, top // factor))
    return out


def _high_depth_to_l(im: Image.Image, divisor: float | None) -> Image.Image:
    """16-bit, 32-bit integer and float images -> 8-bit L, scaled (not clipped) to 0..255: values
    divided by `divisor`; a float image (None) is taken as 0..1 when no value exceeds 1, else as
    0..255."""
    a = np.nan_to_num(np.asarray(im, dtype=np.float32))  # (H, W), at most ~6S x 6S after shrinking
    if divisor is None:
        if (float(a.max()) if a.size else 0.0) <= 1.0:
            a = a * 255.0
    elif divisor != 1.0:
        a = a / divisor
    return Image.fromarray(np.clip(np.rint(a), 0, 255).astype(np.uint8), mode="L")


def _to_resizable(im: Image.Image, size: int) -> Image.Image:
    """Any Pillow mode -> one of L, LA, RGB, RGBA (alpha kept until after the resize); high-depth
    images are shrunk in their own mode first (shrink_native)."""
    mode = im.mode
    if mode in ("L", "LA", "RGB", "RGBA"):
        return im
    if _is_high_depth(mode):
        divisor = _depth_divisor(im)
        return _high_depth_to_l(shrink_native(im, size), divisor)
    if mode == "1":
        return im.convert("L")
    if mode == "La":
        return im.convert("LA")
    if mode in ("P", "PA", "RGBa") and (mode != "P" or "transparency" in im.info):
        return im.convert("RGBA")
    return im.convert("RGB")  # P, CMYK, YCbCr, LAB, HSV, RGBX


def _fit(im: Image.Image, size: int) -> Image.Image:
    """Shorter side -> `size`, center crop to (size, size); bilinear, reduced in steps for speed."""
    w, h = im.size
    s = min(w, h)
    box = ((w - s) / 2, (h - s) / 2, (w + s) / 2, (h + s) / 2)
    return im.resize((size, size), Image.Resampling.BILINEAR, box=box, reducing_gap=REDUCING_GAP)


def _flatten(im: Image.Image, channels: int) -> Image.Image:
    """Composite transparency on white, then convert to L (channels=1) or RGB."""
    if im.mode in ("LA", "RGBA"):
        white = Image.new("RGBA", im.size, (255, 255, 255, 255))
        white.alpha_composite(im.convert("RGBA"))
        im = white
    return im.convert("L" if channels == 1 else "RGB")


def fit_pixels(gray: np.ndarray, size: int, channels: int) -> np.ndarray:
    """One (H, W) uint8 grayscale image already in memory (an IDX file's) -> (channels, size,
    size) uint8 by the same resize, crop and conversion as a decoded file."""
    arr = np.asarray(_flatten(_fit(Image.fromarray(gray, mode="L"), size), channels))
    return arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1)


def _check_pixels(im: Image.Image) -> None:
    w, h = im.size
    if w * h > MAX_PIXELS:
        raise BadImage(f"{w}x{h} is more than the limit of {MAX_PIXELS:,} pixels for one image")


def decode_image(
    path: str | os.PathLike[str], size: int, channels: int, gate: Any = None
) -> np.ndarray:
    """One image file -> (channels, size, size) uint8. Raises BadImage with a short reason.

    `gate` (a semaphore) bounds how many huge images (> BIG_PIXELS) are decoded at once.
    """
    try:
        with Image.open(path) as im:
            _check_pixels(im)
            im.draft(None, (size, size))  # JPEG: decode at 1/2..1/8 scale, still >= size
            big = gate is not None and im.size[0] * im.size[1] > BIG_PIXELS
            with gate if big else contextlib.nullcontext():
                im.load()  # corrupt or truncated data fails here
                with contextlib.suppress(Exception):  # a broken EXIF block only loses orientation
                    ImageOps.exif_transpose(im, in_place=True)
                out = _flatten(_fit(_to_resizable(im, size), size), channels)
            arr = np.asarray(out)  # (S, S) or (S, S, 3)
    except BadImage:
        raise
    except Image.DecompressionBombError:
        raise BadImage(f"more than the limit of {MAX_PIXELS:,} pixels for one image") from None
    except Exception as exc:  # Pillow raises many kinds on corrupt files; none may stop the run
        raise BadImage(_reason(exc)) from None
    return arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1)


def _reason(exc: Exception) -> str:
    if isinstance(exc, MemoryError):
        return "out of memory while decoding it"
    text = str(exc).split("\n")[0]
    if text.startswith("cannot identify image file"):
        return "not an image Pillow can read"
    return text or type(exc).__name__


def probe_image(path: str | os.PathLike[str], check_gray: bool) -> tuple[int, bool] | None:
    """(longer side, grayscale-like) of an image without decoding it fully; None if unreadable.

    A colour-mode image counts as grayscale when its channels agree (within 2 levels, for JPEG
    rounding) on a small thumbnail; that is only checked when `check_gray`.
    """
    try:
        with Image.open(path) as im:
            side = max(im.size)
            if im.mode in GRAY_MODES:
                return side, True
            if not check_gray:
                return side, False
            im.draft(None, (64, 64))
            small = _flatten(_fit(_to_resizable(im, 32), 32), 3)
            a = np.asarray(small).astype(np.int16)  # (32, 32, 3)
            gray = (
                np.abs(a[..., 0] - a[..., 1]).max() <= 2
                and np.abs(a[..., 1] - a[..., 2]).max() <= 2
            )
            return side, bool(gray)
    except Exception:  # unreadable: reported when it is decoded
        return None


# -- what a folder walk reports (shared by the trainer's folders and the torch-free runtime) --
def is_hidden(name: str) -> bool:
    return name.startswith(".") or name == "__MACOSX"


def no_images(source: str) -> InputError:
    return InputError(
        f"{source}: no images found (looked for {', '.join(sorted(IMAGE_EXTENSIONS))})"
    )


def note_skipped(source: str, hidden: int, other: Counter) -> None:
    """One note counting the hidden entries and non-image files that were passed over."""
    s, n = "s" if hidden != 1 else "", sum(other.values())
    parts = [f"{hidden} hidden file{s} or folder{s}"] if hidden else []
    if n:
        parts.append(f"{n} non-image file{'s' if n != 1 else ''} ({', '.join(sorted(other))})")
    if parts:
        note(f"{source}: skipped {' and '.join(parts)}")
