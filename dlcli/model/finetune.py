"""The fine-tuning schedule of a network that starts from pretrained tensors (`--init-from`, and
`--weights` for the ImageNet backbones): which top-level layers form the pretrained *body*, how
long the first phase trains only the fresh layers, and the learning rate of each parameter group.

The plan is plain data (`to_state` / `from_state`): it goes into checkpoints and the model file,
so `--resume` continues in the right phase. The engine (engine/task_step.py) applies it; this
module never imports the engine.

    plan = finetune.plan(network, loaded, cfg)   # None: no schedule (nothing fresh, or turned off)
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from torch import nn

from dlcli.errors import UsageError

BODY_LR = 0.1  # after the first phase the pretrained body learns at lr * BODY_LR (fastai: a slice)


@dataclass(frozen=True)
class FineTunePlan:
    """`body`: the top-level layers whose tensors were all loaded; epochs 1..`head_epochs` train
    only the other layers (the body frozen, batch norm in eval mode); from epoch head_epochs + 1
    the body trains too, at `lr * body_lr`, the rest at `lr`. Each phase runs its own learning-rate
    schedule (fastai's `fine_tune`: one `fit_one_cycle` per phase)."""

    body: tuple[str, ...]
    head_epochs: int
    body_lr: float = BODY_LR

    def phase(self, epoch: int) -> int:
        """1 (head only) or 2 (everything) for a 1-based epoch number."""
        return 1 if epoch <= self.head_epochs else 2

    def phase_epochs(self, phase: int, epochs: int) -> int:
        """How many epochs phase `phase` runs in a run of `epochs` (its schedule's length)."""
        return self.head_epochs if phase == 1 else max(1, epochs - self.head_epochs)

    def body_modules(self, network: nn.Module) -> list[nn.Module]:
        children = dict(network.named_children())
        return [children[n] for n in self.body]

    def param_groups(self, network: nn.Module, lr: float) -> list[dict]:
        """The optimizer's groups: the body at lr * body_lr, every other trainable parameter at
        lr. Parameters frozen for the whole run (`--freeze`) are in neither."""
        body = {id(p) for m in self.body_modules(network) for p in m.parameters()}
        slow = [p for p in network.parameters() if id(p) in body]
        fast = [p for p in network.parameters() if id(p) not in body and p.requires_grad]
        groups = [{"params": slow, "lr": lr * self.body_lr}, {"params": fast, "lr": lr}]
        return [g for g in groups if g["params"]]

    def set_phase(self, network: nn.Module, phase: int) -> list[nn.Module]:
        """Freeze (phase 1) or unfreeze (phase 2) the body; returns the modules to keep in eval
        mode for that phase (their batch-norm statistics stay as they were learnt)."""
        modules = self.body_modules(network)
        for m in modules:
            for p in m.parameters():
                p.requires_grad_(phase != 1)
        return modules if phase == 1 else []

    def describe(self) -> str:
        return (
            f"fine-tuning: epochs 1-{self.head_epochs} train the new layers with "
            f"{', '.join(self.body)} frozen, then everything ({', '.join(self.body)} at "
            f"lr x{self.body_lr:g})"
        )

    def to_state(self) -> dict:
        return {"body": list(self.body), "head_epochs": self.head_epochs, "body_lr": self.body_lr}

    @classmethod
    def from_state(cls, state: dict) -> FineTunePlan:
        return cls(tuple(state["body"]), int(state["head_epochs"]), float(state["body_lr"]))


def loaded_layers(network: nn.Module, loaded: set[str]) -> tuple[list[str], list[str]]:
    """(top-level layers whose tensors were all loaded, top-level layers with a fresh tensor);
    layers without tensors (dropout, activations) are in neither."""
    body, fresh = [], []
    for name, module in network.named_children():
        keys = [f"{name}.{k}" for k in module.state_dict()]
        if keys:
            (body if all(k in loaded for k in keys) else fresh).append(name)
    return body, fresh


def default_head_epochs(epochs: int) -> int:
    """The first phase's length when not given: a tenth of the run, 1 to 3 epochs (fastai's
    `fine_tune` freezes for 1); none in a one-epoch run."""
    return 0 if epochs < 2 else max(1, min(3, math.floor(epochs / 10)))


def plan(
    network: nn.Module, loaded: set[str], cfg: Any, by_default: bool = True
) -> FineTunePlan | None:
    """The schedule for `network` after `loaded` (tensor names) came from a pretrained source.

    `cfg` is the resolved TrainConfig (`epochs`, `fine_tune_epochs`: None = default, 0 = off);
    `by_default`: whether the schedule runs when `fine_tune_epochs` is not given (pretrained
    backbones, `--weights`: yes; another dl model, `--init-from`: no, see docs/transfer.md).
    None when there is nothing to schedule: the schedule is off, no top-level layer was loaded
    whole, or none was left fresh (the same classes: nothing new to train first)."""
    epochs = int(cfg.epochs)
    given = getattr(cfg, "fine_tune_epochs", None)
    if given is None and not by_default:
        return None
    head_epochs = default_head_epochs(epochs) if given is None else int(given)
    if head_epochs <= 0:
        return None
    if given is not None and head_epochs >= epochs:
        raise UsageError(
            f"--fine-tune-epochs {head_epochs}: must be below --epochs {epochs}, whose last "
            "epochs train the whole network",
            "give more --epochs, or --fine-tune-epochs 0 to train everything from the start",
        )
    body, fresh = loaded_layers(network, loaded)
    if not body or not fresh:
        return None
    return FineTunePlan(tuple(body), head_epochs, BODY_LR)
