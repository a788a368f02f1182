"""The fit loop: device, optimizer and schedule by name, tensor-slice batching, early stopping with
best weights, NaN detection, and a resumable snapshot on Ctrl-C."""

from __future__ import annotations

import copy
import math
import os
import time
from dataclasses import asdict, dataclass, field
from typing import Any

import torch

from dlcli.engine.batches import BatchSource, as_batches
from dlcli.engine.callbacks import Callback
from dlcli.engine.optim import make_optimizer, make_schedule
from dlcli.errors import TrainingError, UsageError


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


def pick_device(name: str) -> torch.device:
    """auto: cuda, then mps, then cpu. An explicit device that is absent is a usage error."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        dev = torch.device(name)
    except RuntimeError:
        raise UsageError(
            f"unknown --device '{name}'", "use auto, cpu, cuda, cuda:N or mps"
        ) from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise UsageError("--device cuda: no CUDA GPU is available here", "use --device cpu")
    if dev.type == "mps" and not (
        getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()
    ):
        raise UsageError("--device mps: Apple MPS is not available here", "use --device cpu")
    return dev


SMALL_STEP = 2e7  # parameters x batch rows below which one CPU thread is faster


def _pick_threads(dev: torch.device, work: float) -> None:
    """Small steps run faster on one thread: OpenMP's hand-offs cost more than they save, and
    collapse when other processes share the cores. DL_THREADS overrides."""
    if dev.type != "cpu":
        return
    env = os.environ.get("DL_THREADS")
    if env:
        torch.set_num_threads(max(1, int(env)))
    elif work < SMALL_STEP:
        torch.set_num_threads(1)


@dataclass
class FitResult:
    history: list[dict]
    best_epoch: int
    stopped: str  # "completed" | "early_stopping"
    seconds: float
    snapshot: dict = field(default_factory=dict)


class Interrupted(Exception):
    """Ctrl-C during training; carries the resumable snapshot."""

    def __init__(self, snapshot: dict) -> None:
        super().__init__("interrupted")
        self.snapshot = snapshot


def _identity(x: torch.Tensor) -> torch.Tensor:
    return x


def _state_copy(module: torch.nn.Module) -> dict:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


class Trainer:
    """Trains `network` (encoded inputs -> logits) for `task` on in-memory tensors."""

    def __init__(
        self,
        network: torch.nn.Module,
        task: Any,
        cfg: TrainConfig,
        callbacks: list[Callback] | None = None,
        train_transform: Any = None,
        eval_transform: Any = None,
    ) -> None:
        """`train_transform` / `eval_transform` map a batch of stored inputs to network inputs
        (e.g. augmentation + normalisation of uint8 images); None: inputs are used as stored."""
        self.network = network
        self.task = task
        self.cfg = cfg
        self.callbacks = callbacks or []
        self.device = pick_device(cfg.device)
        self.train_tf = train_transform or _identity
        self.eval_tf = eval_transform or _identity
        self.frozen: list[torch.nn.Module] = []  # layers kept in eval mode (transfer learning)

    def _emit(self, event: str, *args: Any) -> None:
        for cb in self.callbacks:
            getattr(cb, event)(*args)

    @torch.no_grad()
    def evaluate(self, data: BatchSource, loss_fn: Any) -> tuple[float, float]:
        """(mean loss, task score) on held-out data; score = accuracy or RMSE in target units."""
        self.network.eval()
        total_loss, total_score, n = 0.0, 0.0, 0
        for xb, yb in data.in_order():
            out = self.network(self.eval_tf(xb))
            total_loss += float(loss_fn(out, yb)) * len(yb)
            total_score += float(self.task.batch_score(out, yb))
            n += len(yb)
        score = (
            total_score / n if self.task.name == "classification" else math.sqrt(total_score / n)
        )
        return total_loss / n, score

    def _train_epoch(self, data: BatchSource, gen: torch.Generator, loss_fn: Any) -> float:
        """One pass over the training data; returns the mean training loss."""
        net, opt, cfg = self.network, self.opt, self.cfg
        net.train()
        for m in self.frozen:
            m.eval()
        run_loss = torch.zeros((), device=self.device)
        for s, (xb, yb) in enumerate(data.shuffled(gen)):
            loss = loss_fn(net(self.train_tf(xb)), yb)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if cfg.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(self.params, cfg.grad_clip)
            opt.step()
            if self.sched is not None and self.sched_per_batch:
                self.sched.step()
            run_loss += loss.detach()
            self._emit("on_batch_end", s + 1)
        if self.sched is not None and not self.sched_per_batch:
            self.sched.step()
        return float(run_loss) / len(data)

    def fit(
        self,
        x_tr: Any,
        y_tr: torch.Tensor | None,
        x_va: Any,
        y_va: torch.Tensor | None,
        resume: dict | None = None,
    ) -> FitResult:
        """Train; keep the weights of the epoch with the lowest validation loss.

        `x_*` are input tensors (batched by slicing) or ready batch sources (see batches.py),
        e.g. a streaming decoder for data larger than memory; then `y_*` is ignored."""
        cfg, dev = self.cfg, self.device
        net = self.network.to(dev)
        for tf in (self.train_tf, self.eval_tf):
            if isinstance(tf, torch.nn.Module):
                tf.to(dev)
        train = as_batches(x_tr, y_tr, int(cfg.batch_size or 32)).to(dev)
        val = as_batches(x_va, y_va, 1).to(dev) if x_va is not None and len(x_va) else None
        weights = (
            self.task.balanced_weights(train.labels()).to(dev)
            if cfg.class_weights == "balanced"
            else None
        )
        loss_fn = self.task.make_loss(weights, cfg.label_smoothing)
        eval_loss = self.task.make_loss(weights, 0.0)
        self.params = [p for p in net.parameters() if p.requires_grad]
        _pick_threads(dev, sum(p.numel() for p in self.params) * train.batch_size)
        self.opt = make_optimizer(
            cfg.optimizer, self.params, cfg.lr, cfg.weight_decay, cfg.momentum
        )
        self.sched, self.sched_per_batch = make_schedule(
            cfg.schedule, self.opt, cfg.lr, int(cfg.epochs), len(train)
        )
        gen = torch.Generator().manual_seed(cfg.seed)
        st = _FitState()
        if resume:
            st = self._restore(resume, gen)
        t_start = time.perf_counter()
        self._emit("on_train_start", int(cfg.epochs), len(train), len(st.history) + 1)
        snapshot = lambda: self._snapshot(st, gen)  # noqa: E731
        try:
            for epoch in range(len(st.history) + 1, int(cfg.epochs) + 1):
                t0 = time.perf_counter()
                train_loss = self._train_epoch(train, gen, loss_fn)
                if not math.isfinite(train_loss):
                    raise TrainingError(
                        f"training diverged at epoch {epoch}: the loss is {train_loss}",
                        f"lower the learning rate (now --lr {cfg.lr}) or set --grad-clip 1.0",
                    )
                row = {"epoch": epoch, "train_loss": train_loss}
                if val is not None:
                    vloss, vscore = self.evaluate(val, eval_loss)
                    row["val_loss"] = vloss
                    row["val_" + ("accuracy" if self.task.name == "classification" else "rmse")] = (
                        vscore
                    )
                    st.observe(epoch, vloss, net)
                else:
                    st.best_epoch = epoch
                row["lr"] = self.opt.param_groups[0]["lr"]
                row["seconds"] = time.perf_counter() - t0
                row["samples_per_s"] = len(train) * train.batch_size / max(row["seconds"], 1e-9)
                st.history.append(row)
                self._emit("on_epoch_end", row, snapshot)
                if val is not None and cfg.patience and st.bad >= cfg.patience:
                    st.stopped = "early_stopping"
                    break
        except KeyboardInterrupt:
            raise Interrupted(snapshot()) from None
        if st.best_state is not None:
            net.load_state_dict(st.best_state)
        self._emit("on_train_end", st.history)
        return FitResult(
            st.history, st.best_epoch or len(st.history), st.stopped, time.perf_counter() - t_start
        )

    def _snapshot(self, st: _FitState, gen: torch.Generator) -> dict:
        return {
            "network": _state_copy(self.network),
            "optimizer": self.opt.state_dict(),
            "scheduler": self.sched.state_dict() if self.sched else None,
            "generator": gen.get_state(),
            "torch_rng": torch.get_rng_state(),
            "history": st.history,
            "best_val": st.best_val,
            "best_epoch": st.best_epoch,
            "bad_epochs": st.bad,
            "best_state": st.best_state,
        }

    def _restore(self, snap: dict, gen: torch.Generator) -> _FitState:
        self.network.load_state_dict(snap["network"])
        self.opt.load_state_dict(snap["optimizer"])
        if self.sched is not None and snap.get("scheduler"):
            self.sched.load_state_dict(snap["scheduler"])
        gen.set_state(snap["generator"])
        torch.set_rng_state(snap["torch_rng"])
        return _FitState(
            snap["history"],
            snap["best_val"],
            snap["best_epoch"],
            snap["bad_epochs"],
            snap.get("best_state"),
        )


@dataclass
class _FitState:
    """Early-stopping bookkeeping (part of the resumable snapshot)."""

    history: list[dict] = field(default_factory=list)
    best_val: float = math.inf
    best_epoch: int = 0
    bad: int = 0
    best_state: dict | None = None
    stopped: str = "completed"

    def observe(self, epoch: int, val_loss: float, net: torch.nn.Module) -> None:
        if val_loss < self.best_val - 1e-6:
            self.best_val, self.best_epoch, self.bad, self.best_state = (
                val_loss,
                epoch,
                0,
                _state_copy(net),
            )
        else:
            self.bad += 1
