"""``servicegroup demo``: the main job of ``make demo``.

Five member processes join a topic on a fresh SQLite file (the embedded
default: no server), the service table is printed, one member is killed
with SIGKILL (no goodbye, as in a crash), and the table is printed again
once liveness has noticed. ``service_down_time`` is 2 s so this takes
seconds, not minutes.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
import os
import signal
import subprocess
import sys
import tempfile
import time

from servicegroup.cli import output
from servicegroup.cli.common import GroupCommand, count, open_group
from servicegroup.conf import Settings
from servicegroup.urls import redact

DEMO_REPORT_INTERVAL = 0.5
DEMO_DOWN_TIME = 2.0
DEMO_STALENESS = 0.25

#: How long the members may take to start: Python processes importing
#: tooz and SQLAlchemy take tens of seconds on a loaded machine (a CI
#: runner), so this is a bound, not an expectation; a member that exits
#: ends the wait at once.
START_BOUND = 300.0


def _wait(predicate: Callable[[], bool], timeout: float, step: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(step)
    return predicate()


class Demo(GroupCommand):
    """Five members on SQLite; kill one; watch it go down."""

    creates_records = True

    def get_parser(self, prog_name: str) -> argparse.ArgumentParser:
        parser = super().get_parser(prog_name)
        parser.add_argument("--members", type=count(1), default=5)
        parser.add_argument("--topic", default="compute")
        return parser

    def take_action(self, parsed_args: argparse.Namespace) -> int:
        workdir = tempfile.mkdtemp(prefix="servicegroup-demo-")
        settings = self.settings(
            parsed_args,
            records_url=f"sqlite:///{os.path.join(workdir, 'demo.sqlite')}",
            report_interval=DEMO_REPORT_INTERVAL,
            service_down_time=DEMO_DOWN_TIME,
            max_staleness=DEMO_STALENESS,
        )
        return run(settings, parsed_args.topic, parsed_args.members)


def run(settings: Settings, topic: str, members: int) -> int:
    hosts = [f"{topic}-{i}" for i in range(1, members + 1)]
    print(
        f"records: {redact(settings.records_url)}\nliveness: driver={settings.driver}, report_interval="
        f"{settings.report_interval:g}s, service_down_time={settings.service_down_time:g}s\n"
    )

    sg = open_group(settings, create=True)  # creates the schema before members race for it
    procs: dict[str, subprocess.Popen[bytes]] = {}
    try:
        for host in hosts:
            cmd = [
                sys.executable,
                "-m",
                "servicegroup",
                "join",
                "--host",
                host,
                "--topic",
                topic,
                "--binary",
                f"demo-{topic}",
                "--driver",
                settings.driver,
                "--records-url",
                settings.records_url,
                "--report-interval",
                str(settings.report_interval),
                "--service-down-time",
                str(settings.service_down_time),
            ]
            if settings.url:
                cmd += ["--url", settings.url]
            procs[host] = subprocess.Popen(cmd, stdout=subprocess.DEVNULL)
        started = _wait(
            lambda: sg.get_all(topic) == sorted(hosts) or any(p.poll() is not None for p in procs.values()),
            timeout=START_BOUND,
        )
        if not started or sg.get_all(topic) != sorted(hosts):
            print(f"members did not all come up: live = {sg.get_all(topic)}", file=sys.stderr)
            return 1
        print(f"{len(hosts)} members up:")
        print(output.table(sg.services(topic)), flush=True)

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
        print(output.table(sg.services(topic)))
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
