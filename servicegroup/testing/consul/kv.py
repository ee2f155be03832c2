"""The model's key/value store: reads by prefix, CAS, locks held by sessions.

As in Consul (``agent/consul/state/kvs.go``, ``agent/consul/kvs_endpoint.go``):

- a prefix read's index is the highest ``ModifyIndex`` under the prefix; a
  deleted key leaves a tombstone carrying the index of its deletion, so a
  blocking query on a prefix wakes when a key under it vanishes; a missing
  single key answers with the KV table's index (``KVS.Get``);
- a write that changes nothing (same value, flags, session and lock index:
  ``DirEntry.Equal`` in ``kvsSetTxn``) stores nothing: ``ModifyIndex`` stays
  and no blocking query wakes; a delete of nothing writes nothing either;
- a plain or CAS ``PUT`` keeps the key's session but resets ``LockIndex`` to
  0 (``kvsSetTxn`` copies the request's, which has none); an empty body is
  stored as no value (JSON ``null``);
- a key acquired with a session is released (or deleted, under
  ``Behavior=delete``) when the session is invalidated, and a session's
  ``LockDelay`` refuses others' acquires for a while after (checked before
  the session is, as ``kvsPreApply`` runs before the FSM).
"""

from __future__ import annotations

import base64
import dataclasses
from typing import Any

from servicegroup.testing.consul.index import RaftIndex
from servicegroup.testing.consul.wire import ApiError


@dataclasses.dataclass
class Entry:
    key: str
    value: bytes | None
    flags: int
    create_index: int
    modify_index: int
    lock_index: int = 0
    session: str | None = None

    def as_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "LockIndex": self.lock_index,
            "Key": self.key,
            "Flags": self.flags,
            "Value": None if self.value is None else base64.b64encode(self.value).decode(),
            "CreateIndex": self.create_index,
            "ModifyIndex": self.modify_index,
        }
        if self.session:
            out["Session"] = self.session
        return out


class KVStore(RaftIndex):
    """``/v1/kv/``: entries, tombstones and lock delays."""

    def __init__(self) -> None:
        super().__init__()
        self.kv: dict[str, Entry] = {}
        self.tombstones: dict[str, int] = {}
        self.kv_index = 1
        self.lock_delays: dict[str, float] = {}

    def _session_exists(self, session_id: str) -> bool:
        """Whether *session_id* may acquire (the sessions part answers)."""
        raise NotImplementedError

    def prefix_index(self, prefix: str, exact: bool = False) -> int:
        """Consul's index for a KV read: the key's ModifyIndex (*exact*) or
        the highest ModifyIndex or tombstone under the prefix, else the KV
        table's index."""
        if exact:
            entry = self.kv.get(prefix)
            return entry.modify_index if entry is not None else self.kv_index
        best = 0
        for key, entry in self.kv.items():
            if key.startswith(prefix):
                best = max(best, entry.modify_index)
        for key, idx in self.tombstones.items():
            if key.startswith(prefix):
                best = max(best, idx)
        return best or self.kv_index

    def kv_get(self, key: str, recurse: bool, keys: bool, separator: str | None) -> tuple[int, Any]:
        """Return (index, entries|keys|entry); ``None`` payload means 404."""
        with self.cond:
            exact = not (recurse or keys)
            idx = self.prefix_index(key, exact=exact)
            if keys:
                found: list[str] = []
                for k in sorted(self.kv):
                    if not k.startswith(key):
                        continue
                    if separator:
                        cut = k.find(separator, len(key))
                        if cut >= 0:
                            k = k[: cut + len(separator)]
                    if not found or found[-1] != k:
                        found.append(k)
                return idx, found or None
            if recurse:
                entries = [self.kv[k].as_json() for k in sorted(self.kv) if k.startswith(key)]
                return idx, entries or None
            entry = self.kv.get(key)
            return idx, [entry.as_json()] if entry else None

    def kv_put(
        self,
        key: str,
        value: bytes,
        flags: int = 0,
        cas: int | None = None,
        acquire: str | None = None,
        release: str | None = None,
    ) -> bool:
        """One ``PUT``: a set, a CAS, an acquire or a release (the HTTP layer
        refuses two of them at once)."""
        with self.cond:
            entry = self.kv.get(key)
            session = entry.session if entry is not None else None
            lock_index = 0
            if acquire:
                if self.lock_delays.get(key, 0) > self.clock():
                    return False
                if not self._session_exists(acquire):
                    raise ApiError(500, f'invalid session "{acquire}"')
                if entry is not None and entry.session and entry.session != acquire:
                    return False
                held = entry is not None and entry.session == acquire
                lock_index = (entry.lock_index if entry else 0) + (0 if held else 1)
                session = acquire
            elif release:
                if entry is None or entry.session != release:
                    return False
                session, lock_index = None, entry.lock_index
            elif cas is not None and not _cas_matches(entry, cas):
                return False
            stored = value or None  # Consul stores an empty body as no value
            after = (stored, flags, session, lock_index)
            if entry is not None and (entry.value, entry.flags, entry.session, entry.lock_index) == after:
                return True  # nothing changes: nothing is written, nobody wakes
            idx = self._bump()
            self.kv_index = idx
            if entry is None:
                entry = self.kv[key] = Entry(key, stored, flags, idx, idx)
                self.tombstones.pop(key, None)
            entry.value, entry.flags, entry.modify_index = stored, flags, idx
            entry.session, entry.lock_index = session, lock_index
            return True

    def kv_delete(self, key: str, recurse: bool = False, cas: int | None = None) -> bool:
        """One ``DELETE``; deleting nothing writes nothing."""
        with self.cond:
            if recurse:
                doomed = [k for k in self.kv if k.startswith(key)]
            else:
                entry = self.kv.get(key)
                if cas is not None and (entry is None or entry.modify_index != cas):
                    return entry is None  # Consul: nothing to delete counts as done
                doomed = [key] if entry else []
            if not doomed:
                return True
            idx = self._bump()
            self.kv_index = idx
            for k in doomed:
                del self.kv[k]
                self.tombstones[k] = idx
            return True

    def _release_held(self, session_id: str, delete: bool, lock_delay: float, idx: int) -> None:
        """A session is gone (at index *idx*, the lock held): release the
        keys it held, or delete them under ``Behavior=delete``, and start
        their lock delay."""
        for key, entry in list(self.kv.items()):
            if entry.session != session_id:
                continue
            if lock_delay > 0:
                self.lock_delays[key] = self.clock() + lock_delay
            if delete:
                del self.kv[key]
                self.tombstones[key] = idx
            else:
                entry.session = None
                entry.modify_index = idx
            self.kv_index = idx  # only a session that held keys writes to the KV table


def _cas_matches(entry: Entry | None, cas: int) -> bool:
    """``kvsSetCASTxn``: ``cas=0`` creates only; another index must be the
    key's ``ModifyIndex``."""
    if cas == 0:
        return entry is None
    return entry is not None and entry.modify_index == cas
