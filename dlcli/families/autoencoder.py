"""The autoencoder family: dense for tables, convolutional for images, `variational: true` for a
VAE (modules: model/autoencoder.py). Trains on unlabelled data against its own reconstruction loss
(engine/task_step.py), fits an anomaly threshold on the validation scores, writes a reconstruction
grid per epoch for images, and serves predict, evaluate and export through anomaly.py."""

from __future__ import annotations

import math
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
from dlcli.errors import SpecError
from dlcli.export import ExportPlan
from dlcli.families import anomaly
from dlcli.families.base import EvaluateOptions, Evaluation, Family, PredictOptions
from dlcli.model import anomaly_scores as scores_mod
from dlcli.model import autoencoder as ae_mod
from dlcli.model.builder import BuiltNetwork

DEFAULT_PERCENTILE = 99.0


class Autoencoder(Family):
    name = "autoencoder"
    unsupervised = True
    predict_flags = frozenset({"--embed", "--score"})
    evaluate_flags = frozenset({"--anomaly-label", "--score"})

    def build_networks(
        self, spec: Any, input_shape: tuple[int, ...], outputs: int | None, source: str | None
    ) -> dict[str, BuiltNetwork]:
        """{"encoder": input -> latent (x2 for a VAE), "decoder": latent -> input shape}."""
        return ae_mod.build_autoencoder(spec, input_shape, source)

    # -- training -------------------------------------------------------------------------------
    def check(self, job: TrainJob) -> None:
        """Also: the spec's `training: anomaly_score` names a known score."""
        super().check(job)
        name = job.spec.training.anomaly_score
        if name is not None and name not in scores_mod.SCORES:
            raise SpecError(
                f"{job.spec_source}: training.anomaly_score must be one of "
                f"{', '.join(scores_mod.SCORES)}, got '{name}'"
            )

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
        """Fit the anomaly scores (model/anomaly_scores.py) and a threshold per score: a
        percentile of the held-out scores."""
        prep, ae, error, _layout, preprocess = setup.context
        ae.cpu().eval()
        pct = job.cfg.threshold_percentile or DEFAULT_PERCENTILE  # flag > spec `training:` > 99
        state, values, validated = _fit_scores(
            prep, ae_mod.ScoreTerms(preprocess, ae, error), job.cfg.seed, pct
        )
        # the spec's `training: anomaly_score`, else the benchmark's choice for this data kind
        score = job.spec.training.anomaly_score or scores_mod.default_score(prep.preprocessor.kind)
        threshold = state["thresholds"][score]
        metrics = {
            "score": score,
            "score_mean": float(values[score].mean()),
            "score_median": float(np.median(values[score])),
            "threshold": threshold,
            "threshold_percentile": pct,
            "bank_rows": len(state["bank"]),
        }
        payload = {
            "weights": {"network": ae.state_dict()},
            "score": score,
            "threshold": threshold,
            "threshold_percentile": pct,
            "anomaly_scores": state,
            "metrics": metrics,
            **run_record(result, job.req, prep),
        }
        note(
            f"anomaly score '{score}', threshold {threshold:.4g}: the {pct:g}th percentile of the "
            f"{'validation' if validated else 'training'} scores"
        )
        about = {
            "family": self.name,
            "task": "anomaly",
            "latent": ae.latent,
            "variational": bool(job.spec.variational),
            "score": score,
        }
        run = run_counts(result, prep, ae)
        curve = {"history": result.history, "metric": None}
        plots = [("learning_curve", "learning_curve.png", curve)]
        return Outcome(payload, about, run, {"metrics": metrics}, plots)

    # -- serving (anomaly.py) -------------------------------------------------------------------
    def predict(self, data: dict, model_path: str, inputs: list[str], opts: PredictOptions) -> None:
        score = _checked_score(opts.score, data, model_path)
        with opts.open_text() as out:
            loaded = ae_mod.load_autoencoder(data, model_path, opts.device, score)
            anomaly.predict(loaded, inputs, opts, out)

    def evaluate(
        self, data: dict, model_path: str, data_path: str, opts: EvaluateOptions
    ) -> Evaluation:
        score = _checked_score(opts.score, data, model_path)
        loaded = ae_mod.load_autoencoder(data, model_path, opts.device, score)
        return Evaluation(anomaly.evaluate(loaded, data_path, opts))

    def export_graphs(self, data: dict, model_path: str) -> ExportPlan:
        return anomaly.export_plan(ae_mod.load_autoencoder(data, model_path))


FAMILY = Autoencoder()


def _checked_score(name: str | None, data: dict, model_path: str) -> str:
    """--score NAME, else the score stored in the model file; one line if it cannot be used."""
    score = name if name is not None else ae_mod.stored_score(data)
    scores_mod.check_score(score, data, model_path)
    return score


def _fit_scores(
    prep: Any, parts: ae_mod.ScoreTerms, seed: int, pct: float
) -> tuple[dict, dict[str, np.ndarray], bool]:
    """(the `anomaly_scores` state, each score's values on the calibration rows, whether those
    are validation rows): banks from the training rows, then every score's threshold on the
    validation split, else on the bank's own rows, each left out of its own neighbours."""
    validated = rows(prep.x_val) > 0
    keep = scores_mod.bank_rows(rows(prep.x_train), seed)
    keep_in = scores_mod.input_bank_rows(keep, math.prod(prep.preprocessor.input_shape))
    z_bank = torch.from_numpy(_rows_through(parts, prep.x_train, keep))
    parts.inputs = True
    h_bank = torch.from_numpy(_rows_through(parts, prep.x_train, keep_in))
    parts.inputs = False
    state = scores_mod.fit_banks(z_bank, h_bank)
    parts.terms = scores_mod.Terms(state, skip_self=not validated)
    if validated:
        calib = _rows_through(parts, prep.x_val)
    else:
        calib = _rows_through(parts, prep.x_train, keep)
    return state, scores_mod.calibrate(state, calib, pct), validated


def _rows_through(model: torch.nn.Module, x: Any, keep: torch.Tensor | None = None) -> np.ndarray:
    """`model` on every row of a tensor or batch source (or only the rows `keep`, sorted
    indices), in order."""
    from dlcli.engine.predictor import run_batches

    if not hasattr(x, "in_order"):
        return run_batches(model, x if keep is None else x[keep])
    outs, start = [], 0
    for xb, _ in x.in_order():
        xb = xb.cpu()
        if keep is not None:
            mine = keep[(keep >= start) & (keep < start + len(xb))] - start
            start += len(xb)
            xb = xb[mine]
        if len(xb):
            outs.append(run_batches(model, xb))
    return np.concatenate(outs)


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
