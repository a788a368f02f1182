"""Table readers, chosen by file suffix: the data kinds read files only through the functions here.

A reader is one module that implements `Reader`; READERS maps a suffix (double suffixes such as
`.csv.gz` included: the longest match wins) to it. CSV is the reader of every other suffix and of
stdin ('-'), as dl has always read them. Parquet, JSON Lines and Feather/Arrow IPC are built on
arrow.py's `Format`, which gives every column the type the CSV reader would. A new table format is
one module beside csv.py plus one line in READERS; `FORMATS` names them for --input-format.
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, cast, runtime_checkable

if TYPE_CHECKING:
    import pandas as pd

READERS: dict[str, str] = {
    ".csv": "dlcli.data.readers.csv",
    ".csv.gz": "dlcli.data.readers.csv",  # pyarrow and compression.py decompress by suffix
    ".csv.zst": "dlcli.data.readers.csv",
    ".csv.bz2": "dlcli.data.readers.csv",
    ".parquet": "dlcli.data.readers.parquet",
    ".pq": "dlcli.data.readers.parquet",
    ".jsonl": "dlcli.data.readers.jsonl",
    ".ndjson": "dlcli.data.readers.jsonl",
    ".feather": "dlcli.data.readers.feather",
    ".arrow": "dlcli.data.readers.feather",
    ".ipc": "dlcli.data.readers.feather",
}
FALLBACK = ".csv"  # the reader of unknown suffixes and of stdin
# --input-format NAME (what stdin holds) -> the suffix whose reader reads it
FORMATS: dict[str, str] = {
    "csv": ".csv",
    "csv.gz": ".csv.gz",
    "csv.zst": ".csv.zst",
    "csv.bz2": ".csv.bz2",
    "parquet": ".parquet",
    "jsonl": ".jsonl",
    "feather": ".feather",
}

# pyarrow's spellings of a missing value (ConvertOptions().null_values), for text read verbatim:
# every reader treats these cells as missing in every column, text columns included
NULL_TEXT = frozenset(
    [
        "",
        "#N/A",
        "#N/A N/A",
        "#NA",
        "-1.#IND",
        "-1.#QNAN",
        "-NaN",
        "-nan",
        "1.#IND",
        "1.#QNAN",
        "N/A",
        "NA",
        "NULL",
        "NaN",
        "n/a",
        "nan",
        "null",
    ]
)

_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")


def excerpt(value: object, limit: int = 40) -> str:
    """A value from the user's file as one short line for a message: control characters (line
    breaks, NUL) escaped, text beyond `limit` characters cut with '...'."""
    text = str(value)
    cut = len(text) > limit
    text = _CONTROL.sub(lambda m: repr(m.group())[1:-1], text[:limit])
    return text + "..." if cut else text


def names_list(names: list, limit: int = 10) -> str:
    """Column names for a message: the first `limit`, each an excerpt, and how many more."""
    shown = ", ".join(excerpt(n) for n in names[:limit])
    return shown + (f", ... ({len(names) - limit:,} more)" if len(names) > limit else "")


# Given the header, the pyarrow types of the columns to read; only those columns are read.
ReadPlan = Callable[[list[str]], dict[str, Any]]


@runtime_checkable
class Reader(Protocol):
    """What a table format provides. Errors are InputError lines naming the file, and the row
    or column where there is one."""

    def check_file(self, path: str) -> Path:
        """The path, or an InputError if it is missing, a folder or empty."""
        ...

    def header_of(self, path: str) -> list[str]:
        """The column names."""
        ...

    def read_arrow(self, path: str) -> Any:
        """The whole file as a pyarrow Table (training data); no data rows is an error."""
        ...

    def read_table(self, path: str) -> pd.DataFrame:
        """The whole file as a DataFrame."""
        ...

    def iter_batches(
        self,
        path: str,
        column_types: dict[str, Any] | None = None,
        block_bytes: int | None = None,
        plan: ReadPlan | None = None,
        verbatim: bool = False,
    ) -> Iterator[Any]:
        """pyarrow RecordBatches in bounded memory ('-' = stdin). `plan` sees the header first
        and returns the types of the only columns to read; `verbatim` keeps text as written."""
        ...

    def iter_chunks(
        self,
        path: str,
        column_types: dict[str, Any] | None = None,
        block_bytes: int | None = None,
        plan: ReadPlan | None = None,
        verbatim: bool = False,
    ) -> Iterator[pd.DataFrame]:
        """`iter_batches` as DataFrames."""
        ...

    def sample(self, path: str) -> pd.DataFrame | None:
        """The head of the file, every column as text, or None when it cannot be read."""
        ...


def reader_for(path: str) -> Reader:
    """The reader of `path`'s suffix (the longest registered one it ends with), else CSV."""
    name = str(path).lower()
    for suffix in sorted(READERS, key=len, reverse=True):
        if name.endswith(suffix):
            return _reader(READERS[suffix])
    return _reader(READERS[FALLBACK])


def _reader(name: str) -> Reader:
    """A reader module, or the `READER` object it holds (the Arrow formats: readers/arrow.Format)."""
    module = importlib.import_module(name)
    return cast(Reader, getattr(module, "READER", module))


def check_file(path: str) -> Path:
    return reader_for(path).check_file(path)


def header_of(path: str) -> list[str]:
    return reader_for(path).header_of(path)


def read_arrow(path: str) -> Any:
    return reader_for(path).read_arrow(path)


def read_table(path: str) -> pd.DataFrame:
    return reader_for(path).read_table(path)


def iter_batches(
    path: str,
    column_types: dict[str, Any] | None = None,
    block_bytes: int | None = None,
    plan: ReadPlan | None = None,
    verbatim: bool = False,
) -> Iterator[Any]:
    return reader_for(path).iter_batches(path, column_types, block_bytes, plan, verbatim)


def iter_chunks(
    path: str,
    column_types: dict[str, Any] | None = None,
    block_bytes: int | None = None,
    plan: ReadPlan | None = None,
    verbatim: bool = False,
) -> Iterator[pd.DataFrame]:
    return reader_for(path).iter_chunks(path, column_types, block_bytes, plan, verbatim)


def sample(path: str) -> pd.DataFrame | None:
    return reader_for(path).sample(path)
