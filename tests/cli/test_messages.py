"""Issue 11, "wrong or misleading messages": each error is one true line."""

from __future__ import annotations

import os
import pickle

import pytest
import torch
from conftest import PENGUINS, SAMPLES, assert_error


class _Thing:
    """A custom class: pickling an instance stores a reference to code."""

    def __init__(self) -> None:
        self.x = 1


class _Payload:
    """Unpickled by a trusting loader, this would run a shell command (here: make a marker file)."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


PICKLED = "contains pickled code or objects, not plain data; refused (dl never runs code from a model file)"


def test_a_model_file_holding_a_custom_object_is_refused_as_pickled_code(
    tmp_path, dl_inproc
) -> None:
    model = tmp_path / "custom.pt"
    torch.save({"format": "dlcli-model", "version": 2, "obj": _Thing()}, model)
    res = dl_inproc("predict", model, PENGUINS / "rows.csv")
    assert_error(res, str(model), PICKLED)


@pytest.mark.parametrize("how", ["torch.save", "pickle.dump"])
def test_a_model_file_that_would_run_a_command_is_refused_and_runs_nothing(
    tmp_path, dl_inproc, how
) -> None:
    marker = tmp_path / "ran"
    model = tmp_path / "evil.pt"
    body = {"format": "dlcli-model", "version": 2, "x": _Payload(str(marker))}
    if how == "torch.save":
        torch.save(body, model)
    else:
        model.write_bytes(pickle.dumps(body))
    res = dl_inproc("predict", model, PENGUINS / "rows.csv")
    assert_error(res, str(model), PICKLED)
    assert not marker.exists(), "dl ran code from a model file"
    assert len(res.stderr.strip().splitlines()) == 1, res.stderr  # no torch warning either


def test_random_bytes_are_not_a_model_file(tmp_path, dl_inproc) -> None:
    model = tmp_path / "noise.pt"
    model.write_bytes(bytes(range(256)) * 3 + os.urandom(512))
    res = dl_inproc("predict", model, PENGUINS / "rows.csv")
    line = assert_error(res, str(model), "not a dl model file")
    assert "pickled code" not in line


def test_init_from_a_table_model_on_images_names_the_model_not_arch_none(
    penguins_model, dl_inproc, tmp_path
) -> None:
    res = dl_inproc(
        "train",
        SAMPLES / "digits" / "train",
        "--init-from",
        penguins_model,
        "-o",
        tmp_path / "m.pt",
        "--epochs",
        "1",
        "--quiet",
        "--no-plots",
    )
    assert_error(res, f"--init-from {penguins_model}", "image data")
    assert "None" not in res.stderr, res.stderr
    assert len(res.stderr.strip().splitlines()) == 1, res.stderr


@pytest.mark.parametrize(
    ("args", "line"),
    [
        (["--epochs", "0"], "--epochs 0: must be at least 1"),
        (["--batch-size", "0"], "--batch-size 0: must be at least 1"),
        (["--lr", "-1"], "--lr -1: must be at least 0"),
        (["--lr", "nan"], "--lr nan: not a number"),
        (["--lr", "inf"], "--lr inf: not a finite number"),
        (["--momentum", "1"], "--momentum 1: must be at most 0.999"),
        (["--epochs", "abc"], "--epochs abc: must be a whole number"),
        (["--val-split", "2"], "--val-split 2: must be more than 0 and less than 1"),
    ],
)
def test_an_out_of_range_option_value_is_one_error_line(args, line, dl_inproc, tmp_path) -> None:
    res = dl_inproc("train", PENGUINS / "train.csv", "-o", tmp_path / "m.pt", "--quiet", *args)
    assert_error(res, line)
    assert res.stderr.strip() == f"error: {line}", res.stderr
    assert "Usage:" not in res.stderr and "╭" not in res.stderr


def test_an_unknown_option_or_command_is_one_error_line(run_dl) -> None:
    res = run_dl("train", "--bogus")
    assert_error(res, "no such option: --bogus")
    assert len(res.stderr.strip().splitlines()) == 1, res.stderr
    assert_error(run_dl("nosuch"), "no such command 'nosuch'")


def test_help_version_and_a_bare_command_are_unchanged(run_dl) -> None:
    res = run_dl("--help")
    assert res.returncode == 0 and "Usage: dl" in res.stdout and res.stderr == ""
    res = run_dl("--version")
    assert res.returncode == 0 and res.stdout.startswith("dl ") and res.stderr == ""
    for args in ([], ["train"]):
        res = run_dl(*args)
        assert res.returncode == 2 and "Usage: dl" in res.stdout, res
        assert "error:" not in res.stderr


def test_a_negative_or_huge_seed_is_one_error_line(dl_inproc) -> None:
    for seed in ("-1", str(2**40)):
        res = dl_inproc("train", PENGUINS / "train.csv", "--seed", seed, "-o", "/nonexistent/m.pt")
        assert_error(res, f"--seed {seed}")
