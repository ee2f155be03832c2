"""MatchMaker: topic lookups answered from the membership view.

An in-memory backend and a fake clock (tests/fakes.py): services register
through one ServiceGroup, senders look up through another, as separate
processes would. Time only moves when a test says so.
"""

from __future__ import annotations

import threading

import pytest

from servicegroup import errors
from servicegroup.api import ServiceGroup
from servicegroup.matchmaker import MatchMaker
from tests.fakes import FakeClock, FakeServer

TTL = 3.0
STALENESS = 0.5
KEYS = [f"instance-{i}" for i in range(2000)]


class World:
    """One fake backend, one clock, and the ServiceGroups built on them."""

    def __init__(self, tmp_path) -> None:
        self.clock = FakeClock()
        self.server = FakeServer(self.clock, ttl=TTL)
        self.records_url = f"sqlite:///{tmp_path / 'records.sqlite'}"
        self.made: list[ServiceGroup] = []

    def sg(self) -> ServiceGroup:
        sg = ServiceGroup(
            driver="mc",
            records_url=self.records_url,
            report_interval=1.0,
            service_down_time=TTL,
            max_staleness=STALENESS,
            coordinator_factory=self.server.factory,
            clock=self.clock,
            background=False,
        )
        self.made.append(sg)
        return sg

    def settle(self) -> None:
        """Let every view's snapshot age past max_staleness (next read refreshes)."""
        self.clock.advance(STALENESS * 1.5)

    def outlive(self, services: ServiceGroup, *survivors: str) -> None:
        """Move past the TTL with only *survivors* heartbeating."""
        for _ in range(int(TTL) + 2):
            self.clock.advance(1.0)
            for host in survivors:
                services.heartbeat(host)


@pytest.fixture
def world(tmp_path):
    w = World(tmp_path)
    yield w
    for sg in w.made:
        sg.stop()


@pytest.fixture
def services(world):
    """The services' side: registers hosts (one process per host in real life)."""
    return MatchMaker(world.sg())


@pytest.fixture
def sender(world):
    """The sending side: only looks up, acks and nacks."""
    return MatchMaker(world.sg())


def register(mm: MatchMaker, topic: str, *hosts: str) -> None:
    for host in hosts:
        mm.register(topic, host)


def test_fanout_reaches_every_live_host_and_not_the_dead(world, services, sender):
    register(services, "compute", "host-a", "host-b", "host-c")
    assert sender.get_hosts("compute") == ["host-a", "host-b", "host-c"]
    world.outlive(services._sg, "host-a", "host-c")  # host-b stops heartbeating
    assert sender.get_hosts("compute") == ["host-a", "host-c"]


def test_unregistered_host_is_no_longer_an_answer(world, services, sender):
    register(services, "compute", "host-a", "host-b")
    assert sender.get_hosts("compute") == ["host-a", "host-b"]
    services.unregister("compute", "host-a")
    world.settle()
    assert sender.get_hosts("compute") == ["host-b"]


def test_nack_removes_a_host_at_once_everywhere(world, services, sender):
    register(services, "compute", "host-a", "host-b")
    observer = MatchMaker(world.sg())
    assert observer.get_hosts("compute") == ["host-a", "host-b"]
    assert sender.expire("compute", "host-a") is True
    assert sender.get_hosts("compute") == ["host-b"], "the nacking process stops at once"
    world.settle()
    assert observer.get_hosts("compute") == ["host-b"], "every other process at its next refresh"
    assert [sender.get_host("compute") for _ in range(5)] == ["host-b"] * 5


def test_expired_host_comes_back_after_its_heartbeat(world, services, sender):
    register(services, "compute", "host-a", "host-b")
    sender.expire("compute", "host-a")
    assert sender.get_hosts("compute") == ["host-b"]
    services._sg.heartbeat("host-a")  # its own loop sees itself unlisted and re-joins
    world.settle()
    assert sender.get_hosts("compute") == ["host-a", "host-b"]
    assert sender.get_hosts("compute.host-a") == ["host-a"]


def test_same_key_goes_to_the_same_host_and_only_the_dead_hosts_keys_move(world, services, sender):
    register(services, "compute", "host-a", "host-b", "host-c", "host-d")
    before = {k: sender.get_host("compute", key=k) for k in KEYS}
    assert set(before.values()) == {"host-a", "host-b", "host-c", "host-d"}
    again = {k: sender.get_host("compute", key=k) for k in KEYS}
    assert again == before, "the same key keeps going to the same host"
    world.outlive(services._sg, "host-a", "host-b", "host-d")  # host-c dies
    after = {k: sender.get_host("compute", key=k) for k in KEYS}
    moved = {k for k in KEYS if after[k] != before[k]}
    assert moved == {k for k in KEYS if before[k] == "host-c"}, "only the dead host's keys move"
    assert "host-c" not in after.values()


def test_keyed_answers_agree_across_processes(world, services, sender):
    register(services, "compute", "host-a", "host-b", "host-c")
    other = MatchMaker(world.sg())
    assert [sender.get_host("compute", key=k) for k in KEYS[:200]] == [
        other.get_host("compute", key=k) for k in KEYS[:200]
    ]


def test_without_a_key_hosts_are_used_in_turn(services, sender):
    register(services, "compute", "host-a", "host-b", "host-c")
    picks = [sender.get_host("compute") for _ in range(6)]
    assert sorted(picks[:3]) == ["host-a", "host-b", "host-c"]
    assert picks[3:] == picks[:3]


def test_empty_answer_raises_no_live_hosts_naming_the_topic(world, services, sender):
    for lookup in (sender.get_hosts, sender.get_host):
        with pytest.raises(errors.NoLiveHosts, match="'scheduler'") as exc:
            lookup("scheduler")
        assert exc.value.topic == "scheduler"
    register(services, "scheduler", "host-a")
    world.outlive(services._sg)  # its only host dies
    with pytest.raises(errors.NoLiveHosts) as exc:
        sender.get_host("scheduler", key="k")
    assert exc.value.topic == "scheduler"
    assert isinstance(exc.value, LookupError)


def test_direct_topic_host_answers_only_while_the_host_is_live(world, services, sender):
    register(services, "compute", "host-a", "host-3")
    assert sender.get_hosts("compute.host-3") == ["host-3"]
    assert sender.get_host("compute.host-3") == "host-3"
    assert sender.get_host("compute.host-3", key="anything") == "host-3"
    world.outlive(services._sg, "host-a")  # host-3 dies
    for lookup in (sender.get_hosts, sender.get_host):
        with pytest.raises(errors.NoLiveHosts, match="'compute.host-3'"):
            lookup("compute.host-3")
    with pytest.raises(errors.NoLiveHosts):
        sender.get_host("compute.never-joined")


def test_direct_lookup_splits_at_the_last_dot_so_topics_may_contain_dots(services, sender):
    register(services, "nova.compute", "host-1", "host-2")
    assert sender.get_hosts("nova.compute") == ["host-1", "host-2"]
    assert sender.get_hosts("nova.compute.host-2") == ["host-2"]


def test_a_known_topic_is_never_read_as_direct(services, sender):
    # Topic "a" has a host named "b", and a topic "a.b" exists too.
    register(services, "a", "b")
    register(services, "a.b", "x", "y")
    assert services.get_hosts("a.b") == ["x", "y"], "registered here: a topic"
    assert sender.get_hosts("a.b") == ["b"], "unknown to the sender: the direct reading"
    services._sg.leave("b", "a")
    assert services.get_hosts("a.b") == ["x", "y"]


def test_fenced_host_is_not_an_answer(services, sender):
    register(services, "compute", "host-a", "host-b")
    sender._sg.force_down("host-a", "compute")
    assert sender.get_hosts("compute") == ["host-b"]
    with pytest.raises(errors.NoLiveHosts):
        sender.get_host("compute.host-a")


def test_lookups_do_not_hit_the_backend(world, services, sender):
    register(services, "compute", "host-a", "host-b", "host-c")
    sender.get_hosts("compute")  # the view's first read of the topic
    reads = world.server.reads
    for i in range(500):
        sender.get_hosts("compute")
        sender.get_host("compute")
        sender.get_host("compute", key=f"k{i}")
        sender.get_host("compute.host-b")
    assert world.server.reads == reads


def test_wait_returns_the_first_host_to_join(world, services, sender):
    with pytest.raises(errors.NoLiveHosts):
        sender.get_host("conductor")

    def join_later():
        services.register("conductor", "host-a")
        sender._sg._view.refresh("conductor")  # what the refresher thread does

    timer = threading.Timer(0.1, join_later)
    timer.start()
    try:
        assert sender.get_host("conductor", wait=30) == "host-a"
    finally:
        timer.cancel()


def test_wait_is_bounded(sender):
    with pytest.raises(errors.NoLiveHosts, match="'conductor'"):
        sender.get_hosts("conductor", wait=0.05)


def test_nack_during_an_outage_is_local_and_an_ack_lifts_it(world, services, sender):
    register(services, "compute", "host-a", "host-b")
    assert sender.get_hosts("compute") == ["host-a", "host-b"]
    world.server.down = True
    assert sender.expire("compute", "host-a") is False, "the backend was not reached"
    assert sender.get_hosts("compute") == ["host-b"], "but the nack holds here at once"
    world.server.down = False
    world.settle()
    assert sender.get_hosts("compute") == ["host-b"], "the backend still lists it: no re-join will come"
    assert sender.ack_alive("compute", "host-a") is True, "it answered and is still listed"
    assert sender.get_hosts("compute") == ["host-a", "host-b"]


def test_ack_does_not_resurrect_a_host_the_backend_dropped(world, services, sender):
    register(services, "compute", "host-a", "host-b")
    sender.expire("compute", "host-a")
    assert sender.ack_alive("compute", "host-a") is False
    assert sender.get_hosts("compute") == ["host-b"]
    world.outlive(services._sg, "host-b")
    assert sender.ack_alive("compute", "host-b") is True
    assert sender.ack_alive("compute", "host-a") is False


def test_weight_capability_steers_keyed_lookups(services, sender):
    services.register("compute", "big", capabilities={"weight": 3})
    services.register("compute", "small", capabilities={"weight": 1})
    services.register("compute", "draining", capabilities={"weight": 0})
    owners = [sender.get_host("compute", key=k) for k in KEYS]
    assert "draining" not in owners
    assert owners.count("big") > 2 * owners.count("small")
    assert "draining" in sender.get_hosts("compute"), "draining hosts still get fanout"


def test_nack_the_backend_cannot_apply_is_local_and_lapses(world, services, sender):
    """Consul's catalog mode cannot remove members: the nack holds here
    only, an ack lifts it, and without an ack it lapses after
    service_down_time instead of hiding a live host forever."""
    register(services, "compute", "host-a", "host-b")
    world.server.read_only = True
    assert sender.expire("compute", "host-a") is False, "nothing was removed in the backend"
    assert sender.get_hosts("compute") == ["host-b"]
    assert sender.ack_alive("compute", "host-a") is True
    assert sender.get_hosts("compute") == ["host-a", "host-b"]

    assert sender.expire("compute", "host-a") is False
    world.outlive(services._sg, "host-a", "host-b")  # past service_down_time, both still beat
    assert sender.get_hosts("compute") == ["host-a", "host-b"], "a nack is never forever"
