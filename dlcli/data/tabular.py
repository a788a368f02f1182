"""Tables: the fitted `TabularPreprocessor` (plain-data state) and the raw matrix it encodes.

Raw rows become a float matrix (numbers as read, NaN for missing; categories as integer codes, 0 for
missing or unseen). `TabularTransform` (tabular_transform.py) turns that matrix into model inputs
(impute, missing indicators, standardise, one-hot). Training, prediction and the ONNX graph all run
that module.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import asdict
from typing import Any

import numpy as np
import pandas as pd
import torch

from dlcli.data.columns import (
    LARGEST,
    MAX_CATEGORIES,
    Column,
    check_range,
    numeric_column,
    plan_columns,
    row_numbers,
)
from dlcli.data.contracts import Preprocessor
from dlcli.data.readers import NULL_TEXT, excerpt, iter_chunks, names_list
from dlcli.data.tabular_transform import TabularReconstruction, TabularTransform
from dlcli.data.target import Factorized, Target, canonical_counts, codes_for
from dlcli.errors import InputError


def _fill_row(row: np.ndarray, arr: Any) -> None:
    """`row[:] = arr` (a numeric pyarrow Array or ChunkedArray; missing -> NaN), chunk by chunk:
    no concatenated float64 copy of the whole column on the way."""
    start = 0
    for chunk in getattr(arr, "chunks", [arr]):
        n = len(chunk)
        row[start : start + n] = chunk.to_numpy(zero_copy_only=False)
        start += n


def _out_of_range(cols: np.ndarray) -> bool:
    """Whether raw columns (F, n) hold a value beyond +-LARGEST (inf included); NaN passes."""
    if cols.size == 0:
        return False
    with np.errstate(invalid="ignore"):
        lo, hi = np.fmin.reduce(cols, axis=1), np.fmax.reduce(cols, axis=1)
    return bool(((lo < -LARGEST) | (hi > LARGEST)).any())


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
        texts: dict[str, Factorized] = {}  # text categories, factorized once for both uses
        preprocessor = cls._fit_columns(frame, target, source, split[0], texts)
        if table is None:
            cols = preprocessor.raw_matrix(frame, source).T
            tr, va = (np.take(cols, idx, axis=1) for idx in split)  # (F, n) per part
        else:
            tr, va = preprocessor._split_columns(table, source, frame, split, texts)
        preprocessor._fit_numbers(tr)
        return preprocessor, np.ascontiguousarray(tr.T), np.ascontiguousarray(va.T)

    def _split_columns(
        self,
        table: Any,
        source: str,
        frame: pd.DataFrame,
        split: tuple[np.ndarray, ...],
        texts: dict[str, Factorized],
    ) -> list[np.ndarray]:
        """The raw columns of each part of `split`, (F_raw, n) each: the same values as
        `_raw_columns` gathered by part, but no (F_raw, N) matrix of every row is built: each
        column passes through one reused (N,) float32 row on its way into the parts. `texts`:
        categorical columns already factorized (`_fit_columns`)."""
        import pyarrow as pa

        self.check_columns(list(table.schema.names), source)
        parts = [np.empty((len(self.columns), len(idx)), dtype=np.float32) for idx in split]
        row = np.empty(table.num_rows, dtype=np.float32)
        rest = []
        with np.errstate(over="ignore"):  # beyond float32: inf, refused by the range check
            for j, col in enumerate(self.columns):
                arr = table.column(col.name)
                if col.kind == "numeric" and (
                    pa.types.is_floating(arr.type) or pa.types.is_integer(arr.type)
                ):
                    _fill_row(row, arr)
                elif col.name in texts:
                    row[:] = texts[col.name].codes_for(col.categories) + 1  # 0 = missing/unseen
                else:
                    rest.append(j)
                    continue
                for part, idx in zip(parts, split, strict=True):
                    np.take(row, idx, out=part[j])
            if rest:  # only the rows of `rest` are ever written (the others are never touched)
                out_t = np.empty((len(self.columns), table.num_rows), dtype=np.float32)
                bad = self._fill_columns(out_t.T, frame, rest)
                self._check_numbers(bad, frame, source, 0)
                for j in rest:
                    for part, idx in zip(parts, split, strict=True):
                        np.take(out_t[j], idx, out=part[j])
        if any(_out_of_range(part) for part in parts):  # the message names rows in file order
            self._raw_columns(table, source, frame=frame)  # raises, as it checks every row
        return parts

    @classmethod
    def _fit_columns(
        cls,
        frame: pd.DataFrame,
        target: Target | None,
        source: str,
        rows: np.ndarray | None,
        texts: dict[str, Factorized] | None = None,
    ) -> TabularPreprocessor:
        """Column kinds (whole frame) and categories (`rows`); numeric statistics still unset.
        Given `texts`, text categorical columns are factorized whole, once, and kept there."""
        tname = target.name if target else ""
        numeric, categorical = map(set, plan_columns(frame, tname, source))
        cols: list[Column] = []
        for name in frame.columns:
            if name in numeric:
                cols.append(Column(name, "numeric"))
            elif name in categorical:
                s = frame[name]
                if texts is not None and rows is not None and isinstance(s.dtype, pd.StringDtype):
                    texts[name] = Factorized.of(s)
                    counts = texts[name].counts_at(rows)
                else:
                    counts = canonical_counts(s if rows is None else s.iloc[rows])
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
        reused buffer (a copy of the whole block would be fresh memory to fault in); a column
        with no missing value is summed where it lies and copied only as its deviations."""
        buf = np.empty(train.shape[1], dtype=np.float32)
        for j, col in enumerate(self.columns):
            if col.kind != "numeric":
                continue
            v = train[j]  # (n,) contiguous; `buf` holds what is overwritten below
            miss = ~np.isfinite(v)
            missing = bool(miss.any())
            if missing:
                np.copyto(buf, v)
                v = buf
                v[miss] = 0.0
            count = max(1, len(v) - int(miss.sum())) if missing else max(1, len(v))
            mean = v.sum(dtype=np.float64) / count
            v = np.subtract(v, np.float32(mean), out=buf)
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
