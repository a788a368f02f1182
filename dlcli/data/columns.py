"""Column typing for tables: which columns are numbers, which are categories, which are left out
(empty, single value, IDs, free text, each with a note), and the plain-data `Column` that records
how one column is encoded. Shared by in-memory fitting (tabular.py) and --stream (stream_scan.py).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from dlcli.console import note
from dlcli.data.readers import excerpt
from dlcli.errors import InputError

MAX_CATEGORIES = 50  # most frequent levels kept per column; the rest share code 0 with missing
ID_NAME = re.compile(r"^(id|index|row_?id|unnamed: ?0|.*[_ ]id)$", re.IGNORECASE)


@dataclass
class Column:
    """One input column and everything needed to encode it again."""

    name: str
    kind: str  # "numeric" | "categorical"
    fill: float = 0.0
    mean: float = 0.0
    std: float = 1.0
    indicator: bool = False  # add a was-missing feature
    categories: list[str] = field(default_factory=list)  # code i+1 <-> categories[i]


LARGEST = float(np.finfo(np.float32).max) / 2  # |x| beyond: x - mean may overflow float32


def row_numbers(positions: np.ndarray, labels: Any, row_offset: int = 0) -> list[int]:
    """1-based data row numbers, as in the file, of `positions` in a frame whose index `labels`
    holds each row's place in its file or chunk (None: positions are places)."""
    out = []
    for i in positions.tolist():
        label = labels[i] if labels is not None else i
        out.append(row_offset + (int(label) if isinstance(label, (int, np.integer)) else i) + 1)
    return out


def check_range(
    cols: np.ndarray, names: list[str], source: str, labels: Any = None, row_offset: int = 0
) -> None:
    """`cols`, raw columns (F, N) (a view is fine): an InputError naming the first column holding
    a value beyond +-LARGEST (inf included) and its first rows. Missing values (NaN) pass."""
    if cols.size == 0:
        return
    with np.errstate(invalid="ignore"):
        lo, hi = np.fmin.reduce(cols, axis=1), np.fmax.reduce(cols, axis=1)
    bad = np.flatnonzero((lo < -LARGEST) | (hi > LARGEST))
    if not len(bad):
        return
    j = int(bad[0])
    where = np.flatnonzero(np.abs(cols[j]) > LARGEST)
    raise InputError(
        too_large(source, names[j], row_numbers(where[:3], labels, row_offset), len(where))
    )


def too_large(source: str, name: str, rows: list[int], count: int) -> str:
    """The one line for infinite or huge values: the column, the first rows, what to do."""
    shown = ", ".join(map(str, rows)) + (
        f" and {count - len(rows)} more" if count > len(rows) else ""
    )
    these = "these rows" if count > 1 else "this row"
    return (
        f"{source}: column '{excerpt(name)}', row{'s' if count > 1 else ''} {shown}: infinite or too large a "
        f"value (beyond +-{LARGEST:.1e}) to standardise; fix or remove {these} (an empty cell is "
        "a missing value)"
    )


def numeric_column(name: str, mean: float, std: float, missing: bool) -> Column:
    """A numeric column standardised with these training statistics (missing -> the mean)."""
    mean = float(mean) if np.isfinite(mean) else 0.0
    std = float(std) if np.isfinite(std) and std > 1e-12 else 1.0
    return Column(name, "numeric", fill=mean, mean=mean, std=std, indicator=missing)


IGNORED = {  # why a column is left out, as the note says it
    "empty": "is empty",
    "id": "looks like an ID (all values unique)",
    "single": "has a single value",
    "text": "is text with mostly unique values (free text or an ID)",
}


def ignore_note(source: str, name: str, why: str) -> None:
    note(f"{source}: column '{excerpt(name)}' {IGNORED[why]}; ignored")


NOTES_PER_REASON = 5  # beyond: one note for all the columns left out for that reason
IGNORED_MANY = {
    "empty": "are empty",
    "id": "look like IDs (all values unique)",
    "single": "each have a single value",
    "text": "are text with mostly unique values (free text or IDs)",
}


def report_ignored(source: str, ignored: list[tuple[str, str]]) -> None:
    """A note per ignored column (in column order), but one per reason when more than
    NOTES_PER_REASON columns share it: 100,000 empty columns get one line, not 100,000."""
    by_reason: dict[str, list[str]] = {}
    for name, why in ignored:
        by_reason.setdefault(why, []).append(name)
    for name, why in ignored:
        if len(by_reason[why]) <= NOTES_PER_REASON:
            ignore_note(source, name, why)
    for why, names in by_reason.items():
        if len(names) > NOTES_PER_REASON:
            shown = ", ".join(f"'{excerpt(c)}'" for c in names[:3])
            note(f"{source}: {len(names):,} columns ({shown}, ...) {IGNORED_MANY[why]}; ignored")


def check_usable(numeric: list[str], categorical: list[str], target: str, source: str) -> None:
    if not numeric and not categorical:
        raise InputError(
            f"{source}: no usable feature columns besides the target '{excerpt(target)}'"
        )


def plan_columns(frame: pd.DataFrame, target: str, source: str) -> tuple[list[str], list[str]]:
    """Split feature columns into (numeric, categorical); ignored ones are reported as notes.

    Columns are judged by dtype group, each group as one block (a (rows, columns) array), so the
    cost follows the cells: a pandas call per column made 100,000 columns take minutes."""
    n = len(frame)
    dtypes = frame.dtypes
    groups: dict[str, list[int]] = {"f": [], "i": [], "b": [], "O": [], "other": []}
    for j, (name, dtype) in enumerate(zip(frame.columns, dtypes, strict=True)):
        if name != target:
            groups[_group(dtype)].append(j)
    verdict: dict[int, str] = {}  # column index -> "numeric" | "categorical" | why it is ignored
    for group, judge in JUDGES.items():
        if groups[group]:
            block = frame.iloc[:, groups[group]]
            verdict.update(zip(groups[group], judge(block, n), strict=True))
    numeric, categorical, ignored = [], [], []
    for j in sorted(verdict):
        name, why = frame.columns[j], verdict[j]
        if why == "numeric":
            numeric.append(name)
        elif why == "categorical":
            categorical.append(name)
        else:
            ignored.append((str(name), why))
    report_ignored(source, ignored)
    check_usable(numeric, categorical, target, source)
    return numeric, categorical


def _group(dtype: object) -> str:
    """The block a column is judged in: numpy floats, integers, booleans, text, or other."""
    if isinstance(dtype, np.dtype) and dtype.kind in "fiub":
        return {"u": "i"}.get(dtype.kind, dtype.kind)
    if pd.api.types.is_numeric_dtype(dtype) and not pd.api.types.is_bool_dtype(dtype):
        return "f"  # pandas' nullable numbers (never from the readers): as floats, never IDs
    if pd.api.types.is_object_dtype(dtype) or isinstance(dtype, pd.StringDtype):
        return "O"
    return "other"


def _floats(block: pd.DataFrame, n: int) -> list[str]:
    """Never IDs (hashing a million floats to find out would be the slowest step of loading):
    empty, a single value (NaN ignored) or numeric."""
    values = block.to_numpy(dtype=np.float64, na_value=np.nan)  # (N, k)
    lo = np.fmin.reduce(values, axis=0)  # NaN only where every value is NaN
    empty = np.isnan(lo)
    same = lo == np.fmax.reduce(values, axis=0)
    return [
        "empty" if e else "single" if v else "numeric" for e, v in zip(empty, same, strict=True)
    ]


def _integers(block: pd.DataFrame, n: int) -> list[str]:
    """Never missing (pandas reads integer columns with gaps as floats). An ID: 20 rows or more,
    consecutive, or all distinct and named like an ID."""
    values = block.to_numpy()  # (N, k) int
    same = values.min(axis=0) == values.max(axis=0)
    ids = np.zeros(values.shape[1], dtype=bool)
    if n >= 20:
        ids = (np.diff(values, axis=0) == 1).all(axis=0)
        named = np.array([bool(ID_NAME.match(str(c))) for c in block.columns]) & ~ids
        if named.any():  # distinct values: sorted, no two neighbours equal
            ordered = np.sort(values[:, named], axis=0)
            ids[named] = (np.diff(ordered, axis=0) != 0).all(axis=0)
    return ["id" if i else "single" if v else "numeric" for i, v in zip(ids, same, strict=True)]


def _booleans(block: pd.DataFrame, n: int) -> list[str]:
    values = block.to_numpy(dtype=bool)
    same = values.all(axis=0) | ~values.any(axis=0)
    return ["single" if v else "categorical" for v in same]


def _texts(block: pd.DataFrame, n: int) -> list[str]:
    """Text (and mixed) columns, judged on their distinct values."""
    present, distinct = _distinct_counts(block, n)
    out = []
    for j, name in enumerate(block.columns):
        if present[j] == 0:
            out.append("empty")
        elif n >= 20 and ID_NAME.match(str(name)) and distinct[j] + (present[j] < n) == n:
            out.append("id")  # all unique, a missing value counting as one value
        elif distinct[j] == 1:
            out.append("single")
        elif n >= 50 and distinct[j] > 0.5 * present[j]:
            out.append("text")
        else:
            out.append("categorical")
    return out


PER_COLUMN = 64  # up to this many text columns, pandas' own counting (arrow-native) is fastest


def _distinct_counts(block: pd.DataFrame, n: int) -> tuple[np.ndarray, np.ndarray]:
    """(non-missing cells, distinct non-missing values) per column. Many columns: one factorize
    of every cell, then the distinct (column, code) pairs, hashed once."""
    k = block.shape[1]
    if k <= PER_COLUMN:
        present = block.notna().sum().to_numpy()
        return present, np.array([block.iloc[:, j].nunique() for j in range(k)])
    codes = pd.factorize(block.to_numpy(dtype=object).T.ravel(), use_na_sentinel=True)[0]
    codes = codes.reshape(k, n)  # (k, N): -1 for a missing cell
    present = (codes >= 0).sum(axis=1)
    width = int(codes.max()) + 1 if codes.size else 1
    pairs = (np.arange(k)[:, None] * width + codes)[codes >= 0]
    distinct = np.bincount(pd.unique(pairs) // width, minlength=k)
    return present, distinct


def _others(block: pd.DataFrame, n: int) -> list[str]:
    """Other dtypes (dates, times): judged as text, on their values."""
    return _texts(block.astype(object).where(block.notna(), None), n)


JUDGES = {"f": _floats, "i": _integers, "b": _booleans, "O": _texts, "other": _others}
