"""Real servers for the functional tests, started on demand.

Private servers (each on a free loopback port, under a temp dir; see
:mod:`servicegroup.testing.servers`) start the first time a test asks for
one and stop at the end of the session:

- ``zookeeper_server``, ``memcached_server``, ``etcd_server``,
  ``redis_server``: one shared server each per session (``.url``, ``.host``,
  ``.port``, ``restart()``, ``pause()`` ...). A test that pauses, kills or
  stops one need not clean up: after each test, every shared server that is
  paused is resumed and one that is down is started again (same port).
- ``backend_server(name)``: the same servers by driver name, for suites
  parametrised by driver: ``zk``, ``mc``, ``redis``, ``etcd`` (also
  ``zookeeper``, ``memcached``).
- ``fresh_server(name)``: a new private server for one test, stopped after
  it; for fault tests that would disturb others (wipe, long pauses).
- ``target``: one per liveness backend (parametrised, each marked
  ``backend(name)``), for the scenario suites; ``consul_agent``: the
  session's Consul HTTP API test server.
- ``sql_url(dialect)``: ``sqlite`` (a file in the test's tmp dir),
  ``postgresql`` or ``mysql`` (this session's own database on the shared
  servers ``make services`` starts, dropped at the end of the session; a
  test fails, naming the server, when one is down).

``--backend NAME`` keeps only the tests marked ``backend(NAME)``
(:mod:`servicegroup.testing.selection`).

Adding a server: put its class in
:data:`servicegroup.testing.servers.BY_DRIVER` and, if wanted, a named
fixture below.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
import os

import pytest

# eventlet (in the test extra, for functional/test_green.py) warns on
# stderr when imported, and futurist imports it wherever it is installed:
# every CLI subprocess would print that warning before its one line.
# EVENTLET_TESTS is eventlet's own switch for that warning, for test suites.
os.environ.setdefault("EVENTLET_TESTS", "1")

from functional.members import Target
from servicegroup.testing import selection, servers
from servicegroup.testing.consul import ConsulTestServer
from servicegroup.testing.consul import real as consul_real
from servicegroup.testing.servers import EtcdServer, MemcachedServer, RedisServer, ZooKeeperServer
from servicegroup.testing.servers.pool import ServerPool

_POOL: ServerPool | None = None
#: Whether this session runs Consul tests (then it says whether a real agent ran).
_CONSUL_SELECTED = False


@pytest.fixture(scope="session")
def server_pool() -> Iterator[ServerPool]:
    global _POOL
    _POOL = ServerPool()
    try:
        yield _POOL
    finally:
        _POOL.stop_all()


@pytest.fixture(scope="session", autouse=True)
def _session_databases() -> Iterator[None]:
    """Drop this session's databases on the shared SQL servers at its end,
    whatever the tests did (atexit would too; this is earlier and visible)."""
    yield
    servers.drop_session_databases()


@pytest.fixture(autouse=True)
def _heal_shared_servers() -> Iterator[None]:
    yield
    if _POOL is not None:
        _POOL.heal()


@pytest.fixture(scope="session")
def backend_server(server_pool: ServerPool) -> Callable[[str], object]:
    """``backend_server("zk")`` -> the session's ZooKeeper (started on first use)."""
    return server_pool.shared


@pytest.fixture(scope="session")
def zookeeper_server(backend_server) -> ZooKeeperServer:
    return backend_server("zk")


@pytest.fixture(scope="session")
def memcached_server(backend_server) -> MemcachedServer:
    return backend_server("mc")


@pytest.fixture(scope="session")
def etcd_server(backend_server) -> EtcdServer:
    return backend_server("etcd")


@pytest.fixture(scope="session")
def redis_server(backend_server) -> RedisServer:
    """A private redis-server; the shared 6379 one is ``servers.SHARED_REDIS_URL``."""
    return backend_server("redis")


@pytest.fixture
def fresh_server(server_pool: ServerPool) -> Iterator[Callable[[str], object]]:
    """``fresh_server("mc")`` -> a new server only this test uses, stopped after."""
    mine: list = []

    def make(name: str):
        server = server_pool.fresh(name)
        mine.append(server)
        return server

    yield make
    for server in mine:
        server.stop()


@pytest.fixture
def sql_url(tmp_path) -> Callable[[str], str]:
    """``sql_url("sqlite" | "postgresql" | "mysql")`` -> a SQLAlchemy URL."""

    def url(dialect: str) -> str:
        why = servers.shared_sql_down(dialect)
        if why:
            pytest.fail(why, pytrace=False)
        return servers.sql_url(dialect, tmp_path)

    return url


@pytest.fixture(scope="session")
def consul_agent() -> Iterator[object]:
    """The Consul HTTP API test server, with a 1 s session TTL floor (Consul's
    own is 10 s; ``session_ttl_min`` is lowered the same way in Consul's tests);
    a real agent instead in ``make test-consul-real`` (:mod:`servicegroup.testing.consul.real`)."""
    if consul_real.real_only():
        with consul_real.new_agent() as agent:
            yield agent
        return
    with ConsulTestServer(session_ttl_min=1.0) as srv:
        yield srv


@pytest.fixture(params=selection.backend_params(*selection.BACKENDS))
def target(request: pytest.FixtureRequest, tmp_path, sql_url, backend_server) -> Target:
    """Where a scenario suite runs: one per liveness backend, marked with it.

    ``db`` on SQLite, PostgreSQL and MariaDB; ``zk``, ``mc``, ``redis`` and
    ``etcd`` on the session's private servers; ``consul`` on the Consul HTTP
    API test server (``functional/test_consul.py`` also runs against a real
    agent when a ``consul`` binary is on PATH). Records go to a SQLite file
    per test except for ``db``, where the records database is also the
    liveness backend.
    """
    name: str = request.param
    records = f"sqlite:///{tmp_path / 'records.sqlite'}"
    if name.startswith("db-"):
        return Target(name, "db", None, sql_url(name[3:]))
    if name == "consul":
        agent = request.getfixturevalue("consul_agent")
        return Target(name, "consul", agent.url, records)
    return Target(name, name, backend_server(name).url, records)


def pytest_addoption(parser: pytest.Parser) -> None:
    selection.add_option(parser)


def pytest_configure(config: pytest.Config) -> None:
    selection.register_marker(config)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    selection.select(config, items)
    global _CONSUL_SELECTED
    _CONSUL_SELECTED = any("consul" in selection.backends_of(item) for item in items)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if _CONSUL_SELECTED:
        # The design's rule: the real-agent run that could not happen is
        # printed, not hidden (nor dressed up as a test that skips).
        terminalreporter.write_sep("-", consul_real.why_unavailable() or consul_real.describe())
    if _POOL is None or not _POOL.started:
        return
    terminalreporter.write_sep("-", "test servers started (startup seconds, for reading only)")
    for name, url, seconds in _POOL.started:
        shown = f"{seconds:.2f}s" if seconds is not None else "?"
        terminalreporter.write_line(f"{name:10} {url:40} {shown}")
