"""``python -m servicegroup.testing.consul run [options] -- CMD ...``

Like ``pifpaf run``: starts a Consul on a free loopback port, exports
``CONSUL_HTTP_ADDR`` (``127.0.0.1:PORT``) and ``SERVICEGROUP_CONSUL_URL``
(``consul://127.0.0.1:PORT``, ready for ``TOOZ_TEST_URL``), runs CMD, stops
the server and exits with CMD's code. The server is the HTTP API test
server, or with ``--real`` a real agent (:func:`.real.new_agent`: a
``consul agent -dev``, or in ``make test-consul-real`` the one at
``CONSUL_HTTP_ADDR``). When none can be had, ``--real`` prints
:data:`.real.SKIP_LINE` and exits 0 without running CMD, so a caller
reports the skip instead of hiding it - except in a real-only run, where it
prints why and exits 2: there, not running is a failure.

``python -m servicegroup.testing.consul real-check`` prints which real agent
a run would use, or why none can be used (exit 1).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from typing import Any

from servicegroup.testing.consul import real
from servicegroup.testing.consul.server import ConsulTestServer
from servicegroup.testing.consul.wire import parse_duration

PROG = "python -m servicegroup.testing.consul"


def _server(args: argparse.Namespace) -> Any:
    if args.real:
        return real.new_agent(acl_token=args.acl_token, session_ttl_min=args.session_ttl_min)
    return ConsulTestServer(
        session_ttl_min=parse_duration(args.session_ttl_min),
        acl_token=args.acl_token,
        port=args.port,
        verbose=args.verbose,
    )


def _run(args: argparse.Namespace) -> int:
    cmd = list(args.cmd)
    if cmd and cmd[0] == "--":
        cmd = cmd[1:]
    if not cmd:
        print("consul run: no command given (usage: run [options] -- CMD ...)", file=sys.stderr)
        return 2
    if args.real and real.why_unavailable():
        if real.real_only():
            print(f"consul run: {real.why_unavailable()}", file=sys.stderr)
            return 2
        print(real.SKIP_LINE)
        return 0
    with _server(args) as srv:
        env = dict(os.environ, CONSUL_HTTP_ADDR=srv.address, SERVICEGROUP_CONSUL_URL=srv.url)
        try:
            return subprocess.call(cmd, env=env)
        except FileNotFoundError:
            print(f"consul run: command not found: {cmd[0]}", file=sys.stderr)
            return 127


def _real_check() -> int:
    problem = real.why_unavailable()
    if problem:
        print(problem, file=sys.stderr)
        return 1
    print(real.describe())
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog=PROG, description="Run a command beside a Consul for tests")
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="start a Consul, run CMD with CONSUL_HTTP_ADDR set, stop")
    run.add_argument(
        "--session-ttl-min", default="10s", help="lowest session TTL accepted (Consul's session_ttl_min; default 10s)"
    )
    run.add_argument("--acl-token", default=None, help="require this ACL token on every call")
    run.add_argument(
        "--port", type=int, default=0, help="port of the test server (default: a free one; not with --real)"
    )
    run.add_argument("--verbose", action="store_true", help="log every request to stderr")
    run.add_argument(
        "--real",
        action="store_true",
        help="a real agent instead of the test server (`consul agent -dev`; see real-check)",
    )
    run.add_argument("cmd", nargs=argparse.REMAINDER, help="-- CMD ...")
    sub.add_parser("real-check", help="say which real agent --real would use, or why none (exit 1)")
    args = parser.parse_args(argv)
    return _real_check() if args.command == "real-check" else _run(args)
