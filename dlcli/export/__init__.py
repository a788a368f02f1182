"""Export formats by name, and what a model family hands them: an `ExportPlan` of `Graph`s (the
modules to export, their inputs and metadata). A new format is one entry here and one module
beside it with `write(plan, model_path, output, tolerance) -> dict`."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class Graph:
    """One module to export: `module` maps `sample`-like inputs (batch first) to its outputs."""

    module: Any  # torch.nn.Module
    sample: Any  # torch.Tensor: the export's example input
    input_name: str
    output_names: list[str]
    verify_on: list[Any]  # input batches the written graph must reproduce (e.g. 1 row and all)
    metadata: dict[str, str]  # the `dl.*` metadata properties
    dims: dict[int, str] = field(default_factory=lambda: {0: "batch"})  # dynamic input axes
    suffix: str = ""  # "": the main file; e.g. "encoder" -> MODEL.encoder.onnx beside it
    path_key: str | None = None  # the result key that names its file (e.g. "encoder_path")


@dataclass
class ExportPlan:
    """A family's graphs (the first is the main one), the rows they are checked on, and text
    files to write beside the main file once every graph passed (path of the main file ->
    {path: text}), e.g. a text model's vocabulary."""

    graphs: list[Graph]
    rows_checked: int
    side_texts: Callable[[Path], dict[Path, str]] | None = None


class _Lazy:
    """Import the format module only when used (keeps `dl --help` light)."""

    def __init__(self, module: str) -> None:
        self.module = module

    def write(
        self, plan: ExportPlan, model: str, output: str | None, tolerance: float
    ) -> dict[str, Any]:
        import importlib

        return importlib.import_module(self.module).write(plan, model, output, tolerance)


FORMATS: dict[str, _Lazy] = {"onnx": _Lazy("dlcli.export.onnx")}
