"""The autoencoder family: dense for tables, convolutional for images, `variational: true` for a
VAE (modules: model/autoencoder.py). Trains on unlabelled data against its own reconstruction loss
(engine/task_step.py), fits an anomaly threshold on the validation scores, writes a reconstruction
grid per epoch for images, and serves predict, evaluate and export through anomaly.py."""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import torch
from torch import nn

from dlcli.console import info, note
from dlcli.data.sources import preprocessor_from_state
from dlcli.engine.callbacks import Callback
from dlcli.engine.fit_data import inputs_and_transforms, rows, run_counts, run_record
from dlcli.engine.task_step import TaskStep
from dlcli.engine.train_job import Outcome, TrainJob, TrainSetup
from dlcli.engine.trainer import FitResult
from dlcli.export import ExportPlan
from dlcli.families import anomaly
from dlcli.families.base import EvaluateOptions, Evaluation, Family, PredictOptions
from dlcli.model import autoencoder as ae_mod
from dlcli.model.builder import BuiltNetwork

DEFAULT_PERCENTILE = 99.0


class Autoencoder(Family):
    name = "autoencoder"
    unsupervised = True
    predict_flags = frozenset({"--embed"})
    evaluate_flags = frozenset({"--anomaly-label"})

    def build_networks(
        self, spec: Any, input_shape: tuple[int, ...], outputs: int | None, source: str | None
    ) -> dict[str, BuiltNetwork]:
        """{"encoder": input -> latent (x2 for a VAE), "decoder": latent -> input shape}."""
        return ae_mod.build_autoencoder(spec, input_shape, source)

    # -- training -------------------------------------------------------------------------------
    def prepare(self, job: TrainJob) -> TrainSetup:
        """Fit on unlabelled data (labels, if any, are ignored)."""
        req, cfg, resume, spec = job.req, job.cfg, job.resume, job.spec
        torch.manual_seed(cfg.seed)
        t_load = time.perf_counter()
        preprocessor = preprocessor_from_state(resume["preprocessor"]) if resume else None
        prep = job.source.prepare(req.data, req.data_opts, preprocessor)
        preprocessor = prep.preprocessor
        load_s = time.perf_counter() - t_load
        cfg.loss = "reconstruction"
        cfg = job.cfg = cfg.resolved(rows(prep.x_train))
        torch.manual_seed(cfg.seed)
        shape = tuple(preprocessor.input_shape)
        latent = int(resume["latent"]) if resume else ae_mod.latent_size(spec, shape)
        ae, error, layout = ae_mod.assemble(spec, preprocessor, latent, job.spec_source)
        objective = ae_mod.TrainingObjective(ae, error)
        preprocess = preprocessor.preprocess_module()
        x_tr, x_va, train_tf, eval_tf = inputs_and_transforms(preprocessor, preprocess, prep, cfg)
        n_params = sum(p.numel() for p in ae.parameters())
        kind = "variational autoencoder" if spec.variational else "autoencoder"
        info(
            f"{req.data}: {rows(prep.x_train):,} training rows, {rows(prep.x_val):,} validation "
            f"rows; {kind}, latent size {latent}; {n_params:,} parameters"
        )
        payload = {
            "family": self.name,
            "task": "anomaly",
            "loss": "reconstruction",
            "spec": job.spec_doc,
            "input_shape": list(preprocessor.input_shape),
            "latent": latent,
            "preprocessor": preprocessor.to_state(),
        }
        callbacks: list[Callback] = []
        if preprocessor.kind == "image":
            grid = ReconstructionGrid(ae, preprocess, preprocessor, prep.x_val, job.run_folder)
            callbacks.append(grid)
        data = (x_tr, prep.y_train, x_va, prep.y_val)
        step = TaskStep(objective, ae_mod.ObjectiveTask(), cfg, data, train_tf, eval_tf)
        context = (prep, ae, error, layout, preprocess)
        return TrainSetup(step, payload, callbacks, load_seconds=load_s, context=context)

    def finish(self, job: TrainJob, setup: TrainSetup, result: FitResult) -> Outcome:
        """The anomaly threshold: a percentile of the held-out scores."""
        prep, ae, error, layout, preprocess = setup.context
        ae.cpu().eval()
        recon = ae_mod.reconstruction_module(prep.preprocessor, layout)
        scorer = ae_mod.ScoringModel(preprocess, ae, error, recon).eval()
        validated = rows(prep.x_val) > 0
        scores = _scores(scorer, prep.x_val if validated else prep.x_train)
        pct = job.cfg.threshold_percentile or DEFAULT_PERCENTILE  # flag > spec `training:` > 99
        threshold = float(np.percentile(scores, pct))
        metrics = {
            "score_mean": float(scores.mean()),
            "score_median": float(np.median(scores)),
            "threshold": threshold,
            "threshold_percentile": pct,
        }
        payload = {
            "weights": {"network": ae.state_dict()},
            "threshold": threshold,
            "threshold_percentile": pct,
            "metrics": metrics,
            **run_record(result, job.req, prep),
        }
        note(
            f"anomaly threshold {threshold:.4g}: the {pct:g}th percentile of the "
            f"{'validation' if validated else 'training'} scores"
        )
        about = {
            "family": self.name,
            "task": "anomaly",
            "latent": ae.latent,
            "variational": bool(job.spec.variational),
        }
        run = run_counts(result, prep, ae)
        curve = {"history": result.history, "metric": None}
        plots = [("learning_curve", "learning_curve.png", curve)]
        return Outcome(payload, about, run, {"metrics": metrics}, plots)

    # -- serving (anomaly.py) -------------------------------------------------------------------
    def predict(self, data: dict, model_path: str, inputs: list[str], opts: PredictOptions) -> None:
        with opts.open_text() as out:
            loaded = ae_mod.load_autoencoder(data, model_path, opts.device)
            anomaly.predict(loaded, inputs, opts, out)

    def evaluate(
        self, data: dict, model_path: str, data_path: str, opts: EvaluateOptions
    ) -> Evaluation:
        loaded = ae_mod.load_autoencoder(data, model_path, opts.device)
        return Evaluation(anomaly.evaluate(loaded, data_path, opts))

    def export_graphs(self, data: dict, model_path: str) -> ExportPlan:
        return anomaly.export_plan(ae_mod.load_autoencoder(data, model_path))


FAMILY = Autoencoder()


def _scores(scorer: ae_mod.ScoringModel, x: Any) -> np.ndarray:
    """Anomaly scores of every row of a tensor or batch source."""
    from dlcli.engine.predictor import run_batches

    model = ae_mod.ScoreOnly(scorer)
    if hasattr(x, "in_order"):
        return np.concatenate([run_batches(model, xb.cpu()) for xb, _ in x.in_order()])
    return run_batches(model, x)


class ReconstructionGrid(Callback):
    """Each epoch: a PNG with up to 16 validation images (top row) over their reconstructions."""

    def __init__(
        self, ae: ae_mod.AutoEncoder, pre: nn.Module, preprocessor: Any, x_val: Any, folder: Any
    ) -> None:
        x = x_val if x_val is not None and not hasattr(x_val, "in_order") else None
        if x is None and hasattr(x_val, "in_order"):
            x = next(iter(x_val.in_order()))[0]
        self.images = x[:16].cpu() if x is not None and len(x) else None
        self.ae, self.pre = ae, pre
        self.recon = preprocessor.reconstruction_module()
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
