"""`--stream`: CSV tables larger than memory. `StreamedTableSource` (a source of the tabular kind;
chosen with --stream, or on its own for a file larger than a share of the free memory) fits the usual
TabularPreprocessor in one statistics pass (stream_scan.py); `StreamedRows` is a batch source
(engine/batches.py) that re-reads the file every epoch, encodes chunks with that preprocessor and
shuffles within a large buffer. The model file is that of in-memory training. See docs/stream.md.
"""

from __future__ import annotations

import contextlib
import os
import queue
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from dlcli import settings
from dlcli.console import note
from dlcli.data.contracts import DataOptions, Prepared
from dlcli.data.readers import check_file, excerpt, header_of, iter_batches, names_list
from dlcli.data.split import check_split_sizes, check_val_split, held_out
from dlcli.data.stream_scan import BLOCK_BYTES, scan
from dlcli.errors import InputError

BUFFER_BYTES = 32 << 20  # shuffle buffer: raw float32 inputs held and mixed (DL_SHUFFLE_ROWS)
MIN_BUFFER_ROWS = 100_000
VAL_CACHE_BYTES = 128 << 20  # validation rows kept in memory after the first pass, if they fit
IN_ORDER_BATCH = 8192
PREFETCH = 4  # encoded chunks read ahead by the prefetch thread (2 MB of CSV each)
MEMORY_SHARE = 0.2  # stream on its own when the file exceeds this share of the available memory


def available_memory() -> int:
    """Bytes of memory available to new processes (MemAvailable), else the physical memory."""
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return 8 << 30


def stream_threshold() -> int:
    """File size in bytes above which a CSV table is streamed (DL_STREAM_BYTES overrides)."""
    limit = settings.get().stream_bytes
    return limit if limit is not None else int(available_memory() * MEMORY_SHARE)


def prefetched(items: Iterator[Any], depth: int = PREFETCH) -> Iterator[Any]:
    """`items`, produced `depth` ahead by a background thread, so parsing and encoding the next
    chunks (pyarrow and numpy release the GIL) overlaps the training steps on the current one.
    Errors are raised in the consumer; stopping early stops the producer."""
    box: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()
    done = object()

    def produce() -> None:
        try:
            for item in items:
                while not stop.is_set():
                    try:
                        box.put((item, None), timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            box.put((done, None))
        except BaseException as exc:  # handed to the consumer, raised there
            box.put((done, exc))

    thread = threading.Thread(target=produce, name="dl-stream-prefetch", daemon=True)
    thread.start()
    try:
        while True:
            item, exc = box.get()
            if exc is not None:
                raise exc
            if item is done:
                return
            yield item
    finally:
        stop.set()
        while thread.is_alive():  # unblock a producer waiting on a full queue, then let it end
            with contextlib.suppress(queue.Empty):
                box.get_nowait()
            thread.join(timeout=0.1)
        close = getattr(items, "close", None)
        if close is not None:
            close()  # the producer has stopped: the file is closed now, not when collected


class StreamedRows:
    """Rows of a CSV as a batch source: `part` "train" or "val" picks the rows held out by
    `split` (fraction, seed), or every labelled row when `split` is None."""

    def __init__(
        self,
        path: str,
        preprocessor: Any,
        rows: int,
        part: str = "train",
        split: tuple[float, int] | None = None,
        label_counts: list[int] | None = None,
        cache_bytes: int = 0,
    ) -> None:
        self.path, self.preprocessor, self.part, self.split = path, preprocessor, part, split
        self.n_rows, self.label_counts = int(rows), label_counts or []
        self.cache_bytes, self._cache = cache_bytes, None
        self.batch_size: int | None = None  # set by the trainer (as_batches)
        self.device = torch.device("cpu")
        width = max(1, len(preprocessor.feature_names))
        rows = settings.get().shuffle_rows
        self.buffer_rows = rows or max(MIN_BUFFER_ROWS, BUFFER_BYTES // (4 * width))

    def __len__(self) -> int:  # optimisation steps per epoch, as TensorBatches counts them
        n, bs = self.n_rows, max(1, int(self.batch_size or 1))
        return max(1, n // bs) if n >= bs else 1

    @property
    def rows(self) -> int:
        return self.n_rows

    def to(self, device: torch.device) -> StreamedRows:
        self.device = torch.device(device)  # batches are moved there as they are handed out
        return self

    def labels(self) -> torch.Tensor:
        """Labels with the training counts per class (for class weights), not in file order."""
        counts = torch.tensor(self.label_counts, dtype=torch.long)
        return torch.repeat_interleave(torch.arange(len(counts)), counts)

    def _chunks(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """(raw inputs (n, F) float32, targets (n,)) for this part's rows, chunk by chunk."""
        import pyarrow as pa

        enc, tname, offset = self.preprocessor, self.preprocessor.target.name, 0
        plan = enc.read_plan(self.path, False, tname)  # the model's columns, typed as predict does
        for batch in iter_batches(self.path, block_bytes=BLOCK_BYTES, plan=plan):
            n = batch.num_rows
            keep = batch.column(tname).is_valid().to_numpy(zero_copy_only=False)
            if self.split is not None:
                held = held_out(offset, n, *self.split)
                keep &= held if self.part == "val" else ~held
            offset += n
            if not keep.any():
                continue
            part = batch.filter(pa.array(keep))
            x = enc.raw_from_arrow(part, self.path)
            y = enc.target.encode(part.column(tname).to_pandas().rename(tname), self.path)
            yield torch.from_numpy(x), torch.from_numpy(y)

    def shuffled(self, gen: torch.Generator) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Batches drawn from a buffer of `buffer_rows` rows: when it is full, a seeded half of it
        goes out as batches and the rest stays to be mixed with the next chunks. The ragged last
        batch is dropped; exactly len(self) batches when the file is unchanged."""
        bs, steps, done = max(1, int(self.batch_size or 1)), len(self), 0
        cap = max(self.buffer_rows, 2 * bs)
        xbuf = ybuf = None
        held = 0
        for x, y in prefetched(self._chunks()):
            if xbuf is None:  # filled in place: memory is the buffer plus the half going out
                xbuf, ybuf = x.new_empty((cap, *x.shape[1:])), y.new_empty(cap)
            pos = 0
            while pos < len(x):
                take = min(cap - held, len(x) - pos)
                xbuf[held : held + take], ybuf[held : held + take] = (
                    x[pos : pos + take],
                    y[pos : pos + take],
                )
                held, pos = held + take, pos + take
                if held < cap:
                    continue
                perm = torch.randperm(cap, generator=gen)
                out = (cap // 2 // bs) * bs
                yield from self._slices(xbuf, ybuf, perm[:out], bs, steps - done)
                done += out // bs
                rest = perm[out:]
                xbuf[: len(rest)], ybuf[: len(rest)] = xbuf[rest], ybuf[rest]
                held = len(rest)
        if held and done < steps:
            perm = torch.randperm(held, generator=gen)
            last = (held // bs) * bs if held >= bs else held
            yield from self._slices(xbuf[:held], ybuf[:held], perm[:last], bs, steps - done)

    def _slices(
        self, x: torch.Tensor, y: torch.Tensor, idx: torch.Tensor, bs: int, budget: int
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        x, y = x[idx], y[idx]  # one gather, then contiguous slices
        cuda = self.device.type == "cuda"
        if cuda:  # page-locked, so each batch's copy to the GPU really runs asynchronously
            x, y = x.pin_memory(), y.pin_memory()
        for s in range(0, min(len(idx), budget * bs), bs):
            yield (
                x[s : s + bs].to(self.device, non_blocking=cuda),
                y[s : s + bs].to(self.device, non_blocking=cuda),
            )

    def in_order(self, batch: int | None = None) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Every row of this part once, in file order; kept in memory after the first full pass
        when it fits in `cache_bytes` (decided on the first chunk from the part's row count)."""
        step = batch or IN_ORDER_BATCH
        chunks = self._cache if self._cache is not None else prefetched(self._chunks())
        seen: list | None = [] if self._cache is None else None
        size = 0
        for x, y in chunks:
            if seen is not None:
                size += x.numel() * 4
                seen.append((x, y))
                if max(size, self.n_rows * x[0].numel() * 4) > self.cache_bytes:
                    seen = None  # these rows will not fit: keep none of them this pass
            for s in range(0, len(x), step):
                yield x[s : s + step].to(self.device), y[s : s + step].to(self.device)
        if seen:
            self._cache = seen


class StreamedTableSource:
    """A CSV table read in chunks every epoch instead of loaded whole (--stream, or files larger
    than a share of the available memory)."""

    name = "tabular_stream"
    kind = "tabular"
    priority = 5  # above in-memory tables; text and series CSVs keep their own sources
    default_arch = "mlp"
    streams = True  # reads the data from disk each epoch (see choose_source's --stream note)

    @staticmethod
    def claims(path: str, opts: DataOptions) -> bool:
        if not Path(path).is_file() or opts.unsupervised:
            return False
        chosen = opts.stream
        return chosen if chosen is not None else Path(path).stat().st_size > stream_threshold()

    @staticmethod
    def prepare(path: str, opts: DataOptions, preprocessor: Any = None) -> Prepared:
        """One statistics pass fits the preprocessor (unless given); the data stays on disk."""
        check_file(path)
        size = Path(path).stat().st_size
        if opts.stream is None:
            note(
                f"{path}: {size / 2**30:.1f} GB is more than {MEMORY_SHARE:.0%} of the available "
                "memory: streaming it from disk (--no-stream loads it whole)"
            )
        header = header_of(path)
        tname = opts.target or (
            preprocessor.target.name if preprocessor is not None else header[-1]
        )
        if tname not in header:
            raise InputError(
                f"{path}: no column '{excerpt(tname)}' (columns: {names_list(header)})",
                "pass --target COLUMN",
            )
        if len(header) < 2:
            raise InputError(
                f"{path}: needs at least one feature column besides the target '{tname}'"
            )
        split = None
        if not opts.val:
            check_val_split(opts.val_split)
            split = (opts.val_split, opts.seed)
        found = scan(path, tname, opts.task, split, preprocessor)
        preprocessor = found.preprocessor
        if found.unlabelled:
            note(f"{path}: dropped {found.unlabelled} rows with no value in target '{tname}'")
        train = StreamedRows(
            path, preprocessor, found.train_rows, "train", split, found.label_counts
        )
        cache = VAL_CACHE_BYTES
        if opts.val:
            val_path = opts.val
            check_file(val_path)
            if tname not in header_of(val_path):
                raise InputError(f"{val_path}: no column '{tname}' (the target)")
            val_rows = scan(val_path, tname, opts.task, None, preprocessor).train_rows
            val = StreamedRows(val_path, preprocessor, val_rows, "val", None, cache_bytes=cache)
        else:
            val_rows = found.val_rows
            val = StreamedRows(path, preprocessor, val_rows, "val", split, cache_bytes=cache)
        check_split_sizes(path, found.train_rows + val_rows, found.train_rows, val_rows)
        info = {"rows": found.train_rows + val_rows, "streamed": True}
        return Prepared(preprocessor, train, None, val, None, info)
