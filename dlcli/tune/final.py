"""The model `dl tune` hands back (-o): the best trial's own model file when this process trained
it on the usual split; otherwise (after cross-validation, whose fold models each saw part of the
rows, or for a trial another machine ran) the chosen settings trained again exactly as
`dl train DATA --spec best.tune/best_spec.yaml` trains them: the usual split, early stopping on
its validation rows, and the linear path fitted again on every row. Cross-validation estimated
how well that procedure does with those settings, so the procedure itself is what is handed back
(an earlier version trained on every row for the folds' mean kept epoch: a procedure no fold had
scored, and it did worse on the held-out rows of docs/tune.md's table)."""

from __future__ import annotations

import os
from dataclasses import replace
from typing import Any

from dlcli.console import console, set_quiet


def best_model(
    req: Any, best: Any, doc: dict, keeper: Any, families: Any, interrupted: bool, loud: bool
) -> tuple[str | None, dict]:
    """(-o, how it was trained): the best trial's own file when this process trained it and
    there were no folds; else the chosen settings trained again on the usual split, with the
    data prepared once for the search (the caching source's usual split)."""
    out, train = req.train.output, req.train
    if keeper.number == best.number and keeper.path.exists():
        os.replace(keeper.path, out)
        return out, {"fit": "best trial"}
    if interrupted:
        return None, {}
    final = replace(train, spec_doc=doc, plots=req.plots)
    why = "cross-validated" if req.folds else "trained elsewhere"
    if loud:
        console().print(f"training the chosen settings (trial {best.number}, {why}) into {out}")
    set_quiet(not loud)
    families.run_training(final)
    return out, {"fit": "usual split"}
