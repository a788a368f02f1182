"""Refitting on every row (`training: refit: true`, `--refit`): once early stopping on the
validation split has chosen the epoch count, a fresh network of the same spec trains on the
training and validation rows together for that many epochs, and its weights are the ones saved.

On small data the held-out share is a real loss: scikit-learn's TF-IDF + logistic regression on
80% of `sample_data/reviews` scores 0.740 against 0.760 on all of it (benchmarks/README.md, "Text
quality"). The validation metrics the model file reports stay those of the validated run.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import torch

from dlcli.engine.task_step import TaskStep
from dlcli.engine.trainer import FitResult, TrainConfig, Trainer


def all_rows(x_tr: Any, y_tr: Any, x_va: Any, y_va: Any) -> tuple[Any, Any] | None:
    """(inputs, targets) of the training and validation rows together: tensors are concatenated,
    a batch source that can join another of its kind (`joined`, e.g. BucketedTokens) is joined;
    None when there are no validation rows or the inputs cannot be joined (streams, images)."""
    if x_va is None or y_va is None or not len(y_va):
        return None
    if torch.is_tensor(x_tr) and torch.is_tensor(x_va):
        return torch.cat([x_tr, x_va]), torch.cat([y_tr, y_va])
    join = getattr(type(x_tr), "joined", None)
    if join is not None and type(x_va) is type(x_tr):
        both = join(x_tr, x_va)
        return both, both.labels()
    return None


def refit(
    network: torch.nn.Module,
    task: Any,
    cfg: TrainConfig,
    rows: tuple[Any, Any],
    epochs: int,
    transforms: tuple[Any, Any] = (None, None),
    frozen: list[torch.nn.Module] | None = None,
    plan: Any = None,
) -> FitResult:
    """Train `network` (freshly built, seeded) on `rows` for the first `epochs` of the validated
    run's `cfg.epochs`: the same settings and learning-rate schedule (planned for all of
    `cfg.epochs`, so epoch k sees the rate it saw then), no validation, no early stopping;
    `network` holds the last epoch's weights afterwards. `frozen` and `plan` (the fine-tuning
    schedule) are the validated run's."""
    cfg = dataclasses.replace(cfg, patience=0)
    step = TaskStep(network, task, cfg, (*rows, None, None), *transforms, frozen, plan)
    return Trainer(step, int(epochs), 0).fit()
