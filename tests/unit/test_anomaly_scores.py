"""The autoencoder's anomaly scores (dlcli/model/anomaly_scores.py) against reference
implementations: kNN distances vs an exact float64 search written out in numpy, the Mahalanobis term vs
numpy, the bounded deterministic bank, thresholds per score, and one clear line for a score a
model file cannot compute."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from dlcli.errors import UsageError
from dlcli.model import anomaly_scores as sc


def _data(seed: int = 0, n: int = 300, m: int = 40, width: int = 6):
    rng = np.random.default_rng(seed)
    bank = rng.normal(size=(n, width)) * rng.uniform(0.5, 20, width)  # very different scales
    query = rng.normal(size=(m, width)) * 10 + 3
    return torch.from_numpy(bank).float(), torch.from_numpy(query).float()


def _sorted_distances(bank: torch.Tensor, query: torch.Tensor) -> np.ndarray:
    """Every query-to-bank Euclidean distance, float64, each row ascending."""
    diff = query.double().numpy()[:, None, :] - bank.double().numpy()[None, :, :]
    return np.sort(np.sqrt((diff**2).sum(-1)), axis=1)


def test_knn_distance_matches_exact_neighbour_search():
    bank, query = _data()
    dist = _sorted_distances(bank, query)
    for k in (1, 5):
        got = sc.KnnDistance(bank, k)(query).numpy()
        np.testing.assert_allclose(got, dist[:, :k].mean(1), rtol=1e-6)


def test_knn_leaves_a_bank_row_out_of_its_own_neighbours():
    bank, _ = _data(1)
    got = sc.KnnDistance(bank, 5)(bank, skip_self=True).numpy()
    np.testing.assert_allclose(got, _sorted_distances(bank, bank)[:, 1:6].mean(1), rtol=1e-6)


def test_knn_with_fewer_bank_rows_than_k_uses_them_all():
    bank = torch.tensor([[0.0, 0.0], [3.0, 4.0]])
    got = sc.KnnDistance(bank, 5)(torch.tensor([[0.0, 0.0]]))
    assert got.item() == pytest.approx(2.5)  # (0 + 5) / 2


def test_mahalanobis_matches_numpy():
    bank, query = _data(2)
    state, _ = sc.fit_scores(bank, np.ones(len(query)), query, 99)
    mean, prec = state["mean"].double().numpy(), state["precision"].double().numpy()
    d = query.double().numpy() - mean
    expected = np.einsum("ij,jk,ik->i", d, prec, d)
    np.testing.assert_allclose(sc.MahalanobisDistance(state["mean"], state["precision"])(query).numpy(), expected, rtol=1e-4)  # fmt: skip
    cov = np.cov(bank.double().numpy(), rowvar=False)  # the ridge is small next to the variances
    assert np.allclose(np.linalg.inv(prec), cov, rtol=0.02, atol=0.01 * cov.diagonal().mean())


def test_bank_rows_are_bounded_sorted_and_deterministic():
    assert torch.equal(sc.bank_rows(50, seed=1), torch.arange(50))
    a, b = sc.bank_rows(25_000, seed=7), sc.bank_rows(25_000, seed=7)
    assert torch.equal(a, b) and len(a) == sc.BANK_ROWS == 10_000
    assert bool((a[1:] > a[:-1]).all()) and int(a.max()) < 25_000
    assert not torch.equal(a, sc.bank_rows(25_000, seed=8))


def test_every_score_gets_its_threshold_and_the_modules_reproduce_the_calibration():
    bank, calib_z = _data(3)
    rng = np.random.default_rng(3)
    error = rng.gamma(2.0, 1.0, len(calib_z)).astype(np.float32)
    state, values = sc.fit_scores(bank, error, calib_z, 95.0)
    assert set(state["thresholds"]) == set(sc.SCORES) == set(values)
    for name in sc.SCORES:
        module = sc.score_module(name, state)
        got = module(torch.from_numpy(error), calib_z).numpy()
        np.testing.assert_allclose(got, values[name], rtol=1e-5, atol=1e-5)
        assert state["thresholds"][name] == pytest.approx(np.percentile(values[name], 95.0))
        assert (got > state["thresholds"][name]).mean() == pytest.approx(0.05, abs=0.03)
    # the combined scores put both terms on one scale: median 0 and unit IQR per term
    c, s = state["center"]["density"], state["scale"]["density"]
    assert c[0] == pytest.approx(np.median(error)) and s[0] > 0 and s[1] > 0


def test_a_constant_term_does_not_divide_by_zero():
    bank = torch.zeros(20, 3)
    state, values = sc.fit_scores(bank, np.zeros(20, np.float32), bank, 99, calib_is_bank=True)
    assert all(np.isfinite(v).all() for v in values.values())
    assert all(np.isfinite(t) for t in state["thresholds"].values())


def test_unknown_or_unavailable_score_is_one_line():
    with pytest.raises(UsageError, match=r"^--score must be one of reconstruction, knn, "):
        sc.check_score("nearest", {"anomaly_scores": {}}, "m.pt")
    with pytest.raises(UsageError, match=r"^m\.pt: this model file keeps no training embeddings"):
        sc.check_score("knn", {"threshold": 1.0}, "m.pt")
    sc.check_score("reconstruction", {"threshold": 1.0}, "m.pt")  # old files: still fine
