"""tooz group membership with liveness in Consul (schemes ``consul``, ``consul+https``).

tooz removed its Consul driver in 9.0, and it never gave members liveness.
This one has two modes:

**registered** (default) - the library writes members. One Consul session
per coordinator (TTL, ``Behavior=delete``, ``LockDelay=0``); a member is the
key ``<namespace>/<group>/members/<member>`` acquired with that session, its
value holding the capabilities, so it vanishes when the session dies. A
heartbeat is one session renewal. When Consul says the session is gone -
a renewal answered 404, or a ``PUT ?acquire=`` (join, election, lock)
answered 500 ``invalid session`` - a new session is created and every
joined group is re-joined (an acquire is then tried once more);
:attr:`ConsulDriver.session_lost_count` counts those events and the
callbacks in :attr:`ConsulDriver.on_session_lost` are told which groups were
re-joined. ``get_members`` is one recursive GET. Locks and leader election
are keys acquired with the session (:mod:`.consul_lock`). At start one
single-key read of the namespace checks the ACL token may read it (Consul
filters list reads instead of refusing them; :mod:`.consul_api` raises on those).

**catalog** (``mode=catalog``) - operators register services with Consul
and Consul's checks decide liveness; a group is a service name and its
members are the instances whose checks all pass (:mod:`.consul_catalog`).
Writes raise :class:`CatalogReadOnly`.

``ttl`` bounds how long a dead member stays listed. Consul only promises
not to invalidate a session *before* its TTL; its leader does so 2 x TTL
after the last renewal. With a session TTL of ``ttl / 2``, a dead member is
gone within ``ttl`` of its last heartbeat *in steady state*. A Consul leader
election restarts every session timer at full length, so after a failover
such a member can stay up to ``ttl`` after the failover (nearly ``2 * ttl``
after its last heartbeat). The agent must accept the session TTL
(``session_ttl_min``, 10 s by default: ``ttl`` >= 20 on a stock agent).
``timeout`` is tooz's name for ``ttl``. Non-blocking reads use Consul's
``consistent`` mode, backing the ``LINEARIZABLE`` claim (:mod:`.consul_api`).

URL options: :attr:`ConsulDriver.URL_OPTIONS` (what each means, for
operators: ``docs/consul.md``).
"""

from __future__ import annotations

from collections.abc import Callable
import logging
import threading
from typing import Any

import tooz
from tooz import coordination

from servicegroup import urls
from servicegroup.drivers import _base
from servicegroup.drivers import consul_catalog, consul_watch
from servicegroup.drivers.consul_api import CatalogReadOnly, ConsulAPI, SessionGone
from servicegroup.drivers.consul_api import (  # the typed errors, re-exported
    CatalogNotJoined,
    ConsulAccessDenied,
    ConsulServerError,
    ConsulUnreachable,
    ConsulValueTooLarge,
    SessionTTLOutOfRange,
)
from servicegroup.drivers.consul_kv import LOCKS, KVGroups, check_namespace, enc
from servicegroup.drivers.consul_lock import ConsulLock

__all__ = [
    "CatalogNotJoined",
    "CatalogReadOnly",
    "ConsulAccessDenied",
    "ConsulDriver",
    "ConsulServerError",
    "ConsulUnreachable",
    "ConsulValueTooLarge",
    "SessionTTLOutOfRange",
]

LOG = logging.getLogger(__name__)
Capabilities = _base.Capabilities


def _opt(options: dict[str, Any], name: str) -> str | None:
    raw = options.get(name)
    if isinstance(raw, list):
        raw = raw[-1] if raw else None
    return None if raw is None else str(raw)


class ConsulDriver(coordination.CoordinationDriverCachedRunWatchers):
    """The tooz driver (see module docstring). Answers synchronously."""

    URL_OPTIONS: frozenset[str] = frozenset(
        {
            "ttl",
            "timeout",
            "token",
            "namespace",
            "mode",
            "catalog_member",
            "ca_file",
            "cert_file",
            "key_file",
            "verify",
            "connect_timeout",
        }
    )
    DEFAULT_TTL = 30.0
    CHARACTERISTICS = (
        coordination.Characteristics.DISTRIBUTED_ACROSS_THREADS,
        coordination.Characteristics.DISTRIBUTED_ACROSS_PROCESSES,
        coordination.Characteristics.DISTRIBUTED_ACROSS_HOSTS,
        coordination.Characteristics.LINEARIZABLE,  # reads are ?consistent (consul_api)
        coordination.Characteristics.SEQUENTIAL,
    )

    def __init__(self, member_id: bytes, parsed_url: Any, options: dict[str, Any]) -> None:
        super().__init__(member_id, parsed_url, options)
        unknown = sorted(set(options) - self.URL_OPTIONS)
        if unknown:
            raise _base.InvalidOption(
                f"unknown option(s) {', '.join(unknown)} for the Consul backend; "
                f"known: {', '.join(sorted(self.URL_OPTIONS))}"
            )
        self._member_raw = _base.to_id(member_id)
        self.member_label = self._member_raw.decode("utf-8")
        self.ttl = self._parse_ttl(options)
        # Consul drops a session 2 x TTL after its last renewal (steady state).
        self.session_ttl = self.ttl / 2.0
        self.mode = (_opt(options, "mode") or "registered").lower()
        if self.mode not in ("registered", "catalog"):
            raise _base.InvalidOption(f"option mode={self.mode!r}: use registered or catalog")
        self.namespace = (_opt(options, "namespace") or "servicegroup").strip("/")
        if not self.namespace:
            raise _base.InvalidOption("option namespace must not be empty")
        try:
            check_namespace(self.namespace)
        except ValueError as exc:
            raise _base.InvalidOption(f"option {exc}") from None
        host = parsed_url.hostname or "127.0.0.1"
        try:
            port = parsed_url.port or 8500
        except ValueError:
            raise _base.InvalidOption("malformed port in Consul URL") from None
        scheme = "https" if parsed_url.scheme.endswith("+https") else "http"
        verify: bool | str = (_opt(options, "verify") or "true").lower() not in ("0", "false", "no")
        if _opt(options, "ca_file"):
            verify = str(_opt(options, "ca_file"))
        cert_file, key_file = _opt(options, "cert_file"), _opt(options, "key_file")
        cert = (cert_file, key_file) if cert_file and key_file else cert_file
        self._api = ConsulAPI(
            host,
            port,
            scheme,
            token=_opt(options, "token"),
            verify=verify,
            cert=cert,
            connect_timeout=_base.parse_float_option(options, "connect_timeout", 5.0, minimum=0.1),
        )
        self.where = self._api.where
        self._session: str | None = None
        self._session_mutex = threading.RLock()
        self._recovering = False  # guarded by _session_mutex
        self._locks_mutex = threading.RLock()
        self._held_locks: dict[bytes, ConsulLock] = {}
        self._capabilities: dict[bytes, Capabilities | None] = {}
        self._leading: set[bytes] = set()
        self._indexes: dict[bytes, str] = {}
        #: How many times the session was found expired and replaced.
        self.session_lost_count = 0
        #: Called with the set of groups re-joined after a lost session.
        self.on_session_lost: list[Callable[[set[bytes]], None]] = []
        self._groups: KVGroups | consul_catalog.CatalogGroups
        if self.mode == "catalog":
            self._groups = consul_catalog.CatalogGroups(
                self._api, _opt(options, "catalog_member") or "id", self._member_raw
            )
        else:
            self._groups = KVGroups(self)

    @staticmethod
    def _parse_ttl(options: dict[str, Any]) -> float:
        ttl, timeout = _opt(options, "ttl"), _opt(options, "timeout")
        if ttl is not None and timeout is not None and float(ttl) != float(timeout):
            raise _base.InvalidOption(
                f"options ttl={ttl} and timeout={timeout} are one setting (timeout is tooz's "
                "name for ttl); set only one (servicegroup adds ttl=<service_down_time> "
                "when the URL has none)"
            )
        name = "ttl" if ttl is not None else "timeout"
        value = _base.parse_float_option(options, name, ConsulDriver.DEFAULT_TTL, minimum=0.001)
        if value > 2 * 86400:
            raise _base.InvalidOption(f"option {name}={value:g} is above 48h (2 x Consul's 24h session TTL cap)")
        return value

    def __repr__(self) -> str:
        return f"<ConsulDriver {self.mode} {urls.redact(self.where)} ns={self.namespace}>"

    # -- session ----------------------------------------------------------

    def _new_session(self) -> str:
        return self._api.session_create(
            self.session_ttl,
            f"servicegroup:{self.member_label}",
            f"ttl={self.ttl:g}s (a {self.session_ttl:g}s session TTL: Consul invalidates a "
            f"session 2x its TTL after its last renewal, so the session TTL is ttl/2)",
        )

    def _ensure_session(self) -> str:
        with self._session_mutex:
            if self._session is None:
                self._session = self._new_session()
            return self._session

    def _start(self) -> None:
        self._groups.probe()
        if self.mode != "catalog":
            self._ensure_session()
        self._capabilities.clear()
        self._leading.clear()

    def _stop(self) -> None:
        with self._session_mutex:
            sid, self._session = self._session, None
        with self._locks_mutex:
            self._held_locks.clear()
        self._leading.clear()
        if sid is not None:
            try:
                self._api.session_destroy(sid)  # deletes our keys at once
            except tooz.ToozError as exc:
                LOG.warning("could not destroy Consul session on %s (it expires by TTL): %s", self.where, exc)

    def heartbeat(self) -> float:
        """Renew the session (one PUT); replace it and re-join if Consul lost
        it. Returns the seconds until the next beat: a third of the session
        TTL, so several renewals fit in the TTL."""
        with self._session_mutex:
            sid = self._session
            if sid is None and self.mode == "catalog":
                return self.session_ttl / 3.0
            if sid is not None and self._api.session_renew(sid):
                return self.session_ttl / 3.0
            self._recover_session()
        return self.session_ttl / 3.0

    def acquire_key(self, key: str, value: str, what: str | None = None) -> bool:
        """``PUT key?acquire=<our session>``: True if we hold *key* now
        (*what* names the value in a :class:`ConsulValueTooLarge`).

        A session can expire before a heartbeat notices (a stalled process,
        a paused VM); Consul then answers 500 ``invalid session``. That is
        handled like a renewal answered 404: the session is replaced and
        every joined group re-joined (:meth:`_recover_session`), then the
        PUT is tried once more with the new session.
        """
        sid = self._ensure_session()
        try:
            return self._api.kv_put(key, value, acquire=sid, what=what)
        except SessionGone:
            with self._session_mutex:
                if self._recovering:  # re-joining after a loss: the caller logs it
                    raise
                if self._session == sid:  # else another thread already replaced it
                    self._recover_session()
        return self._api.kv_put(key, value, acquire=self._ensure_session(), what=what)

    def _recover_session(self) -> None:
        """Replace a lost session and re-join (caller holds ``_session_mutex``)."""
        LOG.warning(
            "Consul session of %s on %s was lost (expired); creating a new one and re-joining %d group(s)",
            self.member_label,
            self.where,
            len(self._joined_groups),
        )
        with self._locks_mutex:
            self._held_locks.clear()  # they died with the session
        self._leading.clear()
        self._session = self._new_session()
        self.session_lost_count += 1
        rejoined: set[bytes] = set()
        self._recovering = True  # a re-join that finds this session gone too is not retried
        try:
            for group in sorted(self._joined_groups):
                try:
                    self._groups.join(group, self._capabilities.get(group))
                    rejoined.add(group)
                except tooz.ToozError as exc:
                    LOG.warning("re-joining %r after a lost Consul session failed: %s", group, exc)
                    self._joined_groups.discard(group)
        finally:
            self._recovering = False
        for cb in list(self.on_session_lost):
            try:
                cb(rejoined)
            except Exception:  # a listener's bug must not stop heart-beating
                LOG.exception("on_session_lost callback failed")

    # -- groups (tooz API) ------------------------------------------------

    def create_group(self, group_id: bytes) -> _base.SyncResult[None]:
        return _base.SyncResult.of(lambda: self._groups.create(_base.to_id(group_id, "group id")))

    def delete_group(self, group_id: bytes) -> _base.SyncResult[None]:
        return _base.SyncResult.of(lambda: self._groups.delete(_base.to_id(group_id, "group id")))

    def get_groups(self) -> _base.SyncResult[list[bytes]]:
        return _base.SyncResult.of(self._groups.groups)

    def join_group(self, group_id: bytes, capabilities: Capabilities | None = None) -> _base.SyncResult[None]:
        def join() -> None:
            gid = _base.to_id(group_id, "group id")
            if gid in self._joined_groups:
                raise coordination.MemberAlreadyExist(gid, self._member_raw)
            self._groups.join(gid, capabilities)
            self._capabilities[gid] = capabilities
            self._joined_groups.add(gid)

        return _base.SyncResult.of(join)

    def join_group_create(self, group_id: bytes, capabilities: Capabilities | None = None) -> None:
        """tooz's version sleeps a retry interval (about 1 s) after creating
        the group; our calls are synchronous, so join again at once."""
        for _ in range(5):
            try:
                self.join_group(group_id, capabilities).get()
                return
            except coordination.GroupNotCreated:
                try:
                    self.create_group(group_id).get()
                except coordination.GroupAlreadyExist:
                    pass
        self.join_group(group_id, capabilities).get()  # deleted under us 5 times: say so

    def leave_group(self, group_id: bytes) -> _base.SyncResult[None]:
        def leave() -> None:
            gid = _base.to_id(group_id, "group id")
            try:
                self._groups.leave(gid)
            finally:
                self._joined_groups.discard(gid)
                self._capabilities.pop(gid, None)

        return _base.SyncResult.of(leave)

    def get_members(self, group_id: bytes) -> _base.SyncResult[set[bytes]]:
        return _base.SyncResult.of(lambda: set(self._members(group_id)))

    def get_members_with_capabilities(self, group_id: bytes) -> _base.SyncResult[dict[bytes, Capabilities | None]]:
        return _base.SyncResult.of(lambda: {m: info["capabilities"] for m, info in self._members(group_id).items()})

    def get_member_capabilities(self, group_id: bytes, member_id: bytes) -> _base.SyncResult[Capabilities | None]:
        return _base.SyncResult.of(lambda: self._member(group_id, member_id)["capabilities"])

    def get_member_info(self, group_id: bytes, member_id: bytes) -> _base.SyncResult[dict[str, Any]]:
        return _base.SyncResult.of(lambda: self._member(group_id, member_id))

    def update_capabilities(self, group_id: bytes, capabilities: Capabilities) -> _base.SyncResult[None]:
        def update() -> None:
            gid = _base.to_id(group_id, "group id")
            self._groups.update(gid, capabilities)
            self._capabilities[gid] = capabilities

        return _base.SyncResult.of(update)

    def _members(self, group_id: bytes) -> dict[bytes, dict[str, Any]]:
        gid = _base.to_id(group_id, "group id")
        index, members = self._groups.members(gid)
        self._indexes[gid] = index
        return members

    def _member(self, group_id: bytes, member_id: bytes) -> dict[str, Any]:
        gid = _base.to_id(group_id, "group id")
        mid = _base.to_id(member_id)
        return self._groups.member(gid, mid)

    # -- watching -----------------------------------------------------------

    def run_watchers(self, timeout: float | None = None) -> list[Any]:
        """Fire join/leave hooks for changes since the last call.

        With no *timeout* this is one read per watched group, like every
        tooz driver. With a *timeout*, when nothing changed yet, it waits for
        a change with Consul blocking queries (``?index=``) - no polling -
        and returns as soon as there are events or after *timeout*.
        """
        result = super().run_watchers()
        watched = set(self._hooks_join_group) | set(self._hooks_leave_group)
        if not result and timeout and watched and self.wait_for_change(watched, timeout):
            result = super().run_watchers()
        self.run_elect_coordinator()
        return result

    def wait_for_change(self, group_ids: set[bytes], timeout: float) -> bool:
        """Block until a member of one of *group_ids* changes since this
        driver last read it, or *timeout* passes (:func:`.consul_watch.wait_for_change`)."""
        return consul_watch.wait_for_change(self._groups, self._indexes, group_ids, timeout)

    def subscribe(self, group_id: bytes, poke: Callable[[], None], wait: float = 30.0) -> Callable[[], None]:
        """Call *poke* whenever *group_id*'s members may have changed; the
        push hook for :mod:`servicegroup.push` (:func:`.consul_watch.subscribe`).
        Returns the function that stops it."""
        return consul_watch.subscribe(self._groups, _base.to_id(group_id, "group id"), poke, wait, self.where)

    # -- leader election ------------------------------------------------------

    def watch_elected_as_leader(self, group_id: bytes, callback: Any) -> None:
        if self.mode == "catalog":
            raise CatalogReadOnly("leader election writes to Consul: not available in catalog mode")
        super().watch_elected_as_leader(group_id, callback)

    def run_elect_coordinator(self) -> None:
        """Try to take the leader key of every group we run for; hooks fire
        once per election won (tooz's contract), not on every call."""
        for gid, hooks in list(self._hooks_elected_leader.items()):
            if gid in self._leading:
                continue
            if self._groups.try_lead(gid):
                self._leading.add(gid)
                hooks.run(coordination.LeaderElected(gid, self._member_raw))

    def stand_down_group_leader(self, group_id: bytes) -> bool:
        gid = _base.to_id(group_id, "group id")
        self._leading.discard(gid)
        if self.mode == "catalog":
            return False
        return self._groups.stand_down(gid)

    # tooz annotates bytes, but a group without a leader answers None (its suite asserts it).
    def get_leader(self, group_id: bytes) -> _base.SyncResult[bytes | None]:  # type: ignore[override]
        return _base.SyncResult.of(lambda: self._groups.leader(_base.to_id(group_id, "group id")))

    # -- locks ------------------------------------------------------------------

    def get_lock(self, name: bytes) -> ConsulLock:
        raw = _base.to_id(name, "lock name")
        return ConsulLock(self, raw, f"{self.namespace}/{LOCKS}/{enc(raw)}")
