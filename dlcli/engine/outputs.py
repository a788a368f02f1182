"""Prediction outputs without torch: task outputs (numpy) -> the prediction table, and its
writers (csv, jsonl, parquet). Shared by `dl predict model.pt` (engine/predictor.py) and the ONNX runtime
(dlcli/runtime/), so both print the same columns in the same format."""

from __future__ import annotations

import json
from typing import Any, TextIO

import numpy as np
import pandas as pd


def output_frame(
    loaded: Any, passthrough: pd.DataFrame, outputs: np.ndarray, proba: bool, top_k: int = 1
) -> pd.DataFrame:
    """Turn outputs into the prediction table: `prediction`, a `confidence` column where the data
    kind asks for one (images) or with --top-k, `prediction_2`/`confidence_2`... for the next
    classes, and `proba_<class>` with --proba."""
    frame = passthrough.reset_index(drop=True).copy()
    if loaded.task.name != "classification":
        frame["prediction"] = outputs.reshape(len(outputs), -1)[:, 0]
        return frame
    classes = np.asarray(loaded.preprocessor.target.classes, dtype=object)
    k = max(1, min(top_k, len(classes)))
    order = np.argsort(-outputs, axis=1, kind="stable")[:, :k]  # (N, k) best classes first
    confident = k > 1 or "confidence" in loaded.preprocessor.prediction_columns
    for r in range(k):
        suffix = "" if r == 0 else f"_{r + 1}"
        frame["prediction" + suffix] = classes[order[:, r]]
        if confident:
            frame["confidence" + suffix] = np.take_along_axis(outputs, order[:, r : r + 1], 1)[:, 0]
    if proba:
        for j, c in enumerate(classes):
            frame[f"proba_{c}"] = outputs[:, j]
    return frame


class CsvWriter:
    """Writers take the text stream of `dl predict` (stdout or -o's temp file), `write` each
    prediction table as it comes, and `close` once after the last (before the file is renamed)."""

    def __init__(self, fh: TextIO) -> None:
        self.fh, self.first = fh, True

    def close(self) -> None:
        pass

    def write(self, frame: pd.DataFrame) -> None:
        frame.to_csv(
            self.fh, header=self.first, index=False, float_format="%.7g", lineterminator="\n"
        )
        self.first = False


class JsonlWriter:
    def __init__(self, fh: TextIO) -> None:
        self.fh = fh

    def close(self) -> None:
        pass

    def write(self, frame: pd.DataFrame) -> None:
        for rec in records(frame):
            self.fh.write(json.dumps(rec) + "\n")


def records(frame: pd.DataFrame) -> list[dict[str, Any]]:
    """The rows of a prediction table as JSON-ready dicts (numpy scalars as Python values,
    NaN and infinities as None): the jsonl format, and `dl serve`'s JSON."""
    return [{k: _plain(v) for k, v in rec.items()} for rec in frame.to_dict(orient="records")]


def _plain(v: Any) -> Any:
    if isinstance(v, np.generic):
        v = v.item()
    if isinstance(v, float) and not np.isfinite(v):
        return None
    return v


class ParquetWriter:
    """Parquet, one row group per prediction table, streamed into -o's temp file (its binary
    buffer) by pyarrow.parquet.ParquetWriter; `close` writes the footer. The first table fixes the
    schema; later ones are cast to it (a column empty in one chunk still has its type)."""

    def __init__(self, fh: TextIO) -> None:
        self.fh, self.writer, self.schema = fh, None, None

    def write(self, frame: pd.DataFrame) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        if self.writer is None:
            table = pa.Table.from_pandas(frame, preserve_index=False)
            self.schema = table.schema.remove_metadata()
            self.fh.flush()
            self.writer = pq.ParquetWriter(self.fh.buffer, self.schema)  # type: ignore[attr-defined]
        else:
            table = pa.Table.from_pandas(frame, schema=self.schema, preserve_index=False)
        self.writer.write_table(table)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.fh.buffer.flush()  # type: ignore[attr-defined]


WRITERS = {"csv": CsvWriter, "jsonl": JsonlWriter, "parquet": ParquetWriter}
BINARY = frozenset({"parquet"})  # formats written to a file only (-o), never to stdout


def check_format(fmt: str, output: str | None) -> None:
    """--format names a writer, and a binary one has -o FILE (a UsageError line otherwise)."""
    from dlcli.errors import UsageError

    if fmt not in WRITERS:
        raise UsageError(f"--format must be one of {', '.join(WRITERS)}, got '{fmt}'")
    if fmt in BINARY and (not output or output == "-"):
        raise UsageError(
            f"--format {fmt} writes a binary file, not text for the terminal: give -o FILE",
            f"dl predict MODEL INPUT --format {fmt} -o predictions.{fmt}",
        )
