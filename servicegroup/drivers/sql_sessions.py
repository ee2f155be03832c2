"""The SQL that makes liveness: sessions, and leadership held by a session.

A session is one row whose ``expires_at`` is set from the *database
server's* clock (:func:`servicegroup.sqltime.server_epoch`), so clock skew
between hosts never changes who is alive; membership, lock and leader rows
point at a session and count only while it is live (:func:`live`). These
statements are kept apart from :mod:`.sql` (which decides *when* to run
them, in which transaction) because they are the liveness rule itself.
"""

from __future__ import annotations

from typing import Any
import uuid

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from servicegroup.drivers.sql_schema import Tables
from servicegroup.sqltime import server_epoch


def live(t: Tables) -> Any:
    """Join condition: a member row whose session is live."""
    s, m = t.sessions, t.members
    return sa.and_(s.c.session_id == m.c.session_id, s.c.expires_at > server_epoch())


def touch(conn: Connection, t: Tables, session_id: str, ttl: float) -> bool:
    """Extend a live session by *ttl*; False when it is expired or gone
    (never revived: a lock it held may belong to someone else by now)."""
    s = t.sessions
    stmt = (
        sa.update(s)
        .where(s.c.session_id == session_id, s.c.expires_at > server_epoch())
        .values(expires_at=server_epoch() + ttl, beat_at=server_epoch())
    )
    return conn.execute(stmt).rowcount == 1


def open_session(conn: Connection, t: Tables, member_id: bytes, ttl: float) -> str:
    """Insert a fresh session for *member_id*; returns its id."""
    session_id = uuid.uuid4().hex
    conn.execute(
        sa.insert(t.sessions).values(
            session_id=session_id,
            member_id=member_id,
            created_at=server_epoch(),
            beat_at=server_epoch(),
            expires_at=server_epoch() + ttl,
        )
    )
    return session_id


def delete_session(conn: Connection, t: Tables, session_id: str) -> None:
    """Delete a session and every row that points at it."""
    for table in (t.members, t.locks, t.leaders, t.sessions):
        conn.execute(sa.delete(table).where(table.c.session_id == session_id))


def reap(conn: Connection, t: Tables) -> None:
    """Delete expired sessions and every row that points at no session.

    Only hygiene: readers already ignore rows of dead sessions.
    """
    conn.execute(sa.delete(t.sessions).where(t.sessions.c.expires_at <= server_epoch()))
    alive = sa.select(t.sessions.c.session_id)
    for table in (t.members, t.locks, t.leaders):
        conn.execute(sa.delete(table).where(table.c.session_id.not_in(alive)))
    held = sa.select(t.locks.c.name)
    conn.execute(sa.delete(t.lock_names).where(t.lock_names.c.name.not_in(held)))


def take_leadership(conn: Connection, t: Tables, gid: bytes, member_id: bytes, session_id: str) -> bool:
    """Become *gid*'s leader unless a live session leads it; True when this
    call made us leader (not when we already were). Raises IntegrityError
    when another session inserted the leader row first."""
    ld, s = t.leaders, t.sessions
    alive = sa.and_(s.c.session_id == ld.c.session_id, s.c.expires_at > server_epoch())
    row = conn.execute(
        sa.select(ld.c.session_id, s.c.session_id.label("live"))
        .select_from(ld.outerjoin(s, alive))
        .where(ld.c.group_id == gid)
    ).first()
    if row is None:
        conn.execute(sa.insert(ld).values(group_id=gid, member_id=member_id, session_id=session_id))
        return True
    if row.live is not None:
        return False  # a live leader, perhaps us
    # The leader's session died: take over, unless someone else did.
    return bool(
        conn.execute(
            sa.update(ld)
            .where(ld.c.group_id == gid, ld.c.session_id == row.session_id)
            .values(member_id=member_id, session_id=session_id)
        ).rowcount
    )


def leader_of(t: Tables, gid: bytes) -> Any:
    """The query for *gid*'s leader: the member whose session leads it and lives."""
    ld, s = t.leaders, t.sessions
    return (
        sa.select(ld.c.member_id)
        .join(s, s.c.session_id == ld.c.session_id)
        .where(ld.c.group_id == gid, s.c.expires_at > server_epoch())
    )
