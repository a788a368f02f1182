"""Error kinds of dl. Raised deep down, printed once as one clear line by the CLI (see cli/__init__.py).

A user's value is quoted through `excerpt` (at most ~60 characters), and the line itself is capped
at MAX_LINE characters, so no input, however large, turns into a huge message."""

from __future__ import annotations

from typing import Any

MAX_LINE = 1000  # characters of one error line (message and hint); the longest real one is ~600
EXCERPT = 60  # characters of a user's value quoted in a message


def excerpt(value: Any, limit: int = EXCERPT) -> str:
    """`repr(value)` cut to about `limit` characters: the start, `...`, and how much was left out.
    Never builds the full repr of a huge container: the walk stops once `limit` is reached."""
    text = _short_repr(value, limit + 1)
    if len(text) <= limit:
        return text
    size = _size_note(value)
    return f"{text[: max(1, limit - 3)]}...{size}"


def _size_note(value: Any) -> str:
    if isinstance(value, (str, bytes, list, tuple, dict)):
        unit = {str: "character", bytes: "byte"}.get(type(value), "item")
        return f" ({len(value):,} {unit}{'s' if len(value) != 1 else ''})"
    return ""


def _short_repr(value: Any, limit: int, depth: int = 0) -> str:
    """A repr of at most about `limit` characters, built piece by piece (a 1 MB string or a
    million-item list costs `limit`, not its own size; deep nesting stops at 8 levels)."""
    if depth > 8:
        return "..."
    if isinstance(value, str):
        return repr(value[:limit])
    if isinstance(value, bytes):
        return repr(value[:limit])
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > 4 * limit:
        return f"<a whole number of about {int(value.bit_length() * 0.30103):,} digits>"
    if isinstance(value, (list, tuple, dict)):
        if isinstance(value, dict):
            items = (
                f"{_short_repr(k, limit, depth + 1)}: {_short_repr(v, limit, depth + 1)}"
                for k, v in value.items()
            )
            open_, close = "{", "}"
        else:
            items = (_short_repr(v, limit, depth + 1) for v in value)
            open_, close = ("[", "]") if isinstance(value, list) else ("(", ")")
        out = open_
        for i, item in enumerate(items):
            out += (", " if i else "") + item
            if len(out) > limit:
                return out
        return out + close
    try:
        text = repr(value)
    except Exception:  # a repr that fails is no reason to lose the message
        text = f"<{type(value).__name__}>"
    return text


class DLError(Exception):
    """A problem the user can fix. `str(err)` is the one line shown; `exit_code` is the process status."""

    exit_code = 2

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        line = f"{self.message} ({self.hint})" if self.hint else self.message
        if "\n" in line:  # one line, whatever a library's message held
            line = " ".join(part.strip() for part in line.splitlines() if part.strip())
        if len(line) <= MAX_LINE:
            return line
        cut = len(line) - MAX_LINE + 40
        return f"{line[: MAX_LINE - 40]}... ({cut:,} characters left out)"


class InputError(DLError):
    """Bad input data: a missing, empty, malformed or mismatched file, column or row."""


class SpecError(DLError):
    """An invalid network spec: names the layer index and field."""


class ModelSizeError(SpecError):
    """A network too large for the memory limit (dlcli/model/budget.py): names the layer."""


class ModelFileError(DLError):
    """A model file that is missing, truncated, of an unknown version or not one of ours."""


class UsageError(DLError):
    """Options that contradict each other or do not fit the data."""


class TrainingError(DLError):
    """Training could not go on (diverged loss, ...). Not an input error, so exit 1."""

    exit_code = 1


class ExportError(DLError):
    """An export that failed or did not match PyTorch within tolerance."""

    exit_code = 1
