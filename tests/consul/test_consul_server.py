"""The Consul test server against Consul's documented HTTP API behaviour.

The Consul backend is verified against this server when no real Consul is
available, so the server itself is pinned here to what Consul's API docs
say (paths, status codes, headers, session/KV/health semantics). Time is a
fake clock moved by the tests: nothing here waits on or asserts a timer.
"""

from __future__ import annotations

import base64
import json
import threading
import types
from typing import Any
import urllib.parse

import consul
import pytest
import requests

from servicegroup.testing.clock import FakeClock
from servicegroup.testing.consul import ConsulTestServer, parse_duration
from servicegroup.testing.consul.runner import main
from servicegroup.testing.consul.tokens import make_token


@pytest.fixture
def http(srv: ConsulTestServer) -> Any:
    base = f"http://{srv.address}"

    def call(method: str, path: str, body: Any = None, **kw: Any) -> requests.Response:
        data = body if isinstance(body, (bytes, str)) or body is None else json.dumps(body)
        return requests.request(method, base + path, data=data, timeout=10, **kw)

    return call


def session(http: Any, **body: Any) -> str:
    resp = http("PUT", "/v1/session/create", body)
    assert resp.status_code == 200, resp.text
    return str(resp.json()["ID"])


# -- durations ---------------------------------------------------------------


def test_go_durations_parse_like_consul() -> None:
    assert parse_duration("15s") == 15
    assert parse_duration("1m30s") == 90
    assert parse_duration("1.5s") == 1.5
    assert parse_duration("0") == 0
    assert parse_duration(15) == 15  # small numbers are seconds
    assert parse_duration(15_000_000_000) == 15  # big ones nanoseconds
    with pytest.raises(ValueError):
        parse_duration("15")


# -- KV ----------------------------------------------------------------------


def test_kv_get_missing_key_is_404_with_an_index(http: Any) -> None:
    resp = http("GET", "/v1/kv/nope")
    assert resp.status_code == 404
    assert int(resp.headers["X-Consul-Index"]) >= 1


def test_kv_put_then_get_returns_base64_value_and_indexes(http: Any) -> None:
    assert http("PUT", "/v1/kv/a/b", b"hello").json() is True
    [entry] = http("GET", "/v1/kv/a/b").json()
    assert base64.b64decode(entry["Value"]) == b"hello"
    assert entry["CreateIndex"] == entry["ModifyIndex"]
    assert entry["LockIndex"] == 0 and "Session" not in entry
    assert http("GET", "/v1/kv/a/b?raw").content == b"hello"


def test_kv_recurse_keys_and_separator(http: Any) -> None:
    for key in ("p/x", "p/y/1", "p/y/2", "q"):
        http("PUT", f"/v1/kv/{key}", b"")
    assert [e["Key"] for e in http("GET", "/v1/kv/p/?recurse").json()] == ["p/x", "p/y/1", "p/y/2"]
    assert http("GET", "/v1/kv/p/?keys").json() == ["p/x", "p/y/1", "p/y/2"]
    assert http("GET", "/v1/kv/p/?keys&separator=/").json() == ["p/x", "p/y/"]


def test_kv_cas_zero_only_creates(http: Any) -> None:
    assert http("PUT", "/v1/kv/k?cas=0", b"1").json() is True
    assert http("PUT", "/v1/kv/k?cas=0", b"2").json() is False
    [entry] = http("GET", "/v1/kv/k").json()
    assert http("PUT", f"/v1/kv/k?cas={entry['ModifyIndex'] + 7}", b"3").json() is False
    assert http("PUT", f"/v1/kv/k?cas={entry['ModifyIndex']}", b"3").json() is True


def test_kv_delete_with_stale_cas_is_refused(http: Any) -> None:
    http("PUT", "/v1/kv/k", b"1")
    [entry] = http("GET", "/v1/kv/k").json()
    http("PUT", "/v1/kv/k", b"2")
    assert http("DELETE", f"/v1/kv/k?cas={entry['ModifyIndex']}").json() is False
    assert http("GET", "/v1/kv/k").status_code == 200
    http("DELETE", "/v1/kv/?recurse")
    assert http("GET", "/v1/kv/k").status_code == 404


def test_kv_acquire_is_exclusive_between_sessions(http: Any) -> None:
    s1, s2 = session(http, LockDelay="0s"), session(http, LockDelay="0s")
    assert http("PUT", f"/v1/kv/lock?acquire={s1}", b"a").json() is True
    assert http("PUT", f"/v1/kv/lock?acquire={s2}", b"b").json() is False
    assert http("PUT", f"/v1/kv/lock?acquire={s1}", b"c").json() is True  # same session: ok
    [entry] = http("GET", "/v1/kv/lock").json()
    assert entry["Session"] == s1 and entry["LockIndex"] == 1
    assert http("PUT", f"/v1/kv/lock?release={s2}").json() is False
    assert http("PUT", f"/v1/kv/lock?release={s1}").json() is True
    assert http("PUT", f"/v1/kv/lock?acquire={s2}").json() is True
    assert http("GET", "/v1/kv/lock").json()[0]["LockIndex"] == 2


def test_kv_acquire_with_unknown_session_is_500(http: Any) -> None:
    resp = http("PUT", "/v1/kv/lock?acquire=00000000-0000-0000-0000-000000000000")
    assert resp.status_code == 500 and "invalid session" in resp.text


def test_kv_path_is_url_decoded_once(http: Any) -> None:
    assert http("PUT", "/v1/kv/g/a%3D2Fb", b"").json() is True  # the key "g/a=2Fb"
    assert http("GET", "/v1/kv/g/?keys").json() == ["g/a=2Fb"]
    refused = http("PUT", "/v1/kv/g/a%252Fb", b"")  # the key "g/a%2Fb", not "g/a/b"
    assert refused.status_code == 500 and "invalid key name" in refused.text


def _kv_path(key: str) -> str:
    # Dots percent-encoded too, so no HTTP client normalises "." / ".." away.
    return "/v1/kv/" + urllib.parse.quote(key, safe="/").replace(".", "%2E")


@pytest.mark.parametrize(
    "key",
    [
        "a b",
        "a%2Fb",
        "caf\u00e9",
        "a:b",
        "a!b",
        "a*b",
        "a\nb",
        "x\n",  # outside the pattern
        "a..b",
        "a/..b",
        "g/b..",  # ".." inside a segment (a whole "." or ".." segment never gets here:
        # Go's router redirects it first, see test_consul_fidelity.py)
    ],
)
def test_kv_refuses_keys_consul_1_21_5_refuses(srv: Any, http: Any, key: str) -> None:
    for method in ("PUT", "GET", "DELETE"):
        resp = http(method, _kv_path(key), b"v" if method == "PUT" else None)
        assert resp.status_code == 500, (method, key)
        assert resp.text.startswith("invalid key name"), resp.text
    assert srv.state.kv == {}


def test_kv_accepts_every_character_of_consuls_pattern(http: Any) -> None:
    key = "az/AZ/09/,_.-/?&=/.x/x./a.b"
    assert http("PUT", _kv_path(key), b"v").json() is True
    assert [e["Key"] for e in http("GET", "/v1/kv/az/?recurse").json()] == [key]


def test_stale_with_consistent_is_400_and_requests_are_recorded(srv: Any, http: Any) -> None:
    resp = http("GET", "/v1/kv/x?stale&consistent")
    assert resp.status_code == 400 and "conflicting semantics" in resp.text
    http("GET", "/v1/kv/x?consistent")
    assert srv.requests[-1] == ("GET", "/v1/kv/x", {"consistent": [""]})


# -- sessions ----------------------------------------------------------------


def test_session_ttl_below_floor_is_refused_with_500(http: Any) -> None:
    resp = http("PUT", "/v1/session/create", {"TTL": "0.5s"})
    assert resp.status_code == 500
    assert "Invalid Session TTL '500000000', must be between [1s=24h0m0s]" in resp.text


def test_session_ttl_above_24h_is_refused(http: Any) -> None:
    assert http("PUT", "/v1/session/create", {"TTL": "25h"}).status_code == 500


def test_session_default_floor_is_consuls_10s(clock: FakeClock) -> None:
    with ConsulTestServer(clock=clock) as server:
        c = consul.Consul(host="127.0.0.1", port=server.port)
        with pytest.raises(consul.ConsulException, match=r"\[10s=24h0m0s\]"):
            c.http.put(consul.callback.CB.json(), "/v1/session/create", data=json.dumps({"TTL": "9s"}))
        assert c.session.create(ttl=10)


def test_malformed_session_body_is_400(http: Any) -> None:
    assert http("PUT", "/v1/session/create", b"{not json").status_code == 400


def test_session_lives_until_twice_its_ttl_without_renewal(srv: Any, http: Any, clock: FakeClock) -> None:
    sid = session(http, TTL="2s")
    clock.now += 3.9  # past the TTL, within 2 x TTL
    srv.state.expire_now()
    assert http("GET", f"/v1/session/info/{sid}").json()[0]["ID"] == sid
    clock.now += 0.2
    srv.state.expire_now()
    assert http("GET", f"/v1/session/info/{sid}").json() == []


def test_session_renew_extends_and_unknown_renew_is_404(srv: Any, http: Any, clock: FakeClock) -> None:
    sid = session(http, TTL="2s")
    clock.now += 3
    renewed = http("PUT", f"/v1/session/renew/{sid}")
    assert renewed.status_code == 200 and renewed.json()[0]["TTL"] == "2s"
    clock.now += 3  # 6 s after creation, 3 s after renewal
    srv.state.expire_now()
    assert http("PUT", f"/v1/session/renew/{sid}").status_code == 200
    http("PUT", f"/v1/session/destroy/{sid}")
    resp = http("PUT", f"/v1/session/renew/{sid}")
    assert resp.status_code == 404 and "not found" in resp.text


def test_behavior_delete_removes_held_keys_on_expiry(srv: Any, http: Any, clock: FakeClock) -> None:
    sid = session(http, TTL="1s", Behavior="delete", LockDelay="0s")
    http("PUT", f"/v1/kv/m/1?acquire={sid}", b"x")
    http("PUT", "/v1/kv/m/other", b"y")
    clock.now += 2.5
    srv.state.expire_now()
    assert [e["Key"] for e in http("GET", "/v1/kv/m/?recurse").json()] == ["m/other"]


def test_behavior_release_keeps_keys_and_lock_delay_blocks_reacquire(srv: Any, http: Any, clock: FakeClock) -> None:
    s1 = session(http, LockDelay="15s")
    http("PUT", f"/v1/kv/l?acquire={s1}", b"x")
    http("PUT", f"/v1/session/destroy/{s1}")
    [entry] = http("GET", "/v1/kv/l").json()
    assert "Session" not in entry  # released, not deleted
    s2 = session(http, LockDelay="0s")
    assert http("PUT", f"/v1/kv/l?acquire={s2}").json() is False  # within lock-delay
    clock.now += 16
    assert http("PUT", f"/v1/kv/l?acquire={s2}").json() is True


# -- blocking queries ----------------------------------------------------------


def test_blocking_query_returns_when_the_prefix_changes(http: Any) -> None:
    http("PUT", "/v1/kv/w/a", b"1")
    index = http("GET", "/v1/kv/w/?recurse").headers["X-Consul-Index"]
    got: dict[str, Any] = {}

    def block() -> None:
        got["resp"] = http("GET", f"/v1/kv/w/?recurse&index={index}&wait=60s")

    t = threading.Thread(target=block)
    t.start()
    http("PUT", "/v1/kv/elsewhere", b"")  # other prefix: must not matter
    http("DELETE", "/v1/kv/w/a")  # a deletion wakes it (tombstone index)
    t.join(timeout=30)
    assert not t.is_alive()
    assert int(got["resp"].headers["X-Consul-Index"]) > int(index)
    assert got["resp"].status_code == 404


def test_blocking_query_with_old_index_answers_at_once(http: Any) -> None:
    http("PUT", "/v1/kv/w/a", b"1")
    resp = http("GET", "/v1/kv/w/?recurse&index=1&wait=60s")
    assert resp.status_code == 200


# -- agent services, checks and health -------------------------------------------


def test_ttl_check_starts_critical_and_passes_until_its_ttl(srv: Any, clock: FakeClock) -> None:
    c = consul.Consul(host="127.0.0.1", port=srv.port)
    c.agent.service.register("web", service_id="web1", check=consul.Check.ttl("10s"))
    assert c.health.service("web", passing=True)[1] == []
    assert len(c.health.service("web")[1]) == 1
    c.agent.check.ttl_pass("service:web1")
    [entry] = c.health.service("web", passing=True)[1]
    assert entry["Service"]["ID"] == "web1"
    assert {ch["CheckID"] for ch in entry["Checks"]} == {"serfHealth", "service:web1"}
    clock.now += 11
    srv.state.expire_now()
    assert c.health.service("web", passing=True)[1] == []


def test_unknown_check_and_service_are_404(srv: Any, http: Any) -> None:
    assert http("PUT", "/v1/agent/check/pass/nope").status_code == 404
    assert http("PUT", "/v1/agent/service/deregister/nope").status_code == 404


def test_service_without_name_is_400(http: Any) -> None:
    assert http("PUT", "/v1/agent/service/register", {"ID": "x"}).status_code == 400


def test_repeated_pass_does_not_bump_the_health_index(srv: Any) -> None:
    c = consul.Consul(host="127.0.0.1", port=srv.port)
    c.agent.service.register("web", service_id="web1", check=consul.Check.ttl("10s"))
    c.agent.check.ttl_pass("service:web1")
    before = c.health.service("web")[0]
    c.agent.check.ttl_pass("service:web1")
    assert c.health.service("web")[0] == before


def test_catalog_services_lists_names_and_deregister_removes(srv: Any) -> None:
    c = consul.Consul(host="127.0.0.1", port=srv.port)
    c.agent.service.register("api", service_id="api1", tags=["v1"])
    assert c.catalog.services()[1] == {"consul": [], "api": ["v1"]}
    c.agent.service.deregister("api1")
    assert "api" not in c.catalog.services()[1]


# -- ACL -------------------------------------------------------------------------


def test_acl_unknown_token_is_acl_not_found_on_every_endpoint(clock: FakeClock) -> None:
    with ConsulTestServer(acl_token="root", clock=clock) as server:
        base = f"http://{server.address}"
        answers = [
            requests.request(method, base + path, headers={"X-Consul-Token": "nope"}, timeout=10)
            for method, path in [
                ("GET", "/v1/kv/x"),
                ("GET", "/v1/kv/?recurse"),
                ("GET", "/v1/kv/p/?keys"),
                ("PUT", "/v1/kv/x"),
                ("DELETE", "/v1/kv/x"),
                ("PUT", "/v1/session/create"),
                ("GET", "/v1/catalog/services"),
            ]
        ]
    assert [(r.status_code, r.text) for r in answers] == [(403, "ACL not found")] * len(answers)


def test_acl_single_key_reads_and_writes_without_permission_are_403(clock: FakeClock) -> None:
    with ConsulTestServer(
        acl_token="root", acl_read_token="reader", clock=clock, acl_tokens={"sessions-only": {"session:write"}}
    ) as server:
        url = f"http://{server.address}/v1/kv/p/x"
        assert requests.put(url, headers={"X-Consul-Token": "root"}, timeout=10).json() is True
        refused = []
        for token in (None, "sessions-only"):
            headers = {"X-Consul-Token": token} if token else {}
            refused += [
                requests.get(url, headers=headers, timeout=10),
                requests.put(url, headers=headers, timeout=10),
                requests.delete(url, headers=headers, timeout=10),
            ]
        refused.append(requests.put(url, headers={"X-Consul-Token": "reader"}, timeout=10))
        assert requests.get(url, headers={"X-Consul-Token": "reader"}, timeout=10).status_code == 200
    assert [r.status_code for r in refused] == [403] * 7
    assert all(r.text.startswith("Permission denied: token with AccessorID") for r in refused)
    assert "'key:read' on \"p/x\"" in refused[0].text and "'key:write'" in refused[1].text
    assert not any(secret in r.text for r in refused for secret in ("root", "reader", "sessions-only"))


def test_acl_list_reads_without_permission_are_filtered_not_refused(clock: FakeClock) -> None:
    with ConsulTestServer(acl_token="root", clock=clock, acl_tokens={"sessions-only": {"session:write"}}) as server:
        base = f"http://{server.address}/v1/kv/"
        for key in ("p/a", "p/b"):
            requests.put(base + key, headers={"X-Consul-Token": "root"}, timeout=10)
        root = requests.get(base + "p/?recurse", headers={"X-Consul-Token": "root"}, timeout=10)
        answers = {}
        for token in (None, "sessions-only"):
            headers = {"X-Consul-Token": token} if token else {}
            answers[token] = [
                requests.get(base + q, headers=headers, timeout=10) for q in ("p/?recurse", "p/?keys", "?keys")
            ]
    assert len(root.json()) == 2 and "X-Consul-Results-Filtered-By-ACLs" not in root.headers
    for token, (recurse, keys, root_keys) in answers.items():
        assert (recurse.status_code, keys.status_code) == (404, 404)  # silently empty, not 403
        # Consul says so in a header, except to a request without a token
        # (maskResultsFilteredByACLs, agent/consul/rpc.go).
        assert recurse.headers.get("X-Consul-Results-Filtered-By-ACLs") == ("true" if token else None)
        assert root_keys.status_code == 200 and root_keys.json() == []


def test_acl_wrong_token_is_acl_not_found_and_none_is_permission_denied(clock: FakeClock) -> None:
    with ConsulTestServer(acl_token="root", acl_read_token="reader", clock=clock) as server:
        url = f"http://{server.address}/v1/kv/x"
        missing = requests.get(url, timeout=10)
        wrong = requests.get(url, headers={"X-Consul-Token": "nope"}, timeout=10)
        reader_write = requests.put(url, headers={"X-Consul-Token": "reader"}, timeout=10)
        ok = requests.put(url, headers={"X-Consul-Token": "root"}, timeout=10)
        bearer = requests.get(url, headers={"Authorization": "Bearer root"}, timeout=10)
    assert (missing.status_code, wrong.status_code, reader_write.status_code) == (403, 403, 403)
    assert missing.text.startswith("Permission denied")
    assert wrong.text == "ACL not found"
    assert reader_write.text.startswith("Permission denied")
    assert ok.status_code == 200 and bearer.status_code == 200


# -- wrapper command ---------------------------------------------------------------


def test_run_wrapper_exports_address_and_returns_the_commands_code(tmp_path: Any) -> None:
    out = tmp_path / "env"
    code = main(
        [
            "run",
            "--session-ttl-min",
            "1s",
            "--",
            "sh",
            "-c",
            f'echo "$CONSUL_HTTP_ADDR $SERVICEGROUP_CONSUL_URL" > {out}; exit 3',
        ]
    )
    addr, url = out.read_text().split()
    assert code == 3
    assert addr.startswith("127.0.0.1:") and url == f"consul://{addr}"


def test_tokens_made_through_the_acl_api_grant_what_their_rules_say(clock: FakeClock) -> None:
    # The path tests take on a real agent (servicegroup.testing.consul.tokens),
    # served by the model too, so it is exercised here and not only on a real agent.
    with ConsulTestServer(clock=clock, acl_token="root") as server:
        as_real_agent = types.SimpleNamespace(address=server.address)
        secret, cleanup = make_token(as_real_agent, "root", {"key:read", "service:write"})
        url = f"http://{server.address}/v1/kv/x"
        assert requests.get(url, headers={"X-Consul-Token": secret}, timeout=10).status_code == 404
        assert requests.put(url, headers={"X-Consul-Token": secret}, timeout=10).status_code == 403
        assert server._httpd.acl is not None and server._httpd.acl.tokens[secret] == {
            "key:read",
            "service:read",
            "service:write",
        }
        with pytest.raises(requests.HTTPError):
            make_token(types.SimpleNamespace(address=server.address), secret, {"key:read"})  # no acl:write
        cleanup()
        assert requests.get(url, headers={"X-Consul-Token": secret}, timeout=10).text == "ACL not found"
