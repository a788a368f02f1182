"""Reading text data: which column holds the text (detected on a sample of the file), the text and
target columns of a whole file through the table readers (readers/), the rows usable for training,
and raw text lines from stdin.
"""

from __future__ import annotations

import codecs
import sys
from collections.abc import Iterator
from typing import Any

import numpy as np
import pandas as pd

from dlcli.console import note
from dlcli.data import readers
from dlcli.data.text_tokens import is_blank
from dlcli.errors import InputError, UsageError

BLOCK_BYTES = 32 << 20  # CSV blocks: one row (one text) may be up to this large
MIN_WORDS, LONG_WORDS, MAX_OTHER_COLUMNS = 4, 8, 2  # text detection (see detect_text_column)


def stdin_lines(max_chars: int, batch: int = 4096) -> Iterator[list[str]]:
    """Lines of stdin in batches, decoded as UTF-8 (a bad byte is an InputError naming the line).
    A line longer than `max_chars` characters is cut there; the rest is skipped unread into memory."""
    fh = sys.stdin.buffer
    limit = 4 * max_chars  # UTF-8 needs at most 4 bytes per character
    lines: list[str] = []
    number = 0
    while True:
        raw = fh.readline(limit)
        if not raw:
            break
        number += 1
        cut = not raw.endswith(b"\n")
        if cut:  # the rest of an enormous line is never decoded nor kept
            while (more := fh.readline(limit)) and not more.endswith(b"\n"):
                pass
        try:
            text = codecs.getincrementaldecoder("utf-8")().decode(raw, final=not cut)
        except UnicodeDecodeError:
            raise InputError(
                f"<stdin>: line {number} holds bytes that are not UTF-8 text", "send UTF-8 text"
            ) from None
        lines.append(text.rstrip("\r\n"))
        if len(lines) >= batch:
            yield lines
            lines = []
    if lines:
        yield lines
    if number == 0:
        raise InputError("<stdin>: no text (expected one text per line)")


def detect_text_column(frame: pd.DataFrame | None, target: str | None) -> str | None:
    """The column holding free text, or None: not the target (default: the last column), not
    numbers, mostly distinct values of at least MIN_WORDS words on average; the wordiest wins. In a
    table with more than MAX_OTHER_COLUMNS other columns, short text (under LONG_WORDS words, such
    as names or addresses) is taken for a table column: --text-column overrides."""
    if frame is None or frame.empty:
        return None
    target = target if target is not None else str(frame.columns[-1])
    # every cell at once (a pandas call per column took minutes on 100,000 columns)
    k, n = frame.shape[1], len(frame)
    cells = pd.Series(frame.to_numpy(dtype=object).T.ravel(), dtype=object)  # column by column
    column = np.repeat(np.arange(k), n)
    present = cells.notna().to_numpy()
    text = cells[present].astype(str)
    filled = (text.str.strip() != "").to_numpy()
    text, column = text[filled], column[present][filled]
    count = np.bincount(column, minlength=k)
    numbers = np.bincount(
        column, weights=pd.to_numeric(text, errors="coerce").notna().to_numpy(), minlength=k
    )
    words = np.bincount(column, weights=text.str.split().str.len().to_numpy(), minlength=k)
    codes = pd.factorize(text)[0]
    span = int(codes.max()) + 1 if len(codes) else 1
    distinct = np.bincount(np.unique(column * span + codes) // span, minlength=k)
    mean_words = words / np.maximum(count, 1)
    usable = (count > 0) & (numbers <= 0.5 * count) & (frame.columns.to_numpy() != target)
    wordy = usable & (mean_words >= MIN_WORDS) & (distinct > 0.5 * count)
    if not wordy.any():
        return None
    best = int(np.argmax(np.where(wordy, mean_words, -1.0)))  # the first of the wordiest
    crowded = len(frame.columns) - 2 > MAX_OTHER_COLUMNS
    return None if crowded and mean_words[best] < LONG_WORDS else str(frame.columns[best])


def read_columns(
    path: str, text_col: str | None, target: str | None
) -> tuple[pd.DataFrame, str, str]:
    """(frame, text column, target column) of a whole CSV, both columns read as text; a target
    whose every value is a number becomes numeric (as pyarrow would type it)."""
    import pyarrow as pa

    chosen: dict[str, str] = {}

    def plan(header: list[str]) -> dict[str, Any]:
        tname = target or header[-1]
        col = text_col or detect_text_column(readers.sample(path), tname)
        for name, hint in ((tname, "pass --target COLUMN"), (col, "pass --text-column COLUMN")):
            if name is None or name not in header:
                shown = f"no column '{name}'" if name else "no text column found"
                raise InputError(f"{path}: {shown} (columns: {', '.join(header)})", hint)
        if col == tname:
            raise UsageError(f"{path}: the text column '{col}' is also the target")
        chosen.update(text=col, target=tname)
        return {col: pa.string(), tname: pa.string()}

    chunks = list(readers.iter_chunks(path, plan=plan, block_bytes=BLOCK_BYTES))
    col, tname = chosen["text"], chosen["target"]
    frame = pd.DataFrame(
        {
            c: pd.concat([ch[c] for ch in chunks], ignore_index=True).astype(object)
            for c in (col, tname)
        }
    )
    numbers = pd.to_numeric(frame[tname], errors="coerce")
    if numbers.notna().sum() == frame[tname].notna().sum():
        frame[tname] = numbers
    return frame, col, tname


def usable_rows(frame: pd.DataFrame, text_col: str, tname: str, source: str) -> pd.DataFrame:
    """Rows with a label and some text; what is dropped is reported."""
    no_label = frame[tname].isna()
    if no_label.all():
        raise InputError(f"{source}: target column '{tname}' has no values")
    blank = frame[text_col].map(is_blank) & ~no_label
    for count, what in (
        (no_label.sum(), f"no value in target '{tname}'"),
        (blank.sum(), f"empty text in '{text_col}'"),
    ):
        if count:
            note(f"{source}: dropped {int(count)} rows with {what}")
    kept = frame[~no_label & ~blank]
    if kept.empty:
        raise InputError(f"{source}: no row has both text in '{text_col}' and a label")
    return kept.reset_index(drop=True)
