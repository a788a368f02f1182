"""Data sets in the layouts users have (issue 16), generated at test time: MNIST IDX files, the
IMDB text-folder layout and a table of image paths. Shared by tests/unit/test_layouts.py and
tests/cli/test_layouts_cli.py."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np
from PIL import Image


# -- ---------------------------------------------------------------------------
def digit_arrays(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(n, 28, 28) uint8 images (a bright bar whose place says the class) and (n,) labels 0-9."""
    rng = np.random.default_rng(seed)
    labels = np.arange(n, dtype=np.uint8) % 10
    images = rng.integers(0, 40, (n, 28, 28), dtype=np.uint8)
    for i, k in enumerate(labels):
        images[i, 2 + 2 * k : 4 + 2 * k, 4:24] = 255
    return images, labels


def idx_bytes(values: np.ndarray, magic: int | None = None) -> bytes:
    magic = magic if magic is not None else (2051 if values.ndim == 3 else 2049)
    return (
        struct.pack(">i", magic) + struct.pack(f">{values.ndim}i", *values.shape) + values.tobytes()
    )


def write_mnist(folder: Path, n: int = 40, gz: bool = False, sep: str = "-") -> Path:
    """The four MNIST files (train: n, t10k: n // 2) in `folder`."""
    folder.mkdir(parents=True, exist_ok=True)
    suffix = ".gz" if gz else ""
    for split, count, seed in (("train", n, 0), ("t10k", n // 2, 1)):
        images, labels = digit_arrays(count, seed)
        for kind, values, dim in (("images", images, 3), ("labels", labels, 1)):
            path = folder / f"{split}-{kind}{sep}idx{dim}-ubyte{suffix}"
            data = idx_bytes(values)
            path.write_bytes(gzip.compress(data) if gz else data)
    return folder


def write_imdb(root: Path, n: int = 6) -> Path:
    """aclImdb/{train,test}/{pos,neg}/*.txt as published, with unsup/ and the stray files."""
    words = {"pos": "great moving superb", "neg": "awful boring dull"}
    for split in ("train", "test"):
        for label, text in words.items():
            folder = root / split / label
            folder.mkdir(parents=True)
            for i in range(n):
                (folder / f"{i}_{7 if label == 'pos' else 2}.txt").write_text(
                    f"the film was {text} {i} <br /><br />", encoding="utf-8"
                )
        (root / split / "urls_pos.txt").write_text("http://example.invalid/\n")
        (root / split / "labeledBow.feat").write_text("0 0:1\n")
    (root / "train" / "unsup").mkdir()
    (root / "train" / "unsup" / "0_0.txt").write_text("no label here")
    (root / "imdb.vocab").write_text("the\n")
    (root / "imdbEr.txt").write_text("0.1\n")
    (root / "README").write_text("Large Movie Review Dataset\n")
    return root


def write_image_list(folder: Path, n: int = 20) -> Path:
    """img/<i>.png (28x28 grayscale) and images.csv (file,digit) in `folder`."""
    images, labels = digit_arrays(n)
    (folder / "img").mkdir(parents=True)
    rows = ["file,digit"]
    for i in range(n):
        Image.fromarray(images[i]).save(folder / "img" / f"{i}.png")
        rows.append(f"img/{i}.png,{labels[i]}")
    (folder / "images.csv").write_text("\n".join(rows) + "\n")
    return folder / "images.csv"
