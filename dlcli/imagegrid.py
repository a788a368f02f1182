"""Image tensors -> PNG files with Pillow: a grid of many images (GAN samples, autoencoder
reconstructions) or one file per image. Every file is written atomically. Torch-free: it takes
torch tensors or numpy arrays, so the ONNX runtime writes GAN samples with it too."""

from __future__ import annotations

import math
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from dlcli.fileio import atomic_path

PathLike = str | os.PathLike[str]
MODES = {1: "L", 2: "LA", 3: "RGB", 4: "RGBA"}  # channels -> Pillow mode
MIN_TILE = 48  # grid tiles smaller than this are enlarged (nearest), so 8x8 digits stay visible


def to_uint8(images: Any) -> np.ndarray:
    """(N, C, H, W) float in [0, 1], a torch tensor or a numpy array -> (N, H, W, C) uint8 (values
    outside [0, 1] are clipped; halves round to even, as torch.round)."""
    if hasattr(images, "detach"):  # a torch tensor, on any device
        images = images.detach().float().cpu().numpy()
    images = np.asarray(images, dtype=np.float32)
    if images.ndim != 4 or images.shape[1] not in MODES:
        raise ValueError(
            f"expected (N, C, H, W) images with 1-4 channels, got {tuple(images.shape)}"
        )
    pixels = np.round(np.clip(images, 0, 1) * np.float32(255)).astype(np.uint8)
    return pixels.transpose(0, 2, 3, 1)


def _pil(pixels: np.ndarray):  # (H, W, C) uint8 -> PIL image
    from PIL import Image

    return Image.fromarray(
        pixels[..., 0] if pixels.shape[2] == 1 else pixels, MODES[pixels.shape[2]]
    )


def write_grid(path: PathLike, images: Any, nrow: int | None = None, pad: int = 2) -> Path:
    """Images (N, C, H, W) float in [0, 1] -> one PNG, `nrow` images per row (default: a square),
    `pad` pixels of black between tiles; small tiles are enlarged to at least MIN_TILE pixels."""
    return _save_grid(path, to_uint8(images), nrow, pad)


def _save_grid(path: PathLike, pixels: np.ndarray, nrow: int | None, pad: int) -> Path:
    """(N, H, W, C) uint8 tiles -> one PNG (see `write_grid`)."""
    target = Path(path)
    with atomic_path(target) as tmp:
        _pil(_tiled(pixels, nrow, pad)).save(tmp, format="PNG")
    return target


def grid_png(tiles: np.ndarray) -> bytes:
    """(N, H, W, C) uint8 tiles -> the bytes of the PNG `write_samples` writes for them (`dl
    serve` answers a GAN's samples with it)."""
    import io

    buf = io.BytesIO()
    _pil(_tiled(tiles, None, 2)).save(buf, format="PNG")
    return buf.getvalue()


def _tiled(pixels: np.ndarray, nrow: int | None, pad: int) -> np.ndarray:
    """(N, H, W, C) uint8 tiles -> one (rows, cols, C) uint8 picture (see `write_grid`)."""
    n, h, w, c = pixels.shape
    nrow = nrow or max(1, math.ceil(math.sqrt(n)))
    rows = max(1, math.ceil(n / nrow))
    scale = max(1, math.ceil(MIN_TILE / max(1, min(h, w))))
    th, tw = h * scale, w * scale
    grid = np.zeros((rows * (th + pad) + pad, nrow * (tw + pad) + pad, c), dtype=np.uint8)
    for i in range(n):
        r, col = divmod(i, nrow)
        tile = pixels[i].repeat(scale, axis=0).repeat(scale, axis=1)  # (th, tw, C)
        y, x = pad + r * (th + pad), pad + col * (tw + pad)
        grid[y : y + th, x : x + tw] = tile
    return grid


def write_images(
    folder: PathLike, images: Any, prefix: str = "sample", start: int = 0, total: int = 0
) -> list[Path]:
    """Images (N, C, H, W) float in [0, 1] -> folder/<prefix>_0000.png, ... at their own size,
    numbered from `start` (written in batches: `total` images in all sets the number width)."""
    pixels = to_uint8(images)
    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    digits = max(4, len(str(max(total, start + len(pixels)) - 1)))
    paths = []
    for i, img in enumerate(pixels, start):
        target = out / f"{prefix}_{i:0{digits}d}.png"
        with atomic_path(target) as tmp:
            _pil(img).save(tmp, format="PNG")
        paths.append(target)
    return paths


def write_samples(
    batches: Iterable[tuple[int, Any]],
    total: int,
    output: PathLike | None,
    output_dir: PathLike | None,
) -> None:
    """Generated images as they come, (first index, (N, C, H, W) batch): each batch to
    `output_dir` at once (nothing kept), and, for `output`, one grid of all `total` (callers bound
    `total`; the tiles are kept as uint8)."""
    grid = []
    for start, images in batches:
        if output_dir:
            write_images(output_dir, images, "sample", start, total)
        if output:
            grid.append(to_uint8(images))
    if output:
        _save_grid(output, np.concatenate(grid), None, 2)
