"""`dl tune` (issue 13): overhead per trial, pruning, TPE vs random, and tuned vs default models.

    .venv/bin/python benchmarks/bench_tune.py [--trials 40] [--seeds 3]   (opt-in in run_all: minutes)

- **overhead**: the mlp preset at its defaults as a space with one value (every trial trains the
  same network), 5 trials on breast_cancer; the median trial wall time (trials.csv
  `wall_seconds`: draw, train through the job, score, keep the model) vs the median
  `train_seconds` of `dl train` at defaults (3 runs).
  Goal <= 1.1: no data is re-prepared.
- **pruning**: 40 trials of the mlp default space with the median pruner vs without
  (`--pruner none`), breast_cancer, --metric accuracy: wall-time ratio <= 0.6, and the best
  validation accuracy within 0.5 points (diff >= -0.005).
- **sampler**: TPE vs random, same budget (40 trials), seeds 1..3; mean best validation loss on
  diabetes: TPE <= random (ratio <= 1.0).
- **quality**: 40 trials at the default space vs `dl train` at defaults, scored on the held-out
  test split of each shipped table (accuracy; R² for diabetes): tuned >= default (diff >= 0).
"""

from __future__ import annotations

import argparse
import csv
import json
import statistics

import common

TABLES = {"penguins": "accuracy", "breast_cancer": "accuracy", "diabetes": "r2"}
BC = common.SAMPLE_DATA / "breast_cancer"
ENV = common.thread_env(1)


def dl(args: list, tmp) -> common.Run:
    return common.run_measured([common.DL, *map(str, args)], cwd=tmp, env=ENV).check()


def tune(data, tmp, name: str, *extra) -> tuple[dict, list[dict], float]:
    run = dl(["tune", data, "-o", tmp / f"{name}.pt", "--json", "--no-plots", *extra], tmp)
    with open(tmp / f"{name}.tune" / "trials.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    return json.loads(run.stdout), rows, run.seconds


def overhead(tmp) -> dict:
    """The mlp preset at its defaults, as a one-value space (every trial trains the same
    network) and as dl train: the trial's wall time against the same fit."""
    import yaml

    from dlcli.spec.schema import load_preset

    _, doc = load_preset("mlp")
    doc = {k: v for k, v in doc.items() if k != "search"}
    doc["training"] = {**doc["training"], "lr": {"choice": [doc["training"]["lr"]]}}
    space = tmp / "one.yaml"
    space.write_text(yaml.safe_dump(doc, sort_keys=False))
    _, rows, _ = tune(
        BC / "train.csv", tmp, "one", "--space", space, "--trials", "5", "--pruner", "none"
    )
    walls = [float(r["wall_seconds"]) for r in rows if r["state"] == "complete"]
    fits = []
    for i in range(3):
        run = dl(["train", BC / "train.csv", "-o", tmp / f"f{i}.pt", "--json", "--no-plots"], tmp)
        fits.append(json.loads(run.stdout)["train_seconds"])
    trial, fit = statistics.median(walls), statistics.median(fits)
    return common.result(
        "tune_trial_overhead",
        trial,
        fit,
        "s",
        trial / fit,
        1.1,
        note="median trial wall vs dl train's train_seconds: the mlp preset at its defaults",
    )


def pruning(tmp, trials: int) -> list[dict]:
    args = ["--trials", trials, "--metric", "accuracy"]
    pruned, _, t_pruned = tune(BC / "train.csv", tmp, "pr", *args)
    full, _, t_full = tune(BC / "train.csv", tmp, "np", *args, "--pruner", "none")
    return [
        common.result(
            "tune_pruning_time",
            t_pruned,
            t_full,
            "s",
            t_pruned / t_full,
            0.6,
            note=f"{pruned['pruned']} of {trials} trials pruned",
        ),
        common.result(
            "tune_pruning_best",
            pruned["best_value"],
            full["best_value"],
            "",
            pruned["best_value"] - full["best_value"],
            -0.005,
            kind="diff",
            higher_is_better=True,
            note="best validation accuracy",
        ),
    ]


def sampler(tmp, trials: int, seeds: int) -> dict:
    best = {"tpe": [], "random": []}
    for s in range(1, seeds + 1):
        for name in best:
            summary, _, _ = tune(
                common.SAMPLE_DATA / "diabetes" / "train.csv",
                tmp,
                f"{name}{s}",
                "--trials",
                trials,
                "--sampler",
                name,
                "--seed",
                s,
            )
            best[name].append(summary["best_value"])
    tpe, rnd = statistics.fmean(best["tpe"]), statistics.fmean(best["random"])
    return common.result(
        "tune_tpe_vs_random",
        tpe,
        rnd,
        "",
        tpe / rnd,
        1.0,
        note=f"mean best validation loss over {seeds} seeds, diabetes",
    )


def quality(tmp, trials: int) -> list[dict]:
    out = []
    for name, metric in TABLES.items():
        folder = common.SAMPLE_DATA / name
        tune(folder / "train.csv", tmp, f"q_{name}", "--trials", trials)
        dl(["train", folder / "train.csv", "-o", tmp / f"d_{name}.pt", "--quiet"], tmp)
        scores = {}
        for tag in ("q", "d"):
            run = dl(["evaluate", tmp / f"{tag}_{name}.pt", folder / "test.csv", "--json"], tmp)
            scores[tag] = float(json.loads(run.stdout)[metric])
        out.append(
            common.result(
                f"tune_quality_{name}",
                scores["q"],
                scores["d"],
                "",
                scores["q"] - scores["d"],
                0.0,
                kind="diff",
                higher_is_better=True,
                note=f"test {metric}: {trials} tuned trials vs dl train defaults",
            )
        )
    return out


def run(trials: int = 40, seeds: int = 3) -> list[dict]:
    with common.temp_dir("dlbench-tune-") as tmp:
        return [
            overhead(tmp),
            *pruning(tmp, trials),
            sampler(tmp, trials, seeds),
            *quality(tmp, trials),
        ]


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--trials", type=int, default=40)
    parser.add_argument("--seeds", type=int, default=3)
    a = parser.parse_args()
    common.main(lambda: run(a.trials, a.seeds))
