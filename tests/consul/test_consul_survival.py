"""The Consul backend where Consul answers without saying no (issue 15).

Consul filters what a token may not read instead of refusing it, refuses
values over ``kv_max_value_size``, holds ``wait=0s`` for five minutes, and
writes nothing for a write that changes nothing. The backend must turn the
first two into typed errors, never send the third, and not depend on the
fourth. Run against the Consul model, which does all four as Consul does
(``tests/consul/test_consul_fidelity.py``); time is the fake clock.
"""

from __future__ import annotations

import base64
import threading
from typing import Any

import consul
import pytest
import tooz

from servicegroup import errors
from servicegroup.api import ServiceGroup
from servicegroup.drivers import consul_api
from servicegroup.drivers.consul import ConsulAccessDenied, ConsulValueTooLarge
from servicegroup.testing.clock import FakeClock
from servicegroup.testing.consul import ConsulTestServer

ROOT = "root-secret"
BIG = "x" * (consul_api.KV_MAX_VALUE_SIZE + 1)


@pytest.fixture
def acl_srv(clock: FakeClock) -> Any:
    with ConsulTestServer(session_ttl_min=1, clock=clock, acl_token=ROOT) as server:
        c = consul.Consul(host="127.0.0.1", port=server.port, token=ROOT)
        c.agent.service.register("web", service_id="web-1", check=consul.Check.ttl("30s"))
        c.agent.check.ttl_pass("service:web-1")
        yield server


@pytest.fixture
def live_srv() -> Any:
    """A server on real time: a blocking query that must time out needs it
    (the fake clock moves only when a test moves it)."""
    with ConsulTestServer(session_ttl_min=1) as server:
        yield server


def _puts(srv: ConsulTestServer, key_part: str) -> list[Any]:
    return [r for r in srv.requests if r[0] == "PUT" and key_part in r[1]]


# -- 1. a token that cannot read ------------------------------------------------


@pytest.mark.parametrize("token", ["no-services", None])
def test_catalog_mode_start_fails_for_a_token_that_may_read_no_service(
    acl_srv: Any, coords: Any, caplog: Any, token: str | None
) -> None:
    # Consul answers the catalog read with {} (filtered), not 403.
    acl_srv.add_acl_token("no-services", {"key:read", "key:write", "session:write"})
    url = f"{acl_srv.url}?mode=catalog" + (f"&token={token}" if token else "")
    c = coords(url, start=False)
    with pytest.raises(ConsulAccessDenied, match="service:read") as info:
        c.start()
    assert acl_srv.address in str(info.value) and "no-services" not in str(info.value) + caplog.text
    assert isinstance(info.value, errors.ConfigError) and isinstance(info.value, tooz.ToozError)


def test_catalog_read_filtered_by_acls_is_access_denied_not_an_empty_group(acl_srv: Any, coords: Any) -> None:
    # service:read lets the catalog list "web"; without node:read Consul
    # filters every health entry: the group is not "not created".
    acl_srv.add_acl_token("no-nodes", {"service:read"})
    acl_srv.add_acl_token("discovery", {"service:read", "node:read"})
    blind = coords(f"{acl_srv.url}?mode=catalog&token=no-nodes")
    with pytest.raises(ConsulAccessDenied, match="filtered the instances of service 'web' by ACLs"):
        blind.get_members(b"web").get()
    seeing = coords(f"{acl_srv.url}?mode=catalog&token=discovery", b"m2")
    assert seeing.get_members(b"web").get() == {b"web-1"}


def test_registered_mode_list_reads_filtered_later_are_access_denied(acl_srv: Any, coords: Any) -> None:
    # A policy changed under a running process: Consul would filter the
    # recursive read to nothing, which used to read as "group not created".
    acl_srv.add_acl_token("app", {"key:read", "key:write", "session:read", "session:write"})
    c = coords(f"{acl_srv.url}?token=app")
    c.join_group_create(b"g")
    acl_srv.add_acl_token("app", {"session:read", "session:write"})
    with pytest.raises(ConsulAccessDenied, match="key:read"):
        c.get_members(b"g").get()
    with pytest.raises(ConsulAccessDenied):
        c.get_groups().get()


def test_registered_mode_start_fails_for_a_token_that_cannot_make_sessions(acl_srv: Any, coords: Any) -> None:
    acl_srv.add_acl_token("reader", {"key:read"})
    with pytest.raises(ConsulAccessDenied, match="session:write"):
        coords(f"{acl_srv.url}?token=reader", start=False).start()


# -- 2. values over kv_max_value_size ---------------------------------------------


def test_oversized_capabilities_are_refused_before_anything_is_written(srv: Any, coords: Any) -> None:
    c = coords(srv.url)
    c.create_group(b"g").get()
    srv.requests.clear()
    with pytest.raises(ConsulValueTooLarge) as info:
        c.join_group(b"g", {"blob": BIG}).get()
    assert isinstance(info.value, errors.ValueTooLarge) and isinstance(info.value, ValueError)
    assert isinstance(info.value, tooz.ToozError)
    assert "capabilities of member 'm1'" in str(info.value) and "524288" in str(info.value)
    assert _puts(srv, "/members/") == [] and b"g" not in c._joined_groups
    c.join_group(b"g", {"small": 1}).get()
    with pytest.raises(ConsulValueTooLarge):
        c.update_capabilities(b"g", {"blob": BIG}).get()
    assert c.get_member_capabilities(b"g", b"m1").get() == {"small": 1}


def test_an_agent_with_a_lower_limit_answers_413_and_that_is_the_same_error(clock: FakeClock, coords: Any) -> None:
    with ConsulTestServer(session_ttl_min=1, clock=clock, kv_max_value_size=1000) as server:
        c = coords(server.url)
        c.create_group(b"g").get()
        with pytest.raises(ConsulValueTooLarge, match="the agent refused it"):
            c.join_group(b"g", {"blob": "y" * 2000}).get()
        assert c.get_members(b"g").get() == set()


def test_a_lock_holder_list_over_the_limit_is_refused_and_the_contender_withdrawn(
    srv: Any, coords: Any, monkeypatch: Any
) -> None:
    c = coords(srv.url)
    first = c.get_lock(b"shared")
    assert first.acquire(shared=True, blocking=False)
    one_holder = len(srv.kv_entries(first._lock_key)[first._lock_key]["Value"])  # base64 of the list
    monkeypatch.setattr(consul_api, "KV_MAX_VALUE_SIZE", one_holder)  # room for exactly one holder
    second = c.get_lock(b"shared")
    with pytest.raises(ConsulValueTooLarge, match=r"holder list of lock b'shared' \(2 holders\)"):
        second.acquire(shared=True, blocking=False)
    assert [k for k in srv.kv_entries(first._prefix) if not k.endswith(".lock")] == [first._prefix + first._hold.token]
    assert first.release()


def test_service_group_join_with_oversized_capabilities_leaves_no_record(srv: Any, tmp_path: Any) -> None:
    sg = ServiceGroup(driver="consul", url=srv.url, records_url=f"sqlite:///{tmp_path / 'r.sqlite'}")
    try:
        with pytest.raises(errors.ValueTooLarge):
            sg.join("host-a", "topic", capabilities={"blob": BIG})
        assert sg.records.get("host-a", "topic") is None
    finally:
        sg.stop()


# -- 4. waits --------------------------------------------------------------------------


@pytest.mark.parametrize(("seconds", "wait"), [(0, "1ms"), (1e-05, "1ms"), (2.5, "2500ms"), (1e9, "600000ms")])
def test_a_blocking_wait_is_always_a_positive_go_duration(seconds: float, wait: str) -> None:
    assert consul_api.go_wait(seconds) == wait


def test_subscribe_with_wait_zero_never_sends_wait_zero(srv: Any, coords: Any) -> None:
    c = coords(srv.url)
    c.create_group(b"g").get()
    parked = threading.Event()
    cancel = c.subscribe(b"g", lambda: None, wait=0)
    try:
        for _ in range(600):  # a bound on the thread's first blocking query, not a timing
            if any("index" in q for m, p, q in list(srv.requests) if p.startswith("/v1/kv/")):
                parked.set()
                break
            threading.Event().wait(0.05)
    finally:
        cancel()
    assert parked.is_set()
    waits = [q["wait"] for m, p, q in list(srv.requests) if "index" in q]
    assert waits and all(w == ["1000ms"] for w in waits)  # the subscribe floor, never 0s


def test_a_zero_timeout_wait_for_change_sends_a_positive_wait(live_srv: Any, coords: Any) -> None:
    srv = live_srv
    c = coords(srv.url)
    c.create_group(b"g").get()
    c.get_members(b"g").get()
    assert c.wait_for_change({b"g"}, timeout=0) is False
    assert srv.requests[-1][2]["wait"] == ["1ms"]


# -- 3. writes that change nothing ----------------------------------------------------


def test_identical_writes_leave_watchers_asleep_and_real_ones_wake_them(live_srv: Any, coords: Any) -> None:
    srv = live_srv
    # Nothing in the backend may rely on an index bump from a write that
    # changes nothing: heartbeats renew the session only, re-election by the
    # leader is an identical acquire, and watchers only wake on real changes.
    a, b = coords(srv.url), coords(srv.url, b"m2")
    a.join_group_create(b"g")
    a.watch_elected_as_leader(b"g", lambda event: None)
    a.run_watchers()
    a.get_members(b"g").get()
    index = a._indexes[b"g"]
    a.heartbeat()
    assert a._groups.try_lead(b"g")  # the holder acquiring again: Consul writes nothing
    assert a.get_leader(b"g").get() == b"m1"
    a.get_members(b"g").get()
    assert a._indexes[b"g"] == index
    assert a.wait_for_change({b"g"}, timeout=0) is False
    b.join_group(b"g").get()
    assert a.wait_for_change({b"g"}, timeout=30) is True


def test_a_join_rewritten_unchanged_by_its_holder_is_still_a_success(srv: Any, coords: Any) -> None:
    # The holder acquiring its member key again with the same value: Consul
    # writes nothing and answers true, which must not read as "taken".
    c = coords(srv.url)
    c.join_group_create(b"g", {"a": 1})
    key = c._groups.member_key(b"g", b"m1")
    before = srv.kv_entries(key)[key]
    assert c.acquire_key(key, base64.b64decode(before["Value"]).decode())
    assert srv.kv_entries(key)[key] == before
    assert c.get_member_capabilities(b"g", b"m1").get() == {"a": 1}
