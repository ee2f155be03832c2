"""What one ``is_up`` costs: the cached view vs a backend read per call.

Same process, same backend, same hosts, same run:

- **servicegroup**: ``ServiceGroup.is_up`` (a dict lookup in the view);
- **nova DB driver style**: read the service record and compare its
  heartbeat time per call (``Records.get``), what nova's ``DbDriver.is_up``
  does with the record it is handed, fetched per request;
- **raw tooz**: ``get_members`` per call, what a tooz-backed is_up without
  a cache does.

Run: ``python -m bench.isup [--hosts 50] [--calls 20000] [--backends db-sqlite,db-postgresql,redis]``.
"""

from __future__ import annotations

import argparse
import tempfile
import time
import uuid
from collections.abc import Callable

from bench import report
from bench.detection import backend
from servicegroup import backend as sg_backend
from servicegroup.api import ServiceGroup


def per_call_us(fn: Callable[[int], object], calls: int) -> float:
    started = time.perf_counter()
    for i in range(calls):
        fn(i)
    return (time.perf_counter() - started) / calls * 1e6


def measure(name: str, hosts: int, calls: int) -> list[dict[str, object]]:
    with tempfile.TemporaryDirectory() as workdir, backend(name, workdir) as (driver, url, records_url):
        topic = f"isup-{uuid.uuid4().hex[:8]}"
        member = ServiceGroup(driver=driver, url=url, records_url=records_url, report_interval=5, service_down_time=30)
        observer = ServiceGroup(
            driver=driver, url=url, records_url=records_url, report_interval=5, service_down_time=30
        )
        names = [f"host-{i:04d}" for i in range(hosts)]
        try:
            for h in names:
                member.join(h, topic)
            assert observer.get_all(topic) == names
            slow = max(1, calls // 40)
            ours = per_call_us(lambda i: observer.is_up(topic=topic, host=names[i % hosts]), calls)
            records = observer.records
            nova = per_call_us(lambda i: records.get(names[i % hosts], topic), slow)
            raw = sg_backend.start(sg_backend.default_factory, observer.url, f"isup-raw-{uuid.uuid4().hex[:6]}")
            try:
                tooz_us = per_call_us(
                    lambda i: names[i % hosts].encode() in raw.get_members(topic.encode()).get(), slow
                )
            finally:
                raw.stop()
        finally:
            member.stop()
            observer.stop()
    return [
        {
            "backend": name,
            "method": "ServiceGroup.is_up (cached view)",
            "us_per_call": ours,
            "calls": calls,
            "x_slower": 1.0,
        },
        {
            "backend": name,
            "method": "nova-style record read per call",
            "us_per_call": nova,
            "calls": slow,
            "x_slower": nova / ours,
        },
        {
            "backend": name,
            "method": "raw tooz get_members per call",
            "us_per_call": tooz_us,
            "calls": slow,
            "x_slower": tooz_us / ours,
        },
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hosts", type=int, default=50)
    parser.add_argument("--calls", type=int, default=20000)
    parser.add_argument("--backends", default="db-sqlite,db-postgresql,db-mysql,redis")
    args = parser.parse_args(argv)
    rows: list[dict[str, object]] = []
    for name in args.backends.split(","):
        rows += measure(name, args.hosts, args.calls)
    report.report(
        "isup",
        rows,
        title=f"is_up cost, {args.hosts} live hosts in one topic",
        columns=["backend", "method", "us_per_call", "x_slower", "calls"],
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
