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
    ) -> None:
        self.network = network
        self.task = task
        self.cfg = cfg
        self.callbacks = callbacks or []
        self.device = pick_device(cfg.device)

    def _emit(self, event: str, *args: Any) -> None:
        for cb in self.callbacks:
            getattr(cb, event)(*args)

    @torch.no_grad()
    def evaluate(
        self, x: torch.Tensor, y: torch.Tensor, loss_fn: Any, batch: int = 8192
    ) -> tuple[float, float]:
        """(mean loss, task score) on held-out tensors; score = accuracy or RMSE in target units."""
        self.network.eval()
        total_loss, total_score, n = 0.0, 0.0, len(x)
        for i in range(0, n, batch):
            out = self.network(x[i : i + batch])
            yb = y[i : i + batch]
            total_loss += float(loss_fn(out, yb)) * len(yb)
            total_score += float(self.task.batch_score(out, yb))
        score = (
            total_score / n if self.task.name == "classification" else math.sqrt(total_score / n)
        )
        return total_loss / n, score

    def fit(
        self,
        x_tr: torch.Tensor,
        y_tr: torch.Tensor,
        x_va: torch.Tensor | None,
        y_va: torch.Tensor | None,
        resume: dict | None = None,
    ) -> FitResult:
        cfg, dev = self.cfg, self.device
        net = self.network.to(dev)
        x_tr, y_tr = x_tr.to(dev), y_tr.to(dev)
        has_val = x_va is not None and len(x_va) > 0
        if has_val:
            x_va, y_va = x_va.to(dev), y_va.to(dev)
        weights = (
            self.task.balanced_weights(y_tr).to(dev) if cfg.class_weights == "balanced" else None
        )
        loss_fn = self.task.make_loss(weights, cfg.label_smoothing)
        eval_loss = self.task.make_loss(weights, 0.0)
        n, bs = len(x_tr), int(cfg.batch_size or 32)
        steps = (
            max(1, n // bs) if n >= bs else 1
        )  # drop a ragged last batch (BatchNorm needs > 1 row)
        params = [p for p in net.parameters() if p.requires_grad]
        _pick_threads(dev, sum(p.numel() for p in params) * bs)
        opt = make_optimizer(cfg.optimizer, params, cfg.lr, cfg.weight_decay, cfg.momentum)
        sched, per_batch = make_schedule(cfg.schedule, opt, cfg.lr, int(cfg.epochs), steps)
        gen = torch.Generator().manual_seed(cfg.seed)
        history: list[dict] = []
        best_val, best_state, best_epoch, bad, start_epoch = math.inf, None, 0, 0, 1
        if resume:
            net.load_state_dict(resume["network"])
            opt.load_state_dict(resume["optimizer"])
            if sched is not None and resume.get("scheduler"):
                sched.load_state_dict(resume["scheduler"])
            gen.set_state(resume["generator"])
            torch.set_rng_state(resume["torch_rng"])
            history, best_val, best_epoch, bad = (
                resume["history"],
                resume["best_val"],
                resume["best_epoch"],
                resume["bad_epochs"],
            )
            best_state = resume.get("best_state")
            start_epoch = len(history) + 1
        t_start = time.perf_counter()
        self._emit("on_train_start", int(cfg.epochs), steps, start_epoch)
        epoch = start_epoch - 1

        def snapshot() -> dict:
            return {
                "network": _state_copy(net),
                "optimizer": opt.state_dict(),
                "scheduler": sched.state_dict() if sched else None,
                "generator": gen.get_state(),
                "torch_rng": torch.get_rng_state(),
                "history": history,
                "best_val": best_val,
                "best_epoch": best_epoch,
                "bad_epochs": bad,
                "best_state": best_state,
            }

        stopped = "completed"
        try:
            for epoch in range(start_epoch, int(cfg.epochs) + 1):
                net.train()
                t0 = time.perf_counter()
                perm = torch.randperm(n, generator=gen).to(dev)
                run_loss = torch.zeros((), device=dev)
                for s in range(steps):
                    idx = perm[s * bs : (s + 1) * bs]
                    out = net(x_tr[idx])
                    loss = loss_fn(out, y_tr[idx])
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    if cfg.grad_clip > 0:
                        torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
                    opt.step()
                    if sched is not None and per_batch:
                        sched.step()
                    run_loss += loss.detach()
                    self._emit("on_batch_end", s + 1)
                if sched is not None and not per_batch:
                    sched.step()
                train_loss = float(run_loss) / steps
                if not math.isfinite(train_loss):
                    raise TrainingError(
                        f"training diverged at epoch {epoch}: the loss is {train_loss}",
                        f"lower the learning rate (now --lr {cfg.lr}) or set --grad-clip 1.0",
                    )
                row = {"epoch": epoch, "train_loss": train_loss}
                if has_val:
                    vloss, vscore = self.evaluate(x_va, y_va, eval_loss)
                    row["val_loss"] = vloss
                    row["val_" + ("accuracy" if self.task.name == "classification" else "rmse")] = (
                        vscore
                    )
                    if vloss < best_val - 1e-6:
                        best_val, best_epoch, bad, best_state = vloss, epoch, 0, _state_copy(net)
                    else:
                        bad += 1
                else:
                    best_epoch, best_state = epoch, None
                row["lr"] = opt.param_groups[0]["lr"]
                row["seconds"] = time.perf_counter() - t0
                row["samples_per_s"] = steps * bs / max(row["seconds"], 1e-9)
                history.append(row)
                self._emit("on_epoch_end", row, snapshot)
                if has_val and cfg.patience and bad >= cfg.patience:
                    stopped = "early_stopping"
                    break
        except KeyboardInterrupt:
            raise Interrupted(snapshot()) from None
        if best_state is not None:
            net.load_state_dict(best_state)
        self._emit("on_train_end", history)
        return FitResult(history, best_epoch or epoch, stopped, time.perf_counter() - t_start)
