"""The Consul backend against the in-process Consul test server.

Time on the server is a fake clock the tests move (session expiry is then
exact); nothing asserts on elapsed time.
"""

from __future__ import annotations

import base64
import json
import logging
import random
import socket
import threading
from typing import Any

import consul
import pytest
import tooz
from tooz import coordination

from servicegroup import backend, errors
from servicegroup.drivers import consul as consul_driver
from servicegroup.drivers.consul import (
    CatalogReadOnly,
    ConsulAccessDenied,
    ConsulDriver,
    ConsulServerError,
    ConsulUnreachable,
    SessionTTLOutOfRange,
)
from servicegroup.drivers.consul_api import SessionGone
from servicegroup.drivers.consul_kv import LOCKS, dec, enc
from servicegroup.testing.clock import FakeClock
from servicegroup.testing.consul import ApiError, ConsulTestServer, validate_key


# -- URL options -------------------------------------------------------------


def test_unknown_url_option_is_refused_by_name(srv: Any, coords: Any) -> None:
    with pytest.raises(errors.InvalidURL, match="tiemout"):
        coords(f"{srv.url}?tiemout=5", start=False)


def test_ttl_and_timeout_together_are_refused(srv: Any, coords: Any) -> None:
    with pytest.raises(errors.InvalidURL, match="one setting"):
        coords(f"{srv.url}?ttl=20&timeout=30", start=False)


def test_timeout_is_an_alias_of_ttl_and_session_ttl_is_half(srv: Any, coords: Any) -> None:
    c = coords(f"{srv.url}?timeout=8", start=False)
    assert (c.ttl, c.session_ttl) == (8.0, 4.0)


def test_bad_mode_is_refused(srv: Any, coords: Any) -> None:
    with pytest.raises(errors.InvalidURL, match="mode"):
        coords(f"{srv.url}?mode=write", start=False)


def test_url_options_are_declared_for_the_resolver() -> None:
    assert {
        "ttl",
        "timeout",
        "token",
        "namespace",
        "mode",
        "ca_file",
        "cert_file",
        "key_file",
        "verify",
    } <= ConsulDriver.URL_OPTIONS


@pytest.mark.parametrize("namespace", ["a..b", "a/./b", "a/../b", "a%20b", "caf%C3%A9", "a%3Db"])
def test_namespace_consul_would_refuse_is_refused_by_name(srv: Any, coords: Any, namespace: str) -> None:
    with pytest.raises(errors.InvalidURL, match="namespace"):
        coords(f"{srv.url}?namespace={namespace}", start=False)


# -- key names -------------------------------------------------------------------

AWKWARD = [
    b"a/b",
    b"=",
    b"=3D",
    b"%41",
    b"%",
    b".",
    b"..",
    b"...",
    b".hidden",
    b"a..b",
    b"a...b",
    b"a.",
    "\u00e9/\u00fc".encode(),
    b"=locks",
    b"!locks",
    b"a b",
    b"a?b&c=d",
    b"\x00\x7f\xff",
    b"-_,.",
    b"../etc/passwd",
    b"members",
    b"leader",
]


def _assert_safe_segment(raw: bytes) -> None:
    seg = enc(raw)
    assert dec(seg) == raw
    assert "/" not in seg and not seg.startswith(LOCKS)
    validate_key(f"servicegroup/{seg}/members/{seg}")  # Consul 1.21.5's rule, and no ".."


@pytest.mark.parametrize("raw", AWKWARD + [bytes([b]) for b in range(256)])
def test_encoded_ids_round_trip_and_are_valid_consul_keys(raw: bytes) -> None:
    _assert_safe_segment(raw)


def test_encoding_round_trips_random_ids() -> None:
    rng = random.Random(22682)
    alphabet = b"./=%-a\xc3\xa9 ?&"
    for _ in range(2000):
        _assert_safe_segment(bytes(rng.choice(alphabet) for _ in range(rng.randint(1, 10))))


@pytest.mark.parametrize(
    "segment", ["=2e", "=2", "=zz", ".", "..", ".x", "a%2Fb", "!locks", LOCKS, "=41", "a b", "\u00e9"]
)
def test_decoding_refuses_what_enc_never_writes(segment: str) -> None:
    with pytest.raises(ValueError):
        dec(segment)


def test_the_server_refuses_what_the_old_percent_encoding_wrote(srv: Any, coords: Any) -> None:
    c = coords(srv.url)
    with pytest.raises(ConsulServerError, match="invalid key name"):
        c._api.kv_put("servicegroup/a%2Fb/", "{}")
    with pytest.raises(ApiError):
        validate_key("servicegroup/!locks/x")


# -- registered mode -----------------------------------------------------------


def test_join_writes_a_member_key_held_by_the_session(srv: Any, coords: Any) -> None:
    c = coords(f"{srv.url}?namespace=ns&ttl=4")
    c.join_group_create(b"g", {"zone": "a"})
    entry = srv.kv_entries("ns/g/")["ns/g/members/m1"]
    assert entry["Session"] == c._session
    assert json.loads(base64.b64decode(entry["Value"]))["capabilities"] == {"zone": "a"}
    sess = srv.state.sessions[c._session]
    assert (sess.behavior, sess.lock_delay, sess.ttl) == ("delete", 0.0, 2.0)


def test_deciding_reads_are_consistent_and_blocking_ones_are_not(srv: Any, coords: Any) -> None:
    c = coords(srv.url)
    c.join_group_create(b"g")
    lock = c.get_lock(b"x")
    srv.requests.clear()
    c.get_members(b"g").get()
    c.get_leader(b"g").get()
    c.get_groups().get()
    assert lock.acquire(blocking=False) and lock.release()
    reads = [q for m, p, q in srv.requests if m == "GET"]
    assert reads and all("consistent" in q for q in reads)
    c._groups.block(b"g", "1", 1.0)  # index 1 is long past: answers at once
    assert "consistent" not in srv.requests[-1][2] and "index" in srv.requests[-1][2]


def test_get_members_is_one_recursive_get(srv: Any, coords: Any) -> None:
    c = coords(srv.url)
    c.join_group_create(b"g")
    coords(srv.url, b"m2").join_group(b"g").get()
    calls: list[dict[str, Any]] = []
    real = c._api.kv_get

    def counting(key: str, **kw: Any) -> Any:
        calls.append(kw)
        return real(key, **kw)

    c._api.kv_get = counting
    assert c.get_members_with_capabilities(b"g").get() == {b"m1": None, b"m2": None}
    assert len(calls) == 1 and calls[0]["recurse"]


def test_ids_with_slashes_round_trip(srv: Any, coords: Any) -> None:
    c = coords(srv.url, b"host/1")
    c.join_group_create(b"a/b")
    assert c.get_members(b"a/b").get() == {b"host/1"}
    assert b"a/b" in c.get_groups().get()


def test_member_vanishes_when_its_session_expires(srv: Any, coords: Any, clock: FakeClock) -> None:
    a = coords(f"{srv.url}?ttl=4")
    b = coords(f"{srv.url}?ttl=4", b"m2")
    a.join_group_create(b"g")
    b.join_group(b"g").get()
    clock.now += 3
    a.heartbeat()
    clock.now += 1.5  # b: 4.5 s since creation > ttl; a: 1.5 s since renewal
    srv.state.expire_now()
    assert a.get_members(b"g").get() == {b"m1"}


def test_heartbeat_returns_a_third_of_the_session_ttl(srv: Any, coords: Any) -> None:
    assert coords(f"{srv.url}?ttl=6").heartbeat() == pytest.approx(1.0)


def test_lost_session_is_replaced_and_groups_rejoined(srv: Any, coords: Any, clock: FakeClock) -> None:
    c = coords(f"{srv.url}?ttl=4")
    seen: list[set[bytes]] = []
    c.on_session_lost.append(seen.append)
    c.join_group_create(b"g", {"v": 1})
    old = c._session
    clock.now += 10
    srv.state.expire_now()
    assert c.get_members(b"g").get() == set()
    c.heartbeat()
    assert c._session != old and c.session_lost_count == 1 and seen == [{b"g"}]
    assert c.get_member_capabilities(b"g", b"m1").get() == {"v": 1}


def _expire(srv: ConsulTestServer, clock: FakeClock) -> None:
    clock.now += 10  # past 2 x the 2 s session TTL of ttl=4, with no heartbeat
    srv.state.expire_now()


def _join_g2(c: Any) -> bool:
    c.join_group(b"g2").get()
    return c.get_members(b"g2").get() == {b"m1"}


def _elect_g2(c: Any) -> bool:
    elected: list[Any] = []
    c.watch_elected_as_leader(b"g2", elected.append)
    c.run_watchers()
    return len(elected) == 1 and c.get_leader(b"g2").get() == b"m1"


def _lock_x(c: Any) -> bool:
    lock = c.get_lock(b"x")
    return bool(lock.acquire(blocking=False) and lock.is_still_owner() and lock.release())


@pytest.mark.parametrize("acquire", [_join_g2, _elect_g2, _lock_x])
def test_an_acquire_after_the_session_expired_replaces_it_and_rejoins(
    srv: Any, coords: Any, clock: FakeClock, acquire: Any
) -> None:
    c = coords(f"{srv.url}?ttl=4")
    seen: list[set[bytes]] = []
    c.on_session_lost.append(seen.append)
    c.join_group_create(b"g1", {"v": 1})
    c.create_group(b"g2").get()
    old = c._session
    _expire(srv, clock)
    assert acquire(c)  # Consul: 500 invalid session -> new session, re-join, retried once
    assert c._session != old and c.session_lost_count == 1 and seen == [{b"g1"}]
    assert c.get_member_capabilities(b"g1", b"m1").get() == {"v": 1}
    c.heartbeat()
    assert c.session_lost_count == 1


def test_a_session_refused_again_is_retried_only_once(srv: Any, coords: Any) -> None:
    c = coords(srv.url)
    c.join_group_create(b"g1")
    c.create_group(b"g2").get()

    def gone(key: str, value: Any, **kw: Any) -> bool:
        raise SessionGone("gone")

    c._api.kv_put = gone  # every acquire, the re-join's too, finds the session gone
    with pytest.raises(ConsulServerError):
        c.join_group(b"g2").get()
    assert c.session_lost_count == 1 and c._joined_groups == set()


@pytest.mark.parametrize("body", ['invalid session "x"', 'rpc error making call: invalid session "x"'])
def test_invalid_session_from_a_server_or_a_client_agent_is_session_gone(srv: Any, coords: Any, body: str) -> None:
    c = coords(srv.url)

    def refuse(*args: Any, **kw: Any) -> bool:
        raise consul.ConsulException(f"500 {body}")

    c._api.client.kv.put = refuse
    with pytest.raises(SessionGone, match=srv.address):
        c._api.kv_put("servicegroup/k", "", acquire="x")
    with pytest.raises(ConsulServerError) as info:  # without ?acquire= it is just an error
        c._api.kv_put("servicegroup/k", "")
    assert not isinstance(info.value, SessionGone)


def test_stop_removes_members_at_once(srv: Any, coords: Any) -> None:
    a, b = coords(srv.url), coords(srv.url, b"m2")
    a.join_group_create(b"g")
    b.join_group(b"g").get()
    b.stop()
    assert a.get_members(b"g").get() == {b"m1"}


def test_run_watchers_with_timeout_waits_on_a_blocking_query(srv: Any, coords: Any) -> None:
    a, b = coords(srv.url), coords(srv.url, b"m2")
    a.create_group(b"g").get()
    events: list[Any] = []
    a.watch_join_group(b"g", events.append)
    assert a.run_watchers() == []
    t = threading.Thread(target=lambda: b.join_group(b"g").get())
    t.start()
    while not events:  # each call parks in Consul until a change (or 30 s)
        a.run_watchers(timeout=30)
    t.join()
    assert [(type(e), e.member_id) for e in events] == [(coordination.MemberJoinedGroup, b"m2")]


def test_wait_for_change_wakes_on_a_leave(srv: Any, coords: Any) -> None:
    a, b = coords(srv.url), coords(srv.url, b"m2")
    a.join_group_create(b"g")
    b.join_group(b"g").get()
    a.get_members(b"g").get()
    b.leave_group(b"g").get()
    assert a.wait_for_change({b"g"}, timeout=30) is True


# -- typed errors ----------------------------------------------------------------


def test_wrong_acl_token_is_a_typed_error_without_the_token(clock: FakeClock, coords: Any, caplog: Any) -> None:
    caplog.set_level(logging.DEBUG)
    with ConsulTestServer(session_ttl_min=1, acl_token="root-secret", clock=clock) as server:
        c = coords(f"{server.url}?token=wrong-secret", start=False)
        with pytest.raises(ConsulAccessDenied) as info:
            c.start()
        assert coords(f"{server.url}?token=root-secret").is_started
    assert isinstance(info.value, tooz.ToozError) and isinstance(info.value, errors.ConfigError)
    assert "ACL not found" in str(info.value) and server.address in str(info.value)
    assert "wrong-secret" not in str(info.value) + caplog.text + repr(c)


def test_a_token_that_cannot_read_keys_fails_start_instead_of_seeing_empty_groups(
    clock: FakeClock, coords: Any, caplog: Any
) -> None:
    # Consul would filter its list reads to nothing (404) rather than refuse them.
    caplog.set_level(logging.DEBUG)
    with ConsulTestServer(
        session_ttl_min=1,
        clock=clock,
        acl_tokens={"no-key-read": {"session:write"}, "observer": {"key:read", "session:write"}},
    ) as server:
        c = coords(f"{server.url}?token=no-key-read", start=False)
        with pytest.raises(ConsulAccessDenied) as info:
            c.start()
        assert server.state.sessions == {}  # refused before a session was made
        observer = coords(f"{server.url}?token=observer")
        assert observer.get_groups().get() == []
    msg = str(info.value)
    assert server.address in msg and "'servicegroup/'" in msg and "key:read" in msg
    assert "no-key-read" not in msg + caplog.text + repr(c)


def test_missing_acl_token_says_permission_denied(clock: FakeClock, coords: Any) -> None:
    with ConsulTestServer(session_ttl_min=1, acl_token="root", clock=clock) as server:
        with pytest.raises(ConsulAccessDenied, match="lacks a permission"):
            coords(server.url, start=False).start()


def test_unreachable_agent_names_host_and_port(coords: Any) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    c = coords(f"consul://127.0.0.1:{port}?connect_timeout=2", start=False)
    with pytest.raises(ConsulUnreachable, match=f"127.0.0.1:{port}") as info:
        c.start()
    assert isinstance(info.value, coordination.ToozConnectionError)
    assert isinstance(info.value, errors.BackendUnavailable)


def test_ttl_below_the_agents_floor_names_ttl_and_floor(clock: FakeClock, coords: Any) -> None:
    with ConsulTestServer(clock=clock) as server:  # Consul's default 10 s floor
        with pytest.raises(SessionTTLOutOfRange) as info:
            coords(f"{server.url}?ttl=10", start=False).start()
        assert coords(f"{server.url}?ttl=20").is_started
    msg = str(info.value)
    assert "ttl=10s" in msg and "5s session TTL" in msg and "10s" in msg
    assert isinstance(info.value, errors.InvalidURL)


# -- catalog mode ----------------------------------------------------------------------


@pytest.fixture
def catalog(srv: ConsulTestServer) -> consul.Consul:
    c = consul.Consul(host="127.0.0.1", port=srv.port)
    for sid in ("web-a", "web-b"):
        c.agent.service.register(
            "web", service_id=sid, address=f"10.0.0.{sid[-1] == 'a' and 1 or 2}", port=80, check=consul.Check.ttl("30s")
        )
    c.agent.check.ttl_pass("service:web-a")
    return c


def test_catalog_members_are_passing_instances(srv: Any, coords: Any, catalog: Any) -> None:
    c = coords(f"{srv.url}?mode=catalog")
    members = c.get_members_with_capabilities(b"web").get()
    assert set(members) == {b"web-a"} and members[b"web-a"]["address"] == "10.0.0.1"
    catalog.agent.check.ttl_pass("service:web-b")
    assert c.get_members(b"web").get() == {b"web-a", b"web-b"}
    assert b"web" in c.get_groups().get()


def test_catalog_reads_are_consistent(srv: Any, coords: Any, catalog: Any) -> None:
    c = coords(f"{srv.url}?mode=catalog")
    srv.requests.clear()
    c.get_members(b"web").get()
    c.get_groups().get()
    assert [(p, "consistent" in q) for m, p, q in srv.requests] == [
        ("/v1/health/service/web", True),
        ("/v1/catalog/services", True),
    ]


def test_catalog_unknown_service_is_group_not_created(srv: Any, coords: Any, catalog: Any) -> None:
    with pytest.raises(coordination.GroupNotCreated):
        coords(f"{srv.url}?mode=catalog").get_members(b"nope").get()


def test_catalog_member_can_be_the_node_name(srv: Any, coords: Any, catalog: Any) -> None:
    catalog.agent.check.ttl_pass("service:web-b")
    members = coords(f"{srv.url}?mode=catalog&catalog_member=node").get_members_with_capabilities(b"web").get()
    [(node, caps)] = members.items()
    assert len(caps["instances"]) == 2


@pytest.mark.parametrize("op", ["join_group", "leave_group", "create_group", "delete_group"])
def test_catalog_writes_raise_read_only_saying_why(srv: Any, coords: Any, catalog: Any, op: str) -> None:
    c = coords(f"{srv.url}?mode=catalog")
    with pytest.raises(CatalogReadOnly, match="registered with Consul by operators") as info:
        getattr(c, op)(b"web").get()
    assert isinstance(info.value, errors.NotSupported)
    assert isinstance(info.value, tooz.NotImplemented)


def test_catalog_watch_sees_an_instance_turn_healthy(srv: Any, coords: Any, catalog: Any) -> None:
    c = coords(f"{srv.url}?mode=catalog")
    events: list[Any] = []
    c.watch_join_group(b"web", events.append)
    t = threading.Thread(target=lambda: catalog.agent.check.ttl_pass("service:web-b"))
    t.start()
    while not events:
        c.run_watchers(timeout=30)
    t.join()
    assert [e.member_id for e in events] == [b"web-b"]


def test_driver_module_reexports_the_typed_errors() -> None:
    for name in ("ConsulAccessDenied", "ConsulUnreachable", "SessionTTLOutOfRange", "CatalogReadOnly"):
        assert hasattr(consul_driver, name)


def test_subscribe_pokes_on_membership_changes(srv: Any, coords: Any) -> None:
    a, b = coords(srv.url), coords(srv.url, b"m2")
    a.create_group(b"g").get()
    poked = threading.Event()
    cancel = a.subscribe(b"g", poked.set)
    try:
        # The subscription's first query only learns the index, so change the
        # group until a change lands after it (each wait is a bound, not a timing).
        for _ in range(60):
            if b._joined_groups:
                b.leave_group(b"g").get()
            else:
                b.join_group(b"g").get()
            if poked.wait(0.5):
                break
    finally:
        cancel()
    assert poked.is_set()


def test_catalog_leave_is_read_only_and_also_not_joined(srv: Any, coords: Any, catalog: Any) -> None:
    c = coords(f"{srv.url}?mode=catalog")
    with pytest.raises(coordination.MemberNotJoined) as info:
        c.leave_group(b"web").get()
    assert isinstance(info.value, CatalogReadOnly) and "catalog mode" in str(info.value)


def test_https_url_uses_tls_options(tmp_path: Any) -> None:
    c = backend.default_factory(
        f"consul+https://consul.example:8501?ca_file={tmp_path}/ca.pem"
        f"&cert_file={tmp_path}/c.pem&key_file={tmp_path}/k.pem&token=s3cret",
        b"m",
    )
    http = c._api.client.http
    assert http.base_uri == "https://consul.example:8501"
    assert http.verify == f"{tmp_path}/ca.pem"
    assert http.cert == (f"{tmp_path}/c.pem", f"{tmp_path}/k.pem")
    assert "s3cret" not in repr(c)
