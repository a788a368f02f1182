"""The exact linear path of a table ensemble (`mlp_ensemble`'s `linear_l2`; the layer is
spec/layers/ensemble.py: LinearPath). After the ensemble has trained, a linear model on the
ensemble layer's inputs is fitted by full-batch L-BFGS (scikit-learn's `lbfgs` solver) to the
optimum of

    mean over rows of the task's loss + l2 * ||W||² / rows

(`l2` 0.5 is scikit-learn's LogisticRegression C=1, and Ridge alpha=0.5 on standardised targets),
then blended with the ensemble's output: (1 - blend) * ensemble + blend * linear.

Why: on small tables logistic / ridge regression is often the model to beat, and early-stopped
SGD does not find its L2 optimum (dl's own linear model trained by Adam reached 0.971 on
breast_cancer where LogisticRegression reaches 0.991; benchmarks/README.md, "Small tables").
The fit is convex, so it needs no validation rows: they check the blend (the spec's, unless they
clearly prefer another) and give the model file's validation metrics, then the path is fitted
again on every row.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from dlcli.console import info
from dlcli.engine.optim import eager
from dlcli.engine.refit import all_rows

BLENDS = (0.0, 0.25, 0.5, 0.75, 1.0)  # the blends the validation rows may choose instead
BLOCKS = 256  # validation rows are compared in up to this many blocks (one row each when fewer)
CHUNK = 4096  # rows per forward pass when collecting the ensemble layer's inputs
MAX_ITER = 1000
DOUBLE_LIMIT = 2**24  # inputs up to this many values are fitted in float64, larger in float32


@dataclass(frozen=True)
class Fitted:
    """What one fit did: the rows, the L-BFGS iterations, the blend in use."""

    rows: int
    iterations: int
    l2: float
    blend: float

    def describe(self, what: str = "fitted") -> str:
        return (
            f"linear path {what} by L-BFGS on {self.rows:,} rows (l2 {self.l2:g}, "
            f"{self.iterations} iterations); blend {self.blend:g} of it with the ensemble"
        )


def owner(network: torch.nn.Module) -> torch.nn.Module | None:
    """The layer holding a linear path to fit after training (`linear` with
    `fits_after_training`), or None."""
    for m in network.modules():
        path = getattr(m, "linear", None)
        if isinstance(path, torch.nn.Module) and getattr(path, "fits_after_training", False):
            return m
    return None


def layer_inputs(network: torch.nn.Module, layer: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """What `layer` receives when `network` (in evaluation mode) runs on `x`, a chunk at a time
    (`x` itself when `layer` is the network's first layer, as in the `mlp` preset)."""
    if isinstance(network, torch.nn.Sequential) and len(network) and network[0] is layer:
        return x
    seen: list[torch.Tensor] = []
    hook = layer.register_forward_pre_hook(lambda _m, args: seen.append(args[0].detach()))
    try:
        with torch.no_grad():
            for i in range(0, len(x), CHUNK):
                network(x[i : i + CHUNK])
    finally:
        hook.remove()
    return torch.cat(seen) if seen else x[:0]


def fit_linear(
    x: torch.Tensor, y: torch.Tensor, loss_fn: Any, l2: float, outputs: int
) -> tuple[torch.Tensor, torch.Tensor, int]:
    """(weight (F, outputs), bias (outputs,), iterations): the minimum of
    loss_fn(x @ weight + bias, y) + l2 * ||weight||² / rows (the bias is not penalised), by
    full-batch L-BFGS with a strong-Wolfe line search, in float64 for inputs of moderate size."""
    dtype = torch.float64 if x.numel() <= DOUBLE_LIMIT else torch.float32
    x = x.to(dtype)
    y = y.to(dtype) if torch.is_floating_point(y) else y
    weight = torch.zeros(x.shape[1], outputs, dtype=dtype, requires_grad=True)
    bias = torch.zeros(outputs, dtype=dtype, requires_grad=True)
    opt = eager(torch.optim.LBFGS)(  # no torch._dynamo import (optim.py: eager)
        [weight, bias],
        lr=1.0,
        max_iter=MAX_ITER,
        tolerance_grad=1e-9,
        tolerance_change=1e-12,
        history_size=20,
        line_search_fn="strong_wolfe",
    )
    scale = float(l2) / max(1, len(x))

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = loss_fn(x @ weight + bias, y) + scale * weight.pow(2).sum()
        loss.backward()
        return loss

    with torch.enable_grad():
        opt.step(closure)
    iterations = int(opt.state[weight].get("n_iter", 0))
    return weight.detach().float(), bias.detach().float(), iterations


def fit(
    network: torch.nn.Module,
    task: Any,
    train: tuple[torch.Tensor, torch.Tensor],
    val: tuple[Any, Any] | None = None,
    blend: float | None = None,
    transform: Any = None,
    balanced: bool = False,
) -> Fitted | None:
    """Fit the linear path of `network` (evaluation mode, on the CPU) on the `train` rows (network
    inputs, encoded targets; `transform` maps stored inputs to network inputs) and set its blend:
    `blend` if given, else the spec's unless the `val` rows clearly prefer another
    (`choose_blend`). `balanced`: the task's loss weighted by the inverse class frequencies of
    the `train` rows, as `--class-weights balanced` weighs the ensemble's. None when the network
    has no linear path."""
    layer = owner(network)
    if layer is None:
        return None
    path = layer.linear
    network.eval()
    tf = transform if transform is not None else (lambda t: t)
    x = layer_inputs(network, layer, tf(train[0]))
    loss_fn = task.make_loss(task.balanced_weights(train[1]) if balanced else None)
    weight, bias, iterations = fit_linear(x, train[1], loss_fn, path.l2, path.weight.shape[1])
    if not (torch.isfinite(weight).all() and torch.isfinite(bias).all()):
        info("linear path: the fit did not converge to finite weights; the ensemble alone")
        weight, bias, blend = torch.zeros_like(weight), torch.zeros_like(bias), 0.0
    path.weight.copy_(weight)
    path.bias.copy_(bias)
    if blend is None:
        blend = choose_blend(network, layer, task, val, tf, loss_fn)
    path.blend.fill_(float(blend))
    return Fitted(len(x), iterations, path.l2, float(blend))


def choose_blend(
    network: torch.nn.Module, layer: torch.nn.Module, task: Any, val: Any, tf: Any, loss_fn: Any
) -> float:
    """The spec's blend (`prior`), unless the validation rows clearly prefer another of BLENDS:
    first by the task's per-row score (accuracy; for regression the squared error), then by its
    loss, each a paired comparison with the prior's over the rows (in up to BLOCKS interleaved
    blocks) that must win by more than `evidence` standard errors; the largest such gain wins.
    Two tests, because blending logits with a weak linear path also tempers an over-confident
    ensemble, which hides its cost in the cross-entropy but not in the accuracy; and a
    strong prior, because a few hundred validation rows cannot tell close blends apart
    (docs/spec.md)."""
    path = layer.linear
    prior, evidence = path.prior, path.evidence
    if val is None or val[0] is None or len(val[1]) < 2:
        return prior
    x, y = tf(val[0]), val[1]
    inputs = layer_inputs(network, layer, x)
    path.blend.zero_()
    with torch.no_grad():
        ensemble = torch.cat([network(x[i : i + CHUNK]) for i in range(0, len(x), CHUNK)])
        linear = path.linear(inputs)
        blocks = min(len(y), BLOCKS)
        block = torch.arange(len(y)) % blocks  # interleaved: rows sorted by class mix
        rows = [torch.nonzero(block == b).squeeze(1) for b in range(blocks)]
        outs = {b: (1 - b) * ensemble + b * linear for b in (*BLENDS, prior)}
        sign = float(task.score_sign)  # batch_score: +1 counts what is right, -1 sums errors

        def score(out: torch.Tensor) -> torch.Tensor:  # (blocks,): higher is better
            return torch.stack(
                [sign * task.batch_score(out[r], y[r]).double() / len(r) for r in rows]
            )

        def neg_loss(out: torch.Tensor) -> torch.Tensor:
            return torch.stack([-loss_fn(out[r], y[r]).double() for r in rows])

        for measure in (score, neg_loss):
            chosen = _clear_winner({b: measure(o) for b, o in outs.items()}, prior, evidence)
            if chosen != prior:
                return chosen
    return prior


def _clear_winner(per_block: dict[float, torch.Tensor], prior: float, evidence: float) -> float:
    """The blend whose per-block measure (higher is better) beats the prior's by the largest mean
    paired gain, among those whose gain exceeds `evidence` standard errors; else the prior."""
    base = per_block[prior]
    best, best_gain = prior, 0.0
    for b, value in per_block.items():
        gain = value - base
        mean = float(gain.mean())
        se = float(gain.std()) / len(gain) ** 0.5 if len(gain) > 1 else float("inf")
        if mean > best_gain and mean > evidence * se:
            best, best_gain = b, mean
    return best


def fit_run(
    network: torch.nn.Module,
    task: Any,
    rows: tuple[Any, Any, Any, Any],
    transform: Any = None,
    balanced: bool = False,
) -> Fitted | None:
    """After training: the linear path (if any) fitted on the training rows of `rows` = (x_train,
    y_train, x_val, y_val), its blend checked on the validation rows (`choose_blend`), so the
    validation metrics are those of a model that has not seen them. Inputs that are not
    tensors in memory (streamed tables) leave the path at blend 0: the ensemble alone."""
    if owner(network) is None:
        return None
    x_tr, y_tr, x_va, y_va = rows
    if not (torch.is_tensor(x_tr) and torch.is_tensor(y_tr)):
        info("linear path skipped (the rows are streamed, not in memory): the ensemble alone")
        return None
    val = (x_va, y_va) if torch.is_tensor(x_va) and torch.is_tensor(y_va) else None
    fitted = fit(network, task, (x_tr, y_tr), val, transform=transform, balanced=balanced)
    if fitted is not None:
        info(fitted.describe())
    return fitted


def fit_all_rows(
    network: torch.nn.Module,
    task: Any,
    rows: tuple[Any, Any, Any, Any],
    fitted: Fitted,
    transform: Any = None,
    balanced: bool = False,
) -> Fitted | None:
    """The linear path fitted again on the training + validation rows, with the blend `fitted`
    chose (the saved model's; the network may be a refit's). Without validation rows, or when
    `network` is the one `fitted` was made on and there are no other rows, nothing to do."""
    joined = all_rows(*rows)
    if joined is None or not torch.is_tensor(joined[0]):
        return None
    again = fit(network, task, joined, blend=fitted.blend, transform=transform, balanced=balanced)
    if again is not None:
        info(again.describe("refitted"))
    return again
