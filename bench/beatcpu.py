"""Member CPU per heartbeat, and where it goes (docs/scale.md).

``python -m bench.beatcpu [--backends zk,redis,...] [--members 100]
[--rounds 5] [--profile]``: one process joins ``--members`` hosts with no
threads of its own (``background=False``), then beats them all
``--rounds`` times in a loop; CPU seconds (the whole process: client
threads included) over beats is the figure. ``--profile`` prints
cProfile's top functions by own time for one more loop. Beside it, the
peer: the same number of raw tooz coordinators, each ``heartbeat()`` once
per round (tooz's beat, without the self-check).
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import sys
import tempfile
import time
import uuid

from bench import detection
from bench.report import report
from servicegroup import ServiceGroup, caller
from servicegroup.backend import default_factory

BACKENDS = ["zk", "redis", "mc", "etcd", "db-postgresql", "db-mysql", "consul-fake"]


def _cpu_per_beat(beat: object, members: int, rounds: int) -> float:
    started = time.process_time()
    for _ in range(rounds):
        beat()  # type: ignore[operator]
    return (time.process_time() - started) / (members * rounds) * 1000.0


def run(name: str, members: int, rounds: int, profile: bool, workdir: str) -> dict[str, object]:
    with detection.backend(name, workdir) as (driver, url, records_url):
        sg = ServiceGroup(driver, url, records_url, report_interval=10, service_down_time=60, background=False)
        topic = f"beat-{uuid.uuid4().hex[:8]}"
        peers = []
        try:
            for i in range(members):
                sg.join(f"b{i:04d}", topic)
            sg.heartbeat()
            ours = _cpu_per_beat(sg.heartbeat, members, rounds)
            if profile:
                # The beat's calls run on each member's worker thread, which
                # cProfile does not follow: run them inline for the profile.
                inline = caller.Caller.call
                caller.Caller.call = lambda self, fn, timeout, what: fn()  # type: ignore[method-assign]
                prof = cProfile.Profile()
                try:
                    prof.runcall(sg.heartbeat)
                finally:
                    caller.Caller.call = inline  # type: ignore[method-assign]
                print(f"\n## {name}: one heartbeat round of {members} members, by own time\n")
                pstats.Stats(prof, stream=sys.stdout).sort_stats("tottime").print_stats(12)
            for i in range(members):
                coord = default_factory(sg.url, f"peer{i:04d}".encode())
                coord.start(start_heart=False)
                peers.append(coord)

            def peer_round() -> None:
                for coord in peers:
                    coord.heartbeat()

            peer = _cpu_per_beat(peer_round, members, rounds)
        finally:
            for coord in peers:
                try:
                    coord.stop()
                except Exception:  # a peer that cannot stop must not hide the figures
                    pass
            sg.stop()
    return {
        "backend": name,
        "members": members,
        "ours ms CPU/beat": round(ours, 3),
        "raw tooz heartbeat()": round(peer, 3),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.beatcpu", description=__doc__.splitlines()[0])
    p.add_argument("--backends", default=",".join(BACKENDS))
    p.add_argument("--members", type=int, default=100)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--profile", action="store_true")
    args = p.parse_args(argv)
    load = open("/proc/loadavg").read().split()[:3]
    with tempfile.TemporaryDirectory(prefix="sg-beatcpu-") as workdir:
        rows = [run(n, args.members, args.rounds, args.profile, workdir) for n in args.backends.split(",")]
    report(
        "beatcpu",
        rows,
        title="bench.beatcpu: member CPU per heartbeat (write + self-check) beside tooz's heartbeat()",
        notes=[f"{args.members} members, {args.rounds} rounds; load average before: {' '.join(load)}"],
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
