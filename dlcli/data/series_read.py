"""Reading a series: the rows of a table file (readers/; '-' = stdin) in time order, checked (date
detection and sorting, one row per date, numbers only) with gaps forward-filled; its dates, its
season and default window, and sliding windows over it. Torch-free (pandas and numpy only), so the
ONNX runtime (dlcli/runtime/series.py) reads a history exactly as `dl predict MODEL.pt` does;
`windows_of` imports torch only when called.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from dlcli.console import note
from dlcli.data import readers
from dlcli.data.readers import NULL_TEXT
from dlcli.errors import InputError

SHARE = 0.9  # a text column is a date (or a number with typos) when this share of it parses
MIN_WINDOWS = 8  # labelled windows a training series must make at least (train + validation)
NO_SEASON_WINDOW = 16  # the default window of a series without a season (else: one season)
MAX_WINDOW = 256  # the longest default window
ROW = "row"  # the pass-through column without a date column: 1-based step in time order


@dataclass
class Series:
    """A series as read from one CSV, in time order (index 0..n-1)."""

    frame: pd.DataFrame  # the rows as read, sorted
    values: np.ndarray  # (n, F) float32 features in the preprocessor's order, gaps forward-filled
    dates: pd.Series | None  # datetime64 per row; None without a date column
    rows: np.ndarray  # 1-based data row of each sorted row in its file


def read_frame(path: str) -> pd.DataFrame:
    """The whole CSV ('-' = stdin); a series needs all of its history at once."""
    if path != "-":
        return readers.read_table(path)
    return pd.concat(list(readers.iter_chunks(path)), ignore_index=True)


def _silent(fn: Any, *args: Any, **kwargs: Any) -> Any:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return fn(*args, **kwargs)


def _is_number_column(s: pd.Series) -> bool:
    return pd.api.types.is_numeric_dtype(s) and not pd.api.types.is_bool_dtype(s)


def _share_numeric(s: pd.Series) -> float:
    text = s.dropna().astype(str).str.strip()
    text = text[~text.isin(NULL_TEXT)]
    return float(pd.to_numeric(text, errors="coerce").notna().mean()) if len(text) else 0.0


def _to_dates(s: pd.Series) -> pd.Series:
    if pd.api.types.is_datetime64_any_dtype(s):
        return s
    return _silent(pd.to_datetime, s, errors="coerce")


def find_date_column(frame: pd.DataFrame, wanted: str | None, source: str) -> str | None:
    """The named date column, else the first text column where >= 90% of the values are dates."""
    if wanted is not None:
        if wanted not in frame.columns:
            raise InputError(f"{source}: no date column '{wanted}'")
        return wanted
    for name in frame.columns:
        s = frame[name]
        if _is_number_column(s) or pd.api.types.is_bool_dtype(s) or s.isna().all():
            continue
        if _share_numeric(s) >= SHARE:
            continue  # numbers with a typo, reported as such later
        if _to_dates(s.dropna()).notna().mean() >= SHARE:
            return str(name)
    return None


def plan_features(frame: pd.DataFrame, date_col: str | None, source: str) -> list[str]:
    """The numeric columns a model reads (the target among them); others are ignored with a note.
    A text column that is mostly numbers stays a feature (its bad values are reported later)."""
    features = []
    for name in frame.columns:
        if name == date_col:
            continue
        s = frame[name]
        if s.isna().all():
            note(f"{source}: column '{name}' is empty; ignored")
        elif pd.api.types.is_integer_dtype(s) and len(s) > 2 and bool(np.all(np.diff(s) == 1)):
            note(f"{source}: column '{name}' goes up by 1 each row (an index or counter); ignored")
        elif _is_number_column(s) or _share_numeric(s) >= SHARE:
            features.append(str(name))
        else:
            note(f"{source}: column '{name}' is not numeric; ignored")
    if not features:
        raise InputError(f"{source}: no numeric columns to make a series of")
    return features


def _numbers(frame: pd.DataFrame, name: str, rows: np.ndarray, source: str) -> np.ndarray:
    """float64 values of one column (NaN for missing); a value that is not a number is an error."""
    s = frame[name]
    if _is_number_column(s):
        return s.to_numpy(dtype="float64", na_value=np.nan)
    text = s.astype(str).str.strip()
    blank = s.isna() | text.isin(NULL_TEXT)
    v = pd.to_numeric(s.where(~blank), errors="coerce")
    bad = (~blank & v.isna()).to_numpy()
    if bad.any():
        i = int(np.argmax(bad))
        raise InputError(
            f"{source}: column '{name}', row {rows[i]}: '{s.iloc[i]}' is not a number "
            "(a series holds numbers only)"
        )
    return v.to_numpy(dtype="float64", na_value=np.nan)


def _sorted_by_date(
    frame: pd.DataFrame, date_col: str, source: str
) -> tuple[pd.DataFrame, pd.Series]:
    """Rows in date order (a note when they were not); a missing, unreadable or repeated date is an
    error naming it."""
    dates = _to_dates(frame[date_col])
    bad = dates.isna().to_numpy()
    if bad.any():
        i = int(np.argmax(bad))
        value = frame[date_col].iloc[i]
        shown = "no date" if pd.isna(value) else f"'{value}' is not a date"
        raise InputError(f"{source}: column '{date_col}', row {frame.index[i] + 1}: {shown}")
    if not dates.is_monotonic_increasing:
        note(f"{source}: rows were not in date order; sorted by '{date_col}'")
        order = np.argsort(dates.to_numpy(), kind="stable")
        frame, dates = frame.iloc[order], dates.iloc[order]
    dup = dates.duplicated(keep=False).to_numpy()
    if dup.any():
        i = int(np.argmax(dup))
        rows = (frame.index[dup & (dates == dates.iloc[i]).to_numpy()] + 1).tolist()
        raise InputError(
            f"{source}: date {format_dates(dates.iloc[[i]])[0]} appears more than once "
            f"(rows {', '.join(map(str, rows[:5]))}); a series needs one row per time step",
            "aggregate the rows of each date first",
        )
    return frame, dates.reset_index(drop=True)


def load_series(path: str, date_col: str | None, features: list[str]) -> Series:
    """Read, order and check a series; gaps in a feature are forward-filled (a note says so)."""
    return series_from_frame(
        read_frame(path), "<stdin>" if path == "-" else path, date_col, features
    )


def series_from_frame(
    frame: pd.DataFrame, source: str, date_col: str | None, features: list[str]
) -> Series:
    missing = [c for c in ([date_col] if date_col else []) + features if c not in frame.columns]
    if missing:
        raise InputError(f"{source}: missing column(s) {', '.join(map(repr, missing))}")
    frame = frame.reset_index(drop=True)
    dates = None
    if date_col is not None:
        frame, dates = _sorted_by_date(frame, date_col, source)
    rows = frame.index.to_numpy() + 1
    frame = frame.reset_index(drop=True)
    values = np.column_stack([_numbers(frame, c, rows, source) for c in features])
    gaps = np.isnan(values)
    if gaps.any():
        empty = [c for c, g in zip(features, gaps.all(0), strict=True) if g]
        if empty:
            raise InputError(f"{source}: column '{empty[0]}' has no values")
        counts = ", ".join(f"'{c}' {n}" for c, n in zip(features, gaps.sum(0), strict=True) if n)
        note(f"{source}: filled missing values with the previous value ({counts})")
        values = pd.DataFrame(values).ffill().bfill().to_numpy()
    return Series(frame, values.astype(np.float32), dates, rows)


def format_dates(dates: pd.Series | pd.DatetimeIndex) -> list[str]:
    """ISO text: '2001-12-29' when every time is midnight, else '2001-12-29T06:00:00'."""
    d = pd.DatetimeIndex(dates)
    fmt = "%Y-%m-%d" if bool((d == d.normalize()).all()) else "%Y-%m-%dT%H:%M:%S"
    return [("" if pd.isna(x) else x.strftime(fmt)) for x in d]


def future_dates(dates: pd.Series, k: int) -> pd.DatetimeIndex | None:
    """The next `k` dates after the last one when the spacing is regular (weekly, month ends...)."""
    recent = pd.DatetimeIndex(dates.iloc[-64:])
    if len(recent) < 3 or k < 1:
        return None
    freq = _silent(pd.infer_freq, recent)
    if freq is None:
        return None
    return pd.date_range(recent[-1], periods=k + 1, freq=freq)[1:]


def windows_of(values: np.ndarray, window: int) -> Any:
    """(n, F) -> torch (n - window + 1, window, F): window i holds rows i .. i+window-1; a view."""
    import torch

    return torch.from_numpy(values).unfold(0, window, 1).transpose(1, 2)


def window_view(values: np.ndarray, window: int) -> np.ndarray:
    """numpy twin of `windows_of`: (n, F) -> (n - window + 1, window, F), a read-only view."""
    return np.lib.stride_tricks.sliding_window_view(values, window, axis=0).transpose(0, 2, 1)


def read_history(
    path: str, date_col: str | None, features: list[str], window: int, need: int | None = None
) -> Series:
    """A CSV as a model's series; `need` rows at least (one window by default)."""
    ser = load_series(path, date_col, features)
    return long_enough(ser, "<stdin>" if path == "-" else path, window, need)


def long_enough(ser: Series, source: str, window: int, need: int | None = None) -> Series:
    """`ser`, if it has `need` rows (one window by default); else the line saying how many."""
    need = need or window
    if len(ser.values) < need:
        scored = f", plus {need - window} to score" if need > window else ""
        raise InputError(
            f"{source}: {len(ser.values)} rows; the model needs at least {need} "
            f"({window} steps of history{scored})"
        )
    return ser


def step_labels(ser: Series, steps: np.ndarray, date_col: str | None) -> tuple[str, list]:
    """The pass-through column for 0-based steps (they may run past the end of the file): the
    date column with the steps' dates (future ones when the spacing is regular, else ''), or
    `row` with 1-based step numbers."""
    n = len(ser.values)
    if ser.dates is None or date_col is None:
        return ROW, (steps + 1).tolist()
    known = format_dates(ser.dates)
    beyond = int(steps.max()) - n + 1 if len(steps) else 0
    extra = future_dates(ser.dates, beyond) if beyond > 0 else None
    extra = format_dates(extra) if extra is not None else [""] * max(beyond, 0)
    labels = known + extra
    return date_col, [labels[s] for s in steps]


def relative_spread(v: np.ndarray, window: int) -> np.ndarray:
    """Per feature, the root mean square of (value - value at the window's last step) over every
    step of every window of `v` (n, F); one lag at a time, so memory stays O(n)."""
    k = len(v) - window + 1  # windows
    last = v[window - 1 : window - 1 + k]
    total = np.zeros(v.shape[1])
    for d in range(1, window):  # the step d before the last; d = 0 adds zeros
        total += np.sum((v[window - 1 - d : window - 1 - d + k] - last) ** 2, axis=0)
    return np.sqrt(total / max(1, k * window))


# -- the season and the default window --------------------------------------------------------
PER_YEAR = {"W": 52, "SM": 24, "M": 12, "BM": 12, "CBM": 12, "Q": 4, "BQ": 4}  # steps per year
MAX_LAG = 1000  # the longest season looked for in the autocorrelation
MIN_PEAK = 0.3  # autocorrelation of the changes a season must reach when the dates give none


def calendar_season(dates: pd.Series | None) -> int | None:
    """Steps per natural cycle from the dates' regular spacing: weekly 52, monthly 12, quarterly
    4, daily 7, business days 5, hourly 24, 30 minutes 48...; None when irregular, yearly, or
    without dates."""
    if dates is None or len(dates) < 3:
        return None
    freq = _silent(pd.infer_freq, pd.DatetimeIndex(dates.iloc[:64]))
    if freq is None:
        return None
    offset = pd.tseries.frequencies.to_offset(freq)
    code = offset.rule_code.split("-")[0]
    code = code[:-1] if code[:-1] in PER_YEAR and code[-1] in "ES" else code  # ME, QS... -> M, Q
    if code in ("B", "D"):
        season = (5 if code == "B" else 7) if offset.n == 1 else 0
    elif code in PER_YEAR:
        season = PER_YEAR[code] // offset.n
    elif isinstance(offset, pd.offsets.Tick):
        day, step = pd.Timedelta(days=1).value, pd.Timedelta(offset).value
        season = day // step if step < day and day % step == 0 else 0
    else:
        season = 0  # yearly, or a spacing with no calendar cycle
    return int(season) if season >= 2 else None


def autocorrelation_season(target: np.ndarray) -> int | None:
    """The lag (2 .. min(n/4, MAX_LAG)) at which the series' step-to-step changes correlate most
    with themselves, when that peak reaches MIN_PEAK (sunspots: 11 years); else None."""
    x = np.diff(np.asarray(target, dtype=np.float64))
    x = x - x.mean()
    top = min(len(x) // 4, MAX_LAG)
    if top < 3 or not np.any(x):
        return None
    spectrum = np.fft.rfft(x, 2 * len(x))  # zero-padded: no wrap-around
    acf = np.fft.irfft(spectrum * np.conj(spectrum))[: top + 2]
    acf = acf / acf[0]  # acf[k]: lag k
    peaks = [k for k in range(2, top + 1) if acf[k] > acf[k - 1] and acf[k] >= acf[k + 1]]
    best = max(peaks, key=lambda k: acf[k], default=None)
    return best if best is not None and acf[best] >= MIN_PEAK else None


def default_window(ser: Series, target_index: int, horizon: int, source: str) -> int:
    """One season of history (from the dates' spacing, else from the autocorrelation of the
    target's changes), NO_SEASON_WINDOW without one; at most a quarter of the rows, MAX_WINDOW,
    and short enough to leave MIN_WINDOWS windows. A note says what was chosen and why."""
    n = len(ser.values)
    season, why = calendar_season(ser.dates), "from the dates"
    if season is None:
        season, why = (
            autocorrelation_season(ser.values[:, target_index]),
            "from its autocorrelation",
        )
    want = season or NO_SEASON_WINDOW
    window = max(1, min(want, MAX_WINDOW, n // 4, n - horizon + 1 - MIN_WINDOWS))
    about = f"season of {season} steps, {why}" if season else "no season found"
    note(f"{source}: --window {window} ({about}; pass --window to choose)")
    return window


def change_spread(target: np.ndarray, horizon: int) -> float:
    """The root mean square of the target's change over `horizon` steps: the scale of what a
    forecast adds to the last value (0.0 when the series is too short to have one)."""
    v = np.asarray(target, dtype=np.float64)
    if len(v) <= horizon:
        return 0.0
    return float(np.sqrt(np.mean((v[horizon:] - v[:-horizon]) ** 2)))


CHUNK_WINDOWS = 16384  # windows per yielded chunk in prediction and evaluation


def input_chunks(
    ser: Series, window: int, horizon: int, date_col: str | None, keep: bool = False
) -> Iterator[tuple[pd.DataFrame, np.ndarray]]:
    """The windows ending at every row t of `ser`, in chunks of (k, window, F) float32: each
    predicts step t + horizon, which the pass-through frame names by its date (or `row`); with
    `keep`, that step's row as read. The torch (`.pt`) and onnxruntime paths both read this."""
    wins = window_view(ser.values, window)
    for i in range(0, len(wins), CHUNK_WINDOWS):
        chunk = np.ascontiguousarray(wins[i : i + CHUNK_WINDOWS], dtype=np.float32)
        steps = np.arange(i, i + len(chunk)) + window - 1 + horizon
        name, labels = step_labels(ser, steps, date_col)
        if keep:
            frame = ser.frame.reindex(steps).reset_index(drop=True)
            frame[name] = labels
        else:
            frame = pd.DataFrame({name: labels})
        yield frame, chunk
