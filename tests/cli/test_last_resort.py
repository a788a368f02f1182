"""The last-resort line (issue 11, class 3): an exception that no DLError caught is still one line,
exit 1, and it names the command and the inputs that caused it; --debug keeps the traceback."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import PENGUINS, assert_error

from dlcli import modelfile


@pytest.fixture
def broken_load(monkeypatch: pytest.MonkeyPatch) -> None:
    """Reading a model file fails in a way no DLError covers (a stand-in for a bug)."""

    def load(path: object, *args: object, **kw: object) -> dict:
        raise ZeroDivisionError("division by zero\n  in a frame\n" + "x" * 1000)

    monkeypatch.setattr(modelfile, "load", load)


def test_internal_error_names_command_and_inputs(
    dl_inproc, broken_load, penguins_model: Path, tmp_path: Path
) -> None:
    rows = PENGUINS / "test.csv"
    out = tmp_path / "p.csv"
    res = dl_inproc("predict", penguins_model, rows, "-o", out, "--proba")
    assert res.returncode == 1 and res.stdout == ""
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in res.stderr, res.stderr
    line = lines[0]
    assert line.startswith(f"error: internal error in `dl predict` on {penguins_model}, {rows}: ")
    assert "ZeroDivisionError: division by zero in a frame x" in line and str(out) not in line
    assert len(line) < 600 and line.endswith("please report it with the command line)")


def test_debug_keeps_the_traceback(dl_inproc, broken_load, penguins_model: Path) -> None:
    with pytest.raises(ZeroDivisionError):
        dl_inproc("--debug", "evaluate", penguins_model, PENGUINS / "test.csv")


def test_running_out_of_memory_is_one_line_not_an_internal_error(run_dl_bounded, tmp_path):
    """A network the size limit was raised for, on a machine (here: an address-space limit) that
    cannot hold it: the allocator's failure names the command, its inputs and what to change."""
    spec = tmp_path / "big.yaml"
    spec.write_text("layers:\n  - dense: 300000000\n")  # 8.4 GB of weights: fails at build
    res = run_dl_bounded(
        "train",
        PENGUINS / "train.csv",
        "--spec",
        spec,
        "-o",
        tmp_path / "m.pt",
        "--max-model-gb",
        "1000",
        "--epochs",
        "1",
        memory_gb=1.5,
    )
    line = assert_error(res, "out of memory", "train.csv", "smaller network", code=1)
    assert "internal error" not in line
    assert not (tmp_path / "m.pt").exists()
    spec.write_text("layers:\n  - dense: 8000000\n")  # 0.35 GB builds; Adam's state does not fit
    res = run_dl_bounded(
        "train",
        PENGUINS / "train.csv",
        "--spec",
        spec,
        "-o",
        tmp_path / "m.pt",
        "--max-model-gb",
        "1000",
        "--epochs",
        "1",
        memory_gb=1.5,
    )
    assert_error(res, "out of memory", "train.csv", code=1)
    assert not (tmp_path / "m.pt").exists()
