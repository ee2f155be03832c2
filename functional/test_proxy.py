"""The fault proxy in front of a real PostgreSQL (this session's database).

A smoke test for the fault tests that put it between the library and its
servers: the wire protocol passes through untouched, a held connection
really hangs a query (the query is seen reaching the proxy first, so the
hang is a fact, not a timeout) until the proxy heals, and reset / refuse
reach the client as the errors a dying or restarting server causes.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
import threading
from typing import Any

import psycopg2
import pytest

from functional.members import BOUND, wait_for
from servicegroup.testing.proxy import FaultProxy

pytestmark = pytest.mark.backend("db-postgresql")


@pytest.fixture
def proxy() -> Iterator[FaultProxy]:
    with FaultProxy("127.0.0.1", 5432) as p:
        yield p


@pytest.fixture
def dsn(sql_url, proxy: FaultProxy) -> str:
    """A libpq URL of the session's database, through the proxy."""
    return proxy.via(sql_url("postgresql"))


@pytest.fixture
def connect(dsn: str) -> Iterator[Callable[[], Any]]:
    """``connect()`` -> a psycopg2 connection through the proxy, closed after the test."""
    made: list[Any] = []

    def make() -> Any:
        made.append(psycopg2.connect(dsn, connect_timeout=int(BOUND)))
        return made[-1]

    yield make
    for conn in made:
        conn.close()


def _one(conn, sql: str) -> object:
    with conn.cursor() as cur:
        cur.execute(sql)
        return cur.fetchone()[0]


def test_a_connection_through_the_proxy_works(connect, dsn: str, proxy: FaultProxy) -> None:
    assert _one(connect(), "SELECT current_database()") == dsn.rsplit("/", 1)[1]
    assert proxy.stats().connections == 1


def test_hold_makes_a_query_hang_until_the_proxy_heals(connect, proxy: FaultProxy) -> None:
    conn = connect()
    assert _one(conn, "SELECT 1") == 1
    proxy.hold()
    answers: list[object] = []
    query = threading.Thread(target=lambda: answers.append(_one(conn, "SELECT 42")), daemon=True)
    query.start()
    assert wait_for(lambda: proxy.stats().pending > 0), "the query never reached the proxy"
    query.join(1.0)  # it cannot finish: its bytes sit in the proxy
    assert query.is_alive() and answers == []
    proxy.heal()
    query.join(BOUND)
    assert answers == [42]


def test_reset_fails_the_next_query_as_a_lost_server_connection(connect, proxy: FaultProxy) -> None:
    conn = connect()
    assert _one(conn, "SELECT 1") == 1
    proxy.reset()
    with pytest.raises(psycopg2.OperationalError):
        _one(conn, "SELECT 1")
    assert _one(connect(), "SELECT 2") == 2


def test_refuse_makes_connects_fail_at_once_and_heal_restores_them(connect, proxy: FaultProxy) -> None:
    proxy.refuse()
    with pytest.raises(psycopg2.OperationalError, match="refused"):
        connect()
    proxy.heal()
    assert _one(connect(), "SELECT 3") == 3
