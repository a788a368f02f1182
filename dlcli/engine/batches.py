"""Batch sources for the trainer. In-memory data is batched by slicing tensors with a seeded
permutation (no per-sample Dataset); a streaming source only needs the same few methods.

On a GPU, data that fits is moved there once and batched there; data that does not stays in host
memory and each batch is gathered into pinned memory and copied with a non-blocking copy, one batch
ahead of the training step. Under torch.distributed each process takes its share of every batch
(`shard`), so N processes make exactly the optimisation steps of one."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any, Protocol

import torch

Batch = tuple[torch.Tensor, torch.Tensor]
GPU_SHARE = 0.5  # at most this share of the free GPU memory holds a data set moved there whole


class BatchSource(Protocol):
    """What the trainer needs of training or validation data."""

    batch_size: int

    def __len__(self) -> int: ...  # optimisation steps per epoch

    def to(self, device: torch.device) -> BatchSource: ...

    def labels(self) -> torch.Tensor: ...  # all targets (class weights)

    def shuffled(self, gen: torch.Generator) -> Iterator[Batch]: ...

    def in_order(self) -> Iterator[Batch]: ...


def as_batches(x: Any, y: torch.Tensor | None, batch_size: int) -> BatchSource:
    """Tensors become TensorBatches; a batch source is used as it is."""
    if hasattr(x, "shuffled"):
        x.batch_size = getattr(x, "batch_size", None) or batch_size
        return x
    return TensorBatches(x, y, batch_size)


def to_device(t: torch.Tensor, device: torch.device) -> torch.Tensor:
    """Host tensor -> `device`; to a GPU through pinned memory with a non-blocking copy."""
    if device.type != "cuda" or t.device.type == "cuda":
        return t.to(device)
    return t.pin_memory().to(device, non_blocking=True)


def one_ahead(batches: Iterable[Batch]) -> Iterator[Batch]:
    """Prepare batch k+1 (host gather, copy queued on the GPU) before the step on batch k runs."""
    it = iter(batches)
    nxt = next(it, None)
    while nxt is not None:
        cur, nxt = nxt, next(it, None)
        yield cur


def fits_on(device: torch.device, nbytes: int) -> bool:
    """Whether a data set of `nbytes` should be moved to `device` whole (always, off CUDA)."""
    if device.type != "cuda":
        return True
    free, _ = torch.cuda.mem_get_info(device)
    return nbytes <= GPU_SHARE * free


class TensorBatches:
    """Batches of `x[idx], y[idx]` for a seeded permutation `idx`; the ragged last batch is
    dropped when shuffling (BatchNorm needs more than one row)."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor, batch_size: int) -> None:
        self.x, self.y, self.batch_size = x, y, max(1, int(batch_size))
        self.rank, self.world = 0, 1
        self.feed: torch.device | None = None  # set: x, y stay on the host, batches go here

    def __len__(self) -> int:  # optimisation steps per epoch
        n = len(self.x)
        return max(1, n // self.batch_size) if n >= self.batch_size else 1

    @property
    def rows(self) -> int:
        return len(self.x)

    def to(self, device: torch.device, max_bytes: float | None = None) -> TensorBatches:
        """Move the data to `device` once; beyond `max_bytes` (default: half the free GPU memory)
        keep it on the host and copy each batch as it is used."""
        nbytes = self.x.nbytes + self.y.nbytes
        fits = fits_on(device, nbytes) if max_bytes is None else nbytes <= max_bytes
        if fits:
            self.x, self.y, self.feed = self.x.to(device), self.y.to(device), None
        else:
            self.x, self.y, self.feed = self.x.cpu(), self.y.cpu(), device
        return self

    def shard(self, rank: int, world: int) -> TensorBatches:
        """This process's view under torch.distributed: rows `rank*b/world ..` of every global
        batch of `b` rows (same steps per process), and its own stretch of rows in order."""
        view = TensorBatches(self.x, self.y, self.batch_size)
        view.rank, view.world, view.feed = rank, world, self.feed
        return view

    def labels(self) -> torch.Tensor:
        return self.y

    def _gather(self, idx: torch.Tensor) -> Batch:
        if self.feed is None:
            return self.x[idx], self.y[idx]
        pin = self.feed.type == "cuda"  # gather straight into page-locked memory, copy async
        xb = torch.empty((len(idx), *self.x.shape[1:]), dtype=self.x.dtype, pin_memory=pin)
        yb = torch.empty((len(idx), *self.y.shape[1:]), dtype=self.y.dtype, pin_memory=pin)
        torch.index_select(self.x, 0, idx, out=xb)
        torch.index_select(self.y, 0, idx, out=yb)
        return xb.to(self.feed, non_blocking=pin), yb.to(self.feed, non_blocking=pin)

    def shuffled(self, gen: torch.Generator) -> Iterator[Batch]:
        perm = torch.randperm(len(self.x), generator=gen).to(self.x.device)
        bs = self.batch_size
        part = len(perm[:bs]) // self.world  # this process's rows of each global batch
        lo = self.rank * part
        batches = (
            self._gather(perm[s * bs : (s + 1) * bs][lo : lo + part]) for s in range(len(self))
        )
        return one_ahead(batches) if self.feed is not None else iter(batches)

    def in_order(self, batch: int | None = None) -> Iterator[Batch]:
        """Every row (of this process's stretch) once, in order, in batches of about 16 MB."""
        if batch is None:
            batch = max(64, min(8192, 2**22 // max(1, self.x[0].numel())))
        n = len(self.x)
        lo, hi = n * self.rank // self.world, n * (self.rank + 1) // self.world
        for i in range(lo, hi, batch):
            xb, yb = self.x[i : min(i + batch, hi)], self.y[i : min(i + batch, hi)]
            yield (to_device(xb, self.feed), to_device(yb, self.feed)) if self.feed else (xb, yb)


class ShardedBatches:
    """Any other batch source under torch.distributed: every process draws the same seeded
    batches and keeps its share of each (training), or every `world`-th batch (in order)."""

    def __init__(self, source: Any, rank: int, world: int) -> None:
        self.source, self.rank, self.world = source, rank, world
        self.batch_size = source.batch_size

    def __len__(self) -> int:
        return len(self.source)

    @property
    def rows(self) -> int:
        return int(getattr(self.source, "rows", 0))

    def to(self, device: torch.device) -> ShardedBatches:
        self.source = self.source.to(device)
        return self

    def labels(self) -> torch.Tensor:
        return self.source.labels()

    def shuffled(self, gen: torch.Generator) -> Iterator[Batch]:
        for xb, yb in self.source.shuffled(gen):
            part = len(xb) // self.world
            lo = self.rank * part
            yield xb[lo : lo + part], yb[lo : lo + part]

    def in_order(self) -> Iterator[Batch]:
        for i, batch in enumerate(self.source.in_order()):
            if i % self.world == self.rank:
                yield batch


def shard(source: Any, rank: int, world: int) -> Any:
    """`source` as process `rank` of `world` sees it (itself when there is one process)."""
    if world <= 1:
        return source
    return (
        source.shard(rank, world)
        if hasattr(source, "shard")
        else ShardedBatches(source, rank, world)
    )
