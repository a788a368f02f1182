"""Positional encodings and the transformer encoder (padding masks honoured, see sequence.py)."""

from __future__ import annotations

import math
from typing import Any

import torch
from pydantic import Field
from torch import nn

from dlcli.errors import SpecError
from dlcli.spec.layers.core import make_activation
from dlcli.spec.layers.sequence import Mask, seq_shape, zero_padding
from dlcli.spec.registry import BuildContext, LayerDef, Options, Shape, register

# ---- positions and the transformer encoder -----------------------------------------------------


class PositionalEncoding(nn.Module):
    """x (N, T, D) + position vectors (T, D): sinusoidal (computed for any T) or learned
    (`max_length` rows); then dropout. Right padding keeps each row's positions those it has alone."""

    def __init__(self, dim: int, max_length: int, learned: bool, dropout: float) -> None:
        super().__init__()
        self.dim = dim
        self.table = nn.Parameter(torch.randn(max_length, dim) * 0.02) if learned else None
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        steps = x.shape[1]
        if self.table is not None:
            # an index, not a slice: slicing would bound the exported length by max_length
            return self.dropout(x + self.table[torch.arange(steps, device=x.device)])
        pos = torch.arange(steps, device=x.device, dtype=torch.float32).unsqueeze(1)  # (T, 1)
        half = torch.arange(0, self.dim, 2, device=x.device, dtype=torch.float32)
        angle = pos * torch.exp(half * (-math.log(10000.0) / self.dim))  # (T, ceil(D/2))
        pe = torch.stack([angle.sin(), angle.cos()], -1).flatten(1)[:, : self.dim]  # sin, cos, ...
        return self.dropout(x + pe.to(x.dtype))


@register("positional_encoding", "pos_encoding", "positional_embedding")
class PositionalEncodingDef(LayerDef):
    """Adds position vectors to (T, D): sinusoidal, or `learned: true` (up to `max_length` steps)."""

    class Options(Options):
        learned: bool = False
        max_length: int = Field(4096, gt=0)  # learned positions only; sinusoidal takes any length
        dropout: float = Field(0.0, ge=0.0, lt=1.0)

    def build(self, opts: Any, in_shape: Shape, ctx: BuildContext) -> tuple[nn.Module, Shape]:
        steps, dim = seq_shape(in_shape, ctx)
        if opts.learned and steps is not None and steps > opts.max_length:
            raise SpecError(f"{ctx.where}: {steps} steps exceed max_length {opts.max_length}")
        return PositionalEncoding(dim, opts.max_length, opts.learned, opts.dropout), in_shape


class SelfAttention(nn.Module):
    """Multi-head self-attention over (N, T, D); padded keys get no weight. A fully padded row
    attends uniformly (finfo.min, not -inf), so it stays finite."""

    def __init__(self, dim: int, heads: int, dropout: float) -> None:
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim)  # as nn.MultiheadAttention's in_proj
        self.out = nn.Linear(dim, dim)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, mask: Mask = None) -> torch.Tensor:
        n, t, d = x.shape
        q, k, v = self.qkv(x).reshape(n, t, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        scores = (q @ k.transpose(-2, -1)) / math.sqrt(d // self.heads)  # (N, heads, T, T)
        if mask is not None:
            scores = scores.masked_fill(~mask[:, None, None, :], torch.finfo(scores.dtype).min)
        weights = self.dropout(scores.softmax(-1))
        return self.out((weights @ v).transpose(1, 2).reshape(n, t, d))  # (N, T, D)


class EncoderBlock(nn.Module):
    """pre-norm:  x + attn(norm1(x)), then + ff(norm2(x));
    post-norm: norm1(x + attn(x)), then norm2(x + ff(x)) (nn.TransformerEncoderLayer's layout)."""

    def __init__(
        self, dim: int, heads: int, ff: int, dropout: float, pre_norm: bool, act: nn.Module
    ) -> None:
        super().__init__()
        self.pre_norm = pre_norm
        self.attn = SelfAttention(dim, heads, dropout)
        self.ff = nn.Sequential(nn.Linear(dim, ff), act, nn.Dropout(dropout), nn.Linear(ff, dim))
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.drop1, self.drop2 = nn.Dropout(dropout), nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, mask: Mask = None) -> torch.Tensor:
        if self.pre_norm:
            x = x + self.drop1(self.attn(self.norm1(x), mask))
            return x + self.drop2(self.ff(self.norm2(x)))
        x = self.norm1(x + self.drop1(self.attn(x, mask)))
        return self.norm2(x + self.drop2(self.ff(x)))


class TransformerEncoder(nn.Module):
    """`layers` encoder blocks over (N, T, D) (+ a final layer norm when pre-norm); padded steps
    come out zero."""

    accepts_mask = True

    def __init__(self, blocks: list[EncoderBlock], final_norm: nn.Module | None) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(blocks)
        self.norm = final_norm or nn.Identity()

    def forward(self, x: torch.Tensor, mask: Mask = None) -> torch.Tensor:
        for block in self.blocks:
            x = block(x, mask)
        return zero_padding(self.norm(x), mask)


@register("transformer", "transformer_encoder")
class Transformer(LayerDef):
    """Transformer encoder blocks on (T, D): `heads` (dividing D), `ff` (4*D), `layers`, `pre_norm`."""

    primary = "heads"

    class Options(Options):
        heads: int = Field(4, gt=0)
        ff: int | None = Field(None, gt=0)  # default 4 * D
        dropout: float = Field(0.1, ge=0.0, lt=1.0)
        layers: int = Field(1, gt=0)
        pre_norm: bool = True
        activation: str = "gelu"

    def build(self, opts: Any, in_shape: Shape, ctx: BuildContext) -> tuple[nn.Module, Shape]:
        _, dim = seq_shape(in_shape, ctx)
        if dim % opts.heads:
            raise SpecError(
                f"{ctx.where}: heads {opts.heads} must divide the feature size {dim}",
                "change heads, or the embedding dim before the transformer",
            )
        ff, act = opts.ff or 4 * dim, opts.activation
        blocks = [
            EncoderBlock(
                dim, opts.heads, ff, opts.dropout, opts.pre_norm, make_activation(act, ctx.where)
            )
            for _ in range(opts.layers)
        ]
        return TransformerEncoder(blocks, nn.LayerNorm(dim) if opts.pre_norm else None), in_shape
