"""The `image` data kind: folders of class folders -> uint8 tensors (N, C, S, S), plus the fitted
`ImagePreprocessor`.

The preprocessor (plain-data state) remembers the classes, the channel count, the side S, the resize
policy and the per-channel mean/std; its `ImageTransform` module (uint8 -> standardised float)
runs inside the saved and exported model. Folders, splits and streaming live in image_folders.py,
decoding and the on-disk cache in image_cache.py.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from torch import nn

from dlcli.data import image_cache as ic
from dlcli.data import image_store, image_stream
from dlcli.data.contracts import DataKind, DataOptions, ExportAdapter, Prepared, Preprocessor
from dlcli.data.image_cache import RESIZE_POLICY
from dlcli.data.image_folders import (
    STATS_SAMPLE as STATS_SAMPLE,
)
from dlcli.data.image_folders import (
    Listing,
    batched,
    channel_stats,
    existing_folder,
    expand_inputs,
    find_splits,
    load_listings,
    prepare_streaming,
    scan_classes,
    split_images,
    val_listing,
)
from dlcli.data.target import Target
from dlcli.errors import InputError, UsageError

TARGET_NAME = "label"  # the label column of evaluation frames: the class folder's name
BATCH = 256  # images per chunk when streaming new inputs (predict, evaluate)


@dataclass
class ImageOptions:
    """Image-specific flags (`DataOptions.extra["image"]`)."""

    image_size: int | None = None  # square side; default: from the data
    grayscale: bool = False  # force one channel
    channels: int | None = None  # force 1 or 3 (transfer learning keeps the source model's)
    mean: list[float] | None = (
        None  # fixed per-channel mean/std (a spec's `input:`, e.g. ImageNet's)
    )
    std: list[float] | None = None


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


class ImageReconstruction(nn.Module):
    """Autoencoder decoder output (N, C, H, W) in normalised units -> pixels in [0, 1]."""

    def __init__(self, mean: list[float], std: list[float]) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1))

    def forward(self, out: torch.Tensor) -> torch.Tensor:
        return (out * self.std + self.mean).clamp(0.0, 1.0)


# -- the preprocessor -----------------------------------------------------------------------------
class ImagePreprocessor(Preprocessor):
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

    def preprocess_module(self) -> ImageTransform:
        return ImageTransform(self.mean, self.std)

    def augmenter(self, spec: str) -> nn.Module:
        from dlcli.data.augment import make_augment

        return make_augment(spec, self.size)

    def reconstruction_module(self) -> ImageReconstruction:
        return ImageReconstruction(self.mean, self.std)

    def inherit_options(self, given: dict) -> dict:
        """The source model's side and channel count (unless --grayscale), so its layers fit."""
        given = dict(given)
        given.setdefault("image_size", self.size)
        if not given.get("grayscale"):
            given.setdefault("channels", self.channels)
        return given

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
        for batch in batched(expand_inputs(paths), BATCH):
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


# -- the training source ---------------------------------------------------------------------
def image_options(opts: DataOptions) -> ImageOptions:
    got = opts.extra.get("image") or ImageOptions()
    got = ImageOptions(**got) if isinstance(got, dict) else got
    if got.image_size is not None and not 4 <= got.image_size <= 2048:
        raise UsageError(f"--image-size must be between 4 and 2048, got {got.image_size}")
    return got


def fixed_stats(opts: ImageOptions, channels: int) -> tuple[list[float], list[float]] | None:
    """The spec's mean/std when they fit the channel count (--grayscale drops ImageNet's three)."""
    if opts.mean is None or opts.std is None or len(opts.mean) != channels:
        return None
    return list(opts.mean), list(opts.std)


def choose_shape(listing: Listing, opts: ImageOptions) -> tuple[int, int]:
    """(size, channels): given, or from a sample of the training images."""
    forced = 1 if opts.grayscale else opts.channels
    if opts.image_size and forced:
        return opts.image_size, forced
    step = max(1, math.ceil(len(listing.files) / ic.PROBE_SAMPLE))  # probe_sample's own spread
    paths = [os.path.join(listing.root, f) for f in listing.files[::step]]  # only those probed
    sides, gray = image_store.remembered_probe(paths, not opts.grayscale, ic.probe_sample)
    return opts.image_size or ic.default_size(sides), forced or (1 if gray else 3)


class ImageFolderSource:
    """A folder of class folders (optionally inside train/, val/ or valid/, and test/)."""

    name = "images"
    kind = "image"
    priority = 0
    default_arch = "cnn"
    streams = False

    @staticmethod
    def claims(path: str, opts: DataOptions) -> bool:
        return Path(path).is_dir()

    @staticmethod
    def prepare(path: str, opts: DataOptions, preprocessor: Preprocessor | None = None) -> Prepared:
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
        val = val_listing(root, splits, opts)
        fit = preprocessor is None
        fixed = None
        if fit:
            classes = sorted(set(train.labels))
            if len(classes) < 2 and not opts.unsupervised:
                raise InputError(
                    f"{train_dir}: found one class folder ('{classes[0]}'); classification needs at least two"
                )
            size, channels = choose_shape(train, img)
            fixed = fixed_stats(img, channels)
            preprocessor = ImagePreprocessor(
                Target(opts.target or TARGET_NAME, "classification", classes),
                channels,
                size,
                *(fixed or (None, None)),
            )
        preprocessor.check_classes(train, str(train_dir))
        if val is not None:
            preprocessor.check_classes(val, str(val.root if opts.val else splits["val"]))
        n = len(train.files) + (len(val.files) if val is not None else 0)
        if image_stream.over_limit(
            n, preprocessor.channels, preprocessor.size
        ):  # decode per epoch instead
            return prepare_streaming(train, val, preprocessor, opts, fit and not fixed, str(root))
        x, y, is_val, stats = load_listings(
            train,
            val,
            preprocessor.size,
            preprocessor.channels,
            preprocessor.target.classes,
            str(root),
        )
        if val is None:
            x_tr, y_tr, x_va, y_va = split_images(x, y, opts, str(root))
        else:
            tr, va = (~is_val).nonzero().squeeze(1), is_val.nonzero().squeeze(1)
            x_tr, y_tr, x_va, y_va = x.index_select(0, tr), y[tr], x.index_select(0, va), y[va]
        if fit and not fixed:
            preprocessor.mean, preprocessor.std = channel_stats(x_tr)
        return Prepared(preprocessor, x_tr, y_tr, x_va, y_va, {"rows": len(x), **stats})


class ImageExport(ExportAdapter):
    """Input `images`: float32 (batch, C, H, W) with values in [0, 1], already resized to the
    model's size; the per-channel normalisation is inside the graph."""

    input_name = "images"

    def examples(self, loaded: Any) -> torch.Tensor:
        rows = self.stored_examples(loaded)
        if rows is None:
            enc = loaded.preprocessor
            rows = torch.rand(8, *enc.input_shape, generator=torch.Generator().manual_seed(0))
        elif rows.dtype == torch.uint8:
            rows = rows.to(torch.float32) / 255.0  # the documented [0, 1] input
        return torch.cat(
            [rows.to(torch.float32), torch.zeros_like(rows[:1]), torch.ones_like(rows[:1])]
        )

    def metadata(self, preprocessor: ImagePreprocessor) -> dict[str, str]:
        return {
            "dl.input_layout": "NCHW float32 in [0, 1]",
            "dl.image_size": json.dumps([preprocessor.size, preprocessor.size]),
            "dl.channels": str(preprocessor.channels),
            "dl.resize": preprocessor.resize,
            "dl.mean": json.dumps(list(preprocessor.mean)),
            "dl.std": json.dumps(list(preprocessor.std)),
            "dl.preprocessing": "in-graph: (x - mean) / std per channel; resizing is the caller's",
        }


KIND = DataKind(
    name="image",
    preprocessor=ImagePreprocessor,
    sources=(ImageFolderSource,),
    export=ImageExport(),
    options=("image_size", "grayscale"),
    hint="try --arch cnn or --arch resnet",
)
