"""GAN sample quality (issue 5 acceptance): does a GAN trained by `dl` at default settings on the
sample digits make images that a `dl` CNN classifier, trained on the real digits, recognises?

    dl train sample_data/digits --arch cnn -o cnn.pt        # the judge (real digits only)
    dl train sample_data/digits --arch gan -o gan.pt        # default settings
    dl predict gan.pt --samples 500 --seed 0 --output-dir samples/
    dl predict cnn.pt samples/                               # path,prediction,confidence

Figures: the mean top-1 confidence of the judge on the samples (goal >= 0.7) and the number of
digit classes that get at least 1% of the samples (goal >= 8). Slow (minutes): run_all.py runs it
only when asked (`--only gan_quality`). Options: --cnn MODEL reuses a judge, --epochs N and
--spec FILE try other GAN settings, --keep DIR keeps the models and samples.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import shutil
from collections import Counter
from pathlib import Path

import common

DIGITS = common.SAMPLE_DATA / "digits"
SAMPLES = 500
CONFIDENCE_GOAL = 0.7
CLASSES_GOAL = 8
MIN_SHARE = 0.01  # a class counts as covered with at least 1% of the samples


def judge(cnn: Path, tmp: Path) -> Path:
    """The CNN classifier trained on the real digits (or the given one)."""
    if cnn.exists():
        return cnn
    common.run_measured([common.DL, "train", DIGITS, "--arch", "cnn", "-o", cnn, "--quiet"]).check()
    return cnn


def train_gan(tmp: Path, extra: list[str]) -> tuple[Path, float]:
    """A GAN at default settings (plus `extra` flags); returns (model, training seconds)."""
    model = tmp / "gan.pt"
    run = common.run_measured(
        [common.DL, "train", DIGITS, "--arch", "gan", "-o", model, "--quiet", "--json", *extra]
    ).check()
    return model, float(json.loads(run.stdout)["train_seconds"])


def score(gan: Path, cnn: Path, tmp: Path, n: int = SAMPLES) -> tuple[float, Counter]:
    """(mean top-1 confidence, predicted class counts) of the judge on n generated samples."""
    folder = tmp / "samples"
    shutil.rmtree(folder, ignore_errors=True)
    common.run_measured(
        [common.DL, "predict", gan, "--samples", n, "--seed", 0, "--output-dir", folder, "--quiet"]
    ).check()
    run = common.run_measured([common.DL, "predict", cnn, folder, "--quiet"]).check()
    rows = list(csv.DictReader(io.StringIO(run.stdout)))
    if len(rows) != n:
        raise RuntimeError(f"expected {n} predictions, got {len(rows)}")
    confidence = sum(float(r["confidence"]) for r in rows) / len(rows)
    return confidence, Counter(r["prediction"] for r in rows)


def run(
    extra: list[str] | None = None, cnn: str | None = None, keep: str | None = None
) -> list[dict]:
    with common.temp_dir("dlgan-") as tmp:
        work = Path(keep) if keep else tmp
        work.mkdir(parents=True, exist_ok=True)
        judge_model = judge(Path(cnn) if cnn else work / "cnn.pt", work)
        gan, seconds = train_gan(work, extra or [])
        confidence, counts = score(gan, judge_model, work)
    covered = sorted(c for c, k in counts.items() if k >= MIN_SHARE * SAMPLES)
    spread = ", ".join(f"{c}:{counts[c]}" for c in sorted(counts))
    note = f"GAN trained {seconds:.0f} s; classes {spread}; {common.load_note()}"
    return [
        common.result(
            "gan_sample_confidence", confidence, None, "", confidence, CONFIDENCE_GOAL,
            kind="abs", higher_is_better=True, note=note,
        ),
        common.result(
            "gan_classes_covered", float(len(covered)), None, "classes", float(len(covered)),
            CLASSES_GOAL, kind="abs", higher_is_better=True,
            note=f"{len(counts)} classes predicted at all; >= {MIN_SHARE:.0%} of samples each: {len(covered)}",
        ),
    ]  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cnn", help="reuse this classifier model as the judge")
    parser.add_argument("--epochs", type=int, help="GAN epochs (default: the preset's)")
    parser.add_argument("--spec", help="train the GAN from this spec instead of --arch gan")
    parser.add_argument("--keep", help="keep models and samples in this folder")
    args = parser.parse_args()
    extra = ["--epochs", str(args.epochs)] if args.epochs else []
    extra += ["--spec", args.spec] if args.spec else []
    results = run(extra, args.cnn, args.keep)
    print("PASS" if all(r["passed"] for r in results) else "FAIL")


if __name__ == "__main__":
    main()
