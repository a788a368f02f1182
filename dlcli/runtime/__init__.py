"""Running graphs written by `dl export` without torch: onnxruntime, numpy, pandas/pyarrow and
Pillow plus the file's `dl.*` metadata (docs/onnx.md). `load(path)` opens a graph; each data kind's
input encoder (raw file -> the graph's input) is one module named in `ENCODERS`."""

from __future__ import annotations

import importlib
from typing import Any

from dlcli.errors import ModelFileError
from dlcli.runtime.session import OnnxModel

# dl.data_kind -> the module whose `encoder(model)` builds that kind's inputs
ENCODERS: dict[str, str] = {
    "tabular": "dlcli.runtime.tables",
    "text": "dlcli.runtime.text",
    "image": "dlcli.runtime.images",
    "series": "dlcli.runtime.series",
}

__all__ = ["ENCODERS", "OnnxModel", "encoder_for", "load"]


def load(path: str, spinning: bool = True) -> OnnxModel:
    """The graph at `path`, checked to be one `dl export` wrote (one line otherwise);
    `spinning=False`: idle intra-op threads sleep (OnnxModel.open)."""
    return OnnxModel.open(path, spinning)


def encoder_for(model: OnnxModel) -> Any:
    """The input encoder of the model's data kind (ModelFileError when this dl cannot run it)."""
    name = ENCODERS.get(model.kind)
    if name is None:
        raise ModelFileError(
            f"{model.path}: running exported {model.kind} models without torch is not supported yet",
            "use the model file: dl predict MODEL.pt",
        )
    return importlib.import_module(name).encoder(model)
