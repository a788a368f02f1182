"""Pretrained word vectors (`dl train --embeddings FILE`, issue 14): do vectors that carry
knowledge from other data raise accuracy on a small labelled set over a random start?

Data: sample_data/reviews. A seeded stratified LABELLED rows of train.csv are the small training
set; the other rows of train.csv are the "large corpus" the vectors are made from (their texts and
labels never enter the small training set); test.csv (1,000 rows) scores both arms.
Vectors (GloVe text format, DIM wide): each word seen in the corpus at least twice gets
`s * u + noise`, where u is one fixed random unit direction, s the word's smoothed log-odds of
occurring in a positive review there (clipped to +-3), noise N(0, NOISE^2) per dimension: a
stand-in for published vectors, whose directions carry sentiment learnt from a large corpus.
dl: `dl train small.csv --arch A --embeddings vectors.txt --seed S [--min-freq N]` against the same
network with a random start (`--spec`: the preset with its embedding DIM wide) and the same flags,
S = 1, 2, 3, each scored by `dl evaluate --json` on test.csv. Figure: mean accuracy with vectors
minus random (goal >= 0.02). `DL_BENCH_WORDVEC_RUNS` (default "lstm,lstm:1,bow:1") lists the
runs as PRESET[:MIN_FREQ] (no MIN_FREQ: dl's default, 2); --min-freq 1 keeps the words seen once
in the 150 rows, which is where vectors from other data help most.
"""

from __future__ import annotations

import json
import os
import statistics
from pathlib import Path

import common

SEEDS = (1, 2, 3)
LABELLED = 150
DIM = 50
NOISE = 0.3
GOAL = 0.02


def split(tmp: Path) -> tuple[Path, list[tuple[str, str]]]:
    """small.csv (LABELLED rows) and the other rows of train.csv as (text, label) pairs."""
    import pandas as pd
    from sklearn.model_selection import train_test_split

    frame = pd.read_csv(common.SAMPLE_DATA / "reviews" / "train.csv")
    small, corpus = train_test_split(
        frame, train_size=LABELLED, random_state=0, stratify=frame["sentiment"]
    )
    small.to_csv(tmp / "small.csv", index=False)
    return tmp / "small.csv", list(zip(corpus["review"], corpus["sentiment"], strict=True))


def write_vectors(corpus: list[tuple[str, str]], path: Path) -> int:
    """Label-encoding vectors from the corpus (see the module docstring); returns the word count."""
    from collections import Counter

    import numpy as np

    from dlcli.data.text_tokens import word_tokens

    seen, positive = Counter(), Counter()
    for text, label in corpus:
        words = set(word_tokens(text, 10_000))
        seen.update(words)
        positive.update(words if label == "positive" else ())
    rng = np.random.default_rng(0)
    direction = rng.normal(size=DIM)
    direction /= np.linalg.norm(direction)
    words = sorted(w for w, n in seen.items() if n >= 2)
    with open(path, "w", encoding="utf-8") as fh:
        for w in words:
            s = np.clip(np.log((positive[w] + 1) / (seen[w] - positive[w] + 1)), -3, 3)
            vec = s * direction + rng.normal(scale=NOISE, size=DIM)
            fh.write(w + " " + " ".join(f"{x:.5f}" for x in vec) + "\n")
    return len(words)


def random_start_spec(arch: str, tmp: Path) -> Path:
    """The preset with its embedding DIM wide: the same network as --embeddings builds."""
    from dlcli.spec.schema import load_preset

    doc = load_preset(arch)[1]
    first = doc["layers"][0]
    kind = next(iter(first))
    doc["layers"][0] = {kind: DIM, **{k: v for k, v in first.items() if k != kind}}
    doc.pop("search", None)
    path = tmp / f"{arch}_random.json"
    path.write_text(json.dumps(doc))
    return path


def accuracy(train: Path, test: Path, seed: int, extra: list, tmp: Path) -> float:
    model = tmp / "m.pt"
    cmd = [common.DL, "train", train, "-o", model, "--quiet", "--no-plots", "--seed", seed, *extra]
    common.run_measured(cmd).check()
    run = common.run_measured([common.DL, "evaluate", model, test, "--json"]).check()
    return float(json.loads(run.stdout)["accuracy"])


def run() -> list[dict]:
    results = []
    runs = [r for r in os.environ.get("DL_BENCH_WORDVEC_RUNS", "lstm,lstm:1,bow:1").split(",") if r]
    with common.temp_dir() as tmp:
        small, corpus = split(tmp)
        vectors = tmp / "vectors.txt"
        words = write_vectors(corpus, vectors)
        test = common.SAMPLE_DATA / "reviews" / "test.csv"
        for run_name in runs:
            arch, _, min_freq = run_name.partition(":")
            flags = ["--min-freq", min_freq] if min_freq else []
            spec = random_start_spec(arch, tmp)
            pre = [
                accuracy(small, test, s, ["--arch", arch, "--embeddings", vectors, *flags], tmp)
                for s in SEEDS
            ]
            rnd = [accuracy(small, test, s, ["--spec", spec, *flags], tmp) for s in SEEDS]
            with_vectors, random = statistics.mean(pre), statistics.mean(rnd)
            note = (
                f"{LABELLED} labelled rows, {words:,} words' vectors ({DIM} wide) from the other "
                f"{len(corpus):,}; seeds {', '.join(map(str, SEEDS))}: vectors "
                f"{', '.join(f'{a:.3f}' for a in pre)}, random {', '.join(f'{a:.3f}' for a in rnd)}"
            )
            name = f"word_vectors_{arch}{f'_min_freq_{min_freq}' if min_freq else ''}"
            results.append(
                common.result(
                    f"{name} (test accuracy)",
                    with_vectors,
                    random,
                    "",
                    with_vectors - random,
                    GOAL,
                    kind="diff",
                    higher_is_better=True,
                    note=note,
                )
            )
    return results


if __name__ == "__main__":
    common.main(run)
