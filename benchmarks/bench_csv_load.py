"""Loading a CSV into training tensors: dl's tabular source vs `pandas.read_csv(engine="pyarrow")`.

Data: 1M rows x 20 columns (18 floats, one text column with 10 levels, an integer label in {0,1,2}).
dl: `TabularSource.prepare` (read, type the columns, split, fit the preprocessor, build x/y tensors).
Reference: reading the file into a DataFrame alone. Best of 3 each, interleaved, in this process.
"""

from __future__ import annotations

import common

ROWS = 1_000_000
REPEAT = 3
GOAL = 1.5


def run() -> list[dict]:
    import pandas as pd

    from dlcli.data.sources import DataOptions
    from dlcli.data.tabular_source import TabularSource

    with common.temp_dir() as tmp:
        csv = common.write_mixed(tmp / "table.csv", ROWS)
        load = common.load_note()
        shapes = {}

        def read() -> None:
            pd.read_csv(csv, engine="pyarrow")

        def prepare() -> None:
            prep = TabularSource.prepare(str(csv), DataOptions())
            shapes["x"] = tuple(prep.x_train.shape) + tuple(prep.x_val.shape)

        # interleaved, so a burst of other work on the machine hits both sides alike
        ref_times, dl_times = [], []
        for _ in range(REPEAT):
            ref_times.append(common.time_call(read))
            dl_times.append(common.time_call(prepare))
        ref_s, dl_s = min(ref_times), min(dl_times)
    note = f"x_train+x_val shapes {shapes['x']}; {load}"
    return [common.result("csv_load_1M", dl_s, ref_s, "s", dl_s / ref_s, GOAL, note=note)]


if __name__ == "__main__":
    common.main(run)
