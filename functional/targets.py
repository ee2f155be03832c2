"""Where the scenario suites run: one ``target`` per liveness backend.

``db`` on SQLite, PostgreSQL and MariaDB; ``zk``, ``mc``, ``redis`` and
``etcd`` on the session's private servers (``functional/conftest.py``);
``consul`` on the Consul HTTP API test server (a real agent cannot be
installed here; ``functional/test_consul.py`` runs against one when a
``consul`` binary is on PATH). Records go to a SQLite file per test except
for ``db``, where the records database is also the liveness backend.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from functional.members import Target
from servicegroup.testing.consul import ConsulTestServer

BACKENDS = ["db-sqlite", "db-postgresql", "db-mysql", "zk", "mc", "redis", "etcd", "consul"]


@pytest.fixture(scope="session")
def consul_agent() -> Iterator[ConsulTestServer]:
    """The Consul HTTP API test server, with a 1 s session TTL floor (Consul's
    own is 10 s; ``session_ttl_min`` is lowered the same way in Consul's tests)."""
    with ConsulTestServer(session_ttl_min=1.0) as srv:
        yield srv


@pytest.fixture(params=BACKENDS)
def target(request: pytest.FixtureRequest, tmp_path, sql_url, backend_server) -> Target:
    name: str = request.param
    records = f"sqlite:///{tmp_path / 'records.sqlite'}"
    if name.startswith("db-"):
        return Target(name, "db", None, sql_url(name[3:]))
    if name == "consul":
        agent = request.getfixturevalue("consul_agent")
        return Target(name, "consul", agent.url, records)
    return Target(name, name, backend_server(name).url, records)
