"""The image decode cache's file: one per (folder, size, channels, resize policy), holding a
folder's decoded uint8 pixels with each file's name, size and mtime, and the unreadable files.

Layout (FORMAT_VERSION 2), a dict of plain tensors and strings written by `torch.save` and read
by `torch.load(weights_only=True, mmap=True)`, so loading never runs pickled code and the pixels
are paged in from the file only as they are read:

- `version` int, `folder` str, `resize` str (policy and interpolation)
- `files` str: the relative posix paths joined by NUL (no path holds one). One string, where
  version 1's list of N strings cost the weights-only unpickler ~0.1-0.3 s for 10,000 files
- `stats` (N, 2) int64: size in bytes and mtime in ns of each file when it was decoded
- `bad_index` (K,) int64 and `bad_reasons` str (newline-joined): the unreadable files and why
- `pixels` (N, C, S, S) uint8: rows of unreadable files are zero

A file of another version or layout (version 1 included) is ignored and rewritten in place: the
file name's digest does not depend on the format version.

Beside it, `probe-<digest>.json` remembers the shape probe's answer for a sample of files (by
their paths, sizes and mtimes), so a second run does not open those images again.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from dlcli import cache_limit, settings
from dlcli.console import note
from dlcli.fileio import atomic_path, write_text

KEY_VERSION = 1  # part of the file name: bump only when the key itself changes
FORMAT_VERSION = 2  # the layout above; a file of another version is rebuilt
SEP = "\0"  # between file names


@dataclass
class CacheFile:
    """What a cache file holds (pixels memory-mapped, copy-on-write)."""

    files: str  # relative paths joined by SEP (`join_names`)
    stats: torch.Tensor  # (N, 2) int64: size, mtime_ns
    bad: dict[int, str]  # index -> why the file could not be read
    pixels: torch.Tensor  # (N, C, S, S) uint8

    def names(self) -> list[str]:
        return split_names(self.files)


def join_names(files: list[str]) -> str:
    return SEP.join(files)


def split_names(joined: str) -> list[str]:
    return joined.split(SEP) if joined else []


def cache_dir() -> Path:
    return settings.get().cache_dir


def cache_file(folder: Path, size: int, channels: int, policy: str) -> Path:
    """One cache file per (folder, size, channels, resize `policy`)."""
    key = f"{KEY_VERSION}|{folder.resolve()}|{size}|{channels}|{policy}"
    digest = hashlib.sha256(key.encode("utf-8")).hexdigest()[:20]
    return cache_dir() / f"{folder.resolve().name or 'root'}-{size}x{channels}-{digest}.pt"


def load(file: Path, size: int, channels: int) -> CacheFile | None:
    """The cache file's contents, or None when absent, unreadable, or of another version or
    layout (never fatal: the caller decodes and rewrites it)."""
    if not file.is_file():
        return None
    try:
        data = torch.load(file, map_location="cpu", weights_only=True, mmap=True)
        if not isinstance(data, dict) or data.get("version") != FORMAT_VERSION:
            return None
        files, stats, pixels = data["files"], data["stats"], data["pixels"]
        index, reasons = data["bad_index"], data["bad_reasons"]
        n = files.count(SEP) + 1 if files else 0
        why = reasons.split("\n") if len(index) else []
        ok = (
            isinstance(files, str)
            and pixels.dtype == torch.uint8
            and tuple(pixels.shape) == (n, channels, size, size)
            and stats.dtype == torch.int64
            and tuple(stats.shape) == (n, 2)
            and index.dtype == torch.int64
            and index.dim() == 1
            and len(why) == len(index)
            and (len(index) == 0 or 0 <= int(index.min()) <= int(index.max()) < n)
        )
        bad = dict(zip(index.tolist(), why, strict=True)) if ok else {}
        if ok:
            cache_limit.mark_used(file)
        return CacheFile(files, stats, bad, pixels) if ok else None
    except Exception:  # a corrupt or foreign cache file is never fatal: it is rebuilt
        return None


def save(
    file: Path,
    folder: Path,
    policy: str,
    files: list[str],
    stats: torch.Tensor,
    bad: dict[int, str],
    pixels: torch.Tensor,
) -> None:
    """Write the cache file atomically; a failure (disk full, read-only) is a note, not an error."""
    index = sorted(bad)
    data = {
        "version": FORMAT_VERSION,
        "folder": str(folder.resolve()),
        "resize": policy,
        "files": join_names(files),
        "stats": stats,
        "bad_index": torch.tensor(index, dtype=torch.int64),
        "bad_reasons": "\n".join(" ".join(bad[i].splitlines()) for i in index),
        "pixels": pixels,
    }
    try:
        with atomic_path(file) as tmp:
            torch.save(data, tmp)
    except OSError as exc:
        note(f"could not write the image cache {file}: {exc.strerror or exc}")
        return
    cache_limit.trim(keep=file)


def file_stats(folder: Path, files: list[str]) -> torch.Tensor:
    """(N, 2) int64: size in bytes and mtime in ns of each file (-1, -1 for one gone since it was
    listed: decoding reports it)."""
    base = os.path.join(folder, "")
    paths = [base + rel for rel in files]
    try:
        rows = [(st.st_size, st.st_mtime_ns) for st in map(os.stat, paths)]
    except OSError:  # rare: per file, so one missing file does not hide the others' stats
        rows = [_stat_row(p) for p in paths]
    return torch.tensor(rows, dtype=torch.int64).reshape(len(files), 2)


def _stat_row(path: str) -> tuple[int, int]:
    try:
        st = os.stat(path)
    except OSError:
        return (-1, -1)
    return (st.st_size, st.st_mtime_ns)


def remembered_probe(
    paths: list[str], check_gray: bool, probe: Callable[[list[str], bool], tuple[list[int], bool]]
) -> tuple[list[int], bool]:
    """`probe(paths, check_gray)` (longer sides, grayscale-like), remembered in a small JSON file
    per (paths, check_gray) together with each path's size and mtime: while none of the probed
    files changed, the answer is read back (~200 os.stat) instead of opening ~200 images."""
    key = SEP.join([str(check_gray), *map(os.path.abspath, paths)])
    file = cache_dir() / f"probe-{hashlib.sha256(key.encode('utf-8')).hexdigest()[:20]}.json"
    stats = [list(_stat_row(p)) for p in paths]
    with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
        got = json.loads(file.read_text(encoding="utf-8"))
        if got["stats"] == stats:
            cache_limit.mark_used(file)
            return [int(s) for s in got["sides"]], bool(got["gray"])
    sides, gray = probe(paths, check_gray)
    with contextlib.suppress(OSError):  # the cache folder not writable: probe again next time
        write_text(file, json.dumps({"stats": stats, "sides": sides, "gray": gray}))
    return sides, gray
