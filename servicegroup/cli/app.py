"""The ``servicegroup`` application: cliff's App, with the CLI's rules.

Commands are entry points of the ``servicegroup.cli`` group (one class
each, see :mod:`servicegroup.cli.common`). What this module adds to cliff:

- every error is one line on stderr: usage errors (exit 2, the usage is
  ``--help``'s), unknown commands (exit 2) and no command at all (exit 2;
  cliff would open an interactive shell, which a script never wants);
- the backend options are also global, so ``servicegroup --driver zk
  service-list`` works as well as ``servicegroup service-list --driver zk``;
- logging is configured only if the process has not done it already
  (``logging.basicConfig``'s rule: a program that embeds :func:`main`, such
  as a test member logging at INFO, keeps its own handlers), at WARNING by
  default, ``-v`` for INFO, ``--debug`` for DEBUG; and it is undone when
  :func:`main` returns. Importing any servicegroup module configures
  nothing.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
import difflib
from importlib import metadata
import logging
import sys
from typing import Any

from cliff import app as cliff_app
from cliff import commandmanager

from servicegroup.cli.common import EXIT_ERROR, add_backend_options, one_line_errors

#: Entry-point group of the commands.
COMMANDS = "servicegroup.cli"

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def _version() -> str:
    try:
        return metadata.version("servicegroup")
    except metadata.PackageNotFoundError:  # run from a source tree
        return "unknown"


class ServiceGroupApp(cliff_app.App):
    NAME = "servicegroup"
    LOG = logging.getLogger("servicegroup.cli")

    def __init__(self) -> None:
        self._log_handlers: list[logging.Handler] = []
        self._root_level: int | None = None
        super().__init__(
            description="Who in the fleet is alive: service records in SQL, liveness through tooz.",
            version=_version(),
            command_manager=commandmanager.CommandManager(COMMANDS, convert_underscores=False),
            deferred_help=True,
        )

    def build_option_parser(
        self, description: str | None, version: str | None, argparse_kwargs: dict[str, Any] | None = None
    ) -> argparse.ArgumentParser:
        # No abbreviations: the global parser sees the whole command line,
        # and "--c" must not be read as --config-file when it means a
        # command's --count (the command's own parser resolves it).
        kwargs = {"prog": self.NAME, "allow_abbrev": False, **(argparse_kwargs or {})}
        parser = super().build_option_parser(description, version, kwargs)
        add_backend_options(parser)
        one_line_errors(parser)
        return parser

    def configure_logging(self) -> None:
        root = logging.getLogger()
        if root.handlers:
            return  # the embedding program configured logging: its choice stands
        options = self.options
        if options.debug:
            level = logging.DEBUG
        else:
            level = {0: logging.ERROR, 1: logging.WARNING, 2: logging.INFO}.get(options.verbose_level, logging.DEBUG)
        console = logging.StreamHandler(self.stderr)
        console.setLevel(level)
        handlers: list[logging.Handler] = [console]
        if options.log_file:
            handlers.append(logging.FileHandler(options.log_file))
        formatter = logging.Formatter(LOG_FORMAT)
        for handler in handlers:
            handler.setFormatter(formatter)
            root.addHandler(handler)
        self._log_handlers = handlers
        self._root_level = root.level
        root.setLevel(logging.DEBUG if options.log_file else level)

    def unconfigure_logging(self) -> None:
        """Remove what :meth:`configure_logging` added (main() may run again
        in the same process, with other streams)."""
        root = logging.getLogger()
        for handler in self._log_handlers:
            root.removeHandler(handler)
            handler.close()
        self._log_handlers = []
        if self._root_level is not None:
            root.setLevel(self._root_level)
            self._root_level = None

    def interact(self) -> None:
        self.stderr.write(f"{self.NAME}: error: a command is required (see {self.NAME} --help)\n")
        raise SystemExit(EXIT_ERROR)

    def run_subcommand(self, argv: list[str]) -> int:
        try:
            self.command_manager.find_command(argv)
        except ValueError:
            self.stderr.write(f"{self.NAME}: error: {self._unknown(argv)} (see {self.NAME} --help)\n")
            return EXIT_ERROR
        return int(super().run_subcommand(argv))

    def _unknown(self, argv: list[str]) -> str:
        if argv[0].startswith("-"):
            return f"unrecognized option {argv[0]}"
        close = difflib.get_close_matches(argv[0], [name for name, _ in self.command_manager], n=3)
        hint = f"; did you mean {' or '.join(close)}?" if close else ""
        return f"{argv[0]!r} is not a {self.NAME} command{hint}"


def main(argv: Sequence[str] | None = None) -> int:
    """The ``servicegroup`` console script (and ``python -m servicegroup``)."""
    app = ServiceGroupApp()
    try:
        return int(app.run(list(sys.argv[1:] if argv is None else argv)))
    except SystemExit as exc:  # usage errors (one line, see one_line_errors) and --help
        if exc.code is None:
            return 0
        return exc.code if isinstance(exc.code, int) else EXIT_ERROR
    finally:
        app.unconfigure_logging()
