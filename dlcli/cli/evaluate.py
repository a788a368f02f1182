"""`dl evaluate MODEL DATA`: the task's metrics on labelled data, as a table or --json."""

from __future__ import annotations

import typer

from dlcli.cli.output import (
    DEVICE,
    IMAGE_COLUMN,
    INPUT_FORMAT,
    JSON,
    PRECISION,
    QUIET,
    SCORE,
    print_json,
)


def evaluate(
    model: str = typer.Argument(..., help="Model file written by `dl train`."),
    data: str = typer.Argument(
        ...,
        help="Labelled data: a CSV with the target column (- for stdin), or an image folder with one sub-folder per class.",
    ),
    errors: str = typer.Option(
        None,
        "--errors",
        help="Images: copy misclassified images into this folder, named with their true and predicted labels.",
    ),
    report: str = typer.Option(
        None,
        "--report",
        help="Write metrics.json and (classification) confusion_matrix.png into this folder.",
    ),
    device: str = DEVICE,
    precision: str = PRECISION,
    anomaly_label: str = typer.Option(
        None,
        "--anomaly-label",
        help="Autoencoder: the label value that marks an anomaly (ROC AUC, precision at the threshold).",
    ),
    target: str = typer.Option(
        None, "--target", "-t", help="Autoencoder: the label column (default: the last column)."
    ),
    score: str = SCORE,
    image_column: str = IMAGE_COLUMN,
    input_format: str = INPUT_FORMAT,
    quiet: bool = QUIET,
    json_out: bool = JSON,
) -> None:
    """Evaluate MODEL on labelled DATA: accuracy, F1, ROC AUC... or MAE, RMSE, R²; for autoencoders,
    how well the anomaly score separates --anomaly-label rows."""
    from dlcli import families, modelfile
    from dlcli.console import console, set_quiet
    from dlcli.families.base import EvaluateOptions, refuse_flags

    set_quiet(quiet)
    _refuse_overwriting(model, data, report, errors)
    file_data = modelfile.load(model)
    from dlcli.data.sources import with_input_options

    file_data = with_input_options(file_data, {"image_column": image_column})
    family = families.of_model(file_data)
    used = {
        "--errors": bool(errors),
        "--anomaly-label": anomaly_label is not None,
        "--score": score is not None,
    }
    refuse_flags(family, "evaluate", used)
    opts = EvaluateOptions(anomaly_label, target, device, errors, precision, report, score)
    from dlcli.data.readers.stdin import check_input_format, spooled

    check_input_format(input_format, [data])
    with spooled([data], input_format) as (path,):
        result = family.evaluate(file_data, model, path, opts)
    metrics = result.metrics
    if json_out:
        print_json(metrics)
    if not quiet:
        from dlcli.cli.tables import confusion_table, metrics_table, per_class_table

        console().print(metrics_table(metrics, f"{data} ({metrics.get('n', 0):,} rows)"))
        if "confusion_matrix" in metrics and result.classes is not None:
            console().print(per_class_table(metrics["per_class"]))
            console().print(confusion_table(metrics["confusion_matrix"], result.classes))
        if errors:
            console().print(
                f"copied {metrics['errors_copied']} misclassified inputs to {errors.rstrip('/')}/"
            )


def _refuse_overwriting(model: str, data: str, report: str | None, errors: str | None) -> None:
    """--report and --errors never write onto the model or the data, and can be written (checked
    before any work)."""
    from pathlib import Path

    from dlcli.fileio import check_writable, refuse_overwriting_inputs

    read = [model, data]
    for flag, folder in (("--report", report), ("--errors", errors)):
        refuse_overwriting_inputs(flag, folder, read, folder=True)
        check_writable(flag, folder, folder=True)
    if report:  # the files --report writes
        for name in ("metrics.json", "confusion_matrix.png"):
            refuse_overwriting_inputs("--report", Path(report) / name, read)


def register(app: typer.Typer) -> None:
    app.command("evaluate", no_args_is_help=True)(evaluate)
