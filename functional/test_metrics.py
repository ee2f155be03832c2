"""Prometheus metrics of a live fleet, scraped over HTTP.

Three ``servicegroup join`` processes in one topic and an observer process
(this one) serving its metrics on ``metrics_port``; the test scrapes the
endpoint with a real HTTP client, parses the text with
``prometheus_client.parser`` and checks the values against the fleet it
started; then SIGKILLs one member: ``servicegroup_members_up`` drops by
exactly one and ``servicegroup_members_down`` rises by one, and no scrape
meanwhile shows a live member down.

Backends: SQLite (one-statement reads), ZooKeeper (a watched cache),
memcached (two round trips per read). Waits are bounded by a multiple of the
configured intervals; nothing asserts on time.
"""

from __future__ import annotations

import urllib.request
import uuid

from prometheus_client.parser import text_string_to_metric_families
import pytest

from functional.members import DOWN_TIME, REPORT_INTERVAL, STALENESS, MemberProcess, Target, explain, wait_for
from servicegroup.api import ServiceGroup
from servicegroup.testing import selection

#: Generous bound on any wait: many service_down_times (a loaded machine
#: starts processes slowly), never a threshold the test asserts.
BOUND = 30 * (DOWN_TIME + STALENESS)

HOSTS = ("host-1", "host-2", "host-3")


def scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10 * DOWN_TIME) as resp:
        assert resp.status == 200
        assert resp.headers["Content-Type"].startswith("text/plain")
        text = resp.read().decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


@pytest.mark.parametrize("target", selection.backend_params("db-sqlite", "zk", "mc"), indirect=True)
def test_scraped_metrics_match_the_fleet_and_a_kill_drops_up_by_one(target: Target):
    topic = f"metrics-{uuid.uuid4().hex[:10]}"
    own_topic = f"{topic}-observer"
    members = [MemberProcess(target, host, topic) for host in HOSTS]
    observer = ServiceGroup(**target.kwargs(metrics_port=0))
    try:
        observer.join("observer-host", own_topic)  # its heartbeats are this process's series
        port = observer.metrics.serve(0)  # serving already: the port it bound
        up = ("servicegroup_members_up", (("topic", topic),))
        down = ("servicegroup_members_down", (("topic", topic),))
        beats = ("servicegroup_heartbeat_seconds_count", (("host", "observer-host"),))

        def fleet_up() -> bool:
            got = scrape(port)
            return got.get(up) == len(HOSTS) and got.get(down) == 0 and got.get(beats, 0) >= 1

        assert wait_for(fleet_up, bound=BOUND), explain(members)
        got = scrape(port)
        reads = got[("servicegroup_view_read_round_trips_count", (("topic", topic),))]
        trips = got[("servicegroup_view_read_round_trips_sum", (("topic", topic),))]
        assert reads >= 1 and trips >= reads
        staleness = got[("servicegroup_view_staleness_seconds", (("topic", topic),))]
        assert staleness >= 0  # present; its size is the load's business
        assert got.get(("servicegroup_heartbeat_failures_total", (("host", "observer-host"),)), 0) == 0
        assert got[("servicegroup_backend_info", (("driver", observer.url.partition("://")[0]),))] == 1

        members[1].kill()
        lowest = [len(HOSTS)]

        def dropped_by_one() -> bool:
            got = scrape(port)
            lowest[0] = min(lowest[0], got.get(up, 0))
            return got.get(up) == len(HOSTS) - 1 and got.get(down) == 1

        assert wait_for(dropped_by_one, bound=BOUND + REPORT_INTERVAL), explain(members)
        assert lowest[0] == len(HOSTS) - 1, "a scrape showed a live member down"
    finally:
        observer.stop()
        for member in members:
            member.kill()
