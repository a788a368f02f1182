"""Tables for an exported graph: CSV rows -> the `features` matrix of docs/onnx.md (numbers as
read, NaN when missing; categories as codes, 0 for missing or unseen), streamed in chunks, with
the messages of `dl predict model.pt` (data/tabular.py holds the torch side of the same rules)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from dlcli.data.readers import NULL_TEXT, ReadPlan, iter_chunks
from dlcli.data.target import codes_for
from dlcli.errors import InputError
from dlcli.runtime.session import OnnxModel


@dataclass(frozen=True)
class Labels:
    """The classes the graph's `probabilities` columns stand for."""

    classes: list[str]


@dataclass
class TableInputs:
    """The model's input columns (`dl.input_columns`), their kinds and categories."""

    columns: list[str]
    kinds: dict[str, str]
    categories: dict[str, list[str]]
    target: Labels
    prediction_columns: tuple[str, ...] = ()

    def check_columns(self, header: list[str], source: str) -> None:
        missing = [c for c in self.columns if c not in header]
        if missing:
            raise InputError(
                f"{source}: missing column{'s' if len(missing) > 1 else ''} {', '.join(repr(m) for m in missing)} that the model was trained on"
            )

    def read_plan(self, source: str, keep: bool) -> ReadPlan:
        """Only the model's columns, typed (numbers as float64, categories as text); with `keep`,
        every column as text, so kept columns are copied exactly as written."""
        import pyarrow as pa

        def plan(header: list[str]) -> dict[str, Any]:
            self.check_columns(header, source)
            if keep:
                return {c: pa.string() for c in header}
            return {
                c: pa.float64() if self.kinds[c] == "numeric" else pa.string() for c in self.columns
            }

        return plan

    def matrix(self, frame: pd.DataFrame, source: str, row_offset: int = 0) -> np.ndarray:
        """(N, F) float32 `features` of the rows of `frame`; an InputError names the first cell
        of a numeric column that is not a number."""
        self.check_columns(list(frame.columns), source)
        out = np.empty((len(frame), len(self.columns)), dtype=np.float32)
        for j, name in enumerate(self.columns):
            s = frame[name]
            if self.kinds[name] != "numeric":
                out[:, j] = codes_for(s, self.categories.get(name, [])) + 1  # 0 = missing/unseen
            elif pd.api.types.is_numeric_dtype(s) and not pd.api.types.is_bool_dtype(s):
                out[:, j] = s.to_numpy(dtype=np.float32, na_value=np.nan)
            else:
                text = s.astype(str).str.strip()
                blank = s.isna() | text.isin(NULL_TEXT)  # verbatim text: 'NA', '' are missing
                v = pd.to_numeric(s.where(~blank), errors="coerce")
                bad = (~blank & v.isna()).to_numpy()
                if bad.any():
                    i = int(np.argmax(bad))
                    label = frame.index[i]  # the row's place in its file or chunk
                    row = (
                        row_offset + (int(label) if isinstance(label, (int, np.integer)) else i) + 1
                    )
                    raise InputError(
                        f"{source}: column '{name}', row {row}: '{s.iloc[i]}' is not a number (the model expects numbers in this column)"
                    )
                out[:, j] = v.to_numpy(dtype="float32", na_value=np.nan)
        return out

    def iter_inputs(
        self, paths: list[str], keep: bool = False
    ) -> Iterator[tuple[pd.DataFrame, np.ndarray]]:
        """(input columns if `keep`, else none; features) per chunk of each CSV ('-' = stdin)."""
        for path in paths:
            offset = 0
            name = "<stdin>" if path == "-" else path
            for chunk in iter_chunks(path, plan=self.read_plan(name, keep), verbatim=keep):
                features = self.matrix(chunk, name, offset)
                offset += len(chunk)
                yield (chunk if keep else chunk.iloc[:, :0]), features

    def input_schema(self) -> dict[str, str]:
        """Column -> 'number' or 'string' (the serve OpenAPI schema)."""
        return {c: "number" if self.kinds[c] == "numeric" else "string" for c in self.columns}


def encoder(model: OnnxModel) -> TableInputs:
    columns = [str(c) for c in model.json("dl.input_columns", [])]
    return TableInputs(
        columns,
        model.json("dl.column_kinds", {}),
        model.json("dl.categories", {}),
        Labels(model.classes),
    )
