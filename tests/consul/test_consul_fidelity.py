"""The Consul model where it once differed from Consul (issue 15).

Each test names the Consul source (hashicorp/consul) it follows; the model
must do what that code does, since the backend is verified against the
model only. Time is the fake clock of ``tests/conftest.py``; nothing here
waits on a timer.
"""

from __future__ import annotations

import base64
import json
import threading
from typing import Any

import pytest
import requests

from servicegroup.testing.clock import FakeClock
from servicegroup.testing.consul import ApiError, ConsulTestServer
from servicegroup.testing.consul import http_rules

ROOT = "root-secret"


@pytest.fixture
def acl_srv(clock: FakeClock) -> Any:
    """ACLs on: ``root`` may do everything, ``kv-only`` only read and write keys."""
    with ConsulTestServer(
        session_ttl_min=1, clock=clock, acl_token=ROOT, acl_tokens={"kv-only": {"key:read", "key:write"}}
    ) as server:
        yield server


def call(srv: ConsulTestServer, method: str, path: str, body: Any = None, token: str | None = None) -> Any:
    data = body if isinstance(body, (bytes, str)) or body is None else json.dumps(body)
    headers = {"X-Consul-Token": token} if token else {}
    return requests.request(
        method, f"http://{srv.address}{path}", data=data, headers=headers, timeout=10, allow_redirects=False
    )


def index_of(resp: Any) -> int:
    return int(resp.headers["X-Consul-Index"])


def _register_web(srv: ConsulTestServer) -> None:
    assert call(srv, "PUT", "/v1/agent/service/register", {"Name": "web", "ID": "web-1"}, ROOT).status_code == 200


# -- 1. ACL filtering of health, catalog and session reads ---------------------


@pytest.mark.parametrize("token", ["kv-only", None])
def test_health_read_without_service_read_is_filtered_to_empty_not_refused(acl_srv: Any, token: str | None) -> None:
    """agent/consul/health_endpoint.go Health.ServiceNodes: results go
    through filterACL (200 []), never 403; agent/consul/rpc.go
    maskResultsFilteredByACLs: the header only for a request with a token."""
    _register_web(acl_srv)
    assert len(call(acl_srv, "GET", "/v1/health/service/web", token=ROOT).json()) == 1
    resp = call(acl_srv, "GET", "/v1/health/service/web", token=token)
    assert (resp.status_code, resp.json()) == (200, [])
    assert resp.headers.get("X-Consul-Results-Filtered-By-ACLs") == ("true" if token else None)


def test_health_entries_need_node_read_as_well(acl_srv: Any) -> None:
    """agent/consul/acl.go filterACL on CheckServiceNodes: an entry is kept
    only if the token may read its node *and* its service."""
    _register_web(acl_srv)
    acl_srv.add_acl_token("services-only", {"service:read"})
    acl_srv.add_acl_token("discovery", {"service:read", "node:read"})
    assert call(acl_srv, "GET", "/v1/health/service/web", token="services-only").json() == []
    assert len(call(acl_srv, "GET", "/v1/health/service/web", token="discovery").json()) == 1


@pytest.mark.parametrize("token", ["kv-only", None])
def test_catalog_services_without_service_read_is_an_empty_map(acl_srv: Any, token: str | None) -> None:
    """agent/consul/catalog_endpoint.go Catalog.ListServices: filtered to
    {} (even Consul's own "consul" service), not refused."""
    resp = call(acl_srv, "GET", "/v1/catalog/services", token=token)
    assert (resp.status_code, resp.json()) == (200, {})
    assert "consul" in call(acl_srv, "GET", "/v1/catalog/services", token=ROOT).json()
    assert resp.headers.get("X-Consul-Results-Filtered-By-ACLs") == ("true" if token else None)


def test_session_reads_are_filtered_and_session_writes_refused(acl_srv: Any) -> None:
    """agent/consul/session_endpoint.go Session.Get/List filter by
    session:read; Session.Apply needs session:write (403)."""
    sid = call(acl_srv, "PUT", "/v1/session/create", {"TTL": "10s"}, ROOT).json()["ID"]
    assert call(acl_srv, "GET", f"/v1/session/info/{sid}", token="kv-only").json() == []
    assert call(acl_srv, "GET", "/v1/session/list", token="kv-only").json() == []
    assert call(acl_srv, "PUT", "/v1/session/create", {"TTL": "10s"}, "kv-only").status_code == 403


def test_an_unknown_token_is_still_refused_on_filtered_reads(acl_srv: Any) -> None:
    """agent/consul/acl.go ResolveToken: an unknown secret is "ACL not
    found" (403) before any filtering."""
    for path in ("/v1/health/service/web", "/v1/catalog/services", "/v1/session/list"):
        resp = call(acl_srv, "GET", path, token="nope")
        assert (resp.status_code, resp.text) == (403, "ACL not found")


# -- 2. kv_max_value_size --------------------------------------------------------


def test_a_value_over_kv_max_value_size_is_413_and_not_stored(srv: Any) -> None:
    """agent/kvs_endpoint.go KVSPut: ContentLength > KVMaxValueSize (512 KiB
    by default) is 413; exactly the limit is stored."""
    limit = http_rules.KV_MAX_VALUE_SIZE
    assert call(srv, "PUT", "/v1/kv/big", b"x" * limit).json() is True
    resp = call(srv, "PUT", "/v1/kv/big", b"y" * (limit + 1))
    assert resp.status_code == 413
    assert f"Request body({limit + 1} bytes) too large, max size: {limit} bytes" in resp.text
    assert base64.b64decode(call(srv, "GET", "/v1/kv/big").json()[0]["Value"]) == b"x" * limit


def test_the_size_is_checked_before_the_token_and_follows_the_agents_setting(clock: FakeClock) -> None:
    """agent/kvs_endpoint.go KVSPut checks the size before the RPC
    (KVS.Apply) resolves the token; kv_max_value_size is an agent option."""
    with ConsulTestServer(clock=clock, acl_token=ROOT, kv_max_value_size=8) as server:
        assert call(server, "PUT", "/v1/kv/k", b"123456789").status_code == 413  # no token at all
        assert call(server, "PUT", "/v1/kv/k", b"12345678", ROOT).json() is True


# -- 3. writes that change nothing ---------------------------------------------


def test_an_identical_put_keeps_modify_index_and_wakes_no_blocking_query(srv: Any) -> None:
    """agent/consul/state/kvs.go kvsSetTxn: an entry Equal to the stored one
    (DirEntry.Equal: value, flags, session, lock index) is not written, so
    ModifyIndex and the prefix's index stay and no watch fires."""
    call(srv, "PUT", "/v1/kv/w/a?flags=3", b"same")
    before = call(srv, "GET", "/v1/kv/w/?recurse")
    got: dict[str, Any] = {}
    t = threading.Thread(
        target=lambda: got.update(resp=call(srv, "GET", f"/v1/kv/w/?recurse&index={index_of(before)}&wait=60s"))
    )
    t.start()
    assert call(srv, "PUT", "/v1/kv/w/a?flags=3", b"same").json() is True
    assert call(srv, "GET", "/v1/kv/w/?recurse").json() == before.json()
    call(srv, "PUT", "/v1/kv/w/b", b"new")  # a real change ends the blocking query
    t.join(timeout=30)
    [new_b] = [e for e in call(srv, "GET", "/v1/kv/w/?recurse").json() if e["Key"] == "w/b"]
    assert index_of(got["resp"]) == new_b["ModifyIndex"]  # woken by w/b, not by the identical PUT


def test_an_identical_reacquire_by_the_holder_changes_nothing(srv: Any) -> None:
    """agent/consul/state/kvs.go kvsLockTxn: the holder acquiring again keeps
    LockIndex; with the same value the entry is Equal and not written."""
    sid = call(srv, "PUT", "/v1/session/create", {"LockDelay": "0s"}).json()["ID"]
    assert call(srv, "PUT", f"/v1/kv/l?acquire={sid}", b"v").json() is True
    [held] = call(srv, "GET", "/v1/kv/l").json()
    assert call(srv, "PUT", f"/v1/kv/l?acquire={sid}", b"v").json() is True
    assert call(srv, "GET", "/v1/kv/l").json() == [held]
    assert call(srv, "PUT", f"/v1/kv/l?acquire={sid}", b"w").json() is True  # a new value is a write
    [rewritten] = call(srv, "GET", "/v1/kv/l").json()
    assert rewritten["ModifyIndex"] > held["ModifyIndex"] and rewritten["LockIndex"] == held["LockIndex"] == 1


def test_an_identical_cas_put_succeeds_without_a_write(srv: Any) -> None:
    """agent/consul/state/kvs.go kvsSetCASTxn then kvsSetTxn: the CAS
    matches, the entry is Equal, so true is answered and nothing moves."""
    call(srv, "PUT", "/v1/kv/c", b"1")
    [entry] = call(srv, "GET", "/v1/kv/c").json()
    assert call(srv, "PUT", f"/v1/kv/c?cas={entry['ModifyIndex']}", b"1").json() is True
    assert call(srv, "GET", "/v1/kv/c").json() == [entry]


def test_a_plain_put_on_a_locked_key_resets_its_lock_index(srv: Any) -> None:
    """agent/consul/state/kvs.go kvsSetTxn keeps the session but takes the
    request's LockIndex (0): so the same value is still a write."""
    sid = call(srv, "PUT", "/v1/session/create", {"LockDelay": "0s"}).json()["ID"]
    call(srv, "PUT", f"/v1/kv/l?acquire={sid}", b"v")
    [held] = call(srv, "GET", "/v1/kv/l").json()
    call(srv, "PUT", "/v1/kv/l", b"v")
    [after] = call(srv, "GET", "/v1/kv/l").json()
    assert (after["Session"], after["LockIndex"]) == (sid, 0)
    assert after["ModifyIndex"] > held["ModifyIndex"]


def test_deleting_what_does_not_exist_writes_nothing(srv: Any) -> None:
    """agent/consul/state/kvs.go kvsDeleteTxn returns early for a missing
    key and KVSDeleteTree is "a no-op" when nothing is under the prefix."""
    call(srv, "PUT", "/v1/kv/keep", b"1")
    table_index = index_of(call(srv, "GET", "/v1/kv/gone"))  # a missing key reads the table's index
    assert call(srv, "DELETE", "/v1/kv/gone").json() is True
    assert call(srv, "DELETE", "/v1/kv/nothing/?recurse").json() is True
    assert call(srv, "DELETE", "/v1/kv/gone?cas=7").json() is True  # kvsDeleteCASTxn: nothing there is done
    assert index_of(call(srv, "GET", "/v1/kv/gone")) == table_index


# -- 4. wait=0s and other waits ----------------------------------------------------


@pytest.mark.parametrize(
    ("wait", "held"),
    [("0s", 300.0), ("0", 300.0), ("-1s", 300.0), (None, 300.0), ("700s", 600.0), ("1ms", 0.001), ("1m30s", 90.0)],
)
def test_a_wait_of_zero_is_consuls_default_not_an_immediate_answer(
    srv: Any, monkeypatch: Any, wait: str | None, held: float
) -> None:
    """agent/consul/rpc.go blockingQuery: a wait <= 0 becomes
    DefaultQueryTime (5 min), one above MaxQueryTime (10 min) is cut."""
    seen: list[tuple[int, float]] = []
    monkeypatch.setattr(srv.state, "block", lambda index, wait, current: seen.append((index, wait)))
    query = "index=5" + (f"&wait={wait}" if wait is not None else "")
    assert call(srv, "GET", f"/v1/kv/k?{query}").status_code == 404
    assert seen == [(5, held)]


@pytest.mark.parametrize(("query", "message"), [("wait=5", "Invalid wait time"), ("index=x", "Invalid index")])
def test_a_wait_without_a_unit_or_a_bad_index_is_400(srv: Any, query: str, message: str) -> None:
    """agent/http.go parseWait: wait is a Go duration ("5" has no unit),
    index an unsigned integer."""
    for path in ("/v1/kv/k", "/v1/health/service/web", "/v1/catalog/services"):
        resp = call(srv, "GET", f"{path}?{query}")
        assert (resp.status_code, resp.text) == (400, message)


# -- 5. conflicting flags, unclean paths, indexes, empty values ------------------------


def test_delete_with_recurse_and_cas_is_400(srv: Any) -> None:
    """agent/kvs_endpoint_test.go TestKVSEndpoint_DELETE_ConflictingFlags."""
    call(srv, "PUT", "/v1/kv/test/a", b"1")
    resp = call(srv, "DELETE", "/v1/kv/test?recurse&cas=0")
    assert resp.status_code == 400 and resp.text.startswith("Conflicting flags")
    assert "test/a" in srv.kv_entries("test")


def test_put_with_cas_and_acquire_is_400_and_acquires_nothing(srv: Any) -> None:
    """agent/kvs_endpoint_test.go TestKVSEndpoint_PUT_ConflictingFlags."""
    sid = call(srv, "PUT", "/v1/session/create", {}).json()["ID"]
    call(srv, "PUT", "/v1/kv/test", b"1")
    for query in (f"cas=0&acquire={sid}", f"acquire={sid}&release={sid}", f"cas=1&release={sid}"):
        resp = call(srv, "PUT", f"/v1/kv/test?{query}", b"2")
        assert resp.status_code == 400 and resp.text.startswith("Conflicting flags"), query
    assert "Session" not in srv.kv_entries("test")["test"]


@pytest.mark.parametrize(
    ("path", "location"),
    [
        ("/v1/kv/a//b", "/v1/kv/a/b"),
        ("/v1/kv/a/b//", "/v1/kv/a/b/"),
        ("/v1/kv/a/%2E/b?cas=0", "/v1/kv/a/b?cas=0"),
        ("/v1/kv/a/%2E%2E/b", "/v1/kv/b"),
        ("/v1/kv/%2E%2E", "/v1"),
    ],
)
def test_unclean_paths_are_redirected_by_the_router_not_stored(srv: Any, path: str, location: str) -> None:
    """agent/http.go serves through Go's http.ServeMux, which answers 301 to
    the cleaned path (repeated slashes, "." and ".." segments) before any
    Consul code runs."""
    for method in ("PUT", "GET", "DELETE"):
        resp = call(srv, method, path, b"v" if method == "PUT" else None)
        assert (resp.status_code, resp.headers["Location"]) == (301, location), method
    assert srv.state.kv == {}


def test_a_missing_keys_index_is_the_kv_tables_index(srv: Any) -> None:
    """agent/consul/kvs_endpoint.go KVS.Get: for a missing key the index is
    what state/kvs.go kvsGetTxn returns, kvsMaxIndex (not the key's own
    deletion index)."""
    call(srv, "PUT", "/v1/kv/a", b"1")
    call(srv, "DELETE", "/v1/kv/a")
    call(srv, "PUT", "/v1/kv/b", b"2")
    [b] = call(srv, "GET", "/v1/kv/b").json()
    assert index_of(call(srv, "GET", "/v1/kv/a")) == b["ModifyIndex"]


def test_session_info_index_does_not_move_on_kv_writes(srv: Any) -> None:
    """agent/consul/state/session.go SessionGet answers with the sessions
    table's index (sessionMaxIndex)."""
    sid = call(srv, "PUT", "/v1/session/create", {}).json()["ID"]
    before = index_of(call(srv, "GET", f"/v1/session/info/{sid}"))
    call(srv, "PUT", "/v1/kv/x", b"1")
    call(srv, "PUT", f"/v1/session/renew/{sid}")
    assert index_of(call(srv, "GET", f"/v1/session/info/{sid}")) == before
    call(srv, "PUT", "/v1/session/create", {})
    assert index_of(call(srv, "GET", f"/v1/session/info/{sid}")) > before


def test_an_empty_put_reads_back_as_null(srv: Any) -> None:
    """agent/kvs_endpoint.go KVSPut copies the body into a fresh buffer:
    an empty body is a nil value, JSON null."""
    call(srv, "PUT", "/v1/kv/e", b"")
    [entry] = call(srv, "GET", "/v1/kv/e").json()
    assert entry["Value"] is None
    assert call(srv, "GET", "/v1/kv/e?raw").content == b""


@pytest.mark.parametrize(("method", "path"), [("PUT", "/v1/kv/"), ("GET", "/v1/kv/"), ("DELETE", "/v1/kv/")])
def test_a_request_without_a_key_is_400_missing_key_name(srv: Any, method: str, path: str) -> None:
    """agent/kvs_endpoint.go KVSGet/KVSPut/KVSDelete: "Missing key name"
    unless the request lists (recurse, keys)."""
    resp = call(srv, method, path)
    assert (resp.status_code, resp.text) == (400, "Missing key name")


def test_lock_delay_is_checked_before_the_session(srv: Any, clock: FakeClock) -> None:
    """agent/consul/kvs_endpoint.go kvsPreApply enforces the lock delay on
    the leader before the FSM (state/kvs.go kvsLockTxn) checks the session:
    within a lock delay, even an unknown session is answered false."""
    sid = call(srv, "PUT", "/v1/session/create", {"LockDelay": "15s"}).json()["ID"]
    call(srv, "PUT", f"/v1/kv/l?acquire={sid}", b"x")
    call(srv, "PUT", f"/v1/session/destroy/{sid}")
    assert call(srv, "PUT", "/v1/kv/l?acquire=00000000-0000-0000-0000-000000000000").json() is False
    clock.now += 16
    assert call(srv, "PUT", "/v1/kv/l?acquire=00000000-0000-0000-0000-000000000000").status_code == 500


def test_http_rules_are_pure_functions_of_the_request() -> None:
    """The same rules, without a server (agent/http.go parseWait,
    agent/kvs_endpoint.go conflictingFlags, Go's cleanPath)."""
    assert http_rules.clean_path("/v1/kv/a//b/./c/../d/") == "/v1/kv/a/b/d/"
    assert http_rules.redirect("/v1/kv/a/b", "") is None
    with pytest.raises(ApiError, match="Conflicting flags: cas=0&recurse="):
        http_rules.refuse_conflicting_flags({"recurse": [""], "cas": ["0"]}, "recurse", "cas")
    assert http_rules.blocking_params({}) == (0, http_rules.DEFAULT_WAIT)
