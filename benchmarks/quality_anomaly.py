"""Anomaly detection quality at the defaults, against the baselines a user would try first,
measured in the same run: for each data set, each class in turn is "the anomaly"; `dl train
--arch autoencoder` (defaults, 3 seeds) fits the other classes and `dl evaluate --anomaly-label`
scores a held-out test split with the model's default score. References on the same split:
the mean distance to the 5 nearest normal training rows on the raw inputs (pixels in [0, 1];
standardised columns for tables) and PCA reconstruction error (as many components as dl's latent
size). Figure per data set: dl's mean ROC AUC over the held-out classes and seeds minus the best
reference's; goal >= -0.01 (issue 12).

Data sets: sample_data/digits (16x16 images, classes 0-9), sample_data/breast_cancer (a table;
benign rows are normal, malignant the anomaly), and two that scikit-learn ships in its wheel:
load_digits (the 8x8 originals as a 64-column table, classes 0-9; 80/20 stratified split, seed 0)
and load_wine (13 columns, classes 0-2; the same split). The other stored scores of each model
(`--score reconstruction|knn|density|knn+reconstruction`) are computed in process for the table
of benchmarks/README.md.

    .venv/bin/python benchmarks/quality_anomaly.py [--sets digits,wine] [--classes 9,3] [--seeds 0,1,2]
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

import common
import numpy as np

GOAL = -0.01
SEEDS = (0, 1, 2)
DIGITS = common.SAMPLE_DATA / "digits"
CANCER = common.SAMPLE_DATA / "breast_cancer"
SCORES = (
    "reconstruction", "knn", "density", "knn+reconstruction", "input-knn",
    "input-knn+reconstruction", "knn+input-knn",
)  # fmt: skip


# -- data: (train inputs for dl, test path, arrays for the baselines) -----------------------------
def _image_arrays(split: str) -> tuple[np.ndarray, np.ndarray]:
    from PIL import Image

    xs, ys = [], []
    for c in range(10):
        for f in sorted((DIGITS / split / str(c)).iterdir()):
            xs.append(np.asarray(Image.open(f).convert("L"), dtype=np.float32).ravel() / 255)
            ys.append(str(c))
    return np.stack(xs), np.asarray(ys)


def _sklearn_table(name: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, list[str]]:
    from sklearn import datasets
    from sklearn.model_selection import train_test_split

    bunch = {"digits8": datasets.load_digits, "wine": datasets.load_wine}[name]()
    x, y = bunch.data.astype(np.float64), bunch.target.astype(str)
    cols = (
        [f"f{i:02d}" for i in range(x.shape[1])] if name == "digits8" else list(bunch.feature_names)
    )
    tr, te = train_test_split(np.arange(len(y)), test_size=0.2, stratify=y, random_state=0)
    return x[tr], y[tr], x[te], y[te], cols


class DataSet:
    """One data set: its classes to hold out, and for each the files dl reads and the arrays the
    baselines read."""

    def __init__(self, name: str, tmp: Path) -> None:
        import pandas as pd

        self.name, self.tmp, self.kind = name, tmp / name, "table"
        self.tmp.mkdir()
        if name == "digits":
            self.kind = "image"
            self.x_tr, self.y_tr = _image_arrays("train")
            self.x_te, self.y_te = _image_arrays("test")
            self.classes = [str(c) for c in range(10)]
            self.test_path = DIGITS / "test"
            return
        if name == "breast_cancer":
            train, test = pd.read_csv(CANCER / "train.csv"), pd.read_csv(CANCER / "test.csv")
            cols = [c for c in train.columns if c != "diagnosis"]
            self.x_tr, self.y_tr = train[cols].to_numpy(float), train["diagnosis"].to_numpy(str)
            self.x_te, self.y_te = test[cols].to_numpy(float), test["diagnosis"].to_numpy(str)
            self.classes = ["malignant"]
        else:
            self.x_tr, self.y_tr, self.x_te, self.y_te, cols = _sklearn_table(name)
            self.classes = sorted(set(self.y_tr), key=int)
        self.cols = cols
        test = pd.DataFrame(self.x_te, columns=cols)
        test["label"] = self.y_te
        self.test_path = self.tmp / "test.csv"
        test.to_csv(self.test_path, index=False)

    def normal_data(self, held: str) -> Path:
        """What `dl train` reads: the training rows of every other class (labels left out)."""
        import pandas as pd

        if self.kind == "image":
            folder = self.tmp / f"normal_{held}"
            folder.mkdir(exist_ok=True)
            for c in self.classes:
                link = folder / c
                if c != held and not link.exists():
                    link.symlink_to(DIGITS / "train" / c, target_is_directory=True)
            return folder
        path = self.tmp / f"normal_{held}.csv"
        if not path.exists():
            pd.DataFrame(self.x_tr[self.y_tr != held], columns=self.cols).to_csv(path, index=False)
        return path

    def baselines(self, held: str, components: int) -> dict[str, float]:
        """ROC AUC of kNN distance (k=5) on the raw inputs and of PCA reconstruction error."""
        from sklearn.decomposition import PCA
        from sklearn.metrics import roc_auc_score
        from sklearn.neighbors import NearestNeighbors
        from sklearn.preprocessing import StandardScaler

        normal, test = self.x_tr[self.y_tr != held], self.x_te
        if self.kind == "table":  # what a user does first with columns in different units
            scaler = StandardScaler().fit(normal)
            normal, test = scaler.transform(normal), scaler.transform(test)
        positive = self.y_te == held
        dist, _ = NearestNeighbors(n_neighbors=5).fit(normal).kneighbors(test)
        pca = PCA(min(components, normal.shape[1]), random_state=0).fit(normal)
        recon = pca.inverse_transform(pca.transform(test))
        return {
            "knn_raw": float(roc_auc_score(positive, dist.mean(1))),
            "pca": float(roc_auc_score(positive, ((test - recon) ** 2).mean(1))),
        }


# -- dl ------------------------------------------------------------------------------------------
def dl_run(ds: DataSet, held: str, seed: int) -> dict:
    """Train at the defaults, evaluate the default score through the CLI, and the other stored
    scores in process."""
    model = ds.tmp / f"ae_{held}_{seed}.pt"
    train = [common.DL, "train", ds.normal_data(held), "--arch", "autoencoder", "-o", model]
    run = common.run_measured([*train, "--seed", seed, "--no-plots", "--quiet", "--json"]).check()
    summary = json.loads(run.stdout)
    ev = common.run_measured(
        [common.DL, "evaluate", model, ds.test_path, "--anomaly-label", held, "--json"]
    ).check()
    metrics = json.loads(ev.stdout)
    out = {
        "auc": float(metrics["roc_auc"]),
        "score": metrics.get("score", "reconstruction"),
        "latent": int(summary["latent"]),
        "seconds": float(summary["train_seconds"]),
    }
    out.update({f"score_{s}": _auc_with(model, ds, held, s) for s in SCORES})
    return out


def _auc_with(model: Path, ds: DataSet, held: str, score: str) -> float:
    from dlcli import modelfile
    from dlcli.families import anomaly
    from dlcli.families.base import EvaluateOptions
    from dlcli.model.autoencoder import load_autoencoder

    data = modelfile.load(model)
    if score != "reconstruction" and "anomaly_scores" not in data:
        return float("nan")
    loaded = load_autoencoder(data, str(model), score=score)
    opts = EvaluateOptions(anomaly_label=held, target="label")
    return float(anomaly.evaluate(loaded, str(ds.test_path), opts)["roc_auc"])


def _mean_sd(values: list[float]) -> str:
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):.3f} ± {sd:.3f}"


def run(
    sets: list[str] | None = None, classes: list[str] | None = None, seeds: tuple[int, ...] = SEEDS
) -> list[dict]:
    sets = sets or ["digits", "breast_cancer", "digits8", "wine"]
    results = []
    with common.temp_dir() as tmp:
        for name in sets:
            ds = DataSet(name, tmp)
            held_out = [c for c in ds.classes if classes is None or c in classes]
            per_class, refs = {}, {"knn_raw": [], "pca": []}
            for held in held_out:
                runs = [dl_run(ds, held, s) for s in seeds]
                base = ds.baselines(held, runs[0]["latent"])
                for k, v in base.items():
                    refs[k].append(v)
                per_class[held] = runs
                others = ", ".join(
                    f"{s} {statistics.mean(r[f'score_{s}'] for r in runs):.3f}" for s in SCORES
                )
                print(
                    f"  {name} held out {held}: dl ({runs[0]['score']}) "
                    f"{_mean_sd([r['auc'] for r in runs])} over seeds {list(seeds)}, "
                    f"train {statistics.mean(r['seconds'] for r in runs):.0f} s; knn-raw "
                    f"{base['knn_raw']:.3f}, PCA-{runs[0]['latent']} {base['pca']:.3f}; "
                    f"[{others}]",
                    flush=True,
                )
            # the mean over held-out classes, per seed: its spread is the seeds'
            by_seed = [
                statistics.mean(per_class[h][i]["auc"] for h in held_out) for i in range(len(seeds))
            ]
            dl_mean = statistics.mean(by_seed)
            ref_means = {k: statistics.mean(v) for k, v in refs.items()}
            best = max(ref_means, key=ref_means.get)
            note = (
                f"{len(held_out)} held-out classes x {len(seeds)} seeds; dl per seed "
                f"{', '.join(f'{v:.3f}' for v in by_seed)}; knn-raw {ref_means['knn_raw']:.3f}, "
                f"PCA {ref_means['pca']:.3f}"
            )
            results.append(
                common.result(
                    f"anomaly_auc_{name}", dl_mean, ref_means[best], "", dl_mean - ref_means[best],
                    GOAL, kind="diff", higher_is_better=True, note=note,
                )
            )  # fmt: skip
    return results


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sets", help="comma-separated: digits, breast_cancer, digits8, wine")
    parser.add_argument("--classes", help="comma-separated held-out classes (default: all)")
    parser.add_argument("--seeds", default="0,1,2", help="comma-separated seeds (default 0,1,2)")
    args = parser.parse_args()
    run(
        args.sets.split(",") if args.sets else None,
        args.classes.split(",") if args.classes else None,
        tuple(int(s) for s in args.seeds.split(",")),
    )
