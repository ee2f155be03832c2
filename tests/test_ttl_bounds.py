"""A service_down_time the backend cannot honour is refused at construction,
naming the values it can (docs/semantics.md, "Timings per backend").

Before, ``math.ceil`` turned 1.5 s into a 2 s TTL everywhere: a dead
service stayed up past ``service_down_time + max_staleness``; and memcached
at 1 s flapped live services (its expiry clock runs in whole seconds).
"""

from __future__ import annotations

import pytest

from servicegroup import ServiceGroup
from servicegroup import driver_urls as drivers
from servicegroup import errors


@pytest.mark.parametrize("alias", ["zk", "mc", "etcd"])
def test_a_fractional_down_time_on_a_whole_second_backend_names_the_nearest_values(alias):
    with pytest.raises(errors.ConfigError, match=r"service_down_time 3\.5s: .*whole seconds; set 3 or 4"):
        drivers.resolve(alias, None, "sqlite:///x", ttl=3.5)


def test_redis_takes_the_fraction_in_its_membership_timeout():
    url = drivers.resolve("redis", None, "sqlite:///x", ttl=1.5)
    assert "membership_timeout=1.5" in url


@pytest.mark.parametrize("records", ["sqlite:///x.db", "postgresql://u@db/sg"])
def test_the_sql_backend_gets_the_exact_down_time(records):
    assert drivers.resolve("db", None, records, ttl=1.5).endswith("timeout=1.5")


def test_the_sql_backend_refuses_a_down_time_below_its_one_second_floor():
    with pytest.raises(errors.ConfigError, match="at least 1"):
        drivers.resolve("db", None, "sqlite:///x.db", ttl=0.5)


def test_memcached_refuses_one_second_with_the_minimum_in_the_message():
    with pytest.raises(errors.ConfigError, match="at least 2 .*whole-second clock"):
        drivers.resolve("mc", None, "sqlite:///x", ttl=1)


def test_memcached_refuses_a_beat_that_its_early_expiry_would_miss():
    with pytest.raises(errors.ConfigError, match=r"above 2\.5 or report_interval below 1"):
        drivers.resolve("mc", None, "sqlite:///x", ttl=2, report_interval=1.5)
    assert drivers.resolve("mc", None, "sqlite:///x", ttl=2, report_interval=0.5).endswith("timeout=2")


def test_a_ttl_the_url_sets_itself_is_left_alone():
    assert drivers.resolve("zk", "zookeeper://h:1?timeout=4", "sqlite:///x", ttl=1.5).endswith("timeout=4")


def test_service_group_refuses_at_construction_before_writing_anything(tmp_path):
    records = tmp_path / "r.sqlite"
    with pytest.raises(errors.ConfigError, match="set 1 or 2"):
        ServiceGroup(driver="zk", records_url=f"sqlite:///{records}", report_interval=0.5, service_down_time=1.5)
    assert not records.exists()
