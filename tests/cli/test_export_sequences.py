"""`dl export` on text and time-series models: the documented input contracts, checked with an
independent onnxruntime session against `dl predict`."""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path

import numpy as np
import pytest
from conftest import SAMPLES

ort = pytest.importorskip("onnxruntime")
onnx = pytest.importorskip("onnx")


def _meta(path: Path) -> dict[str, str]:
    return {p.key: p.value for p in onnx.load(str(path)).metadata_props}


@pytest.mark.parametrize("arch", ["lstm", "bow"])
def test_text_model_exports_with_dynamic_length_and_a_vocab_side_file(
    tmp_path: Path, dl_inproc, arch: str
) -> None:
    with open(SAMPLES / "reviews" / "train.csv", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))[:400]
    with open(tmp_path / "reviews.csv", "w", newline="", encoding="utf-8") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    res = dl_inproc(
        "train",
        "reviews.csv",
        "--arch",
        arch,
        "--epochs",
        "2",
        "--quiet",
        "--no-plots",
        cwd=tmp_path,
    )
    assert res.returncode == 0, res.stderr
    res = dl_inproc("export", "--json", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    result = json.loads(res.stdout)
    assert result["input_name"] == "tokens" and result["max_abs_diff"] < 1e-4
    side = json.loads((tmp_path / "model.vocab.json").read_text())
    meta = _meta(tmp_path / "model.onnx")
    assert json.loads(meta["dl.text.vocab"]) == side["vocab"] and side["vocab"][:1] == ["<pad>"]

    texts = ["A wonderful, moving film!", "dull and far too long", "ok"]
    index = {t: i for i, t in enumerate(side["vocab"])}
    ids = [
        [index.get(t, 1) for t in re.findall(side["pattern"], x.lower())][: side["max_length"]]
        or [1]
        for x in texts
    ]
    batch = np.zeros((len(ids), max(map(len, ids))), dtype=np.int64)  # right padding with 0
    for i, row in enumerate(ids):
        batch[i, : len(row)] = row
    session = ort.InferenceSession(str(tmp_path / "model.onnx"), providers=["CPUExecutionProvider"])
    got = session.run(None, {"tokens": batch})[0]
    res = dl_inproc(
        "predict", "model.pt", "-", "--proba", input="\n".join(texts) + "\n", cwd=tmp_path
    )
    assert res.returncode == 0, res.stderr
    lines = res.stdout.strip().splitlines()
    header = lines[0].split(",")
    classes = json.loads(meta["dl.classes"])
    want = np.array(
        [[float(r.split(",")[header.index(f"proba_{c}")]) for c in classes] for r in lines[1:]]
    )
    assert np.abs(got - want).max() < 1e-4


def test_series_model_exports_windows_of_raw_values(tmp_path: Path, dl_inproc) -> None:
    res = dl_inproc(
        "train",
        SAMPLES / "co2" / "train.csv",
        "--target",
        "co2",
        "--window",
        "8",
        "--epochs",
        "2",
        "--quiet",
        "--no-plots",
        cwd=tmp_path,
    )
    assert res.returncode == 0, res.stderr
    res = dl_inproc("export", "--json", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    result = json.loads(res.stdout)
    assert result["input_name"] == "series" and result["max_abs_diff"] < 1e-3
    meta = _meta(tmp_path / "model.onnx")
    assert json.loads(meta["dl.series.features"]) == ["co2"] and meta["dl.series.window"] == "8"
    with open(SAMPLES / "co2" / "history.csv", encoding="utf-8") as fh:
        history = [float(r["co2"]) for r in csv.DictReader(fh)]
    window = np.array(history[-8:], dtype=np.float32).reshape(1, 8, 1)
    session = ort.InferenceSession(str(tmp_path / "model.onnx"), providers=["CPUExecutionProvider"])
    got = float(session.run(None, {"series": window})[0][0, 0])
    res = dl_inproc("predict", "model.pt", SAMPLES / "co2" / "history.csv", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    last = res.stdout.strip().splitlines()[-1].split(",")[-1]
    assert abs(got - float(last)) < 1e-3 * max(1.0, abs(got))
