"""Watches: from two snapshots of a group to the callbacks users registered.

tooz only fires watch callbacks inside ``run_watchers()``, by polling, and
changes between two polls merge: a member that left and re-joined between
them never shows. So every join carries an :data:`INCARNATION` token in its
capabilities, and two snapshots are compared member by member *and*
incarnation by incarnation (:func:`diff`): a re-join between two reads is
still a leave followed by a join.

Callbacks run on one :class:`Dispatcher` thread, in the order the events
were found, never on the caller's thread nor on the membership refresher's
(a slow callback must not delay anyone's liveness), and one callback's
exception never stops the others.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
import logging
import queue
import threading
from typing import Any

LOG = logging.getLogger(__name__)

Capabilities = dict[str, Any]

#: ``on_join(topic, host)`` / ``on_leave(topic, host)``.
WatchCallback = Callable[[str, str], None]
#: ``on_change(topic)``: the topic's live set (as ``ServiceGroup.members``
#: sees it) may have changed; read it again.
ChangeCallback = Callable[[str], None]

#: Capability key holding the per-join token (see module docstring).
INCARNATION = "incarnation"


class Watch:
    """Handle returned by ``watch()``; ``cancel()`` stops it."""

    def __init__(
        self,
        unwatch: Callable[[Watch], None],
        topic: str,
        on_join: WatchCallback | None,
        on_leave: WatchCallback | None,
        on_change: ChangeCallback | None = None,
    ) -> None:
        self.topic = topic
        self.on_join = on_join
        self.on_leave = on_leave
        self.on_change = on_change
        self._unwatch = unwatch

    def cancel(self) -> None:
        self._unwatch(self)


class Dispatcher:
    """One thread that runs watch callbacks in order, isolated from failures."""

    def __init__(self) -> None:
        self._queue: queue.Queue[tuple[Callable[..., None], tuple[Any, ...]] | None] = queue.Queue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def submit(self, fn: Callable[..., None], *args: Any) -> None:
        with self._lock:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="servicegroup-watch", daemon=True)
                self._thread.start()
        self._queue.put((fn, args))

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            fn, args = item
            try:
                fn(*args)
            except Exception:  # a user callback must not stop other callbacks
                LOG.exception("watch callback %r failed for %s", fn, args)

    def drain(self, timeout: float = 5.0) -> None:
        """Wait until queued callbacks ran (tests and orderly shutdown)."""
        done = threading.Event()
        self.submit(done.set)
        done.wait(timeout)

    def stop(self) -> None:
        self._queue.put(None)


def queue_events(
    dispatcher: Dispatcher,
    topic: str,
    old: Mapping[str, Capabilities],
    new: Mapping[str, Capabilities],
    watches: Iterable[Watch],
) -> None:
    """Queue the leaves, then the joins, between two snapshots of *topic*."""
    watches = list(watches)
    left, joined = diff(old, new)
    for host in left:
        for w in watches:
            if w.on_leave:
                dispatcher.submit(w.on_leave, topic, host)
    for host in joined:
        for w in watches:
            if w.on_join:
                dispatcher.submit(w.on_join, topic, host)


def queue_change(dispatcher: Dispatcher, topic: str, watches: Iterable[Watch]) -> None:
    """Queue one ``on_change(topic)`` per watch that asked for it."""
    for w in watches:
        if w.on_change:
            dispatcher.submit(w.on_change, topic)


def diff(old: Mapping[str, Capabilities], new: Mapping[str, Capabilities]) -> tuple[list[str], list[str]]:
    """Hosts that left and hosts that joined between two snapshots.

    A host present in both with a different incarnation left and re-joined:
    it appears in both lists, leave first.
    """
    left = sorted(h for h in old if h not in new or _incarnation(old[h]) != _incarnation(new[h]))
    joined = sorted(h for h in new if h not in old or _incarnation(old[h]) != _incarnation(new[h]))
    return left, joined


def _incarnation(caps: Capabilities | None) -> Any:
    return caps.get(INCARNATION) if isinstance(caps, dict) else None
