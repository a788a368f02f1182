"""Task metrics over outputs that arrive chunk by chunk (the held-out rows of `--stream`), in
memory bounded whatever the number of rows.

Up to EXACT_ROWS rows the chunks are kept and scored by dlcli.metrics itself, so the figures are
those of in-memory training. Beyond, the chunks are folded into sums and the kept ones dropped:
the confusion matrix (so accuracy, precision, recall, F1 and their averages stay exact), the sum
of the log losses, and for ROC AUC one histogram of scores per class and label (float32 scores in
[0, 1] binned on their leading bits, AUC_BYTES in all); regression keeps the error sums and the
targets' moments. See docs/stream.md ("Validation metrics").
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

import numpy as np

from dlcli.metrics import (
    check_classification,
    check_regression,
    confusion,
    from_confusion,
    from_sums,
    true_class_proba,
)

EXACT_ROWS = 250_000  # rows kept and scored exactly (classification metrics: ~100 B per row)
AUC_BYTES = 16 << 20  # the score histograms of ROC AUC beyond EXACT_ROWS
ONE_BITS = 0x3F800000  # float32 1.0 as an integer: scores 0..1 are the keys 0..ONE_BITS, in order


class Sums(Protocol):
    """What a task folds its chunks into beyond EXACT_ROWS."""

    def add(self, y: np.ndarray, out: np.ndarray) -> None: ...

    def result(self) -> dict: ...


class ChunkedMetrics:
    """`add(y, outputs)` chunk by chunk, then `result()`: `exact(y, outputs)` on all rows while
    they number at most `exact_rows`, else `sums.result()`; `prepare(y, outputs)` turns a chunk
    into what the sums take (e.g. targets back in their units, as `exact` does itself)."""

    def __init__(
        self,
        exact: Callable[[np.ndarray, np.ndarray], dict],
        sums: Sums,
        prepare: Callable[[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]] | None = None,
        exact_rows: int | None = None,
    ) -> None:
        self.exact, self.sums = exact, sums
        self.exact_rows = EXACT_ROWS if exact_rows is None else exact_rows
        self.prepare = prepare or (lambda y, out: (y, out))
        self.rows = 0
        self.kept: list[tuple[np.ndarray, np.ndarray]] | None = []

    def add(self, y: np.ndarray, out: np.ndarray) -> None:
        if not len(y):
            return
        self.rows += len(y)
        if self.kept is None:
            self.sums.add(*self.prepare(y, out))
            return
        self.kept.append((y, out))
        if self.rows > self.exact_rows:  # too many to keep: from now on, sums only
            kept, self.kept = self.kept, None
            for yk, ok in kept:
                self.sums.add(*self.prepare(yk, ok))

    def result(self) -> dict:
        if self.kept is None:
            return self.sums.result()
        if not self.kept:
            raise ValueError("cannot compute metrics on zero rows")
        ys, outs = zip(*self.kept, strict=True)
        return self.exact(np.concatenate(ys), np.concatenate(outs))


def score_keys(scores: np.ndarray, shift: int) -> np.ndarray:
    """Scores in [0, 1] (clipped; NaN counts as 0) -> histogram bins, in the scores' order: the
    float32 bit pattern without its `shift` lowest bits (a relative resolution of
    2^(shift - 23) within each power of two)."""
    s = np.nan_to_num(np.asarray(scores, dtype=np.float32), nan=0.0)
    s = np.clip(s, 0.0, 1.0) + np.float32(0.0)  # -0.0 -> 0.0
    return (s.view(np.uint32) >> np.uint32(shift)).astype(np.int64)


def histogram_auc(pos: np.ndarray, neg: np.ndarray) -> float | None:
    """ROC AUC (Mann-Whitney U) from counts of positive and negative rows per score bin, bins in
    score order; rows sharing a bin count as ties. None when one class has no row. In integers
    (2U = sum of 2 * pos * negatives below + pos * negatives level), exact below ~2e9 rows."""
    n_pos, n_neg = int(pos.sum()), int(neg.sum())
    if n_pos == 0 or n_neg == 0:
        return None
    below = np.cumsum(neg)
    below -= neg  # negatives in the lower bins
    twice_u = 2 * int(np.dot(pos, below)) + int(np.dot(pos, neg))
    return twice_u / (2 * n_pos * n_neg)


class ClassificationSums:
    """Confusion counts, summed log loss and per-class score histograms (see the module doc)."""

    def __init__(self, class_names: list[str], auc_bytes: int = AUC_BYTES) -> None:
        self.names = list(class_names)
        c = len(self.names)
        self.cm = np.zeros((c, c), dtype=np.int64)
        self.log_loss = 0.0
        self.scored = [1] if c == 2 else list(range(c))  # binary: the positive class's score
        shift = 0
        while 2 * 8 * len(self.scored) * ((ONE_BITS >> shift) + 1) > auc_bytes:
            shift += 1
        self.shift = shift
        bins = (ONE_BITS >> shift) + 1
        self.pos = np.zeros((len(self.scored), bins), dtype=np.int64)
        self.neg = np.zeros((len(self.scored), bins), dtype=np.int64)

    def add(self, y: np.ndarray, out: np.ndarray) -> None:
        y, proba = check_classification(y, out, self.names)
        self.cm += confusion(y, proba.argmax(axis=1), len(self.names))
        self.log_loss += float(-np.log(true_class_proba(y, proba)).sum())
        for row, c in enumerate(self.scored):
            keys = score_keys(proba[:, c], self.shift)
            is_c = y == c
            for hist, picked in ((self.pos, keys[is_c]), (self.neg, keys[~is_c])):
                bins, counts = np.unique(picked, return_counts=True)
                hist[row, bins] += counts

    def result(self) -> dict:
        support = self.cm.sum(axis=1)
        auc = None
        if int((support > 0).sum()) >= 2:  # as metrics._roc_auc: over the classes present
            aucs = [histogram_auc(self.pos[r], self.neg[r]) for r in range(len(self.scored))]
            auc = float(np.mean([a for a in aucs if a is not None]))
        n = int(self.cm.sum())
        return from_confusion(self.cm, self.log_loss / n, auc, self.names)


class RegressionSums:
    """Per output: count, sums of absolute and squared errors, and the targets' mean and sum of
    squared deviations (Chan's merge), which give regression_metrics' MAE, MSE, RMSE and R²."""

    def __init__(self) -> None:
        self.n = 0
        self.abs = self.sq = self.mean = self.m2 = np.zeros(0)

    def add(self, y: np.ndarray, out: np.ndarray) -> None:
        y, pred = check_regression(y, out)
        err = pred - y
        m, k = len(y), y.shape[1]
        if not self.n:
            self.abs, self.sq, self.mean, self.m2 = (np.zeros(k) for _ in range(4))
        mean = y.mean(axis=0)
        m2 = np.square(y - mean).sum(axis=0)
        total = self.n + m
        delta = mean - self.mean
        self.m2 = self.m2 + m2 + delta * delta * self.n * m / total
        self.mean = self.mean + delta * m / total
        self.abs = self.abs + np.abs(err).sum(axis=0)
        self.sq = self.sq + np.square(err).sum(axis=0)
        self.n = total

    def result(self) -> dict:
        if self.n == 0:
            raise ValueError("cannot compute metrics on zero rows")
        return from_sums(self.n, self.abs, self.sq, self.m2)
