#!/usr/bin/env python3
"""A real ZeroMQ round trip resolved through the MatchMaker.

Three roles, one file:

``server``  binds a REP socket on 127.0.0.1 (``--port 0``: a free port the
            kernel picks), registers ``--host`` under ``--topic`` through
            :class:`servicegroup.matchmaker.MatchMaker` with its endpoint in
            the capabilities (``{"endpoint": "tcp://127.0.0.1:PORT"}``; host
            names have no dots so the direct ``topic.host`` form works),
            prints one JSON ``ready`` line, then answers every message with
            its own host name and appends what it received to ``--record``.
``client``  resolves and sends once: ``--direct HOST``, ``--key K`` (consistent
            hash), no option (round robin) or ``--fanout``.
``demo``    the whole scenario (what ``functional/test_zmq_roundtrip.py``
            runs): start ``--servers`` servers, send direct, topic, keyed and
            fanout messages, SIGKILL one server, wait until ``sg.is_up`` says
            it is down, send again, and print the figures as JSON: detection
            time and how many messages went to the dead host after detection
            (must be 0).

Every send is logged *before* it goes out (time, kind, target), so "nothing
was sent to the dead host after its detection" is checked on what the client
tried, not on what happened to arrive. A send that times out is a nack
(``mm.expire``); a reply is an ack (``mm.ack_alive``).

Example (SQLite file as the liveness backend, short timings)::

    python examples/zmq_roundtrip.py demo --driver db --servers 3

Nothing hangs: every socket has LINGER 0 and send/receive timeouts, every
wait has a deadline, and server processes die with their parent
(PR_SET_PDEATHSIG) besides being killed in ``finally``.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import dataclasses
import itertools
import json
import logging
import os
import selectors
import signal
import subprocess
import sys
import tempfile
import threading
import time
from typing import Any

import zmq

from servicegroup import errors
from servicegroup.api import ServiceGroup
from servicegroup.matchmaker import MatchMaker

LOG = logging.getLogger("zmq_roundtrip")

#: Short timings so a death is detected within seconds.
TIMINGS = {"report_interval": 0.5, "service_down_time": 2.0, "max_staleness": 0.25}


# -- shared ---------------------------------------------------------------------


def add_backend_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--driver", default="db", help="zk | mc | db | redis | ... or a tooz URL")
    parser.add_argument("--url", default=None, help="liveness backend URL (default per driver)")
    parser.add_argument("--records-url", required=True, help="service records database (SQLAlchemy URL)")
    parser.add_argument("--topic", default="zmq-demo")
    parser.add_argument("--report-interval", type=float, default=TIMINGS["report_interval"])
    parser.add_argument("--service-down-time", type=float, default=TIMINGS["service_down_time"])
    parser.add_argument("--max-staleness", type=float, default=TIMINGS["max_staleness"])


def backend_argv(args: argparse.Namespace) -> list[str]:
    argv = [
        "--driver",
        args.driver,
        "--records-url",
        args.records_url,
        "--topic",
        args.topic,
        "--report-interval",
        str(args.report_interval),
        "--service-down-time",
        str(args.service_down_time),
        "--max-staleness",
        str(args.max_staleness),
    ]
    if args.url:
        argv += ["--url", args.url]
    return argv


def make_sg(args: argparse.Namespace) -> ServiceGroup:
    return ServiceGroup(
        driver=args.driver,
        url=args.url,
        records_url=args.records_url,
        report_interval=args.report_interval,
        service_down_time=args.service_down_time,
        max_staleness=args.max_staleness,
    )


# -- server ---------------------------------------------------------------------


def serve(args: argparse.Namespace) -> int:
    """Bind, register, answer until SIGTERM/SIGINT (or SIGKILL: no goodbye)."""
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    ctx = zmq.Context()
    sock = ctx.socket(zmq.REP)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.SNDTIMEO, 1000)
    if args.port:
        sock.bind(f"tcp://127.0.0.1:{args.port}")
        port = args.port
    else:
        port = sock.bind_to_random_port("tcp://127.0.0.1")
    endpoint = f"tcp://127.0.0.1:{port}"
    sg = make_sg(args)
    mm = MatchMaker(sg)
    record = open(args.record, "a", encoding="utf-8") if args.record else None
    try:
        mm.register(args.topic, args.host, capabilities={"endpoint": endpoint})
        print(json.dumps({"ready": True, "host": args.host, "endpoint": endpoint, "pid": os.getpid()}), flush=True)
        while not stop.is_set():
            if not sock.poll(200):
                continue
            msg = sock.recv_json()
            if record is not None:
                record.write(json.dumps({"host": args.host, "msg": msg, "t": time.time()}) + "\n")
                record.flush()
            sock.send_json({"host": args.host, "id": msg.get("id")})
    finally:
        with contextlib.suppress(Exception):
            mm.unregister(args.topic, args.host)
        sg.stop()
        sock.close(0)
        ctx.term()
        if record is not None:
            record.close()
    return 0


# -- client ---------------------------------------------------------------------


@dataclasses.dataclass
class Send:
    """One attempted send, logged before it goes out."""

    t: float  #: time.monotonic() when the target was chosen
    kind: str  #: direct | topic | keyed | fanout
    host: str
    id: int
    ok: bool = False
    replied_by: str | None = None


class Client:
    """Resolves through a MatchMaker and sends with REQ sockets (one per send,
    so a lost reply never wedges the next send)."""

    def __init__(self, mm: MatchMaker, topic: str, timeout: float = 1.0) -> None:
        self.mm = mm
        self.topic = topic
        self.timeout_ms = int(timeout * 1000)
        self.ctx = zmq.Context()
        self.sends: list[Send] = []
        self._ids = itertools.count(1)

    def direct(self, host: str) -> Send:
        return self._send("direct", self.mm.get_host(f"{self.topic}.{host}"))

    def to_topic(self, key: str | None = None) -> Send:
        return self._send("keyed" if key is not None else "topic", self.mm.get_host(self.topic, key=key))

    def fanout(self) -> list[Send]:
        return [self._send("fanout", host) for host in self.mm.get_hosts(self.topic)]

    def _send(self, kind: str, host: str) -> Send:
        endpoint = self.mm.capabilities(self.topic, host)["endpoint"]
        send = Send(time.monotonic(), kind, host, next(self._ids))
        self.sends.append(send)
        LOG.info("send #%d %s -> %s (%s)", send.id, kind, host, endpoint)
        sock = self.ctx.socket(zmq.REQ)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.SNDTIMEO, self.timeout_ms)
        sock.setsockopt(zmq.RCVTIMEO, self.timeout_ms)
        try:
            sock.connect(endpoint)
            sock.send_json({"id": send.id, "kind": kind, "to": host})
            reply = sock.recv_json()
        except zmq.Again:
            LOG.warning("send #%d to %s timed out: nack", send.id, host)
            self.mm.expire(self.topic, host)
            return send
        finally:
            sock.close(0)
        send.ok, send.replied_by = True, reply.get("host")
        self.mm.ack_alive(self.topic, host)
        return send

    def close(self) -> None:
        self.ctx.term()


def client_once(args: argparse.Namespace) -> int:
    sg = make_sg(args)
    client = Client(MatchMaker(sg), args.topic)
    try:
        if args.fanout:
            sends = client.fanout()
        elif args.direct:
            sends = [client.direct(args.direct)]
        else:
            sends = [client.to_topic(args.key)]
        for s in sends:
            print(json.dumps(dataclasses.asdict(s)))
        return 0 if all(s.ok for s in sends) else 1
    except errors.NoLiveHosts as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    finally:
        client.close()
        sg.stop()


# -- the scenario -----------------------------------------------------------------


def _die_with_parent() -> None:  # in the child, before exec
    with contextlib.suppress(Exception):
        ctypes.CDLL(None).prctl(1, signal.SIGKILL, 0, 0, 0)  # PR_SET_PDEATHSIG


class Servers:
    """Server processes of the scenario; ``close()`` kills whatever is left."""

    def __init__(self, args: argparse.Namespace, workdir: str) -> None:
        self.args = args
        self.workdir = workdir
        self.procs: dict[str, subprocess.Popen] = {}
        self.endpoints: dict[str, str] = {}

    def start(self, host: str, timeout: float = 60.0) -> str:
        argv = [
            sys.executable,
            os.path.abspath(__file__),
            "server",
            "--host",
            host,
            "--port",
            "0",
            "--record",
            self.record_path(host),
            *backend_argv(self.args),
        ]
        stderr = open(os.path.join(self.workdir, f"{host}.log"), "ab")
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=stderr, preexec_fn=_die_with_parent)
        stderr.close()
        self.procs[host] = proc
        line = _read_line(proc, timeout)
        if not line:
            raise RuntimeError(
                f"server {host} did not start within {timeout}s (exit {proc.poll()}); see {self.workdir}/{host}.log"
            )
        self.endpoints[host] = json.loads(line)["endpoint"]
        return self.endpoints[host]

    def record_path(self, host: str) -> str:
        return os.path.join(self.workdir, f"{host}.received.jsonl")

    def received(self, host: str) -> list[dict[str, Any]]:
        try:
            with open(self.record_path(host), encoding="utf-8") as f:
                return [json.loads(line) for line in f if line.strip()]
        except FileNotFoundError:
            return []

    def kill(self, host: str) -> None:
        proc = self.procs[host]
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)

    def close(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.terminate()
        deadline = time.monotonic() + 10
        for proc in self.procs.values():
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=10)
            if proc.stdout is not None:
                proc.stdout.close()


def _read_line(proc: subprocess.Popen, timeout: float) -> bytes:
    """The child's first stdout line, or b"" if it exits or the time is up."""
    assert proc.stdout is not None
    sel = selectors.DefaultSelector()
    sel.register(proc.stdout, selectors.EVENT_READ)
    deadline = time.monotonic() + timeout
    buf = b""
    try:
        while b"\n" not in buf and time.monotonic() < deadline:
            if not sel.select(timeout=max(0.0, deadline - time.monotonic())):
                break
            chunk = os.read(proc.stdout.fileno(), 4096)
            if not chunk:
                break
            buf += chunk
    finally:
        sel.close()
    return buf.split(b"\n", 1)[0] if b"\n" in buf else b""


def wait_for(condition, timeout: float, interval: float = 0.05) -> bool:
    """Poll *condition* until true or *timeout* seconds pass (harness only)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(interval)
    return bool(condition())


def sends_phase(client: Client, hosts: list[str], keys: list[str], rounds: int) -> list[Send]:
    """Direct to each host, round robin, keyed, fanout; returns the sends made."""
    start = len(client.sends)
    for host in hosts:
        client.direct(host)
    for _ in range(rounds * len(hosts)):
        client.to_topic()
    for key in keys:
        client.to_topic(key)
    client.fanout()
    return client.sends[start:]


def run_scenario(
    args: argparse.Namespace,
    workdir: str,
    n_servers: int = 3,
    victim_index: int = 1,
    keys: int = 30,
    detect_timeout: float = 60.0,
) -> dict[str, Any]:
    """Start servers, send, SIGKILL one, wait for detection, send again.

    Returns the figures and the raw send log; asserts nothing (the
    functional test does).
    """
    hosts = [f"srv-{i + 1}" for i in range(n_servers)]
    victim = hosts[victim_index]
    key_list = [f"key-{i}" for i in range(keys)]
    servers = Servers(args, workdir)
    sg = make_sg(args)
    mm = MatchMaker(sg)
    client = Client(mm, args.topic)
    try:
        started = time.monotonic()
        for host in hosts:
            servers.start(host)
        if not wait_for(lambda: sg.get_all(args.topic) == hosts, detect_timeout):
            raise RuntimeError(f"servers not all live: {sg.get_all(args.topic)} != {hosts}")
        all_live = time.monotonic() - started
        owners_before = {k: mm.get_host(args.topic, key=k) for k in key_list}
        before = sends_phase(client, hosts, key_list, rounds=2)

        killed_at = time.monotonic()
        servers.kill(victim)
        detected = wait_for(lambda: not sg.is_up(topic=args.topic, host=victim), detect_timeout)
        detected_at = time.monotonic()
        if not detected:
            raise RuntimeError(f"{victim} still up {detect_timeout}s after SIGKILL")

        live = [h for h in hosts if h != victim]
        owners_after = {k: mm.get_host(args.topic, key=k) for k in key_list}
        after = sends_phase(client, live, key_list, rounds=2)
        try:
            client.direct(victim)
            direct_to_dead = "answered"
        except errors.NoLiveHosts as exc:
            direct_to_dead = f"NoLiveHosts: {exc}"

        received = {h: servers.received(h) for h in hosts}
        return {
            "driver": args.driver,
            "hosts": hosts,
            "victim": victim,
            "live_after": live,
            "all_live_seconds": round(all_live, 3),
            "detection_seconds": round(detected_at - killed_at, 3),
            "sends_before": len(before),
            "sends_after": len(after),
            "failed_sends": sum(not s.ok for s in client.sends),
            "sent_to_dead_after_detection": sum(1 for s in client.sends if s.host == victim and s.t >= detected_at),
            "fanout_after": sorted(s.replied_by or "" for s in after if s.kind == "fanout"),
            "targets_after": sorted({s.host for s in after}),
            "keys_moved": sorted(k for k in key_list if owners_before[k] != owners_after[k]),
            "keys_owned_by_victim_before": sorted(k for k in key_list if owners_before[k] == victim),
            "direct_to_dead": direct_to_dead,
            "received": {h: len(r) for h, r in received.items()},
            "replies": {h: sum(1 for s in client.sends if s.replied_by == h) for h in hosts},
            "sends": [dataclasses.asdict(s) for s in client.sends],
            "detected_at": detected_at,
        }
    finally:
        client.close()
        sg.stop()
        servers.close()


def demo(args: argparse.Namespace) -> int:
    with tempfile.TemporaryDirectory(prefix="sg-zmq-") as workdir:
        if args.records_url is None:
            args.records_url = "sqlite:///" + os.path.join(workdir, "servicegroup.sqlite")
        report = run_scenario(args, workdir, n_servers=args.servers)
    report.pop("sends")
    report.pop("detected_at")
    for name in ("keys_moved", "keys_owned_by_victim_before"):
        report[name] = len(report[name])
    print(json.dumps(report, indent=2))
    return 0 if report["sent_to_dead_after_detection"] == 0 else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("server", help="bind, register, reply")
    add_backend_args(p)
    p.add_argument("--host", required=True, help="member name (no dots: direct topic.host lookups)")
    p.add_argument("--port", type=int, default=0, help="0 = a free port picked at bind time")
    p.add_argument("--record", help="append every received message to this JSON-lines file")
    p = sub.add_parser("client", help="resolve and send once")
    add_backend_args(p)
    group = p.add_mutually_exclusive_group()
    group.add_argument("--direct", metavar="HOST")
    group.add_argument("--key")
    group.add_argument("--fanout", action="store_true")
    p = sub.add_parser("demo", help="the whole scenario, figures as JSON")
    add_backend_args(p)
    p.set_defaults(records_url=None)
    for action in p._actions:
        if action.dest == "records_url":
            action.required = False
    p.add_argument("--servers", type=int, default=3)
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.cmd != "server" else logging.WARNING,
        format="%(asctime)s %(name)s %(levelname)s %(message)s",
        stream=sys.stderr,
    )
    return {"server": serve, "client": client_once, "demo": demo}[args.cmd](args)


if __name__ == "__main__":
    sys.exit(main())
