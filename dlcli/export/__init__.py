"""Export formats by name. A new format is one entry here and one module beside it."""

from __future__ import annotations

from typing import Any


class _Lazy:
    """Import the format module only when used (keeps `dl --help` light)."""

    def __init__(self, module: str) -> None:
        self.module = module

    def run(self, model: str, output: str | None, tolerance: float) -> dict[str, Any]:
        import importlib

        return importlib.import_module(self.module).export(model, output, tolerance)


FORMATS: dict[str, _Lazy] = {"onnx": _Lazy("dlcli.export.onnx")}
