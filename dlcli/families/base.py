"""The model-family contract. A family (supervised, autoencoder, GAN, ...) is one module with one
`Family` subclass instance, `FAMILY`, registered by name in dlcli/families/__init__.py, plus the
layer-list sections its specs hold (spec/schema.py FAMILY_SECTIONS). It builds its networks from a
spec, fills in the train job's hooks (engine/train_job.py: `check`, `prepare` with its FitStep,
`finish`), predicts, evaluates, and hands `dl export` its graphs. `cli/` and `export/` ask the
registry and this contract; nothing outside a family's modules branches on its name.

A model file records its family under the key `family` (absent in files of supervised models).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import IO, Any, ClassVar

from dlcli.engine.train_job import Outcome, TrainJob, TrainSetup
from dlcli.engine.trainer import FitResult, check_settings
from dlcli.errors import UsageError
from dlcli.export import ExportPlan
from dlcli.model.builder import BuiltNetwork
from dlcli.spec.schema import FAMILY_SECTIONS


@dataclass
class PredictOptions:
    """`dl predict` flags; each family uses those it honours (`Family.predict_flags`)."""

    open_text: Callable[[], AbstractContextManager[IO[str]]]  # stdout, or -o FILE atomically
    output: str | None = None  # -o as given (a GAN writes a PNG grid there)
    output_dir: str | None = None  # --output-dir: one file per sample
    fmt: str = "csv"
    samples: int | None = None  # --samples N (generative models)
    seed: int | None = None
    embed: bool = False  # --embed: latent vectors (encoders)
    keep_columns: bool = False
    device: str = "auto"
    precision: str | None = "auto"
    proba: bool = False
    top_k: int = 1
    steps: int | None = None  # --steps N: forecast a series N steps ahead
    score: str | None = None  # --score NAME: the anomaly score (autoencoders; default: stored)


@dataclass
class EvaluateOptions:
    """`dl evaluate` flags; each family uses those it honours (`Family.evaluate_flags`)."""

    anomaly_label: str | None = None  # --anomaly-label: the label value that marks an anomaly
    target: str | None = None  # --target: the label column
    device: str = "auto"
    errors: str | None = None  # --errors DIR: copy misclassified inputs there
    precision: str | None = "auto"
    report: str | None = None  # --report DIR: metrics.json (and the confusion matrix)
    score: str | None = None  # --score NAME: the anomaly score (autoencoders; default: stored)


@dataclass
class Evaluation:
    """What `evaluate` found: the metrics (`--json`) and, for a classifier, its class names (the
    per-class and confusion tables)."""

    metrics: dict
    classes: list[str] | None = None


# flags of `dl predict` / `dl evaluate` that only some families honour: the line the others give
REFUSALS: dict[str, tuple[str, str | None]] = {
    "--proba": ("--proba applies to classifiers and forecasters, not {family} models", None),
    "--top-k": ("--top-k applies to classifiers and forecasters, not {family} models", None),
    "--steps": ("--steps applies to classifiers and forecasters, not {family} models", None),
    "--samples": (
        "--samples generates new data and needs a GAN model; this is a {family} model",
        "train one with dl train IMAGES/ --arch gan",
    ),
    "--embed": (
        "--embed gives latent vectors of an autoencoder; this is a {family} model",
        "train one with dl train DATA --arch autoencoder",
    ),
    "--errors": ("--errors applies to image classifiers, not {family} models", None),
    "--anomaly-label": ("--anomaly-label applies to autoencoder models", None),
    "--score": ("--score chooses an autoencoder's anomaly score; this is a {family} model", None),
}


class Family(ABC):
    """One model family. Class attributes say what the shared machinery may expect of it."""

    name: ClassVar[str]
    unsupervised: ClassVar[bool] = False  # trains without a target (labels, if any, ignored)
    distributed: ClassVar[bool] = False  # trains under torchrun / --devices
    evaluates: ClassVar[bool] = True  # `dl evaluate` applies
    predict_flags: ClassVar[frozenset[str]] = frozenset()  # of REFUSALS, those it honours
    evaluate_flags: ClassVar[frozenset[str]] = frozenset()
    word_vectors: ClassVar[bool] = False  # honours `dl train --embeddings FILE`
    # scores a Prepared's test rows after training (`test_loss`, `test_metrics` in the summary):
    # `dl tune` then nests its folds (tune/trial.py: nested)
    scores_test_rows: ClassVar[bool] = False

    @property
    def sections(self) -> tuple[str, ...]:
        """The layer-list sections of its specs (the first ones required)."""
        return FAMILY_SECTIONS[self.name]

    # -- networks -------------------------------------------------------------------------------
    @abstractmethod
    def build_networks(
        self, spec: Any, input_shape: tuple[int, ...], outputs: int | None, source: str | None
    ) -> dict[str, BuiltNetwork]:
        """Its networks by name, built for inputs of `input_shape` (`dl build` shows each)."""

    # -- training: the hooks of the train job (engine/train_job.py) ------------------------------
    def check(self, job: TrainJob) -> None:
        """Refuse what it cannot do before any data is read (default: device and precision)."""
        check_settings(job.cfg)
        if job.req.embeddings and not self.word_vectors:
            raise UsageError(
                f"--embeddings applies to text classifiers and regressors, not {self.name} models"
            )

    @abstractmethod
    def prepare(self, job: TrainJob) -> TrainSetup:
        """Read the data, build the networks and the FitStep; settle `job.cfg`."""

    @abstractmethod
    def finish(self, job: TrainJob, setup: TrainSetup, result: FitResult) -> Outcome:
        """After training: what the model file, the summary and the run folder get."""

    # -- serving ------------------------------------------------------------------------------
    @abstractmethod
    def predict(self, data: dict, model_path: str, inputs: list[str], opts: PredictOptions) -> None:
        """`dl predict` with the loaded model file `data`: write the predictions."""

    def evaluate(
        self, data: dict, model_path: str, data_path: str, opts: EvaluateOptions
    ) -> Evaluation:
        """`dl evaluate` on labelled data (only where `evaluates`)."""
        raise _not_evaluable(self)

    @abstractmethod
    def export_graphs(self, data: dict, model_path: str) -> ExportPlan:
        """The graphs `dl export` writes and verifies (dlcli/export/)."""


def refuse_flags(family: Family, command: str, used: dict[str, bool]) -> None:
    """One clear line for the first flag in `used` (flag -> given) that `family` does not honour
    in `command` ("predict" or "evaluate")."""
    if command == "evaluate" and not family.evaluates:
        raise _not_evaluable(family)
    honoured = family.predict_flags if command == "predict" else family.evaluate_flags
    for flag, given in used.items():
        if given and flag not in honoured:
            text, hint = REFUSALS[flag]
            raise UsageError(text.format(family=family.name), hint)


def _not_evaluable(family: Family) -> UsageError:
    return UsageError(f"dl evaluate does not apply to {family.name} models (nothing to score)")
