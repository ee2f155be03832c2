"""Starting tooz coordinators and translating their failures.

Every coordinator the library opens goes through :func:`start`, so every
backend fails the same way: a :class:`~servicegroup.errors.BackendUnavailable`
naming the scheme, host and port, within a bounded time, with no password
in the message (tooz and client libraries happily echo URLs).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
import contextlib
from importlib import metadata
import socket
import threading
import time
import urllib.parse

import tooz
from oslo_utils import netutils
from tooz import coordination

from servicegroup import endpoints
from servicegroup import errors
from servicegroup import profiles
from servicegroup import urls

CoordinatorFactory = Callable[[str, bytes], coordination.CoordinationDriver]

#: How long a TCP reachability probe may take before start-up gives up.
CONNECT_TIMEOUT = 5.0

#: Bound on every backend call the library waits for. tooz's results wait
#: forever by default: a kazoo client stuck reconnecting would hang the
#: heartbeat thread silently, which is worse than a failure it can count.
CALL_TIMEOUT = 5.0


def default_factory(url: str, member_id: bytes) -> coordination.CoordinationDriver:
    """``tooz.coordination.get_coordinator``, except where tooz falls short.

    tooz before 9 (the only tooz on Python 3.10) ships its own ``consul``
    driver, so the scheme has two entry points and stevedore refuses to
    choose. Ours is the one with membership liveness: build it directly, with
    the same URL parsing tooz uses. A cluster URL (:mod:`servicegroup.endpoints`)
    gets what tooz's driver lacks: a ZooKeeper chroot, which tooz would drop
    (it hands kazoo the host list only), and failover between etcd endpoints.
    """
    scheme = url.partition("://")[0].lower()
    parsed = netutils.urlsplit(url)
    options = urllib.parse.parse_qs(parsed.query)
    profile = profiles.for_scheme(scheme)
    if profile.push == "zookeeper" and endpoints.chroot(url):
        endpoints.ensure_zookeeper_chroot(parsed, endpoints.chroot(url), CONNECT_TIMEOUT)
        moved = parsed._replace(netloc=parsed.netloc + endpoints.chroot(url), path="")
        return _tooz_driver(scheme)(member_id, moved, options)
    if profile.push == "etcd" and len(urls.hosts(url)) > 1:
        from servicegroup.drivers import etcd  # etcd3gw is imported only when used

        return etcd.FailoverEtcd3Driver(member_id, parsed, options)
    ours = [
        ep
        for ep in metadata.entry_points(group=coordination.TOOZ_BACKENDS_NAMESPACE)
        if ep.name == scheme and ep.value.startswith("servicegroup.")
    ]
    if ours and _registrations(scheme) > 1:
        driver: coordination.CoordinationDriver = ours[0].load()(member_id, parsed, options)
        return driver
    return coordination.get_coordinator(url, member_id)


def _tooz_driver(scheme: str) -> type[coordination.CoordinationDriver]:
    """tooz's own driver class for *scheme*."""
    for ep in metadata.entry_points(group=coordination.TOOZ_BACKENDS_NAMESPACE):
        if ep.name == scheme and not ep.value.startswith("servicegroup."):
            cls: type[coordination.CoordinationDriver] = ep.load()
            return cls
    raise errors.UnknownDriver(scheme + "://", list(profiles.DEFAULT_URLS))


def _registrations(scheme: str) -> int:
    return sum(1 for ep in metadata.entry_points(group=coordination.TOOZ_BACKENDS_NAMESPACE) if ep.name == scheme)


def where(url: str) -> str:
    """``scheme host:port[,host:port...]`` of *url*, safe to show (no
    credentials). Never raises: it names the backend in messages about
    malformed URLs too."""
    try:
        parts = urls.split(url)
        servers = urls.hosts(url)
    except errors.InvalidURL:
        return f"{url.partition('://')[0]} backend {urls.redact(url)}"
    if profiles.for_scheme(parts.scheme).local or not servers:
        return f"{parts.scheme} backend {urls.redact(url)}"
    return f"{parts.scheme} backend at {','.join(_shown(s) for s in servers)}"


def _shown(server: urls.Endpoint) -> str:
    return str(server) if server.port is not None else f"{server}:(default port)"


def describe(exc: BaseException, url: str | None = None) -> str:
    """A one-line, credential-free description of *exc*; with *url*, that
    URL's password and secret options are masked wherever they occur."""
    text = str(exc) or type(exc).__name__
    return urls.redact(text.splitlines()[0] if text else text, url=url)


def probe_tcp(url: str, timeout: float = CONNECT_TIMEOUT) -> None:
    """Fail fast, naming host and port, when a network backend is not listening.

    Client libraries differ wildly here (kazoo retries until its session
    timeout, pymemcache connects lazily); one TCP connect gives every backend
    the same bounded, clear failure. A cluster (a host list, Redis
    Sentinels) is reachable when any one of its servers is: starting with
    one node down is what a cluster is for.
    """
    parts = urls.split(url)  # a malformed URL is InvalidURL, redacted
    servers = endpoints.sentinel_options(url) or urls.hosts(url)
    addresses = [(s.host, s.port) for s in servers if s.port is not None]
    if profiles.for_scheme(parts.scheme).local or not addresses:
        return
    failure: OSError | None = None
    for address in addresses:
        try:
            with socket.create_connection(address, timeout=timeout / len(addresses)):
                return
        except OSError as exc:
            failure = exc
    assert failure is not None
    raise errors.BackendUnavailable(f"cannot reach {where(url)}: {failure.strerror or failure}") from None


@contextlib.contextmanager
def errors_translated(url: str) -> Iterator[None]:
    """Turn tooz connection failures into :class:`BackendUnavailable`."""
    try:
        yield
    except errors.ServiceGroupError:
        raise
    except (coordination.ToozConnectionError, coordination.OperationTimedOut, OSError) as exc:
        # OSError: socket errors some client libraries let through untranslated.
        raise errors.BackendUnavailable(f"{where(url)}: {describe(exc, url)}") from None
    except tooz.ToozError as exc:
        # InvalidId & co. are already our typed errors (they subclass them).
        raise errors.ServiceGroupError(f"{where(url)}: {describe(exc, url)}") from None


def start(
    factory: CoordinatorFactory, url: str, member_id: str, *, beat: bool = True
) -> coordination.CoordinationDriver:
    """Build and start a coordinator for *member_id*, or raise a typed error.

    ``beat=False`` is for acting on *another* process's member id (removing
    it from a group): tooz's memcached and Redis drivers heartbeat inside
    ``start()``, which would refresh that member's TTL key and keep a dead
    host alive in every group it was in. Such a coordinator never beats.

    A ``ValueError`` or ``TypeError`` while the driver is built or starts
    (``int('abc')`` on an option, an unknown client keyword) is a
    configuration error: :class:`InvalidURL`, never "cannot start".
    """
    if factory is default_factory:
        probe_tcp(url)
    with errors_translated(url):
        try:
            coord = factory(url, member_id.encode("utf-8"))
            if not beat:
                coord.heartbeat = _no_heartbeat  # type: ignore[method-assign]
            coord.start(start_heart=False)
        except (errors.ServiceGroupError, tooz.ToozError):
            raise
        except (ValueError, TypeError) as exc:
            # Name the option whose value the error quotes, when one does.
            named = [
                name
                for name, value in urls.query_options(url).items()
                if value and not urls.is_secret_option(name) and repr(value) in str(exc)
            ]
            which = f"option {named[0]}" if len(named) == 1 else "an option value"
            raise errors.InvalidURL(f"{which} in {urls.redact(url)} is not valid: {describe(exc, url)}") from None
        except Exception as exc:  # client libraries raise anything at connect
            raise errors.BackendUnavailable(f"cannot start {where(url)}: {describe(exc, url)}") from None
    return coord


def _no_heartbeat() -> float:
    return 0.0


class FailureClock:
    """Says when a coordinator has failed long enough to be replaced.

    Client libraries reconnect on their own, and usually that is enough. Not
    always: a kazoo client whose ZooKeeper came back with its data wiped is
    refused forever (it has seen a newer zxid than the server has), and
    tooz's drivers never rebuild their client. After ``after`` seconds of
    uninterrupted failure, a fresh coordinator is the cure.
    """

    def __init__(self, after: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.after = after
        self._clock = clock
        self._since: float | None = None

    def ok(self) -> None:
        self._since = None

    def failed(self) -> bool:
        """Record a failure; True when failures have lasted ``after`` seconds."""
        now = self._clock()
        if self._since is None:
            self._since = now
            return False
        if now - self._since >= self.after:
            self._since = None
            return True
        return False


def remove_member(
    factory: CoordinatorFactory, url: str, topic: str, host: str, coord: coordination.CoordinationDriver | None = None
) -> bool:
    """Remove *host* from *topic* in the backend, whoever runs it; False
    when the backend cannot remove members (Consul's catalog mode).

    tooz removes only a coordinator's own member id: *coord* is the host's
    own coordinator when this process runs it; otherwise a short-lived one
    borrows the host's id, one that never heartbeats as it.
    """
    with errors_translated(url):
        borrowed = coord is None
        if coord is None:
            coord = start(factory, url, host, beat=False)
        try:
            coord.leave_group(topic.encode()).get(timeout=CALL_TIMEOUT)
        except errors.NotSupported:
            return False
        except (coordination.MemberNotJoined, coordination.GroupNotCreated):
            pass  # already gone
        finally:
            # Stopping a coordinator whose stop() deletes the host's
            # heartbeat key would mark it dead in every topic: dropped
            # unstopped instead (its client closes when collected).
            if borrowed and not profiles.for_url(url).stop_deletes_beat:
                stop_quietly(coord)
    return True


def stop_quietly(coord: coordination.CoordinationDriver) -> None:
    """Stop a coordinator, bounded and never raising: a client stuck
    reconnecting must not hang a shutdown (tooz's ZooKeeper ``stop()``
    waits forever while kazoo reconnects)."""
    try:
        bounded(coord.stop, CALL_TIMEOUT, "stop")
    except Exception:
        pass


def discard(coord: coordination.CoordinationDriver | None) -> None:
    """Stop a broken coordinator without waiting on it (its stop may hang)."""
    if coord is None:
        return

    def stop() -> None:
        try:
            coord.stop()
        except Exception:
            pass

    threading.Thread(target=stop, name="servicegroup-discard", daemon=True).start()


def bounded(fn: Callable[[], object], timeout: float, what: str) -> None:
    """Run *fn* but give up waiting after *timeout* seconds.

    For the calls tooz offers no timeout on: its ZooKeeper ``heartbeat()`` is
    a plain kazoo ``get`` that waits forever while the client reconnects.
    A call that overruns keeps its thread until the coordinator is discarded
    (which makes kazoo fail it), but the caller carries on and counts a
    failure.
    """
    outcome: list[BaseException | None] = []

    def call() -> None:
        try:
            fn()
            outcome.append(None)
        except BaseException as exc:  # handed to the caller below
            outcome.append(exc)

    worker = threading.Thread(target=call, name=f"servicegroup-{what}", daemon=True)
    worker.start()
    worker.join(timeout)
    if not outcome:
        raise coordination.OperationTimedOut(f"{what} did not answer within {timeout:g}s")
    if outcome[0] is not None:
        raise outcome[0]
