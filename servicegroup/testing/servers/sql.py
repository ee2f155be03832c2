"""The shared SQL servers, with a database of its own for each test session.

PostgreSQL and MariaDB are not started by the tests: ``scripts/ensure-services``
(``make services``) starts them on their usual loopback ports. Several test
runs use them at once (two suites of one developer, helpers side by side,
CI jobs), and the ``db`` driver creates its liveness tables under fixed
names: runs sharing one database would read and delete each other's rows.
So each process gets its own database per server, ``sg_<pid>_<random>``,
created by its first :func:`sql_url` call and dropped when the process ends
(``atexit``; test runners drop them earlier with
:func:`drop_session_databases`). A process killed before it could drop them
(SIGKILL) leaves them behind; the next session to create a database sweeps
every ``sg_<pid>_*`` database whose process no longer runs (the servers are
on loopback, so the pid is one of this machine's).

``SERVICEGROUP_TEST_PG_URL`` / ``SERVICEGROUP_TEST_MYSQL_URL`` name other
servers (a URL of any database the user may connect to and create
databases from); the session databases are then made there.
"""

from __future__ import annotations

import atexit
import os
import re
import tempfile
import threading
import uuid

import sqlalchemy as sa

from servicegroup.testing.servers.process import HOST, pid_alive, port_open

#: Dialect -> (env variable naming the server, default URL). The ``test``
#: database is where sessions connect to create and drop their own.
SHARED_SQL = {
    "postgresql": ("SERVICEGROUP_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/test"),
    "mysql": ("SERVICEGROUP_TEST_MYSQL_URL", "mysql+pymysql://root@127.0.0.1:3306/test"),
}
#: The shared Redis on its usual port (private ones: :mod:`.redis`).
SHARED_REDIS_URL = "redis://127.0.0.1:6379"
#: Names of session databases: ``sg_<pid of the creator>_<8 hex digits>``.
SESSION_DB = re.compile(r"^sg_(\d+)_[0-9a-f]{8}$")
#: DBAPI per dialect for the admin connection (the test URLs name the bare
#: dialect, as users do).
_DRIVERS = {"postgresql": "postgresql+psycopg2", "mysql": "mysql+pymysql"}


def shared_url(dialect: str) -> str:
    """URL of the shared server's own database (``test`` unless overridden)."""
    try:
        env, default = SHARED_SQL[dialect]
    except KeyError:
        raise ValueError(f"unknown SQL dialect {dialect!r}: sqlite, postgresql or mysql") from None
    return os.environ.get(env) or default


def sql_url(dialect: str, directory: str | os.PathLike[str] | None = None) -> str:
    """SQLAlchemy URL of a records/liveness database.

    ``sqlite``: a file in ``directory`` (a fresh temp dir when None);
    ``postgresql`` / ``mysql``: this process's own database on the shared
    server, created now if this is the first call.
    """
    if dialect == "sqlite":
        directory = directory or tempfile.mkdtemp(prefix="sg-sqlite-")
        return "sqlite:///" + os.path.join(os.fspath(directory), "servicegroup.sqlite")
    return _SESSION.url(dialect)


def shared_sql_down(dialect: str) -> str | None:
    """None when the shared server of ``dialect`` answers; else why not."""
    if dialect == "sqlite":
        return None
    url = sa.make_url(shared_url(dialect))
    host, port = url.host or HOST, url.port or {"postgresql": 5432, "mysql": 3306}[dialect]
    if port_open(host, port):
        return None
    return f"{dialect} is not listening on {host}:{port}: run `make services`"


def drop_session_databases() -> None:
    """Drop every database this process created (idempotent)."""
    _SESSION.drop_all()


class SharedServerDown(RuntimeError):
    """A shared SQL server does not answer (or refuses to create a database)."""


class SessionDatabases:
    """This process's databases on the shared servers, one per dialect."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._made: dict[str, str] = {}
        self._owner = os.getpid()

    def url(self, dialect: str) -> str:
        base = sa.make_url(shared_url(dialect))
        with self._lock:
            if os.getpid() != self._owner:  # a forked child: the parent's are not its own
                self._made, self._owner = {}, os.getpid()
            name = self._made.get(dialect)
            if name is None:
                name = f"sg_{os.getpid()}_{uuid.uuid4().hex[:8]}"
                try:
                    with _admin(base) as conn:
                        _sweep(conn, dialect)
                        _create(conn, dialect, name)
                except sa.exc.OperationalError as exc:
                    where = base.render_as_string(hide_password=True)
                    raise SharedServerDown(
                        f"{dialect}: cannot create a test database on {where} "
                        f"({type(exc.orig).__name__}): run `make services`"
                    ) from None
                self._made[dialect] = name
        return base.set(database=name).render_as_string(hide_password=False)

    def drop_all(self) -> None:
        with self._lock:
            if os.getpid() != self._owner:
                return  # a forked child leaves its parent's databases alone
            made, self._made = self._made, {}
        errors = []
        for dialect, name in made.items():
            try:
                with _admin(sa.make_url(shared_url(dialect))) as conn:
                    _drop(conn, dialect, name)
            except sa.exc.SQLAlchemyError as exc:
                errors.append(f"{dialect} {name}: {exc}")
        if errors:
            raise RuntimeError("could not drop test database(s): " + "; ".join(errors))


class _admin:
    """An autocommit connection to the shared server (CREATE/DROP DATABASE
    cannot run in a transaction on PostgreSQL)."""

    def __init__(self, base: sa.URL) -> None:
        dialect = base.get_backend_name()
        self._engine = sa.create_engine(
            base.set(drivername=_DRIVERS[dialect]), isolation_level="AUTOCOMMIT", poolclass=sa.pool.NullPool
        )

    def __enter__(self) -> sa.Connection:
        self._conn = self._engine.connect()
        return self._conn

    def __exit__(self, *exc: object) -> None:
        self._conn.close()
        self._engine.dispose()


def _create(conn: sa.Connection, dialect: str, name: str) -> None:
    if dialect == "postgresql":
        conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
    else:
        conn.exec_driver_sql(f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4")


def _drop(conn: sa.Connection, dialect: str, name: str) -> None:
    """Drop *name*, ending the connections still in it first (a test that
    never stopped its ServiceGroup must not keep the database alive)."""
    if dialect == "postgresql":
        conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        return
    rows = conn.exec_driver_sql(
        "SELECT id FROM information_schema.processlist WHERE db = %s AND id <> CONNECTION_ID()", (name,)
    ).fetchall()
    for (thread_id,) in rows:
        try:
            conn.exec_driver_sql(f"KILL {int(thread_id)}")
        except sa.exc.OperationalError:
            pass  # gone by itself meanwhile
    conn.exec_driver_sql(f"DROP DATABASE IF EXISTS `{name}`")


def _sweep(conn: sa.Connection, dialect: str) -> None:
    """Drop the session databases of processes that no longer run."""
    if dialect == "postgresql":
        names = conn.exec_driver_sql("SELECT datname FROM pg_database").scalars().all()
    else:
        names = conn.exec_driver_sql("SHOW DATABASES").scalars().all()
    for name in names:
        match = SESSION_DB.match(name)
        if match and not pid_alive(int(match.group(1))):
            try:
                _drop(conn, dialect, name)
            except sa.exc.SQLAlchemyError:
                pass  # another session swept it first


_SESSION = SessionDatabases()
atexit.register(_SESSION.drop_all)
