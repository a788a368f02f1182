"""`dl evaluate MODEL DATA`: the task's metrics on labelled data, as a table or --json."""

from __future__ import annotations

import typer

from dlcli.cli.output import JSON, QUIET, print_json


def evaluate(
    model: str = typer.Argument(..., help="Model file written by `dl train`."),
    data: str = typer.Argument(
        ..., help="Labelled data (CSV with the target column), or - for stdin."
    ),
    quiet: bool = QUIET,
    json_out: bool = JSON,
) -> None:
    """Evaluate MODEL on labelled DATA: accuracy, F1, ROC AUC... or MAE, RMSE, R²."""
    from dlcli.console import console, set_quiet
    from dlcli.engine.evaluator import evaluate_file
    from dlcli.model.assemble import load_model

    set_quiet(quiet)
    loaded = load_model(model)
    metrics = evaluate_file(loaded, data)
    if json_out:
        print_json(metrics)
    if not quiet:
        from dlcli.cli.tables import confusion_table, metrics_table

        console().print(metrics_table(metrics, f"{data} ({metrics['n']:,} rows)"))
        if "confusion_matrix" in metrics:
            console().print(
                confusion_table(metrics["confusion_matrix"], loaded.encoder.target.classes)
            )


def register(app: typer.Typer) -> None:
    app.command("evaluate", no_args_is_help=True)(evaluate)
