"""Refreshing a big group costs O(1) round trips (issue 13; docs/scale.md).

Each test fills a group with many members written straight into the real
server (one client, tooz's own encoding, so no test needs hundreds of
sessions), then counts the requests the reader's client sends for one
refresh. The counts are exact and do not depend on the group's size; the
peer figure (tooz's own read) is asserted to grow with it, so a test would
notice tooz doing the cheap thing itself one day.
"""

from __future__ import annotations

from collections.abc import Iterator
import contextlib
import threading
from typing import Any
import uuid

import pytest
from tooz import coordination
from tooz import utils as tooz_utils

from servicegroup import driver_urls
from servicegroup.backend import default_factory
from servicegroup.heartbeat import Member
from servicegroup.reader import Reader
from servicegroup.testing.roundtrips import counting, requests_of

N = 300


def _reader(url: str) -> Reader:
    return Reader(url, default_factory, background=False)


# -- ZooKeeper ---------------------------------------------------------------


@pytest.fixture
def zk_group(zookeeper_server) -> Iterator[tuple[str, str, Any]]:
    """A topic with N members (ephemeral nodes of one writer session)."""
    from kazoo.client import KazooClient

    topic = f"big-{uuid.uuid4().hex[:8]}"
    writer = KazooClient(hosts=f"{zookeeper_server.host}:{zookeeper_server.port}")
    writer.start(timeout=30)
    probe = default_factory(zookeeper_server.url, b"probe")
    path = probe._path_group(topic.encode())
    writer.ensure_path(path)
    pending = [writer.create_async(f"{path}/m{i}", tooz_utils.dumps({"n": i}), ephemeral=True) for i in range(N)]
    for p in pending:
        p.get(timeout=30)
    try:
        yield topic, path, writer
    finally:
        writer.stop()
        writer.close()


@pytest.mark.backend("zk")
def test_zookeeper_steady_refresh_is_one_request_whatever_the_group_size(zookeeper_server, zk_group):
    from kazoo.client import KazooClient
    from kazoo.protocol.states import EventType, KeeperState, WatchedEvent

    topic, path, writer = zk_group
    r = _reader(zookeeper_server.url)
    try:
        r.coordinator()  # connected (tooz's start makes its namespace node)
        with counting(KazooClient, "_call") as calls:
            first = r.fetch(topic)
        assert len(first) == N and first["m7"] == {"n": 7}
        assert len(calls) == N + 2, "first read: exists, children, one pipelined get per member"
        with counting(KazooClient, "_call") as calls:
            again = r.fetch(topic)
        assert again == first
        assert calls == ["_call"], "steady refresh: one exists of the group node"

        writer.create(f"{path}/new", tooz_utils.dumps({"n": "new"}), ephemeral=True)
        writer.set(f"{path}/m3", tooz_utils.dumps({"n": "updated"}))
        writer.delete(f"{path}/m4")
        with counting(KazooClient, "_call") as calls:
            changed = r.fetch(topic)
        assert changed["new"] == {"n": "new"} and changed["m3"] == {"n": "updated"} and "m4" not in changed
        assert len(changed) == N
        # exists + children + the new child + the updated one (+ the deleted
        # one, whose data watch fired): never one read per member.
        assert len(calls) <= 5

        # kazoo calls data watches with no path when a session ends: the
        # cache then trusts nothing it holds and reads everything again.
        r._zk_caches[topic]._changed(WatchedEvent(EventType.NONE, KeeperState.EXPIRED_SESSION, None))
        with counting(KazooClient, "_call") as calls:
            assert r.fetch(topic) == changed
        assert len(calls) == N + 2
    finally:
        r.close()


@pytest.mark.backend("zk")
def test_zookeeper_peer_tooz_reads_every_member(zookeeper_server, zk_group):
    from kazoo.client import KazooClient

    topic, _, _ = zk_group
    coord = default_factory(zookeeper_server.url, b"peer")
    coord.start()
    try:
        with counting(KazooClient, "_call") as calls:
            got = coord.get_members_with_capabilities(topic.encode()).get(timeout=30)
        assert len(got) == N and len(calls) >= N, "tooz: one synchronous get per member"
    finally:
        coord.stop()


# -- memcached -----------------------------------------------------------------


@pytest.mark.backend("mc")
def test_memcached_refresh_is_two_requests_whatever_the_group_size(memcached_server):
    from pymemcache.client.base import Client

    topic = f"big-{uuid.uuid4().hex[:8]}"
    writer = default_factory(memcached_server.url, b"writer")
    writer.start()
    try:
        writer.create_group(topic.encode()).get(timeout=10)
        members = {f"m{i}".encode(): {b"capabilities": {"n": i}} for i in range(N)}
        members[b"dead"] = {b"capabilities": {}}
        writer.client.set(writer._encode_group_id(topic.encode()), members)
        beats = {writer._encode_member_id(m): writer.STILL_ALIVE for m in members if m != b"dead"}
        writer.client.set_many(beats, noreply=False)  # stored before anyone reads
        r = _reader(memcached_server.url)
        try:
            r.fetch(topic)  # connects, and sweeps the dead member
            ops = ("_fetch_cmd", "_store_cmd", "_misc_cmd")
            with counting(Client, *ops) as calls:
                got = r.fetch(topic)
            assert len(got) == N and got["m5"] == {"n": 5} and "dead" not in got
            assert calls == ["_fetch_cmd", "_fetch_cmd"], "the group key, then one multi-get"
            with counting(Client, *ops) as calls:
                writer.get_members(topic.encode()).get(timeout=30)
            assert len(calls) >= N, "tooz's own read: one GET per member"
        finally:
            r.close()
    finally:
        writer.stop()


# -- Redis, etcd, SQL: tooz's reads (or ours) are already O(1) ------------------


def _grow(coords: list[Any], topic: bytes, url: str, n: int) -> None:
    for i in range(len(coords), n):
        c = default_factory(url, f"m{i}".encode())
        c.start(start_heart=False)
        with contextlib.suppress(coordination.GroupAlreadyExist):
            c.create_group(topic).get(timeout=10)
        c.join_group(topic, {"n": i}).get(timeout=10)
        c.heartbeat()
        coords.append(c)


def _requests_per_read(url: str, cls: type, names: tuple[str, ...], sizes: tuple[int, ...]) -> list[int]:
    topic = f"big-{uuid.uuid4().hex[:8]}"
    coords: list[Any] = []
    r = _reader(url)
    counts = []
    try:
        for n in sizes:
            _grow(coords, topic.encode(), url, n)
            assert len(r.fetch(topic)) == n
            with counting(cls, *names) as calls:
                assert len(r.fetch(topic)) == n
            counts.append(len(calls))
    finally:
        r.close()
        _stop_all(coords)
    return counts


def _stop_all(coords: list[Any]) -> None:
    """Stop in parallel: each tooz executor takes a second to shut down."""

    def stop(c: Any) -> None:
        with contextlib.suppress(Exception):
            c.stop()

    threads = [threading.Thread(target=stop, args=(c,)) for c in coords]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


@pytest.mark.backend("redis")
def test_redis_refresh_requests_do_not_grow_with_the_group(redis_server):
    from redis.connection import AbstractConnection

    counts = _requests_per_read(redis_server.url, AbstractConnection, ("send_packed_command",), (2, 12))
    assert counts[0] == counts[1] and counts[0] <= 6, counts


@pytest.mark.backend("etcd")
def test_etcd_refresh_is_one_range_read(etcd_server):
    from etcd3gw.client import Etcd3Client

    counts = _requests_per_read(etcd_server.url, Etcd3Client, ("post",), (2, 12))
    assert counts == [1, 1], counts


@pytest.mark.backend("db")
@pytest.mark.parametrize("dialect", ["postgresql", "mysql"])
def test_sql_refresh_is_one_select(sql_url, dialect):
    from sqlalchemy.engine import Connection

    url = driver_urls.records_to_sql_url(sql_url(dialect))
    counts = _requests_per_read(url, Connection, ("_execute_context",), (2, 12))
    assert counts == [1, 1], counts


# -- heartbeats: one write and one O(1) read ----------------------------------


@pytest.mark.parametrize(
    "driver",
    [
        pytest.param("zk", marks=pytest.mark.backend("zk")),
        pytest.param("mc", marks=pytest.mark.backend("mc")),
        pytest.param("redis", marks=pytest.mark.backend("redis")),
        pytest.param("etcd", marks=pytest.mark.backend("etcd")),
    ],
)
def test_a_heartbeat_is_one_write_and_one_read(driver, backend_server):
    """The beat's write and its self-check, nothing per member of the group
    (the group holds other members too, so an O(N) check would show)."""
    url = backend_server(driver).url
    topic = f"beat-{uuid.uuid4().hex[:8]}"
    others: list[Any] = []
    member = Member(url, "h-self", report_interval=1.0, background=False)
    try:
        _grow(others, topic.encode(), url, 5)
        member.join(topic)
        member.beat()
        with requests_of(driver) as calls:
            member.beat()
        assert len(calls) == 2, calls
    finally:
        member.stop()
        _stop_all(others)
