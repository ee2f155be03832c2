"""The operator's flags (forced_down, disabled), kept in memory for ``is_up``.

``forced_down`` fences a host: ``is_up`` must answer False at once and for
every caller, so the flags are answered from memory, never read per call.
They live in the records database, and the point of this library is that
a slow, stalled or restarting records database never makes a live service
look dead. So the cache:

- reads on its own thread, never on the membership refresher's (a stuck
  read there would stop every topic's refresh and age every live host past
  ``service_down_time``), and never on a caller's;
- keeps its last known values while the records database cannot be read,
  says how old they are (:meth:`FlagsCache.age`), and logs once per outage
  (a warning when reads start failing, an info line when they recover);
- honours a flag this process writes at once, and never lets a read that
  started before that write put the older value back (a generation count).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
import logging
import threading
import time
from typing import TYPE_CHECKING

from servicegroup import backend
from servicegroup import forksafe

if TYPE_CHECKING:
    from servicegroup.records import Service

LOG = logging.getLogger(__name__)

#: ``(host, topic) -> (forced_down, disabled)`` of the records with a flag set.
Flags = Mapping[tuple[str, str], tuple[bool, bool]]


class FlagsCache:
    """forced_down/disabled of every record with a flag set (see module docstring).

    *read* returns the flags from the records database; *on_fence_change*
    is told each topic where a host was fenced or unfenced (the hash ring
    rebuilds on it). Without *background* nothing reads but :meth:`refresh`.
    """

    def __init__(
        self,
        read: Callable[[], Flags],
        *,
        interval: float,
        on_fence_change: Callable[[str], None],
        clock: Callable[[], float] = time.monotonic,
        background: bool = True,
    ) -> None:
        self.interval = interval
        self._read = read
        self._on_fence_change = on_fence_change
        self._clock = clock
        self._background = background
        self._flags: dict[tuple[str, str], tuple[bool, bool]] = {}
        self._lock = threading.Lock()
        # Bumped by every local write, so a read that started before the
        # write cannot put the older flags back (see refresh()).
        self._gen = 0
        self._read_at: float | None = None
        self._failing = False
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._restart = False
        forksafe.register(self, FlagsCache._after_fork)

    def start(self) -> None:
        """Read once now, then every ``interval`` on the cache's own thread."""
        self.refresh()
        if self._background:
            self._start_thread()

    # -- answers (memory only) ---------------------------------------------

    def forced_down(self, host: str, topic: str) -> bool:
        if self._restart:  # forked: this process has no reader thread yet
            self._start_thread()
        flags = self._flags.get((host, topic))
        return bool(flags and flags[0])

    def age(self) -> float | None:
        """Seconds since the last good read started, None before the first."""
        read_at = self._read_at
        return None if read_at is None else self._clock() - read_at

    # -- updates -----------------------------------------------------------

    def set(self, svc: Service) -> None:
        """A flag this process just wrote: honoured at once."""
        with self._lock:
            self._gen += 1
            before = self._flags.get((svc.host, svc.topic), (False, False))[0]
            self._flags[(svc.host, svc.topic)] = (svc.forced_down, svc.disabled)
        if before != svc.forced_down:
            self._on_fence_change(svc.topic)

    def refresh(self) -> bool:
        """Read the flags now; False (values kept) when they cannot be read."""
        gen = self._gen
        started = self._clock()
        try:
            flags = dict(self._read())
        except Exception as exc:
            if self._stop.is_set():
                return False  # stopping: the records database is being closed
            if not self._failing:
                self._failing = True
                LOG.warning(
                    "service flags (forced_down, disabled) could not be read, keeping the last known ones: %s",
                    backend.describe(exc),
                )
            else:
                LOG.debug("service flags still unreadable: %s", backend.describe(exc))
            return False
        if self._failing:
            self._failing = False
            LOG.info("service flags readable again")
        with self._lock:
            self._read_at = started
            # A write that landed while we read is newer than our read: keep
            # it (the next read has it from the database anyway).
            if self._gen != gen:
                return True
            old, self._flags = self._flags, flags
        fenced_before = {key for key, (forced, _) in old.items() if forced}
        fenced_now = {key for key, (forced, _) in flags.items() if forced}
        for topic in sorted({t for _, t in fenced_before ^ fenced_now}):
            self._on_fence_change(topic)
        return True

    # -- thread --------------------------------------------------------------

    def _start_thread(self) -> None:
        with self._lock:
            self._restart = False
            if self._stop.is_set() or (self._thread is not None and self._thread.is_alive()):
                return
            self._thread = threading.Thread(target=self._run, name="servicegroup-flags", daemon=True)
            self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.refresh()
            except Exception:  # refresh() catches read errors; anything else is a bug
                LOG.exception("service flags refresh failed")

    def stop(self) -> None:
        """Stop reading. A read in flight is waited for one ``interval`` at
        most: one that takes longer is a stalled database, not waited on."""
        self._stop.set()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(self.interval)

    def _after_fork(self) -> None:
        """In a forked child (:mod:`servicegroup.forksafe`): fresh lock and
        events; the reader thread did not survive, so the next answer
        starts one (a thread is not started from inside a fork hook)."""
        self._lock = threading.Lock()
        stopped = self._stop.is_set()
        self._restart = self._thread is not None and not stopped
        self._stop = threading.Event()
        if stopped:
            self._stop.set()
        self._thread = None
