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

Watches: each refresh diffs the new snapshot against the old one and queues
join/leave events for a dispatcher thread, so callbacks never run on the
caller's thread nor block the refresher. Every join carries an
``incarnation`` token in its capabilities, so a leave followed by a re-join
between two refreshes still shows as leave + join instead of vanishing.
Event-driven backends call :meth:`MembershipView.poke` to refresh at once.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
import dataclasses
import logging
import queue
import threading
import time
from typing import Any

from tooz import coordination

from servicegroup import forksafe
from servicegroup import urls

LOG = logging.getLogger(__name__)

Capabilities = dict[str, Any]


class Members(dict[str, Capabilities]):
    """What a fetch returns: host -> capabilities, plus, where the backend
    records them, each host's last heartbeat (``beats``, epoch seconds)."""

    def __init__(self, members: Mapping[str, Capabilities] = (), beats: Mapping[str, float] | None = None) -> None:
        super().__init__(members)
        self.beats: dict[str, float] = dict(beats or {})


Fetch = Callable[[str], Mapping[str, Capabilities]]
WatchCallback = Callable[[str, str], None]
#: ``on_change(topic)``: the topic's live set (as ``ServiceGroup.members``
#: sees it) may have changed; read it again.
ChangeCallback = Callable[[str], None]

#: Capability key holding the per-join token (see module docstring).
INCARNATION = "incarnation"


@dataclasses.dataclass(frozen=True)
class Snapshot:
    """Members of one topic as read at one instant."""

    members: Mapping[str, Capabilities]
    fetched_at: float  #: monotonic clock
    fetched_wall: float  #: wall clock, for "last seen" times shown to people


class Watch:
    """Handle returned by :meth:`MembershipView.watch`; ``cancel()`` stops it."""

    def __init__(self, view: MembershipView, topic: str, on_join: WatchCallback | None,
                 on_leave: WatchCallback | None, on_change: ChangeCallback | None = None) -> None:
        self.topic = topic
        self.on_join = on_join
        self.on_leave = on_leave
        self.on_change = on_change
        self._view = view

    def cancel(self) -> None:
        self._view._unwatch(self)


class _Dispatcher:
    """One thread that runs watch callbacks in order, isolated from failures."""

    def __init__(self) -> None:
        self._queue: queue.Queue[tuple[Callable[..., None], tuple[Any, ...]] | None] = queue.Queue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def submit(self, fn: Callable[..., None], *args: Any) -> None:
        with self._lock:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="servicegroup-watch", daemon=True)
                self._thread.start()
        self._queue.put((fn, args))

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            fn, args = item
            try:
                fn(*args)
            except Exception:  # a user callback must not stop other callbacks
                LOG.exception("watch callback %r failed for %s", fn, args)

    def drain(self, timeout: float = 5.0) -> None:
        """Wait until queued callbacks ran (tests and orderly shutdown)."""
        done = threading.Event()
        self.submit(done.set)
        done.wait(timeout)

    def stop(self) -> None:
        self._queue.put(None)


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
        also_refresh: Callable[[], None] | None = None,
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
        self._also_refresh = also_refresh
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
        self.dispatcher = _Dispatcher()
        forksafe.register(self, MembershipView._after_fork)

    def _after_fork(self) -> None:
        """In a forked child: fresh locks, events and dispatcher. A lock a
        parent thread held at fork time would be held forever here, and the
        parent's threads (refresher, dispatcher) do not exist in the child;
        the refresher restarts on the next read (see :meth:`members`)."""
        self._lock = threading.RLock()
        self._wake = threading.Event()
        self.dispatcher = _Dispatcher()

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
        if self._start_thread and thread is not None and not thread.is_alive() \
                and not self._stopped.is_set():
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
        return (entry is not None and entry[0] == caps.get(INCARNATION)
                and self._clock() - entry[1] < self.grace)

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

    def failing(self, topic: str) -> bool:
        """True while the last read of *topic* failed (answers come from grace)."""
        return topic in self._failing

    def age(self, topic: str) -> float | None:
        snap = self._snapshots.get(topic)
        return None if snap is None else self._clock() - snap.fetched_at

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
                self._emit(topic, old.members, members, watches)
            if old is None or recovered or old.members != members:
                self._emit_change(topic, watches)
        return True

    def refresh_all(self) -> None:
        self._forget_idle()
        for topic in sorted(self._topics):
            if self._stopped.is_set():
                return
            self.refresh(topic)
        if self._also_refresh is not None and not self._stopped.is_set():
            self._also_refresh()

    def _forget_idle(self) -> None:
        now = self._clock()
        with self._lock:
            idle = [t for t in self._topics if not self._watches.get(t)
                    and now - self._last_read.get(t, now) > self.forget_after]
            for topic in idle:
                self._topics.discard(topic)
                for table in (self._snapshots, self._last_read, self._committed, self._hidden,
                              self._last_attempt, self._failing):
                    table.pop(topic, None)
                for key in [k for k in self._last_seen if k[0] == topic]:
                    del self._last_seen[key]
        for topic in idle:
            LOG.debug("membership of %r no longer read: not polled any more", topic)
            if self._on_forget is not None:
                self._on_forget(topic)

    def poke(self, topic: str | None = None) -> None:
        """Ask the refresher to run now (event-driven backends call this)."""
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
            if self._start_thread and (self._thread is None or not self._thread.is_alive()) \
                    and not self._stopped.is_set():
                self._thread = threading.Thread(target=self._run, name="servicegroup-view", daemon=True)
                self._thread.start()

    def _run(self) -> None:
        while not self._stopped.is_set():
            try:
                self.refresh_all()
            except Exception as exc:  # never let the refresher die silently
                LOG.error("membership refresh failed: %s", urls.redact(str(exc)))
                LOG.debug("membership refresh failure", exc_info=True)
            self._wake.wait(self.max_staleness)
            self._wake.clear()

    def stop(self, timeout: float = 10.0) -> None:
        """Stop refreshing; wait (bounded) for a refresh under way to end, so
        nothing reads the backend or the records after its owner closed them."""
        self._stopped.set()
        self._wake.set()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)
        self.dispatcher.stop()

    # -- watches ---------------------------------------------------------

    def watch(self, topic: str, on_join: WatchCallback | None = None,
              on_leave: WatchCallback | None = None,
              on_change: ChangeCallback | None = None) -> Watch:
        """Call ``on_join(topic, host)`` / ``on_leave(topic, host)`` on changes,
        and ``on_change(topic)`` once per change of any kind.

        The first snapshot is the baseline: members present when the watch
        starts are not reported as joins. ``on_change`` also fires for the
        first snapshot, after reads recover from a failure, and when a
        member's capabilities change, so a consumer that rebuilds from the
        full list on each call (the hash ring) never misses a state.
        """
        handle = Watch(self, topic, on_join, on_leave, on_change)
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
            self._emit_change(topic, list(self._watches.get(topic, ())))

    def _emit_change(self, topic: str, watches: list[Watch]) -> None:
        for w in watches:
            if w.on_change:
                self.dispatcher.submit(w.on_change, topic)

    def _unwatch(self, handle: Watch) -> None:
        with self._lock:
            handles = self._watches.get(handle.topic, [])
            if handle in handles:
                handles.remove(handle)

    def _emit(self, topic: str, old: Mapping[str, Capabilities], new: Mapping[str, Capabilities],
              watches: list[Watch]) -> None:
        left, joined = diff(old, new)
        for host in left:
            for w in watches:
                if w.on_leave:
                    self.dispatcher.submit(w.on_leave, topic, host)
        for host in joined:
            for w in watches:
                if w.on_join:
                    self.dispatcher.submit(w.on_join, topic, host)

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


def diff(old: Mapping[str, Capabilities], new: Mapping[str, Capabilities]) -> tuple[list[str], list[str]]:
    """Hosts that left and hosts that joined between two snapshots.

    A host present in both with a different incarnation left and re-joined:
    it appears in both lists, leave first.
    """
    left = sorted(h for h in old if h not in new or _incarnation(old[h]) != _incarnation(new[h]))
    joined = sorted(h for h in new if h not in old or _incarnation(old[h]) != _incarnation(new[h]))
    return left, joined


def _incarnation(caps: Capabilities | None) -> Any:
    return caps.get(INCARNATION) if isinstance(caps, dict) else None
