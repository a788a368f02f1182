"""Atomic file writing: every file dl writes goes through here, so a crash never leaves half a file."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Collection, Iterable, Iterator
from pathlib import Path


@contextlib.contextmanager
def atomic_path(target: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path beside `target`; on success it replaces `target` in one step.

    On any exception (Ctrl-C included) the temporary file is removed and `target` is untouched.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.chmod(tmp_path, 0o666 & ~_umask())  # mkstemp makes 0600; give the file the usual mode
        os.replace(tmp_path, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp_path.unlink()
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_text(target: str | os.PathLike[str], text: str) -> None:
    """Write `text` to `target` atomically."""
    with atomic_path(target) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_bytes(target: str | os.PathLike[str], data: bytes) -> None:
    """Write `data` to `target` atomically."""
    with atomic_path(target) as tmp:
        tmp.write_bytes(data)


def refuse_overwriting_inputs(
    flag: str,
    output: str | os.PathLike[str] | None,
    inputs: Iterable[str | os.PathLike[str] | None],
    *,
    folder: bool = False,
    data_suffixes: Collection[str] = (),
    hint: str | None = None,
) -> None:
    """Raise UsageError when `output` (the path given to `flag`) is one of `inputs`.

    Paths are compared by the file itself (st_dev, st_ino), so a symlink or a hard link to an input
    counts as that input. With `folder=True` (a folder dl writes files into) an output that lies
    inside an input folder is refused too: the files written there would join the data; so is a file
    output inside an input folder whose suffix is in `data_suffixes` (one the folder's reader picks
    up, e.g. an image among the images predicted). Inputs that are None, `-` (stdin) or do not exist
    are skipped; an output that does not exist yet clobbers nothing unless it lies inside an input
    folder. Call it before any work is done.
    """
    from dlcli.errors import UsageError

    if not output or output == "-":
        return
    out = Path(output)
    named = [Path(p) for p in inputs if p and p != "-"]
    ids = {}
    for path in named:
        key = _file_id(path)
        if key is not None:
            ids.setdefault(key, path)
    hint = hint or f"pick another {flag}"
    hit = ids.get(_file_id(out))
    if hit is not None:
        raise UsageError(f"{flag} {out}: is the input {hit}; the output would overwrite it", hint)
    if not folder and out.suffix.lower() not in data_suffixes:
        return
    folders = {key: path for key, path in ids.items() if path.is_dir()}
    for parent in out.absolute().parents:
        hit = folders.get(_file_id(parent))
        if hit is not None:
            raise UsageError(
                f"{flag} {out}: lies inside the input folder {hit}; the files written there "
                "would join the data",
                hint,
            )


def check_writable(
    flag: str, output: str | os.PathLike[str] | None, *, folder: bool = False
) -> None:
    """Raise UsageError unless dl can write `output` (the path given to `flag`): a file, or with
    `folder=True` a folder dl writes files into. Call it before any work, so a training is never
    lost to an output that cannot be written at its end.

    The check is the write itself: a temporary file is created and removed in the folder the output
    goes to (or, when that folder does not exist yet, in its nearest existing parent, where it would
    be created), as root or on a read-only mount as much as with plain permissions. A file output
    that is an existing folder, and a parent that is a file, are refused too. None and `-` (stdout)
    pass.
    """
    from dlcli.errors import UsageError

    if not output or output == "-":
        return
    out = Path(output)
    hint = f"nothing was done; pick a {flag} you can write to"
    if not folder and out.is_dir():
        raise UsageError(f"{flag} {out}: is a folder; name a file", hint)
    where = out if folder else out.parent
    while not where.exists() and where.parent != where:  # the folder atomic_path would create
        where = where.parent
    if not where.is_dir():
        raise UsageError(f"{flag} {out}: {where} is a file, not a folder", hint)
    try:
        fd, tmp = tempfile.mkstemp(prefix=".dl-write-check.", suffix=".tmp", dir=where)
        os.close(fd)
        os.unlink(tmp)
    except OSError as exc:
        reason = (exc.strerror or type(exc).__name__).lower()
        raise UsageError(f"{flag} {out}: cannot create files in {where}: {reason}", hint) from None


def _file_id(path: Path) -> tuple[int, int] | None:
    """(st_dev, st_ino) of what `path` names (symlinks followed), None when it does not exist."""
    try:
        st = path.stat()
    except (OSError, ValueError):
        return None
    return st.st_dev, st.st_ino
