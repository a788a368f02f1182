"""Compressed table files (`.csv.gz`, `.csv.zst`, `.csv.bz2`): the codec of a path's last suffix and
a decompressing byte stream. pyarrow's own CSV reads decompress by suffix; Python-side reads (the
header, the line of an error, the sample) go through `open_bytes` and `open_text`."""

from __future__ import annotations

import contextlib
import io
from collections.abc import Iterator
from typing import IO, Any, BinaryIO

from dlcli.data.readers import excerpt
from dlcli.errors import InputError

CODECS = {".gz": "gzip", ".bz2": "bz2", ".zst": "zstd"}  # last suffix -> pyarrow codec name


def codec_of(path: str) -> str | None:
    name = str(path).lower()
    return next((c for s, c in CODECS.items() if name.endswith(s)), None)


class _Native(io.RawIOBase):
    """A pyarrow input stream as a Python raw stream (readline, TextIOWrapper)."""

    def __init__(self, stream: Any) -> None:
        super().__init__()
        self._stream = stream

    def readable(self) -> bool:
        return True

    def readinto(self, buf: Any) -> int:
        data = self._stream.read(len(buf))
        buf[: len(data)] = data
        return len(data)

    def close(self) -> None:
        self._stream.close()
        super().close()


def open_bytes(path: str) -> BinaryIO:
    """The file's bytes, decompressed when its suffix names a codec."""
    codec = codec_of(path)
    if codec is None:
        return open(path, "rb")
    import pyarrow as pa

    return io.BufferedReader(_Native(pa.input_stream(path, compression=codec)), 1 << 20)


def open_text(path: str, **kwargs: Any) -> IO[str]:
    return io.TextIOWrapper(open_bytes(path), **kwargs)


def decompress_error(exc: BaseException, path: str) -> InputError | None:
    """One line for a file whose compressed bytes are damaged, else None."""
    codec = codec_of(path)
    msg = str(exc)
    hints = ("inflate", "decompress", "zstd", "bz2", "BZ2", "gzip", "compressed", "ZSTD", "header")
    if codec is None or not any(h in msg for h in hints):
        return None
    return InputError(
        f"{path}: cannot decompress as {codec}: {excerpt(msg.strip(), 120)}",
        "is the file truncated, or compressed with another tool than its suffix says?",
    )


@contextlib.contextmanager
def damaged(path: str) -> Iterator[None]:
    """OS errors of damaged compressed bytes inside become `decompress_error`'s line."""
    error = None
    try:
        yield
    except OSError as exc:
        error = decompress_error(exc, path)
        if error is None:
            raise
    if error is not None:
        raise error
