"""Transfer learning: start a network from an earlier model's weights and freeze chosen layers."""

from __future__ import annotations

from pathlib import Path

from torch import nn

from dlcli.console import info
from dlcli.errors import UsageError


def init_from(network: nn.Module, source: dict, model_path: str | Path) -> set[str]:
    """Copy every tensor of `source` (the state dict of `model_path`'s network) whose name and
    shape fit `network`.

    Layers that differ (typically the output head, when the number of classes changed) keep their
    fresh initialisation. Returns the names of the tensors loaded.
    """
    own = network.state_dict()
    fitting = {
        k: v for k, v in source.items() if k in own and tuple(own[k].shape) == tuple(v.shape)
    }
    if not fitting:
        raise UsageError(
            f"--init-from {model_path}: none of its layers fit this network",
            "use the same --arch or spec as that model",
        )
    network.load_state_dict(fitting, strict=False)
    fresh = sorted({k.rsplit(".", 1)[0] for k in own if k not in fitting})
    msg = f"--init-from {model_path}: loaded {len(fitting)} of {len(own)} tensors"
    if fresh:
        msg += f"; freshly initialised: {', '.join(fresh[:6])}{' ...' if len(fresh) > 6 else ''}"
    info(msg)
    return set(fitting)


def select_layers(network: nn.Module, selector: str) -> list[tuple[str, nn.Module]]:
    """Top-level layers chosen by name (`features`, a prefix like `features.0`) or index range
    (`0:6`, `3`, `:4`); several comma-separated."""
    children = list(network.named_children())
    names = [n for n, _ in children]
    chosen: dict[str, nn.Module] = {}
    for part in (p.strip() for p in selector.split(",") if p.strip()):
        if ":" in part or part.isdigit():
            try:
                lo, _, hi = part.partition(":") if ":" in part else (part, "", str(int(part) + 1))
                idx = range(int(lo or 0), int(hi) if hi else len(children))
            except ValueError:
                raise UsageError(
                    f"--freeze '{part}': expected a layer name or an index range like 0:6"
                ) from None
            if not idx or idx.start >= len(children):
                raise UsageError(
                    f"--freeze '{part}': the network has layers 0..{len(children) - 1}"
                )
            for i in idx:
                if i < len(children):
                    chosen[children[i][0]] = children[i][1]
        else:
            found = [
                (n, m) for n, m in network.named_modules() if n == part or n.startswith(part + ".")
            ]
            if not found:
                raise UsageError(
                    f"--freeze '{part}': no layer of that name",
                    f"top-level layers: {', '.join(names)}",
                )
            chosen.update({n: m for n, m in found if n == part} or dict(found[:1]))
    return list(chosen.items())


def freeze(
    network: nn.Module,
    selector: str,
    loaded: set[str] | None = None,
    source: str = "the source model",
) -> list[nn.Module]:
    """Stop gradients for the chosen layers; returns them so the trainer keeps them in eval mode
    (frozen batch-norm statistics stay as they were learnt). With `loaded` (the tensors copied by
    init_from or --embeddings: `source`), freezing a layer that kept its random initialisation is
    refused."""
    layers = select_layers(network, selector)
    if loaded is not None:
        for name, module in layers:
            fresh = [f"{name}.{k}" for k in module.state_dict() if f"{name}.{k}" not in loaded]
            if fresh:
                raise UsageError(
                    f"--freeze {selector}: {fresh[0]} did not fit {source} and is freshly initialised; freezing it would keep random weights",
                    "freeze fewer layers, or train the source model on data of the same shape"
                    if source == "the source model"
                    else "freeze only the embeddings",
                )
    for _, module in layers:
        for p in module.parameters():
            p.requires_grad_(False)
    frozen = sum(p.numel() for _, m in layers for p in m.parameters())
    total = sum(p.numel() for p in network.parameters())
    info(
        f"--freeze {selector}: {frozen:,} of {total:,} parameters frozen ({', '.join(n for n, _ in layers)})"
    )
    return [m for _, m in layers]
