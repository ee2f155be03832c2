"""What the helpers built on the facade need of it, as typing protocols.

:class:`~servicegroup.matchmaker.MatchMaker` and
:class:`~servicegroup.ring.Partitioner` take a
:class:`~servicegroup.api.ServiceGroup`, but each uses only a few of its
methods. Naming exactly those here keeps the helpers honest (mypy refuses a
call to anything else) and tells whoever wraps or fakes the facade what to
provide. ``ServiceGroup`` satisfies both, checked by mypy and at run time
(``isinstance`` works: the protocols are runtime-checkable, which tests only
that the methods exist, not their signatures).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol, runtime_checkable

from servicegroup.watches import ChangeCallback, WatchCallback


class WatchHandle(Protocol):
    """What ``watch()`` returns: something to cancel."""

    def cancel(self) -> None: ...


@runtime_checkable
class GroupView(Protocol):
    """What a :class:`~servicegroup.ring.Partitioner` uses of the facade:
    the full live member list (with capabilities, for weights), a change
    notification to rebuild on, and which hosts this process joined."""

    def members(self, topic: str, /) -> Mapping[str, Mapping[str, Any] | None]: ...

    def watch(self, topic: str, /, *, on_change: ChangeCallback | None = None) -> WatchHandle: ...

    def joined_hosts(self, topic: str, /) -> list[str]: ...


@runtime_checkable
class Membership(Protocol):
    """What a :class:`~servicegroup.matchmaker.MatchMaker` uses of the facade:
    joining and leaving topics, the live members with their capabilities,
    join events (to wait for a first host), and the nack/ack pair."""

    def join(self, host: str, topic: str, *, capabilities: Mapping[str, Any] | None = None) -> object: ...

    def leave(self, host: str, topic: str) -> None: ...

    def members(self, topic: str, /) -> Mapping[str, Mapping[str, Any]]: ...

    def watch(self, topic: str, /, *, on_join: WatchCallback | None = None) -> WatchHandle: ...

    def expire(self, topic: str, host: str) -> bool: ...

    def unexpire(self, topic: str, host: str) -> bool: ...


__all__ = ["GroupView", "Membership", "WatchHandle"]
