"""Core layers: dense, activations, dropout, normalisation, flatten, the residual block and named blocks."""

from __future__ import annotations

import math
from typing import Any, Literal

from pydantic import Field
from torch import nn

from dlcli.errors import SpecError
from dlcli.spec.registry import BuildContext, LayerDef, Options, Shape, register

ACTIVATIONS: dict[str, Any] = {
    "relu": nn.ReLU,
    "leaky_relu": lambda: nn.LeakyReLU(0.01),
    "elu": nn.ELU,
    "gelu": nn.GELU,
    "silu": nn.SiLU,
    "sigmoid": nn.Sigmoid,
    "tanh": nn.Tanh,
    "softmax": lambda: nn.Softmax(dim=-1),
    "identity": nn.Identity,
}


def make_activation(name: str, where: str) -> nn.Module:
    key = name.lower().replace("-", "_")
    if key not in ACTIVATIONS:
        raise SpecError(f"{where}: unknown activation '{name}'", f"known: {', '.join(ACTIVATIONS)}")
    return ACTIVATIONS[key]()


def _last_dim(in_shape: Shape, where: str) -> int:
    if not in_shape or in_shape[-1] is None:
        raise SpecError(f"{where}: needs a known last dimension, input shape is {in_shape}")
    return int(in_shape[-1])


@register("dense", "linear", "fc")
class Dense(LayerDef):
    """Fully connected layer on the last dimension; `units: outputs` means the task's output size."""

    primary = "units"

    class Options(Options):
        units: int | Literal["outputs"] = Field(...)
        bias: bool = True
        activation: str | None = None

    def build(self, opts: Any, in_shape: Shape, ctx: BuildContext) -> tuple[nn.Module, Shape]:
        units = ctx.resolve_units(opts.units, "units")
        if units <= 0:
            raise SpecError(f"{ctx.where}: field 'units' must be positive, got {units}")
        linear = nn.Linear(_last_dim(in_shape, ctx.where), units, bias=opts.bias)
        out = (*in_shape[:-1], units)
        if opts.activation:
            return nn.Sequential(linear, make_activation(opts.activation, ctx.where)), out
        return linear, out


def _activation_layer(act: str) -> type[LayerDef]:
    class Activation(LayerDef):
        class Options(Options):
            pass

        def build(self, opts: Any, in_shape: Shape, ctx: BuildContext) -> tuple[nn.Module, Shape]:
            return make_activation(act, ctx.where), in_shape

    Activation.__doc__ = f"The {act} activation."
    return Activation


for _act in ACTIVATIONS:
    register(_act)(_activation_layer(_act))


@register("activation")
class Activation(LayerDef):
    """An activation chosen by name: relu, leaky_relu, elu, gelu, silu, sigmoid, tanh, softmax."""

    primary = "fn"

    class Options(Options):
        fn: str

    def build(self, opts: Any, in_shape: Shape, ctx: BuildContext) -> tuple[nn.Module, Shape]:
        return make_activation(opts.fn, ctx.where), in_shape


@register("dropout")
class Dropout(LayerDef):
    """Zeroes a random share `p` of values while training."""

    primary = "p"

    class Options(Options):
        p: float = Field(0.5, ge=0.0, lt=1.0)

    def build(self, opts: Any, in_shape: Shape, ctx: BuildContext) -> tuple[nn.Module, Shape]:
        return nn.Dropout(opts.p), in_shape


class _Channels(nn.Module):
    """Apply a 1-D norm over the last dimension of (N, ..., C) inputs (BatchNorm1d wants (N, C, L))."""

    def __init__(self, norm: nn.Module) -> None:
        super().__init__()
        self.norm = norm

    def forward(self, x):  # (N, T, C) -> norm over C
        return self.norm(x.transpose(1, -1)).transpose(1, -1)


@register("batchnorm", "batchnorm1d")
class BatchNorm(LayerDef):
    """Batch normalisation over the features (over channels for (C, H, W) inputs)."""

    class Options(Options):
        momentum: float = Field(0.1, gt=0.0, le=1.0)
        eps: float = Field(1e-5, gt=0.0)

    def build(self, opts: Any, in_shape: Shape, ctx: BuildContext) -> tuple[nn.Module, Shape]:
        if len(in_shape) == 3:  # (C, H, W): images
            return nn.BatchNorm2d(int(in_shape[0]), eps=opts.eps, momentum=opts.momentum), in_shape
        norm = nn.BatchNorm1d(_last_dim(in_shape, ctx.where), eps=opts.eps, momentum=opts.momentum)
        return (norm if len(in_shape) == 1 else _Channels(norm)), in_shape


@register("layernorm")
class LayerNorm(LayerDef):
    """Layer normalisation over the last dimension."""

    class Options(Options):
        eps: float = Field(1e-5, gt=0.0)

    def build(self, opts: Any, in_shape: Shape, ctx: BuildContext) -> tuple[nn.Module, Shape]:
        return nn.LayerNorm(_last_dim(in_shape, ctx.where), eps=opts.eps), in_shape


@register("flatten")
class Flatten(LayerDef):
    """Flattens everything but the batch dimension."""

    class Options(Options):
        pass

    def build(self, opts: Any, in_shape: Shape, ctx: BuildContext) -> tuple[nn.Module, Shape]:
        if any(d is None for d in in_shape):
            raise SpecError(f"{ctx.where}: cannot flatten a variable-length input {in_shape}")
        return nn.Flatten(), (math.prod(int(d) for d in in_shape),)


class Residual(nn.Module):
    """y = act(body(x) + proj(x)); proj is identity when shapes match."""

    def __init__(self, body: nn.Module, proj: nn.Module, act: nn.Module) -> None:
        super().__init__()
        self.body, self.proj, self.act = body, proj, act

    def forward(self, x):
        return self.act(self.body(x) + self.proj(x))


@register("residual", "skip")
class ResidualBlock(LayerDef):
    """A skip connection around `layers`; a projection is added when the shape changes."""

    primary = "layers"

    class Options(Options):
        layers: list[Any]
        activation: str | None = None

    def build(self, opts: Any, in_shape: Shape, ctx: BuildContext) -> tuple[nn.Module, Shape]:
        body, out_shape, _ = ctx.build_list(opts.layers, in_shape, f"{ctx.where}.layers")
        proj: nn.Module = nn.Identity()
        if out_shape != in_shape:
            if len(in_shape) == 3 and len(out_shape) == 3:
                stride = max(1, int(in_shape[1]) // max(1, int(out_shape[1])))
                proj = nn.Sequential(
                    nn.Conv2d(int(in_shape[0]), int(out_shape[0]), 1, stride=stride, bias=False),
                    nn.BatchNorm2d(int(out_shape[0])),
                )
            elif len(in_shape) == len(out_shape) and in_shape[:-1] == out_shape[:-1]:
                proj = nn.Linear(_last_dim(in_shape, ctx.where), _last_dim(out_shape, ctx.where))
            else:
                raise SpecError(
                    f"{ctx.where}: residual body maps {in_shape} to {out_shape}; "
                    "the skip connection cannot project between these shapes"
                )
        act = make_activation(opts.activation, ctx.where) if opts.activation else nn.Identity()
        return Residual(body, proj, act), out_shape


@register("block", "sequential")
class Block(LayerDef):
    """A named group of layers (e.g. `features`), so `--freeze features` can address it as one."""

    primary = "layers"

    class Options(Options):
        layers: list[Any] = Field(min_length=1)

    def build(self, opts: Any, in_shape: Shape, ctx: BuildContext) -> tuple[nn.Module, Shape]:
        seq, out_shape, _ = ctx.build_list(opts.layers, in_shape, f"{ctx.where}.layers")
        return seq, out_shape
