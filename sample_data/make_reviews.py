"""Regenerate sample_data/reviews/ (run once; the output is committed).

Source: the movie-review snippets of Hutto & Gilbert (2014), "VADER: A Parsimonious Rule-based Model
for Sentiment Analysis of Social Media Text", ICWSM-14: 10,605 sentence-level snippets from Rotten
Tomatoes reviews (derived from Pang & Lee 2004), each with the mean sentiment rating (-4..+4) of
about 20 human raters. The file `movieReviewSnippets_GroundTruth.txt` ships inside the source
distribution of the `vaderSentiment` package on PyPI (version 3.3.2, MIT licence), in
`additional_resources/hutto_ICWSM_2014.tar.gz`; no other download is needed.

Labels: `positive` for a mean rating >= +0.5, `negative` for <= -0.5; the ambiguous snippets between
are left out. A seeded, class-balanced sample of 4,000 snippets is split into
reviews/train.csv (3,000 rows) and reviews/test.csv (1,000 rows), columns `review,sentiment`, and
reviews/rows.csv (the first 200 test reviews without the label, for `dl predict`).

    python sample_data/make_reviews.py                  # fetches the sdist with pip download
    python sample_data/make_reviews.py --sdist vaderSentiment-3.3.2.tar.gz
"""

from __future__ import annotations

import argparse
import hashlib
import io
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

HERE = Path(__file__).parent
PACKAGE = "vaderSentiment==3.3.2"
SDIST_SHA256 = "5d7c06e027fc8b99238edb0d53d970cf97066ef97654009890b83703849632f9"
INNER = "vaderSentiment-3.3.2/additional_resources/hutto_ICWSM_2014.tar.gz"
SNIPPETS = "hutto_ICWSM_2014/movieReviewSnippets_GroundTruth.txt"
PER_CLASS, N_TEST, N_ROWS = 2000, 1000, 200


def fetch_sdist(folder: str) -> Path:
    """`pip download` the source distribution (not the wheel: only the sdist has the data)."""
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:"]
    subprocess.run([*cmd, "-d", folder, PACKAGE], check=True)
    return next(Path(folder).glob("vaderSentiment-*.tar.gz"))


def read_snippets(sdist: Path) -> pd.DataFrame:
    """(id, rating, review) rows of the ground-truth file inside the sdist."""
    data = sdist.read_bytes()
    if hashlib.sha256(data).hexdigest() != SDIST_SHA256:
        raise SystemExit(f"{sdist}: unexpected sha256; expected the {PACKAGE} sdist")
    with tarfile.open(fileobj=io.BytesIO(data)) as outer:
        inner_bytes = outer.extractfile(INNER).read()
    with tarfile.open(fileobj=io.BytesIO(inner_bytes)) as inner:
        text = inner.extractfile(SNIPPETS).read().decode("utf-8")
    rows = []
    for line in text.splitlines():
        parts = line.strip().split("\t")
        if len(parts) == 3:
            rows.append((int(parts[0]), float(parts[1]), " ".join(parts[2].split())))
    return pd.DataFrame(rows, columns=["id", "rating", "review"])


def build(snippets: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    frame = snippets[snippets["rating"].abs() >= 0.5].drop_duplicates("review")
    frame = frame.assign(sentiment=np.where(frame["rating"] > 0, "positive", "negative"))
    rng = np.random.default_rng(0)
    parts = []
    for label in ("negative", "positive"):
        idx = np.flatnonzero(frame["sentiment"].to_numpy() == label)
        parts.append(frame.iloc[rng.choice(idx, PER_CLASS, replace=False)])
    sample = pd.concat(parts).iloc[rng.permutation(2 * PER_CLASS)][["review", "sentiment"]]
    return sample.iloc[N_TEST:], sample.iloc[:N_TEST]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--sdist", help="a local vaderSentiment-3.3.2.tar.gz (default: pip download)"
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        sdist = Path(args.sdist) if args.sdist else fetch_sdist(tmp)
        train, test = build(read_snippets(sdist))
    out = HERE / "reviews"
    out.mkdir(exist_ok=True)
    train.to_csv(out / "train.csv", index=False, lineterminator="\n")
    test.to_csv(out / "test.csv", index=False, lineterminator="\n")
    test[["review"]].iloc[:N_ROWS].to_csv(out / "rows.csv", index=False, lineterminator="\n")
    print(f"wrote {len(train)} training and {len(test)} test reviews to {out}")


if __name__ == "__main__":
    main()
