"""Image layers on (C, H, W) inputs: convolutions, pooling, 2-D batch norm and dropout, and the
residual conv block. Every builder checks the input rank and that the output is at least 1x1, so a
bad shape is a SpecError naming the layer before torch sees it."""

from __future__ import annotations

from collections import OrderedDict
from typing import Annotated, Any, Literal

from pydantic import BeforeValidator, Field
from torch import nn

from dlcli.errors import SpecError
from dlcli.spec.layers.core import make_activation
from dlcli.spec.registry import BuildContext, LayerDef, Options, Shape, register


def _check_padding(value: Any) -> Any:
    if value in ("same", "valid") or (type(value) is int and value >= 0):
        return value
    raise ValueError("padding must be 'same', 'valid' or a non-negative integer")


# 'same' | 'valid' | pixels on each side
Padding = Annotated[str | int, BeforeValidator(_check_padding)]


# ---- shape arithmetic --------------------------------------------------------------------------


def image_shape(in_shape: Shape, ctx: BuildContext) -> tuple[int, int, int]:
    """(C, H, W) of an image input, or a SpecError for tables, sequences and unknown sizes."""
    if len(in_shape) != 3 or any(d is None for d in in_shape):
        raise SpecError(
            f"{ctx.where}: needs (channels, height, width) input, got {_fmt(in_shape)}",
            "image layers need image data (an image folder), or --input-shape C,H,W for dl build",
        )
    c, h, w = (int(d) for d in in_shape)
    return c, h, w


def same_pads(kernel: int, dilation: int = 1) -> tuple[int, int]:
    """(before, after) padding for 'same': the effective kernel's reach minus one, split so that
    the output is ceil(size / stride) for any stride. Odd kernels pad symmetrically (k // 2 each
    side); even kernels put the extra row/column at the bottom/right (as TensorFlow does)."""
    total = dilation * (kernel - 1)
    return total // 2, total - total // 2


def out_size(size: int, kernel: int, stride: int, pads: tuple[int, int], dilation: int = 1) -> int:
    """Output length of a convolution or pooling window (floor mode), as torch computes it."""
    return (size + sum(pads) - dilation * (kernel - 1) - 1) // stride + 1


def _fmt(shape: Shape) -> str:
    return "(" + ", ".join(str(d) for d in shape) + (",)" if len(shape) == 1 else ")")


def _check_fits(
    ctx: BuildContext, hw: tuple[int, int], what: str, kernel: int, pads: tuple[int, int], dil: int
) -> None:
    """SpecError when the window (with padding) does not fit: the output would be under 1x1."""
    reach = dil * (kernel - 1) + 1
    if min(hw) + sum(pads) < reach:
        detail = f" with padding {pads[0]}" if sum(pads) else ""
        detail += f" and dilation {dil}" if dil > 1 else ""
        raise SpecError(
            f"{ctx.where}: input {hw[0]}x{hw[1]} is too small for {what} {kernel}{detail}",
            "use larger images, fewer poolings or strides, or padding: same",
        )


def _pads(padding: Any, kernel: int, dilation: int) -> tuple[int, int]:
    if padding == "same":
        return same_pads(kernel, dilation)
    if padding == "valid":
        return 0, 0
    return int(padding), int(padding)


def _padded_conv(conv: nn.Conv2d, pads: tuple[int, int], act: nn.Module | None) -> nn.Module:
    """A Conv2d alone when possible; else a named Sequential (pad) -> conv -> (act)."""
    parts: list[tuple[str, nn.Module]] = []
    if pads[0] != pads[1]:  # asymmetric 'same' padding (even kernel): (left, right, top, bottom)
        parts.append(("pad", nn.ZeroPad2d((pads[0], pads[1], pads[0], pads[1]))))
    parts.append(("conv", conv))
    if act is not None:
        parts.append(("act", act))
    return conv if len(parts) == 1 else nn.Sequential(OrderedDict(parts))


# ---- convolutions ------------------------------------------------------------------------------


class _ConvOptions(Options):
    filters: int | None = Field(None, gt=0)
    kernel: int = Field(3, gt=0)
    stride: int = Field(1, gt=0)
    padding: Padding = "same"
    dilation: int = Field(1, gt=0)
    bias: bool = True
    activation: str | None = None


@register("conv2d")
class Conv2d(LayerDef):
    """2-D convolution; padding 'same' keeps ceil(H/stride); `depthwise: true` = one filter group per channel."""

    primary = "filters"

    class Options(_ConvOptions):
        # filters: required unless depthwise (then it defaults to the input channels);
        # `outputs`: the size asked of the network (a decoder's image channels)
        filters: Annotated[int, Field(gt=0)] | Literal["outputs"] | None = None
        groups: int = Field(1, gt=0)
        depthwise: bool = False

    def build(self, opts: Any, in_shape: Shape, ctx: BuildContext) -> tuple[nn.Module, Shape]:
        c, h, w = image_shape(in_shape, ctx)
        if opts.depthwise:
            groups, filters = c, opts.filters or c
        elif opts.filters is None:
            raise SpecError(f"{ctx.where}: field 'filters' is required (or set depthwise: true)")
        else:
            groups, filters = opts.groups, ctx.resolve_units(opts.filters, "filters")
        if c % groups or filters % groups:
            raise SpecError(
                f"{ctx.where}: groups {groups} must divide both the input channels ({c}) "
                f"and filters ({filters})"
            )
        pads = _pads(opts.padding, opts.kernel, opts.dilation)
        _check_fits(ctx, (h, w), "kernel", opts.kernel, pads, opts.dilation)
        conv = nn.Conv2d(
            c, filters, opts.kernel, stride=opts.stride, dilation=opts.dilation, groups=groups,
            bias=opts.bias, padding=pads[0] if pads[0] == pads[1] else 0,
        )  # fmt: skip
        act = make_activation(opts.activation, ctx.where) if opts.activation else None
        oh, ow = (out_size(s, opts.kernel, opts.stride, pads, opts.dilation) for s in (h, w))
        return _padded_conv(conv, pads, act), (filters, oh, ow)


@register("separable_conv2d", "separable_conv", "sepconv")
class SeparableConv2d(LayerDef):
    """Depthwise kxk convolution (one filter per channel) then a pointwise 1x1 convolution."""

    primary = "filters"

    class Options(_ConvOptions):
        filters: int = Field(..., gt=0)

    def build(self, opts: Any, in_shape: Shape, ctx: BuildContext) -> tuple[nn.Module, Shape]:
        c, h, w = image_shape(in_shape, ctx)
        pads = _pads(opts.padding, opts.kernel, opts.dilation)
        _check_fits(ctx, (h, w), "kernel", opts.kernel, pads, opts.dilation)
        depthwise = nn.Conv2d(
            c, c, opts.kernel, stride=opts.stride, dilation=opts.dilation, groups=c, bias=False,
            padding=pads[0] if pads[0] == pads[1] else 0,
        )  # fmt: skip
        parts = [("pad", nn.ZeroPad2d((pads[0], pads[1]) * 2))] if pads[0] != pads[1] else []
        parts += [
            ("depthwise", depthwise),
            ("pointwise", nn.Conv2d(c, opts.filters, 1, bias=opts.bias)),
        ]
        if opts.activation:
            parts.append(("act", make_activation(opts.activation, ctx.where)))
        oh, ow = (out_size(s, opts.kernel, opts.stride, pads, opts.dilation) for s in (h, w))
        return nn.Sequential(OrderedDict(parts)), (opts.filters, oh, ow)


# ---- pooling -----------------------------------------------------------------------------------


class _SamePool(nn.Module):
    """'same' pooling for even sizes: asymmetric padding that never counts. Max pads with -inf;
    average divides by the number of real pixels in each window."""

    def __init__(self, mode: str, size: int, stride: int) -> None:
        super().__init__()
        self.mode, self.size, self.stride = mode, size, stride
        before, after = same_pads(size)
        self.pads = (before, after, before, after)  # (left, right, top, bottom)

    def forward(self, x):  # (N, C, H, W) -> (N, C, ceil(H/stride), ceil(W/stride))
        f = nn.functional
        if self.mode == "max":
            return f.max_pool2d(f.pad(x, self.pads, value=float("-inf")), self.size, self.stride)
        total = f.avg_pool2d(f.pad(x, self.pads), self.size, self.stride)
        real = f.avg_pool2d(
            f.pad(x.new_ones(1, 1, *x.shape[2:]), self.pads), self.size, self.stride
        )
        return total / real

    def extra_repr(self) -> str:
        return f"{self.mode}, size={self.size}, stride={self.stride}, pads={self.pads}"


class PoolOptions(Options):
    """Options shared by the pooling layers (2-D here, 1-D in sequence.py)."""

    size: int = Field(2, gt=0)
    stride: int | None = Field(None, gt=0)  # default: size (windows do not overlap)


class _Pool(LayerDef):
    mode = "max"
    primary = "size"

    class Options(PoolOptions):
        padding: Padding = "valid"

    def build(self, opts: Any, in_shape: Shape, ctx: BuildContext) -> tuple[nn.Module, Shape]:
        c, h, w = image_shape(in_shape, ctx)
        k, s = opts.size, opts.stride or opts.size
        pads = _pads(opts.padding, k, 1)
        if opts.padding not in ("same", "valid") and 2 * pads[0] > k:
            raise SpecError(f"{ctx.where}: padding {pads[0]} must be at most half the size {k}")
        _check_fits(ctx, (h, w), "size", k, pads, 1)
        oh, ow = (out_size(d, k, s, pads, 1) for d in (h, w))
        if pads[0] != pads[1]:
            return _SamePool(self.mode, k, s), (c, oh, ow)
        if self.mode == "max":
            return nn.MaxPool2d(k, s, padding=pads[0]), (c, oh, ow)
        # padded pixels never count in an average
        return nn.AvgPool2d(k, s, padding=pads[0], count_include_pad=False), (c, oh, ow)


@register("maxpool", "maxpool2d", "max_pool")
class MaxPool(_Pool):
    """Maximum over size x size windows (stride defaults to size); padding 'valid', 'same' or int."""

    mode = "max"


@register("avgpool", "avgpool2d", "avg_pool", "average_pool")
class AvgPool(_Pool):
    """Average over size x size windows (stride defaults to size); padded pixels are not counted."""

    mode = "avg"


class GlobalPool(nn.Module):
    """(N, C, H, W) -> (N, C): mean or max over all positions."""

    def __init__(self, mode: str) -> None:
        super().__init__()
        self.mode = mode

    def forward(self, x):
        return x.mean(dim=(2, 3)) if self.mode == "avg" else x.amax(dim=(2, 3))

    def extra_repr(self) -> str:
        return self.mode


class _GlobalPoolDef(LayerDef):
    mode = "avg"

    class Options(Options):
        pass

    def build(self, opts: Any, in_shape: Shape, ctx: BuildContext) -> tuple[nn.Module, Shape]:
        c, _, _ = image_shape(in_shape, ctx)
        return GlobalPool(self.mode), (c,)


@register("global_avgpool", "gap", "global_average_pool", "global_avgpool2d")
class GlobalAvgPool(_GlobalPoolDef):
    """Mean over height and width: (C, H, W) -> (C,); any image size."""

    mode = "avg"


@register("global_maxpool", "global_max_pool2d", "gmp")
class GlobalMaxPool(_GlobalPoolDef):
    """Maximum over height and width: (C, H, W) -> (C,); any image size."""

    mode = "max"


# ---- normalisation and dropout -----------------------------------------------------------------


@register("batchnorm2d")
class BatchNorm2d(LayerDef):
    """Batch normalisation per channel of (C, H, W) inputs (`batchnorm` does the same on images)."""

    class Options(Options):
        momentum: float = Field(0.1, gt=0.0, le=1.0)
        eps: float = Field(1e-5, gt=0.0)

    def build(self, opts: Any, in_shape: Shape, ctx: BuildContext) -> tuple[nn.Module, Shape]:
        c, _, _ = image_shape(in_shape, ctx)
        return nn.BatchNorm2d(c, eps=opts.eps, momentum=opts.momentum), in_shape


@register("dropout2d", "spatial_dropout")
class Dropout2d(LayerDef):
    """Zeroes whole channels with probability `p` while training."""

    primary = "p"

    class Options(Options):
        p: float = Field(0.5, ge=0.0, lt=1.0)

    def build(self, opts: Any, in_shape: Shape, ctx: BuildContext) -> tuple[nn.Module, Shape]:
        image_shape(in_shape, ctx)
        return nn.Dropout2d(opts.p), in_shape


# ---- residual conv block -----------------------------------------------------------------------


def _conv_bn(c_in: int, c_out: int, kernel: int, stride: int = 1) -> list[nn.Module]:
    """kxk conv ('same' padding, no bias: the batch norm's shift replaces it) + batch norm."""
    conv = nn.Conv2d(c_in, c_out, kernel, stride=stride, padding=kernel // 2, bias=False)
    return [conv, nn.BatchNorm2d(c_out)]


class ConvBlock(nn.Module):
    """A ResNet block: y = act(body(x) + skip(x)).

    basic body:      conv k (stride) -> bn -> act -> conv k -> bn
    bottleneck body: conv 1x1 -> bn -> act -> conv k (stride) -> bn -> act -> conv 1x1 -> bn,
                     inner width = filters // 4
    skip: identity, or conv 1x1 (stride) -> bn when the channels or the size change.
    """

    def __init__(
        self, c_in: int, c_out: int, kernel: int, stride: int, bottleneck: bool, act: str
    ) -> None:
        super().__init__()
        if bottleneck:
            mid = max(1, c_out // 4)
            layers = [*_conv_bn(c_in, mid, 1), make_activation(act, "")]
            layers += [*_conv_bn(mid, mid, kernel, stride), make_activation(act, "")]
            layers += _conv_bn(mid, c_out, 1)
        else:
            layers = [*_conv_bn(c_in, c_out, kernel, stride), make_activation(act, "")]
            layers += _conv_bn(c_out, c_out, kernel)
        self.body = nn.Sequential(*layers)  # (N, c_in, H, W) -> (N, c_out, ceil(H/s), ceil(W/s))
        self.skip: nn.Module = nn.Identity()
        if c_in != c_out or stride != 1:  # 1x1 conv with stride s: also ceil(H/s)
            self.skip = nn.Sequential(
                nn.Conv2d(c_in, c_out, 1, stride=stride, bias=False), nn.BatchNorm2d(c_out)
            )
        self.act = make_activation(act, "")

    def forward(self, x):
        return self.act(self.body(x) + self.skip(x))


@register("conv_block", "resblock", "residual_conv")
class ResConvBlock(LayerDef):
    """Residual conv block (conv-bn-act-conv-bn + skip, act after the add); `bottleneck` for 1x1-kxk-1x1."""

    primary = "filters"

    class Options(Options):
        filters: int = Field(..., gt=0)
        stride: int = Field(1, gt=0)
        kernel: int = Field(3, gt=0)
        bottleneck: bool = False
        activation: str = "relu"

    def build(self, opts: Any, in_shape: Shape, ctx: BuildContext) -> tuple[nn.Module, Shape]:
        c, h, w = image_shape(in_shape, ctx)
        if opts.kernel % 2 == 0:
            raise SpecError(f"{ctx.where}: field 'kernel' must be odd, got {opts.kernel}")
        make_activation(opts.activation, ctx.where)  # a clear error for an unknown name
        block = ConvBlock(
            c, opts.filters, opts.kernel, opts.stride, opts.bottleneck, opts.activation
        )
        oh, ow = (-(-d // opts.stride) for d in (h, w))  # ceil(d / stride)
        return block, (opts.filters, oh, ow)
