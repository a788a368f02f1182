"""Image files -> one uint8 tensor (N, C, S, S): finding, probing and decoding images with Pillow,
in parallel threads, with an on-disk cache.

Every image goes through `decode_image` (image_decode.py): first frame, EXIF orientation, any mode
to 8 bits, resize of the shorter side to S and a center crop, transparency composited on white, then
L or RGB. A folder's decoded tensor is cached per (folder, S, channels, resize policy) in one file
(image_store.py); on the next run only new or changed files (by size and mtime) are decoded again,
and an unchanged folder's pixels are used straight from the memory-mapped file.
"""

from __future__ import annotations

import contextlib
import math
import os
import statistics
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from dlcli.console import info, is_interactive, quiet
from dlcli.data import image_store
from dlcli.data.image_decode import IMAGE_EXTENSIONS as IMAGE_EXTENSIONS
from dlcli.data.image_decode import BadImage, decode_image, pixel_limit, probe_image
from dlcli.data.image_decode import is_hidden as is_hidden
from dlcli.data.image_decode import no_images as no_images
from dlcli.data.image_decode import note_skipped as note_skipped

RESIZE_POLICY = "shorter-side+center-crop"
INTERPOLATION = "bilinear"
POLICY = f"{RESIZE_POLICY}|{INTERPOLATION}"  # part of the cache key: another policy, another file
CHUNK = 64  # images per task handed to a decoding thread
PROBE_SAMPLE = 200  # images looked at to choose the default size and channel count


# -- finding images -------------------------------------------------------------------------
def walk_images(folder: Path) -> tuple[list[str], int, Counter]:
    """Image files under `folder`, recursively, sorted, as posix paths relative to `folder`
    -> (files, hidden entries skipped, {extension: count} of other files skipped)."""
    found, hidden, other = [], 0, Counter()
    top = len(str(folder))
    for dirpath, dirnames, filenames in os.walk(folder):
        sub = dirpath[top:].lstrip(os.sep).replace(os.sep, "/")
        keep = sorted(d for d in dirnames if not is_hidden(d))
        hidden += len(dirnames) - len(keep)
        dirnames[:] = keep
        prefix = f"{sub}/" if sub else ""
        for name in sorted(filenames):
            if is_hidden(name):
                hidden += 1
                continue
            dot = name.rfind(".")  # > 0: hidden names (leading dot) are out already
            ext = name[dot:].lower() if dot > 0 else ""  # = os.path.splitext(name)[1].lower()
            if ext in IMAGE_EXTENSIONS:
                found.append(prefix + name)
            else:
                other[ext or "(no extension)"] += 1
    return found, hidden, other


def probe_sample(paths: Sequence[str], check_gray: bool) -> tuple[list[int], bool]:
    """(longer sides, all grayscale-like) over at most PROBE_SAMPLE images spread over `paths`."""
    sides, gray = [], True
    with pixel_limit():
        for path in paths[:: max(1, math.ceil(len(paths) / PROBE_SAMPLE))]:
            got = probe_image(path, check_gray=gray and check_gray)
            if got is not None:
                sides.append(got[0])
                gray = gray and got[1]
    return sides, gray


def default_size(sides: list[int]) -> int:
    """Median longer side, rounded to a multiple of 8, clamped to [16, 128] (32 with no sample)."""
    if not sides:
        return 32
    return int(min(128, max(16, round(statistics.median(sides) / 8) * 8)))


# -- many images -----------------------------------------------------------------------------
def decode_workers() -> int:
    """Threads for decoding: Pillow releases the GIL while decoding and resizing."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:
        cores = os.cpu_count() or 1
    return max(1, min(cores, 16))


def _decode_into(
    out: np.ndarray, paths: Sequence[str], idx: range, size: int, channels: int, gate: Any
) -> dict[int, str]:
    """Decode paths[idx] into out[idx] (out: (N, C, S, S) uint8); returns {index: reason} of failures."""
    bad = {}
    for i in idx:
        try:
            out[i] = decode_image(paths[i], size, channels, gate)
        except BadImage as exc:
            bad[i] = str(exc)
    return bad


def decode_files(
    paths: Sequence[str], size: int, channels: int, out: np.ndarray | None = None
) -> tuple[np.ndarray, dict[int, str]]:
    """Decode all `paths` into (N, C, S, S) uint8 (rows of unreadable files stay zero), in
    parallel, with a progress bar on a terminal. Returns (pixels, {index: reason})."""
    n = len(paths)
    if out is None:
        out = np.zeros((n, channels, size, size), dtype=np.uint8)
    workers = decode_workers()
    step = max(1, min(CHUNK, math.ceil(n / (4 * workers))))  # small chunks balance big images
    chunks = [range(i, min(i + step, n)) for i in range(0, n, step)]
    bad: dict[int, str] = {}
    gate = threading.BoundedSemaphore(2)
    with pixel_limit(), _progress(n) as advance, ThreadPoolExecutor(workers) as pool:
        jobs = {pool.submit(_decode_into, out, paths, c, size, channels, gate): c for c in chunks}
        try:
            for job in as_completed(jobs):
                bad.update(job.result())
                advance(len(jobs[job]))
        except BaseException:  # Ctrl-C: do not wait for the chunks not yet started
            pool.shutdown(wait=False, cancel_futures=True)
            raise
    return out, bad


@contextlib.contextmanager
def _progress(total: int) -> Iterator[Callable[[int], None]]:
    """A transient rich bar on an interactive stderr for big jobs; else a no-op."""
    if total < 500 or not is_interactive() or quiet():
        yield lambda k: None
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    from dlcli.console import console

    columns = (TextColumn("decoding images"), BarColumn(), MofNCompleteColumn())
    bar = Progress(*columns, console=console(), transient=True)
    task = bar.add_task("decode", total=total)
    with bar:
        yield lambda k: bar.advance(task, k)


# -- the on-disk cache -----------------------------------------------------------------------
@dataclass
class Decoded:
    """A folder's images as one tensor, with what was decoded and what came from the cache."""

    pixels: torch.Tensor  # (N, C, S, S) uint8; rows of unreadable files are zero; may be the
    # cache file's copy-on-write memory map: read it, copy what is kept
    bad: dict[int, str] = field(default_factory=dict)  # index -> why it could not be read
    decoded: int = 0
    cached: int = 0
    seconds: float = 0.0


def _take_cached(
    data: image_store.CacheFile, files: list[str], stats: torch.Tensor, got: Decoded
) -> list[int]:
    """Copy unchanged files' pixels from the cache into `got`; return the indices still to decode."""
    where = {rel: j for j, rel in enumerate(data.names())}
    pairs = [(i, where[rel]) for i, rel in enumerate(files) if rel in where]
    dst, src = torch.tensor(pairs, dtype=torch.int64).reshape(-1, 2).unbind(1)
    same = (data.stats.index_select(0, src) == stats.index_select(0, dst)).all(1)  # size, mtime
    dst, src = dst[same], src[same]
    got.pixels.index_copy_(0, dst, data.pixels.index_select(0, src))
    back = dict(zip(src.tolist(), dst.tolist(), strict=True))
    got.bad.update({back[j]: why for j, why in data.bad.items() if j in back})
    got.cached = len(dst)
    todo = torch.ones(len(files), dtype=torch.bool)
    todo[dst] = False
    return todo.nonzero().squeeze(1).tolist()


def decode_folder(folder: Path, files: list[str], size: int, channels: int) -> Decoded:
    """Images `files` (paths relative to `folder`) -> Decoded, reusing the folder's cache."""
    t0 = time.perf_counter()
    stats = image_store.file_stats(folder, files)
    file = image_store.cache_file(folder, size, channels, POLICY)
    data = image_store.load(file, size, channels)
    if (
        data is not None
        and data.files == image_store.join_names(files)
        and torch.equal(data.stats, stats)
    ):
        # the usual second run: nothing changed, the memory-mapped cache as it is (the caller's
        # split or selection makes the only copy)
        got = Decoded(data.pixels, dict(data.bad), cached=len(files))
        got.seconds = time.perf_counter() - t0
        return got
    got = Decoded(torch.zeros((len(files), channels, size, size), dtype=torch.uint8))
    todo = _take_cached(data, files, stats, got) if data is not None else list(range(len(files)))
    whole = len(todo) == len(files)  # nothing cached: decode straight into the result
    paths = [os.path.join(folder, files[i]) for i in todo]
    fresh, bad = decode_files(paths, size, channels, got.pixels.numpy() if whole else None)
    if todo and not whole:
        got.pixels.index_copy_(0, torch.tensor(todo), torch.from_numpy(fresh))
    got.bad.update({todo[k]: why for k, why in bad.items()})
    got.decoded = len(todo)
    stale = data is None or bool(todo) or len(data.stats) != got.cached  # new, changed, removed
    del data  # release the memory-mapped cache before it is replaced
    if stale:
        image_store.save(file, folder, POLICY, files, stats, got.bad, got.pixels)
    got.seconds = time.perf_counter() - t0
    return got


def report(got: Decoded, size: int, channels: int) -> None:
    """One plain line: how many images were decoded (and taken from the cache), and how fast."""
    n = len(got.pixels)
    shape = f"{size}x{size}, {channels} channel{'s' if channels > 1 else ''}"
    if got.cached:
        info(
            f"loaded {n:,} images ({shape}): {got.cached:,} from the cache, "
            f"{got.decoded:,} decoded, in {got.seconds:.1f} s"
        )
    else:
        info(f"decoded {n:,} images ({shape}) in {got.seconds:.1f} s")
