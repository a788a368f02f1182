"""The `tabular` data kind: a table file (read by suffix, readers/) of numeric and categorical
columns and a label column, loaded whole (`TabularSource`) or streamed from disk every epoch
(stream.py). The preprocessor is tabular.py's; `TabularExport` documents the ONNX input.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from dlcli.console import note
from dlcli.data import readers
from dlcli.data.contracts import DataKind, DataOptions, ExportAdapter, Prepared
from dlcli.data.readers import excerpt, names_list
from dlcli.data.split import split_rows
from dlcli.data.stream import StreamedTableSource
from dlcli.data.tabular import TabularPreprocessor
from dlcli.data.target import Target
from dlcli.errors import InputError


class TabularSource:
    """A table: numeric and categorical columns and a label column, loaded into memory."""

    name = "tabular"
    kind = "tabular"
    priority = 0  # sources are asked highest priority first; tables are the fallback for files
    default_arch = "mlp"
    streams = False

    @staticmethod
    def claims(path: str, opts: DataOptions) -> bool:
        return Path(path).is_file() or not Path(path).exists()

    @staticmethod
    def prepare(
        path: str, opts: DataOptions, preprocessor: TabularPreprocessor | None = None
    ) -> Prepared:
        """Read, split and encode. A given `preprocessor` (resume, transfer) is reused instead of fitted."""
        table = readers.read_arrow(path)  # kept: numeric columns go from arrow to the raw matrix
        frame = table.to_pandas()
        if opts.unsupervised:
            return prepare_unsupervised(frame, path, opts, preprocessor)
        tname = opts.target or str(frame.columns[-1])
        if tname not in frame.columns:
            raise InputError(
                f"{path}: no column '{excerpt(tname)}' (columns: {names_list(list(frame.columns))})",
                "pass --target COLUMN",
            )
        if len(frame.columns) < 2:
            raise InputError(
                f"{path}: needs at least one feature column besides the target '{excerpt(tname)}'"
            )
        frame = drop_missing_targets(frame, tname, path)
        if len(frame) != table.num_rows:  # the same rows in both
            table = table.take(frame.index.to_numpy())
        val_frame = None
        if opts.val:
            val_frame = drop_missing_targets(readers.read_table(opts.val), tname, opts.val)
            if tname not in val_frame.columns:
                raise InputError(f"{opts.val}: no column '{tname}' (the target)")
        target = (
            preprocessor.target
            if preprocessor is not None
            else Target.fit(frame[tname], opts.task, path)
        )
        y_all = target.encode(frame[tname], path)
        if val_frame is None:  # split indices; the frame is encoded once and its rows sliced
            stratify = target.task == "classification"
            tr, va = split_rows(
                y_all, len(frame), opts.val_split, opts.seed, stratify=stratify, source=path
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


def prepare_unsupervised(
    frame: pd.DataFrame, path: str, opts: DataOptions, preprocessor: TabularPreprocessor | None
) -> Prepared:
    """Every column is a feature (autoencoders); `--target COL` names a label column to leave out.
    Targets are zeros (nothing to predict)."""

    def drop_label(df: pd.DataFrame, source: str) -> pd.DataFrame:
        if opts.target is None:
            return df
        if opts.target not in df.columns:
            raise InputError(
                f"{source}: no column '{excerpt(opts.target)}' (columns: {names_list(list(df.columns))})"
            )
        return df.drop(columns=[opts.target])

    frame = drop_label(frame, path)
    if opts.val:
        val_frame = drop_label(readers.read_table(opts.val), opts.val)
        preprocessor = preprocessor or TabularPreprocessor.fit(frame, None, path)
        x_tr = torch.from_numpy(preprocessor.raw_matrix(frame, path))
        x_va = torch.from_numpy(preprocessor.raw_matrix(val_frame, opts.val))
    else:
        tr, va = split_rows(
            None, len(frame), opts.val_split, opts.seed, stratify=False, source=path, hint=None
        )
        if preprocessor is None:
            preprocessor, raw = TabularPreprocessor.fit_encode(frame, None, path, rows=tr)
        else:
            raw = preprocessor.raw_matrix(frame, path)
        x_tr, x_va = (torch.from_numpy(np.take(raw, idx, axis=0)) for idx in (tr, va))
    zeros = lambda n: torch.zeros(n, dtype=torch.float32)  # noqa: E731
    info = {"rows": len(x_tr) + len(x_va)}
    return Prepared(preprocessor, x_tr, zeros(len(x_tr)), x_va, zeros(len(x_va)), info)


def drop_missing_targets(frame: pd.DataFrame, tname: str, source: str) -> pd.DataFrame:
    """Rows without a label are dropped with a note; a target with no value at all is an error."""
    if tname not in frame.columns:
        return frame
    missing = frame[tname].isna()
    if missing.all():
        raise InputError(f"{source}: target column '{excerpt(tname)}' has no values")
    if missing.any():
        count = int(missing.sum())
        note(f"{source}: dropped {count} rows with no value in target '{excerpt(tname)}'")
        frame = frame[~missing]
    return frame


class TabularExport(ExportAdapter):
    """Input `features`: float32 (batch, F) raw columns in order; numbers as read (NaN = missing),
    categories as codes (i + 1 for categories[i], 0 = missing or unseen)."""

    input_name = "features"

    def examples(self, loaded: Any) -> torch.Tensor:
        """The stored real rows plus copies with every number NaN, every category 0, and every
        other column missing, so imputation is verified too."""
        rows = self.stored_examples(loaded)
        rows = (rows if rows is not None else self._synthetic(loaded.preprocessor)).to(
            torch.float32
        )
        cols = loaded.preprocessor.columns
        numeric = [i for i, c in enumerate(cols) if c.kind == "numeric"]
        categorical = [i for i, c in enumerate(cols) if c.kind == "categorical"]
        variants = []
        for chosen in (numeric, categorical, list(range(0, len(cols), 2))):
            if chosen:
                v = rows[:2].clone()
                for i in chosen:
                    v[:, i] = float("nan") if i in numeric else 0.0
                variants.append(v)
        return torch.cat([rows, *variants])

    @staticmethod
    def _synthetic(preprocessor: TabularPreprocessor, n: int = 32) -> torch.Tensor:
        """Rows drawn from the fitted column statistics, for model files without examples."""
        gen = torch.Generator().manual_seed(0)
        out = torch.empty(n, len(preprocessor.columns))
        for i, c in enumerate(preprocessor.columns):
            if c.kind == "numeric":
                out[:, i] = c.mean + c.std * torch.randn(n, generator=gen)
            else:
                out[:, i] = torch.randint(0, len(c.categories) + 1, (n,), generator=gen).float()
        return out

    def metadata(self, preprocessor: TabularPreprocessor) -> dict[str, str]:
        cols = preprocessor.columns
        return {
            "dl.input_columns": json.dumps([c.name for c in cols]),
            "dl.column_kinds": json.dumps({c.name: c.kind for c in cols}),
            "dl.categories": json.dumps(
                {c.name: list(c.categories) for c in cols if c.kind == "categorical"}
            ),
            "dl.preprocessing": "in-graph: impute NaN, missing indicators, standardise, one-hot",
        }


KIND = DataKind(
    name="tabular",
    preprocessor=TabularPreprocessor,
    sources=(TabularSource, StreamedTableSource),
    export=TabularExport(),
    hint="try --arch mlp",
)
