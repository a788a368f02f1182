"""Image batch augmentation on the training device: random flip, crop, rotation and colour jitter.

`make_augment("flip,crop", size)` gives an `Augment` module. It takes a batch of uint8 or float
images (N, C, H, W) and returns floats in [0, 1] (uint8 / 255). The random changes happen only in
training mode; in eval mode it only converts, so augmentation can never reach evaluation or
prediction. Every random draw comes from torch's global RNG (seeded by the trainer), per sample and
vectorised over the batch.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import nn
from torch.nn import functional as F

from dlcli.errors import UsageError


def _uniform(n: int, lo: float, hi: float, like: torch.Tensor) -> torch.Tensor:
    """(n,) values uniform in [lo, hi) on `like`'s device and dtype."""
    return torch.rand(n, device=like.device, dtype=like.dtype) * (hi - lo) + lo


class RandomFlip(nn.Module):
    """Mirror each image left-right with probability `p`."""

    def __init__(self, p: float = 0.5) -> None:
        super().__init__()
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (N, C, H, W) -> same
        flip = torch.rand(x.shape[0], device=x.device) < self.p
        return torch.where(flip[:, None, None, None], x.flip(-1), x)


class RandomCrop(nn.Module):
    """Pad each side by `pad` (reflecting the border; zeros where the image is too small to
    reflect), then cut a window of the original size at a random offset per sample."""

    def __init__(self, pad: int) -> None:
        super().__init__()
        self.pad = pad

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (N, C, H, W) -> same
        n, c, h, w = x.shape
        p = self.pad
        mode = "reflect" if p < min(h, w) else "constant"
        padded = F.pad(x, (p, p, p, p), mode=mode)  # (N, C, H + 2p, W + 2p)
        wp = w + 2 * p
        # per-sample offsets in [0, 2p]; one gather of each window from the flattened padded
        # image (one kernel, no host sync; faster than a loop over samples or 4-way indexing)
        dy = torch.randint(0, 2 * p + 1, (n, 1, 1), device=x.device)
        dx = torch.randint(0, 2 * p + 1, (n, 1, 1), device=x.device)
        rows = dy + torch.arange(h, device=x.device)[:, None]  # (N, H, 1)
        cols = dx + torch.arange(w, device=x.device)  # (N, 1, W)
        index = (rows * wp + cols).view(n, 1, h * w).expand(n, c, h * w)
        return padded.reshape(n, c, -1).gather(2, index).view(n, c, h, w)


def affine_theta(angle: torch.Tensor, zoom: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """(N,) angles in radians and zoom factors -> (N, 2, 3) matrices for `F.affine_grid`.

    theta maps output to input coordinates in [-1, 1]; the h / w factors keep the rotation rigid
    on non-square images (normalised x and y have different pixel lengths).
    """
    cos, sin = torch.cos(angle) / zoom, torch.sin(angle) / zoom
    zero = torch.zeros_like(cos)
    row_x = torch.stack([cos, -sin * (h / w), zero], 1)
    row_y = torch.stack([sin * (w / h), cos, zero], 1)
    return torch.stack([row_x, row_y], 1)


class RandomAffine(nn.Module):
    """Rotate by up to ±`degrees` and scale by [1 - `scale`, 1 + `scale`] about the centre;
    bilinear sampling, borders reflected."""

    def __init__(self, degrees: float = 10.0, scale: float = 0.1) -> None:
        super().__init__()
        self.degrees, self.scale = degrees, scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (N, C, H, W) -> same
        n, _, h, w = x.shape
        angle = _uniform(n, -self.degrees, self.degrees, x) * (math.pi / 180)
        zoom = _uniform(n, 1 - self.scale, 1 + self.scale, x)
        theta = affine_theta(angle, zoom, h, w)
        grid = F.affine_grid(theta, list(x.shape), align_corners=False)
        out = F.grid_sample(x, grid, padding_mode="reflection", align_corners=False)
        return out.clamp(0, 1)  # bilinear weights can overshoot 1 by a rounding error


class ColorJitter(nn.Module):
    """Scale brightness and contrast by factors in [1 - `amount`, 1 + `amount`] per sample."""

    def __init__(self, amount: float = 0.2) -> None:
        super().__init__()
        self.amount = amount

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (N, C, H, W) -> same, in [0, 1]
        n = x.shape[0]
        bright = _uniform(n, 1 - self.amount, 1 + self.amount, x)[:, None, None, None]
        contrast = _uniform(n, 1 - self.amount, 1 + self.amount, x)[:, None, None, None]
        x = (x * bright).clamp(0, 1)
        mean = x.mean(dim=(1, 2, 3), keepdim=True)  # each image's mean grey level
        return ((x - mean) * contrast + mean).clamp(0, 1)


# name -> factory(image size) -> module acting on float (N, C, H, W) batches in [0, 1]
AUGMENTS: dict[str, Callable[[int], nn.Module]] = {
    "flip": lambda size: RandomFlip(0.5),
    "crop": lambda size: RandomCrop(max(1, size // 8)),
    "rotate": lambda size: RandomAffine(10.0, 0.1),
    "jitter": lambda size: ColorJitter(0.2),
}


class Augment(nn.Module):
    """uint8 or float (N, C, H, W) -> float in [0, 1], with the named augmentations applied in
    order while training (eval mode: conversion only)."""

    def __init__(self, ops: dict[str, nn.Module]) -> None:
        super().__init__()
        self.ops = nn.ModuleDict(ops)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.float() / 255 if x.dtype == torch.uint8 else x.float()
        if not self.training:
            return x
        for op in self.ops.values():
            x = op(x)
        return x


def make_augment(spec: str, size: int) -> Augment:
    """`spec`: comma-separated names from AUGMENTS (e.g. "flip,crop"); `size`: the image side
    (the crop pads size // 8 pixels, at least 1)."""
    names = [s.strip().lower() for s in spec.split(",") if s.strip()]
    unknown = [s for s in names if s not in AUGMENTS]
    if unknown:
        raise UsageError(
            f"--augment '{spec}': unknown augmentation '{unknown[0]}'",
            f"known: {', '.join(AUGMENTS)}",
        )
    return Augment({name: AUGMENTS[name](size) for name in dict.fromkeys(names)})
