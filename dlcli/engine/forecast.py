"""`dl predict MODEL HISTORY --steps N`: forecast N steps past the end of a series by rolling
one-step predictions forward (each prediction becomes the newest step of the next window)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import torch

from dlcli.console import note
from dlcli.engine.predictor import run_batches
from dlcli.errors import UsageError


def forecast(loaded: Any, path: str, steps: int) -> pd.DataFrame:
    """Columns `step` (1..steps), the date column when the history's dates are evenly spaced, and
    `prediction`. Features other than the target are held at their last value (their future is
    unknown); so a model that leans on them forecasts as if they stayed put."""
    enc = loaded.preprocessor
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
    history = torch.from_numpy(ser.values[-enc.window :].copy())  # (window, F)
    preds = np.empty(steps, dtype=np.float64)
    for s in range(steps):
        value = float(run_batches(loaded.inference, history.unsqueeze(0), batch=1).reshape(-1)[0])
        preds[s] = value
        nxt = history[-1:].clone()  # (1, F): other features held at their last value
        nxt[0, ti] = value
        history = torch.cat([history[1:], nxt])
    frame = pd.DataFrame({"step": np.arange(1, steps + 1)})
    if ser.dates is not None:
        from dlcli.data.series import format_dates, future_dates

        dates = future_dates(ser.dates, steps)
        if dates is not None:
            frame[enc.date_column] = format_dates(dates)
        else:
            note(f"{path}: the dates are not evenly spaced; forecast steps are numbered only")
    frame["prediction"] = preds
    return frame
