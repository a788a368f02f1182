"""Serving autoencoder models: `predict` (anomaly_score, is_anomaly; --embed: latent vectors),
`evaluate --anomaly-label` (ROC AUC, average precision, precision/recall at the stored threshold)
and the graphs of `dl export` (the scorer, and the encoder alone)."""

from __future__ import annotations

import math
from types import SimpleNamespace
from typing import IO, Any

import numpy as np

from dlcli import __version__
from dlcli.errors import InputError, UsageError
from dlcli.export import ExportPlan, Graph
from dlcli.families.base import EvaluateOptions, PredictOptions
from dlcli.model.autoencoder import LoadedAutoencoder, ScoreOnly


# -- predict and evaluate -------------------------------------------------------------------------
def predict(
    loaded: LoadedAutoencoder, inputs: list[str], opts: PredictOptions, out: IO[str]
) -> None:
    """anomaly_score,is_anomaly per input row (with --embed: z0..zK), streamed to `out`."""
    from dlcli.engine.predictor import WRITERS, run_batches

    if not inputs:
        raise UsageError("give the inputs to score: CSV files, images, folders, or - for stdin")
    writer = WRITERS[opts.fmt](out)
    for passthrough, raw in loaded.preprocessor.iter_inputs(inputs, opts.keep_columns):
        frame = passthrough.reset_index(drop=True).copy()
        if opts.embed:
            z = run_batches(loaded.embedder, raw)  # shares its modules (and device) with the scorer
            for j in range(z.shape[1]):
                frame[f"z{j}"] = z[:, j]
        else:
            scores = run_batches(ScoreOnly(loaded.scorer), raw)
            frame["anomaly_score"] = scores
            frame["is_anomaly"] = (scores > loaded.threshold).astype(int)
        writer.write(frame)
    writer.close()
    out.flush()


def evaluate(loaded: LoadedAutoencoder, data_path: str, opts: EvaluateOptions) -> dict:
    """Score labelled data. Without --anomaly-label: score statistics and the share flagged;
    with it: how well the score separates that label (ROC AUC, average precision) and precision,
    recall and F1 of the stored threshold."""
    scores, labels = _scored_labels(loaded, data_path, opts)
    flagged = scores > loaded.threshold
    metrics: dict[str, Any] = {
        "score": loaded.score,
        "n": len(scores),
        "score_mean": float(scores.mean()) if len(scores) else math.nan,
        "threshold": loaded.threshold,
        "flagged": int(flagged.sum()),
        "flagged_share": float(flagged.mean()) if len(scores) else math.nan,
    }
    if opts.anomaly_label is None:
        return metrics
    positive = _matches(labels, str(opts.anomaly_label))
    if not positive.any() or positive.all():
        found = sorted({str(v) for v in labels})[:10]
        raise InputError(
            f"{data_path}: --anomaly-label {opts.anomaly_label} needs rows with and without that label "
            f"(labels found: {', '.join(found)})"
        )
    from dlcli.metrics import binary_auc

    tp = int((flagged & positive).sum())
    precision = tp / max(1, int(flagged.sum()))
    recall = tp / int(positive.sum())
    metrics.update(
        {
            "anomalies": int(positive.sum()),
            "roc_auc": binary_auc(positive, scores),
            "average_precision": _average_precision(positive, scores),
            "precision_at_threshold": precision,
            "recall_at_threshold": recall,
            "f1_at_threshold": 2 * precision * recall / max(1e-12, precision + recall),
        }
    )
    return metrics


def _matches(labels: list, wanted: str) -> np.ndarray:
    """Rows whose label is `wanted`: as text, or as a number when both are numbers (1 == 1.0)."""
    text = np.asarray([str(v) for v in labels])
    try:
        number = float(wanted)
    except ValueError:
        return text == wanted
    values = np.asarray([_number(v) for v in labels], dtype=np.float64)
    return (text == wanted) | (values == number)


def _number(v: Any) -> float:
    try:
        return float(v)
    except (TypeError, ValueError):
        return math.nan


def _average_precision(positive: np.ndarray, scores: np.ndarray) -> float:
    order = np.argsort(-scores, kind="stable")
    hits = positive[order].astype(np.float64)
    precision_at = np.cumsum(hits) / np.arange(1, len(hits) + 1)
    return float((precision_at * hits).sum() / max(1.0, hits.sum()))


def _scored_labels(
    loaded: LoadedAutoencoder, path: str, opts: EvaluateOptions
) -> tuple[np.ndarray, list]:
    """(scores, labels): images take the class folder as the label; tables the --target column
    (default: the last column)."""
    from dlcli.engine.predictor import run_batches

    model = ScoreOnly(loaded.scorer)
    scores, labels = [], []
    if loaded.preprocessor.kind == "image":
        for frame, raw in loaded.preprocessor.iter_labelled(path, known_only=False):
            scores.append(run_batches(model, raw))
            labels += frame[loaded.preprocessor.target.name].tolist()
    else:
        for frame, raw in loaded.preprocessor.iter_inputs([path], True):
            label = opts.target or str(frame.columns[-1])
            if opts.anomaly_label is not None and label not in frame.columns:
                raise InputError(
                    f"{path}: no label column '{label}' (columns: {', '.join(map(str, frame.columns))})",
                    "pass --target COLUMN",
                )
            scores.append(run_batches(model, raw))
            labels += frame[label].tolist() if label in frame.columns else [None] * len(raw)
    if not scores:
        raise InputError(f"{path}: no rows to evaluate")
    return np.concatenate(scores), labels


# -- export ---------------------------------------------------------------------------------------
def export_plan(loaded: LoadedAutoencoder) -> ExportPlan:
    """Two graphs: MODEL.onnx (inputs -> anomaly_score, reconstruction) and MODEL.encoder.onnx
    (inputs -> latent)."""
    from dlcli.export.inputs import adapter_for
    from dlcli.export.onnx import FORMAT_VERSION

    adapter = adapter_for(loaded.preprocessor)
    shim = SimpleNamespace(data=loaded.data, preprocessor=loaded.preprocessor)
    rows = adapter.examples(shim)
    meta = {
        "dl.format_version": str(FORMAT_VERSION),
        "dl.family": "autoencoder",
        "dl.task": "anomaly",
        "dl.data_kind": loaded.preprocessor.kind,
        "dl.version": __version__,
        "dl.score": loaded.score,
        "dl.threshold": repr(loaded.threshold),
        "dl.latent": str(loaded.ae.latent),
        **adapter.metadata(loaded.preprocessor),
    }
    name, batches = adapter.input_name, [rows[:1], rows]
    scorer = Graph(loaded.scorer, rows, name, ["anomaly_score", "reconstruction"], batches, meta)
    encoder = Graph(
        loaded.embedder, rows, name, ["latent"], batches, meta, suffix="encoder",
        path_key="encoder_path",
    )  # fmt: skip
    return ExportPlan([scorer, encoder], len(rows))
