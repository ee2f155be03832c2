"""Event-driven refresh for backends that can push membership changes.

tooz only fires watch callbacks inside ``run_watchers()``, by polling, so a
change waits up to one poll interval. ZooKeeper (child watches), etcd
(prefix watches) and Consul (blocking queries) can tell us at once; here they do, by waking the
membership view (``poke``), which then re-reads and diffs as usual. There
is one diffing path for every backend; push only shortens the wait, and
polling stays on as the safety net (a lost push costs one poll interval,
never an event).

This reaches into tooz drivers' internals (the kazoo client and its group
path; the etcd3gw client and its key prefix), guarded: if a tooz release
renames them, :func:`subscribe` returns ``None`` and the view just polls.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
import logging
import threading
from typing import Any

LOG = logging.getLogger(__name__)

Cancel = Callable[[], None]


def subscribe(coord: Any, kind: str | None, topic: str, poke: Callable[[], None]) -> Cancel | None:
    """Call *poke* whenever *topic*'s members change; return a cancel function.

    *kind* is the backend's push mechanism
    (:attr:`servicegroup.profiles.Profile.push`). ``None`` back means this
    backend (or this tooz version) cannot push: poll.
    """
    how = _MECHANISMS.get(kind or "")
    if how is None:
        return None
    try:
        return how(coord, topic, poke)
    except Exception as exc:  # push is an optimisation: never fail a read over it
        LOG.info("no push notifications for %r (%s watch: %s); polling", topic, kind, exc)
    return None


def _zookeeper(coord: Any, topic: str, poke: Callable[[], None]) -> Cancel:
    from kazoo.recipe.watchers import ChildrenWatch

    client = coord._coord
    path = coord._path_group(topic.encode())
    # A child watch needs its node (an empty group is harmless); bounded,
    # since kazoo's synchronous calls wait forever while it reconnects.
    client.ensure_path_async(path).get(timeout=5.0)
    stopped = threading.Event()

    def changed(children: list[str]) -> bool:
        if stopped.is_set():
            return False  # tells kazoo to drop the watch
        poke()
        return True

    ChildrenWatch(client, path, changed, allow_session_lost=True)
    return stopped.set


def _etcd(coord: Any, topic: str, poke: Callable[[], None]) -> Cancel:
    prefix = coord._prefix_group(topic.encode()).decode()
    # etcd3gw: an iterator of events, and the function that ends the stream.
    watch: tuple[Iterator[Any], Cancel] = coord.client.watch_prefix(prefix)
    events, cancel = watch

    def pump() -> None:
        try:
            for _ in events:
                poke()
        except Exception as exc:  # the stream broke: polling continues
            LOG.info("etcd watch on %r ended: %s", topic, exc)

    threading.Thread(target=pump, name=f"servicegroup-etcd-watch-{topic}", daemon=True).start()
    return cancel


def _consul(coord: Any, topic: str, poke: Callable[[], None]) -> Cancel:
    # Our own driver: blocking queries (?index=), a public hook.
    cancel: Cancel = coord.subscribe(topic.encode(), poke)
    return cancel


_MECHANISMS: dict[str, Callable[[Any, str, Callable[[], None]], Cancel]] = {
    "zookeeper": _zookeeper,
    "etcd": _etcd,
    "consul": _consul,
}
