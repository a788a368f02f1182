"""The frozen-feature cache: when the first top-level layers of a network stay frozen for the
whole run and its inputs are the same every epoch (no augmentation), their outputs are computed
once (eval mode, on the training device, batched) and the remaining layers train on them.

The features are kept on disk in `<DL_CACHE_DIR>/features/<key>.pt`, beside the decoded-image
cache, so a second run with the same data and the same frozen weights skips even the one pass.
The key hashes everything the features depend on: the stored inputs' bytes (train and
validation), the frozen layers' architecture and tensors, the input transform's tensors, the
precision, the device type and the torch version. A file that cannot be read is computed again;
one that cannot be written is a note.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from dlcli import cache_limit, settings
from dlcli.console import info, note
from dlcli.fileio import atomic_path

BATCH_BYTES = 2**26  # stored input bytes per feature batch (64 MiB)


def frozen_prefix(network: nn.Module, frozen: list[nn.Module]) -> int:
    """How many leading top-level layers of `network` are in `frozen` (0 when the network is no
    plain stack of layers, or when nothing after them would train)."""
    if not isinstance(network, nn.Sequential):
        return 0
    ids = {id(m) for m in frozen}
    k = 0
    for m in network.children():
        if id(m) not in ids:
            break
        k += 1
    return k if k < len(network) else 0


def cache_folder() -> Path:
    return settings.get().cache_dir / "features"


def _digest(h: Any, t: torch.Tensor) -> None:
    t = t.detach().cpu().contiguous()
    h.update(f"{t.dtype}{tuple(t.shape)}".encode())
    if t.numel():
        h.update(t.reshape(-1).view(torch.uint8).numpy().data)


def cache_key(prefix: nn.Module, transform: Any, xs: list[Any], tags: list[str]) -> str:
    """A hash of the stored inputs, the frozen layers and the transform's tensors, and `tags`."""
    h = hashlib.blake2b(digest_size=16)
    h.update("|".join([torch.__version__, repr(prefix), *tags]).encode())
    for t in prefix.state_dict().values():
        _digest(h, t)
    if isinstance(transform, nn.Module):
        for t in transform.state_dict().values():
            _digest(h, t)
    for x in xs:
        if x is not None:
            _digest(h, x)
    return h.hexdigest()


@torch.no_grad()
def compute(
    prefix: nn.Module,
    transform: Callable[[torch.Tensor], torch.Tensor],
    x: torch.Tensor,
    device: torch.device,
    autocast: Callable[[], Any],
) -> torch.Tensor:
    """prefix(transform(x)) in eval mode on `device`, in batches of about BATCH_BYTES inputs."""
    prefix.eval()
    batch = max(1, BATCH_BYTES // max(1, x[0].numel() * x.element_size())) if len(x) else 1
    outs = []
    for i in range(0, len(x), batch):
        xb = transform(x[i : i + batch].to(device))
        with autocast():
            outs.append(prefix(xb))
    return torch.cat(outs)


def features(
    prefix: nn.Module,
    transform: Callable[[torch.Tensor], torch.Tensor],
    data: tuple[Any, Any],
    device: torch.device,
    autocast: Callable[[], Any],
    tags: list[str],
    write: bool = True,
) -> tuple[torch.Tensor, Any]:
    """(train features, validation features or None) of `data` = (x_train, x_val): read from the
    disk cache when there, else computed and (if `write`) saved there."""
    x_tr, x_va = data
    key = cache_key(prefix, transform, [x_tr, x_va], tags)
    file = cache_folder() / f"{key}.pt"
    if file.exists():
        try:
            got = torch.load(file, map_location=device, weights_only=True)
            info(f"frozen features: read from the cache ({file})")
            cache_limit.mark_used(file)
            return got["train"], got["val"]
        except Exception:
            note(f"the feature cache file {file} could not be read; computing the features again")
    f_tr = compute(prefix, transform, x_tr, device, autocast)
    f_va = compute(prefix, transform, x_va, device, autocast) if x_va is not None else None
    if write:
        try:
            with atomic_path(file) as tmp:
                torch.save({"train": f_tr.cpu(), "val": None if f_va is None else f_va.cpu()}, tmp)
            cache_limit.trim(keep=file)
        except OSError as exc:
            note(
                f"the feature cache could not be written ({exc.strerror or exc}); it is kept in memory"
            )
    info(
        f"frozen features: computed once for {len(f_tr):,} training rows ({tuple(f_tr.shape[1:])})"
    )
    return f_tr, f_va
