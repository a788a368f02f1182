"""Wide CSV tables (more than WIDE_COLUMNS columns): read and typed with a cost that follows the
cells, not the columns.

pyarrow's CSV reader keeps a parser, a converter and its type inference per column: about 100 us
and 8 KB a column whatever its length, so a 2 MB file of 100,000 columns and 3 rows took minutes
and a gigabyte. Here Python's csv module parses the rows, the cells go into one arrow array, and
`infer_types` classifies every cell in a few vectorised passes (regular expressions over that
array), then converts each group of columns with one cast.

The rules are pyarrow's, in its order: a column with no value is null; integers (optional '-', at
most 18 digits, blanks around ignored) are int64; 1/0/true/false spellings are boolean; decimals
(with an exponent, inf and infinity too) are float64; anything else is text, kept as written.
Dates and times, which pyarrow also recognises, stay text in a wide table. Null spellings
(NULL_TEXT) are missing in every column, as `strings_can_be_null` makes them in pyarrow.
"""

from __future__ import annotations

import csv
import itertools
from typing import Any

import numpy as np

from dlcli.data.readers import NULL_TEXT
from dlcli.data.readers.compression import open_bytes, open_text
from dlcli.errors import InputError

WIDE_COLUMNS = 1000  # more columns than this: read here, not by pyarrow's per-column reader
BATCH_CELLS = 1 << 20  # cells parsed into Python strings before they go into arrow

_BLANKS = " \t"  # what pyarrow ignores around a number
_INT = r"^-?[0-9]{1,18}$"  # 19 digits may not fit in int64: those are decimals here
_FLOAT = r"^[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?$|^(?i:[+-]?inf(?:inity)?)$"
_TRUE = ["1", "True", "TRUE", "true"]  # pyarrow's ConvertOptions defaults
_FALSE = ["0", "False", "FALSE", "false"]


def read_wide(path: str, header: list[str]) -> Any:
    """The whole CSV at `path` as a pyarrow Table typed by `infer_types` (no data rows: a table
    of 0 rows). A row with another field count than the header, or bytes that are not UTF-8,
    is an InputError naming the line."""
    import pyarrow as pa

    width = len(header)
    parts, batch, rows = [], [], 0
    try:
        with open_text(path, encoding="utf-8-sig", newline="") as fh:
            reader = csv.reader(fh)
            next(row for row in reader if row)  # the header, read by the caller
            for row in reader:
                if not row:  # blank line
                    continue
                if len(row) != width:
                    raise InputError(
                        f"{path}: line {reader.line_num} has {len(row)} fields but the header has {width}",
                        "fix or remove that row",
                    )
                batch.append(row)
                if len(batch) * width >= BATCH_CELLS:
                    parts.append(pa.array(itertools.chain.from_iterable(batch), pa.large_string()))
                    rows, batch = rows + len(batch), []
    except UnicodeDecodeError:
        raise InputError(
            f"{path}: line {_undecodable_line(path)} holds bytes that are not UTF-8 text",
            "re-save the file as UTF-8",
        ) from None
    except csv.Error as exc:
        raise InputError(f"{path}: cannot parse as CSV: {exc}") from None
    if batch:
        parts.append(pa.array(itertools.chain.from_iterable(batch), pa.large_string()))
        rows += len(batch)
    cells = pa.concat_arrays(parts) if parts else pa.array([], pa.large_string())
    order = (np.arange(rows)[None, :] * width + np.arange(width)[:, None]).ravel()
    return infer_types(cells.take(order), header, rows)  # row-major -> column-major


def _undecodable_line(path: str) -> int:
    """1-based number of the first line that is not UTF-8."""
    with open_bytes(path) as fh:
        for number, line in enumerate(fh, 1):
            try:
                line.decode("utf-8")
            except UnicodeDecodeError:
                return number
    return 1


def infer_types(cells: Any, names: list[str], n: int) -> Any:
    """A pyarrow Table from `cells`, the text of every cell column by column (n per column), each
    column typed as the module doc says."""
    import pyarrow as pa
    import pyarrow.compute as pc

    width = len(names)
    if n == 0:
        return pa.table({name: pa.array([], pa.string()) for name in names})
    missing = pc.is_in(cells, value_set=pa.array(sorted(NULL_TEXT)))
    text = pc.if_else(missing, pa.scalar(None, cells.type), cells)
    if text.nbytes < 1 << 30:  # 32-bit offsets, as pyarrow's reader makes them
        text = text.cast(pa.string())
    trimmed = pc.utf8_trim(text, characters=_BLANKS)
    null = _mask(text.is_null(), width, n)
    as_int = _mask(pc.match_substring_regex(trimmed, _INT), width, n)
    as_float = _mask(pc.match_substring_regex(trimmed, _FLOAT), width, n)
    as_bool = _mask(pc.is_in(text, value_set=pa.array(_TRUE + _FALSE)), width, n)
    empty = null.all(axis=1)
    kinds = np.full(width, "string", dtype=object)
    for kind, fits in (("float", as_float | as_int), ("bool", as_bool), ("int", as_int)):
        kinds[(fits | null).all(axis=1)] = kind  # later entries win: pyarrow's order reversed
    kinds[empty] = "null"
    arrays: list[Any] = [None] * width
    for kind, typ in (("int", pa.int64()), ("float", pa.float64()), ("bool", None)):
        which = np.flatnonzero(kinds == kind)
        if len(which):
            values = _convert(trimmed if typ is not None else text, _cells(which, n), typ)
            for k, j in enumerate(which.tolist()):
                arrays[j] = values.slice(k * n, n)
    for j in np.flatnonzero(kinds == "string").tolist():
        arrays[j] = text.slice(j * n, n)
    for j in np.flatnonzero(empty).tolist():
        arrays[j] = pa.nulls(n)
    return pa.Table.from_arrays(arrays, names=names)


def _convert(cells: Any, index: np.ndarray, typ: Any) -> Any:
    """The cells at `index` cast to `typ` (None: boolean, true spellings True; missing kept)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    chosen = cells.take(index)
    if typ is not None:
        return pc.cast(chosen, typ)
    truth = pc.is_in(chosen, value_set=pa.array(_TRUE))
    return pc.if_else(chosen.is_null(), pa.scalar(None, pa.bool_()), truth)


def _mask(values: Any, width: int, n: int) -> np.ndarray:
    """A pyarrow boolean array of width*n cells as a (width, n) numpy mask (null -> False)."""
    return values.fill_null(False).to_numpy(zero_copy_only=False).reshape(width, n)


def _cells(columns: np.ndarray, n: int) -> np.ndarray:
    """Indices into the column-major cell array of every cell of `columns`, column by column."""
    return (columns[:, None] * n + np.arange(n)).ravel()
