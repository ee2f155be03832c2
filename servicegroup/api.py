"""ServiceGroup: the one facade users touch.

Records (host, topic, binary, flags) live in SQL through
:mod:`servicegroup.records`; liveness (join, heartbeat, membership) goes
through a tooz backend chosen by ``driver``. The two meet in
:meth:`ServiceGroup.is_up`, which is where "is this service up?" is
decided, in this order:

1. ``forced_down`` set (by an operator fencing a host) -> down, whatever the
   backend says;
2. otherwise up if and only if the host is listed in the topic's group in
   the membership view (:mod:`servicegroup.membership`), which is at most
   ``max_staleness`` old, and no older than ``service_down_time`` when the
   backend cannot be read. The price of that outage grace, stated plainly:
   while this process cannot read the backend, a host that died just
   before can read as up until up to ``2 x service_down_time`` after its
   last heartbeat; then every host reads as down.

``disabled`` is a scheduling flag and never changes liveness; neither does
``updated_at`` (enabling a service bumps it, which once made dead hosts
look up in nova).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
import datetime
import logging
import os
import random
import socket
import threading
from typing import TYPE_CHECKING, Any
import uuid

from tooz import coordination

from servicegroup import backend
from servicegroup import conf as sg_conf
from servicegroup import driver_urls
from servicegroup import errors
from servicegroup import forksafe
from servicegroup import names
from servicegroup import profiles
from servicegroup import push
from servicegroup import urls
from servicegroup.heartbeat import EventCallback
from servicegroup.heartbeat import Member
from servicegroup.membership import INCARNATION
from servicegroup.membership import ChangeCallback
from servicegroup.membership import Members
from servicegroup.membership import MembershipView
from servicegroup.membership import Watch
from servicegroup.membership import WatchCallback
from servicegroup.records import Records
from servicegroup.records import Service

if TYPE_CHECKING:
    from oslo_config import cfg

    from servicegroup.ring import Partitioner

LOG = logging.getLogger(__name__)


class ServiceGroup:
    """Service records in SQL, liveness through tooz (see module docstring)."""

    def __init__(
        self,
        driver: str = "db",
        url: str | None = None,
        records_url: str = sg_conf.DEFAULT_RECORDS_URL,
        report_interval: float = 10,
        service_down_time: float = 60,
        max_staleness: float = 1.0,
        *,
        coordinator_factory: backend.CoordinatorFactory | None = None,
        clock: Callable[[], float] | None = None,
        wall_clock: Callable[[], float] | None = None,
        background: bool = True,
    ) -> None:
        """Validate everything, then open the records database.

        Nothing connects to the liveness backend until the first ``join`` or
        the first read, but every configuration mistake (unknown driver,
        contradicting URL, unknown URL option, ``service_down_time <=
        report_interval``) is refused here, before anything is written.

        ``coordinator_factory``, ``clock``, ``wall_clock`` and ``background``
        exist for tests (an in-memory backend, a fake clock, no threads).
        """
        self.settings = sg_conf.Settings(
            driver=driver,
            url=url,
            records_url=records_url,
            report_interval=report_interval,
            service_down_time=service_down_time,
            max_staleness=max_staleness,
        )
        self.url = driver_urls.resolve(driver, url, records_url, ttl=service_down_time)
        self._profile = profiles.for_url(self.url)
        self._factory = coordinator_factory or backend.default_factory
        self._background = background
        self.records = Records(records_url)
        self._members: dict[str, Member] = {}
        self._reader: coordination.CoordinationDriver | None = None
        self._reader_failures = backend.FailureClock(after=max(10 * max_staleness, 5.0))
        self._stopped = False
        self._lock = threading.RLock()
        self._event_callbacks: list[EventCallback] = []
        self._flags: dict[tuple[str, str], tuple[bool, bool]] = {}
        # Bumped by every local flag write, so a refresh whose read started
        # before the write cannot put the older flags back (see _refresh_flags).
        self._flags_lock = threading.Lock()
        self._flags_gen = 0
        self._pushes: dict[str, push.Cancel | None] = {}
        view_kw: dict[str, Any] = {}
        if clock is not None:
            view_kw["clock"] = clock
        if wall_clock is not None:
            view_kw["wall_clock"] = wall_clock
        self._view = MembershipView(
            self._fetch,
            max_staleness=max_staleness,
            grace=service_down_time,
            start_thread=background,
            also_refresh=self._refresh_flags,
            on_forget=self._forget_topic,
            **view_kw,
        )
        forksafe.register(self, ServiceGroup._after_fork)
        self._refresh_flags()

    @classmethod
    def from_config(cls, conf: cfg.ConfigOpts, **kwargs: Any) -> ServiceGroup:
        """Build from oslo.config ``[servicegroup]`` and ``[database]``."""
        return cls.from_settings(sg_conf.Settings.from_config(conf), **kwargs)

    @classmethod
    def from_settings(cls, s: sg_conf.Settings, **kwargs: Any) -> ServiceGroup:
        """Build from already validated :class:`~servicegroup.conf.Settings`."""
        return cls(
            driver=s.driver,
            url=s.url,
            records_url=s.records_url,
            report_interval=s.report_interval,
            service_down_time=s.service_down_time,
            max_staleness=s.max_staleness,
            **kwargs,
        )

    def __repr__(self) -> str:
        return f"<ServiceGroup {backend.where(self.url)} records={self.records.url_redacted}>"

    def __enter__(self) -> ServiceGroup:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- members ---------------------------------------------------------

    def join(
        self,
        host: str,
        topic: str,
        binary: str | None = None,
        capabilities: Mapping[str, Any] | None = None,
    ) -> Service:
        """Record the service and make it a live member of *topic*.

        The heartbeat thread starts with this call and beats at once. If the
        backend refuses the join, a record created by this call is removed
        again: a failed join leaves nothing behind.
        """
        host = names.check(host, "host")
        topic = names.check(topic, "topic")
        member = self._member(host)
        member.coordinator()  # connect first: an unreachable backend writes nothing
        existed = self.records.get(host, topic) is not None
        record = self.records.upsert(host, topic, binary=binary)
        caps = dict(capabilities or {})
        if binary:
            caps.setdefault("binary", binary)
        try:
            member.join(topic, caps)
        except BaseException:
            if not existed:
                self.records.delete(host, topic)
            raise
        self._view.poke(topic)
        return record.with_liveness(not record.forced_down, record.last_seen_up)

    def leave(self, host: str, topic: str) -> None:
        """Stop being a member of *topic*; the record stays (shown as down)."""
        host = names.check(host, "host")
        topic = names.check(topic, "topic")
        member = self._members.get(host)
        if member is not None:
            member.leave(topic)
        self._view.poke(topic)

    def joined_hosts(self, topic: str) -> list[str]:
        """Hosts this instance itself joined to *topic*."""
        # list(): join() may add a member on another thread meanwhile.
        return sorted(h for h, m in list(self._members.items()) if topic in m.topics)

    def on_membership_event(self, callback: EventCallback) -> None:
        """``callback(event, topic, host)`` on ``membership_lost`` / ``membership_restored``."""
        self._event_callbacks.append(callback)

    def heartbeat(self, host: str | None = None) -> None:
        """Run one heartbeat cycle now (the thread does this on its own)."""
        for h, member in list(self._members.items()):
            if host is None or h == host:
                member.beat()

    # -- liveness --------------------------------------------------------

    def is_up(self, svc: Service | None = None, *, topic: str | None = None,
              host: str | None = None) -> bool:
        """Whether a service is up. Cheap: answered from memory.

        Never raises for an unknown service or an unreachable backend: both
        are down. ``forced_down`` wins over everything.
        """
        forced = False
        if svc is not None:
            host, topic, forced = svc.host, svc.topic, bool(svc.forced_down)
        if host is None or topic is None:
            raise TypeError("is_up() needs a Service or both topic= and host=")
        if forced or self._forced_down(host, topic):
            return False
        try:
            members = self._view.members(topic)
        except Exception as exc:  # is_up is called per request: it must not raise
            LOG.error("membership view failed for %r: %s", topic, backend.describe(exc))
            return False
        return members is not None and host in members

    def liveness_unknown(self, topic: str) -> str | None:
        """Why this process cannot vouch for anyone's liveness in *topic*
        now (one line naming the backend, no credentials), or None if it can.

        ``is_up`` answers False then, by design; a caller that must not guess
        (an operator's listing) asks this. Reads the topic first if needed.
        """
        if self._view.members(topic) is not None:
            return None
        reason = self._view.last_error(topic) or "membership not read"
        where = backend.where(self.url)
        if where not in reason:
            reason = f"{where}: {reason}"
        return urls.redact(reason, url=self.url)

    def members(self, topic: str) -> dict[str, dict[str, Any]]:
        """Live, not forced-down hosts of *topic* with their capabilities."""
        view = self._view.members(topic) or {}
        return {h: dict(c) for h, c in view.items() if not self._forced_down(h, topic)}

    def get_all(self, topic: str) -> list[str]:
        """Live hosts of *topic*, sorted (forced-down hosts excluded)."""
        return sorted(self.members(topic))

    def get_one(self, topic: str) -> str | None:
        """One live host of *topic*, chosen at random, or None."""
        hosts = self.get_all(topic)
        return random.choice(hosts) if hosts else None

    def get_updated_time(self, svc: Service | None = None, *, topic: str | None = None,
                         host: str | None = None) -> datetime.datetime | None:
        """When the service last proved alive (UTC), if ever. Answered from memory.

        On the SQL backend this is its last heartbeat, stamped by the
        database server and read with the membership itself, so it stays
        exact after the service dies. Elsewhere (TTL keys, ephemeral nodes,
        sessions carry no time) it is the last time the backend listed the
        service, which for a crashed one is up to ``service_down_time``
        after its last heartbeat. Never seen by this process: the record's
        ``last_seen_up`` (its join).
        """
        record_seen = None
        if svc is not None:
            host, topic, record_seen = svc.host, svc.topic, svc.last_seen_up
        if host is None or topic is None:
            raise TypeError("get_updated_time() needs a Service or both topic= and host=")
        self._view.members(topic)  # a first read of the topic, if nobody asked before
        seen = self._view.last_seen(topic, host)
        if seen is not None:
            return datetime.datetime.fromtimestamp(seen, tz=datetime.timezone.utc)
        if record_seen is None:
            record = self.records.get(host, topic)
            record_seen = record.last_seen_up if record else None
        return record_seen

    def services(self, topic: str | None = None) -> list[Service]:
        """Every service record, with ``up`` filled in from liveness."""
        # The records just read are not fed back into the flags cache: a
        # fence committed by the refresher meanwhile is newer than them
        # (is_up(svc) already honours svc.forced_down).
        return [svc.with_liveness(self.is_up(svc), self.get_updated_time(svc))
                for svc in self.records.list(topic)]

    def watch(self, topic: str, on_join: WatchCallback | None = None,
              on_leave: WatchCallback | None = None,
              on_change: ChangeCallback | None = None) -> Watch:
        """Call ``on_join(topic, host)`` / ``on_leave(topic, host)`` on
        membership changes, from a dispatcher thread (never the caller's).

        ``on_change(topic)`` is called once per change of what
        :meth:`members` answers: joins and leaves, capability changes, a
        host fenced or unfenced (``force_down``), the first snapshot, and
        reads recovering after a failure. Consumers that rebuild from the
        full list (the hash ring) use it.
        """
        topic = names.check(topic, "topic")
        return self._view.watch(topic, on_join, on_leave, on_change)

    def partitioner(self, group: str, **kwargs: Any) -> Partitioner:
        """A consistent-hash :class:`~servicegroup.ring.Partitioner` over *group*."""
        from servicegroup.ring import Partitioner

        return Partitioner(self, group, **kwargs)

    def expire(self, topic: str, host: str) -> bool:
        """Drop *host* from *topic* at once, everywhere, until it re-joins.

        Locally it disappears from answers immediately; in the backend its
        member entry is removed, so every other process stops seeing it too.
        Its own heartbeat loop notices and re-joins it (with a new
        incarnation) within two ``report_interval`` if it is alive (one if
        its own view has not yet refreshed since the removal).

        Returns False when the backend cannot remove members (Consul's
        catalog mode: Consul's checks own liveness there): the nack then
        holds in this process only, for ``service_down_time`` at most.
        Raises :class:`~servicegroup.errors.BackendUnavailable` (the local
        part done) when the backend cannot be reached.
        """
        self._view.hide(topic, host)
        member = self._members.get(host)
        with backend.errors_translated(self.url):
            # tooz removes only a coordinator's own member id, so a host this
            # process did not join is removed by a short-lived coordinator
            # with that id, one that never heartbeats as it.
            coord = member.coordinator() if member else backend.start(self._factory, self.url, host, beat=False)
            try:
                coord.leave_group(topic.encode()).get(timeout=backend.CALL_TIMEOUT)
            except errors.NotSupported:
                return False
            except (coordination.MemberNotJoined, coordination.GroupNotCreated):
                pass  # already gone
            finally:
                # Stopping a coordinator whose stop() deletes the host's
                # heartbeat key would mark it dead in every topic: dropped
                # unstopped instead (its client closes when collected).
                if member is None and not self._profile.stop_deletes_beat:
                    _quiet_stop(coord)
        # Re-read now: a snapshot from before the removal would tell a member
        # of this process that it is still listed, and delay its re-join.
        self._view.refresh(topic)
        return True

    def unexpire(self, topic: str, host: str) -> bool:
        """Undo this process's local :meth:`expire` of *host* if the backend
        still lists it unchanged (the backend removal failed); True if it is
        an answer again. Never writes to the backend."""
        return self._view.unhide(topic, host)

    # -- operator actions ------------------------------------------------

    def force_down(self, host: str, topic: str, down: bool = True) -> Service:
        """Fence (or unfence) a service: ``is_up`` is False while set."""
        svc = self.records.set_forced_down(names.check(host, "host"), names.check(topic, "topic"), down)
        self._set_flags(svc)
        return svc

    def disable(self, host: str, topic: str, reason: str | None = None) -> Service:
        """Mark a service not schedulable. Liveness is unchanged."""
        return self.records.set_disabled(names.check(host, "host"), names.check(topic, "topic"), True, reason)

    def enable(self, host: str, topic: str) -> Service:
        return self.records.set_disabled(names.check(host, "host"), names.check(topic, "topic"), False, None)

    def stop(self) -> None:
        """Leave every topic, stop every thread, close every connection."""
        with self._lock:  # the same lock _member() checks _stopped under
            self._stopped = True
            members, self._members = list(self._members.values()), {}
        for member in members:
            member.stop()
        self._view.stop()
        self._cancel_pushes()
        with self._lock:
            reader, self._reader = self._reader, None
        if reader is not None:
            _quiet_stop(reader)
        self.records.dispose()

    def _cancel_pushes(self) -> None:
        with self._lock:
            pushes, self._pushes = self._pushes, {}
        for cancel in pushes.values():
            if cancel is not None:
                try:
                    cancel()
                except Exception:  # a dead subscription is already cancelled
                    pass

    # -- internals -------------------------------------------------------

    def _member(self, host: str) -> Member:
        with self._lock:
            if self._stopped:
                # A member made now would beat forever: nothing stops it again.
                raise errors.ServiceGroupError("this ServiceGroup is stopped")
            member = self._members.get(host)
            if member is None:
                member = Member(
                    self.url,
                    host,
                    report_interval=self.settings.report_interval,
                    factory=self._factory,
                    on_event=self._dispatch_event,
                    seen=self._seen_recently,
                    background=self._background,
                )
                self._members[host] = member
            return member

    def _reader_coordinator(self) -> coordination.CoordinationDriver:
        """A non-member coordinator for reads (one per process, fork-aware)."""
        with self._lock:
            if self._stopped:
                # The refresher may still be mid-cycle: never reconnect after stop().
                raise errors.ServiceGroupError("this ServiceGroup is stopped")
            if self._reader is None:
                reader_id = f"sg-observer.{socket.gethostname()}.{os.getpid()}.{uuid.uuid4().hex[:8]}"
                self._reader = backend.start(self._factory, self.url, reader_id)
            return self._reader

    def _after_fork(self) -> None:
        """In a forked child (see :mod:`servicegroup.forksafe`): drop the
        parent's reader, pushes and locks (the refresher holds ``_lock``
        while connecting; held at fork time, it is held forever here)."""
        self._lock = threading.RLock()
        self._flags_lock = threading.Lock()
        self._reader = None
        self._pushes = {}

    def _fetch(self, topic: str) -> dict[str, dict[str, Any]]:
        try:
            members = self._fetch_with(self._reader_coordinator(), topic)
        except Exception:
            if self._reader_failures.failed():  # see backend.FailureClock
                with self._lock:
                    broken, self._reader = self._reader, None
                self._cancel_pushes()
                backend.discard(broken)
            raise
        self._reader_failures.ok()
        return members

    def _fetch_with(self, coord: coordination.CoordinationDriver, topic: str) -> dict[str, dict[str, Any]]:
        group = topic.encode()
        beats: dict[bytes, float | None] = {}
        with backend.errors_translated(self.url):
            try:
                raw = _read_members(coord, group, beats)
            except coordination.GroupNotCreated:
                # Nobody ever joined: an empty group, not an error. Push only
                # for a watched topic: on ZooKeeper subscribing creates the
                # group's node, which a mere read (a typo'd or dead direct
                # matchmaker name) must not do.
                if self._view.watched(topic):
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

    def _subscribe(self, coord: coordination.CoordinationDriver, topic: str) -> None:
        """ZooKeeper/etcd/Consul push changes: wake the view at once (push.py).

        After a read that found the group; marked first, so a slow subscribe
        is attempted once, not by every reader. The poke re-reads once, so a
        change between that read and the subscription is not left to the
        next poll.
        """
        if not self._background or topic in self._pushes or self._stopped:
            return
        self._pushes[topic] = None
        self._pushes[topic] = push.subscribe(coord, self._profile.push, topic, self._view.poke)
        if self._pushes[topic] is not None:
            self._view.poke(topic)

    def _forget_topic(self, topic: str) -> None:
        """The view dropped an idle topic: drop its push subscription too."""
        with self._lock:
            cancel = self._pushes.pop(topic, None)
        if cancel is not None:
            try:
                cancel()
            except Exception:  # a dead subscription is already cancelled
                pass

    def _refresh_flags(self) -> None:
        gen = self._flags_gen
        try:
            flags = self.records.flags(only_set=True)
        except Exception as exc:
            LOG.warning("service flags could not be read: %s", backend.describe(exc))
            return
        with self._flags_lock:
            # A force_down() that landed while we read is newer than our read:
            # keep it (the next refresh reads it from the database anyway).
            if self._flags_gen != gen:
                return
            old, self._flags = self._flags, flags
        fenced_before = {key for key, (forced, _) in old.items() if forced}
        fenced_now = {key for key, (forced, _) in flags.items() if forced}
        for topic in sorted({t for _, t in fenced_before ^ fenced_now}):
            self._view.notify_change(topic)

    def _set_flags(self, svc: Service) -> None:
        with self._flags_lock:
            self._flags_gen += 1
            before = self._flags.get((svc.host, svc.topic), (False, False))[0]
            self._flags[(svc.host, svc.topic)] = (svc.forced_down, svc.disabled)
        if before != svc.forced_down:
            self._view.notify_change(svc.topic)

    def _forced_down(self, host: str, topic: str) -> bool:
        flags = self._flags.get((host, topic))
        return bool(flags and flags[0])

    def _seen_recently(self, topic: str, host: str, incarnation: Any) -> bool:
        snap = self._view.snapshot(topic)
        age = self._view.age(topic)
        if snap is None or age is None or age > self.settings.report_interval:
            return False
        caps = snap.members.get(host)
        return caps is not None and caps.get(INCARNATION) == incarnation

    def _dispatch_event(self, event: str, topic: str, host: str) -> None:
        for cb in list(self._event_callbacks):
            self._view.dispatcher.submit(cb, event, topic, host)


def _read_members(coord: coordination.CoordinationDriver, group: bytes,
                  beats: dict[bytes, float | None]) -> Mapping[bytes, Any]:
    """Members of *group* with capabilities, in as few round trips as the
    driver allows; fills *beats* where it reports heartbeat times.

    Our SQL driver gives capabilities and heartbeat times in one SELECT;
    tooz's drivers mostly have ``get_members_with_capabilities`` (one call,
    where memcached's per-member GETs would be O(N) round trips); the last
    resort is one call per member.
    """
    timeout = backend.CALL_TIMEOUT
    with_beats = getattr(coord, "get_members_with_heartbeats", None)
    if with_beats is not None:
        rows = with_beats(group).get(timeout=timeout)
        beats.update((m, beat) for m, (_, beat) in rows.items())
        return {m: caps for m, (caps, _) in rows.items()}
    try:
        return coord.get_members_with_capabilities(group).get(timeout=timeout)
    except NotImplementedError:
        return {m: coord.get_member_capabilities(group, m).get(timeout=timeout)
                for m in coord.get_members(group).get(timeout=timeout)}


def _quiet_stop(coord: coordination.CoordinationDriver) -> None:
    """Stop a coordinator, bounded: a client stuck reconnecting must not
    hang ``stop()`` (tooz's ZooKeeper stop waits forever then)."""
    try:
        backend.bounded(coord.stop, backend.CALL_TIMEOUT, "stop")
    except Exception:
        pass


__all__ = ["ServiceGroup", "Service", "errors"]
