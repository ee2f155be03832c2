"""The db liveness driver through PgBouncer in transaction pooling
(docs/scale.md): how a fleet larger than PostgreSQL's ``max_connections``
connects. Each transaction may run on another server connection, so
nothing the driver does may depend on session state; tooz's own suite runs
through it too (``make conformance``, suite ``pgbouncer``).
"""

from __future__ import annotations

from collections.abc import Iterator
import shutil
import time
import uuid

import pytest

from functional.members import wait_for
from servicegroup import ServiceGroup
from servicegroup.testing.servers.pgbouncer import POSTGRES, PgBouncerServer

INTERVAL = 1.0
DOWN = 3.0


@pytest.fixture(scope="module")
def pgbouncer() -> Iterator[PgBouncerServer]:
    if shutil.which("pgbouncer") is None:
        pytest.fail("pgbouncer is not installed (make services installs Debian's)", pytrace=False)
    server = PgBouncerServer().start()
    try:
        yield server
    finally:
        server.stop()


@pytest.mark.backend("db")
def test_members_beat_and_observers_read_through_transaction_pooling(pgbouncer, sql_url):
    direct = sql_url("postgresql")
    pooled = direct.replace(f"{POSTGRES[0]}:{POSTGRES[1]}", f"{pgbouncer.host}:{pgbouncer.port}")
    assert pooled != direct
    topic = f"pgb-{uuid.uuid4().hex[:8]}"
    hosts = [f"pgb-{i:02d}" for i in range(20)]
    fleet = ServiceGroup("db", records_url=pooled, report_interval=INTERVAL, service_down_time=DOWN)
    observer = ServiceGroup(
        "db", records_url=pooled, report_interval=INTERVAL, service_down_time=DOWN, max_staleness=INTERVAL / 2
    )
    try:
        for host in hosts:
            fleet.join(host, topic)
        assert wait_for(lambda: observer.get_all(topic) == hosts, bound=2 * DOWN)
        # Several service_down_times of heartbeats, each transaction on
        # whichever pooled server connection is free: nobody reads down.
        deadline = time.monotonic() + 2 * DOWN
        while time.monotonic() < deadline:
            assert observer.get_all(topic) == hosts
            time.sleep(INTERVAL / 2)
        fleet.leave(hosts[0], topic)
        assert wait_for(lambda: observer.get_all(topic) == hosts[1:], bound=2 * DOWN)
    finally:
        fleet.stop()
        observer.stop()
