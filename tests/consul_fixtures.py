"""Fixtures shared by the Consul backend and Consul test-server tests:
the in-process test server on a fake clock, and coordinators on it.

Imported by name into the modules that use them (``from
tests.consul_fixtures import clock, srv``); their ``clock`` is the Consul
server's, not the in-memory backend's of ``tests/conftest.py``.
"""

from __future__ import annotations

from typing import Any

import pytest
from tooz import coordination

from servicegroup import backend
from servicegroup.testing.clock import FakeClock
from servicegroup.testing.consul import ConsulTestServer, fake_clock_server


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def srv(clock: FakeClock) -> Any:
    yield from fake_clock_server(clock)


@pytest.fixture
def coords() -> Any:
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


def kv(srv: ConsulTestServer, prefix: str) -> dict[str, dict[str, Any]]:
    return {e["Key"]: e for e in srv.state.kv_get(prefix, True, False, None)[1] or []}
