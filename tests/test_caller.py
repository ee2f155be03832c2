"""Bounded calls on a reused worker (servicegroup/caller.py).

No test waits on wall-clock time beyond the bound it sets itself: the stuck
call is released by an event, never by a sleep.
"""

from __future__ import annotations

import threading

import pytest
from tooz import coordination

from servicegroup.caller import Caller


def test_calls_run_on_one_reused_worker_thread() -> None:
    caller = Caller("test-worker")
    try:
        names = {caller.call(lambda: threading.current_thread().ident, 30, "probe") for _ in range(20)}
        assert len(names) == 1 and threading.get_ident() not in names
    finally:
        caller.close()


def test_a_call_that_raises_raises_in_the_caller() -> None:
    caller = Caller("test-worker")

    def boom() -> None:
        raise ValueError("from the worker")

    try:
        with pytest.raises(ValueError, match="from the worker"):
            caller.call(boom, 30, "boom")
        assert caller.call(lambda: 42, 30, "after") == 42
    finally:
        caller.close()


def test_an_overrunning_call_times_out_and_the_next_call_gets_a_fresh_worker() -> None:
    caller = Caller("test-worker")
    release = threading.Event()
    stuck_on: list[int | None] = []

    def stuck() -> None:
        stuck_on.append(threading.current_thread().ident)
        release.wait(30)  # a guard against a hang, not a timing

    try:
        with pytest.raises(coordination.OperationTimedOut, match="stuck did not answer within 0.05s"):
            caller.call(stuck, 0.05, "stuck")
        fresh = caller.call(lambda: threading.current_thread().ident, 30, "fresh")
        assert fresh not in stuck_on
    finally:
        release.set()
        caller.close()
