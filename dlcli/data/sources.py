"""Data source registry: a path + options -> `Prepared` (encoded train/val tensors and the preprocessor).

Every source returns the same contract, so the engine never knows where data came from. A new data
kind is one `@register_source` class plus its preprocessor in `PREPROCESSORS`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from dlcli.console import note
from dlcli.errors import InputError, UsageError


@dataclass
class DataOptions:
    """What the user said about the data (command-line flags)."""

    target: str | None = None
    task: str | None = None
    val: str | None = None
    val_split: float = 0.2
    seed: int = 42
    extra: dict = field(default_factory=dict)  # per data kind, e.g. {"image": ImageOptions(...)}
    stream: bool | None = None  # tables: True --stream, False --no-stream, None by file size
    unsupervised: bool = False  # autoencoders, GANs: no target; labels, if any, are not needed


@dataclass
class Prepared:
    """Encoded tensors plus the fitted preprocessor: what every data source hands the engine."""

    preprocessor: Any
    x_train: torch.Tensor  # raw inputs: the preprocessor's preprocess module runs inside the model
    y_train: torch.Tensor
    x_val: torch.Tensor | None
    y_val: torch.Tensor | None
    info: dict = field(default_factory=dict)


SOURCES: dict[str, Any] = {}
PREPROCESSORS: dict[str, Any] = {}


def register_source(name: str):
    def deco(cls):
        SOURCES[name] = cls
        return cls

    return deco


# data kinds beyond tables live in their own modules and register themselves when imported
KIND_MODULES = ("dlcli.data.images", "dlcli.data.text", "dlcli.data.series", "dlcli.data.stream")


def _load_kinds() -> None:
    import importlib

    from dlcli.data.tabular import TabularPreprocessor

    PREPROCESSORS.setdefault("tabular", TabularPreprocessor)
    for module in KIND_MODULES:
        try:
            importlib.import_module(module)
        except ModuleNotFoundError as exc:  # a data kind still being written is simply absent
            if exc.name != module:
                raise


def preprocessor_from_state(state: dict) -> Any:
    """Rebuild an preprocessor saved in a model file."""
    _load_kinds()
    kind = state.get("kind")
    if kind not in PREPROCESSORS:
        raise InputError(f"model file has preprocessing of unknown kind '{kind}'")
    return PREPROCESSORS[kind].from_state(state)


def stratified_split(
    y: np.ndarray | None, n: int, fraction: float, seed: int, stratify: bool
) -> tuple[np.ndarray, np.ndarray]:
    """Seeded (train_idx, val_idx); per-class proportions kept when `stratify`."""
    rng = np.random.default_rng(seed)
    if not stratify or y is None:
        perm = rng.permutation(n)
        k = max(1, round(n * fraction))
        return np.sort(perm[k:]), np.sort(perm[:k])
    val = []
    small_ints = y.dtype.kind in "iu" and len(y) and y.min() >= 0
    classes = np.flatnonzero(np.bincount(y)) if small_ints else np.unique(y)
    for cls in classes:  # the sorted distinct labels (bincount: no sort of every row)
        idx = np.flatnonzero(y == cls)
        rng.shuffle(idx)
        k = round(len(idx) * fraction)
        if len(idx) > 1:
            k = min(max(k, 1), len(idx) - 1)
        else:
            k = 0
        val.append(idx[:k])
    val_idx = np.sort(np.concatenate(val))
    mask = np.ones(n, dtype=bool)
    mask[val_idx] = False
    return np.flatnonzero(mask), val_idx


@register_source("tabular")
class TabularSource:
    """A CSV table: numeric and categorical columns and a label column."""

    priority = 0  # sources are asked highest priority first; tables are the fallback for files
    kind = "tabular"  # the preprocessor kind it produces (checked against a spec's `data:`)
    default_arch = "mlp"  # the preset `dl train` uses without --arch or --spec

    @staticmethod
    def claims(path: str, opts: DataOptions) -> bool:
        return Path(path).is_file() or not Path(path).exists()

    @staticmethod
    def prepare(path: str, opts: DataOptions, preprocessor: Any = None) -> Prepared:
        """Read, split and encode. A given `preprocessor` (resume, transfer) is reused instead of fitted."""

        from dlcli.data.csvio import read_arrow, read_table
        from dlcli.data.tabular import TabularPreprocessor
        from dlcli.data.target import Target

        table = read_arrow(path)  # kept: numeric columns go from arrow to the raw matrix
        frame = table.to_pandas()
        if opts.unsupervised:
            return _prepare_unsupervised(frame, path, opts, preprocessor)
        tname = opts.target or str(frame.columns[-1])
        if tname not in frame.columns:
            raise InputError(
                f"{path}: no column '{tname}' (columns: {', '.join(map(str, frame.columns))})",
                "pass --target COLUMN",
            )
        if len(frame.columns) < 2:
            raise InputError(
                f"{path}: needs at least one feature column besides the target '{tname}'"
            )
        frame = _drop_missing_targets(frame, tname, path)
        if len(frame) != table.num_rows:  # the same rows in both
            table = table.take(frame.index.to_numpy())
        val_frame = None
        if opts.val:
            val_frame = _drop_missing_targets(read_table(opts.val), tname, opts.val)
            if tname not in val_frame.columns:
                raise InputError(f"{opts.val}: no column '{tname}' (the target)")
        target = (
            preprocessor.target
            if preprocessor is not None
            else Target.fit(frame[tname], opts.task, path)
        )
        y_all = target.encode(frame[tname], path)
        if val_frame is None:  # split indices; the frame is encoded once and its rows sliced
            if not 0.0 < opts.val_split < 1.0:
                raise UsageError(f"--val-split must be between 0 and 1, got {opts.val_split}")
            stratify = target.task == "classification"
            tr, va = stratified_split(y_all, len(frame), opts.val_split, opts.seed, stratify)
            if len(tr) < 2 or len(va) < 1:
                raise InputError(
                    f"{path}: only {len(frame)} rows; too few to split for validation",
                    "pass --val FILE",
                )
            if preprocessor is None:
                preprocessor, *parts = TabularPreprocessor.fit_split(
                    frame, target, path, (tr, va), table
                )
            else:
                raw = preprocessor.raw_matrix(frame, path)
                parts = [np.take(raw, idx, axis=0) for idx in (tr, va)]
            x_tr, x_va = (torch.from_numpy(p) for p in parts)  # np.take: 4x torch's indexing
            y_tr, y_va = (torch.from_numpy(np.take(y_all, idx)) for idx in (tr, va))
        else:
            if preprocessor is None:
                preprocessor, raw = TabularPreprocessor.fit_encode(frame, target, path, table=table)
            else:
                raw = preprocessor.raw_matrix(frame, path)
            x_tr, y_tr = torch.from_numpy(raw), torch.from_numpy(y_all)
            x_va = torch.from_numpy(preprocessor.raw_matrix(val_frame, opts.val))
            y_va = torch.from_numpy(target.encode(val_frame[tname], opts.val))
        info = {"rows": len(x_tr) + len(x_va)}
        return Prepared(preprocessor, x_tr, y_tr, x_va, y_va, info)


def _prepare_unsupervised(frame: Any, path: str, opts: DataOptions, preprocessor: Any) -> Prepared:
    """Every column is a feature (autoencoders); `--target COL` names a label column to leave out.
    Targets are zeros (nothing to predict)."""
    from dlcli.data.csvio import read_table
    from dlcli.data.tabular import TabularPreprocessor

    def drop_label(df: Any, source: str) -> Any:
        if opts.target is None:
            return df
        if opts.target not in df.columns:
            raise InputError(
                f"{source}: no column '{opts.target}' (columns: {', '.join(map(str, df.columns))})"
            )
        return df.drop(columns=[opts.target])

    frame = drop_label(frame, path)
    if opts.val:
        val_frame = drop_label(read_table(opts.val), opts.val)
        preprocessor = preprocessor or TabularPreprocessor.fit(frame, None, path)
        x_tr = torch.from_numpy(preprocessor.raw_matrix(frame, path))
        x_va = torch.from_numpy(preprocessor.raw_matrix(val_frame, opts.val))
    else:
        if not 0.0 < opts.val_split < 1.0:
            raise UsageError(f"--val-split must be between 0 and 1, got {opts.val_split}")
        tr, va = stratified_split(None, len(frame), opts.val_split, opts.seed, False)
        if len(tr) < 2 or len(va) < 1:
            raise InputError(f"{path}: only {len(frame)} rows; too few to split for validation")
        if preprocessor is None:
            preprocessor, raw = TabularPreprocessor.fit_encode(frame, None, path, rows=tr)
        else:
            raw = preprocessor.raw_matrix(frame, path)
        x_tr, x_va = (torch.from_numpy(np.take(raw, idx, axis=0)) for idx in (tr, va))
    zeros = lambda n: torch.zeros(n, dtype=torch.float32)  # noqa: E731
    info = {"rows": len(x_tr) + len(x_va)}
    return Prepared(preprocessor, x_tr, zeros(len(x_tr)), x_va, zeros(len(x_va)), info)


def _drop_missing_targets(frame: Any, tname: str, source: str) -> Any:
    if tname not in frame.columns:
        return frame
    missing = frame[tname].isna()
    if missing.all():
        raise InputError(f"{source}: target column '{tname}' has no values")
    if missing.any():
        note(f"{source}: dropped {int(missing.sum())} rows with no value in target '{tname}'")
        frame = frame[~missing]
    return frame


def choose_source(path: str, opts: DataOptions, kind: str | None = None) -> Any:
    """The source class for `path`: the highest-priority one that claims it (a CSV with a text
    column is text, with --window a series, else a table; a folder holds images). With `kind`
    (resuming a run), the source that produces that kind of preprocessor."""
    _load_kinds()
    ranked = sorted(SOURCES.values(), key=lambda s: -getattr(s, "priority", 0))
    if kind is not None:  # of that kind's sources, one that claims the path, else the fallback
        same = [s for s in ranked if getattr(s, "kind", None) == kind]
        if same:
            return next((s for s in same if s.claims(path, opts)), same[-1])
    for source in ranked:
        if source.claims(path, opts):
            if getattr(opts, "stream", None) and not getattr(source, "streams", False):
                what = "an unsupervised model" if opts.unsupervised else f"{source.kind} data"
                note(
                    f"--stream applies to supervised tables; for {what} the data is loaded into memory"
                )
            return source
    if Path(path).is_dir():
        raise InputError(f"{path}: is a folder that no data source can read", "pass a CSV file")
    raise InputError(f"{path}: no data source understands this path")
