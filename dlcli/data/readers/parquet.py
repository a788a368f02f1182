"""The Parquet reader (readers/__init__.py: `Reader`, built on arrow.py's `Format`): whole files
with pyarrow.parquet's threaded reader; streaming (--stream, predict and evaluate chunks, the
statistics pass) one row group at a time, so memory holds one row group's columns at most."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from dlcli.data.readers import excerpt
from dlcli.data.readers.arrow import Format, arrow_errors
from dlcli.errors import InputError


def _schema(path: str) -> Any:
    import pyarrow.parquet as pq

    return pq.read_schema(path)


def _whole(path: str) -> Any:
    import pyarrow.parquet as pq

    return pq.read_table(path)


def _batches(path: str, columns: list[str] | None, rows: int) -> Iterator[Any]:
    """Row group by row group; a row group that cannot be decoded is one line naming it."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    with pq.ParquetFile(path) as pf:
        for group in range(pf.num_row_groups):
            error = None
            try:
                batches = list(pf.iter_batches(rows, row_groups=[group], columns=columns))
            except (pa.ArrowException, OSError) as exc:
                error = _bad_group(path) or InputError(
                    f"{path}: row group {group + 1} of {pf.num_row_groups} cannot be read: "
                    f"{excerpt(str(exc).strip(), 200)}"
                )
            if error is not None:
                raise error
            yield from batches
            batches = []  # this group's buffers go before the next group is read, not after


def _bad_group(path: str) -> InputError | None:
    """The line naming the first row group (and column) that cannot be decoded, if one is."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        pf = pq.ParquetFile(path)
    except (pa.ArrowException, OSError):
        return None
    with pf:
        for group in range(pf.num_row_groups):
            for name in pf.schema_arrow.names:
                try:
                    pf.read_row_group(group, columns=[name])
                except (pa.ArrowException, OSError) as exc:
                    return InputError(
                        f"{path}: row group {group + 1} of {pf.num_row_groups}, column "
                        f"'{excerpt(name)}' cannot be read: {excerpt(str(exc).strip(), 160)}"
                    )
    return None


def _explain(exc: BaseException, path: str) -> InputError:
    msg = str(exc).strip()
    if "magic bytes" in msg or "too small" in msg.lower():
        return InputError(f"{path}: not a Parquet file (no Parquet footer)", "is it truncated?")
    return _bad_group(path) or InputError(f"{path}: cannot read as Parquet: {excerpt(msg, 200)}")


# the Reader of this format (readers.reader_for returns it)
READER = Format("Parquet", _schema, _whole, _batches, arrow_errors(), _explain)
