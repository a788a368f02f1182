"""Loading a Parquet table into training tensors: dl's tabular source vs `pyarrow.parquet.read_table`.

Data: bench_csv_load's table (1M rows x 20 columns: 18 floats, one text column with 10 levels, an
integer label in {0,1,2}; DL_BENCH_PARQUET_LOAD_ROWS overrides the rows), written as Parquet.
dl: `TabularSource.prepare` (read, type the columns, split, fit the preprocessor, build x/y tensors).
Reference: `pyarrow.parquet.read_table` alone. Best of 3 each, interleaved, in this process.
"""

from __future__ import annotations

import os

import common

ROWS = int(os.environ.get("DL_BENCH_PARQUET_LOAD_ROWS") or 1_000_000)
REPEAT = 3
GOAL = 1.2


def run() -> list[dict]:
    import pyarrow.csv as pcsv
    import pyarrow.parquet as pq

    from dlcli.data.sources import DataOptions
    from dlcli.data.tabular_source import TabularSource

    with common.temp_dir() as tmp:
        csv = common.write_mixed(tmp / "table.csv", ROWS)
        parquet = tmp / "table.parquet"
        pq.write_table(pcsv.read_csv(csv), parquet)
        load = common.load_note()
        shapes = {}

        def read() -> None:
            pq.read_table(parquet)

        def prepare() -> None:
            prep = TabularSource.prepare(str(parquet), DataOptions())
            shapes["x"] = tuple(prep.x_train.shape) + tuple(prep.x_val.shape)

        ref_times, dl_times = [], []
        for _ in range(REPEAT):  # interleaved: a burst of other work hits both sides alike
            ref_times.append(common.time_call(read))
            dl_times.append(common.time_call(prepare))
        ref_s, dl_s = min(ref_times), min(dl_times)
    note = f"{ROWS:,} rows; x_train+x_val shapes {shapes['x']}; {load}"
    return [common.result("parquet_load_1M", dl_s, ref_s, "s", dl_s / ref_s, GOAL, note=note)]


if __name__ == "__main__":
    common.main(run)
