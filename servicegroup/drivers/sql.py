"""tooz group membership, leader election and locks in a SQL database.

tooz's own MySQL/PostgreSQL drivers only do locks; this backend does the
whole coordination API on SQLite, PostgreSQL and MySQL/MariaDB, so that a
deployment whose only shared service is its database still gets liveness.

URL: ``sql+<dialect>://...`` where the part after ``sql+`` is a SQLAlchemy
URL (``postgresql`` uses psycopg2, ``mysql`` PyMySQL). Its query options
are this driver's, listed in :attr:`SQLDriver.URL_OPTIONS`:

- ``timeout`` - session TTL in seconds (default 30): a member whose
  coordinator stops heart-beating disappears after that long;
- ``table_prefix`` - table name prefix (default ``tooz_``);
- ``connect_timeout`` - seconds to wait for a PostgreSQL/MySQL connection
  (default 5), so that an unreachable server fails fast.

Liveness (:mod:`.sql_sessions`, tables in :mod:`.sql_schema`): each
started coordinator owns one session row whose expiry is set by the
database server's clock; a heartbeat is one ``UPDATE`` of that row
whatever the number of groups.

A session that expired is never revived: its locks may have been taken
over. :meth:`SQLDriver.heartbeat` then opens a fresh session, drops the
stale rows, forgets ``_joined_groups`` and bumps
:attr:`SQLDriver.session_lost_count`; the caller re-joins (the
``ServiceGroup`` layer does, and reports "membership lost / restored").
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
import datetime
import logging
import random
import threading
from typing import TYPE_CHECKING, Any, TypeVar

import sqlalchemy as sa
from sqlalchemy.engine import Connection
import tooz
from tooz import coordination
from tooz import utils

from servicegroup.drivers import _base
from servicegroup.drivers import sql_engine
from servicegroup.drivers import sql_locks
from servicegroup.drivers import sql_schema
from servicegroup.drivers import sql_sessions
from servicegroup.sqltime import server_epoch

if TYPE_CHECKING:
    from sqlalchemy.engine import Row

    #: What _group_rows selects: member_id, capabilities, joined_at, beat_at.
    MemberRow = Row[Any, Any, Any, Any]

LOG = logging.getLogger(__name__)
T = TypeVar("T")

#: Reap expired sessions every this many heartbeats (per coordinator; the
#: first reap is at a random beat so a fleet started together spreads out).
REAP_EVERY = 10


class _SessionLost(Exception):
    """Our session row is gone or expired (raised inside a transaction)."""


class _LostRace(tooz.ToozError):
    """Another coordinator inserted the same leader row first."""

    def __init__(self) -> None:
        # Built with no argument, as a conflict factory; ToozError needs a message.
        super().__init__("another coordinator took the leadership first")


def _epoch_to_datetime(value: float | None) -> datetime.datetime | None:
    if value is None:
        return None
    return datetime.datetime.fromtimestamp(value, tz=datetime.timezone.utc)


class SQLDriver(coordination.CoordinationDriverCachedRunWatchers):
    """Group membership, leader election and locks in SQL (see module doc).

    Every call does its round trip before returning a
    :class:`~servicegroup.drivers._base.SyncResult`.
    """

    URL_OPTIONS: frozenset[str] = frozenset({"timeout", "table_prefix", "connect_timeout"})
    DEFAULT_TIMEOUT = 30.0
    CHARACTERISTICS: tuple[coordination.Characteristics, ...] = (
        coordination.Characteristics.DISTRIBUTED_ACROSS_THREADS,
        coordination.Characteristics.DISTRIBUTED_ACROSS_PROCESSES,
        coordination.Characteristics.DISTRIBUTED_ACROSS_HOSTS,
    )

    def __init__(self, member_id: bytes, parsed_url: Any, options: dict[str, Any]) -> None:
        super().__init__(_base.to_id(member_id), parsed_url, options)
        self._ttl = _base.parse_float_option(options, "timeout", self.DEFAULT_TIMEOUT, 1.0)
        self._connect_timeout = _base.parse_float_option(options, "connect_timeout", 5.0, 0.1)
        prefix = options.get("table_prefix", "tooz_")
        self._t = sql_schema.make_tables(prefix[-1] if isinstance(prefix, list) else prefix)
        self._db = sql_engine.Database(
            parsed_url,
            self._connect_timeout,
            {
                name: value[-1] if isinstance(value, list) else value
                for name, value in options.items()
                if name not in self.URL_OPTIONS
            },
        )
        if self._db.dialect == "sqlite":
            # A SQLite file is shared by the processes of one host only (its
            # locking is unreliable on network file systems).
            self.CHARACTERISTICS = self.CHARACTERISTICS[:2]
        self._session_id = ""
        self._session_lock = threading.Lock()
        #: How many times this coordinator found its session expired or gone
        #: (and opened a fresh one, leaving every group). Compare before and
        #: after :meth:`heartbeat` to know when to re-join.
        self.session_lost_count = 0
        self._beats_until_reap = random.randint(1, REAP_EVERY)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self._db!r} member={self._member_id!r} session={self._session_id or None}>"

    # --- transactions -----------------------------------------------------

    def _run(
        self,
        fn: Callable[[Connection], T],
        *,
        readonly: bool = False,
        conflict: Callable[[], tooz.ToozError] | None = None,
    ) -> T:
        return self._db.run(fn, readonly=readonly, conflict=conflict)

    def _read(self, fn: Callable[[Connection], T]) -> T:
        return self._run(fn, readonly=True)

    def _write(self, fn: Callable[[Connection], T], conflict: Callable[[], tooz.ToozError] | None = None) -> T:
        """A write on behalf of our session: it refreshes the session in the
        same transaction and refuses to write rows for a dead one (they
        would be invisible, or a lock breakable at once)."""

        def txn(conn: Connection) -> T:
            session_id = self._session_id
            if not self._touch(conn, session_id):
                raise _SessionLost(session_id)
            return fn(conn)

        try:
            return self._run(txn, conflict=conflict)
        except _SessionLost as lost:
            self._renew_session(lost.args[0])
            return self._run(txn, conflict=conflict)

    # --- session lifecycle ------------------------------------------------

    def _touch(self, conn: Connection, session_id: str) -> bool:
        return sql_sessions.touch(conn, self._t, session_id, self._ttl)

    def _open_session(self, conn: Connection) -> str:
        return sql_sessions.open_session(conn, self._t, self._member_id, self._ttl)

    def _renew_session(self, lost: str) -> None:
        """Replace the *lost* session: never revive it (a lock it held may
        belong to someone else by now), leave every group, count it.
        Several threads may notice the same loss: only the first renews."""
        with self._session_lock:
            old = self._session_id
            if old != lost:
                return

            def txn(conn: Connection) -> str:
                sql_sessions.delete_session(conn, self._t, old)
                return self._open_session(conn)

            self._session_id = self._run(txn)
            self._joined_groups.clear()
            self.session_lost_count += 1
        LOG.warning(
            "%s: session of member %r expired or vanished; opened a new one. Left every group: re-join them.",
            self._db.where,
            self._member_id,
        )

    def _start(self) -> None:
        engine = self._db.open()
        try:
            with self._db.translated():
                sql_schema.create_all(engine, self._t)
            self._session_id = self._run(self._open_session)
        except BaseException:
            self._db.close()
            raise

    def _stop(self) -> None:
        try:
            self._run(lambda conn: sql_sessions.delete_session(conn, self._t, self._session_id))
        except tooz.ToozError as exc:
            LOG.warning("could not delete session at stop (it will expire): %s", exc)
        finally:
            self._db.close()
            self._session_id = ""

    def heartbeat(self) -> float:
        """Push our session's expiry forward: one ``UPDATE`` of one row.

        If it matched nothing the session expired or was deleted: a fresh
        one is opened, ``_joined_groups`` emptied and
        :attr:`session_lost_count` incremented (re-join to reappear).
        Every :data:`REAP_EVERY` beats, expired sessions and their rows are
        also deleted. Returns the seconds until the next beat is due.
        """
        session_id = self._session_id
        if not self._run(lambda conn: self._touch(conn, session_id)):
            self._renew_session(session_id)
        self._beats_until_reap -= 1
        if self._beats_until_reap <= 0:
            self._beats_until_reap = REAP_EVERY
            try:
                self._run(lambda conn: sql_sessions.reap(conn, self._t))
            except tooz.ToozError as exc:  # reaping is housekeeping: never fatal
                LOG.warning("reaping expired sessions failed: %s", exc)
        return self._ttl / 3.0

    # --- groups -----------------------------------------------------------

    def _live(self) -> Any:
        return sql_sessions.live(self._t)

    def _group_rows(self, group_id: bytes, member_id: bytes | None = None) -> Sequence[MemberRow]:
        """ONE select: the group row outer-joined to its live members (or
        to one member). No rows: the group does not exist."""
        g, m, s = self._t.groups, self._t.members, self._t.sessions
        on = m.c.group_id == g.c.group_id
        if member_id is not None:
            on = sa.and_(on, m.c.member_id == member_id)
        query = (
            sa.select(m.c.member_id, m.c.capabilities, m.c.joined_at, s.c.beat_at)
            .select_from(g.outerjoin(m.join(s, self._live()), on))
            .where(g.c.group_id == group_id)
        )
        return self._read(lambda conn: conn.execute(query).all())

    def _member_rows(self, group_id: bytes) -> list[MemberRow]:
        """The live members' rows of a group; GroupNotCreated if it has none."""
        gid = _base.to_id(group_id, "group id")
        rows = self._group_rows(gid)
        if not rows:
            raise coordination.GroupNotCreated(gid)
        return [r for r in rows if r.member_id is not None]

    def create_group(self, group_id: bytes) -> _base.SyncResult[None]:
        def create() -> None:
            gid = _base.to_id(group_id, "group id")
            self._run(
                lambda conn: conn.execute(sa.insert(self._t.groups).values(group_id=gid, created_at=server_epoch())),
                conflict=lambda: coordination.GroupAlreadyExist(gid),
            )

        return _base.SyncResult.of(create)

    def get_groups(self) -> _base.SyncResult[list[bytes]]:
        g = self._t.groups
        return _base.SyncResult.of(
            lambda: list(self._read(lambda conn: conn.execute(sa.select(g.c.group_id)).scalars()))
        )

    def delete_group(self, group_id: bytes) -> _base.SyncResult[None]:
        t = self._t

        def txn(conn: Connection, gid: bytes) -> None:
            g, m = t.groups, t.members
            row = conn.execute(sa.select(g.c.group_id).where(g.c.group_id == gid).with_for_update())
            if row.first() is None:
                raise coordination.GroupNotCreated(gid)
            live = sa.select(m.c.member_id).join(t.sessions, self._live()).where(m.c.group_id == gid)
            if conn.execute(live.limit(1)).first() is not None:
                raise coordination.GroupNotEmpty(gid)
            for table in (m, t.leaders, g):
                conn.execute(sa.delete(table).where(table.c.group_id == gid))

        def delete() -> None:
            gid = _base.to_id(group_id, "group id")
            self._run(lambda conn: txn(conn, gid))

        return _base.SyncResult.of(delete)

    def join_group(
        self, group_id: bytes, capabilities: coordination.Capabilities | None = None
    ) -> _base.SyncResult[None]:
        t = self._t

        def join() -> None:
            gid = _base.to_id(group_id, "group id")
            caps = None if capabilities is None else utils.dumps(capabilities)

            def txn(conn: Connection) -> None:
                g, m = t.groups, t.members
                exists = sa.select(g.c.group_id).where(g.c.group_id == gid)
                # Shared row lock: a concurrent delete_group waits for us.
                if conn.execute(exists.with_for_update(read=True)).first() is None:
                    raise coordination.GroupNotCreated(gid)
                mine = sa.and_(m.c.group_id == gid, m.c.member_id == self._member_id)
                live = sa.select(m.c.member_id).join(t.sessions, self._live()).where(mine)
                if conn.execute(live).first() is not None:
                    raise coordination.MemberAlreadyExist(gid, self._member_id)
                conn.execute(sa.delete(m).where(mine))  # a dead session's row
                conn.execute(
                    sa.insert(m).values(
                        group_id=gid,
                        member_id=self._member_id,
                        session_id=self._session_id,
                        capabilities=caps,
                        joined_at=server_epoch(),
                    )
                )

            self._write(txn, conflict=lambda: coordination.MemberAlreadyExist(gid, self._member_id))
            self._joined_groups.add(gid)

        return _base.SyncResult.of(join)

    def _member_missing(self, gid: bytes, member_id: bytes) -> tooz.ToozError:
        """The right error once a member's row was not found."""
        g = self._t.groups
        found = self._read(lambda conn: conn.execute(sa.select(g.c.group_id).where(g.c.group_id == gid)).first())
        if found is None:
            return coordination.GroupNotCreated(gid)
        return coordination.MemberNotJoined(gid, member_id)

    def leave_group(self, group_id: bytes) -> _base.SyncResult[None]:
        """Delete our member row by (group, member id) whatever its session:
        a coordinator re-using a member id may boot a stale one out."""
        m = self._t.members

        def leave() -> None:
            gid = _base.to_id(group_id, "group id")
            stmt = sa.delete(m).where(m.c.group_id == gid, m.c.member_id == self._member_id)
            deleted = self._run(lambda conn: conn.execute(stmt).rowcount)
            self._joined_groups.discard(gid)
            if not deleted:
                raise self._member_missing(gid, self._member_id)

        return _base.SyncResult.of(leave)

    def get_members(self, group_id: bytes) -> _base.SyncResult[set[bytes]]:
        def members() -> set[bytes]:
            return {r.member_id for r in self._member_rows(group_id)}

        return _base.SyncResult.of(members)

    def get_members_with_capabilities(
        self, group_id: bytes
    ) -> _base.SyncResult[dict[bytes, coordination.Capabilities | None]]:
        def members() -> dict[bytes, coordination.Capabilities | None]:
            return {r.member_id: _caps(r.capabilities) for r in self._member_rows(group_id)}

        return _base.SyncResult.of(members)

    def get_members_with_heartbeats(
        self, group_id: bytes
    ) -> _base.SyncResult[dict[bytes, tuple[coordination.Capabilities | None, float | None]]]:
        """Live members with their capabilities and last heartbeat (epoch
        seconds, the database server's clock), in the same one SELECT.

        Not part of tooz's contract: the membership view uses it, when a
        driver has it, to know when each member last beat without a
        ``get_member_info`` round trip per member, and to keep that time
        exact after the member is gone.
        """

        def members() -> dict[bytes, tuple[coordination.Capabilities | None, float | None]]:
            return {r.member_id: (_caps(r.capabilities), r.beat_at) for r in self._member_rows(group_id)}

        return _base.SyncResult.of(members)

    def _member_row(self, group_id: bytes, member_id: bytes) -> MemberRow:
        gid = _base.to_id(group_id, "group id")
        mid = _base.to_id(member_id)
        rows = self._group_rows(gid, mid)
        if not rows:
            raise coordination.GroupNotCreated(gid)
        if rows[0].member_id is None:
            raise coordination.MemberNotJoined(gid, mid)
        return rows[0]

    def get_member_capabilities(
        self, group_id: bytes, member_id: bytes
    ) -> _base.SyncResult[coordination.Capabilities | None]:
        return _base.SyncResult.of(lambda: _caps(self._member_row(group_id, member_id).capabilities))

    def get_member_info(self, group_id: bytes, member_id: bytes) -> _base.SyncResult[dict[str, Any]]:
        """Capabilities, ``created_at`` (join time) and ``updated_at`` (the
        member's last heartbeat), both UTC datetimes from the server clock."""

        def info() -> dict[str, Any]:
            row = self._member_row(group_id, member_id)
            return {
                "capabilities": _caps(row.capabilities),
                "created_at": _epoch_to_datetime(row.joined_at),
                "updated_at": _epoch_to_datetime(row.beat_at),
            }

        return _base.SyncResult.of(info)

    def update_capabilities(self, group_id: bytes, capabilities: coordination.Capabilities) -> _base.SyncResult[None]:
        m = self._t.members

        def update() -> None:
            gid = _base.to_id(group_id, "group id")
            stmt = (
                sa.update(m)
                .where(m.c.group_id == gid, m.c.member_id == self._member_id, m.c.session_id == self._session_id)
                .values(capabilities=utils.dumps(capabilities))
            )
            if not self._write(lambda conn: conn.execute(stmt).rowcount):
                raise self._member_missing(gid, self._member_id)

        return _base.SyncResult.of(update)

    # --- leader election --------------------------------------------------

    def _take_leadership(self, gid: bytes) -> bool:
        """True when this call made us leader (not when we already were)."""

        def txn(conn: Connection) -> bool:
            return sql_sessions.take_leadership(conn, self._t, gid, self._member_id, self._session_id)

        try:
            return self._write(txn, conflict=_LostRace)
        except _LostRace:  # another coordinator inserted the row first
            return False

    def run_elect_coordinator(self) -> None:
        for group_id, hooks in list(self._hooks_elected_leader.items()):
            if self._take_leadership(_base.to_id(group_id, "group id")):
                hooks.run(coordination.LeaderElected(group_id, self._member_id))

    def run_watchers(self, timeout: float | None = None) -> list[Any]:
        result = super().run_watchers(timeout=timeout)
        self.run_elect_coordinator()
        return result

    def stand_down_group_leader(self, group_id: bytes) -> bool:
        ld = self._t.leaders
        gid = _base.to_id(group_id, "group id")
        stmt = sa.delete(ld).where(ld.c.group_id == gid, ld.c.session_id == self._session_id)
        return bool(self._run(lambda conn: conn.execute(stmt).rowcount))

    # tooz annotates bytes, but a group without a leader answers None (its suite asserts it).
    def get_leader(self, group_id: bytes) -> _base.SyncResult[bytes | None]:  # type: ignore[override]
        def leader() -> bytes | None:
            query = sql_sessions.leader_of(self._t, _base.to_id(group_id, "group id"))
            member_id: bytes | None = self._read(lambda conn: conn.execute(query).scalar())
            return member_id

        return _base.SyncResult.of(leader)

    # --- locks ------------------------------------------------------------

    def get_lock(self, name: bytes) -> sql_locks.SQLLock:
        return sql_locks.SQLLock(name, self)


def _caps(raw: bytes | None) -> coordination.Capabilities | None:
    return None if raw is None else utils.loads(raw)
