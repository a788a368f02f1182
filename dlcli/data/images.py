"""The `image` data kind: folders of class folders, image lists and MNIST IDX folders -> uint8
tensors (N, C, S, S), plus the fitted `ImagePreprocessor` (image_preprocessor.py) and the ONNX input.

Folders, splits and streaming live in image_folders.py, decoding and the on-disk cache in
image_cache.py, image lists in image_lists.py, IDX files in idx.py; the sources beside folders
and the shared training steps in image_sources.py.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from dlcli.data.contracts import DataKind, DataOptions, ExportAdapter, Prepared, Preprocessor
from dlcli.data.image_folders import STATS_SAMPLE as STATS_SAMPLE
from dlcli.data.image_folders import channel_stats as channel_stats
from dlcli.data.image_folders import (
    existing_folder,
    find_splits,
    scan_classes,
    val_listing,
)
from dlcli.data.image_preprocessor import TARGET_NAME as TARGET_NAME
from dlcli.data.image_preprocessor import ImageOptions as ImageOptions
from dlcli.data.image_preprocessor import ImagePreprocessor
from dlcli.data.image_preprocessor import ImageReconstruction as ImageReconstruction
from dlcli.data.image_preprocessor import ImageTransform as ImageTransform
from dlcli.data.image_preprocessor import image_options as image_options
from dlcli.data.image_sources import (
    IdxSource,
    ImageListSource,
    check_given,
    fit_to,
    prepare_listings,
)
from dlcli.data.image_sources import choose_shape as choose_shape


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
        check_given(path, opts, preprocessor, "image folders")
        root = existing_folder(path)
        splits = find_splits(root)
        train_dir = splits.get("train", root)
        train = scan_classes(train_dir, root, str(train_dir), opts.unsupervised)
        val = val_listing(root, splits, opts)
        fit = preprocessor is None
        if fit:
            preprocessor = fit_to(train, opts, str(train_dir), "class folder")
        assert isinstance(preprocessor, ImagePreprocessor)
        preprocessor.check_classes(train, str(train_dir))
        if val is not None:
            preprocessor.check_classes(val, str(val.root if opts.val else splits["val"]))
        return prepare_listings(train, val, preprocessor, opts, fit, str(root))


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
            **({"dl.image_column": preprocessor.image_column} if preprocessor.image_column else {}),
        }


KIND = DataKind(
    name="image",
    preprocessor=ImagePreprocessor,
    sources=(ImageFolderSource, IdxSource, ImageListSource),
    export=ImageExport(),
    options=("image_size", "grayscale", "image_column"),
    hint="try --arch cnn or --arch resnet",
)
