"""A fault-injecting TCP proxy: network faults without kernel features.

``FaultProxy(target_host, target_port)`` listens on a loopback port and
forwards every connection to the target (PostgreSQL, MariaDB, ZooKeeper,
Redis, etcd, memcached, anything over TCP). A test's nemesis switches its
mode at any time; a switch applies to the connections already open and to
new ones, and has taken effect when the call returns:

=========== ================================== ===============================
call        open connections                   new connections
=========== ================================== ===============================
heal()      forwarded as they come             accepted and forwarded
hold()      nothing read or forwarded, either  accepted (the handshake
            way: a frozen peer, no FIN, no     completes) but nothing is
            RST; what was sent waits, in order forwarded and the target sees
                                               no connection yet
drop()      as under hold()                    the handshake never completes:
                                               connect() hangs until the
                                               client's own timeout, as across
                                               a partition
delay(s)    every chunk reaches the other side as under delay(s)
            *s* seconds after the proxy read it
            (each direction, order kept)
refuse()    still forwarded                    refused (ECONNREFUSED): the
                                               listener is closed; heal()
                                               reopens it on the same port
reset()     each one is reset (RST to both     (a one-off action: the mode
            ends, SO_LINGER 0 then close)      stays what it was)
=========== ================================== ===============================

``heal()`` ends every fault (``pass`` would say it, but is a keyword in
Python). Data is never dropped from the middle of a stream (TCP would
retransmit it), so what a hold or a partition kept is delivered, in order,
once it ends: a client whose own timeout fired meanwhile has already given
up, as in real life.
Under ``drop()`` the proxy stops accepting and keeps its accept queue full
(listen backlog 0 and one connection of its own), so the kernel drops the
SYNs of new clients; this relies on Linux's accept-queue behaviour.

The listening port is chosen below the kernel's ephemeral port range, so no
outgoing connection can take it while ``refuse()`` has it closed.

Everything runs on one thread (:mod:`servicegroup.testing.relay`, a
selector loop over non-blocking sockets): a mode switch never races a send,
and :meth:`FaultProxy.stop` leaves no thread and no socket behind.
Standard library only.
"""

from __future__ import annotations

from collections.abc import Callable
import random
import socket
import time
import urllib.parse

from servicegroup.testing.relay import Relay, Stats

__all__ = ["FaultProxy", "Stats"]

BACKLOG = 128


def _quiet_port(host: str) -> socket.socket:
    """A listening socket on a port below the ephemeral range (none of this
    machine's outgoing connections can take it while it is closed)."""
    low = 32768
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            low = int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        pass
    candidates = random.sample(range(10000, low), min(200, max(0, low - 10000)))
    for port in candidates + [0]:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            sock.close()
            continue
        return sock
    raise OSError(f"no free port on {host}")


class FaultProxy(Relay):
    """A TCP proxy to ``target_host:target_port`` whose faults a test switches.

    ``host``/``port``/``address`` are where clients connect (:meth:`via`
    rewrites a URL to go through it). *clock* (``time.monotonic`` by
    default) times delays; a test with a fake clock moves it and calls
    :meth:`tick`.
    """

    def __init__(
        self,
        target_host: str,
        target_port: int,
        host: str = "127.0.0.1",
        connect_timeout: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__((target_host, target_port), connect_timeout, clock)
        self.host = host
        self._listener = _quiet_port(host)
        self.port: int = self._listener.getsockname()[1]
        self._mode = "pass"
        self._delay = 0.0
        self._plug: socket.socket | None = None  # fills the accept queue under drop()

    # -- public API -------------------------------------------------------------

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def mode(self) -> str:
        """``pass``, ``hold``, ``drop``, ``delay`` or ``refuse``."""
        return self._mode

    def via(self, url: str) -> str:
        """*url* with its host and port replaced by the proxy's."""
        parts = urllib.parse.urlsplit(url)
        userinfo = parts.netloc.rpartition("@")[0]
        netloc = f"{userinfo}@{self.address}" if userinfo else self.address
        return urllib.parse.urlunsplit(parts._replace(netloc=netloc))

    def start(self) -> FaultProxy:
        assert self._listener is not None, "a stopped proxy cannot start again"
        self._listener.listen(BACKLOG)
        self._listener.setblocking(False)
        self._start_loop(f"fault-proxy-{self.port}")
        return self

    def stop(self) -> None:
        """Close every connection and the listener; end the thread (idempotent)."""
        self._stop_loop()

    def heal(self) -> None:
        """Forward everything again (``pass``); reopen a refused listener."""
        self._call(self._set_mode, "pass")

    def hold(self) -> None:
        """Freeze: keep and accept connections, forward nothing either way."""
        self._call(self._set_mode, "hold")

    def drop(self) -> None:
        """Partition: open connections freeze, new ones never connect."""
        self._call(self._set_mode, "drop")

    def delay(self, seconds: float) -> None:
        """Forward each chunk *seconds* after it was read, order kept."""
        if seconds < 0:
            raise ValueError("delay must be >= 0")
        self._call(self._set_mode, "delay", seconds)

    def refuse(self) -> None:
        """Close the listener (connects get ECONNREFUSED); open connections stay."""
        self._call(self._set_mode, "refuse")

    def reset(self) -> None:
        """RST every open connection, both ends; the mode stays."""
        self._call(self._reset_all)

    def tick(self) -> None:
        """Send what is due by the clock now (after a test moved a fake
        clock): when this returns, every due chunk was written."""
        self._call(lambda: self._flush(self.clock()))

    def stats(self) -> Stats:
        """What the proxy holds right now (for tests that must know a held
        request really reached it before they assert it went no further)."""
        result: Stats = self._call(self._stats)
        return result

    def __enter__(self) -> FaultProxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"<FaultProxy {self.address} -> {self.target[0]}:{self.target[1]} {self._mode}>"

    # -- modes (run on the loop thread) ----------------------------------------------

    def _forwarding(self) -> bool:
        return self._mode in ("pass", "delay", "refuse")

    def _accepting(self) -> bool:
        return self._mode in ("pass", "delay", "hold")

    def _delay_now(self) -> float:
        return self._delay if self._mode == "delay" else 0.0

    def _set_mode(self, mode: str, delay: float = 0.0) -> None:
        if mode != "refuse" and self._listener is None:
            self._listener = self._reopen()  # first: if the port is gone, nothing changed
        old, self._mode, self._delay = self._mode, mode, delay
        if old == "drop" and mode != "drop":
            self._unplug()
        if mode == "refuse" and self._listener is not None:
            self._accept()  # a client whose handshake completed is connected: keep it
            self._unwatch(self._listener)
            self._listener.close()
            self._listener = None
        if mode == "drop" and old != "drop":
            self._plug_queue()

    def _reopen(self) -> socket.socket:
        """The listener again, on the same port (clients keep their URL)."""
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((self.host, self.port))
            sock.listen(BACKLOG)
        except OSError as exc:
            sock.close()
            raise OSError(exc.errno, f"{self!r}: cannot listen on {self.address} again: {exc.strerror}") from None
        sock.setblocking(False)
        return sock

    def _plug_queue(self) -> None:
        """Backlog 0 plus one connection of ours: the accept queue is full,
        so the kernel drops every new SYN."""
        assert self._listener is not None
        self._listener.listen(0)
        self._plug = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._plug.setblocking(False)
        self._plug.connect_ex((self.host, self.port))

    def _unplug(self) -> None:
        if self._listener is not None:
            self._listener.listen(BACKLOG)
            self._accept(skip=self._plug)
        if self._plug is not None:
            self._plug.close()
            self._plug = None

    def _release(self) -> None:
        super()._release()
        if self._plug is not None:
            self._plug.close()
            self._plug = None
        if self._listener is not None:
            self._unwatch(self._listener)
            self._listener.close()
            self._listener = None
