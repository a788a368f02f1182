"""`dl serve MODEL`: predictions over HTTP (FastAPI + uvicorn, the `serve` extra); docs/serve.md."""

from __future__ import annotations

import typer

from dlcli.cli.output import QUIET


def serve(
    model: str = typer.Argument(
        ..., help="A model file of `dl train` (.pt) or `dl export` (.onnx)."
    ),
    host: str = typer.Option(
        "127.0.0.1", "--host", help="Address to bind (0.0.0.0: every interface)."
    ),
    port: int = typer.Option(8000, "--port", min=0, max=65535, help="TCP port."),
    workers: int = typer.Option(1, "--workers", min=1, max=64, help="Worker processes."),
    max_batch: int = typer.Option(
        256,
        "--max-batch",
        min=1,
        help="Rows per model run across concurrent requests (1: no micro-batching).",
    ),
    max_wait_ms: float = typer.Option(
        2.0, "--max-wait-ms", min=0.0, help="How long a run waits for more requests to join it."
    ),
    max_body: str = typer.Option(
        "10MB", "--max-body", help="Largest request body (e.g. 10MB, 512KB)."
    ),
    quiet: bool = QUIET,
) -> None:
    """Serve MODEL over HTTP: POST /predict (JSON records or CSV) returns what `dl predict` prints;
    GET /health, GET /metadata, OpenAPI docs at /docs. Binds 127.0.0.1 unless --host says otherwise."""
    from dlcli.console import set_quiet
    from dlcli.serve.run import Listen
    from dlcli.serve.run import serve as run_server

    set_quiet(quiet)
    run_server(model, Listen(host, port, workers), max_batch, max_wait_ms, _bytes(max_body))


UNITS = {"": 1, "B": 1, "KB": 1024, "MB": 1024**2, "GB": 1024**3}


def _bytes(text: str) -> int:
    """'10MB' -> bytes; one usage line for anything else."""
    from dlcli.errors import UsageError

    t = text.strip().upper()
    number = t.rstrip("KMGB")
    unit = t[len(number) :]
    if not number.isdigit() or unit not in UNITS or int(number) < 1:
        raise UsageError(f"--max-body must be a size such as 10MB or 512KB, got '{text}'")
    return int(number) * UNITS[unit]


def register(app: typer.Typer) -> None:
    app.command("serve", no_args_is_help=True)(serve)
