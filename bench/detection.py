"""Detection time: SIGKILL of a member process -> ``is_up()`` False elsewhere.

For every backend, in the same run and on the same server:

- **servicegroup**: members are ``servicegroup join`` processes; the
  observer is a ``ServiceGroup`` in this process asking ``is_up``;
- **raw tooz**: members are ``bench.raw_member`` processes (tooz's own heart
  thread); the observer polls ``get_members`` directly (no cache).

Both use ``service_down_time`` = 3 s (the backend TTL) and a heartbeat every
second. A sentinel member stays alive through the whole run; every poll also
checks it, and a poll that reports it down counts as a false down.

Run: ``python -m bench.detection [--kills 10] [--backends db-sqlite,zk,...]``.
Prints a table and writes ``bench/results/detection.json``. Numbers only:
nothing here passes or fails on a timing.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator

from tooz import coordination

from bench import report
from servicegroup import driver_urls
from servicegroup.api import ServiceGroup

DOWN_TIME = 3.0
INTERVAL = 1.0
STALENESS = 0.5
POLL = 0.02
BOUND = 30.0
ALL = ["db-sqlite", "db-postgresql", "db-mysql", "zk", "mc", "redis", "etcd", "consul-fake"]


@contextlib.contextmanager
def backend(name: str, workdir: str) -> Iterator[tuple[str, str, str]]:
    """Yield ``(driver, url, records_url)`` with the server running."""
    from servicegroup.testing import servers

    sqlite_records = f"sqlite:///{os.path.join(workdir, 'records.sqlite')}"
    if name == "db-sqlite":
        yield "db", None, f"sqlite:///{os.path.join(workdir, 'db.sqlite')}"  # type: ignore[misc]
        return
    if name.startswith("db-"):
        dialect = name.split("-", 1)[1]
        yield "db", None, servers.sql_url(dialect)  # type: ignore[misc]
        return
    if name == "consul-fake":
        from servicegroup.testing.consul import ConsulTestServer

        with ConsulTestServer(session_ttl_min=1.0) as agent:
            yield "consul", agent.url, sqlite_records
        return
    with servers.BY_DRIVER[name]() as srv:
        yield name, srv.url, sqlite_records


def _wait(pred: Callable[[], bool], bound: float = BOUND) -> bool:
    deadline = time.monotonic() + bound
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(POLL)
    return False


def _spawn(cmd: list[str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)


def _kill(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.kill()
    proc.wait()


def _measure(
    spawn: Callable[[str], subprocess.Popen[bytes]], alive: Callable[[str], bool], kills: int
) -> tuple[list[float], int]:
    """SIGKILL *kills* members one by one; time each until not alive."""
    false_downs = 0
    sentinel = spawn("sentinel")
    times: list[float] = []
    try:
        if not _wait(lambda: alive("sentinel")):
            raise RuntimeError("sentinel member never came up")
        for i in range(kills):
            victim = f"victim-{i}"
            proc = spawn(victim)
            try:
                if not _wait(lambda victim=victim: alive(victim)):
                    raise RuntimeError(f"{victim} never came up")
                time.sleep(random.uniform(0, INTERVAL))  # random phase vs. the heartbeat
                os.kill(proc.pid, signal.SIGKILL)
                killed = time.monotonic()
                while alive(victim):
                    if not alive("sentinel"):
                        false_downs += 1
                    if time.monotonic() - killed > BOUND:
                        raise RuntimeError(f"{victim} still up {BOUND}s after SIGKILL")
                    time.sleep(POLL)
                times.append(time.monotonic() - killed)
            finally:
                _kill(proc)
    finally:
        _kill(sentinel)
    return times, false_downs


def run_ours(driver: str, url: str | None, records_url: str, topic: str, kills: int) -> tuple[list[float], int]:
    sg = ServiceGroup(
        driver=driver,
        url=url,
        records_url=records_url,
        report_interval=INTERVAL,
        service_down_time=DOWN_TIME,
        max_staleness=STALENESS,
    )

    def spawn(host: str) -> subprocess.Popen[bytes]:
        cmd = [
            sys.executable,
            "-m",
            "servicegroup",
            "join",
            "--host",
            host,
            "--topic",
            topic,
            "--driver",
            driver,
            "--records-url",
            records_url,
            "--report-interval",
            str(INTERVAL),
            "--service-down-time",
            str(DOWN_TIME),
        ]
        return _spawn(cmd + (["--url", url] if url else []))

    try:
        return _measure(spawn, lambda h: sg.is_up(topic=topic, host=h), kills)
    finally:
        sg.stop()


def run_raw(tooz_url: str, group: str, kills: int) -> tuple[list[float], int]:
    observer = coordination.get_coordinator(tooz_url, f"raw-observer-{os.getpid()}".encode())
    observer.start()

    def alive(host: str) -> bool:
        try:
            return host.encode() in observer.get_members(group.encode()).get()
        except coordination.GroupNotCreated:
            return False

    def spawn(host: str) -> subprocess.Popen[bytes]:
        return _spawn([sys.executable, "-m", "bench.raw_member", tooz_url, group, host])

    try:
        return _measure(spawn, alive, kills)
    finally:
        observer.stop()


def summarise(name: str, ours: tuple[list[float], int], raw: tuple[list[float], int]) -> dict[str, object]:
    row: dict[str, object] = {"backend": name, "kills": len(ours[0])}
    for label, (times, false_downs) in (("ours", ours), ("raw", raw)):
        row[f"{label}_median_s"] = round(statistics.median(times), 3) if times else None
        row[f"{label}_max_s"] = round(max(times), 3) if times else None
        row[f"{label}_false_downs"] = false_downs
    return row


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kills", type=int, default=10)
    parser.add_argument("--backends", default=",".join(ALL))
    args = parser.parse_args(argv)
    rows = []
    for name in args.backends.split(","):
        with tempfile.TemporaryDirectory() as workdir, backend(name, workdir) as (driver, url, records_url):
            tooz_url = driver_urls.resolve(driver, url, records_url, ttl=DOWN_TIME)
            suffix = f"{os.getpid()}-{int(time.time())}"
            ours = run_ours(driver, url, records_url, f"detect-{suffix}", args.kills)
            raw = run_raw(tooz_url, f"detect-raw-{suffix}", args.kills)
            rows.append(summarise(name, ours, raw))
            print(f"{name}: done", file=sys.stderr, flush=True)
    report.report(
        "detection",
        rows,
        title=f"SIGKILL -> is_up() False (service_down_time={DOWN_TIME:g}s, report_interval="
        f"{INTERVAL:g}s, max_staleness={STALENESS:g}s, {args.kills} kills per backend)",
        columns=[
            "backend",
            "kills",
            "ours_median_s",
            "ours_max_s",
            "ours_false_downs",
            "raw_median_s",
            "raw_max_s",
            "raw_false_downs",
        ],
        notes=[
            "ours: servicegroup join members, ServiceGroup.is_up observer; raw: tooz members "
            "with tooz's heart thread, get_members polled directly (no cache)."
        ],
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
