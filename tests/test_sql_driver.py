"""Unit tests of the SQL tooz backend (servicegroup.drivers.sql).

Fast and server-less: SQLite files under tmp_path. Expiry is simulated by
moving a session's ``expires_at`` into the past on the database's own clock,
never by sleeping. tooz's full conformance suite runs separately
(``make conformance``) against SQLite, PostgreSQL and MariaDB.
"""

from __future__ import annotations

from collections.abc import Iterator
import os
import time
import traceback
from typing import Any
from unittest import mock

import pytest
import sqlalchemy as sa
from sqlalchemy import event
import tooz
from tooz import coordination

from servicegroup import driver_urls as drivers
from servicegroup import errors
from servicegroup.drivers import _base
from servicegroup.drivers import sql
from servicegroup.sqltime import server_epoch


@pytest.fixture
def url(tmp_path: Any) -> str:
    return f"sql+sqlite:///{tmp_path}/liveness.sqlite"


@pytest.fixture
def coord(url: str) -> Iterator[sql.SQLDriver]:
    c = coordination.get_coordinator(url, b"host-1")
    assert isinstance(c, sql.SQLDriver)
    c.start()
    c._beats_until_reap = 1_000  # no reaping unless a test asks for it
    yield c
    if c.is_started:
        c.stop()


class Statements:
    """Every SQL statement the coordinator's engine sends, with parameters."""

    def __init__(self, engine: sa.Engine) -> None:
        self.sent: list[tuple[str, Any]] = []
        event.listen(engine, "before_cursor_execute", self._record)

    def _record(self, conn: Any, cursor: Any, statement: str, params: Any, *args: Any) -> None:
        self.sent.append((" ".join(statement.split()), params))

    @property
    def data(self) -> list[tuple[str, Any]]:
        """Statements other than transaction control (BEGIN on SQLite)."""
        return [(s, p) for s, p in self.sent if not s.upper().startswith("BEGIN")]


def watch(c: sql.SQLDriver) -> Statements:
    assert c._db.engine is not None
    return Statements(c._db.engine)


def expire_sessions(c: sql.SQLDriver, session_id: str | None = None) -> None:
    """Make sessions expired *on the database clock*: the way a coordinator
    that stopped heart-beating TTL seconds ago looks, without waiting."""
    s = c._t.sessions
    stmt = sa.update(s).values(expires_at=server_epoch() - 1)
    if session_id is not None:
        stmt = stmt.where(s.c.session_id == session_id)
    assert c._db.engine is not None
    with c._db.engine.begin() as conn:
        conn.execute(stmt)


def test_heartbeat_is_one_update_of_one_row_whatever_the_groups(coord: sql.SQLDriver) -> None:
    for g in (b"compute", b"conductor", b"scheduler"):
        coord.create_group(g).get()
        coord.join_group(g).get()
    lock = coord.get_lock(b"some-lock")
    assert lock.acquire(blocking=False)
    stmts = watch(coord)

    coord.heartbeat()

    assert len(stmts.data) == 1, stmts.data
    statement, _ = stmts.data[0]
    assert statement.startswith("UPDATE tooz_sessions SET")
    assert "WHERE tooz_sessions.session_id = ?" in statement


def test_heartbeat_takes_its_timestamps_from_the_server_clock(coord: sql.SQLDriver) -> None:
    stmts = watch(coord)
    coord.heartbeat()
    ((statement, params),) = stmts.data
    assert "julianday('now')" in statement  # sqltime.server_epoch on SQLite
    # No client timestamp travels as a parameter: only the session id and TTL.
    now = time.time()
    assert not [p for p in params if isinstance(p, float) and abs(p - now) < 10 * 365 * 86400]


def test_heartbeat_asks_for_the_next_beat_within_a_third_of_the_ttl(url: str) -> None:
    c = coordination.get_coordinator(url + "?timeout=12", b"host-1")
    c.start()
    try:
        assert c.heartbeat() == pytest.approx(4.0)
    finally:
        c.stop()


def test_client_clock_skew_does_not_change_liveness(coord: sql.SQLDriver) -> None:
    coord.create_group(b"g").get()
    coord.join_group(b"g").get()
    # A client whose clock is a day ahead (or behind) sees the same members.
    for skew in (86400.0, -86400.0):
        with mock.patch("time.time", return_value=time.time() + skew):
            coord.heartbeat()
            assert coord.get_members(b"g").get() == {b"host-1"}


def test_member_disappears_when_its_session_expires_on_the_server_clock(url: str, coord: sql.SQLDriver) -> None:
    other = coordination.get_coordinator(url, b"host-2")
    other.start()
    coord.create_group(b"g").get()
    coord.join_group(b"g").get()
    other.join_group(b"g").get()
    assert coord.get_members(b"g").get() == {b"host-1", b"host-2"}

    expire_sessions(coord, other._session_id)

    assert coord.get_members(b"g").get() == {b"host-1"}
    assert coord.get_members_with_capabilities(b"g").get() == {b"host-1": None}
    with pytest.raises(coordination.MemberNotJoined):
        coord.get_member_capabilities(b"g", b"host-2").get()


def test_lost_session_opens_a_fresh_one_and_forgets_joined_groups(coord: sql.SQLDriver) -> None:
    coord.create_group(b"g").get()
    coord.join_group(b"g", {"v": 1}).get()
    lock = coord.get_lock(b"L")
    assert lock.acquire(blocking=False)
    old_session = coord._session_id

    expire_sessions(coord)
    coord.heartbeat()

    assert coord.session_lost_count == 1
    assert coord._session_id != old_session
    assert coord._joined_groups == set()
    assert coord.get_members(b"g").get() == set()
    # The old session's rows are gone, not revived: the lock is free.
    assert not lock.release()
    coord.join_group(b"g", {"v": 2}).get()  # the caller re-joins
    assert coord.get_members_with_capabilities(b"g").get() == {b"host-1": {"v": 2}}


def test_a_deleted_session_is_lost_too(coord: sql.SQLDriver) -> None:
    assert coord._db.engine is not None
    with coord._db.engine.begin() as conn:  # e.g. the database was restored
        conn.execute(sa.delete(coord._t.sessions))
    coord.heartbeat()
    assert coord.session_lost_count == 1
    coord.heartbeat()
    assert coord.session_lost_count == 1


def test_expired_session_is_never_revived_by_a_heartbeat(coord: sql.SQLDriver) -> None:
    old_session = coord._session_id
    expire_sessions(coord)
    coord.heartbeat()
    s = coord._t.sessions
    assert coord._db.engine is not None
    with coord._db.engine.connect() as conn:
        sessions = set(conn.execute(sa.select(s.c.session_id)).scalars())
    assert sessions == {coord._session_id}
    assert old_session not in sessions


def test_join_refuses_a_live_duplicate_but_replaces_a_dead_one(url: str, coord: sql.SQLDriver) -> None:
    coord.create_group(b"g").get()
    coord.join_group(b"g").get()
    twin = coordination.get_coordinator(url, b"host-1")
    twin.start()
    with pytest.raises(coordination.MemberAlreadyExist):
        twin.join_group(b"g").get()

    expire_sessions(coord, coord._session_id)
    twin.join_group(b"g", {"twin": True}).get()
    assert twin.get_members_with_capabilities(b"g").get() == {b"host-1": {"twin": True}}
    twin.stop()


@pytest.mark.parametrize(
    "call",
    [
        lambda c: c.create_group(b"").get(),
        lambda c: c.create_group(b"x" * 256).get(),
        lambda c: c.join_group(b"\xff\xfe").get(),
        lambda c: c.delete_group(b"").get(),
        lambda c: c.get_members(b"\xc3").get(),
        lambda c: c.get_member_info(b"g", b"").get(),
        lambda c: c.get_lock(b""),
        lambda c: c.get_lock(b"\xff"),
    ],
    ids=[
        "empty",
        "oversized",
        "not-utf8",
        "delete-empty",
        "members-not-utf8",
        "member-info-empty-member",
        "lock-empty",
        "lock-not-utf8",
    ],
)
def test_invalid_ids_are_refused_before_any_statement(coord: sql.SQLDriver, call: Any) -> None:
    stmts = watch(coord)
    with pytest.raises(_base.InvalidId) as info:
        call(coord)
    assert isinstance(info.value, tooz.ToozError)
    assert isinstance(info.value, errors.InvalidName)
    assert stmts.sent == []


def test_invalid_member_id_is_refused_at_construction(url: str) -> None:
    with pytest.raises(_base.InvalidId):
        coordination.get_coordinator(url, b"\xff")


def test_str_ids_come_back_as_bytes(url: str) -> None:
    c = coordination.get_coordinator(url, "héllo")  # type: ignore[arg-type]
    c.start()
    c.create_group("grp").get()  # type: ignore[arg-type]
    c.join_group("grp").get()  # type: ignore[arg-type]
    assert c.get_groups().get() == [b"grp"]
    assert c.get_members(b"grp").get() == {"héllo".encode()}
    c.stop()


@pytest.mark.parametrize("scheme", ["postgresql", "mysql"])
def test_password_is_redacted_from_errors_and_repr(scheme: str) -> None:
    # Port 1 on loopback refuses at once: no server needed.
    c = coordination.get_coordinator(f"sql+{scheme}://admin:s3cr3t-pw@127.0.0.1:1/db", b"m")
    assert "s3cr3t-pw" not in repr(c)
    with pytest.raises(coordination.ToozConnectionError) as info:
        c.start()
    message = str(info.value)
    assert "127.0.0.1:1" in message
    assert "s3cr3t-pw" not in message
    chain = "".join(traceback.format_exception(info.value))
    assert "s3cr3t-pw" not in chain


def test_sqlite_url_naming_a_host_is_a_connection_error() -> None:
    c = coordination.get_coordinator("sql+sqlite://localhost:1/f00", b"m")
    with pytest.raises(coordination.ToozConnectionError, match="localhost:1"):
        c.start()


def test_in_memory_sqlite_is_refused_because_members_could_not_share_it() -> None:
    c = coordination.get_coordinator("sql+sqlite://", b"m")
    with pytest.raises(_base.InvalidOption, match="file path"):
        c.start()


def test_sqlite_does_not_claim_to_span_hosts(coord: sql.SQLDriver) -> None:
    assert coordination.Characteristics.DISTRIBUTED_ACROSS_HOSTS not in coord.CHARACTERISTICS
    assert coordination.Characteristics.DISTRIBUTED_ACROSS_HOSTS in sql.SQLDriver.CHARACTERISTICS


def test_resolver_refuses_options_the_driver_does_not_declare(tmp_path: Any) -> None:
    url = f"sql+sqlite:///{tmp_path}/x.db?table_prefix=a_&connect_timeout=2"
    assert drivers.resolve("db", url, "sqlite://", ttl=60) == url + "&timeout=60"
    with pytest.raises(errors.InvalidURL, match="tiemout"):
        drivers.resolve("db", f"sql+sqlite:///{tmp_path}/x.db?tiemout=5", "sqlite://")


def test_member_info_reports_join_and_last_heartbeat_times(coord: sql.SQLDriver) -> None:
    coord.create_group(b"g").get()
    coord.join_group(b"g", {"a": 1}).get()
    before = coord.get_member_info(b"g", b"host-1").get()
    coord.heartbeat()
    after = coord.get_member_info(b"g", b"host-1").get()
    assert after["capabilities"] == {"a": 1}
    assert after["created_at"] == before["created_at"]
    assert after["updated_at"] > before["updated_at"]
    assert after["updated_at"].tzinfo is not None


def test_reaping_deletes_expired_sessions_and_their_rows(url: str, coord: sql.SQLDriver) -> None:
    dead = coordination.get_coordinator(url, b"host-2")
    dead.start()
    coord.create_group(b"g").get()
    dead.join_group(b"g").get()
    assert dead.get_lock(b"L").acquire(blocking=False)
    expire_sessions(coord, dead._session_id)

    coord._beats_until_reap = 1
    coord.heartbeat()

    t = coord._t
    assert coord._db.engine is not None
    with coord._db.engine.connect() as conn:
        for table in (t.sessions, t.members, t.locks):
            rows = conn.execute(
                sa.select(sa.func.count()).select_from(table).where(table.c.session_id == dead._session_id)
            ).scalar()
            assert rows == 0, table.name


def test_dead_coordinators_lock_is_taken_over(url: str, coord: sql.SQLDriver) -> None:
    dead = coordination.get_coordinator(url, b"host-2")
    dead.start()
    assert dead.get_lock(b"L").acquire(blocking=False)
    mine = coord.get_lock(b"L")
    assert not mine.acquire(blocking=False)
    expire_sessions(coord, dead._session_id)
    assert mine.acquire(blocking=False)
    assert mine.is_still_owner()


def test_dead_leader_is_replaced_and_the_new_one_told_once(url: str, coord: sql.SQLDriver) -> None:
    events: list[coordination.LeaderElected] = []
    coord.create_group(b"g").get()
    old = coordination.get_coordinator(url, b"host-2")
    old.start()
    old.watch_elected_as_leader(b"g", lambda e: None)
    old.run_watchers()
    coord.watch_elected_as_leader(b"g", events.append)
    coord.run_watchers()
    assert events == [] and coord.get_leader(b"g").get() == b"host-2"

    expire_sessions(coord, old._session_id)
    assert coord.get_leader(b"g").get() is None
    coord.run_watchers()
    coord.run_watchers()
    assert [e.member_id for e in events] == [b"host-1"]
    assert coord.get_leader(b"g").get() == b"host-1"


def test_losing_the_race_to_insert_the_leader_row_is_not_an_error(coord: sql.SQLDriver) -> None:
    # Two coordinators both saw no leader row; the other one's INSERT
    # committed first, so ours hits the primary key. That is "not elected",
    # not an exception out of run_watchers (it once was a TypeError: the
    # conflict error could not be built without a message).
    events: list[coordination.LeaderElected] = []
    coord.create_group(b"g").get()
    coord.watch_elected_as_leader(b"g", events.append)
    clash = sa.exc.IntegrityError("INSERT INTO leaders ...", {}, Exception("UNIQUE constraint failed"))
    with mock.patch.object(sql.sql_sessions, "take_leadership", side_effect=clash):
        coord.run_watchers()
    assert events == []


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_forked_child_does_not_reuse_the_parents_pooled_connections(coord: sql.SQLDriver) -> None:
    coord.create_group(b"g").get()  # the pool now holds a connection
    engine = coord._db.engine
    assert engine is not None and engine.pool.checkedin() >= 1
    pid = os.fork()
    if pid == 0:  # child: report through the exit code only
        ok = engine.pool.checkedin() == 0
        try:
            ok = ok and coord.get_groups().get() == [b"g"]
        finally:
            os._exit(0 if ok else 1)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert coord.get_groups().get() == [b"g"]  # the parent's pool still works


def test_a_loss_noticed_twice_renews_the_session_once(coord: sql.SQLDriver) -> None:
    lost = coord._session_id
    expire_sessions(coord)
    coord._renew_session(lost)
    fresh = coord._session_id
    coord._renew_session(lost)  # a second thread that saw the same loss
    assert coord._session_id == fresh
    assert coord.session_lost_count == 1
    coord.heartbeat()
    assert coord.session_lost_count == 1


def test_dbapi_options_reach_the_liveness_engine_and_ours_do_not() -> None:
    """sslmode & co. must apply to liveness connections as they do to the
    records database: dropping them silently would, say, skip TLS."""
    c = coordination.get_coordinator(
        "sql+postgresql://u:pw@db.example:5432/nova?sslmode=require&timeout=5&table_prefix=t_", b"m1"
    )
    assert dict(c._db.url.query) == {"sslmode": "require"}
    m = coordination.get_coordinator("sql+mysql://root@h/db?charset=latin1", b"m1")
    assert "charset" not in m._db.server_connect_args(), "the URL's charset wins over our default"


@pytest.mark.parametrize("value", ["nan", "inf", "-inf"])
def test_non_finite_numeric_options_are_refused(value: str) -> None:
    with pytest.raises(errors.InvalidURL, match="timeout"):
        coordination.get_coordinator(f"sql+sqlite:////tmp/x.sqlite?timeout={value}", b"m1")


def test_server_connections_are_bounded_so_no_call_hangs_on_a_dead_network() -> None:
    """SQL calls run synchronously: get(timeout) cannot cut them short, so
    the connection must (a half-open TCP connection would otherwise hold a
    heartbeat for hours)."""
    from servicegroup.sqlengine import STATEMENT_TIMEOUT

    pg = coordination.get_coordinator("sql+postgresql://u@h/db", b"m1")._db.server_connect_args()
    assert pg["tcp_user_timeout"] == STATEMENT_TIMEOUT * 1000 and pg["keepalives"] == 1
    assert f"statement_timeout={STATEMENT_TIMEOUT * 1000}" in pg["options"]
    my = coordination.get_coordinator("sql+mysql://u@h/db", b"m1")._db.server_connect_args()
    assert my["read_timeout"] == my["write_timeout"] == STATEMENT_TIMEOUT
    own = coordination.get_coordinator("sql+mysql://u@h/db?read_timeout=5", b"m1")._db.server_connect_args()
    assert "read_timeout" not in own, "the URL's own value wins"
