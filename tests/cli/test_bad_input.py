"""Bad input: each case is one clear `error:` line, a non-zero exit, no traceback, and files that
existed before (a model, a predictions file) are left byte for byte as they were."""

from __future__ import annotations

import csv
import io
import json
import shutil
from pathlib import Path

import pytest
from conftest import PENGUINS, assert_error, flat

PRECIOUS = b"an existing good model: these bytes must survive every failed run\x00\x01\x02"
SPECS = {
    "yaml_syntax": ("layers:\n  - dense: 64\n   - relu\n", ["bad.yaml", "YAML", "line 3"]),
    "unknown_layer": (
        "layers:\n  - dense: 64\n  - frobnicate\n",
        ["bad.yaml", "layers[1]", "unknown layer type 'frobnicate'"],
    ),
    "misspelt_layer": ("layers:\n  - dnese: 64\n", ["layers[0]", "'dnese'", "did you mean dense"]),
    "wrong_option_type": (
        "layers:\n  - dense: lots\n",
        ["bad.yaml", "layers[0]", "dense", "'units'", "'lots'"],
    ),
    "unknown_option": (
        "layers:\n  - {type: dense, units: 8, colour: red}\n",
        ["layers[0]", "unknown field 'colour'"],
    ),
    "not_a_mapping": ("- dense: 8\n", ["bad.yaml", "mapping"]),
}


def penguin_rows() -> list[list[str]]:
    with open(PENGUINS / "train.csv", newline="") as fh:
        return list(csv.reader(fh))


def write_csv(path: Path, rows: list[list[str]]) -> Path:
    with open(path, "w", newline="") as fh:
        csv.writer(fh, lineterminator="\n").writerows(rows)
    return path


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    """A work folder holding a pre-existing model.pt of known bytes."""
    (tmp_path / "model.pt").write_bytes(PRECIOUS)
    return tmp_path


def assert_untouched(folder: Path) -> None:
    """model.pt keeps its bytes; no run folder and no half-written temporary files appear."""
    assert (folder / "model.pt").read_bytes() == PRECIOUS
    assert not (folder / "model.run").exists()
    leftovers = [p.name for p in folder.iterdir() if p.name.startswith(".") or p.suffix == ".tmp"]
    assert leftovers == []


def _bad_training_file(kind: str, folder: Path) -> tuple[str, list[str], list[str]]:
    """(data file name, extra args, words the error line must hold) for a kind of bad file."""
    rows = penguin_rows()
    header, body = rows[0], rows[1:]
    if kind == "missing":
        return "nope.csv", [], ["nope.csv", "not found"]
    if kind == "empty":
        (folder / "empty.csv").write_bytes(b"")
        return "empty.csv", [], ["empty.csv", "empty"]
    if kind == "blank_lines":
        (folder / "blank.csv").write_bytes(b"\n\n\n")
        return "blank.csv", [], ["blank.csv", "no header"]
    if kind == "folder":
        (folder / "data").mkdir()
        return "data", [], ["data", "no images"]  # a folder is read as an image folder
    if kind == "header_only":
        write_csv(folder / "header.csv", [header])
        return "header.csv", [], ["header.csv", "no data rows"]
    if kind == "ragged":
        write_csv(folder / "ragged.csv", [header, *body[:5], [*body[5], "EXTRA"], *body[6:]])
        return "ragged.csv", [], ["ragged.csv", "line 7", "9 fields", "header has 8"]
    if kind == "non_utf8_cell":
        text = (PENGUINS / "train.csv").read_bytes().replace(b"female", b"f\xe9male", 1)
        (folder / "latin1.csv").write_bytes(text)
        return "latin1.csv", [], ["latin1.csv", "column 'sex'", "not UTF-8"]
    if kind == "non_utf8_header":
        text = (PENGUINS / "train.csv").read_bytes().replace(b"island", b"\xeele", 1)
        (folder / "latin1h.csv").write_bytes(text)
        return "latin1h.csv", [], ["latin1h.csv", "header", "not UTF-8"]
    if kind == "duplicate_columns":
        write_csv(folder / "dup.csv", [["sex", *header[1:]], *body])
        return "dup.csv", [], ["dup.csv", "duplicate column", "sex"]
    if kind == "unknown_target":
        write_csv(folder / "data.csv", rows)
        return "data.csv", ["--target", "spieces"], ["data.csv", "no column 'spieces'", "species"]
    if kind == "one_class":
        write_csv(folder / "one.csv", [header, *[[*r[:-1], "Adelie"] for r in body]])
        return "one.csv", [], ["one.csv", "'species'", "one class", "'Adelie'"]
    if kind == "all_targets_missing":
        write_csv(folder / "nolabels.csv", [header, *[[*r[:-1], ""] for r in body]])
        return "nolabels.csv", [], ["nolabels.csv", "'species'", "no values"]
    if kind == "text_regression_target":
        write_csv(folder / "reg.csv", rows)
        return (
            "reg.csv",
            ["--task", "regression"],
            ["reg.csv", "'species'", "non-numeric", "'Adelie'", "regression"],
        )
    raise AssertionError(kind)


@pytest.mark.parametrize(
    "kind",
    [
        "missing",
        "empty",
        "blank_lines",
        "folder",
        "header_only",
        "ragged",
        "non_utf8_cell",
        "non_utf8_header",
        "duplicate_columns",
        "unknown_target",
        "one_class",
        "all_targets_missing",
        "text_regression_target",
    ],
)
def test_train_rejects_bad_data(kind: str, folder: Path, dl_inproc) -> None:
    data, extra, words = _bad_training_file(kind, folder)
    res = dl_inproc("train", data, "-o", "model.pt", "--epochs", "1", *extra, cwd=folder)
    assert_error(res, *words)
    assert_untouched(folder)


def test_bad_validation_file(folder: Path, dl_inproc) -> None:
    shutil.copy(PENGUINS / "train.csv", folder / "data.csv")
    (folder / "val.csv").write_bytes(b"")
    res = dl_inproc("train", "data.csv", "--val", "val.csv", "--epochs", "1", cwd=folder)
    assert_error(res, "val.csv", "empty")
    assert_untouched(folder)


def test_missing_targets_are_dropped_with_a_note(folder: Path, dl_inproc) -> None:
    rows = penguin_rows()
    body = [[*r[:-1], ""] if i % 10 == 0 else r for i, r in enumerate(rows[1:])]
    write_csv(folder / "holes.csv", [rows[0], *body])
    dropped = sum(1 for r in body if r[-1] == "")
    res = dl_inproc("train", "holes.csv", "-o", "new.pt", "--epochs", "1", "--no-plots", cwd=folder)
    assert res.returncode == 0, res.stderr
    assert f"dropped {dropped} rows with no value in target 'species'" in flat(res.stderr)
    from dlcli import modelfile

    classes = modelfile.load(folder / "new.pt")["preprocessor"]["target"]["classes"]
    assert classes == ["Adelie", "Chinstrap", "Gentoo"]  # an empty label is not a class


def test_missing_regression_targets_are_dropped(folder: Path, dl_inproc) -> None:
    from conftest import DIABETES

    lines = (DIABETES / "train.csv").read_text().splitlines()
    lines = [ln.rsplit(",", 1)[0] + ",NA" if i in (1, 5, 9) else ln for i, ln in enumerate(lines)]
    (folder / "holes.csv").write_text("\n".join(lines) + "\n")
    args = ["-o", "new.pt", "--epochs", "1", "--no-plots", "--json"]
    res = dl_inproc("train", "holes.csv", *args, cwd=folder)
    assert res.returncode == 0, res.stderr
    assert "dropped 3 rows with no value in target 'progression'" in flat(res.stderr)
    assert json.loads(res.stdout)["task"] == "regression"


@pytest.mark.parametrize("case", sorted(SPECS))
def test_invalid_spec(case: str, folder: Path, dl_inproc) -> None:
    text, words = SPECS[case]
    (folder / "bad.yaml").write_text(text)
    shutil.copy(PENGUINS / "train.csv", folder / "data.csv")
    res = dl_inproc("train", "data.csv", "--spec", "bad.yaml", "-o", "model.pt", cwd=folder)
    assert_error(res, *words)
    assert_untouched(folder)


def test_missing_spec_file(folder: Path, dl_inproc) -> None:
    shutil.copy(PENGUINS / "train.csv", folder / "data.csv")
    res = dl_inproc("train", "data.csv", "--spec", "nope.yaml", cwd=folder)
    assert_error(res, "nope.yaml", "not found")
    assert_untouched(folder)


@pytest.mark.parametrize(
    ("spec", "shape", "words"),
    [
        ("layers: [dense: 16]\n", "3,4", ["(3, 16)", "flat vector"]),
        (
            "layers:\n  - residual: [flatten, {dense: 4}]\n",
            "3,4",
            ["layers[0]", "residual", "(3, 4)", "(4,)"],
        ),
        ("layers: [dense: 0]\n", "30", ["layers[0]", "'units'", "positive"]),
    ],
)
def test_impossible_shapes_in_build(spec: str, shape: str, words: list[str], tmp_path, dl_inproc):
    (tmp_path / "net.yaml").write_text(spec)
    res = dl_inproc(
        "build", "--spec", "net.yaml", "--input-shape", shape, "--outputs", "2", cwd=tmp_path
    )
    assert_error(res, *words)


def test_output_size_that_does_not_fit_the_task(folder: Path, dl_inproc) -> None:
    (folder / "net.yaml").write_text("head: none\nlayers:\n  - dense: 5\n")
    shutil.copy(PENGUINS / "train.csv", folder / "data.csv")
    res = dl_inproc("train", "data.csv", "--spec", "net.yaml", "--epochs", "1", cwd=folder)
    assert_error(res, "net.yaml", "5", "3")
    assert_untouched(folder)


def test_diverging_training_exits_1_and_keeps_the_old_model(folder: Path, dl_inproc) -> None:
    shutil.copy(PENGUINS / "train.csv", folder / "data.csv")
    args = ["--optimizer", "sgd", "--lr", "1e30", "--schedule", "none", "--epochs", "5"]
    res = dl_inproc("train", "data.csv", "-o", "model.pt", *args, "--quiet", cwd=folder)
    assert_error(res, "diverged", code=1)
    assert_untouched(folder)


# -- prediction input ------------------------------------------------------------------------
def rows_with(change: dict[int, dict[str, str]] | None = None, drop: tuple[str, ...] = ()) -> str:
    """penguins rows.csv as text, with cells changed ({row: {column: value}}, rows from 1) and
    columns dropped."""
    with open(PENGUINS / "rows.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    for i, cells in (change or {}).items():
        rows[i - 1].update(cells)
    out = io.StringIO()
    fields = [c for c in rows[0] if c not in drop]
    w = csv.DictWriter(out, fields, lineterminator="\n", extrasaction="ignore")
    w.writeheader()
    w.writerows(rows)
    return out.getvalue()


@pytest.mark.parametrize("keep", [False, True], ids=["plain", "keep-columns"])
def test_predict_non_numeric_text(keep: bool, penguins_model: Path, tmp_path: Path, dl_inproc):
    (tmp_path / "rows.csv").write_text(rows_with({4: {"bill_length_mm": "abc"}}))
    (tmp_path / "out.csv").write_bytes(PRECIOUS)
    extra = ["--keep-columns"] if keep else []
    res = dl_inproc("predict", penguins_model, "rows.csv", "-o", "out.csv", *extra, cwd=tmp_path)
    assert_error(res, "rows.csv", "column 'bill_length_mm'", "row 4", "'abc'", "not a number")
    assert (tmp_path / "out.csv").read_bytes() == PRECIOUS


def test_predict_non_numeric_text_on_stdin(penguins_model: Path, dl_inproc) -> None:
    res = dl_inproc("predict", penguins_model, "-", input=rows_with({2: {"body_mass_g": "heavy"}}))
    assert_error(res, "<stdin>", "column 'body_mass_g'", "'heavy'", "not a number")


def test_predict_non_numeric_text_in_a_later_chunk(
    penguins_model: Path, tmp_path: Path, dl_inproc, monkeypatch
) -> None:
    """A bad cell far into the file: earlier chunks were already written to the temporary output;
    the existing -o file must still be untouched and the row number must count across chunks."""
    from dlcli.data.readers import csv as csv_reader

    monkeypatch.setattr(csv_reader, "CHUNK_BYTES", 512)
    (tmp_path / "rows.csv").write_text(rows_with({60: {"flipper_length_mm": "n/a?"}}))
    (tmp_path / "out.csv").write_bytes(PRECIOUS)
    for keep in ([], ["--keep-columns"]):
        res = dl_inproc("predict", penguins_model, "rows.csv", "-o", "out.csv", *keep, cwd=tmp_path)
        assert_error(res, "column 'flipper_length_mm'", "row 60", "'n/a?'")
        assert (tmp_path / "out.csv").read_bytes() == PRECIOUS
        assert sorted(p.name for p in tmp_path.iterdir()) == ["out.csv", "rows.csv"]


def test_predict_missing_columns_are_named(penguins_model: Path, tmp_path: Path, dl_inproc):
    (tmp_path / "rows.csv").write_text(rows_with(drop=("bill_depth_mm", "sex")))
    res = dl_inproc("predict", penguins_model, "rows.csv", cwd=tmp_path)
    assert_error(res, "rows.csv", "missing columns", "'bill_depth_mm'", "'sex'")


@pytest.mark.parametrize(
    ("content", "words"),
    [
        (None, ["nope.csv", "not found"]),
        (b"", ["rows.csv", "empty"]),
        ("header_only", ["rows.csv", "no data rows"]),
        ("ragged", ["rows.csv", "line 4", "8 fields", "header has 7"]),
        ("non-utf8", ["rows.csv", "column 'island'", "not UTF-8"]),
    ],
    ids=["missing", "empty", "header_only", "ragged", "non_utf8"],
)
def test_predict_bad_files(content, words, penguins_model: Path, tmp_path: Path, dl_inproc):
    lines = rows_with().splitlines(keepends=True)
    if content == "header_only":
        content = lines[0].encode()
    elif content == "ragged":
        content = "".join([*lines[:3], lines[3].rstrip() + ",EXTRA\n", *lines[4:]]).encode()
    elif content == "non-utf8":
        content = rows_with().encode().replace(b"Torgersen", b"Torg\xe9rsen", 1)
    if content is not None:
        (tmp_path / "rows.csv").write_bytes(content)
    name = "nope.csv" if content is None else "rows.csv"
    res = dl_inproc("predict", penguins_model, name, cwd=tmp_path)
    assert_error(res, *words)


def test_predict_empty_stdin(penguins_model: Path, dl_inproc) -> None:
    assert_error(dl_inproc("predict", penguins_model, "-", input=""), "<stdin>", "empty")


def test_evaluate_needs_the_target_column(penguins_model: Path, dl_inproc) -> None:
    res = dl_inproc("evaluate", penguins_model, PENGUINS / "rows.csv")
    assert_error(res, "rows.csv", "'species'")


def test_evaluate_unknown_class(penguins_model: Path, tmp_path: Path, dl_inproc) -> None:
    text = (PENGUINS / "test.csv").read_text().replace(",Gentoo\n", ",Emperor\n", 1)
    (tmp_path / "test.csv").write_text(text)
    res = dl_inproc("evaluate", penguins_model, "test.csv", cwd=tmp_path)
    assert_error(res, "test.csv", "'species'", "'Emperor'", "not trained on")


# -- model files that are not ours ---------------------------------------------------------------
class Payload:
    """Pickles as a call to exec: loading it unsafely would run code that writes `marker`."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (exec, (f"open({str(self.marker)!r}, 'w').write('code ran')",))


def _model_file(kind: str, good: Path, path: Path) -> list[str]:
    """Write a bad model file of `kind` at `path`; returns the words its error line must hold."""
    import torch

    if kind == "missing":
        return [path.name, "not found"]
    if kind == "empty":
        path.write_bytes(b"")
        return [path.name, "empty"]
    if kind == "folder":
        path.mkdir()
        return [path.name, "folder"]
    if kind == "text":
        path.write_text("hello, I am a text file\n")
        return [path.name, "not a dl model file"]
    if kind == "csv":
        shutil.copy(PENGUINS / "rows.csv", path)
        return [path.name, "not a dl model file"]
    if kind == "truncated":
        path.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
        return [path.name, "truncated"]
    if kind == "foreign_dict":
        torch.save({"state_dict": {"w": torch.zeros(2)}}, path)
        return [path.name, "not a dl model file"]
    if kind == "future_version":
        data = torch.load(good, weights_only=True)
        data["version"] = 99
        torch.save(data, path)
        return [path.name, "version 99", "not supported"]
    raise AssertionError(kind)


MODEL_KINDS = [
    "missing",
    "empty",
    "folder",
    "text",
    "csv",
    "truncated",
    "foreign_dict",
    "future_version",
]


@pytest.mark.parametrize("command", ["predict", "evaluate"])
@pytest.mark.parametrize("kind", MODEL_KINDS)
def test_model_file_not_ours(
    kind: str, command: str, penguins_model: Path, tmp_path: Path, dl_inproc
):
    words = _model_file(kind, penguins_model, tmp_path / "model.pt")
    data = PENGUINS / ("rows.csv" if command == "predict" else "test.csv")
    res = dl_inproc(command, tmp_path / "model.pt", data)
    assert_error(res, *words)


def test_pickled_code_is_refused_not_run(
    penguins_model: Path, tmp_path: Path, run_dl, dl_inproc
) -> None:
    """A model file whose pickle would call exec(): refused with one line, in a real process (exit
    status, empty stdout, no traceback) and in this one, and the payload never runs."""
    import torch

    marker = tmp_path / "marker.txt"
    data = torch.load(penguins_model, weights_only=True)
    data["preprocessor"] = {"kind": "tabular", "evil": Payload(marker)}
    torch.save(data, tmp_path / "evil.pt")
    (tmp_path / "out.csv").write_bytes(PRECIOUS)
    res = run_dl("predict", tmp_path / "evil.pt", PENGUINS / "rows.csv", "-o", tmp_path / "out.csv")
    assert_error(res, "evil.pt", "refused")
    assert not marker.exists(), "loading the model file ran code from it"
    assert (tmp_path / "out.csv").read_bytes() == PRECIOUS
    assert_error(dl_inproc("evaluate", tmp_path / "evil.pt", PENGUINS / "test.csv"), "refused")
    assert not marker.exists(), "loading the model file ran code from it"
    # the control: an unsafe load of the same file does run the payload, so the check above works
    torch.load(tmp_path / "evil.pt", weights_only=False)
    assert marker.read_text() == "code ran"
