"""The exported graph's input, per data kind: each kind declares its `ExportAdapter` (the input
name, the inputs an export is verified on, the metadata a caller needs to build that input) in its
DataKind record (dlcli/data/contracts.py); this module looks it up."""

from __future__ import annotations

from typing import Any

from dlcli.data.contracts import ExportAdapter
from dlcli.data.kinds import KINDS, get_kind
from dlcli.errors import ExportError

__all__ = ["ExportAdapter", "adapter_for"]


def adapter_for(preprocessor: Any) -> ExportAdapter:
    """The adapter of the preprocessor's data kind; an ExportError when it has none."""
    adapter = get_kind(preprocessor.kind).export if preprocessor.kind in KINDS else None
    if adapter is None:
        raise ExportError(f"ONNX export does not support {preprocessor.kind} models yet")
    return adapter
