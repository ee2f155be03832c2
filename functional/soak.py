"""``make soak``: many members on a clustered backend under a random nemesis.

    python -m functional.soak --cluster zk --members 500 --processes 5 --minutes 10

Members are simulated over a few processes (``member-host`` mode below: one
ServiceGroup joining ``members / processes`` hosts, each host its own
coordinator and heartbeat thread, as a process serving several hosts
would). Each process reaches the cluster through a FaultProxy per node (on
ZooKeeper and etcd; Redis clients are handed the primary's own address by
Sentinel, so there a process is cut off by pausing it). An observer in this
process samples the live hosts into a history
(:mod:`servicegroup.testing.history`) while the nemesis picks faults at
random: kill the leader, pause it past the election timeout, kill a
follower, restart every node in turn, cut a member process off, pause one,
slow one down (100-500 ms each way, below ``service_down_time -
report_interval``), starve one of CPU (``stress-ng`` on every core while
it runs at the lowest priority). Between faults the cluster heals and the fleet settles.
At the end the checker runs on the history and the result (faults by kind,
violations, detection times, member memory at start and end) is printed
as JSON; the exit status is 1 on any violation.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
import collections
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time

from functional.members import live_hosts
from servicegroup.api import ServiceGroup
from servicegroup.testing import history as hist
from servicegroup.testing.proxy import FaultProxy
from servicegroup.testing.servers import cluster as clusters
from servicegroup.testing.servers.process import ServerProcess, dies_with_parent

#: A nemesis step: cause a fault, or end it.
Action = Callable[[], object]

CLUSTERS = {
    "zk": clusters.ZooKeeperEnsemble,
    "etcd": clusters.EtcdCluster,
    "redis": clusters.RedisSentinelCluster,
}
TOPIC = "soak"


def member_host(args: argparse.Namespace) -> int:
    """Child: join every host given, report ``ready``, then beat until SIGTERM."""
    sg = ServiceGroup(
        driver=args.driver,
        url=args.url,
        records_url=f"sqlite:///{args.records}",
        report_interval=args.report_interval,
        service_down_time=args.down_time,
    )
    sg.on_membership_event(lambda event, topic, host: print(event, host, flush=True))
    for host in args.hosts.split(","):
        sg.join(host, TOPIC)
    print("ready", flush=True)
    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
    while not stop:
        time.sleep(0.2)
    sg.stop()
    return 0


class Fleet:
    """Member processes, each behind its own proxies (when it has some)."""

    def __init__(self, cluster: clusters.Cluster, driver: str, args: argparse.Namespace, workdir: str) -> None:
        self.procs: list[subprocess.Popen[bytes]] = []
        self.proxies: list[list[FaultProxy]] = []
        self.hosts: list[list[str]] = []
        per = max(1, args.members // args.processes)
        for p in range(args.processes):
            hosts = [f"m{p}-{i}" for i in range(per)]
            if driver == "redis":
                proxies: list[FaultProxy] = []
                url = cluster.url
            else:
                proxies = [FaultProxy(n.host, n.port).start() for n in cluster.nodes]
                url = f"{cluster.nodes[0].scheme}://" + ",".join(x.address for x in proxies)
            cmd = [sys.executable, "-m", "functional.soak", "member-host", "--driver", driver, "--url", url]
            cmd += ["--hosts", ",".join(hosts), "--records", os.path.join(workdir, f"records-{p}.sqlite")]
            cmd += ["--report-interval", str(args.report_interval), "--down-time", str(args.down_time)]
            log = open(os.path.join(workdir, f"members-{p}.log"), "wb")  # open as long as the child runs
            self.procs.append(
                subprocess.Popen(
                    cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True, preexec_fn=dies_with_parent()
                )
            )
            self.proxies.append(proxies)
            self.hosts.append(hosts)

    def all_hosts(self) -> list[str]:
        return sorted(h for hosts in self.hosts for h in hosts)

    def rss_mb(self) -> list[float]:
        out = []
        for proc in self.procs:
            try:
                with open(f"/proc/{proc.pid}/status") as f:
                    kb = next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))
                out.append(round(kb / 1024, 1))
            except (OSError, StopIteration):
                out.append(0.0)
        return out

    def stop(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGCONT)
                proc.terminate()
        for proc in self.procs:
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
        for proxies in self.proxies:
            for proxy in proxies:
                proxy.stop()


class Nemesis:
    """The faults, each recorded in the history, each ending healed."""

    def __init__(
        self, cluster: clusters.Cluster, fleet: Fleet, history: hist.History, args: argparse.Namespace
    ) -> None:
        self.cluster, self.fleet, self.history, self.args = cluster, fleet, history, args
        self.rng = random.Random(args.seed)
        self.counts: collections.Counter[str] = collections.Counter()

    def ops(self) -> list[str]:
        ops = ["kill-leader", "pause-leader", "kill-follower", "rolling-restart", "pause-members", "slow-members"]
        ops.append("starve-members")
        if any(self.fleet.proxies):
            ops.append("cut-members")
        chosen = self.args.ops.split(",") if self.args.ops else ops
        unknown = set(chosen) - set(ops)
        if unknown:
            raise SystemExit(f"unknown or unavailable nemesis op(s) {sorted(unknown)}; known: {', '.join(ops)}")
        return chosen

    def run_one(self) -> str:
        op = self.rng.choice(self.ops())
        self.counts[op] += 1
        getattr(self, op.replace("-", "_"))()
        self.cluster.heal()
        return op

    def _node_fault(self, op: str, node: ServerProcess, hurt: Action, heal: Action) -> None:
        self.history.record("fault", repr(node), op)
        hurt()
        time.sleep(self.args.down_time / 2)
        heal()
        self.history.record("fault-end", repr(node), op)

    def kill_leader(self) -> None:
        node = self.cluster.leader()
        self._node_fault("kill-leader", node, node.kill, node.start)

    def pause_leader(self) -> None:
        node = self.cluster.leader()
        self._node_fault("pause-leader", node, node.pause, node.resume)

    def kill_follower(self) -> None:
        node = self.rng.choice(self.cluster.followers())
        self._node_fault("kill-follower", node, node.kill, node.start)

    def rolling_restart(self) -> None:
        for node in list(self.cluster.nodes):
            self.history.record("fault", repr(node), "restart")
            node.restart()
            self.cluster.heal()
            self.history.record("fault-end", repr(node), "restart")

    def _pick(self) -> int:
        return self.rng.randrange(len(self.fleet.procs))

    def _cut(self, index: int, hurt: Action, heal: Action, seconds: float) -> None:
        for host in self.fleet.hosts[index]:
            self.history.record("cut", host)
        hurt()
        time.sleep(seconds)
        heal()
        for host in self.fleet.hosts[index]:
            self.history.record("heal", host)

    def cut_members(self) -> None:
        i = self._pick()
        proxies = self.fleet.proxies[i]
        self._cut(
            i,
            lambda: [p.drop() for p in proxies],
            lambda: [p.heal() for p in proxies],
            1.5 * self.args.down_time,
        )

    def pause_members(self) -> None:
        i = self._pick()
        pid = self.fleet.procs[i].pid
        self._cut(
            i,
            lambda: os.killpg(pid, signal.SIGSTOP),
            lambda: os.killpg(pid, signal.SIGCONT),
            1.5 * self.args.down_time,
        )

    def starve_members(self) -> None:
        """A member process at the lowest CPU priority beside ``stress-ng``
        busy on every core, for 2 x service_down_time: starved, not stopped,
        so no member may be read down for it (no cut is recorded)."""
        i = self._pick()
        pid = self.fleet.procs[i].pid
        seconds = 2 * self.args.down_time
        self.history.record("fault", f"process {i}", "starved by stress-ng")
        os.setpriority(os.PRIO_PGRP, pid, 19)
        try:
            subprocess.run(
                ["stress-ng", "--cpu", "0", "--timeout", f"{seconds:.0f}s", "--quiet"],
                check=False,
                timeout=seconds + 30,
            )
        finally:
            os.setpriority(os.PRIO_PGRP, pid, 0)
        self.history.record("fault-end", f"process {i}", "starved")

    def slow_members(self) -> None:
        """Added delay below service_down_time - report_interval: no member
        may be read down for it (no cut is recorded)."""
        i = self._pick()
        if not self.fleet.proxies[i]:
            return
        delay = self.rng.uniform(0.1, 0.5)
        self.history.record("fault", f"process {i}", f"delay {delay:.2f}s")
        for p in self.fleet.proxies[i]:
            p.delay(delay)
        time.sleep(2 * self.args.down_time)
        for p in self.fleet.proxies[i]:
            p.heal()
        self.history.record("fault-end", f"process {i}", "delay")


def soak(name: str, args: argparse.Namespace) -> dict[str, object]:
    bound = 2 * args.down_time + args.report_interval + args.staleness
    with tempfile.TemporaryDirectory(prefix="sg-soak-") as workdir, CLUSTERS[name]() as cluster:
        fleet = Fleet(cluster, name, args, workdir)
        observer = ServiceGroup(
            driver=name,
            url=cluster.url,
            records_url=f"sqlite:///{os.path.join(workdir, 'observer.sqlite')}",
            report_interval=args.report_interval,
            service_down_time=args.down_time,
            max_staleness=args.staleness,
        )
        history = hist.History()
        hosts = fleet.all_hosts()
        nemesis = Nemesis(cluster, fleet, history, args)
        try:
            deadline = time.monotonic() + 30 * bound
            while sorted(observer.get_all(TOPIC)) != hosts:
                if time.monotonic() > deadline:
                    raise SystemExit(f"{name}: the fleet never came up ({len(observer.get_all(TOPIC))}/{len(hosts)})")
                time.sleep(1)
            rss_start = fleet.rss_mb()
            with hist.observing(history, live_hosts(observer, TOPIC), args.report_interval / 2):
                end = time.monotonic() + 60 * args.minutes
                while time.monotonic() < end:
                    op = nemesis.run_one()
                    print(f"{name}: {op} done", flush=True)
                    time.sleep(bound)  # settle: the fleet re-joins
                settle = time.monotonic() + 3 * bound
                while sorted(observer.get_all(TOPIC)) != hosts and time.monotonic() < settle:
                    time.sleep(1)
            rss_end = fleet.rss_mb()
            report = hist.check(history, hosts, bound)
            out = os.path.join(args.results, f"soak-{name}-history.jsonl")
            history.dump(out)
            return {
                "cluster": name,
                "members": len(hosts),
                "processes": args.processes,
                "minutes": args.minutes,
                "faults": dict(nemesis.counts),
                "summary": report.summary(),
                "violations": report.violations[:20],
                "detection_max_s": round(max(report.detections.values(), default=0.0), 1),
                "bound_s": bound,
                "member_rss_mb_start": rss_start,
                "member_rss_mb_end": rss_end,
                "history": out,
            }
        finally:
            observer.stop()
            fleet.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m functional.soak", description=__doc__.split("\n")[0])
    parser.add_argument("mode", nargs="?", default="run", choices=["run", "member-host"])
    parser.add_argument("--cluster", default="all", help="zk, etcd, redis or all")
    parser.add_argument("--members", type=int, default=500)
    parser.add_argument("--processes", type=int, default=5)
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--report-interval", type=float, default=3.0)
    parser.add_argument("--down-time", type=float, default=15.0)
    parser.add_argument("--staleness", type=float, default=1.0)
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--ops", default="", help="comma-separated nemesis ops to pick from (default: all)")
    parser.add_argument("--results", default=tempfile.gettempdir())
    # member-host mode
    parser.add_argument("--driver")
    parser.add_argument("--url")
    parser.add_argument("--hosts")
    parser.add_argument("--records")
    args = parser.parse_args(argv)
    if args.mode == "member-host":
        return member_host(args)
    names = list(CLUSTERS) if args.cluster == "all" else args.cluster.split(",")
    failed = False
    for name in names:
        result = soak(name, args)
        print(json.dumps(result), flush=True)
        failed = failed or bool(result["violations"])
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
