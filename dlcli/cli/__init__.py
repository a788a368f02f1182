"""The `dl` command line: one Typer module per command, combined here. Nothing heavy is imported at
module level, so `dl --help` and argument errors never load torch."""

from __future__ import annotations

import os
import sys

import typer

from dlcli import __version__

app = typer.Typer(
    name="dl",
    help="Train, evaluate, predict with and export deep learning models from the command line.",
    no_args_is_help=True,
    add_completion=False,
    rich_markup_mode="rich",
    context_settings={"help_option_names": ["-h", "--help"]},
    pretty_exceptions_enable=False,
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"dl {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Show the version and exit."
    ),
    debug: bool = typer.Option(
        False, "--debug", help="Show full tracebacks on errors (also accepted after the command)."
    ),
) -> None:
    """dl: deep learning from the command line. Run `dl COMMAND --help` for a command's options."""


def _register() -> None:
    from dlcli.cli import build, evaluate, export, predict, train

    for module in (build, train, evaluate, predict, export):
        module.register(app)


_register()


def main(argv: list[str] | None = None) -> None:
    """Entry point: run the app; every DLError becomes one line on stderr and its exit code.

    Typer (standalone mode) prints usage errors itself with exit code 2.
    """
    from dlcli import settings
    from dlcli.console import error_line
    from dlcli.errors import DLError

    args = list(sys.argv[1:] if argv is None else argv)
    settings.set_debug("--debug" in args)
    args = [a for a in args if a != "--debug"]
    try:
        app(args=args, prog_name="dl")
    except SystemExit as exc:
        if exc.code == 1 and _stdout_closed():  # Click's own handling of EPIPE exits 1
            _quiet_stdout()
            sys.exit(0)
        raise
    except DLError as exc:
        if settings.debug(strict=False):
            import traceback

            traceback.print_exc()
        error_line(str(exc))
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        error_line("interrupted")
        sys.exit(130)
    except BrokenPipeError:
        # the reader of stdout went away (e.g. `| head`): not an error worth a traceback
        _quiet_stdout()
        sys.exit(0)
    except Exception as exc:
        if settings.debug(strict=False):
            raise
        error_line(
            f"internal error: {type(exc).__name__}: {exc} (rerun with --debug for the traceback, and please report it)"
        )
        sys.exit(1)


def _stdout_closed() -> bool:
    """Click met a broken stdout pipe: it swaps in its PacifyFlushWrapper before exiting 1."""
    return type(sys.stdout).__name__ == "PacifyFlushWrapper"


def _quiet_stdout() -> None:
    """The reader of stdout went away (`dl predict ... | head`): finish as a pipeline stage
    should, with exit 0 and no complaint when Python flushes stdout at exit."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
