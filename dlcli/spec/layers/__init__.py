"""Layer builders grouped by family. `load_all` imports each family so its @register calls run."""

from __future__ import annotations

import importlib

FAMILIES = (
    "core",
    "conv",
    "sequence",
    "recurrent",
    "attention",
    "generative",
    "ensemble",
    "bag",
    "backbones",
)


def load_all() -> None:
    for family in FAMILIES:
        importlib.import_module(f"dlcli.spec.layers.{family}")
