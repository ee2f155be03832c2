"""``servicegroup bench``: what one ``is_up`` costs, on the configured backend.

Compares the library's answer from the cached membership view with the
nova-style alternative measured in the same run on the same backend: one
backend read (``get_members``, raw tooz) per ``is_up`` call. The numbers
are printed, never judged; the fuller benchmarks live in ``bench/``.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
import json
import sys
import time
from typing import TYPE_CHECKING

from servicegroup import backend
from servicegroup import errors
from servicegroup.cli.common import GroupCommand, count, open_group
from servicegroup.conf import Settings

if TYPE_CHECKING:
    from servicegroup.api import ServiceGroup


class Bench(GroupCommand):
    """is_up cost: cached view vs a per-call backend read (removes its own records)."""

    creates_records = True

    def get_parser(self, prog_name: str) -> argparse.ArgumentParser:
        parser = super().get_parser(prog_name)
        parser.add_argument("--topic", default="bench")
        parser.add_argument("--hosts", type=count(1), default=50)
        parser.add_argument("--calls", type=count(1), default=2000)
        return parser

    def take_action(self, parsed_args: argparse.Namespace) -> int:
        return run(self.settings(parsed_args), parsed_args.topic, parsed_args.hosts, parsed_args.calls)


def _per_call(fn: Callable[[int], object], calls: int) -> float:
    started = time.perf_counter()
    for i in range(calls):
        fn(i)
    return (time.perf_counter() - started) / calls


def run(settings: Settings, topic: str, n: int, calls: int) -> int:
    sg = open_group(settings, create=True)
    created: list[str] = []
    try:
        hosts = [f"bench-{i:04d}" for i in range(n)]
        for host in hosts:
            if sg.records.get(host, topic) is None:
                created.append(host)  # before join: a failed join is cleaned up too
            sg.join(host, topic)
        sg.get_all(topic)
        cached = _per_call(lambda i: sg.is_up(topic=topic, host=hosts[i % n]), calls)

        raw = backend.start(backend.default_factory, sg.url, "bench-raw-reader")
        group = topic.encode()
        slow_calls = max(1, min(calls, 200))
        try:
            direct = _per_call(lambda i: hosts[i % n].encode() in raw.get_members(group).get(), slow_calls)
        finally:
            raw.stop()
        rows = [
            {"method": "ServiceGroup.is_up (cached view)", "us_per_call": cached * 1e6, "calls": calls},
            {"method": "raw tooz get_members per call (nova-style)", "us_per_call": direct * 1e6, "calls": slow_calls},
        ]
        print(f"backend: {backend.where(sg.url)}; {n} live hosts in {topic!r}")
        print(f"{'method':<46} {'us/call':>12} {'calls':>7}")
        for r in rows:
            print(f"{r['method']:<46} {r['us_per_call']:>12.1f} {r['calls']:>7}")
        if cached > 0:
            print(f"speed-up: {direct / cached:,.0f}x")
        print(json.dumps({"backend": backend.where(sg.url), "hosts": n, "rows": rows}))
    finally:
        try:
            _remove(sg, topic, created)
        finally:
            sg.stop()
    return 0


def _remove(sg: ServiceGroup, topic: str, hosts: list[str]) -> None:
    """Leave and delete the bench's own records: a benchmark must not leave
    hosts behind in the operator's service list (records that existed
    before the run are left alone)."""
    failed = 0
    for host in hosts:
        try:
            sg.leave(host, topic)
            sg.records.delete(host, topic)
        except errors.ServiceGroupError:
            failed += 1
    if failed:
        print(f"servicegroup bench: could not remove {failed} bench record(s) of topic {topic!r}", file=sys.stderr)
