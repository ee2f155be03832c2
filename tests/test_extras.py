"""A backend whose client library is not installed is refused when the
ServiceGroup is built, with MissingExtra naming the extra to install
(simulated by hiding the module: ``sys.modules[name] = None`` makes its
import fail as if it were absent)."""

from __future__ import annotations

import configparser
import pathlib
import sys

import pytest

from servicegroup import errors
from servicegroup import profiles
from servicegroup.api import ServiceGroup
from servicegroup.records import engine

SETUP_CFG = pathlib.Path(__file__).resolve().parent.parent / "setup.cfg"

BACKENDS = [
    ("zk", None, "kazoo", "zookeeper"),
    ("mc", None, "pymemcache", "memcached"),
    ("redis", None, "redis", "redis"),
    ("etcd", None, "etcd3gw", "etcd"),
    ("consul", None, "consul", "consul"),
    ("db", "postgresql://u@127.0.0.1/sg", "psycopg2", "postgresql"),
    ("db", "mysql://u@127.0.0.1/sg", "pymysql", "mysql"),
]


@pytest.mark.parametrize(("driver", "records", "module", "extra"), BACKENDS)
def test_choosing_a_backend_without_its_client_names_the_extra(tmp_path, monkeypatch, driver, records, module, extra):
    monkeypatch.setitem(sys.modules, module, None)
    with pytest.raises(errors.MissingExtra, match=rf"pip install 'servicegroup\[{extra}\]'") as caught:
        ServiceGroup(driver=driver, records_url=records or f"sqlite:///{tmp_path / 'r.sqlite'}", background=False)
    assert caught.value.module == module and caught.value.extra == extra
    assert isinstance(caught.value, ImportError)  # what code unaware of this library catches


def test_a_records_database_without_its_dbapi_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "psycopg2", None)
    with pytest.raises(errors.MissingExtra, match=r"servicegroup\[postgresql\]"):
        engine.parse("postgresql://nova:secret@db/nova")


def test_sqlite_needs_no_extra(tmp_path, monkeypatch):
    for module in ("kazoo", "pymemcache", "redis", "etcd3gw", "consul", "psycopg2", "pymysql", "prometheus_client"):
        monkeypatch.setitem(sys.modules, module, None)
    sg = ServiceGroup(records_url=f"sqlite:///{tmp_path / 'r.sqlite'}", background=False)
    try:
        sg.join("host-a", "compute")
        assert sg.is_up(topic="compute", host="host-a")
    finally:
        sg.stop()


def test_every_client_named_by_a_profile_is_an_extra_of_setup_cfg_and_in_all():
    cfg = configparser.ConfigParser()
    cfg.read(SETUP_CFG)
    extras = {name: value.split() for name, value in cfg["options.extras_require"].items()}
    named = {p.client[1] for p in profiles.PROFILES.values() if p.client is not None}
    assert named <= set(extras)
    everything = extras["all"][0]
    for extra in named | {"metrics"}:
        assert extra in everything
    base = cfg["options"]["install_requires"]
    for client in ("kazoo", "pymemcache", "redis", "etcd3gw", "py-consul", "psycopg2", "PyMySQL", "prometheus"):
        assert client not in base, f"{client} must be an extra, not a base requirement"
