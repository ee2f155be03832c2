"""The repository of service records: the only code that writes them.

Rules every method keeps, and why:

- names are checked (:func:`servicegroup.names.check`) before any SQL runs,
  so a bad host or topic can never leave a row behind;
- each method is one transaction (or one statement), so a failure leaves
  nothing half written;
- every timestamp is computed by the database server inside the statement
  that writes it (:class:`servicegroup.sqltime.server_utcnow`): hosts with
  skewed clocks still agree on when a service was last seen;
- callers get immutable :class:`Service` snapshots, never live ORM objects
  that could lazy-load (and hit the database) from an ``is_up`` call.
"""

from __future__ import annotations

import builtins
from collections.abc import Mapping
import dataclasses
from datetime import datetime
import logging
from typing import Any
import uuid as uuidlib

from sqlalchemy import RowMapping, insert, select, true, update
from sqlalchemy.engine import Connection
from sqlalchemy.sql.elements import ColumnElement

from servicegroup import errors, names
from servicegroup.records import engine as engines
from servicegroup.records import schema
from servicegroup.records.models import as_utc, services
from servicegroup.sqltime import server_utcnow
from servicegroup.urls import redact

LOG = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class Service:
    """An immutable snapshot of one service record.

    ``up`` is not stored: the facade fills it from the liveness backend
    (:meth:`with_liveness`); the records layer leaves it ``None``.
    """

    id: int
    uuid: str
    host: str
    topic: str
    binary: str | None
    version: int
    report_count: int
    disabled: bool
    disabled_reason: str | None
    forced_down: bool
    created_at: datetime | None
    updated_at: datetime | None
    last_seen_up: datetime | None
    up: bool | None = None

    def with_liveness(self, up: bool, last_seen_up: datetime | None) -> Service:
        """A copy carrying what the liveness backend says about this service."""
        return dataclasses.replace(self, up=up, last_seen_up=last_seen_up)

    @classmethod
    def from_row(cls, row: RowMapping) -> Service:
        return cls(
            id=int(row["id"]),
            uuid=row["uuid"],
            host=row["host"],
            topic=row["topic"],
            binary=row["binary"],
            version=int(row["version"]),
            report_count=int(row["report_count"]),
            disabled=bool(row["disabled"]),
            disabled_reason=row["disabled_reason"],
            forced_down=bool(row["forced_down"]),
            created_at=as_utc(row["created_at"]),
            updated_at=as_utc(row["updated_at"]),
            last_seen_up=as_utc(row["last_seen_up"]),
        )


#: Columns of a snapshot (everything but the soft-delete marker).
_COLUMNS = [c for c in services.c if c.name != "deleted"]


def _live(host: str, topic: str) -> ColumnElement[bool]:
    return (services.c.host == host) & (services.c.topic == topic) & (services.c.deleted == 0)


class Records:
    """Service records in SQL (SQLite, PostgreSQL, MySQL/MariaDB).

    Construction is cheap and, with ``migrate=False``, does not connect;
    with ``migrate=True`` (the default) it brings the schema to head, which
    also proves the database is reachable. ``connect_timeout`` bounds each
    connection attempt to PostgreSQL or MySQL (SQLite keeps its 5 s busy
    timeout). Errors: InvalidURL (malformed URL or unknown option),
    BackendUnavailable (unreachable, missing database, bad credentials),
    InvalidName (bad host/topic, before any SQL), ServiceNotFound.
    """

    def __init__(self, url: str, *, migrate: bool = True, connect_timeout: float = 5.0) -> None:
        self._url = url
        self._engine = engines.create(url, connect_timeout=connect_timeout)
        if migrate:
            self.migrate()

    def __repr__(self) -> str:
        return f"Records({self.url_redacted!r})"

    @property
    def url_redacted(self) -> str:
        """The records URL with any password masked: the only form to show."""
        return redact(self._url)

    # -- schema ---------------------------------------------------------

    def migrate(self) -> None:
        """Apply the alembic migrations up to head (``servicegroup db-sync``).

        Safe to run from many processes at once (see
        :mod:`servicegroup.records.schema`); a no-op when already at head.
        """
        with engines.read(self._engine, self._url) as conn:
            schema.upgrade(conn)

    # -- writes ----------------------------------------------------------

    def upsert(self, host: str, topic: str, binary: str | None = None, version: int = 0) -> Service:
        """Create the live record of (host, topic), or refresh its binary and
        version; ``last_seen_up`` becomes the server's now.

        A soft-deleted record is never revived: a new row (new id, uuid and
        flags) is created, as nova does when a deleted service comes back.
        """
        host, topic = names.check(host, "host"), names.check(topic, "topic")
        if binary is not None:
            binary = names.check(binary, "binary")
        version = int(version)

        def write(conn: Connection) -> Service:
            now = server_utcnow()
            result = conn.execute(
                update(services)
                .where(_live(host, topic))
                .values(binary=binary, version=version, last_seen_up=now, updated_at=now)
            )
            if result.rowcount == 0:
                conn.execute(
                    insert(services).values(
                        uuid=str(uuidlib.uuid4()),
                        host=host,
                        topic=topic,
                        binary=binary,
                        version=version,
                        created_at=now,
                        last_seen_up=now,
                        deleted=0,
                    )
                )
            return self._one(conn, host, topic)

        return engines.run_write(self._engine, self._url, write)

    def set_forced_down(self, host: str, topic: str, down: bool) -> Service:
        """Fence (or unfence) a service; ServiceNotFound if it has no record."""
        return self._set(host, topic, forced_down=bool(down))

    def set_disabled(self, host: str, topic: str, disabled: bool, reason: str | None = None) -> Service:
        """Disable (with an optional reason) or enable a service.

        Enabling clears the reason. ``updated_at`` moves, ``last_seen_up``
        does not: enabling a dead host must not make it look alive.
        """
        if disabled and reason:
            reason = names.check(reason, "disabled reason")
        return self._set(host, topic, disabled=bool(disabled), disabled_reason=reason if disabled and reason else None)

    def _set(self, host: str, topic: str, **values: Any) -> Service:
        host, topic = names.check(host, "host"), names.check(topic, "topic")

        def write(conn: Connection) -> Service:
            result = conn.execute(
                update(services).where(_live(host, topic)).values(updated_at=server_utcnow(), **values)
            )
            if result.rowcount == 0:
                raise errors.ServiceNotFound(host, topic)
            return self._one(conn, host, topic)

        return engines.run_write(self._engine, self._url, write)

    def mark_seen(self, host: str, topic: str) -> None:
        """Record one heartbeat (see :meth:`mark_seen_many`); ServiceNotFound
        when the record is gone (an operator deleted it)."""
        if self.mark_seen_many({(host, topic): 1}):
            raise errors.ServiceNotFound(host, topic)

    def mark_seen_many(self, beats: Mapping[tuple[str, str], int]) -> builtins.list[tuple[str, str]]:
        """Record heartbeats, all in one transaction: for each ``(host,
        topic) -> n``, ``last_seen_up`` = the server's now and
        ``report_count`` + n. Returns the keys whose live record is gone.

        Written in batches off the heartbeat path
        (:mod:`servicegroup.recordkeeper`), never once per beat.
        ``updated_at`` is left alone, so it keeps meaning "the record last
        changed" rather than "last heartbeat".
        """
        checked = {(names.check(h, "host"), names.check(t, "topic")): int(n) for (h, t), n in beats.items()}

        def write(conn: Connection) -> builtins.list[tuple[str, str]]:
            gone = []
            for (host, topic), n in sorted(checked.items()):
                result = conn.execute(
                    update(services)
                    .where(_live(host, topic))
                    .values(last_seen_up=server_utcnow(), report_count=services.c.report_count + n)
                )
                if result.rowcount == 0:
                    gone.append((host, topic))
            return gone

        return engines.run_write(self._engine, self._url, write)

    def delete(self, host: str, topic: str) -> bool:
        """Soft-delete the live record (``deleted = id``); False if none.

        A member of this library serving it withdraws its membership at its
        next records write (:mod:`servicegroup.recordkeeper`), with a log
        line: a service without a record is not vouched for.
        """
        host, topic = names.check(host, "host"), names.check(topic, "topic")

        def write(conn: Connection) -> bool:
            result = conn.execute(
                update(services).where(_live(host, topic)).values(deleted=services.c.id, updated_at=server_utcnow())
            )
            return bool(result.rowcount)

        return engines.run_write(self._engine, self._url, write)

    # -- reads -------------------------------------------------------------

    def get(self, host: str, topic: str) -> Service | None:
        """The live record of (host, topic), or None."""
        host, topic = names.check(host, "host"), names.check(topic, "topic")
        with engines.read(self._engine, self._url) as conn:
            row = conn.execute(select(*_COLUMNS).where(_live(host, topic))).mappings().first()
        return Service.from_row(row) if row is not None else None

    def list(self, topic: str | None = None) -> builtins.list[Service]:
        """Live records, sorted by (topic, host); only *topic*'s if given."""
        stmt = select(*_COLUMNS).where(services.c.deleted == 0)
        if topic is not None:
            stmt = stmt.where(services.c.topic == names.check(topic, "topic"))
        stmt = stmt.order_by(services.c.topic, services.c.host)
        with engines.read(self._engine, self._url) as conn:
            rows = conn.execute(stmt).mappings().all()
        return [Service.from_row(r) for r in rows]

    def flags(self, topic: str | None = None, *, only_set: bool = False) -> dict[tuple[str, str], tuple[bool, bool]]:
        """``(host, topic) -> (forced_down, disabled)`` of live records.

        One narrow SELECT, meant to refresh an in-memory cache in the
        background so that ``is_up`` never queries the database itself.
        ``only_set`` returns just the records with a flag set: a fleet of
        thousands with a handful fenced reads a handful of rows per refresh.
        """
        c = services.c
        stmt = select(c.host, c.topic, c.forced_down, c.disabled).where(c.deleted == 0)
        if only_set:
            stmt = stmt.where((c.forced_down == true()) | (c.disabled == true()))
        if topic is not None:
            stmt = stmt.where(c.topic == names.check(topic, "topic"))
        with engines.read(self._engine, self._url) as conn:
            rows = conn.execute(stmt).all()
        return {(r[0], r[1]): (bool(r[2]), bool(r[3])) for r in rows}

    def server_now(self) -> datetime:
        """The database server's current UTC time (aware)."""
        with engines.read(self._engine, self._url) as conn:
            value = conn.execute(select(server_utcnow())).scalar_one()
        now = as_utc(value)
        assert now is not None
        return now

    # -- lifecycle ---------------------------------------------------------

    def dispose(self) -> None:
        """Close the pooled connections (the object stays usable: a later
        call opens new ones). Forked children need not call this: every
        engine is already dropped, without closing, after ``os.fork``."""
        self._engine.dispose()

    @staticmethod
    def _one(conn: Connection, host: str, topic: str) -> Service:
        row = conn.execute(select(*_COLUMNS).where(_live(host, topic))).mappings().one()
        return Service.from_row(row)
