"""The heartbeat's self-check: is this member still listed in its group?

One O(1) read, synchronous (the heartbeat runs it on its bounded worker,
:mod:`servicegroup.caller`): tooz's ``get_member_capabilities`` is that
read on most drivers, but

- on memcached it sweeps the whole group (one GET per member, then a CAS):
  O(N^2) per interval across a fleet; here it is one meta get of the
  group key's CAS token, the key itself only when the group changed
  (:func:`servicegroup.mcgroup.listed`);
- on Redis it is a WATCH/MULTI transaction handed to tooz's executor
  thread; here it is one ``HEXISTS`` on the member's own connection.

Both reach into tooz's drivers, guarded: anything unexpected falls back to
tooz's own lookup.
"""

from __future__ import annotations

from typing import Any

from tooz import coordination

from servicegroup import backend
from servicegroup import mcgroup


def is_listed(coord: coordination.CoordinationDriver, group: bytes, member_id: bytes) -> bool:
    """Whether *member_id* is in *group* (see module docstring)."""
    mc = mcgroup.driver_parts(coord)
    if mc is not None:
        return mcgroup.listed(mc, group, member_id)
    redis = _redis_parts(coord)
    if redis is not None:
        return _redis_listed(redis, group, member_id)
    try:
        coord.get_member_capabilities(group, member_id).get(timeout=backend.CALL_TIMEOUT)
        return True
    except (coordination.MemberNotJoined, coordination.GroupNotCreated):
        return False


def _redis_parts(coord: coordination.CoordinationDriver) -> Any | None:
    try:
        from tooz.drivers.redis import RedisDriver
    except ImportError:  # redis-py missing: not Redis
        return None
    if not isinstance(coord, RedisDriver) or getattr(coord, "_client", None) is None:
        return None
    if not all(hasattr(coord, a) for a in ("_encode_group_id", "_encode_member_id")):
        return None
    return coord


def _redis_listed(coord: Any, group: bytes, member_id: bytes) -> bool:
    try:
        return bool(coord._client.hexists(coord._encode_group_id(group), coord._encode_member_id(member_id)))
    except Exception as exc:  # redis-py's errors and socket errors
        raise coordination.ToozConnectionError(backend.describe(exc)) from None
