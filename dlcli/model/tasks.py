"""Tasks by name: output size, losses, the output module (logits -> what users get) and metrics.

classification: outputs class probabilities (N, C); regression: outputs values in target units.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from dlcli.errors import UsageError


class Probabilities(nn.Module):
    """Logits -> class probabilities; one logit (binary BCE) becomes [1-p, p]."""

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        if z.shape[-1] == 1:
            p = torch.sigmoid(z)
            return torch.cat([1 - p, p], dim=-1)
        return torch.softmax(z, dim=-1)


class Destandardise(nn.Module):
    """Standardised outputs -> target units."""

    def __init__(self, mean: float, std: float) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor(float(mean)))
        self.register_buffer("std", torch.tensor(float(std)))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return z * self.std + self.mean


def _weighted(per_sample: torch.Tensor, y: torch.Tensor, w: torch.Tensor | None) -> torch.Tensor:
    if w is None:
        return per_sample.mean()
    sw = w[y]
    return (per_sample * sw).sum() / sw.sum()


def _cross_entropy(w: torch.Tensor | None, smoothing: float) -> Callable:
    return lambda z, y: F.cross_entropy(z, y, weight=w, label_smoothing=smoothing)


def _bce(w: torch.Tensor | None, smoothing: float) -> Callable:
    def loss(z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        t = y.to(z.dtype)
        if smoothing:
            t = t * (1 - smoothing) + 0.5 * smoothing
        return _weighted(
            F.binary_cross_entropy_with_logits(z.squeeze(-1), t, reduction="none"), y, w
        )

    return loss


def _regression(fn: Callable) -> Callable:
    return lambda w, smoothing: lambda z, y: fn(z.squeeze(-1), y)


# loss name -> (tasks it serves, factory(class_weights, label_smoothing) -> loss(z, y))
LOSSES: dict[str, tuple[tuple[str, ...], Callable]] = {
    "cross_entropy": (("classification",), _cross_entropy),
    "bce": (("classification",), _bce),
    "mse": (("regression",), _regression(F.mse_loss)),
    "l1": (("regression",), _regression(F.l1_loss)),
    "huber": (("regression",), _regression(F.smooth_l1_loss)),
}
LOSS_ALIASES = {
    "ce": "cross_entropy",
    "crossentropy": "cross_entropy",
    "binary_cross_entropy": "bce",
    "mae": "l1",
    "smooth_l1": "huber",
}


def loss_name(name: str | None, task: str, n_classes: int) -> str:
    """Resolve aliases and defaults; reject a loss that does not fit the task."""
    if name is None:
        if task == "classification":
            return "bce" if n_classes == 2 else "cross_entropy"
        return "mse"
    key = LOSS_ALIASES.get(name.lower().replace("-", "_"), name.lower().replace("-", "_"))
    if key not in LOSSES:
        raise UsageError(f"unknown --loss '{name}'", f"known: {', '.join(LOSSES)}")
    if task not in LOSSES[key][0]:
        fitting = [k for k, (tasks, _) in LOSSES.items() if task in tasks]
        raise UsageError(
            f"--loss {name} does not fit a {task} task", f"use one of: {', '.join(fitting)}"
        )
    if key == "bce" and n_classes != 2:
        raise UsageError(
            f"--loss bce needs two classes, the target has {n_classes}", "use cross_entropy"
        )
    return key


class SupervisedTask:
    """Base: what the engine asks of a task."""

    name = ""

    def __init__(self, target: Any, loss: str | None) -> None:
        self.target = target
        self.loss = loss_name(loss, self.name, len(getattr(target, "classes", []) or []))

    def make_loss(
        self, class_weights: torch.Tensor | None = None, label_smoothing: float = 0.0
    ) -> Callable:
        return LOSSES[self.loss][1](class_weights, label_smoothing)


class ClassificationTask(SupervisedTask):
    name = "classification"
    score_sign = 1  # batch_score counts correct predictions: higher is better

    @property
    def n_outputs(self) -> int:
        return 1 if self.loss == "bce" else len(self.target.classes)

    def postprocess(self) -> nn.Module:
        return Probabilities()

    def batch_score(self, out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Sum of correct predictions in a batch (for the live validation metric)."""
        pred = (out.squeeze(-1) > 0).long() if out.shape[-1] == 1 else out.argmax(-1)
        return (pred == y).sum()

    def metrics(self, y: np.ndarray, outputs: np.ndarray) -> dict:
        from dlcli.metrics import classification_metrics

        return classification_metrics(y, outputs, self.target.classes)

    def chunked_metrics(self) -> Any:
        """`metrics`, fed chunk by chunk in bounded memory (dlcli/streamed_metrics.py)."""
        from dlcli.streamed_metrics import ChunkedMetrics, ClassificationSums

        return ChunkedMetrics(self.metrics, ClassificationSums(self.target.classes))

    def balanced_weights(self, y: torch.Tensor) -> torch.Tensor:
        counts = torch.bincount(y, minlength=len(self.target.classes)).float().clamp(min=1)
        return counts.sum() / (len(counts) * counts)


class RegressionTask(SupervisedTask):
    name = "regression"
    n_outputs = 1
    score_sign = -1  # batch_score sums squared errors: lower is better

    def postprocess(self) -> nn.Module:
        return Destandardise(self.target.mean, self.target.std)

    def batch_score(self, out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Sum of squared errors in target units (for the live validation RMSE)."""
        return ((out.squeeze(-1) - y) * self.target.std).pow(2).sum()

    def metrics(self, y: np.ndarray, outputs: np.ndarray) -> dict:
        from dlcli.metrics import regression_metrics

        return regression_metrics(*self._in_units(y, outputs))

    def chunked_metrics(self) -> Any:
        """`metrics`, fed chunk by chunk in bounded memory (dlcli/streamed_metrics.py)."""
        from dlcli.streamed_metrics import ChunkedMetrics, RegressionSums

        return ChunkedMetrics(self.metrics, RegressionSums(), self._in_units)

    def _in_units(self, y: np.ndarray, outputs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(encoded targets back in target units, outputs (N,))."""
        return y * self.target.std + self.target.mean, outputs.reshape(-1)

    def balanced_weights(self, y: torch.Tensor) -> torch.Tensor:
        raise UsageError("--class-weights applies to classification only")


TASKS: dict[str, type[SupervisedTask]] = {
    "classification": ClassificationTask,
    "regression": RegressionTask,
}


def make_task(target: Any, loss: str | None) -> SupervisedTask:
    return TASKS[target.task](target, loss)
