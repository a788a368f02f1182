"""`dl train` as a library call: the one train job of every model family. It owns what families
share: --resume and its overrides, the spec and data source choice, checkpoints, Ctrl-C, the
callbacks, the model file, the run folder and the `--json` summary; a family (dlcli/families/)
fills in its hooks: `check`, `prepare` (data, networks, the FitStep) and `finish`.

Nothing is written until training has finished; the model file is replaced atomically, so a failed
or interrupted run never touches an existing good model. Ctrl-C leaves <model>.run/checkpoint.pt.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Protocol

from dlcli import __version__, modelfile
from dlcli.console import info
from dlcli.data.kinds import suggestion
from dlcli.data.sources import DataOptions, choose_source
from dlcli.engine import data_options, distributed
from dlcli.engine.callbacks import Callback, CheckpointCallback, ProgressCallback
from dlcli.engine.trainer import FitResult, FitStep, Interrupted, TrainConfig, Trainer
from dlcli.errors import DLError, UsageError
from dlcli.spec.schema import parse_spec, resolve_spec

# what --resume may change: the same for every family (one that cannot honour a value says so)
RESUME_OVERRIDES = ("epochs", "patience", "device", "precision", "compile")


@dataclass
class TrainRequest:
    """Everything `dl train` was asked to do."""

    data: str
    output: str = "model.pt"
    arch: str | None = None
    spec: str | None = None
    data_opts: DataOptions = field(default_factory=DataOptions)
    overrides: dict = field(default_factory=dict)  # TrainConfig fields given on the command line
    resume: bool = False
    plots: bool = True
    callbacks: list = field(default_factory=list)  # extra trainer callbacks (library use, tests)
    init_from: str | None = None  # transfer learning: start from this model's weights
    freeze: str | None = None  # layers to keep fixed (names or index ranges)
    weights: str | None = (
        None  # pretrained backbone weights: `imagenet` or a .pth/.safetensors file
    )
    embeddings: str | None = None  # pretrained word vectors for the embedding layer (text)
    spec_doc: dict | None = None  # a spec document (e.g. a tuner's trial); wins over spec/arch
    source: Any = None  # a data source chosen by the caller (e.g. one that caches `prepare`)


@dataclass
class TrainJob:
    """What a family's training hooks get once the spec and source are chosen (before any data is
    read). `cfg` is the merged TrainConfig (flags > spec > defaults; `epochs` and `batch_size` may
    still be None: `prepare` settles them in `job.cfg`), `base` the --init-from model file,
    `resume` the loaded checkpoint of --resume (its `spec`, `preprocessor`, `snapshot`...)."""

    req: TrainRequest
    spec: Any
    spec_doc: dict
    source: Any
    cfg: TrainConfig
    base: dict | None = None
    resume: dict | None = None
    payload: dict = field(default_factory=dict)  # the model file's first keys (set by the job)
    # names of the network's tensors loaded by --init-from or --weights (set by the family's
    # `prepare`): non-empty = pretrained tensors were loaded; the rest (the head) start fresh
    loaded: set[str] = field(default_factory=set)

    @property
    def checkpoint(self) -> Path:
        return modelfile.checkpoint_path(self.req.output)

    @property
    def run_folder(self) -> Path:
        return modelfile.run_dir(self.req.output)

    @property
    def spec_source(self) -> str:
        """How errors name the spec: its file, its preset, or the model file it came from."""
        req = self.req
        if self.resume is not None:
            return str(self.checkpoint)
        if req.spec or req.arch:
            return req.spec or f"preset {req.arch}"
        return f"in {req.init_from}"  # --init-from without --spec or --arch: that model's spec


@dataclass
class TrainSetup:
    """What a family's `prepare` hands the job: the FitStep, the model-file keys known before
    training (they go into checkpoints too), its own callbacks (e.g. sample grids, whose `files`
    join the summary), the progress line's stats format, the data loading time, and `context`:
    anything `finish` needs again."""

    step: FitStep
    payload: dict
    callbacks: list[Callback] = field(default_factory=list)
    row_format: Callable[[dict], str] | None = None
    load_seconds: float = 0.0
    context: Any = None


@dataclass
class Outcome:
    """What a family's `finish` hands the job: the model-file keys learnt by training (weights,
    metrics, history...); its `--json` summary keys in three parts around the job's own (what the
    model is: `about`, then `epochs_run`; how the run went: `run`, then the timings; what it
    scored: `results`, then `settings` and `files`); its run-folder plots as (plot name, file
    name, keyword arguments); the settings to report (None: every TrainConfig field)."""

    payload: dict
    about: dict
    run: dict
    results: dict
    plots: list[tuple[str, str, dict]] = field(default_factory=list)
    settings: dict | None = None


class Trainable(Protocol):
    """The training side of a model family (the whole contract: dlcli/families/base.py)."""

    name: str
    unsupervised: bool  # trains without a target: the data source is chosen knowing that
    distributed: bool  # can train under torchrun / --devices

    def check(self, job: TrainJob) -> None: ...

    def prepare(self, job: TrainJob) -> TrainSetup: ...

    def finish(self, job: TrainJob, setup: TrainSetup, result: FitResult) -> Outcome: ...


class Registry(Protocol):
    """Families by name (dlcli/families/__init__.py)."""

    def get(self, name: str) -> Trainable: ...

    def of_model(self, data: dict) -> Trainable: ...


class TrainingInterrupted(DLError):
    exit_code = 130


def merge_config(spec_training: Any, overrides: dict) -> TrainConfig:
    """flags > spec `training:` > TrainConfig defaults."""
    cfg = TrainConfig()
    for f in fields(TrainConfig):
        if overrides.get(f.name) is not None:
            setattr(cfg, f.name, overrides[f.name])
        elif getattr(spec_training, f.name, None) is not None:
            setattr(cfg, f.name, getattr(spec_training, f.name))
    return cfg


def run_training(req: TrainRequest, families: Registry) -> dict:
    """Train and save with the family the spec (or the checkpoint) names; returns the summary
    that --json prints."""
    from dlcli.report import PlotWorker

    _check_output(req.output)
    plotter = PlotWorker() if req.plots and distributed.is_main() else None  # beside the training
    try:
        job, family = _start(req, families)
        setup = family.prepare(job)
        result, callbacks = _fit(job, setup)
        if not distributed.is_main():  # the other processes trained the same model; rank 0 saves
            return {"rank": distributed.rank(), "epochs_run": len(result.history)}
        return _save(job, family, setup, result, callbacks, plotter)
    finally:
        if plotter is not None:
            plotter.close()


def _start(req: TrainRequest, families: Registry) -> tuple[TrainJob, Trainable]:
    """The family, spec, settings and data source: from the checkpoint on --resume, else from the
    flags, the spec and the data; every check that needs no data reading."""
    _check_finite(req.overrides)
    _check_weights(req)
    resume, kind, ckpt = None, None, modelfile.checkpoint_path(req.output)
    if req.resume:
        if not ckpt.exists():
            raise UsageError(
                f"--resume: no checkpoint at {ckpt}", "it is written when a run is interrupted"
            )
        resume = modelfile.load(ckpt, expect=modelfile.CHECKPOINT_FORMAT)
        resume.setdefault("snapshot", resume.get("gan"))  # GANs' checkpoints before the one job
        family = families.of_model(resume)
        spec_doc, spec = resume["spec"], parse_spec(resume["spec"], str(ckpt))
        cfg = TrainConfig(**resume["train"])
        for k in RESUME_OVERRIDES:  # only more epochs or patience, another device... make sense
            if req.overrides.get(k) is not None:
                setattr(cfg, k, req.overrides[k])
        req.data_opts.seed, req.data_opts.val_split = cfg.seed, resume["val_split"]
        req.data_opts.unsupervised = family.unsupervised
        kind = resume["preprocessor"].get("kind")
        info(f"resuming from {ckpt} after epoch {len(resume['snapshot']['history'])}")
    source = req.source or choose_source(req.data, req.data_opts, kind)
    base = modelfile.load(req.init_from) if req.init_from else None  # read once, checked early
    if resume is None:  # the spec is validated before any data is read
        spec, spec_doc = choose_spec(req, source, base)
        cfg = merge_config(spec.training, req.overrides)
        req.data_opts.seed = cfg.seed
        data_options.spec_defaults(
            spec, source.kind, req.data_opts, req.spec or f"preset {req.arch}"
        )
        family = families.get(spec.family)
    _check_fits(spec, source.kind, req)
    if not family.distributed and distributed.world_size() > 1:
        raise UsageError(
            f"{family.name} models train on one process; run without torchrun/--devices"
        )
    if family.unsupervised and resume is None:  # unlabelled data: chosen again knowing that
        req.data_opts.unsupervised = True
        source = req.source or choose_source(req.data, req.data_opts)
    if req.weights and not getattr(family, "takes_weights", False):
        raise UsageError(
            f"--weights: {family.name} models have no pretrained backbone to load",
            "use --weights with --arch resnet18, resnet34, resnet50 or mobilenet_v3_small",
        )
    job = TrainJob(req, spec, spec_doc, source, cfg, base, resume)
    family.check(job)  # e.g. --precision fp16 on a CPU, before any data is read
    if base is not None and resume is None:
        data_options.inherit(req, source.kind, base)
    if resume is None:
        data_options.from_spec_input(req, source.kind, spec)
    return job, family


def _fit(job: TrainJob, setup: TrainSetup) -> tuple[FitResult, list[Callback]]:
    """Run the trainer with the callbacks (the family's, progress, checkpoints, the request's);
    on Ctrl-C save the snapshot as <model>.run/checkpoint.pt (rank 0 only) and raise
    TrainingInterrupted with the one line that says how to go on."""
    req, cfg = job.req, job.cfg
    job.payload = {
        "dl_version": __version__,
        **setup.payload,
        "train": cfg.to_dict(),
        "val_split": req.data_opts.val_split,
    }

    def save_checkpoint(snapshot: dict) -> None:
        body = {**job.payload, "snapshot": snapshot}
        modelfile.save(body, job.checkpoint, fmt=modelfile.CHECKPOINT_FORMAT)

    progress = ProgressCallback(setup.row_format)
    main = distributed.is_main()  # under torchrun only rank 0 writes files
    saver = [CheckpointCallback(save_checkpoint)] if main else []
    callbacks = [*setup.callbacks, progress, *saver, *req.callbacks]
    trainer = Trainer(setup.step, int(cfg.epochs), cfg.patience, callbacks)
    try:
        return trainer.fit(job.resume["snapshot"] if job.resume else None), callbacks
    except Interrupted as exc:
        progress.close()
        if main:
            save_checkpoint(exc.snapshot)
        raise interrupted(len(exc.snapshot["history"]), req) from None
    finally:
        progress.close()


def interrupted(done: int, req: TrainRequest) -> TrainingInterrupted:
    """The one line after Ctrl-C: `done` complete epochs, where the checkpoint is, how to go on."""
    return TrainingInterrupted(
        f"interrupted after {done} complete epoch{'s' if done != 1 else ''}; "
        f"checkpoint saved to {modelfile.checkpoint_path(req.output)}",
        f"continue with: dl train {req.data} -o {req.output} --resume",
    )


def _save(
    job: TrainJob,
    family: Trainable,
    setup: TrainSetup,
    result: FitResult,
    callbacks: list[Callback],
    plotter: Any,
) -> dict:
    """The model file, the run folder (metrics.csv, the family's plots) and the summary."""
    from dlcli.report import write_run_files

    outcome = family.finish(job, setup, result)
    modelfile.save({**job.payload, **outcome.payload}, job.req.output)
    job.checkpoint.unlink(missing_ok=True)
    files = write_run_files(job.run_folder, result.history, outcome.plots, plotter)
    files += [f for cb in setup.callbacks for f in cb.files]
    summary = {
        "model": str(job.req.output),
        "run_dir": str(job.run_folder),
        **outcome.about,
        "epochs_run": len(result.history),
        **outcome.run,
        "load_seconds": round(setup.load_seconds, 3),
        "train_seconds": round(result.seconds, 3),
        "epoch_seconds": [round(r["seconds"], 4) for r in result.history],
        **outcome.results,
        "settings": outcome.settings if outcome.settings is not None else job.cfg.to_dict(),
        "files": files,
    }
    for cb in callbacks:
        cb.on_run_end(summary)
    return summary


# -- output, spec and data-kind checks -------------------------------------------------------------
def _check_finite(overrides: dict) -> None:
    """--lr inf (or nan, from a caller that skipped the command line's checks) is one line,
    not a training that diverges at its first step."""
    for name, value in overrides.items():
        if isinstance(value, float) and not math.isfinite(value):
            raise UsageError(f"--{name.replace('_', '-')} {value}: not a finite number")


def _check_weights(req: TrainRequest) -> None:
    """--weights FILE exists and is one --weights source, before any data is read."""
    if not req.weights:
        return
    if req.init_from:
        raise UsageError("give --weights or --init-from, not both")
    if req.weights != "imagenet" and not Path(req.weights).expanduser().is_file():
        raise UsageError(
            f"--weights {req.weights}: file not found",
            "give imagenet, or a .pth, .pt or .safetensors file",
        )


def _check_output(path: str) -> None:
    p = Path(path)
    if p.is_dir():
        raise UsageError(f"-o {path}: is a folder; give a file name such as {p / 'model.pt'}")
    if not p.parent.exists():
        raise UsageError(f"-o {path}: folder {p.parent} does not exist")


def choose_spec(req: TrainRequest, source: Any, base: dict | None) -> tuple[Any, dict]:
    """The request's spec document, else --spec, else --arch, else the --init-from model's own
    spec, else the data kind's preset (its variant for the data kind, e.g. conv_autoencoder)."""
    if req.spec_doc is not None:
        return parse_spec(req.spec_doc, req.spec or f"preset {req.arch}"), req.spec_doc
    if not req.spec and not req.arch and base is not None:
        doc = base["spec"]
        info(f"--init-from {req.init_from}: using its network ({doc.get('name') or 'its spec'})")
        return parse_spec(doc, f"in {req.init_from}"), doc
    req.arch = req.arch or (None if req.spec else source.default_arch)
    spec, doc = resolve_spec(req.spec, req.arch)
    kind = source.kind
    if not req.spec and spec.data and kind not in spec.data and kind in (spec.variants or {}):
        req.arch = spec.variants[kind]  # e.g. autoencoder on images -> conv_autoencoder
        info(f"--arch {spec.name}: using its {kind} variant, the {req.arch} preset")
        spec, doc = resolve_spec(None, req.arch)
    return spec, doc


def _check_fits(spec: Any, kind: str | None, req: TrainRequest) -> None:
    """A preset made for other data (--arch cnn on a CSV) is one clear line, before any loading."""
    if spec.data and kind and kind not in spec.data:
        if req.spec or req.arch:
            name = req.spec or f"--arch {req.arch}"
        else:  # neither given: the spec is the --init-from model's own
            name = f"--init-from {req.init_from} (its network)"
        raise UsageError(
            f"{name} is made for {' or '.join(spec.data)} data, but {req.data} is {kind} data",
            suggestion(kind),
        )
