"""MNIST's IDX files: a folder holding `train-images-idx3-ubyte`, `train-labels-idx1-ubyte` and the
`t10k-*` pair (each gzipped `.gz` or not; `-idx3-ubyte` or `.idx3-ubyte` as found in the wild).

An IDX file is a big-endian header (magic number 2051 for images, 2049 for labels: 0x08 = uint8
and the number of dimensions; then each dimension as int32) and the body, one byte per value. The
pixels are read with `np.frombuffer` straight into the (N, 1, H, W) uint8 tensor the image cache
holds: no per-image decode. A wrong magic number, dimensions, body length (truncated or too long),
a broken gzip stream, or counts that differ between images and labels are one error naming the file.
Reading is bounded by the header: never more than the declared body plus one byte is decompressed.
"""

from __future__ import annotations

import gzip
import itertools
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from dlcli.errors import InputError

MAGIC = {"images": 2051, "labels": 2049}  # 0x0803, 0x0801: uint8 values, 3 or 1 dimensions
PIECE = 64 << 20  # bytes read at once
MAX_VALUES = 1 << 34  # 16 GiB of uint8: a header claiming more is refused before any reading


@dataclass
class IdxPair:
    """One split of an IDX folder: the images and labels files."""

    split: str  # "train" or "t10k"
    images: Path
    labels: Path


def find_pairs(folder: Path) -> dict[str, IdxPair]:
    """{"train", "t10k"} -> IdxPair for each split whose two files are in `folder`: a few stat
    calls for the known spellings, never a listing of the folder (it may hold a million images)."""
    found: dict[tuple[str, str], Path] = {}
    for split in ("train", "t10k"):
        for kind, dim in (("images", 3), ("labels", 1)):
            for sep, gz in itertools.product("-.", ("", ".gz")):
                path = folder / f"{split}-{kind}{sep}idx{dim}-ubyte{gz}"
                if (split, kind) not in found and path.is_file():
                    found[(split, kind)] = path
    return {
        split: IdxPair(split, found[(split, "images")], found[(split, "labels")])
        for split in ("train", "t10k")
        if (split, "images") in found and (split, "labels") in found
    }


def is_idx_folder(path: str) -> bool:
    """A folder holding at least the training pair."""
    return "train" in find_pairs(Path(path))


def read_idx(path: Path, kind: str) -> np.ndarray:
    """The values of one IDX file of `kind` ("images": (N, H, W); "labels": (N,)) as uint8."""
    opener = gzip.open if path.name.lower().endswith(".gz") else open
    ndim = 3 if kind == "images" else 1
    try:
        with opener(path, "rb") as fh:
            head = fh.read(4)
            if len(head) < 4:
                raise InputError(f"{path}: too short for an IDX file ({len(head)} bytes)")
            magic = struct.unpack(">i", head)[0]
            if magic != MAGIC[kind]:
                raise InputError(
                    f"{path}: magic number {magic} is not {MAGIC[kind]} (IDX {kind} of uint8)",
                    "is this an MNIST IDX file?",
                )
            raw = fh.read(4 * ndim)
            if len(raw) < 4 * ndim:
                raise InputError(f"{path}: the header ends before its {ndim} dimension(s)")
            dims = struct.unpack(f">{ndim}i", raw)
            expected = int(np.prod(dims, dtype=np.int64))
            if min(dims) < 0 or (ndim == 3 and min(dims[1:]) < 1) or expected > MAX_VALUES:
                raise InputError(f"{path}: impossible dimensions {list(dims)} in the header")
            body = read_into(fh, expected + 1)  # one more: a longer body is found too
    except (OSError, EOFError, zlib.error) as exc:  # a broken gzip stream, an unreadable file
        raise InputError(f"{path}: cannot read ({exc})") from None
    if len(body) != expected:  # body: the values read, at most one past the declared end
        what = "truncated" if len(body) < expected else "longer than its header says"
        dims_text = " x ".join(map(str, dims))
        raise InputError(
            f"{path}: {what}: {dims_text} needs {expected:,} bytes of values, "
            f"found {'more' if len(body) > expected else f'{len(body):,}'}"
        )
    return body.reshape(dims)


def read_into(fh: Any, n: int) -> np.ndarray:
    """Up to `n` bytes of `fh` as a writable uint8 array, read straight into it in pieces of at
    most PIECE bytes, so a header that claims more than the file holds costs no more memory."""
    pieces, left = [], n
    while left:
        piece = np.empty(min(left, PIECE), dtype=np.uint8)
        view, got = memoryview(piece), 0
        while got < len(piece) and (k := fh.readinto(view[got:])):
            got += k
        pieces.append(piece[:got])
        left -= got
        if got < len(piece):  # the end of the file
            break
    return pieces[0] if len(pieces) == 1 else np.concatenate(pieces)


def to_pixels(images: np.ndarray, size: int, channels: int) -> np.ndarray:
    """(N, 1, H, W) uint8 -> (N, channels, size, size) uint8: the array itself at its own size
    and one channel, else each image resized as a decoded file would be (image_decode.py)."""
    n, _, h, w = images.shape
    if h == w == size:
        return images if channels == 1 else np.repeat(images, channels, axis=1)
    from dlcli.data.image_decode import fit_pixels

    out = np.empty((n, channels, size, size), dtype=np.uint8)
    for i in range(n):
        out[i] = fit_pixels(images[i, 0], size, channels)
    return out


def read_pair(pair: IdxPair) -> tuple[np.ndarray, np.ndarray]:
    """((N, 1, H, W) uint8 images, (N,) uint8 labels) of one split; counts must agree."""
    images, labels = read_idx(pair.images, "images"), read_idx(pair.labels, "labels")
    if len(images) != len(labels):
        raise InputError(
            f"{pair.labels}: {len(labels):,} labels for {len(images):,} images in {pair.images.name}"
        )
    if not len(images):
        raise InputError(f"{pair.images}: holds no images")
    return images[:, None], labels


def labelled_pair(path: str) -> IdxPair:
    """The pair evaluate and predict read: t10k when present, else the training pair."""
    pairs = find_pairs(Path(path))
    return pairs.get("t10k") or pairs["train"]
