"""Clustered test servers: a ZooKeeper ensemble, an etcd cluster, Redis
with a replica behind Sentinels, all on private loopback ports.

A :class:`Cluster` is a list of :class:`ServerProcess` nodes that know each
other's ports (chosen before any starts: a quorum member's config names its
peers). ``start()`` starts them together (a ZooKeeper or etcd member serves
only once a quorum is up) and fails, naming every node that did not come up
with the tail of its log; nothing is skipped. Each node keeps the single
server's fault methods (``kill()``, ``pause()``, ``restart()``), and the
cluster says which node to hit: :meth:`Cluster.leader` (ZooKeeper's leader,
etcd's Raft leader, the Redis primary Sentinel names) and
:meth:`Cluster.followers`. ``url`` is what clients get: every client
endpoint (``zookeeper://h:p1,h:p2,h:p3``, ``etcd3+http://...``), or the
Sentinels with tooz's ``?sentinel=<master>&sentinel_fallback=`` options.

Sizes are for a loaded 2-core machine: 128 MB heaps for ZooKeeper, etcd's
election timeout raised so that load alone does not depose a leader.
"""

from __future__ import annotations

from collections.abc import Callable
import functools
import json
import os
import socket
import threading
import time
import urllib.request

from servicegroup.testing.servers.etcd import EtcdServer
from servicegroup.testing.servers.process import HOST, ServerProcess, ServerStartError, ask, free_port
from servicegroup.testing.servers.redis import RedisServer
from servicegroup.testing.servers.zookeeper import ZooKeeperServer

#: How long :meth:`Cluster.leader` waits for a leader (an election).
ELECTION_WAIT = 60.0


def _free_ports(host: str, count: int, taken: set[int]) -> list[int]:
    ports: list[int] = []
    while len(ports) < count:
        port = free_port(host)
        if port not in taken and port not in ports:
            ports.append(port)
    taken.update(ports)
    return ports


class Cluster:
    """Nodes of one clustered backend, started and stopped together."""

    name = "cluster"
    #: Start every node at once (a quorum member waits for its peers).
    parallel_start = True

    def __init__(self, size: int = 3, host: str = HOST) -> None:
        self.host = host
        self.size = size
        self.nodes: list[ServerProcess] = []

    # --- what subclasses provide -------------------------------------------

    def make_nodes(self) -> list[ServerProcess]:
        raise NotImplementedError

    def is_leader(self, node: ServerProcess) -> bool:
        raise NotImplementedError

    @property
    def url(self) -> str:
        scheme = self.nodes[0].scheme
        return f"{scheme}://" + ",".join(f"{n.host}:{n.port}" for n in self.nodes)

    # --- life cycle -----------------------------------------------------------

    def start(self) -> Cluster:
        if not self.nodes:
            self.nodes = self.make_nodes()
        failures: list[str] = []

        def start_one(node: ServerProcess) -> None:
            try:
                node.ensure_running()
            except ServerStartError as exc:
                failures.append(str(exc))

        if self.parallel_start:
            threads = [threading.Thread(target=start_one, args=(n,)) for n in self.nodes]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
        else:
            for node in self.nodes:
                start_one(node)
                if failures:
                    break
        if failures:
            self.stop()
            raise ServerStartError(f"{self.name} cluster did not start:\n" + "\n".join(failures))
        return self

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()

    def heal(self) -> None:
        """Every node running and answering again (after a test's faults)."""
        self.start()
        self.leader()

    def __enter__(self) -> Cluster:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --- who to hit -------------------------------------------------------------

    def leader(self, timeout: float = ELECTION_WAIT) -> ServerProcess:
        """The node leading now, waiting (bounded) for an election to end."""
        deadline = time.monotonic() + timeout
        while True:
            for node in self.nodes:
                if node.running and not node.paused and _quietly(functools.partial(self.is_leader, node)):
                    return node
            if time.monotonic() > deadline:
                tails = "\n".join(f"--- {n!r}\n{n.log_tail(5)}" for n in self.nodes)
                raise ServerStartError(f"{self.name}: no leader within {timeout:.0f}s\n{tails}")
            time.sleep(0.1)

    def followers(self) -> list[ServerProcess]:
        lead = self.leader()
        return [n for n in self.nodes if n is not lead]


def _quietly(check: Callable[[], bool]) -> bool:
    try:
        return check()
    except (OSError, ValueError):
        return False


# --- ZooKeeper -------------------------------------------------------------------


class ZooKeeperEnsembleNode(ZooKeeperServer):
    """One member of an ensemble: ``myid`` and every peer's quorum ports."""

    heap = "128m"

    def __init__(self, cluster: ZooKeeperEnsemble, server_id: int, ports: list[int]) -> None:
        super().__init__(cluster.host, ports[0])
        self.cluster = cluster
        self.server_id = server_id
        self.quorum_port, self.election_port = ports[1], ports[2]

    def configure(self) -> None:
        super().configure()
        with open(self.config_path, "a") as f:
            for peer in self.cluster.nodes:
                assert isinstance(peer, ZooKeeperEnsembleNode)
                f.write(f"server.{peer.server_id}={peer.host}:{peer.quorum_port}:{peer.election_port}\n")
        with open(os.path.join(self.data_dir, "myid"), "w") as f:
            f.write(f"{self.server_id}\n")

    def ports(self) -> list[int]:
        return [self.port, self.quorum_port, self.election_port]

    def mode(self) -> str:
        """``leader``, ``follower``, or '' when not serving (no quorum)."""
        for line in self.four_letter("srvr").splitlines():
            if line.startswith("Mode: "):
                return line.partition(": ")[2].strip()
        return ""


class ZooKeeperEnsemble(Cluster):
    """A 3-node (or ``size``) ZooKeeper 3.8 ensemble."""

    name = "zookeeper"

    def make_nodes(self) -> list[ServerProcess]:
        taken: set[int] = set()
        return [ZooKeeperEnsembleNode(self, i + 1, _free_ports(self.host, 3, taken)) for i in range(self.size)]

    def is_leader(self, node: ServerProcess) -> bool:
        assert isinstance(node, ZooKeeperEnsembleNode)
        return node.mode() in ("leader", "standalone")


# --- etcd --------------------------------------------------------------------------


class EtcdClusterNode(EtcdServer):
    """One member of an etcd cluster, named ``sg<N>``, every peer listed."""

    #: Raft timings (ms), raised from 100/1000: a loaded machine's scheduling
    #: delays alone would otherwise start elections.
    heartbeat_ms = 250
    election_ms = 2500

    def __init__(self, cluster: EtcdCluster, index: int, ports: list[int]) -> None:
        super().__init__(cluster.host, ports[0], ports[1])
        self.cluster = cluster
        self.member_name = f"sg{index}"

    def command(self) -> list[str]:
        peers = ",".join(
            f"{n.member_name}=http://{n.host}:{n.peer_port}"
            for n in self.cluster.nodes
            if isinstance(n, EtcdClusterNode)
        )
        argv = super().command()
        argv[argv.index("--name") + 1] = self.member_name
        argv[argv.index("--initial-cluster") + 1] = peers
        argv[argv.index("--initial-cluster-token") + 1] = self.cluster.token
        return argv + ["--heartbeat-interval", str(self.heartbeat_ms), "--election-timeout", str(self.election_ms)]

    def status(self) -> dict[str, object]:
        request = urllib.request.Request(self.client_url + "/v3/maintenance/status", data=b"{}", method="POST")
        with urllib.request.urlopen(request, timeout=2) as r:
            result: dict[str, object] = json.load(r)
            return result


class EtcdCluster(Cluster):
    """A 3-node (or ``size``) etcd 3.4 cluster."""

    name = "etcd"

    def __init__(self, size: int = 3, host: str = HOST) -> None:
        super().__init__(size, host)
        self.token = f"sg-cluster-{os.getpid()}-{id(self):x}"

    def make_nodes(self) -> list[ServerProcess]:
        taken: set[int] = set()
        return [EtcdClusterNode(self, i + 1, _free_ports(self.host, 2, taken)) for i in range(self.size)]

    def is_leader(self, node: ServerProcess) -> bool:
        assert isinstance(node, EtcdClusterNode)
        status = node.status()
        header = status.get("header")
        return isinstance(header, dict) and status.get("leader") == header.get("member_id")


# --- Redis + Sentinel ------------------------------------------------------------------

#: The name Sentinel monitors the primary under (tooz's ``sentinel=``).
MASTER_NAME = "sg"


class RedisNode(RedisServer):
    """A data node: the primary, or (``primary`` given) its replica."""

    def __init__(self, host: str, port: int, primary: RedisNode | None = None) -> None:
        super().__init__(host, port)
        self.primary = primary

    @property
    def config_path(self) -> str:
        assert self.workdir
        return os.path.join(self.workdir, "redis.conf")

    def configure(self) -> None:
        """Write redis.conf once: Sentinel rewrites it (``CONFIG REWRITE``)
        when it turns the node into a replica or a primary, so a restarted
        node comes back in the role the cluster gave it, not the one it
        started with (a former primary restarted as one would sync its
        stale data onto the new primary's replicas)."""
        if os.path.exists(self.config_path):
            return
        # Redis 7 waits 5 s before a diskless full sync: a primary killed
        # within them leaves an empty replica to promote.
        argv = super().command()[1:] + ["--repl-diskless-sync-delay", "0"]
        if self.primary is not None:
            argv += ["--replicaof", f"{self.primary.host} {self.primary.port}"]
        lines = []
        for i in range(0, len(argv), 2):
            value = argv[i + 1]
            lines.append(f"{argv[i][2:]} {value if value else chr(34) * 2}")
        with open(self.config_path, "w") as f:
            f.write("\n".join(lines) + "\n")

    def command(self) -> list[str]:
        return ["redis-server", self.config_path]

    def replication(self) -> dict[str, str]:
        """``INFO replication`` as a dict (``role``, ``master_link_status`` ...)."""
        query = b"INFO replication\r\n"
        # ask() returns at the first newline: read the whole bulk reply.
        with socket.create_connection((self.host, self.port), timeout=2) as sock:
            sock.sendall(query)
            data = b""
            while b"\r\n\r\n" not in data[-8:] and (chunk := sock.recv(65536)):
                data += chunk
            info = data.decode("utf-8", "replace")
        return dict(line.split(":", 1) for line in info.splitlines() if ":" in line)

    def role(self) -> str:
        """``master`` or ``slave``, as the node itself says."""
        return self.replication().get("role", "")

    def synced(self) -> bool:
        """A primary, or a replica whose link to its primary is up."""
        info = self.replication()
        return info.get("role") == "master" or info.get("master_link_status") == "up"


class SentinelNode(ServerProcess):
    """One ``redis-sentinel`` (Debian package), watching :data:`MASTER_NAME`."""

    name = "sentinel"
    scheme = "redis"
    #: Sentinel timings (ms): a primary silent this long is down; a failover
    #: not done within the timeout is retried.
    down_after_ms = 2000
    failover_timeout_ms = 10000

    def __init__(self, cluster: RedisSentinelCluster, port: int) -> None:
        super().__init__(cluster.host, port)
        self.cluster = cluster

    def configure(self) -> None:
        primary = self.cluster.data_nodes[0]
        assert self.workdir
        lines = [
            f"port {self.port}",
            f"bind {self.host}",
            "daemonize no",
            'logfile ""',
            f"dir {self.workdir}",
            f"sentinel monitor {MASTER_NAME} {primary.host} {primary.port} 2",
            f"sentinel down-after-milliseconds {MASTER_NAME} {self.down_after_ms}",
            f"sentinel failover-timeout {MASTER_NAME} {self.failover_timeout_ms}",
            f"sentinel parallel-syncs {MASTER_NAME} 1",
        ]
        if not os.path.exists(self.config_path):  # Sentinel rewrites it: keep what it learnt
            with open(self.config_path, "w") as f:
                f.write("\n".join(lines) + "\n")

    @property
    def config_path(self) -> str:
        assert self.workdir
        return os.path.join(self.workdir, "sentinel.conf")

    def command(self) -> list[str]:
        return ["redis-sentinel", self.config_path]

    def master_port(self) -> int | None:
        """The primary's port as this Sentinel names it now."""
        query = f"SENTINEL get-master-addr-by-name {MASTER_NAME}\r\n".encode()
        lines = ask(self.host, self.port, query).decode("utf-8", "replace").split("\r\n")
        # *2 $9 127.0.0.1 $5 port
        return int(lines[4]) if len(lines) > 4 and lines[4].isdigit() else None

    def ready(self) -> bool:
        return self.master_port() is not None


class RedisSentinelCluster(Cluster):
    """A Redis primary, one replica and three Sentinels (quorum 2)."""

    name = "redis-sentinel"
    parallel_start = False  # the replica needs its primary, Sentinels both

    def __init__(self, sentinels: int = 3, host: str = HOST) -> None:
        super().__init__(sentinels, host)
        self.data_nodes: list[RedisNode] = []
        self.sentinels: list[SentinelNode] = []

    def make_nodes(self) -> list[ServerProcess]:
        taken: set[int] = set()
        ports = _free_ports(self.host, 2 + self.size, taken)
        primary = RedisNode(self.host, ports[0])
        self.data_nodes = [primary, RedisNode(self.host, ports[1], primary=primary)]
        self.sentinels = [SentinelNode(self, port) for port in ports[2:]]
        return [*self.data_nodes, *self.sentinels]

    def start(self) -> Cluster:
        """Start, then wait (bounded) until every replica has synced: a
        primary killed before that leaves an empty replica to promote."""
        super().start()
        deadline = time.monotonic() + ELECTION_WAIT
        while not all(_quietly(n.synced) for n in self.data_nodes if n.running and not n.paused):
            if time.monotonic() > deadline:
                tails = "\n".join(f"--- {n!r}\n{n.log_tail(5)}" for n in self.data_nodes)
                raise ServerStartError(f"{self.name}: replica not in sync within {ELECTION_WAIT:.0f}s\n{tails}")
            time.sleep(0.1)
        return self

    @property
    def url(self) -> str:
        first, *rest = self.sentinels
        fallbacks = "".join(f"&sentinel_fallback={s.host}:{s.port}" for s in rest)
        return f"redis://{first.host}:{first.port}?sentinel={MASTER_NAME}{fallbacks}"

    def is_leader(self, node: ServerProcess) -> bool:
        """The data node every running Sentinel names as primary, and that
        says so itself (after a failover, both agree only once it is done)."""
        if not isinstance(node, RedisNode):
            return False
        named = {s.master_port() for s in self.sentinels if s.running and not s.paused}
        return named == {node.port} and node.role() == "master"

    def followers(self) -> list[ServerProcess]:
        lead = self.leader()
        return [n for n in self.data_nodes if n is not lead]
