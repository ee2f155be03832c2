"""Switching ``driver`` on a live fleet: the previous backend, kept alongside.

Without this, a rolling switch of ``[servicegroup] driver`` shows every
service that has not restarted yet as down to observers already on the new
backend (and the reverse) for the whole roll-out. With ``previous_driver``
(and ``previous_url``) set:

- a member joins and heartbeats to both backends. The previous one is best
  effort and fully separate (its own coordinator and heartbeat thread), so
  a failure of either never delays or stops the other's heartbeats; a join
  the previous backend refuses is retried by its heartbeat thread, never
  raised to the caller;
- an observer reads both and counts a service up if *either* lists it;
  ``forced_down`` still wins (the flags are the records database's, one for
  both backends). Everything built on the membership (``get_all``,
  ``members``, watches, the matchmaker, the hash ring) sees that union;
- when one backend cannot be read (past ``service_down_time``), the other
  still answers: a service it lists stays up. Only a *down* answer is in
  doubt then (the host may be listed in the unreadable one), so
  ``liveness_unknown`` names the unreadable backend and ``service-list``
  shows such services as ``unknown``, not ``down``.

:func:`status` is what ``servicegroup driver-status`` prints: per topic, who
is in the new backend yet. The runbook is in ``docs/operations.md``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
import dataclasses
import logging
import threading
from typing import Any

from servicegroup import backend
from servicegroup import conf
from servicegroup import driver_urls
from servicegroup import errors
from servicegroup import forksafe
from servicegroup import profiles
from servicegroup import urls
from servicegroup.heartbeat import Member
from servicegroup.reader import open_view

LOG = logging.getLogger(__name__)


def resolve_previous(
    previous_driver: str | None,
    previous_url: str | None,
    *,
    url: str,
    records_url: str,
    ttl: float,
) -> str | None:
    """The previous backend's tooz URL, or None when no switch is under way.

    Refused (:class:`~servicegroup.errors.ConfigError`) when it is the new
    backend itself: members would join the same group twice under one id,
    and an operator who wrote it meant something else.
    """
    if not previous_driver:
        return None
    try:
        resolved = driver_urls.resolve(previous_driver, previous_url or None, records_url, ttl=ttl)
    except errors.ConfigError as exc:
        exc.args = (f"previous_driver: {exc}",)  # same type (UnknownDriver, InvalidURL), named option
        raise exc from None
    if _same_backend(resolved, url):
        raise errors.ConfigError(
            f"previous_driver {urls.redact(previous_driver)!r} is the driver itself "
            f"({backend.where(url)}): nothing to switch from; unset previous_driver "
            f"or point previous_url at the old backend"
        )
    return resolved


def _same_backend(a: str, b: str) -> bool:
    """Whether two resolved URLs name one backend: same kind (``zk`` and
    ``kazoo`` are one), host (``localhost`` is the loopback address), port
    and path; the query (timeouts, TTL) does not make another backend."""
    if a == b:
        return True

    def key(url: str) -> tuple[object, ...]:
        parts = urls.split(url)
        host = (parts.hostname or "").lower()
        host = "127.0.0.1" if host in _LOOPBACK else host
        return (profiles.for_scheme(parts.scheme).alias or parts.scheme, host, parts.port, parts.path.rstrip("/"))

    return key(a) == key(b)


_LOOPBACK = frozenset({"localhost", "127.0.0.1", "::1", "ip6-localhost"})


class Previous:
    """The backend a fleet is switching away from: its members, best effort,
    and its membership view (see module docstring)."""

    def __init__(
        self,
        url: str,
        factory: backend.CoordinatorFactory,
        *,
        report_interval: float,
        service_down_time: float,
        max_staleness: float,
        background: bool,
        clock: Callable[[], float],
        wall_clock: Callable[[], float],
    ) -> None:
        self.url = url
        self._factory = factory
        self._report_interval = report_interval
        self._background = background
        self.reader, self.view = open_view(
            url,
            factory,
            max_staleness=max_staleness,
            grace=service_down_time,
            background=background,
            clock=clock,
            wall_clock=wall_clock,
        )
        self._members: dict[str, Member] = {}
        self._lock = threading.Lock()
        forksafe.register(self, Previous._after_fork)

    @classmethod
    def of(
        cls,
        settings: conf.Settings,
        url: str,
        factory: backend.CoordinatorFactory,
        *,
        background: bool,
        clock: Callable[[], float],
        wall_clock: Callable[[], float],
    ) -> Previous | None:
        """The previous backend *settings* name (None: no switch under way);
        a contradictory one is refused (:func:`resolve_previous`)."""
        previous = resolve_previous(
            settings.previous_driver,
            settings.previous_url,
            url=url,
            records_url=settings.records_url,
            ttl=settings.service_down_time,
        )
        if previous is None:
            return None
        return cls(
            previous,
            factory,
            report_interval=settings.report_interval,
            service_down_time=settings.service_down_time,
            max_staleness=settings.max_staleness,
            background=background,
            clock=clock,
            wall_clock=wall_clock,
        )

    def __repr__(self) -> str:
        return f"<previous {backend.where(self.url)}>"

    # -- members ---------------------------------------------------------

    def join(self, host: str, topic: str, capabilities: Mapping[str, Any]) -> None:
        """Join *topic* in the previous backend too; never raises. A refusal
        is logged and left to the member's heartbeat thread to retry."""
        member = self._member(host)
        try:
            self.view.own_write(topic, host, member.join(topic, dict(capabilities)))
        except Exception as exc:
            LOG.warning(
                "%s could not join %r in the previous backend (%s), retrying every beat: %s",
                host,
                topic,
                backend.where(self.url),
                backend.describe(exc, self.url),
            )
            member.join_later(topic, dict(capabilities))
        self.view.poke(topic)

    def leave(self, host: str, topic: str) -> None:
        """Leave *topic* in the previous backend; a failure is logged (the
        member's beats retry it, and the TTL ends it anyway)."""
        member = self._members.get(host)
        if member is None:
            return
        try:
            member.leave(topic)
            self.view.own_write(topic, host, None)
        except Exception as exc:
            LOG.warning("%s could not leave %r in the previous backend yet: %s", host, topic, backend.describe(exc))
        self.view.poke(topic)

    def heartbeat(self, host: str | None = None) -> None:
        """One beat of each member (of *host* only, if given); failures logged."""
        for h, member in list(self._members.items()):
            if host is None or h == host:
                try:
                    member.beat()
                except Exception as exc:
                    LOG.warning("heartbeat of %s to the previous backend failed: %s", h, backend.describe(exc))

    def expire(self, topic: str, host: str) -> None:
        """The matchmaker's nack in this backend too; best effort."""
        self.view.hide(topic, host)
        member = self._members.get(host)
        try:
            backend.remove_member(self._factory, self.url, topic, host, member.coordinator() if member else None)
        except errors.ServiceGroupError as exc:
            LOG.warning("could not remove %s from %r in the previous backend: %s", host, topic, backend.describe(exc))
            return
        self.view.refresh(topic)

    def stop_members(self) -> None:
        with self._lock:
            members, self._members = list(self._members.values()), {}
        for member in members:
            member.stop()

    def _member(self, host: str) -> Member:
        with self._lock:
            if host not in self._members:
                self._members[host] = Member(
                    self.url,
                    host,
                    report_interval=self._report_interval,
                    factory=self._factory,
                    seen=self._seen_recently,
                    background=self._background,
                )
            return self._members[host]

    def _seen_recently(self, topic: str, host: str, incarnation: Any) -> bool:
        return self.view.lists(topic, host, incarnation, within=self._report_interval)

    def _after_fork(self) -> None:
        self._lock = threading.Lock()
        self._members = {}


@dataclasses.dataclass(frozen=True)
class TopicStatus:
    """Where the live services of one topic are listed, during a switch."""

    topic: str
    new: frozenset[str]
    old: frozenset[str]

    @property
    def both(self) -> frozenset[str]:
        return self.new & self.old

    @property
    def missing(self) -> list[str]:
        """Hosts live in the old backend but not (yet) in the new one."""
        return sorted(self.old - self.new)
