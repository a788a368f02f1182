"""`dl train --stream` on a ~2 GB CSV: peak memory of the whole `dl` process tree, and the
validation accuracy against in-memory training (`--no-stream`) on the same file. Slow (minutes):
run_all.py runs it only when asked (`--only stream` or `--slow`).

Data: ROWS rows (default 9M, ~2 GB; DL_BENCH_STREAM_ROWS overrides) of 20 float columns (one with
5% missing), a 6-level text column and a yes/no label with a non-linear rule, written in chunks
with pyarrow into a temporary folder that is deleted afterwards. Both runs use the same settings
(EPOCHS epochs of batch BATCH, the default held-out share 0.2): ten epochs of 7M rows at defaults
would take an hour per run on two cores.
"""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import common
import numpy as np

ROWS = int(os.environ.get("DL_BENCH_STREAM_ROWS") or 9_000_000)
CHUNK = 500_000
EPOCHS = 1
BATCH = 1024
GOAL_MB = 1024.0
GOAL_GAP = -0.01  # streamed accuracy at most 1 point below in-memory


def tables(rows: int, seed: int = 0) -> Iterator[Any]:
    """The generated table as pyarrow Tables of CHUNK rows (bounded memory while writing)."""
    import pyarrow as pa

    rng = np.random.default_rng(seed)
    w = rng.normal(size=20).astype(np.float32) / 3
    levels = np.array(["red", "green", "blue", "teal", "grey", "pink"])
    for start in range(0, rows, CHUNK):
        n = min(CHUNK, rows - start)
        x = rng.normal(size=(n, 20)).astype(np.float32)
        color = rng.integers(0, len(levels), n)
        logit = x @ w + 0.8 * x[:, 0] * x[:, 1] + np.linspace(-1, 1, len(levels))[color]
        cols = {f"x{i:02d}": x[:, i] for i in range(20)}
        cols["x19"] = pa.array(x[:, 19], mask=rng.random(n) < 0.05)
        cols["color"] = levels[color]
        cols["label"] = np.where(logit + rng.logistic(size=n) > 0, "yes", "no")
        yield pa.table(cols, schema=_schema())


def write_big(path: Path, rows: int, seed: int = 0) -> Path:
    """The generated table as CSV, CHUNK rows at a time."""
    import pyarrow.csv as pc

    with pc.CSVWriter(path, _schema()) as writer:
        for table in tables(rows, seed):
            writer.write_table(table)
    return path


def _schema():
    import pyarrow as pa

    fields = [pa.field(f"x{i:02d}", pa.float32()) for i in range(20)]
    return pa.schema([*fields, pa.field("color", pa.string()), pa.field("label", pa.string())])


def _tree_rss_kib(root: int) -> int:
    """Resident memory of `root` and all its descendants, from /proc (Linux)."""
    children: dict[int, list[int]] = {}
    rss: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as fh:
                fields = fh.read().rsplit(")", 1)[1].split()
            with open(f"/proc/{entry}/statm") as fh:
                pages = int(fh.read().split()[1])
        except OSError:
            continue
        pid, ppid = int(entry), int(fields[1])
        children.setdefault(ppid, []).append(pid)
        rss[pid] = pages * os.sysconf("SC_PAGE_SIZE") // 1024
    total, todo = 0, [root]
    while todo:
        pid = todo.pop()
        total += rss.get(pid, 0)
        todo.extend(children.get(pid, []))
    return total


def run_tree(args: list) -> tuple[float, float, dict, str]:
    """Run `args`; (wall seconds, peak RSS MB of the process tree sampled every 0.1 s, parsed
    --json stdout, stderr)."""
    args = [str(a) for a in args]
    with tempfile.TemporaryFile("w+") as out_fh, tempfile.TemporaryFile("w+") as err_fh:
        t0 = time.perf_counter()
        proc = subprocess.Popen(args, stdout=out_fh, stderr=err_fh, text=True)
        peak = 0
        while proc.poll() is None:
            peak = max(peak, _tree_rss_kib(proc.pid))
            time.sleep(0.1)
        seconds = time.perf_counter() - t0
        out_fh.seek(0)
        err_fh.seek(0)
        out, err = out_fh.read(), err_fh.read()
    if proc.returncode != 0:
        raise RuntimeError(f"command failed ({proc.returncode}): {' '.join(args)}\n{err[-2000:]}")
    return seconds, peak / 1024, json.loads(out), err


def run() -> list[dict]:
    with common.temp_dir() as tmp:
        t0 = time.perf_counter()
        csv = write_big(tmp / "big.csv", ROWS)
        made = time.perf_counter() - t0
        size_gb = csv.stat().st_size / 1e9
        load = common.load_note()
        base = [common.DL, "train", csv, "--epochs", EPOCHS, "--batch-size", BATCH, "--json"]
        s_wall, s_rss, s_sum, _ = run_tree([*base, "--stream", "-o", tmp / "s.pt"])
        m_wall, m_rss, m_sum, _ = run_tree([*base, "--no-stream", "-o", tmp / "m.pt"])
    s_acc, m_acc = s_sum["metrics"]["accuracy"], m_sum["metrics"]["accuracy"]
    note = (
        f"{ROWS:,} rows, {size_gb:.2f} GB written in {made:.0f} s; {EPOCHS} epoch(s), batch "
        f"{BATCH}; wall stream {s_wall:.0f} s (load {s_sum['load_seconds']:.0f} s, train "
        f"{s_sum['train_seconds']:.0f} s) vs in-memory {m_wall:.0f} s (load "
        f"{m_sum['load_seconds']:.0f} s, train {m_sum['train_seconds']:.0f} s); {load}"
    )
    return [
        common.result(
            "stream_2GB_peak_rss", s_rss, m_rss, "MB", s_rss, GOAL_MB, kind="abs", note=note
        ),
        common.result(
            "stream_2GB_val_accuracy",
            s_acc,
            m_acc,
            "",
            s_acc - m_acc,
            GOAL_GAP,
            kind="diff",
            higher_is_better=True,
        ),
    ]


if __name__ == "__main__":
    common.main(run)
