"""Topic -> live hosts, for ZeroMQ-style peer-to-peer messaging.

A zmq driver asks, before every send, which hosts a topic stands for
(oslo's matchmaker keys: fanout, one host, direct ``topic.host``). The old
matchmakers answered from their own store, and their bugs were its bugs:
expired hosts never came back, dead ones were never pruned, an empty
answer silently became ``localhost``. This one keeps no store: it answers
from the facade's cached membership view (:meth:`ServiceGroup.members`),
so a lookup costs no backend round trip and a death is seen within the
service's detection bound; an empty answer is
:class:`~servicegroup.errors.NoLiveHosts`, never a guess. Acks and nacks
(:meth:`MatchMaker.ack_alive`, :meth:`MatchMaker.expire`) feed what a
sender learns back into liveness without ever overruling the backend.
Works on every liveness backend: it only calls the facade, through the
methods :class:`~servicegroup.protocols.Membership` names.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
import itertools
import logging
import threading
import time
from typing import Any, TypeVar

from servicegroup import errors
from servicegroup import names
from servicegroup.hashring import HashRing, capability_weight
from servicegroup.protocols import Membership

T = TypeVar("T")

#: Live hosts of a topic (or of one ``topic.host``) with their capabilities.
Members = Mapping[str, Mapping[str, Any]]
#: Turns a non-empty answer into what a lookup returns: ``pick(name, members)``.
Pick = Callable[[str, Members], T]

LOG = logging.getLogger(__name__)


class MatchMaker:
    """Topic lookups over a :class:`~servicegroup.api.ServiceGroup` (or
    anything else that is a :class:`~servicegroup.protocols.Membership`)."""

    def __init__(self, sg: Membership) -> None:
        self._sg = sg
        self._lock = threading.Lock()
        self._known: set[str] = set()
        self._rotation: dict[str, itertools.count[int]] = {}
        self._rings: dict[str, tuple[frozenset[tuple[str, float]], HashRing]] = {}
        self._local_only_nacks: set[tuple[str, str]] = set()
        self._warned: set[tuple[str, str]] = set()

    # -- membership --------------------------------------------------------

    def register(self, topic: str, host: str, capabilities: Mapping[str, Any] | None = None) -> None:
        """Make *host* a live member of *topic*, kept alive by its heartbeat."""
        topic = names.check(topic, "topic")
        self._sg.join(host, topic, capabilities=capabilities)
        with self._lock:
            self._known.add(topic)

    def unregister(self, topic: str, host: str) -> None:
        """Stop being a member of *topic* (others stop seeing it at their next refresh)."""
        self._sg.leave(host, topic)

    # -- lookups -----------------------------------------------------------

    def get_hosts(self, topic: str, wait: float | None = None) -> list[str]:
        """Every live host of *topic* (fanout), or ``[host]`` for ``topic.host``.

        Raises :class:`~servicegroup.errors.NoLiveHosts` when empty, after
        waiting up to *wait* seconds for a first host.
        """
        return self._answer(topic, wait, lambda name, members: sorted(members))

    def get_host(self, topic: str, key: Any = None, wait: float | None = None) -> str:
        """One live host of *topic*; the host itself for ``topic.host``.

        With *key*, consistent-hashed (:class:`~servicegroup.hashring.HashRing`,
        weights from the ``weight`` capability; 0 drains a host: still in
        fanout, owns no key): the same key keeps going to the same host
        while it lives, and when it dies only its keys move. Without, the
        next host in rotation (round robin).
        """

        def pick(name: str, members: Members) -> str:
            hosts = sorted(members)
            if len(hosts) == 1:
                return hosts[0]
            if key is not None:
                return self._ring(name, members).owner(key if isinstance(key, (str, bytes)) else str(key))
            with self._lock:
                counter = self._rotation.setdefault(name, itertools.count())
                return hosts[next(counter) % len(hosts)]

        return self._answer(topic, wait, pick)

    def capabilities(self, topic: str, host: str) -> dict[str, Any]:
        """The capabilities *host* registered in *topic* (e.g. its endpoint);
        ``NoLiveHosts`` if it is not live."""
        caps = self._sg.members(topic).get(host)
        if caps is None:
            raise errors.NoLiveHosts(f"{topic}.{host}")
        return dict(caps)

    # -- acks and nacks ----------------------------------------------------

    def ack_alive(self, topic: str, host: str) -> bool:
        """A send to *host* succeeded; returns whether it is an answer now.

        A send proves only that the host answered once, so this never lists
        a host the backend does not list (that would resurrect a wedged or
        fenced service) and never writes another process's heartbeat. It
        lifts this MatchMaker's nack when that nack never reached the
        backend and the backend still lists the host unchanged.
        """
        with self._lock:
            local_only = (topic, host) in self._local_only_nacks
        if local_only and self._sg.unexpire(topic, host):
            with self._lock:
                self._local_only_nacks.discard((topic, host))
            LOG.info("%s answered after a nack that never reached the backend: listed again in %r", host, topic)
        return host in self._sg.members(topic)

    def expire(self, topic: str, host: str) -> bool:
        """A send to *host* failed: drop it from answers at once, everywhere,
        until its own heartbeat re-joins it (within one ``report_interval``
        if it is alive, with a new incarnation).

        Returns False if only the local part was done: the backend could not
        be reached (logged), or it cannot remove members (Consul's catalog
        mode, whose members Consul's checks own). Such a nack lapses after
        ``service_down_time``: a host is never hidden for good.
        """
        try:
            removed = self._sg.expire(topic, host)
        except errors.BackendUnavailable as exc:
            LOG.warning("nack of %s in %r applied here only, the backend is unreachable: %s", host, topic, exc)
            removed = False
        if not removed:  # unreachable, or a backend whose members we cannot remove
            with self._lock:
                self._local_only_nacks.add((topic, host))
            return False
        with self._lock:
            self._local_only_nacks.discard((topic, host))
        return True

    # -- internals ---------------------------------------------------------

    def _resolve(self, name: str) -> Members:
        """Live hosts (with capabilities) that *name* stands for; no I/O once
        the topics are in the view.

        Topics may contain dots, so *name* is read as direct ``topic.host``
        only when it is not a known topic (registered through this
        MatchMaker, or answered as a topic before) and the part after its
        LAST dot is a live member of the topic before it. Anything else is
        a topic lookup of the whole name, so a dead host's direct name is
        (normally) empty. Host names with dots cannot be addressed this way:
        name hosts without dots and put the endpoint in the capabilities.
        """
        with self._lock:
            known = name in self._known
        if not known and "." in name:
            topic, _, host = name.rpartition(".")
            if topic and host:
                caps = self._sg.members(topic).get(host)
                if caps is not None:
                    return {host: caps}
        members = self._sg.members(name)
        if members and not known:
            with self._lock:
                self._known.add(name)
        return members

    def _answer(self, name: str, wait: float | None, pick: Pick[T]) -> T:
        name = names.check(name, "topic")
        members = self._resolve(name)
        if members:
            return pick(name, members)
        if not wait or wait <= 0:
            raise errors.NoLiveHosts(name)
        return self._wait_for_first(name, wait, pick)

    def _wait_for_first(self, name: str, wait: float, pick: Pick[T]) -> T:
        """Wait up to *wait* seconds, woken by join events, for a first host."""
        changed = threading.Event()
        watched = [name]
        if "." in name:
            watched.append(name.rpartition(".")[0])
        handles = [self._sg.watch(t, on_join=lambda t, h: changed.set()) for t in watched if t]
        deadline = time.monotonic() + wait
        try:
            while True:
                # Check after the watch is in place: a join between the first
                # look and the watch is in the watch's baseline, not an event.
                members = self._resolve(name)
                if members:
                    return pick(name, members)
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise errors.NoLiveHosts(name)
                changed.wait(remaining)
                changed.clear()
        finally:
            for handle in handles:
                handle.cancel()

    def _ring(self, topic: str, members: Members) -> HashRing:
        """The hash ring over *members*, rebuilt only when they change."""
        shape = frozenset(
            (h, capability_weight(c, member=h, warned=self._warned, group=topic)) for h, c in members.items()
        )
        with self._lock:
            cached = self._rings.get(topic)
            if cached is not None and cached[0] == shape:
                return cached[1]
        weights = dict(shape)
        # All members draining (weight 0) must not empty the answer.
        ring = HashRing(weights if any(weights.values()) else list(weights))
        with self._lock:
            self._rings[topic] = (shape, ring)
        return ring


__all__ = ["MatchMaker"]
