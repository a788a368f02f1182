"""The layer table of `dl build` and `dl train`: name, type, output shape, parameters."""

from __future__ import annotations

from typing import Any

from dlcli.model.builder import BuiltNetwork


def _fmt_shape(shape: Any) -> str:
    return "(" + ", ".join("T" if d is None else str(d) for d in shape) + ")"


def summary_dict(net: BuiltNetwork, frozen: set[str] | None = None) -> dict:
    """A plain-data summary (what --json prints)."""
    total = sum(p.numel() for p in net.module.parameters())
    trainable = sum(p.numel() for p in net.module.parameters() if p.requires_grad)
    return {
        "input_shape": list(net.input_shape),
        "output_shape": list(net.output_shape),
        "layers": [
            {
                "name": r.name,
                "type": r.type,
                "output_shape": list(r.out_shape),
                "params": r.params,
                "depth": r.depth,
            }
            for r in net.rows
        ],
        "params": total,
        "trainable_params": trainable,
        "frozen_params": total - trainable,
    }


def render_summary(net: BuiltNetwork, title: str = "network") -> Any:
    """A rich Table of the network (printed on stderr by the caller)."""
    from rich.table import Table

    d = summary_dict(net)
    table = Table(title=f"{title}: input {_fmt_shape(net.input_shape)}", title_justify="left")
    table.add_column("layer")
    table.add_column("type")
    table.add_column("output shape")
    table.add_column("params", justify="right")
    for r in net.rows:
        table.add_row("  " * r.depth + r.name, r.type, _fmt_shape(r.out_shape), f"{r.params:,}")
    caption = f"{d['params']:,} parameters"
    if d["frozen_params"]:
        caption += f" ({d['trainable_params']:,} trainable, {d['frozen_params']:,} frozen)"
    table.caption = caption
    table.caption_justify = "left"
    return table
