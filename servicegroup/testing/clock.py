"""A monotonic clock that moves only when a test moves it.

Everything in the library that measures time takes a ``clock`` callable
(``time.monotonic`` by default), and so does the Consul test server: a
test passes this one instead and moves time by assignment or
:meth:`FakeClock.advance`, so expiry is exact and nothing sleeps or
asserts on wall-clock time.
"""

from __future__ import annotations


class FakeClock:
    """``clock()`` returns :attr:`now`, which only the test changes."""

    def __init__(self, start: float = 1000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds
