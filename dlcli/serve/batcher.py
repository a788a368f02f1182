"""Micro-batching: concurrent requests queue their rows; one loop gathers up to `max_batch` rows
(waiting at most `max_wait_ms` for more), encodes and runs them as one batch on a worker thread,
and hands each request its own slice of the prediction table."""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from dlcli.engine.outputs import output_frame
from dlcli.errors import DLError
from dlcli.serve.bodies import SOURCE, BadRequest


@dataclass
class Job:
    """One request: its input rows, its output options, and where its answer goes."""

    frame: pd.DataFrame
    proba: bool
    top_k: int
    keep: bool
    done: asyncio.Future = field(repr=False)


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

    async def predict(
        self, frame: pd.DataFrame, proba: bool, top_k: int, keep: bool
    ) -> pd.DataFrame:
        job = Job(frame, proba, top_k, keep, asyncio.get_running_loop().create_future())
        await self.queue.put(job)
        return await job.done

    async def _gather(self) -> list[Job]:
        """The next batch: the first waiting job, then more until max_batch rows or max_wait."""
        loop = asyncio.get_running_loop()
        jobs = [await self.queue.get()]
        rows, deadline = len(jobs[0].frame), loop.time() + self.max_wait
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
            rows += len(job.frame)
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

    def _run(self, jobs: list[Job]) -> list[pd.DataFrame | BaseException]:
        """Encode every job's rows (a bad one fails alone), run the good ones as one batch."""
        encoder = self.predictor.preprocessor
        answers: list[pd.DataFrame | BaseException] = []
        features = []
        for job in jobs:
            try:
                features.append(encoder.matrix(job.frame, SOURCE))
                answers.append(None)
            except DLError as exc:
                answers.append(BadRequest(422, str(exc)))
        if not features:
            return answers
        outputs = self.predictor.outputs(np.concatenate(features))
        start, k = 0, 0
        for i, job in enumerate(jobs):
            if answers[i] is not None:
                continue
            n = len(features[k])
            k += 1
            passthrough = job.frame if job.keep else job.frame.iloc[:, :0]
            answers[i] = output_frame(
                self.predictor, passthrough, outputs[start : start + n], job.proba, job.top_k
            )
            start += n
        return answers
