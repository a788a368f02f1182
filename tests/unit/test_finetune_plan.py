"""The fine-tuning plan (model/finetune.py) and how the TaskStep applies it, and the frozen-feature
cache (engine/feature_cache.py): which layers freeze, the parameter groups and their learning
rates, batch norm in eval mode while frozen, a resume in the middle of the schedule, and the
cached prefix giving the same weights as training through it. Small real networks, a few ms each."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from dlcli.data.target import Target
from dlcli.engine import feature_cache
from dlcli.engine.callbacks import Callback
from dlcli.engine.optim import make_optimizer, make_schedule
from dlcli.engine.task_step import TaskStep
from dlcli.engine.trainer import Interrupted, TrainConfig, Trainer
from dlcli.errors import UsageError
from dlcli.model import finetune
from dlcli.model.builder import LayerStack, build_network
from dlcli.model.tasks import make_task
from dlcli.spec.schema import resolve_spec


def resnet(classes: int = 3) -> nn.Module:
    spec, _ = resolve_spec(None, "resnet")
    return build_network(spec, (1, 8, 8), classes, "test").module


def body_loaded(net: nn.Module) -> set[str]:
    return {f"features.{k}" for k in net.features.state_dict()}


def cfg(epochs: int = 10, **kw: object) -> TrainConfig:
    return TrainConfig(epochs=epochs, batch_size=8, device="cpu", **kw)


# -- the plan --------------------------------------------------------------------------------
def test_the_loaded_top_level_layers_form_the_body_and_the_fresh_head_trains_first() -> None:
    net = resnet()
    plan = finetune.plan(net, body_loaded(net), cfg(10))
    assert plan == finetune.FineTunePlan(("features",), 1, 0.1)
    # the dropout-only classifier holds no tensors: neither body nor fresh
    assert finetune.loaded_layers(net, body_loaded(net)) == (["features"], ["head"])
    assert [plan.phase(e) for e in (1, 2, 10)] == [1, 2, 2]
    assert (plan.phase_epochs(1, 10), plan.phase_epochs(2, 10)) == (1, 9)
    assert finetune.FineTunePlan.from_state(plan.to_state()) == plan


@pytest.mark.parametrize(
    ("epochs", "head_epochs"), [(1, 0), (2, 1), (10, 1), (25, 2), (30, 3), (200, 3)]
)
def test_the_default_first_phase_is_a_tenth_of_the_run_from_1_to_3_epochs(
    epochs: int, head_epochs: int
) -> None:
    assert finetune.default_head_epochs(epochs) == head_epochs


def test_no_plan_when_turned_off_nothing_loaded_or_nothing_fresh() -> None:
    net = resnet()
    assert finetune.plan(net, body_loaded(net), cfg(10, fine_tune_epochs=0)) is None
    assert finetune.plan(net, set(), cfg(10)) is None
    assert finetune.plan(net, set(net.state_dict()), cfg(10)) is None  # same classes: all loaded
    assert finetune.plan(net, body_loaded(net), cfg(1)) is None  # one epoch: no room for phases
    partly = body_loaded(net) - {"features.0.weight"}  # a layer loaded in part is fresh
    assert finetune.plan(net, partly, cfg(10)) is None
    assert finetune.plan(net, body_loaded(net), cfg(10, fine_tune_epochs=4)).head_epochs == 4


def test_an_opt_in_schedule_runs_only_when_asked() -> None:
    """--init-from (another dl model) asks for the schedule with --fine-tune-epochs only."""
    net = resnet()
    assert finetune.plan(net, body_loaded(net), cfg(10), by_default=False) is None
    asked = finetune.plan(net, body_loaded(net), cfg(10, fine_tune_epochs=2), by_default=False)
    assert asked == finetune.FineTunePlan(("features",), 2, 0.1)


def test_a_first_phase_as_long_as_the_run_is_one_line() -> None:
    net = resnet()
    with pytest.raises(UsageError, match=r"--fine-tune-epochs 5: must be below --epochs 5"):
        finetune.plan(net, body_loaded(net), cfg(5, fine_tune_epochs=5))


def test_param_groups_give_the_body_a_tenth_of_the_learning_rate() -> None:
    net = resnet()
    plan = finetune.plan(net, body_loaded(net), cfg(10))
    slow, fast = plan.param_groups(net, 0.01)
    assert slow["lr"] == pytest.approx(0.001) and fast["lr"] == 0.01
    assert {id(p) for p in slow["params"]} == {id(p) for p in net.features.parameters()}
    assert {id(p) for p in fast["params"]} == {id(p) for p in net.head.parameters()}
    assert plan.set_phase(net, 1) == [net.features]
    assert not any(p.requires_grad for p in net.features.parameters())
    assert all(p.requires_grad for p in net.head.parameters())
    assert plan.set_phase(net, 2) == []
    assert all(p.requires_grad for p in net.parameters())


def test_onecycle_keeps_each_groups_own_peak() -> None:
    a, b = nn.Parameter(torch.zeros(1)), nn.Parameter(torch.zeros(1))
    opt = make_optimizer(
        "adamw", [{"params": [a], "lr": 0.01}, {"params": [b], "lr": 0.1}], 0.1, 0, 0
    )
    sched, _ = make_schedule("onecycle", opt, 0.1, 4, 4)
    peaks = [g["max_lr"] for g in opt.param_groups]
    assert peaks == [0.01, 0.1]
    assert sched is not None


# -- the schedule in the TaskStep -------------------------------------------------------------
def digits_like(n: int = 48, seed: int = 0) -> tuple:
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % 3
    x = torch.randn(n, 1, 8, 8, generator=g) * 0.3 + y.view(-1, 1, 1, 1).float()
    return x[:40], y[:40], x[40:], y[40:]


def step_for(net: nn.Module, config: TrainConfig, plan: object = None, frozen: list | None = None):
    target = Target("label", "classification", ["0", "1", "2"])
    task = make_task(target, None)
    return TaskStep(net, task, config, digits_like(), frozen=frozen, plan=plan)


class Probe(Callback):
    """Records the body's batch-norm statistics and the groups' learning rates per epoch."""

    def __init__(self, net: nn.Module, opt_of: object) -> None:
        self.net, self.opt_of, self.rows = net, opt_of, []

    def on_epoch_end(self, row: dict, snapshot: object) -> None:
        bn = self.net.features[1]
        self.rows.append((bn.running_mean.clone(), [g["lr"] for g in self.opt_of().param_groups]))


def test_phase_one_keeps_the_body_and_its_batch_norm_as_loaded_then_unfreezes_it() -> None:
    torch.manual_seed(0)
    net = resnet()
    start = copy.deepcopy(net.state_dict())
    config = cfg(3, schedule="constant", lr=0.01)
    plan = finetune.plan(net, body_loaded(net), config)
    step = step_for(net, config, plan)
    probe = Probe(net, lambda: step.opt)
    Trainer(step, 3, 0, [probe]).fit()
    (bn1, lrs1), (bn2, lrs2), _ = probe.rows
    assert torch.equal(bn1, start["features.1.running_mean"])  # eval mode while frozen
    assert not torch.equal(bn2, bn1)  # trains (and updates its statistics) once unfrozen
    assert lrs1 == lrs2 == [pytest.approx(0.001), 0.01]
    assert not torch.equal(net.features[0].weight, start["features.0.weight"])
    assert all(p.requires_grad for p in net.parameters())


@pytest.mark.parametrize("augmenting", [False, True], ids=["cache-off", "augmented"])
def test_a_layer_frozen_for_the_whole_run_keeps_its_batch_norm_when_trained_through(
    augmenting: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """--freeze (e.g. `--freeze backbone` with --augment, or DL_FEATURE_CACHE=0): the batches go
    through the frozen layers every epoch, which stay in eval mode, so their batch-norm running
    statistics and weights stay exactly as loaded while the head trains (the cached path cannot
    show this: it never runs the frozen layers in training)."""
    from dlcli import settings

    monkeypatch.setenv("DL_FEATURE_CACHE", "1" if augmenting else "0")
    settings.reload()
    torch.manual_seed(0)
    net = resnet()
    start = copy.deepcopy(net.state_dict())
    for p in net.features.parameters():
        p.requires_grad_(False)
    task = make_task(Target("label", "classification", ["0", "1", "2"]), None)
    noise = (lambda x: x + 0.01 * torch.randn_like(x)) if augmenting else None
    step = TaskStep(  # augmented inputs differ every epoch: nothing is cached
        net, task, cfg(2, lr=0.01), digits_like(), train_transform=noise, frozen=[net.features]
    )
    Trainer(step, 2).fit()
    assert step.forward_net is net  # trained through the frozen layers
    for k, v in net.features.state_dict().items():
        assert torch.equal(v, start[f"features.{k}"]), k  # running_mean/var included
    assert not torch.equal(net.head.weight, start["head.weight"])  # the head trained
    settings.reload()


class StopAfter(Callback):
    def __init__(self, epoch: int) -> None:
        self.epoch = epoch

    def on_epoch_end(self, row: dict, snapshot: object) -> None:
        if row["epoch"] == self.epoch:
            raise KeyboardInterrupt


@pytest.mark.parametrize("stop", [1, 2])
def test_a_run_interrupted_mid_schedule_resumes_in_the_right_phase_exactly(stop: int) -> None:
    """Stopped at the end of phase one (epoch 1) or inside phase two (epoch 2) of a 1 + 2 run:
    resuming gives the same weights, optimizer state and learning rates as the run straight
    through."""

    def fresh() -> tuple[nn.Module, TrainConfig, object]:
        torch.manual_seed(0)
        net = resnet()
        config = cfg(3, fine_tune_epochs=1, lr=0.01)
        return net, config, finetune.plan(net, body_loaded(net), config)

    net, config, plan = fresh()
    whole = step_for(net, config, plan)
    Trainer(whole, 3).fit()

    net2, config2, plan2 = fresh()
    with pytest.raises(Interrupted) as exc:
        Trainer(step_for(net2, config2, plan2), 3, 0, [StopAfter(stop)]).fit()
    snapshot = exc.value.snapshot
    net3, config3, plan3 = fresh()
    resumed = step_for(net3, config3, plan3)
    Trainer(resumed, 3).fit(copy.deepcopy(snapshot))
    for k, v in net.state_dict().items():
        torch.testing.assert_close(net3.state_dict()[k], v, rtol=1e-5, atol=1e-6, msg=k)
    assert [g["lr"] for g in resumed.opt.param_groups] == [g["lr"] for g in whole.opt.param_groups]


# -- the frozen-feature cache -----------------------------------------------------------------
def test_the_frozen_prefix_is_the_leading_frozen_top_level_layers() -> None:
    net = resnet()
    assert feature_cache.frozen_prefix(net, [net.features]) == 1
    assert feature_cache.frozen_prefix(net, [net.features, net.classifier]) == 2
    assert feature_cache.frozen_prefix(net, [net.classifier]) == 0
    assert feature_cache.frozen_prefix(net, list(net.children())) == 0  # nothing left to train
    assert feature_cache.frozen_prefix(net, [net.features[0]]) == 0  # not a top-level layer
    assert feature_cache.frozen_prefix(nn.Linear(2, 2), []) == 0


def test_the_cache_key_follows_the_inputs_and_the_frozen_weights() -> None:
    net = resnet()
    x = torch.randn(4, 1, 8, 8)
    key = feature_cache.cache_key(net[:1], None, [x, None], ["fp32", "cpu"])
    assert key == feature_cache.cache_key(net[:1], None, [x.clone(), None], ["fp32", "cpu"])
    assert key != feature_cache.cache_key(net[:1], None, [x + 1, None], ["fp32", "cpu"])
    assert key != feature_cache.cache_key(net[:1], None, [x, None], ["bf16", "cpu"])
    with torch.no_grad():
        net.features[0].weight.add_(1e-3)
    assert key != feature_cache.cache_key(net[:1], None, [x, None], ["fp32", "cpu"])


@pytest.mark.parametrize("cache", ["1", "0"])
def test_training_on_cached_features_equals_training_through_the_frozen_layers(
    cache: str, monkeypatch: pytest.MonkeyPatch, tmp_path: object
) -> None:
    """Same seed, same frozen prefix: the head's weights after 3 epochs match (DL_FEATURE_CACHE
    on and off), and the whole network is still the one trained (the prefix untouched)."""
    from dlcli import settings

    monkeypatch.setenv("DL_CACHE_DIR", str(tmp_path))

    def train(flag: str) -> tuple[nn.Module, TaskStep]:
        monkeypatch.setenv("DL_FEATURE_CACHE", flag)
        settings.reload()
        torch.manual_seed(0)
        net = resnet()
        for p in net.features.parameters():
            p.requires_grad_(False)
        step = step_for(net, cfg(3, lr=0.01), frozen=[net.features])
        Trainer(step, 3).fit()
        return net, step

    through, step_through = train("0")
    cached, step_cached = train(cache)
    assert isinstance(step_through.forward_net, LayerStack) and step_through.forward_net is through
    if cache == "1":
        assert list(dict(step_cached.forward_net.named_children())) == ["classifier", "head"]
        assert len(list((tmp_path / "features").glob("*.pt"))) == 1  # type: ignore[operator]
    for k, v in through.state_dict().items():
        torch.testing.assert_close(cached.state_dict()[k], v, rtol=1e-5, atol=1e-6, msg=k)
    settings.reload()


def test_token_ids_are_not_cached() -> None:
    """Text: the later layers need the padding mask made from the ids, so no cache."""
    emb = nn.Embedding(10, 4)
    net = LayerStack()
    net.add_module("emb", emb)
    net.add_module("flat", nn.Flatten())
    net.add_module("head", nn.Linear(12, 3))
    emb.weight.requires_grad_(False)
    x = torch.randint(1, 10, (40, 3))
    y = torch.arange(40) % 3
    task = make_task(Target("label", "classification", ["0", "1", "2"]), None)
    step = TaskStep(net, task, cfg(1), (x, y, x[:8], y[:8]), frozen=[emb])
    Trainer(step, 1).fit()
    assert step.forward_net is net


def test_a_damaged_cache_file_is_computed_again(
    monkeypatch: pytest.MonkeyPatch, tmp_path: object, capsys: pytest.CaptureFixture
) -> None:
    import contextlib

    from dlcli import settings

    monkeypatch.setenv("DL_CACHE_DIR", str(tmp_path))
    settings.reload()
    prefix = resnet()[:1].eval()
    x = torch.randn(6, 1, 8, 8)
    args = (prefix, lambda t: t, (x, None), torch.device("cpu"), contextlib.nullcontext, ["fp32"])
    first, _ = feature_cache.features(*args)
    (file,) = (tmp_path / "features").glob("*.pt")  # type: ignore[operator]
    file.write_bytes(b"not a torch file")
    again, val = feature_cache.features(*args)
    assert torch.equal(again, first) and val is None and first.shape == (6, 128)
    assert "could not be read; computing the features again" in capsys.readouterr().err
    reread, _ = feature_cache.features(*args)  # rewritten: read back
    assert torch.equal(reread, first)
    settings.reload()
