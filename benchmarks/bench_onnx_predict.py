"""`dl predict MODEL.onnx` (onnxruntime, no torch) against `dl predict MODEL.pt`, in one run.

A tiny model is trained on 5k generated rows (1 epoch) and exported. **one row**: process start to
exit of each command on a one-row CSV, median of 3 (goal: onnx <= 0.5x the .pt time). **1M rows**:
`-o out.csv` on a generated 1M-row CSV: rows/s of each (goal: onnx >= 1.0x the .pt throughput)
and the onnx run's peak RSS (goal < 1 GB), both read by a fresh wrapper process.
"""

from __future__ import annotations

import common

ROWS = 1_000_000
TRAIN_ROWS = 5_000


def run() -> list[dict]:
    with common.temp_dir() as tmp:
        train_csv = common.write_mixed(tmp / "train.csv", TRAIN_ROWS, seed=1)
        big_csv = common.write_mixed(tmp / "big.csv", ROWS, seed=2, label=False)
        one_csv = tmp / "one.csv"
        with open(big_csv) as fh:
            one_csv.write_text(fh.readline() + fh.readline())
        model = tmp / "model.pt"
        common.run_measured(
            [common.DL, "train", train_csv, "-o", model, "--epochs", 1, "--no-plots", "--quiet"]
        ).check()
        common.run_measured([common.DL, "export", model, "--onnx", "--quiet"]).check()
        onnx = model.with_suffix(".onnx")
        load = common.load_note()
        one = {
            m: common.median_of(
                [r.seconds for r in common.median_run([common.DL, "predict", m, one_csv], 3)]
            )
            for m in (model, onnx)
        }
        big = {
            m: common.run_measured(
                [common.DL, "predict", m, big_csv, "-o", tmp / "out.csv"]
            ).check()
            for m in (model, onnx)
        }
    rate = {m: ROWS / r.seconds for m, r in big.items()}
    return [
        common.result(
            "onnx_predict_one_row",
            one[onnx],
            one[model],
            "s",
            one[onnx] / one[model],
            0.5,
            note=f"process start to exit, median of 3, reference = dl predict model.pt; {load}",
        ),
        common.result(
            "onnx_predict_1M_throughput",
            rate[onnx],
            rate[model],
            "rows/s",
            rate[onnx] / rate[model],
            1.0,
            higher_is_better=True,
            note=f"reference = dl predict model.pt; {load}",
        ),
        common.result(
            "onnx_predict_1M_peak_rss",
            big[onnx].peak_rss_mb,
            big[model].peak_rss_mb,
            "MB",
            big[onnx].peak_rss_mb,
            1024.0,
            kind="abs",
            note="reference = the .pt run's peak RSS",
        ),
    ]


if __name__ == "__main__":
    common.main(run)
