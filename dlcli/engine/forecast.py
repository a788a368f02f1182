"""`dl predict MODEL HISTORY --steps N`: forecast N steps past the end of a series by rolling
one-step predictions forward (each prediction becomes the newest step of the next window).
`roll_forward` is torch-free: the ONNX runtime (dlcli/runtime/series.py) rolls its graph with it."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd

from dlcli.console import note
from dlcli.data.series_read import format_dates, future_dates
from dlcli.errors import UsageError


def forecast(loaded: Any, path: str, steps: int) -> pd.DataFrame:
    """`roll_forward` with the loaded torch model."""
    import torch

    from dlcli.engine.predictor import run_batches

    def one(history: np.ndarray) -> float:  # (window, F) -> the next value
        x = torch.from_numpy(history).unsqueeze(0)  # (1, window, F)
        return float(run_batches(loaded.inference, x, batch=1).reshape(-1)[0])

    return roll_forward(loaded.preprocessor, path, steps, one)


def roll_forward(
    enc: Any, path: str, steps: int, predict_one: Callable[[np.ndarray], float]
) -> pd.DataFrame:
    """Columns `step` (1..steps), the date column when the history's dates are evenly spaced, and
    `prediction`. Features other than the target are held at their last value (their future is
    unknown); so a model that leans on them forecasts as if they stayed put. `enc` is the series
    preprocessor (or the runtime's series inputs): kind, window, horizon, target_index, read."""
    if enc.kind != "series":
        raise UsageError(
            f"--steps applies to series models (trained with --window), not {enc.kind} models"
        )
    if steps < 1:
        raise UsageError(f"--steps must be at least 1, got {steps}")
    if enc.horizon != 1:
        raise UsageError(
            f"--steps rolls one-step forecasts forward, but this model predicts {enc.horizon} steps ahead",
            "train with --horizon 1, or predict without --steps",
        )
    ser = enc.read(path)
    ti = enc.target_index
    history = ser.values[-enc.window :].astype(np.float32)  # (window, F), a copy
    preds = np.empty(steps, dtype=np.float64)
    for s in range(steps):
        value = predict_one(history)
        preds[s] = value
        nxt = history[-1:].copy()  # (1, F): other features held at their last value
        nxt[0, ti] = value
        history = np.concatenate([history[1:], nxt])
    frame = pd.DataFrame({"step": np.arange(1, steps + 1)})
    if ser.dates is not None:
        dates = future_dates(ser.dates, steps)
        if dates is not None:
            frame[enc.date_column] = format_dates(dates)
        else:
            note(f"{path}: the dates are not evenly spaced; forecast steps are numbered only")
    frame["prediction"] = preds
    return frame
