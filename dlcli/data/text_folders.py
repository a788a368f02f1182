"""Text folders: a folder of class folders holding `.txt` files (the IMDB layout as published,
`aclImdb/train/{pos,neg}/*.txt`) read as a text table: one row per file, its text and its class
folder's name. Splits (`train/`, `test/`) are those of image folders (image_folders.find_splits).

Files are decoded as UTF-8 (a byte-order mark is dropped); other bytes are one error naming the
file and the byte offset. At most MAX_FILE_BYTES of a file are read, so one enormous file costs
bounded memory; IMDB's `unsup/` folder of unlabelled reviews is skipped with a note.
"""

from __future__ import annotations

import codecs
import os
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from dlcli.console import note
from dlcli.data.image_cache import IMAGE_EXTENSIONS, is_hidden
from dlcli.data.image_folders import find_splits
from dlcli.errors import InputError

TEXT_SUFFIX = ".txt"
TEXT_COLUMN, TARGET_NAME = "text", "label"  # the columns of a text folder's table
MAX_FILE_BYTES = 1 << 20  # read per file: ~200,000 words, far past any --max-length's use
UNLABELLED = frozenset(["unsup"])  # IMDB's unlabelled reviews: not a class
PEEK = 64  # entries looked at per class folder to tell text from images
CHUNK = 4096  # files per chunk when predicting or evaluating


@dataclass
class TextListing:
    """Text files in class folders: `files` are full paths, `labels` their class folders."""

    files: list[str]
    labels: list[str]


def is_text_file(path: str) -> bool:
    return path.lower().endswith(TEXT_SUFFIX) and os.path.isfile(path)


def is_text_folder(path: str) -> bool:
    """A folder (or its train/ split) whose class folders hold more .txt files than images, by a
    look at the first PEEK entries of each class folder."""
    root = Path(path)
    if not root.is_dir():
        return False
    root = find_splits(root).get("train", root)
    texts = images = 0
    for entry in _entries(root):
        if entry.is_dir() and not is_hidden(entry.name):
            for name in _first_names(entry.path, PEEK):
                suffix = os.path.splitext(name)[1].lower()
                texts += suffix == TEXT_SUFFIX
                images += suffix in IMAGE_EXTENSIONS
    return texts > 0 and texts >= images


def _first_names(folder: str, n: int) -> list[str]:
    """The names of the first `n` entries of `folder` in directory order (a huge folder is not
    listed whole); an unreadable folder has none."""
    names: list[str] = []
    try:
        with os.scandir(folder) as it:
            for entry in it:
                names.append(entry.name)
                if len(names) >= n:
                    break
    except OSError:
        return []
    return names


def labelled_root(path: str) -> Path:
    """The folder to evaluate: `path/test/` when there is one (`dl evaluate model.pt aclImdb`)."""
    root = Path(path)
    if not root.is_dir():
        raise InputError(f"{path}: no such folder")
    return root / "test" if (root / "test").is_dir() else root


def scan_text_classes(folder: Path) -> TextListing:
    """`folder/<class>/**/*.txt` -> TextListing; notes for the folders and files passed over."""
    source = str(folder)
    files, labels, other, loose = [], [], Counter(), 0
    for entry in sorted(_entries(folder), key=lambda e: e.name):
        if is_hidden(entry.name):
            continue
        if not entry.is_dir():
            loose += 1  # IMDB: urls_pos.txt, labeledBow.feat, imdbEr.txt, imdb.vocab, README
        elif entry.name in UNLABELLED:
            note(f"{source}: skipped the folder '{entry.name}' (unlabelled texts, not a class)")
        else:
            found = _walk_texts(Path(entry.path), other)
            if not found:
                note(f"{source}: class folder '{entry.name}' has no .txt files; skipped")
            files += found
            labels += [entry.name] * len(found)
    if loose:
        note(f"{source}: skipped {loose} file{'s' if loose != 1 else ''} outside the class folders")
    if other:
        shown = ", ".join(sorted(other))
        note(f"{source}: skipped {sum(other.values())} files that are not .txt ({shown})")
    if not files:
        raise InputError(
            f"{source}: no .txt files in class folders",
            f"lay them out as {source}/<class>/<file>.txt",
        )
    return TextListing(files, labels)


def read_text(path: str) -> tuple[str, bool]:
    """(the file's text, whether it was cut at MAX_FILE_BYTES); not UTF-8 -> InputError."""
    try:
        with open(path, "rb") as fh:
            raw = fh.read(MAX_FILE_BYTES + 1)
    except OSError as exc:
        raise InputError(f"{path}: cannot read ({exc.strerror or exc})") from None
    cut = len(raw) > MAX_FILE_BYTES
    raw = raw[:MAX_FILE_BYTES]
    try:  # a cut may fall inside a character: not final then
        text = codecs.getincrementaldecoder("utf-8-sig")().decode(raw, final=not cut)
    except UnicodeDecodeError as exc:
        raise InputError(
            f"{path}: byte {exc.start} is not UTF-8 text (0x{raw[exc.start]:02x})",
            "save the file as UTF-8",
        ) from None
    return text, cut


def read_texts(files: list[str]) -> list[str]:
    """The texts of `files`, in order; one note counts the files cut at MAX_FILE_BYTES."""
    texts, cut = [], 0
    for path in files:
        text, was_cut = read_text(path)
        texts.append(text)
        cut += was_cut
    if cut:
        note(f"read only the first {MAX_FILE_BYTES >> 20} MB of {cut} long text file(s)")
    return texts


def read_folder(path: str) -> pd.DataFrame:
    """A training (or --val) folder -> frame with TEXT_COLUMN and TARGET_NAME; `path/train/` is
    used when there is one."""
    root = Path(path)
    if not root.is_dir():
        what = "not a folder" if root.exists() else "no such folder"
        raise InputError(
            f"{path}: {what}", "give a folder of class folders: <folder>/<class>/*.txt"
        )
    folder = find_splits(root).get("train", root)
    listing = scan_text_classes(folder)
    return pd.DataFrame({TEXT_COLUMN: read_texts(listing.files), TARGET_NAME: listing.labels})


def iter_files(path: str) -> Iterator[list[str]]:
    """Text files to predict, in chunks: a .txt file as it is, a folder's .txt files (recursive,
    sorted)."""
    if is_text_file(path):
        yield [path]
        return
    found = _walk_texts(Path(path), Counter())
    if not found:
        raise InputError(f"{path}: no .txt files found")
    for i in range(0, len(found), CHUNK):
        yield found[i : i + CHUNK]


def iter_labelled_files(path: str) -> Iterator[TextListing]:
    """Labelled text files of `path` (its test/ split when there is one), in chunks."""
    listing = scan_text_classes(labelled_root(path))
    for i in range(0, len(listing.files), CHUNK):
        yield TextListing(listing.files[i : i + CHUNK], listing.labels[i : i + CHUNK])


def _entries(folder: Path) -> list[os.DirEntry]:
    try:
        with os.scandir(folder) as it:
            return list(it)
    except OSError as exc:
        raise InputError(f"{folder}: cannot list the folder ({exc.strerror or exc})") from None


def _walk_texts(folder: Path, other: Counter) -> list[str]:
    """.txt files under `folder`, recursively, sorted; other suffixes counted in `other`."""
    found = []
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames[:] = sorted(d for d in dirnames if not is_hidden(d))
        for name in sorted(filenames):
            if is_hidden(name):
                continue
            suffix = os.path.splitext(name)[1].lower()
            if suffix == TEXT_SUFFIX:
                found.append(os.path.join(dirpath, name))
            else:
                other[suffix or "(no extension)"] += 1
    return found
