"""Registered mode of the Consul backend: groups and members as KV keys.

Layout under ``<namespace>/`` (ids encoded by :func:`enc`):

- ``<group>/`` - the group marker, created with ``cas=0``;
- ``<group>/members/<member>`` - a member, acquired with the coordinator's
  session (``Behavior=delete``: it vanishes with the session); the value is
  JSON ``{"member", "capabilities", "created_at", "updated_at"}``;
- ``<group>/leader`` - the leader key, acquired by the elected member;
- ``=locks/<name>/`` - locks (:data:`LOCKS`: no encoded id can be that
  segment, see :func:`enc`).

A member counts only while its key is held by a session.

Key names: Consul 1.21.5 refuses (HTTP 500 "invalid key name") every key
outside ``^[a-zA-Z0-9,_./\\-?&=]+$`` and any key containing ``..``, on reads
as well as writes; later releases accept more characters but still refuse
path-traversal segments. So every key this backend builds uses only
``[A-Za-z0-9,_.=/-]``, never has a ``.`` or ``..`` segment nor ``..``
anywhere, and the namespace option is held to the same rule
(:func:`check_namespace`).
"""

from __future__ import annotations

import datetime
import json
import re
import string
from typing import TYPE_CHECKING, Any

import tooz
from tooz import coordination

from servicegroup.drivers import _base

if TYPE_CHECKING:
    from servicegroup.drivers.consul import ConsulDriver

Capabilities = _base.Capabilities


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat()


#: Bytes an id keeps as they are: letters, digits and ``,-_.``. ``?`` and
#: ``&`` are legal in a Consul key but stay escaped (they read as a query
#: string in logs and tools); ``=`` is the escape character.
_KEEP = frozenset((string.ascii_letters + string.digits + ",-_.").encode())
_DOT = ord(".")
#: The segment (directly under the namespace) that holds every lock. An
#: encoded id starts with ``=`` only as ``=XX`` (two upper-case hex digits),
#: so no group can ever be named ``=locks``.
LOCKS = "=locks"
_NAMESPACE = re.compile(r"[A-Za-z0-9,_.-]+(?:/[A-Za-z0-9,_.-]+)*")


def enc(raw: bytes) -> str:
    """An id as one KV path segment that every Consul release accepts.

    A byte outside ``[A-Za-z0-9,-_.]`` becomes ``=`` and two upper-case hex
    digits (``/`` is ``=2F``, ``=`` itself ``=3D``, UTF-8 ``é`` ``=C3=A9``),
    and so does a ``.`` that starts the id or follows another ``.``: the
    segment is then never ``.`` or ``..`` and never contains ``..``. The
    result is non-empty (ids are), has no ``/``, and :func:`dec` reverses it.
    """
    out = []
    for i, byte in enumerate(raw):
        if byte in _KEEP and not (byte == _DOT and (i == 0 or raw[i - 1] == _DOT)):
            out.append(chr(byte))
        else:
            out.append(f"={byte:02X}")
    return "".join(out)


def dec(segment: str) -> bytes:
    """The id :func:`enc` turned into *segment*. ValueError for anything
    :func:`enc` never writes (another tool's key, :data:`LOCKS`, a key an
    earlier version of this backend percent-encoded), so such keys are
    skipped, never misread as an id."""
    out = bytearray()
    i = 0
    while i < len(segment):
        if segment[i] == "=":
            out.append(int(segment[i + 1 : i + 3], 16))  # ValueError if not hex
            i += 3
        else:
            out.append(ord(segment[i]))  # ValueError past 255; enc() rejects the rest
            i += 1
    raw = bytes(out)
    if enc(raw) != segment:
        raise ValueError(f"{segment!r} is not an id encoded by this backend")
    return raw


def check_namespace(namespace: str) -> str:
    """*namespace* if it can prefix Consul keys on every release (see the
    module docstring), else ValueError saying why."""
    if not _NAMESPACE.fullmatch(namespace) or ".." in namespace or "." in namespace.split("/"):
        raise ValueError(
            f"namespace {namespace!r} is not a valid Consul key prefix: use segments of "
            "A-Z a-z 0-9 , _ - . separated by /, without . or .. segments or '..' "
            "(Consul 1.21.5 refuses other keys with 'invalid key name')"
        )
    return namespace


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

    def probe(self) -> None:
        """Fail at start on a token that cannot read the namespace.

        With ACLs on, Consul answers a single-key read the token may not do
        with 403, but silently filters recursive and ``?keys`` reads (404 or
        ``[]``), which would look like empty groups for ever. One single-key
        GET (404 is fine) turns that into :class:`ConsulAccessDenied`.
        """
        self.api.kv_get(f"{self.ns}/", doing=f"reading the namespace {self.ns + '/'!r} at start")

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
            seg = key[len(self.ns) + 1 :]
            if seg.endswith("/"):
                try:
                    out.append(dec(seg[:-1]))
                except ValueError:
                    pass  # LOCKS, or a key that is not ours
        return out

    def _value(self, capabilities: Capabilities | bytes | None, created_at: str | None = None) -> str:
        # tooz annotates capabilities as a dict, but its own suite and older
        # callers pass bytes (b"" being tooz's historical default).
        if isinstance(capabilities, (bytes, bytearray)):
            capabilities = None if not capabilities else {"__bytes__": bytes(capabilities).hex()}
        try:
            return json.dumps(
                {
                    "member": self.d.member_label,
                    "capabilities": capabilities,
                    "created_at": created_at or _now(),
                    "updated_at": _now(),
                }
            )
        except (TypeError, ValueError) as exc:
            raise tooz.ToozError(f"capabilities must be JSON-serialisable for Consul: {exc}") from None

    def _what(self, gid: bytes) -> str:
        return f"the capabilities of member {self.d.member_label!r} in group {gid!r}"

    def join(self, gid: bytes, capabilities: Capabilities | None) -> None:
        if not self._marker_exists(gid):
            raise coordination.GroupNotCreated(gid)
        key = self.member_key(gid, self.d._member_raw)
        if not self.d.acquire_key(key, self._value(capabilities), self._what(gid)):
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
        if not self.d.acquire_key(key, self._value(capabilities, created), self._what(gid)):
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
                try:
                    out[dec(e["Key"][len(prefix) + 8 :])] = _info(e)
                except ValueError:
                    continue  # not a key this backend wrote
        return index, out

    def member(self, gid: bytes, mid: bytes) -> dict[str, Any]:
        _, entry = self.api.kv_get(self.member_key(gid, mid))
        if entry is None or not entry.get("Session"):
            if not self._marker_exists(gid):
                raise coordination.GroupNotCreated(gid)
            raise coordination.MemberNotJoined(gid, mid)
        return _info(entry)

    def block(self, gid: bytes, index: str | None, wait: float) -> str:
        """The index after a blocking query from *index* (at once if None)."""
        idx, _ = self.api.kv_get(self.prefix(gid), keys=True, index=index, wait=wait)
        return idx

    def try_lead(self, gid: bytes) -> bool:
        return self.d.acquire_key(self.prefix(gid) + "leader", self.d.member_label)

    def stand_down(self, gid: bytes) -> bool:
        sid = self.d._session
        return bool(sid) and self.api.kv_put(self.prefix(gid) + "leader", self.d.member_label, release=sid)

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
    return {"capabilities": caps, "created_at": data.get("created_at"), "updated_at": data.get("updated_at")}
