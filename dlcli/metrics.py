"""Evaluation metrics by task, in plain numpy (values match scikit-learn's definitions).

Every function returns a dict of plain Python numbers, ready for JSON.
"""

from __future__ import annotations

import numpy as np

LOG_LOSS_EPS = 1e-15


def _safe_div(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    """Elementwise num / den, with 0.0 where den == 0 (sklearn's zero_division=0)."""
    num = np.asarray(num, dtype=np.float64)
    den = np.asarray(den, dtype=np.float64)
    out = np.zeros_like(num)
    np.divide(num, den, out=out, where=den != 0)
    return out


def _average_ranks(x: np.ndarray) -> np.ndarray:
    """1-based ranks of `x`, ties sharing the mean of their ranks."""
    _, inverse, counts = np.unique(x, return_inverse=True, return_counts=True)
    ends = np.cumsum(counts)
    return (ends - (counts - 1) / 2.0)[inverse.reshape(-1)]


def binary_auc(positive: np.ndarray, score: np.ndarray) -> float | None:
    """ROC AUC via the Mann-Whitney U statistic; None when one class is missing."""
    n_pos = int(positive.sum())
    n_neg = positive.size - n_pos
    if n_pos == 0 or n_neg == 0:
        return None
    ranks = _average_ranks(score)
    u = ranks[positive].sum() - n_pos * (n_pos + 1) / 2.0
    return float(u / (n_pos * n_neg))


def _roc_auc(y_true: np.ndarray, proba: np.ndarray) -> float | None:
    """Binary AUC on proba[:, 1]; for C > 2 the macro one-vs-rest AUC over present classes."""
    if np.unique(y_true).size < 2:
        return None
    n_classes = proba.shape[1]
    if n_classes == 2:
        return binary_auc(y_true == 1, proba[:, 1])
    aucs = [binary_auc(y_true == c, proba[:, c]) for c in range(n_classes)]
    aucs = [a for a in aucs if a is not None]
    return float(np.mean(aucs))


def check_classification(
    y_true: np.ndarray, proba: np.ndarray, class_names: list[str]
) -> tuple[np.ndarray, np.ndarray]:
    """(labels as int64 (N,), probabilities as float64 (N, C)), or a ValueError saying what is
    wrong with them (shapes, C >= 2, one name per class, integer labels in range)."""
    y_true = np.asarray(y_true).reshape(-1)
    proba = np.asarray(proba, dtype=np.float64)
    if proba.ndim != 2 or proba.shape[1] < 2:
        raise ValueError(f"proba must have shape (N, C) with C >= 2, got {proba.shape}")
    n, n_classes = proba.shape
    if y_true.shape[0] != n:
        raise ValueError(f"y_true has {y_true.shape[0]} rows but proba has {n}")
    if n == 0:
        raise ValueError("cannot compute metrics on zero rows")
    if len(class_names) != n_classes:
        raise ValueError(f"{len(class_names)} class names for {n_classes} probability columns")
    if not np.all(np.equal(np.mod(y_true, 1), 0)):
        raise ValueError("y_true must hold integer class indices")
    y_true = y_true.astype(np.int64)
    if y_true.min() < 0 or y_true.max() >= n_classes:
        raise ValueError(f"y_true class indices must lie in [0, {n_classes - 1}]")
    return y_true, proba


def confusion(y_true: np.ndarray, y_pred: np.ndarray, n_classes: int) -> np.ndarray:
    """(C, C) counts: rows are true classes, columns predicted ones."""
    cells = np.bincount(y_true * n_classes + y_pred, minlength=n_classes * n_classes)
    return cells.reshape(n_classes, n_classes)


def true_class_proba(y_true: np.ndarray, proba: np.ndarray) -> np.ndarray:
    """Each row's probability of its true class, clipped to [1e-15, 1 - 1e-15] (for log loss)."""
    return np.clip(proba[np.arange(len(y_true)), y_true], LOG_LOSS_EPS, 1 - LOG_LOSS_EPS)


def classification_metrics(y_true: np.ndarray, proba: np.ndarray, class_names: list[str]) -> dict:
    """Metrics for predicted class probabilities `proba` (N, C) against integer labels (N,).

    Predictions are argmax(proba). Macro averages cover all C classes (sklearn's
    `labels=range(C)`, `zero_division=0`); balanced accuracy averages recall over the
    classes present in `y_true`, as sklearn does. `roc_auc` is None when `y_true` holds
    a single class; for C > 2 it is the macro one-vs-rest AUC over classes present.
    """
    y_true, proba = check_classification(y_true, proba, class_names)
    cm = confusion(y_true, proba.argmax(axis=1), proba.shape[1])
    log_loss = float(-np.log(true_class_proba(y_true, proba)).mean())
    return from_confusion(cm, log_loss, _roc_auc(y_true, proba), class_names)


def from_confusion(
    cm: np.ndarray, log_loss: float, roc_auc: float | None, class_names: list[str]
) -> dict:
    """The classification metrics dict from its confusion matrix, mean log loss and ROC AUC
    (shared by the in-memory metrics and the chunked ones of streamed_metrics.py)."""
    n = int(cm.sum())
    tp = np.diag(cm).astype(np.float64)
    support = cm.sum(axis=1)
    predicted = cm.sum(axis=0)
    precision = _safe_div(tp, predicted)
    recall = _safe_div(tp, support)
    f1 = _safe_div(2 * tp, support + predicted)
    per_class = {
        str(name): {
            "precision": float(precision[i]),
            "recall": float(recall[i]),
            "f1": float(f1[i]),
            "support": int(support[i]),
        }
        for i, name in enumerate(class_names)
    }
    return {
        "accuracy": float(tp.sum() / n),
        "balanced_accuracy": float(recall[support > 0].mean()),
        "precision_macro": float(precision.mean()),
        "recall_macro": float(recall.mean()),
        "f1_macro": float(f1.mean()),
        "log_loss": log_loss,
        "roc_auc": roc_auc,
        "confusion_matrix": cm.astype(int).tolist(),
        "per_class": per_class,
        "n": n,
    }


def check_regression(y_true: np.ndarray, y_pred: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(targets, predictions) as float64 (N, K), or a ValueError saying what is wrong (no rows,
    shapes that do not match)."""
    y_true = np.asarray(y_true, dtype=np.float64)
    y_pred = np.asarray(y_pred, dtype=np.float64)
    n = y_true.shape[0] if y_true.ndim else 0
    if n == 0:
        raise ValueError("cannot compute metrics on zero rows")
    y_true = y_true.reshape(n, -1)
    if y_pred.size != y_true.size or (y_pred.ndim and y_pred.shape[0] != n):
        raise ValueError(f"y_pred shape {y_pred.shape} does not match y_true shape {y_true.shape}")
    return y_true, y_pred.reshape(y_true.shape)


def regression_metrics(y_true: np.ndarray, y_pred: np.ndarray) -> dict:
    """MAE, MSE, RMSE and R² of `y_pred` against `y_true`, (N,) or (N, K).

    Multi-output scores are the uniform average of per-output scores (so `rmse` is the
    mean of per-output RMSEs, as in sklearn). `r2` is None with fewer than two rows; a
    constant target scores 1.0 if predicted exactly, else 0.0 (sklearn's force_finite).
    """
    y_true, y_pred = check_regression(y_true, y_pred)
    err = y_pred - y_true
    ss_tot = np.sum((y_true - y_true.mean(axis=0)) ** 2, axis=0)
    return from_sums(len(y_true), np.sum(np.abs(err), axis=0), np.sum(err**2, axis=0), ss_tot)


def from_sums(n: int, abs_err: np.ndarray, sq_err: np.ndarray, ss_tot: np.ndarray) -> dict:
    """The regression metrics dict from per-output sums over `n` rows: of absolute errors, of
    squared errors, and of the targets' squared deviations from their mean (shared by the
    in-memory metrics and the chunked ones of streamed_metrics.py)."""
    mse = sq_err / n
    r2: float | None = None
    if n >= 2:
        scores = np.where(sq_err == 0, 1.0, 0.0)
        nonzero = ss_tot != 0
        scores[nonzero] = 1.0 - sq_err[nonzero] / ss_tot[nonzero]
        r2 = float(scores.mean())
    return {
        "mae": float((abs_err / n).mean()),
        "rmse": float(np.sqrt(mse).mean()),
        "mse": float(mse.mean()),
        "r2": r2,
        "n": int(n),
    }
