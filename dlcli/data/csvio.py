"""Reading CSV with pyarrow: whole files for training, bounded chunks for prediction. Every parse
problem (missing, empty, header-only, ragged, non-UTF-8, non-numeric) becomes one InputError line."""

from __future__ import annotations

import csv
import io
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO

import pandas as pd

from dlcli.errors import InputError

CHUNK_BYTES = 8 << 20  # pyarrow block size for streaming reads: bounded memory per chunk


def check_file(path: str) -> Path:
    """The path as a Path, or an InputError if it is missing, a folder or empty."""
    p = Path(path)
    if not p.exists():
        raise InputError(f"{path}: file not found")
    if p.is_dir():
        raise InputError(f"{path}: is a folder, expected a CSV file")
    if p.stat().st_size == 0:
        raise InputError(f"{path}: file is empty")
    return p


def _ragged_line(path: str, expected: int) -> int | None:
    """1-based line number of the first row whose field count differs from the header's."""
    try:
        with open(path, newline="", encoding="utf-8", errors="replace") as fh:
            for i, row in enumerate(csv.reader(fh)):
                if i and row and len(row) != expected:
                    return i + 1
    except OSError:
        return None
    return None


def _value_line(path: str, column: str, value: str) -> int | None:
    """1-based line number of the first row whose `column` holds exactly `value`."""
    try:
        with open(path, newline="", encoding="utf-8", errors="replace") as fh:
            reader = csv.reader(fh)
            header = next(reader)
            j = header.index(column)
            for i, row in enumerate(reader):
                if j < len(row) and row[j].strip() == value:
                    return i + 2
    except (OSError, StopIteration, ValueError):
        return None
    return None


def _translate(
    exc: Exception, name: str, path: str | None, columns: list[str] | None
) -> InputError:
    msg = str(exc)
    if "Expected" in msg and "columns, got" in msg:
        expected = int(msg.split("Expected ")[1].split(" ")[0])
        got = msg.split("got ")[1].split(":")[0]
        line = _ragged_line(path, expected) if path else None
        where = f"line {line}" if line else "a row"
        return InputError(
            f"{name}: {where} has {got} fields but the header has {expected}",
            "fix or remove that row",
        )
    if "conversion error" in msg and "invalid value" in msg and columns:
        idx = int(msg.split("column #")[1].split(":")[0])
        value = msg.split("invalid value '")[1].rsplit("'", 1)[0]
        col = columns[idx] if idx < len(columns) else f"#{idx}"
        line = _value_line(path, col, value) if path else None
        at = f", line {line}" if line else ""
        return InputError(
            f"{name}: column '{col}'{at}: '{value}' is not a number (the model expects numbers in this column)"
        )
    if "Empty CSV file" in msg or "no columns" in msg.lower():
        return InputError(f"{name}: no header row found")
    return InputError(f"{name}: cannot parse as CSV: {msg.splitlines()[0]}")


def _check_utf8(frame_cols: Any, name: str, types: Any) -> None:
    import pyarrow as pa

    for col, typ in zip(frame_cols, types, strict=False):
        if pa.types.is_binary(typ) or pa.types.is_large_binary(typ):
            raise InputError(
                f"{name}: column '{col}' holds bytes that are not UTF-8 text",
                "re-save the file as UTF-8",
            )


def read_table(path: str) -> pd.DataFrame:
    """Read a whole CSV (training data) into a DataFrame."""
    import pyarrow as pa
    import pyarrow.csv as pc

    check_file(path)
    try:
        table = pc.read_csv(path, read_options=pc.ReadOptions(use_threads=True))
    except (pa.ArrowInvalid, UnicodeDecodeError) as exc:
        raise _translate(exc, path, path, None) from None
    _check_utf8(table.column_names, path, table.schema.types)
    if table.num_rows == 0:
        raise InputError(f"{path}: has a header but no data rows")
    if len(set(table.column_names)) != len(table.column_names):
        dup = sorted({c for c in table.column_names if table.column_names.count(c) > 1})
        raise InputError(f"{path}: duplicate column names: {', '.join(dup)}")
    return table.to_pandas()


def _open_source(path: str) -> tuple[BinaryIO, str, str | None]:
    if path == "-":
        data = sys.stdin.buffer
        return data, "<stdin>", None
    check_file(path)
    return open(path, "rb"), path, path


def header_of(path: str) -> list[str]:
    """Column names of a CSV file (first line)."""
    with open(check_file(path), newline="", encoding="utf-8", errors="replace") as fh:
        return next(csv.reader(fh), [])


def iter_chunks(
    path: str, column_types: dict[str, Any] | None = None, block_bytes: int = CHUNK_BYTES
) -> Iterator[pd.DataFrame]:
    """Stream a CSV (or stdin for '-') as DataFrames of about `block_bytes` each.

    `column_types` maps column names to pyarrow types; the rest is inferred per file.
    """
    import pyarrow as pa
    import pyarrow.csv as pc

    fh, name, real_path = _open_source(path)
    if real_path is None:  # stdin: pyarrow needs a seekable-free stream; wrap to be safe
        fh = io.BufferedReader(fh)  # type: ignore[arg-type]
    columns: list[str] | None = None
    try:
        try:
            reader = pc.open_csv(
                fh,
                read_options=pc.ReadOptions(block_size=block_bytes),
                convert_options=pc.ConvertOptions(column_types=column_types or {}),
            )
        except pa.ArrowInvalid as exc:
            if "Empty CSV" in str(exc):
                raise InputError(f"{name}: is empty (no header row)") from None
            raise _translate(exc, name, real_path, None) from None
        columns = reader.schema.names
        rows = 0
        while True:
            try:
                batch = reader.read_next_batch()
            except StopIteration:
                break
            except pa.ArrowInvalid as exc:
                raise _translate(exc, name, real_path, columns) from None
            _check_utf8(batch.schema.names, name, batch.schema.types)
            rows += batch.num_rows
            if batch.num_rows:
                yield batch.to_pandas()
        if rows == 0:
            raise InputError(f"{name}: has a header but no data rows")
    finally:
        if real_path is not None:
            fh.close()
