"""Hash ring: load spread, keys moved per join/leave, rebuild time; ours vs tooz.

``python -m bench.ring [--keys 100000] [--fleets 20]``

Peers in the same run: ``servicegroup.ring.HashRing`` with its defaults
(128 points, 4 probes), the same ring with 1 probe (the textbook ring, to
show why probes exist), and ``tooz.hashring.HashRing`` with its default 32
partitions and with 128. Numbers only: nothing here passes or fails.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

from tooz import hashring as tooz_hashring

from bench.report import report
from servicegroup import hashring as sg_ring

Lookup = Callable[[str], str]


@dataclass(frozen=True)
class Peer:
    name: str
    build: Callable[[list[str]], Lookup]
    rebuild: Callable[[list[str]], object]
    cold: Callable[[], None] = lambda: None


def _ours(probes: int) -> Peer:
    def build(members: list[str]) -> Lookup:
        return sg_ring.HashRing(members, probes=probes).owner

    return Peer(
        f"servicegroup ({sg_ring.DEFAULT_POINTS} pts, {probes} probe{'s' if probes > 1 else ''})",
        build,
        lambda members: sg_ring.HashRing(members, probes=probes),
        sg_ring._member_run.cache_clear,
    )


def _tooz(partitions: int) -> Peer:
    def build(members: list[str]) -> Lookup:
        ring = tooz_hashring.HashRing(members, partitions=partitions)
        return lambda key: next(iter(ring[key.encode()]))

    label = "default " if partitions == tooz_hashring.HashRing.DEFAULT_PARTITION_NUMBER else ""
    return Peer(
        f"tooz HashRing ({label}{partitions} partitions)",
        build,
        lambda members: tooz_hashring.HashRing(members, partitions=partitions),
    )


PEERS = [_ours(sg_ring.DEFAULT_PROBES), _ours(1), _tooz(32), _tooz(128)]


def hosts(n: int, prefix: str = "host") -> list[str]:
    return [f"{prefix}-{i}" for i in range(n)]


def load_and_moves(peer: Peer, n: int, keys: list[str]) -> dict[str, object]:
    """max/mean load at n members; share moved when one joins / one leaves."""
    members = hosts(n)
    lookup = peer.build(members)
    before = [lookup(k) for k in keys]
    counts = Counter(before)
    joiner = f"host-{n}"
    join_lookup = peer.build(members + [joiner])
    joined = [join_lookup(k) for k in keys]
    leaver = members[n // 2]
    leave_lookup = peer.build([m for m in members if m != leaver])
    left = [leave_lookup(k) for k in keys]
    moved_join = [i for i, (a, b) in enumerate(zip(before, joined, strict=True)) if a != b]
    moved_leave = [i for i, (a, b) in enumerate(zip(before, left, strict=True)) if a != b]
    share_join = len(moved_join) / len(keys)
    share_leave = len(moved_leave) / len(keys)
    return {
        "max/mean": max(counts.values()) / (len(keys) / n),
        "moved on join": share_join,
        "join ×N+1": share_join * (n + 1),
        "only to joiner": all(joined[i] == joiner for i in moved_join),
        "moved on leave": share_leave,
        "leave ×N": share_leave * n,
        "only leaver's": all(before[i] == leaver for i in moved_leave),
    }


def fleet_spread(peer: Peer, keys: list[str], fleets: int, n: int = 10) -> list[float]:
    """max/mean at n members over several fleets with other member names:
    one fleet's figure depends on its names, so the spread is the honest one."""
    ratios = []
    for f in range(fleets):
        lookup = peer.build(hosts(n, prefix=f"fleet{f}-node"))
        counts = Counter(lookup(k) for k in keys)
        ratios.append(max(counts.values()) / (len(keys) / n))
    return sorted(ratios)


def rebuild_ms(peer: Peer, members: int, runs: int, *, cold: bool) -> float:
    names = hosts(members)
    times = []
    for _ in range(runs):
        if cold:
            peer.cold()
        start = time.perf_counter()
        peer.rebuild(names)
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def lookup_us(peer: Peer, keys: list[str]) -> float:
    lookup = peer.build(hosts(10))
    sample = keys[:20000]
    start = time.perf_counter()
    for k in sample:
        lookup(k)
    return (time.perf_counter() - start) / len(sample) * 1e6


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.ring", description=__doc__.splitlines()[0])
    parser.add_argument("--keys", type=int, default=100_000, help="keys per measurement (default 100000)")
    parser.add_argument("--fleets", type=int, default=20, help="fleets of 10 for the load spread (default 20)")
    parser.add_argument("--runs", type=int, default=7, help="rebuild runs; the median is reported (default 7)")
    args = parser.parse_args(argv)
    keys = [f"resource-{i}" for i in range(args.keys)]

    rows, summary = [], []
    for peer in PEERS:
        for n in (5, 10, 50):
            rows.append({"ring": peer.name, "N": n, **load_and_moves(peer, n, keys)})
        spread = fleet_spread(peer, keys, args.fleets)
        summary.append(
            {
                "ring": peer.name,
                "max/mean @10 median": statistics.median(spread),
                "@10 worst": spread[-1],
                "fleets >1.10": f"{sum(r > 1.10 for r in spread)}/{len(spread)}",
                "rebuild 1000 cold ms": rebuild_ms(peer, 1000, args.runs, cold=True),
                "rebuild 1000 warm ms": rebuild_ms(peer, 1000, args.runs, cold=False),
                "lookup µs": lookup_us(peer, keys),
            }
        )
    report(
        "ring",
        rows,
        title=f"Load spread and keys moved ({args.keys} keys; ×N columns: 1.0 is the ideal share)",
        notes=[],
        extra={"summary": summary},
    )
    report(
        "ring_summary",
        summary,
        title=(
            f"Load at 10 members over {args.fleets} fleets of other names, ring rebuild for 1,000 members "
            f"(median of {args.runs}; cold: no cached member points), lookup cost"
        ),
    )


if __name__ == "__main__":
    main()
