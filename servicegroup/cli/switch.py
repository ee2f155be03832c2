"""``servicegroup driver-status``: during a driver switch, who is in the new
backend yet (the runbook's wait step, docs/operations.md).

Run with the configuration of the switch (``driver`` the new backend,
``previous_driver`` the old one). Per topic of the service records: how
many live services the new backend lists, the old one, both, and which
hosts the old one lists but the new one does not.

Exit codes, for scripts that wait on it: 0 when every live service is in
the new backend (dropping ``previous_driver`` is safe), 1 when some are
still missing (their hosts are listed), 2 on errors (no
``previous_driver``, a backend or the records database unreadable: never a
guess).
"""

from __future__ import annotations

import argparse
from collections.abc import Iterable, Sequence
from typing import Any

from cliff.lister import Lister

from servicegroup import backend
from servicegroup import errors
from servicegroup.cli import output
from servicegroup.cli.common import GroupCommand, view_quiet

COLUMNS = ("Topic", "New", "Old", "Both", "Missing From New")

#: Exit code while some live service is not in the new backend yet.
EXIT_MISSING = 1


class DriverStatus(GroupCommand, Lister):
    """Per topic: live services in the new backend, the old one, both, and hosts missing from the new one.

    Exit 0 when every live service is in the new backend, 1 while some are
    missing, 2 on errors (previous_driver not set, a backend unreadable).
    """

    _missing = 0
    _where = ""

    def get_parser(self, prog_name: str) -> argparse.ArgumentParser:
        parser = super().get_parser(prog_name)
        parser.add_argument("--topic", help="only this topic")
        return parser

    def take_action(self, parsed_args: argparse.Namespace) -> tuple[Sequence[str], Iterable[Any]]:
        with view_quiet(self.debug), self.open_group(parsed_args, background=False) as sg:
            if sg.settings.previous_driver is None:
                raise errors.ConfigError(
                    "previous_driver is not set: run driver-status with the switch's configuration "
                    "(driver = the new backend, previous_driver = the old one)"
                )
            if parsed_args.topic:
                topics = [parsed_args.topic]
            else:
                topics = sorted({svc.topic for svc in sg.records.list()})
            statuses = [sg.switch_status(topic) for topic in topics]
            self._where = backend.where(sg.url)
        self._missing = sum(len(s.missing) for s in statuses)
        return COLUMNS, [(s.topic, len(s.new), len(s.old), len(s.both), s.missing) for s in statuses]

    def produce_output(
        self, parsed_args: argparse.Namespace, column_names: Sequence[str], data: Iterable[Sequence[Any]]
    ) -> int:
        """json and yaml: snake_case keys and the missing hosts as a list;
        the other formats: the hosts as one comma-separated cell."""
        if parsed_args.formatter in output.MACHINE_FORMATS:
            column_names = [output.key(c) for c in column_names]
        else:
            data = [(*row[:-1], ", ".join(row[-1])) for row in data]
        return super().produce_output(parsed_args, column_names, data)

    def run(self, parsed_args: argparse.Namespace) -> int:
        code = super().run(parsed_args)
        if code == 0 and self._missing:
            self.app.stderr.write(
                f"servicegroup {self.cmd_name}: {self._missing} live service(s) not in the new backend "
                f"({self._where}) yet: keep previous_driver set\n"
            )
            return EXIT_MISSING
        return code
