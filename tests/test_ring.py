"""Properties of the hash ring and the Partitioner: fast, deterministic, no timers.

The ring properties are the contract of a worker fleet: if two processes
disagree on an owner, a resource is handled twice or never; if a join moves
more than the joiner's share, a rebalance costs the whole fleet a warm cache.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import threading
from collections import Counter
from collections.abc import Callable

import pytest

from servicegroup import errors
from servicegroup.ring import DEFAULT_POINTS, EmptyRing, HashRing, Partitioner, capability_weight

KEYS = [f"resource-{i}" for i in range(20_000)]


def owners(ring: HashRing, keys: list[str] = KEYS) -> dict[str, str]:
    return {k: ring.owner(k) for k in keys}


def hosts(n: int, prefix: str = "host") -> list[str]:
    return [f"{prefix}-{i}" for i in range(n)]


# -- HashRing ---------------------------------------------------------------


def test_member_order_and_input_type_do_not_change_the_ring() -> None:
    a = HashRing({"a": 1, "b": 2, "c": 1})
    b = HashRing({"c": 1, "b": 2.0, "a": 1})
    assert a == b and hash(a) == hash(b)
    assert a.fingerprint() == b.fingerprint()
    assert owners(a) == owners(b)
    assert owners(HashRing(["x", "y", "z"])) == owners(HashRing({"z": 1, "y": 1, "x": 1}))


# Golden answers: a change here re-partitions every mixed-version fleet, so
# it must be a deliberate, announced break, never a refactoring side effect.
GOLDEN = {"resource-0": "host-2", "resource-1": "host-1", "resource-2": "host-2", "nova-compute-17": "host-2"}


def test_golden_owners_are_stable_across_releases() -> None:
    ring = HashRing(hosts(5))
    assert {k: ring.owner(k) for k in GOLDEN} == GOLDEN


def test_same_ring_in_another_process_with_another_hash_seed() -> None:
    code = (
        "from servicegroup.ring import HashRing\n"
        "r = HashRing({'host-%d' % i: 1 + i % 3 for i in range(7)})\n"
        "print(r.fingerprint(), ','.join(r.owner('resource-%d' % i) for i in range(500)))\n"
    )
    env = dict(os.environ, PYTHONHASHSEED="12345")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    here = HashRing({f"host-{i}": 1 + i % 3 for i in range(7)})
    expected = f"{here.fingerprint()} {','.join(here.owner(f'resource-{i}') for i in range(500))}"
    assert out.stdout.strip() == expected


def test_str_and_bytes_keys_are_the_same_key() -> None:
    ring = HashRing(hosts(10))
    for key in ("abc", "é-unicode-ключ", "", "x" * 1000):
        assert ring.owner(key) == ring.owner(key.encode("utf-8"))
        assert ring.owners(key, 3) == ring.owners(bytearray(key.encode("utf-8")), 3)
    with pytest.raises(TypeError):
        ring.owner(42)  # type: ignore[arg-type]


@pytest.mark.parametrize("n", [5, 10, 50])
def test_a_join_moves_only_keys_to_the_joiner_about_one_nth(n: int) -> None:
    before = owners(HashRing(hosts(n)))
    after = owners(HashRing(hosts(n + 1)))
    moved = [k for k in KEYS if before[k] != after[k]]
    assert all(after[k] == f"host-{n}" for k in moved)
    share = len(moved) / len(KEYS)
    assert 0.8 / (n + 1) <= share <= 1.2 / (n + 1)


@pytest.mark.parametrize("n", [5, 10, 50])
def test_a_leave_moves_only_the_leavers_keys(n: int) -> None:
    members = hosts(n)
    before = owners(HashRing(members))
    gone = members[n // 2]
    after = owners(HashRing([m for m in members if m != gone]))
    moved = {k for k in KEYS if before[k] != after[k]}
    assert moved == {k for k in KEYS if before[k] == gone}
    assert len(moved) / len(KEYS) <= 1.2 / n


def test_load_at_ten_members_is_within_ten_percent_with_default_points() -> None:
    ring = HashRing(hosts(10))
    assert ring.points_per_member == DEFAULT_POINTS
    counts = Counter(ring.owner(f"k{i}") for i in range(100_000))
    assert len(counts) == 10
    assert max(counts.values()) / (100_000 / 10) <= 1.10


def test_one_probe_alone_would_not_reach_the_load_target() -> None:
    """Why probes exist: the textbook ring with 128 points misses 1.10 here."""
    ring = HashRing(hosts(10), probes=1)
    counts = Counter(ring.owner(f"k{i}") for i in range(100_000))
    assert max(counts.values()) / (100_000 / 10) > 1.10


def test_weights_are_proportional_and_a_weight_change_moves_only_that_members_keys() -> None:
    base = {m: 1 for m in hosts(6)}
    ring = HashRing({**base, "host-0": 2})
    counts = Counter(owners(ring).values())
    per_unit = len(KEYS) / 7
    assert counts["host-0"] == pytest.approx(2 * per_unit, rel=0.10)
    before, after = owners(HashRing(base)), owners(ring)
    assert all(after[k] == "host-0" for k in KEYS if before[k] != after[k])


def test_weight_zero_member_is_listed_but_owns_nothing() -> None:
    ring = HashRing({"a": 1, "b": 0})
    assert ring.members == ("a", "b") and "b" in ring
    assert set(owners(ring, KEYS[:500]).values()) == {"a"}
    assert ring.owners("k", replicas=2) == ["a"]


def test_owners_are_distinct_owner_first_and_stable_when_others_leave() -> None:
    members = hosts(8)
    ring = HashRing(members)
    for key in KEYS[:300]:
        got = ring.owners(key, replicas=3)
        assert len(set(got)) == 3 and got[0] == ring.owner(key)
        outsider = next(m for m in members if m not in got)
        assert HashRing([m for m in members if m != outsider]).owners(key, replicas=3) == got
    assert sorted(ring.owners("k", replicas=50)) == members


def test_empty_and_invalid_rings() -> None:
    with pytest.raises(EmptyRing):
        HashRing([]).owner("k")
    with pytest.raises(LookupError):
        HashRing({"a": 0}).owners("k", 2)
    for bad in (-1, float("nan"), float("inf"), "heavy", 1e6):
        with pytest.raises(ValueError):
            HashRing({"a": bad})
    with pytest.raises(ValueError):
        HashRing(["a"], points_per_member=0)
    with pytest.raises(ValueError):
        HashRing(["a"], probes=0)
    with pytest.raises(ValueError):
        HashRing(["a"]).owners("k", replicas=0)


def test_capability_weight_never_raises() -> None:
    assert capability_weight(None) == 1.0
    assert capability_weight({"weight": 3}) == 3.0
    assert capability_weight({"weight": "2.5"}) == 2.5
    assert capability_weight({"weight": 0}) == 0.0
    assert capability_weight({"weight": "heavy"}) == 1.0
    assert capability_weight({"weight": -4}) == 1.0
    assert capability_weight({"weight": 1e9}) == 100.0


# -- Partitioner --------------------------------------------------------------


class FakeGroups:
    """The slice of the ServiceGroup facade a Partitioner uses.

    Callbacks run synchronously in the test thread (the facade runs them on
    one dispatcher thread: serialised either way). Like the facade, every
    change also fires ``on_change``; ``fence`` changes what ``members``
    answers without a join or leave, as ``force_down`` does.
    """

    def __init__(self, joined: list[str] | None = None) -> None:
        self.groups: dict[str, dict[str, dict]] = {}
        self.fenced: set[tuple[str, str]] = set()
        self.watchers: list[tuple[str, Callable | None, Callable | None, Callable | None]] = []
        self.joined = joined or []

    def members(self, topic: str) -> dict[str, dict]:
        return {h: c for h, c in self.groups.get(topic, {}).items() if (topic, h) not in self.fenced}

    def watch(
        self,
        topic: str,
        on_join: Callable | None = None,
        on_leave: Callable | None = None,
        on_change: Callable | None = None,
    ):
        entry = (topic, on_join, on_leave, on_change)
        self.watchers.append(entry)
        fake = self

        class Handle:
            def cancel(self) -> None:
                if entry in fake.watchers:
                    fake.watchers.remove(entry)

        return Handle()

    def joined_hosts(self, topic: str) -> list[str]:
        return list(self.joined)

    def _fire(self, topic: str, host: str | None, which: int) -> None:
        for entry in list(self.watchers):
            if entry[0] != topic:
                continue
            if host is not None and entry[which]:
                entry[which](topic, host)
            if entry[3]:
                entry[3](topic)

    def join(self, topic: str, host: str, caps: dict | None = None) -> None:
        self.groups.setdefault(topic, {})[host] = caps or {}
        self._fire(topic, host, 1)

    def leave(self, topic: str, host: str) -> None:
        self.groups.get(topic, {}).pop(host, None)
        self._fire(topic, host, 2)

    def fence(self, topic: str, host: str, down: bool = True) -> None:
        (self.fenced.add if down else self.fenced.discard)((topic, host))
        self._fire(topic, None, 0)


IDS = [f"router-{i}" for i in range(10_000)]


def fleet(n: int) -> tuple[FakeGroups, dict[str, Partitioner], dict[str, set[str]], dict[str, list]]:
    """n workers partitioning IDS, each tracking its owned ids via callbacks."""
    sg = FakeGroups()
    for h in hosts(n, "worker"):
        sg.groups.setdefault("fleet", {})[h] = {}
    parts, mine, calls = {}, {}, {}
    for h in hosts(n, "worker"):
        p = Partitioner(sg, "fleet", host=h, keys=IDS)
        mine[h], calls[h] = set(), []

        def track(gained: set, lost: set, h: str = h) -> None:
            calls[h].append((gained, lost))
            mine[h] |= gained
            mine[h] -= lost

        p.on_rebalance(track, initial=True)
        parts[h] = p
    return sg, parts, mine, calls


def assert_partition(mine: dict[str, set[str]], live: list[str]) -> None:
    counted = Counter(i for h in live for i in mine[h])
    assert set(counted) == set(IDS) and set(counted.values()) == {1}


def test_fleet_kill_one_worker_only_its_ids_move_each_owned_once() -> None:
    sg, parts, mine, calls = fleet(5)
    live = hosts(5, "worker")
    assert_partition(mine, live)
    before = {h: set(s) for h, s in mine.items()}
    for h in live:
        calls[h].clear()

    dead = "worker-2"
    parts[dead].stop()  # a SIGKILLed worker runs nothing more
    sg.leave("fleet", dead)
    live.remove(dead)
    assert_partition(mine, live)
    for h in live:
        assert len(calls[h]) == 1  # once per membership change
        gained, lost = calls[h][0]
        assert not lost and gained <= before[dead]
        assert parts[h].owner(next(iter(before[dead]))) in live


def test_fleet_join_moves_about_one_nth_all_to_the_joiner() -> None:
    sg, parts, mine, calls = fleet(5)
    before = {h: set(s) for h, s in mine.items()}
    newcomer = Partitioner(sg, "fleet", host="worker-5", keys=IDS)
    got: list[tuple[set, set]] = []
    newcomer.on_rebalance(lambda gained, lost: got.append((gained, lost)))
    sg.join("fleet", "worker-5")
    lost_total = set().union(*(calls[h][-1][1] for h in before))
    assert got and got[0][0] == lost_total and not got[0][1]
    assert newcomer.owned() == lost_total
    assert len(lost_total) <= 1.2 * len(IDS) / 6
    assert all(not calls[h][-1][0] for h in before)  # nobody else gained


def test_no_callback_when_an_event_changes_nothing() -> None:
    sg = FakeGroups()
    sg.groups["g"] = {"a": {}, "b": {}}
    p = Partitioner(sg, "g", host="a", keys=IDS[:100])
    seen: list = []
    p.on_rebalance(lambda gained, lost: seen.append((gained, lost)))
    for _, _, _, on_change in sg.watchers:
        on_change("g")  # duplicate/merged event: the view did not change
    assert seen == []
    sg.join("g", "c")
    sg.join("g", "d", {"weight": 2})
    assert len(seen) == 2
    assert p.members() == ["a", "b", "c", "d"]
    assert p.ring.weights["d"] == 2.0


def test_host_defaults_to_the_one_joined_host_and_owns_needs_a_host() -> None:
    sg = FakeGroups(joined=["a"])
    sg.groups["g"] = {"a": {}, "b": {}}
    p = Partitioner(sg, "g")
    assert p.host == "a"
    assert p.owns("k") == (p.owner("k") == "a")

    observer = Partitioner(FakeGroups(), "g")
    with pytest.raises(errors.ConfigError):
        observer.owns("k")
    with pytest.raises(errors.ConfigError):
        Partitioner(FakeGroups(joined=["a", "b"]), "g")


def test_empty_group_answers_no_live_hosts_and_owns_nothing() -> None:
    sg = FakeGroups()
    p = Partitioner(sg, "g", host="a", keys=["x"])
    with pytest.raises(errors.NoLiveHosts):
        p.owner("x")
    assert not p.owns("x") and p.owned() == frozenset()
    sg.join("g", "a")
    assert p.owns("x") and p.owned() == {"x"}


def test_replicas_owns_counts_replica_holders() -> None:
    sg = FakeGroups()
    sg.groups["g"] = {h: {} for h in hosts(4)}
    ps = [Partitioner(sg, "g", host=h, replicas=2, keys=IDS[:2000]) for h in hosts(4)]
    for key in IDS[:200]:
        assert sum(p.owns(key) for p in ps) == 2
    assert sum(len(p.owned()) for p in ps) == 2 * 2000


def test_bad_weight_capability_falls_back_instead_of_breaking_the_ring() -> None:
    sg = FakeGroups()
    sg.groups["g"] = {"a": {"weight": "lots"}, "b": {"weight": -1}}
    p = Partitioner(sg, "g", host="a")
    assert dict(p.ring.weights) == {"a": 1.0, "b": 1.0}


def test_callback_errors_are_contained_and_stop_cancels_the_watch() -> None:
    sg = FakeGroups()
    p = Partitioner(sg, "g", host="a", keys=IDS[:100])
    seen: list = []

    def boom(gained: set, lost: set) -> None:
        raise RuntimeError("user bug")

    p.on_rebalance(boom)
    handle = p.on_rebalance(lambda gained, lost: seen.append(len(gained)))
    sg.join("g", "a")
    assert seen == [100]
    handle.cancel()
    sg.join("g", "b")
    assert seen == [100]
    p.stop()
    p.stop()
    assert sg.watchers == []
    assert p.owner("k") in ("a", "b")  # last ring still answers


def test_set_keys_recomputes_owned_without_a_callback() -> None:
    sg = FakeGroups()
    sg.groups["g"] = {"a": {}, "b": {}}
    p = Partitioner(sg, "g", host="a")
    seen: list = []
    p.on_rebalance(lambda gained, lost: seen.append(1))
    p.set_keys(IDS[:1000])
    assert p.owned() == {k for k in IDS[:1000] if p.owner(k) == "a"}
    assert seen == []


def test_lookups_during_rebalances_always_see_a_whole_ring() -> None:
    sg = FakeGroups()
    sg.groups["g"] = {h: {} for h in hosts(3)}
    p = Partitioner(sg, "g", host="host-0")
    failures: list[BaseException] = []
    stop = threading.Event()

    def reader() -> None:
        try:
            while not stop.is_set():
                for key in IDS[:50]:
                    assert p.owner(key).startswith("host-")
                    p.owns(key)
        except BaseException as exc:  # pragma: no cover - reported below
            failures.append(exc)

    threads = [threading.Thread(target=reader) for _ in range(4)]
    for t in threads:
        t.start()
    try:
        for i in range(3, 40):
            sg.join("g", f"host-{i}")
            sg.leave("g", f"host-{i - 2}")
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert failures == []
    assert p.members() == ["host-0", "host-38", "host-39"]


def test_host_joined_after_the_partitioner_gets_its_keys_in_a_callback() -> None:
    sg = FakeGroups()
    sg.groups["g"] = {"b": {}}
    p = Partitioner(sg, "g", keys=IDS[:1000])
    seen: list[tuple[set, set]] = []
    p.on_rebalance(lambda gained, lost: seen.append((gained, lost)), initial=True)
    assert seen == [(set(), set())] and p.host is None
    sg.joined = ["a"]
    assert p.owns("k") is False  # "a" is not live yet; nothing is stored by a lookup
    sg.join("g", "a")
    assert p.host == "a"
    assert seen[-1] == ({k for k in IDS[:1000] if p.owner(k) == "a"}, set())
    assert p.owned() == seen[-1][0]


def test_fencing_a_member_moves_its_keys_although_nobody_left() -> None:
    """force_down must win in the ring too: a fenced host still beats (no
    leave event) but owns nothing until it is unfenced."""
    sg, parts, mine, calls = fleet(3)
    victim_keys = set(mine["worker-1"])
    sg.fence("fleet", "worker-1")
    assert parts["worker-0"].members() == ["worker-0", "worker-2"]
    assert not parts["worker-1"].owns(next(iter(victim_keys)))
    assert mine["worker-1"] == set() and mine["worker-0"] | mine["worker-2"] == set(IDS)
    sg.fence("fleet", "worker-1", down=False)
    assert mine["worker-1"] == victim_keys


def test_a_partitioner_whose_first_read_failed_fills_in_on_the_next_change_signal() -> None:
    sg = FakeGroups()
    p = Partitioner(sg, "g", host="a", keys=IDS[:100])  # the view could not vouch: empty
    assert p.members() == []
    sg.groups["g"] = {"a": {}, "b": {}}
    for _, _, _, on_change in sg.watchers:
        on_change("g")  # the view's first good snapshot, no join event
    assert p.members() == ["a", "b"] and p.owned()


def test_an_observer_partitioner_keeps_following_when_its_host_is_ambiguous() -> None:
    sg = FakeGroups()
    sg.groups["g"] = {"a": {}, "b": {}}
    p = Partitioner(sg, "g")  # an observer: this ServiceGroup joined nobody yet
    sg.joined = ["a", "b"]  # then it joined two hosts to the group
    sg.join("g", "c")
    assert p.members() == ["a", "b", "c"], "the ring must not freeze"
    with pytest.raises(errors.ConfigError, match="pass host="):
        p.owns("x")


def test_the_ambiguous_host_warning_is_logged_once_and_kept_apart_from_weight_warnings(caplog) -> None:
    """The "ambiguous host" warning was remembered as a fake (member,
    weight) pair in the set of weight warnings."""
    sg = FakeGroups()
    sg.groups["g"] = {"a": {}, "b": {}}
    p = Partitioner(sg, "g")
    sg.joined = ["a", "b"]
    with caplog.at_level(logging.WARNING, logger="servicegroup.ring"):
        sg.join("g", "c")
        sg.join("g", "d")
    assert sum("pass host=" in r.getMessage() for r in caplog.records) == 1
    assert p._warned == set(), "only weight warnings belong in the weight-warning set"
