"""Driver name -> tooz URL: contradictions and unknowns refused up front."""

from __future__ import annotations

import pytest

from servicegroup import drivers, errors


def test_db_alias_maps_the_records_url_and_keeps_absolute_sqlite_paths():
    url = drivers.resolve("db", None, "sqlite:////var/lib/sg.sqlite", ttl=3)
    assert url == "sql+sqlite:////var/lib/sg.sqlite?timeout=3"


def test_db_alias_drops_the_dbapi_suffix():
    url = drivers.resolve("db", None, "postgresql+psycopg2://u:pw@db:5432/nova")
    assert url == "sql+postgresql://u:pw@db:5432/nova"


@pytest.mark.parametrize("alias,scheme", [("zk", "zookeeper"), ("mc", "memcached"),
                                           ("redis", "redis"), ("etcd", "etcd3+http")])
def test_aliases_default_to_local_servers_with_the_ttl(alias, scheme):
    url = drivers.resolve(alias, None, "sqlite:///x", ttl=2.5)
    assert url.startswith(scheme + "://127.0.0.1:") and url.endswith("timeout=3")


def test_an_explicit_ttl_option_is_kept():
    assert drivers.resolve("mc", "memcached://h:1?timeout=9", "sqlite:///x", ttl=3).endswith("timeout=9")


def test_unknown_driver_names_the_known_ones():
    with pytest.raises(errors.UnknownDriver, match="zk"):
        drivers.resolve("zookeper", None, "sqlite:///x")


def test_alias_contradicting_its_url_is_refused():
    with pytest.raises(errors.ConfigError, match="contradicts"):
        drivers.resolve("zk", "memcached://127.0.0.1:11211", "sqlite:///x")


def test_unknown_url_option_is_refused_by_name():
    with pytest.raises(errors.InvalidURL, match="tiemout"):
        drivers.resolve("redis", "redis://127.0.0.1:6379?tiemout=5", "sqlite:///x")


def test_unregistered_scheme_is_an_unknown_driver():
    with pytest.raises(errors.UnknownDriver):
        drivers.resolve("nosuch://127.0.0.1:1", None, "sqlite:///x")


def test_malformed_port_is_refused_without_the_password():
    with pytest.raises(errors.InvalidURL) as info:
        drivers.resolve("redis", "redis://u:hunter2@127.0.0.1:port", "sqlite:///x")
    assert "hunter2" not in str(info.value)


def test_driver_url_and_url_together_must_agree():
    with pytest.raises(errors.ConfigError, match="only one"):
        drivers.resolve("redis://127.0.0.1:6379", "redis://127.0.0.1:6380", "sqlite:///x")
