"""Error kinds of dl. Raised deep down, printed once as one clear line by the CLI (see cli/__init__.py)."""

from __future__ import annotations


class DLError(Exception):
    """A problem the user can fix. `str(err)` is the one line shown; `exit_code` is the process status."""

    exit_code = 2

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return f"{self.message} ({self.hint})" if self.hint else self.message


class InputError(DLError):
    """Bad input data: a missing, empty, malformed or mismatched file, column or row."""


class SpecError(DLError):
    """An invalid network spec: names the layer index and field."""


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
