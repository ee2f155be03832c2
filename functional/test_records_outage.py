"""A records database outage never makes a live service read as down.

Records (forced_down, disabled) live in PostgreSQL or MariaDB behind a
:class:`~servicegroup.testing.proxy.FaultProxy`; liveness is ZooKeeper or
Redis, healthy throughout. Members are real ``servicegroup join`` processes
whose records go through the same proxy; the observer is a ServiceGroup in
this process, polled on a thread of its own for the whole test. The proxy
then freezes the records connection (half-open: no FIN, no RST) and later
makes the database "restart" as clients see one (every connection reset,
new ones refused), each for twice ``service_down_time``, long enough that a
liveness answer waiting on records would have turned every host down.

What must hold (docs/semantics.md, "records outages"): no read of the live
member says down; a SIGKILLed member still goes down within the bound;
flags keep their last value (a fenced host stays fenced) while
``flags_age`` grows; the flags reader logs one warning per outage at most,
not one per refresh.

With ``driver = db`` the records database *is* the liveness backend, so a
stall there is a liveness outage: the view keeps its last answer for up to
``service_down_time``, then says unknown (``is_up`` False with
``liveness_unknown`` saying why), never "this host is down" while it can
still vouch. The last test pins that.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
import logging
import threading
import time
import uuid

import pytest

from functional.members import DOWN_TIME, STALENESS, STARTUP, MemberProcess, Target, explain, wait_for
from servicegroup.api import ServiceGroup
from servicegroup.testing.proxy import FaultProxy
from servicegroup.testing.servers.postgres import PostgresServer
from servicegroup.testing.selection import backend_params

#: How long each outage lasts: twice ``service_down_time``, so a view that
#: waited on the records database would have aged past its grace.
OUTAGE = 2 * DOWN_TIME
PORTS = {"postgresql": 5432, "mysql": 3306}
FLAGS_WARNING = "service flags (forced_down, disabled) could not be read"


class Poller:
    """Reads ``check()`` every ``max_staleness`` on its own thread and keeps
    every answer that was not as expected (a caller polling is_up)."""

    def __init__(self, check: Callable[[], str | None]) -> None:
        self._check = check
        self.reads = 0
        self.wrong: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(STALENESS):
            self.reads += 1
            why = self._check()
            if why is not None:
                self.wrong.append(f"{time.strftime('%H:%M:%S')} {why}")

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


@pytest.fixture
def records_proxy() -> Iterator[Callable[[str], FaultProxy]]:
    """``records_proxy("postgresql" | "mysql")`` -> a proxy to that shared
    server, stopped after the test."""
    made: list[FaultProxy] = []

    def make(dialect: str) -> FaultProxy:
        made.append(FaultProxy("127.0.0.1", PORTS[dialect]).start())
        return made[-1]

    yield make
    for proxy in made:
        proxy.stop()


#: An outage: its name, what starts it, what ends it.
Outage = tuple[str, Callable[[], object], Callable[[], object]]


def _proxy_outages(proxy: FaultProxy) -> list[Outage]:
    def restart() -> None:
        proxy.reset()  # a restart as clients see it: connections die...
        proxy.refuse()  # ...and new ones are refused until it is back

    return [("hold", proxy.hold, proxy.heal), ("restart", restart, proxy.heal)]


@pytest.mark.parametrize("liveness,dialect", backend_params(("zk", "postgresql"), ("redis", "mysql")))
def test_records_outage_changes_nothing_for_liveness(
    records_proxy, liveness: str, dialect: str, sql_url, backend_server, caplog: pytest.LogCaptureFixture
) -> None:
    """Frozen (half-open), then restarting as the clients see it."""
    proxy = records_proxy(dialect)
    tgt = Target(liveness, liveness, backend_server(liveness).url, proxy.via(sql_url(dialect)))
    try:
        _liveness_survives(tgt, _proxy_outages(proxy), caplog)
    finally:
        proxy.heal()


@pytest.mark.backend("redis")
def test_a_real_records_database_crash_and_restart_changes_nothing_for_liveness(
    tmp_path, backend_server, caplog: pytest.LogCaptureFixture
) -> None:
    """A private PostgreSQL the test owns: SIGKILLed, started again (crash
    recovery, same port) after twice ``service_down_time``."""
    with PostgresServer() as server:
        tgt = Target("redis", "redis", backend_server("redis").url, server.url)
        _liveness_survives(tgt, [("crash", server.kill, server.start)], caplog)


def _liveness_survives(tgt: Target, outages: list[Outage], caplog: pytest.LogCaptureFixture) -> None:
    """Members live, dead and fenced; each outage in turn, each lasting
    :data:`OUTAGE` unless it ends by itself; the observer polled throughout."""
    topic = f"rec-{uuid.uuid4().hex[:8]}"
    caplog.set_level(logging.INFO, logger="servicegroup.flags")
    members = [MemberProcess(tgt, host, topic) for host in ("live", "dead", "fenced")]
    live, dead, fenced = members
    observer = ServiceGroup(**tgt.kwargs())
    poller = None
    try:
        assert wait_for(lambda: observer.get_all(topic) == ["dead", "fenced", "live"], bound=STARTUP), explain(members)
        observer.force_down("fenced", topic)
        assert not observer.is_up(topic=topic, host="fenced"), "a local force_down counts at once"

        def check() -> str | None:
            if not observer.is_up(topic=topic, host="live"):
                return f"live read as down (flags_age {observer.flags_age()})"
            if "live" not in observer.get_all(topic) or observer.is_up(topic=topic, host="fenced"):
                return f"get_all {observer.get_all(topic)}, fenced up {observer.is_up(topic=topic, host='fenced')}"
            return None

        poller = Poller(check)
        for n, (name, begin, end) in enumerate(outages):
            begin()
            began = time.monotonic()
            if n == 0:
                dead.kill()
                assert wait_for(lambda: not observer.is_up(topic=topic, host="dead")), (
                    f"a dead member must still go down during the records outage ({name})\n" + explain(members)
                )
            age = observer.flags_age()
            time.sleep(max(0.0, OUTAGE - (time.monotonic() - began)))
            assert (observer.flags_age() or 0) > (age or 0), f"flags_age grows while flags cannot be read ({name})"
            end()
            assert wait_for(lambda: (observer.flags_age() or OUTAGE) < OUTAGE), f"flags read again after {name}"
        poller.stop()
        assert poller.reads > 0 and poller.wrong == [], "\n".join(poller.wrong[:10]) + "\n" + explain(members)
        assert live.proc.poll() is None, explain(members)
        # An outage shorter than the reads' own bound may log nothing (the
        # read just waits); one that fails reads logs once, not per refresh.
        warnings = [r.getMessage() for r in caplog.records if FLAGS_WARNING in r.getMessage()]
        assert 1 <= len(warnings) <= len(outages), f"one warning per outage: {warnings}"
        for m in (live, fenced):
            said = [line for line in m.lines if FLAGS_WARNING in line]
            assert len(said) <= len(outages), f"{m.host} logged per refresh:\n" + explain([m])
    finally:
        if poller is not None:
            poller.stop()
        for m in members:
            m.kill()
        observer.stop()


@pytest.mark.parametrize("name,dialect", backend_params(("db-postgresql", "postgresql"), ("db-mysql", "mysql")))
def test_db_driver_stall_keeps_the_last_answer_then_says_unknown(
    records_proxy, name: str, dialect: str, sql_url
) -> None:
    """driver=db: the stalled database is the liveness backend. A live member
    is never read as down while the view can vouch; once the view is older
    than ``service_down_time`` it is unknown (False, with a reason), and
    after the stall everything reads up again by itself."""
    proxy = records_proxy(dialect)
    tgt = Target(name, "db", None, proxy.via(sql_url(dialect)))
    topic = f"dbst-{uuid.uuid4().hex[:8]}"
    member = MemberProcess(tgt, "live", topic)
    observer = ServiceGroup(**tgt.kwargs())
    poller = None
    try:
        assert wait_for(lambda: observer.is_up(topic=topic, host="live"), bound=STARTUP), explain([member])

        def check() -> str | None:
            # Checked in this order: once unknown, the view stays unknown
            # until the stall ends, so "False, yet vouching" is a false down.
            if not observer.is_up(topic=topic, host="live") and observer.liveness_unknown(topic) is None:
                return "live read as down while the view still vouched"
            return None

        poller = Poller(check)
        proxy.hold()
        assert wait_for(lambda: observer.liveness_unknown(topic) is not None), "a stall past the grace is unknown"
        assert not observer.is_up(topic=topic, host="live")
        poller.stop()
        proxy.heal()
        assert poller.reads > 0 and poller.wrong == [], "\n".join(poller.wrong[:10])
        assert wait_for(lambda: observer.is_up(topic=topic, host="live")), explain([member])
        assert observer.liveness_unknown(topic) is None
    finally:
        if poller is not None:
            poller.stop()
        proxy.heal()
        member.kill()
        observer.stop()
