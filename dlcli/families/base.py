"""Model families by name: what `dl train`, `build`, `predict`, `evaluate` and `export` do with a
spec's family. `supervised` (a `layers:` network + a task head) is the main path through
train_run / predictor / evaluator / export.onnx; every other family is one module here, imported
only when used, that provides:

    build(spec, input_shape, outputs, source) -> dict[str, BuiltNetwork]   # `dl build` tables
    train(job: FamilyJob) -> dict                  # trains, writes the model file, --json summary
    predict(data, model_path, inputs, opts: PredictOptions) -> None        # writes to opts.out
    evaluate(data, model_path, data_path, opts: EvaluateOptions) -> dict   # metrics (optional)
    export_onnx(data, model_path, output, tolerance) -> dict               # like export.onnx

A model file records its family under the key `family` (absent in files of supervised models).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from types import ModuleType
from typing import Any

from dlcli.errors import ModelFileError, UsageError

FAMILIES: dict[str, str] = {
    "autoencoder": "dlcli.engine.autoencoder",
    "gan": "dlcli.engine.gan",
}


def family_module(name: str) -> ModuleType:
    """The module implementing family `name`."""
    import importlib

    if name not in FAMILIES:
        raise ModelFileError(f"unknown model family '{name}'", f"known: {', '.join(FAMILIES)}")
    return importlib.import_module(FAMILIES[name])


def family_of(model_data: dict) -> str:
    """The family of a loaded model file."""
    return str(model_data.get("family") or "supervised")


@dataclass
class FamilyJob:
    """What `dl train` hands a family's `train` once the spec is chosen (before any data is read).

    `req` is the TrainRequest, `cfg` the merged TrainConfig (flags > spec > defaults; `epochs` and
    `batch_size` may still be None), `source` the data source class, `plotter` the PlotWorker (or
    None with --no-plots), `resume` a loaded checkpoint dict for --resume (or None)."""

    req: Any
    spec: Any
    spec_doc: dict
    source: Any
    cfg: Any
    plotter: Any = None
    resume: dict | None = None
    extra: dict = field(default_factory=dict)


@dataclass
class PredictOptions:
    """`dl predict` flags that families may use."""

    out: Any  # the open text stream predictions go to (stdout or -o FILE), or None
    output: str | None = None  # -o as given (a GAN writes a PNG grid there)
    output_dir: str | None = None  # --output-dir: one file per sample
    fmt: str = "csv"
    samples: int | None = None  # --samples N (generative models)
    seed: int | None = None
    embed: bool = False  # --embed: latent vectors (encoders)
    keep_columns: bool = False
    device: str = "auto"


@dataclass
class EvaluateOptions:
    """`dl evaluate` flags that families may use."""

    anomaly_label: str | None = (
        None  # --anomaly-label: the value of the label column that is anomalous
    )
    target: str | None = None  # --target: the label column
    device: str = "auto"
    errors: str | None = None


def refuse_family_flags(
    family: str, opts: PredictOptions, classifier_only: dict[str, bool] | None = None
) -> None:
    """Flags a model's family cannot honour, one clear line: --samples (GANs only), --embed
    (autoencoders only) and `classifier_only` flags that were given (e.g. --top-k) on the
    other families."""
    if family != "supervised":
        for flag, used in (classifier_only or {}).items():
            if used:
                raise UsageError(
                    f"{flag} applies to classifiers and forecasters, not {family} models"
                )
    if opts.samples is not None and family != "gan":
        raise UsageError(
            f"--samples generates new data and needs a GAN model; this is a {family} model",
            "train one with dl train IMAGES/ --arch gan",
        )
    if opts.embed and family != "autoencoder":
        raise UsageError(
            f"--embed gives latent vectors of an autoencoder; this is a {family} model",
            "train one with dl train DATA --arch autoencoder",
        )
