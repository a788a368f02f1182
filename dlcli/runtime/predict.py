"""`dl predict MODEL.onnx INPUT` without torch: the graph's input encoder streams chunks, the
graph runs on onnxruntime, and engine/outputs.py turns outputs into the same table (and the same
csv / jsonl writers) as `dl predict MODEL.pt`."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import IO, Any

import numpy as np
import pandas as pd

from dlcli.engine.outputs import WRITERS, output_frame
from dlcli.errors import UsageError
from dlcli.runtime import encoder_for, load
from dlcli.runtime.session import OnnxModel

# flags of `dl predict` an exported graph honours, per family (others: one line, as for .pt)
HONOURED: dict[str, frozenset[str]] = {
    "supervised": frozenset({"--proba", "--top-k"}),
}
DEVICES = ("auto", "cpu")  # onnxruntime runs here on the CPU


@dataclass
class RuntimeOptions:
    """`dl predict` flags, in the order of families.base.PredictOptions (kept torch-free here)."""

    open_text: Callable[[], AbstractContextManager[IO[str]]]  # stdout, or -o FILE atomically
    output: str | None = None
    output_dir: str | None = None
    fmt: str = "csv"
    samples: int | None = None
    seed: int | None = None
    embed: bool = False
    keep_columns: bool = False
    device: str = "auto"
    precision: str | None = "auto"
    proba: bool = False
    top_k: int = 1
    steps: int | None = None

    def used(self) -> dict[str, bool]:
        """Flag -> given, for the flags only some models honour."""
        return {
            "--proba": self.proba,
            "--top-k": self.top_k != 1,
            "--steps": self.steps is not None,
            "--samples": self.samples is not None,
            "--embed": self.embed,
            "--precision": self.precision not in (None, "auto", "fp32"),
        }


@dataclass
class Predictor:
    """A loaded graph with its input encoder: inputs -> prediction tables, chunk by chunk."""

    model: OnnxModel
    preprocessor: Any  # the kind's encoder: iter_inputs, target.classes, prediction_columns

    @property
    def task(self) -> Any:
        return self.model.task

    def outputs(self, x: np.ndarray) -> np.ndarray:
        return self.model.run(x)[0]

    def frame(
        self, passthrough: pd.DataFrame, x: np.ndarray, proba: bool, top_k: int
    ) -> pd.DataFrame:
        return output_frame(self, passthrough, self.outputs(x), proba, top_k)

    def frames(
        self, inputs: list[str], keep: bool, proba: bool = False, top_k: int = 1
    ) -> Iterator[pd.DataFrame]:
        for passthrough, x in self.preprocessor.iter_inputs(inputs, keep):
            yield self.frame(passthrough, x, proba, top_k)


def open_predictor(path: str) -> Predictor:
    """The graph at `path` and its encoder; one line when dl cannot run it."""
    model = load(path)
    if model.family not in HONOURED:
        raise UsageError(
            f"{path}: running exported {model.family} models without torch is not supported yet",
            "use the model file: dl predict MODEL.pt",
        )
    return Predictor(model, encoder_for(model))


def predict_file(path: str, inputs: list[str], opts: RuntimeOptions) -> None:
    """Write the predictions for `inputs` as `dl predict MODEL.pt` would."""
    from dlcli.fileio import refuse_overwriting_inputs

    if opts.fmt not in WRITERS:
        raise UsageError(f"--format must be one of {', '.join(WRITERS)}, got '{opts.fmt}'")
    refuse_overwriting_inputs("-o", opts.output, [path, *inputs])
    refuse_overwriting_inputs("--output-dir", opts.output_dir, [path, *inputs], folder=True)
    if opts.device not in DEVICES:
        raise UsageError(
            f"--device {opts.device}: an ONNX model runs on the CPU here",
            "use the model file for another device: dl predict MODEL.pt",
        )
    predictor = open_predictor(path)
    family = predictor.model.family
    for flag, given in opts.used().items():
        if given and flag not in HONOURED[family]:
            raise UsageError(f"{flag} does not apply to exported {family} models")
    if not inputs:
        raise UsageError("give the inputs to predict: CSV files, images, folders, or - for stdin")
    with opts.open_text() as fh:
        writer = WRITERS[opts.fmt](fh)
        for frame in predictor.frames(inputs, opts.keep_columns, opts.proba, opts.top_k):
            writer.write(frame)
        fh.flush()
