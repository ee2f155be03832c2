"""What every ``servicegroup`` command shares: the backend options, the
ServiceGroup they build, and the rule that a failure is one line.

A command is a class deriving from :class:`GroupCommand` (plus cliff's
``Lister`` when it prints rows) and an entry point in the
``servicegroup.cli`` group of ``setup.cfg``; nothing else needs to know it.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Iterator
import contextlib
import logging
import math
import os
import sys
import threading
import traceback
from typing import TYPE_CHECKING, Any, NoReturn
import urllib.parse

from cliff import command

from servicegroup import backend
from servicegroup import conf as sg_conf
from servicegroup import errors
from servicegroup.urls import redact

if TYPE_CHECKING:
    from sqlalchemy.engine import URL

    from servicegroup.api import ServiceGroup

#: Exit code of every error the CLI can name: configuration, input, backend,
#: bad arguments (argparse's own code for the last).
EXIT_ERROR = 2

#: Exit code of an error nobody anticipated (one line, or a traceback with --debug).
EXIT_UNEXPECTED = 1

#: The backend options, as (flag, argparse keywords). Every command takes
#: them, and so does the application itself, so that both
#: ``servicegroup service-list --driver zk`` and
#: ``servicegroup --driver zk service-list`` work.
BACKEND_OPTIONS: tuple[tuple[str, dict[str, Any]], ...] = (
    ("--config-file", {"help": "oslo.config file with [servicegroup] and [database]"}),
    ("--driver", {"help": "db | zk | mc | redis | etcd | consul, or a tooz URL"}),
    ("--url", {"help": "backend URL (default: per driver)"}),
    ("--records-url", {"help": "SQLAlchemy URL of the records database"}),
    ("--report-interval", {"type": float, "help": "seconds between heartbeats"}),
    ("--service-down-time", {"type": float, "help": "seconds without heartbeat until down"}),
    ("--max-staleness", {"type": float, "help": "oldest membership view is_up may use"}),
    ("--previous-driver", {"help": "driver being switched away from (see driver-status)"}),
    ("--previous-url", {"help": "backend URL of --previous-driver"}),
)

#: The Settings fields the backend options set (all but --config-file).
_FIELDS = tuple(flag[2:].replace("-", "_") for flag, _ in BACKEND_OPTIONS if flag != "--config-file")

HOW_TO_CREATE = "run `servicegroup db-sync` first (or check --records-url / [database] connection)"

LOG = logging.getLogger(__name__)


def seconds(text: str) -> float:
    """argparse type of ``--timeout``: finite seconds >= 0 (0: never).

    ``inf`` killed the timer thread with an OverflowError and then hung;
    ``nan`` and negative values fired at once.
    """
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not math.isfinite(value) or value < 0 or value > threading.TIMEOUT_MAX:
        raise argparse.ArgumentTypeError(
            f"{text!r} must be a finite number of seconds from 0 to {threading.TIMEOUT_MAX:.0f}"
        )
    return value


def count(minimum: int) -> Callable[[str], int]:
    """argparse type: a whole number >= *minimum*."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"{text!r} must be at least {minimum}")
        return value

    return parse


def add_backend_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("backend")
    for flag, kwargs in BACKEND_OPTIONS:
        group.add_argument(flag, **kwargs)


def one_line_errors(parser: argparse.ArgumentParser) -> None:
    """Make *parser*'s usage errors one line (the usage is ``--help``'s), like
    every other error of the CLI; exit code 2, as argparse's."""

    def error(message: str) -> NoReturn:
        parser.exit(EXIT_ERROR, f"{parser.prog}: error: {message} (see --help)\n")

    parser.error = error  # type: ignore[method-assign]


def settings_from(
    args: argparse.Namespace, app_args: argparse.Namespace | None = None, **defaults: Any
) -> sg_conf.Settings:
    """Settings of a command: its flags, else the application's flags (given
    before the command name), else the config file, else *defaults*."""

    def flag(name: str) -> Any:
        value = getattr(args, name, None)
        if value is None and app_args is not None:
            value = getattr(app_args, name, None)
        return value  # an explicit 0 is refused by Settings, not ignored

    base = sg_conf.Settings(**defaults) if defaults else sg_conf.Settings()
    config_file = flag("config_file")
    if config_file:
        base = sg_conf.Settings.from_file(config_file)
    values = {}
    for name in _FIELDS:
        value = flag(name)
        values[name] = getattr(base, name) if value is None else value
    return sg_conf.Settings(**values)


def _sqlite_path(url: URL) -> str | None:
    """The file of a SQLite records URL (None: in memory)."""
    database = url.database or ""
    if str(url.query.get("uri", "")).lower() in ("1", "true", "yes", "on") and database.startswith("file:"):
        parts = urllib.parse.urlsplit(database)
        if "mode=memory" in parts.query:
            return None
        database = urllib.parse.unquote(parts.path)
    return None if database in ("", ":memory:") else database


def require_records(records_url: str) -> None:
    """Refuse a records database that does not exist or has no schema.

    Opening a SQLite URL creates the file, and ServiceGroup brings any
    database to the schema's head: a mistyped path then answered an empty
    listing with exit 0, and ``disable`` said ServiceNotFound. Only the
    commands that create services (``db-sync``, ``join``, ``demo``,
    ``bench``) may create the database; the others call this first. The
    connection is bounded (``backend.CONNECT_TIMEOUT``) and its failures are
    the records layer's typed, redacted errors.
    """
    import sqlalchemy as sa

    from servicegroup.records import engine as records_engine
    from servicegroup.records.models import services

    table = services.name
    parsed = records_engine.parse(records_url)  # InvalidURL before anything else
    where = redact(records_url)
    if parsed.get_backend_name() == "sqlite":
        path = _sqlite_path(parsed)
        where = path or where
        if path is not None and not os.path.exists(path):
            raise errors.ConfigError(f"records database {path} does not exist: {HOW_TO_CREATE}")
    engine = records_engine.create(records_url, connect_timeout=backend.CONNECT_TIMEOUT)
    try:
        with records_engine.read(engine, records_url) as conn:
            ready = sa.inspect(conn).has_table(table)
    finally:
        engine.dispose()
    if not ready:
        raise errors.ConfigError(f"records database {where} has no {table} table: {HOW_TO_CREATE}")


def open_group(settings: sg_conf.Settings, *, create: bool = False, **kwargs: Any) -> ServiceGroup:
    """The ServiceGroup of a command. Unless *create*, the records database
    must exist already (:func:`require_records`)."""
    if not create:
        require_records(settings.records_url)
    from servicegroup.api import ServiceGroup  # not at import: `--help` stays fast

    return ServiceGroup.from_settings(settings, **kwargs)


@contextlib.contextmanager
def view_quiet(debug: bool) -> Iterator[None]:
    """While a command starts, keep the membership view's read-failure
    warnings off stderr: the command reports the failure itself, in one
    line (``ServiceGroup.liveness_unknown``). With ``--debug`` they show."""
    logger = logging.getLogger("servicegroup.membership")
    level = logger.level
    if not debug:
        logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


class GroupCommand(command.Command):
    """Base of every servicegroup command: the backend options, and errors
    as one line on stderr with exit code 2 (1 for the unexpected), a
    traceback only with ``--debug``.

    Subclasses implement ``take_action`` and, when they may create the
    records database, set ``creates_records``.
    """

    #: Only commands that create services may create the records database.
    creates_records = False

    def get_parser(self, prog_name: str) -> argparse.ArgumentParser:
        parser = super().get_parser(prog_name)
        add_backend_options(parser)
        one_line_errors(parser)
        return parser

    @property
    def debug(self) -> bool:
        return bool(getattr(self.app_args, "debug", False))

    def settings(self, parsed_args: argparse.Namespace, **defaults: Any) -> sg_conf.Settings:
        return settings_from(parsed_args, self.app_args, **defaults)

    def open_group(self, parsed_args: argparse.Namespace, **kwargs: Any) -> ServiceGroup:
        return open_group(self.settings(parsed_args), create=self.creates_records, **kwargs)

    def out(self, line: str) -> None:
        """One line on stdout, flushed (a member's output is read live)."""
        self.app.stdout.write(line + "\n")
        self.app.stdout.flush()

    def report(self, exc: BaseException, unexpected: bool = False) -> None:
        """*exc* as the one line on stderr (no credentials)."""
        kind = f"unexpected {type(exc).__name__}" if unexpected else type(exc).__name__
        line = f"servicegroup {self.cmd_name}: {kind}: {backend.describe(exc)}"
        if unexpected and not self.debug:
            line += " (run with --debug for a traceback)"
        self.app.stderr.write(line + "\n")
        self.app.stderr.flush()

    def run(self, parsed_args: argparse.Namespace) -> int:
        try:
            return int(super().run(parsed_args))
        except errors.ServiceGroupError as exc:
            self.report(exc)
            self._traceback()
            return EXIT_ERROR
        except BrokenPipeError:
            # `service-list | head`: the reader left. cliff exits 141 (as a
            # SIGPIPE death would); stdout goes to /dev/null so the
            # interpreter's final flush does not complain a second time.
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            raise
        except Exception as exc:
            self.report(exc, unexpected=True)
            self._traceback()
            return EXIT_UNEXPECTED

    def _traceback(self) -> None:
        if self.debug:
            traceback.print_exc(file=self.app.stderr)
