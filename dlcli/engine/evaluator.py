"""Metrics for a model on labelled data; train's final validation report uses the same task metrics."""

from __future__ import annotations

from typing import Any

import numpy as np

from dlcli.engine.predictor import run_batches
from dlcli.errors import InputError


def evaluate_file(loaded: Any, path: str) -> dict:
    """Stream `path`, predict, and compute the task's metrics against its target column."""
    target = loaded.encoder.target
    ys, outs = [], []
    for frame, raw in loaded.encoder.iter_labelled(path):
        ys.append(target.encode(frame[target.name], path))
        outs.append(run_batches(loaded.inference, raw))
    y = np.concatenate(ys)
    if not len(y):
        raise InputError(f"{path}: target column '{target.name}' has no values")
    return loaded.task.metrics(y, np.concatenate(outs))
