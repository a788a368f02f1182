"""`dl` end to end on the sample tables: the user's session from the issue verbatim, the data
contracts of predict (stdin, chunks, column order, --keep-columns), reproducibility, the light
`--help`, and the quality a default `dl train` must reach."""

from __future__ import annotations

import csv
import io
import json
import shlex
import shutil
import subprocess
from pathlib import Path

import pandas as pd
import pytest
import yaml
from conftest import DIABETES, PENGUINS, assert_error, dl_env, flat

import dlcli

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
CLASSIFICATION_KEYS = {
    "accuracy",
    "balanced_accuracy",
    "precision_macro",
    "recall_macro",
    "f1_macro",
    "log_loss",
    "confusion_matrix",
}
REGRESSION_KEYS = {"mae", "rmse", "r2"}
PENGUIN_CLASSES = {"Adelie", "Chinstrap", "Gentoo"}
N_ROWS = 68  # data rows in penguins rows.csv / test.csv

# What a user must be able to do (issue #2), one after another in a folder holding data.csv.
USER_SESSION = [
    "dl train data.csv --arch mlp",
    "dl evaluate model.pt test.csv",
    "dl predict model.pt rows.csv",
    "cat rows.csv | dl predict model.pt - > out.csv",
    "dl export --onnx",
    "dl build --arch mlp --input-shape 30 --outputs 2",
]


def start(command: str, cwd: Path) -> subprocess.Popen:
    """A shell line, as a user would type it, started in `cwd`."""
    return subprocess.Popen(
        command,
        shell=True,
        cwd=cwd,
        env=dl_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def finish(proc: subprocess.Popen) -> subprocess.CompletedProcess:
    out, err = proc.communicate(timeout=600)
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def read_csv_text(text: str) -> pd.DataFrame:
    return pd.read_csv(io.StringIO(text))


# -- the user's session, verbatim ------------------------------------------------------------
@pytest.fixture(scope="module")
def session(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list]:
    """Run the six commands in a fresh folder; (folder, [CompletedProcess per command]).

    `dl train` runs first; the five commands that only read model.pt then run side by side (they
    write different files), and a default diabetes training runs beside it all: the suite stays fast
    on two cores. Its model is in the folder's diabetes/ subfolder.
    """
    folder = tmp_path_factory.mktemp("user")
    for name, src in (
        ("data.csv", "train.csv"),
        ("test.csv", "test.csv"),
        ("rows.csv", "rows.csv"),
    ):
        shutil.copy(PENGUINS / src, folder / name)
    (folder / "diabetes").mkdir()
    data = shlex.quote(str(DIABETES / "train.csv"))
    diabetes = start(f"dl train {data} -o model.pt --quiet --no-plots", folder / "diabetes")
    results = [finish(start(USER_SESSION[0], folder))]
    results += [finish(p) for p in [start(cmd, folder) for cmd in USER_SESSION[1:]]]
    res = finish(diabetes)
    assert res.returncode == 0, res.stderr
    return folder, results


@pytest.mark.parametrize("step", range(len(USER_SESSION)), ids=USER_SESSION)
def test_user_session_command_succeeds(session, step: int) -> None:
    res = session[1][step]
    assert res.returncode == 0, f"{USER_SESSION[step]}\n{res.stderr}"
    assert "Traceback" not in res.stderr and "error:" not in res.stderr


def test_train_writes_model_and_run_folder(session) -> None:
    folder, results = session
    assert (folder / "model.pt").is_file()
    run = folder / "model.run"
    for png in ("learning_curve.png", "confusion_matrix.png"):
        assert (run / png).read_bytes()[:8] == PNG_MAGIC, png
    with open(run / "metrics.csv", newline="") as fh:
        history = list(csv.DictReader(fh))
    assert history and "epoch" in history[0]
    assert [int(r["epoch"]) for r in history] == list(range(1, len(history) + 1))
    assert results[0].stdout == ""  # logs and the summary table go to stderr
    assert "model.run" in results[0].stderr  # the run folder's path is printed


def test_default_train_is_accurate_on_penguins(session, dl_inproc) -> None:
    """The model of a plain `dl train` (default epochs, preset and settings) on penguins test.csv."""
    folder = session[0]
    res = dl_inproc("evaluate", "model.pt", "test.csv", "--json", cwd=folder)
    assert res.returncode == 0, res.stderr
    metrics = json.loads(res.stdout)  # stdout is exactly one JSON document
    assert set(metrics) >= CLASSIFICATION_KEYS
    assert metrics["accuracy"] >= 0.95, metrics
    for key in CLASSIFICATION_KEYS - {"confusion_matrix", "log_loss"}:
        assert 0.0 <= metrics[key] <= 1.0, key
    cm = metrics["confusion_matrix"]
    assert len(cm) == 3 and all(len(r) == 3 for r in cm)
    assert sum(map(sum, cm)) == N_ROWS
    assert sum(cm[i][i] for i in range(3)) / N_ROWS == pytest.approx(metrics["accuracy"])


def test_evaluate_prints_a_table_on_stderr(session) -> None:
    res = session[1][1]
    assert res.stdout == ""
    assert "accuracy" in res.stderr and "test.csv" in res.stderr


def test_predict_writes_csv_on_stdout(session) -> None:
    folder, results = session
    out = read_csv_text(results[2].stdout)
    assert list(out.columns) == ["prediction"]
    assert len(out) == len(pd.read_csv(folder / "rows.csv")) == N_ROWS
    assert set(out["prediction"]) <= PENGUIN_CLASSES
    truth = pd.read_csv(folder / "test.csv")["species"]  # rows.csv is test.csv without labels
    assert (out["prediction"] == truth).mean() >= 0.95


def test_predict_from_stdin_equals_predict_from_file(session) -> None:
    folder, results = session
    assert (folder / "out.csv").read_text() == results[2].stdout
    assert results[3].stdout == ""


def test_export_writes_onnx(session) -> None:
    folder = session[0]
    assert (folder / "model.onnx").stat().st_size > 1000


def test_build_shows_shapes_and_parameter_count(session) -> None:
    res = session[1][5]
    text = res.stdout + res.stderr
    # 16 members x (30*64+64 + 2*64 + 64*32+32 + 2*32 + 32*2+2): dense, batchnorm, dense,
    # batchnorm, output layer, packed in one mlp_ensemble layer
    assert "69,152" in text or "69152" in text
    assert "mlp_ensemble" in text and "(2)" in text


def test_build_json(dl_inproc) -> None:
    res = dl_inproc("build", "--arch", "mlp", "--input-shape", "30", "--outputs", "2", "--json")
    assert res.returncode == 0, res.stderr
    summary = json.loads(res.stdout)
    assert summary["params"] == 69152  # 16 x (30*64+64 + 128 + 64*32+32 + 64 + 32*2+2)
    assert summary["output_shape"] == [2]
    assert summary["layers"][0]["output_shape"] == [2]  # the ensemble ends in the outputs


def test_printed_spec_trains_again(tmp_path: Path, dl_inproc) -> None:
    res = dl_inproc("build", "--arch", "mlp", "--print-spec")
    assert res.returncode == 0, res.stderr
    spec = yaml.safe_load(res.stdout)
    assert spec["name"] == "mlp" and spec["layers"]
    spec["layers"][0] = {"dense": 32}  # a user's edit
    (tmp_path / "my.yaml").write_text(yaml.safe_dump(spec))
    args = ["--spec", "my.yaml", "--epochs", "2", "--no-plots", "--json", "-o", "mine.pt"]
    res = dl_inproc("train", PENGUINS / "train.csv", *args, cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    from dlcli import modelfile

    saved = modelfile.load(tmp_path / "mine.pt")
    assert saved["spec"]["layers"][0] == {"dense": 32}  # the edited spec is what was trained
    assert saved["weights"]["network"]["0.weight"].shape[0] == 32


# -- regression quality ------------------------------------------------------------------------
@pytest.fixture(scope="module")
def diabetes_model(session) -> Path:
    """A default `dl train` on diabetes (regression), trained beside the user's session."""
    return session[0] / "diabetes" / "model.pt"


def _diabetes_metrics(model: Path, dl_inproc) -> dict:
    res = dl_inproc("evaluate", model, DIABETES / "test.csv", "--json")
    assert res.returncode == 0, res.stderr
    return json.loads(res.stdout)


def test_evaluate_regression_keys(diabetes_model: Path, dl_inproc) -> None:
    metrics = _diabetes_metrics(diabetes_model, dl_inproc)
    assert set(metrics) >= REGRESSION_KEYS
    assert metrics["rmse"] >= metrics["mae"] > 0
    assert "accuracy" not in metrics


@pytest.mark.slow
def test_default_train_r2_on_diabetes(diabetes_model: Path, dl_inproc) -> None:
    assert _diabetes_metrics(diabetes_model, dl_inproc)["r2"] >= 0.35


# -- predict ---------------------------------------------------------------------------------
def _predict(dl_inproc, model: Path, *args, **kw) -> str:
    res = dl_inproc("predict", model, *args, **kw)
    assert res.returncode == 0, res.stderr
    return res.stdout


def test_proba_columns_sum_to_one(penguins_model: Path, dl_inproc) -> None:
    out = read_csv_text(_predict(dl_inproc, penguins_model, PENGUINS / "rows.csv", "--proba"))
    proba = [f"proba_{c}" for c in sorted(PENGUIN_CLASSES)]
    assert list(out.columns) == ["prediction", *proba]
    assert len(out) == N_ROWS
    assert (out[proba].sum(axis=1) - 1).abs().max() < 1e-4
    assert (
        out[proba].to_numpy().argmax(1)
        == out["prediction"].map({c: i for i, c in enumerate(sorted(PENGUIN_CLASSES))})
    ).all()


def test_jsonl_format(penguins_model: Path, dl_inproc) -> None:
    text = _predict(
        dl_inproc, penguins_model, PENGUINS / "rows.csv", "--format", "jsonl", "--proba"
    )
    records = [json.loads(line) for line in text.splitlines()]
    assert len(records) == N_ROWS
    assert all(r["prediction"] in PENGUIN_CLASSES for r in records)
    assert all(
        abs(sum(v for k, v in r.items() if k.startswith("proba_")) - 1) < 1e-4 for r in records
    )
    as_csv = read_csv_text(_predict(dl_inproc, penguins_model, PENGUINS / "rows.csv"))
    assert [r["prediction"] for r in records] == list(as_csv["prediction"])


def test_output_file(penguins_model: Path, tmp_path: Path, dl_inproc) -> None:
    res = dl_inproc(
        "predict", penguins_model, PENGUINS / "rows.csv", "-o", "pred.csv", cwd=tmp_path
    )
    assert res.returncode == 0, res.stderr
    assert res.stdout == ""
    assert (tmp_path / "pred.csv").read_text() == _predict(
        dl_inproc, penguins_model, PENGUINS / "rows.csv"
    )


def test_columns_in_another_order(penguins_model: Path, tmp_path: Path, dl_inproc) -> None:
    rows = pd.read_csv(PENGUINS / "rows.csv", dtype=str, keep_default_na=False)
    rows[list(reversed(rows.columns))].to_csv(tmp_path / "shuffled.csv", index=False)
    assert _predict(dl_inproc, penguins_model, tmp_path / "shuffled.csv", "--proba") == _predict(
        dl_inproc, penguins_model, PENGUINS / "rows.csv", "--proba"
    )


def test_target_column_present_is_ignored(penguins_model: Path, tmp_path: Path, dl_inproc):
    reference = _predict(dl_inproc, penguins_model, PENGUINS / "rows.csv", "--proba")
    assert _predict(dl_inproc, penguins_model, PENGUINS / "test.csv", "--proba") == reference
    test = pd.read_csv(PENGUINS / "test.csv", dtype=str, keep_default_na=False)
    test["species"] = ["?"] * 30 + ["12.5"] * (len(test) - 30)  # whatever it holds
    test.to_csv(tmp_path / "junk.csv", index=False)
    assert _predict(dl_inproc, penguins_model, tmp_path / "junk.csv", "--proba") == reference


def test_keep_columns_copies_input_columns(penguins_model: Path, tmp_path: Path, dl_inproc):
    rows = pd.read_csv(PENGUINS / "rows.csv", dtype=str, keep_default_na=False)
    rows["note"] = [f"n{i:04d}" for i in range(len(rows))]  # a column the model never saw
    rows.loc[0, "body_mass_g"] = "1234567.891"  # many digits survive exactly
    rows.loc[1, "year"] = "2007"
    rows.to_csv(tmp_path / "rows.csv", index=False)
    for fmt in ("csv", "jsonl"):
        text = _predict(
            dl_inproc, penguins_model, tmp_path / "rows.csv", "--keep-columns", "-f", fmt
        )
        if fmt == "csv":
            out = pd.read_csv(io.StringIO(text), dtype=str, keep_default_na=False)
        else:
            out = pd.DataFrame([json.loads(line) for line in text.splitlines()]).astype(str)
        assert list(out.columns) == [*rows.columns, "prediction"], fmt
        pd.testing.assert_frame_equal(out[rows.columns], rows, check_dtype=False)


def test_predict_on_chunk_boundaries(penguins_model: Path, dl_inproc, monkeypatch) -> None:
    """Streamed in chunks of many sizes, around the exact end of a row, every row comes out once,
    in order, under one header, with the same prediction (probabilities may differ in the last
    float bit: a matrix product's rounding depends on the batch size)."""
    from dlcli.data.readers import csv as csv_reader

    data = (PENGUINS / "rows.csv").read_bytes()
    ref = read_csv_text(_predict(dl_inproc, penguins_model, PENGUINS / "rows.csv", "--proba"))
    keep_ref = _predict(dl_inproc, penguins_model, PENGUINS / "rows.csv", "--keep-columns")
    ends = [i + 1 for i, b in enumerate(data) if b == ord("\n")]  # byte offsets of line ends
    sizes = [ends[10] - 1, ends[10], ends[10] + 1, ends[-2], ends[-1], 128, 200]
    for size in sizes:
        monkeypatch.setattr(csv_reader, "CHUNK_BYTES", size)
        for source, stdin in ((PENGUINS / "rows.csv", None), ("-", data.decode())):
            out = read_csv_text(_predict(dl_inproc, penguins_model, source, "--proba", input=stdin))
            assert list(out["prediction"]) == list(ref["prediction"]), (size, source)
            pd.testing.assert_frame_equal(out, ref, check_exact=False, atol=1e-5, rtol=0)
        keep = _predict(dl_inproc, penguins_model, PENGUINS / "rows.csv", "--keep-columns")
        assert keep == keep_ref, size


@pytest.mark.parametrize("label", ["species", "grade", "vip"])
def test_prediction_reads_a_file_as_training_did(label: str, tmp_path: Path) -> None:
    """Train/serve parity: the streamed, typed reads of predict and evaluate encode the training
    rows to the very matrix and labels training built, also for true/false columns, integer-coded
    classes and empty cells."""
    import numpy as np
    import torch

    from dlcli.data.readers import read_table
    from dlcli.data.tabular import TabularPreprocessor
    from dlcli.data.target import Target

    frame = pd.read_csv(PENGUINS / "train.csv", dtype=str, keep_default_na=False)
    frame["vip"] = np.where(np.arange(len(frame)) % 3 == 0, "true", "false")
    frame["grade"] = [str(i % 4) for i in range(len(frame))]
    frame.loc[5, "sex"] = ""
    frame.loc[6, "bill_depth_mm"] = "NA"
    path = tmp_path / "train.csv"
    frame.to_csv(path, index=False)
    table = read_table(str(path))
    target = Target.fit(table[label], None, "train.csv")
    preprocessor = TabularPreprocessor.fit(table, target, "train.csv")
    fitted = preprocessor.raw_matrix(table, "train.csv")
    for keep in (False, True):
        streamed = torch.cat([raw for _, raw in preprocessor.iter_inputs(str(path), keep)])
        np.testing.assert_array_equal(streamed.numpy(), fitted)
    chunks = list(preprocessor.iter_labelled(str(path)))
    labels = np.concatenate([target.encode(f[label], "x") for f, _ in chunks])
    np.testing.assert_array_equal(labels, target.encode(table[label], "x"))
    np.testing.assert_array_equal(torch.cat([raw for _, raw in chunks]).numpy(), fitted)


def test_evaluate_from_stdin(penguins_model: Path, dl_inproc) -> None:
    from_file = dl_inproc("evaluate", penguins_model, PENGUINS / "test.csv", "--json")
    text = (PENGUINS / "test.csv").read_text()
    from_stdin = dl_inproc("evaluate", penguins_model, "-", "--json", input=text)
    assert from_file.returncode == from_stdin.returncode == 0, from_stdin.stderr
    assert json.loads(from_stdin.stdout) == json.loads(from_file.stdout)
    assert json.loads(from_file.stdout)["n"] == N_ROWS


# -- training behaviour ----------------------------------------------------------------------
def _train_json(dl_inproc, data: Path, *args: str) -> tuple[dict, str]:
    res = dl_inproc(
        "train", data, "-o", data.with_suffix(".pt"), "--epochs", "1", "--no-plots", "--json", *args
    )
    assert res.returncode == 0, res.stderr
    return json.loads(res.stdout), res.stderr


def _with_target(tmp_path: Path, name: str, values) -> Path:
    frame = pd.read_csv(DIABETES / "train.csv")
    frame["progression"] = values(frame)
    frame.to_csv(tmp_path / name, index=False)
    return tmp_path / name


@pytest.mark.parametrize(
    ("name", "values", "task"),
    [
        (
            "strings.csv",
            lambda f: ["low" if v < 140 else "high" for v in f["progression"]],
            "classification",
        ),
        ("floats.csv", lambda f: f["progression"] / 7.0, "regression"),
        ("few_ints.csv", lambda f: (f["progression"] // 100).astype(int), "classification"),
        ("many_ints.csv", lambda f: f["progression"].astype(int), "regression"),
        ("bools.csv", lambda f: f["progression"] > 140, "classification"),
    ],
)
def test_task_is_inferred_from_the_target(tmp_path: Path, dl_inproc, name, values, task) -> None:
    summary, _ = _train_json(dl_inproc, _with_target(tmp_path, name, values))
    assert summary["task"] == task


def test_task_flag_overrides_inference(tmp_path: Path, dl_inproc) -> None:
    data = _with_target(tmp_path, "few_ints.csv", lambda f: (f["progression"] // 100).astype(int))
    summary, _ = _train_json(dl_inproc, data, "--task", "regression")
    assert summary["task"] == "regression"


def test_id_like_column_is_ignored_with_a_note(tmp_path: Path, dl_inproc) -> None:
    frame = pd.read_csv(PENGUINS / "train.csv")
    frame.insert(0, "penguin_id", range(1000, 1000 + len(frame)))
    frame.to_csv(tmp_path / "data.csv", index=False)
    _, stderr = _train_json(dl_inproc, tmp_path / "data.csv")
    assert "note: data.csv: column 'penguin_id' looks like an ID" in flat(stderr).replace(
        str(tmp_path) + "/", ""
    )
    # the ignored column is not needed to predict
    out = _predict(dl_inproc, tmp_path / "data.pt", PENGUINS / "rows.csv")
    assert len(read_csv_text(out)) == N_ROWS


def test_validation_file(tmp_path: Path, dl_inproc) -> None:
    shutil.copy(PENGUINS / "train.csv", tmp_path / "data.csv")
    summary, _ = _train_json(dl_inproc, tmp_path / "data.csv", "--val", str(PENGUINS / "test.csv"))
    assert summary["val_rows"] == N_ROWS
    assert summary["train_rows"] == len(pd.read_csv(PENGUINS / "train.csv"))
    assert 0 <= summary["metrics"]["accuracy"] <= 1


def test_seed_gives_identical_predictions(tmp_path: Path, dl_inproc) -> None:
    """Two processes with --seed 7 write models that predict byte for byte the same; another seed
    does not (so the check can fail). Also: --json puts only the summary on stdout, logs on stderr."""
    data = shlex.quote(str(PENGUINS / "train.csv"))
    args = "--epochs 3 --seed 7 --no-plots --json"
    procs = [start(f"dl train {data} -o {name}.pt {args}", tmp_path) for name in ("a", "b")]
    outputs = []
    for name, proc in zip(("a", "b"), procs, strict=True):
        res = finish(proc)
        assert res.returncode == 0, res.stderr
        assert json.loads(res.stdout)["epochs_run"] == 3  # stdout: one JSON document, nothing else
        assert "epoch 1/3" in res.stderr  # progress went to stderr
        rows = PENGUINS / "rows.csv"
        outputs.append(_predict(dl_inproc, tmp_path / f"{name}.pt", rows, "--proba"))
    assert outputs[0] == outputs[1]
    args = ["-o", "c.pt", "--epochs", "3", "--seed", "8", "--no-plots", "--quiet"]
    assert dl_inproc("train", PENGUINS / "train.csv", *args, cwd=tmp_path).returncode == 0
    assert _predict(dl_inproc, tmp_path / "c.pt", PENGUINS / "rows.csv", "--proba") != outputs[0]


# -- the command line itself -----------------------------------------------------------------
def test_version(run_dl) -> None:
    res = run_dl("--version")
    assert res.returncode == 0
    assert res.stdout.strip() == f"dl {dlcli.__version__}"


def _imports(run_dl_args: list[str]) -> subprocess.CompletedProcess:
    import sys

    return subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "dlcli", *run_dl_args],
        env=dl_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_help_does_not_import_torch() -> None:
    res = _imports(["--help"])
    assert res.returncode == 0, res.stderr
    assert "train" in res.stdout and "predict" in res.stdout
    imported = [ln for ln in res.stderr.splitlines() if ln.startswith("import time:")]
    assert len(imported) > 50  # the check below is looking at a real import list
    assert [ln for ln in imported if "torch" in ln] == []


def test_argument_error_does_not_import_torch() -> None:
    res = _imports(["train", "--bogus-flag"])
    assert res.returncode == 2
    assert "--bogus-flag" in res.stderr
    assert "Traceback" not in res.stderr and res.stdout == ""
    assert [ln for ln in res.stderr.splitlines() if "torch" in ln and "import time:" in ln] == []


def test_usage_error_is_one_line(dl_inproc) -> None:
    res = dl_inproc("predict", "model.pt", "rows.csv", "--format", "xml")
    assert_error(res, "--format", "xml")


def test_predict_into_a_reader_that_stops_early_exits_0_quietly(
    penguins_model: Path, tmp_path: Path
) -> None:
    """`dl predict ... | head -1` under `set -o pipefail`: the closed pipe is the reader's choice,
    not an error (exit 0, nothing on stderr), whether Python or Click meets the broken pipe."""
    rows = pd.read_csv(PENGUINS / "rows.csv")
    pd.concat([rows] * 100).to_csv(tmp_path / "many.csv", index=False)  # more than a pipe holds
    for size in ("rows.csv", "many.csv"):
        path = PENGUINS / size if size == "rows.csv" else tmp_path / size
        line = f"set -o pipefail; dl predict {penguins_model} {path} --proba | head -1"
        res = subprocess.run(
            ["bash", "-c", line], env=dl_env(), capture_output=True, text=True, timeout=120
        )
        assert res.returncode == 0, (size, res.returncode, res.stderr)
        assert res.stdout.startswith("prediction,proba_") and res.stderr == "", size
