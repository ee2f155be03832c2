"""Self-fencing: ownership as a lease that this member's heartbeats renew.

A hash ring alone lets two members work on one key: a member cut off from
the backend keeps its ring, and keeps working, while the others, who read
it as down after ``service_down_time``, rebuild theirs and take its keys
over. tooz's partitioner has the same hole. The fix is a lease: a member
owns keys only while it can confirm its own membership, and gives them up
by itself *before* the others can see it down.

The clock starts at :meth:`servicegroup.heartbeat.Member.confirmed`, the
start of the last beat that succeeded and found the member listed. The
backend cannot drop it earlier than ``service_down_time`` after that (a
TTL or session timeout counts from when the server heard the beat, which
is later), and the others read it as down later still. So ownership ends
``lease = service_down_time - margin`` after the last confirmation, the
margin (:func:`safety_margin`) covering the time between the fence
deciding and the worker noticing, and the drift between two monotonic
clocks over one lease. Only this process's monotonic clock is used: no
wall clock, no clock of another host.

Limits, stated plainly: a backend that loses the member's entry without
its TTL running out (a Redis failover to a replica that missed the last
writes, a memcached restart) shows it down at once, before the fence; the
fencing token (:meth:`servicegroup.ring.Partitioner.token`) is what a
downstream store uses to refuse the stale owner's writes then.
"""

from __future__ import annotations

from collections.abc import Callable
import threading
import time

#: ``confirmed(topic, host)``: monotonic time of the last confirmation;
#: ``-inf`` when lost, ``None`` when this process does not beat for *host*
#: (no lease to keep: an observer's partitioner never fences).
ConfirmedFn = Callable[[str, str], "float | None"]


def safety_margin(report_interval: float, service_down_time: float) -> float:
    """How long before the others could read it down a member stops owning.

    A quarter of ``service_down_time``, and never less than one
    ``report_interval`` (the beat that would confirm may be just late);
    never more than ``service_down_time - report_interval``, so a member
    whose beats succeed is never fenced between two of them.
    """
    margin = max(service_down_time / 4, report_interval)
    return min(margin, max(service_down_time - 1.5 * report_interval, service_down_time / 4))


class SelfFence:
    """Whether a member may own keys now: within *lease* seconds of its last
    confirmed membership, by *clock* (``time.monotonic``)."""

    def __init__(
        self,
        confirmed: ConfirmedFn,
        lease: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if lease <= 0:
            raise ValueError(f"a fencing lease must be > 0 seconds, not {lease}")
        self._confirmed = confirmed
        self.lease = lease
        self.clock = clock

    @classmethod
    def for_timings(
        cls,
        confirmed: ConfirmedFn,
        report_interval: float,
        service_down_time: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> SelfFence:
        lease = service_down_time - safety_margin(report_interval, service_down_time)
        return cls(confirmed, lease, clock)

    def expires(self, topic: str, host: str) -> float | None:
        """When *host*'s ownership in *topic* ends (monotonic; ``-inf`` when
        already lost), or None when this process keeps no lease for it."""
        confirmed = self._confirmed(topic, host)
        return None if confirmed is None else confirmed + self.lease

    def valid(self, topic: str, host: str) -> bool:
        expires = self.expires(topic, host)
        return expires is None or self.clock() < expires


class Tokens:
    """Fencing tokens: integers that only grow, one per ownership period.

    A token is taken when a member starts owning (a rebuild that gave it
    keys, or the end of a fence): wall-clock microseconds, and at least one
    more than the last token of this process. A new owner can only gain a
    key after the old one fenced itself (``margin`` earlier at the least),
    so its token is larger as long as the two hosts' clocks differ by less
    than that margin; a store that keeps the largest token seen per key and
    refuses smaller ones turns away a stale owner's late writes.
    """

    def __init__(self, wall: Callable[[], int] = time.time_ns) -> None:
        self._wall = wall
        self._last = 0
        self._lock = threading.Lock()

    def take(self) -> int:
        with self._lock:
            self._last = max(self._last + 1, self._wall() // 1000)
            return self._last
