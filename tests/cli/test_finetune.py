"""Fine-tuning from a pretrained start end to end (issue 14, parts 3 and 4): the default schedule
(new layers first with the loaded ones frozen, then everything, the loaded ones at lr/10), a
resume in the middle of it, --freeze keeping layers frozen for the whole run, and the
frozen-feature cache (the same weights and predictions as training through the frozen layers;
reused by a second run).

The source model is a cnn trained on digits 0-4 once for the module; the new data is digits 5-9
(new classes, so the head is fresh although its shape fits), 10 images each at 16x16.
"""

from __future__ import annotations

import io
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import PENGUINS, SAMPLES, assert_error, dl_env, flat

from dlcli import modelfile
from dlcli.data.sources import DataOptions
from dlcli.engine.callbacks import Callback
from dlcli.engine.train_job import TrainingInterrupted, TrainRequest
from dlcli.families import run_training

DIGITS = SAMPLES / "digits"


def copy_digits(dst: Path, classes: str, per_class: int) -> Path:
    for c in classes:
        (dst / c).mkdir(parents=True, exist_ok=True)
        for src in sorted((DIGITS / "train" / c).glob("*.png"))[:per_class]:
            shutil.copy(src, dst / c / src.name)
    return dst


def ok(res):
    assert res.returncode == 0, f"{' '.join(res.args)}\n{res.stderr}"
    assert "Traceback" not in res.stderr and "error:" not in res.stderr, res.stderr
    return res


def network(path: Path) -> dict[str, torch.Tensor]:
    return modelfile.load(path)["weights"]["network"]


@pytest.fixture(autouse=True)
def cache_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "cache"
    monkeypatch.setenv("DL_CACHE_DIR", str(folder))
    monkeypatch.delenv("DL_FEATURE_CACHE", raising=False)
    return folder


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A cnn trained on digits 0-4 (20 each, 2 epochs): the pretrained start."""
    root = tmp_path_factory.mktemp("source")
    data = copy_digits(root / "old", "01234", 20)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("DL_CACHE_DIR", str(root / "cache"))
        req = TrainRequest(str(data), str(root / "old.pt"), arch="cnn", plots=False)
        req.overrides = {"epochs": 2, "seed": 0}
        req.data_opts = DataOptions(extra={"image": {"image_size": 16}})
        run_training(req)
    return root / "old.pt"


@pytest.fixture(scope="module")
def new(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return copy_digits(tmp_path_factory.mktemp("new") / "new", "56789", 10)


def request(data: Path, out: Path, init_from: Path | None, **overrides: object) -> TrainRequest:
    callbacks = overrides.pop("callbacks", [])
    freeze = overrides.pop("freeze", None)
    resume = bool(overrides.pop("resume", False))
    req = TrainRequest(str(data), str(out), plots=False, callbacks=callbacks, resume=resume)
    req.init_from, req.freeze = (str(init_from) if init_from else None), freeze
    req.overrides = {"seed": 1, "batch_size": 8, **overrides}
    return req


class Weights(Callback):
    """The network's weights at each epoch's end."""

    def __init__(self) -> None:
        self.rows: list[dict] = []

    def on_epoch_end(self, row: dict, snapshot) -> None:
        self.rows.append({k: v.clone() for k, v in snapshot()["network"].items()})


class StopAt(Callback):
    def __init__(self, n: int) -> None:
        self.n = n

    def on_epoch_end(self, row: dict, snapshot) -> None:
        if row["epoch"] == self.n:
            raise KeyboardInterrupt


def test_the_schedule_trains_the_new_head_first_then_everything(source, new, tmp_path, dl_inproc):
    args = ["--init-from", source, "--epochs", "3", "--fine-tune-epochs", "1", "--no-plots"]
    res = ok(dl_inproc("train", new, *args, "--batch-size", "8", "-o", tmp_path / "m.pt"))
    log = flat(res.stderr)
    # digits 5-9 are other classes than 0-4: the head is fresh although its shape fits
    assert f"--init-from {source}: loaded 30 of 32 tensors; freshly initialised: head" in log
    assert (
        "fine-tuning: epochs 1-1 train the new layers with features frozen, then everything "
        "(features at lr x0.1)" in log
    )
    assert "epoch 2: fine-tuning everything (features at lr x0.1)" in log
    saved = modelfile.load(tmp_path / "m.pt")
    assert saved["transfer"] == {
        "freeze": None,
        "fine_tune": {"body": ["features"], "head_epochs": 1, "body_lr": 0.1},
    }
    before, after = network(source), saved["weights"]["network"]
    assert not torch.equal(after["features.0.weight"], before["features.0.weight"])

    seen = Weights()
    run_training(
        request(new, tmp_path / "w.pt", source, epochs=3, fine_tune_epochs=1, callbacks=[seen])
    )
    first, last = seen.rows[0], seen.rows[-1]
    for k in (k for k in before if k.startswith("features.")):  # phase 1: as loaded, BN too
        assert torch.equal(first[k], before[k]), k
    assert not torch.equal(first["head.weight"], last["head.weight"])
    assert not torch.equal(last["features.1.running_mean"], before["features.1.running_mean"])


def test_a_checkpoint_in_the_schedule_resumes_in_its_phase(source, new, tmp_path, dl_inproc):
    """Ctrl-C after the head-only epoch: --resume unfreezes at epoch 2 with the body's lower
    learning rate, and ends with the uninterrupted run's weights."""
    opts = {"epochs": 3, "patience": 0, "fine_tune_epochs": 1}
    run_training(request(new, tmp_path / "full.pt", source, **opts))
    out = tmp_path / "m.pt"
    with pytest.raises(TrainingInterrupted, match="interrupted after 1 complete epoch"):
        run_training(request(new, out, source, **opts, callbacks=[StopAt(1)]))
    assert modelfile.checkpoint_path(out).exists()
    res = ok(dl_inproc("train", new, "-o", out, "--resume", "--no-plots"))
    assert "epoch 2: fine-tuning everything (features at lr x0.1)" in flat(res.stderr)
    full, resumed = network(tmp_path / "full.pt"), network(out)
    for k, v in full.items():
        torch.testing.assert_close(resumed[k], v, rtol=1e-5, atol=1e-6, msg=k)
    lrs = [r["lr"] for r in modelfile.load(out)["history"]]
    assert lrs == [r["lr"] for r in modelfile.load(tmp_path / "full.pt")["history"]]


def test_init_from_alone_trains_everything_from_the_start(source, new, tmp_path, dl_inproc):
    """The schedule is opt-in for --init-from (measured: docs/transfer.md): without
    --fine-tune-epochs every layer trains from epoch 1, as before."""
    seen = Weights()
    run_training(request(new, tmp_path / "m.pt", source, epochs=2, callbacks=[seen]))
    before = network(source)
    assert not torch.equal(seen.rows[0]["features.0.weight"], before["features.0.weight"])
    assert modelfile.load(tmp_path / "m.pt")["transfer"] == {"freeze": None, "fine_tune": None}


def test_freeze_keeps_the_layers_frozen_for_the_whole_run(source, new, tmp_path, dl_inproc):
    args = ["--init-from", source, "--freeze", "features", "--epochs", "3", "--no-plots"]
    res = ok(dl_inproc("train", new, *args, "-o", tmp_path / "m.pt"))
    assert "fine-tuning" not in res.stderr
    before, after = network(source), network(tmp_path / "m.pt")
    assert all(torch.equal(after[k], before[k]) for k in before if k.startswith("features."))
    assert modelfile.load(tmp_path / "m.pt")["transfer"]["freeze"] == "features"
    res = dl_inproc("train", new, *args, "--fine-tune-epochs", "1", "-o", tmp_path / "x.pt")
    assert_error(res, "--fine-tune-epochs with --freeze features", "drop --freeze")


def test_the_same_classes_load_the_head_and_need_no_schedule(source, tmp_path, dl_inproc):
    same = copy_digits(tmp_path / "same", "01234", 6)
    args = ["--init-from", source, "--epochs", "2", "--fine-tune-epochs", "1", "--no-plots"]
    res = ok(dl_inproc("train", same, *args, "-o", tmp_path / "m.pt"))
    log = flat(res.stderr)
    assert f"--init-from {source}: loaded 32 of 32 tensors" in log
    assert "--fine-tune-epochs: no schedule (every layer was loaded); every layer trains" in log


def test_a_first_phase_as_long_as_the_run_is_refused(source, new, tmp_path, dl_inproc):
    args = ["--init-from", source, "--epochs", "2", "--fine-tune-epochs", "2"]
    res = dl_inproc("train", new, *args, "--no-plots", "-o", tmp_path / "m.pt")
    assert_error(res, "--fine-tune-epochs 2: must be below --epochs 2")
    assert not (tmp_path / "m.pt").exists()


def test_cached_features_train_the_same_model_and_are_reused(
    source, new, tmp_path, dl_inproc, monkeypatch, cache_dir
):
    """--freeze features without augmentation: the features are computed once and cached; the
    head comes out as training through the frozen layers makes it (DL_FEATURE_CACHE=0), the
    model file holds the whole network, predictions agree, and a second run reads the cache."""
    args = ["--init-from", source, "--freeze", "features", "--epochs", "4", "--no-plots"]
    monkeypatch.setenv("DL_FEATURE_CACHE", "0")
    res = ok(dl_inproc("train", new, *args, "-o", tmp_path / "through.pt"))
    assert "frozen features" not in res.stderr
    monkeypatch.delenv("DL_FEATURE_CACHE")
    res = ok(dl_inproc("train", new, *args, "-o", tmp_path / "cached.pt"))
    assert "frozen features: computed once for 40 training rows ((128,))" in flat(res.stderr)
    assert len(list((cache_dir / "features").glob("*.pt"))) == 1
    through, cached = network(tmp_path / "through.pt"), network(tmp_path / "cached.pt")
    assert sorted(through) == sorted(cached)  # the whole network, frozen prefix included
    for k, v in through.items():
        torch.testing.assert_close(cached[k], v, rtol=1e-5, atol=1e-6, msg=k)
    test = DIGITS / "test" / "7"
    p1 = ok(dl_inproc("predict", tmp_path / "through.pt", test, "--proba")).stdout
    p2 = ok(dl_inproc("predict", tmp_path / "cached.pt", test, "--proba")).stdout
    f1, f2 = (pd.read_csv(io.StringIO(p), dtype={"prediction": str}) for p in (p1, p2))
    assert f1["prediction"].tolist() == f2["prediction"].tolist()
    probs = [c for c in f1 if c.startswith("proba_")]
    np.testing.assert_allclose(f2[probs].to_numpy(), f1[probs].to_numpy(), atol=1e-5)

    res = ok(dl_inproc("train", new, *args, "-o", tmp_path / "again.pt"))
    assert "frozen features: read from the cache" in flat(res.stderr)
    again = network(tmp_path / "again.pt")
    assert all(torch.equal(again[k], cached[k]) for k in cached)


def test_augmentation_trains_through_the_frozen_layers(source, new, tmp_path, dl_inproc):
    args = ["--init-from", source, "--freeze", "features", "--epochs", "1", "--augment", "flip"]
    res = ok(dl_inproc("train", new, *args, "--no-plots", "-o", tmp_path / "m.pt"))
    assert "frozen features" not in res.stderr


def test_two_processes_fine_tune_exactly_like_one(dl_inproc, tmp_path) -> None:
    """Under torchrun the network is wrapped in DDP again when phase 2 unfreezes the body, so the
    body's gradients are averaged too and 2 processes follow 1 to float rounding (a body left out
    of DDP would drift apart on each rank's half of the batches)."""
    spec = tmp_path / "tiny.yaml"
    spec.write_text("name: tiny\nlayers:\n  - dense: 16\n  - relu\ntraining:\n  lr: 0.01\n")
    common = ["--device", "cpu", "--no-plots", "--json"]
    ok(dl_inproc("train", PENGUINS / "train.csv", "--spec", spec, "--epochs", "2", *common,
                 "-o", tmp_path / "src.pt"))  # fmt: skip
    frame = pd.read_csv(PENGUINS / "train.csv")  # other class names: the head is fresh
    frame["species"] = "kind_" + frame["species"].astype(str)
    frame.to_csv(tmp_path / "new.csv", index=False)
    args = ["train", tmp_path / "new.csv", "--init-from", tmp_path / "src.pt", "--epochs", "3"]
    args += ["--fine-tune-epochs", "1", *common]
    one = ok(dl_inproc(*args, "-o", tmp_path / "one.pt"))
    assert "epoch 2: fine-tuning everything (0 at lr x0.1)" in flat(one.stderr)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"]
    cmd += ["-m", "dlcli", *(str(a) for a in args), "-o", str(tmp_path / "two.pt")]
    res = subprocess.run(cmd, env=dl_env(), capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    h1 = modelfile.load(tmp_path / "one.pt")["history"]
    h2 = modelfile.load(tmp_path / "two.pt")["history"]
    for a, b in zip(h1, h2, strict=True):
        assert a["val_loss"] == pytest.approx(b["val_loss"], abs=1e-5)
        assert a["train_loss"] == pytest.approx(b["train_loss"], abs=1e-5)
