"""`dl export --onnx` end to end: real training on the sample data, then the exported graph is run by
an independent onnxruntime session on CSV rows encoded by hand from the ONNX metadata alone (the
contract in docs/onnx.md) and compared with `dl predict`."""

from __future__ import annotations

import contextlib
import csv
import io
import json
from pathlib import Path

import numpy as np
import pytest
from conftest import SAMPLES, assert_error

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

DATASETS = {
    "penguins": "classification",  # three classes, categorical columns, missing values
    "breast_cancer": "classification",  # two classes: one logit, sigmoid
    "diabetes": "regression",
}
TOL = 1e-4
MISSING = {"", "NA", "N/A", "n/a", "NaN", "nan", "-NaN", "-nan", "NULL", "null", "#N/A", "#NA"}
META_KEYS = {
    "dl.format_version",
    "dl.task",
    "dl.input_columns",
    "dl.column_kinds",
    "dl.categories",
    "dl.target",
    "dl.preprocessing",
    "dl.version",
}


def _dl_here(*args: str) -> tuple[int, str, str]:
    """`dl ARGS` in this process, for the module fixture: (exit code, stdout, stderr)."""
    from dlcli.cli import main
    from dlcli.console import set_quiet

    out, err = io.StringIO(), io.StringIO()
    code: int | str | None = 0
    with pytest.MonkeyPatch.context() as mp, contextlib.redirect_stdout(out):
        mp.setenv("NO_COLOR", "1")
        mp.delenv("DL_DEBUG", raising=False)
        with contextlib.redirect_stderr(err):
            try:
                main(list(args))
            except SystemExit as exc:
                code = exc.code
            finally:
                set_quiet(False)
    status = code if isinstance(code, int) else int(code is not None)
    return status, out.getvalue(), err.getvalue()


def _with_missing_rows(src: Path, dst: Path) -> None:
    """rows.csv plus rows with blank and NA cells and a never-seen category (imputation, code 0)."""
    with open(src, newline="") as fh:
        rows = list(csv.reader(fh))
    header, first, second = rows[0], rows[1], rows[2]
    blank_even = ["" if j % 2 == 0 else v for j, v in enumerate(first)]
    unseen = ["NA" if j % 2 else "never-seen" if _is_text(v) else v for j, v in enumerate(second)]
    with open(dst, "w", newline="") as fh:
        csv.writer(fh).writerows([header, *rows[1:], blank_even, unseen])


def _is_text(value: str) -> bool:
    try:
        float(value)
    except ValueError:
        return value != ""
    return False


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict]:
    """Per dataset: a trained model.pt and its export with --json (penguins: `dl export --json`
    with no MODEL, run in the folder holding model.pt; the others: MODEL and -o)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny models: on a busy machine thread hand-offs cost more than maths
    try:
        return _train_and_export(tmp_path_factory.mktemp("export"))
    finally:
        torch.set_num_threads(threads)


def _train_and_export(root: Path) -> dict[str, dict]:
    out = {}
    for name in DATASETS:
        folder = root / name
        folder.mkdir()
        _with_missing_rows(SAMPLES / name / "rows.csv", folder / "rows.csv")
        code, _, err = _dl_here(
            "train", str(SAMPLES / name / "train.csv"), "-o", str(folder / "model.pt"),
            "--epochs", "3", "--quiet", "--no-plots",
        )  # fmt: skip
        assert code == 0, err
        if name == "penguins":
            with pytest.MonkeyPatch.context() as mp:
                mp.chdir(folder)
                code, stdout, err = _dl_here("export", "--json")
            onnx_path = folder / "model.onnx"
        else:
            onnx_path = folder / "exported.onnx"
            args = (str(folder / "model.pt"), "--onnx", "-o", str(onnx_path), "--json")
            code, stdout, err = _dl_here("export", *args)
        assert code == 0, err
        out[name] = {"folder": folder, "onnx": onnx_path, "stdout": stdout, "stderr": err}
    return out


def _allowed(name: str) -> dict[str, float]:
    """The export's own rule: |onnx - torch| <= TOL * max(1, |torch|) (regression values are ~100)."""
    return {"rtol": TOL if DATASETS[name] == "regression" else 0.0, "atol": TOL}


def _largest_target(name: str) -> float:
    with open(SAMPLES / name / "train.csv", newline="") as fh:
        return max(abs(float(row[-1])) for row in list(csv.reader(fh))[1:])


def _metadata(path: Path) -> dict[str, str]:
    return {p.key: p.value for p in onnx.load(str(path)).metadata_props}


def encode(rows: list[dict[str, str]], meta: dict[str, str]) -> np.ndarray:
    """The documented contract: CSV text -> `features`, from the metadata and nothing else."""
    columns = json.loads(meta["dl.input_columns"])
    kinds = json.loads(meta["dl.column_kinds"])
    categories = json.loads(meta["dl.categories"])
    x = np.empty((len(rows), len(columns)), dtype=np.float32)
    for i, row in enumerate(rows):
        for j, col in enumerate(columns):
            text = row[col].strip()
            if kinds[col] == "numeric":
                x[i, j] = np.nan if text in MISSING else float(text)
            else:
                levels = categories[col]
                x[i, j] = levels.index(text) + 1 if text in levels else 0  # 0: missing/unseen
    return x


def test_default_output_and_clean_json(runs: dict[str, dict]) -> None:
    run = runs["penguins"]  # exported as `dl export --json` inside the folder holding model.pt
    assert run["onnx"].exists()
    result = json.loads(run["stdout"])  # stdout is one JSON document, nothing else
    assert result["path"] == "model.onnx"
    assert "[torch.onnx]" not in run["stderr"] and "Traceback" not in run["stderr"]


@pytest.mark.parametrize("name", list(DATASETS))
def test_export_result_and_checker(runs: dict[str, dict], name: str) -> None:
    run = runs[name]
    result = json.loads(run["stdout"])
    assert result["format"] == "onnx" and result["exporter"] in ("dynamo", "torchscript")
    scale = 1.0 if DATASETS[name] == "classification" else _largest_target(name)
    assert result["max_abs_diff"] < TOL * scale
    assert result["rows_checked"] > 2
    assert result["opset"] >= 17
    assert result["size_bytes"] == run["onnx"].stat().st_size
    onnx.checker.check_model(str(run["onnx"]), full_check=True)
    model = onnx.load(str(run["onnx"]))
    output = "probabilities" if DATASETS[name] == "classification" else "prediction"
    assert [i.name for i in model.graph.input] == ["features"] == [result["input_name"]]
    assert [o.name for o in model.graph.output] == [output] == [result["output_name"]]
    batch_dim = model.graph.input[0].type.tensor_type.shape.dim[0]
    assert batch_dim.dim_param and not batch_dim.dim_value  # symbolic batch axis
    assert model.producer_name == "dl" and model.ir_version <= 8


@pytest.mark.parametrize("name", list(DATASETS))
def test_metadata_describes_the_model(runs: dict[str, dict], name: str) -> None:
    from dlcli.model.assemble import load_model

    meta = _metadata(runs[name]["onnx"])
    loaded = load_model(str(runs[name]["folder"] / "model.pt"))
    columns = loaded.preprocessor.columns
    assert set(meta) >= META_KEYS
    assert meta["dl.task"] == DATASETS[name]
    assert meta["dl.target"] == loaded.preprocessor.target.name
    assert json.loads(meta["dl.input_columns"]) == [c.name for c in columns]
    assert json.loads(meta["dl.column_kinds"]) == {c.name: c.kind for c in columns}
    cats = {c.name: c.categories for c in columns if c.kind == "categorical"}
    assert json.loads(meta["dl.categories"]) == cats
    if DATASETS[name] == "classification":
        assert json.loads(meta["dl.classes"]) == loaded.preprocessor.target.classes
    else:
        assert "dl.classes" not in meta
    if name == "penguins":
        assert set(cats) == {"island", "sex"}


@pytest.mark.parametrize("name", list(DATASETS))
def test_onnxruntime_on_hand_encoded_rows_matches_predict(
    runs: dict[str, dict], name: str, dl_inproc
) -> None:
    run = runs[name]
    rows_csv = run["folder"] / "rows.csv"
    res = dl_inproc("predict", run["folder"] / "model.pt", rows_csv, "--proba", "-f", "jsonl", "-q")
    assert res.returncode == 0, res.stderr
    predicted = [json.loads(line) for line in res.stdout.splitlines()]
    meta = _metadata(run["onnx"])
    if DATASETS[name] == "classification":
        keys = [f"proba_{c}" for c in json.loads(meta["dl.classes"])]
    else:
        keys = ["prediction"]
    expected = np.array([[rec[k] for k in keys] for rec in predicted], dtype=np.float64)

    with open(rows_csv, newline="") as fh:
        x = encode(list(csv.DictReader(fh)), meta)
    assert np.isnan(x).any()  # the blanked rows reach the graph as NaN
    session = ort.InferenceSession(str(run["onnx"]), providers=["CPUExecutionProvider"])
    got = session.run(None, {"features": x})[0]
    assert got.shape == expected.shape
    np.testing.assert_allclose(got, expected, **_allowed(name))
    for n in (1, 37):  # the batch axis is dynamic
        part = session.run(None, {"features": x[:n]})[0]
        np.testing.assert_allclose(part, got[:n], **_allowed(name))


@pytest.mark.parametrize(
    "content",
    [
        None,  # no such file
        b"",
        bytes(range(256)) * 8,
        b"this is not a model file\n",
    ],
    ids=["missing", "empty", "binary", "text"],
)
def test_bad_model_file_exits_2(tmp_path: Path, content: bytes | None, dl_inproc) -> None:
    model = tmp_path / "model.pt"
    if content is not None:
        model.write_bytes(content)
    assert_error(dl_inproc("export", model), "model.pt", code=2)
    assert not (tmp_path / "model.onnx").exists()


def test_truncated_model_in_a_real_process_keeps_target(
    runs: dict[str, dict], tmp_path: Path, run_dl
) -> None:
    whole = (runs["diabetes"]["folder"] / "model.pt").read_bytes()
    (tmp_path / "model.pt").write_bytes(whole[: len(whole) // 2])
    (tmp_path / "model.onnx").write_bytes(b"precious")
    assert_error(run_dl("export", "--onnx", cwd=tmp_path, timeout=120), "model.pt", code=2)
    assert (tmp_path / "model.onnx").read_bytes() == b"precious"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.onnx", "model.pt"]


def test_parity_failure_exits_1_and_keeps_target(runs: dict[str, dict], dl_inproc) -> None:
    """A tolerance below the measured difference must fail and leave the old file alone."""
    name = next((n for n, r in runs.items() if json.loads(r["stdout"])["max_abs_diff"] > 0), None)
    if name is None:
        pytest.skip("every export matched PyTorch bit for bit; no tolerance can be undercut")
    folder = runs[name]["folder"]
    target = folder / "kept.onnx"
    target.write_bytes(b"precious")
    before = sorted(p.name for p in folder.iterdir())
    res = dl_inproc("export", folder / "model.pt", "-o", target, "--tolerance", "0", "--json", "-q")
    assert_error(res, "tolerance", code=1)
    assert target.read_bytes() == b"precious"
    assert sorted(p.name for p in folder.iterdir()) == before  # no temporary file left behind


@pytest.mark.parametrize("name", list(DATASETS))
def test_the_exported_default_is_the_blended_model(runs: dict[str, dict], name: str) -> None:
    """The table preset's graph holds the linear path (fitted by L-BFGS) blended with the members'
    mean (0.75 unless the validation rows chose another share), and export verification passed on
    it within the tolerance."""
    import torch

    folder = runs[name]["folder"]
    weights = torch.load(folder / "model.pt", weights_only=True)["weights"]["network"]
    assert float(weights["0.linear.blend"]) in (0.25, 0.5, 0.75, 1.0)  # the linear path counts
    assert weights["0.linear.weight"].abs().sum() > 0
    result = json.loads(runs[name]["stdout"])
    scale = _largest_target(name) if DATASETS[name] == "regression" else 1.0
    assert result["max_abs_diff"] < TOL * scale
