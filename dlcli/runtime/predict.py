"""`dl predict MODEL.onnx INPUT` without torch: the graph's input encoder streams chunks, the
graph runs on onnxruntime, and engine/outputs.py turns outputs into the same table (and the same
csv / jsonl / parquet writers) as `dl predict MODEL.pt`."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import IO, Any

import numpy as np
import pandas as pd

from dlcli.engine.outputs import WRITERS, check_format, output_frame
from dlcli.errors import UsageError
from dlcli.runtime import encoder_for, load, samples
from dlcli.runtime.session import OnnxModel

# flags of `dl predict` an exported graph honours, per family (others: one line, as for .pt)
HONOURED: dict[str, frozenset[str]] = {
    "supervised": frozenset({"--proba", "--top-k", "--steps"}),
    "autoencoder": frozenset({"--embed", "--score"}),
    "gan": frozenset({"--samples"}),
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
    score: str | None = None  # autoencoders: the graph computes the score it was exported with
    image_column: str | None = None  # image lists: the path column (else the model's, or detected)

    def used(self) -> dict[str, bool]:
        """Flag -> given, for the flags only some models honour."""
        return {
            "--proba": self.proba,
            "--top-k": self.top_k != 1,
            "--steps": self.steps is not None,
            "--samples": self.samples is not None,
            "--embed": self.embed,
            "--precision": self.precision not in (None, "auto", "fp32"),
            "--score": self.score is not None,
        }


@dataclass(frozen=True)
class FrameOptions:
    """What a prediction table holds beyond the predictions (the output flags of `dl predict`)."""

    proba: bool = False
    top_k: int = 1
    embed: bool = False


@dataclass
class Predictor:
    """A loaded graph with its input encoder: inputs -> prediction tables, chunk by chunk."""

    model: OnnxModel
    preprocessor: Any  # the kind's encoder: iter_inputs, matrix, target.classes, prediction_columns
    encoder_graph: OnnxModel | None = (
        None  # an autoencoder's MODEL.encoder.onnx, opened for --embed
    )

    @property
    def task(self) -> Any:
        return self.model.task

    def frame(self, passthrough: pd.DataFrame, x: np.ndarray, opts: FrameOptions) -> pd.DataFrame:
        """The prediction table of the rows `x` (encoded inputs), after the pass-through columns."""
        return TABLES[self.model.family](self, passthrough, x, opts)

    def frames(self, inputs: list[str], keep: bool, opts: FrameOptions) -> Iterator[pd.DataFrame]:
        for passthrough, x in self.preprocessor.iter_inputs(inputs, keep):
            yield self.frame(passthrough, x, opts)

    def embedder(self) -> OnnxModel:
        if self.encoder_graph is None:
            path = self.model.path[: -len(".onnx")] + ".encoder.onnx"
            if not Path(path).exists():
                raise UsageError(
                    f"{path}: not found; --embed runs the encoder graph `dl export` writes beside {self.model.path}"
                )
            self.encoder_graph = load(path)
        return self.encoder_graph

    def forecast(self, path: str, steps: int) -> pd.DataFrame:
        """`--steps`: the series in `path` rolled forward by the graph, as engine/forecast.py
        rolls the torch model (the same checks, columns and notes)."""
        from dlcli.engine.forecast import roll_forward

        if self.model.kind != "series":
            raise UsageError(
                f"--steps applies to series models (trained with --window), not {self.model.kind} models"
            )
        return roll_forward(self.preprocessor, path, steps, self.preprocessor.one_step(self.model))


def supervised_table(
    p: Predictor, passthrough: pd.DataFrame, x: np.ndarray, opts: FrameOptions
) -> pd.DataFrame:
    """prediction (+ confidence, next classes, proba_<class>): engine/outputs.py's table."""
    return output_frame(p, passthrough, p.model.run(x)[0], opts.proba, opts.top_k)


def anomaly_table(
    p: Predictor, passthrough: pd.DataFrame, x: np.ndarray, opts: FrameOptions
) -> pd.DataFrame:
    """anomaly_score,is_anomaly (score above `dl.threshold`), or with --embed z0..zK, as
    families/anomaly.py prints them."""
    frame = passthrough.reset_index(drop=True).copy()
    if opts.embed:
        z = p.embedder().run(x)[0]
        for j in range(z.shape[1]):
            frame[f"z{j}"] = z[:, j]
        return frame
    outputs = dict(zip(p.model.output_names, p.model.run(x), strict=True))
    scores = outputs["anomaly_score"]
    frame["anomaly_score"] = scores
    frame["is_anomaly"] = (scores > float(p.model.meta["dl.threshold"])).astype(int)
    return frame


Table = Callable[[Predictor, pd.DataFrame, np.ndarray, FrameOptions], pd.DataFrame]
TABLES: dict[str, Table] = {"supervised": supervised_table, "autoencoder": anomaly_table}
# families whose graph makes data from noise instead of tables from inputs: family -> its writer
GENERATORS: dict[str, Callable[[OnnxModel, list[str], RuntimeOptions], None]] = {
    "gan": samples.generate
}


def open_predictor(path: str, model: OnnxModel | None = None) -> Predictor:
    """The graph at `path` (or `model`, already opened) and its encoder; one line when dl cannot
    run it on input rows."""
    model = model or load(path)
    if model.family in GENERATORS:
        raise UsageError(
            f"{path}: a {model.family} model generates data and takes no input rows",
            f"dl predict {path} --samples 64 -o samples.png",
        )
    if model.family not in TABLES:
        raise UsageError(
            f"{path}: running exported {model.family} models without torch is not supported yet",
            "use the model file: dl predict MODEL.pt",
        )
    return Predictor(model, encoder_for(model))


def predict_file(path: str, inputs: list[str], opts: RuntimeOptions) -> None:
    """Write the predictions for `inputs` as `dl predict MODEL.pt` would."""
    from dlcli.fileio import check_writable, refuse_overwriting_inputs

    check_format(opts.fmt, opts.output)
    refuse_overwriting_inputs("-o", opts.output, [path, *inputs])
    refuse_overwriting_inputs("--output-dir", opts.output_dir, [path, *inputs], folder=True)
    check_writable("-o", opts.output)
    check_writable("--output-dir", opts.output_dir, folder=True)
    if opts.device not in DEVICES:
        raise UsageError(
            f"--device {opts.device}: an ONNX model runs on the CPU here",
            "use the model file for another device: dl predict MODEL.pt",
        )
    model = load(path)
    family = model.family
    for flag, given in opts.used().items():
        if given and flag not in HONOURED.get(family, ()):
            raise UsageError(f"{flag} does not apply to exported {family} models")
    exported = model.meta.get("dl.score")
    if opts.score is not None and opts.score != exported:
        raise UsageError(
            f"--score {opts.score}: {path} computes the {exported} score, the one it was exported with",
            f"use the model file for another score: dl predict MODEL.pt --score {opts.score}",
        )
    if opts.image_column is not None and model.kind != "image":
        raise UsageError(f"--image-column does not apply to models of {model.kind} data")
    if family in GENERATORS:
        GENERATORS[family](model, inputs, opts)
        return
    predictor = open_predictor(path, model)
    if opts.image_column is not None:
        predictor.preprocessor = replace(predictor.preprocessor, column=opts.image_column)
    if not inputs:
        raise UsageError("give the inputs to predict: CSV files, images, folders, or - for stdin")
    if opts.steps is not None and predictor.model.kind == "series" and len(inputs) != 1:
        raise UsageError("--steps forecasts from one history file; give one input")
    with opts.open_text() as fh:
        writer = WRITERS[opts.fmt](fh)
        if opts.steps is not None:
            writer.write(predictor.forecast(inputs[0], opts.steps))
        else:
            table = FrameOptions(opts.proba, opts.top_k, opts.embed)
            for frame in predictor.frames(inputs, opts.keep_columns, table):
                writer.write(frame)
        writer.close()
        fh.flush()
