"""The JSON Lines reader (readers/__init__.py: `Reader`, built on arrow.py's `Format`): one JSON
object per line, read with pyarrow.json (whole, or streamed block by block). A malformed line, or a
column whose values change kind (a number, then text), is one line naming the file, line and column.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

from dlcli.data.readers import excerpt
from dlcli.data.readers.arrow import Format, arrow_errors
from dlcli.errors import InputError

SCAN_LINES = 1_000_000  # how far a parse error is looked for, to name its line
DATE = r"^\d{4}-\d{2}-\d{2}$"


def _options(path: str) -> tuple[Any, list[str], list[str]]:
    """Parse options that read the columns pyarrow would type as timestamps as text, their names
    (dates and times are then typed as the CSV reader types them: `_times`), and the column order
    of the first block."""
    import pyarrow as pa
    import pyarrow.json as pj

    schema = pj.open_json(path).schema
    times = [f.name for f in schema if pa.types.is_timestamp(f.type)]
    explicit = pa.schema([pa.field(n, pa.string()) for n in times])
    opts = pj.ParseOptions(explicit_schema=explicit, unexpected_field_behavior="infer")
    return opts, times, schema.names


def _times(table: Any, times: list[str], order: list[str]) -> Any:
    """Text columns JSON holds dates in: date32 when every value is a plain date, else timestamps
    (as the CSV reader infers them); text when pyarrow cannot read them as either."""
    import pyarrow as pa
    import pyarrow.compute as pc

    for name in times:
        if name not in table.schema.names:
            continue
        i = table.schema.get_field_index(name)
        col = table.column(i)
        valid = col.drop_null()
        try:
            if len(valid) and pc.all(pc.match_substring_regex(valid, DATE)).as_py():
                col = pc.cast(pc.strptime(col, "%Y-%m-%d", "s"), pa.date32())
            else:
                col = col.cast(pa.timestamp("ns"))
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            continue
        table = table.set_column(i, name, col)
    names = table.schema.names  # explicit columns come first: back to the file's order
    return table.select([n for n in order if n in names] + [n for n in names if n not in order])


def _schema(path: str) -> Any:
    import pyarrow.json as pj

    opts, times, order = _options(path)
    return _times(next(iter(pj.open_json(path, parse_options=opts))), times, order).schema


def _whole(path: str) -> Any:
    import pyarrow.json as pj

    opts, times, order = _options(path)
    return _times(pj.read_json(path, parse_options=opts), times, order)


def _batches(path: str, columns: list[str] | None, rows: int) -> Iterator[Any]:
    import pyarrow.json as pj

    opts, times, order = _options(path)
    block = pj.ReadOptions(block_size=max(rows * 64, 1 << 20))
    for batch in pj.open_json(path, read_options=block, parse_options=opts):
        batch = _times(batch, times, order)
        yield batch.select(columns) if columns is not None else batch


def _kind(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    return "text" if isinstance(value, str) else type(value).__name__


def _locate(path: str, column: str | None) -> str | None:
    """'line N' (and why) of the first line that is not a JSON object, or where `column` first
    holds a value of another kind than before; None when not found near the start."""
    first: str | None = None
    try:
        with open(path, encoding="utf-8", errors="replace") as fh:
            for n, line in enumerate(fh, 1):
                if n > SCAN_LINES:
                    return None
                if not line.strip():
                    continue
                try:
                    rec = json.loads(line)
                except ValueError as exc:
                    return f"line {n}: not valid JSON ({exc.msg})"
                if not isinstance(rec, dict):
                    return f"line {n}: not a JSON object"
                if column is not None and column in rec:
                    kind = _kind(rec[column])
                    if kind is not None and first is not None and kind != first:
                        return f"line {n}: column '{excerpt(column)}' holds {kind}, earlier lines {first}"
                    first = first or kind
    except OSError:
        return None
    return None


def _explain(exc: BaseException, path: str) -> InputError:
    msg = str(exc).strip()
    changed = re.search(r"Column\(/([^)]*)\) changed from", msg)
    where = _locate(path, changed.group(1) if changed else None)
    if where:
        return InputError(f"{path}: {where}", "fix that line (one JSON object per line)")
    if "UTF8" in msg or "UTF-8" in msg:
        return InputError(f"{path}: holds bytes that are not UTF-8 text", "re-save it as UTF-8")
    return InputError(f"{path}: cannot read as JSON Lines: {excerpt(msg, 200)}")


# the Reader of this format (readers.reader_for returns it)
READER = Format("JSON Lines", _schema, _whole, _batches, arrow_errors(), _explain)
