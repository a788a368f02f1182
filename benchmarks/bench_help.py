"""`dl --help` wall time (median of 5 subprocess runs), and a check that it never imports torch.

Reference, for context only: the startup of a bare `python -c pass` in the same run.
"""

from __future__ import annotations

import common

GOAL_S = 0.3
REPEAT = 5


def heavy_imports() -> list[str]:
    """Heavy top-level modules that `dl --help` imports (from `python -X importtime`)."""
    code = "import sys; sys.argv = ['dl', '--help']; from dlcli.cli import main; main()"
    proc = common.run_measured([common.PYTHON, "-X", "importtime", "-c", code]).check()
    imported = set()
    for line in proc.stderr.splitlines():
        if line.startswith("import time:") and "|" in line:
            imported.add(line.rsplit("|", 1)[1].strip().split(".")[0])
    return sorted(imported & {"torch", "numpy", "pandas", "pyarrow", "matplotlib", "onnx"})


def run() -> list[dict]:
    common.run_measured([common.DL, "--help"]).check()  # warm the file cache
    dl_s = common.median_of([r.seconds for r in common.median_run([common.DL, "--help"], REPEAT)])
    py_s = common.median_of(
        [r.seconds for r in common.median_run([common.PYTHON, "-c", "pass"], REPEAT)]
    )
    heavy = heavy_imports()
    note = f"heavy imports: {', '.join(heavy)}" if heavy else "torch not imported"
    note += f"; {common.load_note()}"
    res = common.result("help_wall_time", dl_s, py_s, "s", dl_s, GOAL_S, kind="abs", note=note)
    if "torch" in heavy:
        res["passed"] = False
    return [res]


if __name__ == "__main__":
    common.main(run)
