"""A bounded pool of inference threads: work runs off the event loop, and a full pool refuses instead of queueing."""
from __future__ import annotations

import asyncio
import math
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Callable, TypeVar

T = TypeVar("T")


class PoolFull(Exception):
    """Every worker is busy and the queue is full; ``retry_after`` is a suggested wait in whole seconds."""

    def __init__(self, retry_after: int):
        self.retry_after = retry_after
        super().__init__(f"server busy: all workers and queue slots are taken; retry in {retry_after} s")


class PoolTimeout(Exception):
    """A job did not finish within the request timeout."""


class Slot:
    """A place in a :class:`BoundedPool` taken before the job exists (while its upload is read): handed to
    :meth:`BoundedPool.run`, it becomes the job's slot; :meth:`release` frees it when no job came of it."""

    def __init__(self, pool: "BoundedPool"):
        self._pool, self._open = pool, True

    def hand_over(self) -> None:
        """The slot now belongs to a job, which frees it when it finishes."""
        self._open = False

    def release(self) -> None:
        """Free the slot unless a job took it over (safe to call more than once)."""
        if self._open:
            self._open = False
            self._pool._free()


class BoundedPool:
    """``workers`` threads and at most ``workers + queue_size`` jobs in flight.

    ``initializer`` runs once in each worker thread before its first job. A slot is taken before a request's
    upload is read (:meth:`reserve`) and stays taken until its job has really finished, also when the request
    that submitted it timed out, so the number of uploads and images held in memory is bounded by the capacity.
    """

    def __init__(self, workers: int, queue_size: int, initializer: Callable[[], None] | None = None):
        self.workers, self.capacity = workers, workers + queue_size
        self._executor = ThreadPoolExecutor(workers, thread_name_prefix="defocus-serve", initializer=initializer)
        self._lock = threading.Lock()
        self._in_flight = 0
        self._mean_seconds = 1.0  # running estimate of one job's duration, for Retry-After
        self._started: dict[int, float] = {}  # start time of each submitted job not finished yet
        self._next_job = 0

    @property
    def in_flight(self) -> int:
        """Jobs running or waiting."""
        return self._in_flight

    def retry_after(self) -> int:
        """Seconds until a slot is likely free: the jobs ahead divided among the workers, at least 1. A job
        lasts the mean of the finished ones, or as long as the longest one still running has already taken (a
        job far slower than the others must not be answered with retries that come back too soon)."""
        now = time.perf_counter()
        longest = max((now - t0 for t0 in tuple(self._started.values())), default=0.0)
        per_job = max(self._mean_seconds, longest)
        return max(1, math.ceil(per_job * max(1, self._in_flight) / self.workers))

    def reserve(self) -> Slot:
        """Take a slot now or raise :class:`PoolFull` (a request is refused before its body is read)."""
        with self._lock:
            if self._in_flight >= self.capacity:
                raise PoolFull(self.retry_after())
            self._in_flight += 1
        return Slot(self)

    def _free(self) -> None:
        with self._lock:
            self._in_flight -= 1

    def submit(self, fn: Callable[..., T], *args, slot: Slot | None = None) -> Future:
        """Start ``fn(*args)`` on a worker in ``slot`` (default: a slot taken now, or :class:`PoolFull`)."""
        slot = slot or self.reserve()
        slot.hand_over()
        t0 = time.perf_counter()
        with self._lock:
            job, self._next_job = self._next_job, self._next_job + 1
            self._started[job] = t0
        try:
            future = self._executor.submit(fn, *args)
        except BaseException:
            self._release(job)
            raise
        future.add_done_callback(lambda _: self._release(job))
        return future

    def _release(self, job: int) -> None:
        with self._lock:
            t0 = self._started.pop(job)
            self._in_flight -= 1
            self._mean_seconds = 0.8 * self._mean_seconds + 0.2 * (time.perf_counter() - t0)

    async def run(self, fn: Callable[..., T], *args, timeout: float, slot: Slot | None = None) -> T:
        """Run ``fn(*args)`` on a worker (in ``slot`` when one was reserved) and await its result;
        :class:`PoolTimeout` after ``timeout`` seconds."""
        future = self.submit(fn, *args, slot=slot)
        try:
            return await asyncio.wait_for(asyncio.wrap_future(future), timeout)
        except asyncio.TimeoutError:
            future.cancel()  # only stops a job that has not started; a running one finishes and frees its slot
            raise PoolTimeout(f"no result within the request timeout of {timeout:g} s") from None

    def shutdown(self) -> None:
        """Stop the threads after the running jobs; waiting jobs are dropped."""
        self._executor.shutdown(wait=True, cancel_futures=True)
