"""The packed ensemble layer (`mlp_ensemble`): the same numbers as K separate torch MLPs, members
trained on their own losses, and the engine's contract around it."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from dlcli.engine.task_step import member_loss, trained_members
from dlcli.errors import SpecError
from dlcli.model.builder import build_network
from dlcli.spec.schema import Spec

K, F, OUT = 4, 7, 3


def _spec(**layer) -> Spec:
    return Spec.model_validate({"layers": [{"type": "mlp_ensemble", **layer}]})


def _network(outputs: int = OUT, **layer) -> nn.Module:
    layer = {"hidden": [16, 8], "members": K, "dropout": 0.0, **layer}
    torch.manual_seed(0)
    return build_network(_spec(**layer), (F,), outputs).module


def _member(net: nn.Module, k: int) -> nn.Sequential:
    """Member k of the packed body as a plain torch MLP (Linear, BatchNorm1d, ReLU, ...)."""
    layers: list[nn.Module] = []
    for m in net[0].body:
        if hasattr(m, "weight") and m.weight.dim() == 3:  # a packed dense layer
            lin = nn.Linear(m.weight.shape[1], m.weight.shape[2])
            lin.weight.data = m.weight[k].T.clone()
            lin.bias.data = m.bias[k, 0].clone()
            layers.append(lin)
        elif hasattr(m, "norm"):  # packed batch norm: member k's slice of the features
            h = m.features
            bn = nn.BatchNorm1d(h)
            for name in ("weight", "bias", "running_mean", "running_var"):
                getattr(bn, name).data = getattr(m.norm, name)[k * h : (k + 1) * h].clone()
            layers.append(bn)
        else:
            layers.append(m)
    return nn.Sequential(*layers).eval()


def test_evaluation_is_the_mean_of_k_separate_mlps() -> None:
    net = _network()
    with torch.no_grad():  # move the batch-norm statistics off their initial values
        net.train()
        net(torch.randn(64, F) * 3 + 1)
    net.eval()
    x = torch.randn(10, F)
    with torch.no_grad():
        got = net(x)
        members = torch.stack([_member(net, k)(x) for k in range(K)])
    assert got.shape == (10, OUT)
    torch.testing.assert_close(got, members.mean(0), rtol=1e-5, atol=1e-6)
    assert members.std(0).mean() > 1e-3  # the members differ (independent initialisations)


def test_training_output_has_one_row_per_member_and_each_member_its_own_batch_norm() -> None:
    net = _network().train()
    x = torch.randn(12, F)
    out = net(x)
    assert out.shape == (12, K, OUT)
    # member k in training mode = the plain MLP with batch statistics
    for k in range(K):
        ref = _member(net, k).train()
        torch.testing.assert_close(out[:, k], ref(x), rtol=1e-4, atol=1e-5)


def test_member_loss_is_the_mean_of_the_members_losses() -> None:
    ce = nn.CrossEntropyLoss()
    out = torch.randn(5, K, OUT)
    y = torch.randint(0, OUT, (5,))
    want = torch.stack([ce(out[:, k], y) for k in range(K)]).mean()
    torch.testing.assert_close(member_loss(ce, K)(out, y), want)
    assert member_loss(ce, 1) is ce


def test_regression_members_and_gradients_reach_every_member() -> None:
    net = _network(outputs=1).train()
    assert trained_members(net) == K
    out = net(torch.randn(9, F))
    loss = member_loss(lambda z, y: nn.functional.mse_loss(z.squeeze(-1), y), K)(
        out, torch.randn(9)
    )
    loss.backward()
    head = net[0].body[-1]
    assert (head.weight.grad.abs().sum(dim=(1, 2)) > 0).all()


def test_a_plain_network_has_one_member_and_an_ensemble_must_come_last() -> None:
    assert trained_members(nn.Sequential(nn.Linear(3, 2))) == 1
    net = _network()
    with pytest.raises(SpecError, match="must be the network's last layer"):
        trained_members(nn.Sequential(net, nn.Identity()))


def test_spec_errors_name_the_layer_and_field() -> None:
    with pytest.raises(SpecError, match=r"layers\[0\] \(mlp_ensemble\): needs flat"):
        build_network(_spec(hidden=[8]), (3, 8, 8), 2)
    with pytest.raises(SpecError, match="members"):
        build_network(_spec(hidden=[8], members=0), (F,), 2)
    with pytest.raises(SpecError, match="sizes must be positive"):
        build_network(_spec(hidden=[8, 0]), (F,), 2)


def test_one_member_is_a_plain_mlp_in_training_too() -> None:
    """`members: 1` (a point of the preset's tune space) trains as one network: (N, outputs)."""
    net = _network(members=1).train()
    assert trained_members(net) == 1
    out = net(torch.randn(6, F))
    assert out.shape == (6, OUT)
    nn.CrossEntropyLoss()(out, torch.randint(0, OUT, (6,))).backward()


def test_wide_path_adds_each_members_linear_map_of_the_inputs() -> None:
    net = _network(wide=True).eval()
    wide = net[0].wide
    assert torch.count_nonzero(wide.weight) == 0  # starts as the plain ensemble
    with torch.no_grad():
        wide.weight.normal_()
        wide.bias.normal_()
        x = torch.randn(5, F)
        got = net(x)
        want = torch.stack(
            [_member(net, k)(x) + x @ wide.weight[k] + wide.bias[k, 0] for k in range(K)]
        ).mean(0)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
