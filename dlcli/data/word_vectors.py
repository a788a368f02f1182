"""Pretrained word vectors from text files, streamed: GloVe (`word x1 ... xD` per line, no header),
word2vec text and fastText `.vec` (a first line `count D`, then the same lines), plain or gzip.

The file is read one line at a time and only the vectors of words in the vocabulary are kept, so a
1 GB file never sits in memory (a line is at most MAX_LINE_BYTES). Every line's number count is
checked; the numbers themselves are parsed (and checked) for the words that are kept. A word
matches a vocabulary token spelt exactly the same first, else one that is the same in lower case.
"""

from __future__ import annotations

import gzip
import math
import zipfile
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import numpy as np

from dlcli.errors import InputError, UsageError, excerpt

KINDS = ("text",)  # the data kinds whose inputs are vocabulary ids that vectors can embed
MAX_LINE_BYTES = 1 << 20  # a longer line is no word vector (1 MB: some 100,000 numbers)
GZIP_MAGIC = b"\x1f\x8b"
FLOAT32_MAX = float(np.finfo(np.float32).max)
NOT_TEXT_HINT = (
    "word2vec's binary .bin format is not read: save it as text, e.g. gensim's "
    "KeyedVectors.save_word2vec_format(path, binary=False)"
)


@dataclass
class WordVectors:
    """The vectors a vocabulary needs, from one file."""

    dim: int
    rows: dict[int, np.ndarray] = field(default_factory=dict)  # vocabulary id -> float32 (dim,)
    exact: int = 0  # ids matched by their exact spelling
    folded: int = 0  # ids matched only in lower case
    lines: int = 0  # vector lines read
    skipped: int = 0  # entries whose word holds spaces (never a token)


# -- one line ------------------------------------------------------------------------------------
def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def split_entry(line: str, dim: int, where: str, basis: str = "") -> tuple[str, str] | None:
    """(word, its `dim` numbers as text) of one line without its newline, or None for an entry
    whose word holds spaces (GloVe 840B has a few, e.g. `. . .`). `where` names the line in
    errors; `basis` says where `dim` came from. Numbers are not parsed here (see `to_vector`)."""
    text = line.rstrip()
    word, _, rest = text.partition(" ")
    if word and rest and rest.count(" ") == dim - 1:  # the usual line: one space between fields
        return word, rest
    parts = text.split()  # tabs, runs of spaces, a word with other whitespace in it
    if not parts:
        raise InputError(f"{where}: blank line in the middle of the vectors")
    numbers = len(parts) - 1
    if numbers > dim and not any(_is_number(p) for p in parts[1 : numbers + 1 - dim]):
        return None  # a word with spaces: the last `dim` fields are its numbers
    if numbers != dim:
        raise InputError(
            f"{where}: {numbers} number{'s' if numbers != 1 else ''} after the word "
            f"{excerpt(parts[0], 40)}, expected {dim}{basis}"
        )
    return parts[0], " ".join(parts[1:])


def to_vector(numbers: str, dim: int, where: str) -> np.ndarray:
    """The `dim` numbers of `split_entry` as float32; a non-number or inf/nan is an error."""
    fields = numbers.split(" ")
    try:
        vector = np.array(fields, dtype=np.float64)
    except ValueError:
        bad = next((f for f in fields if not _is_number(f)), fields[0])
        raise InputError(f"{where}: {excerpt(bad, 40)} is not a number") from None
    if vector.shape != (dim,):  # split_entry checked the count; guard direct callers
        raise InputError(f"{where}: {vector.size} numbers, expected {dim}")
    if not np.isfinite(vector).all() or np.abs(vector).max(initial=0.0) > FLOAT32_MAX:
        bad = next(f for f, v in zip(fields, vector, strict=True) if not abs(v) <= FLOAT32_MAX)
        raise InputError(f"{where}: {excerpt(bad, 40)} is not a finite float32 number")
    return vector.astype(np.float32)


def parse_line(line: str, dim: int, where: str = "line") -> tuple[str, np.ndarray] | None:
    """One line -> (word, float32 vector of `dim`), None for a word with spaces; InputError
    naming `where` for a malformed line."""
    entry = split_entry(line, dim, where)
    return None if entry is None else (entry[0], to_vector(entry[1], dim, where))


def header_dim(first: str) -> int | None:
    """The dimension a word2vec / fastText header line `count dim` gives, None for a vector line."""
    parts = first.split()
    if len(parts) == 2 and all(p.isdigit() for p in parts) and int(parts[1]) > 1:
        return int(parts[1])
    return None


# -- the file --------------------------------------------------------------------------------------
def check_vectors_file(path: str | Path) -> Path:
    """The path of a readable vectors file, or one line saying what is wrong with it."""
    p = Path(path)
    if not p.exists():
        raise UsageError(f"--embeddings {path}: no such file")
    if p.is_dir():
        raise UsageError(f"--embeddings {path}: is a folder; give a word-vector text file")
    try:
        with p.open("rb") as fh:
            head = fh.read(4)
    except OSError as exc:
        raise InputError(f"{path}: cannot be read ({exc.strerror or exc})") from None
    if not head:
        raise InputError(f"{path}: the file is empty")
    if head == b"PK\x03\x04":
        raise InputError(f"{path}: a zip archive{_members(p)}", "unzip it and give one text file")
    return p


def _members(path: Path) -> str:
    try:
        with zipfile.ZipFile(path) as zf:
            names = [i.filename for i in zf.infolist() if not i.is_dir()]
    except (zipfile.BadZipFile, OSError):
        return ""
    return f" holding {', '.join(names[:4])}{' ...' if len(names) > 4 else ''}"


@contextmanager
def _open(path: Path) -> Iterator[IO[bytes]]:
    with path.open("rb") as raw:
        magic = raw.read(2)
        raw.seek(0)
        if magic == GZIP_MAGIC:
            with gzip.GzipFile(fileobj=raw, mode="rb") as fh:
                yield fh
        else:
            yield raw


def iter_lines(path: str | Path) -> Iterator[tuple[int, str]]:
    """(line number, text without trailing whitespace) of every non-blank line, UTF-8 (a BOM
    skipped), never holding more than one line of at most MAX_LINE_BYTES."""
    p = check_vectors_file(path)
    n = 0
    with _open(p) as fh:
        while True:
            try:
                raw = fh.readline(MAX_LINE_BYTES + 1)
            except (OSError, EOFError, zlib.error) as exc:
                raise InputError(
                    f"{path}: damaged gzip data after line {n} ({exc})", "download the file again"
                ) from None
            if not raw:
                return
            n += 1
            if len(raw) > MAX_LINE_BYTES:
                raise InputError(
                    f"{path}: line {n} is longer than {MAX_LINE_BYTES >> 20} MB: "
                    "not a word-vector text file",
                    NOT_TEXT_HINT,
                )
            try:
                text = raw.decode("utf-8-sig" if n == 1 else "utf-8")
            except UnicodeDecodeError:
                raise InputError(f"{path}: line {n} is not UTF-8 text", NOT_TEXT_HINT) from None
            text = text.rstrip()  # the newline, a CR, trailing spaces
            if text:
                yield n, text


def vector_dim(path: str | Path) -> int:
    """The dimension of a vectors file, read from its first line (header or vector)."""
    for n, text in iter_lines(path):
        dim = header_dim(text)
        if dim is None:
            dim = len(text.split()) - 1
            if dim < 1:
                raise InputError(f"{path}: line {n}: a word without numbers; not a vectors file")
        return dim
    raise InputError(f"{path}: no word vectors in it (only blank lines)")


def read_vectors(path: str | Path, vocab: list[str], first_id: int = 2) -> WordVectors:
    """Stream `path` and keep the vectors of `vocab[first_id:]` (ids 0 and 1 are padding and
    unknown): exact spelling first, else the first word that is the same in lower case."""
    exact = {w: i for i, w in enumerate(vocab) if i >= first_id}
    folded: dict[str, list[int]] = {}
    for i, w in enumerate(vocab[first_id:], first_id):
        folded.setdefault(w.lower(), []).append(i)
    got: WordVectors | None = None
    basis, by_exact = "", set()
    for n, text in iter_lines(path):
        where = f"{path}: line {n}"
        if got is None:  # the first line: a header, or the first vector (it sets the dimension)
            dim = header_dim(text)
            got = WordVectors(dim or max(1, len(text.split()) - 1))
            basis = " (as the header says)" if dim else f" (as on line {n})"
            if dim:
                continue
        entry = split_entry(text, got.dim, where, basis)
        got.lines += 1
        if entry is None:
            got.skipped += 1
            continue
        word, numbers = entry
        i = exact.get(word)
        if i is not None and i not in by_exact:
            got.rows[i] = to_vector(numbers, got.dim, where)
            by_exact.add(i)
            continue
        ids = [j for j in folded.get(word.lower(), ()) if j not in got.rows]
        if ids:
            vector = to_vector(numbers, got.dim, where)
            for j in ids:
                got.rows[j] = vector
    if got is None or got.lines == 0:
        raise InputError(f"{path}: no word vectors in it")
    got.exact = len(by_exact)
    got.folded = len(got.rows) - got.exact
    return got


def coverage(found: set[int], counts: np.ndarray, vocab_words: int) -> tuple[float, float]:
    """(share of the vocabulary found, share of the training tokens whose word was found);
    `counts[i]` is how often id i occurs among the real (non-padding) training tokens."""
    total = float(counts[1:].sum())
    hit = float(sum(counts[i] for i in found if i < len(counts)))
    return len(found) / max(1, vocab_words), (hit / total if total else math.nan)
