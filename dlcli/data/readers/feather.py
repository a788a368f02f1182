"""The Feather / Arrow IPC reader (readers/__init__.py: `Reader`, built on arrow.py's `Format`):
the IPC file format (Feather v2) memory-mapped and streamed batch by batch as written, the IPC
stream format read in order, Feather v1 read whole."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from dlcli.data.readers import excerpt
from dlcli.data.readers.arrow import Format, arrow_errors
from dlcli.errors import InputError


def _open(path: str) -> Any:
    """A reader with `.schema` and `.read_all()`/batches: the file format, else the stream format."""
    import pyarrow as pa
    import pyarrow.ipc as ipc

    try:
        return ipc.open_file(pa.memory_map(path))
    except pa.ArrowInvalid:
        return ipc.open_stream(pa.memory_map(path))


def _schema(path: str) -> Any:
    import pyarrow as pa
    import pyarrow.feather as pf

    try:
        return _open(path).schema
    except pa.ArrowInvalid:
        return pf.read_table(path).schema  # Feather v1


def _whole(path: str) -> Any:
    import pyarrow.feather as pf

    return pf.read_table(path, memory_map=True)


def _batches(path: str, columns: list[str] | None, rows: int) -> Iterator[Any]:
    import pyarrow as pa

    try:
        reader = _open(path)
    except pa.ArrowInvalid:
        reader = None
    if reader is None:  # Feather v1: no batches to stream
        yield from _whole(path).select(columns or slice(None)).to_batches(rows)
        return
    stored = (
        (reader.get_batch(i) for i in range(reader.num_record_batches))
        if hasattr(reader, "num_record_batches")
        else iter(reader)
    )
    for batch in stored:
        if columns is not None:
            batch = batch.select(columns)
        for start in range(0, batch.num_rows, rows):
            yield batch.slice(start, rows)


def _explain(exc: BaseException, path: str) -> InputError:
    msg = str(exc).strip()
    return InputError(f"{path}: cannot read as Feather/Arrow IPC: {excerpt(msg, 200)}")


# the Reader of this format (readers.reader_for returns it)
READER = Format("Feather", _schema, _whole, _batches, arrow_errors(), _explain)
