"""One trial of `dl tune`: draw the values, train with the shared train job on data prepared once
(per fold), feed the per-epoch validation metric to the pruner, and score the result."""

from __future__ import annotations

import contextlib
import copy
import math
import statistics
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from dlcli.data.split import active_fold, cross_validation
from dlcli.engine.callbacks import Callback, StopTraining
from dlcli.engine.train_job import TrainRequest
from dlcli.errors import DLError, SpecError
from dlcli.model import budget
from dlcli.tune import space
from dlcli.tune.study import INTERRUPTED


class CachedSource:
    """A data source whose fresh `prepare` runs once per cross-validation fold: every trial gets
    the same prepared tensors and fitted preprocessing (nothing is re-read). Everything else is
    the wrapped source's. With `nest`, a fold is nested (`nested`)."""

    def __init__(self, source: Any, nest: bool = False) -> None:
        self.source, self.nest = source, nest
        self.cache: dict[Any, Any] = {}
        self.lock = threading.Lock()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.source, name)

    def prepare(self, path: str, opts: Any, preprocessor: Any = None) -> Any:
        if preprocessor is not None:  # a saved preprocessor (not a fresh fit): not cached
            return self.source.prepare(path, opts, preprocessor)
        key = active_fold()
        with self.lock:
            if key not in self.cache:
                prep = self.source.prepare(path, opts, None)
                if key is not None and self.nest:
                    target = getattr(prep.preprocessor, "target", None)
                    stratify = getattr(target, "task", None) == "classification"
                    prep = nested(prep, opts.val_split, opts.seed, stratify)
                self.cache[key] = prep
            return self.cache[key]


def nested(prep: Any, fraction: float, seed: int, stratify: bool) -> Any:
    """A fold trained as `dl train` trains: its training rows split again as dl train splits
    (`fraction` for validation: early stopping, the linear path's blend), and the fold's own rows
    kept as test rows, scored once on the finished model. So a trial's score is an honest estimate
    of the procedure `dl tune` hands back, not the best epoch and blend picked on the very rows
    that score them (which favoured high-variance settings on small tables). Data not held as
    tensors (text batches, streamed tables) is left as it is: the fold validates."""
    import torch

    from dlcli.data.split import stratified_split

    parts = (prep.x_train, prep.y_train, prep.x_val, prep.y_val)
    if not all(isinstance(p, torch.Tensor) for p in parts):
        return prep
    labels = prep.y_train.numpy() if stratify else None
    tr, va = (
        torch.from_numpy(i)
        for i in stratified_split(labels, len(prep.y_train), fraction, seed, stratify)
    )
    if len(tr) < 2 or len(va) == 0:  # too few rows to split again: the fold validates
        return prep
    return replace(
        prep,
        x_train=prep.x_train[tr],
        y_train=prep.y_train[tr],
        x_val=prep.x_train[va],
        y_val=prep.y_train[va],
        x_test=prep.x_val,
        y_test=prep.y_val,
    )


# the pruner's step of the mean after fold i: (i + 1) * FOLD_STEP, beyond the first fold's epochs
FOLD_STEP = 100_000


class TrialFailed(Exception):
    """A trial that could not finish (diverged, out of memory, a drawn value the spec refuses):
    recorded as failed, and the study goes on."""


class Pruning(Callback):
    """Reports each epoch's validation value to the trial; asks the trainer to stop when the
    pruner gives up on it. Keeps the epoch rows (for the scored loss and trials.csv)."""

    def __init__(self, trial: Any, key: str | None, offset: int, prune: bool) -> None:
        self.trial, self.key, self.offset, self.prune = trial, key, offset, prune
        self.rows: list[dict] = []

    def on_epoch_end(self, row: dict, snapshot: Callable[[], dict]) -> None:
        self.rows.append(row)
        value = row.get(self.key) if self.key else None
        if not self.prune or value is None or not math.isfinite(value):
            return
        self.trial.report(float(value), self.offset + int(row["epoch"]))
        if self.trial.should_prune():
            raise StopTraining("pruned")


@dataclass
class Context:
    """What every trial shares: the base request (flags), the space, the metric, the folds."""

    base: TrainRequest
    doc: dict  # the spec document with the distributions in place
    dists: list[space.Dist]
    metric: str
    folds: int | None
    trials_dir: Path
    train: Callable[[TrainRequest], dict]  # families.run_training
    prune: bool = True
    budget: Any = field(default_factory=lambda: budget.current())  # the network size limit
    results: dict = field(default_factory=dict)  # trial number -> its record (for trials.csv)

    @property
    def live_key(self) -> str:
        """The epoch row's column the pruner follows (present only for the live metrics:
        val_loss and the task's own, e.g. val_accuracy; others are scored at the end only)."""
        return f"val_{self.metric}"

    def objective(self, trial: Any) -> float:
        values = {d.path: d.suggest(trial) for d in self.dists}
        doc = space.apply(self.doc, values)
        folds = range(self.folds) if self.folds else [None]
        scores, epochs, seconds = [], [], 0.0
        for fold in folds:
            score, rows, secs = self._fit(trial, doc, fold)
            scores.append(score)
            epochs.append(len(rows))
            seconds += secs
            if fold is not None and fold < self.folds - 1:  # prune between folds
                trial.report(statistics.fmean(scores), (fold + 1) * FOLD_STEP)
                if self.prune and trial.should_prune():
                    self._record(trial, scores, epochs, seconds, "pruned")
                    raise _pruned()
        return self._record(trial, scores, epochs, seconds, "complete")

    def _record(self, trial: Any, scores: list, epochs: list, seconds: float, state: str) -> float:
        mean = statistics.fmean(scores)
        std = statistics.pstdev(scores) if len(scores) > 1 else 0.0
        for key, value in (("epochs", sum(epochs)), ("seconds", round(seconds, 3))):
            trial.set_user_attr(key, value)
        if self.folds:
            trial.set_user_attr("fold_scores", [float(s) for s in scores])
            trial.set_user_attr("std", std)
        self.results[trial.number] = {"state": state, "value": mean, "std": std}
        return mean

    def _fit(self, trial: Any, doc: dict, fold: int | None) -> tuple[float, list[dict], float]:
        """Train one model (one fold); (its score, its epoch rows, fit seconds)."""
        # per epoch on the usual split or the first fold; later folds by their running mean
        pruning = Pruning(trial, self.live_key, 0, self.prune and not fold)
        name = f"{trial.number}" if fold is None else f"{trial.number}_fold{fold}"
        req = replace(
            self.base,
            output=str(self.trials_dir / f"{name}.pt"),
            spec_doc=doc,
            plots=False,
            callbacks=[*self.base.callbacks, pruning],
            data_opts=copy.deepcopy(self.base.data_opts),
            overrides=dict(self.base.overrides),
        )
        fold_ctx = cross_validation(fold, self.folds) if fold is not None else _nothing()
        t0 = time.perf_counter()
        try:  # --jobs runs trials on threads, which do not inherit the caller's size limit
            with fold_ctx, budget.model_budget(self.budget.max_bytes / budget.GB):
                summary = self.train(req)
        except SpecError as exc:  # a drawn value the spec refuses: the space's mistake
            drawn = ", ".join(f"{k}={v}" for k, v in trial.params.items())
            trial.set_user_attr("error", str(exc).splitlines()[0][:300])
            _remove_model(Path(req.output))
            raise SpecError(
                f"trial {trial.number} drew {drawn}: {exc.message}",
                "narrow the ranges in the space so every value makes a valid spec",
            ) from None
        except DLError as exc:
            if getattr(exc, "exit_code", 2) == 130:  # Ctrl-C inside the trial
                trial.set_user_attr("error", INTERRUPTED)
                _remove_model(Path(req.output))
                raise KeyboardInterrupt from None
            trial.set_user_attr("error", str(exc).splitlines()[0][:300])
            raise TrialFailed(str(exc)) from None
        except KeyboardInterrupt:  # Ctrl-C outside the epochs (e.g. while saving): not a failure
            trial.set_user_attr("error", INTERRUPTED)
            _remove_model(Path(req.output))
            raise
        except (MemoryError, RuntimeError) as exc:  # out of memory, on the CPU or the GPU
            trial.set_user_attr("error", f"{type(exc).__name__}: {str(exc)[:200]}")
            raise TrialFailed(str(exc)) from None
        seconds = summary.get("train_seconds", time.perf_counter() - t0)
        score = self.score(summary, pruning.rows)
        if summary.get("stopped") == "pruned":
            trial.set_user_attr("epochs", len(pruning.rows))
            trial.set_user_attr("seconds", round(seconds, 3))
            self.results[trial.number] = {"state": "pruned", "value": score, "std": 0.0}
            _remove_model(Path(req.output))
            raise _pruned()
        if not math.isfinite(score):
            trial.set_user_attr("error", f"the validation {self.metric} is not finite")
            raise TrialFailed("diverged")
        if fold is not None:  # a fold's model saw part of the rows: the final fit is trained anew
            _remove_model(Path(req.output))
        return score, pruning.rows, seconds

    def score(self, summary: dict, rows: list[dict]) -> float:
        """The trial's value: on a nested fold, the loss (or metric) of the model as saved on the
        fold's held-out rows; else the validation loss of the model as saved (the summary's
        `val_loss` when a fit after the epochs changed it, such as an ensemble's linear path; else
        the kept epoch's), or the metric `dl evaluate` would report on the validation rows."""
        if "test_loss" in summary:  # a nested fold: the held-out rows, on the model as saved
            tested = summary["test_metrics"].get(self.metric, math.nan)
            return float(summary["test_loss"] if self.metric == "loss" else tested)
        if self.metric == "loss":
            final = summary.get("val_loss")  # the saved model's, when it changed after training
            if isinstance(final, (int, float)) and math.isfinite(final):
                return float(final)
            best = summary.get("best_epoch")
            losses = [r.get("val_loss") for r in rows if r.get("val_loss") is not None]
            if best and 0 < best <= len(rows) and rows[best - 1].get("val_loss") is not None:
                return float(rows[best - 1]["val_loss"])
            return float(min(losses)) if losses else math.nan
        value = (summary.get("metrics") or {}).get(self.metric)
        return float(value) if isinstance(value, (int, float)) else math.nan


def _pruned() -> Exception:
    import optuna

    return optuna.TrialPruned()


def _remove_model(path: Path) -> None:
    import shutil

    path.unlink(missing_ok=True)
    shutil.rmtree(path.with_suffix(".run"), ignore_errors=True)


@contextlib.contextmanager
def _nothing() -> Any:
    yield
