"""Fixtures of the Consul backend and Consul test-server tests: the
in-process test server on the fake clock of ``tests/conftest.py`` (so a
test moves the server's time with the same ``clock`` it gets), and
coordinators on it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from tooz import coordination

from servicegroup import backend
from servicegroup.testing.clock import FakeClock
from servicegroup.testing.consul import ConsulTestServer, fake_clock_server


@pytest.fixture
def srv(clock: FakeClock) -> Iterator[ConsulTestServer]:
    yield from fake_clock_server(clock)


@pytest.fixture
def coords() -> Iterator[Callable[..., Any]]:
    """``coords(url, member=b"m1", start=True)`` -> a coordinator, stopped after the test."""
    started: list[coordination.CoordinationDriver] = []

    def make(url: str, member: bytes = b"m1", start: bool = True) -> Any:
        c = backend.default_factory(url, member)  # = get_coordinator (see its docstring)
        if start:
            c.start()
            started.append(c)
        return c

    yield make
    for c in started:
        if c.is_started:
            c.stop()
