"""SQLAlchemy models of the service records.

The schema is owned by the alembic migrations in ``migrations/versions``;
these models describe the same table for queries (a unit test compares the
two, so they cannot drift apart).

Two choices worth knowing:

- ``deleted`` follows nova: ``0`` for the live record, the row's own ``id``
  once soft-deleted, so that ``UNIQUE (host, topic, deleted)`` allows one
  live record per (host, topic) and any number of deleted ones.
- Timestamps are stored as naive UTC (SQLite and MySQL ``DATETIME`` have no
  time zone) and handed back as *aware* UTC by :class:`UTCDateTime`, so
  callers never compare a naive datetime with an aware one.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from sqlalchemy import Boolean, DateTime, Index, Integer, String, UniqueConstraint, false, text
from sqlalchemy.dialects import mysql
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator, TypeEngine

#: Name of the unique constraint, nova style; the migration uses the same.
UNIQUE_LIVE = "uniq_services0host0topic0deleted"


class UTCDateTime(TypeDecorator[datetime]):
    """A naive UTC ``DATETIME`` column read back as an aware UTC datetime.

    MySQL gets ``DATETIME(6)``: its plain ``DATETIME`` drops microseconds,
    which would make two heartbeats in the same second look identical.
    """

    impl = DateTime
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> TypeEngine[Any]:
        if dialect.name in ("mysql", "mariadb"):
            return dialect.type_descriptor(mysql.DATETIME(fsp=6))
        return dialect.type_descriptor(DateTime())

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is not None and value.tzinfo is not None:
            value = value.astimezone(timezone.utc).replace(tzinfo=None)
        return value

    def process_result_value(self, value: datetime | str | None, dialect: Dialect) -> datetime | None:
        return as_utc(value)


def as_utc(value: datetime | str | None) -> datetime | None:
    """A database datetime (naive UTC, or aware) as an aware UTC datetime."""
    if value is None:
        return None
    # A string: SQLite, when the column type is lost.
    when = datetime.fromisoformat(value) if isinstance(value, str) else value
    if when.tzinfo is None:
        return when.replace(tzinfo=timezone.utc)
    return when.astimezone(timezone.utc)


class Base(DeclarativeBase):
    """Declarative base of the records layer (its own metadata: the SQL
    liveness driver keeps its tables apart)."""


class ServiceRow(Base):
    """One service record: a (host, topic) pair and its operator flags."""

    __tablename__ = "services"
    __table_args__ = (
        UniqueConstraint("uuid", name="uniq_services0uuid"),
        UniqueConstraint("host", "topic", "deleted", name=UNIQUE_LIVE),
        Index("ix_services_topic_deleted", "topic", "deleted"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    uuid: Mapped[str] = mapped_column(String(36), nullable=False)
    host: Mapped[str] = mapped_column(String(255), nullable=False)
    topic: Mapped[str] = mapped_column(String(255), nullable=False)
    binary: Mapped[str | None] = mapped_column(String(255), nullable=True)
    version: Mapped[int] = mapped_column(Integer, nullable=False, server_default=text("0"))
    report_count: Mapped[int] = mapped_column(Integer, nullable=False, server_default=text("0"))
    disabled: Mapped[bool] = mapped_column(Boolean, nullable=False, server_default=false())
    disabled_reason: Mapped[str | None] = mapped_column(String(255), nullable=True)
    forced_down: Mapped[bool] = mapped_column(Boolean, nullable=False, server_default=false())
    created_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    updated_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    last_seen_up: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    deleted: Mapped[int] = mapped_column(Integer, nullable=False, server_default=text("0"))


#: The Core table the repository writes through (one statement per call).
#: Looked up in the metadata, where it is typed as the Table it is
#: (``ServiceRow.__table__`` is declared as any FromClause).
services = Base.metadata.tables[ServiceRow.__tablename__]
