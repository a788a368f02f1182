"""The public callback API of training (every family): the hooks the trainer and the train job call,
`StopTraining` to end a run early from a hook (e.g. a tuner pruning a trial), the progress display
(rich bar on a terminal, one plain line per epoch otherwise) and periodic resumable checkpoints.

Hooks, in order: `on_train_start` once; `on_batch_end` after each optimisation step;
`on_epoch_end(row, snapshot)` after each epoch (`row` is the epoch's history row; `snapshot()`
returns the resumable state, e.g. to checkpoint it); `on_train_end(history)` once training ended;
`on_run_end(summary)` once the model file and run folder are written (`summary`: the `--json`
summary, for experiment logging). Raising KeyboardInterrupt in a hook acts like Ctrl-C."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

from dlcli.console import console, is_interactive, quiet


class StopTraining(Exception):
    """Raise from `on_epoch_end` to end training after that epoch, cleanly: the best weights so
    far are kept, the model file is written, and the fit result's `stopped` (the summary's, for
    families that report it) is `reason`, e.g. "pruned" when a tuner gives up on a trial."""

    def __init__(self, reason: str = "stopped") -> None:
        super().__init__(reason)
        self.reason = reason


class Callback:
    """Hooks the trainer and the train job call; override what you need. `files` lists files
    the callback wrote into the run folder (they appear in the summary's `files`)."""

    files: Sequence[str] = ()

    def on_train_start(self, epochs: int, steps: int, start_epoch: int) -> None: ...

    def on_batch_end(self, step: int) -> None: ...

    def on_epoch_end(self, row: dict, snapshot: Callable[[], dict]) -> None: ...

    def on_train_end(self, history: list[dict]) -> None: ...

    def on_run_end(self, summary: dict) -> None: ...


def _fmt_row(row: dict) -> str:
    parts = [f"loss {row['train_loss']:.4f}"]
    for k, v in row.items():
        if k.startswith("val_"):
            parts.append(f"{k} {v:.4f}")
    parts.append(f"{row['samples_per_s']:,.0f} samples/s")
    if "gpu_mem_mb" in row:  # peak GPU memory of the epoch (CUDA only)
        parts.append(f"{row['gpu_mem_mb']:,.0f} MB GPU")
    return "  ".join(parts)


def eta_text(seconds: float) -> str:
    """h:mm:ss"""
    m, s = divmod(int(seconds), 60)
    h, m = divmod(m, 60)
    return f"{h}:{m:02d}:{s:02d}"


class ProgressCallback(Callback):
    """Epoch progress on stderr: a live rich bar on a terminal, else a plain line per epoch.
    `fmt` turns an epoch's row into its stats text (default: loss, val_* metrics, samples/s)."""

    def __init__(self, fmt: Callable[[dict], str] | None = None) -> None:
        self.fmt = fmt or _fmt_row
        self.live = is_interactive() and not quiet()
        self.progress: Any = None

    def on_train_start(self, epochs: int, steps: int, start_epoch: int) -> None:
        self.epochs, self.steps, self.t0, self.done0 = (
            epochs,
            steps,
            time.perf_counter(),
            start_epoch - 1,
        )
        if self.live:
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TextColumn,
                TimeRemainingColumn,
            )

            self.progress = Progress(
                TextColumn("epoch"),
                MofNCompleteColumn(),
                BarColumn(),
                TimeRemainingColumn(),
                TextColumn("{task.fields[stats]}"),
                console=console(),
                transient=False,
            )
            self.progress.start()
            self.task = self.progress.add_task(
                "train", total=epochs, completed=start_epoch - 1, stats=""
            )

    def on_epoch_end(self, row: dict, snapshot: Callable[[], dict]) -> None:
        if quiet():
            return
        done = row["epoch"] - self.done0
        eta = (time.perf_counter() - self.t0) / max(done, 1) * (self.epochs - row["epoch"])
        if self.progress is not None:
            self.progress.update(self.task, completed=row["epoch"], stats=self.fmt(row))
        else:
            console().print(
                f"epoch {row['epoch']}/{self.epochs}  {self.fmt(row)}  eta {eta_text(eta)}",
                soft_wrap=True,
            )

    def on_train_end(self, history: list[dict]) -> None:
        self.close()

    def close(self) -> None:
        if self.progress is not None:
            self.progress.stop()
            self.progress = None


class CheckpointCallback(Callback):
    """Saves a resumable snapshot at most every `every_s` seconds (and the caller saves on Ctrl-C)."""

    def __init__(self, save: Callable[[dict], None], every_s: float = 60.0) -> None:
        self.save, self.every_s, self.last = save, every_s, time.perf_counter()

    def on_epoch_end(self, row: dict, snapshot: Callable[[], dict]) -> None:
        if time.perf_counter() - self.last >= self.every_s:
            self.save(snapshot())
            self.last = time.perf_counter()
