"""Table formats end to end (issue 16): the commands of the issue verbatim, identical models from
the same table in every format, --stream, evaluate, predict (--format parquet on the .pt and .onnx
paths), stdin with --input-format, and one line for a damaged file through the command line."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest
import torch
from conftest import assert_error
from formats_data import every_format, table, write

TRAIN = ("--epochs", "2", "--seed", "0", "--target", "label", "-q", "--no-plots")


def _weights(path: Path) -> dict[str, torch.Tensor]:
    from dlcli import modelfile

    data = modelfile.load(str(path))
    return {k: v for k, v in data["weights"].items() if isinstance(v, torch.Tensor)}


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return every_format(tmp_path_factory.mktemp("formats"), n=300)


@pytest.mark.parametrize("stream", [False, True], ids=["loaded", "streamed"])
def test_identical_models_from_every_format(dl_inproc, files, tmp_path: Path, stream: bool) -> None:
    flag = "--stream" if stream else "--no-stream"
    models = {}
    for suffix, path in files.items():
        out = tmp_path / f"m{suffix.replace('.', '_')}.pt"
        r = dl_inproc("train", path, *TRAIN, flag, "-o", out)
        assert r.returncode == 0, r.stderr
        models[suffix] = _weights(out)
    ref = models.pop(".csv")
    for suffix, weights in models.items():
        assert weights.keys() == ref.keys()
        for k in ref:
            assert torch.equal(weights[k], ref[k]), (suffix, k)


def test_issue_commands_verbatim(dl_inproc, tmp_path: Path) -> None:
    """dl train data.parquet --arch mlp --target y; dl train big.parquet --stream;
    dl predict model.pt rows.parquet --format parquet -o out.parquet; dl evaluate model.pt test.jsonl"""
    t = table(300).rename_columns(["x", "count", "small", "flag", "colour", "day", "y"])
    for name in ("data.parquet", "big.parquet", "rows.parquet", "test.jsonl"):
        write(t, tmp_path / name)
    quick = ("--epochs", "2", "-q")
    r = dl_inproc("train", "data.parquet", "--arch", "mlp", "--target", "y", *quick, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    r = dl_inproc("train", "big.parquet", "--stream", "-o", "big.pt", *quick, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    r = dl_inproc(
        "predict",
        "model.pt",
        "rows.parquet",
        "--format",
        "parquet",
        "-o",
        "out.parquet",
        cwd=tmp_path,
    )
    assert r.returncode == 0, r.stderr
    out = pq.read_table(tmp_path / "out.parquet")
    assert out.num_rows == 300 and out.column_names == ["prediction"]
    r = dl_inproc("evaluate", "model.pt", "test.jsonl", "--json", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert '"accuracy"' in r.stdout


def test_predict_formats_agree(dl_inproc, files, tmp_path: Path) -> None:
    """csv, jsonl and parquet outputs hold the same predictions, from every input format, on the
    .pt and the .onnx paths; stdin with --input-format reads as the file does."""
    model = tmp_path / "m.pt"
    assert dl_inproc("train", files[".csv"], *TRAIN, "-o", model).returncode == 0
    onnx = tmp_path / "m.onnx"
    assert dl_inproc("export", model, "-o", onnx, "-q").returncode == 0
    ref = dl_inproc("predict", model, files[".csv"], "--proba")
    assert ref.returncode == 0, ref.stderr
    want = pd.read_csv(pd.io.common.StringIO(ref.stdout))
    for graph in (model, onnx):
        for suffix, path in files.items():
            out = tmp_path / f"p{suffix}.parquet"
            r = dl_inproc("predict", graph, path, "--proba", "--format", "parquet", "-o", out)
            assert r.returncode == 0, r.stderr
            got = pq.read_table(out).to_pandas()
            assert got["prediction"].tolist() == want["prediction"].astype(str).tolist()
            assert (got["proba_yes"] - want["proba_yes"]).abs().max() < 1e-6
        r = dl_inproc("predict", graph, files[".csv"], "--format", "jsonl")
        assert r.returncode == 0 and len(r.stdout.splitlines()) == len(want)
    stdin = dl_inproc(
        "predict",
        model,
        "-",
        "--proba",
        "--input-format",
        "parquet",
        input=files[".parquet"].read_bytes(),
    )
    assert stdin.returncode == 0, stdin.stderr
    got = pd.read_csv(pd.io.common.StringIO(stdin.stdout))  # other chunks: float rounding only
    assert got["prediction"].tolist() == want["prediction"].tolist()
    assert (got["proba_yes"] - want["proba_yes"]).abs().max() < 1e-6
    r = dl_inproc(
        "train",
        "-",
        "--input-format",
        "jsonl",
        *TRAIN,
        "-o",
        tmp_path / "s.pt",
        input=files[".jsonl"].read_bytes(),
    )
    assert r.returncode == 0, r.stderr
    assert_error(
        dl_inproc("predict", model, files[".csv"], "--format", "parquet"),
        "--format parquet",
        "-o FILE",
    )
    bad = dl_inproc("predict", model, "-", "--input-format", "parquet", input=b"not parquet at all")
    assert_error(bad, "<stdin>: not a Parquet file")


@pytest.mark.parametrize(
    "suffix", [".parquet", ".feather", ".jsonl", ".csv.gz", ".csv.zst", ".csv.bz2"]
)
def test_damaged_file_through_the_cli(run_dl_bounded, tmp_path: Path, suffix: str) -> None:
    good = write(table(60), tmp_path / f"good{suffix}")
    bad = tmp_path / f"bad{suffix}"
    data = good.read_bytes()
    bad.write_bytes(
        data[: len(data) // 2] if not suffix.startswith(".csv") else data[:10] + b"\x01" * 50
    )
    if suffix == ".jsonl":
        bad.write_bytes(data[:200] + b"\n{broken\n" + data[200:])
    r = run_dl_bounded("train", bad, "--epochs", "1", "-o", tmp_path / "m.pt")
    assert_error(r, str(bad))


def test_validation_file_text_and_series(dl_inproc, files, tmp_path: Path) -> None:
    """--val in another format; the text and series kinds read Parquet and JSON Lines through the
    readers and train the same weights as from their CSV."""
    import pyarrow.csv as pcsv
    from formats_data import write as write_format

    r = dl_inproc(
        "train", files[".parquet"], *TRAIN, "--val", files[".jsonl"], "-o", tmp_path / "v.pt"
    )
    assert r.returncode == 0, r.stderr
    root = Path(__file__).resolve().parents[2] / "sample_data"
    for name, flags in (("reviews", ()), ("co2", ("--window", "52", "--target", "co2"))):
        train = pcsv.read_csv(root / name / "train.csv")
        if name == "reviews":
            train = train.slice(0, 400)
        weights = {}
        for suffix in (".csv", ".parquet", ".jsonl"):
            path = write_format(train, tmp_path / f"{name}{suffix}")
            out = tmp_path / f"{name}{suffix}.pt"
            r = dl_inproc(
                "train", path, *flags, "--epochs", "1", "--seed", "0", "-q", "--no-plots", "-o", out
            )
            assert r.returncode == 0, r.stderr
            weights[suffix] = _weights(out)
        for suffix in (".parquet", ".jsonl"):
            for k, v in weights[".csv"].items():
                assert torch.equal(weights[suffix][k], v), (name, suffix, k)
    history = write_format(pcsv.read_csv(root / "co2" / "history.csv"), tmp_path / "history.jsonl")
    r = dl_inproc("predict", tmp_path / "co2.parquet.pt", history, "--steps", "2")
    assert r.returncode == 0 and len(r.stdout.splitlines()) == 3, r.stderr


def test_image_list_as_parquet(dl_inproc, tmp_path: Path) -> None:
    """A table of image paths and labels may be any table format (the image kinds read it through
    the readers)."""
    import numpy as np
    import pyarrow as pa
    from PIL import Image

    rng = np.random.default_rng(0)
    paths, labels = [], []
    for i in range(24):
        c = i % 2
        pixels = (rng.random((16, 16, 3)) * 80 + c * 150).astype("uint8")
        Image.fromarray(pixels).save(tmp_path / f"img{i}.png")
        paths.append(f"img{i}.png")
        labels.append("ab"[c])
    pq.write_table(pa.table({"path": paths, "label": labels}), tmp_path / "images.parquet")
    args = ("--arch", "cnn", "--epochs", "1", "--image-size", "16", "-q", "--no-plots")
    r = dl_inproc("train", tmp_path / "images.parquet", *args, "-o", tmp_path / "m.pt")
    assert r.returncode == 0, r.stderr
    r = dl_inproc("predict", tmp_path / "m.pt", tmp_path / "images.parquet")
    assert r.returncode == 0 and len(r.stdout.splitlines()) == 25, r.stderr
