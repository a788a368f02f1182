"""The data contracts: what every data kind declares, in one place.

A data kind (table, image folder, text, series, ...) is a `DataKind` record in one module, named
by one line of the registry (kinds.py). It bundles a `Preprocessor` (fitted on the training part,
saved as plain data, re-applied at predict time and inside the ONNX graph), the `Source` classes
that read and split a path into `Prepared` tensors, and the `ExportAdapter` that documents the
exported graph's input. Callers use these declared attributes; nothing probes with hasattr.
See docs/data-kinds.md.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Protocol, runtime_checkable

import torch
from torch import nn

from dlcli.errors import UsageError

if TYPE_CHECKING:
    import pandas as pd

    from dlcli.data.target import Target


@dataclass
class DataOptions:
    """What the user said about the data (command-line flags)."""

    target: str | None = None
    task: str | None = None
    val: str | None = None
    val_split: float = 0.2
    seed: int = 42
    extra: dict = field(default_factory=dict)  # per data kind, e.g. {"image": ImageOptions(...)}
    stream: bool | None = None  # tables: True --stream, False --no-stream, None by file size
    unsupervised: bool = False  # autoencoders, GANs: no target; labels, if any, are not needed


@dataclass
class Prepared:
    """Encoded tensors plus the fitted preprocessor: what every data source hands the engine.
    The inputs are tensors or batch sources (engine/batches.py) such as streamed rows."""

    preprocessor: Preprocessor
    x_train: Any  # raw inputs: the preprocessor's transform runs inside the model
    y_train: torch.Tensor | None
    x_val: Any
    y_val: torch.Tensor | None
    info: dict = field(default_factory=dict)
    # rows scored once after training, never trained or validated on (dl tune's held-out fold,
    # tune/trial.py: nested); None for dl train
    x_test: Any = None
    y_test: torch.Tensor | None = None


class Preprocessor(ABC):
    """The fitted preprocessing of one data kind: raw inputs -> the network's input.

    Subclasses set `kind` and `target` and implement the abstract members; the other members
    have defaults that fit most kinds (float inputs, encoded once before training, no
    augmentation, the autoencoder reconstructs the network input as it is)."""

    kind: ClassVar[str]  # the data kind's name (a spec's `data:`, the state's "kind")
    target: Target | None  # the label column (None for unsupervised tables)
    input_dtype: ClassVar[torch.dtype] = torch.float32  # dtype of the network input (text: ids)
    encode_once: ClassVar[bool] = True  # False: keep stored inputs raw, preprocess per batch
    prediction_columns: ClassVar[tuple[str, ...]] = ()  # extra predict columns ("confidence")
    has_baseline: ClassVar[bool] = False  # evaluate adds baseline_metrics (series: naive forecast)

    # -- shapes and what the network builder needs ----------------------------------------------
    @property
    @abstractmethod
    def input_shape(self) -> tuple[int | None, ...]:
        """Shape of one network input, after the transform (None: a variable length)."""

    @property
    def raw_shape(self) -> tuple[int | None, ...]:
        """Shape of one raw input, before the transform (the exported graph's input)."""
        return self.input_shape

    @property
    def data_info(self) -> dict:
        """Facts the network builder may use besides the shape (e.g. the vocabulary size)."""
        return {}

    # -- the transform, augmentation -------------------------------------------------------------
    @abstractmethod
    def preprocess_module(self) -> nn.Module:
        """The transform: raw inputs -> network inputs; part of the saved and exported model."""

    def augmenter(self, spec: str) -> nn.Module:
        """The `--augment` module for training batches; only some kinds have one."""
        raise UsageError(f"--augment applies to image data, not to {self.kind} data")

    # -- new inputs ------------------------------------------------------------------------------
    @abstractmethod
    def iter_inputs(
        self, paths: str | list[str], keep: bool = False
    ) -> Iterator[tuple[pd.DataFrame, torch.Tensor]]:
        """(pass-through frame, raw input tensor) per chunk of new inputs ('-' = stdin); with
        `keep`, the frame holds the input columns as written."""

    @abstractmethod
    def iter_labelled(self, path: str) -> Iterator[tuple[pd.DataFrame, torch.Tensor]]:
        """(frame with the target column, raw input tensor) per chunk of labelled inputs."""

    def baseline_metrics(
        self, y: Any, raws: list[torch.Tensor], outputs: Any
    ) -> dict[str, float | None]:
        """Metrics of a naive baseline on the evaluated inputs (when `has_baseline`)."""
        return {}

    # -- the autoencoder's view of the network input --------------------------------------------
    def reconstruction_layout(self) -> dict[str, Any]:
        """How the network input splits by type for the reconstruction error: `n_cont`
        continuous features (squared error), `n_bin` binary ones (cross-entropy), then one
        categorical group per entry of `groups` (softmax). Default: all continuous."""
        return {"n_cont": math.prod(int(d) for d in self.input_shape), "n_bin": 0, "groups": []}

    def reconstruction_module(self) -> nn.Module:
        """Decoder output (network units) -> the user's units (predict, export)."""
        return nn.Identity()

    # -- transfer learning -----------------------------------------------------------------------
    def inherit_options(self, given: dict) -> dict:
        """`--init-from`: this kind's options (DataOptions.extra[kind]) completed so new data is
        read the way this preprocessor's model was fed; what the user gave wins."""
        return given

    # -- state -----------------------------------------------------------------------------------
    @abstractmethod
    def to_state(self) -> dict:
        """Plain data (JSON-able) that `from_state` turns back into an equal preprocessor."""

    @classmethod
    @abstractmethod
    def from_state(cls, state: dict) -> Preprocessor:
        """Rebuild from `to_state()` output (also of older dl versions)."""


@runtime_checkable
class Source(Protocol):
    """Reads a path into `Prepared` tensors: read, split (seeded), fit the preprocessor on the
    training part (or reuse a given one: resume, transfer). Sources are classes used as they
    are; `choose_source` asks them highest `priority` first whether they `claims` a path."""

    name: str  # registry key (SOURCES), e.g. "tabular_stream"
    kind: str  # the kind of preprocessor it produces
    priority: int  # asked highest first; tables (0) are the fallback for files
    default_arch: str  # the preset `dl train` uses without --arch or --spec
    streams: bool  # reads the data from disk each epoch (only tables support --stream)

    @staticmethod
    def claims(path: str, opts: DataOptions) -> bool: ...

    @staticmethod
    def prepare(
        path: str, opts: DataOptions, preprocessor: Preprocessor | None = None
    ) -> Prepared: ...


class ExportAdapter(ABC):
    """A kind's exported-graph input: its name, the inputs an export is verified on, and the
    metadata a caller needs to build that input."""

    input_name: ClassVar[str]
    dynamic_axes: ClassVar[dict[int, str]] = {0: "batch"}

    @abstractmethod
    def examples(self, loaded: Any) -> torch.Tensor:
        """Raw inputs in the documented form (stored real rows, plus edge cases)."""

    @abstractmethod
    def metadata(self, preprocessor: Any) -> dict[str, str]:
        """ONNX metadata entries (`dl.*`)."""

    def verify_batches(self, rows: torch.Tensor) -> list[torch.Tensor]:
        """Batches the exported graph is checked on against the torch model."""
        return [rows[:1], rows]

    def side_files(self, preprocessor: Any, target: Path) -> dict[Path, str]:
        """Files written beside the .onnx file (path -> text)."""
        return {}

    @staticmethod
    def stored_examples(loaded: Any) -> torch.Tensor | None:
        """The real raw inputs kept in the model file, if any."""
        ex = loaded.data.get("examples")
        if isinstance(ex, torch.Tensor) and ex.ndim >= 2 and len(ex):
            return ex.detach().cpu()
        return None


@dataclass(frozen=True)
class DataKind:
    """Everything the rest of dl needs to know about one data kind. Each kind module defines
    one as `KIND`; kinds.py names the module."""

    name: str  # as in Preprocessor.kind and a spec's `data:` list
    preprocessor: type[Preprocessor]
    sources: tuple[type, ...]  # its Source classes
    export: ExportAdapter | None = None  # None: ONNX export does not support the kind
    options: tuple[str, ...] = ()  # `dl train` parameters collected in DataOptions.extra[name]
    hint: str = "see dl build --list"  # shown when a preset is made for other data

    @property
    def default_arch(self) -> str:
        """The preset `dl train` picks for this kind: its first source's."""
        return self.sources[0].default_arch
