"""The model's key/value store: reads by prefix, CAS, locks held by sessions.

As in Consul, a KV read's index is the highest ``ModifyIndex`` under its
prefix; a deleted key leaves a tombstone carrying the index of its
deletion, so a blocking query on a prefix wakes when a key under it
vanishes. A key acquired with a session is released (or deleted, under
``Behavior=delete``) when the session is invalidated, and a session's
``LockDelay`` keeps others from acquiring its keys for a while after.
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
        """Consul's index for a KV read: highest ModifyIndex or tombstone
        under the prefix, else the KV table's index."""
        best = 0
        for key, entry in self.kv.items():
            if key == prefix or (not exact and key.startswith(prefix)):
                best = max(best, entry.modify_index)
        for key, idx in self.tombstones.items():
            if key == prefix or (not exact and key.startswith(prefix)):
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
        if acquire and release:
            raise ApiError(400, "Conflicting flags: acquire and release")
        with self.cond:
            entry = self.kv.get(key)
            if acquire:
                if not self._session_exists(acquire):
                    raise ApiError(500, f'invalid session "{acquire}"')
                if entry is not None and entry.session and entry.session != acquire:
                    return False
                if self.lock_delays.get(key, 0) > self.clock():
                    return False
            elif release:
                if entry is None or entry.session != release:
                    return False
            elif cas is not None:
                if cas == 0 and entry is not None:
                    return False
                if cas and (entry is None or entry.modify_index != cas):
                    return False
            idx = self._bump()
            self.kv_index = idx
            if entry is None:
                entry = Entry(key, value, flags, idx, idx)
                self.kv[key] = entry
                self.tombstones.pop(key, None)
            entry.value, entry.flags, entry.modify_index = value, flags, idx
            if acquire and entry.session != acquire:
                entry.session = acquire
                entry.lock_index += 1
            if release:
                entry.session = None
            return True

    def kv_delete(self, key: str, recurse: bool = False, cas: int | None = None) -> bool:
        with self.cond:
            if recurse:
                doomed = [k for k in self.kv if k.startswith(key)]
            else:
                entry = self.kv.get(key)
                if cas is not None and (entry is None or entry.modify_index != cas):
                    return entry is None  # Consul: nothing to delete counts as done
                doomed = [key] if entry else []
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
        self.kv_index = idx
