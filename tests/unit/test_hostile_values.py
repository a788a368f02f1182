"""Hostile values in tables (issue 11, class 4): infinite or huge numbers are refused with one line
naming the column and the data rows, at fit and at predict time, with no RuntimeWarning; ragged
rows read from stdin name their line as they do from a file."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import assert_error

pytestmark = pytest.mark.filterwarnings("error::RuntimeWarning")  # a leaked warning fails

CLEAN = "a,b,y\n" + "".join(f"{i},{i + 1},{i % 2}\n" for i in range(1, 13))


def table(tmp_path, name: str, rows: dict[int, str], text: str = CLEAN) -> str:
    """CLEAN with data row i (1-based) replaced by rows[i]."""
    lines = text.splitlines()
    for i, row in rows.items():
        lines[i] = row
    path = tmp_path / name
    path.write_text("\n".join(lines) + "\n")
    return str(path)


@pytest.mark.parametrize(
    ("rows", "words"),
    [
        ({2: "2,inf,1"}, ["column 'b', row 2:", "fix or remove this row"]),
        ({3: "3,1e308,0", 5: "5,-1e308,0"}, ["column 'b', rows 3, 5:", "these rows"]),
        (
            {1: "-inf,2,1", 4: "inf,5,0", 6: "Infinity,1,0", 9: "1e39,1,1"},
            ["'a', rows 1, 4, 6 and 1 more"],
        ),
    ],
)
def test_train_refuses_infinite_or_huge_features(tmp_path, dl_inproc, rows, words):
    path = table(tmp_path, "t.csv", rows)
    res = dl_inproc("train", path, "-o", tmp_path / "m.pt", "--epochs", "1", "--no-plots")
    line = assert_error(res, "t.csv", "infinite or too large", *words)
    assert "learning rate" not in line
    assert not (tmp_path / "m.pt").exists()


def test_rows_are_those_of_the_file_after_rows_without_label(tmp_path, dl_inproc):
    path = table(tmp_path, "t.csv", {1: "1,2,", 2: "2,3,", 7: "7,inf,1"})
    res = dl_inproc("train", path, "-o", tmp_path / "m.pt", "--epochs", "1", "--no-plots")
    assert_error(res, "column 'b', row 7:")


def test_regression_target_too_large(tmp_path, dl_inproc):
    text = "a,b,y\n" + "".join(f"{i},{i % 3},{i * 0.5}\n" for i in range(1, 13))
    path = table(tmp_path, "t.csv", {4: "4,1,1e308"}, text)
    args = ("train", path, "-o", tmp_path / "m.pt", "--task", "regression", "--no-plots")
    assert_error(dl_inproc(*args), "column 'y', row 4:", "infinite or too large")


def test_predict_and_evaluate_refuse_new_rows_the_same_way(tmp_path, dl_inproc):
    model = tmp_path / "m.pt"
    train = table(tmp_path, "train.csv", {})
    res = dl_inproc("train", train, "-o", model, "--epochs", "1", "--no-plots", "--quiet")
    assert res.returncode == 0, res.stderr
    bad = table(tmp_path, "new.csv", {3: "3,1e308,1", 8: "inf,2,0"})
    assert_error(dl_inproc("predict", model, bad), "new.csv: column 'a', row 8:")
    assert_error(dl_inproc("evaluate", model, bad), "new.csv: column 'a', row 8:")
    text = Path(bad).read_text()
    assert_error(dl_inproc("predict", model, "-", input=text), "<stdin>: column 'a', row 8:")


def trained(tmp_path, dl_inproc) -> str:
    model = tmp_path / "m.pt"
    res = dl_inproc("train", table(tmp_path, "train.csv", {}), "-o", model, "--epochs", "1")
    assert res.returncode == 0, res.stderr
    return str(model)


def test_ragged_row_on_stdin_names_its_line(tmp_path, dl_inproc):
    model = trained(tmp_path, dl_inproc)
    text = "a,b\n" + "1,2\n" * 5 + "1,2,3\n" + "1,2\n" * 3
    path = tmp_path / "rows.csv"
    path.write_text(text)
    from_file = assert_error(dl_inproc("predict", model, path), "line 7 has 3 fields")
    from_stdin = assert_error(
        dl_inproc("predict", model, "-", input=text), "<stdin>: line 7 has 3 fields"
    )
    assert from_stdin == from_file.replace(str(path), "<stdin>")
