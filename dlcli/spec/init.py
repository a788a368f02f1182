"""Weight initialisation by name: xavier, kaiming, normal, zeros (and `default`: PyTorch's own)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from dlcli.errors import SpecError, excerpt
from dlcli.spec.registry import INIT_NAMES


def _xavier(w: torch.Tensor) -> None:
    nn.init.xavier_uniform_(w)


def _kaiming(w: torch.Tensor) -> None:
    nn.init.kaiming_normal_(w, nonlinearity="relu")


def _normal(w: torch.Tensor) -> None:
    nn.init.normal_(w, std=0.02)


def _zeros(w: torch.Tensor) -> None:
    nn.init.zeros_(w)


INITS: dict[str, Callable[[torch.Tensor], None] | None] = {
    "default": None,
    "xavier": _xavier,
    "kaiming": _kaiming,
    "he": _kaiming,
    "normal": _normal,
    "zeros": _zeros,
}

assert set(INITS) == set(INIT_NAMES)

_WEIGHTED = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.ConvTranspose1d, nn.ConvTranspose2d, nn.Embedding)


def check_init(name: str | None, where: str) -> None:
    """Raise a SpecError naming `where` if `name` is not a known initialisation."""
    if name is not None and name.lower() not in INITS:
        raise SpecError(
            f"{where}: field 'init': unknown initialisation {excerpt(name)}",
            f"known: {', '.join(INITS)}",
        )


def apply_init(module: Any, name: str | None, done: set[int] | None = None) -> None:
    """Initialise the weights of every Linear/Conv/Embedding inside `module`; biases to zero.

    Sub-modules whose id is in `done` keep their weights (a nested layer with its own `init`
    must not be overwritten by its container's); every visited one is added to `done`.
    """
    fn = INITS.get((name or "default").lower())
    for m in module.modules():
        if done is not None:
            if id(m) in done:
                continue
            done.add(id(m))
        if fn is not None and isinstance(m, _WEIGHTED):
            fn(m.weight)
            if getattr(m, "bias", None) is not None:
                nn.init.zeros_(m.bias)
