"""Metrics for a model on labelled data (train's final validation report uses the same task
metrics), plus the evaluation extras: a report folder and the misclassified inputs."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from dlcli.engine.predictor import run_batches
from dlcli.errors import InputError, UsageError


def evaluate_file(
    loaded: Any, path: str, errors_dir: str | None = None, precision: str | None = None
) -> dict:
    """Stream `path`, predict, and compute the task's metrics against its target column (chunk
    by chunk, `task.chunked_metrics`, unless the errors or a baseline need every row). With
    `errors_dir`, inputs that have a `path` (images) and were misclassified are copied there.
    `precision`: the forward pass's autocast, as in `run_batches` (None: bf16 on CUDA, else fp32)."""
    target = loaded.preprocessor.target
    baseline = loaded.preprocessor.has_baseline  # e.g. series: the naive forecast
    # metrics alone are scored chunk by chunk, in memory bounded whatever the file's length
    scored = loaded.task.chunked_metrics() if not baseline and errors_dir is None else None
    ys, outs, paths, raws = [], [], [], []
    for frame, raw in loaded.preprocessor.iter_labelled(path):
        ys.append(target.encode(frame[target.name], path))
        outs.append(run_batches(loaded.inference, raw, precision=precision))
        if scored is not None:
            scored.add(ys.pop(), outs.pop())
            continue
        if "path" in frame.columns:
            paths.extend(frame["path"].tolist())
        if baseline:
            raws.append(raw)
    if scored is not None:
        if not scored.rows:
            raise InputError(f"{path}: target column '{target.name}' has no values")
        return scored.result()
    y = np.concatenate(ys) if ys else np.empty(0)
    if not len(y):
        raise InputError(f"{path}: target column '{target.name}' has no values")
    out = np.concatenate(outs)
    metrics = loaded.task.metrics(y, out)
    if baseline:  # (encoded targets, the raw inputs iter_labelled yielded, model outputs)
        metrics.update(loaded.preprocessor.baseline_metrics(y, raws, out))
    if errors_dir is not None:
        metrics["errors_copied"] = copy_errors(loaded, y, out, paths, Path(errors_dir))
    return metrics


def _safe(name: str) -> str:
    return re.sub(r"[^\w.-]+", "_", str(name))


def copy_errors(loaded: Any, y: np.ndarray, out: np.ndarray, paths: list[str], folder: Path) -> int:
    """Copy each misclassified input to `folder` as NNNNN_true-<class>_pred-<class><suffix>."""
    if loaded.task.name != "classification" or len(paths) != len(y):
        raise UsageError("--errors applies to image classification models")
    classes = loaded.preprocessor.target.classes
    pred = out.argmax(1)
    wrong = np.flatnonzero(pred != y)
    folder.mkdir(parents=True, exist_ok=True)
    for i in wrong:
        src = Path(paths[i])
        name = f"{i:05d}_true-{_safe(classes[y[i]])}_pred-{_safe(classes[pred[i]])}{src.suffix.lower()}"
        shutil.copy2(src, folder / name)
    return len(wrong)


def write_report(folder: str, metrics: dict, classes: list[str] | None) -> list[str]:
    """metrics.json and, for classification, confusion_matrix.png with class names."""
    from dlcli import report
    from dlcli.fileio import write_text

    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    write_text(out / "metrics.json", json.dumps(metrics, indent=2, default=str) + "\n")
    files = [str(out / "metrics.json")]
    if classes and metrics.get("confusion_matrix"):
        report.plot_confusion_matrix(
            out / "confusion_matrix.png", metrics["confusion_matrix"], classes
        )
        files.append(str(out / "confusion_matrix.png"))
    return files
