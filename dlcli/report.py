"""Files in a run folder: the one writer of every family's run files (`write_run_files`: the
per-epoch history CSV and the plots a family asks for), and the plots themselves: the learning
curve, the confusion matrix and panels of any history curves (GAN losses).

Each file is written atomically, so an interrupted run never leaves a half-written file.
"""

from __future__ import annotations

import csv
import math
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from dlcli.fileio import atomic_path

if TYPE_CHECKING:
    from matplotlib.figure import Figure

PathLike = str | os.PathLike[str]
DPI = 110


def _figure(width: float, height: float, ncols: int = 1) -> tuple[Figure, Any]:
    """A pyplot-free Figure (no global state, nothing to close) rendered by Agg."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height))
    return fig, fig.subplots(1, ncols, squeeze=False)[0]


def new_figure(width: float, height: float, ncols: int = 1) -> tuple[Figure, Any]:
    """A pyplot-free Figure and its row of axes, for plots drawn outside this module."""
    return _figure(width, height, ncols)


def save_figure(fig: Figure, path: PathLike) -> None:
    """Write `fig` as a PNG, atomically."""
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=DPI, bbox_inches="tight")


def write_history_csv(path: PathLike, history: list[dict]) -> None:
    """One row per epoch; the columns are every key seen, in first-seen order."""
    columns: dict[str, None] = {}
    for row in history:
        columns.update(dict.fromkeys(row))
    with atomic_path(path) as tmp, open(tmp, "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(columns), restval="")
        if columns:
            writer.writeheader()
        writer.writerows(history)


def write_run_files(
    folder: Path, history: list[dict], plots: list[tuple[str, str, dict]], plotter: Any
) -> list[str]:
    """metrics.csv (one row per epoch) and, with a plotter (None: --no-plots), each plot a
    family asks for as (plot name in PLOTS, file name, keyword arguments but `path`)."""
    folder.mkdir(parents=True, exist_ok=True)
    files = [str(folder / "metrics.csv")]
    write_history_csv(files[0], history)
    if plotter is None:
        return files
    jobs = [(name, {"path": str(folder / file), **kwargs}) for name, file, kwargs in plots]
    plotter.draw(jobs)
    return files + [job[1]["path"] for job in jobs]


def _series(history: list[dict], key: str) -> list[float]:
    """Values of `key` per epoch, NaN where missing or None (matplotlib leaves a gap)."""
    out = []
    for row in history:
        value = row.get(key)
        out.append(math.nan if value is None else float(value))
    return out


def _has(history: list[dict], key: str) -> bool:
    return any(row.get(key) is not None for row in history)


def _default_metric(history: list[dict]) -> str | None:
    """The first `val_<name>` key with a value, other than `val_loss`; None if there is none."""
    for key in dict.fromkeys(k for row in history for k in row):
        if key.startswith("val_") and key != "val_loss" and _has(history, key):
            return key[len("val_") :]
    return None


def plot_learning_curve(path: PathLike, history: list[dict], metric: str | None = None) -> None:
    """PNG: train/val loss vs epoch (left) and the validation metric `val_<metric>` (right).

    With `metric` None the first `val_*` key other than `val_loss` is shown, if any.
    """
    with atomic_path(path) as tmp:
        metric = metric or _default_metric(history)
        epochs = [row.get("epoch", i + 1) for i, row in enumerate(history)]
        fig, (ax_loss, ax_metric) = _figure(10, 4, ncols=2)

        for key, label in (("train_loss", "train"), ("val_loss", "validation")):
            if _has(history, key):
                ax_loss.plot(epochs, _series(history, key), marker="o", markersize=3, label=label)
        ax_loss.set(title="Loss", xlabel="epoch", ylabel="loss")

        if metric and _has(history, f"val_{metric}"):
            for split, label in (("train", "train"), ("val", "validation")):
                if _has(history, f"{split}_{metric}"):
                    values = _series(history, f"{split}_{metric}")
                    ax_metric.plot(epochs, values, marker="o", markersize=3, label=label)
            ax_metric.set(title=f"Validation {metric}", xlabel="epoch", ylabel=metric)
        else:
            ax_metric.set(title="Validation metric", xlabel="epoch", xticks=[], yticks=[])
            ax_metric.text(0.5, 0.5, "no validation metric", ha="center", va="center")

        for ax in (ax_loss, ax_metric):
            if ax.get_lines():
                ax.legend()
                ax.grid(alpha=0.3)
                ax.xaxis.get_major_locator().set_params(integer=True, min_n_ticks=1)
        fig.savefig(tmp, format="png", dpi=DPI, bbox_inches="tight")


def plot_confusion_matrix(
    path: PathLike,
    matrix: list[list[int]],
    class_names: list[str],
    title: str = "Confusion matrix",
) -> None:
    """PNG heatmap of counts (rows = true, columns = predicted), coloured by row share."""
    with atomic_path(path) as tmp:
        counts = np.asarray(matrix, dtype=np.int64)
        n = len(class_names)
        if counts.shape != (n, n):
            raise ValueError(f"matrix shape {counts.shape} does not match {n} class names")
        totals = counts.sum(axis=1, keepdims=True)
        share = np.divide(counts, totals, out=np.zeros(counts.shape), where=totals > 0)

        side = min(max(4.0, 0.4 * n + 2.0), 16.0)
        font = max(5.0, min(10.0, 13.0 - n / 5))
        fig, (ax,) = _figure(side + 1.0, side)
        image = ax.imshow(share, cmap="Blues", vmin=0.0, vmax=1.0)
        fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="share of true class")
        for (i, j), count in np.ndenumerate(counts):
            if count == 0 and n > 12:  # blank zeros keep large matrices readable (and fast)
                continue
            colour = "white" if share[i, j] > 0.5 else "black"
            label = ax.text(j, i, str(count), ha="center", va="center", color=colour, fontsize=font)
            label.set_in_layout(False)  # inside the axes: skip it when computing the tight bbox
        ticks = list(range(n))
        ax.set_xticks(ticks, [str(c) for c in class_names], rotation=45, ha="right", fontsize=font)
        ax.set_yticks(ticks, [str(c) for c in class_names], fontsize=font)
        ax.set(title=title, xlabel="predicted", ylabel="true")
        fig.savefig(tmp, format="png", dpi=DPI, bbox_inches="tight")


def plot_curves(path: PathLike, history: list[dict], panels: dict[str, list[str]]) -> None:
    """PNG: one panel per title in `panels`, each plotting its history keys against the epoch
    (e.g. a GAN's {"Loss": ["d_loss", "g_loss"], "Discriminator output": ["d_real", "d_fake"]})."""
    with atomic_path(path) as tmp:
        epochs = [row.get("epoch", i + 1) for i, row in enumerate(history)]
        fig, axes = _figure(5 * len(panels), 4, ncols=len(panels))
        for ax, (title, keys) in zip(axes, panels.items(), strict=True):
            for key in keys:
                if _has(history, key):
                    values = _series(history, key)
                    ax.plot(epochs, values, marker="o", markersize=3, label=key)
            ax.set(title=title, xlabel="epoch")
            if ax.get_lines():
                ax.legend()
                ax.grid(alpha=0.3)
                ax.xaxis.get_major_locator().set_params(integer=True, min_n_ticks=1)
        fig.savefig(tmp, format="png", dpi=DPI, bbox_inches="tight")


# -- drawing beside training ----------------------------------------------------------------------
PLOTS = {
    "learning_curve": plot_learning_curve,
    "confusion_matrix": plot_confusion_matrix,
    "curves": plot_curves,
}


class PlotWorker:
    """Draws the run-folder PNGs in a helper process that imports matplotlib (about 0.6 s) while
    the model trains: small tables train on one thread, so the second core is free. If the helper
    cannot start or fails, the plots are drawn in this process instead."""

    def __init__(self) -> None:
        import subprocess
        import sys

        try:
            self.proc: Any = subprocess.Popen(
                [sys.executable, "-c", "from dlcli.report import _serve; _serve()"],
                stdin=subprocess.PIPE,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
            )
        except OSError:
            self.proc = None

    def draw(self, jobs: list[tuple[str, dict]]) -> None:
        """Draw every (plot name, keyword arguments) job; returns when the files exist."""
        import json

        if self.proc is not None:
            try:
                self.proc.communicate(json.dumps(jobs).encode(), timeout=300)
                if self.proc.returncode == 0:
                    return
            except Exception:  # a broken helper: draw here instead
                self.close()
        for name, kwargs in jobs:
            PLOTS[name](**kwargs)

    def close(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def _serve() -> None:
    """The helper process: import matplotlib now, then draw the jobs read from stdin."""
    import json
    import sys

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.figure  # the slow import, done while the parent trains

    for name, kwargs in json.loads(sys.stdin.read()):
        PLOTS[name](**kwargs)
