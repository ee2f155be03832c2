"""Bounded backend calls on one reused worker thread.

A heartbeat must not hang on a client that waits forever (tooz's ZooKeeper
``heartbeat()`` is a kazoo ``get`` with no timeout), so its calls run on
another thread and the heartbeat waits a bounded time. Starting a thread
for every call (:func:`servicegroup.backend.bounded`) cost more CPU than
the call itself: at 1,000 members beating, thread starts were most of the
members' CPU. A :class:`Caller` keeps one worker per member instead, and
replaces it only when a call overruns (the stuck worker finishes its call,
or dies with its client, and then exits).
"""

from __future__ import annotations

from collections.abc import Callable
import queue
import threading
from typing import Any

from tooz import coordination


class _Job:
    __slots__ = ("fn", "done", "result", "error")

    def __init__(self, fn: Callable[[], Any]) -> None:
        self.fn = fn
        self.done = threading.Event()
        self.result: Any = None
        self.error: BaseException | None = None


def _work(jobs: queue.SimpleQueue[_Job | None]) -> None:
    while True:
        job = jobs.get()
        if job is None:
            return
        try:
            job.result = job.fn()
        except BaseException as exc:  # handed to the waiting caller
            job.error = exc
        job.done.set()


class Caller:
    """Runs calls on a long-lived worker, waiting at most *timeout* each."""

    def __init__(self, name: str) -> None:
        self._name = name
        self._lock = threading.Lock()
        self._jobs: queue.SimpleQueue[_Job | None] | None = None

    def call(self, fn: Callable[[], Any], timeout: float, what: str) -> Any:
        """*fn*'s result, or its exception; ``OperationTimedOut`` after
        *timeout* seconds (the worker is then abandoned, not reused)."""
        job = _Job(fn)
        with self._lock:
            jobs = self._jobs
            if jobs is None:
                jobs = self._jobs = queue.SimpleQueue()
                threading.Thread(target=_work, args=(jobs,), name=self._name, daemon=True).start()
            jobs.put(job)
        if not job.done.wait(timeout):
            with self._lock:
                if self._jobs is jobs:
                    self._jobs = None
            jobs.put(None)  # exits once the stuck call returns
            raise coordination.OperationTimedOut(f"{what} did not answer within {timeout:g}s")
        if job.error is not None:
            raise job.error
        return job.result

    def close(self) -> None:
        """End the worker (after the call it may be running)."""
        with self._lock:
            jobs, self._jobs = self._jobs, None
        if jobs is not None:
            jobs.put(None)

    def after_fork(self) -> None:
        """In a forked child: the parent's worker does not exist here."""
        self._lock = threading.Lock()
        self._jobs = None
