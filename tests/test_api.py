"""Nova's servicegroup semantics, pinned on an in-memory backend with a fake clock."""

from __future__ import annotations

import threading

import pytest

from tooz import coordination

from servicegroup import errors
from servicegroup import forksafe
from servicegroup.api import ServiceGroup
from servicegroup.heartbeat import MEMBERSHIP_LOST, MEMBERSHIP_RESTORED
from tests.fakes import TTL


def test_joined_service_is_up_and_listed(make_sg):
    sg = make_sg()
    svc = sg.join("host-a", "compute", binary="nova-compute")
    assert sg.is_up(svc)
    assert sg.is_up(topic="compute", host="host-a")
    assert sg.get_all("compute") == ["host-a"]
    assert sg.get_one("compute") == "host-a"


def test_forced_down_wins_over_a_live_membership(make_sg):
    sg = make_sg()
    sg.join("host-a", "compute")
    sg.force_down("host-a", "compute")
    assert not sg.is_up(topic="compute", host="host-a")
    assert sg.get_all("compute") == []
    sg.force_down("host-a", "compute", down=False)
    assert sg.is_up(topic="compute", host="host-a")


def test_forced_down_on_the_passed_record_wins(make_sg):
    sg = make_sg()
    svc = sg.join("host-a", "compute")
    fenced = sg.records.set_forced_down("host-a", "compute", True)
    assert not sg.is_up(fenced)
    assert svc.forced_down is False


def test_liveness_uses_last_heartbeat_not_updated_at(make_sg, clock):
    sg = make_sg()
    sg.join("host-a", "compute")
    clock.advance(TTL + 1)  # no heartbeat: the member's TTL lapses
    assert not sg.is_up(topic="compute", host="host-a")
    enabled = sg.enable("host-a", "compute")  # bumps updated_at, like nova's enable
    assert enabled.updated_at is not None
    clock.advance(1)
    assert not sg.is_up(topic="compute", host="host-a")
    assert not sg.is_up(enabled)


def test_heartbeats_keep_a_service_up_past_the_ttl(make_sg, clock):
    sg = make_sg()
    sg.join("host-a", "compute")
    for _ in range(10):
        clock.advance(1.0)
        sg.heartbeat()
    assert sg.is_up(topic="compute", host="host-a")


def test_first_heartbeat_is_sent_at_once(tmp_path, server, clock):
    beat = threading.Event()
    server.on_heartbeat.append(beat.set)
    sg = ServiceGroup(
        driver="mc",
        records_url=f"sqlite:///{tmp_path / 'r.sqlite'}",
        report_interval=3600,
        service_down_time=7200,
        coordinator_factory=server.factory,
        clock=clock,
    )
    try:
        sg.join("host-a", "compute")
        # An hour-long interval: only an immediate first beat can arrive here.
        assert beat.wait(30)
    finally:
        sg.stop()


@pytest.mark.parametrize("interval,down", [(10, 10), (10, 5)])
def test_service_down_time_not_above_report_interval_is_refused(tmp_path, interval, down):
    with pytest.raises(errors.ConfigError, match=r"at least 25"):
        ServiceGroup(records_url=f"sqlite:///{tmp_path / 'r.sqlite'}", report_interval=interval, service_down_time=down)


def test_unknown_service_is_down_not_an_error(make_sg):
    sg = make_sg()
    assert sg.is_up(topic="nowhere", host="nobody") is False
    assert sg.get_all("nowhere") == []
    assert sg.get_one("nowhere") is None


def test_lost_membership_is_rejoined_and_reported(make_sg, server):
    sg = make_sg()
    events = []
    sg.on_membership_event(lambda ev, topic, host: events.append((ev, topic, host)))
    sg.join("host-a", "compute")
    server.restart()  # memcached restart: every key gone, tooz would never re-join
    sg.heartbeat()
    sg._view.dispatcher.drain()
    assert events == [(MEMBERSHIP_LOST, "compute", "host-a"), (MEMBERSHIP_RESTORED, "compute", "host-a")]
    assert "host-a" in {m.decode() for m in server.live(b"compute")}


def test_heartbeat_failures_are_retried_not_fatal(make_sg, server, clock):
    sg = make_sg()
    sg.join("host-a", "compute")
    server.down = True
    member = sg._members["host-a"]
    with pytest.raises(errors.BackendUnavailable):  # the thread's loop logs and retries this
        member.beat()
    server.down = False
    member.beat()
    assert sg.is_up(topic="compute", host="host-a")


def test_unreadable_backend_keeps_last_view_until_grace(make_sg, server, clock):
    sg = make_sg()
    sg.join("host-a", "compute")
    assert sg.is_up(topic="compute", host="host-a")
    server.down = True
    clock.advance(TTL - 0.5)
    assert sg.is_up(topic="compute", host="host-a"), "a short outage must not flip services down"
    clock.advance(1.0)
    assert not sg.is_up(topic="compute", host="host-a"), "past service_down_time nobody is vouched for"


def test_watch_reports_join_and_leave_off_the_caller_thread(make_sg):
    sg = make_sg()
    seen = []
    caller = threading.current_thread()
    sg.watch(
        "compute",
        on_join=lambda t, h: seen.append(("join", h, threading.current_thread() is caller)),
        on_leave=lambda t, h: seen.append(("leave", h, threading.current_thread() is caller)),
    )
    sg.join("host-a", "compute")
    sg._view.refresh("compute")
    sg.leave("host-a", "compute")
    sg._view.refresh("compute")
    sg._view.dispatcher.drain()
    assert seen == [("join", "host-a", False), ("leave", "host-a", False)]


def test_leave_then_rejoin_between_two_polls_is_not_lost(make_sg):
    sg = make_sg()
    seen = []
    sg.join("host-a", "compute")
    sg.watch("compute", on_join=lambda t, h: seen.append(("join", h)), on_leave=lambda t, h: seen.append(("leave", h)))
    sg.leave("host-a", "compute")
    sg.join("host-a", "compute")
    sg._view.refresh("compute")
    sg._view.dispatcher.drain()
    assert seen == [("leave", "host-a"), ("join", "host-a")]


def test_forked_child_does_not_share_the_parent_session(make_sg):
    sg = make_sg()
    sg.join("host-a", "compute")
    member = sg._members["host-a"]
    parent_coord = member.coordinator()
    forksafe.after_fork_in_child()  # what a forked child runs first
    child_coord = member.coordinator()
    assert child_coord is not parent_coord
    assert member.topics == [], "the child must not heartbeat the parent's topics"


@pytest.mark.parametrize("host", ["", " ", "x" * 256, b"\xff\xfe", "bad\nhost"])
def test_bad_host_names_are_refused_and_write_nothing(make_sg, host):
    sg = make_sg()
    with pytest.raises(errors.InvalidName):
        sg.join(host, "compute")
    assert sg.services() == []


def test_a_refused_join_leaves_no_record(make_sg, server):
    sg = make_sg()
    server.refuse_joins = True
    with pytest.raises(errors.BackendUnavailable):
        sg.join("host-a", "compute")
    assert sg.services() == []


def test_unreachable_backend_at_join_writes_nothing(make_sg, server):
    sg = make_sg()
    server.down = True
    with pytest.raises(errors.BackendUnavailable, match="unreachable"):
        sg.join("host-a", "compute")
    assert sg.services() == []


def test_services_lists_records_with_liveness(make_sg, clock):
    sg = make_sg()
    sg.join("host-a", "compute", binary="nova-compute")
    sg.join("host-b", "compute", binary="nova-compute")
    sg._members["host-b"].stop()  # clean leave
    listed = {s.host: s for s in sg.services("compute")}
    assert listed["host-a"].up is True
    assert listed["host-b"].up is False
    assert listed["host-a"].binary == "nova-compute"
    assert sg.get_updated_time(topic="compute", host="host-a") is not None


def test_expire_hides_a_host_until_it_rejoins(make_sg):
    sg = make_sg()
    sg.join("host-a", "compute")
    sg.join("host-b", "compute")
    sg.expire("compute", "host-a")
    assert sg.get_all("compute") == ["host-b"]
    sg.heartbeat()  # host-a's own loop notices and re-joins with a new incarnation
    sg._view.refresh("compute")
    assert sg.get_all("compute") == ["host-a", "host-b"]


def test_passwords_never_reach_errors_or_the_log(make_sg, server, caplog):
    """Client libraries echo URLs in their errors; ours pass through redaction."""
    sg = make_sg()
    sg.join("host-a", "compute")
    original = server.check

    def leaky_check() -> None:
        raise ConnectionError("refused (connecting to redis://admin:hunter2@10.0.0.5:6379)")

    server.check = leaky_check
    with caplog.at_level("DEBUG"):
        with pytest.raises(errors.ServiceGroupError) as info:
            sg._members["host-a"].beat()
        sg._view.refresh("compute")
    server.check = original
    assert "hunter2" not in str(info.value) and "admin:***@" in str(info.value)
    assert "hunter2" not in caplog.text and "admin:***@" in caplog.text


def test_a_slow_read_is_aged_from_when_it_started(clock):
    from servicegroup.membership import MembershipView

    def slow_fetch(topic):
        clock.advance(2.0)  # the backend took two seconds to answer
        return {"host-a": {}}

    view = MembershipView(slow_fetch, max_staleness=0.5, grace=3.0, clock=clock, start_thread=False)
    view.refresh("compute")
    assert view.age("compute") == 2.0, "what it saw was true when the read started"


def test_last_seen_is_the_backends_heartbeat_time_where_it_reports_one(clock):
    """A backend that reports heartbeat times (our SQL driver) gives the exact
    last beat, and it stays exact once the host is gone; others give the
    last time a read listed the host."""
    from servicegroup.membership import Members, MembershipView

    answers = [Members({"host-a": {}, "host-b": {}}, beats={"host-a": 1000.0}), Members({})]
    view = MembershipView(
        lambda topic: answers.pop(0),
        max_staleness=0.5,
        grace=3.0,
        clock=clock,
        wall_clock=lambda: 2000.0,
        start_thread=False,
    )
    view.refresh("compute")
    assert (view.last_seen("compute", "host-a"), view.last_seen("compute", "host-b")) == (1000.0, 2000.0)
    view.refresh("compute")  # both gone: the times stay what they were
    assert (view.last_seen("compute", "host-a"), view.last_seen("compute", "host-b")) == (1000.0, 2000.0)


def test_force_down_reaches_the_ring_without_a_leave(make_sg):
    """Fencing changes what members() answers while the host keeps beating:
    on_change fires, and a Partitioner drops the host (forced_down wins)."""
    sg = make_sg()
    sg.join("host-a", "workers")
    sg.join("host-b", "workers")
    changes: list[str] = []
    sg.watch("workers", on_change=changes.append)
    p = sg.partitioner("workers", host="host-a", keys=[f"k{i}" for i in range(200)])
    assert p.members() == ["host-a", "host-b"]
    sg._view.dispatcher.drain()
    changes.clear()
    sg.force_down("host-b", "workers")
    sg._view.dispatcher.drain()
    assert changes == ["workers"]
    assert p.members() == ["host-a"] and len(p.owned()) == 200
    sg.force_down("host-b", "workers", down=False)
    sg._view.dispatcher.drain()
    assert p.members() == ["host-a", "host-b"]


def test_join_after_stop_is_refused_and_starts_nothing(make_sg):
    sg = make_sg()
    sg.stop()
    with pytest.raises(errors.ServiceGroupError, match="stopped"):
        sg.join("host-a", "compute")
    assert sg._members == {}


def test_a_join_that_fails_after_landing_is_taken_back(make_sg, server):
    """The join reached the backend, then its first beat failed: the caller
    gets the error, and no member entry is left for the coordinator to keep
    alive (a ghost: 'up' in a topic whose join raised)."""
    sg = make_sg()
    sg.join("host-a", "compute")

    def fail() -> None:
        raise coordination.ToozConnectionError("beat lost")

    server.on_heartbeat.append(fail)
    with pytest.raises(errors.BackendUnavailable):
        sg.join("host-a", "scheduler")
    server.on_heartbeat.clear()
    assert b"host-a" not in server.live(b"scheduler")
    assert sg.records.get("host-a", "scheduler") is None, "and no record"


def test_a_leave_the_backend_missed_is_retried_by_the_next_beat(make_sg, server):
    sg = make_sg()
    sg.join("host-a", "compute")
    sg.join("host-a", "scheduler")
    server.down = True
    with pytest.raises(errors.BackendUnavailable):
        sg.leave("host-a", "scheduler")
    server.down = False
    assert b"host-a" in server.live(b"scheduler"), "still listed: the backend never heard"
    sg.heartbeat("host-a")
    assert b"host-a" not in server.live(b"scheduler")
    assert b"host-a" in server.live(b"compute")


def test_a_topic_nobody_reads_any_more_stops_being_polled(clock):
    """A dead matchmaker direct name ('compute.host-9') read once must not
    cost a backend read per interval forever; watched topics stay."""
    from servicegroup.membership import MembershipView

    reads: list[str] = []
    forgotten: list[str] = []

    def fetch(topic):
        reads.append(topic)
        return {}

    view = MembershipView(
        fetch,
        max_staleness=0.5,
        grace=3.0,
        clock=clock,
        start_thread=False,
        on_forget=forgotten.append,
        forget_after=60.0,
    )
    view.members("compute.host-9")
    view.watch("compute")
    clock.advance(61.0)
    reads.clear()
    view.refresh_all()
    assert reads == ["compute"] and forgotten == ["compute.host-9"]
    assert view.members("compute.host-9") == {}, "asked again: a first read again"


def test_liveness_unknown_says_why_when_the_view_cannot_vouch(make_sg, server, clock):
    sg = make_sg()
    sg.join("host-a", "compute")
    assert sg.liveness_unknown("compute") is None
    server.down = True
    clock.advance(TTL + 1)  # past grace: nobody can be vouched for
    why = sg.liveness_unknown("compute")
    assert why and "127.0.0.1:1" in why and "unreachable" in why
    assert sg.is_up(topic="compute", host="host-a") is False, "is_up stays a plain False"
    server.down = False
    sg._view.refresh("compute")
    assert sg.liveness_unknown("compute") is None
