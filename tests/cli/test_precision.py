"""The GPU path's switches, on what this machine has: --precision (bf16 autocast on CPU, fp16
refused off CUDA), --compile (and its eager fallback), the same precision for evaluate/predict,
host-resident batches with per-batch copies; the CUDA checks run only where a GPU is present."""

from __future__ import annotations

import io
import json
import shutil
import subprocess
import sys

import pandas as pd
import pytest
import torch
from conftest import PENGUINS, SAMPLES, assert_error, dl_env

from dlcli.engine.batches import TensorBatches

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
TRAIN = ["train", PENGUINS / "train.csv", "--no-plots", "--json"]


def _summary(res: subprocess.CompletedProcess) -> dict:
    assert res.returncode == 0, res.stderr
    return json.loads(res.stdout)


def test_fp16_on_cpu_is_one_line_before_any_data_is_read(dl_inproc, tmp_path) -> None:
    res = dl_inproc(*TRAIN, "--device", "cpu", "--precision", "fp16", "-o", tmp_path / "m.pt")
    assert_error(res, "--precision fp16", "CUDA")
    assert "training rows" not in res.stderr  # refused before loading
    assert not (tmp_path / "m.pt").exists()


def test_unknown_precision_is_refused(dl_inproc, tmp_path) -> None:
    res = dl_inproc(*TRAIN, "--precision", "fp8", "-o", tmp_path / "m.pt")
    assert_error(res, "--precision", "fp8")


def test_bf16_on_cpu_trains_as_well_as_fp32(dl_inproc, tmp_path) -> None:
    bf16 = _summary(
        dl_inproc(*TRAIN, "--device", "cpu", "--precision", "bf16", "-o", tmp_path / "b.pt")
    )
    assert bf16["settings"]["precision"] == "bf16"
    assert bf16["metrics"]["accuracy"] >= 0.95
    # evaluate and predict accept the same precision; bf16 outputs stay close to fp32's
    ev = [
        _summary(dl_inproc("evaluate", tmp_path / "b.pt", PENGUINS / "test.csv", "--json", *p))
        for p in (["--precision", "fp32"], ["--precision", "bf16"])
    ]
    assert ev[1]["accuracy"] == pytest.approx(ev[0]["accuracy"], abs=0.02)
    preds = []
    for p in ("fp32", "bf16"):
        res = dl_inproc(
            "predict", tmp_path / "b.pt", PENGUINS / "rows.csv", "--proba", "--precision", p
        )
        assert res.returncode == 0, res.stderr
        preds.append(pd.read_csv(io.StringIO(res.stdout)))
    probs = [f.filter(like="proba_").to_numpy() for f in preds]
    assert abs(probs[0] - probs[1]).max() < 0.05  # bf16 has ~3 significant digits
    assert (preds[0]["prediction"] == preds[1]["prediction"]).mean() >= 0.95


def test_fp16_inference_on_cpu_is_refused(penguins_model, dl_inproc) -> None:
    res = dl_inproc("predict", penguins_model, PENGUINS / "rows.csv", "--precision", "fp16")
    assert_error(res, "--precision fp16")
    res = dl_inproc("evaluate", penguins_model, PENGUINS / "test.csv", "--precision", "fp16")
    assert_error(res, "--precision fp16")


def test_bf16_on_cpu_lstm_trains_or_is_refused_in_one_line(dl_inproc, tmp_path) -> None:
    """CPUs without AVX512-BF16/AMX have no bf16 LSTM kernel: one clear line, not a traceback."""
    args = ["train", SAMPLES / "reviews" / "train.csv", "--arch", "lstm", "--epochs", "1"]
    res = dl_inproc(
        *args, "--precision", "bf16", "--device", "cpu", "--no-plots", "-o", tmp_path / "l.pt"
    )
    if res.returncode != 0:
        assert_error(res, "--precision bf16", "fp32")
    else:
        assert (tmp_path / "l.pt").is_file()


@pytest.mark.skipif(not shutil.which("g++") and not shutil.which("c++"), reason="no C++ compiler")
def test_compile_on_cpu_trains_and_saves_plain_weights(dl_inproc, tmp_path) -> None:
    res = dl_inproc(
        *TRAIN, "--compile", "--epochs", "3", "--device", "cpu", "-o", tmp_path / "c.pt"
    )
    summary = _summary(res)
    assert "torch.compile failed" not in res.stderr  # it really compiled
    assert summary["settings"]["compile"] is True
    assert summary["metrics"]["accuracy"] >= 0.7  # 3 epochs
    from dlcli import modelfile

    keys = modelfile.load(tmp_path / "c.pt")["weights"]["network"]
    assert not [k for k in keys if "_orig_mod" in k]  # the plain network's weights, not a wrapper
    pred = dl_inproc("predict", tmp_path / "c.pt", PENGUINS / "rows.csv")
    assert pred.returncode == 0 and len(pred.stdout.splitlines()) > 1


def test_compile_failure_falls_back_to_eager_with_one_note(tmp_path) -> None:
    env = {**dl_env(), "CXX": "/bin/false", "TORCHINDUCTOR_CACHE_DIR": str(tmp_path / "cache")}
    cmd = [sys.executable, "-m", "dlcli", *map(str, TRAIN), "--compile", "--epochs", "2"]
    cmd += ["--device", "cpu", "-o", str(tmp_path / "m.pt")]
    res = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=180)
    summary = _summary(res)
    assert res.stderr.count("--compile: torch.compile failed") == 1, res.stderr
    assert summary["epochs_run"] == 2 and (tmp_path / "m.pt").is_file()


def test_host_resident_batches_match_device_resident_ones() -> None:
    """Data too big for the GPU stays on the host; each batch is gathered and copied (one ahead).
    On a CPU the same code path runs with a plain copy."""
    x, y = torch.randn(103, 4), torch.arange(103)
    resident = TensorBatches(x, y, 16).to(torch.device("cpu"))
    fed = TensorBatches(x, y, 16).to(torch.device("cpu"), max_bytes=0)
    assert resident.feed is None and fed.feed == torch.device("cpu")
    pairs = zip(
        resident.shuffled(torch.Generator().manual_seed(1)),
        fed.shuffled(torch.Generator().manual_seed(1)),
        strict=True,
    )
    for (xa, ya), (xb, yb) in pairs:
        assert torch.equal(xa, xb) and torch.equal(ya, yb)
    assert torch.equal(torch.cat([b for _, b in fed.in_order(batch=10)]), y)


# -- CUDA only ---------------------------------------------------------------------------------


@cuda
@pytest.mark.parametrize("precision", ["fp32", "bf16", "fp16"])
def test_cuda_precisions_train_and_report_gpu_memory(precision, dl_inproc, tmp_path) -> None:
    args = [*TRAIN, "--device", "cuda", "--precision", precision, "-o", tmp_path / "m.pt"]
    res = dl_inproc(*args)
    summary = _summary(res)
    assert summary["metrics"]["accuracy"] >= 0.95
    assert "MB GPU" in res.stderr  # the progress line shows peak GPU memory
    from dlcli import modelfile

    assert modelfile.load(tmp_path / "m.pt")["history"][0]["gpu_mem_mb"] > 0


@cuda
def test_cuda_cnn_bf16_channels_last_and_compile(dl_inproc, tmp_path) -> None:
    args = ["train", SAMPLES / "digits" / "train", "--arch", "cnn", "--device", "cuda"]
    args += ["--precision", "bf16", "--compile", "--epochs", "5", "--no-plots", "--json"]
    summary = _summary(dl_inproc(*args, "-o", tmp_path / "d.pt"))
    assert summary["metrics"]["accuracy"] >= 0.8
    res = dl_inproc("evaluate", tmp_path / "d.pt", SAMPLES / "digits" / "test", "--json")
    assert _summary(res)["accuracy"] >= 0.8


@cuda
def test_cuda_host_resident_batches_use_pinned_copies() -> None:
    x, y = torch.randn(1000, 8), torch.arange(1000)
    fed = TensorBatches(x, y, 100).to(torch.device("cuda"), max_bytes=0)
    batches = list(fed.shuffled(torch.Generator().manual_seed(0)))
    assert all(xb.is_cuda and yb.is_cuda for xb, yb in batches)
    assert torch.equal(torch.sort(torch.cat([yb for _, yb in batches]).cpu()).values, y)
