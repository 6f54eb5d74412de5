"""Micro-batching: concurrent requests share one model call.

Requests (jobs of one or more history rows) wait in a bounded queue. A single worker takes the
first job, then keeps collecting until it holds `max_batch` rows or `max_wait_ms` has passed,
pads the histories into one tensor and runs the model once in a dedicated thread, so the event
loop keeps accepting requests meanwhile. While the model is busy the queue fills, so the next
batch is larger: throughput grows with concurrency instead of requests queueing one by one.
"""

from __future__ import annotations

import asyncio
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Callable

import torch


def pad_histories(histories: list[torch.Tensor]) -> torch.Tensor:
    """1-D dense-index histories -> one left-aligned, -1-padded `[B, L]` LongTensor."""
    if not histories:
        return torch.empty(0, 1, dtype=torch.long)
    return torch.nn.utils.rnn.pad_sequence([h.to(torch.long) for h in histories], batch_first=True, padding_value=-1)


Predict = Callable[[torch.Tensor, int, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]


class QueueFull(RuntimeError):
    """The request queue is at `max_queue`; the caller should answer 503 and let the client retry."""


@dataclass
class _Job:
    histories: list[torch.Tensor]
    k: int
    exclude: list[bool]
    future: asyncio.Future

    @property
    def rows(self) -> int:
        return len(self.histories)


@dataclass
class BatchStats:
    batches: int = 0
    rows: int = 0
    largest: int = 0
    model_seconds: float = 0.0
    rejected: int = 0

    def as_dict(self) -> dict:
        return {"batches": self.batches, "rows": self.rows, "largest_batch": self.largest,
                "mean_batch": round(self.rows / max(self.batches, 1), 3),
                "model_seconds": round(self.model_seconds, 3), "rejected": self.rejected}


class MicroBatcher:
    """Collects jobs into batches of at most `max_batch` rows for `predict(histories, k, exclude)`.

    `predict` runs in one worker thread (model calls never overlap) under `torch.inference_mode`.
    """

    def __init__(self, predict: Predict, *, max_batch: int = 64, max_wait_ms: float = 2.0, max_queue: int = 256):
        if max_batch < 1 or max_queue < 1 or max_wait_ms < 0:
            raise ValueError(f"max_batch ({max_batch}) and max_queue ({max_queue}) must be >= 1, "
                             f"max_wait_ms ({max_wait_ms}) >= 0")
        self.predict = predict
        self.max_batch = max_batch
        self.max_wait = max_wait_ms / 1000.0
        self.max_queue = max_queue
        self.stats = BatchStats()
        self._queue: asyncio.Queue[_Job] | None = None
        self._carry: _Job | None = None
        self._worker: asyncio.Task | None = None
        self._executor: ThreadPoolExecutor | None = None

    @property
    def depth(self) -> int:
        return self._queue.qsize() if self._queue is not None else 0

    def start(self) -> None:
        """Create the queue and worker on the running event loop."""
        self._queue = asyncio.Queue(self.max_queue)
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sidrec-model")
        self._worker = asyncio.get_running_loop().create_task(self._run_forever())

    async def stop(self) -> None:
        if self._worker is not None:
            self._worker.cancel()
            try:
                await self._worker
            except asyncio.CancelledError:
                pass
        if self._executor is not None:
            self._executor.shutdown(wait=True)
        self._worker = self._executor = None

    async def submit(self, histories: list[torch.Tensor], k: int, exclude: list[bool]) -> tuple[torch.Tensor, torch.Tensor]:
        """Queue one job (its rows stay together); resolves to its `(items, scores)` rows."""
        if self._queue is None:
            raise RuntimeError("MicroBatcher.start() was not called")
        if len(histories) > self.max_batch:
            raise ValueError(f"a job of {len(histories)} rows exceeds max_batch={self.max_batch}")
        job = _Job(histories, k, exclude, asyncio.get_running_loop().create_future())
        try:
            self._queue.put_nowait(job)
        except asyncio.QueueFull:
            self.stats.rejected += 1
            raise QueueFull(f"request queue is full ({self.max_queue} waiting); retry later") from None
        return await job.future

    async def _collect(self) -> list[_Job]:
        """First waiting job, then more until `max_batch` rows or `max_wait` elapsed."""
        loop = asyncio.get_running_loop()
        first = self._carry if self._carry is not None else await self._queue.get()
        self._carry = None
        jobs, rows = [first], first.rows
        deadline = loop.time() + self.max_wait
        while rows < self.max_batch:
            try:
                job = self._queue.get_nowait()
            except asyncio.QueueEmpty:
                remaining = deadline - loop.time()
                if remaining <= 0:
                    break
                try:
                    job = await asyncio.wait_for(self._queue.get(), remaining)
                except asyncio.TimeoutError:
                    break
            if rows + job.rows > self.max_batch:
                self._carry = job  # starts the next batch
                break
            jobs.append(job)
            rows += job.rows
        return [job for job in jobs if not job.future.done()]  # drop jobs whose client went away

    def _call(self, jobs: list[_Job]) -> tuple[torch.Tensor, torch.Tensor, float]:
        start = time.perf_counter()
        with torch.inference_mode():
            histories = pad_histories([h for job in jobs for h in job.histories])
            exclude = torch.tensor([e for job in jobs for e in job.exclude], dtype=torch.bool)
            items, scores = self.predict(histories, max(job.k for job in jobs), exclude)
        return items, scores, time.perf_counter() - start

    async def _run_forever(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            jobs = await self._collect()
            if not jobs:
                continue
            try:
                items, scores, seconds = await loop.run_in_executor(self._executor, self._call, jobs)
            except Exception as exc:  # the model failed: every waiting request gets the error
                for job in jobs:
                    if not job.future.done():
                        job.future.set_exception(exc)
                continue
            rows = sum(job.rows for job in jobs)
            self.stats.batches += 1
            self.stats.rows += rows
            self.stats.largest = max(self.stats.largest, rows)
            self.stats.model_seconds += seconds
            start = 0
            for job in jobs:
                if not job.future.done():
                    job.future.set_result((items[start:start + job.rows, :job.k], scores[start:start + job.rows, :job.k]))
                start += job.rows
