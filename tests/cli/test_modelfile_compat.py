"""Model files written before format version 2 (data preprocessing stored under "encoder") still
load and give the same predictions; files from a newer dl are refused with one line."""

from __future__ import annotations

from pathlib import Path

import torch
from conftest import PENGUINS, assert_error


def _as_version_1(model: Path, out: Path) -> None:
    """Rewrite a model file in the version-1 layout: what dl wrote before the rename."""
    data = torch.load(model, map_location="cpu", weights_only=True)
    assert data["version"] == 2 and "preprocessor" in data and "encoder" not in data
    data["version"] = 1
    data["encoder"] = data.pop("preprocessor")
    torch.save(data, out)


def test_version_1_model_file_predicts_and_evaluates_as_before(
    penguins_model: Path, tmp_path: Path, dl_inproc
) -> None:
    old = tmp_path / "old.pt"
    _as_version_1(penguins_model, old)
    rows = PENGUINS / "rows.csv"
    new_pred, old_pred = (dl_inproc("predict", m, rows, "--proba") for m in (penguins_model, old))
    assert old_pred.returncode == 0, old_pred.stderr
    assert old_pred.stdout == new_pred.stdout and len(old_pred.stdout.splitlines()) > 10
    test = PENGUINS / "test.csv"
    new_ev, old_ev = (dl_inproc("evaluate", m, test, "--json", "-q") for m in (penguins_model, old))
    assert old_ev.returncode == 0, old_ev.stderr
    assert old_ev.stdout == new_ev.stdout


def test_model_file_from_a_newer_dl_is_refused_in_one_line(
    penguins_model: Path, tmp_path: Path, dl_inproc
) -> None:
    data = torch.load(penguins_model, map_location="cpu", weights_only=True)
    data["version"] = 99
    newer = tmp_path / "newer.pt"
    torch.save(data, newer)
    before = newer.read_bytes()
    res = dl_inproc("predict", newer, PENGUINS / "rows.csv")
    assert_error(res, str(newer), "version 99", "upgrade dl")
    assert newer.read_bytes() == before
