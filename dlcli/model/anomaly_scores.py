"""Anomaly scores of an autoencoder, by name (`SCORES`). Each turns a row's reconstruction error,
its latent vector z and its network input h (the preprocessed features, flattened) into one
number, higher = more unusual. What a score needs beyond the network (bounded banks of training
embeddings and inputs, a Gaussian fit of the latents, the centre and scale of each term) is
fitted once after training (`fit_banks`, then `calibrate` on held-out rows) and kept in the
model file as plain tensors and numbers (`anomaly_scores`), with one threshold per score.

Terms: `error` (the reconstruction error, model/autoencoder.py ReconstructionError), `knn` (mean
Euclidean distance from z to its k nearest training embeddings), `density` (squared Mahalanobis
distance of z to a Gaussian fitted on the training embeddings), `input_knn` (the same kNN
distance on the network inputs h). A score is one term, or the sum of two, each centred and
scaled (median and interquartile range on the calibration rows).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

BANK_ROWS = 10_000  # at most this many training embeddings are kept for knn
INPUT_BANK_VALUES = 2**22  # the input bank holds at most this many numbers (16 MB of float32)
NEIGHBOURS = 5  # k of the knn scores
TERMS = ("error", "knn", "density", "input_knn")  # the columns of `Terms`


class KnnDistance(nn.Module):
    """vectors (N, D) -> mean distance to the k nearest rows of `bank` (M, D). Written with a
    matrix product and TopK, in float64 (|z|^2 - 2 z.b + |b|^2 cancels badly in float32), so the
    ONNX graph holds the bank as a constant and computes exactly this: no approximate search."""

    def __init__(self, bank: torch.Tensor, k: int, skip_self: bool = False) -> None:
        super().__init__()
        bank = bank.double()
        self.register_buffer("bank", bank)  # (M, D)
        self.register_buffer("bank_sq", bank.pow(2).sum(1))  # (M,)
        self.k = int(max(1, min(k, len(bank) - int(skip_self))))
        self.skip_self = skip_self  # calibration on the bank's own rows: leave the row out

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        z = z.double()
        d2 = z.pow(2).sum(1, keepdim=True) - 2.0 * z @ self.bank.T + self.bank_sq  # (N, M)
        k = self.k + int(self.skip_self)
        nearest = torch.topk(d2, k, dim=1, largest=False).values  # (N, k), ascending
        if self.skip_self:
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


class Term(nn.Module):
    """(error (N,), z (N, L), h (N, F)) -> one term (N,): the error itself, or a distance module
    applied to z or h."""

    def __init__(self, name: str, distance: nn.Module | None = None) -> None:
        super().__init__()
        self.name, self.distance = name, distance

    def forward(self, error: torch.Tensor, z: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        if self.distance is None:
            return error
        return self.distance(h if self.name == "input_knn" else z)


class SumOfScaled(nn.Module):
    """(error, z, h) -> (term a - c0) / s0 + (term b - c1) / s1."""

    def __init__(self, a: Term, b: Term, center: list[float], scale: list[float]) -> None:
        super().__init__()
        self.a, self.b = a, b
        self.center, self.scale = [float(c) for c in center], [float(s) for s in scale]

    def forward(self, error: torch.Tensor, z: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        return combine(self.a(error, z, h), self.b(error, z, h), self.center, self.scale)


def combine(a: Any, b: Any, center: Any, scale: Any) -> Any:
    """The combined scores' formula (tensors or arrays): each term centred and scaled, summed."""
    return (a - center[0]) / scale[0] + (b - center[1]) / scale[1]


def term_module(name: str, state: dict | None, skip_self: bool = False) -> Term:
    """The module of one term from an `anomaly_scores` state."""
    if name == "error":
        return Term(name)
    assert state is not None
    if name == "density":
        return Term(name, MahalanobisDistance(state["mean"], state["precision"]))
    bank = state["bank" if name == "knn" else "input_bank"]
    return Term(name, KnnDistance(bank, int(state["k"]), skip_self))


class Terms(nn.Module):
    """(error, z, h) -> (N, 4): every term (`TERMS`), for calibrating the scores."""

    def __init__(self, state: dict, skip_self: bool = False) -> None:
        super().__init__()
        self.terms = nn.ModuleList(term_module(t, state, skip_self) for t in TERMS)

    def forward(self, error: torch.Tensor, z: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        return torch.stack([t(error, z, h).float() for t in self.terms], 1)


# -- the registry -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class ScoreKind:
    """One score: one term (`TERMS`), or two summed after each is centred and scaled."""

    about: str
    terms: tuple[str, ...]

    @property
    def needs(self) -> tuple[str, ...]:
        """The `anomaly_scores` keys it reads."""
        keys = {"knn": "bank", "input_knn": "input_bank", "density": "mean"}
        return tuple(keys[t] for t in self.terms if t in keys) + (
            ("center",) if len(self.terms) > 1 else ()
        )


SCORES: dict[str, ScoreKind] = {
    "reconstruction": ScoreKind("the reconstruction error", ("error",)),
    "knn": ScoreKind("distance to the k nearest training embeddings", ("knn",)),
    "density": ScoreKind(
        "reconstruction error + latent Mahalanobis distance", ("error", "density")
    ),
    "knn+reconstruction": ScoreKind("knn + reconstruction error", ("error", "knn")),
    "input-knn": ScoreKind("distance to the k nearest training inputs", ("input_knn",)),
    "input-knn+reconstruction": ScoreKind("input-knn + reconstruction", ("error", "input_knn")),
    "knn+input-knn": ScoreKind("knn + input-knn", ("knn", "input_knn")),
}
# the default score per data kind, chosen by benchmarks/quality_anomaly.py (docs/autoencoders.md)
DEFAULT_SCORES: dict[str, str] = {"image": "knn+input-knn", "tabular": "input-knn"}


def default_score(kind: str) -> str:
    """The score a model of this data kind uses unless told otherwise."""
    return DEFAULT_SCORES.get(kind, "input-knn")


def check_score(name: str, data: dict, source: str) -> None:
    """One line for a score name that is unknown, or that this model file cannot compute (files
    written before the stored scores know only the reconstruction error)."""
    from dlcli.errors import UsageError

    if name not in SCORES:
        raise UsageError(f"--score must be one of {', '.join(SCORES)}, got '{name}'")
    state = data.get("anomaly_scores")
    if name != "reconstruction" and not (
        isinstance(state, dict) and all(k in state for k in SCORES[name].needs)
    ):
        raise UsageError(
            f"{source}: this model file keeps no training embeddings, so its only score is "
            f"'reconstruction' (it was written by an older dl)",
            "retrain it to use --score " + name,
        )


def score_module(name: str, state: dict | None) -> nn.Module:
    """The (error, z, h) -> score module of `name` from a model file's `anomaly_scores` state."""
    terms = [term_module(t, state) for t in SCORES[name].terms]
    if len(terms) == 1:
        return terms[0]
    assert state is not None
    return SumOfScaled(*terms, state["center"][name], state["scale"][name])


# -- fitting after training -----------------------------------------------------------------------
def bank_rows(n: int, seed: int, limit: int = BANK_ROWS) -> torch.Tensor:
    """Which of `n` training rows the bank keeps: all of them, or `limit` chosen by a seeded
    permutation (so the same data and seed give the same bank), in their original order."""
    if n <= limit:
        return torch.arange(n)
    gen = torch.Generator().manual_seed(int(seed))
    return torch.randperm(n, generator=gen)[:limit].sort().values


def input_bank_rows(keep: torch.Tensor, width: int) -> torch.Tensor:
    """The rows of `keep` the input bank holds: all, or evenly spaced ones so that it stays
    within INPUT_BANK_VALUES numbers (wide images keep fewer rows)."""
    most = max(NEIGHBOURS + 1, INPUT_BANK_VALUES // max(1, width))
    if len(keep) <= most:
        return keep
    return keep[torch.linspace(0, len(keep) - 1, most).round().long().unique()]


def fit_banks(z_bank: torch.Tensor, h_bank: torch.Tensor, k: int = NEIGHBOURS) -> dict[str, Any]:
    """The fitted part of the `anomaly_scores` state: the banks of training embeddings (M, L)
    and inputs (M', F), k, and the Gaussian fit (mean, precision matrix) of the embeddings."""
    z64 = z_bank.double()
    width = z64.shape[1]
    cov = torch.cov(z64.T).reshape(width, width) if len(z64) > 1 else None
    if cov is None or not torch.isfinite(cov).all():
        cov = torch.eye(width, dtype=torch.float64)
    ridge = 1e-3 * float(cov.diagonal().mean().clamp(min=1e-12))  # keeps it invertible
    precision = torch.linalg.inv(cov + ridge * torch.eye(width, dtype=torch.float64))
    return {
        "k": int(k),
        "bank": z_bank.float().contiguous(),
        "input_bank": h_bank.float().contiguous(),
        "mean": z64.mean(0).float(),
        "precision": precision.float(),
    }


def _robust(values: np.ndarray) -> tuple[float, float]:
    """(median, interquartile range) with a floor on the range so a constant term cannot divide
    by zero."""
    q1, med, q3 = np.percentile(values, [25, 50, 75])
    return float(med), float(max(q3 - q1, 1e-6 * max(1.0, abs(med)), 1e-12))


def calibrate(state: dict, terms: np.ndarray, percentile: float) -> dict[str, np.ndarray]:
    """Fill in the combined scores' centre and scale and every score's threshold (the
    `percentile` of its values) from the calibration rows' `terms` (N, 4: `Terms`); returns each
    score's values on those rows."""
    cols = {t: np.asarray(terms[:, i], dtype=np.float32) for i, t in enumerate(TERMS)}
    center, scale, values = {}, {}, {}
    for name, kind in SCORES.items():
        if len(kind.terms) == 1:
            values[name] = cols[kind.terms[0]]
            continue
        a, b = (cols[t] for t in kind.terms)
        (c0, s0), (c1, s1) = _robust(a), _robust(b)
        center[name], scale[name] = [c0, c1], [s0, s1]
        values[name] = combine(a, b, center[name], scale[name])
    state["center"], state["scale"] = center, scale
    state["thresholds"] = {n: float(np.percentile(v, percentile)) for n, v in values.items()}
    return values
