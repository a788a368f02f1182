"""What `dl tune` leaves in `<best>.tune/`, each file written atomically: trials.csv (one row per
trial), best_spec.yaml (the winner as an ordinary spec with its `training:` section),
history.png (the optimisation history) and importance.png (Optuna's parameter importances)."""

from __future__ import annotations

import math
import warnings
from pathlib import Path
from typing import Any

from dlcli.fileio import write_text
from dlcli.tune import space

STATES = {"COMPLETE": "complete", "PRUNED": "pruned", "FAIL": "failed", "RUNNING": "running"}


def trial_rows(study: Any, dists: list[space.Dist]) -> list[dict]:
    """One row per trial: number, each parameter, value (and std with folds), state, epochs,
    seconds (fitting), wall_seconds (the whole trial), error."""
    names = [d.name for d in dists]
    rows = []
    for t in study.get_trials(deepcopy=False):
        state = STATES.get(t.state.name, t.state.name.lower())
        if state == "waiting":
            continue
        value = t.value if t.value is not None else _last_report(t)
        row = {"trial": t.number, **{n: t.params.get(n, "") for n in names}}
        row["value"] = "" if value is None else value
        if "std" in t.user_attrs:
            row["std"] = t.user_attrs["std"]
        wall = t.duration.total_seconds() if t.duration is not None else ""
        row.update(
            state=state,
            epochs=t.user_attrs.get("epochs", ""),
            seconds=t.user_attrs.get("seconds", ""),
            wall_seconds=round(wall, 3) if wall != "" else "",
            error=t.user_attrs.get("error", ""),
        )
        rows.append(row)
    return rows


def _last_report(trial: Any) -> float | None:
    values = trial.intermediate_values
    return values[max(values)] if values else None


def write_trials(path: Path, rows: list[dict]) -> None:
    """trials.csv: one row per trial, the columns in first-seen order (atomic)."""
    from dlcli.report import write_history_csv

    write_history_csv(path, rows)


def best_spec(doc: dict, dists: list[space.Dist], params: dict, fixed: dict) -> dict:
    """The winner as a complete spec: the distributions replaced by the best values and the
    command line's fixed training values written into `training:`."""
    values = {d.path: params[d.name] for d in dists if d.name in params}
    out = space.apply(doc, values)
    training = dict(out.get("training") or {})
    training.update({k: v for k, v in fixed.items() if v is not None})
    if training:
        out["training"] = training
    return out


def write_spec(path: Path, doc: dict, header: str) -> None:
    import yaml

    text = yaml.safe_dump(doc, sort_keys=False, default_flow_style=None)
    write_text(path, "".join(f"# {line}\n" for line in header.splitlines()) + text)


def plot_history(path: Path, rows: list[dict], metric: str, maximize: bool) -> None:
    """Each finished trial's value and the best so far, by trial number."""
    from dlcli.report import new_figure, save_figure

    done = [
        (r["trial"], r["value"])
        for r in rows
        if r["state"] == "complete" and isinstance(r["value"], float) and math.isfinite(r["value"])
    ]
    fig, axes = new_figure(6.4, 4.0)
    ax = axes[0]
    if done:
        xs, ys = zip(*done, strict=True)
        best, run = [], None
        for y in ys:
            run = y if run is None else (max(run, y) if maximize else min(run, y))
            best.append(run)
        ax.scatter(xs, ys, s=14, label="trial", color="#4c72b0")
        ax.step(xs, best, where="post", color="#dd8452", label="best so far")
        ax.legend()
    ax.set_xlabel("trial")
    ax.set_ylabel(f"validation {metric}")
    ax.set_title("optimisation history")
    save_figure(fig, path)


def plot_importance(path: Path, study: Any) -> bool:
    """Optuna's parameter importances (PED-ANOVA) as bars; False when there are too few
    complete trials or fewer than two parameters to compare."""
    from optuna.importance import get_param_importances

    from dlcli.report import new_figure, save_figure

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            importances = get_param_importances(study)
    except (RuntimeError, ValueError, ZeroDivisionError):
        return False
    if len(importances) < 1:
        return False
    names = list(importances)[::-1]
    fig, axes = new_figure(6.4, max(2.0, 0.4 * len(names) + 1))
    axes[0].barh(names, [importances[n] for n in names], color="#4c72b0")
    axes[0].set_xlabel("importance")
    axes[0].set_title("parameter importances")
    save_figure(fig, path)
    return True
