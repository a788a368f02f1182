"""`-` (stdin) in another format than CSV, named by --input-format: the stream is spooled into a
temporary file with that format's suffix, which the format's reader then reads like any file
(Parquet and Feather keep their footer or schema at the end, so a whole stream is needed anyway).

At most STDIN_MAX_BYTES are spooled (a longer stream is one line); messages name `<stdin>`, not the
temporary file, which is removed when the command ends. CSV on stdin still streams without a copy
where a command streams it (predict, evaluate); `dl train` reads a whole file, so it spools CSV too.
"""

from __future__ import annotations

import contextlib
import shutil
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from dlcli.data.readers import FORMATS
from dlcli.errors import DLError, InputError, UsageError

STDIN_MAX_BYTES = 8 << 30  # spooled to disk, not held in memory
CHUNK = 1 << 20


def check_input_format(fmt: str | None, paths: list[str | None]) -> None:
    """--input-format names a format, and there is a '-' for it to describe (one line otherwise)."""
    if fmt is None:
        return
    if fmt.lower() not in FORMATS:
        raise UsageError(f"--input-format must be one of {', '.join(FORMATS)}, got '{fmt}'")
    if "-" not in paths:
        raise UsageError(
            f"--input-format {fmt} describes stdin ('-'); files are read by their suffix",
            "pass - as the data path, or drop --input-format",
        )


def _copy(src: BinaryIO, dest: Path, fmt: str, limit: int) -> None:
    total = 0
    with open(dest, "wb") as out:
        while chunk := src.read(CHUNK):
            total += len(chunk)
            if total > limit:
                raise InputError(
                    f"<stdin>: more than {limit / (1 << 30):.0f} GiB of {fmt}; dl copies stdin "
                    "to a temporary file to read it",
                    "save it to a file and pass its path",
                )
            out.write(chunk)


@contextlib.contextmanager
def spooled(
    paths: list[str], fmt: str | None, whole: bool = False, limit: int = STDIN_MAX_BYTES
) -> Iterator[list[str]]:
    """`paths` with '-' replaced by a temporary file of stdin's bytes when `fmt` is not CSV (or
    with `whole`, for commands that read a whole file); unchanged otherwise. DLErrors raised
    inside name '<stdin>' instead of the temporary file."""
    fmt = (fmt or "csv").lower()
    if "-" not in paths or (fmt == "csv" and not whole):
        yield paths
        return
    folder = tempfile.mkdtemp(prefix="dl-stdin-")
    tmp = Path(folder) / f"stdin{FORMATS[fmt]}"
    try:
        _copy(sys.stdin.buffer, tmp, fmt, limit)
        try:
            yield [str(tmp) if p == "-" else p for p in paths]
        except DLError as exc:
            if str(tmp) in exc.message:
                exc.message = exc.message.replace(str(tmp), "<stdin>")
                exc.args = (exc.message,)
            raise
    finally:
        shutil.rmtree(folder, ignore_errors=True)
