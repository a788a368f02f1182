"""The one place dl talks to the user: a rich Console on stderr, plain text when stderr is no terminal.

stdout is reserved for data (predictions, --json results). NO_COLOR is honoured by rich itself.
"""

from __future__ import annotations

import os
import sys
from functools import lru_cache
from typing import Any


@lru_cache(maxsize=1)
def console() -> Any:
    """The shared stderr Console (created on first use, so importing this module stays cheap)."""
    from rich.console import Console

    # off a terminal (logs, CI) rich would wrap at 80 columns: give lines room instead
    width = None if sys.stderr.isatty() else 160
    return Console(
        stderr=True, highlight=False, no_color="NO_COLOR" in os.environ or None, width=width
    )


def is_interactive() -> bool:
    """True when stderr is a terminal: live progress bars; else plain one-line-per-epoch output."""
    return sys.stderr.isatty() and os.environ.get("TERM") != "dumb"


def info(message: str) -> None:
    """A log line on stderr (suppressed by --quiet through `set_quiet`)."""
    if not _state["quiet"]:
        console().print(message, markup=True, soft_wrap=True)


def note(message: str) -> None:
    """A note the user should see even in plain mode (e.g. a column that was ignored)."""
    if not _state["quiet"]:
        console().print(f"[yellow]note:[/] {message}", soft_wrap=True)


def error_line(message: str) -> None:
    """Print the one error line. Plain `sys.stderr` so it works before rich is importable."""
    prefix = "error: "
    if sys.stderr.isatty() and "NO_COLOR" not in os.environ:
        prefix = "\x1b[1;31merror:\x1b[0m "
    sys.stderr.write(prefix + message + "\n")
    sys.stderr.flush()


_state = {"quiet": False}


def set_quiet(quiet: bool) -> None:
    """Silence info() and note() for this process (the --quiet flag)."""
    _state["quiet"] = quiet


def quiet() -> bool:
    return _state["quiet"]
