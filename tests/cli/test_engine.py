"""The training engine on real sample data: reproducibility, exact resume, early stopping,
divergence, optimizers, schedules and losses."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch

from dlcli import modelfile
from dlcli.data.sources import DataOptions
from dlcli.engine.callbacks import Callback, StopTraining
from dlcli.engine.train_job import TrainingInterrupted, TrainRequest
from dlcli.errors import TrainingError, UsageError
from dlcli.families import run_training

SAMPLES = Path(__file__).resolve().parents[2] / "sample_data"


@pytest.fixture
def penguins(tmp_path: Path) -> Path:
    dst = tmp_path / "penguins.csv"
    shutil.copy(SAMPLES / "penguins" / "train.csv", dst)
    return dst


def train(data: Path, out: Path, **overrides) -> dict:
    callbacks = overrides.pop("callbacks", [])
    resume = overrides.pop("resume", False)
    req = TrainRequest(
        str(data),
        str(out),
        data_opts=DataOptions(),
        overrides=overrides,
        plots=False,
        callbacks=callbacks,
        resume=resume,
    )
    return run_training(req)


def weights(path: Path) -> dict:
    return modelfile.load(path)["weights"]["network"]


def test_same_seed_gives_identical_weights(penguins, tmp_path):
    train(penguins, tmp_path / "a.pt", epochs=4, seed=3)
    train(penguins, tmp_path / "b.pt", epochs=4, seed=3)
    train(penguins, tmp_path / "c.pt", epochs=4, seed=4)
    a, b, c = weights(tmp_path / "a.pt"), weights(tmp_path / "b.pt"), weights(tmp_path / "c.pt")
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], c[k]) for k in a)


class StopAt(Callback):
    """Simulate Ctrl-C right after epoch `n` has completed."""

    def __init__(self, n: int) -> None:
        self.n = n

    def on_epoch_end(self, row, snapshot):
        if row["epoch"] == self.n:
            raise KeyboardInterrupt


def test_interrupt_leaves_checkpoint_and_resume_matches_uninterrupted_run(penguins, tmp_path):
    full = train(penguins, tmp_path / "full.pt", epochs=6, patience=0, seed=1)
    out = tmp_path / "model.pt"
    out.write_bytes(b"previous good model")
    with pytest.raises(
        TrainingInterrupted,
        match=r"interrupted after 3 complete epochs; checkpoint saved to .*checkpoint.pt",
    ):
        train(penguins, out, epochs=6, patience=0, seed=1, callbacks=[StopAt(3)])
    assert out.read_bytes() == b"previous good model"  # an interrupted run never replaces a model
    ck = modelfile.checkpoint_path(out)
    assert ck.exists()
    resumed = train(penguins, out, resume=True)
    assert not ck.exists()
    assert resumed["epochs_run"] == full["epochs_run"] == 6
    a, b = weights(tmp_path / "full.pt"), weights(out)
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_resume_without_checkpoint_is_a_usage_error(penguins, tmp_path):
    with pytest.raises(UsageError, match="--resume: no checkpoint at"):
        train(penguins, tmp_path / "m.pt", resume=True)


def test_early_stopping_restores_best_weights(penguins, tmp_path):
    s = train(penguins, tmp_path / "m.pt", epochs=200, patience=3, lr=0.05, seed=0)
    assert s["stopped"] == "early_stopping" and s["epochs_run"] < 200
    hist = modelfile.load(tmp_path / "m.pt")["history"]
    best = min(hist, key=lambda r: r["val_loss"])
    assert s["best_epoch"] == best["epoch"]
    assert s["epochs_run"] == best["epoch"] + 3
    # the saved model's validation log loss is the best epoch's validation loss
    assert s["metrics"]["log_loss"] == pytest.approx(best["val_loss"], rel=1e-4)


def test_diverging_loss_stops_with_clear_message(tmp_path):
    data = tmp_path / "d.csv"
    shutil.copy(SAMPLES / "diabetes" / "train.csv", data)
    out = tmp_path / "m.pt"
    with pytest.raises(
        TrainingError,
        match=r"training diverged at epoch \d+: the loss is (nan|inf).*lower the learning rate",
    ):
        train(data, out, epochs=5, optimizer="sgd", lr=1e6, schedule="none", momentum=0.9)
    assert not out.exists()


@pytest.mark.parametrize(
    "optimizer,schedule",
    [
        ("sgd", "step"),
        ("adam", "none"),
        ("adamw", "cosine"),
        ("rmsprop", "onecycle"),
        ("adamw", "onecycle"),
    ],
)
def test_optimizers_and_schedules_learn(penguins, tmp_path, optimizer, schedule):
    lr = {"sgd": 0.05, "rmsprop": 0.001}.get(optimizer, 0.003)
    s = train(
        penguins,
        tmp_path / "m.pt",
        epochs=15,
        optimizer=optimizer,
        schedule=schedule,
        lr=lr,
        patience=0,
    )
    assert s["metrics"]["accuracy"] >= 0.9, s["metrics"]
    if schedule == "cosine":
        hist = modelfile.load(tmp_path / "m.pt")["history"]
        assert hist[-1]["lr"] < hist[0]["lr"] / 5


@pytest.mark.parametrize("loss", ["mse", "l1", "huber"])
def test_regression_losses(tmp_path, loss):
    data = tmp_path / "d.csv"
    shutil.copy(SAMPLES / "diabetes" / "train.csv", data)
    s = train(data, tmp_path / "m.pt", loss=loss, epochs=30)
    assert s["task"] == "regression" and s["loss"] == loss
    assert s["metrics"]["r2"] > 0.1, s["metrics"]  # a broken loss gives R² <= 0


def test_loss_that_does_not_fit_task_is_rejected(penguins, tmp_path):
    with pytest.raises(UsageError, match="--loss mse does not fit a classification task"):
        train(penguins, tmp_path / "m.pt", loss="mse")
    with pytest.raises(UsageError, match="--loss bce needs two classes, the target has 3"):
        train(penguins, tmp_path / "m.pt", loss="bce")


def test_balanced_class_weights_help_the_minority_class(tmp_path):
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(0)
    n = 2000
    x = rng.normal(size=(n, 2))
    y = np.where(x[:, 0] + 0.5 * rng.normal(size=n) > 1.6, "rare", "common")  # ~6% rare
    data = tmp_path / "imb.csv"
    pd.DataFrame({"a": x[:, 0], "b": x[:, 1], "label": y}).to_csv(data, index=False)
    plain = train(data, tmp_path / "p.pt", epochs=20)
    weighted = train(data, tmp_path / "w.pt", epochs=20, class_weights="balanced")
    assert weighted["metrics"]["balanced_accuracy"] > plain["metrics"]["balanced_accuracy"] + 0.03


class PruneAt(Callback):
    """A tuner giving up on a trial after epoch `n`; records the summary it is handed."""

    def __init__(self, n: int) -> None:
        self.n, self.summary = n, None

    def on_epoch_end(self, row, snapshot):
        if row["epoch"] == self.n:
            raise StopTraining("pruned")

    def on_run_end(self, summary):
        self.summary = summary


def test_stop_training_from_a_callback_ends_the_run_cleanly(penguins, tmp_path):
    pruner = PruneAt(2)
    s = train(penguins, tmp_path / "m.pt", epochs=6, patience=0, callbacks=[pruner])
    assert s["stopped"] == "pruned" and s["epochs_run"] == 2
    assert pruner.summary == s  # experiment logging sees the --json summary
    assert modelfile.load(tmp_path / "m.pt")["stopped"] == "pruned"
    assert not modelfile.checkpoint_path(tmp_path / "m.pt").exists()
