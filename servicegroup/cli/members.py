"""Commands that stay: ``join`` (one member in the foreground) and ``watch``
(join/leave events of a topic). Both end cleanly on SIGTERM and SIGINT:
the ServiceGroup is stopped, so a member leaves its topics at once instead
of being found dead ``service_down_time`` later.
"""

from __future__ import annotations

import argparse
import signal
import threading
import time
from typing import Any

from servicegroup import backend
from servicegroup import errors
from servicegroup.cli.common import GroupCommand, count, seconds, view_quiet


def _stop_on_signals(stop: threading.Event) -> None:
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())


#: Longest the main thread sleeps in one piece while waiting for a signal.
_SIGNAL_POLL = 0.25


def _wait_in_slices(stop: threading.Event, timeout: float | None = None) -> None:
    """Wait for *stop* (set by a signal handler) or *timeout* seconds.

    Why slices: the kernel may deliver SIGTERM to any thread (a heartbeat
    or refresher thread); CPython then only flags it, and the handler runs
    when the main thread next executes bytecode. A main thread parked in one
    long ``Event.wait`` would not wake for the handler until its timeout
    (an hour), so a SIGTERMed member hung instead of leaving.
    """
    deadline = None if timeout is None else time.monotonic() + timeout
    while not stop.is_set():
        left = _SIGNAL_POLL if deadline is None else min(_SIGNAL_POLL, deadline - time.monotonic())
        if left <= 0:
            return
        stop.wait(left)


class Join(GroupCommand):
    """Run one member in the foreground until killed (SIGTERM/SIGINT leave cleanly)."""

    creates_records = True

    def get_parser(self, prog_name: str) -> argparse.ArgumentParser:
        parser = super().get_parser(prog_name)
        parser.add_argument("--host", required=True)
        parser.add_argument("--topic", required=True)
        parser.add_argument("--binary")
        return parser

    def take_action(self, parsed_args: argparse.Namespace) -> int:
        stop = threading.Event()
        _stop_on_signals(stop)  # before joining: a SIGTERM during the join still leaves
        with self.open_group(parsed_args) as sg:
            sg.on_membership_event(lambda ev, topic, host: self.out(f"{ev} {topic} {host}"))
            svc = sg.join(parsed_args.host, parsed_args.topic, binary=parsed_args.binary)
            self.out(f"joined {svc.topic} as {svc.host} via {backend.where(sg.url)}")
            _wait_in_slices(stop)
        return 0


class Watch(GroupCommand):
    """Print join/leave events of a topic."""

    def get_parser(self, prog_name: str) -> argparse.ArgumentParser:
        parser = super().get_parser(prog_name)
        parser.add_argument("--topic", required=True)
        parser.add_argument("--count", type=count(0), default=0, help="exit after N events (0: never)")
        parser.add_argument("--timeout", type=seconds, default=0, help="exit after S seconds (0: never)")
        return parser

    def take_action(self, parsed_args: argparse.Namespace) -> int:
        done = threading.Event()
        seen = [0]

        def show(kind: str) -> Any:
            def cb(topic: str, host: str) -> None:
                self.out(f"{kind} {topic} {host}")
                seen[0] += 1
                if parsed_args.count and seen[0] >= parsed_args.count:
                    done.set()

            return cb

        with self.open_group(parsed_args) as sg:
            with view_quiet(self.debug):
                sg.watch(parsed_args.topic, on_join=show("join"), on_leave=show("leave"))
                hosts = sg.get_all(parsed_args.topic)
                why = sg.liveness_unknown(parsed_args.topic)
                if why:
                    raise errors.BackendUnavailable(f"cannot watch topic {parsed_args.topic!r}: {why}")
            # From here on, an outage is logged by the view (once) and watched through.
            self.out(f"watching {parsed_args.topic}: {', '.join(hosts) or '(no live host)'}")
            _stop_on_signals(done)
            _wait_in_slices(done, parsed_args.timeout or None)
        return 0
