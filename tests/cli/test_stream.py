"""`--stream`: out-of-core CSV training. The streamed statistics pass fits the preprocessor the in-memory
path fits, the shuffle buffer hands out every training row once per epoch, a streamed model is an
ordinary model file, and it reaches the in-memory model's validation accuracy on the same file."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import Runner, assert_error

from dlcli.data.readers import read_table
from dlcli.data.sources import DataOptions, choose_source
from dlcli.data.stream import StreamedRows, StreamedTableSource, prefetched
from dlcli.data.stream_scan import held_out, scan
from dlcli.data.tabular import TabularPreprocessor
from dlcli.data.tabular_source import TabularSource
from dlcli.data.target import Target
from dlcli.engine.train_job import TrainRequest
from dlcli.errors import InputError
from dlcli.families import run_training

ROWS = 250_000


def write_table(path: Path, rows: int, seed: int = 0) -> Path:
    """Six numbers (one with 5% missing), a colour, a small integer count, a yes/no label that
    depends on them non-linearly; written with pyarrow in one go (~20 MB for 250k rows)."""
    import pyarrow as pa
    import pyarrow.csv as pc

    rng = np.random.default_rng(seed)
    x = rng.normal(size=(rows, 6)).astype(np.float32)
    color = rng.integers(0, 4, rows)
    logit = 1.5 * x[:, 0] - x[:, 1] + 0.8 * x[:, 2] * x[:, 3] + np.array([0, 1, -1, 0.5])[color]
    cols = {f"x{i}": x[:, i] for i in range(6)}
    cols["x4"] = pa.array(x[:, 4], mask=rng.random(rows) < 0.05)
    cols["color"] = np.array(["red", "green", "blue", "teal"])[color]
    cols["count"] = rng.integers(0, 10, rows)
    cols["label"] = np.where(logit + rng.logistic(size=rows) > 0, "yes", "no")
    pc.write_csv(pa.table(cols), path)
    return path


@pytest.fixture(scope="module")
def big_csv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_table(tmp_path_factory.mktemp("stream") / "big.csv", ROWS)


@pytest.fixture(scope="module")
def trained(big_csv: Path) -> dict:
    """The same file trained streamed and in memory with the same settings, through the library
    call `dl train` makes (no process start-ups): {"stream"|"memory": (model path, summary)}."""
    out = {}
    for mode, stream in (("stream", True), ("memory", False)):
        model = big_csv.parent / f"{mode}.pt"
        req = TrainRequest(
            str(big_csv),
            str(model),
            data_opts=DataOptions(stream=stream),
            overrides={"epochs": 1, "batch_size": 512},
            plots=False,
        )
        out[mode] = (model, run_training(req))
    return out


def test_streamed_training_reaches_in_memory_accuracy(trained: dict) -> None:
    (_, streamed), (_, in_memory) = trained["stream"], trained["memory"]
    rows = streamed["train_rows"] + streamed["val_rows"]
    assert rows == ROWS
    assert abs(streamed["val_rows"] / rows - 0.2) < 0.01  # the held-out share
    assert streamed["metrics"]["accuracy"] > 0.7  # the label is learnable (Bayes rate ~0.79)
    assert abs(streamed["metrics"]["accuracy"] - in_memory["metrics"]["accuracy"]) < 0.01


def test_streamed_model_evaluates_predicts_exports(
    trained: dict, big_csv: Path, dl_inproc: Runner, tmp_path: Path
) -> None:
    model = trained["stream"][0]
    rows = tmp_path / "rows.csv"
    pd.read_csv(big_csv, nrows=500).to_csv(rows, index=False)
    res = dl_inproc("evaluate", model, rows, "--json")
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout)["accuracy"] > 0.7
    res = dl_inproc("predict", model, rows)
    assert res.returncode == 0, res.stderr
    predicted = pd.read_csv(io.StringIO(res.stdout))["prediction"]
    assert len(predicted) == 500 and set(predicted) <= {"yes", "no"}
    res = dl_inproc("export", model, "--onnx", "-o", tmp_path / "m.onnx")
    assert res.returncode == 0, res.stderr
    assert (tmp_path / "m.onnx").stat().st_size > 0


def test_metrics_past_the_exact_rows_match_the_gathered_ones(
    trained: dict, big_csv: Path, dl_inproc: Runner, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`dl evaluate` on all 250k rows, scored exactly (gathered) and from chunked sums (the path
    of more than EXACT_ROWS rows, taken here from 1,000): the same figures, ROC AUC to its bins."""
    from dlcli import streamed_metrics

    model = trained["stream"][0]
    res = dl_inproc("evaluate", model, big_csv, "--json")
    assert res.returncode == 0, res.stderr
    exact = json.loads(res.stdout)
    monkeypatch.setattr(streamed_metrics, "EXACT_ROWS", 1000)
    res = dl_inproc("evaluate", model, big_csv, "--json")
    assert res.returncode == 0, res.stderr
    summed = json.loads(res.stdout)
    assert summed["n"] == exact["n"] == ROWS
    for key in ("accuracy", "balanced_accuracy", "confusion_matrix", "per_class"):
        assert summed[key] == exact[key], key
    assert summed["log_loss"] == pytest.approx(exact["log_loss"], rel=1e-9)
    assert summed["roc_auc"] == pytest.approx(exact["roc_auc"], abs=1e-4)


def _tricky(path: Path, rows: int = 3000) -> Path:
    """Columns each typing rule looks at: an ID, a single value, an empty column, free text,
    booleans, rare categories, missing numbers, an integer count."""
    rng = np.random.default_rng(1)
    frame = pd.DataFrame(
        {
            "row_id": np.arange(rows) + 7,
            "same": np.full(rows, 3.5),
            "empty": [""] * rows,
            "note": [f"text {i}" for i in range(rows)],
            "flag": rng.random(rows) < 0.3,
            "city": rng.choice(["a", "b", " c", "d"], rows, p=[0.5, 0.3, 0.15, 0.05]),
            "v": np.where(rng.random(rows) < 0.1, np.nan, rng.normal(5, 2, rows)),
            "n": rng.integers(0, 5, rows),
            "y": rng.integers(0, 3, rows),
        }
    )
    frame.to_csv(path, index=False)
    return path


@pytest.mark.parametrize("split", [(0.25, 3), None])
def test_scan_fits_the_in_memory_encoder(tmp_path: Path, split: tuple | None) -> None:
    path = _tricky(tmp_path / "t.csv")
    found = scan(str(path), "y", None, split, None)
    frame = read_table(str(path))
    target = Target.fit(frame["y"], None, str(path))
    rows = np.flatnonzero(~held_out(0, len(frame), *split)) if split else None
    expected = TabularPreprocessor.fit(frame, target, str(path), rows)
    assert found.preprocessor.target == expected.target
    assert [c.name for c in found.preprocessor.columns] == ["flag", "city", "v", "n"]
    for got, want in zip(found.preprocessor.columns, expected.columns, strict=True):
        assert (got.name, got.kind, got.indicator) == (want.name, want.kind, want.indicator)
        assert got.categories == want.categories
        assert got.mean == pytest.approx(want.mean, rel=1e-5, abs=1e-6)
        assert got.std == pytest.approx(want.std, rel=1e-5)
    train = len(frame) if split is None else len(rows)
    assert found.train_rows == train and found.train_rows + found.val_rows == len(frame)
    y_train = target.encode(frame["y"], "t")[rows if split else slice(None)]
    assert found.label_counts == np.bincount(y_train, minlength=3).tolist()


def test_shuffle_buffer_hands_out_each_training_row_once(tmp_path: Path) -> None:
    path = write_table(tmp_path / "s.csv", 20_000)
    opts = DataOptions(val_split=0.2, seed=5, stream=True)
    prep = StreamedTableSource.prepare(str(path), opts)
    train, val = prep.x_train, prep.x_val
    assert isinstance(train, StreamedRows)
    train.batch_size, train.buffer_rows = 64, 3000
    first = list(train.shuffled(torch.Generator().manual_seed(0)))
    assert len(first) == len(train) == train.rows // 64
    x = torch.cat([xb for xb, _ in first])
    assert len(torch.unique(x, dim=0)) == len(x)  # no row twice
    key = lambda rows: [tuple(r) for r in rows[:, :4].tolist()]  # noqa: E731 (x0-x3: no NaN)
    position = {k: i for i, k in enumerate(key(torch.cat([xb for xb, _ in train.in_order()])))}
    order = np.array([position[k] for k in key(x)])  # each batch row's place in the file
    assert order[:1500].max() > 2500  # the first batches draw from across the whole buffer
    assert np.abs(order - np.arange(len(order))).mean() > 500  # rows move about a buffer's length
    again = list(train.shuffled(torch.Generator().manual_seed(0)))
    assert all(
        torch.equal(a[0].nan_to_num(), b[0].nan_to_num()) for a, b in zip(first, again, strict=True)
    )
    held = set(key(torch.cat([xb for xb, _ in val.in_order()])))
    assert held.isdisjoint(position) and len(held) + len(position) == 20_000


def test_validation_rows_too_many_to_cache_are_not_collected(tmp_path: Path) -> None:
    """Validation rows that cannot fit the cache (known from their count on the first chunk) are
    not gathered during a pass only to be dropped: numpy memory during a pass over 6 MB of rows
    with a 5 MB cache stays at the chunks in flight; they are cached when the cap allows."""
    import tracemalloc

    path = write_table(tmp_path / "v.csv", 300_000)  # 8 raw columns: 32 bytes a row
    prep = StreamedTableSource.prepare(str(path), DataOptions(val_split=0.6, stream=True))
    val = prep.x_val
    assert isinstance(val, StreamedRows) and 170_000 < val.rows < 190_000  # ~5.8 MB
    for cap, cached in ((5 << 20, False), (8 << 20, True)):
        val.cache_bytes, val._cache = cap, None
        tracemalloc.start()
        rows = sum(len(xb) for xb, _ in val.in_order())
        peak = tracemalloc.get_traced_memory()[1] / 2**20
        tracemalloc.stop()
        assert rows == val.rows and (val._cache is not None) == cached
        if not cached:
            assert peak < 4.0, peak  # MB: not the 5 MB cap collected first, then dropped


def test_corrupt_row_mid_file_is_one_line(big_csv: Path, dl_inproc: Runner, tmp_path: Path) -> None:
    lines = big_csv.read_bytes().split(b"\n")
    bad = tmp_path / "bad.csv"
    lines[200_001] = b"0.1,oops," + lines[200_001].split(b",", 2)[2]  # data row 200,001
    bad.write_bytes(b"\n".join(lines))
    res = dl_inproc("train", bad, "--stream", "-o", tmp_path / "m.pt")
    assert_error(res, "bad.csv", "'x1'", "row 200001", "'oops'")
    assert not (tmp_path / "m.pt").exists()
    lines[200_001] += b",extra"
    bad.write_bytes(b"\n".join(lines))
    with pytest.raises(InputError, match="line 200002 has 10 fields"):
        scan(str(bad), "label", None, (0.2, 42))


def test_large_files_stream_on_their_own(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, big_csv: Path
) -> None:
    monkeypatch.setenv("DL_STREAM_BYTES", str(big_csv.stat().st_size - 1))
    assert choose_source(str(big_csv), DataOptions()) is StreamedTableSource
    assert choose_source(str(big_csv), DataOptions(stream=False)) is TabularSource
    monkeypatch.setenv("DL_STREAM_BYTES", str(big_csv.stat().st_size))
    assert choose_source(str(big_csv), DataOptions()) is TabularSource


def test_prefetch_raises_in_the_consumer_and_closes_its_source() -> None:
    closed = []

    def source(fail_at: int):
        try:
            for i in range(100):
                if i == fail_at:
                    raise InputError(f"bad.csv: row {i}")
                yield i
        finally:
            closed.append(fail_at)

    got = []
    with pytest.raises(InputError, match="row 5"):
        for item in prefetched(source(5), depth=2):
            got.append(item)
    assert got == [0, 1, 2, 3, 4]
    for item in prefetched(source(-1), depth=2):  # stopped early: the reader is closed
        if item == 3:
            break
    assert closed == [5, -1]
