"""Prediction outputs without torch: task outputs (numpy) -> the prediction table, and its
writers (csv, jsonl). Shared by `dl predict model.pt` (engine/predictor.py) and the ONNX runtime
(dlcli/runtime/), so both print the same columns in the same format."""

from __future__ import annotations

import json
from typing import Any, TextIO

import numpy as np
import pandas as pd


def output_frame(
    loaded: Any, passthrough: pd.DataFrame, outputs: np.ndarray, proba: bool, top_k: int = 1
) -> pd.DataFrame:
    """Turn outputs into the prediction table: `prediction`, a `confidence` column where the data
    kind asks for one (images) or with --top-k, `prediction_2`/`confidence_2`... for the next
    classes, and `proba_<class>` with --proba."""
    frame = passthrough.reset_index(drop=True).copy()
    if loaded.task.name != "classification":
        frame["prediction"] = outputs.reshape(len(outputs), -1)[:, 0]
        return frame
    classes = np.asarray(loaded.preprocessor.target.classes, dtype=object)
    k = max(1, min(top_k, len(classes)))
    order = np.argsort(-outputs, axis=1, kind="stable")[:, :k]  # (N, k) best classes first
    confident = k > 1 or "confidence" in loaded.preprocessor.prediction_columns
    for r in range(k):
        suffix = "" if r == 0 else f"_{r + 1}"
        frame["prediction" + suffix] = classes[order[:, r]]
        if confident:
            frame["confidence" + suffix] = np.take_along_axis(outputs, order[:, r : r + 1], 1)[:, 0]
    if proba:
        for j, c in enumerate(classes):
            frame[f"proba_{c}"] = outputs[:, j]
    return frame


class CsvWriter:
    def __init__(self, fh: TextIO) -> None:
        self.fh, self.first = fh, True

    def write(self, frame: pd.DataFrame) -> None:
        frame.to_csv(
            self.fh, header=self.first, index=False, float_format="%.7g", lineterminator="\n"
        )
        self.first = False


class JsonlWriter:
    def __init__(self, fh: TextIO) -> None:
        self.fh = fh

    def write(self, frame: pd.DataFrame) -> None:
        for rec in records(frame):
            self.fh.write(json.dumps(rec) + "\n")


def records(frame: pd.DataFrame) -> list[dict[str, Any]]:
    """The rows of a prediction table as JSON-ready dicts (numpy scalars as Python values,
    NaN and infinities as None): the jsonl format, and `dl serve`'s JSON."""
    return [{k: _plain(v) for k, v in rec.items()} for rec in frame.to_dict(orient="records")]


def _plain(v: Any) -> Any:
    if isinstance(v, np.generic):
        v = v.item()
    if isinstance(v, float) and not np.isfinite(v):
        return None
    return v


WRITERS = {"csv": CsvWriter, "jsonl": JsonlWriter}
