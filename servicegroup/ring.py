"""Work partitioning over a group's live members, and rebalancing as it changes.

:class:`Partitioner` is what ``sg.partitioner(group)`` returns: a
:class:`~servicegroup.hashring.HashRing` rebuilt from the *full* live
member list of a group on every membership change (never patched
incrementally: rings that applied join/leave diffs drifted apart between
processes), which tells this member, once per change, which of its keys it
gained and lost.

With a :class:`~servicegroup.fencing.SelfFence` (``sg.partitioner()``
gives one), ownership is also a lease: a member that cannot confirm its own
membership for the lease's length owns nothing (``owns()`` False, every key
reported lost) until it can again, and that happens before the others can
read it as down and take its keys (invariant 3 of docs/clusters.md).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from servicegroup import errors, names
from servicegroup.fencing import SelfFence, Tokens
from servicegroup.hashring import (  # re-exported: servicegroup.ring is where users look
    DEFAULT_POINTS,
    DEFAULT_PROBES,
    MAX_WEIGHT,
    WEIGHT_CAPABILITY,
    EmptyRing,
    HashRing,
    Key,
    key_bytes,
    capability_weight,
)
from servicegroup.protocols import GroupView

LOG = logging.getLogger(__name__)

#: ``callback(gained, lost)``: keys of the caller's key set this member gained and lost.
RebalanceCallback = Callable[[set[Key], set[Key]], None]

__all__ = [
    "DEFAULT_POINTS",
    "DEFAULT_PROBES",
    "MAX_WEIGHT",
    "WEIGHT_CAPABILITY",
    "EmptyRing",
    "HashRing",
    "Partitioner",
    "RebalanceHandle",
    "capability_weight",
]


class RebalanceHandle:
    """Returned by :meth:`Partitioner.on_rebalance`; ``cancel()`` unsubscribes."""

    def __init__(self, partitioner: Partitioner, callback: RebalanceCallback) -> None:
        self._partitioner = partitioner
        self.callback = callback

    def cancel(self) -> None:
        self._partitioner._remove_callback(self.callback)


class Partitioner:
    """Work partitioning over the live members of *group*.

    ``owner(key)`` answers for any key; ``owns(key)`` is whether *host* (this
    member) owns it; ``on_rebalance(cb)`` calls ``cb(gained, lost)`` once per
    membership change with the keys of the caller's key set (``keys=`` or
    :meth:`set_keys`) this member gained and lost.

    The ring is rebuilt from ``sg.members(group)`` (the full list) on every
    join/leave event: an event is only a trigger, never applied as a diff,
    so two processes that saw different event sequences still agree once
    their views agree. Events that turn out to change nothing (merged
    changes, duplicates) produce no callback.

    Thread-safety: lookups read one immutable :class:`HashRing` reference,
    swapped atomically after a rebuild, so ``owner()``/``owns()`` may run on
    any thread during a rebalance and see either the old or the new ring,
    never a mix. Rebuilds and callbacks run under one re-entrant lock, on
    the facade's dispatcher thread (or the caller's, for :meth:`refresh`).
    """

    def __init__(
        self,
        sg: GroupView,
        group: str,
        *,
        host: str | None = None,
        keys: Iterable[Key] | None = None,
        points_per_member: int = DEFAULT_POINTS,
        replicas: int = 1,
        probes: int = DEFAULT_PROBES,
        fence: SelfFence | None = None,
    ) -> None:
        self._sg = sg
        self._group = names.check(group, "topic")
        self._host = names.check(host, "host") if host is not None else None
        if replicas < 1:
            raise ValueError(f"replicas must be >= 1, not {replicas}")
        self._replicas = replicas
        self._keys: frozenset[Key] = self._normalise_keys(keys)
        self._lock = threading.RLock()
        self._callbacks: list[RebalanceCallback] = []
        #: (member, weight) pairs already warned about (see capability_weight).
        self._warned: set[tuple[str, str]] = set()
        self._warned_ambiguous = False
        # Validates points/probes before anything is subscribed.
        self._ring = HashRing({}, points_per_member, probes)
        self._owned: frozenset[Key] = frozenset()
        self._stopped = False
        self._fence = fence
        #: The fence has taken every key away (reported lost) until re-confirmed.
        self._fenced = False
        self._tokens = Tokens()
        #: Token of the ownership period that began at the last rebuild or unfence.
        self._epoch = self._tokens.take()
        self._fence_stop = threading.Event()
        # Subscribe before the first build: a change in between is then seen
        # by a second rebuild instead of being lost.
        # on_change, not join/leave: it also fires when a host is fenced, when
        # capabilities (weights) change and when reads recover, all of which
        # change the ring without a join or leave.
        self._watch = sg.watch(self._group, on_change=self._on_change)
        try:
            self._rebuild(notify=False)
        except BaseException:
            self._watch.cancel()
            raise
        if fence is not None:
            threading.Thread(target=self._fence_loop, name=f"servicegroup-fence-{group}", daemon=True).start()

    # -- lookups (lock-free) ----------------------------------------------
    @property
    def group(self) -> str:
        return self._group

    @property
    def host(self) -> str | None:
        """The member this partitioner answers ``owns()`` for (None: observer)."""
        return self._host

    @property
    def ring(self) -> HashRing:
        """The current ring: an immutable snapshot for several consistent lookups."""
        return self._ring

    def owner(self, key: Key) -> str:
        """The live member owning *key*; :class:`~servicegroup.errors.NoLiveHosts` if none."""
        try:
            return self._ring.owner(key)
        except EmptyRing:
            raise errors.NoLiveHosts(self._group) from None

    def owners(self, key: Key, replicas: int | None = None) -> list[str]:
        """The owner of *key* followed by its replicas (``replicas`` default: the partitioner's)."""
        try:
            return self._ring.owners(key, replicas or self._replicas)
        except EmptyRing:
            raise errors.NoLiveHosts(self._group) from None

    def owns(self, key: Key) -> bool:
        """Whether this member (``host``) owns *key*, or holds one of its
        replicas; False while it cannot confirm its membership (fenced)."""
        host = self._require_host()
        ring = self._ring
        if host not in ring or not len(ring) or not self._lease_valid(host):
            return False
        if self._replicas == 1:
            return ring.owner(key) == host
        return host in ring.owners(key, self._replicas)

    def members(self) -> list[str]:
        """The members of the current ring, sorted."""
        return list(self._ring.members)

    def owned(self) -> frozenset[Key]:
        """The keys of the caller's key set this member owns now (none
        while fenced)."""
        host = self._host
        if host is not None and not self._lease_valid(host):
            return frozenset()
        return self._owned

    def token(self, key: Key) -> int | None:
        """The fencing token of this member's ownership of *key*, or None
        when it does not own it now. Tokens only grow, and a later owner's
        is larger (:class:`~servicegroup.fencing.Tokens`): pass it with every
        write about *key* so the store can refuse a stale owner's."""
        return self._epoch if self.owns(key) else None

    def fenced(self) -> bool:
        """Whether this member gave up its keys for want of a confirmed membership."""
        host = self._host
        return host is not None and not self._lease_valid(host)

    def check_fence(self) -> None:
        """Report a fence (every key lost) or its end (every key gained) to
        the callbacks, once each. A thread calls this every few tenths of
        the margin; tests with a fake clock call it after moving the clock."""
        with self._lock:
            host = self._host
            if self._stopped or self._fence is None or host is None:
                return
            valid = self._lease_valid(host)
            if valid == (not self._fenced):
                return
            self._fenced = not valid
            owned = set(self._owned)
            if self._fenced:
                LOG.warning(
                    "group %s: %s cannot confirm its membership for %gs: self-fenced, giving up %d keys",
                    self._group,
                    host,
                    self._fence.lease,
                    len(owned),
                )
                gained, lost = set(), owned
            else:
                LOG.warning(
                    "group %s: %s confirmed its membership again: owning %d keys", self._group, host, len(owned)
                )
                self._epoch = self._tokens.take()
                gained, lost = owned, set()
            for cb in list(self._callbacks):
                self._call(cb, set(gained), set(lost))

    # -- key set and callbacks --------------------------------------------
    def set_keys(self, keys: Iterable[Key]) -> None:
        """Replace the key set that rebalance callbacks report on.

        Not a membership change: no callback fires; read :meth:`owned`.
        """
        normalised = self._normalise_keys(keys)
        with self._lock:
            self._keys = normalised
            self._owned = self._owned_by(self._ring)

    def on_rebalance(self, callback: RebalanceCallback, *, initial: bool = False) -> RebalanceHandle:
        """Call ``callback(gained, lost)`` once per membership change.

        With ``initial=True`` it is also called at once with the keys owned
        now (``gained``) and an empty ``lost``, under the same lock as the
        rebuilds: nothing can change between that call and the next one, so
        a worker that starts this way never misses or double-counts a key.
        Callbacks run on the facade's dispatcher thread; an exception is
        logged and does not stop the other callbacks or later rebalances.
        """
        with self._lock:
            self._callbacks.append(callback)
            if initial:
                self._call(callback, set(self._owned) if not self._fenced else set(), set())
        return RebalanceHandle(self, callback)

    def _remove_callback(self, callback: RebalanceCallback) -> None:
        with self._lock:
            if callback in self._callbacks:
                self._callbacks.remove(callback)

    def refresh(self) -> bool:
        """Rebuild from the current member list now; True if it changed.

        Events drive rebuilds; this is for a caller that wants to resync
        (say, after its own membership was restored). Errors propagate.
        """
        return self._rebuild(notify=True)

    def stop(self) -> None:
        """Stop following membership; lookups keep answering from the last ring."""
        with self._lock:
            if self._stopped:
                return
            self._stopped = True
            self._callbacks.clear()
        self._fence_stop.set()
        self._watch.cancel()

    def __enter__(self) -> Partitioner:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"<Partitioner group={self._group!r} host={self._host!r} members={len(self._ring.members)}>"

    # -- internals ---------------------------------------------------------
    @staticmethod
    def _normalise_keys(keys: Iterable[Key] | None) -> frozenset[Key]:
        if keys is None:
            return frozenset()
        result = frozenset(keys)
        for key in result:
            key_bytes(key)  # TypeError now rather than inside a callback
        return result

    def _require_host(self) -> str:
        """This member, for ``owns()``. Lock-free, so a host found here is not
        stored: only a rebuild adopts it, and reports what it then owns."""
        host = self._host or self._joined_host()
        if host is None:
            raise errors.ConfigError(
                f"partitioner for group {self._group!r} does not know which member it is: "
                "pass host= or join the group first"
            )
        return host

    def _joined_host(self) -> str | None:
        """Default ``host``: the one host this ServiceGroup joined to the group."""
        joined = list(self._sg.joined_hosts(self._group))
        if len(joined) > 1:
            raise errors.ConfigError(
                f"this ServiceGroup joined {len(joined)} hosts to group {self._group!r} "
                f"({', '.join(sorted(joined))}): pass host= to the partitioner"
            )
        return joined[0] if joined else None

    def _weight(self, member: str, capabilities: Mapping[str, Any] | None) -> float:
        return capability_weight(capabilities, member=member, warned=self._warned, group=self._group)

    def _owned_by(self, ring: HashRing) -> frozenset[Key]:
        host = self._host
        if host is None or host not in ring or not len(ring) or not self._keys:
            return frozenset()
        if self._replicas == 1:
            owner = ring.owner
            return frozenset(k for k in self._keys if owner(k) == host)
        return frozenset(k for k in self._keys if host in ring.owners(k, self._replicas))

    def _lease_valid(self, host: str) -> bool:
        return self._fence is None or self._fence.valid(self._group, host)

    def _fence_loop(self) -> None:
        assert self._fence is not None
        step = max(0.02, min(0.5, self._fence.lease / 20))
        while not self._fence_stop.wait(step):
            try:
                self.check_fence()
            except Exception:
                LOG.exception("group %s: checking the fence failed", self._group)

    def _on_change(self, topic: str) -> None:
        try:
            self._rebuild(notify=True)
        except Exception:
            LOG.exception("group %s: rebuilding the hash ring failed", topic)

    def _rebuild(self, *, notify: bool) -> bool:
        with self._lock:
            if self._stopped:
                return False
            view = self._sg.members(self._group)
            weights = {m: self._weight(m, caps) for m, caps in view.items()}
            old = self._ring
            host_before = self._host
            if self._host is None:
                try:
                    self._host = self._joined_host()
                except errors.ConfigError as exc:
                    if not notify:
                        raise  # at construction: refuse, the caller can pass host=
                    # Ambiguous since (a second host joined): stay an observer
                    # rather than stop following membership; owns() says why.
                    if not self._warned_ambiguous:
                        self._warned_ambiguous = True
                        LOG.warning("group %s: %s", self._group, exc)
            if weights == dict(old.weights) and self._host == host_before:
                return False  # a merged or duplicate event: nothing changed
            ring = HashRing(weights, old.points_per_member, old.probes)
            owned = self._owned_by(ring)
            gained, lost = owned - self._owned, self._owned - owned
            self._ring = ring  # one reference assignment: atomic for readers
            self._owned = owned
            self._epoch = self._tokens.take()  # any ring change may move keys to us
            if notify and not self._fenced:  # fenced: all was reported lost; the unfence reports what is owned
                LOG.debug(
                    "group %s: %d members, %s gained %d keys and lost %d",
                    self._group,
                    len(ring.members),
                    self._host,
                    len(gained),
                    len(lost),
                )
                for cb in list(self._callbacks):
                    self._call(cb, set(gained), set(lost))
            return True

    def _call(self, callback: RebalanceCallback, gained: set[Key], lost: set[Key]) -> None:
        try:
            callback(gained, lost)
        except Exception:
            LOG.exception("group %s: rebalance callback %r failed", self._group, callback)
