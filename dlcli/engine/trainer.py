"""The fit loop: device, precision, optimizer and schedule by name, tensor-slice batching, early
stopping with best weights, NaN detection, a resumable snapshot on Ctrl-C, torch.compile, and
DistributedDataParallel when started by torchrun (see distributed.py)."""

from __future__ import annotations

import copy
import math
import time
from dataclasses import asdict, dataclass, field
from typing import Any

import torch

from dlcli.accel import CompiledForward, MixedPrecision, pick_device, pick_threads
from dlcli.engine import distributed
from dlcli.engine.batches import BatchSource, as_batches, shard
from dlcli.engine.callbacks import Callback
from dlcli.engine.optim import make_optimizer, make_schedule
from dlcli.errors import TrainingError


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
        self.device = distributed.local_device(pick_device(cfg.device))
        self.amp = MixedPrecision(cfg.precision, self.device)  # refuses e.g. fp16 on a CPU
        self.train_tf = train_transform or _identity
        self.eval_tf = eval_transform or _identity
        self.frozen: list[torch.nn.Module] = []  # layers kept in eval mode (transfer learning)
        self.group: distributed.Group | None = None  # set by fit under torchrun
        self.channels_last = False
        self.train_forward: Any = network
        self.eval_forward: Any = network

    def _emit(self, event: str, *args: Any) -> None:
        for cb in self.callbacks:
            getattr(cb, event)(*args)

    def _input(self, transform: Any, xb: torch.Tensor) -> torch.Tensor:
        """Stored inputs -> network inputs (images channels-last for CUDA convolutions)."""
        x = transform(xb)
        if self.channels_last and x.dim() == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        return x

    @torch.no_grad()
    def evaluate(self, data: BatchSource, loss_fn: Any) -> tuple[float, float]:
        """(mean loss, task score) on held-out data; score = accuracy or RMSE in target units.
        Under torch.distributed each process scores its share and the sums are reduced."""
        self.network.eval()
        total_loss, total_score, n = 0.0, 0.0, 0
        for xb, yb in data.in_order():
            with self.amp.autocast():
                out = self.eval_forward(self._input(self.eval_tf, xb)).float()
            total_loss += float(loss_fn(out, yb)) * len(yb)
            total_score += float(self.task.batch_score(out, yb))
            n += len(yb)
        if self.group is not None:
            total_loss, total_score, n = self.group.sum(total_loss, total_score, n)
        score = math.sqrt(total_score / n) if self._metric() == "rmse" else total_score / n
        return total_loss / n, score

    def _metric(self) -> str:
        """The live validation metric: the task's own, else accuracy or RMSE."""
        default = "accuracy" if self.task.name == "classification" else "rmse"
        return getattr(self.task, "metric", None) or default

    def _train_epoch(self, data: BatchSource, gen: torch.Generator, loss_fn: Any) -> float:
        """One pass over the training data; returns the mean training loss."""
        net, opt, cfg = self.network, self.opt, self.cfg
        net.train()
        for m in self.frozen:
            m.eval()
        run_loss = torch.zeros((), device=self.device)
        for s, (xb, yb) in enumerate(data.shuffled(gen)):
            with self.amp.autocast():
                loss = loss_fn(self.train_forward(self._input(self.train_tf, xb)).float(), yb)
            opt.zero_grad(set_to_none=True)
            self.amp.backward(loss)
            if cfg.grad_clip > 0:
                self.amp.unscale(opt)
                torch.nn.utils.clip_grad_norm_(self.params, cfg.grad_clip)
            self.amp.step(opt)
            if self.sched is not None and self.sched_per_batch:
                self.sched.step()
            run_loss += loss.detach()
            self._emit("on_batch_end", s + 1)
        if self.sched is not None and not self.sched_per_batch:
            self.sched.step()
        mean = float(run_loss) / len(data)
        return mean if self.group is None else self.group.sum(mean)[0] / self.group.world

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
        e.g. a streaming decoder for data larger than memory; then `y_*` is ignored.
        Started by torchrun, every process calls this with the same data: it joins the process
        group, trains its share of every batch and returns the same result on every process."""
        self.group = distributed.join(self.device)
        try:
            return self._fit(x_tr, y_tr, x_va, y_va, resume)
        finally:
            if self.channels_last:  # the saved weights keep the usual layout
                self.network.to(memory_format=torch.contiguous_format)
            if self.group is not None:
                self.group.close()

    def _prepare(self, net: torch.nn.Module) -> None:
        """Channels-last convolutions on CUDA; the forward passes for training (DDP, compiled)
        and for validation (the plain network under DDP: no gradient sync needed)."""
        cuda = self.device.type == "cuda"
        self.channels_last = cuda and any(isinstance(m, torch.nn.Conv2d) for m in net.modules())
        if self.channels_last:
            net.to(memory_format=torch.channels_last)
        wrapped = self.group.wrap(net) if self.group is not None else net
        self.train_forward = CompiledForward(wrapped) if self.cfg.compile else wrapped
        self.eval_forward = self.train_forward if self.group is None else net

    def _fit(self, x_tr: Any, y_tr: Any, x_va: Any, y_va: Any, resume: dict | None) -> FitResult:
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
        pick_threads(dev, sum(p.numel() for p in self.params) * train.batch_size)
        self.amp.probe(lambda: net(self._input(self.eval_tf, next(iter(train.in_order()))[0][:2])))
        self.opt = make_optimizer(
            cfg.optimizer, self.params, cfg.lr, cfg.weight_decay, cfg.momentum
        )
        self.sched, self.sched_per_batch = make_schedule(
            cfg.schedule, self.opt, cfg.lr, int(cfg.epochs), len(train)
        )
        gen = torch.Generator().manual_seed(cfg.seed)  # the same batches drawn on every process
        st = _FitState()
        if resume:
            st = self._restore(resume, gen)
        self._prepare(net)  # after restoring: DDP starts from rank 0's weights
        if self.group is not None:
            train, val = (shard(d, self.group.rank, self.group.world) for d in (train, val))
        t_start = time.perf_counter()
        self._emit("on_train_start", int(cfg.epochs), len(train), len(st.history) + 1)
        snapshot = lambda: self._snapshot(st, gen)  # noqa: E731
        try:
            for epoch in range(len(st.history) + 1, int(cfg.epochs) + 1):
                t0 = time.perf_counter()
                if dev.type == "cuda":
                    torch.cuda.reset_peak_memory_stats(dev)
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
                    row["val_" + self._metric()] = vscore
                    st.observe(epoch, vloss, net)  # reduced metrics: the same on every process
                else:
                    st.best_epoch = epoch
                row["lr"] = self.opt.param_groups[0]["lr"]
                row["seconds"] = time.perf_counter() - t0
                row["samples_per_s"] = len(train) * train.batch_size / max(row["seconds"], 1e-9)
                if dev.type == "cuda":
                    row["gpu_mem_mb"] = torch.cuda.max_memory_allocated(dev) / 2**20
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
            "scaler": self.amp.state_dict(),
        }

    def _restore(self, snap: dict, gen: torch.Generator) -> _FitState:
        self.network.load_state_dict(snap["network"])
        self.opt.load_state_dict(snap["optimizer"])
        if self.sched is not None and snap.get("scheduler"):
            self.sched.load_state_dict(snap["scheduler"])
        gen.set_state(snap["generator"])
        torch.set_rng_state(snap["torch_rng"])
        self.amp.load_state_dict(snap.get("scaler"))
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
