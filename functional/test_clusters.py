"""Clustered backends under real faults: a ZooKeeper ensemble, an etcd
cluster, Redis behind Sentinel (servicegroup.testing.servers.cluster).

Each test runs member processes (``servicegroup join``) and an observer
against a 3-node cluster, lets a nemesis cause one fault, records every
observation in a history (servicegroup.testing.history) and checks the
invariants on it afterwards (docs/clusters.md). The short version run by
``make test``: :data:`MEMBERS` members, one leader kill and one partition
per cluster. Every deadline derives from the configured intervals.
"""

from __future__ import annotations

import glob
import os
import uuid

import pytest

from functional.members import MemberProcess, Target, explain, live_hosts, wait_for
from servicegroup.api import ServiceGroup
from servicegroup.testing import history as hist
from servicegroup.testing.proxy import FaultProxy
from servicegroup.testing.selection import backend_params
from servicegroup.testing.servers import cluster as clusters

#: Member processes per test (``SG_CLUSTER_MEMBERS`` raises it; the issue's
#: 20 is too heavy for ``make test`` on a loaded 2-core machine).
MEMBERS = int(os.environ.get("SG_CLUSTER_MEMBERS", "3"))
REPORT_INTERVAL = 1.0
DOWN_TIME = 6.0
STALENESS = 0.5
#: Invariant 1's bound: service_down_time, plus one more for a lease reset
#: by an election (etcd), plus a report interval and the staleness.
BOUND = 2 * DOWN_TIME + REPORT_INTERVAL + STALENESS
#: Waits for what must happen eventually (members joining, re-joining).
SETTLE = 3 * BOUND

CLUSTERS = {
    "zk": clusters.ZooKeeperEnsemble,
    "etcd": clusters.EtcdCluster,
    "redis": clusters.RedisSentinelCluster,
}


@pytest.fixture(scope="module", params=backend_params(*CLUSTERS))
def cluster(request):
    """One cluster per backend for the module; a start failure fails the
    tests with every node's log tail (never a skip)."""
    with CLUSTERS[request.param]() as c:
        c.name_ = request.param
        yield c


@pytest.fixture
def healed(cluster):
    cluster.heal()
    yield cluster
    cluster.heal()


def _target(cluster, url: str, tmp_path) -> Target:
    return Target(cluster.name_, cluster.name_, url, f"sqlite:///{tmp_path / 'records.sqlite'}")


def _kwargs(target: Target) -> dict[str, object]:
    return target.kwargs(report_interval=REPORT_INTERVAL, service_down_time=DOWN_TIME, max_staleness=STALENESS)


def _member(target: Target, host: str, topic: str, prefix: list[str] | None = None) -> MemberProcess:
    return MemberProcess(
        target, host, topic, report_interval=REPORT_INTERVAL, service_down_time=DOWN_TIME, prefix=prefix
    )


def _cleanup(members: list[MemberProcess], observer: ServiceGroup, proxies: list[FaultProxy] | None = None) -> None:
    for m in members:
        m.kill()
    observer.stop()
    for p in proxies or []:
        p.stop()


def _skewed(offset: str) -> list[str]:
    """A command prefix running a program with its wall clock *offset* off
    (libfaketime preloaded: the ``faketime`` wrapper forks, and a kill of the
    wrapper would leave the member running). The monotonic clock is left
    alone: libfaketime would move it by the epoch, and Python's timed waits,
    which hand the kernel a faked monotonic deadline, would then never end
    (seen: every heartbeat loop stalled after its first beat)."""
    libs = glob.glob("/usr/lib/*/faketime/libfaketimeMT.so.1")
    assert libs, "libfaketime is missing: scripts/ensure-services installs the faketime package"
    return ["env", f"LD_PRELOAD={libs[0]}", f"FAKETIME={offset}", "FAKETIME_DONT_FAKE_MONOTONIC=1"]


def _checked(history: hist.History, hosts: list[str], tmp_path, members, cluster) -> hist.Report:
    report = hist.check(history, hosts, BOUND)
    path = tmp_path / "history.jsonl"
    history.dump(str(path))
    print(f"\n{cluster.name_}: {report.summary()}; detections {report.detections}; history {path}")
    assert not report.violations, "\n".join(report.violations[:20]) + "\n" + explain(members)
    return report


def test_a_leader_kill_causes_no_false_down(healed, tmp_path):
    """Kill the leader (the Redis primary: a Sentinel failover), restart it:
    every member stays up throughout, as read by the observer."""
    cluster = healed
    target = _target(cluster, cluster.url, tmp_path)
    topic = f"lk-{uuid.uuid4().hex[:8]}"
    hosts = [f"host-{i}" for i in range(MEMBERS)]
    members = [_member(target, h, topic) for h in hosts]
    observer = ServiceGroup(**_kwargs(target))
    history = hist.History()
    try:
        with hist.observing(history, live_hosts(observer, topic), REPORT_INTERVAL / 2):
            assert wait_for(lambda: observer.get_all(topic) == hosts, bound=SETTLE), explain(members, cluster)
            leader = cluster.leader()
            history.record("fault", repr(leader), "kill-leader")
            leader.kill()
            cluster.leader()  # the election is over
            leader.start()
            history.record("fault-end", repr(leader))
            # Quiet for a while after: a late false down would show here.
            wait_for(lambda: False, bound=DOWN_TIME + REPORT_INTERVAL)
        _checked(history, hosts, tmp_path, members, cluster)
    finally:
        _cleanup(members, observer)


@pytest.mark.parametrize("cluster", backend_params("zk", "etcd"), indirect=True)
def test_a_member_cut_off_from_every_node_is_read_down_and_heals(healed, tmp_path):
    """One member reaches the cluster through a FaultProxy per node; all its
    proxies drop traffic (a partition): the observer reads it down within the
    bound, the others never, and it is back by itself after the heal."""
    cluster = healed
    topic = f"cut-{uuid.uuid4().hex[:8]}"
    hosts = [f"host-{i}" for i in range(MEMBERS)]
    proxies = [FaultProxy(n.host, n.port).start() for n in cluster.nodes]
    scheme = cluster.nodes[0].scheme
    cut_url = f"{scheme}://" + ",".join(p.address for p in proxies)
    target = _target(cluster, cluster.url, tmp_path)
    members = [_member(target, h, topic) for h in hosts[1:]]
    members.insert(0, _member(_target(cluster, cut_url, tmp_path), hosts[0], topic))
    observer = ServiceGroup(**_kwargs(target))
    history = hist.History()
    try:
        with hist.observing(history, live_hosts(observer, topic), REPORT_INTERVAL / 2):
            assert wait_for(lambda: observer.get_all(topic) == hosts, bound=SETTLE), explain(members, cluster)
            history.record("cut", hosts[0])
            for p in proxies:
                p.drop()
            assert wait_for(lambda: hosts[0] not in observer.get_all(topic), bound=SETTLE), explain(members)
            assert wait_for(lambda: members[0].saw("membership_lost"), bound=SETTLE), explain(members[:1])
            for p in proxies:
                p.heal()
            history.record("heal", hosts[0])
            assert wait_for(lambda: observer.get_all(topic) == hosts, bound=SETTLE), explain(members)
        _checked(history, hosts, tmp_path, members, cluster)
    finally:
        _cleanup(members, observer, proxies)


def test_members_with_skewed_clocks_are_never_read_down_and_a_crash_is_seen(healed, tmp_path):
    """Members run with their clocks service_down_time/2 behind, on time and
    ahead (faketime): liveness is timed by the servers, so no false down,
    and a crashed member is still read down within the bound."""
    cluster = healed
    target = _target(cluster, cluster.url, tmp_path)
    topic = f"skew-{uuid.uuid4().hex[:8]}"
    offsets = {"behind": f"-{DOWN_TIME / 2:g}s", "ontime": None, "ahead": f"+{DOWN_TIME / 2:g}s"}
    hosts = sorted(offsets)
    members = [_member(target, h, topic, _skewed(o) if o else None) for h, o in offsets.items()]
    observer = ServiceGroup(**_kwargs(target))
    history = hist.History()
    try:
        with hist.observing(history, live_hosts(observer, topic), REPORT_INTERVAL / 2):
            assert wait_for(lambda: observer.get_all(topic) == hosts, bound=SETTLE), explain(members, cluster)
            wait_for(lambda: False, bound=DOWN_TIME + REPORT_INTERVAL)  # a TTL's worth of beats
            history.record("crash", "ahead")
            members[2].kill()
            assert wait_for(lambda: "ahead" not in observer.get_all(topic), bound=SETTLE), explain(members)
        _checked(history, hosts, tmp_path, members, cluster)
    finally:
        _cleanup(members, observer)


@pytest.mark.parametrize("cluster", backend_params("zk"), indirect=True)
def test_an_observer_cut_off_keeps_its_view_then_says_unknown_and_never_flaps(healed, tmp_path):
    """The observer reaches the cluster through a FaultProxy per node, all
    dropped for longer than service_down_time: every answer meanwhile is the
    last full view or ``unknown``, never a partial list; after the heal it
    reads everyone again. (The members are not touched.)"""
    cluster = healed
    topic = f"obs-{uuid.uuid4().hex[:8]}"
    hosts = [f"host-{i}" for i in range(MEMBERS)]
    proxies = [FaultProxy(n.host, n.port).start() for n in cluster.nodes]
    target = _target(cluster, cluster.url, tmp_path)
    members = [_member(target, h, topic) for h in hosts]
    cut_url = f"{cluster.nodes[0].scheme}://" + ",".join(p.address for p in proxies)
    observer = ServiceGroup(**_kwargs(_target(cluster, cut_url, tmp_path)))
    history = hist.History()
    try:
        with hist.observing(history, live_hosts(observer, topic), REPORT_INTERVAL / 2):
            assert wait_for(lambda: observer.get_all(topic) == hosts, bound=SETTLE), explain(members, cluster)
            cut = history.record("fault", "observer", "cut")
            for p in proxies:
                p.drop()
            assert wait_for(lambda: observer.liveness_unknown(topic) is not None, bound=SETTLE)
            wait_for(lambda: False, bound=DOWN_TIME / 2)
            for p in proxies:
                p.heal()
            healed_at = history.record("fault-end", "observer", "cut")
            assert wait_for(lambda: observer.get_all(topic) == hosts, bound=SETTLE), explain(members)
        during = [e.value for e in history.events("view") if cut.at <= e.at <= healed_at.at]
        assert any(isinstance(v, str) for v in during), "the observer never said unknown"
        flaps = [v for v in during if isinstance(v, frozenset) and v != frozenset(hosts)]
        assert flaps == [], f"partial views while cut off: {flaps[:3]}"
        _checked(history, hosts, tmp_path, members, cluster)
    finally:
        _cleanup(members, observer, proxies)


@pytest.mark.parametrize("cluster", backend_params("zk"), indirect=True)
def test_a_zookeeper_chroot_is_created_and_members_live_under_it(healed, tmp_path):
    """kazoo does not create its chroot; the library does, and members and
    observers given the same URL see each other under it."""
    chroot = f"/sg-{uuid.uuid4().hex[:8]}/apps"
    target = _target(healed, healed.url + chroot, tmp_path)
    member = ServiceGroup(**_kwargs(target))
    observer = ServiceGroup(**_kwargs(target))
    try:
        member.join("host-a", "chrooted")
        assert wait_for(lambda: observer.get_all("chrooted") == ["host-a"], bound=SETTLE)
    finally:
        member.stop()
        observer.stop()
