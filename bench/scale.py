"""Fleets of 1,000 to 10,000 members, per backend, beside raw tooz (docs/scale.md).

``python -m bench.scale [--sizes 1000,5000,10000] [--backends zk,redis,...]
[--procs 4] [--interval 10] [--down 60] [--hold 30] [--name scale]``;
``make bench-scale``. ``--replot FILE...`` draws the plots from the rows
of earlier runs (runs of different backends, one set of figures).

For each backend and fleet size N: N members (``ServiceGroup.join``, one
host each, every one with its own heartbeat thread and backend client) run
in ``--procs`` processes (:mod:`bench.scale_member`); once a fresh observer
reads all N up, this process measures

- a fresh observer's first read and a steady refresh (median / max of 10),
  with the client requests each costs (:mod:`servicegroup.testing.roundtrips`);
- the same-run peer: raw tooz's ``get_members`` and
  ``get_members_with_capabilities`` on the same group and server;
- ``is_up`` and ``get_all`` from the view, and the view's memory per member
  (tracemalloc);
- over ``--hold`` seconds: the fewest members the view read up (false
  downs), member CPU per heartbeat (the member processes' CPU seconds over
  their beats), and established connections to the server from the member
  processes and from the observer.

Every row is also written to ``bench/results/scale.json``; with matplotlib
(``pip install -e .[bench]``) a PNG per figure goes to ``docs/``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import timeit
import tracemalloc
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench import detection
from bench.report import report
from servicegroup import ServiceGroup, urls
from servicegroup.backend import default_factory
from servicegroup.membership import MembershipView
from servicegroup.reader import Reader
from servicegroup.testing.roundtrips import requests_of

BACKENDS = ["zk", "redis", "mc", "etcd", "db-postgresql", "db-mysql", "consul-fake"]
DOCS = Path(__file__).resolve().parent.parent / "docs"
SQL_PORTS = {"postgresql": 5432, "mysql": 3306}


def _driver_of(name: str) -> str:
    return "db" if name.startswith("db-") else "consul" if name.startswith("consul") else name


def _ms(seconds: float) -> float:
    return round(seconds * 1000.0, 2)


@contextlib.contextmanager
def fleet(driver: str, url: str | None, records: Callable[[int], str], topic: str, n: int, procs: int, args: Any):
    """N members over *procs* processes; yields the processes once all joined."""
    share = [n // procs + (1 if i < n % procs else 0) for i in range(procs)]
    children: list[subprocess.Popen[str]] = []
    first = 0
    try:
        for i, count in enumerate(share):
            cmd = [sys.executable, "-m", "bench.scale_member", driver, url or "", records(i), topic]
            cmd += [str(first), str(count), str(args.interval), str(args.down)]
            children.append(subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True))
            first += count
        for child in children:
            line = child.stdout.readline() if child.stdout else ""
            if line.strip() != "ready":
                raise RuntimeError(f"a member process failed to join (exit {child.poll()})")
        yield children
    finally:
        for child in children:
            with contextlib.suppress(OSError):
                if child.stdin:
                    child.stdin.close()
        deadline = time.monotonic() + max(30.0, 3 * args.down)
        for child in children:
            try:
                child.wait(max(1.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()


def _stats(children: list[subprocess.Popen[str]]) -> list[dict[str, Any]]:
    out = []
    for child in children:
        assert child.stdin and child.stdout
        child.stdin.write("stats\n")
        child.stdin.flush()
        out.append(json.loads(child.stdout.readline()))
    return out


def _connections(port: int, pids: set[int]) -> int:
    """Established TCP connections to *port* owned by *pids* (``ss -tnp``)."""
    try:
        text = subprocess.run(
            ["ss", "-Htnp", "state", "established", f"( dport = :{port} )"], capture_output=True, text=True, timeout=30
        ).stdout
    except (OSError, subprocess.TimeoutExpired):
        return -1
    return sum(1 for line in text.splitlines() if any(f"pid={p}," in line for p in pids))


def _port(url: str, name: str) -> int | None:
    if name.startswith("db-"):
        return SQL_PORTS[name.split("-", 1)[1]]
    return urls.split(url).port


def _wait_all_up(sg: ServiceGroup, topic: str, n: int, bound: float) -> bool:
    deadline = time.monotonic() + bound
    while time.monotonic() < deadline:
        if len(sg.get_all(topic)) == n:
            return True
        time.sleep(min(1.0, sg.settings.max_staleness))
    return False


def _timed(fn: Callable[[], Any]) -> float:
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


def measure_reads(driver: str, url: str, topic: str, n: int) -> dict[str, Any]:
    """First read, steady refresh and their request counts; the raw peer."""
    row: dict[str, Any] = {}
    firsts = []
    for _ in range(3):
        fresh = Reader(url, default_factory, background=False)
        try:
            fresh.coordinator()
            with requests_of(driver) as calls:
                firsts.append(_timed(lambda r=fresh: r.fetch(topic)))  # type: ignore[misc]
            row["first read requests"] = len(calls)
        finally:
            fresh.close()
    row["first read ms"] = _ms(statistics.median(firsts))
    reader = Reader(url, default_factory, background=False)
    try:
        reader.fetch(topic)
        steady = []
        for _ in range(10):
            with requests_of(driver) as calls:
                steady.append(_timed(lambda: reader.fetch(topic)))
        row["refresh requests"] = len(calls)
        row["refresh median ms"] = _ms(statistics.median(steady))
        row["refresh max ms"] = _ms(max(steady))
    finally:
        reader.close()
    peer = default_factory(url, f"peer-{uuid.uuid4().hex[:6]}".encode())
    peer.start(start_heart=False)
    try:
        group = topic.encode()
        row["peer get_members ms"] = _ms(_timed(lambda: peer.get_members(group).get(timeout=300)))
        with requests_of(driver) as calls:
            row["peer +caps ms"] = _ms(_timed(lambda: peer.get_members_with_capabilities(group).get(timeout=300)))
        row["peer +caps requests"] = len(calls)
    except NotImplementedError:
        pass
    finally:
        with contextlib.suppress(Exception):
            peer.stop()
    return row


def measure_view(sg: ServiceGroup, url: str, topic: str, n: int) -> dict[str, Any]:
    """is_up / get_all from memory, and the view's bytes per member."""
    host = "h00000"
    loops = 20000
    is_up_us = min(timeit.repeat(lambda: sg.is_up(topic=topic, host=host), number=loops, repeat=3)) / loops * 1e6
    get_all_ms = min(timeit.repeat(lambda: sg.get_all(topic), number=5, repeat=3)) / 5 * 1e3
    reader = Reader(url, default_factory, background=False)
    try:
        reader.coordinator()
        tracemalloc.start()
        before = tracemalloc.get_traced_memory()[0]
        view = MembershipView(reader.fetch, max_staleness=1.0, grace=60.0, start_thread=False)
        members = view.members(topic)
        after = tracemalloc.get_traced_memory()[0]
        tracemalloc.stop()
        per_member = (after - before) / max(1, len(members or {}))
        view.stop()
    finally:
        reader.close()
    return {"is_up us": round(is_up_us, 3), "get_all ms": round(get_all_ms, 3), "view bytes/member": round(per_member)}


def hold(sg: ServiceGroup, topic: str, n: int, children: list[subprocess.Popen[str]], seconds: float) -> dict[str, Any]:
    """Watch the fleet for *seconds*: fewest up, CPU per beat."""
    start = _stats(children)
    fewest = n
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        fewest = min(fewest, len(sg.get_all(topic)))
        time.sleep(sg.settings.max_staleness)
    end = _stats(children)
    beats = sum(e["beats"] - s["beats"] for s, e in zip(start, end, strict=True))
    cpu = sum(e["cpu"] - s["cpu"] for s, e in zip(start, end, strict=True))
    return {
        "fewest up": fewest,
        "false downs": n - fewest,
        "beats/s": round(beats / seconds, 1),
        "member CPU ms/beat": round(cpu / beats * 1000.0, 3) if beats else None,
    }


def run(name: str, n: int, args: argparse.Namespace, workdir: str) -> dict[str, Any]:
    row: dict[str, Any] = {"backend": name, "members": n}
    driver = _driver_of(name)
    with detection.backend(name, workdir) as (drv, url, records_url):
        topic = f"scale-{uuid.uuid4().hex[:8]}"

        def records(i: int) -> str:
            if drv == "db":
                return records_url
            return f"sqlite:///{os.path.join(workdir, f'records-{n}-{i}.sqlite')}"

        sg = ServiceGroup(drv, url, records(-1), report_interval=args.interval, service_down_time=args.down)
        try:
            started = time.monotonic()
            with fleet(drv, url, records, topic, n, args.procs, args) as children:
                row["join s"] = round(time.monotonic() - started, 1)
                row["all up"] = _wait_all_up(sg, topic, n, bound=2 * args.down)
                if not row["all up"]:
                    row["up"] = len(sg.get_all(topic))
                    return row
                row.update(measure_reads(driver, sg.url, topic, n))
                row.update(measure_view(sg, sg.url, topic, n))
                row.update(hold(sg, topic, n, children, args.hold))
                port = _port(sg.url, name)
                if port is not None:
                    pids = {c.pid for c in children}
                    row["member conns"] = _connections(port, pids)
                    row["observer conns"] = _connections(port, {os.getpid()})
        except Exception as exc:  # one backend failing must not lose the others' rows
            row["error"] = str(exc).splitlines()[0][:120] if str(exc) else type(exc).__name__
        finally:
            sg.stop()
    return row


def plot(rows: list[dict[str, Any]]) -> list[str]:
    """One PNG per figure against N, one line per backend (and the peer)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return ["(matplotlib not installed: `pip install -e .[bench]` for the plots)"]
    figures = {
        "first read ms": ("scale-first-read.png", "peer +caps ms"),
        "refresh median ms": ("scale-refresh.png", "peer +caps ms"),
        "member CPU ms/beat": ("scale-member-cpu.png", None),
        "member conns": ("scale-connections.png", None),
    }
    written = []
    for column, (filename, peer) in figures.items():
        fig, ax = plt.subplots(figsize=(6, 4))
        for backend in dict.fromkeys(r["backend"] for r in rows):
            points = [(r["members"], r[column]) for r in rows if r["backend"] == backend and r.get(column) is not None]
            if points:
                ax.plot(*zip(*points, strict=True), marker="o", label=backend)
            if peer:
                peers = [(r["members"], r[peer]) for r in rows if r["backend"] == backend and r.get(peer) is not None]
                if peers:
                    ax.plot(*zip(*peers, strict=True), marker="x", linestyle="--", label=f"{backend} raw tooz")
        ax.set_xlabel("members")
        ax.set_ylabel(column)
        ax.set_yscale("log" if peer else "linear")
        ax.legend(fontsize=7)
        ax.grid(True, alpha=0.3)
        fig.tight_layout()
        fig.savefig(DOCS / filename, dpi=80)
        plt.close(fig)
        written.append(f"docs/{filename}")
    return written


def _load() -> str:
    with contextlib.suppress(OSError):
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    return "?"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.scale", description=__doc__.splitlines()[0])
    p.add_argument("--sizes", default="1000,5000,10000")
    p.add_argument("--backends", default=",".join(BACKENDS))
    p.add_argument("--procs", type=int, default=4)
    p.add_argument("--interval", type=float, default=10.0, help="report_interval (nova's default)")
    p.add_argument("--down", type=float, default=60.0, help="service_down_time (nova's default)")
    p.add_argument("--hold", type=float, default=30.0, help="seconds to watch each fleet")
    p.add_argument("--name", default="scale", help="results file: bench/results/NAME.json")
    p.add_argument("--replot", nargs="+", metavar="JSON", help="only draw the plots from these results files")
    args = p.parse_args(argv)
    if args.replot:
        rows = [row for path in args.replot for row in json.loads(Path(path).read_text())["rows"]]
        print("\n".join(plot(rows)))
        return 0
    rows = []
    loads = [_load()]
    with tempfile.TemporaryDirectory(prefix="sg-scale-") as workdir:
        for name in args.backends.split(","):
            for n in (int(s) for s in args.sizes.split(",")):
                print(f"{name} x {n} (load {_load()})", file=sys.stderr, flush=True)
                rows.append(run(name, n, args, workdir))
                print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
                loads.append(_load())
    notes = [
        f"report_interval {args.interval:g} s, service_down_time {args.down:g} s, {args.procs} member processes, "
        f"hold {args.hold:g} s; load average (1/5/15 min) before each run: {'; '.join(loads)}",
        *plot(rows),
    ]
    report(args.name, rows, title="bench.scale: fleets per backend, beside raw tooz", notes=notes)
    return 0


if __name__ == "__main__":
    sys.exit(main())
