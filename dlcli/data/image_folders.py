"""Image folders on disk for the image source (images.py): class folders and train/val/test
splits, files named for prediction, decoding whole folders through the cache (image_cache.py) or,
past the memory limit, streaming them (image_stream.py), and the channel statistics a preprocessor
is fitted with.
"""

from __future__ import annotations

import itertools
import math
import os
import sys
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from dlcli.console import note
from dlcli.data import image_cache as ic
from dlcli.data import image_stream
from dlcli.data.contracts import DataOptions, Prepared
from dlcli.data.image_cache import IMAGE_EXTENSIONS
from dlcli.data.image_stream import StreamingImages
from dlcli.data.split import split_rows
from dlcli.errors import InputError

SPLITS = {"train": "train", "val": "val", "valid": "val", "validation": "val", "test": "test"}
STATS_SAMPLE = 4096  # images used for the normalisation statistics
BAD_SHARE = 0.10  # training stops when more than this share of the image files is unreadable


@dataclass
class Listing:
    """Image files in class folders; `files` are posix paths relative to `root`."""

    root: Path
    files: list[str]
    labels: list[str]


def scan_classes(folder: Path, root: Path, source: str, flat_ok: bool = False) -> Listing:
    """`folder/<class>/**/<image>` -> Listing relative to `root`; notes for what is skipped.
    With `flat_ok` (unsupervised models), images directly in `folder` are one class too."""
    files, labels, hidden, other, loose = [], [], 0, Counter(), 0
    for entry in sorted(folder.iterdir()):
        if ic.is_hidden(entry.name):
            hidden += 1
        elif entry.is_dir():
            found, h, o = ic.walk_images(entry)
            hidden, other = hidden + h, other + o
            if not found:
                note(f"{source}: class folder '{entry.name}' has no images; skipped")
            prefix = entry.relative_to(root).as_posix()
            files += [f"{prefix}/{f}" for f in found]
            labels += [entry.name] * len(found)
        elif entry.suffix.lower() in IMAGE_EXTENSIONS:
            loose += 1
        else:
            other[entry.suffix.lower() or "(no extension)"] += 1
    ic.note_skipped(source, hidden, other)
    if loose and files:
        note(
            f"{source}: skipped {loose} image{'s' if loose != 1 else ''} outside the class folders"
        )
    if not files and loose and flat_ok:
        found = [e for e in sorted(folder.iterdir()) if e.suffix.lower() in IMAGE_EXTENSIONS]
        found = [e for e in found if e.is_file() and not ic.is_hidden(e.name)]
        files = [e.relative_to(root).as_posix() for e in found]
        labels = [folder.name] * len(files)
    if not files:
        if loose:
            raise InputError(
                f"{source}: images must be in one sub-folder per class ({source}/<class>/<image>)"
            )
        raise ic.no_images(source)
    return Listing(root, files, labels)


def find_splits(root: Path) -> dict[str, Path]:
    """{"train", "val", "test"} -> sub-folder, when `root` has a train/ folder; else {}."""
    found: dict[str, Path] = {}
    for entry in sorted(root.iterdir()):
        kind = SPLITS.get(entry.name.lower())
        if kind and kind not in found and entry.is_dir():
            found[kind] = entry
    return found if "train" in found else {}


def existing_folder(path: str) -> Path:
    p = Path(path)
    if not p.exists():
        raise InputError(f"{path}: no such file or folder")
    if not p.is_dir():
        raise InputError(f"{path}: not a folder of images ({path}/<class>/<image>)")
    return p


def batched(items: Iterable[str], n: int) -> Iterator[list[str]]:
    """Lists of `n` items (the last one shorter)."""
    it = iter(items)
    while batch := list(itertools.islice(it, n)):
        yield batch


def expand_inputs(paths: str | Sequence[str]) -> Iterator[str]:
    """Image files named by `paths`: files as given, folders walked, '-' read from stdin."""
    for p in [paths] if isinstance(paths, str) else paths:
        if p == "-":
            given = 0
            for line in sys.stdin:
                if line.strip():
                    given += 1
                    yield from _expand_one(line.rstrip("\r\n"))
            if not given:
                raise InputError("<stdin>: no image paths given (expected one path per line)")
        else:
            yield from _expand_one(p)


def _expand_one(p: str) -> Iterator[str]:
    path = Path(p)
    if path.is_dir():
        found, hidden, other = ic.walk_images(path)
        ic.note_skipped(p, hidden, other)
        if not found:
            raise ic.no_images(p)
        yield from (os.path.join(p, f) for f in found)
    elif path.is_file():
        yield p
    else:
        raise InputError(f"{p}: no such file or folder")


def channel_stats(x: torch.Tensor) -> tuple[list[float], list[float]]:
    """Per-channel mean and std of uint8 (N, C, H, W) in [0, 1] units, over at most STATS_SAMPLE
    evenly spaced images (plenty for two numbers per channel).

    Exact: a 256-bin histogram per channel (`torch.bincount` over ~1 MB chunks, no float pass over
    the pixels) gives the sums of the values and of their squares. The sample is gathered with
    `index_select`, several times faster than `x[idx]` on uint8 images.
    """
    c = x.shape[1]
    pick = torch.linspace(0, len(x) - 1, STATS_SAMPLE).long() if len(x) > STATS_SAMPLE else None
    n_images = len(pick) if pick is not None else len(x)
    hist = torch.zeros(c, 256, dtype=torch.int64)
    step = max(1, 2**20 // max(1, x[0].numel())) if len(x) else 1
    for i in range(0, n_images, step):
        part = x.index_select(0, pick[i : i + step]) if pick is not None else x[i : i + step]
        flat = part.transpose(0, 1).reshape(c, -1)  # (C, m*H*W), one copy of ~1 MB
        for k in range(c):
            hist[k] += torch.bincount(flat[k], minlength=256)
    levels = torch.arange(256, dtype=torch.float64) / 255.0
    n = hist.sum(1).clamp_min(1).to(torch.float64)  # values per channel
    mean = (hist * levels).sum(1) / n
    std = ((hist * levels * levels).sum(1) / n - mean * mean).clamp_min(0).sqrt()
    std = torch.where(std < 1e-6, torch.ones_like(std), std)  # a constant channel: leave unscaled
    return [round(float(v), 6) for v in mean], [round(float(v), 6) for v in std]


# -- loading a training folder ---------------------------------------------------------------
def val_listing(root: Path, splits: dict[str, Path], opts: DataOptions) -> Listing | None:
    """The validation images: --val FOLDER, else the val/ split, else None (split the training)."""
    if opts.val:
        folder = existing_folder(opts.val)
        return scan_classes(folder, folder, str(folder), opts.unsupervised)
    if "val" in splits:
        return scan_classes(splits["val"], root, str(splits["val"]), opts.unsupervised)
    return None


def load_listings(
    train: Listing, val: Listing | None, size: int, channels: int, classes: list[str], source: str
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, dict]:
    """Decode (one cache per folder), drop unreadable files. -> x (N, C, S, S) uint8, y (N,) int64
    (the index of each image's class in `classes`), is_val (N,) bool, stats."""
    groups = [train] if val is None else [train, val]
    if val is not None and val.root == train.root:  # one folder, one cache file
        groups = [Listing(train.root, train.files + val.files, train.labels + val.labels)]
    got = [ic.decode_folder(g.root, g.files, size, channels) for g in groups]
    for g in got:
        ic.report(g, size, channels)
    check_bad(groups, got, source)
    index = {c: i for i, c in enumerate(classes)}
    labels = [lab for g in groups for lab in g.labels]
    y = torch.tensor([index[lab] for lab in labels], dtype=torch.int64)
    is_val = torch.arange(len(labels)) >= len(train.files)
    x = got[0].pixels if len(got) == 1 else torch.cat([g.pixels for g in got])
    good = torch.ones(len(labels), dtype=torch.bool)
    offset = 0
    for g in got:
        good[[offset + i for i in g.bad]] = False
        offset += len(g.pixels)
    if not bool(good.all()):
        x, y, is_val = x[good], y[good], is_val[good]
    stats = {
        "decoded": sum(g.decoded for g in got),
        "cached": sum(g.cached for g in got),
        "bad": sum(len(g.bad) for g in got),
        "decode_seconds": round(sum(g.seconds for g in got), 3),
    }
    return x, y, is_val, stats


def check_bad(groups: list[Listing], got: list[ic.Decoded], source: str) -> None:
    """Notes naming unreadable files; an InputError when more than BAD_SHARE of them are bad."""
    bad = [
        (str(g.root / g.files[i]), why)
        for g, d in zip(groups, got, strict=True)
        for i, why in sorted(d.bad.items())
    ]
    if not bad:
        return
    total = sum(len(g.files) for g in groups)
    if len(bad) > BAD_SHARE * total:
        raise InputError(
            f"{source}: {len(bad)} of {total} image files cannot be read (more than {BAD_SHARE:.0%}); "
            f"first: {bad[0][0]} ({bad[0][1]})"
        )
    shown = "; ".join(f"{p} ({why})" for p, why in bad[:5])
    more = f"; and {len(bad) - 5} more" if len(bad) > 5 else ""
    note(f"skipped {len(bad)} unreadable image{'s' if len(bad) != 1 else ''}: {shown}{more}")


def split_images(
    x: torch.Tensor, y: torch.Tensor, opts: DataOptions, source: str
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Seeded stratified (train, val) split of the training folder's images (or of their
    indices): x_tr, y_tr, x_va, y_va."""
    tr, va = split_rows(
        y.numpy(),
        len(y),
        opts.val_split,
        opts.seed,
        stratify=True,
        source=source,
        what="images",
        hint="pass --val FOLDER",
    )
    tr_idx, va_idx = torch.from_numpy(tr), torch.from_numpy(va)
    # index_select: one memcpy per image, several times faster than x[idx] on uint8 images; x may
    # be the memory-mapped cache, so these are the only copies of the pixels
    return x.index_select(0, tr_idx), y[tr_idx], x.index_select(0, va_idx), y[va_idx]


# -- when the pixels do not fit in memory ---------------------------------------------------
def prepare_streaming(
    train: Listing,
    val: Listing | None,
    preprocessor: Any,
    opts: DataOptions,
    fit: bool,
    source: str,
) -> Prepared:
    """Listings -> Prepared with StreamingImages for train and val (`preprocessor`: an
    ImagePreprocessor; when `fit`, its mean and std are set here).

    A sample of up to image_stream.STATS_SAMPLE training images (SAMPLE_BYTES) is decoded now: its
    unreadable files are dropped (too many is an error, as in memory) and, when fitting, it gives
    the channel mean/std. With no val listing, the split is that of the in-memory path (same seed,
    same files).
    """
    channels, size = preprocessor.channels, preprocessor.size
    index = {c: i for i, c in enumerate(preprocessor.target.classes)}
    paths = [os.path.join(train.root, f) for f in train.files]
    y_all = torch.tensor([index[lab] for lab in train.labels], dtype=torch.int64)
    most = max(1, min(image_stream.STATS_SAMPLE, image_stream.SAMPLE_BYTES // (channels * size**2)))
    sample = list(range(0, len(paths), math.ceil(len(paths) / most)))  # spread over the classes
    pixels, bad = ic.decode_files([paths[i] for i in sample], size, channels)
    picked = Listing(train.root, [train.files[i] for i in sample], [])
    check_bad([picked], [ic.Decoded(torch.from_numpy(pixels), bad)], source)
    keep = torch.ones(len(paths), dtype=torch.bool)
    keep[[sample[k] for k in bad]] = False
    rows = torch.nonzero(keep).squeeze(1)  # (n,) training-folder files still in play
    if val is None:
        tr, y_tr, va, y_va = split_images(rows, y_all[rows], opts, source)
        x_va = StreamingImages([paths[i] for i in va.tolist()], y_va, channels, size)
    else:
        tr, y_tr = rows, y_all[rows]
        y_va = torch.tensor([index[lab] for lab in val.labels], dtype=torch.int64)
        val_paths = [os.path.join(val.root, f) for f in val.files]
        x_va = StreamingImages(val_paths, y_va, channels, size)
    x_tr = StreamingImages([paths[i] for i in tr.tolist()], y_tr, channels, size)
    if fit:
        in_train = torch.zeros(len(paths), dtype=torch.bool)
        in_train[tr] = True
        chosen = [k for k, i in enumerate(sample) if in_train[i] and k not in bad]
        preprocessor.mean, preprocessor.std = channel_stats(torch.from_numpy(pixels[chosen]))
    n = x_tr.rows + x_va.rows
    image_stream.note_streaming(n, channels, size, x_tr.workers)
    info = {"rows": n, "streaming": True, "workers": x_tr.workers, "decoded": len(sample)}
    return Prepared(preprocessor, x_tr, y_tr, x_va, y_va, {**info, "cached": 0, "bad": len(bad)})
