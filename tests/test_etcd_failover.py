"""servicegroup.drivers.etcd.FailoverClient: a request that cannot reach its
endpoint goes to the next one; one that is answered never moves.

The transport is a stand-in for ``requests.Session`` (answers per URL
prefix): what is pinned is the client's choice of endpoint, not etcd.
"""

from __future__ import annotations

from typing import Any

import pytest
import requests
from etcd3gw import exceptions as etcd3gw_exc

from servicegroup.drivers import etcd


class _Response:
    status_code = 200

    def json(self) -> dict[str, Any]:
        return {"ID": "7", "TTL": "6"}


class _Transport:
    """Answers on the endpoints in ``up``; refuses the others."""

    def __init__(self, up: set[int]) -> None:
        self.up = up
        self.calls: list[str] = []

    def post(self, url: str, *args: Any, **kwargs: Any) -> _Response:
        self.calls.append(url)
        port = int(url.split(":")[2].split("/")[0])
        if port not in self.up:
            raise requests.exceptions.ConnectionError(f"refused {port}")
        return _Response()


def _client(transport: _Transport) -> etcd.FailoverClient:
    return etcd.FailoverClient(
        [("127.0.0.1", 1), ("127.0.0.1", 2), ("127.0.0.1", 3)],
        api_path="/v3/",
        timeout=1.0,
        session=transport,  # type: ignore[arg-type]
    )


def test_a_refused_request_is_sent_to_the_next_endpoint_and_stays_there():
    transport = _Transport(up={2, 3})
    client = _client(transport)
    assert client.lease(6).id == 7
    assert transport.calls == ["http://127.0.0.1:1/v3/lease/grant", "http://127.0.0.1:2/v3/lease/grant"]
    client.lease(6)
    assert transport.calls[-1] == "http://127.0.0.1:2/v3/lease/grant"


def test_an_answered_request_never_moves():
    transport = _Transport(up={1, 2, 3})
    client = _client(transport)
    client.lease(6)
    client.lease(6)
    assert all(url.startswith("http://127.0.0.1:1/") for url in transport.calls)


def test_every_endpoint_down_raises_after_trying_each_once():
    transport = _Transport(up=set())
    client = _client(transport)
    with pytest.raises(etcd3gw_exc.ConnectionFailedError):
        client.lease(6)
    assert len(transport.calls) == 3


def test_the_cluster_heals_back_onto_a_restarted_endpoint_in_turn():
    transport = _Transport(up={3})
    client = _client(transport)
    client.lease(6)
    transport.up = {1}
    client.lease(6)
    assert transport.calls[-1].startswith("http://127.0.0.1:1/")
