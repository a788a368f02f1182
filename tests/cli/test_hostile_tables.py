"""Hostile tables end to end (issue 11): a very wide CSV trains in bounded time and memory, values
too large to standardise are one line naming the column and rows, ragged rows on stdin name their
line. Each case runs `dl` under an address-space limit and a timeout (run_dl_bounded)."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def wide_csv(path: Path, columns: int, rows: int = 3) -> Path:
    """`columns` float features and a 0/1 label: the 2 MB, 100,000-column file of the issue."""
    rng = np.random.default_rng(0)
    lines = [",".join(f"c{i}" for i in range(columns)) + ",y"]
    for r in range(rows):
        lines.append(",".join(f"{v:.3f}" for v in rng.random(columns)) + f",{r % 2}")
    path.write_text("\n".join(lines) + "\n")
    return path


def test_100k_columns_train_in_bounded_time_and_memory(tmp_path, run_dl_bounded):
    data = wide_csv(tmp_path / "wide.csv", 100_000)
    model = tmp_path / "m.pt"
    # 3 GiB of address space: the network itself (100,000 inputs x 128 units, 12.9 million
    # parameters with Adam's state) does not fit in the default 2 GiB beside torch's libraries
    args = ("train", data, "-o", model, "--epochs", "1", "--no-plots", "--quiet")
    res = run_dl_bounded(*args, timeout=90, memory_gb=3)
    assert res.returncode == 0, res.stderr
    assert model.is_file()
    assert "Traceback" not in res.stderr and "Warning" not in res.stderr
