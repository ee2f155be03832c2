#!/usr/bin/env python3
"""A worker fleet that splits resource ids over a hash ring (``sg.partitioner``).

``worker``  joins ``--group`` as ``--host``, builds
            ``sg.partitioner(group, keys=["0" .. str(ids-1)])`` and, on every
            rebalance (and once at start), writes the ids it owns to
            ``--report`` as JSON ``{host, owned, generation, members}``:
            ``owned`` is the sorted list of ids (as ints), ``members`` the ring
            it was computed from. The file is replaced atomically (tmp +
            rename), so a reader never sees half a report.
``demo``    five workers on a fresh SQLite file; SIGKILL one; add a sixth.
            Prints how many ids each worker owns, how many moved, and how
            long the survivors took to agree.

The workers never talk to each other: each one builds the same ring from the
same membership, so they agree on ownership once their views agree.

    python examples/fleet.py demo

:class:`Fleet` (start / kill / wait_for / reports) is what
``functional/test_fleet.py`` drives.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from typing import Any

#: Short timings so a death is detected within a few seconds.
TIMINGS = {"report_interval": 0.5, "service_down_time": 2.0, "max_staleness": 0.25}


# -- worker ---------------------------------------------------------------------


def write_json(path: str, data: dict[str, Any]) -> None:
    """Write *data* to *path* atomically: a reader sees the old or the new file."""
    tmp = f"{path}.tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(data, f)
    os.replace(tmp, path)


def worker(args: argparse.Namespace) -> int:
    from servicegroup.api import ServiceGroup

    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    sg = ServiceGroup(
        driver=args.driver,
        url=args.url,
        records_url=args.records_url,
        report_interval=args.report_interval,
        service_down_time=args.service_down_time,
        max_staleness=args.max_staleness,
    )
    generation = 0
    try:
        sg.join(args.host, args.group, binary="fleet-worker")
        part = sg.partitioner(args.group, keys=[str(i) for i in range(args.ids)])

        def on_rebalance(gained: set, lost: set) -> None:
            # Runs under the partitioner's lock: owned() and members() are
            # those of the ring this call reports on.
            nonlocal generation
            generation += 1
            write_json(
                args.report,
                {
                    "host": args.host,
                    "owned": sorted(int(k) for k in part.owned()),
                    "generation": generation,
                    "members": part.members(),
                },
            )
            print(
                f"{args.host}: generation {generation}, {len(part.members())} members, +{len(gained)} -{len(lost)} ids",
                flush=True,
            )

        part.on_rebalance(on_rebalance, initial=True)
        # Short waits: a SIGTERM the kernel hands to another thread only runs
        # its handler when this (main) thread next runs bytecode.
        while not stop.wait(0.25):
            pass
        part.stop()
    finally:
        sg.stop()
    return 0


# -- the driver side ------------------------------------------------------------


def _die_with_parent() -> None:  # in the child, before exec
    with contextlib.suppress(Exception):
        ctypes.CDLL(None).prctl(1, signal.SIGKILL, 0, 0, 0)  # PR_SET_PDEATHSIG


class Fleet:
    """Worker processes of one group, each reporting to ``<workdir>/<host>.json``."""

    def __init__(
        self,
        workdir: str,
        group: str,
        ids: int = 10_000,
        driver: str = "db",
        url: str | None = None,
        records_url: str | None = None,
        timings: dict[str, float] = TIMINGS,
    ) -> None:
        self.workdir, self.group, self.ids = workdir, group, ids
        records_url = records_url or "sqlite:///" + os.path.join(workdir, "servicegroup.sqlite")
        self.argv = ["--group", group, "--ids", str(ids), "--driver", driver, "--records-url", records_url]
        self.argv += ["--url", url] if url else []
        for name, value in timings.items():
            self.argv += [f"--{name.replace('_', '-')}", str(value)]
        self.procs: dict[str, subprocess.Popen] = {}

    def report_path(self, host: str) -> str:
        return os.path.join(self.workdir, f"{host}.json")

    def start(self, host: str) -> None:
        log = open(os.path.join(self.workdir, f"{host}.log"), "ab")
        argv = [
            sys.executable,
            os.path.abspath(__file__),
            "worker",
            "--host",
            host,
            "--report",
            self.report_path(host),
            *self.argv,
        ]
        self.procs[host] = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, preexec_fn=_die_with_parent)
        log.close()

    def kill(self, host: str) -> None:
        """SIGKILL: no leave, no goodbye; the others learn it from the backend."""
        proc = self.procs.pop(host)
        proc.kill()
        proc.wait()

    def close(self) -> None:
        for proc in self.procs.values():
            proc.kill()
        for proc in self.procs.values():
            proc.wait()
        self.procs.clear()

    def live(self) -> list[str]:
        return sorted(h for h, p in self.procs.items() if p.poll() is None)

    def reports(self) -> dict[str, dict[str, Any]]:
        """The latest report of every live worker that wrote one."""
        out = {}
        for host in self.live():
            with contextlib.suppress(FileNotFoundError):
                with open(self.report_path(host), encoding="utf-8") as f:
                    out[host] = json.load(f)
        return out

    def wait_for(self, members: list[str], timeout: float = 60.0) -> dict[str, dict[str, Any]]:
        """Wait until every live worker reports a ring of exactly *members*."""
        deadline = time.monotonic() + timeout
        while True:
            reports = self.reports()
            if set(reports) == set(members) and all(r["members"] == sorted(members) for r in reports.values()):
                return reports
            dead = [h for h, p in self.procs.items() if p.poll() is not None]
            if dead or time.monotonic() > deadline:
                seen = {h: r["members"] for h, r in reports.items()}
                raise TimeoutError(
                    f"workers did not converge to {sorted(members)} (exited: {dead}); their rings: {seen}"
                )
            time.sleep(0.05)

    def __enter__(self) -> Fleet:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def owners(reports: dict[str, dict[str, Any]]) -> dict[int, list[str]]:
    """id -> the workers that claim it (exactly one each, when all is well)."""
    out: dict[int, list[str]] = {}
    for host, report in reports.items():
        for i in report["owned"]:
            out.setdefault(i, []).append(host)
    return out


def owned(reports: dict[str, dict[str, Any]]) -> dict[str, set[int]]:
    return {host: set(r["owned"]) for host, r in reports.items()}


# -- demo -----------------------------------------------------------------------


def demo(args: argparse.Namespace) -> int:
    def show(title: str, reports: dict[str, dict[str, Any]]) -> None:
        counts = "  ".join(f"{h}={len(r['owned'])}" for h, r in sorted(reports.items()))
        claimed = owners(reports)
        ok = len(claimed) == args.ids and all(len(v) == 1 for v in claimed.values())
        print(f"{title}: {counts}  ({'every id owned exactly once' if ok else 'NOT a partition'})")

    hosts = [f"worker-{i}" for i in range(1, args.workers + 1)]
    with tempfile.TemporaryDirectory(prefix="sg-fleet-") as workdir, Fleet(workdir, args.group, args.ids) as fleet:
        for host in hosts:
            fleet.start(host)
        before = fleet.wait_for(hosts)
        show(f"{len(hosts)} workers, {args.ids} ids", before)

        victim = hosts[len(hosts) // 2]
        t0 = time.monotonic()
        fleet.kill(victim)
        survivors = [h for h in hosts if h != victim]
        after_kill = fleet.wait_for(survivors)
        print(f"SIGKILL {victim}: survivors agreed after {time.monotonic() - t0:.1f} s")
        show("  owned", after_kill)
        old, new = owned(before), owned(after_kill)
        moved = {h: len(new[h] - old[h]) for h in survivors}
        print(
            f"  moved {sum(moved.values())} ids (= {victim}'s {len(old[victim])}): {moved}; "
            f"ids lost by survivors: {sum(len(old[h] - new[h]) for h in survivors)}"
        )

        joiner = f"worker-{len(hosts) + 1}"
        t0 = time.monotonic()
        fleet.start(joiner)
        after_join = fleet.wait_for(survivors + [joiner])
        print(f"start {joiner}: all agreed after {time.monotonic() - t0:.1f} s")
        show("  owned", after_join)
        old, new = owned(after_kill), owned(after_join)
        taken = {h: len(old[h] - new[h]) for h in survivors}
        print(
            f"  moved {len(new[joiner])} ids ({len(new[joiner]) / args.ids:.1%}), all to {joiner}: "
            f"{taken}; ids moved between old workers: {sum(len(new[h] - old[h]) for h in survivors)}"
        )
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    w = sub.add_parser("worker", help="run one worker until SIGTERM")
    w.add_argument("--host", required=True)
    w.add_argument("--group", required=True)
    w.add_argument("--ids", type=int, default=10_000)
    w.add_argument("--driver", default="db")
    w.add_argument("--url")
    w.add_argument("--records-url", required=True)
    w.add_argument("--report", required=True, help="JSON file rewritten on every rebalance")
    for name, value in TIMINGS.items():
        w.add_argument(f"--{name.replace('_', '-')}", type=float, default=value)
    d = sub.add_parser("demo", help="five workers on SQLite; kill one; add one")
    d.add_argument("--workers", type=int, default=5)
    d.add_argument("--ids", type=int, default=10_000)
    d.add_argument("--group", default="fleet")
    args = parser.parse_args(argv)
    return worker(args) if args.command == "worker" else demo(args)


if __name__ == "__main__":
    sys.exit(main())
