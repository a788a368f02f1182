"""The model `dl tune` hands back (-o): the best trial's own model file when this process trained
it on the usual split; after cross-validation, the best settings trained again on every row (none
held out) for the folds' mean kept epoch, since each fold's model saw only part of the data."""

from __future__ import annotations

import os
import statistics
from dataclasses import replace
from typing import Any

from dlcli.console import console, set_quiet


def final_epochs(best: Any) -> int | None:
    """The length of the all-rows fit: the mean of the best trial's kept epochs over its folds
    (None when the trial did not record them: no folds, or a study from an older version)."""
    kept = best.user_attrs.get("best_epochs")
    if not kept:
        return None
    return max(1, round(statistics.fmean(kept)))


class AllRows:
    """A data source whose fresh `prepare` hands back the usual split's training and validation
    rows together as the training rows, with no validation rows (the train job then keeps the
    last epoch). The preprocessing stays the one fitted on the usual split's training rows."""

    def __init__(self, source: Any) -> None:
        self.source = source

    def __getattr__(self, name: str) -> Any:
        return getattr(self.source, name)

    def prepare(self, path: str, opts: Any, preprocessor: Any = None) -> Any:
        prep = self.source.prepare(path, opts, preprocessor)
        return merged(prep) if preprocessor is None else prep


def merged(prep: Any) -> Any:
    """`prep` with its validation rows appended to the training rows and none left for
    validation; `prep` itself when its parts are not tensors of one row shape (batch sources
    of streamed tables)."""
    import torch

    parts = (prep.x_train, prep.y_train, prep.x_val, prep.y_val)
    if not all(isinstance(p, torch.Tensor) for p in parts):
        return prep
    if prep.x_train.shape[1:] != prep.x_val.shape[1:] or prep.x_train.dtype != prep.x_val.dtype:
        return prep
    x = torch.cat([prep.x_train, prep.x_val])
    y = torch.cat([prep.y_train, prep.y_val])
    return replace(prep, x_train=x, y_train=y, x_val=x[:0], y_val=y[:0])


def mergeable(source: Any, data: str, opts: Any) -> bool:
    """Whether the usual split of `data` can be trained on as one set (see `merged`)."""
    prep = source.prepare(data, opts)
    return merged(prep) is not prep


def best_model(
    req: Any, best: Any, doc: dict, keeper: Any, families: Any, interrupted: bool, loud: bool
) -> tuple[str | None, dict]:
    """(-o, how it was trained): the best trial's own file when this process trained it and
    there were no folds; else the best settings trained again: on every row for the folds' mean
    kept epoch after cross-validation (`fit` says so), on the usual split otherwise (a trial run
    by another machine)."""
    out, train = req.train.output, req.train
    if keeper.number == best.number and keeper.path.exists():
        os.replace(keeper.path, out)
        return out, {"fit": "best trial"}
    if interrupted:
        return None, {}
    epochs = final_epochs(best) if req.folds else None
    source = train.source
    if epochs is not None and source is not None and mergeable(source, train.data, train.data_opts):
        fit = {"fit": "all rows", "epochs": epochs}
        final = replace(
            train,
            spec_doc=doc,
            plots=req.plots,
            source=AllRows(source),
            overrides={**train.overrides, "epochs": epochs},
        )
        why = f"cross-validated) on every row for {epochs} epochs (the folds' mean kept epoch"
    else:
        fit = {"fit": "usual split"}
        final = replace(train, spec_doc=doc, plots=req.plots, source=None)
        why = "cross-validated" if req.folds else "trained elsewhere"
    if loud:
        console().print(f"training the best settings (trial {best.number}, {why}) into {out}")
    set_quiet(not loud)
    families.run_training(final)
    return out, fit
