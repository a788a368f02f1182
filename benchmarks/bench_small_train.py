"""A whole `dl train` on the shipped penguins table at defaults, from process start to exit.

Median of 3 runs of wall time and of peak RSS. Reference, for context: `python -c "import torch"`.
One more, untimed run with `--json` gives dl's own split of the time (data loading, fitting).
"""

from __future__ import annotations

import json

import common

REPEAT = 3
GOAL_S = 5.0
GOAL_MB = 500.0


def run() -> list[dict]:
    data = common.SAMPLE_DATA / "penguins" / "train.csv"
    with common.temp_dir() as tmp:
        load = common.load_note()
        runs = common.median_run([common.DL, "train", data, "-o", tmp / "model.pt"], REPEAT)
        args = [common.DL, "train", data, "-o", tmp / "model.pt", "--quiet", "--json"]
        summary = json.loads(common.run_measured(args).check().stdout)
    refs = common.median_run([common.PYTHON, "-c", "import torch"], REPEAT)
    dl_s = common.median_of([r.seconds for r in runs])
    dl_mb = common.median_of([r.peak_rss_mb for r in runs])
    ref_s = common.median_of([r.seconds for r in refs])
    ref_mb = common.median_of([r.peak_rss_mb for r in refs])
    note = (
        f"of which data {summary['load_seconds']:.2f} s, fit {summary['train_seconds']:.2f} s "
        f"({summary['epochs_run']} epochs, {summary['stopped']}); {load}"
    )
    return [
        common.result("small_train_wall", dl_s, ref_s, "s", dl_s, GOAL_S, kind="abs", note=note),
        common.result("small_train_peak_rss", dl_mb, ref_mb, "MB", dl_mb, GOAL_MB, kind="abs"),
    ]


if __name__ == "__main__":
    common.main(run)
