"""The fault-injecting TCP proxy against a tiny echo server on loopback.

Every mode is checked from both ends: what the client gets back, and what
the server behind the proxy saw (connections, bytes, resets). A held or
delayed request is first seen *reaching* the proxy (its stats), so "nothing
came back" is a fact, not a timeout; delays run on a fake clock.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
import os
import socket
import threading
import time

import pytest

from servicegroup.testing.clock import FakeClock
from servicegroup.testing.proxy import FaultProxy

BOUND = 30.0


def until(predicate: Callable[[], bool], bound: float = BOUND) -> bool:
    """Poll *predicate* until true or *bound* seconds pass (a bound, not a timing)."""
    deadline = time.monotonic() + bound
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


class EchoServer:
    """Echoes every byte; records what it saw."""

    def __init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.accepted = 0
        self.received = b""
        self.resets = 0
        self.active = 0
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            with self._lock:
                self.accepted += 1
                self.active += 1
            threading.Thread(target=self._echo, args=(conn,), daemon=True).start()

    def _echo(self, conn: socket.socket) -> None:
        try:
            while data := conn.recv(65536):
                with self._lock:
                    self.received += data
                conn.sendall(data)
        except ConnectionResetError:
            with self._lock:
                self.resets += 1
        except OSError:
            pass
        finally:
            conn.close()
            with self._lock:
                self.active -= 1

    def close(self) -> None:
        self.listener.close()


@pytest.fixture
def echo() -> Iterator[EchoServer]:
    server = EchoServer()
    yield server
    server.close()


@pytest.fixture
def proxy(echo: EchoServer) -> Iterator[FaultProxy]:
    with FaultProxy("127.0.0.1", echo.port) as p:
        yield p


@pytest.fixture
def clients() -> Iterator[Callable[..., socket.socket]]:
    made: list[socket.socket] = []

    def connect(p: FaultProxy, timeout: float = BOUND) -> socket.socket:
        sock = socket.create_connection((p.host, p.port), timeout=timeout)
        made.append(sock)
        return sock

    yield connect
    for sock in made:
        sock.close()


def recv_exactly(sock: socket.socket, n: int) -> bytes:
    sock.settimeout(BOUND)
    out = b""
    while len(out) < n:
        data = sock.recv(n - len(out))
        assert data, f"closed after {out!r}"
        out += data
    return out


def nothing_waiting(sock: socket.socket) -> bool:
    try:
        sock.setblocking(False)
        return not sock.recv(1, socket.MSG_PEEK)
    except BlockingIOError:
        return True
    finally:
        sock.settimeout(BOUND)


def test_pass_forwards_both_ways_on_every_connection(proxy: FaultProxy, echo: EchoServer, clients) -> None:
    socks = [clients(proxy) for _ in range(3)]
    for i, sock in enumerate(socks):
        sock.sendall(f"hello {i}".encode())
    assert [recv_exactly(s, 7) for s in socks] == [b"hello 0", b"hello 1", b"hello 2"]
    assert echo.accepted == 3 and proxy.mode == "pass"


def test_a_large_transfer_arrives_whole_and_in_order(proxy: FaultProxy, clients) -> None:
    sock = clients(proxy)
    payload = os.urandom(3 << 20)  # larger than the proxy's queue limit per direction
    sender = threading.Thread(target=sock.sendall, args=(payload,))
    sender.start()
    assert recv_exactly(sock, len(payload)) == payload
    sender.join()


def test_hold_forwards_nothing_either_way_until_healed(proxy: FaultProxy, echo: EchoServer, clients) -> None:
    old = clients(proxy)
    old.sendall(b"warm")
    assert recv_exactly(old, 4) == b"warm"
    proxy.hold()
    old.sendall(b"one")
    new = clients(proxy)  # the handshake still completes: a frozen peer, not a dead network
    new.sendall(b"two")
    assert until(lambda: proxy.stats().pending == 6 and proxy.stats().connections == 2)
    assert echo.received == b"warm" and echo.accepted == 1  # the target saw neither
    assert nothing_waiting(old) and nothing_waiting(new)
    proxy.heal()
    assert recv_exactly(old, 3) == b"one" and recv_exactly(new, 3) == b"two"
    assert echo.accepted == 2


def test_drop_freezes_open_connections_and_new_connects_never_complete(
    proxy: FaultProxy, echo: EchoServer, clients
) -> None:
    old = clients(proxy)
    old.sendall(b"warm")
    assert recv_exactly(old, 4) == b"warm"
    proxy.drop()
    old.sendall(b"held")
    with pytest.raises(TimeoutError):  # SYNs are dropped: only the client's own timeout ends it
        socket.create_connection((proxy.host, proxy.port), timeout=1).close()
    assert until(lambda: proxy.stats().pending == 4)
    assert echo.received == b"warm" and nothing_waiting(old)
    proxy.heal()
    assert recv_exactly(old, 4) == b"held"
    new = clients(proxy)
    new.sendall(b"again")
    assert recv_exactly(new, 5) == b"again"


def test_delay_holds_each_chunk_its_delay_after_it_was_read_in_order(echo: EchoServer, clients) -> None:
    clock = FakeClock()
    with FaultProxy("127.0.0.1", echo.port, clock=clock) as proxy:
        sock = clients(proxy)
        sock.sendall(b"0")
        assert recv_exactly(sock, 1) == b"0"  # connected upstream before time is frozen
        proxy.delay(5)
        sock.sendall(b"a")  # read at t=0 -> due at 5
        assert until(lambda: proxy.stats().queued == 1)
        clock.advance(1)
        sock.sendall(b"b")  # read at t=1 -> due at 6
        assert until(lambda: proxy.stats().queued == 2)
        clock.advance(3.9)
        proxy.tick()
        assert proxy.stats().queued == 2 and echo.received == b"0" and nothing_waiting(sock)
        clock.advance(0.1)  # t=5: "a" goes; its echo is read now, due back at 10
        proxy.tick()
        assert until(lambda: echo.received == b"0a" and proxy.stats().queued == 2)
        clock.advance(1)  # t=6: "b" goes
        proxy.tick()
        assert until(lambda: echo.received == b"0ab" and proxy.stats().queued == 2)
        assert nothing_waiting(sock)
        clock.advance(4)  # t=10: the echo of "a" is delivered, "b"'s at 11
        proxy.tick()
        assert recv_exactly(sock, 1) == b"a" and proxy.stats().queued == 1 and nothing_waiting(sock)
        clock.advance(1)
        proxy.tick()
        assert recv_exactly(sock, 1) == b"b"


def test_a_delay_is_lifted_for_queued_chunks_too(proxy: FaultProxy, clients) -> None:
    sock = clients(proxy)
    proxy.delay(3600)
    sock.sendall(b"slow")
    assert until(lambda: proxy.stats().queued == 4)
    assert nothing_waiting(sock)
    proxy.heal()
    assert recv_exactly(sock, 4) == b"slow"


def test_reset_sends_rst_to_both_ends_and_keeps_serving(proxy: FaultProxy, echo: EchoServer, clients) -> None:
    sock = clients(proxy)
    sock.sendall(b"x")
    assert recv_exactly(sock, 1) == b"x"
    proxy.reset()
    with pytest.raises(ConnectionResetError):
        sock.recv(1)
    assert until(lambda: echo.resets == 1)
    assert proxy.mode == "pass"
    again = clients(proxy)
    again.sendall(b"y")
    assert recv_exactly(again, 1) == b"y"


def test_refuse_closes_the_listener_and_heal_reopens_the_same_port(proxy: FaultProxy, clients) -> None:
    sock = clients(proxy)
    port = proxy.port
    proxy.refuse()
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection((proxy.host, port), timeout=BOUND).close()
    sock.sendall(b"open")  # a connection made before stays up
    assert recv_exactly(sock, 4) == b"open"
    proxy.heal()
    again = clients(proxy)
    assert again.getpeername()[1] == port == proxy.port
    again.sendall(b"back")
    assert recv_exactly(again, 4) == b"back"


def test_a_refusing_target_resets_the_client(clients) -> None:
    closed = socket.create_server(("127.0.0.1", 0))
    port = closed.getsockname()[1]
    closed.close()
    with FaultProxy("127.0.0.1", port) as proxy:
        with pytest.raises(ConnectionResetError):  # on connect() if the reset came first, else on recv()
            clients(proxy).recv(1)


def test_a_half_close_is_passed_on(proxy: FaultProxy, echo: EchoServer, clients) -> None:
    sock = clients(proxy)
    sock.sendall(b"bye")
    sock.shutdown(socket.SHUT_WR)
    assert recv_exactly(sock, 3) == b"bye"
    assert sock.recv(1) == b""  # the echo server saw our FIN, closed, and its FIN came back
    assert until(lambda: proxy.stats().connections == 0)


def _sockets() -> set[str]:
    """This process's open sockets (``socket:[inode]``)."""
    found = set()
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue  # the listing's own descriptor, closed by now
        if target.startswith("socket:"):
            found.add(target)
    return found


def test_stop_leaves_no_thread_and_no_socket(echo: EchoServer) -> None:
    before = _sockets()
    proxy = FaultProxy("127.0.0.1", echo.port).start()
    socks = [socket.create_connection((proxy.host, proxy.port), timeout=BOUND) for _ in range(3)]
    for sock in socks:
        sock.sendall(b"1")
        assert recv_exactly(sock, 1) == b"1"
    proxy.drop()  # the accept-queue plug is a socket too
    proxy.stop()
    proxy.stop()  # idempotent
    for sock in socks:
        sock.close()
    assert until(lambda: echo.active == 0)
    assert not [t for t in threading.enumerate() if t.name.startswith("fault-proxy")]
    assert _sockets() - before == set()
    never_started = FaultProxy("127.0.0.1", echo.port)
    never_started.stop()
    assert _sockets() - before == set()


def test_via_points_a_url_at_the_proxy_keeping_the_rest(proxy: FaultProxy) -> None:
    assert proxy.via("postgresql://u:pw@10.0.0.1:5432/db?x=1") == f"postgresql://u:pw@127.0.0.1:{proxy.port}/db?x=1"
    assert proxy.via("redis://127.0.0.1:6379") == f"redis://127.0.0.1:{proxy.port}"


def test_a_negative_delay_is_refused(proxy: FaultProxy) -> None:
    with pytest.raises(ValueError, match="delay"):
        proxy.delay(-1)
    assert proxy.mode == "pass"
