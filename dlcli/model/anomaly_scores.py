"""Anomaly scores of an autoencoder, by name (`SCORES`): each turns a row's reconstruction error
and its latent vector into one number, higher = more unusual. What a score needs beyond the
network (a bounded bank of training embeddings, a Gaussian fit of the latents, the centre and
scale of each term) is fitted once after training (`fit_scores`) and kept in the model file as
plain tensors and numbers (`anomaly_scores`), with one threshold per score.

- reconstruction: the per-row reconstruction error (model/autoencoder.py ReconstructionError).
- knn: mean Euclidean distance from the row's latent vector to its `k` nearest training embeddings.
- density: reconstruction error plus the squared Mahalanobis distance of the latent vector to a
  Gaussian fitted on the training embeddings, each centred and scaled (median, interquartile
  range of the calibration rows) before they are summed.
- knn+reconstruction: the knn distance plus the reconstruction error, centred and scaled the same way.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

BANK_ROWS = 10_000  # at most this many training embeddings are kept for knn
NEIGHBOURS = 5  # k of the knn score


class ReconstructionTerm(nn.Module):
    """(reconstruction error (N,), latent (N, L)) -> the error itself."""

    def forward(self, error: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        return error


class KnnDistance(nn.Module):
    """latent (N, L) -> mean distance to the k nearest rows of `bank` (M, L). Written with a
    matrix product and TopK, in float64 (|z|^2 - 2 z.b + |b|^2 cancels badly in float32), so the
    ONNX graph holds the bank as a constant and computes exactly this: no approximate search."""

    def __init__(self, bank: torch.Tensor, k: int) -> None:
        super().__init__()
        bank = bank.double()
        self.register_buffer("bank", bank)  # (M, L)
        self.register_buffer("bank_sq", bank.pow(2).sum(1))  # (M,)
        self.k = int(min(k, len(bank)))

    def forward(self, z: torch.Tensor, skip_self: bool = False) -> torch.Tensor:
        z = z.double()
        d2 = z.pow(2).sum(1, keepdim=True) - 2.0 * z @ self.bank.T + self.bank_sq  # (N, M)
        k = self.k + 1 if skip_self else self.k
        nearest = torch.topk(d2, k, dim=1, largest=False).values  # (N, k), ascending
        if skip_self:  # calibration on the bank's own rows: leave the row itself out
            nearest = nearest[:, 1:]
        return nearest.clamp(min=0.0).sqrt().mean(1).float()


class MahalanobisDistance(nn.Module):
    """latent (N, L) -> squared Mahalanobis distance to a Gaussian (mean, precision matrix)."""

    def __init__(self, mean: torch.Tensor, precision: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("mean", mean.float())  # (L,)
        self.register_buffer("precision", precision.float())  # (L, L)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        d = z.float() - self.mean
        return ((d @ self.precision) * d).sum(1)


class KnnTerm(nn.Module):
    def __init__(self, knn: KnnDistance) -> None:
        super().__init__()
        self.knn = knn

    def forward(self, error: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        return self.knn(z)


class SumOfScaled(nn.Module):
    """(error, z) -> (error - c0) / s0 + (latent term(z) - c1) / s1."""

    def __init__(self, latent_term: nn.Module, center: list[float], scale: list[float]) -> None:
        super().__init__()
        self.latent_term = latent_term
        self.c0, self.c1 = float(center[0]), float(center[1])
        self.s0, self.s1 = float(scale[0]), float(scale[1])

    def forward(self, error: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        return combine(error, self.latent_term(z), (self.c0, self.c1), (self.s0, self.s1))


def combine(error: Any, latent: Any, center: Any, scale: Any) -> Any:
    """The combined scores' formula (tensors or arrays): each term centred and scaled, summed."""
    return (error - center[0]) / scale[0] + (latent - center[1]) / scale[1]


# -- the registry -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class ScoreKind:
    """One score: what it is (for docs and errors) and how its module is built from the stored
    state."""

    name: str
    about: str
    build: Callable[[dict], nn.Module]


def _knn(state: dict) -> KnnDistance:
    return KnnDistance(state["bank"], int(state["k"]))


def _density(state: dict) -> MahalanobisDistance:
    return MahalanobisDistance(state["mean"], state["precision"])


def _scaled(name: str, latent: Callable[[dict], nn.Module]) -> Callable[[dict], nn.Module]:
    return lambda s: SumOfScaled(latent(s), s["center"][name], s["scale"][name])


SCORES: dict[str, ScoreKind] = {
    "reconstruction": ScoreKind(
        "reconstruction", "the reconstruction error", lambda s: ReconstructionTerm()
    ),
    "knn": ScoreKind(
        "knn", "distance to the nearest training embeddings", lambda s: KnnTerm(_knn(s))
    ),
    "density": ScoreKind(
        "density", "reconstruction error + Mahalanobis distance of the latent vector",
        _scaled("density", _density),
    ),
    "knn+reconstruction": ScoreKind(
        "knn+reconstruction", "knn distance + reconstruction error",
        _scaled("knn+reconstruction", _knn),
    ),
}  # fmt: skip
DEFAULT_SCORE = "knn"  # chosen by benchmarks/quality_anomaly.py (docs/autoencoders.md)


def check_score(name: str, data: dict, source: str) -> None:
    """One line for a score name that is unknown, or that this model file cannot compute (files
    written before the stored scores know only the reconstruction error)."""
    from dlcli.errors import UsageError

    if name not in SCORES:
        raise UsageError(f"--score must be one of {', '.join(SCORES)}, got '{name}'")
    if name != "reconstruction" and not isinstance(data.get("anomaly_scores"), dict):
        raise UsageError(
            f"{source}: this model file keeps no training embeddings, so its only score is "
            f"'reconstruction' (it was written by an older dl)",
            "retrain it to use --score " + name,
        )


def score_module(name: str, state: dict | None) -> nn.Module:
    """The (error, z) -> score module of `name` from a model file's `anomaly_scores` state."""
    if name == "reconstruction":
        return ReconstructionTerm()
    assert state is not None
    return SCORES[name].build(state)


# -- fitting after training -----------------------------------------------------------------------
def bank_rows(n: int, seed: int, limit: int = BANK_ROWS) -> torch.Tensor:
    """Which of `n` training rows the bank keeps: all of them, or `limit` chosen by a seeded
    permutation (so the same data and seed give the same bank), in their original order."""
    if n <= limit:
        return torch.arange(n)
    gen = torch.Generator().manual_seed(int(seed))
    return torch.randperm(n, generator=gen)[:limit].sort().values


def _robust(values: np.ndarray) -> tuple[float, float]:
    """(median, interquartile range) with a floor on the range so a constant term cannot divide
    by zero."""
    q1, med, q3 = np.percentile(values, [25, 50, 75])
    return float(med), float(max(q3 - q1, 1e-6 * max(1.0, abs(med)), 1e-12))


def fit_scores(
    bank: torch.Tensor,
    calib_error: np.ndarray,
    calib_z: torch.Tensor,
    percentile: float,
    calib_is_bank: bool = False,
    k: int = NEIGHBOURS,
) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """(the `anomaly_scores` state, each score's values on the calibration rows). The state: the bank (M, L) of training embeddings, their Gaussian fit,
    each combined score's centre and scale, and every score's threshold, the `percentile` of
    its values on the calibration rows (validation rows; the bank itself, each row left out of
    its own neighbours, when there is no validation split)."""
    bank = bank.float()
    z64 = bank.double()
    mean = z64.mean(0)
    cov = torch.cov(z64.T).reshape(len(mean), len(mean)) if len(bank) > 1 else None
    width = len(mean)
    if cov is None or not torch.isfinite(cov).all():
        cov = torch.eye(width, dtype=torch.float64)
    ridge = 1e-3 * float(cov.diagonal().mean().clamp(min=1e-12))  # keeps it invertible
    precision = torch.linalg.inv(cov + ridge * torch.eye(width, dtype=torch.float64))
    state: dict[str, Any] = {
        "k": int(min(k, max(1, len(bank) - (1 if calib_is_bank else 0)))),
        "bank": bank.contiguous(),
        "mean": mean.float(),
        "precision": precision.float(),
    }
    with torch.no_grad():
        knn = KnnDistance(bank, state["k"])(calib_z, skip_self=calib_is_bank).numpy()
        maha = _density(state)(calib_z).numpy()
    error = np.asarray(calib_error, dtype=np.float32)
    values = {"reconstruction": error, "knn": knn}
    center, scale = {}, {}
    for name, latent_values in {"density": maha, "knn+reconstruction": knn}.items():
        (c0, s0), (c1, s1) = _robust(error), _robust(latent_values)
        center[name], scale[name] = [c0, c1], [s0, s1]
        values[name] = combine(error, latent_values, center[name], scale[name])
    state["center"], state["scale"] = center, scale
    state["thresholds"] = {n: float(np.percentile(v, percentile)) for n, v in values.items()}
    return state, values
