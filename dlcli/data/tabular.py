"""Tables: the fitted `TabularPreprocessor` (plain-data state) and its torch transform.

Raw rows become a float matrix (numbers as read, NaN for missing; categories as integer codes, 0 for
missing or unseen). `TabularTransform` turns that matrix into model inputs (impute, missing
indicators, standardise, one-hot). Training, prediction and the ONNX graph all run that module.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import asdict
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from dlcli.data.columns import (
    MAX_CATEGORIES,
    Column,
    check_range,
    numeric_column,
    plan_columns,
    row_numbers,
)
from dlcli.data.contracts import Preprocessor
from dlcli.data.readers import NULL_TEXT, excerpt, iter_chunks, names_list
from dlcli.data.target import Target, canonical_counts, codes_for
from dlcli.errors import InputError


def _fill_row(row: np.ndarray, arr: Any) -> None:
    """`row[:] = arr` (a numeric pyarrow Array or ChunkedArray; missing -> NaN), chunk by chunk:
    no concatenated float64 copy of the whole column on the way."""
    start = 0
    for chunk in getattr(arr, "chunks", [arr]):
        n = len(chunk)
        row[start : start + n] = chunk.to_numpy(zero_copy_only=False)
        start += n


class TabularTransform(nn.Module):
    """(N, F_raw) raw matrix -> (N, F_encoded) model input. Exported to ONNX as part of the graph."""

    def __init__(self, columns: list[Column]) -> None:
        super().__init__()
        num = [i for i, c in enumerate(columns) if c.kind == "numeric"]
        nums = [columns[i] for i in num]
        self.register_buffer("num_idx", torch.tensor(num, dtype=torch.long))
        self.register_buffer("fill", torch.tensor([c.fill for c in nums], dtype=torch.float32))
        self.register_buffer("mean", torch.tensor([c.mean for c in nums], dtype=torch.float32))
        self.register_buffer("std", torch.tensor([c.std for c in nums], dtype=torch.float32))
        self.register_buffer(
            "ind_idx",
            torch.tensor([j for j, c in enumerate(nums) if c.indicator], dtype=torch.long),
        )
        slot_col, slot_code = [], []
        for i, c in enumerate(columns):
            if c.kind == "categorical":
                for code in range(len(c.categories) + 1):  # 0 = missing / unseen
                    slot_col.append(i)
                    slot_code.append(float(code))
        self.register_buffer("slot_col", torch.tensor(slot_col, dtype=torch.long))
        self.register_buffer("slot_code", torch.tensor(slot_code, dtype=torch.float32))
        self.n_num, self.n_ind, self.n_cat = len(num), len(self.ind_idx), len(slot_col)

    @property
    def out_features(self) -> int:
        return self.n_num + self.n_ind + self.n_cat

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (N, F_raw) -> (N, F_enc)
        parts = []
        if self.n_num:
            xn = x.index_select(1, self.num_idx)
            miss = torch.isnan(xn)
            xn = (torch.where(miss, self.fill, xn) - self.mean) / self.std
            parts.append(xn)
            if self.n_ind:
                parts.append(miss.index_select(1, self.ind_idx).to(x.dtype))
        if self.n_cat:
            parts.append((x.index_select(1, self.slot_col) == self.slot_code).to(x.dtype))
        return torch.cat(parts, dim=1)


class TabularReconstruction(nn.Module):
    """Autoencoder decoder output (N, F_enc) -> a raw-form row (N, F_raw): numbers back in their
    units, categorical columns as the code of the most likely category (0 = missing/unseen)."""

    def __init__(self, preprocess: TabularTransform, groups: list[int]) -> None:
        super().__init__()
        self.register_buffer("mean", preprocess.mean.clone())
        self.register_buffer("std", preprocess.std.clone())
        order = preprocess.num_idx.tolist() + sorted(set(preprocess.slot_col.tolist()))
        inverse = [0] * len(order)  # raw column j is column inverse[j] of [numbers | codes]
        for k, j in enumerate(order):
            inverse[j] = k
        self.register_buffer("inverse", torch.tensor(inverse, dtype=torch.long))
        self.groups, self.n_num = list(groups), int(preprocess.n_num)
        self.n_ind = int(preprocess.n_ind)

    def forward(self, out: torch.Tensor) -> torch.Tensor:
        parts = [out[:, : self.n_num] * self.std + self.mean] if self.n_num else []
        start = self.n_num + self.n_ind
        for size in self.groups:
            parts.append(out[:, start : start + size].argmax(1, keepdim=True).to(out.dtype))
            start += size
        return torch.cat(parts, dim=1).index_select(1, self.inverse)


class TabularPreprocessor(Preprocessor):
    """Fitted on the training rows; turns any later frame into the same raw matrix."""

    kind = "tabular"

    def __init__(self, columns: list[Column], target: Target | None) -> None:
        self.columns = columns
        self.target = target

    # -- fitting -------------------------------------------------------------
    @classmethod
    def fit(
        cls, frame: pd.DataFrame, target: Target | None, source: str, rows: np.ndarray | None = None
    ) -> TabularPreprocessor:
        """Type the columns on the whole frame; fit statistics on `rows` (the training split)."""
        return cls.fit_encode(frame, target, source, rows)[0]

    @classmethod
    def fit_encode(
        cls,
        frame: pd.DataFrame,
        target: Target | None,
        source: str,
        rows: np.ndarray | None = None,
        table: Any = None,
    ) -> tuple[TabularPreprocessor, np.ndarray]:
        """fit, also returning the raw matrix of the whole frame (encoded once, not twice): the
        categories are fitted first, then numeric statistics are taken from the matrix's rows.
        `table`, the pyarrow Table the frame came from, lets numbers skip pandas."""
        preprocessor = cls._fit_columns(frame, target, source, rows)
        raw = preprocessor._raw(frame, table, source)
        preprocessor._fit_numbers((raw if rows is None else raw[rows]).T)
        return preprocessor, raw

    @classmethod
    def fit_split(
        cls,
        frame: pd.DataFrame,
        target: Target | None,
        source: str,
        split: tuple[np.ndarray, np.ndarray],
        table: Any = None,
    ) -> tuple[TabularPreprocessor, np.ndarray, np.ndarray]:
        """fit on the training rows of `split` = (train_idx, val_idx); returns the preprocessor and the
        raw matrices of both parts (each row gathered once; statistics from the training part)."""
        preprocessor = cls._fit_columns(frame, target, source, split[0])
        if table is None:
            cols = preprocessor.raw_matrix(frame, source).T
        else:
            cols = preprocessor._raw_columns(table, source, frame=frame)  # (F, N)
        tr, va = (np.take(cols, idx, axis=1) for idx in split)  # (F, n): rows gathered per column
        preprocessor._fit_numbers(tr)
        return preprocessor, np.ascontiguousarray(tr.T), np.ascontiguousarray(va.T)

    @classmethod
    def _fit_columns(
        cls, frame: pd.DataFrame, target: Target | None, source: str, rows: np.ndarray | None
    ) -> TabularPreprocessor:
        """Column kinds (whole frame) and categories (`rows`); numeric statistics still unset."""
        tname = target.name if target else ""
        numeric, categorical = map(set, plan_columns(frame, tname, source))
        cols: list[Column] = []
        for name in frame.columns:
            if name in numeric:
                cols.append(Column(name, "numeric"))
            elif name in categorical:
                s = frame[name] if rows is None else frame[name].iloc[rows]
                counts = canonical_counts(s)
                cats = [str(c) for c in counts.index[:MAX_CATEGORIES]]
                cols.append(Column(name, "categorical", categories=cats))
        return cls(cols, target)

    def _raw(self, frame: pd.DataFrame, table: Any, source: str) -> np.ndarray:
        if table is None:
            return self.raw_matrix(frame, source)
        return np.ascontiguousarray(self._raw_columns(table, source, frame=frame).T)

    def _fit_numbers(self, train: np.ndarray) -> None:
        """Mean, std and missing indicator of each numeric column over `train`, the training rows'
        raw matrix transposed: (F_raw, n), one row per column. Column by column through one
        reused buffer (a copy of the whole block would be fresh memory to fault in)."""
        buf = np.empty(train.shape[1], dtype=np.float32)
        for j, col in enumerate(self.columns):
            if col.kind != "numeric":
                continue
            np.copyto(buf, train[j])
            v = buf  # (n,) contiguous, overwritten below
            miss = ~np.isfinite(v)
            missing = bool(miss.any())
            if missing:
                v[miss] = 0.0
            count = max(1, len(v) - int(miss.sum())) if missing else max(1, len(v))
            mean = v.sum(dtype=np.float64) / count
            v -= np.float32(mean)
            if missing:
                v[miss] = 0.0
            std = np.sqrt(np.einsum("i,i->", v, v, dtype=np.float64) / count)
            self.columns[j] = numeric_column(col.name, mean, std, missing)

    # -- encoding ------------------------------------------------------------
    @property
    def feature_names(self) -> list[str]:
        return [c.name for c in self.columns]

    def check_columns(self, frame_columns: list[str], source: str) -> None:
        present = set(frame_columns)
        missing = [c for c in self.feature_names if c not in present]
        if missing:
            raise InputError(
                f"{source}: missing column{'s' if len(missing) > 1 else ''} {names_list([repr(m) for m in missing])} that the model was trained on"
            )

    def raw_matrix(self, frame: pd.DataFrame, source: str, row_offset: int = 0) -> np.ndarray:
        """(N, F_raw) float32: numbers as read (NaN if missing), categories as codes."""
        self.check_columns(list(frame.columns), source)
        out = np.empty((len(frame), len(self.columns)), dtype=np.float32)
        typed = [  # numeric columns already read as numbers: converted together, one block
            j
            for j, c in enumerate(self.columns)
            if c.kind == "numeric"
            and pd.api.types.is_numeric_dtype(frame[c.name])
            and not pd.api.types.is_bool_dtype(frame[c.name])
        ]
        with np.errstate(over="ignore"):  # beyond float32: inf, refused by check_range
            if typed:
                names = [self.columns[j].name for j in typed]
                out[:, typed] = frame[names].to_numpy(dtype=np.float32, na_value=np.nan)
            done = set(typed)
            rest = [j for j in range(len(self.columns)) if j not in done]
            bad = self._fill_columns(out, frame, rest)
        self._check_numbers(bad, frame, source, row_offset)
        check_range(out.T, self.feature_names, source, frame.index, row_offset)
        return out

    def raw_from_arrow(self, table: Any, source: str, row_offset: int = 0) -> np.ndarray:
        """`raw_matrix` of a pyarrow Table or RecordBatch: numeric columns read as numbers are
        copied straight from arrow; only the other columns go through pandas."""
        return np.ascontiguousarray(self._raw_columns(table, source, row_offset).T)

    def _raw_columns(
        self, table: Any, source: str, row_offset: int = 0, frame: pd.DataFrame | None = None
    ) -> np.ndarray:
        """`raw_from_arrow` transposed, (F_raw, N): filled column by column (writing columns of
        an (N, F) matrix is a strided write, ~3x slower). `frame`, when given, holds the
        non-numeric columns already, row for row."""
        import pyarrow as pa

        self.check_columns(list(table.schema.names), source)
        out_t = np.empty((len(self.columns), table.num_rows), dtype=np.float32)
        rest = []
        labels = None if frame is None else frame.index  # rows' places in the file
        with np.errstate(over="ignore"):  # beyond float32: inf, refused by check_range
            for j, col in enumerate(self.columns):
                arr = table.column(col.name)
                if col.kind == "numeric" and (
                    pa.types.is_floating(arr.type) or pa.types.is_integer(arr.type)
                ):
                    _fill_row(out_t[j], arr)
                else:
                    rest.append(j)
            if rest:
                if frame is None:
                    frame = table.select([self.columns[j].name for j in rest]).to_pandas()
                bad = self._fill_columns(out_t.T, frame, rest)
                self._check_numbers(bad, frame, source, row_offset)
        check_range(out_t, self.feature_names, source, labels, row_offset)
        return out_t

    def _fill_columns(
        self, out: np.ndarray, frame: pd.DataFrame, which: list[int]
    ) -> dict[int, pd.Series]:
        """Columns `which` of `out` from `frame`: text in numeric columns parsed, categories as
        codes. Returns, per numeric text column, the mask of cells that are not numbers."""
        bad = {}
        for j in which:
            col = self.columns[j]
            s = frame[col.name]
            if col.kind == "numeric":
                text = s.astype(str).str.strip()
                blank = s.isna() | text.isin(NULL_TEXT)  # verbatim text: 'NA', '' are missing
                v = pd.to_numeric(s.where(~blank), errors="coerce")
                bad[j] = ~blank & v.isna()
                out[:, j] = v.to_numpy(dtype="float32", na_value=np.nan)
            else:
                out[:, j] = codes_for(s, col.categories) + 1  # 0 = missing or unseen
        return bad

    def _check_numbers(
        self, bad: dict[int, pd.Series], frame: pd.DataFrame, source: str, row_offset: int
    ) -> None:
        """An InputError naming the first row whose text in a numeric column is not a number."""
        for j, mask in bad.items():
            if not mask.any():
                continue
            col, i = self.columns[j], int(np.argmax(mask.to_numpy()))
            row = row_numbers(np.array([i]), frame.index, row_offset)[0]
            raise InputError(
                f"{source}: column '{excerpt(col.name)}', row {row}: '{excerpt(frame[col.name].iloc[i])}' is not a number (the model expects numbers in this column)"
            )

    def preprocess_module(self) -> TabularTransform:
        return TabularTransform(self.columns)

    @property
    def raw_shape(self) -> tuple[int, ...]:
        return (len(self.columns),)

    @property
    def input_shape(self) -> tuple[int, ...]:
        return (self.preprocess_module().out_features,)

    def reconstruction_layout(self) -> dict[str, Any]:
        """[standardised numbers | missing indicators | one one-hot group per categorical column]."""
        pre = self.preprocess_module()
        groups = [len(c.categories) + 1 for c in self.columns if c.kind == "categorical"]
        return {"n_cont": int(pre.n_num), "n_bin": int(pre.n_ind), "groups": groups}

    def reconstruction_module(self) -> TabularReconstruction:
        return TabularReconstruction(
            self.preprocess_module(), self.reconstruction_layout()["groups"]
        )

    def arrow_types(self) -> dict[str, Any]:
        """pyarrow column types for streaming reads: numbers parsed as float64, categories as text."""
        import pyarrow as pa

        return {c.name: pa.float64() if c.kind == "numeric" else pa.string() for c in self.columns}

    def read_plan(self, source: str, keep: bool, target: str | None = None) -> Any:
        """What to read of a file with this header: the model's columns (plus `target`), typed;
        with `keep`, every column as text, so kept columns are copied exactly as written."""
        import pyarrow as pa

        def plan(header: list[str]) -> dict[str, Any]:
            self.check_columns(header, source)
            if target is not None and target not in header:
                raise InputError(
                    f"{source}: no target column '{excerpt(target)}'; evaluation needs the labels"
                )
            if keep:
                return {c: pa.string() for c in header}
            types = self.arrow_types()
            if target is not None:
                regression = self.target is not None and self.target.task == "regression"
                types[target] = pa.float64() if regression else pa.string()
            return types

        return plan

    def iter_inputs(
        self, paths: list[str], keep: bool = False
    ) -> Iterator[tuple[pd.DataFrame, torch.Tensor]]:
        """Stream new rows of each CSV ('-' = stdin): (input columns if `keep`, else none; raw
        input tensor) per chunk.

        Only the model's columns are parsed (others, the target included, are ignored) unless `keep`.
        """
        for path in [paths] if isinstance(paths, str) else paths:
            offset = 0
            name = "<stdin>" if path == "-" else path
            for chunk in iter_chunks(path, plan=self.read_plan(name, keep), verbatim=keep):
                raw = self.raw_matrix(chunk, name, offset)
                offset += len(chunk)
                yield (chunk if keep else chunk.iloc[:, :0]), torch.from_numpy(raw)

    def iter_labelled(self, path: str) -> Iterator[tuple[pd.DataFrame, torch.Tensor]]:
        """Stream labelled rows (rows without a label are skipped): (frame, raw input tensor)."""
        name, offset, tname = ("<stdin>" if path == "-" else path), 0, self.target.name
        for chunk in iter_chunks(path, plan=self.read_plan(name, False, tname)):
            labelled = chunk[chunk[tname].notna()]
            labelled.index = labelled.index + offset  # places in the file, for messages
            yield labelled, torch.from_numpy(self.raw_matrix(labelled, name))
            offset += len(chunk)

    # -- state ---------------------------------------------------------------
    def to_state(self) -> dict:
        return {
            "kind": self.kind,
            "columns": [asdict(c) for c in self.columns],
            "target": self.target.to_state() if self.target else None,
        }

    @classmethod
    def from_state(cls, state: dict) -> TabularPreprocessor:
        target = Target.from_state(state["target"]) if state.get("target") else None
        return cls([Column(**c) for c in state["columns"]], target)
