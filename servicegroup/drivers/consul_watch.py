"""Waiting for a Consul group to change: blocking queries, never polling.

Consul answers ``GET ...?index=N&wait=W`` only when the group's index moves
past ``N`` or ``W`` passes, so one long query per group replaces a polling
loop. Two users need it: tooz's ``run_watchers(timeout)`` (wait once, for any
of several groups) and :mod:`servicegroup.push` (a daemon thread per watched
group that pokes the membership view on every change). Both live here so the
driver module stays about the session and the group contract.
"""

from __future__ import annotations

from collections.abc import Callable
import concurrent.futures
import logging
import threading
from typing import Protocol

import tooz

from servicegroup.drivers import _base
from servicegroup.drivers.consul_api import MAX_WAIT

LOG = logging.getLogger(__name__)
#: Shortest blocking query :func:`subscribe` makes (seconds): a shorter one
#: in a loop would be polling, and Consul holds ``wait=0s`` for 5 minutes.
SUBSCRIBE_MIN_WAIT = 1.0


class Blocking(Protocol):
    """What both group stores (KV and catalog) offer for a blocking read."""

    def block(self, gid: bytes, index: str | None, wait: float) -> str: ...


def wait_for_change(groups: Blocking, indexes: dict[bytes, str], group_ids: set[bytes], timeout: float) -> bool:
    """Block until one of *group_ids* moves past the index in *indexes* (what
    the caller last read), or *timeout* seconds pass; True when something
    changed. A group never read counts as changed: the caller must read it."""
    gids = sorted(_base.to_id(g, "group id") for g in group_ids)
    if any(gid not in indexes for gid in gids):
        return True

    def block(gid: bytes) -> bool:
        return groups.block(gid, indexes[gid], timeout) != indexes[gid]

    if len(gids) == 1:
        return block(gids[0])
    pool = concurrent.futures.ThreadPoolExecutor(max_workers=len(gids))
    try:
        pending = {pool.submit(block, g) for g in gids}
        while pending:
            done, pending = concurrent.futures.wait(
                pending, timeout=timeout + 1, return_when=concurrent.futures.FIRST_COMPLETED
            )
            if not done or any(f.result() for f in done):
                return bool(done)
        return False
    finally:
        pool.shutdown(wait=False)  # the others end on their own wait


def subscribe(groups: Blocking, gid: bytes, poke: Callable[[], None], wait: float, where: str) -> Callable[[], None]:
    """Call *poke* (from a daemon thread) whenever *gid*'s members may have
    changed, one long blocking query at a time; returns a function that stops
    it (the thread ends with its current query). *wait* is clamped to
    [:data:`SUBSCRIBE_MIN_WAIT`, Consul's 600 s]."""
    wait = min(max(wait, SUBSCRIBE_MIN_WAIT), MAX_WAIT)
    stop = threading.Event()

    def loop() -> None:
        index: str | None = None
        while not stop.is_set():
            try:
                new = groups.block(gid, index, wait)
            except tooz.ToozError as exc:
                LOG.info("Consul watch of %r on %s failed (%s); retrying", gid, where, exc)
                stop.wait(1.0)
                continue
            if index is not None and new != index and not stop.is_set():
                try:
                    poke()
                except Exception:  # a listener's bug must not end the watch
                    LOG.exception("Consul watch callback failed")
            index = new

    threading.Thread(target=loop, name=f"consul-watch-{gid!r}", daemon=True).start()
    return stop.set
