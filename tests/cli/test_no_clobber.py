"""Outputs never overwrite inputs (issue 11): every command that writes refuses an output that is one
of its inputs — the same name, a symlink to it or a hard link to it — with one line, before any
work, and the input's bytes stay as they were."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from conftest import PENGUINS, assert_error

from dlcli.errors import UsageError
from dlcli.fileio import refuse_overwriting_inputs

LINKS = ("same", "symlink", "hardlink")


def alias(target: Path, how: str) -> Path:
    """A path naming the file `target`: itself, a symlink to it or a hard link to it."""
    if how == "same":
        return target
    link = target.with_name(f"{how}-{target.name}")
    if how == "symlink":
        link.symlink_to(target)
    else:
        os.link(target, link)
    return link


@pytest.fixture
def rows(tmp_path: Path) -> Path:
    """A private copy of the penguins test table (labelled, so evaluate can read it too)."""
    path = tmp_path / "rows.csv"
    shutil.copyfile(PENGUINS / "test.csv", path)
    return path


@pytest.fixture
def model(tmp_path: Path, penguins_model: Path) -> Path:
    """A private copy of the shared penguins model, so a failure cannot spoil the session's one."""
    path = tmp_path / "model.pt"
    shutil.copyfile(penguins_model, path)
    return path


@pytest.mark.parametrize("how", LINKS)
def test_train_refuses_output_onto_data(dl_inproc, rows: Path, how: str) -> None:
    before = rows.read_bytes()
    out = alias(rows, how)
    res = dl_inproc("train", rows, "-o", out, "--epochs", "1", "--quiet", "--no-plots")
    line = assert_error(res, "-o", "is the input", "overwrite", "pick another -o")
    assert str(rows) in line
    assert rows.read_bytes() == before
    assert not out.with_name(out.stem + ".run").exists()  # refused before the run folder


@pytest.mark.parametrize("flag", ["--val", "--spec"])
def test_train_refuses_output_onto_other_inputs(
    dl_inproc, tmp_path: Path, rows: Path, flag: str
) -> None:
    given = {"--val": rows, "--spec": tmp_path / "spec.yaml"}[flag]
    if flag == "--spec":
        given.write_text("layers:\n  - dense: 8\n")
    before = given.read_bytes()
    out = alias(given, "hardlink")
    res = dl_inproc("train", PENGUINS / "train.csv", flag, given, "-o", out, "--epochs", "1")
    assert_error(res, "is the input", str(given))
    assert given.read_bytes() == before


def test_train_refuses_run_folder_inside_image_folder(dl_inproc, tmp_path: Path) -> None:
    images = tmp_path / "images"
    (images / "cat").mkdir(parents=True)
    res = dl_inproc("train", images, "-o", images / "model.pt", "--epochs", "1")
    assert_error(res, "run folder", "inside the input folder", "pick another -o")
    assert sorted(p.name for p in images.iterdir()) == ["cat"]


def test_train_to_another_path_still_works(dl_inproc, tmp_path: Path, rows: Path) -> None:
    before = rows.read_bytes()
    out = tmp_path / "out.pt"
    res = dl_inproc("train", rows, "-o", out, "--epochs", "1", "--quiet", "--no-plots")
    assert res.returncode == 0, res.stderr
    assert out.is_file() and rows.read_bytes() == before


@pytest.mark.parametrize("how", LINKS)
def test_predict_refuses_output_onto_input_table(
    dl_inproc, penguins_model: Path, rows: Path, how: str
) -> None:
    before = rows.read_bytes()
    res = dl_inproc("predict", penguins_model, rows, "-o", alias(rows, how))
    assert_error(res, "-o", "is the input", str(rows), "pick another -o")
    assert rows.read_bytes() == before


@pytest.mark.parametrize("how", LINKS)
def test_predict_refuses_output_onto_model(dl_inproc, model: Path, rows: Path, how: str) -> None:
    before = model.read_bytes()
    res = dl_inproc("predict", model, rows, "-o", alias(model, how))
    assert_error(res, "-o", "is the input", str(model))
    assert model.read_bytes() == before


def test_predict_refuses_an_image_output_inside_the_input_folder(
    dl_inproc, tmp_path: Path, penguins_model: Path
) -> None:
    images = tmp_path / "images"
    (images / "cat").mkdir(parents=True)
    (images / "cat" / "1.png").write_bytes(b"not really a png")
    res = dl_inproc("predict", penguins_model, images, "-o", images / "cat" / "1.png")
    assert_error(res, "-o", "inside the input folder", "pick another -o")
    assert (images / "cat" / "1.png").read_bytes() == b"not really a png"


def test_predict_refuses_output_dir_onto_model(dl_inproc, model: Path) -> None:
    before = model.read_bytes()
    res = dl_inproc("predict", model, "--samples", "2", "--output-dir", model)
    assert_error(res, "--output-dir", "is the input", "pick another --output-dir")
    assert model.read_bytes() == before


def test_predict_to_another_path_still_works(
    dl_inproc, tmp_path: Path, penguins_model: Path, rows: Path
) -> None:
    before = rows.read_bytes()
    out = tmp_path / "preds.csv"
    res = dl_inproc("predict", penguins_model, rows, "-o", out)
    assert res.returncode == 0, res.stderr
    assert out.read_text().startswith("prediction") and rows.read_bytes() == before


@pytest.mark.parametrize("how", LINKS)
def test_evaluate_refuses_report_onto_data(
    dl_inproc, penguins_model: Path, rows: Path, how: str
) -> None:
    before = rows.read_bytes()
    res = dl_inproc("evaluate", penguins_model, rows, "--report", alias(rows, how))
    assert_error(res, "--report", "is the input", "pick another --report")
    assert rows.read_bytes() == before


def test_evaluate_refuses_report_file_onto_data(
    dl_inproc, tmp_path: Path, penguins_model: Path, rows: Path
) -> None:
    """--report DIR writes DIR/metrics.json: that file must not be the data either."""
    before = rows.read_bytes()
    report = tmp_path / "report"
    report.mkdir()
    (report / "metrics.json").symlink_to(rows)
    res = dl_inproc("evaluate", penguins_model, rows, "--report", report)
    assert_error(res, "--report", "metrics.json", "is the input")
    assert rows.read_bytes() == before


@pytest.mark.parametrize("where", ["same", "inside"])
def test_evaluate_refuses_errors_folder_in_the_images(
    dl_inproc, tmp_path: Path, penguins_model: Path, where: str
) -> None:
    images = tmp_path / "images"
    (images / "cat").mkdir(parents=True)
    errors = images if where == "same" else images / "errors"
    res = dl_inproc("evaluate", penguins_model, images, "--errors", errors)
    assert_error(res, "--errors", "input", "pick another --errors")
    assert sorted(p.name for p in images.iterdir()) == ["cat"]


def test_evaluate_report_elsewhere_still_works(
    dl_inproc, tmp_path: Path, penguins_model: Path, rows: Path
) -> None:
    before = rows.read_bytes()
    res = dl_inproc("evaluate", penguins_model, rows, "--report", tmp_path / "rep", "--quiet")
    assert res.returncode == 0, res.stderr
    assert (tmp_path / "rep" / "metrics.json").is_file() and rows.read_bytes() == before


@pytest.mark.parametrize("how", LINKS)
def test_export_refuses_output_onto_model(dl_inproc, model: Path, how: str) -> None:
    before = model.read_bytes()
    res = dl_inproc("export", model, "-o", alias(model, how))
    assert_error(res, "-o", "is the input", str(model), "pick another -o")
    assert model.read_bytes() == before


def test_helper_skips_stdin_missing_and_new_paths(tmp_path: Path) -> None:
    data = tmp_path / "data.csv"
    data.write_text("a\n1\n")
    refuse_overwriting_inputs("-o", tmp_path / "new.csv", [data, "-", None, tmp_path / "gone"])
    refuse_overwriting_inputs("-o", None, [data])
    refuse_overwriting_inputs("-o", "-", [data])
    with pytest.raises(UsageError, match="is the input"):
        refuse_overwriting_inputs("-o", tmp_path / "." / "data.csv", [data])
    dangling = tmp_path / "dangling.csv"
    dangling.symlink_to(tmp_path / "nowhere.csv")
    refuse_overwriting_inputs("-o", dangling, [data])  # names no input: nothing to clobber


@pytest.mark.parametrize("how", LINKS)
def test_tune_refuses_output_onto_data_or_space(dl_inproc, rows: Path, tmp_path: Path, how: str):
    space = tmp_path / "space.yaml"
    space.write_text("layers:\n  - dense: {choice: [4, 8]}\n")
    for victim in (rows, space):
        before = victim.read_bytes()
        out = alias(victim, how)
        res = dl_inproc("tune", rows, "--space", space, "-o", out, "--trials", "1")
        assert_error(res, "-o", "is the input", "overwrite")
        assert victim.read_bytes() == before
        assert not out.with_name(out.stem + ".tune").exists()
        if out != victim:
            out.unlink()
