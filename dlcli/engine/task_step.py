"""The FitStep of a network trained against a task's loss (supervised models; autoencoders, whose
network returns its own loss): device, precision, optimizer and schedule by name, tensor-slice
batching, the NaN guard, torch.compile, and DistributedDataParallel when started by torchrun
(see distributed.py)."""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable
from typing import Any

import torch

from dlcli import settings
from dlcli.accel import CompiledForward, MixedPrecision, pick_device, pick_threads
from dlcli.console import info
from dlcli.engine import distributed, feature_cache
from dlcli.engine.batches import BatchSource, as_batches, shard
from dlcli.engine.optim import make_optimizer, make_schedule
from dlcli.engine.trainer import TrainConfig
from dlcli.errors import SpecError, TrainingError


def _identity(x: torch.Tensor) -> torch.Tensor:
    return x


def _state_copy(module: torch.nn.Module) -> dict:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def trained_members(network: torch.nn.Module) -> int:
    """K when `network` ends in a packed ensemble whose training output is (N, K, outputs)
    (`trains_members`, spec/layers/ensemble.py), else 1."""
    packed = [m for m in network.modules() if getattr(m, "trains_members", False)]
    if not packed:
        return 1
    if not (
        isinstance(network, torch.nn.Sequential) and len(packed) == 1 and network[-1] is packed[0]
    ):
        raise SpecError("an ensemble layer (mlp_ensemble) must be the network's last layer")
    return int(packed[0].members)


def member_loss(loss_fn: Callable, members: int) -> Callable:
    """Each of K members trained on its own loss: (N, K, ...) outputs against the labels repeated
    K times, averaged (so the loss reads as one member's)."""
    if members <= 1:
        return loss_fn
    return lambda out, y: loss_fn(out.flatten(0, 1), y.repeat_interleave(members, dim=0))


class TaskStep:
    """Trains `network` (encoded inputs -> outputs) for `task` on `data` = (x_train, y_train,
    x_val, y_val): tensors (batched by slicing) or ready batch sources (see batches.py), e.g. a
    streaming decoder for data larger than memory; then the `y_*` are ignored.

    Started by torchrun, every process runs this with the same data: it joins the process group,
    trains its share of every batch and reports the same values on every process."""

    def __init__(
        self,
        network: torch.nn.Module,
        task: Any,
        cfg: TrainConfig,
        data: tuple[Any, Any, Any, Any],
        train_transform: Any = None,
        eval_transform: Any = None,
        frozen: list[torch.nn.Module] | None = None,
        plan: Any = None,
    ) -> None:
        """`train_transform` / `eval_transform` map a batch of stored inputs to network inputs
        (e.g. augmentation + normalisation of uint8 images); None: inputs are used as stored.
        `frozen` layers stay frozen and in eval mode for the whole run (transfer learning; a
        frozen prefix of top-level layers trains from cached features, see feature_cache.py);
        `plan` is a fine-tuning schedule (model/finetune.py: FineTunePlan) or None."""
        self.network = network
        self.task = task
        self.cfg = cfg
        self.data = data
        self.device = distributed.local_device(pick_device(cfg.device))
        self.amp = MixedPrecision(cfg.precision, self.device)  # refuses e.g. fp16 on a CPU
        self.train_tf = train_transform or _identity
        self.eval_tf = eval_transform or _identity
        self.always_frozen = frozen or []
        self.frozen = list(self.always_frozen)
        self.plan = plan
        self.phase = 0  # the fine-tuning phase the optimizer and schedule are set up for
        self.forward_net = network  # what batches go through: the network, or the layers after
        # a frozen prefix whose outputs were cached
        self.group: distributed.Group | None = None  # set by start under torchrun
        self.channels_last = False
        self.train_forward: Any = network
        self.eval_forward: Any = network
        self.steps = 0

    def _input(self, transform: Any, xb: torch.Tensor) -> torch.Tensor:
        """Stored inputs -> network inputs (images channels-last for CUDA convolutions)."""
        x = transform(xb)
        if self.channels_last and x.dim() == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        return x

    # -- set-up -----------------------------------------------------------------------------------
    def start(self, resume: dict | None, on_batch_end: Callable[[int], None]) -> None:
        """Batches, losses, optimizer and schedule on the training device; `resume`'s state."""
        self.group = distributed.join(self.device)
        self.on_batch_end = on_batch_end
        cfg, dev = self.cfg, self.device
        x_tr, y_tr, x_va, y_va = self.data
        net = self.network.to(dev)
        for tf in (self.train_tf, self.eval_tf):
            if isinstance(tf, torch.nn.Module):
                tf.to(dev)
        x_tr, x_va = self._cached_features(x_tr, x_va)
        train = as_batches(x_tr, y_tr, int(cfg.batch_size or 32)).to(dev)
        val = as_batches(x_va, y_va, 1).to(dev) if x_va is not None and len(x_va) else None
        weights = (
            self.task.balanced_weights(train.labels()).to(dev)
            if cfg.class_weights == "balanced"
            else None
        )
        members = trained_members(net)
        self.loss_fn = member_loss(self.task.make_loss(weights, cfg.label_smoothing), members)
        self.eval_loss = self.task.make_loss(weights, 0.0)
        groups = self.plan.param_groups(net, cfg.lr) if self.plan else None
        self.params = [p for p in net.parameters() if p.requires_grad]
        pick_threads(dev, sum(p.numel() for p in self.params) * train.batch_size)
        first = next(iter(train.in_order()))[0][:2]
        self.amp.probe(lambda: self.forward_net(self._input(self.eval_tf, first)))
        self.opt = make_optimizer(
            cfg.optimizer, groups or self.params, cfg.lr, cfg.weight_decay, cfg.momentum
        )
        if groups:
            self.params = [p for g in groups for p in g["params"]]
        done = len(resume["history"]) if resume else 0
        self._set_phase(max(1, done), len(train))  # the phase of the last complete epoch
        self.gen = torch.Generator().manual_seed(cfg.seed)  # the same batches on every process
        if resume:
            self._restore(resume)
        self._prepare(net)  # after restoring: DDP starts from rank 0's weights
        if self.group is not None:
            train, val = (shard(d, self.group.rank, self.group.world) for d in (train, val))
        self.train, self.val, self.steps = train, val, len(train)
        self.last = _EpochEndState()
        self.last.capture(self)

    def _prepare(self, net: torch.nn.Module) -> None:
        """Channels-last convolutions on CUDA; the forward passes for training (DDP, compiled)
        and for validation (the plain network under DDP: no gradient sync needed)."""
        cuda = self.device.type == "cuda"
        self.channels_last = cuda and any(isinstance(m, torch.nn.Conv2d) for m in net.modules())
        if self.channels_last:
            net.to(memory_format=torch.channels_last)
        fwd = self.forward_net
        wrapped = self.group.wrap(fwd) if self.group is not None else fwd
        self.train_forward = CompiledForward(wrapped) if self.cfg.compile else wrapped
        self.eval_forward = self.train_forward if self.group is None else fwd

    def _cached_features(self, x_tr: Any, x_va: Any) -> tuple[Any, Any]:
        """With a frozen prefix of top-level layers, inputs that are the same every epoch (no
        augmentation, tensors in memory) and floating-point network inputs (no token ids, whose
        padding mask the later layers need): the prefix's outputs, computed once; the network
        then trains from the layers after it (`forward_net`). Else the inputs unchanged."""
        k = feature_cache.frozen_prefix(self.network, self.always_frozen)
        same = self.train_tf is self.eval_tf and torch.is_tensor(x_tr)
        if not (k and same and settings.get().feature_cache and len(x_tr)):
            return x_tr, x_va
        if not torch.is_floating_point(self.eval_tf(x_tr[:1].to(self.device))):
            return x_tr, x_va
        prefix, tail = self.network[:k], self.network[k:]
        x_va = x_va if x_va is not None and len(x_va) else None
        tags = [self.cfg.precision, self.device.type]
        f_tr, f_va = feature_cache.features(
            prefix,
            self.eval_tf,
            (x_tr, x_va),
            self.device,
            self.amp.autocast,
            tags,
            write=distributed.is_main(),
        )
        self.forward_net, self.train_tf, self.eval_tf = tail, _identity, _identity
        return f_tr, f_va

    def _set_phase(self, epoch: int, steps: int) -> None:
        """Set up the fine-tuning phase of `epoch` (once per phase): which layers are frozen,
        the learning rates back at their base values, that phase's own learning-rate schedule,
        and the training forward pass again (DDP registers only the parameters that train).
        Without a plan: one phase, the schedule over the whole run."""
        cfg, plan = self.cfg, self.plan
        phase = plan.phase(epoch) if plan else 1
        if phase == self.phase:
            return
        epochs = plan.phase_epochs(phase, int(cfg.epochs)) if plan else int(cfg.epochs)
        if plan:
            self.frozen = [*self.always_frozen, *plan.set_phase(self.network, phase)]
            for g, base in zip(
                self.opt.param_groups, plan.param_groups(self.network, cfg.lr), strict=True
            ):
                g["lr"] = base["lr"]
                g.pop("initial_lr", None)
            if self.phase:  # entering phase 2 during the run
                info(
                    f"epoch {epoch}: fine-tuning everything ({', '.join(plan.body)} at lr x{plan.body_lr:g})"
                )
                self._prepare(self.network)
        self.sched, self.sched_per_batch = make_schedule(
            cfg.schedule, self.opt, cfg.lr, epochs, steps
        )
        self.phase = phase

    def close(self) -> None:
        if self.channels_last:  # the saved weights keep the usual layout
            self.network.to(memory_format=torch.contiguous_format)
        if self.group is not None:
            self.group.close()

    # -- one epoch --------------------------------------------------------------------------------
    def train_epoch(self, epoch: int) -> dict:
        """One pass over the training data: {"train_loss": mean loss}."""
        self.t0 = time.perf_counter()
        self._set_phase(epoch, len(self.train))
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
        train_loss = self._train_epoch(self.train, self.gen, self.loss_fn)
        if not math.isfinite(train_loss):
            raise TrainingError(
                f"training diverged at epoch {epoch}: the loss is {train_loss}",
                f"lower the learning rate (now --lr {self.cfg.lr}) or set --grad-clip 1.0",
            )
        return {"train_loss": train_loss}

    def _train_epoch(self, data: BatchSource, gen: torch.Generator, loss_fn: Any) -> float:
        net, opt, cfg, batch_end = self.network, self.opt, self.cfg, self.on_batch_end
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
            batch_end(s + 1)
        if self.sched is not None and not self.sched_per_batch:
            self.sched.step()
        mean = float(run_loss) / len(data)
        return mean if self.group is None else self.group.sum(mean)[0] / self.group.world

    def validate(self) -> dict | None:
        """{"val_loss", "val_<metric>"} on the held-out data; None without any."""
        if self.val is None:
            return None
        vloss, vscore = self.evaluate(self.val, self.eval_loss)
        return {"val_loss": vloss, "val_" + self._metric(): vscore}

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

    def end_epoch(self, row: dict) -> None:
        # the last group's: the new layers' when fine-tuning (the body's is lower)
        row["lr"] = self.opt.param_groups[-1]["lr"]
        row["seconds"] = time.perf_counter() - self.t0
        row["samples_per_s"] = len(self.train) * self.train.batch_size / max(row["seconds"], 1e-9)
        if self.device.type == "cuda":
            row["gpu_mem_mb"] = torch.cuda.max_memory_allocated(self.device) / 2**20
        self.last.capture(self)

    # -- state ------------------------------------------------------------------------------------
    def weights(self) -> dict:
        return _state_copy(self.network)

    def load_weights(self, state: dict) -> None:
        self.network.load_state_dict(state)

    def state_dict(self) -> dict:
        """The resumable state at the end of the last complete epoch (the loop adds history and
        early stopping), so Ctrl-C in the middle of an epoch resumes exactly. Its tensors are
        reused at the next epoch's end: save or copy it before then."""
        return self.last.state()

    def _restore(self, snap: dict) -> None:
        self.network.load_state_dict(snap["network"])
        self.opt.load_state_dict(snap["optimizer"])
        if self.sched is not None and snap.get("scheduler"):
            self.sched.load_state_dict(snap["scheduler"])
        self.gen.set_state(snap["generator"])
        torch.set_rng_state(snap["torch_rng"])
        self.amp.load_state_dict(snap.get("scaler"))


class _EpochEndState:
    """A TaskStep's resumable state as it was at the end of an epoch, kept cheaply because it is
    taken every epoch: the tensors (weights, buffers, optimizer moments) are copied into tensors
    allocated once; the rest (param groups, schedule, random generators, grad scaler) is small
    plain data."""

    def __init__(self) -> None:
        self.net_keys: list[str] = []
        self.net_live: list[torch.Tensor] = []  # the parameters and buffers themselves
        self.copies: list[torch.Tensor] = []
        self.layout: list[tuple[Any, str]] = []  # (parameter index, key) of optimizer tensors

    @torch.no_grad()
    def capture(self, step: TaskStep) -> None:
        if not self.net_keys:  # parameters and buffers stay the same objects while training
            net = step.network.state_dict(keep_vars=True)
            self.net_keys, self.net_live = list(net), list(net.values())
        opt = step.opt.state_dict()  # param_groups: new dicts; state: the live per-parameter dicts
        state = opt["state"]
        layout = [(i, k) for i, s in state.items() for k, v in s.items() if torch.is_tensor(v)]
        live = [*self.net_live, *(state[i][k] for i, k in layout)]
        if layout != self.layout or len(self.copies) != len(live):  # e.g. moments made at step 1
            self.copies = [t.detach().clone() for t in live]
            self.layout = layout
        else:  # one fused copy: this runs every epoch (torch.optim uses the same kernel)
            torch._foreach_copy_(self.copies, live)
        self.plain = {
            i: {k: v for k, v in s.items() if not torch.is_tensor(v)} for i, s in state.items()
        }
        self.groups = opt["param_groups"]
        self.schedule = copy.deepcopy(step.sched.state_dict()) if step.sched else None
        self.generator, self.torch_rng = step.gen.get_state(), torch.get_rng_state()
        self.scaler = copy.deepcopy(step.amp.state_dict())

    def state(self) -> dict:
        n = len(self.net_keys)
        opt_state = {i: dict(plain) for i, plain in self.plain.items()}
        for (i, k), t in zip(self.layout, self.copies[n:], strict=True):
            opt_state[i][k] = t
        return {
            "network": dict(zip(self.net_keys, self.copies[:n], strict=True)),
            "optimizer": {"state": opt_state, "param_groups": self.groups},
            "scheduler": self.schedule,
            "generator": self.generator,
            "torch_rng": self.torch_rng,
            "scaler": self.scaler,
        }
