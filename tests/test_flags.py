"""The flags cache (servicegroup.flags): liveness never waits on the records database.

The forced_down/disabled flags used to be read on the membership
refresher's thread: a stalled records database stopped every topic's
refresh, the view aged past service_down_time and every live host read as
down. These tests stall the records read for real (a read that blocks) and
check what callers see meanwhile.
"""

from __future__ import annotations

from collections.abc import Callable
import logging
import threading
import time

from servicegroup.flags import FlagsCache
from tests.fakes import TTL


def _until(predicate: Callable[[], bool], bound: float = 30.0) -> bool:
    """Poll *predicate* until true; *bound* only guards against a hang."""
    deadline = time.monotonic() + bound
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.01)
    return predicate()


def test_a_stalled_records_read_changes_no_liveness_answer(make_sg, clock):
    sg = make_sg(background=True)
    sg.join("host-a", "compute")
    assert sg.get_all("compute") == ["host-a"]
    real_flags = sg.records.flags
    stalled, release = threading.Event(), threading.Event()

    def read_then_stall(**kw):
        flags = real_flags(**kw)  # read before the fence below ...
        stalled.set()
        release.wait(60)  # ... and held, as by a frozen database host
        return flags

    sg.records.flags = read_then_stall  # type: ignore[method-assign]
    try:
        assert stalled.wait(30), "the flags thread never read"
        steps = int(TTL) + 1  # one fake second each: past service_down_time in all
        for _ in range(steps):
            sg.heartbeat("host-a")
            clock.advance(1.0)
            now = clock()
            assert _until(lambda now=now: sg._view.snapshot("compute").fetched_at >= now), (
                "the membership refresher stopped refreshing"
            )
            assert sg.is_up(topic="compute", host="host-a")
            assert sg.get_all("compute") == ["host-a"]
        assert sg.flags_age() >= steps, "the staleness of the flags shows"
        sg.force_down("host-a", "compute")
        assert not sg.is_up(topic="compute", host="host-a"), "a local fence counts at once"
    finally:
        release.set()
    sg.records.flags = real_flags  # type: ignore[method-assign]
    assert _until(lambda: sg.flags_age() < 1.0), "reads never resumed"
    assert not sg.is_up(topic="compute", host="host-a"), "the stalled, older read undid the fence"


def test_flags_keep_their_last_values_and_log_once_per_outage(caplog):
    reads: list[object] = [{("host-a", "compute"): (True, False)}]
    changed: list[str] = []
    now = [100.0]

    def read():
        result = reads[-1]
        if isinstance(result, Exception):
            raise result
        return result

    cache = FlagsCache(read, interval=1.0, on_fence_change=changed.append, clock=lambda: now[0], background=False)
    cache.start()
    assert cache.forced_down("host-a", "compute") and cache.age() == 0.0
    changed.clear()
    reads.append(ConnectionError("records database at db:5432 unreachable"))
    with caplog.at_level(logging.DEBUG, logger="servicegroup.flags"):
        for _ in range(3):
            now[0] += 1.0
            assert cache.refresh() is False
        assert cache.forced_down("host-a", "compute"), "the last known fence holds"
        assert cache.age() == 3.0
        reads.append({})
        assert cache.refresh() is True
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    infos = [r for r in caplog.records if r.levelno == logging.INFO]
    assert len(warnings) == 1 and "db:5432" in warnings[0].getMessage()
    assert len(infos) == 1 and "readable again" in infos[0].getMessage()
    assert not cache.forced_down("host-a", "compute") and cache.age() == 0.0
    assert changed == ["compute"], "an unfence read from the database is announced"


def test_a_fence_change_wakes_on_change_watchers(make_sg):
    """The hash ring rebuilds on on_change: a fence must fire it."""
    sg = make_sg()
    sg.join("host-a", "compute")
    changes: list[str] = []
    sg.watch("compute", on_change=changes.append)
    sg._view.dispatcher.drain()
    changes.clear()
    sg.force_down("host-a", "compute")
    sg._view.dispatcher.drain()
    assert changes == ["compute"]
    assert sg.get_all("compute") == []


def test_flags_age_is_none_before_the_first_good_read():
    def unreadable():
        raise ConnectionError("down")

    cache = FlagsCache(unreadable, interval=1.0, on_fence_change=lambda topic: None, background=False)
    cache.start()
    assert cache.age() is None
