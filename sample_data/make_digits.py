"""Regenerate sample_data/digits/ (run once; the output is committed).

Source: the UCI Optical Recognition of Handwritten Digits data set (Alpaydin & Kaynak 1998), as
bundled with scikit-learn (`sklearn.datasets.load_digits`): 1,797 images of 8x8 pixels, values
0..16, ten classes. Each image is scaled to 0..255 grayscale, upscaled to 16x16 (bilinear) and
written as a PNG into an image-folder layout, split 80/20 with a seeded stratified split:

    digits/train/<digit>/NNNN.png    (1,437 images)
    digits/test/<digit>/NNNN.png     (360 images)

NNNN is the image's index in the original data set. scikit-learn is a development dependency only.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
from PIL import Image

HERE = Path(__file__).parent
OUT = HERE / "digits"
SIDE = 16  # pixels of each written image (square)


def to_image(pixels: np.ndarray) -> Image.Image:
    """(8, 8) values 0..16 -> 16x16 grayscale PIL image, 0..255."""
    grey = np.clip(np.rint(pixels * (255.0 / 16.0)), 0, 255).astype(np.uint8)
    return Image.fromarray(grey, mode="L").resize((SIDE, SIDE), Image.Resampling.BILINEAR)


def main() -> None:
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    index = np.arange(len(digits.target))
    train_idx, test_idx = train_test_split(
        index, test_size=0.2, stratify=digits.target, random_state=0
    )
    if OUT.exists():
        shutil.rmtree(OUT)
    for split, idx in (("train", train_idx), ("test", test_idx)):
        for i in sorted(idx):
            folder = OUT / split / str(digits.target[i])
            folder.mkdir(parents=True, exist_ok=True)
            to_image(digits.images[i]).save(folder / f"{i:04d}.png", optimize=True)
    total = sum(p.stat().st_size for p in OUT.rglob("*.png"))
    print(f"wrote {len(index)} images ({total / 1e6:.2f} MB) to {OUT}")


if __name__ == "__main__":
    main()
