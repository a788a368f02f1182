"""The cache folder's size bound (DL_CACHE_MAX_GB): least recently used files go first, the file
just written and the user's own files stay, a read marks a file used."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from test_images import cache_dir, make_folder, prepare  # noqa: F401 (cache_dir: autouse fixture)

from dlcli import cache_limit, settings


def _file(folder: Path, name: str, size: int, age: int) -> Path:
    path = folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"x" * size)
    stamp = 1_700_000_000 + age
    os.utime(path, (stamp, stamp))
    return path


def test_oldest_files_go_first_until_under_the_bound() -> None:
    root = settings.get().cache_dir
    old = _file(root, "a.pt", 400, 1)
    mid = _file(root, "features/b.pt", 400, 2)
    new = _file(root, "probe-c.json", 400, 3)
    removed = cache_limit.trim(limit_bytes=900)
    assert removed == [old]
    assert not old.exists() and mid.exists() and new.exists()
    assert cache_limit.trim(limit_bytes=100) == [mid, new]


def test_the_kept_file_and_foreign_files_stay() -> None:
    root = settings.get().cache_dir
    kept = _file(root, "a.pt", 500, 1)  # the oldest, but just written by this run
    theirs = _file(root, "notes.txt", 500, 0)  # not dl's
    writing = _file(root, ".b.pt.abc.tmp", 500, 0)  # an atomic write under way
    other = _file(root, "c.pt", 500, 2)
    assert cache_limit.trim(keep=kept, limit_bytes=0) == [other]
    assert kept.exists() and theirs.exists() and writing.exists()


def test_a_read_file_is_the_last_to_go() -> None:
    root = settings.get().cache_dir
    first = _file(root, "a.pt", 500, 1)
    second = _file(root, "b.pt", 500, 2)
    cache_limit.mark_used(first)
    assert cache_limit.trim(limit_bytes=600) == [second]


def test_the_image_cache_keeps_to_the_bound(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two folders decoded under a bound that holds one cache file: the older one goes; a warm
    run of the newer one reads its file (and does not remove it)."""
    a = make_folder(tmp_path / "a", {"x": 6, "y": 6})
    b = make_folder(tmp_path / "b", {"x": 6, "y": 6})
    root = settings.get().cache_dir
    prepare(a)
    (file_a,) = [p for p in root.glob("a-*.pt")]
    size = file_a.stat().st_size
    monkeypatch.setenv("DL_CACHE_MAX_GB", str(1.5 * size / 1024**3))
    settings.reload()
    prepare(b)
    assert not file_a.exists()
    (file_b,) = [p for p in root.glob("b-*.pt")]
    assert prepare(b).info["cached"] == 12 and file_b.exists()
