"""The `dl` command line: one Typer module per command, combined here. Nothing heavy is imported at
module level, so `dl --help` and argument errors never load torch."""

from __future__ import annotations

import contextlib
import os
import re
import sys
from collections.abc import Iterator

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
    from dlcli.cli import build, evaluate, export, predict, serve, train, tune

    for module in (build, train, evaluate, predict, export, tune, serve):
        module.register(app)


_register()


def main(argv: list[str] | None = None) -> None:
    """Entry point: run the app; every DLError becomes one line on stderr and its exit code.

    Usage errors (a bad option value, an unknown option) are one `error:` line with exit 2 too:
    Click runs outside its standalone mode, so its multi-line usage box is never printed.
    """
    from dlcli import settings
    from dlcli.console import error_line
    from dlcli.errors import DLError

    args = list(sys.argv[1:] if argv is None else argv)
    settings.set_debug("--debug" in args)
    args = [a for a in args if a != "--debug"]
    try:
        with library_warnings(raw=settings.debug(strict=False)):
            _run(args)
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
        from dlcli.model.builder import out_of_memory

        if out_of_memory(exc):  # the machine's limit, not a bug: say so, and what to change
            command, inputs = command_inputs(args)
            where = f"`dl {command}` on {', '.join(inputs)}" if inputs else f"`dl {command}`"
            error_line(
                f"{where}: out of memory ({' '.join(str(exc).split())[:160]}); use a smaller "
                "network or --batch-size, or a machine with more memory"
            )
            sys.exit(1)
        error_line(internal_error_line(exc, args))
        sys.exit(1)


# -- the last resort ------------------------------------------------------------------------------
OUTPUT_PARAMS = frozenset({"output", "output_dir", "report", "errors"})  # written, not read
MAX_ERROR_TEXT = 300  # characters of an unexpected exception's own message kept in the line


def internal_error_line(exc: BaseException, args: list[str]) -> str:
    """The one line for an exception no DLError caught: the command and the inputs it was given
    (so the report says what to reproduce it with), then the exception, flattened to one line."""
    text = " ".join(str(exc).split())
    if len(text) > MAX_ERROR_TEXT:
        text = text[:MAX_ERROR_TEXT] + "..."
    what = f"{type(exc).__name__}: {text}" if text else type(exc).__name__
    command, inputs = command_inputs(args)
    where = f" in `dl {command}`" if command else ""
    if inputs:
        where += f" on {', '.join(inputs)}"
    return (
        f"internal error{where}: {what} (rerun with --debug for the traceback, and please "
        "report it with the command line)"
    )


def command_inputs(args: list[str]) -> tuple[str | None, list[str]]:
    """(command name, the inputs it was given): its arguments and every option value that names an
    existing file or folder, outputs left out. Parsed again by Click, leniently; on any surprise,
    the arguments that do not start with `-`."""
    words = [a for a in args if not a.startswith("-")]
    if not words:
        return None, []
    name = words[0]
    try:
        from typer.main import get_command

        group = get_command(app)
        command = group.get_command(None, name)  # type: ignore[arg-type]
        rest = args[args.index(name) + 1 :]
        ctx = command.make_context(name, rest, resilient_parsing=True)
    except Exception:
        return name, words[1:]
    inputs: list[str] = []
    for param in command.params:
        value = ctx.params.get(param.name or "")
        if value is None or param.name in OUTPUT_PARAMS or isinstance(value, bool):
            continue
        for v in value if isinstance(value, (list, tuple)) else [value]:
            if param.param_type_name == "argument" or _is_path(v):
                inputs.append(str(v))
    return name, inputs


def _is_path(value: object) -> bool:
    return isinstance(value, str) and value not in ("", "-") and os.path.exists(value)


# -- warnings from libraries ---------------------------------------------------------------------
NOISE = (  # categories with nothing for the user to do: API changes inside the libraries dl uses
    DeprecationWarning,
    PendingDeprecationWarning,
    FutureWarning,
    ImportWarning,
    ResourceWarning,
)
NOISE_NAMES = frozenset({"TracerWarning"})  # torch.jit's tracer, met while exporting
IN_DL_WORDS = (  # (pattern in a library's warning, what it means, in dl's words)
    (
        r"overflow encountered",
        "a number too large for 32-bit floats (above 3.4e38) became infinite",
    ),
    (r"invalid value encountered", "a calculation met a NaN or infinite value"),
    (r"divide by zero", "a division by zero gave an infinite value"),
    (r"empty slice|degrees of freedom", "a statistic of no values gave NaN"),
    (r"corrupt exif", "an image's EXIF block is corrupt; its orientation is ignored"),
)
LIBRARY_NAMES = {"PIL": "Pillow", "sklearn": "scikit-learn"}
MAX_WARNING = 200  # characters of a library's own message kept in the note


@contextlib.contextmanager
def library_warnings(raw: bool = False) -> Iterator[None]:
    """While a command runs, a Python warning from a library (numpy, pandas, torch, onnx, Pillow,
    ...) never reaches stderr as is: noise (deprecations, tracer chatter) is dropped and anything
    else becomes one `note:` in dl's words, once per distinct message (and none under --quiet).
    `raw` (--debug) leaves Python's own printing as it is."""
    import warnings

    with warnings.catch_warnings():
        if raw:
            yield
            return
        seen: set[str] = set()

        def show(message, category, filename, lineno, file=None, line=None):
            text = warning_note(message, category, filename)
            if text is not None and text not in seen:
                from rich.markup import escape

                from dlcli.console import note

                seen.add(text)
                note(escape(text))  # a library's "[...]" is text, not rich markup

        # every distinct warning reaches `show`, which deduplicates by message
        warnings.simplefilter("default")
        warnings.showwarning = show
        yield


def warning_note(message: object, category: type, filename: str) -> str | None:
    """The note for one library warning, None for noise: `pandas: a number too large ...`; the
    library is named when the warning comes from an installed package (numpy's own warnings are
    raised from the caller's line, which may be dl's)."""
    if issubclass(category, NOISE) or category.__name__ in NOISE_NAMES:
        return None
    text = " ".join(str(message).split())[:MAX_WARNING] or category.__name__
    found = re.search(r"site-packages[/\\]([A-Za-z0-9_]+)", filename or "")
    library = LIBRARY_NAMES.get(found.group(1), found.group(1)) if found else ""
    for pattern, words in IN_DL_WORDS:
        if re.search(pattern, text, re.IGNORECASE):
            return f"{library}: {words} ({text})" if library else f"{words} ({text})"
    return f"{library or 'a library'} warned: {text}"


def _run(args: list[str]) -> None:
    """Run the app with Click's own error printing off; its usage errors become one line."""
    from typer.main import get_command

    try:  # typer >= 0.26 bundles its own Click; older releases use click itself
        from typer._click.exceptions import ClickException, NoArgsIsHelpError
    except ImportError:  # pragma: no cover - depends on the installed typer
        from click.exceptions import ClickException, NoArgsIsHelpError

    from dlcli.console import error_line

    try:
        code = get_command(app).main(args=args, prog_name="dl", standalone_mode=False)
    except NoArgsIsHelpError as exc:  # `dl` or `dl train` alone: typer printed the help already
        sys.exit(exc.exit_code)
    except typer.Abort:
        error_line("aborted")
        sys.exit(1)
    except ClickException as exc:
        error_line(_usage_message(exc, args))
        sys.exit(exc.exit_code)
    if isinstance(code, int) and code:  # a typer.Exit(code) outside standalone mode returns it
        sys.exit(code)


def _usage_message(exc: Exception, args: list[str]) -> str:
    """`--epochs 0: must be at least 1`: the option, the value given, what it must be."""
    param = getattr(exc, "param", None)
    errors = getattr(exc.__cause__, "errors", None)
    if param is None or not callable(errors):
        msg = exc.format_message().strip()  # type: ignore[attr-defined]
        return (msg[:1].lower() + msg[1:]).removesuffix(".")
    opts = [o for o in getattr(param, "opts", []) if o.startswith("--")]
    name = opts[0] if opts else getattr(param, "human_readable_name", param.name)
    first = (errors() or [{}])[0]
    value = first.get("input", _given(args, param))
    limits = first.get("ctx") or {}
    kind = first.get("type", "")
    if _is_nan(value):
        what = "not a number"
    elif kind in _LIMITS:
        limit = limits.get(_LIMIT_KEYS[kind], "")
        if isinstance(limit, float) and limit.is_integer():
            limit = int(limit)
        what = f"{_LIMITS[kind]} {limit}".strip()
    elif kind.startswith("int_"):
        what = "must be a whole number"
    elif kind.startswith("float_"):
        what = "must be a number"
    else:
        msg = str(first.get("msg") or exc.format_message())  # type: ignore[attr-defined]
        what = msg[:1].lower() + msg[1:]
    return f"{name} {value}: {what}" if value is not None else f"{name}: {what}"


_LIMITS = {
    "greater_than_equal": "must be at least",
    "less_than_equal": "must be at most",
    "greater_than": "must be more than",
    "less_than": "must be less than",
}


_LIMIT_KEYS = {
    "greater_than_equal": "ge",
    "less_than_equal": "le",
    "greater_than": "gt",
    "less_than": "lt",
}


def _is_nan(value: object) -> bool:
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return False
    return number != number


def _given(args: list[str], param: object) -> str | None:
    """The value given on the command line for an option (`--lr nan` or `--lr=nan`)."""
    opts = getattr(param, "opts", [])
    for i, arg in enumerate(args):
        if arg in opts and i + 1 < len(args):
            return args[i + 1]
        for opt in opts:
            if arg.startswith(opt + "="):
                return arg[len(opt) + 1 :]
    return None


def _stdout_closed() -> bool:
    """Click met a broken stdout pipe: it swaps in its PacifyFlushWrapper before exiting 1."""
    return type(sys.stdout).__name__ == "PacifyFlushWrapper"


def _quiet_stdout() -> None:
    """The reader of stdout went away (`dl predict ... | head`): finish as a pipeline stage
    should, with exit 0 and no complaint when Python flushes stdout at exit."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
