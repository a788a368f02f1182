"""The GAN's epoch as a FitStep of the shared trainer (engine/trainer.py): alternating
discriminator and generator steps with their own Adam optimizers, one-sided label smoothing, the
fixed-noise samples of each epoch (and their grid, a callback), resumable snapshots at epoch ends,
and the watch that reports divergence (the discriminator wins outright) and mode collapse."""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from dlcli.console import note
from dlcli.engine.callbacks import Callback
from dlcli.errors import TrainingError

DIVERGE_STEPS = 200  # steps in a row with D(fake) < DIVERGE_PROB before divergence is reported
DIVERGE_PROB = 0.02
COLLAPSE_RATIO = 0.3  # sample spread / real-image spread below which mode collapse is reported
COLLAPSE_FROM_EPOCH = 10  # until then low spread is normal (first samples are all one blur)...


class Sampler(nn.Module):
    """noise (N, latent) -> images (N, C, H, W) in [0, 1]: the generator's tanh range [-1, 1]
    mapped back to pixels. `dl predict --samples`, the epoch grids and the ONNX graph all run it."""

    def __init__(self, generator: nn.Module) -> None:
        super().__init__()
        self.generator = generator

    def forward(self, noise: torch.Tensor) -> torch.Tensor:
        return ((self.generator(noise) + 1) / 2).clamp(0, 1)


def to_tanh_range(pixels: torch.Tensor) -> torch.Tensor:
    """uint8 (N, C, H, W) -> float in [-1, 1], the range of the generator's tanh."""
    return pixels.float() / 127.5 - 1


def spread(images: torch.Tensor) -> float:
    """Mean pairwise L2 distance between images (N, C, H, W): how varied a set is."""
    flat = images.reshape(len(images), -1).float()
    return float(torch.pdist(flat).mean()) if len(flat) > 1 else 0.0


@dataclass
class Watch:
    """Divergence and mode-collapse detection; each warning is shown once as a note."""

    real_spread: float
    streak: int = 0  # steps in a row in which D spotted every fake
    warnings: list[str] = field(default_factory=list)
    diverged: bool = False
    collapsed: bool = False
    peak: float = 0.0  # the highest spread ratio so far

    def step(self, d_fake: float, step: int) -> None:
        self.streak = self.streak + 1 if d_fake < DIVERGE_PROB else 0
        if self.streak >= DIVERGE_STEPS and not self.diverged:
            self.diverged = True
            self._warn(
                f"divergence: the discriminator has rejected every generated image for "
                f"{self.streak} steps (by step {step}), so the generator is no longer learning; "
                "try a lower --lr, more dropout in the discriminator, or restart with another --seed"
            )

    def epoch(self, samples: torch.Tensor, epoch: int) -> float:
        """The fixed-noise samples' spread relative to real images (1 = as varied)."""
        ratio = spread(samples) / max(self.real_spread, 1e-8)
        self.peak = max(self.peak, ratio)
        # ...unless the spread had been healthy and fell back: the samples converged on a few
        late = epoch >= COLLAPSE_FROM_EPOCH or self.peak >= 2 * COLLAPSE_RATIO
        if late and ratio < COLLAPSE_RATIO and not self.collapsed:
            self.collapsed = True
            self._warn(
                f"mode collapse: at epoch {epoch} the samples are {ratio:.2f}x as varied as the "
                "real images (the generator makes nearly the same image for any noise); "
                "try a lower --lr or another --seed"
            )
        return ratio

    def _warn(self, text: str) -> None:
        self.warnings.append(text)
        note(text)


@dataclass
class GanState:
    """Everything that changes during training (the trainer keeps the history); `snapshot()` is
    its resumable plain-data copy."""

    generator: nn.Module
    discriminator: nn.Module
    opt_g: torch.optim.Optimizer
    opt_d: torch.optim.Optimizer
    fixed_noise: torch.Tensor  # (S, latent): the noise behind the per-epoch sample grids
    watch: Watch
    step: int = 0

    def snapshot(self) -> dict:
        return copy.deepcopy(
            {
                "generator": self.generator.state_dict(),
                "discriminator": self.discriminator.state_dict(),
                "opt_g": self.opt_g.state_dict(),
                "opt_d": self.opt_d.state_dict(),
                "fixed_noise": self.fixed_noise,
                "watch": asdict(self.watch),
                "step": self.step,
                "rng": torch.get_rng_state(),
            }
        )

    def restore(self, snap: dict) -> None:
        self.generator.load_state_dict(snap["generator"])
        self.discriminator.load_state_dict(snap["discriminator"])
        self.opt_g.load_state_dict(snap["opt_g"])
        self.opt_d.load_state_dict(snap["opt_d"])
        self.fixed_noise = snap["fixed_noise"]
        self.watch = Watch(**snap["watch"])
        self.step = int(snap["step"])
        torch.set_rng_state(snap["rng"])


def _bce(logits: torch.Tensor, target: float) -> torch.Tensor:
    return F.binary_cross_entropy_with_logits(logits, torch.full_like(logits, target))


def fit_epoch(
    state: GanState,
    images: torch.Tensor,
    batch: int,
    real_label: float,
    device: torch.device,
    latent: int,
    epoch: int,
    on_batch_end: Callable[[int], None] | None = None,
) -> dict:
    """One pass over `images` (uint8 (N, C, H, W), shuffled): per batch a discriminator step on
    real (target `real_label`) and generated (target 0) images, then a generator step that asks
    the discriminator to call its images real (target 1). Returns the epoch's mean row."""
    g, d = state.generator.train(), state.discriminator.train()
    sums = {"d_loss": 0.0, "g_loss": 0.0, "d_real": 0.0, "d_fake": 0.0}
    t0, steps, seen = time.perf_counter(), 0, 0
    order = torch.randperm(len(images))
    for start in range(0, max(1, len(images) - batch + 1), batch):  # whole batches only
        real = to_tanh_range(images[order[start : start + batch]]).to(device)  # (B, C, H, W)
        noise = torch.randn(len(real), latent, device=device)  # (B, latent)
        fake = g(noise)  # (B, C, H, W) in [-1, 1]
        out_real, out_fake = d(real), d(fake.detach())  # (B, 1) logits
        loss_d = _bce(out_real, real_label) + _bce(out_fake, 0.0)
        state.opt_d.zero_grad(set_to_none=True)
        loss_d.backward()
        state.opt_d.step()
        loss_g = _bce(d(fake), 1.0)  # the non-saturating generator loss
        state.opt_g.zero_grad(set_to_none=True)
        loss_g.backward()
        state.opt_g.step()
        state.step, steps, seen = state.step + 1, steps + 1, seen + len(real)
        values = (loss_d.item(), loss_g.item())
        if not all(math.isfinite(v) for v in values):
            raise TrainingError(
                f"GAN losses became NaN or infinite at epoch {epoch}, step {state.step}; "
                "training stopped and no model was written",
                "lower --lr (the default is 0.0002) or check the images",
            )
        d_real, d_fake = (float(torch.sigmoid(o.detach()).mean()) for o in (out_real, out_fake))
        for key, v in zip(sums, (*values, d_real, d_fake), strict=True):
            sums[key] += v
        state.watch.step(d_fake, state.step)
        if on_batch_end is not None:
            on_batch_end(steps)
    seconds = time.perf_counter() - t0
    row = {"epoch": epoch, **{k: v / max(steps, 1) for k, v in sums.items()}}
    return {**row, "seconds": seconds, "samples_per_s": seen / max(seconds, 1e-9)}


def sample_images(sampler: Sampler, noise: torch.Tensor, device: torch.device) -> torch.Tensor:
    """Images (N, C, H, W) in [0, 1] for `noise`, on the CPU, with the generator in eval mode."""
    was = sampler.training
    sampler.eval()
    with torch.no_grad():
        out = sampler(noise.to(device)).cpu()
    sampler.train(was)
    return out


def format_row(row: dict) -> str:
    """The progress line's stats for a GAN epoch."""
    return (
        f"d_loss {row['d_loss']:.3f}  g_loss {row['g_loss']:.3f}  D(real) {row['d_real']:.2f}  "
        f"D(fake) {row['d_fake']:.2f}  diversity {row.get('diversity', float('nan')):.2f}  "
        f"{row['samples_per_s']:,.0f} images/s"
    )


class GanStep:
    """The FitStep of a GAN: per epoch one pass of alternating steps over `images` (uint8
    (N, C, H, W)), then the fixed-noise samples and their diversity; no validation. Its resumable
    state is the copy taken at the last epoch end, so Ctrl-C mid-epoch resumes exactly."""

    def __init__(
        self, state: GanState, images: torch.Tensor, batch: int, real_label: float, latent: int,
        device: torch.device,
    ) -> None:  # fmt: skip
        self.state, self.images, self.batch, self.real_label = state, images, batch, real_label
        self.latent, self.device = latent, device
        self.steps = max(1, len(images) // batch)
        self.sampler = Sampler(state.generator)
        self.samples: torch.Tensor | None = None  # the last epoch's (S, C, H, W) in [0, 1]

    def start(self, resume: dict | None, on_batch_end: Callable[[int], None]) -> None:
        if resume:
            self.state.restore(resume)
        self.on_batch_end = on_batch_end
        self.last = self.state.snapshot()

    def train_epoch(self, epoch: int) -> dict:
        row = fit_epoch(
            self.state, self.images, self.batch, self.real_label, self.device, self.latent,
            epoch, self.on_batch_end,
        )  # fmt: skip
        self.samples = sample_images(self.sampler, self.state.fixed_noise, self.device)
        row["diversity"] = self.state.watch.epoch(self.samples, epoch)
        return row

    def validate(self) -> None:
        return None

    def end_epoch(self, row: dict) -> None:
        self.last = self.state.snapshot()

    def state_dict(self) -> dict:
        return self.last

    def weights(self) -> dict:
        return copy.deepcopy(
            {"generator": self.state.generator.state_dict(),
             "discriminator": self.state.discriminator.state_dict()}
        )  # fmt: skip

    def load_weights(self, state: dict) -> None:
        self.state.generator.load_state_dict(state["generator"])
        self.state.discriminator.load_state_dict(state["discriminator"])

    def close(self) -> None: ...


class SampleGrid(Callback):
    """Each epoch: the fixed-noise samples as an 8-wide PNG grid, samples/epoch_NNN.png."""

    def __init__(self, step: GanStep, folder: Path) -> None:
        self.step, self.folder = step, folder
        self.files: list[str] = []

    def on_epoch_end(self, row: dict, snapshot: Any) -> None:
        from dlcli.imagegrid import write_grid

        path = self.folder / f"epoch_{row['epoch']:03d}.png"
        self.files.append(str(write_grid(path, self.step.samples, nrow=8)))
