"""Stopping is quiet; what runs at exit is bounded (servicegroup/exiting.py)."""

from __future__ import annotations

import logging
import threading

import pytest

from servicegroup import errors
from servicegroup import exiting
from servicegroup.membership import MembershipView


def test_a_read_failing_after_halt_logs_nothing(caplog: pytest.LogCaptureFixture) -> None:
    """stop() halts the view before the reader refuses: the refusal is no news."""

    def fetch(topic: str) -> dict[str, dict[str, object]]:
        raise errors.ServiceGroupError("this ServiceGroup is stopped")

    view = MembershipView(fetch, max_staleness=1.0, grace=2.0, start_thread=False)
    view.halt()
    with caplog.at_level(logging.DEBUG, logger="servicegroup.membership"):
        assert view.refresh("compute") is False
    assert caplog.records == []


def test_stop_running_waits_for_stops_within_the_bound_only() -> None:
    release = threading.Event()

    class Stuck:
        def stop(self) -> None:
            release.wait()

    class Quick:
        stopped = False

        def stop(self) -> None:
            self.stopped = True

    quick, stuck = Quick(), Stuck()
    exiting.running(quick)
    assert exiting.stop_running(bound=5.0) and quick.stopped
    exiting.stopped(quick)
    exiting.running(stuck)
    try:
        assert exiting.stop_running(bound=0.05) is False
    finally:
        exiting.stopped(stuck)
        release.set()
