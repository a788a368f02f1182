"""`dl predict MODEL.onnx` (dlcli/runtime/): the exported graph run on onnxruntime alone gives the
predictions, columns, formats and error lines of `dl predict MODEL.pt`, and never imports torch."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import SAMPLES, assert_error, dl_env

TOL = 1e-4
TABLES = {"penguins": "classification", "breast_cancer": "classification", "diabetes": "regression"}


@pytest.fixture(scope="module")
def table_models(tmp_path_factory: pytest.TempPathFactory, run_dl_session) -> dict[str, Path]:
    """name -> model.pt, trained on the sample table and exported beside it as model.onnx."""
    models = {}
    for name in TABLES:
        folder = tmp_path_factory.mktemp(name)
        model = folder / "model.pt"
        res = run_dl_session(
            "train", SAMPLES / name / "train.csv", "-o", model, "--epochs", "3", "-q", "--no-plots"
        )
        assert res.returncode == 0, res.stderr
        res = run_dl_session("export", model, "--onnx", "-q")
        assert res.returncode == 0, res.stderr
        models[name] = model
    return models


def _frame(text: str) -> pd.DataFrame:
    return pd.read_csv(io.StringIO(text), keep_default_na=False)


@pytest.mark.parametrize("name", list(TABLES))
def test_onnx_and_pt_give_the_same_predictions(name: str, table_models, dl_inproc) -> None:
    pt = table_models[name]
    data = SAMPLES / name / "test.csv"
    flags = ["--proba"] if TABLES[name] == "classification" else []
    a = dl_inproc("predict", pt, data, *flags)
    b = dl_inproc("predict", pt.with_suffix(".onnx"), data, *flags)
    assert a.returncode == 0 and b.returncode == 0, a.stderr + b.stderr
    fa, fb = _frame(a.stdout), _frame(b.stdout)
    assert list(fa.columns) == list(fb.columns)
    assert len(fa) == len(fb) == len(pd.read_csv(data))
    if TABLES[name] == "classification":
        assert (fa["prediction"].astype(str) == fb["prediction"].astype(str)).all()
        probas = [c for c in fa.columns if c.startswith("proba_")]
        assert len(probas) >= 2
        assert np.abs(fa[probas].to_numpy() - fb[probas].to_numpy()).max() <= TOL
    else:
        pa_, pb_ = fa["prediction"].to_numpy(), fb["prediction"].to_numpy()
        assert np.abs(pa_ - pb_).max() <= TOL * max(1.0, np.abs(pa_).max())


def test_formats_top_k_keep_columns_and_stdin_match_the_pt_path(table_models, dl_inproc) -> None:
    pt = table_models["penguins"]
    text = (SAMPLES / "penguins" / "test.csv").read_text()
    args = ["-", "--format", "jsonl", "--top-k", "2", "--keep-columns"]
    a = dl_inproc("predict", pt, *args, input=text)
    b = dl_inproc("predict", pt.with_suffix(".onnx"), *args, input=text)
    assert a.returncode == 0 and b.returncode == 0, a.stderr + b.stderr
    ra = [json.loads(x) for x in a.stdout.splitlines()]
    rb = [json.loads(x) for x in b.stdout.splitlines()]
    assert len(ra) == len(rb) > 10
    for x, y in zip(ra, rb, strict=True):
        assert list(x) == list(y)  # same keys, same order: kept columns, then predictions
        assert {k: v for k, v in x.items() if "confidence" not in k} == {
            k: v for k, v in y.items() if "confidence" not in k
        }
        assert abs(x["confidence_2"] - y["confidence_2"]) <= TOL


def test_bad_inputs_get_the_pt_paths_error_lines(table_models, dl_inproc, tmp_path) -> None:
    pt = table_models["penguins"]
    rows = (SAMPLES / "penguins" / "rows.csv").read_text().splitlines()
    no_col = tmp_path / "no_col.csv"
    no_col.write_text("\n".join(",".join(r.split(",")[1:]) for r in rows) + "\n")
    text = tmp_path / "text.csv"
    text.write_text("\n".join([rows[0], rows[1], rows[2].replace("39.3", "abc")]) + "\n")
    for bad, words in [
        (no_col, ["missing column 'island'"]),
        (text, ["column 'bill_length_mm', row 2: 'abc' is not a number"]),
        (tmp_path / "absent.csv", ["absent.csv"]),
    ]:
        a = assert_error(dl_inproc("predict", pt, bad), *words)
        b = assert_error(dl_inproc("predict", pt.with_suffix(".onnx"), bad), *words)
        assert a == b


def test_a_foreign_or_broken_onnx_file_is_one_line(tmp_path, dl_inproc) -> None:
    import onnx
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 2])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 2])
    g = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g", [x], [y])
    foreign = tmp_path / "foreign.onnx"
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 18)]), foreign)
    rows = SAMPLES / "penguins" / "rows.csv"
    assert_error(dl_inproc("predict", foreign, rows), "not written by dl", "dl.format_version")
    broken = tmp_path / "broken.onnx"
    broken.write_bytes(b"not a protobuf at all" * 10)
    assert_error(dl_inproc("predict", broken, rows), "broken.onnx", "not an ONNX file")
    assert_error(dl_inproc("predict", tmp_path / "none.onnx", rows), "none.onnx", "not found")


def run_without_torch(*args: object) -> subprocess.CompletedProcess:
    """`dl ARGS` in a real process; its last stderr line says whether torch was ever imported."""
    code = (
        "import sys\nfrom dlcli.cli import main\ncode = 0\n"
        "try:\n    main(sys.argv[1:])\nexcept SystemExit as e:\n    code = e.code\n"
        "print('torch loaded' if 'torch' in sys.modules else 'no torch', file=sys.stderr)\n"
        "sys.exit(code)\n"
    )
    return subprocess.run(
        [sys.executable, "-c", code, *map(str, args)], capture_output=True, text=True, env=dl_env()
    )


def test_onnx_predict_never_imports_torch(table_models, tmp_path) -> None:
    """A real process: `dl predict model.onnx` runs with torch never in sys.modules."""
    onnx_file = table_models["penguins"].with_suffix(".onnx")
    out = tmp_path / "out.csv"
    res = run_without_torch("predict", onnx_file, SAMPLES / "penguins" / "rows.csv", "-o", out)
    assert res.returncode == 0, res.stderr
    assert res.stderr.strip().splitlines()[-1] == "no torch"
    assert len(pd.read_csv(out)) == len(pd.read_csv(SAMPLES / "penguins" / "rows.csv"))


def test_flags_an_exported_graph_cannot_honour_are_one_line(table_models, dl_inproc) -> None:
    onnx_file = table_models["diabetes"].with_suffix(".onnx")
    rows = SAMPLES / "diabetes" / "rows.csv"
    assert_error(dl_inproc("predict", onnx_file, rows, "--steps", "3"), "--steps")
    assert_error(dl_inproc("predict", onnx_file, rows, "--device", "cuda"), "CPU")


@pytest.fixture(scope="module", params=["lstm", "default"])
def text_model(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, run_dl_session
) -> Path:
    """An lstm, and the text default (bow: words and exact bigrams, whose lookup and term counts
    run in the graph), on 400 sample reviews (2 epochs), exported beside it."""
    folder = tmp_path_factory.mktemp("text")
    arch = [] if request.param == "default" else ["--arch", request.param]
    rows = (SAMPLES / "reviews" / "train.csv").read_text(encoding="utf-8")
    frame = pd.read_csv(io.StringIO(rows)).head(400)
    frame.to_csv(folder / "reviews.csv", index=False)
    model = folder / "model.pt"
    res = run_dl_session(
        "train", folder / "reviews.csv", *arch, "--epochs", "2", "-o", model, "-q", "--no-plots",
    )  # fmt: skip
    assert res.returncode == 0, res.stderr
    res = run_dl_session("export", model, "--onnx", "-q")
    assert res.returncode == 0, res.stderr
    return model


def test_text_models_give_the_same_predictions(text_model: Path, dl_inproc) -> None:
    onnx_file = text_model.with_suffix(".onnx")
    data = SAMPLES / "reviews" / "test.csv"
    a = dl_inproc("predict", text_model, data, "--proba")
    b = dl_inproc("predict", onnx_file, data, "--proba")
    assert a.returncode == 0 and b.returncode == 0, a.stderr + b.stderr
    fa, fb = _frame(a.stdout), _frame(b.stdout)
    assert list(fa.columns) == list(fb.columns) and len(fa) == len(pd.read_csv(data))
    assert (fa["prediction"] == fb["prediction"]).all()
    assert np.abs(fa.iloc[:, 1:].to_numpy() - fb.iloc[:, 1:].to_numpy()).max() <= TOL
    lines = "great film\nawful, boring and far too long\n\n" + "word " * 5000 + "\n"
    args = ["-", "--top-k", "2", "--keep-columns"]
    a = dl_inproc("predict", text_model, *args, input=lines)
    b = dl_inproc("predict", onnx_file, *args, input=lines)
    assert a.returncode == 0 and b.returncode == 0, a.stderr + b.stderr
    fa, fb = _frame(a.stdout), _frame(b.stdout)
    assert list(fa.columns) == list(fb.columns) == [
        "text", "prediction", "confidence", "prediction_2", "confidence_2",
    ]  # fmt: skip
    assert (fa["prediction"] == fb["prediction"]).all() and len(fa) == 4
    assert np.abs(fa["confidence"] - fb["confidence"]).max() <= TOL
    no_col = assert_error(dl_inproc("predict", onnx_file, SAMPLES / "penguins" / "rows.csv"))
    assert no_col == assert_error(
        dl_inproc("predict", text_model, SAMPLES / "penguins" / "rows.csv")
    )


def test_autoencoder_scores_and_embeddings_match(tmp_path, run_dl, dl_inproc) -> None:
    model = tmp_path / "ae.pt"
    train = SAMPLES / "penguins" / "train.csv"
    res = run_dl("train", train, "--arch", "autoencoder", "--epochs", "3", "-o", model, "-q",
                 "--no-plots")  # fmt: skip
    assert res.returncode == 0, res.stderr
    assert run_dl("export", model, "--onnx", "-q").returncode == 0
    data = SAMPLES / "penguins" / "test.csv"
    for flags in ([], ["--embed"]):
        a = dl_inproc("predict", model, data, *flags)
        b = dl_inproc("predict", model.with_suffix(".onnx"), data, *flags)
        assert a.returncode == 0 and b.returncode == 0, a.stderr + b.stderr
        fa, fb = _frame(a.stdout), _frame(b.stdout)
        assert list(fa.columns) == list(fb.columns) and len(fa) == len(pd.read_csv(data))
        numbers = [c for c in fa.columns if c != "is_anomaly"]
        scale = max(1.0, float(np.abs(fa[numbers].to_numpy()).max()))
        assert np.abs(fa[numbers].to_numpy() - fb[numbers].to_numpy()).max() <= TOL * scale
        if not flags:
            assert (fa["is_anomaly"] == fb["is_anomaly"]).all()
    import onnx

    graph = model.with_suffix(".onnx")
    meta = {p.key: p.value for p in onnx.load(graph, load_external_data=False).metadata_props}
    exported = meta["dl.score"]  # the model's default score: --score naming it changes nothing
    same = dl_inproc("predict", graph, data, "--score", exported)
    assert same.returncode == 0 and same.stdout == dl_inproc("predict", graph, data).stdout
    other = "knn" if exported != "knn" else "reconstruction"
    line = assert_error(dl_inproc("predict", graph, data, "--score", other), f"--score {other}")
    assert line == (
        f"error: --score {other}: {graph} computes the {exported} score, the one it was exported"
        f" with (use the model file for another score: dl predict MODEL.pt --score {other})"
    )
    (tmp_path / "ae.encoder.onnx").unlink()
    assert_error(dl_inproc("predict", model.with_suffix(".onnx"), data, "--embed"), "encoder.onnx")
    assert_error(dl_inproc("predict", model.with_suffix(".onnx"), data, "--proba"), "--proba")


def test_image_models_give_the_same_predictions(tmp_path, run_dl, dl_inproc) -> None:
    """A cnn on 3 digit classes: folders, files and paths on stdin; the bad-image line."""
    import shutil

    for c in "012":
        (tmp_path / "digits" / c).mkdir(parents=True)
        for f in sorted((SAMPLES / "digits" / "train" / c).glob("*.png"))[:15]:
            shutil.copy(f, tmp_path / "digits" / c / f.name)
    model = tmp_path / "img.pt"
    res = run_dl("train", tmp_path / "digits", "--arch", "cnn", "--epochs", "1", "-o", model,
                 "-q", "--no-plots")  # fmt: skip
    assert res.returncode == 0, res.stderr
    assert run_dl("export", model, "--onnx", "-q").returncode == 0
    test = SAMPLES / "digits" / "test" / "1"
    a = dl_inproc("predict", model, test, "--proba", "--top-k", "2")
    b = dl_inproc("predict", model.with_suffix(".onnx"), test, "--proba", "--top-k", "2")
    assert a.returncode == 0 and b.returncode == 0, a.stderr + b.stderr
    fa, fb = _frame(a.stdout), _frame(b.stdout)
    assert list(fa.columns) == list(fb.columns) and len(fa) == len(list(test.glob("*.png")))
    assert (
        (fa[["path", "prediction", "prediction_2"]] == fb[["path", "prediction", "prediction_2"]])
        .all()
        .all()
    )
    numbers = [c for c in fa.columns if c.startswith(("confidence", "proba_"))]
    assert np.abs(fa[numbers].to_numpy() - fb[numbers].to_numpy()).max() <= TOL
    paths = "\n".join(str(p) for p in sorted(test.glob("*.png"))[:3]) + "\n"
    a = dl_inproc("predict", model, "-", input=paths)
    b = dl_inproc("predict", model.with_suffix(".onnx"), "-", input=paths)
    assert _frame(a.stdout)["prediction"].tolist() == _frame(b.stdout)["prediction"].tolist()
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not a png")
    line = assert_error(dl_inproc("predict", model.with_suffix(".onnx"), bad), "bad.png")
    assert line == assert_error(dl_inproc("predict", model, bad), "bad.png")


CO2 = SAMPLES / "co2"


@pytest.fixture(scope="module")
def series_model(tmp_path_factory: pytest.TempPathFactory, run_dl_session) -> Path:
    """A small dense forecaster on the sample CO2 series (8-week window, 3 epochs), exported."""
    folder = tmp_path_factory.mktemp("co2")
    (folder / "spec.yaml").write_text("layers: [flatten, {dense: 32}, relu]\n")
    model = folder / "co2.pt"
    res = run_dl_session(
        "train", CO2 / "train.csv", "--spec", folder / "spec.yaml", "--target", "co2",
        "--window", "8", "--epochs", "3", "-o", model, "-q", "--no-plots",
    )  # fmt: skip
    assert res.returncode == 0, res.stderr
    res = run_dl_session("export", model, "--onnx", "-q")
    assert res.returncode == 0, res.stderr
    return model


def _same_values(a: subprocess.CompletedProcess, b: subprocess.CompletedProcess) -> pd.DataFrame:
    """Both runs succeeded with the same columns, rows and non-numeric cells, and numbers within
    TOL relative to the largest (forecasts are in the target's units, ~370 ppm here)."""
    assert a.returncode == 0 and b.returncode == 0, a.stderr + b.stderr
    fa, fb = _frame(a.stdout), _frame(b.stdout)
    assert list(fa.columns) == list(fb.columns) and len(fa) == len(fb) > 0
    numbers = [c for c in fa.columns if pd.api.types.is_float_dtype(fa[c])]
    others = [c for c in fa.columns if c not in numbers]
    assert fa[others].astype(str).equals(fb[others].astype(str))
    x, y = fa[numbers].to_numpy(dtype=float), fb[numbers].to_numpy(dtype=float)
    assert np.array_equal(np.isnan(x), np.isnan(y))
    scale = max(1.0, float(np.nanmax(np.abs(x))))
    assert np.nanmax(np.abs(x - y)) <= TOL * scale
    return fa


def test_series_models_give_the_same_forecasts(series_model: Path, dl_inproc) -> None:
    """Windows over history and test files, stdin, --keep-columns, jsonl and --steps."""
    onnx_file = series_model.with_suffix(".onnx")
    for data, rows in [(CO2 / "history.csv", 52), (CO2 / "test.csv", 395)]:
        fa = _same_values(
            dl_inproc("predict", series_model, data), dl_inproc("predict", onnx_file, data)
        )
        assert list(fa.columns) == ["date", "prediction"] and len(fa) == rows - 8 + 1
    text = (CO2 / "history.csv").read_text()
    args = ["-", "--keep-columns", "--format", "jsonl"]
    a = dl_inproc("predict", series_model, *args, input=text)
    b = dl_inproc("predict", onnx_file, *args, input=text)
    assert a.returncode == 0 and b.returncode == 0, a.stderr + b.stderr
    ra = [json.loads(x) for x in a.stdout.splitlines()]
    rb = [json.loads(x) for x in b.stdout.splitlines()]
    assert [list(r) for r in ra] == [list(r) for r in rb] and rb[-1]["date"] == "2002-01-05"
    assert [r["co2"] for r in ra] == [r["co2"] for r in rb] and rb[-1]["co2"] is None
    assert (
        max(abs(x["prediction"] - y["prediction"]) for x, y in zip(ra, rb, strict=True))
        <= TOL * 400
    )
    fa = _same_values(
        dl_inproc("predict", series_model, CO2 / "history.csv", "--steps", "12"),
        dl_inproc("predict", onnx_file, CO2 / "history.csv", "--steps", "12"),
    )
    assert list(fa.columns) == ["step", "date", "prediction"] and len(fa) == 12
    assert fa["date"].iloc[-1] == "2002-03-23"


def test_series_inputs_get_the_pt_paths_notes_and_error_lines(
    series_model: Path, dl_inproc, tmp_path
) -> None:
    onnx_file = series_model.with_suffix(".onnx")
    head, *rows = (CO2 / "history.csv").read_text().splitlines()
    unsorted = tmp_path / "unsorted.csv"
    unsorted.write_text("\n".join([head, *reversed(rows)]) + "\n")
    a = dl_inproc("predict", series_model, unsorted)
    b = dl_inproc("predict", onnx_file, unsorted)
    assert "rows were not in date order; sorted by 'date'" in b.stderr
    assert a.stderr == b.stderr and a.stdout == b.stdout
    cases = {
        "dup.csv": ([head, *rows, rows[-1]], "appears more than once (rows 52, 53)"),
        "text.csv": ([head, *rows[:3], rows[3].split(",")[0] + ",abc", *rows[4:]], "row 4: 'abc'"),
        "short.csv": ([head, *rows[:5]], "5 rows; the model needs at least 8"),
        "no_date.csv": (["co2", *(r.split(",")[1] for r in rows)], "missing column(s) 'date'"),
    }
    for name, (lines, words) in cases.items():
        (tmp_path / name).write_text("\n".join(lines) + "\n")
        line = assert_error(dl_inproc("predict", onnx_file, tmp_path / name), words)
        assert line == assert_error(dl_inproc("predict", series_model, tmp_path / name))
    history = CO2 / "history.csv"
    for flags, words in [
        (["--steps", "0"], "--steps 0"),
        ([history, "--steps", "2"], "one history"),
    ]:
        line = assert_error(dl_inproc("predict", onnx_file, history, *flags), words)
        assert line == assert_error(dl_inproc("predict", series_model, history, *flags))


def test_series_and_image_autoencoder_graphs_never_import_torch(
    series_model: Path, image_ae: Path, tmp_path
) -> None:
    history = CO2 / "history.csv"
    for args in [
        (series_model.with_suffix(".onnx"), history),
        (series_model.with_suffix(".onnx"), history, "--steps", "3"),
        (image_ae.with_suffix(".onnx"), SAMPLES / "digits" / "test" / "1"),
        (image_ae.with_suffix(".onnx"), SAMPLES / "digits" / "test" / "1", "--embed"),
    ]:
        res = run_without_torch("predict", *args, "-o", tmp_path / "out.csv")
        assert res.returncode == 0, res.stderr
        assert res.stderr.strip().splitlines()[-1] == "no torch"
        assert len(pd.read_csv(tmp_path / "out.csv")) >= 3


@pytest.fixture(scope="module")
def image_ae(tmp_path_factory: pytest.TempPathFactory, run_dl_session) -> Path:
    """A convolutional autoencoder on 45 digits of 3 classes (1 epoch), exported (both graphs)."""
    import shutil

    folder = tmp_path_factory.mktemp("image_ae")
    for c in "012":
        (folder / "digits" / c).mkdir(parents=True)
        for f in sorted((SAMPLES / "digits" / "train" / c).glob("*.png"))[:15]:
            shutil.copy(f, folder / "digits" / c / f.name)
    model = folder / "iae.pt"
    res = run_dl_session(
        "train", folder / "digits", "--arch", "autoencoder", "--epochs", "1", "-o", model, "-q",
        "--no-plots",
    )  # fmt: skip
    assert res.returncode == 0, res.stderr
    assert run_dl_session("export", model, "--onnx", "-q").returncode == 0
    assert model.with_suffix(".encoder.onnx").exists()
    return model


def test_image_autoencoder_scores_and_embeddings_match(image_ae: Path, dl_inproc, tmp_path) -> None:
    """anomaly_score,is_anomaly and --embed on a folder of held-out digits and on paths from
    stdin; the bad-image and missing-encoder lines."""
    onnx_file = image_ae.with_suffix(".onnx")
    test = SAMPLES / "digits" / "test"
    latent = int(_meta(onnx_file)["dl.latent"])
    for flags, columns in [
        ([], ["anomaly_score", "is_anomaly"]),
        (["--embed"], [f"z{j}" for j in range(latent)]),
    ]:
        a = dl_inproc("predict", image_ae, test, *flags)
        fa = _same_values(a, dl_inproc("predict", onnx_file, test, *flags))  # is_anomaly: exact
        assert list(fa.columns) == ["path", *columns]
        assert len(fa) == len(list(test.rglob("*.png")))
        if not flags:
            assert 0 < fa["is_anomaly"].sum() < len(fa)
    paths = "\n".join(str(p) for p in sorted((test / "7").glob("*.png"))[:3]) + "\n"
    fa = _same_values(
        dl_inproc("predict", image_ae, "-", input=paths),
        dl_inproc("predict", onnx_file, "-", input=paths),
    )
    assert len(fa) == 3
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not a png")
    line = assert_error(dl_inproc("predict", onnx_file, bad), "bad.png")
    assert line == assert_error(dl_inproc("predict", image_ae, bad), "bad.png")
    assert_error(dl_inproc("predict", onnx_file, test, "--top-k", "2"), "--top-k")
    alone = tmp_path / "alone.onnx"  # no alone.encoder.onnx beside it
    alone.write_bytes(onnx_file.read_bytes())
    assert_error(dl_inproc("predict", alone, test, "--embed"), "alone.encoder.onnx", "not found")


def _meta(onnx_file: Path) -> dict[str, str]:
    import onnx

    return {p.key: p.value for p in onnx.load(onnx_file).metadata_props}


TINY_GAN = """
name: tiny-gan
data: [image]
latent: 8
generator:
  - project: [16, h/4, w/4]
  - batchnorm
  - relu
  - {conv_transpose2d: 8}
  - relu
  - {conv_transpose2d: outputs, activation: tanh}
  - resize: image
discriminator:
  - {conv2d: 8, kernel: 4, stride: 2}
  - leaky: 0.2
  - {conv2d: 16, kernel: 4, stride: 2}
  - leaky
  - flatten
"""


def train_tiny_gan(tmp_path: Path, run_dl) -> Path:
    """TINY_GAN trained 1 epoch on 40 digits of 4 classes, exported: its .pt (the .onnx beside)."""
    import shutil

    for c in "0123":
        (tmp_path / "digits" / c).mkdir(parents=True)
        for f in sorted((SAMPLES / "digits" / "train" / c).glob("*.png"))[:10]:
            shutil.copy(f, tmp_path / "digits" / c / f.name)
    (tmp_path / "gan.yaml").write_text(TINY_GAN)
    model = tmp_path / "gan.pt"
    res = run_dl("train", tmp_path / "digits", "--spec", tmp_path / "gan.yaml", "--epochs", "1",
                 "-o", model, "-q", "--no-plots")  # fmt: skip
    assert res.returncode == 0, res.stderr
    assert run_dl("export", model, "--onnx", "-q").returncode == 0
    return model


def test_gan_samples_from_the_exported_generator(tmp_path, run_dl, dl_inproc) -> None:
    """--samples N from numpy noise: N valid PNGs of the training images' size (and a grid), the
    same images for the same --seed, torch never imported, and the .pt path's lines for misuse.
    (numpy's noise is not torch's: the images differ from the .pt path's for the same seed.)"""
    from PIL import Image

    model = train_tiny_gan(tmp_path, run_dl)
    onnx_file = model.with_suffix(".onnx")
    a, b = tmp_path / "a", tmp_path / "b"
    res = run_without_torch(
        "predict", onnx_file, "--samples", "5", "--seed", "3", "-o", tmp_path / "grid.png",
        "--output-dir", a,
    )  # fmt: skip
    assert res.returncode == 0, res.stderr
    assert res.stderr.strip().splitlines()[-1] == "no torch"
    assert "wrote 5 samples" in res.stderr and "seed 3" in res.stderr
    files = sorted(a.glob("*.png"))
    assert [f.name for f in files] == [f"sample_{i:04d}.png" for i in range(5)]
    with Image.open(SAMPLES / "digits" / "train" / "0" / "0000.png") as real:
        size = real.size
    pixels = []
    for f in files:
        with Image.open(f) as img:
            assert img.size == size and img.mode == "L"  # grey digits: one channel
            pixels.append(np.asarray(img))
    assert len({p.tobytes() for p in pixels}) == 5  # different noise, different images
    pt_grid = dl_grid(dl_inproc, model, tmp_path)
    with Image.open(tmp_path / "grid.png") as grid, Image.open(pt_grid) as expected:
        assert grid.size == expected.size and grid.mode == expected.mode  # 5 samples: 3 x 2 tiles
    res = dl_inproc("predict", onnx_file, "--samples", "5", "--seed", "3", "--output-dir", b)
    assert res.returncode == 0, res.stderr
    assert [f.read_bytes() for f in files] == [f.read_bytes() for f in sorted(b.glob("*.png"))]
    for args in [
        ["--samples", "2"],
        ["--samples", "2", "-o", tmp_path / "x.csv"],
        [SAMPLES / "penguins" / "rows.csv", "--samples", "2", "-o", tmp_path / "x.png"],
        ["--samples", "2000", "-o", tmp_path / "x.png"],
    ]:
        line = assert_error(dl_inproc("predict", onnx_file, *args))
        assert line == assert_error(dl_inproc("predict", model, *args)).replace(
            str(model), str(onnx_file)
        )
    assert_error(dl_inproc("predict", onnx_file, "--samples", "2", "--top-k", "2"), "--top-k")


def dl_grid(dl_inproc, model: Path, folder: Path) -> Path:
    """The .pt path's grid of 5 samples (its size and mode are the contract)."""
    res = dl_inproc("predict", model, "--samples", "5", "--seed", "3", "-o", folder / "pt.png")
    assert res.returncode == 0, res.stderr
    return folder / "pt.png"
