"""Reading group membership from the backend, for the membership view.

The view (:mod:`servicegroup.membership`) decides when a topic is read;
this module reads it:

- through one coordinator per process that never joins anything (an
  observer must not appear as a member), replaced when it has failed for a
  while (client libraries do not always recover on their own: see
  :class:`servicegroup.backend.FailureClock`);
- in as few round trips as the driver allows (:func:`read_members`), with
  tooz's pseudo-members filtered out;
- and, where the backend can push changes (:mod:`servicegroup.push`),
  subscribed once per topic, so that a change wakes the view at once
  instead of waiting for the next poll.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
import os
import socket
import threading
from typing import TYPE_CHECKING, Any
import uuid

from tooz import coordination

from servicegroup import backend
from servicegroup import endpoints
from servicegroup import errors
from servicegroup import forksafe
from servicegroup import mcgroup
from servicegroup import profiles
from servicegroup import push
from servicegroup.membership import Members, MembershipView
from servicegroup.watches import INCARNATION

if TYPE_CHECKING:
    from servicegroup import zkcache

#: ``on_read(topic, round_trips, ok)``: one membership read of *topic*.
ReadObserver = Callable[[str, int, bool], None]


class _Subscription:
    """One topic's push subscription: claimed first, its cancel set once made."""

    __slots__ = ("cancel",)

    def __init__(self) -> None:
        self.cancel: push.Cancel | None = None


class Reader:
    """Membership reads for one backend URL (see module docstring).

    ``poke(topic)`` and ``watched(topic)`` come from the view, which is
    built after its reader: see :meth:`attach`.
    """

    def __init__(
        self, url: str, factory: backend.CoordinatorFactory, *, background: bool = True, replace_after: float = 10.0
    ) -> None:
        self.url = url
        self._profile = profiles.for_url(url)
        #: Redis through Sentinel: check each read is from the primary.
        self._sentinel = bool(endpoints.sentinel_options(url))
        self._factory = factory
        self._background = background
        self._failures = backend.FailureClock(after=replace_after)
        self._lock = threading.RLock()
        self._coord: coordination.CoordinationDriver | None = None
        self._pushes: dict[str, _Subscription] = {}
        #: ZooKeeper path caches per topic, valid for the coordinator they
        #: were made on (see :mod:`servicegroup.zkcache`).
        self._zk_caches: dict[str, zkcache.GroupCache] = {}
        self._zk_owner: coordination.CoordinationDriver | None = None
        self._refused = False
        self._poke: Callable[[str], None] = lambda topic: None
        self._watched: Callable[[str], bool] = lambda topic: False
        #: ``on_read(topic, round_trips, ok)`` after each read (the metrics).
        self.on_read: ReadObserver | None = None
        forksafe.register(self, Reader._after_fork)

    def attach(self, poke: Callable[[str], None], watched: Callable[[str], bool]) -> None:
        """Where pushes wake the view, and how to know a topic is watched."""
        self._poke, self._watched = poke, watched

    # -- reads -------------------------------------------------------------

    def coordinator(self) -> coordination.CoordinationDriver:
        """The non-member coordinator for reads, started on first use."""
        with self._lock:
            if self._refused:
                # The refresher may still be mid-cycle: never reconnect after stop().
                raise errors.ServiceGroupError("this ServiceGroup is stopped")
            if self._coord is None:
                reader_id = f"sg-observer.{socket.gethostname()}.{os.getpid()}.{uuid.uuid4().hex[:8]}"
                self._coord = backend.start(self._factory, self.url, reader_id)
            return self._coord

    def fetch(self, topic: str) -> Members:
        """Live members of *topic* (the view's fetch); raises when unreadable."""
        trips: list[int] = []
        try:
            members = self._fetch_with(self.coordinator(), topic, trips)
        except Exception:
            self._observe(topic, sum(trips), False)
            if self._failures.failed():  # see backend.FailureClock
                with self._lock:
                    broken, self._coord = self._coord, None
                self._cancel_pushes()
                backend.discard(broken)
            raise
        self._failures.ok()
        self._observe(topic, sum(trips), True)
        return members

    def _observe(self, topic: str, round_trips: int, ok: bool) -> None:
        if self.on_read is not None:
            self.on_read(topic, round_trips, ok)

    def _fetch_with(self, coord: coordination.CoordinationDriver, topic: str, trips: list[int]) -> Members:
        group = topic.encode()
        beats: dict[bytes, float | None] = {}
        with backend.errors_translated(self.url):
            if self._sentinel:
                trips.append(1)
                endpoints.ensure_sentinel_primary(coord)
            try:
                raw: Mapping[bytes, Any]
                cache = self._zk_cache(coord, topic)
                if cache is not None:
                    raw = cache.read(backend.CALL_TIMEOUT)
                    trips.append(cache.requests)
                else:
                    raw = read_members(coord, group, beats, trips)
            except coordination.GroupNotCreated:
                # Nobody ever joined: an empty group, not an error. Push only
                # for a watched topic: on ZooKeeper subscribing creates the
                # group's node, which a mere read (a typo'd or dead direct
                # matchmaker name) must not do.
                if self._watched(topic):
                    self._subscribe(coord, topic)
                return Members()
        self._subscribe(coord, topic)
        members = Members()
        for member_id, caps in raw.items():
            host = member_id.decode("utf-8", "replace") if isinstance(member_id, bytes) else str(member_id)
            caps = caps if isinstance(caps, dict) else {}
            if self._profile.leader_pseudo_member and host == "leader" and INCARNATION not in caps:
                continue  # tooz's ZooKeeper leader-election pseudo-member
            members[host] = caps
            beat = beats.get(member_id)
            if beat is not None:
                members.beats[host] = beat
        return members

    def _zk_cache(self, coord: coordination.CoordinationDriver, topic: str) -> zkcache.GroupCache | None:
        """*topic*'s path cache when *coord* is tooz's ZooKeeper driver."""
        client = getattr(coord, "_coord", None)
        path_group = getattr(coord, "_path_group", None)
        if self._profile.push != "zookeeper" or client is None or path_group is None:
            return None
        with self._lock:
            if self._zk_owner is not coord:
                self._zk_owner, self._zk_caches = coord, {}
            cache = self._zk_caches.get(topic)
            if cache is None:
                from servicegroup import zkcache  # kazoo: the [zookeeper] extra, only here

                path = path_group(topic.encode())
                path = path.decode() if isinstance(path, bytes) else str(path)
                cache = self._zk_caches[topic] = zkcache.GroupCache(client, path, lambda: self._poke(topic))
            return cache

    # -- push subscriptions --------------------------------------------------

    def _subscribe(self, coord: coordination.CoordinationDriver, topic: str) -> None:
        """Subscribe to *topic*'s changes once, after a read that found it.

        The topic is claimed under the lock before the (slow) subscription
        is made, so two first reads (a caller's and the refresher's) cannot
        both subscribe; a subscription that comes back after its topic was
        forgotten or every push cancelled is cancelled, never leaked. The
        poke re-reads once, so a change between the read and the
        subscription is not left to the next poll.
        """
        if not self._background:
            return
        with self._lock:
            if self._refused or topic in self._pushes:
                return
            claim = self._pushes[topic] = _Subscription()
        cancel = push.subscribe(coord, self._profile.push, topic, lambda: self._poke(topic))
        if cancel is None:
            return
        with self._lock:
            kept = self._pushes.get(topic) is claim
            if kept:
                claim.cancel = cancel
        if not kept:
            _cancel_quietly(cancel)
            return
        self._poke(topic)

    def subscribed(self, topic: str) -> bool:
        """Whether the backend pushes *topic*'s changes to this process."""
        sub = self._pushes.get(topic)
        return sub is not None and sub.cancel is not None

    def forget(self, topic: str) -> None:
        """The view dropped an idle topic: drop its push subscription too."""
        with self._lock:
            sub = self._pushes.pop(topic, None)
            self._zk_caches.pop(topic, None)
        if sub is not None and sub.cancel is not None:
            _cancel_quietly(sub.cancel)

    def _cancel_pushes(self) -> None:
        with self._lock:
            pushes, self._pushes = self._pushes, {}
        for sub in pushes.values():
            if sub.cancel is not None:
                _cancel_quietly(sub.cancel)

    # -- lifecycle ------------------------------------------------------------

    def refuse(self) -> None:
        """From now on, no new coordinator and no new subscription."""
        with self._lock:
            self._refused = True

    def close(self) -> None:
        """Cancel every subscription and stop the coordinator (bounded)."""
        self.refuse()
        self._cancel_pushes()
        with self._lock:
            coord, self._coord = self._coord, None
        if coord is not None:
            backend.stop_quietly(coord)

    def _after_fork(self) -> None:
        """In a forked child (:mod:`servicegroup.forksafe`): the parent's
        coordinator and subscriptions are the parent's; the lock may be
        held forever (the refresher holds it while connecting)."""
        self._lock = threading.RLock()
        self._coord = None
        self._pushes = {}
        self._zk_caches, self._zk_owner = {}, None


def open_view(
    url: str,
    factory: backend.CoordinatorFactory,
    *,
    max_staleness: float,
    grace: float,
    background: bool,
    clock: Callable[[], float],
    wall_clock: Callable[[], float],
) -> tuple[Reader, MembershipView]:
    """A reader of *url* and the membership view it feeds, wired together:
    one pair per backend a ServiceGroup reads (two while a driver switch
    is under way, see :mod:`servicegroup.migration`)."""
    reader = Reader(url, factory, background=background, replace_after=max(10 * max_staleness, 5.0))
    view = MembershipView(
        reader.fetch,
        max_staleness=max_staleness,
        grace=grace,
        start_thread=background,
        on_forget=reader.forget,
        clock=clock,
        wall_clock=wall_clock,
    )
    reader.attach(poke=view.poke, watched=view.watched)
    return reader, view


def read_members(
    coord: coordination.CoordinationDriver,
    group: bytes,
    beats: dict[bytes, float | None],
    trips: list[int] | None = None,
) -> Mapping[bytes, Any]:
    """Members of *group* with capabilities, in as few round trips as the
    driver allows; fills *beats* where it reports heartbeat times, and
    appends to *trips* the backend round trips it made (their sum is the
    read's cost, which the metrics report).

    Our SQL driver gives capabilities and heartbeat times in one SELECT;
    memcached's are two round trips (:mod:`servicegroup.mcgroup`; tooz's
    lookup is one GET per member); tooz's other drivers mostly have
    ``get_members_with_capabilities`` in O(1) round trips (ZooKeeper's is
    one read per member: the reader uses :mod:`servicegroup.zkcache`
    there); the last resort is one call per member.
    """
    timeout = backend.CALL_TIMEOUT
    trips = [] if trips is None else trips
    mc = mcgroup.driver_parts(coord)
    if mc is not None:
        trips.append(2)  # the group key, then one multi-get (a rare sweep adds a CAS)
        return mcgroup.read(mc, group)
    trips.append(1)  # the listing call below, whichever it is
    with_beats = getattr(coord, "get_members_with_heartbeats", None)
    if with_beats is not None:
        rows = with_beats(group).get(timeout=timeout)
        beats.update((m, beat) for m, (_, beat) in rows.items())
        return {m: caps for m, (caps, _) in rows.items()}
    try:
        return coord.get_members_with_capabilities(group).get(timeout=timeout)
    except NotImplementedError:
        members = coord.get_members(group).get(timeout=timeout)
        trips.append(len(members))
        return {m: coord.get_member_capabilities(group, m).get(timeout=timeout) for m in members}


def _cancel_quietly(cancel: push.Cancel) -> None:
    try:
        cancel()
    except Exception:  # a dead subscription is already cancelled
        pass
