"""An in-memory tooz backend with a fake clock, for the facade's unit tests.

It has exactly the behaviour the facade relies on - members expire when
their TTL lapses without a heartbeat, a "restart" forgets everything, an
outage makes every call fail - so nova's semantics can be pinned without
servers and without sleeping. The real backends are exercised in
``functional/``.
"""

from __future__ import annotations

from typing import Any

from tooz import coordination

from servicegroup import errors
from servicegroup.drivers._base import SyncResult
from servicegroup.testing.clock import FakeClock

#: Membership TTL of the fake backend in the unit tests (service_down_time).
TTL = 3.0


class ReadOnlyLeave(errors.NotSupported, coordination.MemberNotJoined):
    """What Consul's catalog mode raises on leave (CatalogNotJoined): both
    "not supported here" and tooz's "not joined"."""


class FakeServer:
    """The shared state every FakeCoordinator talks to."""

    def __init__(self, clock: FakeClock, ttl: float = 3.0) -> None:
        self.clock = clock
        self.ttl = ttl
        self.groups: dict[bytes, dict[bytes, tuple[dict[str, Any], float]]] = {}
        self.down = False
        self.refuse_joins = False
        #: Members cannot be removed by others, as in Consul's catalog mode.
        self.read_only = False
        self.heartbeats = 0
        self.reads = 0
        self.on_heartbeat: list[Any] = []

    def restart(self) -> None:
        """Forget every key, as memcached does on restart."""
        self.groups.clear()

    def check(self) -> None:
        if self.down:
            raise coordination.ToozConnectionError("fake backend at 127.0.0.1:1 is unreachable")

    def live(self, group: bytes) -> dict[bytes, dict[str, Any]]:
        if group not in self.groups:
            raise coordination.GroupNotCreated(group)
        now = self.clock()
        return {m: caps for m, (caps, exp) in self.groups[group].items() if exp > now}

    def factory(self, url: str, member_id: bytes) -> FakeCoordinator:
        return FakeCoordinator(self, member_id)


class FakeCoordinator:
    """The subset of tooz's CoordinationDriver the facade uses."""

    def __init__(self, server: FakeServer, member_id: bytes) -> None:
        self.server = server
        self.member_id = member_id
        self.started = False

    def start(self, start_heart: bool = False) -> None:
        self.server.check()
        self.started = True

    def stop(self) -> None:
        self.started = False

    def heartbeat(self) -> float:
        self.server.check()
        self.server.heartbeats += 1
        exp = self.server.clock() + self.server.ttl
        for members in self.server.groups.values():
            if self.member_id in members:
                members[self.member_id] = (members[self.member_id][0], exp)
        for cb in self.server.on_heartbeat:
            cb()
        return self.server.ttl / 3

    def create_group(self, group: bytes) -> SyncResult[None]:
        self.server.check()
        self.server.groups.setdefault(group, {})
        return SyncResult(None)

    def join_group(self, group: bytes, capabilities: dict[str, Any] | None = None) -> SyncResult[None]:
        self.server.check()
        if self.server.refuse_joins:
            return SyncResult(error=coordination.ToozConnectionError("join refused by fake backend"))
        try:
            live = self.server.live(group)
        except coordination.GroupNotCreated as exc:
            return SyncResult(error=exc)
        if self.member_id in live:
            return SyncResult(error=coordination.MemberAlreadyExist(group, self.member_id))
        self.server.groups[group][self.member_id] = (dict(capabilities or {}), self.server.clock() + self.server.ttl)
        return SyncResult(None)

    def join_group_create(self, group: bytes, capabilities: dict[str, Any] | None = None) -> None:
        self.create_group(group)
        self.join_group(group, capabilities).get()

    def leave_group(self, group: bytes) -> SyncResult[None]:
        self.server.check()
        if self.server.read_only:
            return SyncResult(error=ReadOnlyLeave(group, self.member_id))
        members = self.server.groups.get(group)
        if members is None:
            return SyncResult(error=coordination.GroupNotCreated(group))
        if members.pop(self.member_id, None) is None:
            return SyncResult(error=coordination.MemberNotJoined(group, self.member_id))
        return SyncResult(None)

    def get_members_with_capabilities(self, group: bytes) -> SyncResult[dict[bytes, Any]]:
        self.server.check()
        self.server.reads += 1
        return SyncResult.of(self.server.live, group)

    def get_members(self, group: bytes) -> SyncResult[set[bytes]]:
        return SyncResult.of(lambda: set(self.server.live(group)))

    def get_member_capabilities(self, group: bytes, member: bytes) -> SyncResult[dict[str, Any]]:
        self.server.check()
        self.server.reads += 1

        def lookup() -> dict[str, Any]:
            live = self.server.live(group)
            if member not in live:
                raise coordination.MemberNotJoined(group, member)
            return live[member]

        return SyncResult.of(lookup)
