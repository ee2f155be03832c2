"""A member, an observer, or an oslo.service Service, in a process of its
own, for functional/test_green.py.

``member`` and ``observer`` run under ``eventlet.monkey_patch()`` (done
first, before anything imports threading or socket, as nova's services
do); ``service`` runs an ``oslo_service.service.Service`` under
oslo.service's threading backend. Each prints one line per step on
stdout (``joined``, ``up HOST``, ``down HOST``, ``stopped``) for the test
to wait on, and exits 0 only if every step happened within its bound.
"""

from __future__ import annotations

import sys

if __name__ == "__main__" and sys.argv[1] in ("member", "observer"):
    import eventlet

    eventlet.monkey_patch()

import argparse
import signal
import threading
import time
from typing import Any

from servicegroup.api import ServiceGroup


def say(line: str) -> None:
    print(line, flush=True)


def wait_for(predicate: Any, bound: float) -> bool:
    deadline = time.monotonic() + bound
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return bool(predicate())


def group(args: argparse.Namespace) -> ServiceGroup:
    return ServiceGroup(
        driver=args.driver,
        url=args.url,
        records_url=args.records_url,
        report_interval=args.report_interval,
        service_down_time=args.service_down_time,
        max_staleness=args.max_staleness,
    )


def member(args: argparse.Namespace) -> int:
    """Join, then beat until SIGTERM (a clean stop) or SIGKILL (a crash)."""
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    sg = group(args)
    sg.join(args.host, args.topic)
    say(f"joined {patched()}")
    while not stop.wait(0.1):
        pass
    sg.stop()
    say("stopped")
    return 0


def observe(sg: ServiceGroup, args: argparse.Namespace) -> int:
    """Join itself, see the watched host up, then (once the test killed it)
    down; then stop. (Whether it ever saw *itself* down is load's business
    on a machine where its own beats can starve: not checked.)"""
    sg.join(args.host, args.topic)
    say(f"joined {patched()}")
    if not wait_for(lambda: sg.is_up(topic=args.topic, host=args.watch), args.bound):
        say(f"never saw {args.watch} up: {sg.get_all(args.topic)}")
        return 1
    say(f"up {args.watch}")
    if not wait_for(lambda: not sg.is_up(topic=args.topic, host=args.watch), args.bound):
        say(f"never saw {args.watch} down: {sg.get_all(args.topic)}")
        return 1
    say(f"down {args.watch}")
    return 0


def observer(args: argparse.Namespace) -> int:
    sg = group(args)
    try:
        return observe(sg, args)
    finally:
        sg.stop()
        say("stopped")


def service(args: argparse.Namespace) -> int:
    """The observer's steps inside an oslo.service Service (threading backend)."""
    from oslo_service import backend

    backend.init_backend(backend.BackendType.THREADING)
    from oslo_service import service as oslo_service

    class Observed(oslo_service.Service):  # type: ignore[misc]
        def start(self) -> None:
            super().start()
            self.sg = group(args)
            self.outcome: list[int] = []
            self.tg.add_thread(lambda: self.outcome.append(observe(self.sg, args)))

        def stop(self, graceful: bool = False) -> None:
            self.sg.stop()
            super().stop(graceful)

    svc = Observed()
    svc.start()
    if not wait_for(lambda: bool(svc.outcome), 3 * args.bound):
        say("the service's thread never finished")
        return 1
    svc.stop()
    svc.wait()
    say(f"stopped {backend.get_backend_type().value}")
    return svc.outcome[0]


def patched() -> str:
    """``green`` when eventlet patched this process's threads, else ``native``."""
    try:
        from eventlet import patcher
    except ImportError:
        return "native"
    return "green" if patcher.is_monkey_patched("thread") else "native"


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("mode", choices=("member", "observer", "service"))
    parser.add_argument("--driver", required=True)
    parser.add_argument("--url")
    parser.add_argument("--records-url", required=True)
    parser.add_argument("--host", required=True)
    parser.add_argument("--topic", required=True)
    parser.add_argument("--watch", help="the host an observer sees up, then down")
    parser.add_argument("--report-interval", type=float, required=True)
    parser.add_argument("--service-down-time", type=float, required=True)
    parser.add_argument("--max-staleness", type=float, required=True)
    parser.add_argument("--bound", type=float, required=True, help="bound on each wait")
    args = parser.parse_args()
    return {"member": member, "observer": observer, "service": service}[args.mode](args)


if __name__ == "__main__":
    sys.exit(main())
