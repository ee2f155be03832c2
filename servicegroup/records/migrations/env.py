"""alembic environment of the service records.

At runtime :func:`servicegroup.records.schema.upgrade` hands us a connection
that already holds the migration lock and an open transaction. The
``alembic`` command line (developers: ``alembic -c
servicegroup/records/alembic.ini revision --autogenerate``) has none: we
open one from ``sqlalchemy.url`` and take the same lock.
"""

from __future__ import annotations

from alembic import context
from sqlalchemy.engine import Connection

from servicegroup.records import engine as engines
from servicegroup.records import schema
from servicegroup.records.models import Base

config = context.config


def _run(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=Base.metadata,
        version_table=schema.VERSION_TABLE,
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


if context.is_offline_mode():
    context.configure(
        url=config.get_main_option("sqlalchemy.url"),
        target_metadata=Base.metadata,
        version_table=schema.VERSION_TABLE,
        literal_binds=True,
    )
    with context.begin_transaction():
        context.run_migrations()
elif config.attributes.get("connection") is not None:
    _run(config.attributes["connection"])
else:
    _engine = engines.create(config.get_main_option("sqlalchemy.url") or "")
    try:
        with _engine.connect() as _conn, schema.locked_transaction(_conn):
            _run(_conn)
    finally:
        _engine.dispose()
