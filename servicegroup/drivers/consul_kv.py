"""Registered mode of the Consul backend: groups and members as KV keys.

Layout under ``<namespace>/`` (ids percent-encoded, see :func:`enc`):

- ``<group>/`` - the group marker, created with ``cas=0``;
- ``<group>/members/<member>`` - a member, acquired with the coordinator's
  session (``Behavior=delete``: it vanishes with the session); the value is
  JSON ``{"member", "capabilities", "created_at", "updated_at"}``;
- ``<group>/leader`` - the leader key, acquired by the elected member;
- ``!locks/<name>`` - locks (``!`` never appears in an encoded id).

A member counts only while its key is held by a session.
"""

from __future__ import annotations

import datetime
import json
from typing import TYPE_CHECKING, Any
import urllib.parse

import tooz
from tooz import coordination

from servicegroup.drivers import _base

if TYPE_CHECKING:
    from servicegroup.drivers.consul import ConsulDriver

Capabilities = _base.Capabilities


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat()


def dec(segment: str) -> bytes:
    return urllib.parse.unquote_to_bytes(segment)


def enc(raw: bytes) -> str:
    """An id as one KV path segment: percent-encoded, so ``/`` in an id can
    never be read as a level and ``!`` (our reserved prefix) never appears."""
    return urllib.parse.quote(raw, safe="")


class KVGroups:
    """Registered mode: groups and members as KV keys (layout in the module
    docstring; the group marker is the key ``<namespace>/<group>/``)."""

    def __init__(self, driver: ConsulDriver) -> None:
        self.d = driver
        self.api = driver._api
        self.ns = driver.namespace

    def prefix(self, gid: bytes) -> str:
        return f"{self.ns}/{enc(gid)}/"

    def member_key(self, gid: bytes, mid: bytes) -> str:
        return f"{self.prefix(gid)}members/{enc(mid)}"

    def _marker_exists(self, gid: bytes) -> bool:
        return self.api.kv_get(self.prefix(gid))[1] is not None

    def create(self, gid: bytes) -> None:
        if not self.api.kv_put(self.prefix(gid), json.dumps({"created_at": _now()}), cas=0):
            raise coordination.GroupAlreadyExist(gid)

    def delete(self, gid: bytes) -> None:
        _, entries = self.api.kv_get(self.prefix(gid), recurse=True)
        keys = {e["Key"]: e for e in entries or []}
        if self.prefix(gid) not in keys:
            raise coordination.GroupNotCreated(gid)
        if any(k.startswith(self.prefix(gid) + "members/") and e.get("Session") for k, e in keys.items()):
            raise coordination.GroupNotEmpty(gid)
        self.api.kv_delete(self.prefix(gid), recurse=True)

    def groups(self) -> list[bytes]:
        _, keys = self.api.kv_get(f"{self.ns}/", keys=True, separator="/")
        out = []
        for key in keys or []:
            seg = key[len(self.ns) + 1:]
            if seg.endswith("/") and not seg.startswith("!"):
                out.append(dec(seg[:-1]))
        return out

    def _value(self, capabilities: Capabilities | None, created_at: str | None = None) -> str:
        if isinstance(capabilities, (bytes, bytearray)):
            capabilities = None if not capabilities else {"__bytes__": bytes(capabilities).hex()}
        try:
            return json.dumps({"member": self.d.member_label, "capabilities": capabilities,
                               "created_at": created_at or _now(), "updated_at": _now()})
        except (TypeError, ValueError) as exc:
            raise tooz.ToozError(f"capabilities must be JSON-serialisable for Consul: {exc}") from None

    def join(self, gid: bytes, capabilities: Capabilities | None) -> None:
        if not self._marker_exists(gid):
            raise coordination.GroupNotCreated(gid)
        key = self.member_key(gid, self.d._member_raw)
        if not self.api.kv_put(key, self._value(capabilities), acquire=self.d._ensure_session()):
            raise coordination.MemberAlreadyExist(gid, self.d._member_raw)

    def leave(self, gid: bytes) -> None:
        """Delete our member key, whichever session holds it: the member id
        is the identity (tooz: a second coordinator with our id may boot us
        out)."""
        key = self.member_key(gid, self.d._member_raw)
        _, entry = self.api.kv_get(key)
        if entry is None or not entry.get("Session"):
            if not self._marker_exists(gid):
                raise coordination.GroupNotCreated(gid)
            raise coordination.MemberNotJoined(gid, self.d._member_raw)
        if not self.api.kv_delete(key, cas=int(entry["ModifyIndex"])):
            raise coordination.MemberNotJoined(gid, self.d._member_raw)

    def update(self, gid: bytes, capabilities: Capabilities) -> None:
        key = self.member_key(gid, self.d._member_raw)
        _, entry = self.api.kv_get(key)
        sid = self.d._session
        if entry is None or not sid or entry.get("Session") != sid:
            if not self._marker_exists(gid):
                raise coordination.GroupNotCreated(gid)
            raise coordination.MemberNotJoined(gid, self.d._member_raw)
        created = _decode(entry).get("created_at")
        if not self.api.kv_put(key, self._value(capabilities, created), acquire=sid):
            raise coordination.MemberNotJoined(gid, self.d._member_raw)

    def members(self, gid: bytes) -> tuple[str, dict[bytes, dict[str, Any]]]:
        """One recursive GET: the live members (keys held by a session)."""
        prefix = self.prefix(gid)
        index, entries = self.api.kv_get(prefix, recurse=True)
        entries = entries or []
        if not any(e["Key"] == prefix for e in entries):
            raise coordination.GroupNotCreated(gid)
        out = {}
        for e in entries:
            if e["Key"].startswith(prefix + "members/") and e.get("Session"):
                out[dec(e["Key"][len(prefix) + 8:])] = _info(e)
        return index, out

    def member(self, gid: bytes, mid: bytes) -> dict[str, Any]:
        _, entry = self.api.kv_get(self.member_key(gid, mid))
        if entry is None or not entry.get("Session"):
            if not self._marker_exists(gid):
                raise coordination.GroupNotCreated(gid)
            raise coordination.MemberNotJoined(gid, mid)
        return _info(entry)

    def block(self, gid: bytes, index: str | None, wait: str) -> str:
        """The index after a blocking query from *index* (at once if None)."""
        idx, _ = self.api.kv_get(self.prefix(gid), keys=True, index=index, wait=wait)
        return idx

    def try_lead(self, gid: bytes) -> bool:
        return self.api.kv_put(self.prefix(gid) + "leader", self.d.member_label,
                               acquire=self.d._ensure_session())

    def stand_down(self, gid: bytes) -> bool:
        sid = self.d._session
        return bool(sid) and self.api.kv_put(self.prefix(gid) + "leader", self.d.member_label,
                                             release=sid)

    def leader(self, gid: bytes) -> bytes | None:
        _, entry = self.api.kv_get(self.prefix(gid) + "leader")
        if entry is None or not entry.get("Session"):
            if not self._marker_exists(gid):
                raise coordination.GroupNotCreated(gid)
            return None
        value = entry.get("Value") or b""
        return value if isinstance(value, bytes) else str(value).encode()


def _decode(entry: dict[str, Any]) -> dict[str, Any]:
    try:
        data = json.loads(entry.get("Value") or b"{}")
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}


def _info(entry: dict[str, Any]) -> dict[str, Any]:
    """tooz's member info from a member key's value."""
    data = _decode(entry)
    caps = data.get("capabilities")
    if isinstance(caps, dict) and set(caps) == {"__bytes__"}:
        caps = bytes.fromhex(caps["__bytes__"])
    return {"capabilities": caps, "created_at": data.get("created_at"),
            "updated_at": data.get("updated_at")}
