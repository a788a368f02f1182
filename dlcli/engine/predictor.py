"""Batched, streaming inference: inputs -> chunks of task outputs, as a generator, plus writers."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from typing import Any, TextIO

import numpy as np
import pandas as pd
import torch

BATCH = 65536  # rows per forward pass: bounded memory, large enough to amortise overhead


@torch.no_grad()
def run_batches(model: torch.nn.Module, x: torch.Tensor, batch: int = BATCH) -> np.ndarray:
    """Model outputs for `x`, computed `batch` rows at a time."""
    model.eval()
    outs = [model(x[i : i + batch]).numpy() for i in range(0, len(x), batch)]
    return np.concatenate(outs) if outs else np.empty((0,), dtype=np.float32)


def predict_stream(loaded: Any, path: str, keep: bool) -> Iterator[tuple[pd.DataFrame, np.ndarray]]:
    """(pass-through columns, outputs) per chunk of `path` ('-' = stdin)."""
    for passthrough, raw in loaded.encoder.iter_inputs(path, keep):
        yield passthrough, run_batches(loaded.inference, raw)


def output_frame(
    loaded: Any, passthrough: pd.DataFrame, outputs: np.ndarray, proba: bool
) -> pd.DataFrame:
    """Turn outputs into the prediction table: `prediction` (+ `proba_<class>`)."""
    frame = passthrough.reset_index(drop=True).copy()
    if loaded.task.name == "classification":
        classes = np.asarray(loaded.encoder.target.classes, dtype=object)
        frame["prediction"] = classes[outputs.argmax(1)]
        if proba:
            for j, c in enumerate(loaded.encoder.target.classes):
                frame[f"proba_{c}"] = outputs[:, j]
    else:
        frame["prediction"] = outputs.reshape(len(outputs), -1)[:, 0]
    return frame


class CsvWriter:
    def __init__(self, fh: TextIO) -> None:
        self.fh, self.first = fh, True

    def write(self, frame: pd.DataFrame) -> None:
        frame.to_csv(
            self.fh, header=self.first, index=False, float_format="%.6g", lineterminator="\n"
        )
        self.first = False


class JsonlWriter:
    def __init__(self, fh: TextIO) -> None:
        self.fh = fh

    def write(self, frame: pd.DataFrame) -> None:
        for rec in frame.to_dict(orient="records"):
            self.fh.write(json.dumps({k: _plain(v) for k, v in rec.items()}) + "\n")


def _plain(v: Any) -> Any:
    if isinstance(v, np.generic):
        v = v.item()
    if isinstance(v, float) and not np.isfinite(v):
        return None
    return v


WRITERS = {"csv": CsvWriter, "jsonl": JsonlWriter}


def stdout() -> TextIO:
    return sys.stdout
