"""The size bound of dl's cache folder (`DL_CACHE_DIR`: decoded images, shape probes, frozen
features): after each write the least recently used files go until the folder holds at most
`DL_CACHE_MAX_GB`. A cache file that is read is marked used (its modification time set to now),
so a data set in use stays while older ones go. Never fatal: a file that cannot be removed or
stat'ed is skipped, and the file just written is always kept, even when it alone is over the bound.

Removing a file another process has memory-mapped is safe on POSIX systems: that process keeps
its pages until it closes the file; the next run decodes again.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

from dlcli import settings
from dlcli.console import info

SUFFIXES = (".pt", ".json")  # what dl writes there; other files (the user's) are never touched


def mark_used(file: Path) -> None:
    """Set `file`'s modification time to now: it was read, so it is the last to go."""
    with contextlib.suppress(OSError):
        os.utime(file)


def trim(keep: Path | None = None, limit_bytes: int | None = None) -> list[Path]:
    """Remove dl's least recently used cache files until the cache folder holds at most
    `limit_bytes` (default: DL_CACHE_MAX_GB); `keep` is never removed. Returns what was removed."""
    s = settings.get()
    limit = int(s.cache_max_gb * 1024**3) if limit_bytes is None else limit_bytes
    entries = []
    for root, _, names in os.walk(s.cache_dir):
        for name in names:
            if not name.endswith(SUFFIXES) or name.startswith("."):  # .x.tmp: a write under way
                continue
            path = Path(root) / name
            with contextlib.suppress(OSError):
                st = path.stat()
                entries.append((st.st_mtime_ns, st.st_size, path))
    total = sum(size for _, size, _ in entries)
    removed: list[Path] = []
    freed = 0
    kept = keep.resolve() if keep is not None else None
    for _, size, path in sorted(entries):  # oldest first
        if total <= limit:
            break
        if kept is not None and path.resolve() == kept:
            continue
        try:
            path.unlink()
        except OSError:
            continue
        total -= size
        freed += size
        removed.append(path)
    if removed:
        info(
            f"cache: removed {len(removed)} least recently used file(s) ({freed / 1024**2:,.0f} MB)"
            f" from {s.cache_dir} to stay under DL_CACHE_MAX_GB={s.cache_max_gb:g}"
        )
    return removed
