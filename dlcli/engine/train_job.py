"""`dl train` as a library call: data source -> model from spec -> trainer -> model file + run folder.

Nothing is written until training has finished; the model file is replaced atomically, so a failed
or interrupted run never touches an existing good model. Ctrl-C leaves <model>.run/checkpoint.pt.
"""

from __future__ import annotations

import datetime as _dt
import time
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch

from dlcli import __version__, modelfile
from dlcli.console import info
from dlcli.data.sources import DataOptions, choose_source, preprocessor_from_state
from dlcli.engine import distributed
from dlcli.engine.callbacks import CheckpointCallback, ProgressCallback
from dlcli.engine.resumable import TrainingInterrupted, fit_resumable  # noqa: F401 (re-exported)
from dlcli.engine.trainer import TrainConfig, Trainer, check_settings
from dlcli.errors import UsageError
from dlcli.model.assemble import InferenceModel, network_args
from dlcli.model.builder import build_network
from dlcli.model.tasks import make_task
from dlcli.spec.schema import parse_spec, resolve_spec


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


def merge_config(spec_training: Any, overrides: dict) -> TrainConfig:
    """flags > spec `training:` > TrainConfig defaults."""
    cfg = TrainConfig()
    for f in fields(TrainConfig):
        if overrides.get(f.name) is not None:
            setattr(cfg, f.name, overrides[f.name])
        elif getattr(spec_training, f.name, None) is not None:
            setattr(cfg, f.name, getattr(spec_training, f.name))
    return cfg


def _check_output(path: str) -> None:
    p = Path(path)
    if p.is_dir():
        raise UsageError(f"-o {path}: is a folder; give a file name such as {p / 'model.pt'}")
    if not p.parent.exists():
        raise UsageError(f"-o {path}: folder {p.parent} does not exist")


def run_training(req: TrainRequest) -> dict:
    """Train and save; returns the summary that --json prints."""
    from dlcli.report import PlotWorker

    _check_output(req.output)
    plotter = PlotWorker() if req.plots and distributed.is_main() else None  # beside the training
    try:
        return _run_training(req, plotter)
    finally:
        if plotter is not None:
            plotter.close()


def _run_training(req: TrainRequest, plotter: Any) -> dict:
    ckpt_path = modelfile.checkpoint_path(req.output)
    resume_state, preprocessor = None, None
    if req.resume:
        if not ckpt_path.exists():
            raise UsageError(
                f"--resume: no checkpoint at {ckpt_path}", "it is written when a run is interrupted"
            )
        ck = modelfile.load(ckpt_path, expect=modelfile.CHECKPOINT_FORMAT)
        if ck.get("family", "supervised") != "supervised":
            return _run_family(req, parse_spec(ck["spec"], str(ckpt_path)), ck, plotter)
        spec_doc, preprocessor = ck["spec"], preprocessor_from_state(ck["preprocessor"])
        spec = parse_spec(spec_doc, str(ckpt_path))
        cfg = TrainConfig(**ck["train"])
        for k, v in req.overrides.items():  # only more epochs or patience make sense on resume
            if v is not None and k in ("epochs", "patience", "device", "precision", "compile"):
                setattr(cfg, k, v)
        req.data_opts.seed, req.data_opts.val_split = cfg.seed, ck["val_split"]
        resume_state = ck["snapshot"]
        info(f"resuming from {ckpt_path} after epoch {len(resume_state['history'])}")
    source = choose_source(
        req.data, req.data_opts, preprocessor.kind if preprocessor is not None else None
    )
    base = modelfile.load(req.init_from) if req.init_from else None  # read once, checked early
    if not req.resume:  # the spec is validated before any data is read
        spec, spec_doc = _choose_spec(req, source, base)
        cfg = merge_config(spec.training, req.overrides)
        req.data_opts.seed = cfg.seed
        if spec.family != "supervised":
            _check_fits(spec, getattr(source, "kind", None), req)
            return _run_family(req, spec, None, plotter, spec_doc, source, cfg)
    _check_fits(spec, getattr(source, "kind", None), req)
    check_settings(cfg)  # e.g. --precision fp16 on a CPU, before any data is read
    if base is not None and preprocessor is None:
        _inherit_data_options(req, getattr(source, "kind", None), base)
    torch.manual_seed(cfg.seed)
    t_load = time.perf_counter()
    prep = source.prepare(req.data, req.data_opts, preprocessor)
    preprocessor = prep.preprocessor
    task = make_task(preprocessor.target, cfg.loss)
    cfg.loss = task.loss
    cfg = cfg.resolved(_rows(prep.x_train))
    load_s = time.perf_counter() - t_load
    torch.manual_seed(cfg.seed)
    built = build_network(
        spec,
        preprocessor.input_shape,
        task.n_outputs,
        req.spec or f"preset {req.arch or 'mlp'}",
        **network_args(preprocessor),
    )
    frozen = _transfer(built.module, req, base)
    preprocess = preprocessor.preprocess_module()
    x_tr, x_va, train_tf, eval_tf = _inputs_and_transforms(preprocessor, preprocess, prep, cfg)
    n_params = sum(p.numel() for p in built.module.parameters())
    n_train = sum(p.numel() for p in built.module.parameters() if p.requires_grad)
    info(
        f"{req.data}: {_rows(prep.x_train):,} training rows, {_rows(prep.x_val):,} validation rows; "
        f"task {task.name}"
        + (
            f" ({len(preprocessor.target.classes)} classes)"
            if task.name == "classification"
            else ""
        )
        + f"; {n_params:,} parameters"
        + (
            f" ({n_train:,} trainable, {n_params - n_train:,} frozen)"
            if n_train != n_params
            else ""
        )
    )
    payload_base = {
        "dl_version": __version__,
        "task": task.name,
        "loss": task.loss,
        "spec": spec_doc,
        "input_shape": list(preprocessor.input_shape),
        "outputs": task.n_outputs,
        "preprocessor": preprocessor.to_state(),
        "train": cfg.to_dict(),
        "val_split": req.data_opts.val_split,
    }

    def save_checkpoint(snapshot: dict) -> None:
        modelfile.save(
            {**payload_base, "snapshot": snapshot}, ckpt_path, fmt=modelfile.CHECKPOINT_FORMAT
        )

    progress = ProgressCallback()
    main = distributed.is_main()  # under torchrun only rank 0 writes files
    saver = [CheckpointCallback(save_checkpoint)] if main else []
    callbacks = [progress, *saver, *req.callbacks]
    trainer = Trainer(built.module, task, cfg, callbacks, train_tf, eval_tf)
    trainer.frozen = frozen
    fit_args = (x_tr, prep.y_train, x_va, prep.y_val)
    saver_fn = save_checkpoint if main else None
    result = fit_resumable(trainer, fit_args, resume_state, progress, saver_fn, req)
    if not main:  # the other processes trained the same model; rank 0 saves it
        return {"rank": distributed.rank(), "epochs_run": len(result.history)}
    built.module.cpu().eval()
    model = InferenceModel(preprocess, built.module, task.postprocess()).eval()
    metrics = {}
    if _rows(prep.x_val):
        y_val, outputs = _predict_all(model, prep.x_val, prep.y_val)
        metrics = task.metrics(y_val, outputs)
    payload = {
        **payload_base,
        "weights": {"network": built.module.state_dict()},
        "metrics": _plain(metrics),
        **run_record(result, req, prep),
    }
    modelfile.save(payload, req.output)
    run_folder = modelfile.run_dir(req.output)
    if ckpt_path.exists():
        ckpt_path.unlink()
    files = _write_run_files(run_folder, result.history, metrics, task, preprocessor, plotter)
    summary = {
        "model": str(req.output),
        "run_dir": str(run_folder),
        "task": task.name,
        "loss": task.loss,
        "epochs_run": len(result.history),
        "best_epoch": result.best_epoch,
        "stopped": result.stopped,
        "train_rows": _rows(prep.x_train),
        "val_rows": _rows(prep.x_val),
        "params": sum(p.numel() for p in built.module.parameters()),
        "load_seconds": round(load_s, 3),
        "train_seconds": round(result.seconds, 3),
        "epoch_seconds": [round(r["seconds"], 4) for r in result.history],
        "metrics": {k: v for k, v in _plain(metrics).items() if not isinstance(v, (dict, list))},
        "settings": cfg.to_dict(),
        "files": files,
    }
    return summary


def _run_family(
    req: TrainRequest,
    spec: Any,
    resume: dict | None,
    plotter: Any,
    spec_doc: dict | None = None,
    source: Any = None,
    cfg: TrainConfig | None = None,
) -> dict:
    """Autoencoders, GANs...: the family's own training (dlcli/engine/families.py)."""
    from dlcli.engine.families import FamilyJob, family_module

    if distributed.world_size() > 1:  # their trainers do not shard or reduce (yet)
        raise UsageError(
            f"{spec.family} models train on one process; run without torchrun/--devices"
        )
    req.data_opts.unsupervised = True  # autoencoders and GANs need no target
    if resume is not None:  # the checkpoint holds the spec and settings of the interrupted run
        spec_doc, cfg = resume["spec"], TrainConfig(**resume["train"])
        for k, v in req.overrides.items():
            if v is not None and k in ("epochs", "patience", "device"):
                setattr(cfg, k, v)
        req.data_opts.seed, req.data_opts.val_split = cfg.seed, resume["val_split"]
        source = choose_source(req.data, req.data_opts, resume["preprocessor"].get("kind"))
    else:  # unlabelled data: the source is chosen again knowing that
        source = choose_source(req.data, req.data_opts)
    job = FamilyJob(req, spec, spec_doc or {}, source, cfg, plotter, resume)
    return family_module(spec.family).train(job)


def run_record(result: Any, req: TrainRequest, prep: Any) -> dict:
    """The model-file keys every family records about its run: history, the kept epoch,
    provenance, and a few real raw inputs so `dl export` can verify the graph on real data."""
    return {
        "history": result.history,
        "best_epoch": result.best_epoch,
        "stopped": result.stopped,
        "data": {"source": str(req.data), "rows": prep.info.get("rows")},
        "examples": _examples(prep),
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }


def _rows(x: Any) -> int:
    """Number of examples in a tensor or a batch source (which has `rows`)."""
    if x is None:
        return 0
    return int(x.rows) if hasattr(x, "rows") else len(x)


def _predict_all(model: torch.nn.Module, x: Any, y: Any) -> tuple[np.ndarray, np.ndarray]:
    """(targets, outputs) over all of `x`, a tensor or a batch source read in order."""
    from dlcli.engine.predictor import run_batches

    if not hasattr(x, "in_order"):
        return y.numpy(), run_batches(model, x, batch=max(64, 2**22 // max(1, x[0].numel())))
    ys, outs = [], []
    for xb, yb in x.in_order():
        ys.append(yb.cpu().numpy())
        outs.append(run_batches(model, xb.cpu()))
    return np.concatenate(ys), np.concatenate(outs)


def _examples(prep: Any) -> torch.Tensor:
    """Up to 64 real raw inputs (validation first), kept so `dl export` can verify on real data."""
    for x in (prep.x_val, prep.x_train):
        if x is None:
            continue
        if hasattr(x, "in_order"):
            return next(iter(x.in_order()))[0][:64].cpu().clone()
        if len(x):
            return x[:64].clone()
    return torch.empty(0)


def _choose_spec(req: TrainRequest, source: Any, base: dict | None) -> tuple[Any, dict]:
    """--spec, else --arch, else the --init-from model's own spec, else the data kind's preset."""
    if not req.spec and not req.arch and base is not None:
        doc = base["spec"]
        info(f"--init-from {req.init_from}: using its network ({doc.get('name') or 'its spec'})")
        return parse_spec(doc, f"in {req.init_from}"), doc
    req.arch = req.arch or (None if req.spec else getattr(source, "default_arch", "mlp"))
    spec, doc = resolve_spec(req.spec, req.arch)
    kind = getattr(source, "kind", None)
    if not req.spec and spec.data and kind not in spec.data and kind in (spec.variants or {}):
        req.arch = spec.variants[kind]  # e.g. autoencoder on images -> conv_autoencoder
        info(f"--arch {spec.name}: using its {kind} variant, the {req.arch} preset")
        spec, doc = resolve_spec(None, req.arch)
    return spec, doc


def _inherit_data_options(req: TrainRequest, kind: str | None, base: dict) -> None:
    """Transfer learning: read the new data the way the source model was fed (for images: its
    channel count and size), unless the user said otherwise, so its first layers still fit."""
    state = base.get("preprocessor") or {}
    if kind == "image" and state.get("kind") == "image":
        given = dict(req.data_opts.extra.get("image") or {})
        given.setdefault("image_size", state.get("size"))
        if not given.get("grayscale"):
            given.setdefault("channels", state.get("channels"))
        req.data_opts.extra["image"] = given


def _check_fits(spec: Any, kind: str | None, req: TrainRequest) -> None:
    """A preset made for other data (--arch cnn on a CSV) is one clear line, before any loading."""
    if spec.data and kind and kind not in spec.data:
        name = req.spec or f"--arch {req.arch}"
        raise UsageError(
            f"{name} is made for {' or '.join(spec.data)} data, but {req.data} is {kind} data",
            _suggest(kind),
        )


def _suggest(kind: str) -> str:
    return {"tabular": "try --arch mlp", "image": "try --arch cnn or --arch resnet"}.get(
        kind, "see dl build --list"
    )


def _transfer(
    network: torch.nn.Module, req: TrainRequest, base: dict | None
) -> list[torch.nn.Module]:
    """--init-from (`base`: its loaded model file) and --freeze; returns the frozen layers."""
    from dlcli.model import transfer

    loaded = None
    if base is not None:
        loaded = transfer.init_from(network, base["weights"]["network"], req.init_from)
    elif req.freeze:
        raise UsageError(
            "--freeze needs --init-from MODEL (freezing fresh random layers does not help)"
        )
    return transfer.freeze(network, req.freeze, loaded) if req.freeze else []


def _inputs_and_transforms(
    preprocessor: Any, preprocess: torch.nn.Module, prep: Any, cfg: TrainConfig
) -> tuple:
    """Encode once when nothing varies per batch (tables); else keep the stored inputs (e.g. uint8
    images) and run augmentation + preprocessing per batch on the training device."""
    augment = None
    if cfg.augment:
        if not hasattr(preprocessor, "augmenter"):
            raise UsageError(f"--augment applies to image data, not to {preprocessor.kind} data")
        augment = preprocessor.augmenter(cfg.augment)
    streamed = hasattr(prep.x_train, "shuffled")  # a batch source: preprocessed per batch
    if augment is None and getattr(preprocessor, "encode_once", True) and not streamed:
        with torch.no_grad():  # the same module is part of the saved model
            x_va = preprocess(prep.x_val) if prep.x_val is not None else None
            return preprocess(prep.x_train), x_va, None, None
    train_tf = torch.nn.Sequential(augment, preprocess) if augment is not None else preprocess
    return prep.x_train, prep.x_val, train_tf, preprocess


def _plain(obj: Any) -> Any:
    """numpy scalars and arrays -> Python values (model files and JSON hold plain data only)."""
    if isinstance(obj, dict):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    return obj


def _write_run_files(
    folder: Path, history: list[dict], metrics: dict, task: Any, preprocessor: Any, plotter: Any
) -> list[str]:
    """metrics.csv, and with a plotter the learning curve and (classification) confusion matrix."""
    from dlcli import report

    folder.mkdir(parents=True, exist_ok=True)
    files = [folder / "metrics.csv"]
    report.write_history_csv(files[0], history)
    if plotter is None:
        return [str(f) for f in files]
    primary = "accuracy" if task.name == "classification" else "rmse"
    jobs = [
        (
            "learning_curve",
            {"path": str(folder / "learning_curve.png"), "history": history, "metric": primary},
        )
    ]
    if task.name == "classification" and metrics.get("confusion_matrix"):
        path = str(folder / "confusion_matrix.png")
        jobs.append(
            (
                "confusion_matrix",
                {
                    "path": path,
                    "matrix": metrics["confusion_matrix"],
                    "class_names": list(preprocessor.target.classes),
                },
            )
        )
    plotter.draw(jobs)
    return [str(f) for f in files] + [job[1]["path"] for job in jobs]
