"""Engines for the records database: URL handling, errors, fork safety.

Everything here exists because of a failure mode seen in the field:

- a URL typo must fail at once as :class:`~servicegroup.errors.InvalidURL`,
  and an unreachable server must fail within ``connect_timeout`` as
  :class:`~servicegroup.errors.BackendUnavailable` naming host, port and
  database — never with the password, never after the kernel's two-minute
  TCP timeout;
- forked workers must not share the parent's pooled connections (two
  processes talking on one socket corrupt each other's results), so every
  engine is disposed without closing in the child after ``os.fork``;
- SQLite's default deferred transactions deadlock two writers that both read
  first (neither waits for the busy timeout): writes here begin with
  ``BEGIN IMMEDIATE`` instead.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
import contextlib
import logging
import math
from typing import Any, TypeVar
from urllib.parse import unquote

import sqlalchemy as sa
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import URL, Connection, Engine
from sqlalchemy.pool import StaticPool

from servicegroup import errors
from servicegroup import forksafe
from servicegroup.urls import redact, userinfo_end

LOG = logging.getLogger(__name__)
T = TypeVar("T")

#: DBAPI used when the URL names none: the ones this project installs.
DEFAULT_DBAPI = {"postgresql": "psycopg2", "mysql": "pymysql", "mariadb": "pymysql"}


def _drop_pool_in_child(engine: Engine) -> None:
    # close=False: the sockets belong to the parent; closing them here
    # would send a terminate message on the parent's live sessions.
    engine.dispose(close=False)


#: Dialects the records layer is built and tested for.
SUPPORTED_DIALECTS = ("sqlite", "postgresql", "mysql", "mariadb")

#: Query options pysqlite takes (SQLAlchemy silently drops any other unless
#: ``uri=true``, which hands them to SQLite as URI parameters).
SQLITE_OPTIONS = frozenset({"uri", "timeout", "isolation_level", "detect_types",
                            "check_same_thread", "cached_statements"})


def check_dialect(dialect: str, url: str) -> None:
    """InvalidURL (URL redacted) unless *dialect* is one of
    :data:`SUPPORTED_DIALECTS`: the one place that list is enforced, for the
    records database and the ``db`` liveness URL derived from it."""
    if dialect not in SUPPORTED_DIALECTS:
        raise errors.InvalidURL(
            f"records database dialect {dialect!r} is not supported in {redact(url)}: "
            "use sqlite, postgresql or mysql/mariadb"
        )


def parse(url: str) -> URL:
    """Parse *url*, adding the default DBAPI; malformed -> InvalidURL.

    Refused here, before any connection, each as InvalidURL with the URL
    redacted: a dialect other than :data:`SUPPORTED_DIALECTS` (their DBAPI
    is not installed: a ModuleNotFoundError otherwise), port 0, a SQLite
    option pysqlite would ignore, and a user name or password SQLAlchemy
    would read differently from what it looks like (an unencoded ``@``).
    """
    if not isinstance(url, str) or not url.strip():
        raise errors.InvalidURL("records URL is empty: give e.g. sqlite:///servicegroup.sqlite")
    try:
        parsed = sa.make_url(url)
    except (sa_exc.ArgumentError, ValueError):
        # Not the exception's text: it may quote part of the password.
        raise errors.InvalidURL(f"malformed records URL {redact(url)}") from None
    backend, _, dbapi = parsed.drivername.partition("+")
    check_dialect(backend, url)
    _check_userinfo(url, parsed)
    if parsed.port == 0:
        raise errors.InvalidURL(f"port 0 in records URL {redact(url)}: give the server's port or none")
    if backend == "sqlite" and not _true(parsed.query.get("uri")):
        ignored = sorted(set(parsed.query) - SQLITE_OPTIONS)
        if ignored:
            raise errors.InvalidURL(
                f"unknown option(s) {', '.join(ignored)} in records URL {redact(url)}; "
                f"SQLite takes {', '.join(sorted(SQLITE_OPTIONS))} (SQLite URI "
                "parameters need uri=true)"
            )
    if not dbapi and backend in DEFAULT_DBAPI:
        parsed = parsed.set(drivername=f"{backend}+{DEFAULT_DBAPI[backend]}")
    try:
        parsed.get_dialect()
    except (sa_exc.NoSuchModuleError, ImportError) as exc:
        raise errors.InvalidURL(
            f"unsupported records URL {redact(url)}: {_first_line(exc)} "
            "(sqlite, postgresql and mysql are supported)"
        ) from None
    return parsed


def _check_userinfo(url: str, parsed: URL) -> None:
    """Refuse a userinfo SQLAlchemy splits elsewhere than :mod:`servicegroup.urls`
    does: with an unencoded ``@`` in the password, SQLAlchemy takes the text
    after the first ``@`` as the host, so the password's tail would be
    "resolved" as a host name, and quoted in the DNS error."""
    scheme_end = url.find("://")
    at = userinfo_end(url, scheme_end + 3) if scheme_end != -1 else -1
    if at == -1:
        return
    user, colon, password = url[scheme_end + 3:at].partition(":")
    if unquote(user) != (parsed.username or "") or (colon and unquote(password) != (parsed.password or "")):
        raise errors.InvalidURL(
            f"ambiguous user name or password in records URL {redact(url)}: "
            "percent-encode an '@' in them as %40"
        )


def _true(value: object) -> bool:
    if isinstance(value, tuple):
        value = value[-1] if value else None
    return str(value).lower() in ("1", "true", "yes", "on")


def describe(url: URL) -> str:
    """``host:port/database`` of *url*, for messages (no credentials)."""
    if url.get_backend_name() == "sqlite":
        return f"sqlite file {url.database or ':memory:'}"
    default_port = {"postgresql": 5432, "mysql": 3306, "mariadb": 3306}.get(url.get_backend_name())
    return f"{url.host or 'localhost'}:{url.port or default_port}/{url.database or ''}"


def create(url: str, connect_timeout: float = 5.0) -> Engine:
    """An engine for *url* with bounded connect time, registered for fork safety."""
    parsed = parse(url)
    backend = parsed.get_backend_name()
    kwargs: dict[str, Any] = {"pool_pre_ping": True}
    connect_args: dict[str, Any] = {}
    if backend == "postgresql":
        # libpq takes whole seconds (and treats 1 as 2).
        connect_args["connect_timeout"] = max(1, math.ceil(connect_timeout))
    elif backend in ("mysql", "mariadb"):
        connect_args["connect_timeout"] = max(1, math.ceil(connect_timeout))
        kwargs["pool_recycle"] = 3600  # below MySQL's default wait_timeout
    elif backend == "sqlite":
        kwargs.pop("pool_pre_ping")
        if parsed.database in (None, "", ":memory:"):
            # One shared in-memory database for every thread, not one each.
            kwargs["poolclass"] = StaticPool
            connect_args["check_same_thread"] = False
    for key in list(connect_args):
        if key in parsed.query:  # the URL's own option wins
            connect_args.pop(key)
    try:
        engine = sa.create_engine(parsed, connect_args=connect_args, **kwargs)
    except ImportError as exc:  # a supported dialect with a DBAPI not installed
        raise errors.InvalidURL(
            f"records URL {redact(url)} needs a DBAPI that is not installed: {_first_line(exc)}"
        ) from None
    except (sa_exc.ArgumentError, TypeError, ValueError) as exc:
        raise errors.InvalidURL(f"bad records URL {redact(url)}: {_first_line(exc)}") from None
    if backend == "sqlite":
        sa.event.listen(engine, "connect", _sqlite_on_connect)
    forksafe.register(engine, _drop_pool_in_child)
    return engine


def _sqlite_on_connect(dbapi_conn: Any, record: Any) -> None:
    # Hand transaction control to us: pysqlite's implicit BEGIN is deferred
    # (see module docstring); writes issue BEGIN IMMEDIATE themselves.
    dbapi_conn.isolation_level = None
    cursor = dbapi_conn.cursor()
    try:
        cursor.execute("PRAGMA foreign_keys=ON")
        try:
            # Readers no longer block the heartbeat writers (and vice versa).
            cursor.execute("PRAGMA journal_mode=WAL")
        except Exception:  # busy or read-only: keep the current journal
            LOG.debug("could not switch SQLite to WAL", exc_info=True)
    finally:
        cursor.close()


def is_sqlite(engine: Engine) -> bool:
    return engine.dialect.name == "sqlite"


@contextlib.contextmanager
def translated(
    engine: Engine, url: str, passthrough: Callable[[BaseException], bool] | None = None
) -> Iterator[None]:
    """Turn connection-level failures into BackendUnavailable.

    Integrity and programming errors pass through: they are bugs or races
    the caller handles, not an unreachable database; so does whatever
    *passthrough* accepts (races a caller retries).
    """
    try:
        yield
    except sa_exc.DBAPIError as exc:
        if passthrough is not None and passthrough(exc):
            raise
        if isinstance(exc, (sa_exc.OperationalError, sa_exc.InterfaceError)):
            raise unavailable(engine.url, url, exc) from exc
        if exc.connection_invalidated:
            raise unavailable(engine.url, url, exc) from exc
        raise
    except sa_exc.TimeoutError as exc:
        raise unavailable(engine.url, url, exc) from exc


def unavailable(parsed: URL, url: str, exc: BaseException) -> errors.BackendUnavailable:
    """A BackendUnavailable naming where, with the URL redacted."""
    reason = _first_line(getattr(exc, "orig", None) or exc)
    if parsed.password:
        reason = reason.replace(str(parsed.password), "***")
    return errors.BackendUnavailable(
        f"records database {describe(parsed)} unavailable ({redact(url)}): {reason}"
    )


@contextlib.contextmanager
def connect(engine: Engine, url: str) -> Iterator[Connection]:
    """A connection whose *connect* errors are typed (bad options ->
    InvalidURL, unreachable -> BackendUnavailable); errors of the block are
    the caller's to translate (see :func:`read` and :func:`run_write`)."""
    with translated(engine, url):
        try:
            conn = engine.connect()
        except sa_exc.ProgrammingError as exc:  # psycopg2: invalid dsn option
            raise errors.InvalidURL(
                f"bad records URL {redact(url)}: {_first_line(exc.orig or exc)}"
            ) from None
        except TypeError as exc:  # pymysql: unexpected keyword option
            raise errors.InvalidURL(f"bad records URL {redact(url)}: {exc}") from None
    with conn:
        yield conn


@contextlib.contextmanager
def read(engine: Engine, url: str) -> Iterator[Connection]:
    """A connection for reads, every failure typed."""
    with connect(engine, url) as conn, translated(engine, url):
        yield conn


def run_write(engine: Engine, url: str, fn: Callable[[Connection], T], attempts: int = 3) -> T:
    """Run ``fn(conn)`` in one write transaction, retrying lost races.

    Committed on success, rolled back on any error: nothing is ever half
    written. Two processes creating the same record race on the unique
    index (IntegrityError) or, on MySQL, deadlock on gap locks; the whole
    transaction is then retried and finds the winner's row.
    """
    for attempt in range(1, attempts + 1):
        try:
            with connect(engine, url) as conn:
                with translated(engine, url, passthrough=_retryable), conn.begin():
                    if is_sqlite(engine):
                        conn.exec_driver_sql("BEGIN IMMEDIATE")
                    return fn(conn)
        except sa_exc.DBAPIError as exc:
            if attempt == attempts or not _retryable(exc):
                with translated(engine, url):
                    raise
            LOG.debug("retrying a write after a lost race: %s", _first_line(exc.orig or exc))
    raise AssertionError("unreachable")  # pragma: no cover


def _retryable(exc: BaseException) -> bool:
    if isinstance(exc, sa_exc.IntegrityError):
        return True
    orig = getattr(exc, "orig", None)
    code = getattr(orig, "pgcode", None) or (getattr(orig, "args", None) or [None])[0]
    return code in ("40P01", "40001", 1213, 1205)  # deadlock, serialization, lock wait


def _first_line(exc: object) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0].strip()
