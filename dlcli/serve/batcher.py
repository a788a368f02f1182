"""Micro-batching: concurrent requests queue their rows; one loop gathers up to `max_batch` rows
(waiting at most `max_wait_ms` for more), encodes and runs them as one batch on a worker thread,
and hands each request its own slice of the prediction table."""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from dlcli.engine.outputs import records
from dlcli.errors import DLError
from dlcli.runtime.predict import FrameOptions
from dlcli.serve.bodies import FILE_BYTES, SOURCE, BadRequest, Rows


@dataclass
class Job:
    """One request: its input rows, its output options, and where its answer goes."""

    rows: Rows
    proba: bool
    top_k: int
    keep: bool
    done: asyncio.Future = field(repr=False)

    @property
    def options(self) -> tuple[bool, int, bool]:
        return self.proba, self.top_k, self.keep

    def frame(self) -> pd.DataFrame:
        return (
            self.rows
            if isinstance(self.rows, pd.DataFrame)
            else pd.DataFrame.from_records(self.rows)
        )

    def columns(self) -> list[str]:
        if isinstance(self.rows, pd.DataFrame):
            return list(self.rows.columns)
        return list(dict.fromkeys(k for r in self.rows for k in r))


@dataclass
class Answer:
    """A request's slice of the prediction table, and the same rows as JSON-ready records."""

    table: pd.DataFrame
    records: list[dict[str, Any]]


class MicroBatcher:
    """Runs the jobs of concurrent requests together (`predictor`: runtime.predict.Predictor)."""

    def __init__(self, predictor: object, max_batch: int, max_wait_ms: float) -> None:
        self.predictor = predictor
        self.max_batch, self.max_wait = max(1, max_batch), max(0.0, max_wait_ms) / 1000
        self.queue: asyncio.Queue[Job] = asyncio.Queue()
        self.pool = ThreadPoolExecutor(1, thread_name_prefix="dl-serve-model")
        self.task: asyncio.Task | None = None

    def start(self) -> None:
        self.task = asyncio.get_running_loop().create_task(self._loop())

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
        self.pool.shutdown(wait=False)

    async def predict(self, rows: Rows, proba: bool, top_k: int, keep: bool) -> Answer:
        job = Job(rows, proba, top_k, keep, asyncio.get_running_loop().create_future())
        await self.queue.put(job)
        return await job.done

    async def _gather(self) -> list[Job]:
        """The next batch: the first waiting job, then more until max_batch rows or max_wait."""
        loop = asyncio.get_running_loop()
        jobs = [await self.queue.get()]
        rows, deadline = len(jobs[0].rows), loop.time() + self.max_wait
        while rows < self.max_batch:
            try:
                left = deadline - loop.time()
                job = (
                    self.queue.get_nowait()
                    if left <= 0
                    else await asyncio.wait_for(self.queue.get(), left)
                )
            except (asyncio.QueueEmpty, asyncio.TimeoutError):
                break
            jobs.append(job)
            rows += len(job.rows)
        return jobs

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

    def _run(self, jobs: list[Job]) -> list[Answer | BaseException]:
        """Encode, run and format the whole batch at once (per-request costs are what limit a
        server of small models); if any rows are bad, each request is encoded alone so that only
        the bad one fails, with row numbers of its own."""
        encoder = self.predictor.preprocessor
        answers: list[Answer | BaseException | None] = [None] * len(jobs)
        good = []
        for i, job in enumerate(jobs):
            try:
                encoder.check_columns(job.columns(), SOURCE)
                good.append(i)
            except DLError as exc:
                answers[i] = BadRequest(422, str(exc))
        try:
            features = [encoder.matrix(_frame([jobs[i] for i in good]), SOURCE)] if good else []
        except DLError:
            features = []
            for i in list(good):
                try:
                    features.append(encoder.matrix(jobs[i].frame(), SOURCE))
                except DLError as exc:
                    answers[i] = BadRequest(422, str(exc))
                    good.remove(i)
        if not good:
            return answers
        x = np.concatenate(features)
        starts = np.cumsum([0] + [len(jobs[i].rows) for i in good])
        groups: dict[tuple[bool, int, bool], list[int]] = {}
        for k, i in enumerate(good):
            groups.setdefault(jobs[i].options if not jobs[i].keep else (k,), []).append(k)
        for ks in groups.values():
            first = jobs[good[ks[0]]]
            rows = np.concatenate([np.arange(starts[k], starts[k + 1]) for k in ks])
            passthrough = self._passthrough([jobs[good[k]] for k in ks], len(rows))
            options = FrameOptions(first.proba, first.top_k)
            table = self.predictor.frame(passthrough, x[rows], options)
            recs = records(table)
            at = 0
            for k in ks:
                n = int(starts[k + 1] - starts[k])
                answers[good[k]] = Answer(table.iloc[at : at + n], recs[at : at + n])
                at += n
        return answers

    def _passthrough(self, jobs: list[Job], n: int) -> pd.DataFrame:
        """The input columns a table starts with: all with keep_columns (one job then), else those
        the model's kind always shows (an image's path), else none."""
        shown = list(getattr(self.predictor.preprocessor, "shown_columns", ()))
        if jobs[0].keep:
            frame = jobs[0].frame()
            return frame[[c for c in frame.columns if c != FILE_BYTES]]
        if shown:
            return pd.concat([j.frame()[shown] for j in jobs], ignore_index=True)
        return pd.DataFrame(index=range(n))


def _frame(jobs: list[Job]) -> pd.DataFrame:
    """One frame of the rows of every job, in order."""
    if all(isinstance(j.rows, list) for j in jobs):
        return pd.DataFrame.from_records([r for j in jobs for r in j.rows])
    return pd.concat([j.frame() for j in jobs], ignore_index=True)
