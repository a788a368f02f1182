"""Hostile network sizes through real `dl` processes under a 2 GiB address-space limit (issue 11,
class 2): a spec layer of a billion units, or a huge input shape, is one line naming the layer (or
the input) and the size, exit 2, in seconds; --max-model-gb and DL_MAX_MODEL_GB raise the limit."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from conftest import PENGUINS, assert_error

BIG = "layers:\n  - dense: 64\n  - relu\n  - dense: 1000000000\n"


@pytest.fixture
def big_spec(tmp_path: Path) -> Path:
    path = tmp_path / "big.yaml"
    path.write_text(BIG, encoding="utf-8")
    return path


def test_dl_build_refuses_a_billion_unit_layer(run_dl_bounded, big_spec: Path):
    t0 = time.perf_counter()
    res = run_dl_bounded("build", "--spec", big_spec, "--input-shape", "4", timeout=60)
    line = assert_error(res, f"spec {big_spec}: layers[2].dense:", "billion parameters", "4.0 GB")
    assert "--max-model-gb" in line and len(line) < 300
    assert time.perf_counter() - t0 < 30


def test_dl_train_refuses_it_before_training_and_writes_nothing(
    run_dl_bounded, big_spec: Path, tmp_path: Path
):
    out = tmp_path / "m.pt"
    res = run_dl_bounded("train", PENGUINS / "train.csv", "--spec", big_spec, "-o", out, timeout=60)
    assert_error(res, "layers[2].dense", "billion parameters", "B to train at batch size")
    assert not out.exists() and not (tmp_path / "m.run").exists()


def test_dl_build_refuses_a_huge_input_shape(run_dl_bounded):
    res = run_dl_bounded("build", "--arch", "cnn", "--input-shape", "3,100000,100000", timeout=60)
    assert_error(res, "input of shape (3, 100000, 100000)", "TB at batch size 64", "limit")


def test_the_flag_and_the_variable_raise_the_limit(
    run_dl_bounded, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    """A 17-million-parameter network (~0.4 GB to train) against a 0.1 GB limit, then a 1 GB one."""
    spec = tmp_path / "mid.yaml"
    spec.write_text("layers:\n  - dense: 16\n  - relu\n  - dense: 1000000\n", encoding="utf-8")
    args = ("build", "--spec", spec, "--input-shape", "4", "--json")
    assert_error(run_dl_bounded(*args, "--max-model-gb", "0.1"), "layers[2].dense", "100.0 MB")
    assert run_dl_bounded(*args, "--max-model-gb", "1").returncode == 0
    monkeypatch.setenv("DL_MAX_MODEL_GB", "0.1")
    assert_error(run_dl_bounded(*args), "layers[2].dense", "100.0 MB limit")
    res = run_dl_bounded(*args, "--max-model-gb", "1")  # the flag wins over the variable
    assert res.returncode == 0, res.stderr


def test_a_model_trained_under_a_raised_limit_predicts_without_it(
    run_dl_bounded, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    """Loading a model file holds it to its own stored weights (4 bytes a parameter, one sample)
    plus the limit, not to what training it took: ~1.3 million parameters need ~46 MB to train,
    over a 10 MB limit, and ~5 MB to load."""
    spec = tmp_path / "wide.yaml"
    spec.write_text("layers:\n  - dense: 100000\n  - relu\n", encoding="utf-8")
    model = tmp_path / "m.pt"
    train = ("train", PENGUINS / "train.csv", "--spec", spec, "-o", model, "--epochs", "1")
    assert_error(run_dl_bounded(*train, "--max-model-gb", "0.01"), "layers[0].dense")
    res = run_dl_bounded(*train, "--max-model-gb", "1", "--quiet", "--no-plots", memory_gb=4)
    assert res.returncode == 0, res.stderr
    monkeypatch.setenv("DL_MAX_MODEL_GB", "0.01")
    res = run_dl_bounded("predict", model, PENGUINS / "test.csv", memory_gb=3)
    assert res.returncode == 0, res.stderr
    assert res.stdout.count("\n") > 10
