"""Recurrent sequence layers: rnn, lstm and gru, exact with right padding (see sequence.py)."""

from __future__ import annotations

from typing import Any, Literal

import torch
from pydantic import Field
from torch import nn
from torch.nn import functional as F

from dlcli.spec.layers.sequence import (
    Mask,
    masked_mean,
    reversal_index,
    seq_shape,
    take_steps,
    zero_padding,
)
from dlcli.spec.registry import BuildContext, LayerDef, Options, Shape, register

# ---- recurrent layers --------------------------------------------------------------------------

CELLS = {"rnn": nn.RNN, "lstm": nn.LSTM, "gru": nn.GRU}


def _cell_step(kind: str, pre: torch.Tensor, h: torch.Tensor, c: torch.Tensor, w, b):
    """One step of a torch rnn / gru / lstm cell: pre = x W_ih^T + b_ih (N, G * H)."""
    gates = F.linear(h, w, b)  # (N, G * H)
    if kind == "rnn":  # c rides along unused (a copy: while_loop rejects an output that aliases)
        return torch.tanh(pre + gates), c.clone()
    if kind == "gru":  # gate order r, z, n; the reset gate scales the hidden part of n only
        ir, iz, i_n = pre.chunk(3, -1)
        hr, hz, hn = gates.chunk(3, -1)
        r, z = torch.sigmoid(ir + hr), torch.sigmoid(iz + hz)
        n = torch.tanh(i_n + r * hn)
        return (1 - z) * n + z * h, c.clone()
    i, f, g, o = (pre + gates).chunk(4, -1)  # lstm: gate order i, f, g, o
    c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
    return torch.sigmoid(o) * torch.tanh(c), c


def loop_recurrence(kind: str, x: torch.Tensor, rnn: nn.Module) -> torch.Tensor:
    """What a one-layer torch rnn / gru / lstm computes, (N, T, F) -> (N, T, H), as a while_loop:
    it exports as one ONNX Loop over any length. torch.export fixes nn.RNN's time axis, and the
    exporter's own GRU and LSTM rewrites fail after a layer that changes the length."""
    from torch._higher_order_ops.while_loop import while_loop

    pre = F.linear(x, rnn.weight_ih_l0, rnn.bias_ih_l0).transpose(0, 1)  # (T, N, G * H)
    w, b = rnn.weight_hh_l0.clone(), rnn.bias_hh_l0.clone()  # while_loop rejects aliased inputs
    h0 = x.new_zeros(x.shape[0], rnn.hidden_size)  # (N, H)

    def more(i, out, h, c):
        return i < pre.shape[0]

    def step(i, out, h, c):
        t = i.item()
        torch._check(t >= 0)
        torch._check(t < pre.shape[0])
        h, c = _cell_step(kind, pre[t], h, c, w, b)
        out = out.clone()
        out[t] = h
        return i + 1, out, h, c

    out0 = x.new_zeros(pre.shape[0], x.shape[0], rnn.hidden_size)  # (T, N, H)
    _, out, _, _ = while_loop(more, step, (torch.tensor(0), out0, h0, h0.clone()))
    return out.transpose(0, 1)


class Recurrent(nn.Module):
    """Stacked rnn / lstm / gru over (N, T, F), exact under right padding.

    One single-layer torch module per layer and direction. The forward direction's outputs at a
    row's real steps do not depend on the padding after them; the backward direction runs forward
    over each row's real steps reversed in place (a gather), then is reversed back, so it starts at
    the row's own last step. `output`: last (forward at the last real step + backward at step 0),
    mean (over real steps) or all ((N, T, H * directions), padded steps zeroed, mask passed on).
    """

    accepts_mask = True
    updates_mask = True

    def __init__(
        self, kind: str, n_in: int, hidden: int, layers: int, bidirectional: bool,
        dropout: float, output: str,
    ) -> None:  # fmt: skip
        super().__init__()
        cell, width = CELLS[kind], hidden * (2 if bidirectional else 1)
        sizes = [n_in] + [width] * (layers - 1)
        self.kind, self.hidden, self.output = kind, hidden, output
        self.forward_layers = nn.ModuleList(cell(s, hidden, batch_first=True) for s in sizes)
        self.backward_layers = nn.ModuleList(
            cell(s, hidden, batch_first=True) for s in (sizes if bidirectional else [])
        )
        self.dropout = nn.Dropout(dropout)  # between layers, as torch's `dropout` argument

    def _run(self, rnn: nn.Module, x: torch.Tensor) -> torch.Tensor:
        if torch.compiler.is_exporting():
            return loop_recurrence(self.kind, x, rnn)
        return rnn(x)[0]

    def forward(self, x: torch.Tensor, mask: Mask = None):  # (N, T, F)
        order = reversal_index(x, mask) if len(self.backward_layers) else None
        for i, fwd in enumerate(self.forward_layers):
            if i:
                x = self.dropout(x)
            out = self._run(fwd, x)  # (N, T, H)
            if order is not None:
                back = self._run(self.backward_layers[i], take_steps(x, order))
                out = torch.cat([out, take_steps(back, order)], -1)  # (N, T, 2H)
            x = out
        if self.output == "all":
            return zero_padding(x, mask), mask
        if self.output == "mean":
            return masked_mean(x, mask), None
        return self._last(x, mask), None

    def _last(self, x: torch.Tensor, mask: Mask) -> torch.Tensor:  # (N, T, W) -> (N, W)
        if mask is None:
            last = x[:, -1]
        else:
            index = (mask.sum(1) - 1).clamp(min=0)  # (N,) each row's last real step
            last = x.gather(1, index.view(-1, 1, 1).expand(-1, 1, x.shape[-1])).squeeze(1)
        if len(self.backward_layers):  # the backward direction ends at step 0
            last = torch.cat([last[:, : self.hidden], x[:, 0, self.hidden :]], -1)
        if mask is not None:  # a row without real steps gives zeros
            last = last * mask.any(1, keepdim=True).to(last.dtype)
        return last

    def extra_repr(self) -> str:
        return f"output={self.output}"


class _RecurrentDef(LayerDef):
    kind = "lstm"
    primary = "hidden"

    class Options(Options):
        hidden: int = Field(..., gt=0)
        layers: int = Field(1, gt=0)
        bidirectional: bool = False
        dropout: float = Field(0.0, ge=0.0, lt=1.0)  # between stacked layers
        output: Literal["last", "mean", "all"] = "last"

    def build(self, opts: Any, in_shape: Shape, ctx: BuildContext) -> tuple[nn.Module, Shape]:
        steps, features = seq_shape(in_shape, ctx)
        module = Recurrent(
            self.kind, features, opts.hidden, opts.layers, opts.bidirectional, opts.dropout,
            opts.output,
        )  # fmt: skip
        width = opts.hidden * (2 if opts.bidirectional else 1)
        return module, ((steps, width) if opts.output == "all" else (width,))


@register("rnn", "simple_rnn")
class RNN(_RecurrentDef):
    """Elman RNN (tanh) over (T, F); `output`: last, mean or all steps; `bidirectional`, `layers`."""

    kind = "rnn"


@register("lstm")
class LSTM(_RecurrentDef):
    """LSTM over (T, F); `output`: last, mean or all steps; `bidirectional`, `layers`, `dropout`."""

    kind = "lstm"


@register("gru")
class GRU(_RecurrentDef):
    """GRU over (T, F); `output`: last, mean or all steps; `bidirectional`, `layers`, `dropout`."""

    kind = "gru"
