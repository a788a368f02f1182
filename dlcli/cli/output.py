"""Shared bits of the command modules: JSON on stdout, common option definitions."""

from __future__ import annotations

import json
import sys
from typing import Any

import typer

QUIET = typer.Option(False, "--quiet", "-q", help="Only errors on stderr.")
JSON = typer.Option(False, "--json", help="Print the result as JSON on stdout.")
# inference commands (evaluate, predict)
DEVICE = typer.Option(
    "auto", "--device", help="auto (CUDA when present), cpu, cuda, cuda:N or mps."
)
PRECISION = typer.Option(
    "auto",
    "--precision",
    help="auto (bf16 on CUDA, else fp32), fp32, bf16 or fp16 (CUDA only): autocast as in training.",
)
IMAGE_COLUMN = typer.Option(
    None,
    "--image-column",
    help="Images: the column of image paths in a table of images (default: detected, or the "
    "one the model was trained on).",
)

SCORE = typer.Option(
    None,
    "--score",
    help="Autoencoder: the anomaly score: reconstruction, knn, density, knn+reconstruction, "
    "input-knn, input-knn+reconstruction or knn+input-knn (default: the one stored at "
    "training; docs/autoencoders.md).",
)

# commands that read tables (train, tune, evaluate, predict)
INPUT_FORMAT = typer.Option(
    None,
    "--input-format",
    help="What - (stdin) holds: csv (default), csv.gz, csv.zst, csv.bz2, parquet, jsonl or "
    "feather. Files are read by their suffix.",
)


def print_json(obj: Any) -> None:
    """One JSON document on stdout (data channel)."""
    sys.stdout.write(json.dumps(obj, indent=2, default=str) + "\n")
    sys.stdout.flush()
