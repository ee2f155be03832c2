"""Faults raw tooz 9.1 does not survive, caused for real on private servers.

After a memcached or Redis restart (every key gone), a ZooKeeper restart or
an etcd restart with its data wiped, tooz never re-joins a member and tells
nobody. Here every member must be back, and say so, within a bounded wait.
Each test gets a fresh server of its own (``fresh_server``), so restarting
it disturbs nobody else.
"""

from __future__ import annotations

import socket
import threading
import uuid

import pytest
from tooz import coordination

from functional.members import DOWN_TIME, BOUND, MemberProcess, Target, explain, wait_for
from servicegroup import errors
from servicegroup.api import ServiceGroup
from servicegroup.testing.selection import backend_params


def _target(name: str, server, tmp_path) -> Target:
    return Target(name, name, server.url, f"sqlite:///{tmp_path / 'records.sqlite'}")


@pytest.mark.parametrize(
    "name,wipe", backend_params(("mc", False), ("redis", True), ("zk", False), ("zk", True), ("etcd", True))
)
def test_members_rejoin_after_the_server_restarts_empty(fresh_server, tmp_path, name, wipe):
    server = fresh_server(name)
    tgt = _target(name, server, tmp_path)
    topic = f"fault-{uuid.uuid4().hex[:8]}"
    members = [MemberProcess(tgt, f"host-{i}", topic) for i in range(3)]
    observer = ServiceGroup(**tgt.kwargs())
    try:
        assert wait_for(lambda: observer.get_all(topic) == ["host-0", "host-1", "host-2"])
        # Listed is not joined: join() beats once after its entry is written,
        # and a restart in between fails that join (the member then exits).
        assert wait_for(lambda: all(m.saw("joined ") for m in members)), explain(members, server)
        server.restart(wipe=wipe)  # memcached forgets everything by nature
        if name == "zk" and not wipe:
            # ZooKeeper keeps sessions across a quick restart: nothing is lost,
            # and nothing must be reported lost.
            assert wait_for(lambda: observer.get_all(topic) == ["host-0", "host-1", "host-2"], bound=BOUND)
            return
        assert wait_for(lambda: all(m.saw("membership_lost") for m in members), bound=BOUND), (
            "every member must notice it was dropped:\n" + explain(members, server)
        )
        assert wait_for(lambda: observer.get_all(topic) == ["host-0", "host-1", "host-2"], bound=BOUND), (
            f"observer sees {observer.get_all(topic)}:\n" + explain(members, server)
        )
        assert wait_for(lambda: all(m.saw("membership_restored") for m in members)), explain(members, server)
    finally:
        for m in members:
            m.kill()
        observer.stop()


@pytest.mark.backend("zk")
def test_zookeeper_session_expiry_is_healed(fresh_server, tmp_path):
    """A member paused past its session timeout gets a new session from kazoo
    but no ephemeral node from tooz; the heartbeat check puts it back."""
    server = fresh_server("zk")
    tgt = _target("zk", server, tmp_path)
    topic = f"zkexp-{uuid.uuid4().hex[:8]}"
    member = MemberProcess(tgt, "host-a", topic)
    observer = ServiceGroup(**tgt.kwargs())
    try:
        assert wait_for(lambda: observer.is_up(topic=topic, host="host-a"))
        member.pause()
        assert wait_for(lambda: not observer.is_up(topic=topic, host="host-a"))
        member.resume()
        assert wait_for(lambda: observer.is_up(topic=topic, host="host-a"))
        assert wait_for(lambda: member.saw("membership_restored"))
    finally:
        member.kill()
        observer.stop()


@pytest.mark.backend("zk")
def test_zookeeper_leader_pseudo_member_is_not_a_host(zookeeper_server, tmp_path):
    tgt = _target("zk", zookeeper_server, tmp_path)
    topic = f"zklead-{uuid.uuid4().hex[:8]}"
    sg = ServiceGroup(**tgt.kwargs())
    elector = coordination.get_coordinator(zookeeper_server.url, b"elector")
    elector.start()
    try:
        sg.join("host-a", topic)
        elector.watch_elected_as_leader(topic.encode(), lambda event: None)
        elector.run_watchers()
        assert elector.get_leader(topic.encode()).get() == b"elector"
        sg._view.refresh(topic)
        assert sg.get_all(topic) == ["host-a"]
        assert not sg.is_up(topic=topic, host="leader")
    finally:
        elector.stop()
        sg.stop()


@pytest.mark.parametrize("name", backend_params("zk", "etcd", "consul"))
def test_push_backends_wake_the_view(request, backend_server, tmp_path, name):
    """Event-driven where the backend offers it: the view subscribes to child
    watches (ZooKeeper), prefix watches (etcd) and blocking queries (Consul)
    instead of only polling."""
    server = request.getfixturevalue("consul_agent") if name == "consul" else backend_server(name)
    tgt = _target(name, server, tmp_path)
    topic = f"push-{uuid.uuid4().hex[:8]}"
    observer = ServiceGroup(**tgt.kwargs(max_staleness=1.5))  # slow polls: push must do the work
    member = ServiceGroup(**tgt.kwargs())
    joined = threading.Event()
    try:
        observer.watch(topic, on_join=lambda t, h: joined.set())
        # The refresher thread and watch() race to subscribe; one does, the
        # other sees it under way: wait until it is in place.
        assert wait_for(lambda: observer._reader.subscribed(topic)), "no push subscription"
        member.join("host-a", topic)
        assert joined.wait(BOUND)
    finally:
        member.stop()
        observer.stop()


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize(
    "driver,scheme",
    backend_params(
        ("zk", "zookeeper"), ("mc", "memcached"), ("redis", "redis"), ("etcd", "etcd3+http"), ("consul", "consul")
    ),
)
def test_unreachable_server_at_start_is_a_typed_error_naming_host_and_port(tmp_path, driver, scheme):
    port = _closed_port()
    sg = ServiceGroup(
        driver=driver,
        url=f"{scheme}://127.0.0.1:{port}",
        records_url=f"sqlite:///{tmp_path / 'r.sqlite'}",
        report_interval=1,
        service_down_time=3,
    )
    try:
        with pytest.raises(errors.BackendUnavailable, match=f"127.0.0.1:{port}"):
            sg.join("host-a", "compute")
        assert sg.services() == [], "a failed join writes nothing"
        assert sg.is_up(topic="compute", host="host-a") is False
    finally:
        sg.stop()


def test_unreachable_database_is_a_typed_error_without_the_password(tmp_path):
    port = _closed_port()
    with pytest.raises(errors.BackendUnavailable) as info:
        ServiceGroup(driver="db", records_url=f"postgresql://nova:s3cret@127.0.0.1:{port}/nova")
    assert f"127.0.0.1:{port}" in str(info.value)
    assert "s3cret" not in str(info.value)


@pytest.mark.parametrize("driver", backend_params("zk", "mc", "redis", "etcd", "consul"))
def test_unknown_url_option_is_refused_by_name(tmp_path, driver):
    from servicegroup.driver_urls import DEFAULT_URLS

    with pytest.raises(errors.InvalidURL, match="bogus_option"):
        ServiceGroup(
            driver=driver,
            url=f"{DEFAULT_URLS[driver]}?bogus_option=1",
            records_url=f"sqlite:///{tmp_path / 'r.sqlite'}",
        )


@pytest.mark.parametrize("name", backend_params("mc", "redis"))
def test_server_gone_mid_run_keeps_threads_alive_and_follows_staleness(fresh_server, tmp_path, name):
    """Heartbeats keep retrying while the server is frozen; other members'
    is_up keeps the last view for up to service_down_time, then says down;
    once the server answers again, everything is back."""
    server = fresh_server(name)
    tgt = _target(name, server, tmp_path)
    topic = f"gone-{uuid.uuid4().hex[:8]}"
    member = ServiceGroup(**tgt.kwargs())
    observer = ServiceGroup(**tgt.kwargs())
    try:
        member.join("host-a", topic)
        assert wait_for(lambda: observer.is_up(topic=topic, host="host-a"))
        server.pause()
        assert wait_for(lambda: not observer.is_up(topic=topic, host="host-a"), bound=DOWN_TIME * 10), (
            "past service_down_time without a readable view, nobody is vouched for"
        )
        heart = member._members["host-a"]._thread
        assert heart is not None and heart.is_alive(), "the heartbeat thread must not die"
        server.resume()
        assert wait_for(lambda: observer.is_up(topic=topic, host="host-a"))
    finally:
        server.resume()
        member.stop()
        observer.stop()


@pytest.mark.backend("redis")
def test_nack_of_a_dead_host_does_not_extend_its_life_in_other_topics(redis_server, tmp_path):
    """tooz's Redis (and memcached) driver heartbeats inside start(). expire()
    removes a foreign host with a coordinator under that host's id, which
    used to refresh the dead host's beat key: alive again, for a full TTL,
    in every other topic. The key's remaining TTL must only go down."""
    import redis as redis_client
    from servicegroup.matchmaker import MatchMaker

    tgt = _target("redis", redis_server, tmp_path)
    a, b = f"nack-a-{uuid.uuid4().hex[:6]}", f"nack-b-{uuid.uuid4().hex[:6]}"
    members = [MemberProcess(tgt, "host-x", a), MemberProcess(tgt, "host-x", b)]
    sender = MatchMaker(ServiceGroup(**tgt.kwargs()))
    probe = coordination.get_coordinator(tgt.url.split("?")[0], b"probe")
    beat_key = probe._encode_beat_id(b"host-x")
    client = redis_client.Redis(host=redis_server.host, port=redis_server.port)
    try:
        assert wait_for(lambda: sender._sg.get_all(a) == ["host-x"] and sender._sg.get_all(b) == ["host-x"])
        for m in members:
            m.kill()  # crashed: nobody beats host-x any more
        before = client.pttl(beat_key)
        assert before > 0, "the beat key is still alive right after the crash"
        assert sender.expire(a, "host-x") is True
        after = client.pttl(beat_key)
        assert after <= before, f"the nack refreshed a dead host's heartbeat ({before} -> {after} ms)"
        assert wait_for(lambda: not sender._sg.is_up(topic=b, host="host-x"))
    finally:
        for m in members:
            m.kill()
        client.close()
        sender._sg.stop()


@pytest.mark.backend("mc")
def test_memcached_self_check_reads_the_group_key_only_when_the_group_changed(fresh_server):
    """tooz's memcached member lookup GETs every member's key (then CASes the
    group): done by every member every beat, O(N^2) per interval. The
    heartbeat's self-check asks for the group key's CAS token alone (one
    meta get, O(1) bytes) and reads the key itself only when it changed
    since the member last found itself in it."""
    from servicegroup.heartbeat import is_listed
    from servicegroup.testing.roundtrips import requests_of

    server = fresh_server("mc")
    coords = [coordination.get_coordinator(server.url, f"m{i}".encode()) for i in range(20)]
    try:
        for c in coords:
            c.start()
            c.join_group_create(b"big")
        with requests_of("mc") as calls:
            assert is_listed(coords[0], b"big", b"m0")
        assert calls == ["_misc_cmd", "_fetch_cmd"], "first check: the token, then the key"
        with requests_of("mc") as calls:
            assert is_listed(coords[0], b"big", b"m0")
        assert calls == ["_misc_cmd"], "unchanged group: the token alone"
        coords[5].leave_group(b"big").get()
        with requests_of("mc") as calls:
            assert is_listed(coords[0], b"big", b"m0")
        assert calls == ["_misc_cmd", "_fetch_cmd"], "changed group: read again"
        assert not is_listed(coords[0], b"big", b"nobody")
        with requests_of("mc") as calls:
            coords[0].get_member_capabilities(b"big", b"m0").get()
        assert len(calls) >= 19, "what tooz's own lookup costs (the peer)"
    finally:
        for c in coords:
            c.stop()


@pytest.mark.backend("zk")
def test_reading_a_topic_nobody_joined_creates_nothing_in_zookeeper(zookeeper_server, tmp_path):
    tgt = _target("zk", zookeeper_server, tmp_path)
    topic = f"never-{uuid.uuid4().hex[:8]}"
    sg = ServiceGroup(**tgt.kwargs())
    probe = coordination.get_coordinator(zookeeper_server.url, b"probe")
    probe.start()
    try:
        assert sg.is_up(topic=topic, host="host-a") is False
        sg._view.refresh(topic)
        assert topic.encode() not in probe.get_groups().get(), "a read must not create the group"
        sg.join("host-a", topic)  # once it exists, changes are pushed
        assert wait_for(lambda: sg._reader.subscribed(topic))
    finally:
        probe.stop()
        sg.stop()
