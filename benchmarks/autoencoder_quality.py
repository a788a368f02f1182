"""Autoencoder anomaly detection on the sample digits: each class in turn is held out as "the
anomaly". `dl train` (defaults, `--arch autoencoder`, i.e. the conv_autoencoder preset) fits the
other nine classes of sample_data/digits/train; `dl evaluate --anomaly-label K` scores
sample_data/digits/test, where class K is the anomaly. Reference: scikit-learn's PCA
reconstruction error with the same number of components as dl's latent size, on the same split
(a classic linear baseline). Figure: dl's mean ROC AUC over the held-out classes; goal >= 0.9.

    .venv/bin/python benchmarks/autoencoder_quality.py [--classes 9,3]
"""

from __future__ import annotations

import argparse
import json
import statistics

import common

GOAL = 0.9
DIGITS = common.SAMPLE_DATA / "digits"


def dl_auc(held_out: int, tmp) -> tuple[float, float]:
    """(ROC AUC, training seconds) with `held_out` as the anomaly."""
    normal = tmp / f"normal_{held_out}"
    normal.mkdir()
    for c in range(10):
        if c != held_out:
            (normal / str(c)).symlink_to(DIGITS / "train" / str(c), target_is_directory=True)
    model = tmp / f"ae_{held_out}.pt"
    run = common.run_measured(
        [common.DL, "train", normal, "--arch", "autoencoder", "-o", model, "--quiet", "--json"]
    ).check()
    seconds = float(json.loads(run.stdout)["train_seconds"])
    ev = common.run_measured(
        [common.DL, "evaluate", model, DIGITS / "test", "--anomaly-label", held_out, "--json"]
    ).check()
    return float(json.loads(ev.stdout)["roc_auc"]), seconds


def pca_auc(held_out: int, components: int) -> float:
    import numpy as np
    from PIL import Image
    from sklearn.decomposition import PCA
    from sklearn.metrics import roc_auc_score

    def load(split: str) -> tuple[np.ndarray, np.ndarray]:
        xs, ys = [], []
        for c in range(10):
            for f in sorted((DIGITS / split / str(c)).iterdir()):
                xs.append(np.asarray(Image.open(f).convert("L"), dtype=np.float32).ravel() / 255)
                ys.append(c)
        return np.stack(xs), np.asarray(ys)

    x_tr, y_tr = load("train")
    x_te, y_te = load("test")
    pca = PCA(components, random_state=0).fit(x_tr[y_tr != held_out])
    recon = pca.inverse_transform(pca.transform(x_te))
    return float(roc_auc_score(y_te == held_out, ((x_te - recon) ** 2).mean(1)))


def run(classes: list[int] | None = None) -> list[dict]:
    classes = list(range(10)) if classes is None else classes
    aucs, refs, secs = [], [], []
    with common.temp_dir() as tmp:
        for k in classes:
            auc, seconds = dl_auc(k, tmp)
            ref = pca_auc(k, 8)
            aucs.append(auc)
            refs.append(ref)
            secs.append(seconds)
            print(f"  held out {k}: dl ROC AUC {auc:.3f} (train {seconds:.0f} s), PCA {ref:.3f}")
    mean, ref_mean = statistics.mean(aucs), statistics.mean(refs)
    worst = classes[aucs.index(min(aucs))]
    note = f"min {min(aucs):.3f} (class {worst}); PCA-8 mean {ref_mean:.3f}"
    return [
        common.result(
            "autoencoder_digits_auc", mean, ref_mean, "", mean, GOAL,
            kind="abs", higher_is_better=True, note=note,
        )
    ]  # fmt: skip


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--classes", help="comma-separated held-out classes (default: all ten)")
    args = parser.parse_args()
    run([int(c) for c in args.classes.split(",")] if args.classes else None)
