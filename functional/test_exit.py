"""A process that ends without ``stop()``: it exits promptly, says nothing
alarming, and withdraws its member entry (servicegroup/exiting.py).

Each test runs a real child process that joins a host, reads it up, then
lets the interpreter end with the ServiceGroup still running (a script, a
crashed ``main``), on every backend. The child's membership TTL
(``service_down_time``) is far longer than the test waits, so seeing the
host gone means the exit withdrew it, not that its TTL ran out. With the
backend frozen behind a :class:`~servicegroup.testing.proxy.FaultProxy`
(half-open, the worst case) the exit must not hang either.

A clean ``stop()`` logs nothing at warning level or above: the child
stops a second ServiceGroup of its own before it ends, and the test reads
its log.
"""

from __future__ import annotations

from collections.abc import Callable
import json
import subprocess
import sys
import urllib.parse
import uuid

import pytest

from functional.members import BOUND, STARTUP, Target, wait_for
from servicegroup import backend
from servicegroup.api import ServiceGroup
from servicegroup.testing import selection
from servicegroup.testing.proxy import FaultProxy

#: The child's TTL: longer than anything the test waits for (BOUND).
CHILD_DOWN_TIME = 2 * BOUND
#: How long the exit handlers may take before it counts as a hang: three
#: backend calls' bounds. Ours waits 1 s at most (exiting.EXIT_BOUND); the
#: old exit waited on calls timing out one after another (10-15 s on etcd,
#: forever behind a frozen ZooKeeper). Measured from the child's last line
#: to its last exit handler (registered first, so run last): the
#: interpreter's teardown after it is CPU work that a loaded machine makes
#: as slow as it likes, and is only bounded as a whole (STARTUP).
HANG = 3 * backend.CALL_TIMEOUT
#: What the child prints to stderr when it starts ending: its log before
#: that (joining, a loaded machine's slow beats) is not about stopping.
ENDING = "--- ending"

_CHILD = """
import atexit, json, logging, sys, time
atexit.register(lambda: print("BYE", time.monotonic(), flush=True))  # first registered: runs last
logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                    format="%(levelname)s %(name)s: %(message)s")
from servicegroup.api import ServiceGroup
kw, topic, then, startup = json.loads(sys.argv[1]), sys.argv[2], sys.argv[3], float(sys.argv[4])
hosts = ["leaver", "stopper"] if then == "stop-one" else ["leaver"]
groups = [ServiceGroup(**kw) for _ in hosts]
for sg, host in zip(groups, hosts):
    sg.join(host, topic)
    deadline = time.monotonic() + startup
    while not sg.is_up(topic=topic, host=host):
        if time.monotonic() > deadline:
            sys.exit(f"{host} not up after {startup:g}s")
        time.sleep(0.05)
print("READY", flush=True)
sys.stdin.readline()
print("--- ending", file=sys.stderr, flush=True)
if then == "stop-one":
    groups[1].stop()
print("END", time.monotonic(), flush=True)
"""


def _child(target: Target, topic: str, then: str = "stop-one") -> subprocess.Popen[str]:
    kw = target.kwargs(service_down_time=CHILD_DOWN_TIME)
    return subprocess.Popen(
        [sys.executable, "-c", _CHILD, json.dumps(kw), topic, then, str(STARTUP)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _finish(child: subprocess.Popen[str], when_ready: Callable[[], object] = lambda: None) -> str:
    """Let the child end once it is READY (after *when_ready*); its log from
    when it started ending. Fails if its exit handlers took :data:`HANG`."""
    assert child.stdout is not None and child.stdin is not None
    line = child.stdout.readline()
    assert line.startswith("READY"), f"child never got up: {line!r} {child.communicate()[1][-3000:]}"
    when_ready()
    child.stdin.write("\n")
    child.stdin.flush()
    try:
        out, err = child.communicate(timeout=HANG + STARTUP)
    except subprocess.TimeoutExpired:
        child.kill()
        out, err = child.communicate()
        pytest.fail(f"the child hung at exit:\n{err[-3000:]}")
    assert child.returncode == 0, err[-3000:]
    stamps = {
        word: float(value) for word, value in (ln.split() for ln in out.splitlines() if ln.startswith(("END", "BYE")))
    }
    took = stamps["BYE"] - stamps["END"]
    assert took < HANG, f"the exit handlers took {took:.1f}s:\n{err[-3000:]}"
    return err.partition(ENDING)[2]


def _loud(err: str, level: tuple[str, ...] = ("WARNING", "ERROR", "CRITICAL", "Traceback")) -> list[str]:
    return [ln for ln in err.splitlines() if ln.startswith(level)]


def test_exit_without_stop_is_quick_quiet_and_withdraws_the_member(target: Target) -> None:
    """Two ServiceGroups in the child: one stopped (``stop()`` must log
    nothing at warning level or above), one left running to the exit."""
    topic = f"exit-{uuid.uuid4().hex[:8]}"
    child = _child(target, topic)
    observer = ServiceGroup(**target.kwargs())
    try:
        err = _finish(child, lambda: observer.get_all(topic))
        assert _loud(err) == [], err[-3000:]
        assert wait_for(lambda: observer.get_all(topic) == [], bound=BOUND), (
            "the exit did not withdraw the member (its TTL is longer than this wait)"
        )
    finally:
        if child.poll() is None:
            child.kill()
        observer.stop()


# SQLite is a local file: there is no connection to freeze, so it is not a
# case of this test (rather than a skipped one).
@pytest.mark.parametrize(
    "target", selection.backend_params(*(b for b in selection.BACKENDS if b != "db-sqlite")), indirect=True
)
def test_exit_without_stop_does_not_hang_on_a_frozen_backend(target: Target) -> None:
    """The backend freezes (half-open) just before the interpreter ends."""
    via = target.records_url if target.driver == "db" else target.url
    assert via is not None and not via.startswith("sqlite")
    parts = urllib.parse.urlsplit(via)
    with FaultProxy(parts.hostname or "127.0.0.1", parts.port or 0) as proxy:
        if target.driver == "db":
            child_target = Target(target.name, "db", None, proxy.via(via))
        else:
            child_target = Target(target.name, target.driver, proxy.via(via), target.records_url)
        child = _child(child_target, f"hang-{uuid.uuid4().hex[:8]}", then="exit")
        try:
            err = _finish(child, proxy.hold)
        finally:
            if child.poll() is None:
                child.kill()
            proxy.heal()
    assert _loud(err, ("ERROR", "CRITICAL", "Traceback")) == [], err[-3000:]
