"""Inside OpenStack services: eventlet monkey-patching and oslo.service.

Per backend, a member and an observer each run under
``eventlet.monkey_patch()`` in their own process (functional/green.py):
the observer joins, sees the member up, sees it down once the test
SIGKILLs it, and stops. Separately, the
observer's steps run inside an ``oslo_service.service.Service`` under
oslo.service's threading backend, where nova is going.

Waits are bounded by multiples of the configured intervals.
"""

from __future__ import annotations

import pathlib
import subprocess
import sys
import threading
import uuid

import pytest

from functional.members import DOWN_TIME, REPORT_INTERVAL, STALENESS, Target, wait_for
from servicegroup.testing import selection

SCRIPT = pathlib.Path(__file__).resolve().parent / "green.py"

#: Bound on each wait: a loaded machine starts Python processes slowly.
BOUND = 60 * DOWN_TIME


class Green:
    """One functional/green.py process and the lines it printed."""

    def __init__(self, mode: str, target: Target, host: str, topic: str, watch: str | None = None) -> None:
        cmd = [sys.executable, str(SCRIPT), mode, "--driver", target.driver, "--records-url", target.records_url]
        cmd += ["--host", host, "--topic", topic, "--bound", str(BOUND)]
        cmd += ["--report-interval", str(REPORT_INTERVAL), "--service-down-time", str(DOWN_TIME)]
        cmd += ["--max-staleness", str(STALENESS)]
        if target.url:
            cmd += ["--url", target.url]
        if watch:
            cmd += ["--watch", watch]
        self.lines: list[str] = []
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))

    def said(self, prefix: str) -> bool:
        return any(line.startswith(prefix) for line in self.lines)

    def output(self) -> str:
        return "\n".join(self.lines[-60:])

    def finish(self) -> int:
        try:
            return self.proc.wait(timeout=3 * BOUND)
        finally:
            self.kill()

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def run_observer(mode: str, target: Target) -> None:
    topic = f"green-{uuid.uuid4().hex[:10]}"
    member = Green("member", target, "green-member", topic)
    observer = Green(mode, target, "green-observer", topic, watch="green-member")
    try:
        assert wait_for(lambda: member.said("joined"), bound=BOUND), member.output()
        assert wait_for(lambda: observer.said("up green-member"), bound=BOUND), observer.output() + member.output()
        member.kill()  # SIGKILL: a crash, no leave
        code = observer.finish()
        assert code == 0, observer.output()
        assert observer.said("down green-member") and observer.said("stopped"), observer.output()
        if mode == "observer":
            assert member.said("joined green") and observer.said("joined green"), "eventlet did not patch threads"
    finally:
        member.kill()
        observer.kill()


def test_member_and_observer_under_eventlet_monkey_patching(target: Target):
    pytest.importorskip("eventlet")
    run_observer("observer", target)


@pytest.mark.parametrize("target", selection.backend_params("db-sqlite", "zk"), indirect=True)
def test_observer_as_an_oslo_service_under_the_threading_backend(target: Target):
    pytest.importorskip("oslo_service")
    run_observer("service", target)
