"""The label column: task inference, class names, encoding to tensors and back. Plain-data state."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np
import pandas as pd

from dlcli.errors import InputError, UsageError

MAX_CLASSES_FOR_INTEGERS = 20  # an integer label with at most this many values is a class label


def canonical_strings(series: pd.Series) -> pd.Series:
    """Values as the strings dl stores them: 3.0 -> '3', True -> 'True', NaN stays NaN."""
    if pd.api.types.is_bool_dtype(series):
        return series.map(lambda v: str(bool(v)) if pd.notna(v) else np.nan)
    if pd.api.types.is_numeric_dtype(series):
        uniq = series.dropna().unique()
        names = {v: (str(int(v)) if float(v).is_integer() else repr(float(v))) for v in uniq}
        return series.map(names)
    return (
        series.astype(object)
        .where(series.notna(), np.nan)
        .map(lambda v: v if not isinstance(v, str) else v.strip())
    )


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


def match_known(strs: pd.Series, known: list[str]) -> pd.Series:
    """Canonical strings with each value not in `known` replaced by its normal form, where that is
    known: new rows read as text ('true', '2.0') meet names fitted on typed columns ('True', '2')."""
    unknown = strs.notna() & ~strs.isin(known)
    if not unknown.any():
        return strs
    fixed = strs[unknown].map(lambda v: _normal_form(str(v)))
    strs = strs.copy()
    strs[unknown] = fixed.where(fixed.isin(known), strs[unknown])
    return strs


def infer_task(series: pd.Series) -> str:
    """classification for strings, booleans and integers with few distinct values; else regression."""
    s = series.dropna()
    if pd.api.types.is_bool_dtype(s) or not pd.api.types.is_numeric_dtype(s):
        return "classification"
    vals = s.to_numpy(dtype="float64")
    if np.all(vals == np.round(vals)) and s.nunique() <= MAX_CLASSES_FOR_INTEGERS:
        return "classification"
    return "regression"


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
        task = task or infer_task(series)
        if task == "classification":
            classes = sorted(canonical_strings(series).dropna().unique().tolist(), key=_sort_key)
            if len(classes) < 2:
                found = f"'{classes[0]}'" if classes else "nothing"
                raise InputError(
                    f"{source}: target column '{series.name}' has one class ({found}); classification needs at least two"
                )
            if len(classes) > 1000:
                raise UsageError(
                    f"{source}: target column '{series.name}' has {len(classes)} classes",
                    "is it a regression target? pass --task regression",
                )
            return cls(str(series.name), task, classes)
        if task == "regression":
            vals = pd.to_numeric(series, errors="coerce")
            bad = series.notna() & vals.isna()
            if bad.any():
                first = series[bad].iloc[0]
                raise InputError(
                    f"{source}: target column '{series.name}' holds non-numeric value '{first}' but the task is regression"
                )
            arr = vals.to_numpy(dtype="float64")
            std = float(np.nanstd(arr)) or 1.0
            return cls(str(series.name), task, [], float(np.nanmean(arr)), std)
        raise UsageError(f"unknown --task '{task}'", "use classification or regression")

    def encode(self, series: pd.Series, source: str) -> np.ndarray:
        """Class indices (int64) or standardised values (float32) for a label column."""
        if self.task == "classification":
            index = {c: i for i, c in enumerate(self.classes)}
            strs = match_known(canonical_strings(series), self.classes)
            codes = strs.map(index)
            unknown = strs.notna() & codes.isna()
            if unknown.any():
                raise InputError(
                    f"{source}: target column '{self.name}' has class '{strs[unknown].iloc[0]}' that the model was not trained on"
                )
            return np.array(
                codes.to_numpy(dtype="int64")
            )  # writable copy (pandas may hand out read-only views)
        vals = pd.to_numeric(series, errors="coerce").to_numpy(dtype="float64")
        return ((vals - self.mean) / self.std).astype("float32")

    def to_state(self) -> dict:
        return asdict(self)

    @classmethod
    def from_state(cls, state: dict) -> Target:
        return cls(**state)
