"""The membership view: who is in each group, cached and kept fresh.

A scheduler calls ``is_up`` for every host on every request, so the answer
must not cost a backend round trip. This view keeps one snapshot per topic
(the live members and their capabilities), refreshed by one background
thread every ``max_staleness`` seconds; readers only look at memory.

Staleness policy (the one place it is decided):

- a snapshot at most ``max_staleness`` old is the normal case;
- if the backend cannot be read, the last snapshot keeps answering until it
  is ``grace`` old (``service_down_time``): an overloaded backend must not
  flip every live service to down, which is what made nova's DB driver
  report live nodes dead;
- past ``grace`` the view says "unknown" (``None``) and ``is_up`` answers
  False: we can no longer vouch for anyone.

Each refresh diffs the new snapshot against the old one and hands the
differences to the watches (:mod:`servicegroup.watches`). Event-driven
backends call :meth:`MembershipView.poke` with the topic that changed, and
only that topic is read again at once; polling every topic each
``max_staleness`` stays on as the safety net.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
import dataclasses
import logging
import threading
import time
from typing import Any

from tooz import coordination

from servicegroup import forksafe
from servicegroup import urls
from servicegroup.watches import (
    INCARNATION,
    Capabilities,
    ChangeCallback,
    Dispatcher,
    Watch,
    WatchCallback,
    queue_change,
    queue_events,
)

LOG = logging.getLogger(__name__)


class Members(dict[str, Capabilities]):
    """What a fetch returns: host -> capabilities, plus, where the backend
    records them, each host's last heartbeat (``beats``, epoch seconds)."""

    def __init__(
        self, members: Mapping[str, Capabilities] | None = None, beats: Mapping[str, float] | None = None
    ) -> None:
        super().__init__(members or {})
        self.beats: dict[str, float] = dict(beats or {})


Fetch = Callable[[str], Mapping[str, Capabilities]]


@dataclasses.dataclass(frozen=True)
class Snapshot:
    """Members of one topic as read at one instant."""

    members: Mapping[str, Capabilities]
    fetched_at: float  #: monotonic clock
    fetched_wall: float  #: wall clock, for "last seen" times shown to people


class MembershipView:
    """Cached, background-refreshed members of every topic anyone asked about."""

    def __init__(
        self,
        fetch: Fetch,
        *,
        max_staleness: float,
        grace: float,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
        start_thread: bool = True,
        on_forget: Callable[[str], None] | None = None,
        forget_after: float | None = None,
    ) -> None:
        self._fetch = fetch
        self.max_staleness = max_staleness
        self.grace = grace
        self._clock = clock
        self._wall = wall_clock
        self._snapshots: dict[str, Snapshot] = {}
        self._last_attempt: dict[str, float] = {}
        self._topics: set[str] = set()
        self._watches: dict[str, list[Watch]] = {}
        #: topic -> host -> (incarnation hidden, when): see hide().
        self._hidden: dict[str, dict[str, tuple[Any, float]]] = {}
        self._lock = threading.RLock()
        self._wake = threading.Event()
        self._stopped = threading.Event()
        self._thread: threading.Thread | None = None
        self._start_thread = start_thread
        #: Topics whose last read failed -> why (one line, redacted).
        self._failing: dict[str, str] = {}
        self._on_forget = on_forget
        #: A topic nobody read or watched for this long stops being polled
        #: (a dead matchmaker direct name must not cost a read per interval
        #: forever); its next read is a first read again.
        self.forget_after = forget_after if forget_after is not None else max(300.0, 10 * grace)
        self._last_read: dict[str, float] = {}
        self._last_seen: dict[tuple[str, str], float] = {}
        # Reads of one topic may overlap (refresher thread, readers, watch()):
        # each read takes a number when it starts, and a read only commits if
        # no read that started later has committed already.
        self._read_seq = 0
        self._committed: dict[str, int] = {}
        #: Topics poked since the refresher last looked (None: every topic).
        self._poked: set[str | None] = set()
        self.dispatcher = Dispatcher()
        forksafe.register(self, MembershipView._after_fork)

    def _after_fork(self) -> None:
        """In a forked child: fresh locks, events and dispatcher. A lock a
        parent thread held at fork time would be held forever here, and the
        parent's threads (refresher, dispatcher) do not exist in the child;
        the refresher restarts on the next read (see :meth:`members`)."""
        self._lock = threading.RLock()
        self._wake = threading.Event()
        self.dispatcher = Dispatcher()

    # -- reading ---------------------------------------------------------

    def members(self, topic: str) -> Mapping[str, Capabilities] | None:
        """Live members of *topic*, or ``None`` when the view cannot vouch.

        With a refresher thread, never does I/O once the topic has been read
        once: an answer past ``grace`` is ``None``, and the refresher keeps
        trying. The first read of a topic is done by the caller
        (rate-limited to one attempt per ``max_staleness`` while it fails).
        """
        snap = self._snapshots.get(topic)
        self._last_read[topic] = self._clock()
        thread = self._thread
        if self._start_thread and thread is not None and not thread.is_alive() and not self._stopped.is_set():
            # Threads do not survive fork(): restart the refresher in the child.
            self._interest(topic)
        if snap is None:
            # The first read of a topic is the caller's (rate-limited while it
            # fails): there is nothing to answer from yet.
            self._interest(topic)
            if self._may_attempt(topic):
                self.refresh(topic)
            snap = self._snapshots.get(topic)
        elif not self._start_thread and self._clock() - snap.fetched_at > self.max_staleness:
            # No refresher (one-shot CLI commands, tests): reads refresh.
            if self._may_attempt(topic):
                self.refresh(topic)
            snap = self._snapshots.get(topic)
        # With a refresher, a known topic never costs the caller I/O: an old
        # snapshot means the backend is failing, and the refresher is on it.
        if snap is None or self._clock() - snap.fetched_at > self.grace:
            return None
        if self._hidden.get(topic):
            return {h: c for h, c in snap.members.items() if not self._is_hidden(topic, h, c)}
        return snap.members

    def _is_hidden(self, topic: str, host: str, caps: Capabilities) -> bool:
        entry = self._hidden.get(topic, {}).get(host)
        return entry is not None and entry[0] == caps.get(INCARNATION) and self._clock() - entry[1] < self.grace

    def snapshot(self, topic: str) -> Snapshot | None:
        """The raw last snapshot of *topic* (no staleness policy applied)."""
        return self._snapshots.get(topic)

    def last_seen(self, topic: str, host: str) -> float | None:
        """When *host* last proved alive in *topic* (epoch seconds), if ever:
        its last heartbeat where the backend reports one, else the last
        time a read listed it."""
        return self._last_seen.get((topic, host))

    def last_error(self, topic: str) -> str | None:
        """Why the last read of *topic* failed (one line, redacted), if it did."""
        return self._failing.get(topic)

    def lists(self, topic: str, host: str, incarnation: Any, *, within: float) -> bool:
        """Whether a snapshot at most *within* seconds old lists *host* with
        this *incarnation* (a heartbeat's self-check, without a read)."""
        snap = self._snapshots.get(topic)
        if snap is None or self._clock() - snap.fetched_at > within:
            return False
        caps = snap.members.get(host)
        return caps is not None and caps.get(INCARNATION) == incarnation

    def age(self, topic: str) -> float | None:
        snap = self._snapshots.get(topic)
        return None if snap is None else self._clock() - snap.fetched_at

    def ages(self) -> dict[str, float | None]:
        """:meth:`age` of every topic the view reads (the metrics' staleness)."""
        return {topic: self.age(topic) for topic in sorted(self._topics)}

    def hide(self, topic: str, host: str) -> None:
        """Drop *host* from answers until it shows up with a new incarnation,
        or for ``grace`` (``service_down_time``) at most.

        The matchmaker's ``expire`` (nack): the sender saw the host fail, so
        it stops being an answer at once; its next (re-)join brings it back.
        The bound matters where no re-join comes: Consul's catalog mode (no
        incarnations) or a nack that could not reach the backend. By then
        the backend has dropped a host that really died; one it still lists
        is trusted again, never hidden forever (the old Redis matchmaker's
        "expired hosts never came back").
        """
        if topic not in self._snapshots:
            self.members(topic)  # a nack before any lookup: learn what to hide
        snap = self._snapshots.get(topic)
        caps = snap.members.get(host) if snap else None
        incarnation = caps.get(INCARNATION) if caps else None
        with self._lock:
            self._hidden.setdefault(topic, {})[host] = (incarnation, self._clock())

    def unhide(self, topic: str, host: str) -> bool:
        """Lift a :meth:`hide` if *host* is still listed with the hidden
        incarnation (the backend kept vouching for it); True if it is an
        answer again. A host the backend no longer lists stays hidden."""
        with self._lock:
            hidden = self._hidden.get(topic, {})
            if host not in hidden:
                return False
            snap = self._snapshots.get(topic)
            caps = snap.members.get(host) if snap else None
            if caps is None or caps.get(INCARNATION) != hidden[host][0]:
                return False
            del hidden[host]
            return True

    # -- refreshing ------------------------------------------------------

    def refresh(self, topic: str) -> bool:
        """Read *topic* from the backend now; diff and queue watch events."""
        started = self._last_attempt[topic] = self._clock()
        with self._lock:
            self._read_seq += 1
            seq = self._read_seq
        try:
            fetched = self._fetch(topic)
            beats = getattr(fetched, "beats", None) or {}
            members = dict(fetched)
        except coordination.GroupNotCreated:
            members = {}
        except Exception as exc:  # backend down: keep the last snapshot (grace)
            if self._stopped.is_set():
                return False  # stopping: the reader refuses, connections close
            why = urls.redact(str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
            if topic not in self._failing:
                LOG.warning("membership of %r could not be read: %s", topic, why)
            self._failing[topic] = why
            return False
        recovered = self._failing.pop(topic, None) is not None
        if recovered:
            LOG.info("membership of %r readable again", topic)
        # Aged from when the read *started*: what it saw was true then, and a
        # slow read must not make an old answer look fresh.
        now, wall = started, self._wall()
        with self._lock:
            if self._committed.get(topic, 0) > seq:
                return True  # a read that started after ours already committed
            self._committed[topic] = seq
            old = self._snapshots.get(topic)
            self._snapshots[topic] = Snapshot(members, now, wall)
            for host in members:
                # The backend's own heartbeat time where it keeps one (SQL);
                # otherwise the last time the backend listed the host.
                self._last_seen[(topic, host)] = beats.get(host, wall)
            self._unhide_reincarnated(topic, members)
            watches = list(self._watches.get(topic, ()))
            # Queued under the lock: two overlapping reads commit in order,
            # so their events must reach the dispatcher in that order too.
            if old is not None:
                queue_events(self.dispatcher, topic, old.members, members, watches)
            if old is None or recovered or old.members != members:
                queue_change(self.dispatcher, topic, watches)
        return True

    def own_write(self, topic: str, host: str, caps: Capabilities | None) -> None:
        """Read your own writes: *host* just joined *topic* with *caps*
        (left it: None) through this process, so the view says so before
        ``join``/``leave`` returns rather than at the next read. A read that
        started before the write cannot commit over it afterwards."""
        with self._lock:
            self._read_seq += 1
            self._committed[topic] = self._read_seq
            old = self._snapshots.get(topic)
            if old is None:
                return  # never read: the first read comes after the write
            members = {h: c for h, c in old.members.items() if h != host}
            if caps is not None:
                members[host] = caps
                self._last_seen[(topic, host)] = self._wall()
                self._unhide_reincarnated(topic, members)
            self._snapshots[topic] = dataclasses.replace(old, members=members)
            watches = list(self._watches.get(topic, ()))
            queue_events(self.dispatcher, topic, old.members, members, watches)
            if old.members != members:
                queue_change(self.dispatcher, topic, watches)

    def refresh_all(self) -> None:
        self._forget_idle()
        self._refresh_each(sorted(self._topics))

    def refresh_poked(self) -> None:
        """Read the topics :meth:`poke` named since the last call (every
        topic if a poke named none): what the refresher does when woken."""
        with self._lock:
            poked, self._poked = self._poked, set()
        if None in poked:
            self.refresh_all()
        else:
            self._refresh_each(sorted(t for t in poked if t is not None and t in self._topics))

    def _refresh_each(self, topics: list[str]) -> None:
        for topic in topics:
            if self._stopped.is_set():
                return
            self.refresh(topic)

    def _forget_idle(self) -> None:
        now = self._clock()
        with self._lock:
            idle = [
                t
                for t in self._topics
                if not self._watches.get(t) and now - self._last_read.get(t, now) > self.forget_after
            ]
            for topic in idle:
                self._topics.discard(topic)
                for table in (
                    self._snapshots,
                    self._last_read,
                    self._committed,
                    self._hidden,
                    self._last_attempt,
                    self._failing,
                ):
                    table.pop(topic, None)
                for key in [k for k in self._last_seen if k[0] == topic]:
                    del self._last_seen[key]
        for topic in idle:
            LOG.debug("membership of %r no longer read: not polled any more", topic)
            if self._on_forget is not None:
                self._on_forget(topic)

    def poke(self, topic: str | None = None) -> None:
        """Ask the refresher to read *topic* now (every topic if None):
        event-driven backends call this when a topic changed."""
        with self._lock:
            self._poked.add(topic)
        self._wake.set()

    def _may_attempt(self, topic: str) -> bool:
        # Only failures are rate-limited: with the backend down, a reader
        # must not pay a connect timeout on every call.
        if topic not in self._failing:
            return True
        last = self._last_attempt.get(topic)
        return last is None or self._clock() - last >= self.max_staleness

    def _interest(self, topic: str) -> None:
        with self._lock:
            self._topics.add(topic)
            self._last_read.setdefault(topic, self._clock())
            if (
                self._start_thread
                and (self._thread is None or not self._thread.is_alive())
                and not self._stopped.is_set()
            ):
                self._thread = threading.Thread(target=self._run, name="servicegroup-view", daemon=True)
                self._thread.start()

    def _run(self) -> None:
        """Every topic each ``max_staleness``; in between, poked topics at once."""
        due = time.monotonic()
        while not self._stopped.is_set():
            try:
                if time.monotonic() >= due:
                    due = time.monotonic() + self.max_staleness
                    with self._lock:
                        self._poked.clear()  # read below; later pokes wake us again
                    self.refresh_all()
                else:
                    self.refresh_poked()
            except Exception as exc:  # never let the refresher die silently
                LOG.error("membership refresh failed: %s", urls.redact(str(exc)))
                LOG.debug("membership refresh failure", exc_info=True)
            self._wake.wait(max(0.0, due - time.monotonic()))
            self._wake.clear()

    def halt(self) -> None:
        """Refresh no more (a read under way finishes, quietly); :meth:`stop`
        then waits for it."""
        self._stopped.set()
        self._wake.set()

    def stop(self, timeout: float = 10.0) -> None:
        """Stop refreshing; wait (bounded) for a refresh under way to end, so
        nothing reads the backend or the records after its owner closed them."""
        self.halt()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)
        self.dispatcher.stop()

    # -- watches ---------------------------------------------------------

    def watch(
        self,
        topic: str,
        on_join: WatchCallback | None = None,
        on_leave: WatchCallback | None = None,
        on_change: ChangeCallback | None = None,
    ) -> Watch:
        """Call ``on_join(topic, host)`` / ``on_leave(topic, host)`` on changes,
        and ``on_change(topic)`` once per change of any kind.

        The first snapshot is the baseline: members present when the watch
        starts are not reported as joins. ``on_change`` also fires for the
        first snapshot, after reads recover from a failure, and when a
        member's capabilities change, so a consumer that rebuilds from the
        full list on each call (the hash ring) never misses a state.
        """
        handle = Watch(self._unwatch, topic, on_join, on_leave, on_change)
        with self._lock:
            self._watches.setdefault(topic, []).append(handle)
        self._interest(topic)
        if topic not in self._snapshots:
            self.refresh(topic)
        return handle

    def watched(self, topic: str) -> bool:
        """Whether anyone watches *topic* (an explicit interest in changes)."""
        return bool(self._watches.get(topic))

    def notify_change(self, topic: str) -> None:
        """Tell *topic*'s ``on_change`` watchers to re-read (for changes made
        outside the backend, such as fencing)."""
        with self._lock:
            queue_change(self.dispatcher, topic, list(self._watches.get(topic, ())))

    def _unwatch(self, handle: Watch) -> None:
        with self._lock:
            handles = self._watches.get(handle.topic, [])
            if handle in handles:
                handles.remove(handle)

    def _unhide_reincarnated(self, topic: str, members: Mapping[str, Capabilities]) -> None:
        hidden = self._hidden.get(topic)
        if not hidden:
            return
        now = self._clock()
        for host, (incarnation, since) in list(hidden.items()):
            caps = members.get(host)
            if now - since >= self.grace:
                del hidden[host]  # lapsed: see hide()
            elif caps is not None and caps.get(INCARNATION) != incarnation:
                del hidden[host]  # back with a new incarnation: the nack did its job
