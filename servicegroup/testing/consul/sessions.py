"""The model's sessions: TTL bounds, renewal, invalidation.

As in Consul: a TTL must lie between ``session_ttl_min`` (10 s unless the
agent lowers it) and 24 h; a session is invalidated ``ttl_multiplier`` (2)
times its TTL after its last renewal, never earlier; on invalidation the
keys it holds are released, or deleted under ``Behavior=delete``. Session
reads answer with the sessions table's index (``SessionGet`` in
``agent/consul/state/session.go``), which KV writes do not move; a renewal
is not a write (the leader only restarts the timer).
"""

from __future__ import annotations

import dataclasses
from typing import Any
import uuid

from servicegroup.testing.consul.kv import KVStore
from servicegroup.testing.consul.wire import NODE, ApiError, fold, format_duration, parse_duration

#: Consul's hard upper bound for a session TTL (structs.SessionTTLMax).
SESSION_TTL_MAX = 24 * 3600.0
#: Consul's default ``session_ttl_min``.
DEFAULT_SESSION_TTL_MIN = 10.0


@dataclasses.dataclass
class Session:
    id: str
    name: str
    ttl: float
    behavior: str
    lock_delay: float
    create_index: int
    expires_at: float | None

    def as_json(self) -> dict[str, Any]:
        return {
            "ID": self.id,
            "Name": self.name,
            "Node": NODE,
            "LockDelay": int(self.lock_delay * 1e9),
            "Behavior": self.behavior,
            "TTL": format_duration(self.ttl) if self.ttl else "",
            "NodeChecks": ["serfHealth"],
            "ServiceChecks": None,
            "CreateIndex": self.create_index,
            "ModifyIndex": self.create_index,
        }


class Sessions(KVStore):
    """``/v1/session/``. :attr:`session_ttl_min` and :attr:`ttl_multiplier`
    are set before ``__init__`` runs."""

    session_ttl_min: float
    ttl_multiplier: float

    def __init__(self) -> None:
        super().__init__()
        self.sessions: dict[str, Session] = {}
        self.sessions_index = 1

    def _session_exists(self, session_id: str) -> bool:
        return session_id in self.sessions

    def session_create(self, body: dict[str, Any]) -> str:
        body = fold(body)
        behavior = body.get("behavior") or "release"
        if behavior not in ("release", "delete"):
            raise ApiError(500, f"Invalid Behavior setting '{behavior}'")
        ttl_text = body.get("ttl") or ""
        ttl = 0.0
        if ttl_text:
            try:
                ttl = parse_duration(ttl_text)
            except ValueError as exc:
                raise ApiError(500, f"Session TTL '{ttl_text}' invalid: {exc}") from None
            if ttl != 0 and (ttl < self.session_ttl_min or ttl > SESSION_TTL_MAX):
                raise ApiError(
                    500,
                    f"Invalid Session TTL '{int(ttl * 1e9)}', must be between "
                    f"[{format_duration(self.session_ttl_min)}={format_duration(SESSION_TTL_MAX)}]",
                )
        try:
            delay = parse_duration(body.get("lockdelay", "15s"))
        except ValueError as exc:
            raise ApiError(400, f"Request decode failed: {exc}") from None
        node = body.get("node") or NODE
        if node != NODE:
            raise ApiError(500, f"Missing node registration: {node!r}")
        with self.cond:
            idx = self.sessions_index = self._bump()
            sid = str(uuid.uuid4())
            expires = self.clock() + ttl * self.ttl_multiplier if ttl else None
            self.sessions[sid] = Session(sid, str(body.get("name", "")), ttl, behavior, delay, idx, expires)
            return sid

    def session_renew(self, session_id: str) -> list[dict[str, Any]]:
        with self.cond:
            sess = self.sessions.get(session_id)
            if sess is None:
                raise ApiError(404, f"Session id '{session_id}' not found")
            if sess.ttl:
                sess.expires_at = self.clock() + sess.ttl * self.ttl_multiplier
            return [sess.as_json()]

    def session_destroy(self, session_id: str) -> bool:
        with self.cond:
            self._invalidate(session_id)
            return True

    def session_info(self, session_id: str) -> tuple[int, list[dict[str, Any]]]:
        with self.cond:
            sess = self.sessions.get(session_id)
            return self.sessions_index, ([sess.as_json()] if sess else [])

    def session_list(self) -> tuple[int, list[dict[str, Any]]]:
        with self.cond:
            return self.sessions_index, [s.as_json() for s in self.sessions.values()]

    def _invalidate(self, session_id: str) -> None:
        sess = self.sessions.pop(session_id, None)
        if sess is None:
            return
        idx = self.sessions_index = self._bump()
        self._release_held(session_id, sess.behavior == "delete", sess.lock_delay, idx)

    def _expire_sessions(self, now: float) -> float | None:
        """Invalidate the sessions due at *now*; when the next one is due."""
        nxt: float | None = None
        for sess in list(self.sessions.values()):
            if sess.expires_at is None:
                continue
            if sess.expires_at <= now:
                self._invalidate(sess.id)
            else:
                nxt = sess.expires_at if nxt is None else min(nxt, sess.expires_at)
        return nxt
