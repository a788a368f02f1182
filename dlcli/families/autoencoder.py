"""The autoencoder family (engine/families.py): dense for tables, convolutional for images,
`variational: true` for a VAE. Trains on unlabelled data, fits an anomaly threshold on the
validation scores, and serves `predict` (anomaly_score, is_anomaly; --embed: latent vectors),
`evaluate --anomaly-label` (ROC AUC, precision at the threshold) and ONNX export (the scorer and
the encoder alone)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from dlcli import __version__, modelfile
from dlcli.console import info, note
from dlcli.engine.callbacks import Callback
from dlcli.engine.families import EvaluateOptions, FamilyJob, PredictOptions
from dlcli.model import autoencoder as ae_mod
from dlcli.model.builder import BuiltNetwork, build_stack

DEFAULT_PERCENTILE = 99.0


# -- networks -------------------------------------------------------------------------------------
def latent_size(spec: Any, input_shape: tuple[int, ...]) -> int:
    """`latent:` from the spec, else about a quarter of a table's encoded width (2 to 16), or
    C*H*W/16 for images (8 to 128)."""
    if spec.latent:
        return int(spec.latent)
    width = math.prod(int(d) for d in input_shape)
    if len(input_shape) == 3:
        return int(min(128, max(8, width // 16)))
    return int(min(16, max(2, width // 4)))


def build(
    spec: Any,
    input_shape: tuple[int, ...],
    outputs: int | None = None,
    source: str | None = None,
    data_info: dict | None = None,
    latent: int | None = None,
) -> dict[str, BuiltNetwork]:
    """{"encoder": input -> latent (x2 for a VAE), "decoder": latent -> input shape}."""
    shape = tuple(int(d) for d in input_shape)
    latent = latent or latent_size(spec, shape)
    info_ = (
        {**(data_info or {}), "image_shape": shape} if len(shape) == 3 else dict(data_info or {})
    )
    enc = build_stack(
        spec.encoder, "encoder", shape, latent * (2 if spec.variational else 1), spec.init,
        "auto", source, data_info=info_,
    )  # fmt: skip
    if len(shape) == 3:  # images: the decoder ends in `filters: outputs` channels at (C, H, W)
        dec = build_stack(
            spec.decoder, "decoder", (latent,), shape[0], spec.init, "none", source,
            data_info=info_, expect_shape=shape,
        )  # fmt: skip
    else:
        dec = build_stack(spec.decoder, "decoder", (latent,), shape[0], spec.init, "auto", source)
    return {"encoder": enc, "decoder": dec}


@dataclass
class LoadedAutoencoder:
    """A model file of the autoencoder family, ready to score and embed."""

    data: dict
    preprocessor: Any  # the fitted data preprocessing
    ae: ae_mod.AutoEncoder
    scorer: ae_mod.ScoringModel
    embedder: ae_mod.EmbeddingModel

    @property
    def threshold(self) -> float:
        return float(self.data["threshold"])


def _assemble(spec: Any, preprocessor: Any, latent: int, source: str | None) -> tuple:
    from dlcli.model.assemble import network_args

    nets = build(
        spec,
        preprocessor.input_shape,
        None,
        source,
        network_args(preprocessor)["data_info"],
        latent,
    )
    ae = ae_mod.AutoEncoder(
        nets["encoder"].module, nets["decoder"].module, latent, spec.variational
    )
    layout = ae_mod.layout_for(preprocessor)
    return ae, ae_mod.ReconstructionError(layout), layout


def load(data: dict, source: str, device: str = "cpu") -> LoadedAutoencoder:
    """Rebuild the modules of a loaded model file and load the weights strictly."""
    from dlcli.data.sources import preprocessor_from_state
    from dlcli.model.assemble import model_file_errors
    from dlcli.spec.schema import parse_spec

    with model_file_errors(source):
        preprocessor = preprocessor_from_state(data["preprocessor"])
        spec = parse_spec(data["spec"], f"in {source}")
        ae, error, layout = _assemble(spec, preprocessor, int(data["latent"]), f"in {source}")
        ae.load_state_dict(data["weights"]["network"])
    pre = preprocessor.preprocess_module()
    recon = ae_mod.reconstruction_module(preprocessor, layout)
    scorer = ae_mod.ScoringModel(pre, ae, error, recon).eval()
    embedder = ae_mod.EmbeddingModel(pre, ae).eval()
    if device != "cpu":
        from dlcli.accel import pick_device

        dev = pick_device(device)
        scorer.to(dev)
    return LoadedAutoencoder(data, preprocessor, ae, scorer, embedder)


class ScoreOnly(nn.Module):
    def __init__(self, scorer: ae_mod.ScoringModel) -> None:
        super().__init__()
        self.scorer = scorer

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.scorer(x)[0]


# -- training -------------------------------------------------------------------------------------
def train(job: FamilyJob) -> dict:
    """Fit on unlabelled data (labels, if any, are ignored); save the model file and run folder."""
    from dlcli.data.sources import preprocessor_from_state
    from dlcli.engine.callbacks import CheckpointCallback, ProgressCallback
    from dlcli.engine.resumable import fit_resumable
    from dlcli.engine.train_run import _inputs_and_transforms, _rows, run_record
    from dlcli.engine.trainer import Trainer
    from dlcli.spec.schema import parse_spec

    req, cfg, resume = job.req, job.cfg, job.resume
    spec = job.spec if resume is None else parse_spec(resume["spec"], "checkpoint")
    spec_doc = job.spec_doc if resume is None else resume["spec"]
    req.data_opts.unsupervised = True
    torch.manual_seed(cfg.seed)
    preprocessor = preprocessor_from_state(resume["preprocessor"]) if resume else None
    prep = job.source.prepare(req.data, req.data_opts, preprocessor)
    preprocessor = prep.preprocessor
    cfg.loss = "reconstruction"
    cfg = cfg.resolved(_rows(prep.x_train))
    torch.manual_seed(cfg.seed)
    latent = int(resume["latent"]) if resume else latent_size(spec, tuple(preprocessor.input_shape))
    source_name = req.spec or f"preset {req.arch}"
    ae, error, layout = _assemble(spec, preprocessor, latent, source_name)
    objective = ae_mod.TrainingObjective(ae, error)
    preprocess = preprocessor.preprocess_module()
    x_tr, x_va, train_tf, eval_tf = _inputs_and_transforms(preprocessor, preprocess, prep, cfg)
    n_params = sum(p.numel() for p in ae.parameters())
    kind = "variational autoencoder" if spec.variational else "autoencoder"
    info(
        f"{req.data}: {_rows(prep.x_train):,} training rows, {_rows(prep.x_val):,} validation rows; "
        f"{kind}, latent size {latent}; {n_params:,} parameters"
    )
    payload_base = {
        "dl_version": __version__,
        "family": "autoencoder",
        "task": "anomaly",
        "loss": "reconstruction",
        "spec": spec_doc,
        "input_shape": list(preprocessor.input_shape),
        "latent": latent,
        "preprocessor": preprocessor.to_state(),
        "train": cfg.to_dict(),
        "val_split": req.data_opts.val_split,
    }
    ckpt_path = modelfile.checkpoint_path(req.output)

    def save_checkpoint(snapshot: dict) -> None:
        modelfile.save(
            {**payload_base, "snapshot": snapshot}, ckpt_path, fmt=modelfile.CHECKPOINT_FORMAT
        )

    progress = ProgressCallback()
    run_folder = modelfile.run_dir(req.output)
    callbacks = [progress, CheckpointCallback(save_checkpoint), *req.callbacks]
    if preprocessor.kind == "image":
        grid = _ReconstructionGrid(ae, preprocess, preprocessor, prep.x_val, run_folder)
        callbacks.append(grid)
    trainer = Trainer(objective, ae_mod.ObjectiveTask(), cfg, callbacks, train_tf, eval_tf)
    fit_args = (x_tr, prep.y_train, x_va, prep.y_val)
    snapshot = resume["snapshot"] if resume else None
    result = fit_resumable(trainer, fit_args, snapshot, progress, save_checkpoint, req)

    ae.cpu().eval()
    scorer = ae_mod.ScoringModel(
        preprocess, ae, error, ae_mod.reconstruction_module(preprocessor, layout)
    ).eval()
    held_out = prep.x_val if _rows(prep.x_val) else prep.x_train
    scores = _scores(scorer, held_out)
    pct = cfg.threshold_percentile or DEFAULT_PERCENTILE  # flag > spec `training:` > 99
    threshold = float(np.percentile(scores, pct))
    metrics = {
        "score_mean": float(scores.mean()),
        "score_median": float(np.median(scores)),
        "threshold": threshold,
        "threshold_percentile": pct,
    }
    payload = {
        **payload_base,
        "weights": {"network": ae.state_dict()},
        "threshold": threshold,
        "threshold_percentile": pct,
        "metrics": metrics,
        **run_record(result, req, prep),
    }
    modelfile.save(payload, req.output)
    if ckpt_path.exists():
        ckpt_path.unlink()
    files = _write_run_files(run_folder, result.history, job.plotter)
    if preprocessor.kind == "image":
        files += grid.files
    note(
        f"anomaly threshold {threshold:.4g}: the {pct:g}th percentile of the "
        f"{'validation' if _rows(prep.x_val) else 'training'} scores"
    )
    return {
        "model": str(req.output),
        "run_dir": str(run_folder),
        "family": "autoencoder",
        "task": "anomaly",
        "latent": latent,
        "variational": bool(spec.variational),
        "epochs_run": len(result.history),
        "best_epoch": result.best_epoch,
        "stopped": result.stopped,
        "train_rows": _rows(prep.x_train),
        "val_rows": _rows(prep.x_val),
        "params": sum(p.numel() for p in ae.parameters()),
        "train_seconds": round(result.seconds, 3),
        "metrics": metrics,
        "settings": cfg.to_dict(),
        "files": files,
    }


def _scores(scorer: ae_mod.ScoringModel, x: Any) -> np.ndarray:
    """Anomaly scores of every row of a tensor or batch source."""
    from dlcli.engine.predictor import run_batches

    model = ScoreOnly(scorer)
    if hasattr(x, "in_order"):
        return np.concatenate([run_batches(model, xb.cpu()) for xb, _ in x.in_order()])
    return run_batches(model, x)


def _write_run_files(folder: Any, history: list[dict], plotter: Any) -> list[str]:
    from dlcli import report

    folder.mkdir(parents=True, exist_ok=True)
    files = [folder / "metrics.csv"]
    report.write_history_csv(files[0], history)
    if plotter is not None:
        path = str(folder / "learning_curve.png")
        plotter.draw([("learning_curve", {"path": path, "history": history, "metric": None})])
        files.append(path)
    return [str(f) for f in files]


class _ReconstructionGrid(Callback):
    """Each epoch: a PNG with up to 16 validation images (top row) over their reconstructions."""

    def __init__(
        self, ae: ae_mod.AutoEncoder, pre: nn.Module, preprocessor: Any, x_val: Any, folder: Any
    ) -> None:
        x = x_val if x_val is not None and not hasattr(x_val, "in_order") else None
        if x is None and hasattr(x_val, "in_order"):
            x = next(iter(x_val.in_order()))[0]
        self.images = x[:16].cpu() if x is not None and len(x) else None
        self.ae, self.pre = ae, pre
        self.recon = ae_mod.ImageReconstruction(preprocessor.mean, preprocessor.std)
        self.folder = folder / "reconstructions"
        self.files: list[str] = []

    @torch.no_grad()
    def on_epoch_end(self, row: dict, snapshot: Any) -> None:
        from dlcli.imagegrid import write_grid

        if self.images is None:
            return
        dev = next(self.ae.parameters()).device
        was = self.ae.training
        self.ae.eval()
        pre = self.pre.to(dev)
        out = self.recon.to(dev)(self.ae(pre(self.images.to(dev)))[0]).float().cpu()
        self.ae.train(was)
        originals = self.images.float() / 255.0 if self.images.dtype == torch.uint8 else self.images
        self.folder.mkdir(parents=True, exist_ok=True)
        path = self.folder / f"epoch_{int(row['epoch']):03d}.png"
        write_grid(path, torch.cat([originals, out]), nrow=len(originals))
        self.files = [str(path)]


# -- serving (dlcli/engine/anomaly.py) ------------------------------------------------------------
def predict(data: dict, model_path: str, inputs: list[str], opts: PredictOptions) -> None:
    from dlcli.engine import anomaly

    anomaly.predict(load(data, model_path, opts.device), inputs, opts)


def evaluate(data: dict, model_path: str, data_path: str, opts: EvaluateOptions) -> dict:
    from dlcli.engine import anomaly

    return anomaly.evaluate(load(data, model_path, opts.device), data_path, opts)


def export_onnx(data: dict, model_path: str, output: str | None, tolerance: float) -> dict:
    from dlcli.engine import anomaly

    return anomaly.export_onnx(load(data, model_path), model_path, output, tolerance)
