"""Real servers for tests: private ones started on demand, shared SQL ones.

- :mod:`.process`: :class:`ServerProcess`, one server process on a free
  loopback port under a temp dir (start, stop, kill, restart on the same
  port, pause/resume), and the socket helpers the probes use;
- :mod:`.zookeeper`, :mod:`.memcached`, :mod:`.etcd`, :mod:`.redis`: one
  :class:`ServerProcess` each, configured for tests (short sessions, no
  per-IP connection limit, ...);
- :mod:`.sql`: the shared PostgreSQL and MariaDB, with a database of its
  own per test session (:func:`sql_url`);
- :mod:`.pool`: :class:`ServerPool`, one shared server per name for a test
  session, healed between tests.

:data:`BY_DRIVER` is the one map from a driver name to its server class:
the functional tests' pool, their scenario targets and the benchmarks all
start servers through it.
"""

from __future__ import annotations

from servicegroup.testing.servers.etcd import EtcdServer
from servicegroup.testing.servers.memcached import MemcachedServer
from servicegroup.testing.servers.process import (
    HOST,
    ServerProcess,
    ServerStartError,
    ask,
    free_port,
    pid_alive,
    port_open,
)
from servicegroup.testing.servers.redis import RedisServer
from servicegroup.testing.servers.sql import (
    SHARED_REDIS_URL,
    SHARED_SQL,
    drop_session_databases,
    shared_sql_down,
    shared_url,
    sql_url,
)
from servicegroup.testing.servers.zookeeper import ZooKeeperServer

#: Driver name -> class of its private test server.
BY_DRIVER: dict[str, type[ServerProcess]] = {
    "zk": ZooKeeperServer,
    "mc": MemcachedServer,
    "redis": RedisServer,
    "etcd": EtcdServer,
}
#: Other names a test may use for the same servers.
ALIASES = {"zookeeper": "zk", "memcached": "mc", "etcd3": "etcd"}


def server_class(name: str) -> type[ServerProcess]:
    """The server class for a driver name or alias; LookupError names the known ones."""
    try:
        return BY_DRIVER[ALIASES.get(name, name)]
    except KeyError:
        known = ", ".join(sorted(BY_DRIVER))
        raise LookupError(f"no test server for {name!r} (known: {known})") from None


__all__ = [
    "ALIASES",
    "BY_DRIVER",
    "HOST",
    "SHARED_REDIS_URL",
    "SHARED_SQL",
    "EtcdServer",
    "MemcachedServer",
    "RedisServer",
    "ServerProcess",
    "ServerStartError",
    "ZooKeeperServer",
    "ask",
    "drop_session_databases",
    "free_port",
    "pid_alive",
    "port_open",
    "server_class",
    "shared_sql_down",
    "shared_url",
    "sql_url",
]
