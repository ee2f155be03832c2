"""Exclusive and shared locks on Consul sessions, for the Consul backend.

Consul's semaphore recipe (HashiCorp tutorial "Create a distributed
semaphore with Consul KV store and sessions"), turned into a reader/writer
lock. Everything for lock *name* lives under ``<namespace>/=locks/<name>/``
(``<name>`` encoded like every id, see :mod:`.consul_kv`):

- ``<token>`` - a *contender* key, one per acquisition, acquired with the
  coordinator's session (``PUT ?acquire=<session>``, through
  ``ConsulDriver.acquire_key``, which replaces a session Consul reports
  gone and tries again). Consul deletes it when the session dies
  (``Behavior=delete``);
- ``.lock`` - the *lock key*, JSON ``{"holders": {token: {"member",
  "session", "shared"}}}``, only ever changed by check-and-set
  (``?cas=<ModifyIndex>``, ``cas=0`` to create it), so writers that race on
  it are serialised: one wins, the others re-read.

A listed holder counts only while its contender key exists and is held by
the session named in its entry: a crashed holder's key vanishes with its
session, so it is ignored (and pruned by the next writer) instead of holding
the lock for ever. The recipe's slot limit becomes the reader/writer rule:
a shared holder may join when every live holder is shared, an exclusive one
only when there is none.

Contender keys are per acquisition, not per session as in the recipe: a
coordinator has one session, yet two lock objects on one name (two threads)
must still exclude each other.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import threading
import time
from typing import TYPE_CHECKING, Any
import uuid

import tooz
from tooz import locking

if TYPE_CHECKING:
    from servicegroup.drivers.consul import ConsulDriver

#: Longest single blocking query while waiting for a lock (seconds): short
#: enough to notice a stopped coordinator, long enough not to poll.
_MAX_WAIT = 5.0
#: The lock key's name under the lock prefix (never a token: tokens are hex).
_LOCK_KEY = ".lock"


@dataclasses.dataclass
class _Hold:
    """What one lock object holds: its contender token, the session it was
    taken with (a new session means the hold died with the old one), the
    mode, and how often a shared hold was re-entered."""

    token: str
    session: str
    shared: bool
    count: int = 1


@dataclasses.dataclass
class _View:
    """One recursive read of the lock prefix."""

    index: str  # X-Consul-Index, for a blocking query on the prefix
    cas: int  # the lock key's ModifyIndex; 0 when it does not exist
    holders: dict[str, dict[str, Any]]  # live holders only, by token
    contenders: dict[str, str | None]  # contender token -> its session


class ConsulLock(locking.Lock):
    """A reader/writer lock under ``<key>/`` (layout in the module docstring).

    ``acquire(shared=True)`` may be re-entered by the same object; each
    acquisition needs its own :meth:`release`.
    """

    def __init__(self, coord: ConsulDriver, name: bytes, key: str) -> None:
        super().__init__(name)
        self._coord = coord
        self._api = coord._api
        self._prefix = key + "/"
        self._lock_key = self._prefix + _LOCK_KEY
        self._hold: _Hold | None = None
        self._mutex = threading.RLock()  # guards _hold

    # -- reading ------------------------------------------------------------

    def _read(self) -> _View:
        index, entries = self._api.kv_get(self._prefix, recurse=True)
        cas, listed, contenders = 0, {}, {}
        for entry in entries or []:
            tail = entry["Key"][len(self._prefix) :]
            if tail == _LOCK_KEY:
                cas, listed = int(entry["ModifyIndex"]), _holders_of(entry)
            else:
                contenders[tail] = entry.get("Session")
        live = {tok: h for tok, h in listed.items() if h.get("session") and contenders.get(tok) == h["session"]}
        return _View(index, cas, live, contenders)

    def _listed(self, hold: _Hold) -> bool:
        return hold.token in self._read().holders

    # -- acquiring ----------------------------------------------------------

    def acquire(self, blocking: bool | float = True, shared: bool = False, timeout: int | None = None) -> bool:
        """Take the lock, shared (many holders) or exclusive (one, and no
        shared ones); *blocking* is True (wait forever), False (one try) or
        a number of seconds (*timeout* is not used). Waiting is a Consul
        blocking query on the lock prefix, not a sleep loop: any holder
        leaving or dying wakes it."""
        if shared and self._reenter():
            return True
        deadline = None if blocking is True else (time.monotonic() + float(blocking) if blocking else time.monotonic())
        token = uuid.uuid4().hex
        contender = json.dumps({"member": self._coord.member_label})
        self._coord.acquire_key(self._prefix + token, contender)
        won = False
        try:
            while True:
                sid = self._coord._ensure_session()
                view = self._read()
                if view.contenders.get(token) != sid:
                    # Not (or no longer) ours: the first put was refused, or
                    # the session was replaced and Consul deleted the key
                    # with the old one. Register again; a refusal waits.
                    if self._coord.acquire_key(self._prefix + token, contender):
                        continue  # registered, maybe with a new session: re-read
                elif _admits(view.holders, shared):
                    mine = {"member": self._coord.member_label, "session": sid, "shared": shared}
                    holders = {**view.holders, token: mine}
                    what = f"the holder list of lock {self.name!r} ({len(holders)} holders)"
                    if self._api.kv_put(self._lock_key, json.dumps({"holders": holders}), cas=view.cas, what=what):
                        with self._mutex:
                            self._hold = _Hold(token, sid, shared)
                        won = True
                        return True
                    continue  # another writer got there first: re-read
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    return False
                wait = _MAX_WAIT if left is None else min(left, _MAX_WAIT)
                self._api.kv_get(self._prefix, recurse=True, index=view.index, wait=wait)
        finally:
            if not won:
                self._withdraw(token)

    def _reenter(self) -> bool:
        """Count one more shared acquisition on a shared hold that Consul
        still lists (not broken, session alive)."""
        with self._mutex:
            hold = self._hold
            if hold is None or not hold.shared or not self.acquired:
                return False
            if not self._listed(hold):
                self._hold = None
                self._withdraw(hold.token)
                return False
            hold.count += 1
            return True

    def _withdraw(self, token: str) -> None:
        """Delete a contender key, best effort: if Consul cannot be reached
        the key still dies with the session."""
        with contextlib.suppress(tooz.ToozError):
            self._api.kv_delete(self._prefix + token)

    # -- releasing ----------------------------------------------------------

    def release(self) -> bool:
        """Release one acquisition by this object; False if it holds nothing,
        or its hold is gone (broken, or its session died) - even when the
        lock was taken by someone else meanwhile."""
        with self._mutex:
            hold, self._hold = self._hold, None
            if hold is None or hold.session != self._coord._session:
                return False
            if hold.count > 1:
                if not self._listed(hold):
                    self._withdraw(hold.token)
                    return False
                hold.count -= 1
                self._hold = hold
                return True
            return self._unlist(hold)

    def _unlist(self, hold: _Hold) -> bool:
        """Take *hold* off the lock key (check-and-set, retried when another
        writer got in between), then drop its contender key."""
        while True:
            view = self._read()
            if hold.token not in view.holders:
                self._withdraw(hold.token)
                return False
            rest = {tok: h for tok, h in view.holders.items() if tok != hold.token}
            if rest:
                done = self._api.kv_put(self._lock_key, json.dumps({"holders": rest}), cas=view.cas)
            else:
                # Delete rather than leave an empty list: a lock key per
                # name would pile up in the KV store.
                done = self._api.kv_delete(self._lock_key, cas=view.cas)
            if done:
                self._withdraw(hold.token)
                return True

    def break_(self) -> bool:
        """Forcefully free the lock whoever holds it (tooz: for tests and
        operators); True if it was held. Deleting the lock key unlists every
        holder; waiting contenders keep their keys and are woken."""
        held = bool(self._read().holders)
        self._api.kv_delete(self._lock_key)
        with self._mutex:
            self._hold = None
        return held

    # -- state --------------------------------------------------------------

    @property
    def acquired(self) -> bool:
        """Held by this object, as far as it knows without asking Consul
        (a replaced session means the hold died with the old one)."""
        hold = self._hold
        return hold is not None and hold.session == self._coord._session

    def is_still_owner(self) -> bool:
        hold = self._hold
        return hold is not None and self.acquired and self._listed(hold)

    def heartbeat(self) -> bool:
        """Keep the lock alive: renews the coordinator's session."""
        if not self.acquired:
            return False
        self._coord.heartbeat()
        return self.acquired

    def holders(self) -> list[dict[str, Any]]:
        """Every live holder: ``{"member", "lock", "shared"}`` (``lock`` is
        the holder's contender token)."""
        return [
            {"member": h.get("member"), "lock": tok, "shared": bool(h.get("shared"))}
            for tok, h in sorted(self._read().holders.items())
        ]

    def holder(self) -> dict[str, Any] | None:
        """The exclusive holder, or one of the shared ones; None if free."""
        found = self.holders()
        return found[0] if found else None


def _holders_of(entry: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The holder list of a lock key; an unreadable value lists nobody."""
    try:
        holders = json.loads(entry.get("Value") or b"{}").get("holders")
    except (ValueError, AttributeError):
        return {}
    if not isinstance(holders, dict):
        return {}
    return {str(tok): h for tok, h in holders.items() if isinstance(h, dict)}


def _admits(holders: dict[str, dict[str, Any]], shared: bool) -> bool:
    """The reader/writer rule over the live holders."""
    if shared:
        return all(h.get("shared") for h in holders.values())
    return not holders
