"""One exported graph on onnxruntime: the session, its `dl.*` metadata, batched runs."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from dlcli.errors import ModelFileError

FORMAT_VERSION = 1  # the newest dl.format_version this runtime reads (docs/onnx.md)
BATCH_VALUES = 2**24  # input values per run: bounded memory, large enough to amortise overhead


@dataclass(frozen=True)
class Task:
    """What the graph computes (`dl.task`); `name` as in model/tasks.py."""

    name: str


@dataclass
class OnnxModel:
    """An onnxruntime session over a graph `dl export` wrote, and what its metadata says."""

    path: str
    session: Any  # onnxruntime.InferenceSession
    meta: dict[str, str]
    task: Task = field(init=False)

    def __post_init__(self) -> None:
        self.task = Task(self.meta.get("dl.task", ""))

    @classmethod
    def open(cls, path: str, spinning: bool = True) -> OnnxModel:
        """The graph at `path`; `spinning=False` for a service: onnxruntime's intra-op threads
        then sleep between runs instead of busy-waiting for the next one (measured: half of a
        `dl serve` process's CPU, taken from the event loop and the other workers)."""
        p = Path(path)
        if not p.exists():
            raise ModelFileError(
                f"{path}: model file not found", "export one with `dl export MODEL --onnx`"
            )
        if p.is_dir():
            raise ModelFileError(f"{path}: is a folder, expected a model file")
        if p.stat().st_size == 0:
            raise ModelFileError(f"{path}: model file is empty")
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.log_severity_level = 3  # errors only: no graph-optimisation chatter on stderr
        if not spinning:
            options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        try:
            session = ort.InferenceSession(
                str(p), sess_options=options, providers=["CPUExecutionProvider"]
            )
        except Exception as exc:  # onnxruntime raises its own kinds on foreign or truncated bytes
            raise ModelFileError(
                f"{path}: truncated or not an ONNX file (cannot be read: {type(exc).__name__})"
            ) from None
        meta = dict(session.get_modelmeta().custom_metadata_map)
        version = meta.get("dl.format_version")
        if version is None:
            raise ModelFileError(
                f"{path}: an ONNX file not written by dl (no dl.format_version metadata); "
                "dl predict runs files from `dl export MODEL --onnx`"
            )
        if not version.isdigit() or int(version) > FORMAT_VERSION:
            raise ModelFileError(
                f"{path}: dl.format_version {version} is newer than this dl reads ({FORMAT_VERSION})",
                "upgrade dl",
            )
        return cls(str(path), session, meta)

    # -- metadata -----------------------------------------------------------------------------
    def json(self, key: str, default: Any = None) -> Any:
        """A JSON-valued metadata entry (docs/onnx.md marks which)."""
        text = self.meta.get(key)
        return default if text is None else json.loads(text)

    @property
    def kind(self) -> str:
        return self.meta.get("dl.data_kind", "tabular")  # files of the first contract: tables

    @property
    def family(self) -> str:
        return self.meta.get("dl.family", "supervised")

    @property
    def classes(self) -> list[str]:
        return [str(c) for c in self.json("dl.classes", [])]

    @property
    def input_name(self) -> str:
        return self.session.get_inputs()[0].name

    @property
    def output_names(self) -> list[str]:
        return [o.name for o in self.session.get_outputs()]

    # -- running ------------------------------------------------------------------------------
    def run(self, x: np.ndarray) -> list[np.ndarray]:
        """Every output of the graph for the batch `x`, run in slices of bounded size."""
        if len(x) == 0:
            return [np.empty((0,), dtype=np.float32) for _ in self.output_names]
        per_row = max(1, int(np.prod(x.shape[1:])))
        step = max(64, BATCH_VALUES // per_row)
        parts = [
            self.session.run(None, {self.input_name: x[i : i + step]})
            for i in range(0, len(x), step)
        ]
        return [np.concatenate([p[k] for p in parts]) for k in range(len(parts[0]))]
