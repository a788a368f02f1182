"""dlcli.streamed_metrics: task metrics fed chunk by chunk (the held-out rows of `--stream`) equal
dlcli.metrics' in-memory ones: exactly up to EXACT_ROWS, from sums beyond (ROC AUC from score
histograms), and their memory does not grow with the number of rows."""

from __future__ import annotations

import tracemalloc
from collections.abc import Iterator

import numpy as np
import pytest
import torch

from dlcli import metrics
from dlcli.engine.fit_data import held_out_metrics
from dlcli.model.tasks import make_task
from dlcli.streamed_metrics import (
    EXACT_ROWS,
    ChunkedMetrics,
    ClassificationSums,
    RegressionSums,
    histogram_auc,
    score_keys,
)


class Target:
    """The fitted target a task reads: classes, or the mean and std of a regression target."""

    def __init__(self, task: str, classes: list[str] | None = None) -> None:
        self.task, self.classes = task, classes or []
        self.mean, self.std = 3.0, 2.0


def proba(rng: np.random.Generator, n: int, c: int, y: np.ndarray) -> np.ndarray:
    """float32 class probabilities that lean towards the true class (as a trained model's)."""
    logits = rng.normal(size=(n, c)) * 2.0
    logits[np.arange(n), y] += 1.5
    e = np.exp(logits - logits.max(axis=1, keepdims=True))
    return (e / e.sum(axis=1, keepdims=True)).astype(np.float32)


def chunks(n: int, size: int) -> Iterator[slice]:
    for s in range(0, n, size):
        yield slice(s, min(n, s + size))


def fed(acc: ChunkedMetrics, y: np.ndarray, out: np.ndarray, size: int = 997) -> dict:
    for part in chunks(len(y), size):
        acc.add(y[part], out[part])
    return acc.result()


def names(c: int) -> list[str]:
    return [f"class_{i}" for i in range(c)]


@pytest.mark.parametrize("c", [2, 4])
def test_up_to_exact_rows_the_result_is_the_in_memory_one(c: int) -> None:
    rng = np.random.default_rng(c)
    y = rng.integers(0, c, 5000)
    out = proba(rng, 5000, c, y)
    task = make_task(Target("classification", names(c)), None)
    assert fed(task.chunked_metrics(), y, out) == task.metrics(y, out)  # every key, bit for bit


@pytest.mark.parametrize("c", [2, 3, 5])
def test_sums_equal_the_in_memory_metrics(c: int) -> None:
    """Past exact_rows: the confusion matrix and all it gives are exact, log loss to rounding,
    ROC AUC to the histogram's resolution (here: ties only where the scores tie)."""
    rng = np.random.default_rng(10 + c)
    n = 20_000
    y = rng.integers(0, c, n)
    y[y == c - 1] = 0 if c > 2 else y[y == c - 1]  # c > 2: a class absent from the labels
    out = proba(rng, n, c, y)
    exact = metrics.classification_metrics(y, out, names(c))
    got = fed(ChunkedMetrics(lambda *_: {}, ClassificationSums(names(c)), exact_rows=3000), y, out)
    for key in ("confusion_matrix", "per_class", "n", "accuracy", "balanced_accuracy"):
        assert got[key] == exact[key], key
    for key in ("precision_macro", "recall_macro", "f1_macro", "log_loss"):
        assert got[key] == pytest.approx(exact[key], rel=1e-12, abs=1e-12), key
    assert got["roc_auc"] == pytest.approx(exact["roc_auc"], abs=1e-4)


def test_histogram_auc_is_exact_when_scores_fit_the_bins() -> None:
    """Scores with few significant bits (k / 1024) fall in bins of their own: the AUC from the
    histograms is the rank-based one, ties included."""
    rng = np.random.default_rng(3)
    y = rng.integers(0, 2, 30_000)
    p = (rng.integers(0, 1025, 30_000) / 1024).astype(np.float32)
    p = np.where(y == 1, np.maximum(p, rng.random(30_000).astype(np.float32) // 0.5), p)
    out = np.stack([1 - p, p], axis=1)
    exact = metrics.classification_metrics(y, out, names(2))["roc_auc"]
    got = fed(ChunkedMetrics(lambda *_: {}, ClassificationSums(names(2)), exact_rows=1), y, out)
    assert got["roc_auc"] == pytest.approx(exact, abs=1e-12)


def test_histogram_auc_edge_cases() -> None:
    assert histogram_auc(np.array([0, 3]), np.array([0, 0])) is None
    assert histogram_auc(np.array([0, 2]), np.array([1, 0])) == 1.0
    assert histogram_auc(np.array([2, 0]), np.array([0, 1])) == 0.0
    assert histogram_auc(np.array([0, 1]), np.array([0, 1])) == 0.5  # one tie
    keys = score_keys(np.array([np.nan, -0.0, 0.0, 1e-30, 0.5, 1.0, 1.5]), 10)
    assert keys.tolist() == sorted(keys.tolist()) and keys[0] == keys[1] == keys[2] == 0
    assert keys[-1] == keys[-2]  # clipped to 1


def test_one_class_in_the_labels_gives_no_auc() -> None:
    y = np.zeros(5000, dtype=np.int64)
    out = proba(np.random.default_rng(0), 5000, 3, y)
    got = fed(ChunkedMetrics(lambda *_: {}, ClassificationSums(names(3)), exact_rows=10), y, out)
    assert got["roc_auc"] is None and got["n"] == 5000


@pytest.mark.parametrize("k", [1, 3])
def test_regression_sums_equal_the_in_memory_metrics(k: int) -> None:
    rng = np.random.default_rng(k)
    y = rng.normal(5.0, 3.0, (20_000, k)).squeeze()
    pred = y + rng.normal(0.0, 1.0, y.shape)
    exact = metrics.regression_metrics(y, pred)
    got = fed(ChunkedMetrics(lambda *_: {}, RegressionSums(), exact_rows=10), y, pred)
    assert got.keys() == exact.keys() and got["n"] == exact["n"]
    for key in ("mae", "rmse", "mse", "r2"):
        assert got[key] == pytest.approx(exact[key], rel=1e-10), key
    constant = np.full(5000, 2.0)
    for pred, r2 in ((constant, 1.0), (constant + 1, 0.0)):  # sklearn's force_finite
        got = fed(ChunkedMetrics(lambda *_: {}, RegressionSums(), exact_rows=10), constant, pred)
        assert got["r2"] == r2 == metrics.regression_metrics(constant, pred)["r2"]


def test_regression_task_in_target_units() -> None:
    rng = np.random.default_rng(5)
    y = rng.normal(size=400_000).astype(np.float32)  # standardised, as the encoder gives them
    out = (y * 2.0 + 3.0 + rng.normal(0, 0.5, y.shape)).astype(np.float32)[:, None]
    task = make_task(Target("regression"), None)
    exact = task.metrics(y, out)
    got = fed(task.chunked_metrics(), y, out, size=8192)
    for key in ("mae", "rmse", "mse", "r2"):
        assert got[key] == pytest.approx(exact[key], rel=1e-6), key


class HeldOut:
    """A batch source of held-out rows, read in order (as StreamedRows' `in_order`)."""

    def __init__(self, rows: int, seed: int = 0) -> None:
        self.rows, self.seed = rows, seed

    def in_order(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        gen = torch.Generator().manual_seed(self.seed)
        for part in chunks(self.rows, 8192):
            n = part.stop - part.start
            x = torch.randn(n, 4, generator=gen)
            yield x, (x[:, 0] + 0.5 * torch.randn(n, generator=gen) > 0).long()


def test_held_out_metrics_of_a_batch_source_hold_memory_flat() -> None:
    """The final validation metrics of a streamed run: numpy memory (traced) at 1.6M held-out
    rows is that at 0.4M, and far below what gathering every output takes (~100 B a row)."""
    model = torch.nn.Sequential(torch.nn.Linear(4, 2), torch.nn.Softmax(-1)).eval()
    with torch.no_grad():  # logits -x0, +x0: the labels' own rule, less their noise
        model[0].weight.zero_()
        model[0].bias.zero_()
        model[0].weight[:, 0] = torch.tensor([-1.0, 1.0])
    task = make_task(Target("classification", ["no", "yes"]), None)
    held_out_metrics(model, HeldOut(1000), None, task)  # lazy imports and caches, not measured
    peaks, results = [], []
    for rows in (400_000, 1_600_000):
        tracemalloc.start()
        results.append(held_out_metrics(model, HeldOut(rows), None, task))
        peaks.append(tracemalloc.get_traced_memory()[1] / 2**20)
        tracemalloc.stop()
    assert results[1]["n"] == 1_600_000 and 0.5 < results[1]["accuracy"] < 1.0
    assert 0.5 < results[1]["roc_auc"] < 1.0
    assert peaks[1] < peaks[0] + 2, peaks  # MB: flat in the number of rows
    assert peaks[1] < 40, peaks  # gathering 1.6M rows' outputs takes ~170 MB
    assert EXACT_ROWS < 400_000
