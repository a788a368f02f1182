"""The supervised family: one `layers:` network with a task head (classification, regression) on
any data kind, trained against the task's loss (engine/task_step.py), on several processes too;
predict (probabilities, top-k, --steps forecasts), evaluate (the task's metrics, --errors,
--report) and one ONNX graph: raw inputs -> preprocessing -> network -> task output."""

from __future__ import annotations

import json
import time
from typing import Any

import torch

from dlcli import __version__
from dlcli.console import info
from dlcli.data.sources import preprocessor_from_state
from dlcli.engine import linear_path
from dlcli.engine.fit_data import (
    held_out_loss,
    held_out_metrics,
    inputs_and_transforms,
    plain,
    rows,
    run_counts,
    run_record,
    test_scores,
)
from dlcli.engine.task_step import TaskStep
from dlcli.engine.train_job import Outcome, TrainJob, TrainSetup
from dlcli.engine.trainer import FitResult
from dlcli.errors import UsageError
from dlcli.export import ExportPlan, Graph
from dlcli.families.base import EvaluateOptions, Evaluation, Family, PredictOptions
from dlcli.model.assemble import InferenceModel, load_model, network_args
from dlcli.model.builder import BuiltNetwork, build_network
from dlcli.model.tasks import make_task


class Supervised(Family):
    name = "supervised"
    distributed = True
    takes_weights = True  # --weights: pretrained backbones (dlcli/model/weights.py)
    predict_flags = frozenset({"--proba", "--top-k", "--steps"})
    evaluate_flags = frozenset({"--errors"})
    word_vectors = True
    scores_test_rows = True

    def check(self, job: TrainJob) -> None:
        super().check(job)
        if job.req.embeddings:
            _check_embeddings(job)

    def build_networks(
        self, spec: Any, input_shape: tuple[int, ...], outputs: int | None, source: str | None
    ) -> dict[str, BuiltNetwork]:
        return {"network": build_network(spec, input_shape, outputs, source)}

    # -- training -------------------------------------------------------------------------------
    def prepare(self, job: TrainJob) -> TrainSetup:
        req, cfg = job.req, job.cfg
        preprocessor = preprocessor_from_state(job.resume["preprocessor"]) if job.resume else None
        torch.manual_seed(cfg.seed)
        t_load = time.perf_counter()
        prep = job.source.prepare(req.data, req.data_opts, preprocessor)
        preprocessor = prep.preprocessor
        task = make_task(preprocessor.target, cfg.loss)
        cfg.loss = task.loss
        cfg = job.cfg = cfg.resolved(rows(prep.x_train))
        load_s = time.perf_counter() - t_load
        torch.manual_seed(cfg.seed)
        built = build_network(
            job.spec,
            preprocessor.input_shape,
            task.n_outputs,
            job.spec_source,
            **network_args(preprocessor),
        )
        frozen, plan, transfer_state = _transfer(built.module, job, prep)
        preprocess = preprocessor.preprocess_module()
        x_tr, x_va, train_tf, eval_tf = inputs_and_transforms(preprocessor, preprocess, prep, cfg)
        _describe(req.data, prep, task, preprocessor, built.module)
        payload = {
            "task": task.name,
            "loss": task.loss,
            "spec": job.spec_doc,
            "input_shape": list(preprocessor.input_shape),
            "outputs": task.n_outputs,
            "preprocessor": preprocessor.to_state(),
            **transfer_state,  # --freeze and the schedule for --resume; word vectors' coverage
        }
        data = (x_tr, prep.y_train, x_va, prep.y_val)
        step = TaskStep(built.module, task, cfg, data, train_tf, eval_tf, frozen, plan)
        # a refit starts where this run started: the seeded weights plus what --init-from,
        # --weights or --embeddings loaded; loaded tensors are kept in the checkpoint for --resume
        # (the seeded init is rebuilt), never in the model file (finish drops them)
        start = (job.resume or {}).get("refit_start")
        if cfg.refit and job.resume is None:
            start = {k: v.detach().clone() for k, v in built.module.state_dict().items()}
            if job.loaded:
                payload["refit_start"] = start
        selector = (transfer_state.get("transfer") or {}).get("freeze")
        context = (
            prep, task, preprocess, built.module,
            (x_tr, x_va, train_tf, eval_tf), (start, selector, plan),
        )  # fmt: skip
        return TrainSetup(step, payload, load_seconds=load_s, context=context)

    def finish(self, job: TrainJob, setup: TrainSetup, result: FitResult) -> Outcome:
        prep, task, preprocess, network, (x_tr, x_va, _, eval_tf), _ = setup.context
        job.payload.pop("refit_start", None)  # the checkpoint's copy of the starting weights
        network.cpu().eval()
        data, balanced = (x_tr, prep.y_train, x_va, prep.y_val), job.cfg.class_weights == "balanced"
        # an ensemble's exact linear path (engine/linear_path.py), fitted on the training rows
        linear = linear_path.fit_run(network, task, data, eval_tf, balanced)
        model = InferenceModel(preprocess, network, task.postprocess()).eval()
        metrics = held_out_metrics(model, prep.x_val, prep.y_val, task) if rows(prep.x_val) else {}
        weights = task.balanced_weights(prep.y_train) if balanced else None
        # the validated model's loss when the linear path changed it after the last epoch
        final_loss = (
            held_out_loss(network, task, eval_tf(x_va) if eval_tf else x_va, prep.y_val, weights)
            if linear and rows(prep.x_val)
            else None
        )
        refit_epochs = _refit(job, setup, result)
        if refit_epochs:  # the saved weights are the refit's; the metrics the validated run's
            network = setup.context[3].cpu().eval()
        if linear is not None:  # convex: fitted again on every row, whether or not --refit
            linear_path.fit_all_rows(network, task, data, linear, eval_tf, balanced)
        payload = {
            "weights": {"network": network.state_dict()},
            "metrics": plain(metrics),
            **run_record(result, job.req, prep),
        }
        if refit_epochs:
            payload["refit_epochs"] = refit_epochs
        about = {"task": task.name, "loss": task.loss}
        run = run_counts(result, prep, network)
        if refit_epochs:
            run["refit_epochs"] = refit_epochs
        scalars = {k: v for k, v in plain(metrics).items() if not isinstance(v, (dict, list))}
        primary = "accuracy" if task.name == "classification" else "rmse"
        plots = [
            ("learning_curve", "learning_curve.png", {"history": result.history, "metric": primary})
        ]
        if task.name == "classification" and metrics.get("confusion_matrix"):
            classes = list(prep.preprocessor.target.classes)
            matrix = {"matrix": metrics["confusion_matrix"], "class_names": classes}
            plots.append(("confusion_matrix", "confusion_matrix.png", matrix))
        results = {
            "metrics": scalars,
            **({"val_loss": final_loss} if final_loss is not None else {}),
        }
        if prep.x_test is not None:  # dl tune's held-out fold, scored on the model as saved
            final = InferenceModel(preprocess, network, task.postprocess()).eval()
            results.update(test_scores(final, task, prep, eval_tf or preprocess, weights))
        return Outcome(payload, about, run, results, plots)

    # -- serving --------------------------------------------------------------------------------
    def predict(self, data: dict, model_path: str, inputs: list[str], opts: PredictOptions) -> None:
        """Task outputs per input row, streamed (or with --steps: a series rolled forward)."""
        from dlcli.engine import predictor

        if not inputs:
            raise UsageError(
                "give the inputs to predict: CSV files, images, folders, or - for stdin"
            )
        loaded = load_model(model_path, opts.device, data)
        if opts.steps is not None:
            if loaded.preprocessor.kind != "series":
                raise UsageError(
                    f"--steps applies to series models (trained with --window), not {loaded.preprocessor.kind} models"
                )
            if len(inputs) != 1:
                raise UsageError("--steps forecasts from one history file; give one input")
        with opts.open_text() as fh:
            writer = predictor.WRITERS[opts.fmt](fh)
            if opts.steps is not None:
                from dlcli.engine.forecast import forecast

                writer.write(forecast(loaded, inputs[0], opts.steps))
            else:
                chunks = predictor.predict_stream(loaded, inputs, opts.keep_columns, opts.precision)
                for passthrough, outputs in chunks:
                    frame = predictor.output_frame(
                        loaded, passthrough, outputs, opts.proba, opts.top_k
                    )
                    writer.write(frame)
            writer.close()
            fh.flush()

    def evaluate(
        self, data: dict, model_path: str, data_path: str, opts: EvaluateOptions
    ) -> Evaluation:
        """The task's metrics (--errors: misclassified images copied; --report: a folder)."""
        from dlcli.engine.evaluator import evaluate_file, write_report

        loaded = load_model(model_path, opts.device, data)
        metrics = evaluate_file(loaded, data_path, opts.errors, opts.precision)
        classifier = loaded.task.name == "classification"
        classes = list(loaded.preprocessor.target.classes) if classifier else None
        if opts.report:
            write_report(opts.report, metrics, classes)
        return Evaluation(metrics, classes)

    def export_graphs(self, data: dict, model_path: str) -> ExportPlan:
        """raw inputs (the data kind's documented form) -> probabilities or prediction."""
        from dlcli.export.inputs import adapter_for

        loaded = load_model(model_path, data=data)
        adapter = adapter_for(loaded.preprocessor)
        output_name = "probabilities" if loaded.task.name == "classification" else "prediction"
        rows_ = adapter.examples(loaded)  # real inputs in the documented form, plus edge cases
        batches = adapter.verify_batches(rows_)
        graph = Graph(
            loaded.inference,
            rows_,
            adapter.input_name,
            [output_name],
            batches,
            _metadata(loaded, adapter),
            dims=adapter.dynamic_axes,
        )
        side = lambda target: adapter.side_files(loaded.preprocessor, target)  # noqa: E731
        return ExportPlan([graph], len(rows_), side)


FAMILY = Supervised()


def _describe(data: str, prep: Any, task: Any, preprocessor: Any, network: torch.nn.Module) -> None:
    """The line before training: rows, task, classes, parameters (trainable and frozen)."""
    n_params = sum(p.numel() for p in network.parameters())
    n_train = sum(p.numel() for p in network.parameters() if p.requires_grad)
    classes = (
        f" ({len(preprocessor.target.classes)} classes)" if task.name == "classification" else ""
    )
    frozen = (
        f" ({n_train:,} trainable, {n_params - n_train:,} frozen)" if n_train != n_params else ""
    )
    info(
        f"{data}: {rows(prep.x_train):,} training rows, {rows(prep.x_val):,} validation rows; "
        f"task {task.name}{classes}; {n_params:,} parameters{frozen}"
    )


def _refit(job: TrainJob, setup: TrainSetup, result: FitResult) -> int:
    """`training.refit`: a fresh network with the validated run's starting weights (the seeded
    init plus what --init-from, --weights or --embeddings loaded), its --freeze and fine-tuning
    schedule, trained on the training and validation rows for the best epoch count
    (engine/refit.py); it replaces the network in `setup.context`. Returns the epochs it trained
    (0: no refit)."""
    from dlcli.engine import distributed
    from dlcli.engine.refit import all_rows, refit
    from dlcli.model import transfer

    cfg, context = job.cfg, setup.context
    prep, task, preprocess, _, (x_tr, x_va, train_tf, eval_tf), (start, selector, plan) = context
    if not cfg.refit:
        return 0
    if start is None and job.resume is not None and job.resume.get("transfer"):
        info(  # a checkpoint of an older dl that did not keep the starting weights
            "refit skipped (the checkpoint lacks the loaded starting weights): the validated "
            "run's weights are saved"
        )
        return 0
    joined = all_rows(x_tr, prep.y_train, x_va, prep.y_val)
    if joined is None or distributed.world_size() > 1:
        why = "under torchrun" if joined is not None else "these inputs cannot be joined"
        info(f"refit skipped ({why}): the validated run's weights are saved")
        return 0
    epochs = max(1, result.best_epoch)
    torch.manual_seed(cfg.seed)
    preprocessor = prep.preprocessor
    shape, outputs = preprocessor.input_shape, task.n_outputs
    built = build_network(job.spec, shape, outputs, job.spec_source, **network_args(preprocessor))
    if start is not None:
        built.module.load_state_dict(start)
    frozen = transfer.freeze(built.module, selector) if selector else []
    info(f"refit: {epochs} epochs on all {rows(joined[1]):,} rows (training + validation)")
    refit(built.module, task, cfg, joined, epochs, (train_tf, eval_tf), frozen, plan)
    setup.context = (prep, task, preprocess, built.module, *context[4:])
    return epochs


def _transfer(
    network: torch.nn.Module, job: TrainJob, prep: Any
) -> tuple[list[torch.nn.Module], Any, dict]:
    """--init-from (`job.base`: its loaded model file), --weights (a pretrained backbone) or
    --embeddings (word vectors), --freeze and the fine-tuning schedule; sets `job.loaded` (the
    tensors loaded) and returns (the layers frozen for the whole run, the FineTunePlan or None,
    the model-file keys: `transfer`, which lets --resume set both up again, and `word_vectors`)."""
    from dlcli.model import embeddings, finetune, transfer

    req, preprocessor = job.req, prep.preprocessor
    if job.resume is not None:  # the weights come from the checkpoint; the choices from its keys
        state = job.resume.get("transfer") or {}
        selector, plan_state = state.get("freeze"), state.get("fine_tune")
        frozen = transfer.freeze(network, selector) if selector else []
        plan = finetune.FineTunePlan.from_state(plan_state) if plan_state else None
        record = {"transfer": state} if state else {}
        if job.resume.get("word_vectors"):
            record["word_vectors"] = job.resume["word_vectors"]
        return frozen, plan, record
    loaded, record = None, {}
    if job.base is not None:
        source = job.base["weights"]["network"]
        target = preprocessor.target
        new = getattr(target, "classes", None)
        if _classes(job.base.get("preprocessor") or {}) != (None if new is None else list(new)):
            source = {k: v for k, v in source.items() if not k.startswith("head.")}
        loaded = transfer.init_from(network, source, req.init_from)
    elif req.weights:
        from dlcli.model.weights import load_weights

        loaded = load_weights(network, req.weights)
    if req.embeddings:
        ids = getattr(prep.x_train, "ids", prep.x_train)  # (N, T) training token ids
        names, record["word_vectors"] = embeddings.load_vectors(
            network, job.spec_doc, req.embeddings, preprocessor.vocab, ids, job.cfg.seed
        )
        loaded = (loaded or set()) | names
    elif req.freeze and loaded is None:
        raise UsageError(
            "--freeze needs --init-from MODEL, --weights or --embeddings FILE "
            "(freezing fresh random layers does not help)"
        )
    job.loaded = set(loaded or ())
    if loaded is None:
        return [], None, record
    if req.freeze:
        if req.overrides.get("fine_tune_epochs"):
            raise UsageError(
                f"--fine-tune-epochs with --freeze {req.freeze}: frozen layers stay frozen for the "
                "whole run, so there is no phase to unfreeze them",
                "drop --freeze to fine-tune everything after the first epochs",
            )
        only_vectors = req.embeddings and job.base is None and not req.weights
        source = f"--embeddings {req.embeddings}" if only_vectors else "the source model"
        frozen, plan = transfer.freeze(network, req.freeze, loaded, source), None
    else:
        # published backbones get the schedule by default (fastai's fine_tune); --init-from and
        # --embeddings on request only (measured in docs/transfer.md)
        frozen = []
        plan = finetune.plan(network, loaded, job.cfg, by_default=bool(req.weights))
        if plan is not None:
            info(plan.describe())
        elif job.cfg.fine_tune_epochs:
            _, fresh = finetune.loaded_layers(network, loaded)
            why = "no top-level layer was loaded whole" if fresh else "every layer was loaded"
            info(f"--fine-tune-epochs: no schedule ({why}); every layer trains from the start")
    state = {"freeze": req.freeze, "fine_tune": plan.to_state() if plan else None}
    return frozen, plan, {"transfer": state, **record}


def _classes(state: dict) -> list | None:
    """The class names of a preprocessor state (None: no classification target). A head
    trained on other classes is not loaded, even where its shape fits (digits 0-4 -> 5-9)."""
    target = state.get("target") or {}
    return list(target["classes"]) if target.get("classes") is not None else None


def _check_embeddings(job: TrainJob) -> None:
    """--embeddings: text data, not with --init-from; the spec's embedding layer takes the
    vectors' width (before any data is read; on --resume the checkpoint's spec has it)."""
    from dlcli.data.word_vectors import KINDS
    from dlcli.model.embeddings import fit_spec

    req = job.req
    if job.source.kind not in KINDS:
        raise UsageError(f"--embeddings applies to text data; {req.data} is {job.source.kind} data")
    if req.init_from:
        raise UsageError(
            "--embeddings and --init-from both set the embedding layer's weights; give one"
        )
    if job.resume is not None:
        info(f"--embeddings {req.embeddings}: not read again; the checkpoint holds the vectors")
    else:
        job.spec, job.spec_doc = fit_spec(
            job.spec_doc, req.embeddings, job.spec_source, fixed=bool(req.spec)
        )


def _metadata(loaded: Any, adapter: Any) -> dict[str, str]:
    """The `dl.*` metadata_props: the common keys plus what the data kind's adapter adds."""
    from dlcli.export.onnx import FORMAT_VERSION

    preprocessor, task = loaded.preprocessor, loaded.task
    meta = {
        "dl.format_version": str(FORMAT_VERSION),
        "dl.task": task.name,
        "dl.data_kind": preprocessor.kind,
        "dl.target": preprocessor.target.name if preprocessor.target else "",
        "dl.version": __version__,
        **adapter.metadata(preprocessor),
    }
    if task.name == "classification":
        meta["dl.classes"] = json.dumps(list(preprocessor.target.classes))
    return meta
