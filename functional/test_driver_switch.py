"""Switching ``driver`` on a live fleet, for real, by the runbook of
docs/operations.md ("Switching the driver without an outage").

:data:`MEMBERS` member processes (``servicegroup join --config-file``) and
one observer (a ServiceGroup in this process, built from the same config
files an operator would deploy) start on ``db`` (a SQLite file: records and
liveness). Then, in rolling batches of :data:`BATCH` restarts:

=====  ======================================  ==============================
phase  members restart onto                    observer (restarted after)
=====  ======================================  ==============================
1      ``zk`` with ``previous_driver = db``    on ``db`` during the roll,
                                               then the same bridge config;
                                               ``driver-status`` exits 1
                                               mid-roll, 0 after it
2      ``zk`` only (bridge dropped)            on the bridge, then ``zk``
3      ``db`` with ``previous_driver = zk``    on ``zk``, then the bridge
4      ``db`` only                             on the bridge, then ``db``
=====  ======================================  ==============================

Between phases 1 and 2 (observer on the bridge, reading both backends) one
member is SIGKILLed: it must read as down within :data:`BOUND` and stays
dead.

A recorder thread asks the observer for the live hosts every
``max_staleness / 2`` and records, with each answer, the oldest instant the
reads behind it started (``liveness_age``). A host is *live* from the
moment the test saw its process say "joined" (after its join to every
backend it is configured with) until the moment the test sends it SIGTERM.
A false down is an answer without a host whose reads all started after it
was live and that was given before it stopped: there must be none, and no
answer may be "unknown". Deadlines derive from the intervals below.
Two shorter tests pin that a failing old backend never hurts the new one:
unreachable from the start, and frozen mid-switch (SIGSTOPped ZooKeeper).

Duration (2 cores shared with other test runs): 133 s + 43 s + 26 s at load
44; expect about half on a quiet machine. 50 member process starts dominate.
"""

from __future__ import annotations

import dataclasses
import socket
import subprocess
import sys
import threading
import time
import uuid


from functional.members import STARTUP, MemberProcess, Target, explain, wait_for
from servicegroup.api import ServiceGroup
from servicegroup.conf import Settings

MEMBERS = 10
BATCH = 5
REPORT_INTERVAL = 1.0
DOWN_TIME = 6.0
STALENESS = 0.5
#: A SIGKILLed member is down once both backends dropped it: the TTL
#: (``service_down_time``, ZooKeeper's session timeout too) after its last
#: beat, one report interval before the kill at most, plus the view's age.
BOUND = DOWN_TIME + REPORT_INTERVAL + STALENESS
#: For what must happen eventually (a process starting under load).
SETTLE = 10 * BOUND
VICTIM = "host-3"


def _config(path, records_url: str, driver: str, url: str | None = None, previous=None) -> str:
    """An operator's config file: ``[servicegroup]`` with the timings and
    (``previous = (driver, url)``) the bridge, ``[database] connection``."""
    lines = ["[servicegroup]", f"driver = {driver}"]
    if url:
        lines.append(f"url = {url}")
    if previous is not None:
        lines.append(f"previous_driver = {previous[0]}")
        if previous[1]:
            lines.append(f"previous_url = {previous[1]}")
    lines += [
        f"report_interval = {REPORT_INTERVAL}",
        f"service_down_time = {DOWN_TIME}",
        f"max_staleness = {STALENESS}",
        "[database]",
        f"connection = {records_url}",
    ]
    path.write_text("\n".join(lines) + "\n")
    return str(path)


@dataclasses.dataclass(frozen=True)
class Answer:
    started: float  #: monotonic: the oldest read behind the answer started
    at: float  #: monotonic: the answer was back
    live: frozenset[str]  #: what get_all answered
    unknown: str | None  #: liveness_unknown: a backend the observer could not read


class Fleet:
    """The member processes, the observer, and the recorded history."""

    def __init__(self, topic: str, hosts: list[str]) -> None:
        self.topic = topic
        self.hosts = hosts
        self.members: dict[str, MemberProcess] = {}
        self.retired: list[MemberProcess] = []
        #: host -> [ready, stopped) intervals in which it was live.
        self.live: dict[str, list[list[float]]] = {h: [] for h in hosts}
        self.answers: list[Answer] = []
        self.phases: list[tuple[float, str]] = []
        self._observer: ServiceGroup | None = None
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._record, name="switch-recorder", daemon=True)

    # -- members -------------------------------------------------------------

    def start(self, hosts: list[str], config: str) -> None:
        """Start *hosts* with *config*; return once each said it joined."""
        started = {h: MemberProcess(Target("switch", "", None, ""), h, self.topic, config_file=config) for h in hosts}
        try:
            for host, member in list(started.items()):
                assert wait_for(lambda m=member: m.saw("joined "), bound=STARTUP), explain([member])
                self.live[host].append([time.monotonic(), float("inf")])
                self.members[host] = started.pop(host)
        finally:
            for member in started.values():  # never leave a process behind (own session)
                member.kill()

    def stop(self, hosts: list[str]) -> None:
        """SIGTERM *hosts* together (a batch restarts at once), then reap them."""
        for host in hosts:
            self.live[host][-1][1] = time.monotonic()  # not live from here on
            self.members[host].proc.terminate()
        for host in hosts:
            self.members[host].terminate()  # waits (bounded), SIGKILL past it
            self.retired.append(self.members.pop(host))

    def kill(self, host: str) -> float:
        at = time.monotonic()
        self.live[host][-1][1] = at
        self.members[host].kill()
        self.retired.append(self.members.pop(host))
        return at

    def roll(self, config: str) -> None:
        """Restart every running member onto *config*, :data:`BATCH` at a time."""
        hosts = sorted(self.members)
        for i in range(0, len(hosts), BATCH):
            batch = hosts[i : i + BATCH]
            self.stop(batch)
            self.start(batch, config)

    # -- the observer ----------------------------------------------------------

    def observe_with(self, config: str, phase: str) -> None:
        """Restart the observer with *config* (as an operator would)."""
        new = ServiceGroup.from_settings(Settings.from_file(config))
        new.get_all(self.topic)  # its first reads, before it answers the recorder
        with self._lock:
            old, self._observer = self._observer, new
            self.phases.append((time.monotonic(), phase))
        if old is None:
            self._thread.start()
        else:
            old.stop()

    def _record(self) -> None:
        while not self._stop.is_set():
            with self._lock:
                observer = self._observer
                assert observer is not None
                begun = time.monotonic()
                age = observer.liveness_age(self.topic)
                live = observer.get_all(self.topic)
                unknown = observer.liveness_unknown(self.topic)
                at = time.monotonic()
            started = begun - age if age is not None else begun  # None: get_all read it first
            self.answers.append(Answer(started, at, frozenset(live), unknown))
            self._stop.wait(STALENESS / 2)

    def sees(self, predicate) -> bool:
        with self._lock:
            assert self._observer is not None
            return predicate(set(self._observer.get_all(self.topic)))

    def unknown(self) -> str | None:
        with self._lock:
            assert self._observer is not None
            return self._observer.liveness_unknown(self.topic)

    def close(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()
        self.stop(sorted(self.members))
        if self._observer is not None:
            self._observer.stop()

    # -- judging ---------------------------------------------------------------

    def false_downs(self) -> list[str]:
        found = []
        for a in self.answers:
            for host in self.hosts:
                if host in a.live:
                    continue  # an up answer stands even with a backend unreadable
                if any(ready <= a.started and a.at <= stopped for ready, stopped in self.live[host]):
                    what = f"down ({a.unknown})" if a.unknown else "down"
                    found.append(f"{host} read {what} at {a.at:.2f} (reads from {a.started:.2f}), {self.phase(a.at)}")
        return found

    def phase(self, at: float) -> str:
        return next((p for t, p in reversed(self.phases) if t <= at), "before the observer")

    def first_down(self, host: str, since: float) -> float | None:
        """When the observer first answered without *host*, from reads that
        all started after *since* (None: never)."""
        return next((a.at for a in self.answers if a.started >= since and host not in a.live), None)


def _driver_status(config: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "servicegroup", "driver-status", "--config-file", config, "-f", "value"],
        capture_output=True,
        text=True,
        timeout=SETTLE,
    )


def test_a_rolling_driver_switch_there_and_back_never_reads_a_live_service_down(tmp_path, zookeeper_server):
    records = f"sqlite:///{tmp_path / 'records.sqlite'}"
    zk = zookeeper_server.url
    on_db = _config(tmp_path / "db.conf", records, "db")
    to_zk = _config(tmp_path / "zk-bridge.conf", records, "zk", zk, previous=("db", None))
    on_zk = _config(tmp_path / "zk.conf", records, "zk", zk)
    to_db = _config(tmp_path / "db-bridge.conf", records, "db", previous=("zk", zk))
    topic = f"switch-{uuid.uuid4().hex[:8]}"
    hosts = [f"host-{i}" for i in range(MEMBERS)]
    fleet = Fleet(topic, hosts)
    try:
        fleet.start(hosts, on_db)
        fleet.observe_with(on_db, "0: all on db")
        assert wait_for(lambda: fleet.sees(lambda live: live == set(hosts)), bound=SETTLE)

        # Phase 1: members onto the zk bridge; the observer stays on db meanwhile.
        first = sorted(fleet.members)[:BATCH]
        fleet.stop(first)
        fleet.start(first, to_zk)
        midway = _driver_status(to_zk)
        assert midway.returncode == 1, midway.stdout + midway.stderr
        assert "host-9" in midway.stdout  # still only in db: missing from zk
        fleet.stop(sorted(fleet.members)[BATCH:])
        fleet.start(hosts[BATCH:], to_zk)
        fleet.observe_with(to_zk, "1: observer on the zk bridge")
        done = _driver_status(to_zk)
        assert done.returncode == 0, done.stdout + done.stderr
        assert done.stdout.split() == [topic, str(MEMBERS), str(MEMBERS), str(MEMBERS)]

        # A member dies while both backends list it.
        killed_at = fleet.kill(VICTIM)
        assert wait_for(lambda: fleet.first_down(VICTIM, killed_at) is not None, bound=SETTLE), explain(
            fleet.retired[-1:]
        )
        detected = fleet.first_down(VICTIM, killed_at) - killed_at
        print(f"\nSIGKILLed {VICTIM} read as down after {detected:.2f}s (bound {BOUND:g}s)")
        assert detected <= BOUND
        fleet.hosts = [h for h in hosts if h != VICTIM]  # stays dead: judged no more

        # Phase 2: members drop the bridge; the observer is still on it.
        fleet.roll(on_zk)
        fleet.observe_with(on_zk, "2: observer on zk")
        # Phase 3 (back): members onto the db bridge; the observer still on zk.
        fleet.roll(to_db)
        fleet.observe_with(to_db, "3: observer on the db bridge")
        back = _driver_status(to_db)
        assert back.returncode == 0, back.stdout + back.stderr
        # Phase 4: members drop the bridge; the observer is still on it.
        fleet.roll(on_db)
        fleet.observe_with(on_db, "4: observer on db")
        live = set(fleet.hosts)
        assert wait_for(lambda: fleet.sees(lambda seen: seen == live), bound=SETTLE)
    finally:
        fleet.close()
    false_downs = fleet.false_downs()
    print(f"{len(fleet.answers)} answers recorded, {len(false_downs)} false downs")
    assert not false_downs, "\n".join(false_downs[:20]) + "\n" + explain(fleet.retired[-MEMBERS:])
    assert len(fleet.answers) > 0


def test_an_unreachable_previous_backend_never_hurts_the_new_one(tmp_path, zookeeper_server):
    """A member bridging to an old backend nobody listens on any more joins,
    and stays up for an observer of the new backend past the TTL."""
    records = f"sqlite:///{tmp_path / 'records.sqlite'}"
    with socket.socket() as s:  # a port that was free a moment ago: nobody listens
        s.bind(("127.0.0.1", 0))
        dead = f"redis://127.0.0.1:{s.getsockname()[1]}"
    bridge = _config(tmp_path / "bridge.conf", records, "zk", zookeeper_server.url, previous=("redis", dead))
    topic = f"dead-old-{uuid.uuid4().hex[:8]}"
    fleet = Fleet(topic, ["host-0"])
    try:
        fleet.start(["host-0"], bridge)
        fleet.observe_with(_config(tmp_path / "zk.conf", records, "zk", zookeeper_server.url), "observer on zk")
        member = fleet.members["host-0"]
        wait_for(lambda: False, bound=DOWN_TIME + 2 * REPORT_INTERVAL)  # outlives the TTL
        assert member.proc.poll() is None, explain([member])
        assert member.saw("could not join"), explain([member])  # the old backend's refusal, logged
    finally:
        fleet.close()
    assert not fleet.false_downs(), "\n".join(fleet.false_downs()[:20])
    assert any(a.live and "host-0" in a.live for a in fleet.answers)


def test_the_old_backend_failing_during_the_switch_reads_no_live_service_down(tmp_path, zookeeper_server):
    """Members and observer on the way back to db (zk is the previous
    backend); ZooKeeper freezes (SIGSTOP) past the TTL: the observer names
    it as unreadable, and never reads a live member down (db lists them)."""
    records = f"sqlite:///{tmp_path / 'records.sqlite'}"
    bridge = _config(tmp_path / "bridge.conf", records, "db", previous=("zk", zookeeper_server.url))
    topic = f"old-fails-{uuid.uuid4().hex[:8]}"
    hosts = [f"host-{i}" for i in range(3)]
    fleet = Fleet(topic, hosts)
    try:
        fleet.start(hosts, bridge)
        fleet.observe_with(bridge, "observer on the db bridge")
        assert wait_for(lambda: fleet.sees(lambda live: live == set(hosts)), bound=SETTLE)
        with zookeeper_server.paused_for():
            assert wait_for(lambda: fleet.unknown() is not None, bound=SETTLE)  # past the grace
            assert "zookeeper" in fleet.unknown()
            # The freeze has outlived the db TTL by now: members beat to db meanwhile.
            wait_for(lambda: False, bound=2 * REPORT_INTERVAL)
        assert wait_for(lambda: fleet.unknown() is None, bound=SETTLE)
    finally:
        fleet.close()
    assert not fleet.false_downs(), "\n".join(fleet.false_downs()[:20]) + "\n" + explain(fleet.retired)
    assert any(a.unknown for a in fleet.answers)  # the freeze was seen, and answered through
