"""One table written in every format dl reads (generated at test time): the CSV as pyarrow
writes it, and the same values as Parquet, Feather, JSON Lines and compressed CSV, with the
narrow types those formats keep (int32 with nulls, uint8, dictionary text, timestamp[ms])."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pcsv
import pyarrow.feather as pf
import pyarrow.parquet as pq

SUFFIXES = (
    ".parquet",
    ".feather",
    ".arrow",
    ".jsonl",
    ".ndjson",
    ".csv.gz",
    ".csv.zst",
    ".csv.bz2",
)
CODECS = {".csv.gz": "gzip", ".csv.zst": "zstd", ".csv.bz2": "bz2"}


def table(n: int = 240, seed: int = 0) -> pa.Table:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=n)
    x[rng.random(n) < 0.05] = np.nan
    count = rng.integers(0, 40, n).astype(float)
    count[rng.random(n) < 0.1] = np.nan
    label = np.where(x + rng.normal(scale=0.5, size=n) > 0, "yes", "no")
    return pa.table(
        {
            "x": pa.array(x, from_pandas=True),
            "count": pa.array(count, from_pandas=True).cast(pa.int64()),
            "small": pa.array(rng.integers(0, 5, n), pa.int64()),
            "flag": pa.array(rng.random(n) < 0.3),
            "colour": pa.array(rng.choice(["red", "green", "blue"], n)),
            "day": pa.array(np.datetime64("2024-01-01") + rng.integers(0, 300, n).astype("m8[D]")),
            "label": pa.array(label),
        }
    )


def narrow(t: pa.Table) -> pa.Table:
    """The same values in the types a Parquet or Feather writer often keeps (where the columns
    of `table()` are there)."""
    casts = {
        "count": lambda c: c.cast(pa.int32()),
        "small": lambda c: c.cast(pa.uint8()),
        "colour": lambda c: c.dictionary_encode(),
    }
    for name, cast in casts.items():
        if name in t.column_names:
            i = t.column_names.index(name)
            t = t.set_column(i, name, cast(t[name]))
    return t


def write(t: pa.Table, path: Path) -> Path:
    """`t` at `path` in the format its suffix names."""
    name = path.name
    if name.endswith(".csv"):
        pcsv.write_csv(t, path)
    elif name.endswith(".parquet"):
        pq.write_table(narrow(t), path, row_group_size=max(1, t.num_rows // 3))
    elif name.endswith((".feather", ".arrow")):
        pf.write_feather(narrow(t), path, chunksize=max(1, t.num_rows // 3))
    elif name.endswith((".jsonl", ".ndjson")):
        with open(path, "w") as fh:
            for rec in t.to_pylist():
                fh.write(json.dumps({k: _plain(v) for k, v in rec.items()}) + "\n")
    else:
        codec = next(c for s, c in CODECS.items() if name.endswith(s))
        sink = pa.BufferOutputStream()
        pcsv.write_csv(t, sink)
        with pa.output_stream(path, compression=codec) as out:
            out.write(sink.getvalue())
    return path


def _plain(v: object) -> object:
    if isinstance(v, float) and np.isnan(v):
        return None
    return v.isoformat() if hasattr(v, "isoformat") else v


def every_format(folder: Path, stem: str = "t", n: int = 240) -> dict[str, Path]:
    """suffix -> the file (".csv" included), all holding `table(n)`."""
    t = table(n)
    return {s: write(t, folder / f"{stem}{s}") for s in (".csv", *SUFFIXES)}
