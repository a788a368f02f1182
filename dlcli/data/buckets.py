"""Length-bucketed batches of token ids: a batch source (engine/batches.py) that keeps padding
waste low by batching texts of similar length and trimming each batch to its longest row."""

from __future__ import annotations

import math
from collections.abc import Iterator

import torch


class BucketedTokens:
    """Padded ids (N, T_max), lengths (N,) and targets as a batch source (engine/batches.py).

    Each epoch shuffles the rows, sorts each run of 50 batches by length, cuts batches, shuffles
    the batch order and trims every batch to its longest row: rows of similar length share a
    batch, so little compute goes to padding. Every row is used once per epoch."""

    POOL = 50  # batches sorted together

    def __init__(self, ids: torch.Tensor, lengths: torch.Tensor, y: torch.Tensor) -> None:
        self.ids, self.y = ids, y  # (N, T_max) int64, (N,)
        self.lengths = lengths.cpu()  # (N,) stays on the CPU: only used to plan batches
        self.batch_size: int | None = None  # set by the trainer (as_batches)

    @property
    def rows(self) -> int:
        return len(self.lengths)

    def _bs(self) -> int:
        return max(1, int(self.batch_size or 32))

    def __len__(self) -> int:  # optimisation steps per epoch (as many as _plan cuts)
        n, bs = self.rows, self._bs()
        return max(1, math.ceil(n / bs) - (n > bs and n % bs == 1))

    def to(self, device: torch.device) -> BucketedTokens:
        self.ids, self.y = self.ids.to(device), self.y.to(device)
        return self

    def labels(self) -> torch.Tensor:
        return self.y

    @classmethod
    def joined(cls, first: BucketedTokens, second: BucketedTokens) -> BucketedTokens:
        """The rows of both, on the CPU (padded to the wider of the two), e.g. to refit on the
        training and validation rows together (engine/refit.py)."""
        width = max(first.ids.shape[1], second.ids.shape[1])
        pad = lambda t: torch.nn.functional.pad(t.cpu(), (0, width - t.shape[1]))  # noqa: E731
        return cls(
            torch.cat([pad(first.ids), pad(second.ids)]),
            torch.cat([first.lengths, second.lengths]),
            torch.cat([first.y.cpu(), second.y.cpu()]),
        )

    def _plan(self, perm: torch.Tensor) -> list[torch.Tensor]:
        """Row indices per batch: runs of POOL batches of `perm`, each sorted by length, cut into
        batches; a last batch of one row joins the one before (BatchNorm needs two rows)."""
        bs = self._bs()
        batches = []
        for start in range(0, len(perm), self.POOL * bs):
            chunk = perm[start : start + self.POOL * bs]
            chunk = chunk[torch.argsort(self.lengths[chunk], stable=True)]
            batches.extend(chunk[i : i + bs] for i in range(0, len(chunk), bs))
        if len(batches) > 1 and len(batches[-1]) == 1:
            batches[-2:] = [torch.cat(batches[-2:])]
        return batches

    def _batch(self, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        width = max(1, int(self.lengths[idx].max()))
        dev_idx = idx.to(self.ids.device)
        return self.ids[dev_idx, :width], self.y[dev_idx]  # (B, T_batch), (B,)

    def shuffled(self, gen: torch.Generator) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        batches = self._plan(torch.randperm(self.rows, generator=gen))
        for b in torch.randperm(len(batches), generator=gen).tolist():
            yield self._batch(batches[b])

    def in_order(self, batch: int | None = None) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Every row once, in index order, each batch trimmed; about 64k token slots per batch."""
        width = max(1, int(self.lengths.max())) if self.rows else 1
        batch = batch or max(1, min(1024, 65536 // width))
        for i in range(0, self.rows, batch):
            yield self._batch(torch.arange(i, min(i + batch, self.rows)))

    def padding_waste(self, gen: torch.Generator | None = None) -> float:
        """Share of padding among the token slots of one shuffled epoch."""
        gen = gen or torch.Generator().manual_seed(0)
        batches = self._plan(torch.randperm(self.rows, generator=gen))
        slots = sum(len(b) * int(self.lengths[b].max()) for b in batches)
        return 1.0 - float(self.lengths.sum()) / max(1, slots)


# -- the training source ---------------------------------------------------------------------
