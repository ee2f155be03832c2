"""The ``servicegroup`` operator CLI.

Every failure the library can name becomes one line on stderr and a
non-zero exit code; a traceback is shown only with ``--debug``. URLs in any
message are redacted.
"""

from __future__ import annotations

import argparse
from collections.abc import Iterator, Sequence
import contextlib
import json
import logging
import math
import os
import signal
import sys
import threading
from typing import Any

from servicegroup import backend
from servicegroup import conf as sg_conf
from servicegroup import errors

EXIT_ERROR = 2


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


def count(minimum: int) -> Any:
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


def _add_common(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("backend")
    g.add_argument("--config-file", help="oslo.config file with [servicegroup] and [database]")
    g.add_argument("--driver", help="db | zk | mc | redis | etcd | consul, or a tooz URL")
    g.add_argument("--url", help="backend URL (default: per driver)")
    g.add_argument("--records-url", help="SQLAlchemy URL of the records database")
    g.add_argument("--report-interval", type=float, help="seconds between heartbeats")
    g.add_argument("--service-down-time", type=float, help="seconds without heartbeat until down")
    g.add_argument("--max-staleness", type=float, help="oldest membership view is_up may use")


class Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line (the usage is ``--help``'s),
    like every other error of the CLI; exit code 2 as argparse's."""

    def error(self, message: str) -> Any:
        self.exit(EXIT_ERROR, f"{self.prog}: error: {message} (see --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="servicegroup", description="Who in the fleet is alive.")
    parser.add_argument("--debug", action="store_true", help="log at DEBUG and show tracebacks")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("demo", help="five members on SQLite; kill one; watch it go down")
    p.add_argument("--members", type=count(1), default=5)
    p.add_argument("--topic", default="compute")
    _add_common(p)

    p = sub.add_parser("join", help="run one member in the foreground until killed")
    p.add_argument("--host", required=True)
    p.add_argument("--topic", required=True)
    p.add_argument("--binary")
    _add_common(p)

    p = sub.add_parser("service-list", help="list service records with liveness")
    p.add_argument("--topic")
    p.add_argument("--format", choices=("table", "json"), default="table")
    _add_common(p)

    for name, helptext in (("force-down", "fence a service: is_up is False while set"),
                           ("enable", "make a service schedulable"),
                           ("disable", "make a service not schedulable (liveness unchanged)")):
        p = sub.add_parser(name, help=helptext)
        p.add_argument("--host", required=True)
        p.add_argument("--topic", required=True)
        if name == "force-down":
            p.add_argument("--unset", action="store_true", help="lift the fence")
        if name == "disable":
            p.add_argument("--reason")
        _add_common(p)

    p = sub.add_parser("watch", help="print join/leave events of a topic")
    p.add_argument("--topic", required=True)
    p.add_argument("--count", type=count(0), default=0, help="exit after N events (0: never)")
    p.add_argument("--timeout", type=seconds, default=0, help="exit after S seconds (0: never)")
    _add_common(p)

    p = sub.add_parser("db-sync", help="apply the records database migrations")
    _add_common(p)

    p = sub.add_parser("bench", help="is_up cost: cached view vs a per-call backend read")
    p.add_argument("--topic", default="bench")
    p.add_argument("--hosts", type=count(1), default=50)
    p.add_argument("--calls", type=count(1), default=2000)
    _add_common(p)
    return parser


def settings_from(args: argparse.Namespace, **defaults: Any) -> sg_conf.Settings:
    """Config file first, then command-line flags, then *defaults*."""
    base = sg_conf.Settings(**defaults) if defaults else sg_conf.Settings()
    if args.config_file:
        base = sg_conf.Settings.from_file(args.config_file)

    def pick(flag: Any, configured: Any) -> Any:
        return configured if flag is None else flag  # an explicit 0 is refused, not ignored

    values = {
        "driver": pick(args.driver, base.driver),
        "url": pick(args.url, base.url),
        "records_url": pick(args.records_url, base.records_url),
        "report_interval": pick(args.report_interval, base.report_interval),
        "service_down_time": pick(args.service_down_time, base.service_down_time),
        "max_staleness": pick(args.max_staleness, base.max_staleness),
    }
    return sg_conf.Settings(**values)


def open_group(settings: sg_conf.Settings, **kwargs: Any) -> Any:
    from servicegroup.api import ServiceGroup

    return ServiceGroup.from_settings(settings, **kwargs)


def service_rows(services: Sequence[Any], unknown: frozenset[str] | set[str] = frozenset()
                 ) -> list[dict[str, Any]]:
    """Records as the machine-readable rows of ``service-list --format json``.

    ``state`` is ``up``, ``down``, or ``unknown`` for a service of a topic in
    *unknown* (its liveness could not be read) that is not forced down (a
    fenced service is down whatever the backend says).
    """
    rows = []
    for s in services:
        if s.up:
            state = "up"
        elif s.topic in unknown and not s.forced_down:
            state = "unknown"
        else:
            state = "down"
        rows.append({
            "host": s.host,
            "topic": s.topic,
            "binary": s.binary,
            "state": state,
            "forced_down": s.forced_down,
            "disabled": s.disabled,
            "disabled_reason": s.disabled_reason,
            "updated_at": s.last_seen_up.isoformat() if s.last_seen_up else None,
        })
    return rows


def format_table(rows: list[dict[str, Any]]) -> str:
    cols = ["host", "topic", "binary", "state", "forced_down", "disabled", "updated_at"]
    cells = [[("" if r[c] is None else str(r[c])) for c in cols] for r in rows]
    widths = [max([len(c)] + [len(row[i]) for row in cells]) for i, c in enumerate(cols)]
    line = "  ".join(c.ljust(w) for c, w in zip(cols, widths))
    out = [line, "  ".join("-" * w for w in widths)]
    out += ["  ".join(v.ljust(w) for v, w in zip(row, widths)) for row in cells]
    return "\n".join(out)


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


def cmd_service_list(args: argparse.Namespace) -> int:
    with view_quiet(args.debug), open_group(settings_from(args), background=False) as sg:
        services = sg.services(args.topic)
        why = {t: sg.liveness_unknown(t) for t in sorted({s.topic for s in services if not s.forced_down})}
        unknown = {t for t, reason in why.items() if reason}
        rows = service_rows(services, unknown)
        vague = sum(1 for r in rows if r["state"] == "unknown")
        failure = errors.BackendUnavailable(
            f"liveness of {vague} service(s) unknown ({', '.join(sorted(unknown))}): "
            f"{why[min(unknown)]}"
        ) if unknown else None
    print(json.dumps(rows, indent=2) if args.format == "json" else format_table(rows), flush=True)
    if failure is not None:
        # The records are listed; their liveness is not guessed. One line, exit 2.
        _print_error(args, failure)
        return EXIT_ERROR
    return 0


def cmd_flag(args: argparse.Namespace) -> int:
    with open_group(settings_from(args), background=False) as sg:
        if args.command == "force-down":
            svc = sg.force_down(args.host, args.topic, down=not args.unset)
            print(f"{svc.host} {svc.topic}: forced_down={svc.forced_down}")
        elif args.command == "disable":
            svc = sg.disable(args.host, args.topic, reason=args.reason)
            print(f"{svc.host} {svc.topic}: disabled ({svc.disabled_reason or 'no reason'})")
        else:
            svc = sg.enable(args.host, args.topic)
            print(f"{svc.host} {svc.topic}: enabled")
    return 0


def _wait_for_signal() -> None:
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    while not stop.wait(3600):
        pass


def cmd_join(args: argparse.Namespace) -> int:
    with open_group(settings_from(args)) as sg:
        sg.on_membership_event(lambda ev, topic, host: print(f"{ev} {topic} {host}", flush=True))
        svc = sg.join(args.host, args.topic, binary=args.binary)
        print(f"joined {svc.topic} as {svc.host} via {backend.where(sg.url)}", flush=True)
        _wait_for_signal()
    return 0


def cmd_watch(args: argparse.Namespace) -> int:
    done = threading.Event()
    seen = [0]

    def show(kind: str) -> Any:
        def cb(topic: str, host: str) -> None:
            print(f"{kind} {topic} {host}", flush=True)
            seen[0] += 1
            if args.count and seen[0] >= args.count:
                done.set()
        return cb

    with open_group(settings_from(args)) as sg:
        with view_quiet(args.debug):
            sg.watch(args.topic, on_join=show("join"), on_leave=show("leave"))
            hosts = sg.get_all(args.topic)
            why = sg.liveness_unknown(args.topic)
            if why:
                raise errors.BackendUnavailable(f"cannot watch topic {args.topic!r}: {why}")
        # From here on, an outage is logged by the view (once) and watched through.
        print(f"watching {args.topic}: {', '.join(hosts) or '(no live host)'}", flush=True)
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: done.set())
        done.wait(args.timeout or None)
    return 0


def cmd_db_sync(args: argparse.Namespace) -> int:
    from servicegroup.records import Records

    settings = settings_from(args)
    records = Records(settings.records_url, migrate=False)
    records.migrate()
    print(f"records database {records.url_redacted} is up to date")
    records.dispose()
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from servicegroup import demo

    return demo.run(args)


def cmd_bench(args: argparse.Namespace) -> int:
    from servicegroup import quickbench

    return quickbench.run(args, settings_from(args))


def _print_error(args: argparse.Namespace, exc: errors.ServiceGroupError) -> None:
    print(f"servicegroup {args.command}: {type(exc).__name__}: {backend.describe(exc)}", file=sys.stderr)


COMMANDS = {
    "demo": cmd_demo,
    "join": cmd_join,
    "service-list": cmd_service_list,
    "force-down": cmd_flag,
    "enable": cmd_flag,
    "disable": cmd_flag,
    "watch": cmd_watch,
    "db-sync": cmd_db_sync,
    "bench": cmd_bench,
}


def main(argv: Sequence[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exc:  # bad arguments (one line, see Parser) or --help
        return exc.code if isinstance(exc.code, int) else EXIT_ERROR
    logging.basicConfig(
        level=logging.DEBUG if args.debug else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        return COMMANDS[args.command](args)
    except errors.ServiceGroupError as exc:
        _print_error(args, exc)
        if args.debug:
            raise
        return EXIT_ERROR
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # `service-list | head`: the reader left. Quiet, like a SIGPIPE death
        # (128 + 13); stdout goes to /dev/null so the interpreter's final
        # flush does not complain a second time.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    except Exception as exc:  # unexpected: still one line, unless --debug
        if args.debug:
            raise
        print(f"servicegroup {args.command}: unexpected {type(exc).__name__}: {backend.describe(exc)} "
              f"(run with --debug for a traceback)", file=sys.stderr)
        return 1
