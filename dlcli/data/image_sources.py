"""Training from image listings, shared by the image sources (images.py): fitting a preprocessor to
a training listing, then decoding (cached), splitting and the channel statistics; and the two
sources beside folders: `ImageListSource` (a table of image paths, image_lists.py) and
`IdxSource` (MNIST IDX files, idx.py).
"""

from __future__ import annotations

import math
import os
import time
from pathlib import Path

import numpy as np
import torch

from dlcli.data import idx, image_lists, image_store, image_stream
from dlcli.data import image_cache as ic
from dlcli.data.contracts import DataOptions, Prepared, Preprocessor
from dlcli.data.image_folders import (
    Listing,
    channel_stats,
    load_listings,
    prepare_streaming,
    split_images,
)
from dlcli.data.image_preprocessor import (
    TARGET_NAME,
    ImageOptions,
    ImagePreprocessor,
    fixed_stats,
    image_options,
)
from dlcli.data.target import Target
from dlcli.errors import InputError, UsageError


def check_given(path: str, opts: DataOptions, preprocessor: Preprocessor | None, what: str) -> None:
    """Image data is for classification, and a given preprocessor must be an image one."""
    if opts.task not in (None, "classification"):
        raise UsageError(f"{path}: {what} hold classification data, not {opts.task}")
    if preprocessor is not None and not isinstance(preprocessor, ImagePreprocessor):
        raise UsageError(f"{path}: the model was trained on {preprocessor.kind} data, not images")


def choose_shape(listing: Listing, opts: ImageOptions) -> tuple[int, int]:
    """(size, channels): given, or from a sample of the training images."""
    forced = 1 if opts.grayscale else opts.channels
    if opts.image_size and forced:
        return opts.image_size, forced
    step = max(1, math.ceil(len(listing.files) / ic.PROBE_SAMPLE))  # probe_sample's own spread
    paths = [os.path.join(listing.root, f) for f in listing.files[::step]]  # only those probed
    sides, gray = image_store.remembered_probe(paths, not opts.grayscale, ic.probe_sample)
    return opts.image_size or ic.default_size(sides), forced or (1 if gray else 3)


def fit_to(
    train: Listing, opts: DataOptions, source: str, what: str, column: str | None = None,
    target_name: str | None = None,
) -> ImagePreprocessor:  # fmt: skip
    """A new preprocessor for `train`'s classes and images (mean and std are set later)."""
    classes = sorted(set(train.labels))
    if len(classes) < 2 and not opts.unsupervised:
        raise InputError(
            f"{source}: found one {what} ('{classes[0]}'); classification needs at least two"
        )
    img = image_options(opts)
    size, channels = choose_shape(train, img)
    target = Target(target_name or opts.target or TARGET_NAME, "classification", classes)
    mean, std = fixed_stats(img, channels) or (None, None)
    return ImagePreprocessor(target, channels, size, mean, std, image_column=column)


def prepare_listings(
    train: Listing, val: Listing | None, preprocessor: ImagePreprocessor, opts: DataOptions,
    fit: bool, source: str,
) -> Prepared:  # fmt: skip
    """Decode (cached per folder) or stream, split (unless `val`), and when `fit` set the channel
    mean and std from the training part (unless the spec fixes them, e.g. ImageNet's)."""
    fit = fit and fixed_stats(image_options(opts), preprocessor.channels) is None
    n = len(train.files) + (len(val.files) if val is not None else 0)
    if image_stream.over_limit(n, preprocessor.channels, preprocessor.size):  # decode per epoch
        return prepare_streaming(train, val, preprocessor, opts, fit, source)
    x, y, is_val, stats = load_listings(
        train, val, preprocessor.size, preprocessor.channels, preprocessor.target.classes, source
    )
    if val is None:
        x_tr, y_tr, x_va, y_va = split_images(x, y, opts, source)
    else:
        tr, va = (~is_val).nonzero().squeeze(1), is_val.nonzero().squeeze(1)
        x_tr, y_tr, x_va, y_va = x.index_select(0, tr), y[tr], x.index_select(0, va), y[va]
    if fit:
        preprocessor.mean, preprocessor.std = channel_stats(x_tr)
    return Prepared(preprocessor, x_tr, y_tr, x_va, y_va, {"rows": len(x), **stats})


class ImageListSource:
    """A table with a column of image paths (--image-column, else detected) and a label column."""

    name = "image_list"
    kind = "image"
    priority = 20  # before text and tables: a table of image paths is images
    default_arch = "cnn"
    streams = False

    @staticmethod
    def claims(path: str, opts: DataOptions) -> bool:
        return image_lists.is_image_list(path, image_options(opts).image_column)

    @staticmethod
    def prepare(path: str, opts: DataOptions, preprocessor: Preprocessor | None = None) -> Prepared:
        check_given(path, opts, preprocessor, "image lists")
        column = image_options(opts).image_column
        column = column or (preprocessor.image_column if preprocessor is not None else None)
        target = preprocessor.target.name if preprocessor is not None else opts.target
        got = image_lists.read_whole(path, column, target)
        train = Listing(got.listing.root, got.listing.files, got.listing.labels)
        val = None
        if opts.val:
            v = image_lists.read_whole(opts.val, got.column, got.target).listing
            val = Listing(v.root, v.files, v.labels)
        fit = preprocessor is None
        if fit:
            preprocessor = fit_to(train, opts, path, "label", got.column, got.target)
        assert isinstance(preprocessor, ImagePreprocessor)
        preprocessor.check_classes(train, path, "label")
        if val is not None:
            preprocessor.check_classes(val, str(opts.val), "label")
        return prepare_listings(train, val, preprocessor, opts, fit, path)


class IdxSource:
    """A folder of MNIST IDX files: the train pair is the training data, t10k the test split."""

    name = "idx"
    kind = "image"
    priority = 6  # before image and text folders
    default_arch = "cnn"
    streams = False

    @staticmethod
    def claims(path: str, opts: DataOptions) -> bool:
        return idx.is_idx_folder(path)

    @staticmethod
    def prepare(path: str, opts: DataOptions, preprocessor: Preprocessor | None = None) -> Prepared:
        check_given(path, opts, preprocessor, "IDX files")
        t0 = time.perf_counter()
        x, y, classes = read_idx_split(path)
        fit = preprocessor is None
        if fit:
            img = image_options(opts)
            size = img.image_size or max(x.shape[2:])
            channels = 1 if img.grayscale else img.channels or 1
            target = Target.classification(opts.target or TARGET_NAME, classes, path)
            fixed = fixed_stats(img, channels)
            preprocessor = ImagePreprocessor(target, channels, size, *(fixed or (None, None)))
            fit = fixed is None
        assert isinstance(preprocessor, ImagePreprocessor)
        known = {c: i for i, c in enumerate(preprocessor.target.classes)}
        preprocessor.check_classes(Listing(Path(path), [], classes), path, "label")
        size, channels = preprocessor.size, preprocessor.channels
        if size != x.shape[2] and image_stream.over_limit(len(x), channels, size):
            need = len(x) * channels * size**2
            shown = f"{need / 2**30:.1f} GiB" if need >= 2**30 else f"{need / 2**20:.1f} MiB"
            raise InputError(  # IDX pixels are held in memory: resized, they must fit there
                f"{path}: {len(x):,} images at {size}x{size}x{channels} need {shown}, "
                "more than DL_MAX_IMAGE_MEMORY",
                "pass a smaller --image-size",
            )
        pixels = torch.from_numpy(idx.to_pixels(x, preprocessor.size, preprocessor.channels))
        labels = torch.tensor([known[c] for c in classes], dtype=torch.int64)[y]
        if opts.val:
            xv, yv, cv = read_idx_split(opts.val)
            preprocessor.check_classes(Listing(Path(opts.val), [], cv), opts.val, "label")
            x_va = torch.from_numpy(idx.to_pixels(xv, preprocessor.size, preprocessor.channels))
            y_va = torch.tensor([known[c] for c in cv], dtype=torch.int64)[yv]
            x_tr, y_tr = pixels, labels
        else:
            x_tr, y_tr, x_va, y_va = split_images(pixels, labels, opts, path)
        if fit:
            preprocessor.mean, preprocessor.std = channel_stats(x_tr)
        seconds = round(time.perf_counter() - t0, 3)
        info = {"rows": len(pixels), "decoded": 0, "cached": 0, "bad": 0, "idx_seconds": seconds}
        return Prepared(preprocessor, x_tr, y_tr, x_va, y_va, info)


def read_idx_split(path: str) -> tuple[np.ndarray, torch.Tensor, list[str]]:
    """The training pair of an IDX folder: ((N, 1, H, W) uint8 images, (N,) int64 index into the
    classes, the classes: the distinct label values as text, in numeric order)."""
    pairs = idx.find_pairs(Path(path))
    if "train" not in pairs:
        raise InputError(f"{path}: no train-images-idx3-ubyte and train-labels-idx1-ubyte pair")
    images, labels = idx.read_pair(pairs["train"])
    values, inverse = np.unique(labels, return_inverse=True)
    return images, torch.from_numpy(inverse.astype(np.int64)), [str(v) for v in values.tolist()]
