"""Shared unit-test fixtures: the in-memory backend and a fake clock."""

from __future__ import annotations

import os
import pytest

# eventlet (in the test extra, for functional/test_green.py) warns on
# stderr when imported, and futurist imports it wherever it is installed:
# every CLI subprocess would print that warning before its one line.
# EVENTLET_TESTS is eventlet's own switch for that warning, for test suites.
os.environ.setdefault("EVENTLET_TESTS", "1")

from servicegroup.api import ServiceGroup
from tests.fakes import TTL, FakeClock, FakeServer

#: pytester runs small pytest sessions in a temp dir (tests of our pytest
#: plugins: the --backend selection).
pytest_plugins = ("pytester",)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def server(clock: FakeClock) -> FakeServer:
    return FakeServer(clock, ttl=TTL)


@pytest.fixture
def make_sg(tmp_path, server, clock):
    made = []

    def make(**kw):
        kw.setdefault("records_url", f"sqlite:///{tmp_path / 'records.sqlite'}")
        kw.setdefault("report_interval", 1.0)
        kw.setdefault("service_down_time", TTL)
        kw.setdefault("max_staleness", 0.5)
        kw.setdefault("background", False)
        kw.setdefault("driver", "mc")  # the backend is faked: any alias will do
        sg = ServiceGroup(coordinator_factory=server.factory, clock=clock, **kw)
        made.append(sg)
        return sg

    yield make
    for sg in made:
        sg.stop()
