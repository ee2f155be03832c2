"""The Consul backend end to end, through the ServiceGroup API.

Every test runs against the Consul HTTP API test server and, when a
``consul`` binary is on PATH, against a real ``consul agent -dev`` too
(``agent`` is parametrised ``fake`` / ``real``). Without the binary the real
runs do not exist, and the session's summary says so in one line
(``functional/conftest.py``), never silently. ``make test-consul-real``
runs only the ``real`` ones, against ``CONSUL_HTTP_ADDR``'s agent when set
(:mod:`servicegroup.testing.consul.real`). The last section checks the
model's claims about Consul (``docs/consul-test-server.md``) on the agent at
hand. Waits are bounds on something that must happen, never timing
assertions.
"""

from __future__ import annotations

from collections.abc import Iterator
import threading
import uuid
from typing import Any

import consul
import pytest
import requests
from tooz import coordination

from functional.members import wait_for
from servicegroup import errors
from servicegroup.api import ServiceGroup
from servicegroup.drivers.consul import CatalogReadOnly, ConsulAccessDenied, ConsulValueTooLarge
from servicegroup.matchmaker import MatchMaker
from servicegroup.testing.consul import ConsulTestServer
from servicegroup.testing.consul import real as consul_server_real
from servicegroup.testing.consul.tokens import make_token


pytestmark = pytest.mark.backend("consul")

#: Real-agent runs exist only with a binary (or CONSUL_HTTP_ADDR in a
#: real-only run); their absence is reported in the session's summary.
AGENTS = ["real"] if consul_server_real.real_only() else ["fake"] + (["real"] if consul_server_real.available() else [])
#: The management token of agents these tests start with ACLs on.
ROOT = "b1b2c3d4-0000-4000-8000-000000000001"
MAX_VALUE = 512 * 1024


@pytest.fixture(params=AGENTS)
def agent(request: pytest.FixtureRequest) -> Iterator[Any]:
    """A Consul agent: the test server, or a real one."""
    if request.param == "real":
        with consul_server_real.new_agent() as real:
            yield real
    else:
        with ConsulTestServer(session_ttl_min=1.0) as fake:
            yield fake


@pytest.fixture(params=AGENTS)
def acl_agent(request: pytest.FixtureRequest) -> Iterator[tuple[Any, str]]:
    """``(agent, management token)``: an agent with ACLs on, deny by default."""
    if request.param == "fake":
        with ConsulTestServer(session_ttl_min=1.0, acl_token=ROOT) as fake:
            yield fake, ROOT
        return
    token = consul_server_real.management_token()
    if consul_server_real.external_address() and not token:
        pytest.skip("CONSUL_HTTP_ADDR's agent is used without a token: set CONSUL_HTTP_TOKEN to run the ACL tests")
    agent = consul_server_real.new_agent() if token else consul_server_real.RealConsulAgent(acl_token=ROOT)
    with agent:
        yield agent, token or ROOT


@pytest.fixture
def token_with(acl_agent: tuple[Any, str]) -> Iterator[Any]:
    """``token_with({"key:read", ...})`` -> the secret of a new token with
    those permissions on ``acl_agent``, deleted after the test."""
    cleanups = []

    def make(permissions: set[str]) -> str:
        secret, cleanup = make_token(acl_agent[0], acl_agent[1], permissions)
        cleanups.append(cleanup)
        return secret

    yield make
    for cleanup in cleanups:
        cleanup()


@pytest.fixture
def topic() -> str:
    return f"t-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def sg_factory(tmp_path: Any) -> Iterator[Any]:
    made: list[ServiceGroup] = []

    def make(url: str, **kw: Any) -> ServiceGroup:
        kw.setdefault("report_interval", 1)
        kw.setdefault("service_down_time", 4)
        sg = ServiceGroup(driver="consul", url=url, records_url=f"sqlite:///{tmp_path / 'records.sqlite'}", **kw)
        made.append(sg)
        return sg

    yield make
    for sg in made:
        sg.stop()


def test_joined_hosts_are_up_and_a_left_host_is_not(agent: Any, sg_factory: Any, topic: str) -> None:
    sg = sg_factory(agent.url)
    sg.join("host-a", topic)
    sg.join("host-b", topic)
    assert wait_for(lambda: sg.get_all(topic) == ["host-a", "host-b"])
    sg.leave("host-b", topic)
    assert wait_for(lambda: not sg.is_up(topic=topic, host="host-b"))
    assert sg.is_up(topic=topic, host="host-a")


def test_a_member_that_stops_heartbeating_leaves_within_ttl(agent: Any, topic: str) -> None:
    url = f"{agent.url}?ttl=2"
    observer = coordination.get_coordinator(url, b"observer")
    observer.start()
    dying = coordination.get_coordinator(url, b"dying")
    dying.start()  # no heartbeat from here on: a crashed process
    try:
        dying.join_group_create(topic.encode())
        assert observer.get_members(topic.encode()).get() == {b"dying"}
        assert wait_for(lambda: observer.get_members(topic.encode()).get() == set())
    finally:
        observer.stop()


def test_awkward_ids_round_trip_through_consul_key_rules(agent: Any, topic: str) -> None:
    # Consul 1.21.5 refuses keys with "..", "%", spaces or non-ASCII (the test
    # server too, with a 500 on the request that sends one, so a bad encoding
    # fails the calls below): the key encoding keeps such ids working, and a
    # group named like the lock area is still a group. A namespace of its
    # own: a shared agent (make test-consul-real) has other tests' groups.
    group, member = f"\u00e9/../=x {topic}".encode(), b"../host 1%"
    coord = coordination.get_coordinator(f"{agent.url}?namespace=sgtest/{topic}", member)
    coord.start()
    try:
        coord.join_group_create(group)
        coord.join_group_create(f"=locks{topic}".encode())
        lock = coord.get_lock(b"..")
        assert lock.acquire(blocking=False)
        coord.watch_elected_as_leader(group, lambda e: None)
        coord.run_watchers()
        assert coord.get_members(group).get() == {member}
        assert sorted(coord.get_groups().get()) == sorted([group, f"=locks{topic}".encode()])
        assert coord.get_leader(group).get() == member
        assert lock.release()
    finally:
        coord.stop()


def test_an_acquire_with_an_expired_session_replaces_it(agent: Any, topic: str) -> None:
    coord = coordination.get_coordinator(f"{agent.url}?ttl=2", b"stalled")
    coord.start()  # and no heartbeat: its session expires
    try:
        coord.join_group_create(topic.encode())
        assert wait_for(lambda: coord.get_members(topic.encode()).get() == set())
        coord.join_group_create(topic.encode() + b"-2")  # Consul: 500 invalid session
        assert coord.session_lost_count == 1
        assert coord.get_members(topic.encode()).get() == {b"stalled"}  # re-joined
    finally:
        coord.stop()


def test_matchmaker_fanout_over_registered_members(agent: Any, sg_factory: Any, topic: str) -> None:
    sg = sg_factory(agent.url)
    mm = MatchMaker(sg)
    mm.register(topic, "h1")
    mm.register(topic, "h2")
    assert wait_for(lambda: sorted(sg.get_all(topic)) == ["h1", "h2"])
    assert sorted(mm.get_hosts(topic)) == ["h1", "h2"]


def test_watch_callbacks_fire_on_join(agent: Any, sg_factory: Any, topic: str) -> None:
    observer, member = sg_factory(agent.url), sg_factory(agent.url)
    joined: list[str] = []
    seen = threading.Event()

    def on_join(*args: Any) -> None:
        joined.append(args[-1] if args else "")
        seen.set()

    observer.watch(topic, on_join=on_join)
    member.join("host-w", topic)
    assert seen.wait(30)
    assert "host-w" in str(joined)


# -- catalog mode ----------------------------------------------------------


def _register(agent: Any, name: str, instance: str, passing: bool, token: str | None = None) -> consul.Consul:
    c = consul.Consul(host=agent.host, port=agent.port, token=token)
    c.agent.service.register(name, service_id=instance, address="10.1.2.3", port=8080, check=consul.Check.ttl("30s"))
    if passing:
        c.agent.check.ttl_pass(f"service:{instance}")
    return c


def test_catalog_mode_lists_operator_registered_passing_instances(agent: Any, sg_factory: Any, topic: str) -> None:
    c = _register(agent, topic, f"{topic}-1", passing=True)
    _register(agent, topic, f"{topic}-2", passing=False)
    sg = sg_factory(f"{agent.url}?mode=catalog")
    try:
        assert wait_for(lambda: sg.get_all(topic) == [f"{topic}-1"])
        assert MatchMaker(sg).get_hosts(topic) == [f"{topic}-1"]
        c.agent.check.ttl_pass(f"service:{topic}-2")
        assert wait_for(lambda: sg.get_all(topic) == [f"{topic}-1", f"{topic}-2"])
    finally:
        c.agent.service.deregister(f"{topic}-1")
        c.agent.service.deregister(f"{topic}-2")


def test_catalog_mode_refuses_join_with_a_typed_error(agent: Any, sg_factory: Any, topic: str) -> None:
    sg = sg_factory(f"{agent.url}?mode=catalog")
    with pytest.raises(errors.NotSupported, match="catalog mode") as info:
        sg.join("host-x", topic)
    assert isinstance(info.value, CatalogReadOnly)


# -- errors ------------------------------------------------------------------


def test_wrong_acl_token_fails_start_naming_the_problem(acl_agent: Any) -> None:
    server, _ = acl_agent
    coord = coordination.get_coordinator(f"{server.url}?token=not-the-token", b"m")
    with pytest.raises(ConsulAccessDenied, match="ACL not found") as info:
        coord.start()
    assert "not-the-token" not in str(info.value)


def test_a_token_that_may_read_no_service_fails_catalog_mode_start(acl_agent: Any, token_with: Any) -> None:
    # Consul filters the catalog to {} for it instead of refusing: without
    # the start check every group would read as "not created".
    server, _ = acl_agent
    secret = token_with({"key:read", "key:write", "session:write"})
    coord = coordination.get_coordinator(f"{server.url}?mode=catalog&token={secret}", b"m")
    with pytest.raises(ConsulAccessDenied, match="service:read"):
        coord.start()


def test_a_token_that_cannot_read_keys_fails_registered_mode_start(acl_agent: Any, token_with: Any) -> None:
    server, _ = acl_agent
    secret = token_with({"session:write"})
    with pytest.raises(ConsulAccessDenied, match="key:read"):
        coordination.get_coordinator(f"{server.url}?token={secret}", b"m").start()


def test_a_discovery_token_reads_catalog_members(acl_agent: Any, token_with: Any, sg_factory: Any, topic: str) -> None:
    server, root = acl_agent
    c = _register(server, topic, f"{topic}-1", passing=True, token=root)
    try:
        secret = token_with({"service:read", "node:read"})
        sg = sg_factory(f"{server.url}?mode=catalog&token={secret}")
        assert wait_for(lambda: sg.get_all(topic) == [f"{topic}-1"])
    finally:
        c.agent.service.deregister(f"{topic}-1")


def test_oversized_capabilities_are_refused_and_nothing_is_written(agent: Any, topic: str) -> None:
    coord = coordination.get_coordinator(agent.url, b"big")
    coord.start()
    try:
        coord.create_group(topic.encode()).get()
        with pytest.raises(ConsulValueTooLarge):
            coord.join_group(topic.encode(), {"blob": "x" * MAX_VALUE}).get()
        assert coord.get_members(topic.encode()).get() == set()
    finally:
        coord.stop()


# -- the model's claims about Consul, on the agent at hand --------------------------


def _http(agent: Any, method: str, path: str, body: bytes | None = None, token: str | None = None) -> Any:
    token = token or consul_server_real.management_token()
    headers = {"X-Consul-Token": token} if token else {}
    url = f"http://{agent.address}{path}"
    return requests.request(method, url, data=body, headers=headers, timeout=30, allow_redirects=False)


@pytest.fixture
def kv_prefix(agent: Any) -> Iterator[str]:
    prefix = f"sgtest-{uuid.uuid4().hex[:10]}"
    yield prefix
    _http(agent, "DELETE", f"/v1/kv/{prefix}?recurse")


def test_consul_writes_nothing_for_an_identical_put(agent: Any, kv_prefix: str) -> None:
    def modify_index() -> int:
        return int(_http(agent, "GET", f"/v1/kv/{kv_prefix}/k").json()[0]["ModifyIndex"])

    _http(agent, "PUT", f"/v1/kv/{kv_prefix}/k", b"same")
    first = modify_index()
    assert _http(agent, "PUT", f"/v1/kv/{kv_prefix}/k", b"same").json() is True
    assert modify_index() == first
    _http(agent, "PUT", f"/v1/kv/{kv_prefix}/k", b"other")
    assert modify_index() > first


def test_consul_answers_413_over_512_kib_and_400_to_conflicts(agent: Any, kv_prefix: str) -> None:
    assert _http(agent, "PUT", f"/v1/kv/{kv_prefix}/big", b"x" * MAX_VALUE).json() is True
    assert _http(agent, "PUT", f"/v1/kv/{kv_prefix}/big", b"x" * (MAX_VALUE + 1)).status_code == 413
    assert _http(agent, "PUT", f"/v1/kv/{kv_prefix}/big?cas=0&acquire=x", b"v").status_code == 400
    assert _http(agent, "DELETE", f"/v1/kv/{kv_prefix}?recurse&cas=0").status_code == 400
    assert _http(agent, "GET", f"/v1/kv/{kv_prefix}/big?index=1&wait=5").status_code == 400


def test_consul_redirects_unclean_paths_and_stores_empty_values_as_null(agent: Any, kv_prefix: str) -> None:
    resp = _http(agent, "PUT", f"/v1/kv/{kv_prefix}//k", b"v")
    assert (resp.status_code, resp.headers["Location"]) == (301, f"/v1/kv/{kv_prefix}/k")
    assert _http(agent, "GET", f"/v1/kv/{kv_prefix}/k").status_code == 404
    _http(agent, "PUT", f"/v1/kv/{kv_prefix}/empty", b"")
    assert _http(agent, "GET", f"/v1/kv/{kv_prefix}/empty").json()[0]["Value"] is None


def test_consul_filters_health_and_catalog_reads_a_token_may_not_do(
    acl_agent: Any, token_with: Any, topic: str
) -> None:
    server, root = acl_agent
    c = _register(server, topic, f"{topic}-1", passing=True, token=root)
    try:
        secret = token_with({"key:read"})
        health = _http(server, "GET", f"/v1/health/service/{topic}", token=secret)
        services = _http(server, "GET", "/v1/catalog/services", token=secret)
        assert (health.status_code, health.json()) == (200, [])
        assert (services.status_code, services.json()) == (200, {})
        assert health.headers.get("X-Consul-Results-Filtered-By-ACLs") == "true"
        assert len(_http(server, "GET", f"/v1/health/service/{topic}", token=root).json()) == 1
    finally:
        c.agent.service.deregister(f"{topic}-1")
