"""A Jepsen-style history of a fault test, and the checker run on it.

A test records everything as it happens: each answer an observer gives
(``view``: the live hosts, or ``unknown``), and each step of the nemesis
(``cut`` / ``heal`` of one member, ``crash`` of one, ``fault`` /
``fault-end`` of the backend as a whole), each with a monotonic timestamp.
Nothing is judged while the faults run; :func:`check` reads the whole
history afterwards and lists every violation of the invariants of
docs/clusters.md:

1. a member cut off or crashed is read as down within ``bound`` seconds
   (its detection time is reported either way);
2. no member that was not cut off or crashed is ever read as down (a
   "false down"), whatever happens to the backend;
4. after the faults end, the last view holds every member not crashed.

(Invariant 3, one owner per key, is the Partitioner's: its unit tests
drive it with a fake clock.) A host is exempt from invariant 2 from its cut
until ``bound`` after its heal: re-joining takes a heartbeat or two.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
import contextlib
import dataclasses
import json
import threading
import time

#: The value of a ``view`` event when the observer could not answer.
UNKNOWN = "unknown"


@dataclasses.dataclass(frozen=True)
class Event:
    at: float
    kind: str
    subject: str = ""
    value: frozenset[str] | str | None = None


class History:
    """Events in the order they happened (thread-safe)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self._events: list[Event] = []
        self._lock = threading.Lock()

    def record(self, kind: str, subject: str = "", value: frozenset[str] | str | None = None) -> Event:
        event = Event(self.clock(), kind, subject, value)
        with self._lock:
            self._events.append(event)
        return event

    def events(self, kind: str | None = None) -> list[Event]:
        with self._lock:
            return [e for e in self._events if kind is None or e.kind == kind]

    def dump(self, path: str) -> None:
        """One JSON object a line, for reading a failed run afterwards."""
        with open(path, "w") as f:
            for e in self.events():
                value = sorted(e.value) if isinstance(e.value, frozenset) else e.value
                f.write(json.dumps({"at": round(e.at, 3), "kind": e.kind, "subject": e.subject, "value": value}) + "\n")


@contextlib.contextmanager
def observing(history: History, read: Callable[[], Iterable[str]], every: float) -> Iterator[None]:
    """Record ``read()`` (the live hosts) as a ``view`` every *every* seconds
    while the block runs, and once more as it ends; an exception is recorded
    as :data:`UNKNOWN`."""
    stop = threading.Event()

    def observe() -> None:
        try:
            history.record("view", "observer", frozenset(read()))
        except Exception as exc:  # any failure is an "unknown" answer
            history.record("view", "observer", f"{UNKNOWN}: {type(exc).__name__}")

    def loop() -> None:
        while not stop.is_set():
            observe()
            stop.wait(every)

    thread = threading.Thread(target=loop, name="history-observer", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()
        observe()  # the view as the block ends: what invariant 4 is checked on


@dataclasses.dataclass
class Report:
    """What :func:`check` found: violations (empty: all invariants hold)."""

    violations: list[str]
    #: host -> seconds from its cut or crash to the first view without it.
    detections: dict[str, float]
    false_downs: int
    faults: int
    views: int
    #: Answers that were "unknown" (the observer could not vouch for anyone).
    unknowns: int = 0

    def summary(self) -> str:
        worst = max(self.detections.values(), default=0.0)
        return (
            f"{self.faults} faults, {self.views} views, {self.false_downs} false downs, "
            f"detection max {worst:.1f}s, {self.unknowns} unknown answers, {len(self.violations)} violations"
        )


def check(history: History, hosts: Iterable[str], bound: float) -> Report:
    """Check invariants 1, 2 and 4 on *history* for members *hosts*.

    Only views after the first that holds every host count (before it,
    members are still joining).
    """
    hosts = set(hosts)
    events = history.events()
    every = [(e.at, e.value) for e in events if e.kind == "view" and isinstance(e.value, frozenset)]
    start = next((at for at, live in every if hosts <= live), None)
    if start is None:
        return Report(["never saw every member up at once"], {}, 0, 0, len(every))
    views = [(at, live) for at, live in every if at >= start]
    exempt: dict[str, list[tuple[float, float]]] = {h: [] for h in hosts}
    crashed: set[str] = set()
    violations: list[str] = []
    detections: dict[str, float] = {}
    open_cuts: dict[str, float] = {}
    for e in events:
        if e.kind == "cut":
            open_cuts[e.subject] = e.at
        elif e.kind == "heal" and e.subject in open_cuts:
            exempt[e.subject].append((open_cuts.pop(e.subject), e.at + bound))
        elif e.kind == "crash":
            crashed.add(e.subject)
            open_cuts[e.subject] = e.at
    for host, began in open_cuts.items():
        exempt[host].append((began, float("inf")))
    for host, windows in exempt.items():
        for began, _ in windows:
            seen = next((at for at, live in views if at >= began and host not in live), None)
            if seen is None or seen - began > bound:
                violations.append(f"invariant 1: {host} cut at {began:.1f} not read as down within {bound:g}s")
            if seen is not None:
                detections[host] = max(detections.get(host, 0.0), seen - began)
    false_downs = 0
    for at, live in views:
        for host in hosts - live:
            if not any(a <= at <= b for a, b in exempt[host]):
                false_downs += 1
                violations.append(f"invariant 2: {host} read as down at {at:.1f} without a cut")
    if views and not (hosts - crashed) <= views[-1][1]:
        missing = sorted(hosts - crashed - views[-1][1])
        violations.append(f"invariant 4: after the faults, {missing} not back")
    faults = sum(1 for e in events if e.kind in ("cut", "crash", "fault"))
    unknowns = sum(1 for e in events if e.kind == "view" and isinstance(e.value, str) and e.at >= start)
    return Report(violations, detections, false_downs, faults, len(views), unknowns)
