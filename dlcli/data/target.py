"""The label column: task inference, class names, encoding to tensors and back. Plain-data state."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from dlcli.data.columns import LARGEST, row_numbers, too_large
from dlcli.data.readers import excerpt
from dlcli.errors import InputError, UsageError

MAX_CLASSES_FOR_INTEGERS = 20  # an integer label with at most this many values is a class label
MAX_CLASSES = 1000  # more distinct labels than this: probably a regression target


def _canon(v: object) -> object:
    """One value as dl stores it: True -> 'True', 3.0 -> '3', ' a ' -> 'a', '' -> missing."""
    if isinstance(v, (bool, np.bool_)):
        return str(bool(v))
    if isinstance(v, (int, float, np.integer, np.floating)):
        f = float(v)
        return str(int(f)) if f.is_integer() else repr(f)
    text = str(v).strip()
    return text if text else np.nan


def canonical_strings(series: pd.Series) -> pd.Series:
    """Values as the strings dl stores them: 3.0 -> '3', True -> 'True', NaN stays NaN.

    Works on the distinct values only (pd.factorize), so a million rows cost one pass."""
    codes, uniques = pd.factorize(series, use_na_sentinel=True)
    names = np.array([*(_canon(v) for v in uniques), np.nan], dtype=object)  # code -1 -> NaN
    return pd.Series(names[codes], index=series.index, dtype=object)


def canonical_counts(series: pd.Series) -> pd.Series:
    """`canonical_strings(series).value_counts()`, counted on the distinct values: one hash pass
    and a bincount instead of an object array of every row hashed again. Same order (most
    frequent first, ties as value_counts leaves them)."""
    codes, uniques = pd.factorize(series, use_na_sentinel=True)  # first-appearance order
    counts = np.bincount(codes[codes >= 0], minlength=len(uniques))
    return _merged(uniques, counts.tolist())


def _merged(uniques: Any, counts: list[int]) -> pd.Series:
    """Counts of distinct values (in first-appearance order) merged by canonical string, most
    frequent first (ties in that order)."""
    merged: dict[str, int] = {}
    for value, count in zip(uniques, counts, strict=True):
        name = _canon(value)
        if isinstance(name, str):  # '' and blanks are missing
            merged[name] = merged.get(name, 0) + count
    return pd.Series(merged, dtype="int64").sort_values(ascending=False, kind="stable")


def codes_for(series: pd.Series, known: list[str]) -> np.ndarray:
    """int64 index into `known` per value; -1 for missing or unknown. Values typed differently
    from training ('2.0', 'true') are matched through their normal form."""
    return Factorized.of(series).codes_for(known)


@dataclass
class Factorized:
    """A column as `pd.factorize` gives it (codes, -1 = missing; distinct values), so the
    categories fitted on some rows and the codes of every row come from one hash pass."""

    codes: np.ndarray
    uniques: Any

    @classmethod
    def of(cls, series: pd.Series) -> Factorized:
        return cls(*pd.factorize(series, use_na_sentinel=True))

    def codes_for(self, known: list[str]) -> np.ndarray:
        """`codes_for(series, known)` of the factorized series."""
        index = {k: i for i, k in enumerate(known)}
        lookup = np.full(len(self.uniques) + 1, -1, dtype=np.int64)  # last slot: missing
        for j, v in enumerate(self.uniques):
            name = _canon(v)
            if isinstance(name, str):
                lookup[j] = index.get(name, index.get(_normal_form(name), -1))
        return lookup[self.codes]

    def counts_at(self, rows: np.ndarray) -> pd.Series:
        """`canonical_counts(series.iloc[rows])` of a text column (equal values are equal text,
        so the distinct values of the rows are those of the column): counted from the codes."""
        sub = self.codes[rows]
        sub = sub[sub >= 0]
        seen = pd.unique(sub)  # the rows' distinct values, in order of first appearance
        counts = np.bincount(sub, minlength=len(self.uniques))
        return _merged(self.uniques[seen], counts[seen].tolist())


def _normal_form(value: str) -> str:
    """The text as dl stores it when pyarrow types the column: 1.0 -> '1', 'true' -> 'True'."""
    low = value.strip().lower()
    if low in ("true", "false"):
        return low.capitalize()
    try:
        number = float(value)
    except ValueError:
        return value
    if number.is_integer():
        return str(int(number))
    return repr(number)


def infer_task(series: pd.Series, uniques: Any = None) -> str:
    """classification for strings, booleans and integers with few distinct values; else regression.
    `uniques`: the column's distinct non-missing values, if already known (pd.factorize)."""
    if pd.api.types.is_bool_dtype(series) or not pd.api.types.is_numeric_dtype(series):
        return "classification"
    if uniques is None:
        uniques = pd.factorize(series, use_na_sentinel=True)[1]
    vals = np.asarray(uniques, dtype="float64")  # distinct values only: one hash pass in all
    vals = vals[~np.isnan(vals)]
    if len(vals) <= MAX_CLASSES_FOR_INTEGERS and np.all(vals == np.round(vals)):
        return "classification"
    return "regression"


def regression_values(series: pd.Series, source: str) -> np.ndarray:
    """float64 label values (NaN where missing); an InputError for text that is not a number
    or for a value too large to standardise (its rows named by the series' index + 1)."""
    vals = pd.to_numeric(series, errors="coerce")
    bad = series.notna() & vals.isna()
    if bad.any():
        first = series[bad].iloc[0]
        raise InputError(
            f"{source}: target column '{excerpt(series.name)}' holds non-numeric value '{excerpt(first)}' but the task is regression"
        )
    return checked_range(vals.to_numpy(dtype="float64"), series, source)


def checked_range(vals: np.ndarray, series: pd.Series, source: str) -> np.ndarray:
    """`vals`, or an InputError naming the rows whose value is infinite or beyond +-LARGEST."""
    with np.errstate(invalid="ignore"):
        where = np.flatnonzero(np.abs(vals) > LARGEST)
    if len(where):
        rows = row_numbers(where[:3], series.index)
        raise InputError(too_large(source, str(series.name), rows, len(where)))
    return vals


def _sort_key(v: str) -> tuple:
    try:
        return (0, float(v), v)
    except ValueError:
        return (1, 0.0, v)


@dataclass
class Target:
    """What the model predicts: a column name, the task and its class names or scaling."""

    name: str
    task: str
    classes: list[str] = field(default_factory=list)
    mean: float = 0.0
    std: float = 1.0

    @classmethod
    def fit(cls, series: pd.Series, task: str | None, source: str) -> Target:
        uniques = pd.factorize(series, use_na_sentinel=True)[1]  # distinct values, NaN left out
        task = task or infer_task(series, uniques)
        if task == "classification":
            names = (_canon(v) for v in uniques)  # as canonical_strings, on distinct values only
            classes = list(dict.fromkeys(n for n in names if isinstance(n, str)))
            return cls.classification(str(series.name), classes, source)
        if task == "regression":
            arr = regression_values(series, source)
            std = float(np.nanstd(arr)) or 1.0
            return cls(str(series.name), task, [], float(np.nanmean(arr)), std)
        raise UsageError(f"unknown --task '{task}'", "use classification or regression")

    @classmethod
    def classification(cls, name: str, classes: list[str], source: str) -> Target:
        """A classification target over these distinct class names (sorted here), checked."""
        classes = sorted(classes, key=_sort_key)
        if len(classes) < 2:
            found = f"'{excerpt(classes[0])}'" if classes else "nothing"
            raise InputError(
                f"{source}: target column '{excerpt(name)}' has one class ({found}); classification needs at least two"
            )
        if len(classes) > MAX_CLASSES:
            raise UsageError(
                f"{source}: target column '{excerpt(name)}' has {len(classes)} classes",
                "is it a regression target? pass --task regression",
            )
        return cls(name, "classification", classes)

    def encode(self, series: pd.Series, source: str) -> np.ndarray:
        """Class indices (int64) or standardised values (float32) for a label column."""
        if self.task == "classification":
            codes = codes_for(series, self.classes)
            unknown = (codes < 0) & series.notna().to_numpy()
            if unknown.any():
                value = str(series.iloc[int(np.argmax(unknown))]).strip()
                raise InputError(
                    f"{source}: target column '{excerpt(self.name)}' has class '{excerpt(value)}' that the model was not trained on"
                )
            return codes
        vals = pd.to_numeric(series, errors="coerce").to_numpy(dtype="float64")
        return ((checked_range(vals, series, source) - self.mean) / self.std).astype("float32")

    def to_state(self) -> dict:
        return asdict(self)

    @classmethod
    def from_state(cls, state: dict) -> Target:
        return cls(**state)
