"""`dl export [MODEL] --onnx`: write an exported model and verify it against PyTorch."""

from __future__ import annotations

import typer

from dlcli.cli.output import JSON, QUIET, print_json


def export(
    model: str = typer.Argument("model.pt", help="Model file (default: ./model.pt)."),
    onnx: bool = typer.Option(
        True, "--onnx", help="Export to ONNX (the default and, for now, only format)."
    ),
    output: str = typer.Option(
        None, "--output", "-o", help="Output path (default: MODEL with the format's suffix)."
    ),
    tolerance: float = typer.Option(
        1e-4, "--tolerance", min=0.0, help="Largest allowed difference from PyTorch."
    ),
    quiet: bool = QUIET,
    json_out: bool = JSON,
) -> None:
    """Export MODEL (default ./model.pt) to ONNX; the result is checked with onnx.checker and compared
    with PyTorch through onnxruntime on real inputs."""
    from dlcli import families, modelfile
    from dlcli.console import info, set_quiet
    from dlcli.export import FORMATS

    set_quiet(quiet)
    fmt = "onnx"
    _check_writable(model, output)
    data = modelfile.load(model)
    plan = families.of_model(data).export_graphs(data, model)  # the family's graphs
    result = FORMATS[fmt].write(plan, model, output, tolerance)
    if json_out:
        print_json(result)
    info(
        f"wrote [bold]{result['path']}[/]: onnxruntime vs PyTorch max abs difference {result['max_abs_diff']:.2e} on {result['rows_checked']} rows (tolerance {tolerance:g})"
    )


def _check_writable(model: str, output: str | None) -> None:
    """The folder the exported files go to can be written (checked before the export's work)."""
    from pathlib import Path

    from dlcli.fileio import check_writable

    target = Path(output) if output else Path(model).with_suffix(".onnx")
    check_writable("-o", target, folder=target.is_dir())


def register(app: typer.Typer) -> None:
    app.command("export")(export)
