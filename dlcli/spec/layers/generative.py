"""Generative layers that grow images: transposed convolution, upsampling, reshape, `project`
(dense -> C x H x W) and `resize` to the data's image size. Shapes may be written as expressions
over the data image's (c, h, w), e.g. `[128, h/4, w/4]` (`/` rounds up), so one preset fits 8x8
digits and 64x64 photos alike. Used by GAN generators and autoencoder decoders."""

from __future__ import annotations

import ast
import math
from typing import Annotated, Any, Literal

from pydantic import BeforeValidator, Field
from torch import nn
from torch.nn import functional as F

from dlcli.errors import SpecError
from dlcli.spec.layers.conv import image_shape
from dlcli.spec.layers.core import make_activation
from dlcli.spec.registry import BuildContext, LayerDef, Options, Shape, register

# ---- shape expressions -------------------------------------------------------------------------

_NAMES = ("c", "h", "w")
_OPS: dict[type, Any] = {
    ast.Add: lambda a, b: a + b,
    ast.Sub: lambda a, b: a - b,
    ast.Mult: lambda a, b: a * b,
    ast.Div: lambda a, b: -(-a // b),  # ceil division: h/4 of a 10-pixel image is 3
    ast.FloorDiv: lambda a, b: a // b,
}
_CALLS = {"max": max, "min": min}


def _check_dim(value: Any) -> Any:
    if (type(value) is int and value > 0) or isinstance(value, str):
        return value
    raise ValueError("a shape entry must be a positive integer or an expression such as h/4")


Dim = Annotated[int | str, BeforeValidator(_check_dim)]


def eval_dim(expr: int | str, ctx: BuildContext, field: str) -> int:
    """A shape entry: an int, or an expression over the data image's c, h, w (`/` = ceil division;
    `+ - * //`, parentheses, min() and max() allowed). SpecError for anything else."""
    if isinstance(expr, int):
        return expr
    try:
        tree = ast.parse(str(expr).strip(), mode="eval")
        value = _eval_node(tree.body, ctx, field)
    except SyntaxError:
        raise SpecError(f"{ctx.where}: field '{field}': cannot read '{expr}'") from None
    except ZeroDivisionError:
        raise SpecError(f"{ctx.where}: field '{field}': '{expr}' divides by zero") from None
    if value <= 0:
        raise SpecError(
            f"{ctx.where}: field '{field}': '{expr}' gives {value}, not a positive size"
        )
    return value


def _eval_node(node: ast.AST, ctx: BuildContext, field: str) -> int:
    if isinstance(node, ast.Constant) and type(node.value) is int:
        return node.value
    if isinstance(node, ast.Name) and node.id in _NAMES:
        shape = ctx.data.get("image_shape")
        if not shape:
            raise SpecError(
                f"{ctx.where}: field '{field}' uses '{node.id}', the data's image size, which is unknown here",
                "train on an image folder, or give --input-shape C,H,W to dl build",
            )
        return int(shape[_NAMES.index(node.id)])
    if isinstance(node, ast.BinOp) and type(node.op) in _OPS:
        left, right = _eval_node(node.left, ctx, field), _eval_node(node.right, ctx, field)
        return int(_OPS[type(node.op)](left, right))
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
        return -_eval_node(node.operand, ctx, field)
    if (
        isinstance(node, ast.Call)
        and isinstance(node.func, ast.Name)
        and node.func.id in _CALLS
        and node.args
        and not node.keywords
    ):
        return int(_CALLS[node.func.id](_eval_node(a, ctx, field) for a in node.args))
    raise SpecError(
        f"{ctx.where}: field '{field}': '{ast.unparse(node)}' is not allowed",
        "use integers, c, h, w, + - * / // and min()/max()",
    )


def _data_hw(ctx: BuildContext) -> tuple[int, int]:
    shape = ctx.data.get("image_shape")
    if not shape:
        raise SpecError(
            f"{ctx.where}: 'image' means the data's image size, which is unknown here",
            "train on an image folder, or give --input-shape C,H,W to dl build",
        )
    return int(shape[1]), int(shape[2])


# ---- transposed convolution --------------------------------------------------------------------


def transpose_pads(kernel: int, stride: int) -> tuple[int, int]:
    """(padding, output_padding) so that a transposed conv gives exactly in * stride ('same')."""
    total = kernel - stride  # out = (in - 1) * s - 2p + k + op = in * s  <=>  2p - op = k - s
    pad = max(0, -(-total // 2))
    return pad, 2 * pad - total


@register("conv_transpose2d", "deconv2d", "conv_transpose", "transposed_conv2d")
class ConvTranspose2d(LayerDef):
    """Transposed 2-D convolution (learned upsampling); padding 'same' gives H*stride exactly."""

    primary = "filters"

    class Options(Options):
        filters: Annotated[int, Field(gt=0)] | Literal["outputs"]
        kernel: int = Field(4, gt=0)
        stride: int = Field(2, gt=0)
        padding: Literal["same"] | Annotated[int, Field(ge=0)] = "same"
        output_padding: int = Field(0, ge=0)
        bias: bool = True
        activation: str | None = None

    def build(self, opts: Any, in_shape: Shape, ctx: BuildContext) -> tuple[nn.Module, Shape]:
        c, h, w = image_shape(in_shape, ctx)
        filters = ctx.resolve_units(opts.filters, "filters")
        k, s = opts.kernel, opts.stride
        if opts.padding == "same":
            pad, out_pad = transpose_pads(k, s)
            if out_pad >= s:  # torch needs output_padding < stride
                raise SpecError(
                    f"{ctx.where}: padding 'same' with kernel {k} and stride {s} is impossible",
                    "use a kernel of at least the stride, with kernel - stride even when stride is 1",
                )
        else:
            pad, out_pad = opts.padding, opts.output_padding
            if out_pad >= s:
                raise SpecError(
                    f"{ctx.where}: field 'output_padding' must be less than the stride ({s})"
                )
        oh, ow = ((d - 1) * s - 2 * pad + k + out_pad for d in (h, w))
        if min(oh, ow) < 1:
            raise SpecError(f"{ctx.where}: input {h}x{w} gives an empty output with padding {pad}")
        conv = nn.ConvTranspose2d(
            c, filters, k, stride=s, padding=pad, output_padding=out_pad, bias=opts.bias
        )
        module: nn.Module = conv
        if opts.activation:
            module = nn.Sequential(conv, make_activation(opts.activation, ctx.where))
        return module, (filters, oh, ow)


# ---- upsampling and resizing -------------------------------------------------------------------


@register("upsample", "upsampling2d")
class Upsample(LayerDef):
    """Scales height and width by `scale` (nearest or bilinear); output floor(H * scale)."""

    primary = "scale"

    class Options(Options):
        scale: float = Field(2, gt=0)
        mode: Literal["nearest", "bilinear"] = "nearest"

    def build(self, opts: Any, in_shape: Shape, ctx: BuildContext) -> tuple[nn.Module, Shape]:
        c, h, w = image_shape(in_shape, ctx)
        oh, ow = (math.floor(d * opts.scale) for d in (h, w))
        if min(oh, ow) < 1:
            raise SpecError(f"{ctx.where}: scale {opts.scale} shrinks {h}x{w} to nothing")
        scale = int(opts.scale) if float(opts.scale).is_integer() else opts.scale
        align = False if opts.mode == "bilinear" else None
        return nn.Upsample(scale_factor=scale, mode=opts.mode, align_corners=align), (c, oh, ow)


class Resize(nn.Module):
    """(N, C, H, W) -> (N, C, size[0], size[1]) by interpolation."""

    def __init__(self, size: tuple[int, int], mode: str) -> None:
        super().__init__()
        self.size, self.mode = (int(size[0]), int(size[1])), mode

    def forward(self, x):
        align = False if self.mode == "bilinear" else None
        return F.interpolate(x, size=self.size, mode=self.mode, align_corners=align)

    def extra_repr(self) -> str:
        return f"size={self.size}, mode={self.mode}"


@register("resize")
class ResizeLayer(LayerDef):
    """Interpolates to `size`: 'image' (the data's height and width) or [h, w]; no-op when equal."""

    primary = "size"

    class Options(Options):
        size: Literal["image"] | list[Dim] = "image"
        mode: Literal["nearest", "bilinear"] = "bilinear"

    def build(self, opts: Any, in_shape: Shape, ctx: BuildContext) -> tuple[nn.Module, Shape]:
        c, h, w = image_shape(in_shape, ctx)
        if opts.size == "image":
            size = _data_hw(ctx)
        elif len(opts.size) != 2:
            raise SpecError(f"{ctx.where}: field 'size' needs [height, width] or 'image'")
        else:
            size = (eval_dim(opts.size[0], ctx, "size"), eval_dim(opts.size[1], ctx, "size"))
        if size == (h, w):
            return nn.Identity(), (c, h, w)
        return Resize(size, opts.mode), (c, *size)


# ---- reshaping ---------------------------------------------------------------------------------


class Reshape(nn.Module):
    """(N, *in) -> (N, *shape) with the same number of values per sample."""

    def __init__(self, shape: tuple[int, ...]) -> None:
        super().__init__()
        self.shape = tuple(int(d) for d in shape)

    def forward(self, x):
        return x.reshape(x.shape[0], *self.shape)

    def extra_repr(self) -> str:
        return f"shape={self.shape}"


def _shape(entries: list[Any], ctx: BuildContext) -> tuple[int, ...]:
    return tuple(eval_dim(e, ctx, f"shape.{i}") for i, e in enumerate(entries))


@register("reshape", "unflatten", "view")
class ReshapeLayer(LayerDef):
    """Reshapes each sample to `shape` (entries may be expressions such as h/4); sizes must agree."""

    primary = "shape"

    class Options(Options):
        shape: list[Dim] = Field(min_length=1)

    def build(self, opts: Any, in_shape: Shape, ctx: BuildContext) -> tuple[nn.Module, Shape]:
        if any(d is None for d in in_shape):
            raise SpecError(f"{ctx.where}: cannot reshape a variable-length input {in_shape}")
        shape = _shape(opts.shape, ctx)
        have, want = math.prod(int(d) for d in in_shape), math.prod(shape)
        if have != want:
            raise SpecError(
                f"{ctx.where}: cannot reshape {tuple(in_shape)} ({have} values) to {shape} ({want} values)"
            )
        return Reshape(shape), shape


class Project(nn.Module):
    """(N, F) -> Linear -> (N, C*H*W) -> (N, C, H, W): a noise or latent vector to a small image."""

    def __init__(self, in_features: int, shape: tuple[int, ...], bias: bool) -> None:
        super().__init__()
        self.linear = nn.Linear(in_features, math.prod(shape), bias=bias)
        self.reshape = Reshape(shape)

    def forward(self, x):
        return self.reshape(self.linear(x))


@register("project")
class ProjectLayer(LayerDef):
    """Dense layer to prod(shape) units reshaped to `shape`, e.g. [128, h/4, w/4] (`/` rounds up)."""

    primary = "shape"

    class Options(Options):
        shape: list[Dim] = Field(min_length=1)
        bias: bool = True
        activation: str | None = None

    def build(self, opts: Any, in_shape: Shape, ctx: BuildContext) -> tuple[nn.Module, Shape]:
        if len(in_shape) != 1 or in_shape[0] is None:
            raise SpecError(
                f"{ctx.where}: needs a flat vector input, got {tuple(in_shape)}",
                "put flatten before it",
            )
        shape = _shape(opts.shape, ctx)
        module: nn.Module = Project(int(in_shape[0]), shape, opts.bias)
        if opts.activation:
            module = nn.Sequential(module, make_activation(opts.activation, ctx.where))
        return module, shape


@register("leaky", "lrelu")
class Leaky(LayerDef):
    """LeakyReLU with a chosen negative `slope` (default 0.2, as in DCGAN discriminators)."""

    primary = "slope"

    class Options(Options):
        slope: float = Field(0.2, ge=0.0, lt=1.0)

    def build(self, opts: Any, in_shape: Shape, ctx: BuildContext) -> tuple[nn.Module, Shape]:
        return nn.LeakyReLU(opts.slope), in_shape
