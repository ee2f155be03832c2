"""Distributed locks of the SQL tooz backend.

A lock is a set of holder rows ``(name, holder token, session, shared)``.
Holders are tied to the coordinator's session, so the locks of a
coordinator that died (stopped heart-beating) are broken by the next
acquirer instead of staying held forever.

Acquiring is check-then-insert, which is only atomic under a mutex: the
row ``<prefix>lock_names(name)`` is locked ``FOR UPDATE`` for the duration
of the acquiring transaction (PostgreSQL, MySQL); on SQLite the write
transaction itself (``BEGIN IMMEDIATE``) is the mutex.

Ownership is per :class:`SQLLock` *object* (a random token), not per
coordinator: two lock objects of the same name from one coordinator
exclude each other, as two ``threading.Lock`` would.
"""

from __future__ import annotations

import threading
import time
from typing import TYPE_CHECKING
import uuid

import sqlalchemy as sa
from sqlalchemy.engine import Connection
from tooz import locking
from tooz import utils

from servicegroup.drivers import _base
from servicegroup.drivers import sql_schema
from servicegroup.sqltime import server_epoch

if TYPE_CHECKING:
    from servicegroup.drivers.sql import SQLDriver

#: Polling of a blocking acquire: first retry after this, doubling up to
#: the maximum (a waiter notices a release within about half a second).
_FIRST_WAIT = 0.01
_MAX_WAIT = 0.5


class _MutexRowVanished(Exception):
    """The reaper deleted the name's mutex row between insert and lock."""


def try_acquire(
    conn: Connection, t: sql_schema.Tables, name: bytes, holder: str, session_id: str, shared: bool
) -> bool:
    """One attempt, inside a write transaction: True when *holder* got it."""
    sql_schema.insert_ignore(conn, t.lock_names, {"name": name})
    mutex = sa.select(t.lock_names.c.name).where(t.lock_names.c.name == name).with_for_update()
    if conn.execute(mutex).first() is None:
        raise _MutexRowVanished()
    s, lk = t.sessions, t.locks
    live = sa.and_(s.c.session_id == lk.c.session_id, s.c.expires_at > server_epoch())
    holders = conn.execute(
        sa.select(lk.c.holder, lk.c.shared, s.c.session_id.label("live"))
        .select_from(lk.outerjoin(s, live))
        .where(lk.c.name == name)
    ).all()
    dead = [h.holder for h in holders if h.live is None]
    if dead:  # their coordinator stopped heart-beating: the lock is free
        conn.execute(sa.delete(lk).where(lk.c.name == name, lk.c.holder.in_(dead)))
    alive = [h for h in holders if h.live is not None]
    if alive and not (shared and all(h.shared for h in alive)):
        return False
    conn.execute(sa.insert(lk).values(name=name, holder=holder, session_id=session_id, shared=shared))
    return True


class SQLLock(locking.Lock):
    """A tooz lock (exclusive or shared) held in the database."""

    def __init__(self, name: bytes | str, driver: SQLDriver) -> None:
        key = _base.to_id(name, "lock name")
        super().__init__(name)  # type: ignore[arg-type]  # tooz keeps str names as given
        self._key = key
        self._driver = driver
        self._holder = uuid.uuid4().hex
        self._state = threading.Lock()
        #: How many times this object holds the lock shared (re-entrant).
        self._shared_depth = 0
        self._exclusive = False

    def __repr__(self) -> str:
        return f"<SQLLock {self._key!r} holder={self._holder}>"

    def acquire(self, blocking: bool | float = True, shared: bool = False, timeout: float | None = None) -> bool:
        blocking, timeout = utils.convert_blocking(blocking, timeout)
        with self._state:
            if shared and self._shared_depth:
                self._shared_depth += 1
                return True
        deadline = None if timeout is None else time.monotonic() + timeout
        wait = _FIRST_WAIT
        while True:
            if self._attempt(shared):
                return True
            if not blocking:
                return False
            if deadline is not None:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                wait = min(wait, left)
            time.sleep(wait)
            wait = min(wait * 2, _MAX_WAIT)

    def _attempt(self, shared: bool) -> bool:
        with self._state:
            if self._exclusive or self._shared_depth:
                # This object holds it already: the database would say no
                # too, but only after a round trip.
                return False
            while True:
                try:
                    got = self._driver._write(
                        lambda conn: try_acquire(
                            conn,
                            self._driver._t,
                            self._key,
                            self._holder,
                            self._driver._session_id,
                            shared,
                        )
                    )
                except _MutexRowVanished:
                    continue
                break
            if got:
                self._exclusive = not shared
                self._shared_depth = 1 if shared else 0
            return got

    def release(self) -> bool:
        with self._state:
            if self._shared_depth > 1:
                self._shared_depth -= 1
                return True
            if not (self._exclusive or self._shared_depth):
                return False
            self._exclusive, self._shared_depth = False, 0
            lk = self._driver._t.locks
            deleted = self._driver._run(
                lambda conn: (
                    conn.execute(sa.delete(lk).where(lk.c.name == self._key, lk.c.holder == self._holder)).rowcount
                )
            )
            # 0 rows: the lock was broken (break_ or our session expired).
            return bool(deleted)

    def break_(self) -> bool:
        lk = self._driver._t.locks
        return bool(self._driver._run(lambda conn: conn.execute(sa.delete(lk).where(lk.c.name == self._key)).rowcount))

    def is_still_owner(self) -> bool:
        s, lk = self._driver._t.sessions, self._driver._t.locks
        query = (
            sa.select(lk.c.holder)
            .join(s, s.c.session_id == lk.c.session_id)
            .where(
                lk.c.name == self._key,
                lk.c.holder == self._holder,
                s.c.expires_at > server_epoch(),
            )
        )
        return self._driver._read(lambda conn: conn.execute(query).first() is not None)
