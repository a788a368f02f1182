"""Issue 16's commands for the layouts users have, verbatim, on data generated here:
`dl train aclImdb/train --arch lstm`, `dl evaluate model.pt aclImdb/test`,
`dl train images.csv --arch cnn`, `dl train mnist/ --arch cnn` (gzipped and raw); plus the
refusals (a bad IDX file, a non-UTF-8 text file, a missing image of a list) as one line each."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import assert_error
from layouts_data import digit_arrays, idx_bytes, write_image_list, write_imdb, write_mnist

TINY = ("--epochs", "1", "--no-plots", "--quiet")


def predictions(csv: str) -> list[tuple[str, str]]:
    """(path, predicted class) of each row of `dl predict` output."""
    return [tuple(line.split(",")[:2]) for line in csv.splitlines()[1:]]


@pytest.fixture(autouse=True)
def cache_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DL_CACHE_DIR", str(tmp_path / "cache"))


def test_imdb_train_evaluate_predict(tmp_path: Path, run_dl, dl_inproc) -> None:
    write_imdb(tmp_path / "aclImdb", n=12)
    res = run_dl("train", "aclImdb/train", "--arch", "lstm", *TINY, cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    assert (tmp_path / "model.pt").is_file()
    for data in ("aclImdb/test", "aclImdb"):  # the top-level folder evaluates its test/ split
        res = dl_inproc("evaluate", "model.pt", data, "--json", cwd=tmp_path)
        assert res.returncode == 0, res.stderr
        assert json.loads(res.stdout)["n"] == 24
    one = "aclImdb/test/pos/0_7.txt"
    res = dl_inproc("predict", "model.pt", one, "aclImdb/test/neg", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    lines = res.stdout.splitlines()
    assert lines[0] == "path,prediction" and len(lines) == 1 + 1 + 12
    assert lines[1].startswith(f"{one},") and lines[1].split(",")[1] in ("neg", "pos")
    res = dl_inproc("export", "model.pt", "--onnx", "-o", "model.onnx", cwd=tmp_path)
    assert res.returncode == 0, res.stderr  # the ONNX contract of text models, unchanged


def test_text_folder_with_non_utf8_file_names_it(tmp_path: Path, run_dl) -> None:
    root = write_imdb(tmp_path / "aclImdb")
    bad = root / "train" / "neg" / "2_1.txt"
    bad.write_bytes(b"ok \xff\xfe bytes")
    res = run_dl("train", root / "train", "--arch", "lstm", *TINY, cwd=tmp_path)
    line = assert_error(res, str(bad), "byte 3 is not UTF-8 text (0xff)", "save the file as UTF-8")
    assert line == f"error: {bad}: byte 3 is not UTF-8 text (0xff) (save the file as UTF-8)"


def test_image_list_train_evaluate_predict(tmp_path: Path, run_dl, dl_inproc) -> None:
    table = write_image_list(tmp_path, n=30)
    res = run_dl("train", "images.csv", "--arch", "cnn", "--augment", "flip", *TINY, cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    res = dl_inproc("evaluate", "model.pt", "images.csv", "--json", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout)["n"] == 30
    res = dl_inproc("predict", "model.pt", "images.csv", "--image-column", "file", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    lines = res.stdout.splitlines()
    assert lines[0] == "path,prediction,confidence" and len(lines) == 31
    assert lines[1].startswith("img/0.png,")  # as the table says, from where dl runs
    res = dl_inproc("export", "model.pt", "--onnx", "-o", "model.onnx", cwd=tmp_path)
    assert res.returncode == 0, res.stderr  # the ONNX contract of image models, unchanged
    res = dl_inproc("predict", "model.onnx", "images.csv", cwd=tmp_path)  # onnxruntime reads lists
    assert res.returncode == 0, res.stderr
    assert predictions(res.stdout) == predictions("\n".join(lines))
    table.write_text(table.read_text() + "img/gone.png,3\n")
    res = dl_inproc("evaluate", "model.pt", "images.csv", cwd=tmp_path)
    assert_error(res, "images.csv: row 31: no image file img/gone.png")
    res = dl_inproc("predict", "model.pt", "images.csv", "--image-column", "nope", cwd=tmp_path)
    assert_error(res, "images.csv: no column 'nope'", "pass --image-column COLUMN")


def test_an_image_column_given_to_train_goes_into_the_onnx_graph(
    tmp_path: Path, run_dl, dl_inproc
) -> None:
    """Trained with --image-column file, the exported graph reads that column of a table whose
    first column also names images (detection alone would pick `thumb`), as `.pt` does; and
    --image-column works on the graph as on the model file."""
    table = write_image_list(tmp_path, n=20)
    res = run_dl("train", "images.csv", "--arch", "cnn", "--image-column", "file", *TINY,
                 cwd=tmp_path)  # fmt: skip
    assert res.returncode == 0, res.stderr
    assert dl_inproc("export", "model.pt", "--onnx", cwd=tmp_path).returncode == 0
    rows = table.read_text().splitlines()
    both = ["thumb," + rows[0]] + [f"small/{i}.png,{r}" for i, r in enumerate(rows[1:])]
    (tmp_path / "both.csv").write_text("\n".join(both) + "\n")
    pt = dl_inproc("predict", "model.pt", "both.csv", cwd=tmp_path)
    onnx = dl_inproc("predict", "model.onnx", "both.csv", cwd=tmp_path)
    assert pt.returncode == 0 and onnx.returncode == 0, pt.stderr + onnx.stderr
    assert predictions(onnx.stdout) == predictions(pt.stdout)
    assert predictions(onnx.stdout)[0][0] == "img/0.png"
    res = dl_inproc("predict", "model.onnx", "both.csv", "--image-column", "thumb", cwd=tmp_path)
    assert_error(res, "both.csv: row 1: no image file small/0.png")
    res = dl_inproc("predict", "model.onnx", "images.csv", "--image-column", "nope", cwd=tmp_path)
    assert_error(res, "images.csv: no column 'nope'", "pass --image-column COLUMN")


@pytest.mark.parametrize("gz", [True, False])
def test_mnist_idx_train_evaluate(tmp_path: Path, run_dl, dl_inproc, gz: bool) -> None:
    write_mnist(tmp_path / "mnist", n=60, gz=gz)
    res = run_dl("train", "mnist/", "--arch", "cnn", *TINY, "--json", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    res = dl_inproc("evaluate", "model.pt", "mnist", "--json", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout)["n"] == 30  # the t10k pair
    res = dl_inproc("predict", "model.pt", "mnist", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    lines = res.stdout.splitlines()
    first = f"mnist/t10k-images-idx3-ubyte{'.gz' if gz else ''}#0"
    assert len(lines) == 31 and lines[1].split(",")[0] == first
    res = dl_inproc("export", "model.pt", "--onnx", "-o", "model.onnx", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    res = dl_inproc("predict", "model.onnx", "mnist", cwd=tmp_path)  # onnxruntime reads IDX too
    assert res.returncode == 0, res.stderr
    assert predictions(res.stdout) == predictions("\n".join(lines))


def test_bad_idx_files_are_refused(tmp_path: Path, run_dl_bounded) -> None:
    folder = write_mnist(tmp_path / "mnist")
    images = folder / "train-images-idx3-ubyte"
    images.write_bytes(idx_bytes(digit_arrays(40)[0], magic=2052))
    res = run_dl_bounded("train", folder, "--arch", "cnn", *TINY, cwd=tmp_path)
    assert_error(res, f"{images}: magic number 2052 is not 2051 (IDX images of uint8)")
    images.write_bytes(idx_bytes(digit_arrays(40)[0])[:-100])
    res = run_dl_bounded("train", folder, "--arch", "cnn", *TINY, cwd=tmp_path)
    assert_error(
        res, f"{images}: truncated: 40 x 28 x 28 needs 31,360 bytes of values, found 31,260"
    )


def test_huge_text_file_costs_bounded_memory(tmp_path: Path, run_dl_bounded) -> None:
    root = write_imdb(tmp_path / "aclImdb")
    with open(root / "train" / "pos" / "huge_10.txt", "wb") as fh:
        fh.write(b"a long review " * 100)
        fh.truncate(3 << 30)  # 3 GiB (sparse): more than the process may map
    res = run_dl_bounded("train", root / "train", "--arch", "bow", "--epochs", "1", "--no-plots",
                         cwd=tmp_path, memory_gb=2.0)  # fmt: skip
    assert res.returncode == 0, res.stderr
    assert "read only the first 1 MB of 1 long text file(s)" in " ".join(res.stderr.split())
