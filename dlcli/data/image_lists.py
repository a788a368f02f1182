"""Image lists: a table (any format the readers read) with a column of image paths and a label
column, read as the same listing an image folder gives (image_folders.Listing), so decoding, the
cache, augmentation and the ONNX contract are those of folders. Torch-free: the ONNX runtime
(runtime/images.py) reads image lists through it too.

Paths are relative to the table's folder (absolute ones are allowed). The path column is
`--image-column`, else detected: the first column (not the target) whose values in the table's
head all end in an image suffix. Rows without a path or a label are dropped with a note; a path
to no file is skipped like an unreadable image (a note naming the file and its row; more than
BAD_SHARE of them is an error).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from dlcli.console import note
from dlcli.data import readers
from dlcli.data.image_decode import IMAGE_EXTENSIONS
from dlcli.errors import InputError

CHUNK_ROWS = 4096  # paths per chunk when predicting or evaluating
BAD_SHARE = 0.10  # more missing files than this share is an error (image_folders.BAD_SHARE)


@dataclass
class Listing:
    """Image files (posix paths relative to `root`) and their labels: image_folders.Listing's
    fields, without importing torch (the ONNX runtime reads image lists too)."""

    root: Path
    files: list[str]
    labels: list[str]


@dataclass
class ImageList:
    """A table's images (files relative to the table's folder) with the data row number (from 1)
    of each file, and the columns used."""

    listing: Listing
    rows: list[int]
    column: str
    target: str | None


def has_image_suffix(value: Any) -> bool:
    text = str(value).strip().lower()
    return os.path.splitext(text)[1] in IMAGE_EXTENSIONS


def detect_image_column(frame: pd.DataFrame | None, target: str | None) -> str | None:
    """The first column (not `target`) whose filled values all end in an image suffix."""
    if frame is None or frame.empty:
        return None
    for col in frame.columns:
        values = frame[col].dropna()
        values = values[values.astype(str).str.strip() != ""]
        if str(col) != target and len(values) and values.map(has_image_suffix).all():
            return str(col)
    return None


def is_image_list(path: str, column: str | None) -> bool:
    """A table file (not an image itself) with an image-path column (given or detected)."""
    if not Path(path).is_file() or has_image_suffix(path):
        return False
    if column:
        return True
    return detect_image_column(readers.sample(path), None) is not None


def read_list(
    path: str, column: str | None, target: str | None, labelled: bool = True
) -> Iterator[ImageList]:
    """The table's images in chunks of CHUNK_ROWS rows (`labelled`: with the target column,
    default the last column that is not the path column)."""
    import pyarrow as pa

    chosen: dict[str, str | None] = {}

    def plan(header: list[str]) -> dict[str, Any]:
        col = column or detect_image_column(readers.sample(path), target)
        if col is None or col not in header:
            shown = f"no column '{col}'" if col else "no column of image paths found"
            raise InputError(
                f"{path}: {shown} (columns: {readers.names_list(header)})",
                "pass --image-column COLUMN",
            )
        tname = None
        if labelled:
            tname = target or next((c for c in reversed(header) if c != col), None)
            if tname is None or tname not in header or tname == col:
                raise InputError(  # `target` given: the label column a model was trained on
                    f"{path}: no label column '{tname}' (columns: {readers.names_list(header)})",
                    "pass --target COLUMN" if target is None else "the model's label column",
                )
        chosen.update(column=col, target=tname)
        return {c: pa.string() for c in (col, tname) if c}

    root = Path(path).parent
    first = 1
    for chunk in readers.iter_chunks(path, plan=plan):
        for i in range(0, len(chunk), CHUNK_ROWS):
            part = chunk.iloc[i : i + CHUNK_ROWS]
            yield _listing(part, root, first, chosen["column"], chosen["target"], path)
            first += len(part)


def _listing(
    part: pd.DataFrame, root: Path, first: int, col: str, tname: str | None, source: str
) -> ImageList:
    paths = part[col].astype(object).where(part[col].notna(), None)
    keep = [p is not None and str(p).strip() != "" for p in paths]
    if tname is not None:
        keep = [
            k and v is not None and str(v).strip() != ""
            for k, v in zip(keep, part[tname], strict=True)
        ]
    dropped = len(keep) - sum(keep)
    if dropped:
        what = f"a path in '{col}'" + (f" or a label in '{tname}'" if tname else "")
        note(f"{source}: dropped {dropped} rows without {what}")
    files, rows, labels = [], [], []
    for k, (p, ok) in enumerate(zip(paths, keep, strict=True)):
        if ok:
            full = os.path.join(root, str(p).strip())  # an absolute path stays as it is
            files.append(Path(os.path.relpath(full, root)).as_posix())
            rows.append(first + k)
            if tname is not None:
                labels.append(str(part[tname].iloc[k]).strip())
    return ImageList(Listing(root, files, labels), rows, col, tname)


def read_whole(path: str, column: str | None, target: str | None) -> ImageList:
    """The whole table as one ImageList; files that do not exist are dropped with a note naming
    them and their rows (more than BAD_SHARE of them: an error naming the first)."""
    parts = list(read_list(path, column, target))
    listing = Listing(
        parts[0].listing.root,
        [f for p in parts for f in p.listing.files],
        [lab for p in parts for lab in p.listing.labels],
    )
    got = ImageList(listing, [r for p in parts for r in p.rows], parts[0].column, parts[0].target)
    if not listing.files:
        raise InputError(f"{path}: no row has both an image path and a label")
    return drop_missing(got, path)


def drop_missing(got: ImageList, source: str) -> ImageList:
    listing = got.listing
    missing = [i for i, f in enumerate(listing.files) if not os.path.isfile(listing.root / f)]
    if not missing:
        return got
    shown = [f"{listing.root / listing.files[i]} (row {got.rows[i]})" for i in missing[:5]]
    if len(missing) > BAD_SHARE * len(listing.files):
        raise InputError(
            f"{source}: {len(missing)} of {len(listing.files)} image files do not exist "
            f"(more than {BAD_SHARE:.0%}); first: {shown[0]}",
            f"paths in '{got.column}' are relative to {listing.root}",
        )
    more = f"; and {len(missing) - 5} more" if len(missing) > 5 else ""
    note(f"skipped {len(missing)} missing image file(s): {'; '.join(shown)}{more}")
    gone = set(missing)
    kept = [i for i in range(len(listing.files)) if i not in gone]
    files = [listing.files[i] for i in kept]
    labels = [listing.labels[i] for i in kept] if listing.labels else []
    return ImageList(
        Listing(listing.root, files, labels), [got.rows[i] for i in kept], got.column, got.target
    )
