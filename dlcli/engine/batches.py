"""Batch sources for the trainer. In-memory data is batched by slicing tensors with a seeded
permutation (no per-sample Dataset); a streaming source only needs the same three methods."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Protocol

import torch


class BatchSource(Protocol):
    """What the trainer needs of training or validation data."""

    batch_size: int

    def __len__(self) -> int: ...  # optimisation steps per epoch

    def to(self, device: torch.device) -> BatchSource: ...

    def labels(self) -> torch.Tensor: ...  # all targets (class weights)

    def shuffled(self, gen: torch.Generator) -> Iterator[tuple[torch.Tensor, torch.Tensor]]: ...

    def in_order(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]: ...


def as_batches(x: Any, y: torch.Tensor | None, batch_size: int) -> BatchSource:
    """Tensors become TensorBatches; a batch source is used as it is."""
    if hasattr(x, "shuffled"):
        x.batch_size = getattr(x, "batch_size", None) or batch_size
        return x
    return TensorBatches(x, y, batch_size)


class TensorBatches:
    """Batches of `x[idx], y[idx]` for a seeded permutation `idx`; the ragged last batch is
    dropped when shuffling (BatchNorm needs more than one row)."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor, batch_size: int) -> None:
        self.x, self.y, self.batch_size = x, y, max(1, int(batch_size))

    def __len__(self) -> int:  # optimisation steps per epoch
        n = len(self.x)
        return max(1, n // self.batch_size) if n >= self.batch_size else 1

    @property
    def rows(self) -> int:
        return len(self.x)

    def to(self, device: torch.device) -> TensorBatches:
        self.x, self.y = self.x.to(device), self.y.to(device)
        return self

    def labels(self) -> torch.Tensor:
        return self.y

    def shuffled(self, gen: torch.Generator) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        perm = torch.randperm(len(self.x), generator=gen).to(self.x.device)
        bs = self.batch_size
        for s in range(len(self)):
            idx = perm[s * bs : (s + 1) * bs]
            yield self.x[idx], self.y[idx]

    def in_order(self, batch: int | None = None) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Every row once, in order, in batches of about 16 MB of float inputs."""
        if batch is None:
            batch = max(64, min(8192, 2**22 // max(1, self.x[0].numel())))
        for i in range(0, len(self.x), batch):
            yield self.x[i : i + batch], self.y[i : i + batch]
