"""engine/optim.eager makes the same updates as torch's stock optimizer classes, bit for bit.

Every optimizer in OPTIMIZERS, with and without weight decay, momentum (so sgd's nesterov) and the
GAN's Adam beta1, under every schedule in SCHEDULES, and in the trainer's loop with gradient
clipping and a GradScaler: two identical networks trained on the same batches, one with dl's
eager class (make_optimizer), one with the stock torch class built from the same arguments, must
end with equal parameters, optimizer state_dict and schedule state (torch.equal, no tolerance).
Also: the eager class really skips the torch.compile wrappers, and a `dl`-like process using it
never imports torch._dynamo (which the stock classes do)."""

from __future__ import annotations

import copy
import inspect
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.optim.optimizer as torch_optimizer
from torch import nn

from dlcli.engine.optim import OPTIMIZERS, SCHEDULES, eager, make_optimizer, make_schedule

REPO = Path(__file__).resolve().parents[2]
EPOCHS, BATCHES = 5, 5  # 25 steps
LR = 0.01
GAN_BETA1 = 0.5  # engine/gan.py sets Adam's beta1 in the param groups after construction

# a warning from either side (e.g. a scheduler that did not see optimizer.step) is a difference
pytestmark = pytest.mark.filterwarnings("error")


@pytest.fixture(autouse=True)
def _eager_on(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DL_STOCK_OPTIMIZERS", raising=False)  # else both sides are stock


def stock(name: str, params: Any, lr: float, wd: float, momentum: float) -> torch.optim.Optimizer:
    """The stock torch optimizer with the arguments dl's OPTIMIZERS[name] passes."""
    if name == "sgd":
        return torch.optim.SGD(
            params, lr=lr, weight_decay=wd, momentum=momentum, nesterov=momentum > 0
        )
    if name == "rmsprop":
        return torch.optim.RMSprop(params, lr=lr, weight_decay=wd, momentum=momentum)
    cls = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW}[name]
    return cls(params, lr=lr, weight_decay=wd)


# (optimizer, weight decay, momentum, Adam beta1 set as the GAN does or None)
OPTIONS = [
    *[("sgd", wd, m, None) for wd in (0.0, 1e-2) for m in (0.0, 0.9)],
    *[
        (n, wd, 0.0, b1)
        for n in ("adam", "adamw")
        for wd in (0.0, 1e-2)
        for b1 in (None, GAN_BETA1)
    ],
    *[("rmsprop", wd, m, None) for wd in (0.0, 1e-2) for m in (0.0, 0.9)],
]
# "constant" is another name for "none" (asserted below), so it is not trained twice
SCHEDULE_NAMES = [k for k in SCHEDULES if k != "constant"]


def _id(name: str, wd: float, momentum: float, beta1: float | None, *rest: str) -> str:
    parts = [name, f"wd={wd:g}"] + ([f"m={momentum:g}"] if name in ("sgd", "rmsprop") else [])
    return "-".join(parts + ([f"beta1={beta1:g}"] if beta1 else []) + list(rest))


# every option set under every schedule; the GAN's beta1 only without one (GANs have none)
CASES = [
    pytest.param(*o, sched, id=_id(*o, sched))
    for sched in SCHEDULE_NAMES
    for o in OPTIONS
    if o[3] is None or sched == "none"
]
# the trainer's loop with --grad-clip, without and with the fp16 path's GradScaler: weight decay
# and (where used) momentum on, one option set per optimizer
FULL_OPTIONS = [("sgd", 1e-2, 0.9, None), ("adam", 1e-2, 0.0, None)]
FULL_OPTIONS += [("adamw", 1e-2, 0.0, None), ("rmsprop", 1e-2, 0.9, None)]
CLIP_CASES = [
    pytest.param(*o, scaler, id=_id(*o, "clip+scaler" if scaler else "clip"))
    for o in FULL_OPTIONS
    for scaler in (False, True)
]


class Net(nn.Module):
    """Embedding, Linear, BatchNorm; `aux` gets a gradient only in some steps (None
    in the others: zero_grad(set_to_none=True)); `scale` is frozen."""

    def __init__(self) -> None:
        super().__init__()
        self.emb = nn.Embedding(7, 3, sparse=False)
        self.lin = nn.Linear(5 + 3, 8)
        self.bn = nn.BatchNorm1d(8)
        self.out = nn.Linear(8, 1, bias=False)
        self.aux = nn.Linear(8, 1, bias=False)
        self.scale = nn.Parameter(torch.full((1,), 1.5), requires_grad=False)

    def forward(self, xi: torch.Tensor, xf: torch.Tensor, use_aux: bool) -> torch.Tensor:
        h = torch.cat([self.emb(xi), xf], 1)
        h = torch.relu(self.bn(self.lin(h)))
        y = self.out(h) * self.scale
        return (y + self.aux(h) if use_aux else y).squeeze(1)


def _batches(n: int, size: int = 16) -> list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(0)
    return [
        (
            torch.randint(0, 7, (size,), generator=g),
            torch.randn(size, 5, generator=g),
            torch.randn(size, generator=g),
        )
        for _ in range(n)
    ]


BATCHES_DATA = _batches(EPOCHS * BATCHES)


def assert_same(a: Any, b: Any, path: str) -> None:
    """Equal nested dicts/lists/tuples; tensors by torch.equal with the same dtype and shape."""
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor), path
        assert a.dtype == b.dtype and a.shape == b.shape, path
        assert torch.equal(a, b), f"{path} differs"
    elif isinstance(a, dict):
        assert isinstance(b, dict) and a.keys() == b.keys(), path
        for k in a:
            assert_same(a[k], b[k], f"{path}[{k!r}]")
    elif isinstance(a, (list, tuple)):
        assert type(a) is type(b) and len(a) == len(b), path
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            assert_same(x, y, f"{path}[{i}]")
    else:
        assert type(a) is type(b) and a == b, f"{path}: {a!r} != {b!r}"


class Side:
    """One network, its optimizer and schedule, stepped like Trainer._train_epoch."""

    def __init__(
        self, net: Net, opt: torch.optim.Optimizer, lr: float, schedule: str, scaler: bool
    ) -> None:
        self.net, self.opt = net, opt
        self.sched, self.per_batch = make_schedule(schedule, opt, lr, EPOCHS, BATCHES)
        # MixedPrecision's fp16 path (accel.py); on CPU with fp32 losses: scaling without autocast
        self.scaler = torch.amp.GradScaler("cpu") if scaler else None

    def step(self, s: int, clip: float) -> None:
        xi, xf, y = BATCHES_DATA[s]
        loss = nn.functional.mse_loss(self.net(xi, xf, use_aux=s % 3 == 0), y)
        self.opt.zero_grad(set_to_none=True)
        (self.scaler.scale(loss) if self.scaler is not None else loss).backward()
        if clip > 0:
            if self.scaler is not None:
                self.scaler.unscale_(self.opt)
            nn.utils.clip_grad_norm_([p for p in self.net.parameters() if p.requires_grad], clip)
        if self.scaler is None:
            self.opt.step()
        else:
            self.scaler.step(self.opt)
            self.scaler.update()
        assert torch.is_grad_enabled()  # the step's no_grad does not leak
        if self.sched is not None and (self.per_batch or (s + 1) % BATCHES == 0):
            self.sched.step()


def _set_beta1(opt: torch.optim.Optimizer, beta1: float | None) -> torch.optim.Optimizer:
    """What engine/gan.py's _optimizer does after make_optimizer."""
    if beta1 is not None:
        for group in opt.param_groups:
            if "betas" in group:
                group["betas"] = (beta1, group["betas"][1])
    return opt


def check_same_updates(
    name: str,
    wd: float,
    momentum: float,
    beta1: float | None,
    schedule: str,
    lr: float = LR,
    clip: float = 0.0,
    scaler: bool = False,
) -> None:
    torch.manual_seed(0)
    net_a = Net()
    net_b = copy.deepcopy(net_a)
    init = copy.deepcopy(net_a.state_dict())
    # all parameters, the frozen one too: it sits in the param group and must be skipped
    opt_a = _set_beta1(make_optimizer(name, net_a.parameters(), lr, wd, momentum), beta1)
    opt_b = _set_beta1(stock(name, net_b.parameters(), lr, wd, momentum), beta1)
    assert type(opt_a) is not type(opt_b) and type(opt_a).__bases__ == (type(opt_b),)
    assert_same(opt_a.defaults, opt_b.defaults, "defaults")
    a, b = (Side(n, o, lr, schedule, scaler) for n, o in ((net_a, opt_a), (net_b, opt_b)))
    for s in range(EPOCHS * BATCHES):
        a.step(s, clip)
        b.step(s, clip)
        for (n, pa), pb in zip(net_a.named_parameters(), net_b.parameters(), strict=True):
            assert torch.equal(pa, pb), f"{n} differs after step {s + 1}"
    assert_same(net_a.state_dict(), net_b.state_dict(), "network")  # BatchNorm's buffers too
    assert_same(opt_a.state_dict(), opt_b.state_dict(), "optimizer")
    if a.sched is not None:
        assert_same(a.sched.state_dict(), b.sched.state_dict(), "schedule")
    if scaler:
        assert_same(a.scaler.state_dict(), b.scaler.state_dict(), "scaler")
    # it trained: every parameter with a gradient moved, the frozen one did not
    after = net_a.state_dict()
    for n in ("emb.weight", "lin.weight", "bn.weight", "bn.bias", "out.weight", "aux.weight"):
        assert not torch.equal(after[n], init[n]), f"{n} never updated"
    assert torch.equal(after["scale"], init["scale"])


def test_grid_covers_every_optimizer_and_schedule() -> None:
    assert {o[0] for o in OPTIONS} == set(OPTIMIZERS)
    assert SCHEDULES["constant"] == SCHEDULES["none"]
    assert {c.values[4] for c in CASES} | {"constant"} == set(SCHEDULES)
    assert {c.values[0] for c in CLIP_CASES} == set(OPTIMIZERS)


@pytest.mark.parametrize(("name", "wd", "momentum", "beta1", "schedule"), CASES)
def test_same_updates_as_stock(
    name: str, wd: float, momentum: float, beta1: float | None, schedule: str
) -> None:
    check_same_updates(name, wd, momentum, beta1, schedule)


@pytest.mark.parametrize(("name", "wd", "momentum", "beta1", "scaler"), CLIP_CASES)
def test_same_updates_with_clipping(
    name: str, wd: float, momentum: float, beta1: float | None, scaler: bool
) -> None:
    """--grad-clip tight enough to clip every step; with the GradScaler: unscale_ before
    clipping, scaler.step, scaler.update (MixedPrecision's fp16 path, here on CPU in fp32)."""
    check_same_updates(name, wd, momentum, beta1, "onecycle", lr=0.1, clip=0.05, scaler=scaler)


def _wrapper_codes() -> set[Any]:
    def f() -> None:
        pass

    codes = {torch._disable_dynamo(f).__code__}
    use_grad = getattr(torch_optimizer, "_use_grad_for_differentiable", None)
    if use_grad is not None:
        codes.add(use_grad(f).__code__)
    return codes


def _chain_codes(fn: Any) -> set[Any]:
    codes = set()
    while fn is not None:
        codes.add(getattr(fn, "__code__", None))
        fn = getattr(fn, "__wrapped__", None)
    return codes


@pytest.mark.parametrize("name", list(OPTIMIZERS))
def test_eager_skips_the_wrappers(name: str) -> None:
    lin = nn.Linear(2, 1)
    opt = make_optimizer(name, lin.parameters(), LR, 0.0, 0.9)
    # the wrapper's grad mode: the step under no_grad (differentiable=False), the caller's after
    for grad_mode in (True, False):
        lin(torch.ones(1, 2)).sum().backward()
        with torch.set_grad_enabled(grad_mode):
            opt.step()
            assert torch.is_grad_enabled() is grad_mode
        assert all(p.grad_fn is None for p in lin.parameters())
    cls, base = type(opt), type(opt).__bases__[0]
    assert base.__module__.startswith("torch.optim.")
    wrappers = _wrapper_codes()
    for attr in ("step", "zero_grad", "add_param_group", "state_dict", "load_state_dict"):
        assert not _chain_codes(getattr(cls, attr)) & wrappers, f"{cls.__name__}.{attr} wrapped"
    # the check can see them: the stock class has them
    assert _chain_codes(inspect.getattr_static(base, "step")) & wrappers
    assert _chain_codes(torch.optim.Optimizer.zero_grad) & wrappers
    assert eager(base) is not base


def test_stock_optimizers_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DL_STOCK_OPTIMIZERS", "1")
    assert eager(torch.optim.Adam) is torch.optim.Adam


SUBPROCESS = """
import sys, torch
from dlcli.engine.optim import OPTIMIZERS, make_optimizer, make_schedule
for name in OPTIMIZERS:
    lin = torch.nn.Linear(3, 1)
    opt = make_optimizer(name, lin.parameters(), 0.1, 0.01, 0.9)
    sched, _ = make_schedule("onecycle", opt, 0.1, 2, 4)
    for _ in range(2):
        opt.zero_grad(set_to_none=True)
        lin(torch.ones(2, 3)).sum().backward()
        torch.nn.utils.clip_grad_norm_(lin.parameters(), 1.0)
        opt.step()
        sched.step()
    opt.load_state_dict(opt.state_dict())  # the train job snapshots every epoch; resume loads
eager = "torch._dynamo" in sys.modules
torch.optim.SGD(lin.parameters(), lr=0.1)
print(eager, "torch._dynamo" in sys.modules)
"""


def test_no_dynamo_import() -> None:
    """A process training with dl's optimizers never imports torch._dynamo (~1.3 s); one stock
    optimizer's constructor does."""
    env = {k: v for k, v in os.environ.items() if k != "DL_STOCK_OPTIMIZERS"}
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    env["OMP_NUM_THREADS"] = "1"
    res = subprocess.run(
        [sys.executable, "-c", SUBPROCESS], env=env, capture_output=True, text=True, timeout=120
    )
    assert res.returncode == 0, res.stderr
    eager_imports, stock_imports = res.stdout.split()
    assert eager_imports == "False", "dl's eager optimizers imported torch._dynamo"
    assert stock_imports == "True", (
        f"torch {torch.__version__}'s stock optimizers no longer import torch._dynamo: "
        "engine/optim.eager saves nothing; remove it"
    )
