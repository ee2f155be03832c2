"""``metrics``: the Prometheus metrics of the fleet, printed once.

For a look without a scraper, or a cron job feeding node_exporter's
textfile collector. A long-running process serves the same metrics on
``[servicegroup] metrics_port`` instead, where its own heartbeats and
events add to them.
"""

from __future__ import annotations

import argparse

from servicegroup import errors
from servicegroup import metrics
from servicegroup.cli.common import EXIT_ERROR, GroupCommand, view_quiet


class Metrics(GroupCommand):
    """Print members up/down per topic, view staleness and read costs (Prometheus text format).

    Read now, by this one-shot process: no heartbeat series (a member's
    own metrics are on its metrics_port). A topic whose liveness cannot be
    read has no up/down series; the rest is printed, then one line on
    stderr naming the backend, and the exit code is 2.
    """

    def get_parser(self, prog_name: str) -> argparse.ArgumentParser:
        parser = super().get_parser(prog_name)
        parser.add_argument("--topic", help="only this topic's services")
        return parser

    def take_action(self, parsed_args: argparse.Namespace) -> int:
        metrics.require()  # before connecting: a missing extra is the one line
        with view_quiet(self.debug), self.open_group(parsed_args, background=False) as sg:
            if parsed_args.topic:
                sg.metrics.only_topic(parsed_args.topic)
            text = sg.metrics.exposition().decode()
            topics = sorted({s.topic for s in sg.services(parsed_args.topic)})
            unknown = {t: why for t in topics if (why := sg.liveness_unknown(t))}
        self.app.stdout.write(text)
        self.app.stdout.flush()
        if unknown:
            first = min(unknown)
            self.report(
                errors.BackendUnavailable(f"liveness of {', '.join(sorted(unknown))} unknown: {unknown[first]}")
            )
            return EXIT_ERROR
        return 0
