"""Sequence layers on (steps, features) inputs: the mask helpers every sequence family shares,
embeddings, 1-D convolution and pooling, and the poolings that end a sequence. Recurrent layers
live in recurrent.py, positions and the transformer in attention.py.

Padding: token ids (N, T) are padded with id 0 at the end of each row; `LayerStack` turns them into
a mask (N, T) (True = real step) and passes it to every layer here (`accepts_mask`); layers that
change the time axis or end it return `(x, mask)` (`updates_mask`). Every layer gives a row in a
padded batch the same output as that row alone, and takes `mask=None` (numeric series, dry runs).
"""

from __future__ import annotations

import math
from typing import Any, Literal

import torch
from pydantic import Field
from torch import nn
from torch.nn import functional as F

from dlcli.errors import SpecError
from dlcli.spec.layers.conv import Padding, PoolOptions, out_size, same_pads
from dlcli.spec.layers.core import make_activation
from dlcli.spec.registry import BuildContext, LayerDef, Options, Shape, register

Mask = torch.Tensor | None  # (N, T) bool, True = real step; None = every step is real


def _fmt(shape: Shape) -> str:
    return "(" + ", ".join(str(d) for d in shape) + (",)" if len(shape) == 1 else ")")


def seq_shape(in_shape: Shape, ctx: BuildContext) -> tuple[int | None, int]:
    """(steps, features) of a sequence input, or a SpecError that says how to get one."""
    if len(in_shape) != 2 or in_shape[1] is None:
        hint = (
            "token ids need an embedding first (embedding or input_embedding)"
            if len(in_shape) == 1 and not _floating(ctx)
            else "sequence layers take text after an embedding, or numeric series (steps, features)"
        )
        raise SpecError(f"{ctx.where}: needs (steps, features) input, got {_fmt(in_shape)}", hint)
    return in_shape[0], int(in_shape[1])


def _floating(ctx: BuildContext) -> bool:
    return ctx.dtype is None or ctx.dtype.is_floating_point


# ---- mask arithmetic (right padding: a row's real steps come first) ----------------------------


def zero_padding(x: torch.Tensor, mask: Mask) -> torch.Tensor:
    """Zero the padded steps of x (N, T, C)."""
    return x if mask is None else x * mask.unsqueeze(-1).to(x.dtype)


def _mask_from_lengths(lengths: torch.Tensor, steps: int | torch.SymInt) -> torch.Tensor:
    return torch.arange(steps, device=lengths.device).unsqueeze(0) < lengths.unsqueeze(1)  # (N, T)


def masked_mean(x: torch.Tensor, mask: Mask) -> torch.Tensor:
    """(N, T, C) -> (N, C): mean over the real steps (0 for a row without any)."""
    if mask is None:
        return x.mean(1)
    m = mask.unsqueeze(-1).to(x.dtype)
    return (x * m).sum(1) / m.sum(1).clamp(min=1.0)


def masked_max(x: torch.Tensor, mask: Mask) -> torch.Tensor:
    """(N, T, C) -> (N, C): maximum over the real steps (0 for a row without any)."""
    if mask is None:
        return x.amax(1)
    y = x.masked_fill(~mask.unsqueeze(-1), float("-inf")).amax(1)
    return torch.where(mask.any(1, keepdim=True), y, torch.zeros_like(y))


def reversal_index(x: torch.Tensor, mask: Mask) -> torch.Tensor:
    """(N, T) index that reverses each row's real steps in place and leaves its padding after them;
    applying it twice is the identity."""
    steps = torch.arange(x.shape[1], device=x.device).unsqueeze(0)  # (1, T)
    if mask is None:
        return (x.shape[1] - 1 - steps).expand(x.shape[0], -1)
    n = mask.sum(1, keepdim=True)  # (N, 1) real steps per row
    return torch.where(steps < n, n - 1 - steps, steps)


def take_steps(x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """x (N, T, C), index (N, T) -> x[n, index[n, t]]."""
    return x.gather(1, index.unsqueeze(-1).expand(-1, -1, x.shape[-1]))


# ---- embeddings --------------------------------------------------------------------------------


def vocab_size(opts: Any, ctx: BuildContext) -> int:
    """The vocabulary an embedding of token ids needs: `opts.vocab`, else the text data's."""
    if _floating(ctx):
        raise SpecError(
            f"{ctx.where}: embedding needs token ids (a text column); this input is numeric",
            "use input_embedding, which projects numeric series instead",
        )
    vocab = opts.vocab or ctx.data.get("vocab_size")
    if not vocab:
        raise SpecError(
            f"{ctx.where}: embedding needs the vocabulary size: train on text data or set vocab"
        )
    return int(vocab)


class _EmbeddingOptions(Options):
    dim: int = Field(..., gt=0)
    vocab: int | None = Field(None, gt=1)  # default: the text data's vocabulary size
    padding_idx: int | None = Field(0, ge=0)


@register("embedding")
class Embedding(LayerDef):
    """Token ids (T,) -> vectors (T, dim); id 0 is padding; `vocab` defaults to the data's."""

    primary = "dim"
    embeds_tokens = True
    Options = _EmbeddingOptions

    def build(self, opts: Any, in_shape: Shape, ctx: BuildContext) -> tuple[nn.Module, Shape]:
        vocab = vocab_size(opts, ctx)
        return nn.Embedding(vocab, opts.dim, padding_idx=opts.padding_idx), (*in_shape, opts.dim)


class SeriesProjection(nn.Module):
    """Numeric series (N, T) or (N, T, F) -> (N, T, dim): a dense layer on each step."""

    def __init__(self, features: int, dim: int, unsqueeze: bool) -> None:
        super().__init__()
        self.unsqueeze = unsqueeze  # (N, T) is a series with one feature
        self.linear = nn.Linear(features, dim)

    def forward(self, x):
        return self.linear(x.unsqueeze(-1) if self.unsqueeze else x)


@register("input_embedding", "embed_if_tokens")
class InputEmbedding(LayerDef):
    """`embedding` for token ids, a dense projection to `dim` for numeric series (T, F) or (T,)."""

    primary = "dim"
    embeds_tokens = True
    Options = _EmbeddingOptions

    def build(self, opts: Any, in_shape: Shape, ctx: BuildContext) -> tuple[nn.Module, Shape]:
        if not _floating(ctx):
            table = nn.Embedding(vocab_size(opts, ctx), opts.dim, padding_idx=opts.padding_idx)
            return table, (*in_shape, opts.dim)
        if len(in_shape) == 1:  # (T,): one value per step
            return SeriesProjection(1, opts.dim, True), (in_shape[0], opts.dim)
        steps, features = seq_shape(in_shape, ctx)
        return SeriesProjection(features, opts.dim, False), (steps, opts.dim)


# ---- 1-D convolution and pooling ---------------------------------------------------------------


def _new_lengths(mask: torch.Tensor, kernel: int, stride: int, pads: tuple[int, int], dil: int):
    """Each row's output length, as if the row had been run alone: out_size() on its real steps."""
    reach = dil * (kernel - 1) + 1
    free = mask.sum(1) + sum(pads) - reach  # (N,)
    return (torch.div(free, stride, rounding_mode="floor") + 1).clamp(min=0)


class SeqConv1d(nn.Module):
    """Convolution over time, (N, T, C) -> (N, T', filters); padded steps are zeroed first, so each
    row's outputs at its real steps are those of the row alone; the mask shrinks with the stride."""

    accepts_mask = True
    updates_mask = True

    def __init__(self, conv: nn.Conv1d, pads: tuple[int, int], act: nn.Module | None) -> None:
        super().__init__()
        self.conv, self.pads, self.act = conv, pads, act or nn.Identity()

    def forward(self, x: torch.Tensor, mask: Mask = None):
        y = zero_padding(x, mask).transpose(1, 2)  # (N, C, T)
        if self.pads[0] != self.pads[1]:
            y = F.pad(y, self.pads)
        y = self.act(self.conv(y)).transpose(1, 2)  # (N, T', filters)
        if mask is None:
            return y, None
        k, s, d = self.conv.kernel_size[0], self.conv.stride[0], self.conv.dilation[0]
        mask = _mask_from_lengths(_new_lengths(mask, k, s, self.pads, d), y.shape[1])
        return zero_padding(y, mask), mask


@register("conv1d")
class Conv1d(LayerDef):
    """Convolution over time on (T, F) -> (T', filters); padding 'same' keeps ceil(T/stride)."""

    primary = "filters"

    class Options(Options):
        filters: int = Field(..., gt=0)
        kernel: int = Field(3, gt=0)
        stride: int = Field(1, gt=0)
        padding: Padding = "same"
        dilation: int = Field(1, gt=0)
        bias: bool = True
        activation: str | None = None

    def build(self, opts: Any, in_shape: Shape, ctx: BuildContext) -> tuple[nn.Module, Shape]:
        steps, features = seq_shape(in_shape, ctx)
        k, s, d = opts.kernel, opts.stride, opts.dilation
        pads = _pads(opts.padding, k, d)
        _check_fits(steps, k, pads, d, ctx)
        conv = nn.Conv1d(
            features, opts.filters, k, stride=s, dilation=d, bias=opts.bias,
            padding=pads[0] if pads[0] == pads[1] else 0,
        )  # fmt: skip
        act = make_activation(opts.activation, ctx.where) if opts.activation else None
        out = None if steps is None else out_size(steps, k, s, pads, d)
        return SeqConv1d(conv, pads, act), (out, opts.filters)


def _pads(padding: Any, kernel: int, dilation: int) -> tuple[int, int]:
    if padding == "same":
        return same_pads(kernel, dilation)
    return (0, 0) if padding == "valid" else (int(padding), int(padding))


def _check_fits(steps, kernel: int, pads: tuple[int, int], dil: int, ctx: BuildContext) -> None:
    if steps is not None and steps + sum(pads) < dil * (kernel - 1) + 1:
        raise SpecError(
            f"{ctx.where}: {steps} steps are too few for a window of {kernel}",
            "use padding: same, a smaller window or longer sequences",
        )


class SeqPool1d(nn.Module):
    """Max or average over windows of time, (N, T, C) -> (N, T', C). Padded steps never win a
    maximum nor count in an average; the mask shrinks with the stride. The windows are gathered
    with an index (N, T', size, C) rather than by max_pool1d, which fixes T when exported."""

    accepts_mask = True
    updates_mask = True

    def __init__(self, mode: str, size: int, stride: int, pads: tuple[int, int]) -> None:
        super().__init__()
        self.mode, self.size, self.stride, self.pads = mode, size, stride, pads

    def forward(self, x: torch.Tensor, mask: Mask = None):
        real = torch.ones_like(x[..., 0], dtype=torch.bool) if mask is None else mask  # (N, T)
        x = F.pad(x, (0, 0, *self.pads))  # (N, pads[0] + T + pads[1], C)
        real = F.pad(real, self.pads, value=False)
        steps = (x.shape[1] - self.size) // self.stride + 1
        starts = torch.arange(steps, device=x.device).unsqueeze(1) * self.stride  # (T', 1)
        index = starts + torch.arange(self.size, device=x.device)  # (T', size)
        windows, counted = x[:, index], real[:, index].unsqueeze(-1)  # (N, T', size, C | 1)
        if self.mode == "max":
            y = windows.masked_fill(~counted, float("-inf")).amax(2)
        else:
            y = (windows * counted.to(x.dtype)).sum(2) / counted.sum(2).clamp(min=1).to(x.dtype)
        if mask is None:
            return y, None
        mask = _mask_from_lengths(_new_lengths(mask, self.size, self.stride, self.pads, 1), steps)
        return torch.where(mask.unsqueeze(-1), y, torch.zeros_like(y)), mask  # not -inf * 0

    def extra_repr(self) -> str:
        return f"{self.mode}, size={self.size}, stride={self.stride}, pads={self.pads}"


class _Pool1dDef(LayerDef):
    mode = "max"
    primary = "size"

    class Options(PoolOptions):
        padding: Literal["valid", "same"] = "valid"

    def build(self, opts: Any, in_shape: Shape, ctx: BuildContext) -> tuple[nn.Module, Shape]:
        steps, features = seq_shape(in_shape, ctx)
        k, s = opts.size, opts.stride or opts.size
        pads = _pads(opts.padding, k, 1)
        _check_fits(steps, k, pads, 1, ctx)
        out = None if steps is None else out_size(steps, k, s, pads, 1)
        return SeqPool1d(self.mode, k, s, pads), (out, features)


@register("maxpool1d", "max_pool1d")
class MaxPool1d(_Pool1dDef):
    """Maximum over windows of `size` steps (stride defaults to size); padding ignored."""

    mode = "max"


@register("avgpool1d", "avg_pool1d", "average_pool1d")
class AvgPool1d(_Pool1dDef):
    """Average over windows of `size` steps (stride defaults to size); padding not counted."""

    mode = "avg"


class SeqPool(nn.Module):
    """Ends a sequence: (N, T, C) -> (N, C) by masked mean, masked max or step 0 (cls)."""

    accepts_mask = True
    updates_mask = True

    def __init__(self, mode: str) -> None:
        super().__init__()
        self.mode = mode

    def forward(self, x: torch.Tensor, mask: Mask = None):
        if self.mode == "cls":
            return x[:, 0], None
        return (masked_mean(x, mask) if self.mode == "mean" else masked_max(x, mask)), None

    def extra_repr(self) -> str:
        return self.mode


def _pool_def(mode: str, doc: str) -> type[LayerDef]:
    class PoolDef(LayerDef):
        class Options(Options):
            pass

        def build(self, opts: Any, in_shape: Shape, ctx: BuildContext) -> tuple[nn.Module, Shape]:
            _, features = seq_shape(in_shape, ctx)
            return SeqPool(mode), (features,)

    PoolDef.__doc__ = doc
    return PoolDef


register("global_avgpool1d", "mean_pool", "global_average_pool1d")(
    _pool_def("mean", "Mean over the real steps: (T, C) -> (C,).")
)
register("global_maxpool1d", "max_over_time", "global_max_pool1d")(
    _pool_def("max", "Maximum over the real steps: (T, C) -> (C,).")
)
register("cls_pool")(
    _pool_def("cls", "Step 0: (T, C) -> (C,); put a cls_token layer before the encoder.")
)


class AttentionPool(nn.Module):
    """(N, T, D) -> (N, D): a weighted mean over the real steps, weights softmax(x . q / sqrt(D))
    with a learned query q (zero at first: the plain mean)."""

    accepts_mask = True
    updates_mask = True

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.query = nn.Parameter(torch.zeros(dim))

    def forward(self, x: torch.Tensor, mask: Mask = None):
        scores = (x @ self.query) / math.sqrt(x.shape[-1])  # (N, T)
        if mask is not None:  # finfo.min, not -inf: a row without real steps stays finite
            scores = scores.masked_fill(~mask, torch.finfo(scores.dtype).min)
        pooled = (scores.softmax(-1).unsqueeze(-1) * x).sum(1)  # (N, D)
        if mask is not None:
            pooled = pooled * mask.any(1, keepdim=True).to(pooled.dtype)
        return pooled, None


@register("attention_pool", "attention_pooling")
class AttentionPoolDef(LayerDef):
    """Learned-query attention over the real steps: (T, D) -> (D,)."""

    class Options(Options):
        pass

    def build(self, opts: Any, in_shape: Shape, ctx: BuildContext) -> tuple[nn.Module, Shape]:
        _, dim = seq_shape(in_shape, ctx)
        return AttentionPool(dim), (dim,)


class ClsToken(nn.Module):
    """Prepends a learned vector: (N, T, D) -> (N, 1 + T, D); the mask gains a real step 0."""

    accepts_mask = True
    updates_mask = True

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.token = nn.Parameter(torch.randn(dim) * 0.02)

    def forward(self, x: torch.Tensor, mask: Mask = None):
        x = torch.cat([self.token.expand(x.shape[0], 1, -1), x], 1)
        if mask is not None:
            mask = torch.cat([mask.new_ones(mask.shape[0], 1), mask], 1)
        return x, mask


@register("cls_token")
class ClsTokenDef(LayerDef):
    """Prepends a learned step for `cls_pool` to read after the encoder: (T, D) -> (T + 1, D)."""

    class Options(Options):
        pass

    def build(self, opts: Any, in_shape: Shape, ctx: BuildContext) -> tuple[nn.Module, Shape]:
        steps, dim = seq_shape(in_shape, ctx)
        return ClsToken(dim), (None if steps is None else steps + 1, dim)
