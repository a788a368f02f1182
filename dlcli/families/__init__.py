"""The model-family registry: family name -> the module whose `FAMILY` implements the contract in
base.py, imported only when used. A new family is one entry here, one module (plus its spec
sections in spec/schema.py). `run_training` is `dl train` as a library call with these families.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from dlcli.errors import ModelFileError

if TYPE_CHECKING:
    from dlcli.engine.train_job import TrainRequest
    from dlcli.families.base import Family

FAMILIES: dict[str, str] = {
    "supervised": "dlcli.families.supervised",
    "autoencoder": "dlcli.families.autoencoder",
    "gan": "dlcli.families.gan",
}
DEFAULT = "supervised"  # the family of a model file without a `family` key


def get(name: str) -> Family:
    """The family called `name` (a spec's `family`, a model file's `family`)."""
    if name not in FAMILIES:
        raise ModelFileError(f"unknown model family '{name}'", f"known: {', '.join(FAMILIES)}")
    return importlib.import_module(FAMILIES[name]).FAMILY


def of_model(data: dict) -> Family:
    """The family of a loaded model file (or checkpoint)."""
    return get(str(data.get("family") or DEFAULT))


def run_training(req: TrainRequest) -> dict:
    """Train and save as `dl train` does (engine/train_job.py); returns the --json summary."""
    import sys

    from dlcli.engine.train_job import run_training as run_job

    return run_job(req, sys.modules[__name__])  # type: ignore[arg-type]
