"""The model-file format: one dict of plain data and tensors, saved atomically, loaded weights_only.

Keys: format, version, dl_version, task, loss, spec (the spec document), input_shape, outputs,
preprocessor (preprocessing state), weights ({"network": state_dict}), train (settings), history,
metrics, created. See docs/model-file.md.
"""

from __future__ import annotations

import pickle
from pathlib import Path

from dlcli.errors import ModelFileError
from dlcli.fileio import atomic_path

FORMAT = "dlcli-model"  # a trained model
CHECKPOINT_FORMAT = "dlcli-checkpoint"  # an interrupted run's resumable state (<model>.run/)
VERSION = 2  # 2: the fitted data preprocessing is stored under "preprocessor" (1: "encoder")


def save(payload: dict, path: str | Path, fmt: str = FORMAT) -> None:
    """Write `payload` (format and version are added) to `path` atomically."""
    import torch

    data = {"format": fmt, "version": VERSION, **payload}
    with atomic_path(path) as tmp:
        torch.save(data, tmp)


def load(path: str | Path, expect: str = FORMAT) -> dict:
    """Load and check a model file; anything but a readable file of ours is a ModelFileError."""
    import torch

    p = Path(path)
    if not p.exists():
        raise ModelFileError(f"{path}: model file not found", "train one with `dl train DATA`")
    if p.is_dir():
        raise ModelFileError(f"{path}: is a folder, expected a model file")
    if p.stat().st_size == 0:
        raise ModelFileError(f"{path}: model file is empty")
    try:
        data = torch.load(p, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        if "Unsupported global" in str(exc):
            raise ModelFileError(
                f"{path}: contains pickled code or objects, not plain data; refused (dl never runs code from a model file)"
            ) from None
        raise ModelFileError(f"{path}: not a dl model file (unreadable)") from None
    except (
        Exception
    ) as exc:  # torch raises many kinds (OSError, RuntimeError, IndexError, ...) on foreign bytes
        raise ModelFileError(
            f"{path}: truncated or not a dl model file (cannot be read: {type(exc).__name__})"
        ) from None
    if not isinstance(data, dict) or data.get("format") != expect:
        raise ModelFileError(f"{path}: not a dl model file (no '{expect}' header)")
    version = data.get("version")
    if not isinstance(version, int) or version > VERSION or version < 1:
        raise ModelFileError(
            f"{path}: model file format version {version!r} is not supported by this dl (reads version {VERSION})",
            "upgrade dl",
        )
    return _upgrade(data)


def _upgrade(data: dict) -> dict:
    """Files of an older version, in today's layout (in memory; the file is not rewritten)."""
    if data["version"] < 2 and "encoder" in data:
        data["preprocessor"] = data.pop("encoder")
    return data


def checkpoint_path(model_path: str | Path) -> Path:
    """Where an interrupted run's resumable checkpoint lives: <model>.run/checkpoint.pt."""
    return run_dir(model_path) / "checkpoint.pt"


def run_dir(model_path: str | Path) -> Path:
    """The run folder beside a model: model.pt -> model.run/."""
    p = Path(model_path)
    return p.with_name(p.stem + ".run") if p.suffix else p.with_name(p.name + ".run")
