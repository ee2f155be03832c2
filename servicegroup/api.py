"""ServiceGroup: the one facade users touch.

It joins two stores that fail independently: service *records* (host,
topic, binary, the operator's flags) in SQL, and *liveness* through a tooz
backend. "Is this service up?" is decided in :meth:`ServiceGroup.is_up`,
in this order:

1. ``forced_down`` set (an operator fenced the host) -> down, whatever the
   backend says (:mod:`servicegroup.flags`, answered from memory);
2. otherwise up if and only if the topic's membership view lists the host
   (:mod:`servicegroup.membership`: at most ``max_staleness`` old, and
   trusted for ``service_down_time`` while the backend cannot be read);
   during a driver switch, either backend's view (:mod:`servicegroup.migration`).

``disabled`` is a scheduling flag and never changes liveness; neither does
``updated_at`` (enabling a service bumps it, which once made dead hosts
look up in nova). The work behind the answers lives elsewhere: members and
their heartbeats in :mod:`servicegroup.heartbeat`, backend reads in
:mod:`servicegroup.reader`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
import datetime
import logging
import random
import threading
import time
from typing import TYPE_CHECKING, Any

from servicegroup import backend
from servicegroup import conf as sg_conf
from servicegroup import driver_urls
from servicegroup import errors
from servicegroup import exiting
from servicegroup import forksafe
from servicegroup import migration
from servicegroup import names
from servicegroup.flags import FlagsCache
from servicegroup.heartbeat import MEMBERSHIP_RESTORED
from servicegroup.heartbeat import EventCallback
from servicegroup.heartbeat import Member
from servicegroup.recordkeeper import RecordKeeper
from servicegroup.reader import open_view
from servicegroup.metrics import Metrics
from servicegroup.records import Records
from servicegroup.records import Service
from servicegroup.sources import Sources
from servicegroup.watches import ChangeCallback
from servicegroup.watches import Watch
from servicegroup.watches import WatchCallback

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
        previous_driver: str | None = None,
        previous_url: str | None = None,
        metrics_port: int | None = None,
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

        ``previous_driver`` / ``previous_url``: the backend a live fleet is
        switching away from (:mod:`servicegroup.migration`).

        ``metrics_port`` serves :attr:`metrics` over HTTP (0: any free port,
        see :meth:`~servicegroup.metrics.Metrics.serve`).
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
            previous_driver=previous_driver,
            previous_url=previous_url,
            metrics_port=metrics_port,
        )
        self.url = driver_urls.resolve(driver, url, records_url, ttl=service_down_time, report_interval=report_interval)
        self._factory = coordinator_factory or backend.default_factory
        clock = clock or time.monotonic
        wall_clock = wall_clock or time.time
        #: The backend being switched away from, while previous_driver is set.
        self._previous = migration.Previous.of(
            self.settings, self.url, self._factory, background=background, clock=clock, wall_clock=wall_clock
        )
        self._background = background
        self._clock = clock
        self.records = records = Records(records_url)
        self._members: dict[str, Member] = {}
        self._stopped = False
        self._lock = threading.RLock()
        self._event_callbacks: list[EventCallback] = []
        self._reader, self._view = open_view(
            self.url,
            self._factory,
            max_staleness=max_staleness,
            grace=service_down_time,
            background=background,
            clock=clock,
            wall_clock=wall_clock,
        )
        backends = [(self.url, self._reader, self._view)]
        if self._previous is not None:
            backends.append((self._previous.url, self._previous.reader, self._previous.view))
        self._sources = Sources(backends)
        self.metrics = Metrics.of(self, self._reader, self._view)
        self._flags = FlagsCache(
            lambda: records.flags(only_set=True),
            interval=max_staleness,
            on_fence_change=self._view.notify_change,
            background=background,
            clock=clock,
        )
        self._keeper = RecordKeeper(
            records.mark_seen_many, period=service_down_time / 2, on_gone=self._record_gone, background=background
        )
        forksafe.register(self, ServiceGroup._after_fork)
        self._flags.start()
        exiting.running(self)  # stopped at exit if nobody calls stop()
        if metrics_port is not None:
            try:
                self.metrics.serve(metrics_port)
            except BaseException:
                self.stop()
                raise

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
            previous_driver=s.previous_driver,
            previous_url=s.previous_url,
            metrics_port=s.metrics_port,
            **kwargs,
        )

    def __repr__(self) -> str:
        previous = f" previous={backend.where(self._previous.url)}" if self._previous else ""
        return f"<ServiceGroup {backend.where(self.url)}{previous} records={self.records.url_redacted}>"

    def __enter__(self) -> ServiceGroup:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- members ---------------------------------------------------------

    def join(
        self, host: str, topic: str, binary: str | None = None, capabilities: Mapping[str, Any] | None = None
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
            joined = member.join(topic, caps)
        except BaseException:
            if not existed:
                self.records.delete(host, topic)
            raise
        self._view.own_write(topic, host, joined)  # is_up(svc) is True once we return
        self._view.poke(topic)
        if self._previous is not None:
            self._previous.join(host, topic, caps)  # never raises: see migration
        return record.with_liveness(not record.forced_down, record.last_seen_up)

    def leave(self, host: str, topic: str) -> None:
        """Stop being a member of *topic*; the record stays (shown as down)."""
        host = names.check(host, "host")
        topic = names.check(topic, "topic")
        member = self._members.get(host)
        if member is not None:
            member.leave(topic)
            self._view.own_write(topic, host, None)  # down in our own view once we return
        self._view.poke(topic)
        if self._previous is not None:
            self._previous.leave(host, topic)

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
        if self._previous is not None:
            self._previous.heartbeat(host)

    # -- liveness --------------------------------------------------------

    def is_up(self, svc: Service | None = None, *, topic: str | None = None, host: str | None = None) -> bool:
        """Whether a service is up. Cheap: answered from memory.

        Never raises for an unknown service or an unreachable backend: both
        are down. ``forced_down`` wins over everything.
        """
        forced = False
        if svc is not None:
            host, topic, forced = svc.host, svc.topic, bool(svc.forced_down)
        if host is None or topic is None:
            raise TypeError("is_up() needs a Service or both topic= and host=")
        if forced or self._flags.forced_down(host, topic):
            return False
        try:
            return self._sources.lists(topic, host)  # during a driver switch: either backend
        except Exception as exc:  # is_up is called per request: it must not raise
            LOG.error("membership view failed for %r: %s", topic, backend.describe(exc))
            return False

    def liveness_unknown(self, topic: str) -> str | None:
        """Why this process cannot vouch for anyone's liveness in *topic*
        now (one line naming the backend, no credentials), or None if it can.

        ``is_up`` answers False then, by design; a caller that must not guess
        (an operator's listing) asks this. Reads the topic first if needed.

        During a driver switch, names every backend that cannot be read:
        a service the other one lists is still up, but a down answer is
        then a guess (:mod:`servicegroup.migration`).
        """
        return self._sources.unknown(topic)

    def liveness_age(self, topic: str) -> float | None:
        """Seconds since the oldest membership read the answers about
        *topic* come from *started* (None: a backend not read yet)."""
        return self._sources.age(topic)

    def switch_status(self, topic: str) -> migration.TopicStatus:
        """Which live hosts of *topic* the new and the previous backend list
        (``driver-status``); a typed error, never a guess, when a backend
        cannot be read or ``previous_driver`` is not set."""
        if self._previous is None:
            raise errors.ConfigError("previous_driver is not set: there is no driver switch to report on")
        why = self.liveness_unknown(topic)
        if why:
            raise errors.BackendUnavailable(f"cannot tell where {topic!r} is listed: {why}")
        new, old = (view.members(topic) or {} for view in self._sources.views)
        return migration.TopicStatus(topic, frozenset(new), frozenset(old))

    def flags_age(self) -> float | None:
        """Seconds since the forced_down/disabled flags were last read from
        the records database (None: never). While that database cannot be
        read, the last known flags keep answering and this grows; a flag
        written by this process counts at once whatever the age."""
        return self._flags.age()

    def members(self, topic: str) -> dict[str, dict[str, Any]]:
        """Live, not forced-down hosts of *topic* with their capabilities."""
        view = self._sources.listed(topic) or {}
        return {h: dict(c) for h, c in view.items() if not self._flags.forced_down(h, topic)}

    def get_all(self, topic: str) -> list[str]:
        """Live hosts of *topic*, sorted (forced-down hosts excluded)."""
        return sorted(self.members(topic))

    def get_one(self, topic: str) -> str | None:
        """One live host of *topic*, chosen at random, or None."""
        hosts = self.get_all(topic)
        return random.choice(hosts) if hosts else None

    def get_updated_time(
        self, svc: Service | None = None, *, topic: str | None = None, host: str | None = None
    ) -> datetime.datetime | None:
        """When the service last proved alive (UTC), if ever.

        While the backend lists it: on the SQL backend its last heartbeat
        (database server's clock, read with the membership), elsewhere the
        last time the backend listed it. Once it is not listed: the record's
        ``last_seen_up``, the same for every reader whenever it started
        (:mod:`servicegroup.recordkeeper`: at most ``service_down_time / 2``
        before its last heartbeat); one records read unless *svc* is given.
        """
        record_seen = None
        if svc is not None:
            host, topic, record_seen = svc.host, svc.topic, svc.last_seen_up
        if host is None or topic is None:
            raise TypeError("get_updated_time() needs a Service or both topic= and host=")
        seen = self._sources.last_seen(topic, host)
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
        return [svc.with_liveness(self.is_up(svc), self.get_updated_time(svc)) for svc in self.records.list(topic)]

    def watch(
        self,
        topic: str,
        on_join: WatchCallback | None = None,
        on_leave: WatchCallback | None = None,
        on_change: ChangeCallback | None = None,
    ) -> Watch:
        """Call ``on_join(topic, host)`` / ``on_leave(topic, host)`` on
        membership changes, from a dispatcher thread (never the caller's).

        ``on_change(topic)`` is called once per change of what
        :meth:`members` answers: joins and leaves, capability changes, a
        host fenced or unfenced (``force_down``), the first snapshot, and
        reads recovering after a failure. Consumers that rebuild from the
        full list (the hash ring) use it.
        """
        topic = names.check(topic, "topic")
        return self._sources.watch(self.members, topic, on_join, on_leave, on_change)

    def partitioner(self, group: str, **kwargs: Any) -> Partitioner:
        """A consistent-hash :class:`~servicegroup.ring.Partitioner` over *group*.

        It self-fences (:mod:`servicegroup.fencing`) for a host this
        instance joined: ``fence=None`` turns that off.
        """
        from servicegroup.fencing import SelfFence
        from servicegroup.ring import Partitioner

        if "fence" not in kwargs:
            kwargs["fence"] = SelfFence.for_timings(
                self.membership_confirmed,
                self.settings.report_interval,
                self.settings.service_down_time,
                clock=self._clock,
            )
        return Partitioner(self, group, **kwargs)

    def membership_confirmed(self, topic: str, host: str) -> float | None:
        """Monotonic time at which *host*'s membership of *topic* was last
        confirmed by a heartbeat of this process (``-inf``: lost since), or
        None when this instance did not join *host* to *topic*."""
        member = self._members.get(host)
        if member is None or topic not in member.topics:
            return None
        return member.confirmed(topic)

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
        if self._previous is not None:
            self._previous.expire(topic, host)  # best effort; logged
        self._view.hide(topic, host)
        member = self._members.get(host)
        if not backend.remove_member(self._factory, self.url, topic, host, member.coordinator() if member else None):
            return False
        # Re-read now: a snapshot from before the removal would tell a member
        # of this process that it is still listed, and delay its re-join.
        self._view.refresh(topic)
        return True

    def unexpire(self, topic: str, host: str) -> bool:
        """Undo this process's local :meth:`expire` of *host* if the backend
        still lists it unchanged (the backend removal failed); True if it is
        an answer again. Never writes to the backend."""
        return self._sources.unhide(topic, host)

    # -- operator actions ------------------------------------------------

    def force_down(self, host: str, topic: str, down: bool = True) -> Service:
        """Fence (or unfence) a service: ``is_up`` is False while set."""
        svc = self.records.set_forced_down(names.check(host, "host"), names.check(topic, "topic"), down)
        self._flags.set(svc)
        return svc

    def disable(self, host: str, topic: str, reason: str | None = None) -> Service:
        """Mark a service not schedulable. Liveness is unchanged."""
        return self.records.set_disabled(names.check(host, "host"), names.check(topic, "topic"), True, reason)

    def enable(self, host: str, topic: str) -> Service:
        return self.records.set_disabled(names.check(host, "host"), names.check(topic, "topic"), False, None)

    def stop(self) -> None:
        """Leave every topic, stop every thread, close every connection.
        Logs nothing at warning level or above: stopping is not a failure."""
        with self._lock:  # the same lock _member() checks _stopped under
            self._stopped = True
            members, self._members = list(self._members.values()), {}
        exiting.stopped(self)
        self._sources.refuse()  # a refresh under way must not reconnect, nor log
        for member in members:
            member.stop()
        if self._previous is not None:
            self._previous.stop_members()
        self._sources.stop()
        self._flags.stop()
        self._keeper.stop()
        self._sources.close()
        self.metrics.close()
        self.records.dispose()

    # -- internals -------------------------------------------------------

    def _member(self, host: str) -> Member:
        with self._lock:
            if self._stopped:
                # A member made now would beat forever: nothing stops it again.
                raise errors.ServiceGroupError("this ServiceGroup is stopped")
            if host not in self._members:
                self._members[host] = Member(
                    self.url,
                    host,
                    report_interval=self.settings.report_interval,
                    factory=self._factory,
                    on_event=self._dispatch_event,
                    seen=self._seen_recently,
                    count_beat=self._keeper.beat,
                    background=self._background,
                    clock=self._clock,
                )
                self._members[host].on_beat = self.metrics.heartbeat
            return self._members[host]

    def _after_fork(self) -> None:
        """In a forked child (see :mod:`servicegroup.forksafe`): a fresh
        lock (one a parent thread held at fork time stays held here)."""
        self._lock = threading.RLock()

    def _seen_recently(self, topic: str, host: str, incarnation: Any) -> bool:
        """A heartbeat's self-check answered from the view when it is fresh."""
        return self._view.lists(topic, host, incarnation, within=self.settings.report_interval)

    def _record_gone(self, host: str, topic: str) -> None:
        """The keeper found *host*'s record in *topic* deleted: not vouched for any more."""
        member = self._members.get(host)
        if member is not None and topic in member.topics:
            self.leave(host, topic)

    def _dispatch_event(self, event: str, topic: str, host: str) -> None:
        self.metrics.event(event, topic, host)
        if event == MEMBERSHIP_RESTORED:
            self._keeper.wake()  # a service-delete expires first: check the record now
        for cb in list(self._event_callbacks):
            self._view.dispatcher.submit(cb, event, topic, host)


__all__ = ["ServiceGroup", "Service", "errors"]
