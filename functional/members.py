"""Member processes for functional tests: ``servicegroup join`` in a child.

A real process per member, so that SIGKILL is a real crash and SIGSTOP a
real pause (a GC stall, a VM freeze): the faults tooz's own tests cannot
cause from inside one process. Its stdout is collected line by line, so a
test can wait for ``membership_lost`` / ``membership_restored``.
"""

from __future__ import annotations

from collections.abc import Callable
import dataclasses
import os
import signal
import subprocess
import sys
import threading
import time
from typing import Any

from servicegroup.testing.servers.process import dies_with_parent

#: Short timings so every scenario takes seconds.
REPORT_INTERVAL = 0.5
DOWN_TIME = 2.0
STALENESS = 0.2
BOUND = 30.0
#: How long a member process may take to start and join: interpreter,
#: imports, migrations. Not an interval of the library's, and on a loaded
#: 2-core machine it has been seen past BOUND; this only catches a member
#: that never comes up.
STARTUP = 4 * BOUND


@dataclasses.dataclass(frozen=True)
class Target:
    """Where a scenario runs: ``ServiceGroup(driver, url, records_url)``."""

    name: str
    driver: str
    url: str | None
    records_url: str

    def kwargs(self, **overrides: object) -> dict[str, object]:
        kw: dict[str, object] = dict(
            driver=self.driver,
            url=self.url,
            records_url=self.records_url,
            report_interval=REPORT_INTERVAL,
            service_down_time=DOWN_TIME,
            max_staleness=STALENESS,
        )
        kw.update(overrides)
        return kw


def explain(members: list[MemberProcess], server: object = None) -> str:
    """What members (and the server, if given) said: for failure messages, so
    a failure in CI can be read without reproducing it."""
    parts = [m.tail() for m in members]
    if server is not None and hasattr(server, "log_tail"):
        parts.append(f"  server log ({server!r}):\n{server.log_tail(15)}")
    return "\n".join(parts)


def wait_for(predicate: Callable[[], bool], bound: float = BOUND, step: float = 0.05) -> bool:
    """Poll *predicate* until true or *bound* seconds pass (a bound, not a timing)."""
    deadline = time.monotonic() + bound
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(step)
    return predicate()


#: ``servicegroup`` with the root logger at INFO (the CLI's default is
#: WARNING): recoveries and re-joins show in a failing test's output.
_MAIN_AT_INFO = (
    "import logging, sys\n"
    "logging.basicConfig(level=logging.INFO, format='%(asctime)s %(levelname)s %(name)s: %(message)s')\n"
    "from servicegroup import cli\n"
    "sys.exit(cli.main(sys.argv[1:]))\n"
)


class MemberProcess:
    """``python -m servicegroup join`` for one host, collecting its output."""

    def __init__(
        self,
        target: Target,
        host: str,
        topic: str,
        *,
        config_file: str | None = None,
        report_interval: float = REPORT_INTERVAL,
        service_down_time: float = DOWN_TIME,
        prefix: list[str] | None = None,
    ) -> None:
        """A member of *target*, or, given *config_file*, configured by that
        file alone (the flags would win over it). *prefix* runs it under
        another command (``faketime -f +3s``: a skewed clock)."""
        cmd = [*(prefix or []), sys.executable, "-c", _MAIN_AT_INFO, "join", "--host", host, "--topic", topic]
        if config_file is not None:
            cmd += ["--config-file", config_file]
        else:
            cmd += ["--driver", target.driver, "--records-url", target.records_url]
            cmd += ["--report-interval", str(report_interval), "--service-down-time", str(service_down_time)]
            if target.url:
                cmd += ["--url", target.url]
        self.host = host
        self.lines: list[str] = []
        self.proc = subprocess.Popen(
            cmd,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
            preexec_fn=dies_with_parent(),  # no orphan member if pytest is killed
        )
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))

    def saw(self, text: str) -> bool:
        return any(text in line for line in self.lines)

    def tail(self, n: int = 40) -> str:
        """The last *n* output lines, for assertion messages."""
        return "\n".join(f"  {self.host}| {line}" for line in self.lines[-n:]) or f"  {self.host}| (no output)"

    def pause(self) -> None:
        os.kill(self.proc.pid, signal.SIGSTOP)

    def resume(self) -> None:
        os.kill(self.proc.pid, signal.SIGCONT)

    def kill(self) -> None:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGCONT)
            self.proc.kill()
        self.proc.wait()

    def terminate(self) -> None:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGCONT)
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def live_hosts(observer: Any, topic: str) -> Callable[[], list[str]]:
    """What a history records as the observer's answer: the live hosts, or
    an exception when the observer cannot vouch for anyone (``get_all`` is
    then empty, which is "unknown", not "everyone is down")."""

    def read() -> list[str]:
        why = observer.liveness_unknown(topic)
        if why:
            raise LookupError(why)
        hosts: list[str] = observer.get_all(topic)
        return hosts

    return read
