"""The statistics pass of `--stream`: one read of a CSV in chunks that fits what TabularPreprocessor.fit
and Target.fit fit on a whole frame (column kinds, ignored columns, means/stds, missing indicators,
top categories, classes or target scaling), plus row and label counts, in bounded memory.

Kinds and ignored columns are decided on the labelled rows, statistics on the training rows (the
labelled rows outside the held-out share), as the in-memory path does. Column types come from
pyarrow's inference on the first block, integers widened to float64 (see docs/stream.md).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from dlcli.data.columns import (
    ID_NAME,
    MAX_CATEGORIES,
    Column,
    check_range,
    check_usable,
    ignore_note,
    numeric_column,
)
from dlcli.data.readers import iter_batches
from dlcli.data.split import held_out
from dlcli.data.tabular import TabularPreprocessor
from dlcli.data.target import (
    MAX_CLASSES,
    MAX_CLASSES_FOR_INTEGERS,
    Target,
    canonical_strings,
    regression_values,
)
from dlcli.errors import UsageError

BLOCK_BYTES = 2 << 20  # pyarrow's streaming reader: +130 MB at 2 MB blocks, +410 MB at 8 MB
DISTINCT_CAP = 100_000  # distinct texts tracked per column; beyond: free text, ignored
UNIQUE_CAP = 2_000_000  # integer values kept to test an ID-named column for uniqueness


@dataclass
class Moments:
    """Count, mean and sum of squared deviations of the finite values seen (Chan's merge)."""

    n: int = 0
    mean: float = 0.0
    m2: float = 0.0
    missing: bool = False  # a missing or non-finite value was seen

    def add(self, v: np.ndarray) -> None:
        ok = np.isfinite(v)
        if not ok.all():
            self.missing, v = True, v[ok]
        if not len(v):
            return
        v = v.astype(np.float64)
        m = float(v.mean())
        m2 = float(np.square(v - m).sum())
        n, tot = len(v), self.n + len(v)
        delta = m - self.mean
        self.mean += delta * n / tot
        self.m2 += m2 + delta * delta * self.n * n / tot
        self.n = tot

    @property
    def std(self) -> float:
        return float(np.sqrt(self.m2 / self.n)) if self.n else float("nan")


@dataclass
class Counts:
    """Canonical text values: counts over training rows (first-seen order breaks ties, as
    pandas' value_counts does), the set seen on any labelled row, and whether a null was seen."""

    train: dict = field(default_factory=dict)
    seen: set = field(default_factory=set)
    null: bool = False
    wide: bool = False  # more than DISTINCT_CAP distinct values: no longer tracked

    def add(self, values: pd.Series, train: np.ndarray) -> None:
        if self.wide:
            return
        canon = canonical_strings(values)
        self.null = self.null or bool(canon.isna().any())
        for key, c in canon[train].value_counts(sort=False).items():
            self.train[key] = self.train.get(key, 0) + int(c)
        self.seen.update(canon.dropna().unique().tolist())
        if len(self.seen) > DISTINCT_CAP:
            self.wide, self.train, self.seen = True, {}, set()

    def top(self, k: int) -> list[str]:
        order = sorted(self.train.items(), key=lambda kv: -kv[1])  # stable: ties keep first-seen
        return [str(name) for name, _ in order[:k]]


@dataclass
class ColumnScan:
    """What the in-memory column typing looks at, accumulated chunk by chunk (labelled rows)."""

    name: str
    numeric: bool  # read as numbers (pyarrow int or float)
    integer: bool  # pyarrow typed it as integers: may be an ID
    rows: int = 0
    non_null: int = 0
    lo: float = np.inf
    hi: float = -np.inf
    consecutive: bool = True  # every value is the previous one + 1
    last: float | None = None
    unique: bool = True  # no value seen twice (tracked for ID-named integer columns only)
    uniques: np.ndarray | None = None  # their sorted values, up to UNIQUE_CAP
    moments: Moments = field(default_factory=Moments)  # training rows
    counts: Counts = field(default_factory=Counts)  # text columns

    def add(self, arr: Any, labelled: np.ndarray, train: np.ndarray) -> None:
        if self.numeric:
            self._add_numbers(arr.to_numpy(zero_copy_only=False)[labelled], train)
        else:
            values = arr.to_pandas()[labelled].reset_index(drop=True)
            self.rows += len(values)
            self.non_null += int(values.notna().sum())
            self.counts.add(values, train)

    def _add_numbers(self, v: np.ndarray, train: np.ndarray) -> None:
        v = v.astype(np.float64, copy=False)
        self.rows += len(v)
        present = ~np.isnan(v)
        self.non_null += int(present.sum())
        if present.any():
            self.lo, self.hi = min(self.lo, np.nanmin(v)), max(self.hi, np.nanmax(v))
        if self.integer and len(v):
            self.integer = bool(present.all()) and bool(np.all(v == np.round(v)))
            self._track_ids(v)
        self.moments.add(v[train].astype(np.float32))

    def _track_ids(self, v: np.ndarray) -> None:
        if not self.integer:
            return
        if self.consecutive:
            prev = np.concatenate([[v[0] - 1 if self.last is None else self.last], v[:-1]])
            self.consecutive = bool(np.all(v - prev == 1))
            self.last = float(v[-1])
        tracked = self.uniques is None or len(self.uniques) < UNIQUE_CAP  # beyond: assumed unique
        if self.unique and tracked and ID_NAME.match(self.name):
            both = v if self.uniques is None else np.concatenate([self.uniques, v])
            self.uniques = np.unique(both)
            self.unique = len(self.uniques) == len(both)

    def kind(self, source: str) -> str | None:
        """ "numeric", "categorical", or None after a note saying why the column is ignored."""
        why = self._ignored()
        if why:
            ignore_note(source, self.name, why)
            return None
        return "numeric" if self.numeric else "categorical"

    def _ignored(self) -> str | None:
        if self.non_null == 0:
            return "empty"
        if self.numeric:
            named = ID_NAME.match(self.name) and self.unique
            if self.rows >= 20 and self.integer and (self.consecutive or named):
                return "id"
            return "single" if self.lo == self.hi else None
        distinct = len(self.counts.seen) + self.counts.null
        if self.rows >= 20 and ID_NAME.match(self.name) and distinct == self.rows:
            return "id"
        if self.counts.wide:
            return "text"
        if len(self.counts.seen) == 1:
            return "single"
        if self.rows >= 50 and len(self.counts.seen) > 0.5 * self.non_null:
            return "text"
        return None

    def column(self) -> Column:
        if self.numeric:
            m = self.moments
            return numeric_column(self.name, m.mean if m.n else np.nan, m.std, m.missing)
        return Column(self.name, "categorical", categories=self.counts.top(MAX_CATEGORIES))


@dataclass
class TargetScan:
    """The label column: distinct values (classification) and moments (regression)."""

    name: str
    numeric: bool
    task: str | None  # --task, if given
    source: str
    integral: bool = True
    counts: Counts = field(default_factory=Counts)  # all labelled rows count as "seen"
    moments: Moments = field(default_factory=Moments)

    def add(self, arr: Any, labelled: np.ndarray, train: np.ndarray, offset: int = 0) -> None:
        values = arr.to_pandas()[labelled]
        values.index = np.flatnonzero(labelled) + offset  # places in the file, for messages
        if self.numeric or self.task == "regression":  # text that is not a number: an error
            v = regression_values(values.rename(self.name), self.source)
            self.integral = self.integral and bool(np.all(v == np.round(v)))
            self.moments.add(v)
        if len(self.counts.seen) <= MAX_CLASSES:
            self.counts.add(values, train)

    def target(self) -> Target:
        task = self.task
        if task is None:  # infer_task, on the whole column
            few = len(self.counts.seen) <= MAX_CLASSES_FOR_INTEGERS and not self.counts.wide
            task = "classification" if not self.numeric or (self.integral and few) else "regression"
        if task == "classification":
            return Target.classification(self.name, list(self.counts.seen), self.source)
        if task == "regression":
            m = self.moments
            return Target(self.name, task, [], m.mean, m.std or 1.0)
        raise UsageError(f"unknown --task '{task}'", "use classification or regression")


@dataclass
class Scan:
    """The outcome of the statistics pass."""

    preprocessor: TabularPreprocessor
    train_rows: int
    val_rows: int
    unlabelled: int
    label_counts: list[int]  # training rows per class (classification), for class weights


def first_block_types(path: str) -> dict[str, Any]:
    """pyarrow's type for each column, inferred from the first block of the file."""
    first = next(iter_batches(path, block_bytes=BLOCK_BYTES))
    return dict(zip(first.schema.names, first.schema.types, strict=True))


def read_types(inferred: dict[str, Any]) -> dict[str, Any]:
    """The types every pass reads with: integers widened to float64 (a later '1.5' is still a
    number), columns empty in the first block read as text."""
    import pyarrow as pa

    def widen(typ: Any) -> Any:
        if pa.types.is_integer(typ):
            return pa.float64()
        return pa.string() if pa.types.is_null(typ) else typ

    return {name: widen(typ) for name, typ in inferred.items()}


def _is_number(typ: Any) -> bool:
    import pyarrow as pa

    return pa.types.is_integer(typ) or pa.types.is_floating(typ)


def scan(
    path: str,
    tname: str,
    task: str | None,
    split: tuple[float, int] | None,
    preprocessor: Any = None,
) -> Scan:
    """Read `path` once; `split` = (fraction, seed) holds rows out for validation (held_out)."""
    import pyarrow as pa

    inferred = first_block_types(path)
    types = read_types(inferred)
    cols = [
        ColumnScan(n, _is_number(t), pa.types.is_integer(t))
        for n, t in inferred.items()
        if n != tname
    ]
    tscan = TargetScan(tname, _is_number(inferred[tname]), task, path)
    offset, train_n, val_n, unlabelled = 0, 0, 0, 0
    only = {tname: types[tname]} if preprocessor is not None else None  # then: rows and labels only
    plan = (lambda header: only) if only else None
    for batch in iter_batches(path, column_types=types, block_bytes=BLOCK_BYTES, plan=plan):
        n = batch.num_rows
        labelled = batch.column(tname).is_valid().to_numpy(zero_copy_only=False)
        held = held_out(offset, n, *split) if split else np.zeros(n, dtype=bool)
        train = ~held[labelled]  # over the labelled rows
        tscan.add(batch.column(tname), labelled, train, offset)
        for c in cols if preprocessor is None else []:  # inf, 1e308: one line, rows named
            if c.numeric:
                v = batch.column(c.name).to_numpy(zero_copy_only=False)
                check_range(v[None, :], [c.name], path, row_offset=offset)
        offset += n
        unlabelled += n - int(labelled.sum())
        train_n += int(train.sum())
        val_n += len(train) - int(train.sum())
        if preprocessor is None:
            for c in cols:
                c.add(batch.column(c.name), labelled, train)
    if preprocessor is None:
        target = tscan.target()
        kinds = {c.name: c.kind(path) for c in cols}
        numeric = [n for n, k in kinds.items() if k == "numeric"]
        categorical = [n for n, k in kinds.items() if k == "categorical"]
        check_usable(numeric, categorical, tname, path)
        preprocessor = TabularPreprocessor([c.column() for c in cols if kinds[c.name]], target)
    target = preprocessor.target
    counts = tscan.counts.train
    label_counts = [counts.get(c, 0) for c in target.classes] if target.classes else []
    return Scan(preprocessor, train_n, val_n, unlabelled, label_counts)
