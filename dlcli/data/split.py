"""Holding rows out for validation, and its checks, for every data kind: the --val-split range,
seeded (stratified) row splits, the row hash of streamed tables and the chronological split of a
series. The same seed always picks the same rows.

Cross-validation (`dl tune --folds K`) runs a kind's ordinary `prepare` inside `cross_validation(i,
k)`: while that is active, `split_rows` returns fold i of a seeded (stratified) K-fold partition
instead of the --val-split share, and `chronological_split` the i-th expanding window (train on
everything before block i+1 of k+1, validate on that block), so every data kind gets folds
without knowing about them.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator

import numpy as np

from dlcli.errors import InputError, UsageError

# (fold index, folds) while `cross_validation` is active, else None
_FOLD: contextvars.ContextVar[tuple[int, int] | None] = contextvars.ContextVar("fold", default=None)


@contextlib.contextmanager
def cross_validation(fold: int, folds: int) -> Iterator[None]:
    """Within this block every split is fold `fold` (0-based) of `folds`."""
    if not 0 <= fold < folds:
        raise ValueError(f"fold {fold} of {folds}")
    token = _FOLD.set((fold, folds))
    try:
        yield
    finally:
        _FOLD.reset(token)


def active_fold() -> tuple[int, int] | None:
    """(fold, folds) inside `cross_validation`, else None."""
    return _FOLD.get()


def kfold_split(
    y: np.ndarray | None, n: int, fold: int, folds: int, seed: int, stratify: bool
) -> tuple[np.ndarray, np.ndarray]:
    """Seeded (train_idx, val_idx) of fold `fold` of `folds`, both sorted. Stratified: each
    class's rows are shuffled and dealt round-robin to the folds (from a random fold onwards), so
    every fold holds each class in proportion; the folds partition the rows."""
    rng = np.random.default_rng(seed)
    assign = np.empty(n, dtype=np.int64)
    if not stratify or y is None:
        assign[rng.permutation(n)] = np.arange(n) % folds
    else:
        start = 0
        for cls in np.unique(y):
            idx = np.flatnonzero(y == cls)
            rng.shuffle(idx)
            assign[idx] = (np.arange(len(idx)) + start) % folds
            start = (start + len(idx)) % folds  # the next class fills the smaller folds first
    val = assign == fold
    return np.flatnonzero(~val), np.flatnonzero(val)


def check_val_split(fraction: float) -> None:
    """--val-split is a share strictly between 0 and 1."""
    if not 0.0 < fraction < 1.0:
        raise UsageError(f"--val-split {fraction:g}: must be more than 0 and less than 1")


def check_split_sizes(
    source: str,
    total: int,
    n_train: int,
    n_val: int,
    what: str = "rows",
    hint: str | None = "pass --val FILE",
) -> None:
    """At least two training rows and one validation row, else one InputError line."""
    if n_train < 2 or n_val < 1:
        raise InputError(f"{source}: only {total} {what}; too few to split for validation", hint)


def stratified_split(
    y: np.ndarray | None, n: int, fraction: float, seed: int, stratify: bool
) -> tuple[np.ndarray, np.ndarray]:
    """Seeded (train_idx, val_idx), both sorted; per-class proportions kept when `stratify`
    (every class with two rows or more has one in each part)."""
    rng = np.random.default_rng(seed)
    if not stratify or y is None:
        perm = rng.permutation(n)
        k = max(1, round(n * fraction))
        return np.sort(perm[k:]), np.sort(perm[:k])
    val = []
    small_ints = y.dtype.kind in "iu" and len(y) and y.min() >= 0
    classes = np.flatnonzero(np.bincount(y)) if small_ints else np.unique(y)
    for cls in classes:  # the sorted distinct labels (bincount: no sort of every row)
        idx = np.flatnonzero(y == cls)
        rng.shuffle(idx)
        k = round(len(idx) * fraction)
        if len(idx) > 1:
            k = min(max(k, 1), len(idx) - 1)
        else:
            k = 0
        val.append(idx[:k])
    val_idx = np.sort(np.concatenate(val))
    mask = np.ones(n, dtype=bool)
    mask[val_idx] = False
    return np.flatnonzero(mask), val_idx


def split_rows(
    y: np.ndarray | None,
    n: int,
    fraction: float,
    seed: int,
    *,
    stratify: bool,
    source: str,
    what: str = "rows",
    hint: str | None = "pass --val FILE",
) -> tuple[np.ndarray, np.ndarray]:
    """`stratified_split` with its checks: the share first, then enough rows in each part."""
    check_val_split(fraction)
    fold = active_fold()
    if fold is None:
        tr, va = stratified_split(y, n, fraction, seed, stratify)
    else:
        tr, va = kfold_split(y, n, *fold, seed, stratify)
    check_split_sizes(source, n, len(tr), len(va), what, hint)
    return tr, va


def held_out(start: int, n: int, fraction: float, seed: int) -> np.ndarray:
    """Whether each of rows start..start+n-1 (0-based data rows of a file) is a validation row:
    a seeded hash of the row number, so every pass over a streamed file picks the same rows."""
    z = np.arange(start, start + n, dtype=np.uint64) + np.uint64(
        (seed * 0x9E3779B97F4A7C15) % 2**64
    )
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)  # splitmix64 finaliser
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    z ^= z >> np.uint64(31)
    return (z >> np.uint64(11)).astype(np.float64) * 2.0**-53 < fraction


def chronological_split(source: str, n: int, m: int, horizon: int, share: float) -> tuple[int, int]:
    """(training windows, first validation window) of a series' m windows (n rows): the last
    `share` of them is validation; training stops `horizon - 1` windows earlier, so every training
    target is known by the first validation window's last input step (nothing leaks)."""
    check_val_split(share)
    fold = active_fold()
    if fold is None:
        j0 = m - max(1, round(m * share))
    else:  # expanding window: fold i validates on block i+1 of k+1 (see `validation_stop`)
        j0 = (fold[0] + 1) * m // (fold[1] + 1)
    n_train = j0 - horizon + 1
    if n_train < 2:
        raise InputError(
            f"{source}: the series is too short to split: {n} rows make {m} windows, "
            f"{m - j0} for validation leave {max(n_train, 0)} for training",
            "use a smaller --window or pass --val FILE",
        )
    return n_train, j0


def validation_stop(m: int) -> int:
    """Where a series' validation windows end: all m of them, or inside `cross_validation` the end
    of the fold's block (the later windows are the next folds' validation)."""
    fold = active_fold()
    return m if fold is None else (fold[0] + 2) * m // (fold[1] + 1)
