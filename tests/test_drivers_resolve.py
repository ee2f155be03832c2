"""Driver name -> tooz URL: contradictions and unknowns refused up front."""

from __future__ import annotations

import pytest

from servicegroup import driver_urls as drivers, errors


def test_db_alias_maps_the_records_url_and_keeps_absolute_sqlite_paths():
    url = drivers.resolve("db", None, "sqlite:////var/lib/sg.sqlite", ttl=3)
    assert url == "sql+sqlite:////var/lib/sg.sqlite?timeout=3"


def test_db_alias_drops_the_dbapi_suffix():
    url = drivers.resolve("db", None, "postgresql+psycopg2://u:pw@db:5432/nova")
    assert url == "sql+postgresql://u:pw@db:5432/nova"


@pytest.mark.parametrize(
    "alias,scheme", [("zk", "zookeeper"), ("mc", "memcached"), ("redis", "redis"), ("etcd", "etcd3+http")]
)
def test_aliases_default_to_local_servers_with_the_ttl(alias, scheme):
    url = drivers.resolve(alias, None, "sqlite:///x", ttl=3)
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


def test_malformed_ipv6_address_is_invalid_url():
    with pytest.raises(errors.InvalidURL, match="IPv6"):
        drivers.resolve("redis://[::1", None, "sqlite:///x")


def test_port_zero_is_invalid_url():
    with pytest.raises(errors.InvalidURL, match="port 0"):
        drivers.resolve("redis", "redis://127.0.0.1:0", "sqlite:///x")


@pytest.mark.parametrize(
    "url,option",
    [
        ("redis://127.0.0.1:6379?timeout=abc", "timeout"),
        ("redis://127.0.0.1:6379?db=abc", "db"),
        ("redis://127.0.0.1:6379?timeout=2.5", "timeout"),  # tooz does int()
        ("redis://127.0.0.1:6379?socket_timeout=nan", "socket_timeout"),
        ("redis://127.0.0.1:6379?timeout=", "timeout"),
        ("memcached://127.0.0.1:11211?timeout=0", "timeout"),  # 0: keys never expire
        ("memcached://127.0.0.1:11211?max_pool_size=-1", "max_pool_size"),
        ("zookeeper://127.0.0.1:2181?timeout=inf", "timeout"),
        ("etcd3+http://127.0.0.1:2379?lock_timeout=x", "lock_timeout"),
        ("consul://127.0.0.1:8500?ttl=nan", "ttl"),
        ("sql+sqlite:///x.db?timeout=-3", "timeout"),
    ],
)
def test_bad_numeric_option_is_invalid_url_naming_it_before_connecting(url, option):
    with pytest.raises(errors.InvalidURL, match=f"option {option}="):
        drivers.resolve(url, None, "sqlite:///x")


def test_good_numeric_options_pass():
    url = drivers.resolve(
        "redis://127.0.0.1:6379?db=0&socket_timeout=2.5&health_check_interval=0", None, "sqlite:///x", ttl=3
    )
    assert url.endswith("timeout=3")


def test_memcached_accepts_the_tls_options_tooz_reads():
    drivers.resolve(
        "memcached://h:11211?use_ssl=true&ca_cert=/ca&ssl_cert=/c&ssl_key=/k"
        "&ssl_key_password=pw&ssl_ciphers=HIGH&ssl_check_hostname=true",
        None,
        "sqlite:///x",
    )


def test_db_alias_keeps_the_records_url_dbapi_options():
    url = drivers.resolve("db", None, "postgresql://u:pw@db/nova?sslmode=require&connect_timeout=3", ttl=60)
    assert url == "sql+postgresql://u:pw@db/nova?sslmode=require&connect_timeout=3&timeout=60"
    url = drivers.resolve("db", None, "mysql+pymysql://u:pw@db/nova?charset=utf8mb4", ttl=60)
    assert "charset=utf8mb4" in url


def test_db_alias_never_takes_a_records_option_for_the_membership_ttl():
    # pysqlite's timeout is its busy timeout, not the liveness TTL.
    assert drivers.resolve("db", None, "sqlite:///x.db?timeout=30", ttl=3) == "sql+sqlite:///x.db?timeout=3"


def test_an_explicit_sql_liveness_url_takes_only_the_drivers_own_options():
    with pytest.raises(errors.InvalidURL, match="sslmode"):
        drivers.resolve("db", "sql+postgresql://u:pw@db/nova?sslmode=require", "sqlite:///x")


@pytest.mark.parametrize("password", ["s3#cret", "s3/cret", "s3?cret", "p@ss", "a%b"])
def test_db_alias_percent_encodes_the_records_password_for_tooz(password):
    from oslo_utils import netutils
    import sqlalchemy as sa

    url = drivers.resolve("db", None, f"postgresql://u@x:{password}@db:5432/nova")
    parts = netutils.urlsplit(url)  # how tooz hands the URL to the SQL driver
    assert parts.hostname == "db" and parts.port == 5432
    parsed = sa.make_url(f"postgresql://{parts.netloc}{parts.path}")  # how the SQL driver reads it
    assert (parsed.username, parsed.password) == ("u@x", password)


@pytest.mark.parametrize("records_url", ["oracle://u:s3cret@h/x", "mssql+pyodbc://u:s3cret@h/x"])
def test_db_alias_on_an_unsupported_dialect_names_the_supported_ones(records_url):
    with pytest.raises(errors.InvalidURL) as info:
        drivers.resolve("db", None, records_url)
    message = str(info.value)
    assert "s3cret" not in message
    assert all(d in message for d in ("sqlite", "postgresql", "mysql/mariadb"))
