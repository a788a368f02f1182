"""Peak memory of `dl predict` on a 1M-row CSV (it should stream, not hold the file).

A tiny model is trained first (5k labelled rows, 1 epoch); then `dl predict model.pt big.csv -o
out.csv` runs in a fresh subprocess and its peak RSS is read with `os.wait4`. The output must have
1M data rows. Reference, for context: the peak RSS of a subprocess that `pandas.read_csv`s the
whole input file.
"""

from __future__ import annotations

import common

ROWS = 1_000_000
TRAIN_ROWS = 5_000
GOAL_MB = 1024.0


def count_data_rows(path) -> int:
    with open(path, "rb") as fh:
        return sum(chunk.count(b"\n") for chunk in iter(lambda: fh.read(1 << 20), b"")) - 1


def run() -> list[dict]:
    with common.temp_dir() as tmp:
        train_csv = common.write_mixed(tmp / "train.csv", TRAIN_ROWS, seed=1)
        big_csv = common.write_mixed(tmp / "big.csv", ROWS, seed=2, label=False)
        model = tmp / "model.pt"
        common.run_measured(
            [common.DL, "train", train_csv, "-o", model, "--epochs", 1, "--no-plots", "--quiet"]
        ).check()
        load = common.load_note()
        out = tmp / "out.csv"
        pred = common.run_measured([common.DL, "predict", model, big_csv, "-o", out]).check()
        rows = count_data_rows(out)
        code = "import sys, pandas; pandas.read_csv(sys.argv[1])"
        ref = common.run_measured([common.PYTHON, "-c", code, big_csv]).check()
    note = f"wall {pred.seconds:.1f} s; {rows:,} output rows; {load}"
    res = common.result(
        "predict_1M_peak_rss",
        pred.peak_rss_mb,
        ref.peak_rss_mb,
        "MB",
        pred.peak_rss_mb,
        GOAL_MB,
        kind="abs",
        note=note,
    )
    if rows != ROWS:
        res["passed"] = False
        res["note"] += f"; expected {ROWS:,} rows"
    return [res]


if __name__ == "__main__":
    common.main(run)
