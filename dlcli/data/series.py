"""The `series` data kind: ordered rows of numeric columns -> sliding windows that predict the
target `horizon` steps ahead.

Owns the fitted `SeriesPreprocessor` (plain-data state; scaling as a torch module), the `series`
source with its chronological split (split.py) and the ONNX input. Reading, dates and windows live
in series_read.py. See docs/series.md.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from dlcli.data.contracts import DataKind, DataOptions, ExportAdapter, Prepared, Preprocessor
from dlcli.data.series_read import (
    CHUNK_WINDOWS,
    MIN_WINDOWS,
    Series,
    change_spread,
    default_window,
    find_date_column,
    input_chunks,
    plan_features,
    read_frame,
    read_history,
    relative_spread,
    series_from_frame,
    step_labels,
    windows_of,
)
from dlcli.data.split import chronological_split, validation_stop
from dlcli.data.target import Target
from dlcli.errors import InputError, UsageError


@dataclass
class SeriesOptions:
    """`dl train --window W --horizon H` (DataOptions.extra["series"])."""

    window: int | None = None  # steps of history per prediction; None: default_window
    horizon: int = 1  # predict the value this many steps after a window's last step
    date_column: str | None = None  # None: the column that parses as dates, if any
    steps: int | None = None  # used by `dl predict --steps` only


def series_options(opts: DataOptions) -> SeriesOptions | None:
    """The series options the user gave, or None when none were given."""
    got = opts.extra.get("series")
    if not got:
        return None
    if isinstance(got, dict):
        names = {f.name for f in fields(SeriesOptions)}
        got = SeriesOptions(**{k: v for k, v in got.items() if k in names and v is not None})
    if (got.window is not None and got.window < 1) or got.horizon < 1:
        raise UsageError(
            f"--window and --horizon must be at least 1, got {got.window} and {got.horizon}"
        )
    return got


# -- the preprocessor -----------------------------------------------------------------------------
class SeriesTransform(nn.Module):
    """(N, T, F) raw values -> (N, T, F + 1) network input.

    Channels 0..F-1: each feature relative to its value at the window's last step, divided by the
    training windows' spread of that difference, so the network sees shapes, not levels, and a
    series that drifts past its training range looks familiar. Channel F: the target's level,
    (value - mean) / std in the units of the model's output (std: the target's typical change
    over the horizon, see `fit`), so the last step's value anchors the forecast
    (`data_info["anchor_channel"]`) and the network adds a change of order 1."""

    def __init__(self, rel_std: list[float], mean: float, std: float, target_index: int) -> None:
        super().__init__()
        self.register_buffer("rel_std", torch.tensor(rel_std, dtype=torch.float32))
        self.register_buffer("mean", torch.tensor(float(mean)))
        self.register_buffer("std", torch.tensor(float(std)))
        self.target_index = int(target_index)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rel = (x - x[:, -1:, :]) / self.rel_std  # (N, T, F)
        level = (x[:, :, self.target_index : self.target_index + 1] - self.mean) / self.std
        return torch.cat([rel, level], dim=-1)  # (N, T, F + 1)


class SeriesPreprocessor(Preprocessor):
    """Fitted on the training part of a series; turns any later CSV into the same windows."""

    kind = "series"
    has_baseline = True  # evaluate adds the naive last-value forecast's errors

    def __init__(
        self,
        features: list[str],
        target: Target,
        rel_std: list[float],
        window: int,
        horizon: int = 1,
        date_column: str | None = None,
    ) -> None:
        self.features, self.target, self.rel_std = list(features), target, list(rel_std)
        self.window, self.horizon, self.date_column = int(window), int(horizon), date_column

    @classmethod
    def fit(
        cls, series: Series, features: list[str], target_name: str, so: SeriesOptions, **kw: Any
    ) -> SeriesPreprocessor:
        """Statistics from `series` (pass only the training part): the target's mean, its scale
        (the spread of its change over `horizon` steps: the network's output, a change from the
        last value, is then of order 1), and per feature the spread of (value - value at the
        window's last step) over its windows."""
        v = series.values.astype(np.float64)
        ti = features.index(target_name)
        mean, scale = float(v[:, ti].mean()), change_spread(v[:, ti], so.horizon)
        spread = relative_spread(v, so.window)
        target = Target(target_name, "regression", [], mean, scale if scale > 1e-12 else 1.0)
        rel_std = np.where(spread > 1e-12, spread, 1.0).tolist()
        return cls(features, target, rel_std, so.window, so.horizon, **kw)

    @property
    def target_index(self) -> int:
        return self.features.index(self.target.name)

    @property
    def raw_shape(self) -> tuple[int, ...]:
        return (self.window, len(self.features))

    @property
    def input_shape(self) -> tuple[int, ...]:
        return (self.window, len(self.features) + 1)

    @property
    def data_info(self) -> dict:
        """For the network builder: the input channel holding the target's standardised level; a
        network built with it predicts the change from that channel's last step."""
        return {"anchor_channel": len(self.features)}

    def preprocess_module(self) -> SeriesTransform:
        t = self.target
        return SeriesTransform(self.rel_std, t.mean, t.std, self.target_index)

    def read(self, path: str, need: int | None = None) -> Series:
        """A CSV as this model's series; `need` rows at least (one window by default)."""
        return read_history(path, self.date_column, self.features, self.window, need)

    def _step_labels(self, ser: Series, steps: np.ndarray) -> tuple[str, list]:
        return step_labels(ser, steps, self.date_column)

    def iter_inputs(
        self, paths: list[str] | str, keep: bool = False
    ) -> Iterator[tuple[pd.DataFrame, torch.Tensor]]:
        """Per CSV, the windows ending at every row t (chunked): each predicts step t + horizon,
        which the pass-through frame names by its date (or `row`); with `keep`, that step's row."""
        for path in [paths] if isinstance(paths, str) else paths:
            ser = self.read(path)
            for frame, chunk in input_chunks(
                ser, self.window, self.horizon, self.date_column, keep
            ):
                yield frame, torch.from_numpy(chunk)

    def iter_labelled(self, path: str) -> Iterator[tuple[pd.DataFrame, torch.Tensor]]:
        """Windows whose target step lies in the file: the frame's target column holds the value
        `horizon` steps after each window (what the model should have predicted)."""
        ser = self.read(path, self.window + self.horizon)
        m = len(ser.values) - self.window - self.horizon + 1
        wins = windows_of(ser.values, self.window)[:m]
        future = ser.values[self.window - 1 + self.horizon :, self.target_index]
        for i in range(0, m, CHUNK_WINDOWS):
            ks = np.arange(i, min(i + CHUNK_WINDOWS, m))  # window k predicts step k + W - 1 + H
            name, labels = self._step_labels(ser, ks + self.window - 1 + self.horizon)
            frame = pd.DataFrame({name: labels, self.target.name: future[ks]})
            yield frame, wins[i : i + CHUNK_WINDOWS]

    def baseline_metrics(
        self, y: np.ndarray, raws: list[torch.Tensor], outputs: np.ndarray
    ) -> dict:
        """The model's MAPE and the naive last-value forecast's MAE, RMSE and MAPE on the same
        windows. `y` is the encoded target (as the evaluator built it), `raws` the raw windows
        that iter_labelled yielded, `outputs` the model's predictions in target units."""
        y_true = np.asarray(y, dtype=np.float64) * self.target.std + self.target.mean
        naive = torch.cat([r[:, -1, self.target_index] for r in raws]).double().numpy()
        err = naive - y_true
        t = self.target
        # a true 0 comes back from float32 as about 1e-7 * (std + |mean|): not a true value
        zero = 1e-5 * (t.std + abs(t.mean))
        return {
            "mape": mape(y_true, np.asarray(outputs, dtype=np.float64).reshape(-1), zero),
            "naive_mae": float(np.mean(np.abs(err))),
            "naive_rmse": float(np.sqrt(np.mean(err**2))),
            "naive_mape": mape(y_true, naive, zero),
        }

    def to_state(self) -> dict:
        return {
            "kind": self.kind,
            "features": self.features,
            "target": self.target.to_state(),
            "rel_std": self.rel_std,
            "window": self.window,
            "horizon": self.horizon,
            "date_column": self.date_column,
        }

    @classmethod
    def from_state(cls, state: dict) -> SeriesPreprocessor:
        s = dict(state)
        s.pop("kind", None)
        s["target"] = Target.from_state(s["target"])
        return cls(**s)


def mape(y_true: np.ndarray, y_pred: np.ndarray, zero: float = 0.0) -> float | None:
    """Mean absolute percentage error as a fraction (0.01 = 1%); steps whose true value is 0 (at
    most `zero` from it) are skipped; None when every one is."""
    keep = np.abs(y_true) > zero
    if not keep.any():
        return None
    return float(np.mean(np.abs((y_pred[keep] - y_true[keep]) / y_true[keep])))


# -- the training source ---------------------------------------------------------------------
class SeriesSource:
    """A CSV of ordered rows with --window: sliding windows, split chronologically."""

    name = "series"
    kind = "series"
    priority = 20  # asked before text and tables: --window says the CSV is a series
    default_arch = "gru"
    streams = False

    @staticmethod
    def claims(path: str, opts: DataOptions) -> bool:
        got = opts.extra.get("series")
        return bool(got) and not Path(path).is_dir()

    @staticmethod
    def prepare(path: str, opts: DataOptions, preprocessor: Preprocessor | None = None) -> Prepared:
        """Read, window, split by time and fit scaling on the training part; a given `preprocessor`
        (resume, transfer) is reused instead of fitted."""
        so = series_options(opts)
        if opts.task not in (None, "regression"):
            raise UsageError(f"a series is forecast by regression, not {opts.task}")
        if preprocessor is not None and not isinstance(preprocessor, SeriesPreprocessor):
            raise UsageError(
                f"{path}: the model was trained on {preprocessor.kind} data, not a series"
            )
        frame = read_frame(path)
        if preprocessor is None:
            date_col = find_date_column(frame, so.date_column, path)
            features = plan_features(frame, date_col, path)
            tname = _target_name(frame, features, opts.target, path)
        else:
            date_col, features, tname = (
                preprocessor.date_column,
                preprocessor.features,
                preprocessor.target.name,
            )
            so.window, so.horizon = preprocessor.window, preprocessor.horizon
        ser = series_from_frame(frame, path, date_col, features)
        if so.window is None:
            so.window = default_window(ser, features.index(tname), so.horizon, path)
        w, h, n = so.window, so.horizon, len(ser.values)
        _check_length(path, n, w, h)
        ti = features.index(tname)
        wins = windows_of(ser.values, w)
        m = n - w - h + 1
        future = ser.values[w - 1 + h :, ti]  # future[k]: the target of window k
        if opts.val:
            n_train, j0 = m, m
        else:
            n_train, j0 = chronological_split(path, n, m, h, opts.val_split)
        fit_rows = n_train - 1 + w - 1 + h + 1  # rows up to the last training target
        part = Series(ser.frame.iloc[:fit_rows], ser.values[:fit_rows], None, ser.rows[:fit_rows])
        preprocessor = preprocessor or SeriesPreprocessor.fit(
            part, features, tname, so, date_column=date_col
        )
        y = torch.from_numpy(preprocessor.target.encode(pd.Series(future), path))
        x_tr, y_tr = wins[:n_train].contiguous(), y[:n_train]
        if opts.val:
            x_va, y_va = _labelled(preprocessor, opts.val)
        else:
            stop = validation_stop(m)
            x_va, y_va = wins[j0:stop].contiguous(), y[j0:stop]
        info = {"rows": n, "windows": len(x_tr) + len(x_va), "fit_rows": fit_rows}
        return Prepared(preprocessor, x_tr, y_tr, x_va, y_va, info)


def _target_name(frame: pd.DataFrame, features: list[str], wanted: str | None, path: str) -> str:
    name = wanted or features[-1]
    if name not in frame.columns:
        raise InputError(
            f"{path}: no column '{name}' (columns: {', '.join(map(str, frame.columns))})",
            "pass --target COLUMN",
        )
    if name not in features:
        raise InputError(f"{path}: target column '{name}' is not a numeric series")
    return name


def _check_length(path: str, n: int, w: int, h: int) -> None:
    if w >= n:
        raise InputError(
            f"{path}: --window {w} is larger than the series ({n} rows)",
            f"use a window of at most {max(1, n - h - MIN_WINDOWS + 1)}",
        )
    if n - w - h + 1 < MIN_WINDOWS:
        raise InputError(
            f"{path}: the series is too short: {n} rows make {max(0, n - w - h + 1)} windows of "
            f"{w} steps predicting {h} ahead; training needs at least {w + h - 1 + MIN_WINDOWS} rows",
            "use a smaller --window or a longer series",
        )


def _labelled(preprocessor: SeriesPreprocessor, path: str) -> tuple[torch.Tensor, torch.Tensor]:
    xs, ys = [], []
    for frame, raw in preprocessor.iter_labelled(path):
        xs.append(raw)
        ys.append(
            torch.from_numpy(preprocessor.target.encode(frame[preprocessor.target.name], path))
        )
    return torch.cat(xs).contiguous(), torch.cat(ys)


class SeriesExport(ExportAdapter):
    """Input `series`: float32 (batch, window, F), the last `window` rows of the feature columns
    in order, raw values (scaling is inside the graph); output: the target `horizon` steps on."""

    input_name = "series"

    def examples(self, loaded: Any) -> torch.Tensor:
        rows = self.stored_examples(loaded)
        if rows is None:
            enc = loaded.preprocessor
            gen = torch.Generator().manual_seed(0)
            rows = enc.target.mean + enc.target.std * torch.randn(8, *enc.raw_shape, generator=gen)
        return rows.to(torch.float32)

    def metadata(self, preprocessor: SeriesPreprocessor) -> dict[str, str]:
        return {
            "dl.series.features": json.dumps(list(preprocessor.features)),
            "dl.series.window": str(preprocessor.window),
            "dl.series.horizon": str(preprocessor.horizon),
            "dl.series.date_column": json.dumps(preprocessor.date_column),
            "dl.preprocessing": "in-graph: scaling relative to the window's last step; raw values in",
        }


KIND = DataKind(
    name="series",
    preprocessor=SeriesPreprocessor,
    sources=(SeriesSource,),
    export=SeriesExport(),
    options=("window", "horizon"),
)
