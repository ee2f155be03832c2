"""Consul for tests: an HTTP API model and a real-agent wrapper.

Consul cannot be installed on every machine that runs the tests (no
Debian, PyPI or npm package ships it), so the Consul backend is tested
against :class:`ConsulTestServer`, an in-process model of the parts of
Consul's HTTP API the backend uses, following Consul's documented
behaviour (:mod:`.server` is the HTTP layer, :mod:`.state` the state
behind it). Where a ``consul`` binary is on PATH, :mod:`.real` runs a real
``consul agent -dev`` so the same tests run against both.
"""

from __future__ import annotations

from servicegroup.testing.consul.server import ConsulTestServer, fake_clock_server, validate_key
from servicegroup.testing.consul.state import ApiError, ConsulState, parse_duration

__all__ = ["ApiError", "ConsulState", "ConsulTestServer", "fake_clock_server", "parse_duration", "validate_key"]
