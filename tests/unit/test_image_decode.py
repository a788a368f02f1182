"""Shrinking high-depth images in their own mode (image_decode.shrink_native): the pixels match the
full-size 8-bit conversion it replaces, within rounding."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from dlcli.data.image_decode import decode_image, shrink_native


def reference(im: Image.Image, size: int, divisor: float) -> np.ndarray:
    """The old path: the whole image to float32, scaled to 8 bits, then resized."""
    a = np.asarray(im, dtype=np.float32) / divisor
    small = Image.fromarray(np.clip(np.rint(a), 0, 255).astype(np.uint8), mode="L")
    w, h = small.size
    s = min(w, h)
    box = ((w - s) / 2, (h - s) / 2, (w + s) / 2, (h + s) / 2)
    return np.asarray(
        small.resize((size, size), Image.Resampling.BILINEAR, box=box, reducing_gap=3)
    )


@pytest.mark.parametrize(("mode", "top", "divisor"), [("I;16", 65535, 257.0), ("I", 60000, 257.0)])
def test_high_depth_shrunk_natively_matches_full_conversion(
    tmp_path: Path, mode: str, top: int, divisor: float
) -> None:
    w, h = 1100, 700  # shrunk by 700 // (3 * 16) = 14
    ramp = (np.add.outer(np.arange(h) * 3, np.arange(w) * 5) % (top + 1)).astype(np.int32)
    im = Image.fromarray(ramp.astype(np.uint16)) if mode == "I;16" else Image.fromarray(ramp)
    assert im.mode == mode
    small = shrink_native(im, 16)
    assert small.mode == "I" and small.size == (79, 50)  # ceil(1100 / 14), 700 / 14
    path = tmp_path / "deep.png" if mode == "I;16" else tmp_path / "deep.tif"
    im.save(path)
    got = decode_image(path, 16, 1)[0].astype(int)
    want = reference(im, 16, divisor).astype(int)
    assert np.abs(got - want).mean() < 0.5 and np.abs(got - want).max() <= 2  # rounding only


def test_small_and_8bit_images_are_left_alone() -> None:
    assert shrink_native(Image.new("I;16", (90, 90)), 16).size == (90, 90)  # 90 < 2 * 3 * 16
    big_l = Image.new("L", (500, 500))
    assert shrink_native(big_l, 16) is big_l  # Pillow's resize reduces 8-bit images itself
