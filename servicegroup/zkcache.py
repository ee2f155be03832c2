"""One ZooKeeper group's members, kept current in O(1) round trips per read.

tooz's ``get_members_with_capabilities`` lists the group's children, then
reads every child's data one synchronous ``get`` after another: a refresh
of a 1,000-member group took 0.7 s and grows with the fleet, so at 10,000
members the view would be older than ``service_down_time``. This cache does
what Curator's path cache does instead:

- each read costs one ``exists`` of the group node (its ``cversion`` moves
  whenever a child is created or deleted);
- only when ``cversion`` moved are the children listed again;
- only children that are new, or whose data watch fired (capabilities
  updated), have their data read, and those reads are pipelined (kazoo's
  async API: one round trip's latency for any number of them);
- each data read leaves a data watch behind, whose firing marks the child
  for the next read and wakes the view.

Watches do not survive a ZooKeeper session, so a new session (seen by
kazoo's ``client_id``) starts from an empty cache: one full, pipelined read.
"""

from __future__ import annotations

from collections.abc import Callable
import threading
from typing import Any

from kazoo import exceptions as kazoo_exceptions
from tooz import coordination
from tooz import utils as tooz_utils

#: A session no client has: the next read starts over.
_STALE = object()

#: Data read per child: the decoded capabilities (None when unreadable).
Caps = dict[str, Any] | None


class GroupCache:
    """Members of the group node at *path* on *client*, read incrementally.

    ``on_change`` is called (from kazoo's event thread) when a child's data
    watch fires, so the owner can re-read at once instead of at the next poll.
    """

    def __init__(self, client: Any, path: str, on_change: Callable[[], None] | None = None) -> None:
        self._client = client
        self._path = path.rstrip("/")
        self._on_change = on_change
        self._lock = threading.Lock()
        #: One read at a time: two overlapping reads would each take part of
        #: the dirty set and the later commit could undo the earlier one.
        self._reading = threading.Lock()
        self._session: Any = _STALE
        self._cversion: int | None = None
        self._data: dict[str, Caps] = {}
        #: Children whose data watch fired since they were last read.
        self._dirty: set[str] = set()
        #: Requests the last read made (the metrics' round trips per refresh).
        self.requests = 0

    def read(self, timeout: float) -> dict[bytes, Caps]:
        """The group's members and capabilities; raises ``GroupNotCreated``
        when the group node does not exist, tooz's errors when unreachable."""
        try:
            with self._reading:
                return self._read(timeout)
        except kazoo_exceptions.NoNodeError:
            raise coordination.GroupNotCreated(self._path.rsplit("/", 1)[-1].encode()) from None
        except self._client.handler.timeout_exception as exc:
            raise coordination.OperationTimedOut(f"ZooKeeper read of {self._path}: {exc}") from None
        except kazoo_exceptions.KazooException as exc:
            raise coordination.ToozConnectionError(f"ZooKeeper read of {self._path}: {exc!r}") from None

    def _read(self, timeout: float) -> dict[bytes, Caps]:
        session = self._client.client_id
        with self._lock:
            if session != self._session:
                # A new session carries none of our watches: start over.
                self._session, self._cversion, self._data, self._dirty = session, None, {}, set()
        self.requests = 1  # this exists(); a listing and one get per changed child follow if needed
        stat = self._client.exists_async(self._path).get(timeout=timeout)
        if stat is None:
            raise kazoo_exceptions.NoNodeError(self._path)
        with self._lock:
            dirty, self._dirty = self._dirty, set()
            data = dict(self._data)
            cversion = self._cversion
        if stat.cversion != cversion:
            children, stat = self._client.get_children_async(self._path, include_data=True).get(timeout=timeout)
            names = set(children)
            data = {name: caps for name, caps in data.items() if name in names}
            dirty |= names - data.keys()
            cversion = stat.cversion
            self.requests += 1
        self.requests += len(dirty)
        fresh = self._fetch(sorted(dirty), timeout)
        for name in dirty:
            if name in fresh:
                data[name] = fresh[name]
            else:
                data.pop(name, None)  # deleted between the listing and its read
        with self._lock:
            if session == self._session:
                self._data, self._cversion = data, cversion
        return {name.encode("utf-8"): caps for name, caps in data.items()}

    def _fetch(self, names: list[str], timeout: float) -> dict[str, Caps]:
        """Data of each child in *names*, pipelined; absent if deleted."""
        pending = [(name, self._client.get_async(f"{self._path}/{name}", watch=self._changed)) for name in names]
        found: dict[str, Caps] = {}
        for name, result in pending:
            try:
                raw = result.get(timeout=timeout)[0]
            except kazoo_exceptions.NoNodeError:
                continue
            found[name] = _decode(raw)
        return found

    def _changed(self, event: Any) -> None:
        """A child's data watch fired: re-read that child on the next read.

        kazoo also calls watches with no path when the session ends or the
        client stops: then nothing cached can be trusted, start over."""
        path = getattr(event, "path", None)
        with self._lock:
            if not path:
                self._session = _STALE
            else:
                self._dirty.add(path.rsplit("/", 1)[-1])
        if self._on_change is not None:
            self._on_change()


def _decode(raw: bytes | None) -> Caps:
    if not raw:
        return None
    try:
        caps = tooz_utils.loads(raw)
    except Exception:  # not tooz's encoding (tooz's own read would fail here)
        return None
    return caps if isinstance(caps, dict) else None
