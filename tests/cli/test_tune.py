"""`dl tune` end to end: real searches on the shipped tables and series, their files, folds,
the storage shared by two processes, Ctrl-C and resume, and every refusal as one line."""

from __future__ import annotations

import csv
import json
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from conftest import DIABETES, PENGUINS, SAMPLES, assert_error, dl_env

SPACE = """
layers:
  - dense: {choice: [16, 32]}
  - relu
  - dropout: {uniform: [0.0, 0.3]}
training:
  lr: {loguniform: [1.0e-3, 3.0e-2]}
"""


def read_trials(folder: Path) -> list[dict]:
    with open(folder / "trials.csv", newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def test_default_space_writes_every_file_and_json(dl_inproc, tmp_path: Path) -> None:
    best = tmp_path / "best.pt"
    res = dl_inproc(
        "tune", PENGUINS / "train.csv", "--trials", "6", "--epochs", "8", "-o", best, "--json"
    )
    assert res.returncode == 0, res.stderr
    summary = json.loads(res.stdout)
    assert summary["complete"] + summary["pruned"] + summary["failed"] == 6
    assert summary["direction"] == "minimize" and summary["metric"] == "loss"
    folder = tmp_path / "best.tune"
    for name in ("trials.csv", "best_spec.yaml", "history.png", "importance.png"):
        assert (folder / name).is_file(), name
    assert not (folder / "trials").exists()  # the trials' scratch models are gone
    rows = read_trials(folder)
    assert [int(r["trial"]) for r in rows] == list(range(6))
    assert {"lr", "weight_decay", "batch_size", "layers[0].mlp_ensemble[0]"} <= set(rows[0])
    done = [float(r["value"]) for r in rows if r["state"] == "complete"]
    assert min(done) == pytest.approx(summary["best_value"])
    assert sum(ln.startswith("trial ") for ln in res.stderr.splitlines()) == 6
    # a small table: 5-fold cross-validation per trial, then the best settings on every row
    assert "5-fold cross-validation per trial" in res.stderr
    assert all(r["std"] != "" for r in rows if r["state"] == "complete")
    # the chosen settings trained as dl train trains them (the usual split, early stopping)
    assert summary["final"] == {"fit": "usual split"}
    assert summary["selection"]["trial"] == summary["best_trial"]
    assert "221 training rows, 55 validation rows" in res.stderr
    # the winner is an ordinary spec: epochs fixed by the flag are in its training section
    spec = yaml.safe_load((folder / "best_spec.yaml").read_text())
    assert spec["training"]["epochs"] == 8 and "search" not in spec
    assert spec["training"]["lr"] == pytest.approx(summary["best_params"]["lr"])
    again = dl_inproc(
        "evaluate", best, PENGUINS / "test.csv", "--json"
    )  # the best model is a normal model file
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout)["accuracy"] > 0.8
    train = dl_inproc(
        "train",
        PENGUINS / "train.csv",
        "--spec",
        folder / "best_spec.yaml",
        "-o",
        tmp_path / "again.pt",
        "--quiet",
        "--no-plots",
    )
    assert train.returncode == 0, train.stderr


def test_custom_space_folds_and_a_maximised_metric(dl_inproc, tmp_path: Path) -> None:
    space = tmp_path / "space.yaml"
    space.write_text(SPACE)
    res = dl_inproc(
        "tune",
        PENGUINS / "train.csv",
        "--space",
        space,
        "--trials",
        "3",
        "--folds",
        "3",
        "--epochs",
        "5",
        "--metric",
        "accuracy",
        "-o",
        tmp_path / "cv.pt",
        "--json",
        "--no-plots",
    )
    assert res.returncode == 0, res.stderr
    summary = json.loads(res.stdout)
    assert summary["direction"] == "maximize" and 0.5 < summary["best_value"] <= 1.0
    assert "best_std" in summary
    rows = read_trials(tmp_path / "cv.tune")
    assert set(rows[0]) >= {"layers[0].dense", "layers[2].dropout", "lr", "std"}
    assert (tmp_path / "cv.pt").is_file()  # the chosen settings trained again, as dl train does
    assert summary["final"]["fit"] == "usual split"
    assert "(trial " in res.stderr and "cross-validated) into" in res.stderr


def test_series_tune_with_chronological_folds(dl_inproc, tmp_path: Path) -> None:
    space = tmp_path / "space.yaml"
    space.write_text(
        "layers:\n  - {gru: {choice: [8, 16]}}\ntraining:\n  lr: {loguniform: [1.0e-3, 1.0e-2]}\n"
    )
    res = dl_inproc(
        "tune",
        SAMPLES / "co2" / "train.csv",
        "--target",
        "co2",
        "--window",
        "16",
        "--space",
        space,
        "--trials",
        "2",
        "--folds",
        "2",
        "--epochs",
        "2",
        "--metric",
        "rmse",
        "-o",
        tmp_path / "s.pt",
        "--json",
        "--no-plots",
    )
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout)["direction"] == "minimize"


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["--trials", "0"], ["--trials"]),
        (["--timeout", "ten minutes"], ["--timeout ten minutes", "not a duration"]),
        (["--metric", "r2"], ["--metric r2", "classification models report", "accuracy"]),
        (["--storage", "postgresql://nobody@127.0.0.1:9/none"], ["--storage", "cannot open"]),
        (["--sampler", "grid"], ["--sampler must be tpe or random"]),
        (["--arch", "gan"], ["does not search GANs"]),
        (["--folds", "3", "--val", str(PENGUINS / "test.csv")], ["--folds", "--val"]),
    ],
)
def test_bad_requests_are_one_line(run_dl, tmp_path: Path, args: list, words: list) -> None:
    res = run_dl("tune", PENGUINS / "train.csv", "-o", tmp_path / "b.pt", *args)
    assert_error(res, *words)
    assert not (tmp_path / "b.tune").exists()


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("layers:\n  - dense: {normal: [1, 2]}\n", ["layers[0].dense", "unknown distribution"]),
        (
            "layers:\n  - dense: 8\ntraining:\n  learning_rate: {uniform: [0.1, 1]}\n",
            ["learning_rate"],
        ),
        ("layers:\n  - dense: {choice: [0]}\n", ["trial 0 drew layers[0].dense=0", "units"]),
        ("layers: [\n", ["space.yaml", "line"]),
    ],
)
def test_bad_spaces_name_the_field(run_dl, tmp_path: Path, text: str, words: list) -> None:
    space = tmp_path / "space.yaml"
    space.write_text(text)
    res = run_dl("tune", PENGUINS / "train.csv", "--space", space, "-o", tmp_path / "b.pt")
    assert_error(res, *words)


def test_regression_metric_and_jobs(dl_inproc, tmp_path: Path) -> None:
    res = dl_inproc(
        "tune",
        DIABETES / "train.csv",
        "--trials",
        "4",
        "--jobs",
        "2",
        "--epochs",
        "4",
        "--metric",
        "r2",
        "-o",
        tmp_path / "d.pt",
        "--json",
        "--no-plots",
    )
    assert res.returncode == 0, res.stderr
    summary = json.loads(res.stdout)
    assert summary["direction"] == "maximize"
    assert summary["complete"] + summary["pruned"] + summary["failed"] >= 4


def _tune_cmd(tmp_path: Path, db: Path, out: str, trials: int, epochs: int = 6) -> list[str]:
    return [
        sys.executable,
        "-m",
        "dlcli",
        "tune",
        str(PENGUINS / "train.csv"),
        "--trials",
        str(trials),
        "--epochs",
        str(epochs),
        "--storage",
        f"sqlite:///{db}",
        "--study",
        "s1",
        "-o",
        str(tmp_path / out),
        "--no-plots",
        "--pruner",
        "none",
        "--folds",  # one validation split: these tests are about the shared study
        "1",
    ]


_OPEN = "import sys; from dlcli.tune.study import open_storage; open_storage(sys.argv[1])"


def test_processes_started_together_open_one_new_sqlite_file(tmp_path: Path) -> None:
    # four at once, five times: without the flock one in ~60 lost the race to create the
    # tables ("table trial_heartbeats already exists") and stopped with exit 2
    for round_ in range(5):
        url = f"sqlite:///{tmp_path / f'r{round_}.db'}"
        procs = [
            subprocess.Popen(
                [sys.executable, "-c", _OPEN, url], env=dl_env(), text=True, stderr=subprocess.PIPE
            )
            for _ in range(4)
        ]
        for p in procs:
            _, err = p.communicate(timeout=120)
            assert p.returncode == 0, err


def test_two_processes_share_one_sqlite_study(tmp_path: Path) -> None:
    import optuna

    db = tmp_path / "tune.db"
    procs = [
        subprocess.Popen(
            _tune_cmd(tmp_path, db, f"p{i}.pt", 8),
            env=dl_env(),
            text=True,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        for i in range(2)
    ]
    for p in procs:
        _, err = p.communicate(timeout=300)
        assert p.returncode == 0, err
    study = optuna.load_study(study_name="s1", storage=f"sqlite:///{db}")
    trials = study.get_trials()
    numbers = [t.number for t in trials]
    assert len(numbers) == len(set(numbers)) >= 8  # none duplicated
    assert all(t.state.name == "COMPLETE" for t in trials)  # none lost or left running
    assert len(trials) <= 9  # at most one extra: the other process's trial in flight


def test_ctrl_c_then_the_same_command_resumes(tmp_path: Path) -> None:
    db = tmp_path / "tune.db"
    cmd = _tune_cmd(tmp_path, db, "r.pt", 8, epochs=40)  # slow enough to be interrupted
    proc = subprocess.Popen(  # pytest-xdist workers ignore SIGINT; a child would inherit that
        cmd,
        env=dl_env(),
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    lines = []
    assert proc.stderr is not None
    for line in proc.stderr:  # wait for two finished trials, then Ctrl-C
        lines.append(line)
        if sum(ln.startswith("trial ") for ln in lines) == 2:
            proc.send_signal(signal.SIGINT)
            break
    rest = proc.communicate(timeout=120)[1]
    stderr = "".join(lines) + rest
    assert proc.returncode == 130, stderr
    assert "interrupted after" in stderr and "run the same command again" in stderr
    kept = [r for r in read_trials(tmp_path / "r.tune") if r["state"] == "complete"]
    assert len(kept) >= 2
    again = subprocess.run(cmd, env=dl_env(), text=True, capture_output=True, timeout=300)
    assert again.returncode == 0, again.stderr
    assert f"{len(kept)} trials already finished" in again.stderr
    rows = read_trials(tmp_path / "r.tune")
    done = [r for r in rows if r["state"] == "complete"]
    assert len(done) >= 8
    assert [r["trial"] for r in done[: len(kept)]] == [
        r["trial"] for r in kept
    ]  # kept as they were
    assert (tmp_path / "r.pt").is_file()


def test_autoencoder_search_minimises_reconstruction_loss(dl_inproc, tmp_path: Path) -> None:
    res = dl_inproc(
        "tune",
        PENGUINS / "train.csv",
        "--arch",
        "autoencoder",
        "--trials",
        "3",
        "--epochs",
        "4",
        "-o",
        tmp_path / "ae.pt",
        "--json",
        "--no-plots",
    )
    assert res.returncode == 0, res.stderr
    summary = json.loads(res.stdout)
    assert summary["metric"] == "loss" and summary["complete"] >= 1
    assert {"encoder[0].dense", "lr"} <= set(summary["best_params"])
    scored = dl_inproc("predict", tmp_path / "ae.pt", PENGUINS / "test.csv")
    assert scored.returncode == 0 and "anomaly_score" in scored.stdout.splitlines()[0]
    bad = dl_inproc(
        "tune",
        PENGUINS / "train.csv",
        "--arch",
        "autoencoder",
        "--metric",
        "accuracy",
        "-o",
        tmp_path / "x.pt",
    )
    assert_error(bad, "--metric accuracy", "autoencoders report loss")


def test_diverging_trials_fail_and_the_study_goes_on(dl_inproc, tmp_path: Path) -> None:
    space = tmp_path / "space.yaml"
    space.write_text(
        "layers:\n  - dense: 16\n  - relu\ntraining:\n  optimizer: sgd\n  schedule: none\n"
        "  lr: {loguniform: [1.0e-3, 1.0e+6]}\n"
    )
    res = dl_inproc(
        "tune",
        DIABETES / "train.csv",
        "--space",
        space,
        "--trials",
        "8",
        "--epochs",
        "3",
        "-o",
        tmp_path / "d.pt",
        "--json",
        "--no-plots",
        "--pruner",
        "none",
    )
    assert res.returncode == 0, res.stderr
    summary = json.loads(res.stdout)
    assert summary["failed"] >= 1 and summary["complete"] >= 1
    failed = [r for r in read_trials(tmp_path / "d.tune") if r["state"] == "failed"]
    assert all("diverged" in r["error"] and float(r["lr"]) > 1 for r in failed)
    assert summary["best_params"]["lr"] < 1


@pytest.mark.parametrize(
    "args",
    [["--help"], ["x.csv", "--sampler", "grid"], ["x.csv", "--timeout", "soon"]],
)
def test_help_and_argument_errors_import_neither_torch_nor_optuna(args: list) -> None:
    res = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "dlcli", "tune", *args],
        env=dl_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert res.returncode == (0 if args == ["--help"] else 2), res.stderr
    imported = [ln for ln in res.stderr.splitlines() if ln.startswith("import time:")]
    assert len(imported) > 50
    assert [ln for ln in imported if "torch" in ln or "optuna" in ln] == []


def test_image_folder_search_with_the_cnn_space(dl_inproc, tmp_path: Path) -> None:
    import shutil

    data = tmp_path / "digits"
    for c in "01":
        files = sorted((SAMPLES / "digits" / "train" / c).iterdir())[:16]
        (data / c).mkdir(parents=True)
        for f in files:
            shutil.copy(f, data / c / f.name)
    space = tmp_path / "space.yaml"
    space.write_text(
        "data: [image]\nlayers:\n  - conv2d: {choice: [4, 8]}\n  - relu\n  - global_avgpool\n"
        "training:\n  lr: {loguniform: [1.0e-3, 1.0e-2]}\n"
    )
    res = dl_inproc(
        "tune",
        data,
        "--space",
        space,
        "--trials",
        "2",
        "--epochs",
        "2",
        "--image-size",
        "16",
        "-o",
        tmp_path / "img.pt",
        "--json",
        "--no-plots",
    )
    assert res.returncode == 0, res.stderr
    assert set(json.loads(res.stdout)["best_params"]) == {"layers[0].conv2d", "lr"}
    pred = dl_inproc("predict", tmp_path / "img.pt", data / "0")
    assert pred.returncode == 0, pred.stderr


def test_a_trial_is_scored_by_its_saved_model_with_the_linear_path(dl_inproc, tmp_path) -> None:
    """The mlp preset's linear path is fitted after the last epoch: the trial's value is the
    validation loss of the model as saved (blend included), here the model file's validation
    log loss, not the kept epoch's val_loss (the ensemble alone)."""
    from dlcli import modelfile

    best = tmp_path / "best.pt"
    res = dl_inproc(
        "tune", PENGUINS / "train.csv", "--trials", "2", "--epochs", "4", "--folds", "1",
        "--pruner", "none", "-o", best, "--json", "--no-plots",
    )  # fmt: skip
    assert res.returncode == 0, res.stderr
    summary = json.loads(res.stdout)
    assert summary["final"] == {"fit": "best trial"}
    saved = modelfile.load(best)
    assert summary["best_value"] == pytest.approx(saved["metrics"]["log_loss"], rel=1e-4)
    kept = saved["history"][saved["best_epoch"] - 1]["val_loss"]
    assert summary["best_value"] != pytest.approx(kept, rel=1e-3)


def test_the_cross_validated_winner_is_what_dl_train_makes_of_best_spec(
    dl_inproc, tmp_path
) -> None:
    """After cross-validation -o is the chosen settings trained exactly as `dl train --spec
    best.tune/best_spec.yaml` trains them (the procedure the nested folds scored): the same
    weights bit for bit. Each trial's value is the mean of its folds' held-out losses."""
    from dlcli import modelfile

    res = dl_inproc(
        "tune", PENGUINS / "train.csv", "--trials", "3", "--epochs", "6", "--seed", "4",
        "-o", tmp_path / "best.pt", "--json", "--no-plots",
    )  # fmt: skip
    assert res.returncode == 0, res.stderr
    summary = json.loads(res.stdout)
    assert summary["final"] == {"fit": "usual split"}
    assert summary["selection"]["rule"] in ("defaults", "beat the defaults")
    again = dl_inproc(
        "train", PENGUINS / "train.csv", "--spec", tmp_path / "best.tune" / "best_spec.yaml",
        "--seed", "4", "-o", tmp_path / "again.pt", "--quiet", "--no-plots",
    )  # fmt: skip
    assert again.returncode == 0, again.stderr
    tuned, trained = modelfile.load(tmp_path / "best.pt"), modelfile.load(tmp_path / "again.pt")
    for key, value in trained["weights"]["network"].items():
        assert torch_equal(tuned["weights"]["network"][key], value), key
    rows = [r for r in read_trials(tmp_path / "best.tune") if r["state"] == "complete"]
    assert all(0.0 < float(r["value"]) < 2.0 and float(r["std"]) >= 0.0 for r in rows)


def torch_equal(a, b) -> bool:
    import torch

    return bool(torch.equal(a, b))
