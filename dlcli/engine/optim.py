"""Optimizers and learning-rate schedules by name."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from dlcli.errors import UsageError

OPTIMIZERS: dict[str, Callable[..., torch.optim.Optimizer]] = {
    "sgd": lambda params, lr, wd, momentum: torch.optim.SGD(
        params, lr=lr, weight_decay=wd, momentum=momentum, nesterov=momentum > 0
    ),
    "adam": lambda params, lr, wd, momentum: torch.optim.Adam(params, lr=lr, weight_decay=wd),
    "adamw": lambda params, lr, wd, momentum: torch.optim.AdamW(params, lr=lr, weight_decay=wd),
    "rmsprop": lambda params, lr, wd, momentum: torch.optim.RMSprop(
        params, lr=lr, weight_decay=wd, momentum=momentum
    ),
}


def make_optimizer(
    name: str, params: Any, lr: float, weight_decay: float, momentum: float
) -> torch.optim.Optimizer:
    key = name.lower()
    if key not in OPTIMIZERS:
        raise UsageError(f"unknown --optimizer '{name}'", f"known: {', '.join(OPTIMIZERS)}")
    return OPTIMIZERS[key](params, lr, weight_decay, momentum)


# schedule name -> (factory(optimizer, lr, epochs, steps_per_epoch), stepped per batch?)
SCHEDULES: dict[str, tuple[Callable[..., Any] | None, bool]] = {
    "none": (None, False),
    "constant": (None, False),
    "step": (
        lambda opt, lr, e, s: torch.optim.lr_scheduler.StepLR(
            opt, step_size=max(1, e // 3), gamma=0.1
        ),
        False,
    ),
    "cosine": (
        lambda opt, lr, e, s: torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(1, e * s)),
        True,
    ),
    "onecycle": (
        lambda opt, lr, e, s: torch.optim.lr_scheduler.OneCycleLR(
            opt,
            max_lr=lr,
            total_steps=max(8, e * s),
            pct_start=0.25,  # >= 1 warm-up step
        ),
        True,
    ),
}


def make_schedule(
    name: str, opt: torch.optim.Optimizer, lr: float, epochs: int, steps: int
) -> tuple[Any, bool]:
    """(scheduler or None, whether it steps per batch)."""
    key = name.lower()
    if key not in SCHEDULES:
        raise UsageError(f"unknown --schedule '{name}'", f"known: {', '.join(SCHEDULES)}")
    factory, per_batch = SCHEDULES[key]
    return (factory(opt, lr, epochs, steps) if factory else None), per_batch
