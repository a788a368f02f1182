"""Column typing for tables: which columns are numbers, which are categories, which are left out
(empty, single value, IDs, free text, each with a note), and the plain-data `Column` that records
how one column is encoded. Shared by in-memory fitting (tabular.py) and --stream (stream_scan.py).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from dlcli.console import note
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


def numeric_column(name: str, mean: float, std: float, missing: bool) -> Column:
    """A numeric column standardised with these training statistics (missing -> the mean)."""
    mean = float(mean) if np.isfinite(mean) else 0.0
    std = float(std) if np.isfinite(std) and std > 1e-12 else 1.0
    return Column(name, "numeric", fill=mean, mean=mean, std=std, indicator=missing)


def _is_id_like(s: pd.Series, n: int) -> bool:
    """All values unique and either named like an ID or consecutive integers. Floats are never IDs
    (and hashing a million floats to find out would be the slowest step of loading)."""
    if n < 20 or pd.api.types.is_float_dtype(s) or pd.api.types.is_bool_dtype(s):
        return False
    if pd.api.types.is_integer_dtype(s):
        d = np.diff(s.to_numpy())
        if bool(np.all(d == 1)):
            return True
        if not ID_NAME.match(str(s.name)):
            return False
    elif not ID_NAME.match(str(s.name)):
        return False
    return s.nunique(dropna=False) == n


def _single_value(non_null: pd.Series) -> bool:
    if pd.api.types.is_numeric_dtype(non_null) and not pd.api.types.is_bool_dtype(non_null):
        return bool(non_null.min() == non_null.max())  # NaN skipped; no hashing for numbers
    return non_null.nunique() == 1


IGNORED = {  # why a column is left out, as the note says it
    "empty": "is empty",
    "id": "looks like an ID (all values unique)",
    "single": "has a single value",
    "text": "is text with mostly unique values (free text or an ID)",
}


def ignore_note(source: str, name: str, why: str) -> None:
    note(f"{source}: column '{name}' {IGNORED[why]}; ignored")


def check_usable(numeric: list[str], categorical: list[str], target: str, source: str) -> None:
    if not numeric and not categorical:
        raise InputError(f"{source}: no usable feature columns besides the target '{target}'")


def _float_checks(frame: pd.DataFrame, target: str) -> dict[str, tuple[bool, bool]]:
    """(all missing, a single value) per float column, over pandas' float block at once (NaN
    ignored, as Series.min/max do): a per-column isna/min/max costs 3x as much."""
    names = [c for c in frame.columns if c != target and frame[c].dtype.kind == "f"]
    if not names:
        return {}
    block = frame[names].to_numpy()  # (N, k) float
    empty = np.isnan(block).all(axis=0)
    same = np.fmin.reduce(block, axis=0) == np.fmax.reduce(block, axis=0)
    return {c: (bool(e), bool(v)) for c, e, v in zip(names, empty, same, strict=True)}


def plan_columns(frame: pd.DataFrame, target: str, source: str) -> tuple[list[str], list[str]]:
    """Split feature columns into (numeric, categorical); ignored ones are reported as notes."""
    numeric, categorical = [], []
    n = len(frame)
    floats = _float_checks(frame, target)
    for name in frame.columns:
        if name == target:
            continue
        if name in floats:  # never an ID: empty, a single value, or numeric
            empty, single = floats[name]
            if empty or single:
                ignore_note(source, name, "empty" if empty else "single")
            else:
                numeric.append(name)
            continue
        s = frame[name]
        numeric_col = pd.api.types.is_numeric_dtype(s) and not pd.api.types.is_bool_dtype(s)
        non_null = s if numeric_col else s.dropna()  # numbers: NaN-aware reductions instead
        if s.isna().all() if numeric_col else non_null.empty:
            ignore_note(source, name, "empty")
        elif _is_id_like(s, n):
            ignore_note(source, name, "id")
        elif _single_value(non_null):
            ignore_note(source, name, "single")
        elif pd.api.types.is_bool_dtype(s):
            categorical.append(name)
        elif pd.api.types.is_numeric_dtype(s):
            numeric.append(name)
        elif n >= 50 and non_null.nunique() > 0.5 * len(non_null):
            ignore_note(source, name, "text")
        else:
            categorical.append(name)
    check_usable(numeric, categorical, target, source)
    return numeric, categorical
