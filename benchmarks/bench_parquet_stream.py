"""`dl train --stream` on a ~2 GB Parquet file: peak memory of the whole `dl` process tree (row
groups are read one at a time). Slow (minutes): run_all.py runs it only when named
(`--only parquet_stream`).

Data: bench_stream's table (20 float columns, one with 5% missing, a 6-level text column and a
yes/no label), ROWS rows (default 24M, ~2 GB of Parquet; DL_BENCH_PARQUET_ROWS overrides) written
CHUNK rows per row group, uncompressed (random floats do not compress), into a temporary folder.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import common
from bench_stream import BATCH, EPOCHS, GOAL_MB, _schema, run_tree, tables

ROWS = int(os.environ.get("DL_BENCH_PARQUET_ROWS") or 24_000_000)


def write_big(path: Path, rows: int, seed: int = 0) -> Path:
    """bench_stream's generated table, one row group of CHUNK rows at a time."""
    import pyarrow.parquet as pq

    with pq.ParquetWriter(path, _schema(), compression="none") as writer:
        for table in tables(rows, seed):
            writer.write_table(table)
    return path


def run() -> list[dict]:
    with common.temp_dir() as tmp:
        t0 = time.perf_counter()
        data = write_big(tmp / "big.parquet", ROWS)
        made = time.perf_counter() - t0
        size_gb = data.stat().st_size / 1e9
        load = common.load_note()
        args = [common.DL, "train", data, "--epochs", EPOCHS, "--batch-size", BATCH, "--json"]
        wall, rss, summary, _ = run_tree([*args, "--stream", "-o", tmp / "s.pt"])
    note = (
        f"{ROWS:,} rows, {size_gb:.2f} GB of Parquet written in {made:.0f} s; {EPOCHS} epoch(s), "
        f"batch {BATCH}; wall {wall:.0f} s (load {summary['load_seconds']:.0f} s, train "
        f"{summary['train_seconds']:.0f} s); val accuracy {summary['metrics']['accuracy']:.4f}; {load}"
    )
    return [
        common.result(
            "parquet_stream_peak_rss", rss, None, "MB", rss, GOAL_MB, kind="abs", note=note
        )
    ]


if __name__ == "__main__":
    common.main(run)
