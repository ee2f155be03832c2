"""One URL naming several servers: a ZooKeeper ensemble, an etcd cluster,
Redis behind Sentinel.

Operators write a cluster the way its own clients do: ZooKeeper's
connection string ``zookeeper://h1:p1,h2:p2,h3:p3[/chroot]`` (which tooz
hands to kazoo as is), etcd's endpoint list ``etcd3+http://h1:p1,h2:p2``
(tooz's etcd3gw driver reads one host: the failover between them is ours,
:mod:`servicegroup.drivers.etcd`), and Redis Sentinel through tooz's
``?sentinel=<master>&sentinel_fallback=h:p`` options (the URL's host is the
first Sentinel, not the primary). ``urllib.parse`` cannot read a host list
(``.port`` of ``h1:1,h2:2`` is "malformed"), so every host is parsed and
checked here, one by one, and a list given to a backend that reads one host
is refused by name rather than connecting to the first and ignoring the rest.
"""

from __future__ import annotations

import urllib.parse
from typing import Any

from tooz import coordination

from servicegroup import errors
from servicegroup import profiles
from servicegroup import urls


def chroot(url: str) -> str:
    """The ZooKeeper chroot of *url* (``/app`` of ``zookeeper://h1,h2/app``),
    or '' for none. tooz hands kazoo the URL's host list only, so a chroot
    would be dropped silently unless the library passes it on."""
    path = urllib.parse.urlsplit(url).path.rstrip("/")
    return path


def check(url: str) -> None:
    """Refuse a host list or Sentinel options the URL's backend cannot use.

    A list where the backend reads one host (``redis://a:1,b:2``) would
    connect to a "host" named ``a:1,b:2``; ``sentinel_fallback`` without
    ``sentinel`` is ignored by tooz; a malformed Sentinel address fails only
    when the member starts. All are named here, the URL redacted.
    """
    scheme = url.partition("://")[0].lower()
    profile = profiles.for_scheme(scheme)
    servers = urls.hosts(url)
    if len(servers) > 1 and not profile.host_list:
        hint = " (for Sentinel: ?sentinel=<master>&sentinel_fallback=host:port)" if profile.alias == "redis" else ""
        raise errors.InvalidURL(f"{scheme} URL {urls.redact(url)} names {len(servers)} hosts; {scheme} reads one{hint}")
    if chroot(url) and profile.push != "zookeeper" and profile.host_list:
        raise errors.InvalidURL(f"{scheme} URL {urls.redact(url)} has a path; only ZooKeeper reads one (a chroot)")
    sentinel_options(url)


def sentinel_options(url: str) -> list[urls.Endpoint]:
    """The Sentinels of a Redis URL: its host, then every ``sentinel_fallback``;
    empty without ``?sentinel=``. Validated here because tooz only finds a
    malformed one when the member starts."""
    options = urls.query_values(url)
    fallbacks = options.get("sentinel_fallback", [])
    if "sentinel" not in options:
        if fallbacks:
            raise errors.InvalidURL(f"sentinel_fallback without sentinel=<master name> in URL {urls.redact(url)}")
        return []
    if not options["sentinel"][-1]:
        raise errors.InvalidURL(f"empty sentinel= (the master's name) in URL {urls.redact(url)}")
    found = urls.hosts(url)
    for fallback in fallbacks:
        endpoint = urls.parse_host(fallback, url)
        if endpoint.port is None:
            raise errors.InvalidURL(f"sentinel_fallback {fallback!r} in URL {urls.redact(url)} needs a port")
        found.append(endpoint)
    return found


def ensure_sentinel_primary(coord: Any) -> None:
    """Refuse a read from a Redis that is no longer the primary.

    redis-py's Sentinel pool picks the primary when a connection opens and
    only leaves a node that refuses a *write* (READONLY). A reader never
    writes: after a paused primary resumes and Sentinel demotes it, the
    observer kept reading it, and while it resynced from the new primary it
    answered "no such group" (seen in the soak: every member read down at
    once). One ``ROLE`` round trip before each read catches that; the pool
    is then dropped, so the next read reconnects through Sentinel, and this
    read fails (the view keeps its last snapshot) instead of lying.
    """
    client = getattr(coord, "_client", None)
    if client is None:
        return
    role = client.execute_command("ROLE")
    name = role[0] if role else b""
    if name in (b"master", "master"):
        return
    client.connection_pool.disconnect()
    shown = (name.decode() if isinstance(name, bytes) else str(name)) or "a non-primary"
    raise coordination.ToozConnectionError(f"Redis answered as {shown}, not the primary: reconnecting")


def ensure_zookeeper_chroot(parsed: urllib.parse.SplitResult, chroot_path: str, timeout: float) -> None:
    """Create the chroot node of a ZooKeeper URL if it is missing.

    kazoo does not create its chroot, and every call under a missing one
    fails with a bare ``NoNodeError`` (tooz: "Operational error"). One short
    connection without the chroot creates it, with the URL's credentials.
    """
    from kazoo.client import KazooClient  # kazoo is imported only for ZooKeeper URLs

    hosts = parsed.netloc.rpartition("@")[2]
    auth = None
    if parsed.username and parsed.password:
        auth = [("digest", f"{urllib.parse.unquote(parsed.username)}:{urllib.parse.unquote(parsed.password)}")]
    client = KazooClient(hosts=hosts, auth_data=auth, timeout=timeout)
    try:
        client.start(timeout=timeout)
        client.ensure_path(chroot_path)
    except Exception as exc:
        shown = urls.redact(f"{type(exc).__name__}: {exc}".rstrip(": "), url=parsed.geturl())
        raise coordination.ToozConnectionError(f"cannot create the ZooKeeper chroot {chroot_path}: {shown}") from None
    finally:
        client.stop()
        client.close()
