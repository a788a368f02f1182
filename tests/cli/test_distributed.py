"""Distributed training on torch.distributed with gloo on 2 CPU processes: `dl train --devices 2`
and `torchrun ... -m dlcli train` write one model of single-process quality, and only rank 0
prints or writes; plus the batch sharding that makes N processes step like one."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import PENGUINS, assert_error, dl_env

from dlcli.engine.batches import TensorBatches, shard

TINY_SPEC = """\
name: tiny
layers:
  - dense: 32
  - relu
training:
  optimizer: adamw
  lr: 0.01
"""


def _history(model: Path) -> list[dict]:
    from dlcli import modelfile

    return modelfile.load(model)["history"]


def test_devices_2_writes_one_model_of_single_process_quality(dl_inproc, run_dl, tmp_path) -> None:
    args = [PENGUINS / "train.csv", "--device", "cpu", "--no-plots", "--json"]
    single = dl_inproc("train", *args, "-o", tmp_path / "one.pt")
    assert single.returncode == 0, single.stderr
    out = tmp_path / "two"
    out.mkdir()
    res = run_dl("train", *args, "--devices", "2", "-o", out / "model.pt", cwd=out, timeout=120)
    assert res.returncode == 0, res.stderr
    summary = json.loads(res.stdout)  # one JSON document: rank 1 printed nothing on stdout
    assert sorted(p.name for p in out.iterdir()) == ["model.pt", "model.run"]
    assert not (out / "model.run" / "checkpoint.pt").exists()
    assert res.stderr.count("training rows") == 1  # rank 1 printed no progress either
    assert res.stderr.count("epoch 1/") == 1
    one = json.loads(single.stdout)["metrics"]["accuracy"]
    assert summary["metrics"]["accuracy"] >= one - 0.01, (summary["metrics"], one)
    assert summary["metrics"]["accuracy"] >= 0.9


def test_torchrun_two_processes_step_exactly_like_one(dl_inproc, tmp_path) -> None:
    """Each rank takes its half of every global batch and DDP averages the gradients, so without
    batch norm or dropout the 2-process run follows the 1-process run to float rounding."""
    spec = tmp_path / "tiny.yaml"
    spec.write_text(TINY_SPEC)
    args = ["train", PENGUINS / "train.csv", "--spec", spec, "--epochs", "3", "--device", "cpu"]
    args += ["--no-plots", "--json"]
    one = dl_inproc(*args, "-o", tmp_path / "one.pt")
    assert one.returncode == 0, one.stderr
    logs = tmp_path / "logs"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"]
    cmd += ["--log-dir", str(logs), "--redirects", "3", "-m", "dlcli"]
    cmd += [str(a) for a in args] + ["-o", str(tmp_path / "two.pt")]
    res = subprocess.run(cmd, env=dl_env(), capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    rank0, rank1 = (next(logs.glob(f"*/attempt_0/{r}")) for r in (0, 1))
    assert json.loads((rank0 / "stdout.log").read_text())["epochs_run"] == 3
    assert (rank1 / "stdout.log").read_text() == ""
    assert (rank1 / "stderr.log").read_text() == ""
    assert sorted(p.name for p in tmp_path.glob("two*")) == ["two.pt", "two.run"]
    h1, h2 = _history(tmp_path / "one.pt"), _history(tmp_path / "two.pt")
    for a, b in zip(h1, h2, strict=True):
        assert a["val_loss"] == pytest.approx(b["val_loss"], abs=1e-5)
        assert a["train_loss"] == pytest.approx(b["train_loss"], abs=1e-5)


def test_shards_split_every_batch_and_the_validation_rows() -> None:
    x = torch.arange(50.0).reshape(25, 2)
    y = torch.arange(25)
    full = TensorBatches(x, y, 8)
    parts = [shard(full, r, 2) for r in range(2)]
    assert all(len(p) == len(full) == 3 for p in parts)  # the same steps on every process
    whole = list(full.shuffled(torch.Generator().manual_seed(3)))
    halves = [list(p.shuffled(torch.Generator().manual_seed(3))) for p in parts]
    for (_, yb), (_, y0), (_, y1) in zip(whole, *halves, strict=True):
        assert torch.equal(torch.cat([y0, y1]), yb)  # disjoint halves of the global batch
    seen = torch.cat([yb for p in parts for _, yb in p.in_order(batch=4)])
    assert torch.equal(seen, y)  # validation: every row once across the processes
    assert shard(full, 0, 1) is full


def test_devices_under_torchrun_is_refused(dl_inproc, monkeypatch) -> None:
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "0")
    res = dl_inproc("train", PENGUINS / "train.csv", "--devices", "2", "--device", "cpu")
    assert_error(res, "--devices", "torchrun")


@pytest.mark.skipif(
    not torch.cuda.is_available() or torch.cuda.device_count() < 2, reason="needs 2 CUDA GPUs"
)
def test_devices_2_on_gpus_with_nccl(run_dl, tmp_path) -> None:
    args = [PENGUINS / "train.csv", "--device", "cuda", "--devices", "2", "--no-plots", "--json"]
    res = run_dl("train", *args, "-o", tmp_path / "model.pt", timeout=300)
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout)["metrics"]["accuracy"] >= 0.9
    assert "gpu_mem_mb" in _history(tmp_path / "model.pt")[0]
