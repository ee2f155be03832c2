"""The model's Raft index, blocking queries and the expiry clock.

Consul orders every write by one Raft index; a blocking query
(``?index=N&wait=``) is held until the index of what it reads passes N.
The model keeps one index and one condition variable for all its state:
every write bumps the index and wakes the parked queries, and a reaper
thread applies expiries (sessions, TTL checks) on time, so a blocking query
sees an expiry without anyone asking.
"""

from __future__ import annotations

from collections.abc import Callable
import threading
import uuid


class RaftIndex:
    """The index, the lock every state change holds, and the reaper.

    Subclasses say what expires in :meth:`_expire`; :attr:`clock` (a
    ``monotonic``-like callable) is set before ``__init__`` runs.
    """

    clock: Callable[[], float]

    def __init__(self) -> None:
        self.cond = threading.Condition()
        self.index = 1
        self.closed = False
        self._reaper: threading.Thread | None = None

    def start_reaper(self) -> None:
        """Start expiring on time (once every part of the state exists)."""
        self._reaper = threading.Thread(target=self._reap_forever, name="consul-reaper", daemon=True)
        self._reaper.start()

    def close(self) -> None:
        with self.cond:
            self.closed = True
            self.cond.notify_all()
        if self._reaper is not None:
            self._reaper.join(timeout=5)

    def _bump(self) -> int:
        """Next index for a write; wakes every blocking query (call with the lock)."""
        self.index += 1
        self.cond.notify_all()
        return self.index

    def block(self, index: int | None, wait: float, current: Callable[[], int]) -> None:
        """Hold a blocking query until ``current()`` passes *index* or *wait*
        (plus Consul's jitter of up to wait/16) elapses."""
        if not index:
            return
        deadline = self.clock() + wait + wait / 16 * (uuid.uuid4().int % 1000) / 1000
        with self.cond:
            while not self.closed and current() <= index:
                left = deadline - self.clock()
                if left <= 0:
                    return
                self.cond.wait(left)

    def expire_now(self) -> None:
        """Apply every expiry due at ``clock()`` now (tests with a fake
        clock call this instead of waiting for the reaper)."""
        with self.cond:
            self._expire(self.clock())

    def _reap_forever(self) -> None:
        with self.cond:
            while not self.closed:
                now = self.clock()
                nxt = self._expire(now)
                self.cond.wait(min(0.05, max(nxt - now, 0.005)) if nxt else 0.05)

    def _expire(self, now: float) -> float | None:
        """Apply what is due at *now* (the lock is held); return when the
        next expiry is due, if known."""
        return None
