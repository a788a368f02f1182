"""The one epoch loop of every model family: a `FitStep` does one family's work per epoch (a
network against its task's loss in task_step.py; a GAN's alternating discriminator and generator
steps), the Trainer around it owns the history, early stopping with the best epoch's weights,
the callbacks, `StopTraining`, and Ctrl-C, which leaves a resumable snapshot (`Interrupted`)."""

from __future__ import annotations

import copy
import functools
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

from dlcli.accel import MixedPrecision, pick_device
from dlcli.engine import distributed
from dlcli.engine.callbacks import Callback, StopTraining


@dataclass
class TrainConfig:
    """Training settings after merging flags > spec `training:` > defaults."""

    epochs: int | None = None  # None: chosen from the data size
    batch_size: int | None = None  # None: chosen from the data size
    lr: float = 1e-3
    optimizer: str = "adamw"
    weight_decay: float = 1e-4
    momentum: float = 0.9
    schedule: str = "onecycle"
    loss: str | None = None
    patience: int = 15
    grad_clip: float = 0.0
    class_weights: str = "none"
    label_smoothing: float = 0.0
    seed: int = 42
    device: str = "auto"
    augment: str = ""  # comma-separated augmentations for image data (see data/augment.py)
    threshold_percentile: float | None = None  # autoencoders: the anomaly threshold's percentile
    precision: str = "fp32"  # fp32 | bf16 | fp16 (autocast; fp16 with a gradient scaler)
    compile: bool = False  # torch.compile the network (eager, with a note, if that fails)
    fine_tune_epochs: int | None = (
        None  # pretrained start: head-only epochs first (None: auto, 0: off)
    )
    refit: bool = False  # then train afresh on all rows for the best epoch count (engine/refit.py)

    def resolved(self, n_train: int) -> TrainConfig:
        """Fill the data-dependent defaults: ~4,000 optimisation steps for small tables, at least
        10 and at most 200 epochs."""
        cfg = copy.copy(self)
        if cfg.batch_size is None:
            cfg.batch_size = int(min(256, max(32, 2 ** round(math.log2(max(1, n_train / 60))))))
        if cfg.epochs is None:
            steps = max(1, math.ceil(n_train / cfg.batch_size))
            cfg.epochs = int(min(200, max(10, round(4000 / steps))))
        return cfg

    def to_dict(self) -> dict:
        return asdict(self)


def check_settings(cfg: TrainConfig) -> None:
    """The device and precision settings, checked before any data is read."""
    MixedPrecision(cfg.precision, distributed.local_device(pick_device(cfg.device)))


@dataclass
class FitResult:
    history: list[dict]
    best_epoch: int
    stopped: str  # "completed" | "early_stopping" | a StopTraining reason
    seconds: float
    snapshot: dict = field(default_factory=dict)


class Interrupted(Exception):
    """Ctrl-C during training; carries the resumable snapshot."""

    def __init__(self, snapshot: dict) -> None:
        super().__init__("interrupted")
        self.snapshot = snapshot


class FitStep(Protocol):
    """One family's work per epoch, driven by the Trainer.

    `start` sets up (optimizers, devices) and restores a snapshot's state; `train_epoch` trains
    one epoch and returns its history values (`epoch` is added first); `validate` returns the
    held-out values ({"val_loss": ..., ...}: they drive early stopping) or None when there is no
    validation; `end_epoch` adds the epoch's remaining values (timing, learning rate) to the row;
    `state_dict` is the resumable state as it was at the end of the last complete epoch (so
    Ctrl-C mid-epoch resumes exactly); `weights`/`load_weights` copy and restore the weights kept
    for the best epoch; `close` runs once training has ended, however it ended."""

    steps: int  # optimisation steps per epoch (the progress display)

    def start(self, resume: dict | None, on_batch_end: Callable[[int], None]) -> None: ...

    def train_epoch(self, epoch: int) -> dict: ...

    def validate(self) -> dict | None: ...

    def end_epoch(self, row: dict) -> None: ...

    def state_dict(self) -> dict: ...

    def weights(self) -> dict: ...

    def load_weights(self, state: dict) -> None: ...

    def close(self) -> None: ...


class Trainer:
    """Runs `step` for epochs len(history)+1 .. `epochs`, keeping the weights of the epoch with the
    lowest validation loss; `patience` epochs without improvement stop it (0: never)."""

    def __init__(
        self,
        step: FitStep,
        epochs: int,
        patience: int = 0,
        callbacks: list[Callback] | None = None,
    ) -> None:
        self.step, self.epochs, self.patience = step, int(epochs), int(patience or 0)
        self.callbacks = callbacks or []

    def _emit(self, event: str, *args: Any) -> None:
        for cb in self.callbacks:
            getattr(cb, event)(*args)

    def fit(self, resume: dict | None = None) -> FitResult:
        """Train (from `resume`, a snapshot, if given); Ctrl-C raises Interrupted."""
        try:
            self.step.start(resume, functools.partial(self._emit, "on_batch_end"))
            return self._loop(_FitState.restored(resume) if resume else _FitState())
        finally:
            self.step.close()

    def _loop(self, st: _FitState) -> FitResult:
        step = self.step
        t_start = time.perf_counter()
        self._emit("on_train_start", self.epochs, step.steps, len(st.history) + 1)
        snapshot = lambda: {**step.state_dict(), **st.snapshot()}  # noqa: E731
        try:
            for epoch in range(len(st.history) + 1, self.epochs + 1):
                row = {"epoch": epoch, **step.train_epoch(epoch)}
                val = step.validate()
                if val is not None:
                    row.update(val)
                    st.observe(epoch, val["val_loss"], step)
                else:
                    st.best_epoch = epoch
                step.end_epoch(row)
                st.history.append(row)
                try:
                    self._emit("on_epoch_end", row, snapshot)
                except StopTraining as stop:
                    st.stopped = stop.reason
                    break
                if val is not None and self.patience and st.bad >= self.patience:
                    st.stopped = "early_stopping"
                    break
        except KeyboardInterrupt:
            raise Interrupted(snapshot()) from None
        if st.best_state is not None:
            step.load_weights(st.best_state)
        self._emit("on_train_end", st.history)
        return FitResult(
            st.history, st.best_epoch or len(st.history), st.stopped, time.perf_counter() - t_start
        )


@dataclass
class _FitState:
    """The loop's bookkeeping: history and early stopping (part of the resumable snapshot)."""

    history: list[dict] = field(default_factory=list)
    best_val: float = math.inf
    best_epoch: int = 0
    bad: int = 0
    best_state: dict | None = None
    stopped: str = "completed"

    @classmethod
    def restored(cls, snap: dict) -> _FitState:
        return cls(
            snap["history"],
            snap.get("best_val", math.inf),
            snap.get("best_epoch", 0),
            snap.get("bad_epochs", 0),
            snap.get("best_state"),
        )

    def snapshot(self) -> dict:
        return {
            "history": self.history,
            "best_val": self.best_val,
            "best_epoch": self.best_epoch,
            "bad_epochs": self.bad,
            "best_state": self.best_state,
        }

    def observe(self, epoch: int, val_loss: float, step: FitStep) -> None:
        if val_loss < self.best_val - 1e-6:
            self.best_val, self.best_epoch, self.bad = val_loss, epoch, 0
            self.best_state = step.weights()
        else:
            self.bad += 1
