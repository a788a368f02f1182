"""Image folders: `root/<class>/...` -> uint8 tensors (N, C, S, S) plus the fitted `ImagePreprocessor`.

The preprocessor (plain-data state) remembers the classes, the channel count, the side S, the resize
policy and the per-channel mean/std; its `ImageTransform` module (uint8 -> standardised float)
runs inside the saved and exported model. Decoding and the on-disk cache live in image_cache.py.
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

import pandas as pd
import torch
from torch import nn

from dlcli.console import note
from dlcli.data import image_cache as ic
from dlcli.data import image_store, image_stream
from dlcli.data.image_cache import IMAGE_EXTENSIONS, RESIZE_POLICY
from dlcli.data.sources import (
    PREPROCESSORS,
    DataOptions,
    Prepared,
    register_source,
    stratified_split,
)
from dlcli.data.target import Target
from dlcli.errors import InputError, UsageError

TARGET_NAME = "label"  # the label column of evaluation frames: the class folder's name
SPLITS = {"train": "train", "val": "val", "valid": "val", "validation": "val", "test": "test"}
BATCH = 256  # images per chunk when streaming new inputs (predict, evaluate)
STATS_SAMPLE = 4096  # images used for the normalisation statistics
BAD_SHARE = 0.10  # training stops when more than this share of the image files is unreadable


@dataclass
class ImageOptions:
    """Image-specific flags (`DataOptions.extra["image"]`)."""

    image_size: int | None = None  # square side; default: from the data
    grayscale: bool = False  # force one channel
    channels: int | None = None  # force 1 or 3 (transfer learning keeps the source model's)


class ImageTransform(nn.Module):
    """(N, C, H, W) uint8 0..255 or float 0..1 -> float32 (x - mean) / std per channel."""

    def __init__(self, mean: Sequence[float], std: Sequence[float]) -> None:
        super().__init__()
        self.register_buffer(
            "mean", torch.tensor(list(mean), dtype=torch.float32).view(1, -1, 1, 1)
        )
        self.register_buffer("std", torch.tensor(list(std), dtype=torch.float32).view(1, -1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (N, C, H, W) -> (N, C, H, W)
        if x.dtype == torch.uint8:  # a dtype branch: fixed when traced for ONNX
            x = x.to(self.mean.dtype) / 255.0
        return (x - self.mean) / self.std


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


# -- finding the images ----------------------------------------------------------------------
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


def choose_shape(listing: Listing, opts: ImageOptions) -> tuple[int, int]:
    """(size, channels): given, or from a sample of the training images."""
    forced = 1 if opts.grayscale else opts.channels
    if opts.image_size and forced:
        return opts.image_size, forced
    step = max(1, math.ceil(len(listing.files) / ic.PROBE_SAMPLE))  # probe_sample's own spread
    paths = [os.path.join(listing.root, f) for f in listing.files[::step]]  # only those probed
    sides, gray = image_store.remembered_probe(paths, not opts.grayscale, ic.probe_sample)
    return opts.image_size or ic.default_size(sides), forced or (1 if gray else 3)


# -- the preprocessor -----------------------------------------------------------------------------
class ImagePreprocessor:
    """Classes, channels, side and per-channel mean/std; re-applies the same decoding to new images."""

    kind = "image"
    encode_once = False  # the trainer keeps uint8 inputs and preprocesses (and augments) per batch
    prediction_columns = ("confidence",)

    def __init__(
        self,
        target: Target,
        channels: int,
        size: int,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
        resize: str = RESIZE_POLICY,
    ) -> None:
        self.target, self.resize = target, resize
        self.channels, self.size = int(channels), int(size)
        self.mean = list(mean) if mean is not None else [0.0] * self.channels
        self.std = list(std) if std is not None else [1.0] * self.channels

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return (self.channels, self.size, self.size)

    @property
    def raw_shape(self) -> tuple[int, int, int]:
        return self.input_shape

    def preprocess_module(self) -> ImageTransform:
        return ImageTransform(self.mean, self.std)

    def augmenter(self, spec: str) -> nn.Module:
        from dlcli.data.augment import make_augment

        return make_augment(spec, self.size)

    def decode_strict(self, paths: list[str]) -> torch.Tensor:
        """(N, C, S, S) uint8 for `paths`; an unreadable file is an InputError naming it."""
        pixels, bad = ic.decode_files(paths, self.size, self.channels)
        if bad:
            i = min(bad)
            raise InputError(f"{paths[i]}: cannot read image ({bad[i]})")
        return torch.from_numpy(pixels)

    def iter_inputs(
        self, paths: str | Sequence[str], keep: bool = False
    ) -> Iterator[tuple[pd.DataFrame, torch.Tensor]]:
        """(frame with a 'path' column, (n, C, S, S) uint8) per chunk of ~BATCH images.

        Each path is an image file, a folder (its images, recursively, sorted) or '-' (image paths
        on stdin, one a line). The path column is always there, so `keep` changes nothing.
        """
        for batch in _batched(expand_inputs(paths), BATCH):
            yield pd.DataFrame({"path": batch}), self.decode_strict(batch)

    def iter_labelled(
        self, path: str, known_only: bool = True
    ) -> Iterator[tuple[pd.DataFrame, torch.Tensor]]:
        """(frame with 'path' and the label column, (n, C, S, S) uint8) per chunk of `path/<class>/...`
        (or of `path/test/<class>/...` when there is such a folder). `known_only`: a class folder
        the model was not trained on is an error (not so for anomaly detection)."""
        root = existing_folder(path)
        if (root / "test").is_dir() and "test" not in self.target.classes:
            root = root / "test"
        listing = scan_classes(root, root, str(root))
        if known_only:
            self.check_classes(listing, str(root))
        for i in range(0, len(listing.files), BATCH):
            files = [os.path.join(root, rel) for rel in listing.files[i : i + BATCH]]
            frame = pd.DataFrame({"path": files, self.target.name: listing.labels[i : i + BATCH]})
            yield frame, self.decode_strict(files)

    def check_classes(self, listing: Listing, source: str) -> None:
        known = set(self.target.classes)
        unknown = sorted(set(listing.labels) - known)
        if unknown:
            shown = ", ".join(self.target.classes[:10]) + (", ..." if len(known) > 10 else "")
            raise InputError(
                f"{source}: class folder '{unknown[0]}' is not a class the model was trained on (classes: {shown})"
            )

    def to_state(self) -> dict:
        return {
            "kind": self.kind,
            "target": self.target.to_state(),
            "channels": self.channels,
            "size": self.size,
            "mean": [float(v) for v in self.mean],
            "std": [float(v) for v in self.std],
            "resize": self.resize,
            "interpolation": ic.INTERPOLATION,
        }

    @classmethod
    def from_state(cls, state: dict) -> ImagePreprocessor:
        resize = state.get("resize", RESIZE_POLICY)
        if resize != RESIZE_POLICY:
            raise InputError(
                f"model file uses image resize policy '{resize}' that this dl does not know"
            )
        target = Target.from_state(state["target"])
        return cls(target, state["channels"], state["size"], state["mean"], state["std"], resize)


PREPROCESSORS["image"] = ImagePreprocessor


def _batched(items: Iterable[str], n: int) -> Iterator[list[str]]:
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


# -- the training source ---------------------------------------------------------------------
def image_options(opts: DataOptions) -> ImageOptions:
    got = (getattr(opts, "extra", None) or {}).get("image") or ImageOptions()
    got = ImageOptions(**got) if isinstance(got, dict) else got
    if got.image_size is not None and not 4 <= got.image_size <= 2048:
        raise UsageError(f"--image-size must be between 4 and 2048, got {got.image_size}")
    return got


@register_source("images")
class ImageFolderSource:
    """A folder of class folders (optionally inside train/, val/ or valid/, and test/)."""

    kind = "image"
    default_arch = "cnn"

    @staticmethod
    def claims(path: str, opts: DataOptions) -> bool:
        return Path(path).is_dir()

    @staticmethod
    def prepare(path: str, opts: DataOptions, preprocessor: Any = None) -> Prepared:
        """List, decode (cached), split; a given `preprocessor` (resume, transfer) is reused, not fitted."""
        img = image_options(opts)
        if opts.task not in (None, "classification"):
            raise UsageError(f"{path}: image folders hold classification data, not {opts.task}")
        if preprocessor is not None and not isinstance(preprocessor, ImagePreprocessor):
            raise UsageError(
                f"{path}: the model was trained on {preprocessor.kind} data, not images"
            )
        root = existing_folder(path)
        splits = find_splits(root)
        train_dir = splits.get("train", root)
        train = scan_classes(train_dir, root, str(train_dir), opts.unsupervised)
        val = _val_listing(root, splits, opts)
        fit = preprocessor is None
        if fit:
            classes = sorted(set(train.labels))
            if len(classes) < 2 and not opts.unsupervised:
                raise InputError(
                    f"{train_dir}: found one class folder ('{classes[0]}'); classification needs at least two"
                )
            size, channels = choose_shape(train, img)
            preprocessor = ImagePreprocessor(
                Target(opts.target or TARGET_NAME, "classification", classes), channels, size
            )
        preprocessor.check_classes(train, str(train_dir))
        if val is not None:
            preprocessor.check_classes(val, str(val.root if opts.val else splits["val"]))
        n = len(train.files) + (len(val.files) if val is not None else 0)
        if image_stream.over_limit(
            n, preprocessor.channels, preprocessor.size
        ):  # decode per epoch instead
            return image_stream.prepare_streaming(train, val, preprocessor, opts, fit, str(root))
        x, y, is_val, stats = _load(train, val, preprocessor, str(root))
        if val is None:
            x_tr, y_tr, x_va, y_va = _split(x, y, opts, str(root))
        else:
            tr, va = (~is_val).nonzero().squeeze(1), is_val.nonzero().squeeze(1)
            x_tr, y_tr, x_va, y_va = x.index_select(0, tr), y[tr], x.index_select(0, va), y[va]
        if fit:
            preprocessor.mean, preprocessor.std = channel_stats(x_tr)
        return Prepared(preprocessor, x_tr, y_tr, x_va, y_va, {"rows": len(x), **stats})


def _val_listing(root: Path, splits: dict[str, Path], opts: DataOptions) -> Listing | None:
    if opts.val:
        folder = existing_folder(opts.val)
        return scan_classes(folder, folder, str(folder), opts.unsupervised)
    if "val" in splits:
        return scan_classes(splits["val"], root, str(splits["val"]), opts.unsupervised)
    return None


def _load(
    train: Listing, val: Listing | None, enc: ImagePreprocessor, source: str
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, dict]:
    """Decode (one cache per folder), drop unreadable files. -> x (N, C, S, S) uint8, y (N,) int64,
    is_val (N,) bool, stats."""
    groups = [train] if val is None else [train, val]
    if val is not None and val.root == train.root:  # one folder, one cache file
        groups = [Listing(train.root, train.files + val.files, train.labels + val.labels)]
    got = [ic.decode_folder(g.root, g.files, enc.size, enc.channels) for g in groups]
    for g in got:
        ic.report(g, enc.size, enc.channels)
    _check_bad(groups, got, source)
    index = {c: i for i, c in enumerate(enc.target.classes)}
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


def _check_bad(groups: list[Listing], got: list[ic.Decoded], source: str) -> None:
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


def _split(
    x: torch.Tensor, y: torch.Tensor, opts: DataOptions, source: str
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Seeded stratified (train, val) split of the training folder."""
    if not 0.0 < opts.val_split < 1.0:
        raise UsageError(f"--val-split must be between 0 and 1, got {opts.val_split}")
    tr, va = stratified_split(y.numpy(), len(y), opts.val_split, opts.seed, True)
    if len(tr) < 2 or len(va) < 1:
        raise InputError(
            f"{source}: only {len(y)} images; too few to split for validation", "pass --val FOLDER"
        )
    tr_idx, va_idx = torch.from_numpy(tr), torch.from_numpy(va)
    # index_select: one memcpy per image, several times faster than x[idx] on uint8 images; x may
    # be the memory-mapped cache, so these are the only copies of the pixels
    return x.index_select(0, tr_idx), y[tr_idx], x.index_select(0, va_idx), y[va_idx]
