"""The membership views a ServiceGroup answers from: its backend's, and
during a driver switch the previous backend's too (:mod:`servicegroup.migration`).

With one view everything is that view's answer. With two, a host is live if
either view lists it (the new backend's capabilities win where both do),
and a backend that cannot be read only makes *down* answers doubtful: see
:meth:`Sources.unknown`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
import threading

from servicegroup import backend
from servicegroup import urls
from servicegroup.membership import MembershipView
from servicegroup.reader import Reader
from servicegroup.watches import Capabilities, ChangeCallback, Watch, WatchCallback


class Sources:
    """One (url, reader, view) per backend read, the new backend first."""

    def __init__(self, backends: list[tuple[str, Reader, MembershipView]]) -> None:
        self._backends = backends
        self.views = [view for _, _, view in backends]

    def lists(self, topic: str, host: str) -> bool:
        """Whether any view lists *host* in *topic* (``is_up`` minus fencing)."""
        for view in self.views:
            members = view.members(topic)
            if members is not None and host in members:
                return True
        return False

    def listed(self, topic: str) -> Mapping[str, Capabilities] | None:
        """Members of *topic* in any view; None when no view can vouch."""
        if len(self.views) == 1:
            return self.views[0].members(topic)
        return union(*(view.members(topic) for view in self.views))

    def unknown(self, topic: str) -> str | None:
        """Why a down answer about *topic* is a guess: every backend that
        cannot be read, named (no credentials); None when all can."""
        reasons = []
        for url, _, view in self._backends:
            if view.members(topic) is not None:
                continue
            reason = view.last_error(topic) or "membership not read"
            where = backend.where(url)
            if where not in reason:
                reason = f"{where}: {reason}"
            reasons.append(urls.redact(reason, url=url))
        return "; ".join(reasons) or None

    def age(self, topic: str) -> float | None:
        """Seconds since the oldest read behind the answers started (None:
        a backend not read yet)."""
        ages = [view.age(topic) for view in self.views]
        return max(a for a in ages if a is not None) if None not in ages else None

    def last_seen(self, topic: str, host: str) -> float | None:
        """The latest time a backend that lists *host* now vouched for it
        (epoch seconds); None when none lists it. A reader that saw a dead
        host alive must not answer other than one started after its death:
        both then fall back to the record (``ServiceGroup.get_updated_time``)."""
        times = []
        for view in self.views:
            members = view.members(topic)  # a first read of the topic, if nobody asked before
            if members is not None and host in members:
                times.append(view.last_seen(topic, host))
        return max((t for t in times if t is not None), default=None)

    def unhide(self, topic: str, host: str) -> bool:
        return any([view.unhide(topic, host) for view in self.views])  # a list: every view unhides

    def watch(
        self,
        members: Callable[[str], Mapping[str, Capabilities]],
        topic: str,
        on_join: WatchCallback | None,
        on_leave: WatchCallback | None,
        on_change: ChangeCallback | None,
    ) -> Watch:
        if len(self.views) == 1:
            return self.views[0].watch(topic, on_join, on_leave, on_change)
        return UnionWatch(self.views, members, topic, on_join, on_leave, on_change)

    def refuse(self) -> None:
        for view in self.views:
            view.halt()  # first: a read failing from here on is no news
        for _, reader, _ in self._backends:
            reader.refuse()  # a refresh under way must not reconnect

    def stop(self) -> None:
        for view in self.views:
            view.stop()

    def close(self) -> None:
        for _, reader, _ in self._backends:
            reader.close()


def union(
    new: Mapping[str, Capabilities] | None, old: Mapping[str, Capabilities] | None
) -> Mapping[str, Capabilities] | None:
    """Hosts listed by either backend (the new one's capabilities where both
    list a host); None when neither could be read."""
    if old is None or not old:
        return new if new is not None or old is None else old
    if new is None:
        return old
    merged = dict(old)
    merged.update(new)
    return merged


class UnionWatch(Watch):
    """A watch over the union of two views: ``on_join`` / ``on_leave`` when
    the set of live hosts (as *members* answers) changes, ``on_change`` on
    every change either view reports (fencing included).

    Incarnations differ between backends, so unlike a single backend's
    watch, a host that left and re-joined between two reads is not seen as
    a leave and a join here; ``on_change`` still fires.
    """

    def __init__(
        self,
        views: list[MembershipView],
        members: Callable[[str], Mapping[str, Capabilities]],
        topic: str,
        on_join: WatchCallback | None,
        on_leave: WatchCallback | None,
        on_change: ChangeCallback | None,
    ) -> None:
        super().__init__(lambda _: None, topic, on_join, on_leave, on_change)
        self._members = members
        self._lock = threading.Lock()
        with self._lock:  # callbacks wait for the baseline below
            self._handles = [view.watch(topic, on_change=self._changed) for view in views]
            self._known = set(members(topic))

    def _changed(self, topic: str) -> None:
        with self._lock:
            now = set(self._members(topic))
            old, self._known = self._known, now
            for host in sorted(now - old):
                if self.on_join is not None:
                    self.on_join(topic, host)
            for host in sorted(old - now):
                if self.on_leave is not None:
                    self.on_leave(topic, host)
            if self.on_change is not None:
                self.on_change(topic)

    def cancel(self) -> None:
        for handle in self._handles:
            handle.cancel()
