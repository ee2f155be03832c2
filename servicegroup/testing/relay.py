"""The forwarding engine of :class:`servicegroup.testing.proxy.FaultProxy`.

One thread runs a selector loop over non-blocking sockets: it accepts
clients, connects each to the target, and moves bytes both ways as chunks
stamped with the time they were read, so a delay can hold each chunk for a
while without reordering anything. Half-closes (FIN) are passed on once
everything before them is delivered; a reset from either end resets the
other. Everything that touches a socket runs on this thread: other
threads hand it commands (:meth:`Relay._call`) and wait for the answer,
so a change of policy has taken effect when the call returns and never
races a send.

What to forward, when, and whether to accept is the subclass's policy:
:meth:`Relay._forwarding`, :meth:`Relay._accepting` and
:meth:`Relay._delay_now`.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
import dataclasses
import errno
import fcntl
import queue
import selectors
import socket
import struct
import termios
import threading
from typing import Any

#: Bytes queued per direction before the relay stops reading the sender
#: (TCP flow control, as the sender's kernel would see it).
QUEUE_LIMIT = 1 << 20
CHUNK = 65536
_LINGER_0 = struct.pack("ii", 1, 0)


@dataclasses.dataclass(frozen=True)
class Stats:
    """A snapshot of what the relay holds."""

    #: Client connections open (including those not yet connected upstream).
    connections: int
    #: Bytes read from one end and not yet written to the other.
    queued: int
    #: Bytes waiting, unread, in the kernel buffers of the relay's sockets.
    unread: int

    @property
    def pending(self) -> int:
        """Everything sent through the relay and not yet delivered by it."""
        return self.queued + self.unread


@dataclasses.dataclass
class _Direction:
    """Bytes read from one end, waiting to be written to the other."""

    chunks: deque[tuple[float, memoryview]] = dataclasses.field(default_factory=deque)
    queued: int = 0
    eof: bool = False  # the sender closed its side (FIN read)
    shut: bool = False  # the FIN was passed on
    blocked: bool = False  # the receiver's buffer was full at the last send


@dataclasses.dataclass(eq=False)
class _Conn:
    client: socket.socket
    upstream: socket.socket | None = None
    state: str = "waiting"  # waiting -> connecting -> open
    deadline: float = 0.0
    up: _Direction = dataclasses.field(default_factory=_Direction)  # client -> target
    down: _Direction = dataclasses.field(default_factory=_Direction)  # target -> client

    def sockets(self) -> list[socket.socket]:
        return [s for s in (self.client, self.upstream) if s is not None]

    def routes(self) -> list[tuple[socket.socket, _Direction, socket.socket]]:
        """(sender, direction, receiver) for both directions, once open."""
        if self.state != "open" or self.upstream is None:
            return []
        return [(self.client, self.up, self.upstream), (self.upstream, self.down, self.client)]


class Relay:
    """Accepts on :attr:`_listener` (set by the subclass) and relays to
    :attr:`target`."""

    def __init__(self, target: tuple[str, int], connect_timeout: float, clock: Callable[[], float]) -> None:
        self.target = target
        self.connect_timeout = connect_timeout
        self.clock = clock
        self._listener: socket.socket | None = None
        self._conns: list[_Conn] = []
        self._sel = selectors.DefaultSelector()
        self._events: dict[socket.socket, int] = {}
        self._commands: queue.Queue[tuple[Callable[[], Any], list[Any], threading.Event]] = queue.Queue()
        self._wake_r, self._wake_w = socket.socketpair()
        self._thread: threading.Thread | None = None
        self._running = False
        self._failure: BaseException | None = None

    # -- policy (subclasses) ------------------------------------------------------

    def _forwarding(self) -> bool:
        """Whether bytes move (and new clients get connected to the target)."""
        return True

    def _accepting(self) -> bool:
        return True

    def _delay_now(self) -> float:
        """Seconds each chunk waits after it was read."""
        return 0.0

    # -- life cycle ---------------------------------------------------------------

    def _start_loop(self, name: str) -> None:
        self._wake_r.setblocking(False)
        self._running = True
        self._thread = threading.Thread(target=self._loop, name=name, daemon=True)
        self._thread.start()

    def _stop_loop(self) -> None:
        """End the loop and close every socket (idempotent)."""
        if self._thread is not None and self._thread.is_alive():
            self._call(self._shutdown)
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None
        self._release()  # never started, or the loop failed
        self._sel.close()
        self._wake_r.close()
        self._wake_w.close()

    def _shutdown(self) -> None:
        self._release()
        self._running = False

    def _release(self) -> None:
        """Close every socket but the wake-up pair; subclasses add theirs."""
        self._reset_all()

    def _reset_all(self) -> None:
        for conn in list(self._conns):
            self._close(conn, rst=True)

    def _call(self, fn: Callable[..., Any], *args: Any) -> Any:
        if self._failure is not None:
            raise RuntimeError(f"{self!r}: its loop failed") from self._failure
        if not self._running:
            raise RuntimeError(f"{self!r} is not running")
        result: list[Any] = []
        done = threading.Event()
        self._commands.put((lambda: fn(*args), result, done))
        self._wake_w.send(b"x")
        if not done.wait(30):
            raise RuntimeError(f"{self!r}: the loop did not answer")
        if isinstance(result[0], BaseException):
            raise result[0]
        return result[0]

    def _stats(self) -> Stats:
        queued = unread = 0
        for conn in self._conns:
            queued += conn.up.queued + conn.down.queued
            for sock in conn.sockets():
                try:
                    unread += struct.unpack("i", fcntl.ioctl(sock, termios.FIONREAD, b"\0\0\0\0"))[0]
                except OSError:
                    pass
        return Stats(len(self._conns), queued, unread)

    # -- the loop -------------------------------------------------------------------

    def _loop(self) -> None:
        try:
            self._watch(self._wake_r, selectors.EVENT_READ)
            while True:  # _running is True here: _start_loop set it first
                self._run_commands()  # may run _shutdown, which clears _running
                if not self._running:
                    break
                self._step()
        except BaseException as exc:
            self._failure = exc
            self._running = False
            self._release()
        finally:
            while not self._commands.empty():  # nobody waits forever on a dead loop
                _, result, done = self._commands.get_nowait()
                result.append(RuntimeError(f"{self!r} stopped"))
                done.set()

    def _run_commands(self) -> None:
        while True:
            try:
                fn, result, done = self._commands.get_nowait()
            except queue.Empty:
                return
            try:
                result.append(fn())
            except Exception as exc:
                result.append(exc)
            done.set()

    def _step(self) -> None:
        now = self.clock()
        waits = [self._flush(now)]
        for conn in list(self._conns):
            if conn.state == "connecting" and now >= conn.deadline:
                self._close(conn, rst=True)  # the target never answered the handshake
            elif conn.state == "connecting":
                waits.append(conn.deadline - now)
        timeout = min((w for w in waits if w is not None), default=None)
        self._update_interest()
        for key, events in self._sel.select(timeout):
            sock = key.fileobj
            assert isinstance(sock, socket.socket)  # _watch registers sockets only
            if sock is self._wake_r:
                try:
                    self._wake_r.recv(4096)
                except BlockingIOError:
                    pass
            elif sock is self._listener:
                self._accept()
            else:
                self._handle(key.data, sock, events)

    def _flush(self, now: float) -> float | None:
        """Send what is due; start upstream connects; return the time until
        the next chunk is due (None when nothing waits on the clock)."""
        if not self._forwarding():
            return None
        wait: float | None = None
        delay = self._delay_now()
        for conn in list(self._conns):
            if conn.state == "waiting":
                self._connect_upstream(conn, now)
            for _, direction, receiver in conn.routes():
                if conn not in self._conns:
                    break
                while direction.chunks and not direction.blocked:
                    read_at, data = direction.chunks[0]
                    due = read_at + delay
                    if due > now:
                        wait = due - now if wait is None else min(wait, due - now)
                        break
                    try:
                        sent = receiver.send(data)
                    except BlockingIOError:
                        direction.blocked = True
                        break
                    except OSError:
                        self._close(conn, rst=True)
                        break
                    direction.queued -= sent
                    if sent < len(data):
                        direction.chunks[0] = (read_at, data[sent:])
                    else:
                        direction.chunks.popleft()
                if conn in self._conns and direction.eof and not direction.chunks and not direction.shut:
                    direction.shut = True
                    try:
                        receiver.shutdown(socket.SHUT_WR)  # pass the FIN on
                    except OSError:
                        pass
            if conn in self._conns and conn.up.shut and conn.down.shut:
                self._close(conn, rst=False)
        return wait

    def _update_interest(self) -> None:
        wanted: dict[socket.socket, int] = {self._wake_r: selectors.EVENT_READ}
        if self._listener is not None and self._accepting():
            wanted[self._listener] = selectors.EVENT_READ
        forwarding = self._forwarding()
        for conn in self._conns:
            if conn.state == "connecting" and conn.upstream is not None:
                wanted[conn.upstream] = selectors.EVENT_WRITE
            for sender, direction, receiver in conn.routes():
                if forwarding and not direction.eof and direction.queued < QUEUE_LIMIT:
                    wanted[sender] = wanted.get(sender, 0) | selectors.EVENT_READ
                if forwarding and direction.blocked:
                    wanted[receiver] = wanted.get(receiver, 0) | selectors.EVENT_WRITE
        owners = {s: c for c in self._conns for s in c.sockets()}
        for sock in list(self._events):
            if sock not in wanted:
                self._unwatch(sock)
        for sock, events in wanted.items():
            self._watch(sock, events, owners.get(sock))

    def _watch(self, sock: socket.socket, events: int, data: Any = None) -> None:
        if sock not in self._events:
            self._sel.register(sock, events, data)
        elif self._events[sock] != events:
            self._sel.modify(sock, events, data)
        self._events[sock] = events

    def _unwatch(self, sock: socket.socket) -> None:
        if self._events.pop(sock, None) is not None:
            self._sel.unregister(sock)

    def _accept(self, skip: socket.socket | None = None) -> None:
        assert self._listener is not None
        plug = skip.getsockname() if skip is not None else None
        while True:
            try:
                client, peer = self._listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                return  # the client gave up while queued
            if plug is not None and peer == plug:
                client.close()  # our own accept-queue plug
                continue
            client.setblocking(False)
            client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self._conns.append(_Conn(client))

    def _connect_upstream(self, conn: _Conn, now: float) -> None:
        upstream = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        upstream.setblocking(False)
        upstream.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        conn.upstream, conn.state, conn.deadline = upstream, "connecting", now + self.connect_timeout
        code = upstream.connect_ex(self.target)
        if code == 0:
            conn.state = "open"
        elif code not in (errno.EINPROGRESS, errno.EWOULDBLOCK):
            self._close(conn, rst=True)  # refused: the client sees a reset

    def _handle(self, conn: _Conn, sock: socket.socket, events: int) -> None:
        if conn not in self._conns:
            return
        if conn.state == "connecting":
            if sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR):
                self._close(conn, rst=True)
            else:
                conn.state = "open"
            return
        for sender, direction, receiver in conn.routes():
            if sock is receiver and events & selectors.EVENT_WRITE:
                direction.blocked = False
            if sock is sender and events & selectors.EVENT_READ:
                try:
                    data = sender.recv(CHUNK)
                except (BlockingIOError, InterruptedError):
                    continue
                except OSError:
                    self._close(conn, rst=True)  # reset by the peer: reset the other end too
                    return
                if data:
                    direction.chunks.append((self.clock(), memoryview(data)))
                    direction.queued += len(data)
                else:
                    direction.eof = True

    def _close(self, conn: _Conn, rst: bool) -> None:
        if conn in self._conns:
            self._conns.remove(conn)
        for sock in conn.sockets():
            self._unwatch(sock)
            if rst:
                try:
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_0)
                except OSError:
                    pass
            sock.close()
