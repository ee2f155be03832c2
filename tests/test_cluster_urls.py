"""Cluster URLs: ZooKeeper ensembles, etcd endpoint lists, Redis Sentinel
(servicegroup.endpoints, servicegroup.urls host lists, the factory wiring).

No server here: what tooz and the client libraries receive is inspected on
the driver objects, which connect only when started.
"""

from __future__ import annotations

import pytest
from tooz import coordination

from servicegroup import backend, endpoints, errors, urls
from servicegroup import driver_urls as drivers
from servicegroup.drivers import etcd

ENSEMBLE = "zookeeper://127.0.0.1:2182,127.0.0.1:2183,127.0.0.1:2184"


def test_a_zookeeper_ensemble_connection_string_resolves():
    resolved = drivers.resolve("zk", ENSEMBLE, "sqlite://", ttl=6)
    assert resolved == ENSEMBLE + "?timeout=6"
    assert [str(h) for h in urls.hosts(resolved)] == ["127.0.0.1:2182", "127.0.0.1:2183", "127.0.0.1:2184"]


def test_a_zookeeper_ensemble_with_a_chroot_resolves_and_keeps_it():
    resolved = drivers.resolve("zk", ENSEMBLE + "/apps/sg", "sqlite://")
    assert endpoints.chroot(resolved) == "/apps/sg"


def test_the_chroot_reaches_kazoo_with_the_host_list(monkeypatch):
    created = []
    monkeypatch.setattr(endpoints, "ensure_zookeeper_chroot", lambda parsed, path, timeout: created.append(path))
    coord = backend.default_factory(ENSEMBLE + "/apps/sg?timeout=5", b"m1")
    assert created == ["/apps/sg"]  # kazoo does not create its chroot: the library does
    kazoo = coord._coord  # type: ignore[attr-defined]
    assert kazoo.chroot == "/apps/sg"
    assert sorted(kazoo.hosts) == [("127.0.0.1", 2182), ("127.0.0.1", 2183), ("127.0.0.1", 2184)]


def test_a_zookeeper_url_without_chroot_gets_none():
    coord = backend.default_factory(ENSEMBLE + "/?timeout=5", b"m1")
    assert coord._coord.chroot in (None, "")  # type: ignore[attr-defined]


def test_an_etcd_endpoint_list_resolves():
    url = "etcd3+http://127.0.0.1:2379,127.0.0.1:2479,127.0.0.1:2579"
    assert drivers.resolve("etcd", url, "sqlite://", ttl=6) == url + "?timeout=6"


def test_an_etcd_endpoint_list_gets_the_failover_driver_over_every_endpoint():
    coord = backend.default_factory("etcd3+http://127.0.0.1:2379,127.0.0.2:2479?timeout=6", b"m1")
    assert isinstance(coord, etcd.FailoverEtcd3Driver)
    assert coord.client.endpoints == [("127.0.0.1", 2379), ("127.0.0.2", 2479)]
    # each endpoint gets a slice of the TTL, so a hung one cannot eat it all
    assert coord.client.timeout == 2.0


def test_a_single_etcd_endpoint_keeps_toozs_driver():
    coord = backend.default_factory("etcd3+http://127.0.0.1:2379?timeout=6", b"m1")
    assert not isinstance(coord, etcd.FailoverEtcd3Driver)


@pytest.mark.parametrize(
    "url",
    [
        "zookeeper://127.0.0.1:2182,127.0.0.1:abc",
        "zookeeper://127.0.0.1:2182,,127.0.0.1:2183",
        "zookeeper://127.0.0.1:2182,:2183",
        "etcd3+http://127.0.0.1:2379,127.0.0.1:0",
        "etcd3+http://127.0.0.1:2379,127.0.0.1:70000",
    ],
)
def test_a_malformed_host_in_a_list_is_invalid_url_naming_it(url):
    with pytest.raises(errors.InvalidURL, match="malformed host"):
        drivers.resolve("zk" if url.startswith("zoo") else "etcd", url, "sqlite://")


def test_a_malformed_host_in_a_list_never_shows_the_password():
    with pytest.raises(errors.InvalidURL) as info:
        drivers.resolve("zk", "zookeeper://admin:s3cret@127.0.0.1:2182,127.0.0.1:x", "sqlite://")
    assert "s3cret" not in str(info.value)


@pytest.mark.parametrize(
    ("alias", "url"),
    [
        ("redis", "redis://127.0.0.1:6379,127.0.0.1:6380"),
        ("mc", "memcached://127.0.0.1:11211,127.0.0.1:11212"),
    ],
)
def test_a_host_list_where_the_backend_reads_one_host_is_refused(alias, url):
    with pytest.raises(errors.InvalidURL, match="names 2 hosts"):
        drivers.resolve(alias, url, "sqlite://")


def test_a_redis_host_list_points_at_sentinel():
    with pytest.raises(errors.InvalidURL, match="sentinel_fallback"):
        drivers.resolve("redis", "redis://a:1,b:2", "sqlite://")


def test_an_etcd_url_with_a_path_is_refused():
    with pytest.raises(errors.InvalidURL, match="only ZooKeeper"):
        drivers.resolve("etcd", "etcd3+http://127.0.0.1:2379,127.0.0.1:2479/x", "sqlite://")


SENTINEL = "redis://127.0.0.1:26379?sentinel=sg&sentinel_fallback=127.0.0.1:26380&sentinel_fallback=127.0.0.1:26381"


def test_redis_sentinel_options_resolve_and_list_every_sentinel():
    resolved = drivers.resolve("redis", SENTINEL, "sqlite://", ttl=6)
    assert [str(s) for s in endpoints.sentinel_options(resolved)] == [
        "127.0.0.1:26379",
        "127.0.0.1:26380",
        "127.0.0.1:26381",
    ]


def test_a_redis_url_without_sentinel_has_no_sentinels():
    assert endpoints.sentinel_options("redis://127.0.0.1:6379") == []


@pytest.mark.parametrize(
    ("url", "match"),
    [
        ("redis://127.0.0.1:26379?sentinel_fallback=127.0.0.1:26380", "without sentinel"),
        ("redis://127.0.0.1:26379?sentinel=", "empty sentinel"),
        ("redis://127.0.0.1:26379?sentinel=sg&sentinel_fallback=127.0.0.1", "needs a port"),
        ("redis://127.0.0.1:26379?sentinel=sg&sentinel_fallback=127.0.0.1:x", "malformed host"),
    ],
)
def test_bad_sentinel_options_are_invalid_url_before_connecting(url, match):
    with pytest.raises(errors.InvalidURL, match=match):
        drivers.resolve("redis", url, "sqlite://")


def test_sentinel_password_is_never_shown():
    url = "redis://127.0.0.1:26379?sentinel=sg&sentinel_password=hunter22&sentinel_fallback=127.0.0.1:x"
    with pytest.raises(errors.InvalidURL) as info:
        drivers.resolve("redis", url, "sqlite://")
    assert "hunter22" not in str(info.value)


def test_where_names_every_host_of_a_cluster_without_credentials():
    shown = backend.where("zookeeper://u:pw123@10.0.0.1:2181,10.0.0.2/chroot")
    assert shown == "zookeeper backend at 10.0.0.1:2181,10.0.0.2:(default port)"


def test_a_cluster_with_one_server_listening_passes_the_probe(tcp_listener):
    dead = urls.parse_host("127.0.0.1:1", "x://")
    backend.probe_tcp(f"zookeeper://{dead},127.0.0.1:{tcp_listener}")


def test_a_cluster_with_no_server_listening_fails_the_probe_naming_them():
    with pytest.raises(errors.BackendUnavailable, match="127.0.0.1:1,127.0.0.1:2"):
        backend.probe_tcp("zookeeper://127.0.0.1:1,127.0.0.1:2", timeout=1.0)


@pytest.fixture
def tcp_listener():
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield sock.getsockname()[1]


class _Pool:
    def __init__(self) -> None:
        self.disconnected = False

    def disconnect(self) -> None:
        self.disconnected = True


class _RedisClient:
    def __init__(self, role: bytes) -> None:
        self.role = role
        self.connection_pool = _Pool()

    def execute_command(self, *args):
        assert args == ("ROLE",)
        return [self.role, 0, []]


class _Coord:
    def __init__(self, role: bytes) -> None:
        self._client = _RedisClient(role)


def test_a_read_from_the_sentinel_primary_is_trusted():
    coord = _Coord(b"master")
    endpoints.ensure_sentinel_primary(coord)
    assert not coord._client.connection_pool.disconnected


def test_a_read_from_a_demoted_primary_fails_and_drops_the_pool_to_reconnect():
    coord = _Coord(b"slave")
    with pytest.raises(coordination.ToozConnectionError, match="not the primary"):
        endpoints.ensure_sentinel_primary(coord)
    assert coord._client.connection_pool.disconnected
