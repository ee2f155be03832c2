"""Races and hangs on the liveness path, pinned deterministically.

Each test provokes the interleaving it is about by doing the "concurrent"
step from inside a hook (a seen-check, a fetch, a records read), so no test
depends on thread scheduling or on wall-clock time.
"""

from __future__ import annotations

import threading
import time

import pytest

from servicegroup import backend, errors
from servicegroup import forksafe
from servicegroup.heartbeat import Member
from servicegroup.membership import MembershipView
from tests.fakes import FakeServer


def _listed(server: FakeServer, topic: str, host: str) -> bool:
    try:
        return host.encode() in server.live(topic.encode())
    except Exception:
        return False


def test_leave_during_a_heartbeat_check_is_not_undone_by_the_heal(server):
    """The heartbeat snapshots its topics, then checks each one. A leave()
    landing between the two used to look like a lost membership: the heal
    re-joined the topic the caller had just left (and reported a loss)."""
    events = []
    member: Member

    def seen(topic, host, incarnation):
        if topic == "a":  # while checking "a", another thread leaves "b"
            member.leave("b")
        return False

    member = Member(
        "fake://",
        "host-1",
        report_interval=1.0,
        factory=server.factory,
        on_event=lambda ev, t, h: events.append((ev, t)),
        seen=seen,
        background=False,
    )
    member.join("a")
    member.join("b")
    member.beat()
    assert not _listed(server, "b", "host-1"), "a topic left during a beat must stay left"
    assert _listed(server, "a", "host-1")
    assert events == []
    member.stop()


def test_join_helper_bounds_its_heartbeat(server, monkeypatch):
    """join_now's beat went straight to the driver: tooz's ZooKeeper
    heartbeat waits forever while kazoo reconnects, hanging join() and the
    heal path of the heartbeat thread."""
    release = threading.Event()
    factory = server.factory

    def hanging_factory(url, member_id):
        coord = factory(url, member_id)
        coord.heartbeat = lambda: release.wait()  # type: ignore[method-assign]
        return coord

    monkeypatch.setattr(backend, "CALL_TIMEOUT", 0.01)
    member = Member("fake://", "host-1", report_interval=1.0, factory=hanging_factory, background=False)
    outcome = []

    def run():
        try:
            member.join("a")
            outcome.append("joined")
        except Exception as exc:
            outcome.append(type(exc).__name__)

    t = threading.Thread(target=run, daemon=True)
    t.start()
    t.join(30)  # a liveness guard for a hang, not a timing assertion
    release.set()
    assert outcome == ["BackendUnavailable"]


def test_fence_is_not_undone_by_a_concurrent_flags_refresh(make_sg):
    """The refresher reads the flags, force_down() commits and updates the
    cache, then the refresher stores its older read: the fence vanished
    until the next refresh, so is_up() said up right after force_down()."""
    sg = make_sg()
    sg.join("host-a", "compute")
    real_flags = sg.records.flags

    def flags_read_before_the_fence(**kw):
        stale = real_flags(**kw)
        sg.force_down("host-a", "compute")  # lands while the read is in flight
        return stale

    sg.records.flags = flags_read_before_the_fence  # type: ignore[method-assign]
    sg._flags.refresh()
    assert not sg.is_up(topic="compute", host="host-a")


def test_an_older_read_never_replaces_a_newer_one(clock):
    """Two refreshes of one topic in flight (refresher thread and a reader):
    the one that started first but committed last overwrote the newer
    snapshot, and its watchers saw a spurious leave then a second join."""
    reads = [{"h1": {"incarnation": "1"}}]
    calls = []
    view: MembershipView

    def fetch(topic):
        calls.append(topic)
        snapshot = dict(reads[-1])
        if len(calls) == 2:
            # while this (older) read is in flight, h2 joins and a newer read commits
            reads.append({"h1": {"incarnation": "1"}, "h2": {"incarnation": "2"}})
            view.refresh(topic)
        return snapshot

    view = MembershipView(fetch, max_staleness=0.5, grace=3.0, clock=clock, start_thread=False)
    events = []
    view.watch("t", on_join=lambda t, h: events.append(("join", h)), on_leave=lambda t, h: events.append(("leave", h)))
    view.refresh("t")
    view.dispatcher.drain()
    assert sorted(view.members("t")) == ["h1", "h2"]
    assert events == [("join", "h2")]
    view.stop()


def _held_by_a_dead_thread(lock) -> None:
    """Leave *lock* acquired by a thread that no longer exists: what a forked
    child inherits when a parent thread held the lock at fork time."""
    t = threading.Thread(target=lock.acquire, daemon=True)
    t.start()
    t.join()


def _finishes(fn) -> list:
    out: list = []

    def run():
        try:
            out.append(fn())
        except Exception as exc:
            out.append(exc)

    t = threading.Thread(target=run, daemon=True)
    t.start()
    t.join(30)  # a liveness guard for a deadlock, not a timing assertion
    return out


def test_forked_child_does_not_block_on_locks_the_parent_held(make_sg):
    """The pid check ran inside the lock: a child forked while a parent
    thread held it (the refresher connecting, the heartbeat reconnecting)
    blocked forever on its first is_up() or join()."""
    sg = make_sg()
    sg.join("host-a", "compute")
    _held_by_a_dead_thread(sg._lock)
    _held_by_a_dead_thread(sg._members["host-a"]._lock)
    _held_by_a_dead_thread(sg._members["host-a"]._ops)
    forksafe.after_fork_in_child()  # what a forked child runs first
    assert _finishes(lambda: sg.join("host-b", "compute").host) == ["host-b"]
    assert _finishes(lambda: sg.join("host-a", "compute").host) == ["host-a"]
    sg._view._snapshots.clear()  # force a read through the (child's) reader
    assert _finishes(lambda: sg.is_up(topic="compute", host="host-b")) == [True]


def test_view_restarts_its_refresher_after_a_fork(clock):
    """Threads do not survive fork(): a child's view kept answering from the
    parent's last snapshot until it was `grace` old, so hosts that joined
    after the fork read as down for up to service_down_time."""
    data = {"h1": {"incarnation": "1"}}
    fetched = threading.Event()

    def fetch(topic):
        fetched.set()
        return dict(data)

    view = MembershipView(fetch, max_staleness=0.5, grace=3.0, clock=clock, start_thread=True)
    try:
        assert sorted(view.members("t")) == ["h1"]
        dead = threading.Thread(target=lambda: None)
        dead.start()
        dead.join()
        view._stopped.set()  # the parent's refresher stops ...
        view._wake.set()
        view._thread.join(30)
        view._stopped.clear()
        view._thread = dead  # ... and the child inherits a dead Thread object
        data["h2"] = {"incarnation": "2"}
        fetched.clear()
        clock.advance(1.0)  # older than max_staleness, younger than grace
        view.members("t")
        assert fetched.wait(30), "the child's view never refreshed"
        assert view._thread is not dead and view._thread.is_alive()
    finally:
        view.stop()


def test_a_real_fork_while_parent_threads_hold_every_lock_does_not_deadlock_the_child(make_sg):
    """os.fork() while parent threads hold the facade's, the member's, the
    view's and the dispatcher's locks: the child reads, joins and stops
    (its own sessions, fresh locks) and exits; the parent is untouched."""
    import os

    sg = make_sg()
    sg.join("host-a", "compute")
    member = sg._members["host-a"]
    locks = [
        sg._lock,
        sg._flags._lock,
        sg._reader._lock,
        member._lock,
        member._ops,
        sg._view._lock,
        sg._view.dispatcher._lock,
    ]
    held, release = threading.Event(), threading.Event()

    def hold() -> None:
        for lock in locks:
            lock.acquire()
        held.set()
        release.wait(30)
        for lock in reversed(locks):
            lock.release()

    holder = threading.Thread(target=hold, daemon=True)
    holder.start()
    assert held.wait(10)
    pid = os.fork()
    if pid == 0:  # the child: no pytest here, just an exit code
        code = 1
        try:
            sg._view._snapshots.clear()
            ok = sg.is_up(topic="compute", host="host-a") and sg.join("host-b", "compute").host == "host-b"
            sg.stop()
            code = 0 if ok else 2
        finally:
            os._exit(code)
    release.set()
    holder.join(10)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            break
        time.sleep(0.05)
    else:
        os.kill(pid, 9)
        os.waitpid(pid, 0)
        pytest.fail("the forked child deadlocked")
    assert os.waitstatus_to_exitcode(status) == 0
    assert sg.is_up(topic="compute", host="host-a"), "the parent goes on as before"


def test_a_session_loss_healed_by_an_overrunning_heartbeat_is_still_reported(server, monkeypatch):
    """Consul's and the SQL driver's heartbeat replace a lost session and
    re-join by themselves, counting it in ``session_lost_count``. When that
    heartbeat overran CALL_TIMEOUT (a loaded host), the beat failed, the
    recovery finished in the background, and the next beat compared the
    count with itself: the loss (and the restore) went unreported."""
    events = []
    member = Member(
        "fake://",
        "host-1",
        report_interval=1.0,
        factory=server.factory,
        on_event=lambda ev, t, h: events.append(ev),
        background=False,
    )
    member.join("a")
    coord = member.coordinator()
    coord.session_lost_count = 0  # type: ignore[attr-defined]
    release, recovered = threading.Event(), threading.Event()
    beat = coord.heartbeat

    def slow_recovering_heartbeat() -> float:
        release.wait(30)
        coord.session_lost_count += 1  # type: ignore[attr-defined]
        recovered.set()
        return beat()  # re-listed, as the driver's own recovery does

    monkeypatch.setattr(backend, "CALL_TIMEOUT", 0.01)
    coord.heartbeat = slow_recovering_heartbeat  # type: ignore[method-assign]
    with pytest.raises(errors.BackendUnavailable):
        member.beat()  # the bound gives up; the heartbeat goes on
    release.set()
    assert recovered.wait(30)  # a liveness guard, not a timing
    coord.heartbeat = beat  # type: ignore[method-assign]
    member.beat()
    assert events == ["membership_lost", "membership_restored"]
    member.stop()
