"""The records database's engine and its errors, as servicegroup errors.

The engine itself (bounds, SQLite transactions, retries, fork safety) is
:mod:`servicegroup.sqlengine`'s, shared with the SQL liveness backend. What
is the records layer's own is what its callers see when something fails:

- a URL typo fails at once as :class:`~servicegroup.errors.InvalidURL`;
- an unreachable, silent or overloaded server fails within the engine's
  bounds as :class:`~servicegroup.errors.BackendUnavailable` naming host,
  port and database, never with the password;
- a write is one transaction, retried whole when it lost a race (a unique
  index clash with another process creating the same record, a deadlock),
  and never half written.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
import contextlib
import logging
from typing import Any, TypeVar
from urllib.parse import unquote

import sqlalchemy as sa
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import URL, Connection, Engine

from servicegroup import errors
from servicegroup import extras
from servicegroup import sqlengine
from servicegroup.urls import redact, userinfo_end

LOG = logging.getLogger(__name__)
T = TypeVar("T")

#: Query options pysqlite takes (SQLAlchemy silently drops any other unless
#: ``uri=true``, which hands them to SQLite as URI parameters).
SQLITE_OPTIONS = frozenset(
    {"uri", "timeout", "isolation_level", "detect_types", "check_same_thread", "cached_statements"}
)


def parse(url: str) -> URL:
    """Parse *url*, adding the default DBAPI; malformed -> InvalidURL.

    Refused here, before any connection, each as InvalidURL with the URL
    redacted: a dialect other than :data:`~servicegroup.sqlengine.SUPPORTED_DIALECTS` (their DBAPI
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
    sqlengine.check_dialect(backend, url)
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
    if not dbapi:
        parsed = parsed.set(drivername=sqlengine.drivername(backend))
    extras.require_dbapi(parsed.drivername)
    try:
        parsed.get_dialect()
    except (sa_exc.NoSuchModuleError, ImportError) as exc:
        raise errors.InvalidURL(
            f"unsupported records URL {redact(url)}: {_first_line(exc)} (sqlite, postgresql and mysql are supported)"
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
    user, colon, password = url[scheme_end + 3 : at].partition(":")
    if unquote(user) != (parsed.username or "") or (colon and unquote(password) != (parsed.password or "")):
        raise errors.InvalidURL(
            f"ambiguous user name or password in records URL {redact(url)}: percent-encode an '@' in them as %40"
        )


def _true(value: object) -> bool:
    if isinstance(value, tuple):
        value = value[-1] if value else None
    return str(value).lower() in ("1", "true", "yes", "on")


def describe(url: URL) -> str:
    """``host:port/database`` of *url*, for messages (no credentials)."""
    if url.get_backend_name() == "sqlite":
        return f"sqlite file {url.database or ':memory:'}"
    default_port = sqlengine.DEFAULT_PORTS.get(url.get_backend_name())
    return f"{url.host or 'localhost'}:{url.port or default_port}/{url.database or ''}"


def create(url: str, connect_timeout: float = sqlengine.CONNECT_TIMEOUT) -> Engine:
    """The engine for *url*: :func:`servicegroup.sqlengine.make_engine`'s
    bounds, hooks and fork safety; a bad URL is InvalidURL."""
    parsed = parse(url)
    # A pooled connection the server closed is replaced before use, not
    # failed: records calls are rare enough for the extra round trip.
    kwargs: dict[str, Any] = {} if parsed.get_backend_name() == "sqlite" else {"pool_pre_ping": True}
    try:
        return sqlengine.make_engine(parsed, connect_timeout=connect_timeout, **kwargs)
    except ImportError as exc:  # a supported dialect with a DBAPI not installed
        raise errors.InvalidURL(
            f"records URL {redact(url)} needs a DBAPI that is not installed: {_first_line(exc)}"
        ) from None
    except (sa_exc.ArgumentError, TypeError, ValueError) as exc:
        raise errors.InvalidURL(f"bad records URL {redact(url)}: {_first_line(exc)}") from None


@contextlib.contextmanager
def translated(engine: Engine, url: str, passthrough: Callable[[BaseException], bool] | None = None) -> Iterator[None]:
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
    return errors.BackendUnavailable(f"records database {describe(parsed)} unavailable ({redact(url)}): {reason}")


@contextlib.contextmanager
def connect(engine: Engine, url: str) -> Iterator[Connection]:
    """A connection whose *connect* errors are typed (bad options ->
    InvalidURL, unreachable -> BackendUnavailable); errors of the block are
    the caller's to translate (see :func:`read` and :func:`run_write`)."""
    with translated(engine, url):
        try:
            conn = engine.connect()
        except sa_exc.ProgrammingError as exc:  # psycopg2: invalid dsn option
            raise errors.InvalidURL(f"bad records URL {redact(url)}: {_first_line(exc.orig or exc)}") from None
        except TypeError as exc:  # pymysql: unexpected keyword option
            raise errors.InvalidURL(f"bad records URL {redact(url)}: {exc}") from None
    with conn:
        yield conn


@contextlib.contextmanager
def read(engine: Engine, url: str) -> Iterator[Connection]:
    """A connection for reads (on SQLite, autocommitted statements that
    never wait for writers), every failure typed."""
    with connect(engine, url) as conn, translated(engine, url):
        yield sqlengine.readonly(conn)


def run_write(engine: Engine, url: str, fn: Callable[[Connection], T], attempts: int = sqlengine.ATTEMPTS) -> T:
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
                    return fn(conn)
        except sa_exc.DBAPIError as exc:
            if attempt == attempts or not _retryable(exc):
                with translated(engine, url):
                    raise
            LOG.debug("retrying a write after a lost race: %s", _first_line(exc.orig or exc))
            sqlengine.pause(attempt)
    raise AssertionError("unreachable")  # pragma: no cover


def _retryable(exc: BaseException) -> bool:
    if isinstance(exc, sa_exc.IntegrityError):
        return True
    return isinstance(exc, sa_exc.DBAPIError) and sqlengine.retryable(exc)


def _first_line(exc: object) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0].strip()
