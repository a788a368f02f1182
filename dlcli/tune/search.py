"""`dl tune` as a library call: choose the space, prepare the data once (per fold), run the Optuna
study over the shared train job, and write `<best>.tune/` and the best model."""

from __future__ import annotations

import contextlib
import os
import shutil
import threading
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from dlcli.console import console, note, quiet, set_quiet
from dlcli.data.sources import choose_source
from dlcli.data.split import cross_validation
from dlcli.engine.callbacks import eta_text
from dlcli.engine.train_job import TrainRequest, choose_spec
from dlcli.errors import DLError, UsageError
from dlcli.spec.schema import check_size, parse_spec, read_spec_document
from dlcli.tune import final, outputs, select, space, tune_dir
from dlcli.tune import study as studies
from dlcli.tune.trial import CachedSource, Context, TrialFailed

GAN_REFUSAL = (
    "dl tune does not search GANs: their losses do not measure sample quality, so there is no "
    "validation metric to optimise"
)


@dataclass
class TuneRequest:
    """Everything `dl tune` was asked to do; `train` holds the shared train flags (-o is the best
    model's file, `overrides` the values the command line fixes)."""

    train: TrainRequest
    space: str | None = None
    trials: int = 20
    timeout: float | None = None
    jobs: int = 1
    folds: int | None = None
    metric: str = "loss"
    storage: str | None = None
    study: str | None = None
    sampler: str = "tpe"
    pruner: str = "median"
    plots: bool = True


def run_tune(req: TuneRequest, families: Any) -> dict:
    """Search, write the outputs, return the --json summary."""
    base = req.train
    if (req.folds or 0) > 1 and base.data_opts.val:
        raise UsageError("--folds splits DATA into folds; it cannot be used with --val")
    doc, dists, family, raw_doc = _space(req, families)
    dists, fixed = space.fix(dists, base.overrides)
    if fixed:
        note(f"fixed on the command line, left out of the search: {', '.join(fixed)}")
    if not dists:
        raise UsageError("nothing to search: the space has no distributions left")
    if req.space:
        base.spec = req.space  # errors name the space file
    source, task = _prepare(req, family)
    studies.check_metric(req.metric, task)
    storage = studies.open_storage(req.storage)
    seed = int(base.overrides.get("seed") or 42)
    study = studies.open_study(
        storage,
        req.study,
        req.metric,
        studies.make_sampler(req.sampler, seed),
        studies.make_pruner(req.pruner, req.folds),
        req.storage,
    )
    folder = tune_dir(base.output)
    trials_dir = folder / "trials"
    trials_dir.mkdir(parents=True, exist_ok=True)
    keeper = BestKeeper(trials_dir, studies.direction(req.metric))
    base.source = source  # every trial and the final model share the prepared data
    ctx = Context(base, doc, dists, req.metric, req.folds, trials_dir, families.run_training)
    ctx.prune = req.pruner != "none"
    # a new study in this process alone starts from the preset's own values; not with a shared
    # storage, where two processes could both pop that queued trial (SQLite has no row locks)
    defaults = _defaults(raw_doc, dists, base)
    if storage is None and defaults and not study.get_trials(deepcopy=False):
        study.enqueue_trial(defaults, skip_if_exists=True)
    done = sum(studies.finished(study).values())
    todo = max(0, req.trials - done)
    if done:
        note(f"study {study.study_name}: {done} trials already finished, {todo} to go")
    progress = Progress(req.trials, done, req.metric, studies.direction(req.metric), keeper)
    stop = studies.StopAt(req.trials)
    interrupted = False
    was_quiet = _USER_QUIET["quiet"] = quiet()
    set_quiet(True)  # the train job's lines; dl tune prints one line per trial
    t0 = time.perf_counter()
    try:
        if todo:
            study.optimize(
                ctx.objective,
                n_trials=todo,
                timeout=req.timeout,
                n_jobs=req.jobs,
                catch=(TrialFailed,),
                callbacks=[stop, progress],
            )
    except KeyboardInterrupt:
        interrupted = True
    finally:
        set_quiet(was_quiet)
    summary = _finish(req, study, (dists, defaults), doc, keeper, folder, families, interrupted)
    with contextlib.suppress(OSError):
        trials_dir.rmdir()  # empty once the best model has moved to -o
    summary["seconds"] = round(time.perf_counter() - t0, 3)
    if interrupted:
        raise TuneInterrupted(
            f"interrupted after {sum(studies.finished(study).values())} finished trials; "
            f"the best so far is in {base.output} and {folder}/",
            _resume_hint(req),
        )
    return summary


class TuneInterrupted(DLError):
    exit_code = 130


def _resume_hint(req: TuneRequest) -> str:
    if req.storage:
        return "run the same command again to resume the study"
    return "to make a search resumable, pass --storage sqlite:///tune.db --study NAME"


def _finish(
    req: TuneRequest,
    study: Any,
    searched: tuple[list[space.Dist], dict],
    doc: dict,
    keeper: BestKeeper,
    folder: Path,
    families: Any,
    interrupted: bool,
) -> dict:
    """trials.csv, best_spec.yaml, the plots and the best model; the --json summary.
    `searched`: the distributions and the preset's own values among them."""
    (dists, defaults), base, direction = searched, req.train, studies.direction(req.metric)
    rows = outputs.trial_rows(study, dists)
    outputs.write_trials(folder / "trials.csv", rows)
    counts = studies.finished(study)
    files = [str(folder / "trials.csv")]
    best = _best_trial(study)
    if best is None:
        errors = [r["error"] for r in rows if r.get("error") and r["error"] != "interrupted"]
        first = f"; the first failure: {errors[0]}" if errors else ""
        if interrupted:
            return {**counts, "folder": str(folder), "files": files}
        raise UsageError(
            f"no trial completed ({counts['failed']} failed, {counts['pruned']} pruned){first}"
        )
    choice = select.choose(study, best, defaults, direction)
    if choice.kept_defaults:
        note(choice.describe(req.metric))
    best = choice.trial
    fixed = {k: base.overrides.get(k) for k in studies.FIXED_TRAINING}
    best_doc = outputs.best_spec(doc, dists, best.params, fixed)
    header = (
        f"dl tune {base.data}: trial {best.number}, validation {req.metric} {best.value:.6g}\n"
        f"train it with: dl train {base.data} --spec {folder / 'best_spec.yaml'}"
    )
    outputs.write_spec(folder / "best_spec.yaml", best_doc, header)
    files.append(str(folder / "best_spec.yaml"))
    if req.plots:
        outputs.plot_history(folder / "history.png", rows, req.metric, direction == "maximize")
        files.append(str(folder / "history.png"))
        if outputs.plot_importance(folder / "importance.png", study):
            files.append(str(folder / "importance.png"))
    model, fit = final.best_model(
        req, best, best_doc, keeper, families, interrupted, loud=not quiet_user()
    )
    if model:
        files.insert(0, model)
    summary = {
        "metric": req.metric,
        "direction": direction,
        "best_value": best.value,
        "best_params": best.params,
        "best_trial": best.number,
        "selection": choice.record(),
        **counts,
        "study": study.study_name,
        "model": model,
        "final": fit,
        "folder": str(folder),
        "files": files,
    }
    if "std" in best.user_attrs:
        summary["best_std"] = best.user_attrs["std"]
    return summary


def _defaults(raw_doc: dict, dists: list[space.Dist], base: TrainRequest) -> dict:
    """The first trial of a new study, by parameter name: the preset's own values at the searched
    paths, and for a searched training value the preset leaves to dl train (the batch size),
    what dl train picks for this data, so that trial trains exactly as `dl train` does."""
    from dlcli.engine.fit_data import rows
    from dlcli.engine.trainer import TrainConfig

    own = space.defaults(raw_doc, dists)
    missing = [d for d in dists if d.name not in own and d.path[0] == "training"]
    if not missing or base.source is None:
        return own
    prep = base.source.prepare(base.data, base.data_opts)  # the usual split, prepared once
    picked = TrainConfig().resolved(rows(prep.x_train)).to_dict()
    return {**space.defaults({"training": picked}, missing), **own}


def _best_trial(study: Any) -> Any:
    try:
        return study.best_trial
    except ValueError:  # no complete trial
        return None


def _space(req: TuneRequest, families: Any) -> tuple[dict, list[space.Dist], Any, dict]:
    """(the document with its distributions, the distributions, the family), checked as a spec
    at both ends of every range before any data is read."""
    base = req.train
    if req.space:
        raw = read_spec_document(req.space)
        if not isinstance(raw, dict):
            raise UsageError(f"--space {req.space}: must be a spec mapping with a 'layers' list")
        check_size(raw, req.space)
        source_name = req.space
    else:
        probe = choose_source(base.data, base.data_opts)
        scratch = replace(base, spec=None, spec_doc=None)
        _, raw = choose_spec(scratch, probe, None)
        base.arch = scratch.arch
        source_name = f"preset {base.arch}"
    doc = space.lay_on(raw, raw.get("search"), source_name)
    dists = space.find(doc, source_name)
    spec = None
    for values in space.representatives(dists):
        spec = parse_spec(space.apply(doc, values), source_name)
    if spec is None:
        spec = parse_spec(doc, source_name)
    if spec.family == "gan":
        raise UsageError(GAN_REFUSAL, "train GANs with dl train --arch gan")
    return doc, dists, families.get(spec.family), raw


def _prepare(req: TuneRequest, family: Any) -> tuple[CachedSource, str | None]:
    """The data source, its data prepared once per fold now (errors surface before any trial);
    the task (None for autoencoders)."""
    opts = req.train.data_opts
    opts.unsupervised = family.unsupervised
    opts.seed = int(req.train.overrides.get("seed") or 42)
    source = choose_source(req.train.data, opts)
    # folds of series are chronological windows: no nested split inside them
    source = CachedSource(source, nest=family.scores_test_rows and source.kind != "series")
    prep = None
    if req.folds is None:  # the usual split first: its size decides (the final fit reuses it)
        prep = source.prepare(req.train.data, opts)
        req.folds = auto_folds(source, prep, opts)
    elif req.folds == 1:  # one validation split, asked for
        req.folds = None
    folds = range(req.folds) if req.folds else [None]
    for fold in folds:
        if fold is None:
            prep = source.prepare(req.train.data, opts)
        else:
            with cross_validation(fold, req.folds):
                prep = source.prepare(req.train.data, opts)
    target = getattr(prep.preprocessor, "target", None)
    task = None if family.unsupervised or target is None else target.task
    return source, task


# `--folds` left out: K-fold cross-validation per trial on a table of fewer rows than this (one
# 20% validation split of a few hundred rows picks noise; benchmarks/bench_tune.py, docs/tune.md)
AUTO_FOLDS, AUTO_FOLDS_BELOW = 5, 2_000


def auto_folds(source: Any, prep: Any, opts: Any) -> int | None:
    """The folds when `--folds` is left out: AUTO_FOLDS for a table held in memory with fewer
    than AUTO_FOLDS_BELOW rows and no --val FILE (a note says so), else None (one split)."""
    rows = int(prep.info.get("rows") or 0)
    if opts.val or source.kind != "tabular" or not rows or rows >= AUTO_FOLDS_BELOW:
        return None
    if hasattr(prep.x_train, "in_order"):  # streamed batches: five passes over a big file
        return None
    note(
        f"{rows:,} rows: {AUTO_FOLDS}-fold cross-validation per trial (tables under "
        f"{AUTO_FOLDS_BELOW:,} rows; --folds 1 for one validation split)"
    )
    return AUTO_FOLDS


class BestKeeper:
    """Keeps the best finished trial's model file (trials/best.pt) as trials finish, so Ctrl-C
    still leaves the best model so far; other trials' files are removed."""

    def __init__(self, folder: Path, direction: str) -> None:
        self.folder, self.maximize = folder, direction == "maximize"
        self.path = folder / "best.pt"
        self.value: float | None = None
        self.number: int | None = None
        self.lock = threading.Lock()

    def settle(self, trial: Any) -> None:
        """A trial finished: keep its model if it completed best so far, else drop it."""
        model = self.folder / f"{trial.number}.pt"
        shutil.rmtree(model.with_suffix(".run"), ignore_errors=True)
        if not model.exists():
            return
        value = trial.value if trial.state.name == "COMPLETE" else None
        with self.lock:
            better = value is not None and (
                self.value is None or (value > self.value if self.maximize else value < self.value)
            )
            if better:
                os.replace(model, self.path)
                self.value, self.number = value, trial.number
            else:
                model.unlink(missing_ok=True)


class Progress:
    """One line per finished trial on stderr: number, parameters, value, best so far, ETA."""

    def __init__(self, total: int, done: int, metric: str, direction: str, keeper: BestKeeper):
        self.total, self.done, self.metric = total, done, metric
        self.keeper, self.t0, self.ran = keeper, time.perf_counter(), 0
        self.lock = threading.Lock()

    def __call__(self, study: Any, trial: Any) -> None:
        self.keeper.settle(trial)
        with self.lock:
            self.ran += 1
            n = self.done + self.ran
            if quiet_user():
                return
            params = "  ".join(f"{k}={_short(v)}" for k, v in trial.params.items())
            state = trial.state.name.lower()
            if state == "complete":
                result = f"{self.metric} {trial.value:.4g}"
            elif state == "pruned":
                result = f"pruned after {trial.user_attrs.get('epochs', '?')} epochs"
            else:
                error = str(trial.user_attrs.get("error", "error")).split(" (")[0]
                result = f"failed ({error[:100]})"
            try:
                best = f"best {study.best_value:.4g} (#{study.best_trial.number})"
            except ValueError:  # no complete trial yet
                best = "no best yet"
            per = (time.perf_counter() - self.t0) / self.ran
            eta = eta_text(per * max(0, self.total - n))
            console().print(
                f"trial {trial.number} [{n}/{self.total}]  {params}  {result}  {best}  ETA {eta}",
                markup=False,
                soft_wrap=True,
            )


_USER_QUIET = {"quiet": False}


def quiet_user() -> bool:
    """--quiet as the user gave it (the train job's own lines are silenced during a search)."""
    return _USER_QUIET["quiet"]


def _short(v: Any) -> str:
    return f"{v:.3g}" if isinstance(v, float) else str(v)
