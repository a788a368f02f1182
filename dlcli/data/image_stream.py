"""Image folders larger than memory: `StreamingImages`, a batch source (engine/batches.py) that
decodes each batch in DataLoader worker processes every epoch, through the very `decode_image` of
image_cache.py, so its pixels are those of the in-memory path. The image source switches to it
(image_folders.prepare_streaming) when the decoded uint8 tensor would exceed DL_MAX_IMAGE_MEMORY.

This module imports no pandas and no other data module than image_cache: spawned workers import it.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from dlcli import settings
from dlcli.console import note
from dlcli.data import image_cache as ic

STATS_SAMPLE = 2000  # training images decoded up front: channel mean/std and the bad-file check
SAMPLE_BYTES = 256 * 1024**2  # ... and at most this many bytes of them (large --image-size)
IN_ORDER_BATCH = 128  # images per batch when every file is read once, in order
MAX_WORKERS = 4
PREFETCH = 2  # batches each worker decodes ahead: memory holds ~workers x PREFETCH batches


def memory_limit() -> int:
    """Bytes of decoded uint8 pixels allowed in memory (DL_MAX_IMAGE_MEMORY, default 4 GB)."""
    return settings.get().max_image_memory


def stream_workers() -> int:
    """Decoding processes: one core stays with the training loop; none on a single core."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:
        cores = os.cpu_count() or 1
    return max(0, min(MAX_WORKERS, cores - 1))


class DecodeBatches(Dataset):
    """Map-style dataset whose items are whole batches: indices -> (pixels (n, C, S, S) uint8,
    labels (n,) int64, {index: why} for unreadable files, whose rows stay black). Plain
    attributes only, so it pickles into spawned workers."""

    def __init__(self, files: list[str], labels: torch.Tensor, size: int, channels: int) -> None:
        self.files, self.labels, self.size, self.channels = files, labels, size, channels

    def __getitem__(self, idx: list[int]) -> tuple[torch.Tensor, torch.Tensor, dict[int, str]]:
        out = np.zeros((len(idx), self.channels, self.size, self.size), dtype=np.uint8)
        bad = {}
        with ic.pixel_limit():
            for k, i in enumerate(idx):
                try:
                    out[k] = ic.decode_image(self.files[i], self.size, self.channels)
                except ic.BadImage as exc:  # changed or removed since it was listed
                    bad[i] = str(exc)
        return torch.from_numpy(out), self.labels[idx], bad


class StreamingImages:
    """Image files + labels as a batch source: each pass decodes its batches in worker processes,
    so memory holds only the batches in flight, never the whole set."""

    def __init__(
        self,
        files: Sequence[str],
        labels: torch.Tensor,
        channels: int,
        size: int,
        resize: str = ic.RESIZE_POLICY,
        workers: int | None = None,
    ) -> None:
        self.files = [os.path.abspath(f) for f in files]
        self.y = torch.as_tensor(labels, dtype=torch.int64)
        self.channels, self.size, self.resize = int(channels), int(size), resize
        self.workers = stream_workers() if workers is None else int(workers)
        self.batch_size: int | None = None  # set by the trainer (as_batches)
        self.device = torch.device("cpu")
        self.bad_seen = 0  # unreadable files met while streaming, over all passes

    def __len__(self) -> int:  # optimisation steps per epoch, as TensorBatches counts them
        n, bs = len(self.files), max(1, int(self.batch_size or IN_ORDER_BATCH))
        return 0 if n == 0 else max(1, n // bs) if n >= bs else 1

    @property
    def rows(self) -> int:
        return len(self.files)

    def to(self, device: torch.device) -> StreamingImages:
        self.device = torch.device(device)  # batches are moved there as they arrive
        return self

    def labels(self) -> torch.Tensor:
        return self.y

    def shuffled(self, gen: torch.Generator) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """A seeded permutation (the same draw as TensorBatches), ragged last batch dropped."""
        perm = torch.randperm(len(self.files), generator=gen)
        bs = max(1, int(self.batch_size or IN_ORDER_BATCH))
        yield from self._stream([perm[s * bs : (s + 1) * bs].tolist() for s in range(len(self))])

    def in_order(self, batch: int | None = None) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Every file once, in order."""
        n, step = len(self.files), batch or IN_ORDER_BATCH
        yield from self._stream([list(range(i, min(i + step, n))) for i in range(0, n, step)])

    def _stream(self, batches: list[list[int]]) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """(pixels (n, C, S, S) uint8, labels (n,)) on the device, per batch of indices."""
        if not batches:
            return
        workers = min(self.workers, len(batches))
        cuda = self.device.type == "cuda"
        loader = DataLoader(
            DecodeBatches(self.files, self.y, self.size, self.channels),
            batch_size=None,  # each item is already a batch
            sampler=batches,
            num_workers=workers,
            prefetch_factor=PREFETCH if workers else None,
            persistent_workers=False,
            pin_memory=cuda,
            generator=torch.Generator(),  # worker seeds come from here, not the global RNG
        )
        bad: dict[int, str] = {}
        for xb, yb, failed in loader:
            bad.update(failed)
            yield xb.to(self.device, non_blocking=cuda), yb.to(self.device, non_blocking=cuda)
        if bad:
            self._report(bad)

    def _report(self, bad: dict[int, str]) -> None:
        """One note per pass that met unreadable files."""
        self.bad_seen += len(bad)
        shown = "; ".join(f"{self.files[i]} ({why})" for i, why in sorted(bad.items())[:3])
        more = f"; and {len(bad) - 3} more" if len(bad) > 3 else ""
        s = "s" if len(bad) != 1 else ""
        note(
            f"{len(bad)} image{s} could not be read while streaming; black used instead: {shown}{more}"
        )


# -- when the pixels do not fit in memory ---------------------------------------------------
def over_limit(n: int, channels: int, size: int) -> bool:
    return n * channels * size * size > memory_limit()


def note_streaming(n: int, channels: int, size: int, workers: int) -> None:
    """One note: the images would not fit in memory, so they are decoded every epoch."""
    need = n * channels * size**2
    how = (
        f"in {workers} worker process{'es' if workers != 1 else ''}"
        if workers
        else "in this process"
    )
    note(
        f"{n:,} images at {size}x{size} would take {need / 1e9:.3g} GB in memory, "
        f"over the {memory_limit() / 1e9:.3g} GB limit: decoding {how} each epoch instead "
        "(set DL_MAX_IMAGE_MEMORY to raise the limit)"
    )
