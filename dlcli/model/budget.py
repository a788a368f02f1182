"""How much memory a network may take. The builder first runs the whole spec on the `meta` device
(shapes and parameter counts, no storage), and `Tally` adds up, layer by layer, what training it
would hold: parameters x 16 bytes (fp32 weights, gradients and Adam's two moments) plus every
layer's output at the batch size (kept for the backward pass). Above the limit (4 GB;
`--max-model-gb`, `DL_MAX_MODEL_GB`) it is one SpecError naming the layer, before any real tensor
is allocated. See docs/spec.md, "Network size limit"."""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from contextvars import ContextVar
from dataclasses import dataclass, replace
from typing import Any

from dlcli.errors import ModelSizeError, UsageError

GB = 1e9  # decimal gigabytes, as disks and `--max-model-gb` count them
FLOAT_BYTES = 4  # fp32 weights and activations
TRAIN_BYTES_PER_PARAM = 16  # weights + gradients + Adam's exp_avg and exp_avg_sq, all fp32
DEFAULT_BATCH = 32  # the batch size assumed when neither --batch-size nor the spec gives one
VARIABLE_LENGTH = 8  # a variable-length axis (None) counts as the dry run's 8 steps


@dataclass(frozen=True)
class Budget:
    """The limit one network is held to: `max_bytes` in all, activations counted at `batch_size`
    (None: the spec's `training.batch_size`, else DEFAULT_BATCH), `bytes_per_param` per
    parameter (16 to train; 4 to load a model for inference). `raise_with` is the hint."""

    max_bytes: float
    batch_size: int | None = None
    bytes_per_param: int = TRAIN_BYTES_PER_PARAM
    raise_with: str = "raise it with --max-model-gb N or DL_MAX_MODEL_GB"


_CURRENT: ContextVar[Budget | None] = ContextVar("dl_model_budget", default=None)


def current() -> Budget:
    """The budget in force: the innermost `model_budget(...)`, else DL_MAX_MODEL_GB (default 4)."""
    found = _CURRENT.get()
    if found is not None:
        return found
    from dlcli import settings

    return Budget(settings.get().max_model_gb * GB)


@contextlib.contextmanager
def model_budget(
    max_gb: float | None = None, batch_size: int | None = None, **changes: Any
) -> Iterator[Budget]:
    """Networks built inside hold to `max_gb` (None: DL_MAX_MODEL_GB) with activations counted at
    `batch_size` (None: the spec's, else 32); `changes` set other Budget fields."""
    if max_gb is not None and not 0 < max_gb < math.inf:
        raise UsageError(f"--max-model-gb {max_gb}: expected a positive number of gigabytes")
    base = current()
    budget = replace(
        base,
        max_bytes=base.max_bytes if max_gb is None else max_gb * GB,
        batch_size=batch_size if batch_size is not None else base.batch_size,
        **changes,
    )
    token = _CURRENT.set(budget)
    try:
        yield budget
    finally:
        _CURRENT.reset(token)


def human_count(n: float) -> str:
    """1234 -> '1,234'; 12_300_000 -> '12.3 million'; 1e9 -> '1.0 billion'."""
    if n >= 1e18:  # (a whole number past a float's range, too)
        return f"about 10^{int(math.log10(n))}"
    for size, word in ((1e12, "trillion"), (1e9, "billion"), (1e6, "million")):
        if n >= size:
            return f"{n / size:,.1f} {word}"
    return f"{int(n):,}"


def human_bytes(n: float) -> str:
    """Decimal units: '4.0 GB', '250.0 MB', '12.0 kB'."""
    if n >= 1e18:
        return f"about 10^{int(math.log10(n))} bytes"
    for size, unit in ((1e12, "TB"), (1e9, "GB"), (1e6, "MB"), (1e3, "kB")):
        if n >= size:
            return f"{n / size:,.1f} {unit}"
    return f"{int(n)} bytes"


def numel(shape: Any) -> int:
    """Values in one sample of `shape` (a None axis counts VARIABLE_LENGTH steps)."""
    dims = (d if isinstance(d, int) and not isinstance(d, bool) else VARIABLE_LENGTH for d in shape)
    return math.prod(max(0, d) for d in dims)  # a nonsense dimension is the real pass's to name


class Tally:
    """Running totals of one network's meta dry run, checked after every layer."""

    def __init__(self, budget: Budget, batch_size: int | None = None) -> None:
        self.budget = budget
        self.batch = int(budget.batch_size or batch_size or DEFAULT_BATCH)
        self.params = 0
        self.activations = 0  # values per sample: the input and every layer's output
        self._seen: set[int] = set()

    @property
    def bytes(self) -> int:
        """What training the network so far would hold."""
        acts = self.activations * self.batch * FLOAT_BYTES
        return self.params * self.budget.bytes_per_param + acts

    def add_input(self, shape: Any) -> None:
        """The input batch itself; refused like a layer, named by its shape."""
        self.activations += numel(shape)
        if self.bytes > self.budget.max_bytes:
            shown = ", ".join("T" if d is None else str(d) for d in shape)
            raise ModelSizeError(
                f"an input of shape ({shown}) takes {human_bytes(self.bytes)} at batch size "
                f"{self.batch}, over the {human_bytes(self.budget.max_bytes)} limit",
                f"use a smaller input shape, or {self.budget.raise_with}",
            )

    def add_layer(self, module: Any, out_shape: Any, where: str) -> None:
        """Count a layer built on the meta device (shared parameters once) and check the total."""
        layer_params = 0
        for p in module.parameters():
            if id(p) not in self._seen:
                self._seen.add(id(p))
                layer_params += p.numel()
        self.params += layer_params
        # a layer that is a whole network (an ImageNet backbone) says what it holds inside
        self.activations += numel(out_shape) + int(getattr(module, "inner_activations", 0))
        if self.bytes > self.budget.max_bytes:
            raise ModelSizeError(self._too_large(where, layer_params), self.budget.raise_with)

    def add_head(self, features: int, outputs: int) -> None:
        """The automatic dense head (`features` -> `outputs`), counted before it is created."""
        self.params += (features + 1) * outputs
        self.activations += outputs
        if self.bytes > self.budget.max_bytes:
            raise ModelSizeError(
                self._too_large("head.dense", (features + 1) * outputs), self.budget.raise_with
            )

    def _too_large(self, where: str, layer_params: int) -> str:
        b = self.budget
        what = "to train" if b.bytes_per_param >= TRAIN_BYTES_PER_PARAM else "to run"
        size = f"{human_bytes(self.bytes)} {what} at batch size {self.batch}"
        if layer_params == self.params:  # this layer is the network so far
            head = f"{human_count(layer_params)} parameters, {size}"
        else:
            head = (
                f"{human_count(layer_params)} parameters; with the layers before it "
                f"{human_count(self.params)} parameters, {size}"
            )
        return f"{where}: {head}, over the {human_bytes(b.max_bytes)} limit"
