"""Optional client libraries: which ``servicegroup[...]`` extra installs
each, and the typed error when one is missing.

The base install carries only what the ``db`` driver on SQLite needs, as
tooz does; every other backend's client is an extra. Without this check a
missing client shows up as whatever the import inside tooz or SQLAlchemy
happens to raise (a stevedore "no driver", a ModuleNotFoundError deep in a
traceback), at the first connection rather than at configuration time.
Here it is :class:`~servicegroup.errors.MissingExtra`, raised when the
ServiceGroup is built, naming the extra to install.
"""

from __future__ import annotations

import importlib

from servicegroup import errors
from servicegroup import profiles

#: DBAPI module (SQLAlchemy's name after the ``+``) -> the extra installing it.
DBAPI_EXTRAS = {"psycopg2": "postgresql", "pymysql": "mysql"}


def require(module: str, extra: str, what: str) -> None:
    """Import *module*, or raise MissingExtra naming *extra* for *what*."""
    try:
        importlib.import_module(module)
    except ImportError:
        raise errors.MissingExtra(what, module, extra) from None


def require_scheme(scheme: str) -> None:
    """The client library of a liveness backend URL scheme, if it needs one."""
    client = profiles.for_scheme(scheme).client
    if client is not None:
        module, extra = client
        require(module, extra, f"the {scheme}:// liveness backend")


def require_dbapi(drivername: str) -> None:
    """The DBAPI of a SQLAlchemy ``dialect+dbapi`` name, if an extra installs it."""
    dbapi = drivername.partition("+")[2]
    extra = DBAPI_EXTRAS.get(dbapi)
    if extra is not None:
        require(dbapi, extra, f"a {drivername.partition('+')[0]} database")
