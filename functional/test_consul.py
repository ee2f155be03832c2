"""The Consul backend end to end, through the ServiceGroup API.

Every test runs against the Consul HTTP API test server and, when a
``consul`` binary is on PATH, against a real ``consul agent -dev`` too
(``agent`` is parametrised ``fake`` / ``real``). Without the binary the real
runs do not exist, and the session's summary says so in one line
(``functional/conftest.py``), never silently. Waits are bounds on something
that must happen, never timing assertions.
"""

from __future__ import annotations

from collections.abc import Iterator
import threading
import uuid
from typing import Any

import consul
import pytest
from tooz import coordination

from functional.members import wait_for
from servicegroup import errors
from servicegroup.api import ServiceGroup
from servicegroup.drivers.consul import CatalogReadOnly, ConsulAccessDenied
from servicegroup.matchmaker import MatchMaker
from servicegroup.testing.consul import ConsulTestServer
from servicegroup.testing.consul import real as consul_server_real


pytestmark = pytest.mark.backend("consul")

#: Real-agent runs exist only with a binary; their absence is reported in
#: the session's summary.
AGENTS = ["fake"] + (["real"] if consul_server_real.available() else [])


@pytest.fixture(params=AGENTS)
def agent(request: pytest.FixtureRequest) -> Iterator[Any]:
    """A Consul agent: the test server, or a real one when on PATH."""
    if request.param == "real":
        with consul_server_real.RealConsulAgent() as real:
            yield real
    else:
        with ConsulTestServer(session_ttl_min=1.0) as fake:
            yield fake


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
    # group named like the lock area is still a group.
    group, member = f"\u00e9/../=x {topic}".encode(), b"../host 1%"
    coord = coordination.get_coordinator(agent.url, member)
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


def _register(agent: Any, name: str, instance: str, passing: bool) -> consul.Consul:
    c = consul.Consul(host="127.0.0.1", port=agent.port)
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


def test_wrong_acl_token_fails_start_naming_the_problem(topic: str) -> None:
    if consul_server_real.available():
        server: Any = consul_server_real.RealConsulAgent(acl_token="b1b2c3d4-0000-4000-8000-000000000001")
    else:
        server = ConsulTestServer(session_ttl_min=1.0, acl_token="b1b2c3d4-0000-4000-8000-000000000001")
    with server:
        coord = coordination.get_coordinator(f"{server.url}?token=not-the-token", b"m")
        with pytest.raises(ConsulAccessDenied, match="ACL not found") as info:
            coord.start()
    assert "not-the-token" not in str(info.value)
