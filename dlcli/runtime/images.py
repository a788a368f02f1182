"""Images for an exported graph: files, folders or '-' (paths on stdin) -> the `images` input of
docs/onnx.md ((N, C, H, W) float32 in [0, 1]), decoded by data/image_decode.py exactly as
`dl predict MODEL.pt` decodes them, with its `path` column and its error lines."""

from __future__ import annotations

import os
import sys
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from dlcli.data import idx, image_lists
from dlcli.data.image_decode import (
    IMAGE_EXTENSIONS,
    BadImage,
    decode_image,
    is_hidden,
    no_images,
    note_skipped,
    pixel_limit,
)
from dlcli.errors import InputError
from dlcli.runtime.session import OnnxModel
from dlcli.runtime.tables import Labels

BATCH = 256  # images decoded and run together


def walk(folder: str) -> list[str]:
    """Image files under `folder`, in the order `dl predict MODEL.pt` takes them (sorted, top-down,
    hidden entries skipped), with its note on what was passed over."""
    found, hidden, other = [], 0, Counter()
    for dirpath, dirnames, filenames in os.walk(folder):
        keep = sorted(d for d in dirnames if not is_hidden(d))
        hidden += len(dirnames) - len(keep)
        dirnames[:] = keep
        for name in sorted(filenames):
            ext = os.path.splitext(name)[1].lower()
            if is_hidden(name):
                hidden += 1
            elif ext in IMAGE_EXTENSIONS:
                found.append(os.path.join(dirpath, name))
            else:
                other[ext or "(no extension)"] += 1
    note_skipped(folder, hidden, other)
    if not found:
        raise no_images(folder)
    return found


def expand(paths: list[str]) -> Iterator[str]:
    """Image files named by `paths`: files as given, folders walked, '-' read from stdin."""
    for p in paths:
        if p == "-":
            given = [line.rstrip("\r\n") for line in sys.stdin if line.strip()]
            if not given:
                raise InputError("<stdin>: no image paths given (expected one path per line)")
            yield from expand(given)
        elif Path(p).is_dir():
            yield from walk(p)
        elif Path(p).is_file():
            yield p
        else:
            raise InputError(f"{p}: no such file or folder")


@dataclass
class ImageInputs:
    """Side, channels and classes of `dl.image_size`, `dl.channels`, `dl.classes`; the image
    lists' path column of `dl.image_column` (the model's `--image-column`) or `--image-column`,
    else detected, as for `.pt`."""

    size: int
    channels: int
    target: Labels
    prediction_columns: tuple[str, ...] = ("confidence",)
    column: str | None = None

    def pixels(self, paths: list[str]) -> np.ndarray:
        """(N, C, S, S) float32 in [0, 1]; an unreadable file is an InputError naming it."""
        out = np.empty((len(paths), self.channels, self.size, self.size), dtype=np.float32)
        with pixel_limit():
            for i, path in enumerate(paths):
                try:
                    out[i] = decode_image(path, self.size, self.channels)
                except BadImage as exc:
                    raise InputError(f"{path}: cannot read image ({exc})") from None
        return out / np.float32(255.0)

    def check_columns(self, header: list[str], source: str) -> None:
        if "path" not in header:
            raise InputError(f"{source}: no image files")

    def matrix(self, frame: pd.DataFrame, source: str, row_offset: int = 0) -> np.ndarray:
        """Pixels of uploaded files (the serve column of bytes next to `path`)."""
        import io

        blobs = frame[next(c for c in frame.columns if c != "path")]
        out = np.empty((len(frame), self.channels, self.size, self.size), dtype=np.float32)
        with pixel_limit():
            for i, (name, blob) in enumerate(zip(frame["path"], blobs, strict=True)):
                try:
                    out[i] = decode_image(io.BytesIO(blob), self.size, self.channels)
                except BadImage as exc:
                    raise InputError(
                        f"{source}: file '{name}': cannot read image ({exc})"
                    ) from None
        return out / np.float32(255.0)

    shown_columns = ("path",)  # always in the prediction table, as `dl predict` prints it

    def iter_inputs(
        self, paths: list[str], keep: bool = False
    ) -> Iterator[tuple[pd.DataFrame, np.ndarray]]:
        """(frame with a 'path' column, pixels) per chunk of BATCH images. An MNIST IDX folder
        gives its test images (FILE#INDEX) and a table of image paths its rows, as with `.pt`."""
        files: list[str] = []
        for p in paths:
            if p != "-" and idx.is_idx_folder(p):
                yield from self._idx_chunks(p)
            elif p != "-" and image_lists.is_image_list(p, self.column):
                for part in image_lists.read_list(p, self.column, None, labelled=False):
                    root, rels = part.listing.root, part.listing.files
                    batch = [os.path.normpath(os.path.join(root, f)) for f in rels]
                    gone = next((k for k, f in enumerate(batch) if not os.path.isfile(f)), None)
                    if gone is not None:  # the line of `dl predict MODEL.pt`
                        raise InputError(f"{p}: row {part.rows[gone]}: no image file {batch[gone]}")
                    for i in range(0, len(batch), BATCH):
                        yield (
                            pd.DataFrame({"path": batch[i : i + BATCH]}),
                            self.pixels(batch[i : i + BATCH]),
                        )
            else:
                files.append(p)
        files = list(expand(files)) if files else []
        for i in range(0, len(files), BATCH):
            batch = files[i : i + BATCH]
            yield pd.DataFrame({"path": batch}), self.pixels(batch)

    def _idx_chunks(self, path: str) -> Iterator[tuple[pd.DataFrame, np.ndarray]]:
        pair = idx.labelled_pair(path)
        images, _ = idx.read_pair(pair)
        for i in range(0, len(images), BATCH):
            part = idx.to_pixels(images[i : i + BATCH], self.size, self.channels)
            names = [f"{pair.images}#{k}" for k in range(i, i + len(part))]
            yield pd.DataFrame({"path": names}), part.astype(np.float32) / np.float32(255.0)


def encoder(model: OnnxModel) -> ImageInputs:
    side = model.json("dl.image_size", [0, 0])
    channels = int(model.meta.get("dl.channels", "3"))
    column = model.meta.get("dl.image_column")
    return ImageInputs(int(side[0]), channels, Labels(model.classes), column=column)
