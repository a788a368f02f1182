"""The floor under bench_parquet_load's goal (issue 16): how long the one pass every loader must
make, float64 Parquet columns -> one float32 row-major matrix, takes against
`pyarrow.parquet.read_table` of the same 1M x 20 file (18 float64 columns, a 4-level text column,
a 2-level label), best of 5 each, in one process. Nothing else of the encode (statistics, the
split, labels, categories) is counted, so dl's ratio cannot be below 1 + this figure.

    .venv/bin/python benchmarks/parquet_floor.py
"""

from __future__ import annotations

import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

ROWS, NUMBERS = 1_000_000, 18


def best(f: Callable[[], object], k: int = 5) -> float:
    times = []
    for _ in range(k):
        t = time.perf_counter()
        f()
        times.append(time.perf_counter() - t)
    return min(times)


def main() -> None:
    rng = np.random.default_rng(0)
    cols: dict[str, object] = {f"x{i}": rng.normal(size=ROWS) for i in range(NUMBERS)}
    cols["cat"] = rng.choice(["a", "b", "c", "d"], ROWS)
    cols["y"] = rng.choice(["p", "q"], ROWS)
    folder = Path(tempfile.mkdtemp(prefix="dl-floor-"))
    try:
        path = folder / "floor.parquet"
        pq.write_table(pa.table(cols), path)
        read = best(lambda: pq.read_table(path))
        table = pq.read_table(path)

        def to_float32() -> np.ndarray:  # column by column (contiguous writes), then row-major
            out = np.empty((NUMBERS, ROWS), np.float32)
            for j in range(NUMBERS):
                out[j] = table.column(j).to_numpy()
            return np.ascontiguousarray(out.T)

        convert = best(to_float32)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    print(
        f"read_table {read * 1000:.0f} ms; float64 -> float32 row-major {convert * 1000:.0f} ms;"
        f" conversion / read {convert / read:.2f} (the encode's floor: ratio >= {1 + convert / read:.2f})"
    )


if __name__ == "__main__":
    main()
