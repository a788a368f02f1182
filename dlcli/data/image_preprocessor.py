"""The fitted preprocessing of the `image` data kind: `ImagePreprocessor` (classes, channels, side,
resize policy, per-channel mean/std; plain-data state) and its `ImageTransform` module (uint8 ->
standardised float), which runs inside the saved and exported model. New inputs come from image
files and folders, image lists (image_lists.py) and MNIST IDX folders (idx.py).
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import torch
from torch import nn

from dlcli.data import idx, image_lists
from dlcli.data import image_cache as ic
from dlcli.data.contracts import DataOptions, Preprocessor
from dlcli.data.image_cache import RESIZE_POLICY
from dlcli.data.image_folders import Listing, batched, existing_folder, expand_inputs, scan_classes
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
    image_column: str | None = None  # image lists: the column of image paths; default: detected
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
        image_column: str | None = None,
    ) -> None:
        self.target, self.resize, self.image_column = target, resize, image_column
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

        Each path is an image file, a folder (its images, recursively, sorted), '-' (image paths
        on stdin, one a line), a table of image paths (image_lists.py) or an IDX folder (its test
        images, named FILE#INDEX). The path column is always there, so `keep` changes nothing.
        """
        images: list[str] = []
        for p in [paths] if isinstance(paths, str) else paths:
            if p != "-" and (
                idx.is_idx_folder(p) or image_lists.is_image_list(p, self.image_column)
            ):
                yield from self.iter_labelled(p, known_only=False, labelled=False)
            else:
                images.append(p)
        for batch in batched(expand_inputs(images), BATCH) if images else ():
            yield pd.DataFrame({"path": batch}), self.decode_strict(batch)

    def iter_labelled(
        self, path: str, known_only: bool = True, labelled: bool = True
    ) -> Iterator[tuple[pd.DataFrame, torch.Tensor]]:
        """(frame with 'path' and the label column, (n, C, S, S) uint8) per chunk of `path/<class>/...`
        (or of `path/test/<class>/...` when there is such a folder), of an image list, or of an
        IDX folder's test pair. `known_only`: a class the model was not trained on is an error (not
        so for anomaly detection). Without `labelled`, lists and IDX folders give only paths."""
        if idx.is_idx_folder(path):
            yield from self._idx_chunks(path, known_only, labelled)
            return
        if Path(path).is_file() and image_lists.is_image_list(path, self.image_column):
            yield from self._list_chunks(path, known_only, labelled)
            return
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

    def _idx_chunks(
        self, path: str, known_only: bool, labelled: bool
    ) -> Iterator[tuple[pd.DataFrame, torch.Tensor]]:
        pair = idx.labelled_pair(path)
        images, labels = idx.read_pair(pair)
        names = [str(v) for v in labels.tolist()]
        if known_only:
            self.check_classes(Listing(Path(path), [], names), str(pair.labels), "label")
        for i in range(0, len(images), BATCH):
            part = idx.to_pixels(images[i : i + BATCH], self.size, self.channels)
            frame = {"path": [f"{pair.images}#{k}" for k in range(i, i + len(part))]}
            if labelled:  # no paths then: they name no file --errors could copy
                frame = {self.target.name: names[i : i + BATCH]}
            yield pd.DataFrame(frame), torch.from_numpy(part)

    def _list_chunks(
        self, path: str, known_only: bool, labelled: bool
    ) -> Iterator[tuple[pd.DataFrame, torch.Tensor]]:
        target = self.target.name if labelled else None
        for part in image_lists.read_list(path, self.image_column, target, labelled):
            listing = part.listing
            if known_only and labelled:
                self.check_classes(listing, path, "label")
            files = [os.path.normpath(os.path.join(listing.root, f)) for f in listing.files]
            gone = next((i for i, f in enumerate(files) if not os.path.isfile(f)), None)
            if gone is not None:
                raise InputError(f"{path}: row {part.rows[gone]}: no image file {files[gone]}")
            pixels, bad = ic.decode_files(files, self.size, self.channels)
            if bad:
                i = min(bad)
                raise InputError(
                    f"{path}: row {part.rows[i]}: {files[i]}: cannot read image ({bad[i]})"
                )
            frame = {"path": files, **({target: listing.labels} if target else {})}
            yield pd.DataFrame(frame), torch.from_numpy(pixels)

    def check_classes(self, listing: Listing, source: str, what: str = "class folder") -> None:
        known = set(self.target.classes)
        unknown = sorted(set(listing.labels) - known)
        if unknown:
            shown = ", ".join(self.target.classes[:10]) + (", ..." if len(known) > 10 else "")
            raise InputError(
                f"{source}: {what} '{unknown[0]}' is not a class the model was trained on (classes: {shown})"
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
            **({"image_column": self.image_column} if self.image_column else {}),
        }

    @classmethod
    def from_state(cls, state: dict) -> ImagePreprocessor:
        resize = state.get("resize", RESIZE_POLICY)
        if resize != RESIZE_POLICY:
            raise InputError(
                f"model file uses image resize policy '{resize}' that this dl does not know"
            )
        target = Target.from_state(state["target"])
        return cls(
            target,
            state["channels"],
            state["size"],
            state["mean"],
            state["std"],
            resize,
            state.get("image_column"),
        )


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
