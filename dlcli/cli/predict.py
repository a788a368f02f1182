"""`dl predict MODEL INPUT`: predictions as CSV (or JSON lines) on stdout or -o FILE, streamed."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import IO

import typer

from dlcli.cli.output import DEVICE, IMAGE_COLUMN, INPUT_FORMAT, PRECISION, QUIET, SCORE


def predict(
    model: str = typer.Argument(..., help="Model file written by `dl train`."),
    inputs: list[str] = typer.Argument(
        None,
        help="What to predict: table files (CSV, Parquet, JSON Lines, Feather, compressed CSV; - for "
        "stdin, CSV unless --input-format) for table models; image files, folders, or - for image "
        "paths on stdin, for image models.",
    ),
    output: str = typer.Option(
        None, "--output", "-o", help="Write here instead of stdout (atomically)."
    ),
    fmt: str = typer.Option(
        "csv", "--format", "-f", help="csv, jsonl or parquet (parquet needs -o FILE)."
    ),
    proba: bool = typer.Option(False, "--proba", help="Add a proba_<class> column per class."),
    keep_columns: bool = typer.Option(
        False, "--keep-columns", help="Copy the input columns into the output."
    ),
    top_k: int = typer.Option(
        1,
        "--top-k",
        "-k",
        min=1,
        help="Also list the next K-1 most likely classes with their confidence.",
    ),
    device: str = DEVICE,
    precision: str = PRECISION,
    steps: int = typer.Option(
        None,
        "--steps",
        min=1,
        help="Series: forecast N steps past the end of the input, rolling one-step predictions forward.",
    ),
    samples: int = typer.Option(
        None, "--samples", min=1, help="GAN: generate N new samples (a PNG grid with -o FILE.png)."
    ),
    output_dir: str = typer.Option(
        None, "--output-dir", help="GAN: write each generated sample as its own PNG in this folder."
    ),
    seed: int = typer.Option(
        None, "--seed", min=0, max=2**32 - 1, help="GAN: random seed for reproducible samples."
    ),
    embed: bool = typer.Option(
        False, "--embed", help="Autoencoder: print the latent vector of each row instead of scores."
    ),
    score: str = SCORE,
    image_column: str = IMAGE_COLUMN,
    input_format: str = INPUT_FORMAT,
    quiet: bool = QUIET,
) -> None:
    """Predict with MODEL. Tables: columns are matched by name, the target column is ignored.
    Images: prints path,prediction,confidence. Series: one prediction per window of the input, or
    with --steps N the next N values. Autoencoders: anomaly_score,is_anomaly per row (--embed: the
    latent vector). GANs: --samples N new images."""
    from dlcli.console import set_quiet
    from dlcli.data.readers.stdin import check_input_format, spooled

    set_quiet(quiet)
    check_input_format(input_format, inputs or [])
    with spooled(inputs or [], input_format) as paths:
        _predict(model, paths, output, fmt, proba, keep_columns, top_k, device, precision, steps,
                 samples, output_dir, seed, embed, score, image_column)  # fmt: skip


def _predict(
    model: str, inputs: list[str], output: str | None, fmt: str, proba: bool, keep_columns: bool,
    top_k: int, device: str, precision: str, steps: int | None, samples: int | None,
    output_dir: str | None, seed: int | None, embed: bool, score: str | None,
    image_column: str | None,
) -> None:  # fmt: skip
    if model.lower().endswith(".onnx"):  # an exported graph: onnxruntime, never torch
        from dlcli.runtime.predict import RuntimeOptions, predict_file

        return predict_file(model, inputs or [], RuntimeOptions(
            lambda: _text_stream(output), output, output_dir, fmt, samples, seed, embed,
            keep_columns, device, precision, proba, top_k, steps, score, image_column,
        ))  # fmt: skip
    from dlcli.engine.outputs import check_format

    check_format(fmt, output)
    from dlcli import families, modelfile
    from dlcli.families.base import PredictOptions, refuse_flags
    from dlcli.fileio import check_writable, refuse_overwriting_inputs

    read = [model, *(inputs or [])]
    refuse_overwriting_inputs("-o", output, read, data_suffixes=_folder_suffixes(read))
    refuse_overwriting_inputs("--output-dir", output_dir, read, folder=True)
    check_writable("-o", output)
    check_writable("--output-dir", output_dir, folder=True)
    data = modelfile.load(model)
    from dlcli.data.sources import with_input_options

    data = with_input_options(data, {"image_column": image_column})
    family = families.of_model(data)
    used = {
        "--proba": proba,
        "--top-k": top_k != 1,
        "--steps": steps is not None,
        "--samples": samples is not None,
        "--embed": embed,
        "--score": score is not None,
    }
    refuse_flags(family, "predict", used)
    opts = PredictOptions(
        lambda: _text_stream(output), output, output_dir, fmt, samples, seed, embed,
        keep_columns, device, precision, proba, top_k, steps, score,
    )  # fmt: skip
    family.predict(data, model, inputs or [], opts)


def _folder_suffixes(paths: list[str]) -> frozenset[str]:
    """The suffixes an input folder's reader picks up (images): -o must not write one in there."""
    import os

    if not any(os.path.isdir(p) for p in paths if p != "-"):
        return frozenset()
    from dlcli.data.image_cache import IMAGE_EXTENSIONS

    return IMAGE_EXTENSIONS


@contextlib.contextmanager
def _text_stream(output: str | None) -> Iterator[IO[str]]:
    """Where text output goes: -o FILE (written atomically, replaced only on success), else stdout."""
    import sys

    if not output:
        yield sys.stdout
        sys.stdout.flush()
        return
    from dlcli.fileio import atomic_path

    with atomic_path(output) as tmp, open(tmp, "w", encoding="utf-8", newline="") as fh:
        yield fh
        fh.flush()


def register(app: typer.Typer) -> None:
    app.command("predict", no_args_is_help=True)(predict)
