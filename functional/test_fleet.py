"""A worker fleet rebalancing on a hash ring, per backend: five worker processes
(``examples/fleet.py worker``) partition 10,000 resource ids over
``sg.partitioner``; one is SIGKILLed, then a sixth joins.

Checked on the workers' own reports (rewritten atomically on every
rebalance): before the kill every id has exactly one owner; after the
survivors agree on 4 members, every id has exactly one live owner and only
the dead worker's ids moved; after all agree on 5 again, ids moved only to
the new worker, about 1/N of them (a property of the ring, not of timing).

Backends: ``db`` (a SQLite file in tmp_path), ``redis`` (the shared server
on 127.0.0.1:6379, a unique group per run) and ``zk`` (the
``zookeeper_server`` fixture of functional/conftest.py or ``SG_TEST_ZK_URL``;
skipped when neither exists). Waits are bounded; nothing asserts on time.
"""

from __future__ import annotations

import importlib.util
import os
import socket
import sys
import time
import uuid

import pytest

from functional.members import STARTUP

EXAMPLE = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "examples", "fleet.py")
_spec = importlib.util.spec_from_file_location("fleet_example", EXAMPLE)
fleet_example = importlib.util.module_from_spec(_spec)
sys.modules[_spec.name] = fleet_example
_spec.loader.exec_module(fleet_example)

IDS = 10_000
HOSTS = [f"w{i}" for i in range(1, 6)]
VICTIM = "w3"
JOINER = "w6"
ALL_IDS = set(range(IDS))


def _backend_url(request, driver: str) -> str | None:
    if driver == "redis":
        try:
            socket.create_connection(("127.0.0.1", 6379), timeout=1).close()
        except OSError:
            pytest.skip("redis is not listening on 127.0.0.1:6379: run `make services`")
        return "redis://127.0.0.1:6379"
    if driver == "zk":
        try:
            server = request.getfixturevalue("zookeeper_server")
            return server if isinstance(server, str) else server.url
        except pytest.FixtureLookupError:
            if os.environ.get("SG_TEST_ZK_URL"):
                return os.environ["SG_TEST_ZK_URL"]
            pytest.skip("zk: no zookeeper_server fixture in functional/conftest.py yet")
    return None


@pytest.fixture(scope="module", params=["db", "redis", "zk"])
def run(request, tmp_path_factory):
    """The whole scenario once per backend: the reports at each step."""
    driver = request.param
    url = _backend_url(request, driver)
    workdir = str(tmp_path_factory.mktemp(f"fleet-{driver}"))
    fleet = fleet_example.Fleet(workdir, f"fleet-{uuid.uuid4().hex[:8]}", IDS, driver=driver, url=url)
    request.addfinalizer(fleet.close)  # SIGKILLs every worker still running

    for host in HOSTS:
        fleet.start(host)
    # Waits that include starting worker processes (interpreter, imports,
    # migrations) get the start-up bound: the default 60 s ran out once at
    # setup on a loaded machine, before any liveness was involved.
    before = fleet.wait_for(HOSTS, timeout=STARTUP)  # reports read before the kill

    t0 = time.monotonic()
    fleet.kill(VICTIM)
    survivors = [h for h in HOSTS if h != VICTIM]
    after_kill = fleet.wait_for(survivors)
    kill_s = time.monotonic() - t0

    t0 = time.monotonic()
    fleet.start(JOINER)
    after_join = fleet.wait_for(survivors + [JOINER], timeout=STARTUP)
    join_s = time.monotonic() - t0

    moved_kill = sum(len(set(after_kill[h]["owned"]) - set(before[h]["owned"])) for h in survivors)
    print(
        f"\n{driver}: {len(before[VICTIM]['owned'])} ids on {VICTIM}, {moved_kill} moved on SIGKILL, "
        f"survivors agreed after {kill_s:.1f} s; {len(after_join[JOINER]['owned'])} moved to {JOINER}, "
        f"agreed after {join_s:.1f} s"
    )
    return {"before": before, "after_kill": after_kill, "after_join": after_join, "survivors": survivors}


def assert_partition(reports, live):
    """Every id is owned by exactly one of *live*, and nobody else reports."""
    assert sorted(reports) == sorted(live)
    claimed = fleet_example.owners(reports)
    assert set(claimed) == ALL_IDS, f"{len(ALL_IDS - set(claimed))} ids have no owner"
    doubles = {i: hs for i, hs in claimed.items() if len(hs) != 1}
    assert not doubles, f"{len(doubles)} ids have several owners, e.g. {next(iter(doubles.items()))}"


def test_before_the_kill_every_id_has_exactly_one_owner(run):
    assert_partition(run["before"], HOSTS)
    # Every worker computed its share from the same ring.
    assert all(r["members"] == HOSTS for r in run["before"].values())


def test_after_the_kill_every_id_has_one_live_owner_and_only_the_dead_ones_moved(run):
    before, after = fleet_example.owned(run["before"]), fleet_example.owned(run["after_kill"])
    assert_partition(run["after_kill"], run["survivors"])
    for host in run["survivors"]:
        assert before[host] <= after[host], f"{host} lost {len(before[host] - after[host])} of its ids"
    moved = set().union(*(after[h] - before[h] for h in run["survivors"]))
    assert moved == before[VICTIM]


def test_a_new_worker_takes_about_one_nth_and_nothing_else_moves(run):
    before, after = fleet_example.owned(run["after_kill"]), fleet_example.owned(run["after_join"])
    assert_partition(run["after_join"], run["survivors"] + [JOINER])
    for host in run["survivors"]:
        assert after[host] <= before[host], f"{host} gained {len(after[host] - before[host])} ids"
    moved = set().union(*(before[h] - after[h] for h in run["survivors"]))
    assert moved == after[JOINER]
    assert 0.10 <= len(moved) / IDS <= 0.30
