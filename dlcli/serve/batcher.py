"""Micro-batching: concurrent requests queue their rows; one loop gathers up to `max_batch` rows
(a request waits at most `max_wait_ms` from its arrival for others to join it), and a worker
thread runs the whole pipeline once per batch: one frame of every request's rows, one encode,
one model run, one prediction table, and each request's answer body (JSON or CSV bytes) cut from
it. What is left per request is parsing its body and sending its bytes (docs/serve.md)."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import io
import json
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import orjson
import pandas as pd

from dlcli.engine.outputs import CsvWriter, records
from dlcli.errors import DLError
from dlcli.runtime.predict import FrameOptions
from dlcli.serve.bodies import FILE_BYTES, SOURCE, BadRequest, Rows


@dataclass(frozen=True)
class Ask:
    """What a request wants back: the `dl predict` flags, and CSV instead of JSON."""

    proba: bool = False
    top_k: int = 1
    keep: bool = False
    csv: bool = False


@dataclass
class Job:
    """One request: its input rows, what it wants back, and where its answer goes."""

    rows: Rows
    ask: Ask
    done: asyncio.Future = field(repr=False)
    since: float = 0.0  # the loop's clock when it was queued

    def frame(self) -> pd.DataFrame:
        return (
            self.rows
            if isinstance(self.rows, pd.DataFrame)
            else pd.DataFrame.from_records(self.rows)
        )

    def columns(self) -> list[str]:
        if isinstance(self.rows, pd.DataFrame):
            return list(self.rows.columns)
        if len(self.rows) == 1:
            return list(self.rows[0])
        return list(dict.fromkeys(k for r in self.rows for k in r))


RECENT = 8  # batches whose sizes say how many requests usually come together


class MicroBatcher:
    """Runs the jobs of concurrent requests together (`predictor`: runtime.predict.Predictor)."""

    def __init__(self, predictor: Any, max_batch: int, max_wait_ms: float) -> None:
        self.predictor = predictor
        self.max_batch, self.max_wait = max(1, max_batch), max(0.0, max_wait_ms) / 1000
        self.waiting: collections.deque[Job] = collections.deque()
        self.sizes: collections.deque[int] = collections.deque(maxlen=RECENT)  # requests a batch
        self.wake: asyncio.Future | None = None  # what the gathering loop awaits, when it waits
        self.pool = ThreadPoolExecutor(1, thread_name_prefix="dl-serve-model")
        self.task: asyncio.Task | None = None

    def start(self) -> None:
        self.task = asyncio.get_running_loop().create_task(self._loop())

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
        self.pool.shutdown(wait=False)

    async def predict(self, rows: Rows, ask: Ask) -> bytes:
        """The answer body for `rows`; a BadRequest (422) when they cannot be encoded."""
        assert self.task is not None, "MicroBatcher.start() runs in the app's lifespan"
        loop = asyncio.get_running_loop()
        job = Job(rows, ask, loop.create_future(), loop.time())
        self.waiting.append(job)
        if self.wake is not None:
            _resolve(self.wake)
        return await job.done

    async def _gather(self) -> list[Job]:
        """The next batch: the oldest waiting job, then later ones while they fit in max_batch
        rows, waiting for more until the oldest has waited max_wait (jobs that queued while the
        model ran the previous batch have usually waited that long already: they go at once),
        or until the batch holds as many requests as the largest of the RECENT batches before
        it (steady concurrent clients are all in: waiting longer would only add latency)."""
        loop = asyncio.get_running_loop()
        while not self.waiting:
            await self._wait(None)
        jobs = [self.waiting.popleft()]
        rows, deadline = len(jobs[0].rows), jobs[0].since + self.max_wait
        usual = max(self.sizes) if self.sizes else None  # no history yet: wait the full time
        while rows < self.max_batch:
            if self.waiting:
                if rows + len(self.waiting[0].rows) > self.max_batch:
                    break  # it starts the next batch
                job = self.waiting.popleft()
                jobs.append(job)
                rows += len(job.rows)
                continue
            left = deadline - loop.time()
            if left <= 0 or (usual is not None and len(jobs) >= usual):
                break
            await self._wait(left)
        self.sizes.append(len(jobs))
        return jobs

    async def _wait(self, timeout: float | None) -> None:
        """Until a job is queued, or `timeout` seconds (a timer, not a task per wait)."""
        loop = asyncio.get_running_loop()
        wake = self.wake = loop.create_future()
        timer = None if timeout is None else loop.call_later(timeout, _resolve, wake)
        try:
            await wake
        finally:
            self.wake = None
            if timer is not None:
                timer.cancel()

    async def _loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            jobs = await self._gather()
            try:
                answers = await loop.run_in_executor(self.pool, self._run, jobs)
            except Exception as exc:  # a bug, not a bad request: every waiting request gets it
                answers = [exc] * len(jobs)
            for job, answer in zip(jobs, answers, strict=True):
                if job.done.done():
                    continue
                if isinstance(answer, BaseException):
                    job.done.set_exception(answer)
                else:
                    job.done.set_result(answer)

    def _run(self, jobs: list[Job]) -> list[bytes | BaseException]:
        """Encode, run and format the whole batch at once (per-request costs are what limit a
        server of small models): one table per set of jobs that ask the same, cut into each
        job's answer."""
        answers: list[bytes | BaseException | None] = [None] * len(jobs)
        encoded = self._encode(jobs, answers)
        groups: dict[Any, list[int]] = {}  # jobs that share one table: same flags, no kept columns
        for i in encoded:
            ask = jobs[i].ask
            groups.setdefault((ask.proba, ask.top_k) if not ask.keep else (i,), []).append(i)
        for idx in groups.values():
            xs = [encoded[i][1] for i in idx]
            first = jobs[idx[0]].ask
            table = self.predictor.frame(
                self._passthrough([jobs[i] for i in idx], [encoded[i][0] for i in idx]),
                xs[0] if len(xs) == 1 else np.concatenate(xs),
                FrameOptions(first.proba, first.top_k),
            )
            bodies, at = _Bodies(table), 0
            for i, x in zip(idx, xs, strict=True):
                answers[i] = bodies.cut(at, at + len(x), jobs[i].ask.csv)
                at += len(x)
        return answers

    def _encode(
        self, jobs: list[Job], answers: list
    ) -> dict[int, tuple[pd.DataFrame | None, np.ndarray]]:
        """Job index -> (its pass-through, or None for the default one; its model input), for the
        jobs whose rows encode; the others' answers become their 422. Rows of tables, texts and
        images are independent: all jobs' rows are encoded as one frame, and only when some
        are bad is each job encoded alone (so that only the bad one fails, with row numbers of
        its own). A series request is one history: each is windowed on its own."""
        encoder = self.predictor.preprocessor
        good = []
        for i, job in enumerate(jobs):
            try:
                encoder.check_columns(job.columns(), SOURCE)
                good.append(i)
            except DLError as exc:
                answers[i] = BadRequest(422, str(exc))
        windows = getattr(encoder, "windows", None)  # series: history -> (pass-through, windows)
        if windows is None and good:
            with contextlib.suppress(DLError):
                x = encoder.matrix(_frame([jobs[i] for i in good]), SOURCE)
                ends = np.cumsum([len(jobs[i].rows) for i in good])[:-1]
                return {i: (None, part) for i, part in zip(good, np.split(x, ends), strict=True)}
        out = {}
        for i in good:
            try:
                frame = jobs[i].frame()
                if windows is not None:
                    out[i] = windows(frame, SOURCE, jobs[i].ask.keep)
                else:
                    out[i] = (None, encoder.matrix(frame, SOURCE))
            except DLError as exc:
                answers[i] = BadRequest(422, str(exc))
        return out

    def _passthrough(self, jobs: list[Job], given: list[pd.DataFrame | None]) -> pd.DataFrame:
        """The input columns a table starts with: those the encoder gave (a series step's date),
        else all with keep_columns (one job then), else those the model's kind always shows (an
        image's path), else none."""
        if given[0] is not None:
            return given[0] if len(given) == 1 else pd.concat(given, ignore_index=True)
        shown = list(getattr(self.predictor.preprocessor, "shown_columns", ()))
        if jobs[0].ask.keep:
            frame = jobs[0].frame()
            return frame[[c for c in frame.columns if c != FILE_BYTES]]
        if shown:
            return pd.concat([j.frame()[shown] for j in jobs], ignore_index=True)
        return pd.DataFrame(index=range(sum(len(j.rows) for j in jobs)))


class _Bodies:
    """Answer bodies cut from one prediction table: JSON records (the values of
    engine.outputs.records: Python numbers and text, NaN and infinities as null) or CSV (as
    `dl predict` writes it). The columns are turned into Python values once, not per request."""

    def __init__(self, table: pd.DataFrame) -> None:
        self.table = table
        self.names = [str(c) for c in table.columns]
        self.values: list[list[Any]] | None = None

    def cut(self, start: int, stop: int, csv: bool) -> bytes:
        if csv:
            buf = io.StringIO()
            CsvWriter(buf).write(self.table.iloc[start:stop])
            return buf.getvalue().encode()
        if self.values is None:
            self.values = [self.table.iloc[:, j].tolist() for j in range(len(self.names))]
        cols, names = [v[start:stop] for v in self.values], self.names
        try:
            return orjson.dumps([dict(zip(names, r, strict=True)) for r in zip(*cols, strict=True)])
        except orjson.JSONEncodeError:  # a kept value orjson refuses (an integer over 64 bits)
            return json.dumps(records(self.table.iloc[start:stop])).encode()


def _resolve(future: asyncio.Future) -> None:
    if not future.done():
        future.set_result(None)


def _frame(jobs: list[Job]) -> pd.DataFrame:
    """One frame of the rows of every job, in order."""
    if all(isinstance(j.rows, list) for j in jobs):
        return pd.DataFrame.from_records([r for j in jobs for r in j.rows])
    return pd.concat([j.frame() for j in jobs], ignore_index=True)
