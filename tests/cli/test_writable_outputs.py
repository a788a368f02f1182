"""Outputs are checked writable before any work (issue 11, class 3): an output in a folder that
exists but cannot be written is one line naming the path, before training, predicting, evaluating
or exporting starts — never a failure after the work, with the work lost."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import PENGUINS, assert_error

from dlcli.errors import UsageError
from dlcli.fileio import check_writable


def _writable(folder: Path) -> bool:
    try:
        (folder / "probe").touch()
    except OSError:
        return False
    (folder / "probe").unlink()
    return True


@pytest.fixture
def locked(tmp_path: Path) -> Iterator[Path]:
    """A folder that exists but cannot be written: mode 0o500; as root (which chmod does not stop,
    os.geteuid() == 0) made immutable with `chattr +i` instead; skipped when neither works."""
    folder = tmp_path / "locked"
    folder.mkdir()
    (folder / "old.txt").write_text("kept\n")
    folder.chmod(0o500)
    immutable = False
    if os.geteuid() == 0 and shutil.which("chattr"):
        immutable = subprocess.run(["chattr", "+i", folder], capture_output=True).returncode == 0
    try:
        if _writable(folder):
            pytest.skip("no way to make a folder unwritable here (root without chattr)")
        yield folder
    finally:
        if immutable:
            subprocess.run(["chattr", "-i", folder], check=True)
        folder.chmod(0o700)


def assert_untouched(folder: Path) -> None:
    assert sorted(p.name for p in folder.iterdir()) == ["old.txt"]


def test_helper_names_the_path_and_the_folder(locked: Path, tmp_path: Path) -> None:
    with pytest.raises(UsageError, match=r"-o .*locked/m\.pt: cannot create files in .*locked"):
        check_writable("-o", locked / "m.pt")
    with pytest.raises(UsageError, match=r"--output-dir .*locked/new/deeper: cannot create files"):
        check_writable("--output-dir", locked / "new" / "deeper", folder=True)  # nearest parent
    check_writable("-o", tmp_path / "new" / "m.pt")  # a folder that atomic_path will create
    check_writable("-o", None)
    check_writable("-o", "-")
    assert_untouched(locked)
    with pytest.raises(UsageError, match="is a folder; name a file"):
        check_writable("-o", tmp_path)
    (tmp_path / "afile").write_text("x")
    with pytest.raises(UsageError, match="afile is a file, not a folder"):
        check_writable("-o", tmp_path / "afile" / "m.pt")
    assert not [p for p in tmp_path.rglob(".dl-write-check.*")]  # the probe is removed


def test_train_refuses_before_training(dl_inproc, locked: Path) -> None:
    out = locked / "model.pt"
    res = dl_inproc("train", PENGUINS / "train.csv", "-o", out, "--epochs", "1")
    line = assert_error(res, f"-o {out}", "cannot create files in", "nothing was done")
    assert "epoch" not in res.stderr.replace(line, "")  # no epoch ran
    assert_untouched(locked)


def test_train_refuses_an_unwritable_run_folder(dl_inproc, tmp_path: Path) -> None:
    run = tmp_path / "model.run"
    run.mkdir()
    with contextlib.ExitStack() as stack:
        run.chmod(0o500)
        stack.callback(run.chmod, 0o700)
        if os.geteuid() == 0:
            if subprocess.run(["chattr", "+i", run], capture_output=True).returncode:
                pytest.skip("root without chattr")
            stack.callback(subprocess.run, ["chattr", "-i", run])
        res = dl_inproc("train", PENGUINS / "train.csv", "-o", tmp_path / "model.pt")
    assert_error(res, f"-o {run}", "cannot create files in")
    assert not (tmp_path / "model.pt").exists()


def test_predict_refuses_before_predicting(dl_inproc, penguins_model: Path, locked: Path) -> None:
    rows = PENGUINS / "test.csv"
    res = dl_inproc("predict", penguins_model, rows, "-o", locked / "p.csv")
    assert_error(res, f"-o {locked / 'p.csv'}", "cannot create files in")
    res = dl_inproc("predict", penguins_model, rows, "--output-dir", locked / "out")
    assert_error(res, "--output-dir", "cannot create files in")
    assert_untouched(locked)


def test_evaluate_refuses_before_evaluating(dl_inproc, penguins_model: Path, locked: Path) -> None:
    res = dl_inproc("evaluate", penguins_model, PENGUINS / "test.csv", "--report", locked)
    assert_error(res, f"--report {locked}", "cannot create files in")
    assert_untouched(locked)


def test_export_refuses_before_exporting(dl_inproc, penguins_model: Path, locked: Path) -> None:
    res = dl_inproc("export", penguins_model, "-o", locked / "m.onnx")
    assert_error(res, f"-o {locked / 'm.onnx'}", "cannot create files in")
    res = dl_inproc("export", penguins_model, "-o", locked)  # a folder: MODEL's name inside it
    assert_error(res, "-o", "cannot create files in")
    assert_untouched(locked)
