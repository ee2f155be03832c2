"""``servicegroup demo``: the main job of ``make demo``.

Five member processes join a topic on a fresh SQLite file (the embedded
default: no server), the service table is printed, one member is killed
with SIGKILL (no goodbye, as in a crash), and the table is printed again
once liveness has noticed. ``service_down_time`` is 2 s so this takes
seconds, not minutes.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import time

from servicegroup import cli
from servicegroup.conf import Settings

DEMO_REPORT_INTERVAL = 0.5
DEMO_DOWN_TIME = 2.0
DEMO_STALENESS = 0.25


def _wait(predicate, timeout: float, step: float = 0.05) -> bool:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(step)
    return predicate()


def run(args: argparse.Namespace) -> int:
    workdir = tempfile.mkdtemp(prefix="servicegroup-demo-")
    records_url = args.records_url or f"sqlite:///{os.path.join(workdir, 'demo.sqlite')}"
    settings = Settings(
        driver=args.driver or "db",
        url=args.url,
        records_url=records_url,
        report_interval=args.report_interval or DEMO_REPORT_INTERVAL,
        service_down_time=args.service_down_time or DEMO_DOWN_TIME,
        max_staleness=args.max_staleness or DEMO_STALENESS,
    )
    topic = args.topic
    hosts = [f"{topic}-{i}" for i in range(1, args.members + 1)]
    print(f"records: {records_url}\nliveness: driver={settings.driver}, report_interval="
          f"{settings.report_interval:g}s, service_down_time={settings.service_down_time:g}s\n")

    sg = cli.open_group(settings)  # creates the schema before members race for it
    procs: dict[str, subprocess.Popen[bytes]] = {}
    try:
        for host in hosts:
            cmd = [sys.executable, "-m", "servicegroup", "join", "--host", host, "--topic", topic,
                   "--binary", f"demo-{topic}", "--driver", settings.driver,
                   "--records-url", records_url,
                   "--report-interval", str(settings.report_interval),
                   "--service-down-time", str(settings.service_down_time)]
            if settings.url:
                cmd += ["--url", settings.url]
            procs[host] = subprocess.Popen(cmd, stdout=subprocess.DEVNULL)
        if not _wait(lambda: sg.get_all(topic) == sorted(hosts), timeout=30):
            print(f"members did not all come up: live = {sg.get_all(topic)}", file=sys.stderr)
            return 1
        print(f"{len(hosts)} members up:")
        print(cli.format_table(cli.service_rows(sg.services(topic))))

        victim = hosts[len(hosts) // 2]
        os.kill(procs[victim].pid, signal.SIGKILL)
        procs[victim].wait()
        killed_at = time.monotonic()
        print(f"\nSIGKILL {victim} (pid {procs[victim].pid}) ...")
        if not _wait(lambda: not sg.is_up(topic=topic, host=victim), timeout=settings.service_down_time * 5):
            print(f"{victim} still reported up", file=sys.stderr)
            return 1
        took = time.monotonic() - killed_at
        print(f"{victim} is down after {took:.2f}s (service_down_time {settings.service_down_time:g}s)\n")
        print(cli.format_table(cli.service_rows(sg.services(topic))))
        print(f"\nget_all({topic!r}) -> {sg.get_all(topic)}")
        return 0
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.terminate()
        for proc in procs.values():
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
        sg.stop()
