"""Training data as the families' training hooks see it: row counts of tensors and batch sources,
preprocessing once or per batch, outputs over held-out data, and the run record (history, kept
epoch, provenance, real example inputs) every model file carries."""

from __future__ import annotations

import datetime as _dt
from typing import Any

import numpy as np
import torch


def rows(x: Any) -> int:
    """Number of examples in a tensor or a batch source (which has `rows`)."""
    if x is None:
        return 0
    return int(x.rows) if hasattr(x, "rows") else len(x)


def inputs_and_transforms(
    preprocessor: Any, preprocess: torch.nn.Module, prep: Any, cfg: Any
) -> tuple:
    """(x_train, x_val, train transform, eval transform): encoded once when nothing varies per
    batch (tables); else the stored inputs (e.g. uint8 images) with augmentation + preprocessing
    run per batch on the training device."""
    augment = preprocessor.augmenter(cfg.augment) if cfg.augment else None  # images only
    streamed = hasattr(prep.x_train, "shuffled")  # a batch source: preprocessed per batch
    if augment is None and preprocessor.encode_once and not streamed:
        with torch.no_grad():  # the same module is part of the saved model
            x_va = preprocess(prep.x_val) if prep.x_val is not None else None
            return preprocess(prep.x_train), x_va, None, None
    train_tf = torch.nn.Sequential(augment, preprocess) if augment is not None else preprocess
    return prep.x_train, prep.x_val, train_tf, preprocess


def held_out_metrics(model: torch.nn.Module, x: Any, y: Any, task: Any) -> dict:
    """The task's metrics of `model` over all of `x`: a tensor (outputs computed at once), or a
    batch source read in order and scored chunk by chunk, so memory stays bounded whatever its
    number of rows (`task.chunked_metrics`: exact up to a few hundred thousand rows)."""
    from dlcli.engine.predictor import run_batches

    if not hasattr(x, "in_order"):
        return task.metrics(
            y.numpy(), run_batches(model, x, batch=max(64, 2**22 // max(1, x[0].numel())))
        )
    scored = task.chunked_metrics()
    for xb, yb in x.in_order():
        scored.add(yb.cpu().numpy(), run_batches(model, xb.cpu()))
    return scored.result()


def held_out_loss(
    network: torch.nn.Module, task: Any, x: torch.Tensor, y: torch.Tensor, weights: Any = None
) -> float:
    """The task's loss (no label smoothing; `weights`: the class weights training used) of
    `network` in evaluation mode on network inputs `x`: what an epoch's `val_loss` measures, for
    the model as it stands after training (e.g. with an ensemble's linear path blended in)."""
    from dlcli.engine.predictor import run_batches

    with torch.no_grad():
        return float(task.make_loss(weights)(torch.from_numpy(run_batches(network, x)), y))


def test_scores(model: Any, task: Any, prep: Any, transform: Any, weights: Any = None) -> dict:
    """{"test_loss", "test_metrics"} of `model` (an InferenceModel: preprocessing, network, task
    output) on `prep`'s test rows (dl tune's held-out fold), {} without any in memory, from one
    pass of the network. `transform` maps stored inputs to the network's; `weights`: training's
    class weights."""
    from dlcli.engine.predictor import run_batches

    x, y = prep.x_test, prep.y_test
    if not torch.is_tensor(x) or not len(x):
        return {}
    with torch.no_grad():
        raw = torch.from_numpy(run_batches(model.network, transform(x)))
        scores = model.postprocess(raw).numpy()
        loss = float(task.make_loss(weights)(raw, y))
    return {"test_loss": loss, "test_metrics": plain(task.metrics(y.numpy(), scores))}


def examples(prep: Any) -> torch.Tensor:
    """Up to 64 real raw inputs (validation first), kept so `dl export` can verify on real data."""
    for x in (prep.x_val, prep.x_train):
        if x is None:
            continue
        if hasattr(x, "in_order"):
            return next(iter(x.in_order()))[0][:64].cpu().clone()
        if len(x):
            return x[:64].clone()
    return torch.empty(0)


def run_record(result: Any, req: Any, prep: Any) -> dict:
    """The model-file keys a family with a validation split records about its run: history, the
    kept epoch, provenance, and a few real raw inputs so `dl export` can verify the graph."""
    return {
        "history": result.history,
        "best_epoch": result.best_epoch,
        "stopped": result.stopped,
        "data": {"source": str(req.data), "rows": prep.info.get("rows")},
        "examples": examples(prep),
        "created": now(),
    }


def run_counts(result: Any, prep: Any, network: torch.nn.Module) -> dict:
    """The --json summary's keys about a network's run: kept epoch, why it stopped, rows, size."""
    return {
        "best_epoch": result.best_epoch,
        "stopped": result.stopped,
        "train_rows": rows(prep.x_train),
        "val_rows": rows(prep.x_val),
        "params": sum(p.numel() for p in network.parameters()),
    }


def now() -> str:
    """The `created` time stamp of a model file (UTC, seconds)."""
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def plain(obj: Any) -> Any:
    """numpy scalars and arrays -> Python values (model files and JSON hold plain data only)."""
    if isinstance(obj, dict):
        return {str(k): plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [plain(v) for v in obj]
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    return obj
