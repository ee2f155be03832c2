"""Counting the requests a backend client sends (tests and bench.scale).

A refresh's cost in round trips is what decides whether it grows with the
fleet; counting at each client library's one request method gives an exact
figure without a proxy that would have to parse every protocol. One call
of the counted method is one request; pipelined requests (kazoo's async
API, a Redis pipeline) count once each, so the count is an upper bound on
the round trips actually waited for.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
import contextlib
import importlib
from typing import Any

#: Driver name -> (module, class, methods): the one place each client
#: library sends a request.
REQUEST_METHODS: dict[str, tuple[str, str, tuple[str, ...]]] = {
    "zk": ("kazoo.client", "KazooClient", ("_call",)),
    "mc": ("pymemcache.client.base", "Client", ("_fetch_cmd", "_store_cmd", "_misc_cmd")),
    "redis": ("redis.connection", "AbstractConnection", ("send_packed_command",)),
    "etcd": ("etcd3gw.client", "Etcd3Client", ("post",)),
    "db": ("sqlalchemy.engine", "Connection", ("_execute_context",)),
    "consul": ("requests", "Session", ("request",)),
}


@contextlib.contextmanager
def counting(cls: type, *names: str) -> Iterator[list[str]]:
    """Record every call, from any thread, of *cls*'s methods *names*."""
    calls: list[str] = []
    saved = {n: cls.__dict__[n] for n in names}

    def wrap(name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        def counted(self: Any, *args: Any, **kwargs: Any) -> Any:
            calls.append(name)
            return fn(self, *args, **kwargs)

        return counted

    for n, fn in saved.items():
        setattr(cls, n, wrap(n, fn))
    try:
        yield calls
    finally:
        for n, fn in saved.items():
            setattr(cls, n, fn)


@contextlib.contextmanager
def requests_of(driver: str) -> Iterator[list[str]]:
    """:func:`counting` on the client library *driver* uses."""
    module, name, methods = REQUEST_METHODS[driver]
    with counting(getattr(importlib.import_module(module), name), *methods) as calls:
        yield calls
