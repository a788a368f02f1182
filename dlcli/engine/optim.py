"""Optimizers and learning-rate schedules by name.

The optimizers are torch's own classes less torch.compile's wrappers (`eager`);
tests/unit/test_optim.py proves they make the same updates as the stock classes, bit for bit
(parameters, state_dict, schedule state), for every optimizer, option and schedule here."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

import torch

from dlcli import settings
from dlcli.errors import UsageError


def eager(cls: type[torch.optim.Optimizer]) -> type[torch.optim.Optimizer]:
    """`cls` without torch.compile's wrappers on add_param_group, zero_grad, step, state_dict and
    load_state_dict (the train job snapshots the optimizer every epoch, so those count too).

    Those wrappers (`torch._disable_dynamo`, `_use_grad_for_differentiable`) import torch._dynamo
    on their first call: 1.5 s of a 5 s `dl train` on a small table, for graph breaks that only
    matter when the optimizer itself is compiled, which dl never does. The subclass calls the
    functions they wrap (`inspect.unwrap`) with the grad mode the wrapper would set; everything
    else (schedulers, hooks) is torch's own. DL_STOCK_OPTIMIZERS=1 turns this off, and
    torch versions without these wrappers get the stock class unchanged.
    """
    if settings.get().stock_optimizers:
        return cls
    base = torch.optim.Optimizer
    step = inspect.unwrap(cls.step)
    add_group, zero_grad = inspect.unwrap(base.add_param_group), inspect.unwrap(base.zero_grad)
    if step is cls.step and add_group is base.add_param_group:
        return cls  # nothing wrapped: nothing to skip

    def eager_step(self: Any, closure: Any = None) -> Any:
        with torch.set_grad_enabled(self.defaults.get("differentiable", False)):
            return step(self, closure)

    attrs = {
        "step": eager_step,
        "add_param_group": add_group,
        "zero_grad": zero_grad,
        "state_dict": inspect.unwrap(base.state_dict),
        "load_state_dict": inspect.unwrap(base.load_state_dict),
    }
    return type(cls.__name__, (cls,), {**attrs, "__doc__": cls.__doc__})


OPTIMIZERS: dict[str, Callable[..., torch.optim.Optimizer]] = {
    "sgd": lambda params, lr, wd, momentum: eager(torch.optim.SGD)(
        params, lr=lr, weight_decay=wd, momentum=momentum, nesterov=momentum > 0
    ),
    "adam": lambda params, lr, wd, momentum: eager(torch.optim.Adam)(
        params, lr=lr, weight_decay=wd
    ),
    "adamw": lambda params, lr, wd, momentum: eager(torch.optim.AdamW)(
        params, lr=lr, weight_decay=wd
    ),
    "rmsprop": lambda params, lr, wd, momentum: eager(torch.optim.RMSprop)(
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
            max_lr=[g["lr"] for g in opt.param_groups],  # each group's own (fine-tuning)
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
