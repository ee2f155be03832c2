"""Commands on service records: ``service-list``, ``service-delete``,
``force-down``, ``enable``, ``disable``.

None of them may create the records database (a mistyped path is an
error naming it, see :func:`servicegroup.cli.common.require_records`), and
none joins anything: they build the ServiceGroup without background
threads.
"""

from __future__ import annotations

import argparse
from collections.abc import Iterable, Sequence
import logging
from typing import TYPE_CHECKING, Any

from cliff.lister import Lister

from servicegroup import backend
from servicegroup import errors
from servicegroup.cli import output
from servicegroup.cli.common import EXIT_ERROR, GroupCommand, view_quiet

if TYPE_CHECKING:
    from servicegroup.api import ServiceGroup
    from servicegroup.records import Service

LOG = logging.getLogger(__name__)


class ServiceList(GroupCommand, Lister):
    """List service records with their liveness (the columns of `openstack compute service list --long`).

    State is up, down, or unknown when the liveness backend cannot be read
    for that topic: the rows are printed, then one line on stderr naming
    the backend, and the exit code is 2. json and yaml rows are keyed by
    the snake_case column names plus `disabled` (true/false).
    """

    _failure: errors.ServiceGroupError | None = None

    def get_parser(self, prog_name: str) -> argparse.ArgumentParser:
        parser = super().get_parser(prog_name)
        parser.add_argument("--topic", help="only this topic's services")
        for action in parser._actions:  # cliff's -c: a usage error, before any connection
            if action.dest == "columns":
                action.type = output.column
        return parser

    def take_action(self, parsed_args: argparse.Namespace) -> tuple[Sequence[str], Iterable[Any]]:
        with view_quiet(self.debug), self.open_group(parsed_args, background=False) as sg:
            services = sg.services(parsed_args.topic)
            why = {t: sg.liveness_unknown(t) for t in sorted({s.topic for s in services if not s.forced_down})}
        unknown = {t for t, reason in why.items() if reason}
        if unknown:
            vague = sum(1 for s in services if output.state(s, unknown) == "unknown")
            self._failure = errors.BackendUnavailable(
                f"liveness of {vague} service(s) unknown ({', '.join(sorted(unknown))}): {why[min(unknown)]}"
            )
        return output.COLUMNS, output.rows(services, unknown)

    def produce_output(
        self, parsed_args: argparse.Namespace, column_names: Sequence[str], data: Iterable[Sequence[Any]]
    ) -> int:
        if parsed_args.formatter in output.MACHINE_FORMATS:
            column_names, data = output.machine_readable(column_names, data)
        return super().produce_output(parsed_args, column_names, data)

    def run(self, parsed_args: argparse.Namespace) -> int:
        code = super().run(parsed_args)
        if code == 0 and self._failure is not None:
            # The records are listed; their liveness is not guessed. One line, exit 2.
            self.report(self._failure)
            return EXIT_ERROR
        return code


class _OneService(GroupCommand):
    """A command on the record of one (host, topic)."""

    def get_parser(self, prog_name: str) -> argparse.ArgumentParser:
        parser = super().get_parser(prog_name)
        parser.add_argument("--host", required=True)
        parser.add_argument("--topic", required=True)
        return parser

    def take_action(self, parsed_args: argparse.Namespace) -> int:
        with self.open_group(parsed_args, background=False) as sg:
            self.out(self.apply(sg, parsed_args))
        return 0

    def apply(self, sg: ServiceGroup, parsed_args: argparse.Namespace) -> str:
        """Do it; the line to print."""
        raise NotImplementedError


class ServiceDelete(_OneService):
    """Delete a service record and withdraw its membership in the liveness backend.

    Without the withdrawal the host stayed listed by get_all (is_up True)
    until its membership expired, or for ever while it still beats. A
    member that is still running re-joins its topic within two report
    intervals (its record stays deleted): stop the service first.
    """

    def apply(self, sg: ServiceGroup, parsed_args: argparse.Namespace) -> str:
        host, topic = parsed_args.host, parsed_args.topic
        if sg.records.get(host, topic) is None:
            raise errors.ServiceNotFound(host, topic)
        # Membership first: if the backend cannot be reached, nothing is deleted.
        withdrawn = sg.expire(topic, host)
        if not sg.records.delete(host, topic):
            raise errors.ServiceNotFound(host, topic)  # deleted meanwhile by someone else
        where = backend.where(sg.url)
        if withdrawn:
            LOG.info("deleted service %s/%s and withdrew its membership from %s", host, topic, where)
            return f"{host} {topic}: deleted; membership withdrawn from {where}"
        LOG.info("deleted service %s/%s; %s cannot remove members", host, topic, where)
        return f"{host} {topic}: deleted; {where} cannot remove members (its own checks decide liveness)"


class ForceDown(_OneService):
    """Fence a service: is_up is False while set, whatever the backend says."""

    def get_parser(self, prog_name: str) -> argparse.ArgumentParser:
        parser = super().get_parser(prog_name)
        parser.add_argument("--unset", action="store_true", help="lift the fence")
        return parser

    def apply(self, sg: ServiceGroup, parsed_args: argparse.Namespace) -> str:
        svc = sg.force_down(parsed_args.host, parsed_args.topic, down=not parsed_args.unset)
        return f"{_name(svc)}: forced_down={svc.forced_down}"


class Enable(_OneService):
    """Make a service schedulable again (clears the disabled reason)."""

    def apply(self, sg: ServiceGroup, parsed_args: argparse.Namespace) -> str:
        return f"{_name(sg.enable(parsed_args.host, parsed_args.topic))}: enabled"


class Disable(_OneService):
    """Make a service not schedulable; its liveness is unchanged."""

    def get_parser(self, prog_name: str) -> argparse.ArgumentParser:
        parser = super().get_parser(prog_name)
        parser.add_argument("--reason", help="why (shown as Disabled Reason)")
        return parser

    def apply(self, sg: ServiceGroup, parsed_args: argparse.Namespace) -> str:
        svc = sg.disable(parsed_args.host, parsed_args.topic, reason=parsed_args.reason)
        return f"{_name(svc)}: disabled ({svc.disabled_reason or 'no reason'})"


def _name(svc: Service) -> str:
    return f"{svc.host} {svc.topic}"
