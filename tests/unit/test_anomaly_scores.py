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
    got = sc.KnnDistance(bank, 5, skip_self=True)(bank).numpy()
    np.testing.assert_allclose(got, _sorted_distances(bank, bank)[:, 1:6].mean(1), rtol=1e-6)


def test_knn_with_fewer_bank_rows_than_k_uses_them_all():
    bank = torch.tensor([[0.0, 0.0], [3.0, 4.0]])
    assert sc.KnnDistance(bank, 5, skip_self=True).k == 1
    got = sc.KnnDistance(bank, 5)(torch.tensor([[0.0, 0.0]]))
    assert got.item() == pytest.approx(2.5)  # (0 + 5) / 2


def test_mahalanobis_matches_numpy():
    bank, query = _data(2)
    state = sc.fit_banks(bank, bank)
    mean, prec = state["mean"].double().numpy(), state["precision"].double().numpy()
    d = query.double().numpy() - mean
    expected = np.einsum("ij,jk,ik->i", d, prec, d)
    got = sc.MahalanobisDistance(state["mean"], state["precision"])(query).numpy()
    np.testing.assert_allclose(got, expected, rtol=1e-4)
    cov = np.cov(bank.double().numpy(), rowvar=False)  # the ridge is small next to the variances
    assert np.allclose(np.linalg.inv(prec), cov, rtol=0.02, atol=0.01 * cov.diagonal().mean())


def test_bank_rows_are_bounded_sorted_and_deterministic():
    assert torch.equal(sc.bank_rows(50, seed=1), torch.arange(50))
    a, b = sc.bank_rows(25_000, seed=7), sc.bank_rows(25_000, seed=7)
    assert torch.equal(a, b) and len(a) == sc.BANK_ROWS == 10_000
    assert bool((a[1:] > a[:-1]).all()) and int(a.max()) < 25_000
    assert not torch.equal(a, sc.bank_rows(25_000, seed=8))


def _calibrated(seed: int = 3, pct: float = 95.0):
    bank, calib_z = _data(seed)
    rng = np.random.default_rng(seed)
    gen = torch.Generator().manual_seed(seed)
    h_bank = torch.randn(200, 9, generator=gen)
    calib_h = torch.randn(len(calib_z), 9, generator=gen) * 1.5
    error = torch.from_numpy(rng.gamma(2.0, 1.0, len(calib_z)).astype(np.float32))
    state = sc.fit_banks(bank, h_bank)
    terms = sc.Terms(state)(error, calib_z, calib_h).numpy()
    return state, sc.calibrate(state, terms, pct), (error, calib_z, calib_h)


def test_every_score_gets_its_threshold_and_the_modules_reproduce_the_calibration():
    state, values, (error, z, h) = _calibrated()
    assert set(state["thresholds"]) == set(sc.SCORES) == set(values)
    for name in sc.SCORES:
        got = sc.score_module(name, state)(error, z, h).numpy()
        np.testing.assert_allclose(got, values[name], rtol=1e-5, atol=1e-5)
        assert state["thresholds"][name] == pytest.approx(np.percentile(values[name], 95.0))
        assert (got > state["thresholds"][name]).mean() == pytest.approx(0.05, abs=0.03)
    # combined scores put both terms on one scale: centred on the median, divided by the IQR
    c, s = state["center"]["density"], state["scale"]["density"]
    assert c[0] == pytest.approx(float(np.median(error.numpy()))) and s[0] > 0 and s[1] > 0
    # input-knn measures on the network inputs, knn on the latent vectors
    np.testing.assert_allclose(
        values["input-knn"], sc.KnnDistance(state["input_bank"], 5)(h).numpy()
    )
    np.testing.assert_allclose(values["knn"], sc.KnnDistance(state["bank"], 5)(z).numpy())
    a, b = values["knn"], values["input-knn"]  # knn+input-knn: both distances, each scaled
    ca, cb = (float(np.median(v)) for v in (a, b))
    sa, sb = (float(np.subtract(*np.percentile(v, [75, 25]))) for v in (a, b))
    np.testing.assert_allclose(values["knn+input-knn"], (a - ca) / sa + (b - cb) / sb, rtol=1e-4)


def test_input_bank_is_bounded_in_values():
    keep = torch.arange(10_000)
    assert torch.equal(sc.input_bank_rows(keep, 64), keep)  # 640k values: all rows
    wide = sc.input_bank_rows(keep, 3 * 224 * 224)  # a photo: 150,528 values a row
    assert len(wide) * 3 * 224 * 224 <= sc.INPUT_BANK_VALUES and len(wide) >= 6
    assert int(wide[0]) == 0 and int(wide[-1]) == 9_999 and bool((wide[1:] > wide[:-1]).all())


def test_a_constant_term_does_not_divide_by_zero():
    bank = torch.zeros(20, 3)
    state = sc.fit_banks(bank, bank)
    terms = sc.Terms(state, skip_self=True)(torch.zeros(20), bank, bank).numpy()
    values = sc.calibrate(state, terms, 99)
    assert all(np.isfinite(v).all() for v in values.values())
    assert all(np.isfinite(t) for t in state["thresholds"].values())


def test_unknown_or_unavailable_score_is_one_line():
    with pytest.raises(UsageError, match=r"^--score must be one of reconstruction, knn, density"):
        sc.check_score("nearest", {"anomaly_scores": {}}, "m.pt")
    with pytest.raises(UsageError, match=r"^m\.pt: this model file keeps no training embeddings"):
        sc.check_score("knn", {"threshold": 1.0}, "m.pt")
    sc.check_score("reconstruction", {"threshold": 1.0}, "m.pt")  # old files: still fine
    state, _, _ = _calibrated()
    sc.check_score("input-knn", {"anomaly_scores": state}, "m.pt")
