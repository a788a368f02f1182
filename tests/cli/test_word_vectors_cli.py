"""`dl train --embeddings FILE` end to end on a small generated GloVe file: the coverage line, the
vectors in the model file (and no path), predict, ONNX parity, `--freeze embeddings`, --resume,
bounded memory on a huge (gzip) vectors file, and one-line errors."""

from __future__ import annotations

import csv
import gzip
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import SAMPLES, assert_error, flat
from test_engine import StopAt

from dlcli import modelfile
from dlcli.data.sources import DataOptions
from dlcli.data.text_tokens import word_tokens
from dlcli.engine.train_job import TrainingInterrupted, TrainRequest
from dlcli.families import run_training

DIM = 8
TRAIN_ROWS = 300
FAST = ["--epochs", "2", "--no-plots", "--seed", "1"]


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """train.csv (300 reviews), val.csv (100), and glove.txt: vectors for two in three of the
    words of train.csv (every third word left out; every fifth written capitalised)."""
    folder = tmp_path_factory.mktemp("wordvec")
    with open(SAMPLES / "reviews" / "train.csv", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    for name, part in (("train.csv", rows[:TRAIN_ROWS]), ("val.csv", rows[TRAIN_ROWS:400])):
        with open(folder / name, "w", newline="", encoding="utf-8") as fh:
            w = csv.DictWriter(fh, fieldnames=list(rows[0]))
            w.writeheader()
            w.writerows(part)
    words = sorted({t for r in rows[:TRAIN_ROWS] for t in word_tokens(r["review"], 10_000)})
    rng = np.random.default_rng(0)
    vectors = {w: rng.normal(size=DIM).astype(np.float32) for i, w in enumerate(words) if i % 3}
    with open(folder / "glove.txt", "w", encoding="utf-8") as fh:
        for i, (w, v) in enumerate(vectors.items()):
            fh.write(
                f"{w.capitalize() if i % 5 == 0 else w} {' '.join(repr(float(x)) for x in v)}\n"
            )
    np.save(folder / "vectors.npy", np.stack(list(vectors.values())))
    (folder / "words.json").write_text(json.dumps(list(vectors)))
    return {
        "dir": folder,
        "train": folder / "train.csv",
        "val": folder / "val.csv",
        "glove": folder / "glove.txt",
    }


def file_vectors(data: dict[str, Path]) -> dict[str, np.ndarray]:
    words = json.loads((data["dir"] / "words.json").read_text())
    return dict(zip(words, np.load(data["dir"] / "vectors.npy"), strict=True))


def expected_coverage(data: dict[str, Path], model: dict) -> str:
    """The coverage line computed independently: the vocabulary from the model file, the training
    tokens (all of train.csv, since --val holds the validation rows) tokenised here."""
    vocab, length = model["preprocessor"]["vocab"], model["preprocessor"]["max_length"]
    have = file_vectors(data)
    found = [w for w in vocab[2:] if w in have]
    index = {w: i for i, w in enumerate(vocab)}
    with open(data["train"], encoding="utf-8") as fh:
        tokens = [t for r in csv.DictReader(fh) for t in word_tokens(r["review"], length)]
    hit = sum(t in have and index.get(t, 1) >= 2 for t in tokens)
    words = len(vocab) - 2
    cased = [w for i, w in enumerate(have) if i % 5 == 0 and w.capitalize() != w]
    return (
        f"--embeddings: {len(found):,} of {words:,} vocabulary words ({len(found) / words:.1%}) "
        f"found in {data['glove']}, {len(set(cased) & set(found)):,} of them in lower case; "
        f"covering {hit / len(tokens):.1%} of training tokens"
    )


def test_lstm_with_glove_vectors_trains_predicts_and_exports_with_parity(data, tmp_path, dl_inproc):
    out = tmp_path / "model.pt"
    args = ["train", data["train"], "--val", data["val"], "--arch", "lstm", "-o", out]
    res = dl_inproc(*args, "--embeddings", data["glove"], *FAST)
    assert res.returncode == 0, res.stderr
    model = modelfile.load(out)
    assert expected_coverage(data, model) in flat(res.stderr), res.stderr
    assert f"preset lstm layers[0] (input_embedding) is {DIM} wide" in flat(res.stderr)
    assert model["spec"]["layers"][0] == {"input_embedding": DIM, "name": "embeddings"}
    assert model["word_vectors"]["dim"] == DIM and model["word_vectors"]["found"] > 0
    assert "glove.txt" not in repr(model)  # the vectors are weights; no path is kept
    assert model["weights"]["network"]["embeddings.weight"].shape[1] == DIM

    texts = ["A wonderful, moving film!", "dull and far too long", "", "ok"]
    rows = tmp_path / "rows.csv"
    with open(rows, "w", newline="", encoding="utf-8") as fh:
        csv.writer(fh).writerows([["review"], *[[t] for t in texts]])
    res = dl_inproc("export", out, "--json")
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout)["max_abs_diff"] < 1e-4
    got = [dl_inproc("predict", m, rows, "--proba") for m in (out, out.with_suffix(".onnx"))]
    assert all(r.returncode == 0 for r in got), got[0].stderr + got[1].stderr
    pt, onnx = ([ln.split(",") for ln in r.stdout.strip().splitlines()] for r in got)
    assert pt[0] == onnx[0] and len(pt) == len(texts) + 1
    cols = [i for i, c in enumerate(pt[0]) if c.startswith("proba_")]
    diff = max(
        abs(float(a[i]) - float(b[i])) for a, b in zip(pt[1:], onnx[1:], strict=True) for i in cols
    )
    assert diff < 1e-4
    res = dl_inproc("evaluate", out, data["val"], "--json")
    assert res.returncode == 0 and "accuracy" in json.loads(res.stdout)


def test_freeze_embeddings_keeps_the_files_vectors_through_training(data, tmp_path, dl_inproc):
    out = tmp_path / "frozen.pt"
    args = ["train", data["train"], "--val", data["val"], "--arch", "gru", "-o", out]
    res = dl_inproc(*args, "--embeddings", data["glove"], "--freeze", "embeddings", *FAST)
    assert res.returncode == 0, res.stderr
    assert "frozen (embeddings)" in flat(res.stderr)
    model = modelfile.load(out)
    vocab = model["preprocessor"]["vocab"]
    table = model["weights"]["network"]["embeddings.weight"]
    have = file_vectors(data)
    found = [i for i, w in enumerate(vocab) if i >= 2 and w in have]
    assert len(found) == model["word_vectors"]["found"] > 50
    for i in found:
        assert torch.equal(table[i], torch.from_numpy(have[vocab[i]])), vocab[i]
    assert torch.equal(table[0], torch.zeros(DIM))  # padding
    # trained without freezing, the same rows move
    res = dl_inproc(*args[:-1], tmp_path / "free.pt", "--embeddings", data["glove"], *FAST)
    assert res.returncode == 0, res.stderr
    moved = modelfile.load(tmp_path / "free.pt")["weights"]["network"]["embeddings.weight"]
    assert not torch.equal(moved[found], table[found])


def test_bow_default_takes_vectors_and_freezing_another_layer_is_refused(data, tmp_path, dl_inproc):
    res = dl_inproc(
        "train", data["train"], "-o", tmp_path / "bow.pt", "--embeddings", data["glove"], *FAST
    )
    assert res.returncode == 0, res.stderr
    assert "preset bow layers[0] (bag)" in flat(res.stderr) and "vocabulary words" in res.stderr
    net = modelfile.load(tmp_path / "bow.pt")["weights"]["network"]
    assert net["embeddings.words.weight"].shape[1] == DIM
    args = [
        "train",
        data["train"],
        "--arch",
        "lstm",
        "-o",
        tmp_path / "x.pt",
        "--embeddings",
        data["glove"],
    ]
    assert_error(
        dl_inproc(*args, "--freeze", "1", *FAST),
        "--freeze 1:",
        "freshly initialised",
        "freeze only the embeddings",
    )


@pytest.mark.parametrize("again", [False, True], ids=["resume-alone", "flags-again"])
def test_interrupted_run_resumes_to_the_uninterrupted_weights(data, tmp_path, again):
    """`dl train DATA -o OUT --resume` (the line Ctrl-C prints) keeps --freeze embeddings and the
    vectors from the checkpoint; giving --embeddings and --freeze again changes nothing."""
    flags = {"embeddings": str(data["glove"]), "freeze": "embeddings"}

    def train(out: Path, callbacks: tuple = (), resume: bool = False, **kw) -> dict:
        req = TrainRequest(
            str(data["train"]), str(out), arch="lstm", data_opts=DataOptions(), plots=False,
            overrides={"epochs": 3, "patience": 0, "seed": 2}, callbacks=list(callbacks),
            resume=resume, **kw,
        )  # fmt: skip
        return run_training(req)

    train(tmp_path / "full.pt", **flags)
    out = tmp_path / "model.pt"
    with pytest.raises(TrainingInterrupted, match="interrupted after 2 complete epochs"):
        train(out, callbacks=[StopAt(2)], **flags)
    assert train(out, resume=True, **(flags if again else {}))["epochs_run"] == 3
    a, b = (modelfile.load(p) for p in (tmp_path / "full.pt", out))
    assert a["weights"]["network"].keys() == b["weights"]["network"].keys()
    for k, v in b["weights"]["network"].items():
        assert torch.equal(a["weights"]["network"][k], v), k
    assert a["word_vectors"] == b["word_vectors"] and b["spec"] == a["spec"]
    assert a["transfer"] == b["transfer"] == {"freeze": "embeddings", "fine_tune": None}


def test_a_huge_gzip_vectors_file_streams_in_bounded_memory(data, tmp_path, run_dl_bounded):
    """1.9 GB of vector lines (gzip members of one repeated block, a few MB on disk) after the real
    vectors: a reader that held the file would need more than the whole 1.5 GiB address space
    (an lstm training needs more than 1 GiB of it)."""
    block = "".join(f"{'filler' * 150}{i} 0.5 0.25 0.125 0.0625 1 2 3 4\n" for i in range(10_000))
    member = gzip.compress(block.encode(), compresslevel=1)  # ~9 MB of lines
    path = tmp_path / "huge.txt.gz"
    with open(path, "wb") as fh:
        fh.write(gzip.compress(data["glove"].read_bytes()))
        for _ in range(200):
            fh.write(member)
    assert path.stat().st_size < 50e6 and len(block) * 200 > 1.1 * 1.5 * 2**30
    args = ["train", data["train"], "--arch", "lstm", "-o", tmp_path / "m.pt", "--embeddings", path]
    res = run_dl_bounded(*args, "--epochs", "1", "--no-plots", memory_gb=1.5, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "vocabulary words" in res.stderr and f"found in {path}" in flat(res.stderr)


def test_user_mistakes_are_one_line(data, tmp_path, dl_inproc):
    out = ["-o", tmp_path / "m.pt", *FAST]
    glove = ["--embeddings", data["glove"]]
    res = dl_inproc("train", SAMPLES / "penguins" / "train.csv", *glove, *out)
    assert_error(res, "--embeddings applies to text data;", "is tabular data")
    spec = tmp_path / "my.yaml"
    spec.write_text("layers:\n  - embedding: 16\n  - global_avgpool1d\n")
    res = dl_inproc("train", data["train"], "--spec", spec, *glove, *out)
    assert_error(
        res, f"the vectors have {DIM} dimensions but {spec} layers[0] (embedding) has dim 16"
    )
    bad = tmp_path / "bad.txt"
    bad.write_text("the 1 2 3\nzzqx 1 2 x\nmovie 1 2\n", encoding="utf-8")  # zzqx: not kept
    res = dl_inproc("train", data["train"], "--arch", "lstm", "--embeddings", bad, *out)
    assert_error(res, f"{bad}: line 3: 2 numbers after the word 'movie', expected 3 (as on line 1)")
    other = tmp_path / "other.txt"
    other.write_text("zzqx 1 2\nqqxz 3 4\n", encoding="utf-8")
    res = dl_inproc("train", data["train"], "--arch", "lstm", "--embeddings", other, *out)
    assert_error(res, f"{other}: none of the", "vocabulary words has a vector in it")
    res = dl_inproc(
        "train", data["train"], "--arch", "lstm", "--embeddings", tmp_path / "no.txt", *out
    )
    assert_error(res, f"--embeddings {tmp_path / 'no.txt'}: no such file")
    res = dl_inproc("train", data["train"], "--arch", "lstm", "--freeze", "embeddings", *out)
    assert_error(res, "--freeze needs --init-from MODEL, --weights or --embeddings FILE")
    res = dl_inproc("train", data["train"], *glove, "-o", data["glove"], "--epochs", "1")
    assert res.returncode == 2 and "error:" in res.stderr  # never overwrites the vectors
    assert data["glove"].read_text(encoding="utf-8").count("\n") > 50
