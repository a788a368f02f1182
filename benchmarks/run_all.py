"""Run every benchmark (or `--only NAME`) and print one table of the figures. Always exits 0:
benchmarks report, they do not fail CI.

    .venv/bin/python benchmarks/run_all.py [--only help|train_epoch|csv_load|...]

`gan_quality`, `quality_anomaly` and `bench_stream` (minutes) run only when named, e.g.
`--only gan_quality`.
"""

from __future__ import annotations

import argparse
import importlib
import sys
import traceback
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common

BENCHMARKS = [
    "bench_help",
    "bench_small_train",
    "bench_csv_load",
    "bench_parquet_load",
    "bench_train_epoch",
    "bench_predict_memory",
    "bench_onnx_predict",
    "bench_images",
    "bench_idx",  # ~30 s: 10,000 generated digits as IDX files and as PNG folders
    "bench_sequence",
    "bench_feature_cache",  # ~2 min: a resnet trained through its frozen features and on cached ones
    "quality_tables",  # ~3-5 min: 15 dl trainings + the baselines
    "bench_gpu",  # prints a skip line and adds nothing without CUDA
]


OPT_IN = [
    "gan_quality",
    "quality_anomaly",  # an hour or more on 2 busy cores: 100+ trainings
    "bench_stream",
    "bench_parquet_stream",  # ~2 GB of Parquet streamed (minutes; DL_BENCH_PARQUET_ROWS)
    "bench_tune",
    "quality_series",  # series vs naive and seasonal naive, 4 series x 3 seeds (~10 min)
    "bench_serve",  # two 30 s load tests
    "quality_text",  # issue 12, text: 5 data sets x 3 seeds x defaults + 5 presets
    "bench_transfer",  # issue 14: resnet18 pre-trained on digits 0-4, fine-tuned on 5-9 (~5 min)
    "bench_word_vectors",  # issue 14, --embeddings: 18 small trainings (~5 min idle)
]  # slow (minutes): run only when named with --only


def select(only: list[str] | None) -> list[str]:
    if not only:
        return BENCHMARKS
    known = BENCHMARKS + OPT_IN
    chosen = [m for m in known if any(o in (m, m.removeprefix("bench_"), f"{m}.py") for o in only)]
    if not chosen:
        names = ", ".join(m.removeprefix("bench_") for m in known)
        raise SystemExit(f"run_all: no benchmark named {', '.join(only)} (known: {names})")
    return chosen


def table(rows: list[dict]) -> str:
    header = ["name", "dl", "reference", "figure", "goal", "result"]
    body = [
        [
            r["name"],
            common.fmt(r["dl"], r["unit"]),
            common.fmt(r["reference"], r["unit"]),
            common.figure_text(r),
            common.goal_text(r),
            "PASS" if r["passed"] else "FAIL",
        ]
        for r in rows
    ]
    widths = [max(len(str(x)) for x in col) for col in zip(header, *body, strict=False)]
    lines = [" | ".join(str(x).ljust(w) for x, w in zip(row, widths, strict=True)) for row in body]
    rule = "-+-".join("-" * w for w in widths)
    head = " | ".join(h.ljust(w) for h, w in zip(header, widths, strict=True))
    return "\n".join([head, rule, *lines])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", action="append", metavar="NAME", help="run only this benchmark")
    args = parser.parse_args()
    rows: list[dict] = []
    for name in select(args.only):
        print(f"== {name}", flush=True)
        try:
            rows.extend(importlib.import_module(name).run())
        except Exception:  # one broken benchmark must not hide the others' figures
            traceback.print_exc()
            rows.append(
                {
                    "name": name,
                    "dl": None,
                    "reference": None,
                    "unit": "",
                    "figure": float("nan"),
                    "goal": float("nan"),
                    "kind": "abs",
                    "higher_is_better": False,
                    "passed": False,
                    "note": "error",
                }
            )
    print()
    print(table(rows))
    notes = [f"  {r['name']}: {r['note']}" for r in rows if r["note"]]
    if notes:
        print("\nnotes:", *notes, sep="\n")
    sys.exit(0)


if __name__ == "__main__":
    main()
