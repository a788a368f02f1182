"""The CSV reader (readers/__init__.py: `Reader`): pyarrow for whole files (training) and bounded
chunks (prediction, streaming; '-' is stdin). Every parse problem (missing, empty, header-only,
ragged, non-UTF-8, non-numeric) becomes one InputError line.

Empty cells and the usual null spellings (NA, NaN, null, ...) are missing values in every column,
text columns included, for training and prediction alike.
"""

from __future__ import annotations

import collections
import csv
import io
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import pandas as pd

from dlcli.data.readers import NULL_TEXT, ReadPlan, check_path, excerpt, names_list
from dlcli.data.readers.compression import damaged, decompress_error, open_bytes, open_text
from dlcli.data.readers.wide import WIDE_COLUMNS, read_wide
from dlcli.errors import InputError

CHUNK_BYTES = 8 << 20  # pyarrow block size for streaming reads: bounded memory per chunk
MAX_BLOCK_BYTES = 1 << 30  # the largest block a row longer than CHUNK_BYTES is read in
TAIL_BYTES = 4 * CHUNK_BYTES  # of stdin, kept to name the line of a parse error
SAMPLE_BYTES, SAMPLE_ROWS = 1 << 20, 1000  # `sample`: the head of a file a guess is made on


def check_file(path: str) -> Path:
    """The path as a Path, or an InputError if it is missing, a folder or empty."""
    return check_path(path, "CSV")


def _ragged_line(path: str, expected: int) -> int | None:
    """1-based line number of the first row whose field count differs from the header's."""
    try:
        with open_text(path, newline="", encoding="utf-8", errors="replace") as fh:
            for i, row in enumerate(csv.reader(fh)):
                if i and row and len(row) != expected:
                    return i + 1
    except (OSError, ValueError):
        return None
    return None


def _value_row(path: str, index: int, value: str) -> int | None:
    """1-based data row number of the first row whose column `index` holds exactly `value`."""
    try:
        with open_text(path, newline="", encoding="utf-8", errors="replace") as fh:
            reader = csv.reader(fh)
            next(reader)
            for i, row in enumerate(r for r in reader if r):
                if index < len(row) and row[index].strip() == value.strip():
                    return i + 1
    except (OSError, ValueError, StopIteration):
        return None
    return None


def _column_index(msg: str) -> int | None:
    try:
        return int(msg.split("column #")[1].split(":")[0])
    except (IndexError, ValueError):
        return None


def _tail_ragged_line(tail: tuple[int, bytes] | None, expected: int) -> int | None:
    """`_ragged_line` over the kept tail of stdin: the line of the first row after a line break
    whose field count differs from the header's (None when nothing was kept)."""
    if tail is None:
        return None
    before, data = tail
    start = 0 if before == 0 else data.find(b"\n") + 1  # a kept tail may begin mid-line
    before += data[:start].count(b"\n")
    text = data[start:].decode("utf-8", errors="replace")
    for i, row in enumerate(csv.reader(io.StringIO(text, newline=""))):
        if row and len(row) != expected and before + i > 0:
            return before + i + 1
    return None


def _translate(
    exc: Exception,
    name: str,
    path: str | None,
    columns: list[str] | None,
    tail: tuple[int, bytes] | None = None,
) -> InputError:
    """A pyarrow parse error as one InputError line naming the file, and the column or line."""
    msg = str(exc)
    idx = _column_index(msg)
    col = None
    if idx is not None:
        col = excerpt(columns[idx]) if columns and idx < len(columns) else f"#{idx + 1}"
    if "Expected" in msg and "columns, got" in msg:
        expected = int(msg.split("Expected ")[1].split(" ")[0])
        got = msg.split("got ")[1].split(":")[0]
        line = _ragged_line(path, expected) if path else _tail_ragged_line(tail, expected)
        where = f"line {line}" if line else "a row"
        return InputError(
            f"{name}: {where} has {got} fields but the header has {expected}",
            "fix or remove that row",
        )
    if "invalid UTF8" in msg or "UTF-8" in msg or isinstance(exc, UnicodeDecodeError):
        where = f"column '{col}'" if col else "the file"
        return InputError(
            f"{name}: {where} holds bytes that are not UTF-8 text", "re-save the file as UTF-8"
        )
    if "conversion error" in msg and "invalid value" in msg and col is not None:
        value = msg.split("invalid value '")[1].rsplit("'", 1)[0]
        row = _value_row(path, idx, value) if path and idx is not None else None
        at = f", row {row}" if row else ""
        return InputError(
            f"{name}: column '{col}'{at}: '{excerpt(value)}' is not a number (the model expects numbers in this column)"
        )
    if "Empty CSV file" in msg or "no columns" in msg.lower():
        return InputError(f"{name}: no header row found")
    return InputError(f"{name}: cannot parse as CSV: {excerpt(msg.strip(), 200)}")


def _error(
    exc: Exception, name: str, path: str | None, columns: list[str], tail: Any
) -> InputError:
    """`_translate`, or the line for damaged compressed bytes; other OS errors are re-raised."""
    damaged = decompress_error(exc, path) if path else None
    if damaged is not None or isinstance(exc, InputError):
        return damaged or exc
    if not isinstance(exc, ValueError):  # OSError: not a parse problem
        raise exc
    return _translate(exc, name, path, columns, tail)


def _check_utf8(frame_cols: Any, name: str, types: Any) -> None:
    import pyarrow as pa

    for col, typ in zip(frame_cols, types, strict=False):
        if pa.types.is_binary(typ) or pa.types.is_large_binary(typ):
            raise InputError(
                f"{name}: column '{excerpt(col)}' holds bytes that are not UTF-8 text",
                "re-save the file as UTF-8",
            )


def _read_header(fh: BinaryIO, name: str) -> tuple[bytes, list[str]]:
    """Consume the header record from `fh`: (the bytes read, the column names).

    Raises an InputError for an empty stream, a header that is not UTF-8 or duplicate names.
    """
    raw = b""
    while True:
        line = fh.readline()
        raw += line
        if not line:
            break
        if raw.strip() and raw.count(b'"') % 2 == 0:  # a quoted name may hold a line break
            break
    if not raw.strip():
        raise InputError(f"{name}: is empty (no header row)")
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise InputError(
            f"{name}: the header row holds bytes that are not UTF-8 text",
            "re-save the file as UTF-8",
        ) from None
    try:  # a bare \r ends a record, as in pyarrow's reader
        names = next(csv.reader(io.StringIO(text.lstrip("\r\n"), newline="")), [])
    except csv.Error as exc:
        raise InputError(f"{name}: cannot parse the header row as CSV: {exc}") from None
    dup = sorted(c for c, k in Counter(names).items() if k > 1)  # one pass: names may be 100,000
    if dup:
        raise InputError(f"{name}: duplicate column names: {names_list(dup)}")
    return raw, names


class _Prefixed(io.RawIOBase):
    """A read-only stream: `prefix` (bytes already consumed from `rest`), then the rest of `rest`.

    With `keep` (stdin, which cannot be read twice), the last TAIL_BYTES read stay in `tail`
    with the number of lines before them, so a parse error can still name its line."""

    def __init__(self, prefix: bytes, rest: BinaryIO, keep: bool = False) -> None:
        super().__init__()
        self._prefix, self._rest = prefix, rest
        self._kept: collections.deque[bytes] | None = collections.deque() if keep else None
        self._kept_bytes = self._lines_before = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buf: Any) -> int:
        if self._prefix:
            n = min(len(buf), len(self._prefix))
            data, self._prefix = self._prefix[:n], self._prefix[n:]
        else:
            data = self._rest.read(len(buf))
        buf[: len(data)] = data
        if self._kept is not None and data:
            self._kept.append(bytes(data))
            self._kept_bytes += len(data)
            while self._kept_bytes - len(self._kept[0]) >= TAIL_BYTES:
                old = self._kept.popleft()
                self._kept_bytes -= len(old)
                self._lines_before += old.count(b"\n")
        return len(data)

    @property
    def tail(self) -> tuple[int, bytes] | None:
        """(lines before the kept bytes, the kept bytes), or None when nothing is kept."""
        if self._kept is None:
            return None
        return self._lines_before, b"".join(self._kept)


def _convert_options(
    column_types: dict[str, Any] | None, include: list[str] | None, verbatim: bool = False
) -> Any:
    import pyarrow.csv as pc

    return pc.ConvertOptions(
        column_types=column_types or {},
        include_columns=include or [],
        # empty cells and NA spellings are missing in text columns too, unless text is kept as is
        strings_can_be_null=not verbatim,
    )


def read_table(path: str) -> pd.DataFrame:
    """Read a whole CSV (training data) into a DataFrame."""
    return read_arrow(path).to_pandas()


def read_arrow(path: str) -> Any:
    """Read a whole CSV (training data) into a pyarrow Table, with the checks of `read_table`."""
    import pyarrow as pa

    size = check_file(path).stat().st_size
    columns = header_of(path)
    if len(columns) > WIDE_COLUMNS:  # pyarrow's reader costs ~100 us and 8 KB per column
        table = read_wide(path, columns)
    else:
        try:
            with damaged(path):
                try:
                    table = _read_whole(path, None)
                except pa.ArrowInvalid as exc:
                    if "straddling" not in str(exc):  # a row longer than a block: one block
                        raise
                    table = _read_whole(path, min(size + 1, MAX_BLOCK_BYTES))
        except (pa.ArrowInvalid, UnicodeDecodeError) as exc:
            raise decompress_error(exc, path) or _translate(exc, path, path, columns) from None
        _check_utf8(table.column_names, path, table.schema.types)
    if table.num_rows == 0:
        raise InputError(f"{path}: has a header but no data rows")
    return table


def _read_whole(path: str, block_bytes: int | None) -> Any:
    import pyarrow.csv as pc

    read = pc.ReadOptions(use_threads=True)
    if block_bytes is not None:
        read.block_size = block_bytes
    return pc.read_csv(path, read_options=read, convert_options=_convert_options(None, None))


def sample(
    path: str, max_bytes: int = SAMPLE_BYTES, max_rows: int = SAMPLE_ROWS
) -> pd.DataFrame | None:
    """Up to `max_rows` rows from the first `max_bytes` of a file, every column as text (bad
    bytes replaced, null spellings missing, short rows padded), or None when that cannot be read
    (a row longer than the header, duplicate names): enough to guess what a file holds.

    Python's csv module and one object array: a pandas parser costs ~300 us per column."""
    try:
        with open_bytes(path) as fh:
            head = fh.read(max_bytes)
    except (OSError, ValueError):
        return None
    if len(head) == max_bytes:
        head = head[: head.rfind(b"\n") + 1] or head
    text = head.decode("utf-8-sig", errors="replace")
    try:
        rows = [r for r in csv.reader(io.StringIO(text, newline=None)) if r]
    except csv.Error:
        return None
    if not rows or len(set(rows[0])) < len(rows[0]):
        return None
    header, rows = rows[0], rows[1 : max_rows + 1]
    width = len(header)
    if any(len(r) > width for r in rows):
        return None
    cells = np.full((len(rows), width), np.nan, dtype=object)  # (N, k); short rows padded
    for i, row in enumerate(rows):
        cells[i, : len(row)] = row
    flat = cells.ravel()
    flat[pd.Series(flat).isin(NULL_TEXT).to_numpy()] = np.nan
    return pd.DataFrame(cells, columns=header)


def _open_source(path: str) -> tuple[BinaryIO, str, str | None]:
    if path == "-":
        return sys.stdin.buffer, "<stdin>", None
    check_file(path)
    return open_bytes(path), path, path


def header_of(path: str) -> list[str]:
    """Column names of a CSV file (first record)."""
    check_file(path)
    with damaged(path), open_bytes(path) as fh:
        return _read_header(fh, path)[1]


def iter_chunks(
    path: str,
    column_types: dict[str, Any] | None = None,
    block_bytes: int | None = None,
    plan: ReadPlan | None = None,
    verbatim: bool = False,
) -> Iterator[pd.DataFrame]:
    """Stream a CSV (or stdin for '-') as DataFrames of about `block_bytes` each.

    `column_types` maps column names to pyarrow types; the rest is inferred from the first block.
    `plan`, when given, sees the header first (it may raise, e.g. for missing columns) and returns
    the types of the only columns to read: other columns are never parsed, so they cannot fail.
    `verbatim` keeps text cells exactly as written ('NA' stays 'NA'; see NULL_TEXT).
    """
    for batch in iter_batches(path, column_types, block_bytes, plan, verbatim):
        yield batch.to_pandas()


def iter_batches(
    path: str,
    column_types: dict[str, Any] | None = None,
    block_bytes: int | None = None,
    plan: ReadPlan | None = None,
    verbatim: bool = False,
) -> Iterator[Any]:
    """`iter_chunks` as pyarrow RecordBatches (no pandas conversion); empty batches skipped."""
    import pyarrow as pa
    import pyarrow.csv as pc

    fh, name, real_path = _open_source(path)
    try:
        prefix, header = _read_header(fh, name)
        include = None
        if plan is not None:
            column_types = plan(header)
            include = [c for c in header if c in column_types]
        stream = _Prefixed(prefix, fh, keep=real_path is None)  # stdin: keeps its tail
        buffered = io.BufferedReader(stream, buffer_size=1 << 20)
        # Errors are raised outside the `except` blocks: an exception raised inside one keeps the
        # pyarrow error, its traceback and the half-open reader alive until exit, where
        # destroying the reader's read-ahead thread aborts the process (exit 134, not 2).
        error = None
        try:
            reader = pc.open_csv(
                buffered if real_path is None else real_path,  # a file: pyarrow's own reads
                read_options=pc.ReadOptions(block_size=block_bytes or CHUNK_BYTES),
                convert_options=_convert_options(column_types, include, verbatim),
            )
        except (pa.ArrowInvalid, OSError) as exc:
            error = _error(exc, name, real_path, header, stream.tail)
        if error is not None:
            raise error
        rows = 0
        while True:
            try:
                batch = reader.read_next_batch()
            except StopIteration:
                break
            except (pa.ArrowInvalid, OSError) as exc:
                error = _error(exc, name, real_path, header, stream.tail)
            if error is not None:
                raise error
            _check_utf8(batch.schema.names, name, batch.schema.types)
            rows += batch.num_rows
            if batch.num_rows:
                yield batch
        if rows == 0:
            raise InputError(f"{name}: has a header but no data rows")
    finally:
        if real_path is not None:
            fh.close()
