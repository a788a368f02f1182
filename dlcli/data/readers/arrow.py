"""What the Arrow-native readers (Parquet, JSON Lines, Feather/Arrow IPC) share: column types made
the ones the CSV reader would give for the same table, casts to a read plan's types, and the
`Reader` functions written once over a format's three primitives (schema, whole table, batches).

Types, so that a table reads the same whatever its format (docs/data-kinds.md): integers of every
width -> int64 (float64 beyond int64), floats and decimals -> float64, dictionary (categorical)
columns -> their values, large/view strings -> string, dates -> date32, timestamps -> timestamp[s]
when every value is a whole second, else timestamp[ns] (time zone kept), booleans and nulls as they
are. Text cells spelled as a missing value ('', 'NA', 'null': NULL_TEXT) are missing, as in CSV,
unless text is read verbatim. Binary and nested columns (lists, structs, maps) are one line naming
the column.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from dlcli.data.readers import NULL_TEXT, ReadPlan, excerpt, names_list
from dlcli.errors import InputError

if TYPE_CHECKING:
    import pandas as pd

SAMPLE_ROWS = 1000  # `sample`: the head of a file a guess is made on
BATCH_BYTES = 8 << 20  # about this many bytes of column values per streamed batch


def check_file(path: str, what: str) -> Path:
    """The path as a Path, or an InputError if it is missing, a folder or empty."""
    p = Path(path)
    if not p.exists():
        raise InputError(f"{path}: file not found")
    if p.is_dir():
        raise InputError(f"{path}: is a folder, expected a {what} file")
    if p.stat().st_size == 0:
        raise InputError(f"{path}: file is empty")
    return p


def check_names(names: list[str], path: str) -> None:
    seen: set[str] = set()
    dup = sorted({n for n in names if n in seen or seen.add(n)})  # type: ignore[func-returns-value]
    if dup:
        raise InputError(f"{path}: duplicate column names: {names_list(dup)}")


def csv_type(typ: Any, name: str, path: str) -> Any:
    """The type the CSV reader gives a column read as `typ` (timestamps: see `normalise`), or an
    InputError for a column dl cannot read as numbers, text, booleans or dates."""
    import pyarrow as pa

    t = pa.types
    if t.is_dictionary(typ):
        return csv_type(typ.value_type, name, path)
    if t.is_integer(typ):
        return pa.int64()
    if t.is_floating(typ) or t.is_decimal(typ):
        return pa.float64()
    if t.is_string(typ) or t.is_large_string(typ) or getattr(t, "is_string_view", bool)(typ):
        return pa.string()
    if t.is_date(typ):
        return pa.date32()
    if t.is_boolean(typ) or t.is_null(typ) or t.is_timestamp(typ) or t.is_time(typ):
        return typ
    if t.is_binary(typ) or t.is_large_binary(typ) or t.is_fixed_size_binary(typ):
        raise InputError(
            f"{path}: column '{excerpt(name)}' holds binary data ({typ}); dl reads numbers, text, "
            "booleans and dates",
            "convert it to text or leave it out of the file",
        )
    raise InputError(
        f"{path}: column '{excerpt(name)}' holds nested values ({excerpt(str(typ), 60)}); dl reads "
        "one number, text, boolean or date per cell",
        "flatten it into plain columns",
    )


def _timestamp(arr: Any) -> Any:
    """timestamp[s] when every value is a whole second (as the CSV reader infers), else [ns]."""
    import pyarrow as pa
    import pyarrow.compute as pc

    typ = arr.type
    ns = pa.timestamp("ns", typ.tz)
    whole = pa.timestamp("s", typ.tz)
    if typ.unit == "s":
        return arr
    ticks = pc.cast(arr, pa.int64())
    per_second = {"ms": 1_000, "us": 1_000_000, "ns": 1_000_000_000}[typ.unit]
    if pc.all(pc.equal(pc.remainder(ticks, per_second), 0)).as_py() in (True, None):
        return pc.divide(ticks, per_second).cast(pa.int64()).cast(whole)
    return arr.cast(ns)


def normalise(arr: Any, name: str, path: str) -> Any:
    """One column (Array or ChunkedArray) with the type the CSV reader would give it."""
    import pyarrow as pa

    typ = arr.type
    if pa.types.is_dictionary(typ):
        arr = arr.cast(typ.value_type)
        typ = arr.type
    if pa.types.is_timestamp(typ):
        return _timestamp(arr)
    want = csv_type(typ, name, path)
    if want.equals(typ):
        return arr
    if want.equals(pa.int64()) and pa.types.is_unsigned_integer(typ) and len(arr):
        big = arr.cast(pa.uint64())
        import pyarrow.compute as pc

        top = pc.max(big).as_py()
        if top is not None and top > np.iinfo(np.int64).max:
            return arr.cast(pa.float64(), safe=False)  # as the CSV reader reads it: a float
    return arr.cast(want)


def cast_to(arr: Any, want: Any, name: str, path: str, where: str) -> Any:
    """`arr` as the read plan's type `want`; a text value that is not a number is one line."""
    import pyarrow as pa

    if arr.type.equals(want):
        return arr
    try:
        return arr.cast(want)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        pass
    text = arr.cast(pa.string()) if not pa.types.is_string(arr.type) else arr
    values = text.to_pylist()
    for i, v in enumerate(values):
        if v is None or v.strip() in NULL_TEXT:
            continue
        try:
            float(v)
        except ValueError:
            raise InputError(
                f"{path}: column '{excerpt(name)}', {where}row {i + 1}: '{excerpt(v)}' is not a "
                "number (the model expects numbers in this column)"
            ) from None
    import pyarrow.compute as pc

    trimmed = pc.utf8_trim_whitespace(text)
    blank = pc.is_in(trimmed, value_set=pa.array(sorted(NULL_TEXT)))
    return pc.if_else(blank, pa.scalar(None, pa.string()), trimmed).cast(want)


def _nulls(arr: Any) -> Any:
    """Text cells spelled as a missing value (NULL_TEXT: '', 'NA', 'null', ...) made missing, as
    the CSV reader makes them in text columns unless text is kept verbatim."""
    import pyarrow as pa
    import pyarrow.compute as pc

    if not pa.types.is_string(arr.type):
        return arr
    spelled = pc.is_in(arr, value_set=pa.array(sorted(NULL_TEXT)))
    if not pc.any(spelled).as_py():
        return arr
    return pc.if_else(spelled, pa.scalar(None, pa.string()), arr)


def normalise_table(table: Any, path: str, verbatim: bool = False) -> Any:
    """Every column of a Table or RecordBatch with the CSV reader's types (and, unless
    `verbatim`, its missing-value spellings in text columns)."""
    import pyarrow as pa

    cols = [normalise(table.column(i), n, path) for i, n in enumerate(table.schema.names)]
    if not verbatim:
        cols = [_nulls(c) for c in cols]
    maker = pa.Table if isinstance(table, pa.Table) else pa.RecordBatch
    return maker.from_arrays(cols, names=table.schema.names)


def arrow_errors() -> tuple[type[BaseException], ...]:
    """What pyarrow's readers raise for a damaged or foreign file."""
    import pyarrow as pa

    return (pa.ArrowException, OSError)


@dataclass(frozen=True)
class Format:
    """A table format as three primitives, and the `Reader` built on them (a format module's `READER`).

    `batches(path, columns, rows)` yields RecordBatches of about `rows` rows holding only
    `columns` (None: all), in bounded memory where the format allows it. Each primitive raises
    the library's own errors; `explain` turns one into a line naming the file (and what it can)."""

    what: str  # how messages name the format: "Parquet"
    schema: Callable[[str], Any]
    whole: Callable[[str], Any]
    batches: Callable[[str, list[str] | None, int], Iterator[Any]]
    errors: tuple[type[BaseException], ...]
    explain: Callable[[BaseException, str], InputError]

    def _guard(self, path: str, call: Callable[[], Any]) -> Any:
        error = None
        try:
            return call()
        except self.errors as exc:
            error = self.explain(exc, path)
        raise error

    def check_file(self, path: str) -> Path:
        return check_file(path, self.what)

    def header_of(self, path: str) -> list[str]:
        self.check_file(path)
        names = list(self._guard(path, lambda: self.schema(path)).names)
        check_names(names, path)
        return names

    def read_arrow(self, path: str) -> Any:
        self.check_file(path)
        table = self._guard(path, lambda: self.whole(path))
        check_names(table.schema.names, path)
        if table.num_columns == 0:
            raise InputError(f"{path}: holds no columns")
        if table.num_rows == 0:
            raise InputError(f"{path}: has columns but no data rows")
        return normalise_table(table, path)

    def read_table(self, path: str) -> pd.DataFrame:
        return self.read_arrow(path).to_pandas()

    def iter_batches(
        self,
        path: str,
        column_types: dict[str, Any] | None = None,
        block_bytes: int | None = None,
        plan: ReadPlan | None = None,
        verbatim: bool = False,
    ) -> Iterator[Any]:
        """RecordBatches with the CSV reader's types, cast to `column_types` (or the types `plan`
        gives for the header, then only those columns are read). `verbatim` keeps text cells as
        stored; otherwise the null spellings of NULL_TEXT are missing, as in CSV."""
        import pyarrow as pa

        header = self.header_of(path)
        include = None
        if plan is not None:
            column_types = plan(header)
            include = [c for c in header if c in column_types]
        types = column_types or {}
        width = len(include if include is not None else header) or 1
        rows = max(1024, (block_bytes or BATCH_BYTES) // (8 * width))
        seen, offset = 0, 0
        source = iter(self._guard(path, lambda: self.batches(path, include, rows)))
        while True:
            batch = self._guard(path, lambda: next(source, None))
            if batch is None:
                break
            batch = normalise_table(batch, path, verbatim)
            where = f"batch at row {offset + 1}, " if offset else ""
            cols = [
                cast_to(batch.column(i), types[n], n, path, where)
                if n in types
                else batch.column(i)
                for i, n in enumerate(batch.schema.names)
            ]
            offset += batch.num_rows
            if batch.num_rows:
                seen += 1
                yield pa.RecordBatch.from_arrays(cols, names=batch.schema.names)
        if not seen:
            raise InputError(f"{path}: has columns but no data rows")

    def iter_chunks(
        self,
        path: str,
        column_types: dict[str, Any] | None = None,
        block_bytes: int | None = None,
        plan: ReadPlan | None = None,
        verbatim: bool = False,
    ) -> Iterator[pd.DataFrame]:
        for batch in self.iter_batches(path, column_types, block_bytes, plan, verbatim):
            yield batch.to_pandas()

    def sample(self, path: str) -> pd.DataFrame | None:
        """The first SAMPLE_ROWS rows, every column as text (missing values NaN), or None."""
        import pandas as pd
        import pyarrow as pa

        batches, rows = [], 0
        try:
            for b in self.iter_batches(path, block_bytes=SAMPLE_ROWS * 64):
                batches.append(b)
                rows += b.num_rows
                if rows >= SAMPLE_ROWS:
                    break
        except InputError:
            return None
        batch = pa.Table.from_batches(batches).slice(0, SAMPLE_ROWS)
        out = {}
        for i, name in enumerate(batch.schema.names):
            col = batch.column(i)
            text = col.cast(pa.string()) if not pa.types.is_null(col.type) else col
            out[name] = np.asarray(text.to_pylist(), dtype=object)
        frame = pd.DataFrame(out, columns=batch.schema.names)
        return frame.where(frame.notna(), np.nan)
