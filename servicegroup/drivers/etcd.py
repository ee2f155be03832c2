"""tooz's etcd3gw driver, failing over between the endpoints of a cluster.

tooz 9.1's ``Etcd3Driver`` reads one host from its URL and builds one
``etcd3gw`` client for it: with that endpoint down, every heartbeat fails
until the membership lease lapses, although the two other members of the
cluster are serving. An etcd lease belongs to the cluster, not to the
endpoint that granted it, so a client may refresh it through any member.
:class:`FailoverClient` does exactly that: a request that cannot reach its
endpoint (refused, reset, timed out) is sent to the next one, each endpoint
tried at most once per request.

Each endpoint gets a slice of the membership TTL as its request timeout
(``ttl / (endpoints + 1)``), so that a member stuck on a hung endpoint (a
paused etcd process, a half-open link) reaches a live one before its lease
runs out; tooz's own default waits the whole TTL on the first endpoint.

A write that timed out may have been applied: sent again, a join finds the
member there already and a lease grant leaves one extra lease that expires
on its own; both are harmless to membership.

The library builds this driver (:func:`servicegroup.backend.default_factory`)
for an ``etcd3+http(s)://`` URL that names several hosts; a single-host URL
keeps tooz's driver unchanged.
"""

from __future__ import annotations

from collections.abc import Callable
import logging
import threading
from typing import Any, TypeVar
import urllib.parse

from etcd3gw.client import Etcd3Client
from etcd3gw import exceptions as etcd3gw_exc
from tooz.drivers import etcd3gw as tooz_etcd3gw

LOG = logging.getLogger(__name__)

T = TypeVar("T")

#: The failures that mean "this endpoint did not answer", as etcd3gw raises them.
UNREACHABLE = (etcd3gw_exc.ConnectionFailedError, etcd3gw_exc.ConnectionTimeoutError)


class FailoverClient(Etcd3Client):
    """An ``Etcd3Client`` over several endpoints: one in use at a time, the
    next on a failure to reach it (round robin, shared by every thread)."""

    def __init__(self, endpoints: list[tuple[str, int]], **kwargs: Any) -> None:
        if not endpoints:
            raise ValueError("an etcd cluster needs at least one endpoint")
        host, port = endpoints[0]
        super().__init__(host=host, port=port, **kwargs)
        self.endpoints = list(endpoints)
        self._current = 0
        self._lock = threading.Lock()

    def _switch_from(self, failed: int) -> None:
        """Move to the endpoint after *failed*, unless another thread has
        already moved on (two failing threads must not skip a live endpoint)."""
        with self._lock:
            if self._current != failed:
                return
            self._current = (failed + 1) % len(self.endpoints)
            self.host, self.port = self.endpoints[self._current]
            LOG.warning(
                "etcd endpoint %s:%s unreachable; now using %s:%s",
                *self.endpoints[failed],
                self.host,
                self.port,
            )

    def _failover(self, call: Callable[[str], T], url: str | None) -> T:
        """Run ``call(url)`` against each endpoint in turn until one answers;
        *url*, built on the endpoint in use, is re-based on the next one."""
        path = url[len(self.base_url) :] if url and url.startswith(self.base_url) else None
        for attempt in range(len(self.endpoints)):
            index = self._current
            target = self.base_url + path if path is not None else (url or "")
            try:
                return call(target)
            except UNREACHABLE:
                if attempt == len(self.endpoints) - 1:
                    raise
                self._switch_from(index)
        raise AssertionError("unreachable")  # pragma: no cover

    def post(self, url: str, *args: Any, json: Any = None, **kwargs: Any) -> Any:
        parent = super().post
        return self._failover(lambda target: parent(target, *args, json=json, **kwargs), url)

    def _discover_api_path(self) -> None:
        parent = super()._discover_api_path
        self._failover(lambda _target: parent(), None)


class FailoverEtcd3Driver(tooz_etcd3gw.Etcd3Driver):
    """tooz's etcd3gw driver over every endpoint of ``etcd3+http://h1:p1,h2:p2``."""

    def __init__(self, member_id: bytes, parsed_url: Any, options: dict[str, Any]) -> None:
        servers = [_host_port(part, self.DEFAULT_PORT) for part in parsed_url.netloc.split(",")]
        first = parsed_url._replace(netloc=f"{servers[0][0]}:{servers[0][1]}")
        super().__init__(member_id, first, options)
        single = self.client
        timeout = float(single.timeout or self.DEFAULT_TIMEOUT)
        self.client = FailoverClient(
            servers,
            protocol=single.protocol,
            timeout=max(1.0, timeout / (len(servers) + 1)),
            api_path=single._api_path,
            session=single.session,
        )


def _host_port(text: str, default_port: int) -> tuple[str, int]:
    parts = urllib.parse.urlsplit("x://" + text)
    return parts.hostname or "localhost", parts.port or default_port
