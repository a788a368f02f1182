"""Shared helpers for the benchmarks: timing, peak RSS of a child process, seeded data generation and
the one result line every benchmark prints.

A result is a plain dict (see `result`), so `run_all.py` can put every benchmark in one table.
"""

from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
SAMPLE_DATA = REPO / "sample_data"
PYTHON = sys.executable


def dl_executable() -> str:
    """The `dl` console script next to this interpreter (the repo's .venv), else the one on PATH."""
    for candidate in (Path(PYTHON).parent / "dl", REPO / ".venv" / "bin" / "dl"):
        if candidate.exists():
            return str(candidate)
    found = shutil.which("dl")
    if not found:
        raise SystemExit("benchmarks: no `dl` executable found (run `make venv` first)")
    return found


DL = dl_executable()


# --- timing -----------------------------------------------------------------------------------


def time_call(fn: Callable[[], object]) -> float:
    """Wall seconds of one call of `fn`."""
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def best_of(fn: Callable[[], object], repeat: int = 3) -> float:
    """Fastest of `repeat` calls: the figure least disturbed by other work on the machine."""
    return min(time_call(fn) for _ in range(repeat))


# --- child processes --------------------------------------------------------------------------


@dataclass
class Run:
    """One finished child process: wall time, peak resident memory and its output."""

    args: list[str]
    seconds: float
    peak_rss_mb: float
    returncode: int
    stdout: str
    stderr: str

    def check(self) -> Run:
        if self.returncode != 0:
            raise RuntimeError(
                f"command failed ({self.returncode}): {' '.join(self.args)}\n{self.stderr[-2000:]}"
            )
        return self


# Runs one command and writes "seconds maxrss_kib returncode" to argv[1]. A fresh, small process per
# measurement: RUSAGE_CHILDREN only ever grows within a process, and a child spawned straight from a
# big parent (run_all.py after an in-process benchmark) inherits the parent's peak RSS at exec.
_MEASURE = """
import resource, subprocess, sys, time
t0 = time.perf_counter()
code = subprocess.call(sys.argv[2:])
seconds = time.perf_counter() - t0
kib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
if sys.platform == "darwin":
    kib //= 1024
with open(sys.argv[1], "w") as fh:
    fh.write(f"{seconds} {kib} {code}")
"""


def run_measured(
    args: Sequence[str], cwd: str | Path | None = None, env: dict[str, str] | None = None
) -> Run:
    """Run `args` to completion: wall time from spawn to exit and peak RSS of that command alone,
    both measured by a fresh wrapper process (see `_MEASURE`)."""
    args = [str(a) for a in args]
    with (
        tempfile.TemporaryFile() as out,
        tempfile.TemporaryFile() as err,
        tempfile.NamedTemporaryFile("r", suffix=".txt") as res,
    ):
        subprocess.run(
            [PYTHON, "-c", _MEASURE, res.name, *args],
            stdout=out,
            stderr=err,
            cwd=cwd,
            env=None if env is None else {**os.environ, **env},
            check=False,
        )
        seconds, kib, code = res.read().split()
        out.seek(0)
        err.seek(0)
        stdout = out.read().decode("utf-8", "replace")
        stderr = err.read().decode("utf-8", "replace")
    return Run(args, float(seconds), int(kib) / 1024, int(code), stdout, stderr)


def median_run(args: Sequence[str], repeat: int, cwd: str | Path | None = None) -> tuple[Run, ...]:
    """`repeat` measured runs (each checked); use `median_of` on the fields you need."""
    return tuple(run_measured(args, cwd).check() for _ in range(repeat))


def thread_env(threads: int) -> dict[str, str]:
    """Environment that gives a child torch process exactly `threads` intra-op threads
    (DL_THREADS overrides dl's own choice of thread count)."""
    n = str(threads)
    return {"OMP_NUM_THREADS": n, "MKL_NUM_THREADS": n, "DL_THREADS": n}


def load_note() -> str:
    """The 1-minute load average: other work on the machine skews every timing."""
    try:
        return f"load {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores"
    except OSError:
        return f"{os.cpu_count()} cores"


def median_of(values: Sequence[float]) -> float:
    return float(statistics.median(values))


# --- generated data ---------------------------------------------------------------------------


@contextmanager
def temp_dir(prefix: str = "dlbench-"):
    """A fresh temporary folder (never inside the repo), removed afterwards."""
    path = Path(tempfile.mkdtemp(prefix=prefix))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def _write_csv(frame, path: Path) -> Path:
    import pyarrow as pa
    import pyarrow.csv as pc

    pc.write_csv(pa.Table.from_pandas(frame, preserve_index=False), path)
    return path


def write_linear_binary(path: Path, rows: int = 200_000, cols: int = 50, seed: int = 0) -> Path:
    """`cols` float features and a 0/1 label from a random linear rule plus noise."""
    import pandas as pd

    rng = np.random.default_rng(seed)
    x = rng.standard_normal((rows, cols))
    w = rng.standard_normal(cols) / np.sqrt(cols)
    y = ((x @ w + 0.3 * rng.standard_normal(rows)) > 0).astype(np.int64)
    frame = pd.DataFrame(np.round(x, 4), columns=[f"x{i:02d}" for i in range(cols)])
    frame["label"] = y
    return _write_csv(frame, path)


def write_mixed(path: Path, rows: int = 1_000_000, seed: int = 0, label: bool = True) -> Path:
    """18 float columns, one categorical text column (10 levels) and an integer label in {0,1,2}."""
    import pandas as pd

    rng = np.random.default_rng(seed)
    x = rng.standard_normal((rows, 18))
    levels = np.array([f"level_{c}" for c in "abcdefghij"], dtype=object)
    codes = rng.integers(0, len(levels), rows)
    frame = pd.DataFrame(np.round(x, 4), columns=[f"f{i:02d}" for i in range(18)])
    frame["color"] = levels[codes]
    if label:
        score = x[:, 0] + 0.5 * x[:, 1] - 0.5 * x[:, 2] + 0.2 * (codes % 3)
        score += 0.5 * rng.standard_normal(rows)
        frame["label"] = np.digitize(score, [-0.5, 0.5]).astype(np.int64)
    return _write_csv(frame, path)


# --- results ----------------------------------------------------------------------------------


def result(
    name: str,
    dl: float,
    reference: float | None,
    unit: str,
    figure: float,
    goal: float,
    *,
    kind: str = "ratio",
    higher_is_better: bool = False,
    note: str = "",
) -> dict:
    """One benchmark figure; printed at once, returned for `run_all.py`.

    kind "ratio": `figure` is dl/reference and `goal` the largest acceptable ratio.
    kind "abs": `figure` is the dl value itself (in `unit`) against an absolute goal.
    kind "diff": `figure` is dl - reference (higher is better), goal the smallest acceptable.
    """
    passed = figure >= goal if higher_is_better else figure <= goal
    res = {
        "name": name,
        "dl": dl,
        "reference": reference,
        "unit": unit,
        "figure": figure,
        "goal": goal,
        "kind": kind,
        "higher_is_better": higher_is_better,
        "passed": bool(passed),
        "note": note,
    }
    print(format_line(res), flush=True)
    return res


def fmt(value: float | None, unit: str = "") -> str:
    if value is None:
        return "-"
    if not unit:  # scores (accuracy, R²): fixed decimals read better in a column
        return f"{value:.3f}"
    text = f"{value:.3g}" if abs(value) < 1000 else f"{value:,.0f}"
    return f"{text} {unit}".strip()


def figure_text(res: dict) -> str:
    if res["kind"] == "ratio":
        return f"ratio {res['figure']:.2f}"
    if res["kind"] == "diff":
        return f"diff {res['figure']:+.3f}"
    return fmt(res["figure"], res["unit"])


def goal_text(res: dict) -> str:
    op = ">=" if res["higher_is_better"] else "<="
    if res["kind"] == "abs":
        op = ">" if res["higher_is_better"] else "<"
        return f"{op} {fmt(res['goal'], res['unit'])}"
    return f"{op} {res['goal']:+.2f}" if res["kind"] == "diff" else f"{op} {res['goal']:.2f}"


def format_line(res: dict) -> str:
    verdict = "PASS" if res["passed"] else "FAIL"
    line = (
        f"{res['name']}: dl {fmt(res['dl'], res['unit'])} vs reference "
        f"{fmt(res['reference'], res['unit'])} -> {figure_text(res)} (goal {goal_text(res)}) {verdict}"
    )
    return line + (f"  [{res['note']}]" if res["note"] else "")


def main(run: Callable[[], list[dict]]) -> None:
    """Entry point of a single benchmark script: run it; always exit 0 (benchmarks report)."""
    run()
