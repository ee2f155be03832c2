"""The test servers work, and what RAW tooz 9.1 does when they fail.

These tests use tooz directly (no servicegroup code), on the private
servers of ``functional/conftest.py``. They prove each fixture (start,
restart on the same port, wipe, pause/resume, stop leaves nothing) and pin
down, per backend, what tooz does after each fault, so the library's
self-healing has a measured baseline. Observed with tooz 9.1 on ZooKeeper
3.8.0, memcached 1.6.18, Redis 7.0, etcd 3.4.23:

- memcached restart: every key is gone, so the group is gone
  (``GroupNotCreated``). The member's heartbeat fails once (broken pipe),
  then succeeds again, re-setting only its own "alive" key: tooz never
  re-creates the group nor re-joins. Nobody is told.
- memcached / Redis / etcd TTL lapse (the member stops heartbeating past
  ``timeout``): others stop seeing it; when its heartbeats resume (they
  return normally) it stays out of the group for good.
- Redis restart with the append-only file: members survive. Redis restart
  without data (``wipe``): like memcached, ``GroupNotCreated`` forever,
  heartbeats succeed.
- etcd restart with its data dir: members survive (etcd extends every
  lease on start). etcd wiped: ``GroupNotCreated``; a revoked lease: the
  member's keys vanish at once, yet ``heartbeat()`` keeps returning normally
  (refreshing a dead lease raises nothing): never re-joined.
- ZooKeeper restart with its data: the session survives a short outage
  (kazoo reconnects with the same session), members stay. Session expiry
  (forced here by closing the session from a second client, as a pause of
  the member past its timeout would): the ephemeral node is gone; kazoo
  opens a new session, ``heartbeat()`` keeps succeeding, tooz never
  re-joins. ZooKeeper wiped: the new server refuses clients that saw a
  later zxid; kazoo stays SUSPENDED retrying forever, calls time out
  (``OperationTimedOut``) and ``coordinator.stop()`` blocks forever in
  ``leave_group`` (tests close the kazoo client directly).
"""

from __future__ import annotations

import contextlib
import math
import os
import socket
import time
import uuid

import pytest
import sqlalchemy
from tooz import coordination

from servicegroup.testing import servers
from servicegroup.testing.selection import backend_params
from functional.members import wait_for

BACKENDS = ["zk", "mc", "redis", "etcd"]
#: Membership TTL / session timeout for raw tooz, in seconds.
TTL = 2


def answers(server) -> bool:
    try:
        return server.ready()
    except OSError:
        return False


def members(coord, group: bytes):
    """The member set, or the exception class name tooz raised."""
    try:
        return set(coord.get_members(group).get(timeout=5))
    except Exception as e:
        return type(e).__name__


def beat(coord, times: int = 3) -> None:
    """Heartbeat a few times, as tooz's heartbeat thread would, ignoring the
    transient errors (a reconnect) that thread would log and retry."""
    for _ in range(times):
        with contextlib.suppress(Exception):
            coord.heartbeat()
        time.sleep(TTL / 4)


@contextlib.contextmanager
def coordinator(url: str, member: bytes, ttl: int = TTL):
    coord = coordination.get_coordinator(f"{url}?timeout={ttl}", member)
    coord.start(start_heart=False)
    try:
        yield coord
    finally:
        if getattr(coord, "_zk_unreachable", False):
            coord._coord.stop()  # tooz's stop() would block in leave_group
            coord._coord.close()
        else:
            with contextlib.suppress(Exception):
                coord.stop()


@contextlib.contextmanager
def joined(url: str, ttl: int = TTL):
    """Member ``a`` joined to a new group; observer ``b``; yields (a, b, group)."""
    group = uuid.uuid4().hex.encode()
    with coordinator(url, b"a", ttl) as a, coordinator(url, b"b", ttl) as b:
        a.create_group(group).get()
        a.join_group(group).get()
        assert members(b, group) == {b"a"}
        yield a, b, group


# --- every fixture ------------------------------------------------------------


@pytest.mark.parametrize("name", backend_params(*BACKENDS))
def test_join_heartbeat_get_members(backend_server, name):
    server = backend_server(name)
    assert server.url == f"{server.scheme}://127.0.0.1:{server.port}"
    with joined(server.url) as (a, b, group):
        assert a.heartbeat() > 0
        b.join_group(group).get()
        assert members(a, group) == {b"a", b"b"}


@pytest.mark.parametrize("name", backend_params(*BACKENDS))
def test_pause_holds_connections_without_answers(fresh_server, name):
    server = fresh_server(name)
    with server.paused_for():
        assert servers.port_open(server.host, server.port)  # the kernel accepts
        assert not answers(server)  # the server answers nothing
    assert wait_for(lambda: answers(server))


@pytest.mark.parametrize("name", backend_params(*BACKENDS))
def test_stop_leaves_no_process_port_or_dir(fresh_server, name):
    server = fresh_server(name)
    pid, port, workdir = server.pid, server.port, server.workdir
    server.stop()
    with pytest.raises(ProcessLookupError):
        os.killpg(pid, 0)
    assert not servers.port_open("127.0.0.1", port)
    assert not os.path.exists(workdir)
    server.stop()  # idempotent


@pytest.mark.parametrize("name", backend_params(*BACKENDS))
def test_restart_keeps_the_port(fresh_server, name):
    server = fresh_server(name)
    url, pid = server.url, server.pid
    server.restart(hard=True)
    assert server.url == url and server.pid != pid and server.ready()


@pytest.mark.backend("zk")
def test_zookeeper_allows_more_than_60_connections_per_ip(zookeeper_server):
    held = [socket.create_connection((zookeeper_server.host, zookeeper_server.port)) for _ in range(70)]
    try:
        assert "Mode: standalone" in zookeeper_server.four_letter("srvr")
    finally:
        for s in held:
            s.close()


@pytest.mark.backend("mc")
def test_shared_session_server_is_healed_after_a_test_leaves_it_down(backend_server):
    server = backend_server("mc")
    server.kill()
    assert backend_server("mc").ready()


@pytest.mark.parametrize("dialect", backend_params("sqlite", "postgresql", "mysql"))
def test_sql_urls_connect(sql_url, dialect):
    url = sqlalchemy.make_url(sql_url(dialect))
    if url.drivername == "postgresql":  # SQLAlchemy 2.1 would pick psycopg 3
        url = url.set(drivername="postgresql+psycopg2")
    engine = sqlalchemy.create_engine(url)
    try:
        with engine.connect() as conn:
            assert conn.execute(sqlalchemy.text("SELECT 1")).scalar() == 1
    finally:
        engine.dispose()


@pytest.mark.backend("mc")
def test_start_failure_names_the_server_and_shows_its_log(fresh_server):
    from servicegroup.testing.servers import MemcachedServer

    taken = fresh_server("mc")
    clash = MemcachedServer(port=taken.port)
    with pytest.raises(servers.ServerStartError, match=r"memcached: .* already in use"):
        clash.start()
    clash.stop()


# --- what raw tooz does after each fault --------------------------------------


@pytest.mark.parametrize("name", backend_params("mc", "redis", "etcd"))
def test_restart_without_data_loses_the_group_and_tooz_never_rejoins(fresh_server, name):
    server = fresh_server(name)
    with joined(server.url) as (a, b, group):
        server.restart(wipe=True)  # memcached: any restart
        beat(a)  # a first one may fail (broken pipe), then they succeed
        assert a.heartbeat() > 0
        # b's first call after the restart may fail on its broken connection.
        assert wait_for(lambda: members(b, group) == "GroupNotCreated")


@pytest.mark.parametrize("name", backend_params("redis", "etcd"))
def test_restart_with_data_keeps_members(fresh_server, name):
    server = fresh_server(name)  # Redis: append-only file; etcd: leases extended
    with joined(server.url) as (a, b, group):
        server.restart()
        beat(a)
        assert wait_for(lambda: members(b, group) == {b"a"})


@pytest.mark.parametrize("name", backend_params("mc", "redis", "etcd"))
def test_ttl_lapse_member_never_comes_back(fresh_server, name):
    server = fresh_server(name)
    with joined(server.url) as (a, b, group):
        # a stops heartbeating (a stalled process); b keeps looking.
        assert wait_for(lambda: members(b, group) == set())
        beat(a)
        assert a.heartbeat() > 0
        assert members(b, group) == set(), "tooz re-joined after a TTL lapse"


@pytest.mark.backend("etcd")
def test_etcd_revoked_lease_member_gone_heartbeat_silent(fresh_server):
    server = fresh_server("etcd")
    with joined(server.url) as (a, b, group):
        a._membership_lease.revoke()
        assert members(b, group) == set()
        beat(a)
        assert a.heartbeat() > 0  # refreshing a revoked lease raises nothing
        assert members(b, group) == set()


@pytest.mark.backend("zk")
def test_zookeeper_restart_keeps_the_session_and_members(fresh_server):
    server = fresh_server("zk")
    # The claim is about a restart shorter than the session timeout, so the
    # session must outlive the restart: a restart costs about what the first
    # start did (it took 2.6 s on a loaded CI machine, past a 2 s TTL, and
    # the session rightly expired). Ten first starts, at least 10 s.
    ttl = max(10, math.ceil(10 * (server.startup_seconds or 1.0)))
    with joined(server.url, ttl) as (a, b, group):
        session = a._coord.client_id[0]
        server.restart()
        assert wait_for(lambda: members(b, group) == {b"a"})
        assert wait_for(lambda: a._coord.connected)
        assert a._coord.client_id[0] == session


@pytest.mark.backend("zk")
def test_zookeeper_expired_session_member_never_rejoins(fresh_server):
    from kazoo.client import KazooClient

    server = fresh_server("zk")
    with joined(server.url) as (a, b, group):
        session, password = a._coord.client_id
        # Close a's session from another client: what the server does when a
        # paused member misses its session timeout.
        other = KazooClient(hosts=f"{server.host}:{server.port}", client_id=(session, password))
        other.start()
        other.stop()
        other.close()
        assert wait_for(lambda: members(b, group) == set())
        assert wait_for(lambda: a._coord.connected and a._coord.client_id[0] != session)
        beat(a)
        assert members(b, group) == set(), "tooz re-joined after session expiry"


@pytest.mark.backend("zk")
def test_zookeeper_wiped_refuses_clients_that_saw_more(fresh_server):
    server = fresh_server("zk")
    with joined(server.url) as (a, b, group):
        a._zk_unreachable = b._zk_unreachable = True
        server.restart(wipe=True)
        assert members(b, group) == "OperationTimedOut"
        assert not b._coord.connected
    with coordinator(server.url, b"c") as c:  # a new client is served
        assert members(c, group) == "GroupNotCreated"
