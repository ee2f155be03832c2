"""The member side: join topics, send heartbeats, heal lost membership.

One :class:`Member` per host a process serves (usually one). It owns one
tooz coordinator and one thread, and fixes what raw tooz 9.1 leaves broken:

- the first heartbeat goes out at once (nova waited a fixed 5 s, and new
  services showed as down meanwhile);
- the loop never dies: an exception is logged once (then quietly retried
  every ``report_interval``) and its recovery is logged too;
- after a TTL lapse (memcached, Redis, etcd), a server restart, or a
  ZooKeeper session expiry, tooz never re-joins and tells nobody. Each beat
  therefore checks that the member is still listed in each topic it joined
  and re-joins if not, reporting ``membership_lost`` then
  ``membership_restored`` through the ``on_event`` callback and the log;
- a forked child never reuses its parent's coordinator (its session, its
  sockets): the child starts empty and builds its own on first use.

:meth:`Member.confirmed` says when this member last knew itself listed in
a topic: the start of the last beat (or join) that succeeded and found it
listed. The backend cannot drop it earlier than ``service_down_time`` after
that moment, which is what the Partitioner's self-fencing counts from
(:mod:`servicegroup.fencing`).
"""

from __future__ import annotations

from collections.abc import Callable
import contextlib
import logging
import math
import threading
import time
from typing import Any
import uuid

from tooz import coordination

from servicegroup import backend
from servicegroup import forksafe
from servicegroup import caller
from servicegroup.selfcheck import is_listed
from servicegroup.watches import INCARNATION

LOG = logging.getLogger(__name__)

#: ``on_event(event, topic, host)`` with event ``membership_lost`` or
#: ``membership_restored``.
EventCallback = Callable[[str, str, str], None]
#: ``seen(topic, host, incarnation)``: True if a fresh view already shows it.
SeenCheck = Callable[[str, str, Any], bool]
#: ``on_beat(host, seconds, ok)`` after each heartbeat cycle of the thread.
BeatObserver = Callable[[str, float, bool], None]
#: ``count_beat(host, topics)`` after each successful heartbeat; must not block.
BeatCounter = Callable[[str, list[str]], None]

MEMBERSHIP_LOST = "membership_lost"
MEMBERSHIP_RESTORED = "membership_restored"


class Member:
    """Liveness of one host: its coordinator, its topics, its heartbeat thread."""

    def __init__(
        self,
        url: str,
        host: str,
        *,
        report_interval: float,
        factory: backend.CoordinatorFactory = backend.default_factory,
        on_event: EventCallback | None = None,
        seen: SeenCheck | None = None,
        count_beat: BeatCounter | None = None,
        background: bool = True,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.url = url
        self.host = host
        self.report_interval = report_interval
        self._factory = factory
        self._on_event = on_event
        self._seen = seen
        self._count_beat = count_beat
        self._background = background
        self._clock = clock
        self._topics: dict[str, dict[str, Any]] = {}
        self._lost: set[str] = set()
        #: topic -> monotonic start of the last beat that confirmed it listed.
        self._confirmed: dict[str, float] = {}
        #: Topics whose removal from the backend is not confirmed (a failed
        #: join or leave): each beat retries, so no entry outlives our intent.
        self._unwanted: set[str] = set()
        self._coordinator: coordination.CoordinationDriver | None = None
        #: The coordinator's ``session_lost_count`` when a loss was last reported.
        self._losses_reported = 0
        self._lock = threading.RLock()
        # Serialises join, leave and the heartbeat's check-and-heal, so a
        # heal can never re-join a topic that leave() just left, nor put back
        # capabilities that join() just replaced. Taken before ``_lock``,
        # never after it.
        self._ops = threading.RLock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._failing = False
        self._failures = backend.FailureClock(after=max(10 * report_interval, 5.0))
        self.beats = 0
        #: Runs the beat's backend calls, bounded, on one reused thread.
        self._caller = caller.Caller(f"servicegroup-beat-{host}")
        #: Told of each cycle of the heartbeat thread (the metrics).
        self.on_beat: BeatObserver | None = None
        forksafe.register(self, Member._after_fork)

    # -- public ----------------------------------------------------------

    @property
    def topics(self) -> list[str]:
        return sorted(self._topics)

    def coordinator(self) -> coordination.CoordinationDriver:
        """This process's coordinator, started (built anew after a fork)."""
        with self._lock:
            if self._coordinator is None:
                self._coordinator = backend.start(self._factory, self.url, self.host)
                self._losses_reported = 0
            return self._coordinator

    def join(self, topic: str, capabilities: dict[str, Any] | None = None) -> dict[str, Any]:
        """Join *topic* now (raising if the backend refuses), then keep it joined."""
        caps = dict(capabilities or {})
        caps[INCARNATION] = uuid.uuid4().hex
        with self._ops:
            started = self._clock()
            coord = self.coordinator()
            try:
                with backend.errors_translated(self.url):
                    try:
                        join_now(coord, topic.encode(), caps)
                    except coordination.MemberAlreadyExist:
                        # Our own earlier incarnation (e.g. a restart within the TTL):
                        # replace it, so the new capabilities are what others see.
                        coord.leave_group(topic.encode()).get(timeout=backend.CALL_TIMEOUT)
                        join_now(coord, topic.encode(), caps)
            except BaseException:
                # The join may have landed before the failure (a timed-out
                # beat, a result that came too late): take it back, or this
                # coordinator would keep a member nobody asked for alive.
                if topic not in self._topics:
                    self._withdraw(coord, topic)
                raise
            with self._lock:
                self._topics[topic] = caps
                self._lost.discard(topic)
                self._unwanted.discard(topic)
                self._confirmed[topic] = started
        self._ensure_thread()
        return caps

    def join_later(self, topic: str, capabilities: dict[str, Any] | None = None) -> None:
        """Want *topic* joined without raising: the heartbeat thread joins it
        on its next beats (reported as lost until it has).

        For a backend whose failure must not fail the caller: the previous
        driver during a driver switch (:mod:`servicegroup.migration`).
        """
        caps = dict(capabilities or {})
        caps[INCARNATION] = uuid.uuid4().hex
        with self._ops:
            with self._lock:
                self._topics[topic] = caps
                self._unwanted.discard(topic)
            self._mark_lost(topic, "it could not join yet")
        self._ensure_thread()

    def leave(self, topic: str) -> None:
        """Leave *topic*. If the backend cannot be told now, the error is
        raised and each later beat retries until the entry is gone."""
        with self._ops:
            with self._lock:
                self._topics.pop(topic, None)
                self._lost.discard(topic)
                self._confirmed.pop(topic, None)
                self._unwanted.add(topic)
            coord = self.coordinator()
            with backend.errors_translated(self.url):
                _leave(coord, topic)
            self._unwanted.discard(topic)

    def beat(self) -> None:
        """One heartbeat cycle: beat, then check (and heal) each topic."""
        with self._ops:
            started = self._clock()
            self._beat()
            with self._lock:
                for topic in self._topics:
                    if topic not in self._lost:
                        self._confirmed[topic] = started

    def confirmed(self, topic: str) -> float:
        """Monotonic time at which the last successful beat (or the join)
        that found this member listed in *topic* started; ``-inf`` when
        none did since it was last found missing (or never)."""
        with self._lock:
            return self._confirmed.get(topic, -math.inf)

    def _beat(self) -> None:
        coord = self.coordinator()
        with backend.errors_translated(self.url):
            self._caller.call(coord.heartbeat, backend.CALL_TIMEOUT, "heartbeat")
            losses = getattr(coord, "session_lost_count", 0)
            if losses != self._losses_reported:
                # Our SQL and Consul backends say so when their session
                # expired; Consul's even re-joins by itself, so the check
                # below might find us listed and the loss would go unreported.
                # Compared with the last count reported, not the count before
                # this call: a heartbeat that overran its bound finishes its
                # recovery after the beat that gave up on it.
                self._losses_reported = losses
                for topic in list(self._topics):
                    self._mark_lost(topic, "its backend session expired")
            for topic in list(self._unwanted):
                if topic not in self._topics:
                    self._withdraw(coord, topic)
            for topic, caps in list(self._topics.items()):
                self._check(coord, topic, caps)
        self.beats += 1
        if self._count_beat is not None and self._topics:
            self._count_beat(self.host, list(self._topics))  # memory only: see recordkeeper

    def stop(self) -> None:
        """Stop beating and leave every topic (others see us gone at once)."""
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=max(5.0, self.report_interval))
        with self._lock:
            coord, self._coordinator = self._coordinator, None
            if coord is not None:
                for topic in list(self._topics) + list(self._unwanted):
                    with contextlib.suppress(Exception):  # best effort: the TTL finishes the job
                        _leave(coord, topic)
                backend.stop_quietly(coord)
            self._topics.clear()
        self._caller.close()

    # -- internals -------------------------------------------------------

    def _check(self, coord: coordination.CoordinationDriver, topic: str, caps: dict[str, Any]) -> None:
        incarnation = caps[INCARNATION]
        if self._stop.is_set() or not self._still_joined(topic, caps):
            return  # stopping, or left / re-joined since the beat listed its topics
        if topic not in self._lost and self._seen is not None and self._seen(topic, self.host, incarnation):
            return  # a fresh view already lists us: no extra read
        group = topic.encode()
        member_id = self.host.encode()
        listed = self._caller.call(lambda: is_listed(coord, group, member_id), backend.CALL_TIMEOUT, "self-check")
        if listed and topic not in self._lost:
            return
        if not self._still_joined(topic, caps):
            return  # left (or re-joined) meanwhile: not ours to heal
        if not listed:
            self._mark_lost(topic, "it is no longer listed")
            new_caps = dict(caps, **{INCARNATION: uuid.uuid4().hex})
            try:
                join_now(coord, group, new_caps)
            except coordination.MemberAlreadyExist:
                pass  # someone re-listed us concurrently: listed again
            with self._lock:
                if self._topics.get(topic) is caps:
                    self._topics[topic] = new_caps
        self._lost.discard(topic)
        LOG.warning("membership_restored: %s is listed in %r again", self.host, topic)
        self._emit(MEMBERSHIP_RESTORED, topic)

    def _withdraw(self, coord: coordination.CoordinationDriver, topic: str) -> None:
        """Best-effort leave of a topic we do not want; retried each beat."""
        try:
            _leave(coord, topic)
            self._unwanted.discard(topic)
        except Exception as exc:
            self._unwanted.add(topic)
            LOG.warning("%s could not leave %r yet (retrying every beat): %s", self.host, topic, backend.describe(exc))

    def _still_joined(self, topic: str, caps: dict[str, Any]) -> bool:
        with self._lock:
            return self._topics.get(topic) is caps

    def _mark_lost(self, topic: str, why: str) -> None:
        self._confirmed.pop(topic, None)
        if topic in self._lost:
            return
        self._lost.add(topic)
        LOG.warning("membership_lost: %s in %r: %s; re-joining", self.host, topic, why)
        self._emit(MEMBERSHIP_LOST, topic)

    def _emit(self, event: str, topic: str) -> None:
        if self._on_event is None:
            return
        try:
            self._on_event(event, topic, self.host)
        except Exception:
            LOG.exception("membership event callback failed")

    def _ensure_thread(self) -> None:
        if not self._background:
            return  # the owner calls beat() itself (tests, one-shot tools)
        with self._lock:
            if self._thread is None or not self._thread.is_alive():
                self._stop.clear()
                self._thread = threading.Thread(
                    target=self._run, name=f"servicegroup-heartbeat-{self.host}", daemon=True
                )
                self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():  # first beat at once, no initial delay
            started = time.monotonic()
            try:
                self.beat()
                self._observe(time.monotonic() - started, True)
                self._failures.ok()
                if self._failing:
                    LOG.info("heartbeat of %s recovered", self.host)
                    self._failing = False
            except Exception as exc:  # never die silently: log once, retry
                if self._stop.is_set():
                    return  # stopping: connections are closing under the beat
                self._observe(time.monotonic() - started, False)
                if self._failures.failed():
                    self._rebuild(exc)
                if not self._failing:
                    LOG.warning(
                        "heartbeat of %s failed, retrying every %gs: %s",
                        self.host,
                        self.report_interval,
                        backend.describe(exc),
                    )
                    self._failing = True
                else:
                    LOG.debug("heartbeat of %s still failing: %s", self.host, backend.describe(exc))
            self._stop.wait(max(0.0, self.report_interval - (time.monotonic() - started)))

    def _observe(self, seconds: float, ok: bool) -> None:
        if self.on_beat is None:
            return
        try:
            self.on_beat(self.host, seconds, ok)
        except Exception:
            LOG.exception("heartbeat observer failed")

    def _rebuild(self, exc: BaseException) -> None:
        """Replace a coordinator that keeps failing; re-join on the new one."""
        LOG.warning(
            "heartbeat of %s failing for %gs (%s): replacing its backend client",
            self.host,
            self._failures.after,
            backend.describe(exc),
        )
        with self._lock:
            old, self._coordinator = self._coordinator, None
        backend.discard(old)
        for topic in list(self._topics):
            self._mark_lost(topic, "its backend client was replaced")

    def _after_fork(self) -> None:
        """In a forked child (see :mod:`servicegroup.forksafe`): forget the
        parent's coordinator, topics, thread and locks. The child's first
        join builds its own session; it never beats the parent's."""
        self._coordinator = None
        self._topics = {}
        self._lost = set()
        self._unwanted = set()
        self._thread = None
        self._stop = threading.Event()
        self._lock = threading.RLock()
        self._ops = threading.RLock()
        self._caller.after_fork()


def _leave(coord: coordination.CoordinationDriver, topic: str) -> None:
    try:
        coord.leave_group(topic.encode()).get(timeout=backend.CALL_TIMEOUT)
    except (coordination.MemberNotJoined, coordination.GroupNotCreated):
        pass  # not there: what we wanted


def join_now(coord: coordination.CoordinationDriver, group: bytes, caps: dict[str, Any]) -> None:
    """Create the group if needed, join it, and beat once, all before returning.

    Not ``join_group_create``: its retry sleeps a second whenever the group
    is new. And the beat matters: Redis (and others) list a member only once
    its heartbeat key exists, so without it a service that just joined reads
    as down until its thread's first beat lands.
    """
    try:
        coord.create_group(group).get(timeout=backend.CALL_TIMEOUT)
    except coordination.GroupAlreadyExist:
        pass
    try:
        coord.join_group(group, caps).get(timeout=backend.CALL_TIMEOUT)
    except coordination.GroupNotCreated:  # deleted between the two calls: once more
        # (not join_group_create: it waits without a bound and retries forever)
        try:
            coord.create_group(group).get(timeout=backend.CALL_TIMEOUT)
        except coordination.GroupAlreadyExist:
            pass
        coord.join_group(group, caps).get(timeout=backend.CALL_TIMEOUT)
    # Bounded: tooz's ZooKeeper heartbeat waits forever while kazoo reconnects.
    backend.bounded(coord.heartbeat, backend.CALL_TIMEOUT, "heartbeat")
