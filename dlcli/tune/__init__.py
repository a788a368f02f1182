"""`dl tune`: hyperparameter search over the families' one train job (docs/tune.md)."""

from __future__ import annotations

from pathlib import Path


def tune_dir(output: str) -> Path:
    """Where a search's files go, beside its best model: best.pt -> best.tune/"""
    p = Path(output)
    return p.with_name((p.stem if p.suffix else p.name) + ".tune")
