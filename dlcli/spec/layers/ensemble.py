"""Packed ensembles: K independent MLPs in one layer (one batched matrix product per depth).

On small tables an average of several independently trained networks is the cheapest reliable
gain over one network (lower variance; Gorishniy et al. 2024, "TabM: Advancing Tabular Deep
Learning with Parameter-Efficient Ensembling", whose "MLP x K packed" baseline this is). Packing
the members as (K, in, out) weights makes a step cost about what one member's does on small
batches: the same number of kernels, each K times larger.
"""

from __future__ import annotations

import math
from typing import Any, Literal

import torch
from pydantic import Field
from torch import nn

from dlcli.errors import SpecError
from dlcli.spec.layers.core import make_activation
from dlcli.spec.registry import BuildContext, LayerDef, Options, Shape, register


class PackedDense(nn.Module):
    """K dense layers side by side: (K, N, in) -> (K, N, out); (N, in) inputs are shared by all
    members. Each member starts as `nn.Linear` would with Kaiming-normal weights for ReLU."""

    def __init__(self, members: int, in_features: int, out_features: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(members, in_features, out_features))
        self.bias = nn.Parameter(torch.zeros(members, 1, out_features))
        nn.init.normal_(self.weight, std=math.sqrt(2.0 / in_features))

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (N, in) or (K, N, in) -> (K, N, out)
        return torch.matmul(x, self.weight) + self.bias


class PackedBatchNorm(nn.Module):
    """Batch normalisation of each member's features on its own: (K, N, H) as (N, K * H)."""

    def __init__(self, members: int, features: int) -> None:
        super().__init__()
        self.members, self.features = members, features
        self.norm = nn.BatchNorm1d(members * features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (K, N, H) -> (K, N, H)
        n = x.shape[1]
        flat = x.transpose(0, 1).reshape(n, self.members * self.features)
        return self.norm(flat).reshape(n, self.members, self.features).transpose(0, 1)


class PackedMLP(nn.Module):
    """(N, F) -> K members' outputs. Training: (N, K, outputs) when K > 1, each member trained on its own
    loss (`trains_members`: the task step repeats the labels K times); evaluation and export: the
    members' mean, (N, outputs) (logits for classification, so their mean weighs every member
    alike)."""

    trains_members = True

    def __init__(
        self,
        members: int,
        body: nn.Sequential,
        wide: PackedDense | None = None,
        linear: LinearPath | None = None,
    ) -> None:
        super().__init__()
        self.members = members
        self.body = body
        self.wide = wide
        self.linear = linear

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.body(x)  # (K, N, outputs)
        if self.wide is not None:
            out = out + self.wide(x)
        if self.training and self.members > 1:
            return out.transpose(0, 1)  # (N, K, outputs)
        mean = out.mean(dim=0)  # (N, outputs); one member: that member's outputs
        return mean if self.linear is None or self.training else self.linear.blended(x, mean)


class LinearPath(nn.Module):
    """A linear model beside the ensemble, fitted after training to the exact optimum of the task's
    loss + `l2` * ||weight||² / rows (engine/linear_path.py; L-BFGS, not gradient steps, so it is
    held in buffers: no optimizer sees it). In evaluation the layer outputs
    (1 - blend) * ensemble + blend * linear, on the outputs before the task's output function
    (logits, standardised predictions). `blend` is 0 until the fit (training and its validation
    passes see the ensemble alone); `prior` is the spec's blend, which the validation rows replace
    only when another blend wins by `evidence` standard errors, on the task's score first, then
    on its loss (engine/linear_path.py: choose_blend)."""

    fits_after_training = True

    def __init__(
        self, features: int, outputs: int, l2: float, prior: float, evidence: float
    ) -> None:
        super().__init__()
        self.l2, self.prior, self.evidence = float(l2), float(prior), float(evidence)
        self.register_buffer("weight", torch.zeros(features, outputs))
        self.register_buffer("bias", torch.zeros(outputs))
        self.register_buffer("blend", torch.zeros(()))

    def linear(self, x: torch.Tensor) -> torch.Tensor:  # (N, F) -> (N, outputs)
        return x @ self.weight + self.bias

    def blended(self, x: torch.Tensor, ensemble: torch.Tensor) -> torch.Tensor:
        return (1 - self.blend) * ensemble + self.blend * self.linear(x)


@register("mlp_ensemble", "packed_mlp")
class MLPEnsemble(LayerDef):
    """K independent MLPs packed in one layer, each ending in its own output layer; their mean."""

    primary = "hidden"

    class Options(Options):
        hidden: list[int] = Field(min_length=1)  # hidden sizes of each member, e.g. [128, 64]
        members: int = Field(8, ge=1, le=64)
        dropout: float = Field(0.0, ge=0.0, lt=1.0)
        batchnorm: bool = True
        activation: str = "relu"
        wide: bool = False  # add a linear path from the inputs to each member's outputs
        # a linear model beside the members fitted exactly after training (L-BFGS) with this L2
        # strength (0.5 = scikit-learn's LogisticRegression C=1); None: no linear path
        linear_l2: float | None = Field(None, gt=0.0)
        # its share (0.5 when not given), unless another of 0, .25, .5, .75, 1 does better on the
        # validation rows (accuracy, else loss) by `blend_evidence` standard errors (1.5 when
        # not given; 0: any gain)
        blend: float | None = Field(None, ge=0.0, le=1.0)
        blend_evidence: float | None = Field(None, ge=0.0)
        units: Literal["outputs"] = "outputs"  # the members end in the task's outputs (no head)

    def build(self, opts: Any, in_shape: Shape, ctx: BuildContext) -> tuple[nn.Module, Shape]:
        if len(in_shape) != 1 or in_shape[0] is None:
            raise SpecError(
                f"{ctx.where}: needs flat (features,) input, got {tuple(in_shape)}",
                "use it on tables, or flatten first",
            )
        if any(h <= 0 for h in opts.hidden):
            raise SpecError(
                f"{ctx.where}: field 'hidden': sizes must be positive, got {opts.hidden}"
            )
        outputs = ctx.resolve_units(opts.units, "units")
        k, width, layers = opts.members, int(in_shape[0]), []
        for h in opts.hidden:
            layers.append(PackedDense(k, width, h))
            if opts.batchnorm:
                layers.append(PackedBatchNorm(k, h))
            layers.append(make_activation(opts.activation, ctx.where))
            if opts.dropout:
                layers.append(nn.Dropout(opts.dropout))
            width = h
        head = PackedDense(k, width, outputs)
        for member in head.weight:  # as the automatic head
            nn.init.xavier_uniform_(member)
        layers.append(head)
        wide = None
        if opts.wide:
            wide = PackedDense(k, int(in_shape[0]), outputs)
            nn.init.zeros_(wide.weight)
        linear = None
        if opts.linear_l2 is not None:
            prior = 0.5 if opts.blend is None else opts.blend
            evidence = 1.5 if opts.blend_evidence is None else opts.blend_evidence
            linear = LinearPath(int(in_shape[0]), outputs, opts.linear_l2, prior, evidence)
        else:
            for field in ("blend", "blend_evidence"):
                if getattr(opts, field) is not None:
                    raise SpecError(
                        f"{ctx.where}: field '{field}' needs 'linear_l2' (the linear path it "
                        "blends in)",
                        f"add e.g. linear_l2: 0.5, or drop {field}",
                    )
        return PackedMLP(k, nn.Sequential(*layers), wide, linear), (outputs,)
