"""The exact linear path of `mlp_ensemble` (`linear_l2`, `blend`; engine/linear_path.py): the
L-BFGS fit reaches scikit-learn's L2 optimum (LogisticRegression C=1 is l2 0.5, Ridge alpha is l2),
and the layer's evaluation output is exactly the blend of the ensemble and the fitted path."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import assert_error

from dlcli.engine import linear_path
from dlcli.engine.fit_data import held_out_loss
from dlcli.errors import SpecError
from dlcli.model.builder import build_network
from dlcli.model.tasks import make_task
from dlcli.spec.schema import Spec

sk = pytest.importorskip("sklearn")


def _table(classes: int, rows: int = 300, features: int = 8, seed: int = 0):
    from sklearn.datasets import make_classification

    x, y = make_classification(
        n_samples=rows, n_features=features, n_informative=5, n_classes=classes,
        n_clusters_per_class=1, flip_y=0.05, random_state=seed,
    )  # fmt: skip
    x = (x - x.mean(0)) / x.std(0)
    return x.astype(np.float32), y


class _Target:
    """The fitted target a task reads (classes, or the standardising mean/std)."""

    def __init__(self, task: str, classes: int = 0) -> None:
        self.task = task
        self.classes = [str(c) for c in range(classes)] if classes else None
        self.mean, self.std = 0.0, 1.0


def _bce(z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return F.binary_cross_entropy_with_logits(z.squeeze(-1), y.to(z.dtype))


def test_binary_fit_matches_logistic_regression_c1() -> None:
    from sklearn.linear_model import LogisticRegression

    x, y = _table(2)
    ref = LogisticRegression(C=1.0, tol=1e-10, max_iter=10_000).fit(x, y)
    w, b, iters = linear_path.fit_linear(torch.tensor(x), torch.tensor(y), _bce, 0.5, 1)
    assert iters > 0
    np.testing.assert_allclose(w[:, 0].numpy(), ref.coef_[0], atol=2e-4)
    np.testing.assert_allclose(b.numpy(), ref.intercept_, atol=2e-4)
    pred = (torch.tensor(x) @ w + b).squeeze(-1).numpy() > 0
    assert (pred == ref.predict(x)).all()


def test_multiclass_fit_matches_multinomial_logistic_regression() -> None:
    from sklearn.linear_model import LogisticRegression

    x, y = _table(3)
    ref = LogisticRegression(C=1.0, tol=1e-10, max_iter=10_000).fit(x, y)  # multinomial
    w, b, _ = linear_path.fit_linear(
        torch.tensor(x), torch.tensor(y), lambda z, t: F.cross_entropy(z, t), 0.5, 3
    )
    proba = torch.softmax(torch.tensor(x) @ w + b, dim=-1).numpy()
    np.testing.assert_allclose(proba, ref.predict_proba(x), atol=2e-4)
    np.testing.assert_allclose(w.T.numpy(), ref.coef_, atol=5e-4)


def test_regression_fit_matches_ridge() -> None:
    from sklearn.datasets import make_regression
    from sklearn.linear_model import Ridge

    x, y = make_regression(n_samples=200, n_features=6, noise=20.0, random_state=1)
    x = ((x - x.mean(0)) / x.std(0)).astype(np.float32)
    y = ((y - y.mean()) / y.std()).astype(np.float32)
    ref = Ridge(alpha=2.0).fit(x, y)  # sum of squares + 2 ||w||² = rows * (mse + 2 ||w||² / rows)
    mse = lambda z, t: F.mse_loss(z.squeeze(-1), t)  # noqa: E731
    w, b, _ = linear_path.fit_linear(torch.tensor(x), torch.tensor(y), mse, 2.0, 1)
    np.testing.assert_allclose(w[:, 0].numpy(), ref.coef_, atol=1e-5)
    np.testing.assert_allclose(float(b[0]), ref.intercept_, atol=1e-5)


def _ensemble(features: int, outputs: int, **layer):
    spec = {"hidden": [16], "members": 4, "linear_l2": 0.5, **layer}
    torch.manual_seed(0)
    doc = {"layers": [{"type": "mlp_ensemble", **spec}]}
    return build_network(Spec.model_validate(doc), (features,), outputs).module


@pytest.mark.parametrize("blend", [0.0, 0.75, 1.0])
def test_evaluation_output_is_the_blend_of_ensemble_and_linear_path(blend: float) -> None:
    x, y = _table(3)
    xt, yt = torch.tensor(x), torch.tensor(y)
    net = _ensemble(8, 3, blend=blend).eval()
    packed, path = net[0], net[0].linear
    with torch.no_grad():
        before = net(xt)  # blend 0 until fitted: training's validation passes see the ensemble
        ensemble = packed.body(xt).mean(0)
    torch.testing.assert_close(before, ensemble, rtol=0, atol=0)
    fitted = linear_path.fit(net, make_task(_Target("classification", 3), None), (xt, yt))
    assert fitted is not None and fitted.blend == blend and fitted.rows == len(x)
    assert float(path.blend) == blend and path.weight.abs().sum() > 0
    with torch.no_grad():
        got = net(xt)
        want = (1 - blend) * ensemble + blend * (xt @ path.weight + path.bias)
    torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-6)
    if blend == 0.0:
        torch.testing.assert_close(got, ensemble, rtol=0, atol=0)
    net.train()  # training sees each member's outputs only: (N, K, outputs)
    assert net(xt[:5]).shape == (5, 4, 3)
    names = {n for n, _ in net.named_parameters()}
    assert not any(n.startswith("0.linear") for n in names)  # buffers: no optimizer touches them
    assert {"0.linear.weight", "0.linear.bias", "0.linear.blend"} <= set(net.state_dict())


def test_validation_rows_replace_the_blend_only_with_clear_evidence() -> None:
    """An ensemble that says nothing (zero outputs) against a linear path on a linear table: the
    validation loss clearly prefers more of the linear path than the default prior 0.5; without
    validation rows the prior stays."""
    x, y = _table(2, rows=400, seed=3)
    xt, yt = torch.tensor(x), torch.tensor(y)
    net = _ensemble(8, 1)
    with torch.no_grad():  # an ensemble that says nothing: only the linear path informs
        net[0].body[-1].weight.zero_()
        net[0].body[-1].bias.zero_()
    task = make_task(_Target("classification", 2), None)
    fitted = linear_path.fit(net, task, (xt[:300], yt[:300]), (xt[300:], yt[300:]))
    assert fitted is not None and fitted.blend > 0.5, fitted
    assert linear_path.fit(_ensemble(8, 1), task, (xt, yt)).blend == 0.5  # no validation rows


def test_a_linear_path_that_costs_accuracy_is_blended_out() -> None:
    """XOR of two signs: the trained ensemble is right, the linear path is at chance. Blending
    its near-zero logits in tempers the ensemble (a lower cross-entropy is possible), but the
    accuracy test sees the cost: the prior 0.75 gives way to the ensemble."""
    from dlcli.engine.task_step import member_loss

    gen = torch.Generator().manual_seed(0)
    x = torch.randn(600, 4, generator=gen)
    y = ((x[:, 0] * x[:, 1]) > 0).long()
    net = _ensemble(4, 1, hidden=[32], blend=0.75)
    opt = torch.optim.Adam(net.parameters(), lr=0.01)
    loss = member_loss(_bce, 4)
    net.train()
    for _ in range(300):
        opt.zero_grad()
        loss(net(x[:450]), y[:450]).backward()
        opt.step()
    task = make_task(_Target("classification", 2), None)
    fitted = linear_path.fit(net.eval(), task, (x[:450], y[:450]), (x[450:], y[450:]))
    assert fitted is not None and fitted.blend < 0.75, fitted
    with torch.no_grad():
        accuracy = ((net(x[450:]).squeeze(-1) > 0).long() == y[450:]).float().mean()
    assert accuracy > 0.85, accuracy


@pytest.mark.parametrize(
    ("gains", "evidence", "want"),
    [
        ([0.02, -0.03, 0.04, -0.01] * 10, 1.5, 0.75),  # noise around zero: the prior stays
        ([0.02, 0.03, 0.01, 0.02] * 10, 1.5, 0.0),  # every block gains: clear
        ([0.02, -0.03, 0.04, -0.01] * 10, 0.0, 0.0),  # evidence 0: any mean gain
    ],
)
def test_clear_winner_is_a_paired_test_against_the_prior(
    gains: list[float], evidence: float, want: float
) -> None:
    base = torch.rand(len(gains), dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    per_block = {0.75: base, 0.0: base + torch.tensor(gains, dtype=torch.float64), 1.0: base - 1}
    assert linear_path._clear_winner(per_block, 0.75, evidence) == want


def test_no_linear_path_means_nothing_to_fit() -> None:
    net = _ensemble(8, 3, linear_l2=None)
    assert net[0].linear is None and linear_path.owner(net) is None
    task = make_task(_Target("classification", 3), None)
    x, y = _table(3)
    assert linear_path.fit(net, task, (torch.tensor(x), torch.tensor(y))) is None


def test_blend_without_linear_l2_is_one_spec_error() -> None:
    with pytest.raises(SpecError, match=r"layers\[0\] \(mlp_ensemble\): field 'blend' needs"):
        _ensemble(8, 3, linear_l2=None, blend=0.5)
    with pytest.raises(SpecError, match="field 'blend_evidence' needs"):
        _ensemble(8, 3, linear_l2=None, blend_evidence=2.0)
    with pytest.raises(SpecError, match="linear_l2"):
        _ensemble(8, 3, linear_l2=0.0)


def test_the_preset_spec_error_reaches_the_user_as_one_line(dl_inproc, tmp_path) -> None:
    spec = tmp_path / "s.yaml"
    spec.write_text("layers:\n  - mlp_ensemble: [8]\n    blend: 0.5\n")
    res = dl_inproc("build", "--spec", spec, "--input-shape", "4", "--outputs", "2")
    assert_error(res, "field 'blend' needs 'linear_l2'")


def test_a_fit_without_finite_weights_leaves_the_ensemble_alone() -> None:
    x, y = _table(3)
    xt, yt = torch.tensor(x), torch.tensor(y)
    xt[0, 0] = float("inf")  # no finite optimum: the weights come back NaN
    net = _ensemble(8, 3, blend=0.75).eval()
    fitted = linear_path.fit(net, make_task(_Target("classification", 3), None), (xt, yt))
    assert fitted is not None and fitted.blend == 0.0
    path = net[0].linear
    assert float(path.blend) == 0.0 and torch.count_nonzero(path.weight) == 0
    with torch.no_grad():
        torch.testing.assert_close(net(xt[1:]), net[0].body(xt[1:]).mean(0), rtol=0, atol=0)


def test_balanced_class_weights_reach_the_linear_fit() -> None:
    """--class-weights balanced weighs the linear path's loss as it weighs the ensemble's: on a
    table with ~6% of one class the fitted path finds more of the rare class."""
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(2000, 2, generator=gen)
    y = (x[:, 0] + 0.5 * torch.randn(2000, generator=gen) > 1.6).long()
    task = make_task(_Target("classification", 2), None)
    found = {}
    for balanced in (False, True):
        net = _ensemble(2, 1, blend=1.0).eval()
        linear_path.fit(net, task, (x, y), balanced=balanced)
        with torch.no_grad():
            pred = net(x).squeeze(-1) > 0
        found[balanced] = float(pred[y == 1].float().mean())
    assert found[True] > found[False] + 0.2, found


@pytest.mark.parametrize("blend", [0.0, 1.0])
def test_held_out_loss_is_the_blended_models_validation_loss(blend: float) -> None:
    """`dl tune` scores a trial by the model as saved: after the linear path's fit, the validation
    loss is that of the blend (blend 1: the linear model's own cross-entropy), not the last
    epoch's (the ensemble alone)."""
    x, y = _table(3, rows=400, seed=5)
    xt, yt = torch.tensor(x), torch.tensor(y)
    net = _ensemble(8, 3, blend=blend)
    task = make_task(_Target("classification", 3), None)
    with torch.no_grad():
        ensemble_only = float(F.cross_entropy(net.eval()(xt[300:]), yt[300:]))
    linear_path.fit(net, task, (xt[:300], yt[:300]), blend=blend)
    got = held_out_loss(net, task, xt[300:], yt[300:])
    path = net[0].linear
    with torch.no_grad():
        linear = float(F.cross_entropy(xt[300:] @ path.weight + path.bias, yt[300:]))
    want = ensemble_only if blend == 0.0 else linear
    assert got == pytest.approx(want, rel=1e-5)
    assert linear != pytest.approx(ensemble_only, rel=1e-2)  # the two models differ
