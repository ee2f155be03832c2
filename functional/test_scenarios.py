"""One scenario suite, every backend: the public API against real servers.

Each test runs once per backend (``target``, see ``functional/conftest.py``):
``db`` on SQLite, PostgreSQL and MariaDB, ``zk``, ``mc``, ``redis``,
``etcd`` and ``consul`` (the Consul HTTP API test server; a real agent when
one is on PATH). Members are real processes (``servicegroup join``); the
observer is a ServiceGroup in the test process, as a scheduler would be.
"""

from __future__ import annotations

import datetime
import subprocess
import sys
import uuid

import pytest

from functional.members import BOUND, MemberProcess, Target, wait_for
from servicegroup import errors
from servicegroup.api import ServiceGroup


@pytest.fixture
def topic() -> str:
    return f"scn-{uuid.uuid4().hex[:10]}"


@pytest.fixture
def observer(target: Target):
    sg = ServiceGroup(**target.kwargs())
    yield sg
    sg.stop()


@pytest.fixture
def spawn(target: Target, topic: str):
    started: list[MemberProcess] = []

    def start(host: str) -> MemberProcess:
        member = MemberProcess(target, host, topic)
        started.append(member)
        return member

    yield start
    for member in started:
        member.kill()


def test_joined_members_are_up_for_another_process(observer, spawn, topic):
    spawn("host-a")
    spawn("host-b")
    assert wait_for(lambda: observer.get_all(topic) == ["host-a", "host-b"])
    assert observer.is_up(topic=topic, host="host-a")
    assert observer.get_one(topic) in {"host-a", "host-b"}
    states = {s.host: s.up for s in observer.services(topic)}
    assert states == {"host-a": True, "host-b": True}


def test_sigkilled_member_goes_down_and_others_stay_up(observer, spawn, topic):
    spawn("host-a")
    victim = spawn("host-b")
    assert wait_for(lambda: observer.get_all(topic) == ["host-a", "host-b"])
    victim.kill()
    false_downs = 0

    def victim_down() -> bool:
        nonlocal false_downs
        if not observer.is_up(topic=topic, host="host-a"):
            false_downs += 1
        return not observer.is_up(topic=topic, host="host-b")

    assert wait_for(victim_down), "a crashed member must go down"
    assert false_downs == 0, "a live member was reported down"
    assert observer.get_all(topic) == ["host-a"]


def test_clean_leave_is_seen_and_watched(target, observer, topic):
    events: list[tuple[str, str]] = []
    observer.watch(
        topic, on_join=lambda t, h: events.append(("join", h)), on_leave=lambda t, h: events.append(("leave", h))
    )
    member = ServiceGroup(**target.kwargs())
    try:
        member.join("host-a", topic, binary="scenario")
        assert wait_for(lambda: ("join", "host-a") in events)
        assert observer.is_up(topic=topic, host="host-a")
        member.leave("host-a", topic)
        assert wait_for(lambda: ("leave", "host-a") in events)
        assert not observer.is_up(topic=topic, host="host-a")
        assert [s.up for s in observer.services(topic)] == [False], "the record stays, shown down"
    finally:
        member.stop()


def test_forced_down_wins_across_processes(observer, spawn, topic):
    spawn("host-a")
    assert wait_for(lambda: observer.is_up(topic=topic, host="host-a"))
    operator = ServiceGroup(**observer_kwargs(observer))
    try:
        operator.force_down("host-a", topic)
        assert wait_for(lambda: not observer.is_up(topic=topic, host="host-a"))
        assert observer.get_all(topic) == []
        operator.force_down("host-a", topic, down=False)
        assert wait_for(lambda: observer.is_up(topic=topic, host="host-a"))
    finally:
        operator.stop()


def test_disable_does_not_change_liveness(observer, spawn, topic):
    spawn("host-a")
    assert wait_for(lambda: observer.is_up(topic=topic, host="host-a"))
    svc = observer.disable("host-a", topic, reason="maintenance")
    assert svc.disabled and svc.disabled_reason == "maintenance"
    assert observer.is_up(topic=topic, host="host-a")
    assert not observer.enable("host-a", topic).disabled


def test_get_updated_time_follows_heartbeats(observer, spawn, topic):
    spawn("host-a")
    assert wait_for(lambda: observer.is_up(topic=topic, host="host-a"))
    first = observer.get_updated_time(topic=topic, host="host-a")
    assert first is not None
    assert wait_for(lambda: observer.get_updated_time(topic=topic, host="host-a") > first)


def test_updated_time_of_a_crashed_member_stops_at_its_last_proof_of_life(target, observer, spawn, topic):
    """After a crash the reported time must stop moving. On ``db`` it is the
    last heartbeat itself (the database server stamps each beat), so it is
    never later than the kill; other backends only know when they last
    listed the member (documented in ``get_updated_time``)."""
    victim = spawn("host-a")
    assert wait_for(lambda: observer.is_up(topic=topic, host="host-a"))
    killed_at = datetime.datetime.now(datetime.timezone.utc)
    victim.kill()
    assert wait_for(lambda: not observer.is_up(topic=topic, host="host-a"))
    last = observer.get_updated_time(topic=topic, host="host-a")
    observer._view.refresh(topic)
    assert observer.get_updated_time(topic=topic, host="host-a") == last
    [svc] = observer.services(topic)
    assert (svc.up, svc.last_seen_up) == (False, last)
    if target.driver == "db":
        # 50 ms: SQLite's julianday resolution and rounding, nothing more.
        assert last <= killed_at + datetime.timedelta(seconds=0.05), (last, killed_at)


def test_watch_sees_a_crash_as_a_leave(observer, spawn, topic):
    left: list[str] = []
    observer.watch(topic, on_leave=lambda t, h: left.append(h))
    victim = spawn("host-a")
    assert wait_for(lambda: observer.is_up(topic=topic, host="host-a"))
    victim.kill()
    assert wait_for(lambda: left == ["host-a"])


def test_bad_names_are_refused_before_the_backend(observer, topic):
    for bad in ("", "x" * 300, b"\xff"):
        with pytest.raises(errors.InvalidName):
            observer.join(bad, topic)  # type: ignore[arg-type]
    assert observer.services(topic) == []


def observer_kwargs(sg: ServiceGroup) -> dict[str, object]:
    s = sg.settings
    return dict(
        driver=s.driver,
        url=s.url,
        records_url=s.records_url,
        report_interval=s.report_interval,
        service_down_time=s.service_down_time,
        max_staleness=s.max_staleness,
    )


def test_member_thread_survives_and_heals_a_long_pause(observer, spawn, topic):
    """A member frozen past its TTL (GC stall, VM pause) loses its membership;
    once it runs again it re-joins on its own and says so."""
    member = spawn("host-a")
    assert wait_for(lambda: observer.is_up(topic=topic, host="host-a"))
    member.pause()
    try:
        assert wait_for(lambda: not observer.is_up(topic=topic, host="host-a")), "paused past TTL: down"
    finally:
        member.resume()
    assert wait_for(lambda: observer.is_up(topic=topic, host="host-a"), bound=BOUND)
    assert wait_for(lambda: member.saw("membership_restored"))


def test_the_services_table_counts_heartbeats(observer, spawn, topic):
    """report_count and last_seen_up move (written every service_down_time / 2)."""
    spawn("host-a")
    assert wait_for(lambda: observer.is_up(topic=topic, host="host-a"))
    joined = observer.records.get("host-a", topic)
    assert wait_for(lambda: observer.records.get("host-a", topic).report_count > 0)
    assert observer.records.get("host-a", topic).last_seen_up > joined.last_seen_up


def test_a_reader_started_after_a_crash_shows_the_same_updated_time(target, observer, spawn, topic):
    victim = spawn("host-a")
    assert wait_for(lambda: observer.is_up(topic=topic, host="host-a"))
    assert wait_for(lambda: observer.records.get("host-a", topic).report_count > 0)
    victim.kill()
    assert wait_for(lambda: not observer.is_up(topic=topic, host="host-a"))
    seen_alive = observer.get_updated_time(topic=topic, host="host-a")
    with ServiceGroup(**target.kwargs()) as late:
        assert late.get_updated_time(topic=topic, host="host-a") == seen_alive
        assert seen_alive == late.records.get("host-a", topic).last_seen_up


def test_service_delete_withdraws_a_running_member(target, observer, spawn, topic):
    """The operator's service-delete expires the membership and deletes the
    record; the member's re-join then finds its record gone and withdraws."""
    member = spawn("host-a")
    assert wait_for(lambda: observer.is_up(topic=topic, host="host-a"))
    argv = ["service-delete", "--host", "host-a", "--topic", topic, "--driver", target.driver]
    argv += ["--records-url", target.records_url] + (["--url", target.url] if target.url else [])
    done = subprocess.run([sys.executable, "-m", "servicegroup", *argv], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert wait_for(lambda: member.saw("is gone")), member.tail()
    assert wait_for(lambda: not observer.is_up(topic=topic, host="host-a")), member.tail()
    assert observer.services(topic) == []
