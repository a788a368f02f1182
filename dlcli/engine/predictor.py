"""Batched, streaming inference: inputs -> chunks of task outputs, as a generator, plus writers."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import pandas as pd
import torch

from dlcli.accel import autocast, inference_precision, unsupported_on_cpu
from dlcli.engine.outputs import WRITERS, CsvWriter, JsonlWriter, output_frame

__all__ = ["WRITERS", "CsvWriter", "JsonlWriter", "output_frame", "predict_stream", "run_batches"]

BATCH = 65536  # rows per forward pass: bounded memory, large enough to amortise overhead


def _device_of(model: torch.nn.Module) -> torch.device:
    for t in (*model.parameters(), *model.buffers()):
        return t.device
    return torch.device("cpu")


@torch.no_grad()
def run_batches(
    model: torch.nn.Module, x: torch.Tensor, batch: int | None = None, precision: str | None = None
) -> np.ndarray:
    """Model outputs for `x`, a batch at a time (about 64 MB of inputs), on the model's device.

    `precision` fp32, bf16 or fp16 runs the forward pass under that autocast, as training does;
    None or 'auto': bf16 on a CUDA GPU that supports it, else fp32. On CUDA, inputs move with
    non-blocking copies and images go channels-last; outputs come back as float32 numpy."""
    model.eval()
    if batch is None:
        batch = max(64, min(BATCH, 2**24 // max(1, x[0].numel()))) if len(x) else 1
    dev = _device_of(model)
    prec = inference_precision(precision, dev)
    outs = []
    for i in range(0, len(x), batch):
        xb = x[i : i + batch]
        if dev.type == "cuda":
            xb = xb.pin_memory().to(dev, non_blocking=True)
            if xb.dim() == 4:
                xb = xb.contiguous(memory_format=torch.channels_last)
        try:
            with autocast(prec, dev):
                out = model(xb)
        except RuntimeError as exc:
            if prec == "fp32" or dev.type != "cpu":
                raise
            raise unsupported_on_cpu(prec, exc) from None
        outs.append(out.float().cpu().numpy())
    return np.concatenate(outs) if outs else np.empty((0,), dtype=np.float32)


def predict_stream(
    loaded: Any, paths: list[str], keep: bool, precision: str | None = None
) -> Iterator[tuple[pd.DataFrame, np.ndarray]]:
    """(pass-through columns, outputs) per chunk of the inputs ('-' = stdin)."""
    inference_precision(precision, _device_of(loaded.inference))  # refused before any output
    for passthrough, raw in loaded.preprocessor.iter_inputs(paths, keep):
        yield passthrough, run_batches(loaded.inference, raw, precision=precision)
